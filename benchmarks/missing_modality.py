"""Missing-modality metrics: what recording ``mm_zero_<m>`` / ``mm_mean_<m>`` costs an epoch.

    python benchmarks/missing_modality.py [--quick] [--forms vector image] [--threads N]
                                          [--out benchmarks/results/missing_modality.json]

Three trainers with one config and one seed, on the synthetic data (vector form: the default
2000/2000/2000 samples, MLP encoders; image form: 1000/500/500, ResNet-6 encoders):

- ``on``: ``Trainer.run_epoch`` as shipped: train, then evaluate train/val/test with the
  missing-modality heads (two per modality);
- ``off`` and ``off again``: the same epoch with ``evaluate_split(..., missing_modality=False)``,
  the evaluation from before the change. ``off again`` is an A/A pair: its ratio to ``off`` is
  the noise floor of the same measurement.

Each round runs one epoch of each trainer, in a seeded random order (no fixed predecessor), with
an untimed ``gc.collect()`` before each. Warm-up epochs are discarded. Figures: ratio of median
epoch seconds (``on`` / ``off`` and ``off again`` / ``off``), a 95% bootstrap interval over
rounds (2000 resamples, fixed seed), the per-round ratios and each side's fastest epoch
(best-of). Evaluation alone (the three ``evaluate`` calls of an epoch) is timed too, where the
extra work lives. The three trainers train identically, so the script checks that their weights
are bit-identical at the end and that every head ``off`` records has the same value ``on``:
proof that the only difference is the added heads.

One intra-op thread by default, as in ``bench_train.py`` (a shared 2-core machine; ``--threads 0``
keeps torch's default).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere, without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from miles_tune.config import TrainConfig  # noqa: E402
from miles_tune.data import MultimodalData, create_dataset  # noqa: E402
from miles_tune.records import is_missing_modality_head  # noqa: E402
from miles_tune.train import Trainer, resolve_device  # noqa: E402
from miles_tune.train.loop import evaluate_split  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "missing_modality.json"
ON, OFF, OFF_AGAIN = "on", "off", "off again"
SIDES = (ON, OFF, OFF_AGAIN)
TARGET = 1.03  # at most: a cost within the A/A noise of a normal epoch
BOOTSTRAP = 2000


@dataclass(frozen=True)
class FormSettings:
    form: str
    data: dict[str, Any]
    warmup: int  # epochs per trainer, discarded
    rounds: int  # one timed epoch per trainer per round


FULL = {
    "vector": FormSettings("vector", {}, warmup=2, rounds=101),
    "image": FormSettings("image", {"form": "image", "n_train": 1000, "n_val": 500, "n_test": 500}, 1, 25),
}
QUICK = {
    "vector": FormSettings("vector", {}, warmup=1, rounds=21),
    "image": FormSettings("image", {"form": "image", "n_train": 256, "n_val": 256, "n_test": 256}, 1, 5),
}


class Timed:
    """A trainer whose epochs and evaluations are timed; ``missing_modality=False`` restores the
    evaluation from before the missing-modality heads (the baseline)."""

    def __init__(self, config: TrainConfig, data: MultimodalData, missing_modality: bool) -> None:
        self.trainer = Trainer(config, data=data)
        self.eval_seconds = 0.0
        evaluate = self.trainer.evaluate if missing_modality else self._plain_evaluate

        def timed_evaluate(split: str) -> dict[str, dict[str, float]]:
            started = time.perf_counter()
            try:
                return evaluate(split)
            finally:
                self.eval_seconds += time.perf_counter() - started

        self.trainer.evaluate = timed_evaluate  # type: ignore[method-assign]

    def _plain_evaluate(self, split: str) -> dict[str, dict[str, float]]:
        t = self.trainer
        return evaluate_split(
            t.model,
            t.splits[split],
            t.data.task,
            t.loss_fn,
            t.config.eval_batch_size,
            t.device,
            missing_modality=False,
        ).metrics

    def epoch(self) -> tuple[float, float]:
        """(epoch seconds, evaluation seconds) of one ``run_epoch``."""
        self.eval_seconds = 0.0
        device = self.trainer.device
        started = time.perf_counter()
        self.trainer.run_epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started, self.eval_seconds


def bootstrap(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% percentile interval of median(a) / median(b) over rounds resampled with replacement."""
    rng = random.Random(0)
    n, ratios = len(a), []
    for _ in range(BOOTSTRAP):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(a[i] for i in idx) / statistics.median(b[i] for i in idx))
    ratios.sort()
    return ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]


def compare(name: str, form: str, what: str, a: list[float], b: list[float]) -> dict[str, Any]:
    ratio = statistics.median(a) / statistics.median(b)
    per_round = [x / y for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap(a, b)
    verdict = "met" if hi <= TARGET else "missed" if lo > TARGET else "within noise"
    return {
        "name": name,
        "form": form,
        "what": what,
        "a_median_s": statistics.median(a),
        "b_median_s": statistics.median(b),
        "ratio": ratio,
        "ci95": (lo, hi),
        "round_ratios_min_med_max": (min(per_round), statistics.median(per_round), max(per_round)),
        "best_of_ratio": min(a) / min(b),
        "target": f"<= {TARGET}",
        "verdict": verdict,
        "a_seconds": a,
        "b_seconds": b,
    }


def identical(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def bench_form(settings: FormSettings, device: str) -> dict[str, Any]:
    data = create_dataset("synthetic", **settings.data)  # shared: every trainer sees the same tensors
    config = TrainConfig(method="vanilla", data=dict(settings.data), device=device, epochs=10**6)
    sides = {s: Timed(config, data, missing_modality=s == ON) for s in SIDES}
    for _ in range(settings.warmup):
        for side in sides.values():
            side.epoch()
    epoch = {s: [] for s in SIDES}
    evaluation = {s: [] for s in SIDES}
    orders = []
    gc.collect()
    gc.freeze()  # a full collection would walk every object torch keeps alive (0.1 s each)
    for r in range(settings.rounds):
        order = random.Random(r).sample(SIDES, len(SIDES))
        orders.append(order)
        for s in order:
            gc.collect()
            e, ev = sides[s].epoch()
            epoch[s].append(e)
            evaluation[s].append(ev)
    gc.unfreeze()
    on, off = sides[ON].trainer, sides[OFF].trainer
    last_on, last_off = on.history[-1].metrics, off.history[-1].metrics
    shared = {
        (split, head): values
        for split, heads in last_on.items()
        for head, values in heads.items()
        if not is_missing_modality_head(head)
    }
    extra_heads = sorted({h for heads in last_on.values() for h in heads if is_missing_modality_head(h)})
    form = settings.form
    return {
        "comparisons": [
            compare("on_vs_off", form, "run_epoch s", epoch[ON], epoch[OFF]),
            compare("aa_off_again_vs_off", form, "run_epoch s", epoch[OFF_AGAIN], epoch[OFF]),
            compare("on_vs_off_eval_only", form, "3 evaluate calls s", evaluation[ON], evaluation[OFF]),
            compare("aa_eval_only", form, "3 evaluate calls s", evaluation[OFF_AGAIN], evaluation[OFF]),
        ],
        "checks": {
            "identical_weights": identical(on.model, off.model)
            and identical(off.model, sides[OFF_AGAIN].trainer.model),
            "shared_heads_identical": all(last_off[s][h] == v for (s, h), v in shared.items())
            and sum(len(h) for h in last_off.values()) == len(shared),
            "extra_heads_per_split": extra_heads,
        },
        "settings": asdict(settings),
        "train_samples": len(on.train_split),
        "orders": orders,
    }


def markdown(comparisons: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | form | measured | A: median | B: median | rounds | ratio | 95% CI "
        "| round ratios min–med–max | best-of | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lo, hi = c["ci95"]
        rmin, rmed, rmax = c["round_ratios_min_med_max"]
        lines.append(
            f"| {c['name']} | {c['form']} | {c['what']} | {c['a_median_s'] * 1e3:.1f} ms "
            f"| {c['b_median_s'] * 1e3:.1f} ms | {len(c['a_seconds'])} | **{c['ratio']:.3f}** "
            f"| {lo:.3f}–{hi:.3f} | {rmin:.2f}–{rmed:.3f}–{rmax:.2f} | {c['best_of_ratio']:.3f} "
            f"| {c['target']} | {c['verdict']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few rounds, small image data (~30 s)")
    p.add_argument("--forms", nargs="+", default=["vector", "image"], choices=sorted(FULL))
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0 keeps torch's default")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_start = os.getloadavg()
    table = QUICK if args.quick else FULL
    forms = {form: bench_form(table[form], args.device) for form in args.forms}
    comparisons = [c for f in forms.values() for c in f["comparisons"]]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": str(resolve_device(args.device)),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "mode": "quick" if args.quick else "full",
        "order": "rounds of one epoch per side (on, off, off again), a seeded random order each round",
        "forms": forms,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(comparisons))
    for form, f in forms.items():
        print(f"{form}: checks {f['checks']}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
