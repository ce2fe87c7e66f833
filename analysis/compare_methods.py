"""Every balancing method on the synthetic data: both fusions, several seeds, one command.

    python analysis/compare_methods.py                 # 3 seeds, 40 epochs, n_train 2000
    python analysis/compare_methods.py --workers 2 --seeds 0 1 2 3 4

Steps (every run: Adam, lr 1e-3, batch 128, each method at its default hyper-parameters,
data seed = run seed, the synthetic vector form with MLP encoders):

1. A small unimodal learning-rate search per modality (``--unimodal-grid``, first seed, best
   by that head's validation accuracy, ties broken by its validation loss): MSLR-K/S/D need
   the best unimodal rates, and they are written to ``unimodal_lrs.yaml`` in the format
   MSLR reads. Then the ``unimodal``
   reference rows at those rates, for every seed (the paper's Table I).
2. Every registered method except ``unimodal`` (the script refuses to run if one is
   missing from ``CONFIGS``) × {concat, sum} × seeds.

Prints, and writes to ``<out-dir>/compare_methods.md`` (and every run's row to
``compare_methods.json``), the test metrics at the best validation epoch, mean ± std over
seeds: the multimodal head, each encoder's unimodal head, Δ = stronger − weaker encoder
(stronger = the modality whose unimodal model is better, as the paper's Table I fixes it),
and how far the weaker-in-joint-training encoder stays from its unimodal reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import yaml

try:  # run as a script (python analysis/compare_methods.py) or imported as a module
    from _runs import fmt, train_run
except ModuleNotFoundError as exc:  # pragma: no cover
    if exc.name != "_runs":
        raise
    from analysis._runs import fmt, train_run

from miles_tune.balance import list_methods

UNIMODAL_LRS = "<best unimodal learning rates from step 1>"
# (label, method, method_args); every registered method except "unimodal" must appear
CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("vanilla (Eq. 3 loss)", "vanilla", {"aux_losses": True}),
    ("vanilla (L_mm only, probe heads)", "vanilla", {"aux_losses": False}),
    ("MILES τ 0.2 μ 0.5 (paper defaults)", "miles", {"tau": 0.2, "mu": 0.5}),
    ("MSES", "mses", {}),
    ("MSLR-K", "mslr-k", {"unimodal_lrs": UNIMODAL_LRS}),
    ("MSLR-S", "mslr-s", {"unimodal_lrs": UNIMODAL_LRS}),
    ("MSLR-D", "mslr-d", {"unimodal_lrs": UNIMODAL_LRS}),
    ("OGM", "ogm", {}),
    ("OGM-GE", "ogm-ge", {}),
    ("G-Blend (online)", "gblend", {}),
]
# not a default setting: chosen on this data earlier (datasets.md §7.2), so optimistic
EXTRA_CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("MILES τ 0.05 μ 0.1 (tuned on this data)", "miles", {"tau": 0.05, "mu": 0.1}),
]
MODALITIES = ("fast", "slow")


def check_coverage(configs: list[tuple[str, str, dict[str, Any]]]) -> None:
    missing = set(list_methods()) - {"unimodal"} - {method for _, method, _ in configs}
    if missing:
        raise SystemExit(f"compare_methods: no configuration for registered method(s) {sorted(missing)}")


def init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """One run -> its row (test/val metrics at the best validation epoch, cost, method extras)."""
    overrides = {"method": spec["method"], "method_args": spec["method_args"], "fusion": spec["fusion"]}
    if spec.get("lr") is not None:
        overrides["lr"] = spec["lr"]
    started = time.perf_counter()
    trainer = train_run(overrides, spec["seed"], spec["epochs"], spec["data"])
    s = trainer.summary()
    last = trainer.history[-1].extra if trainer.history else {}
    keep = ("gblend/extra_epochs_total", "gblend/extra_seconds_total", "mses/frozen/fast", "mses/frozen/slow")
    return {
        **{k: spec[k] for k in ("label", "method", "method_args", "fusion", "seed", "lr")},
        "best_epoch": s["best_epoch"],
        "epochs_run": s["epochs_run"],
        "stopped_early": s["stopped_early"],
        "wall_seconds": time.perf_counter() - started,
        **{k: v for k, v in last.items() if k in keep},
        **s["best"],
    }


def run_all(specs: list[dict[str, Any]], workers: int, threads: int) -> list[dict[str, Any]]:
    if workers <= 1:
        init_worker(threads)
        rows = []
        for i, spec in enumerate(specs):
            rows.append(job(spec))
            print(
                f"[{i + 1}/{len(specs)}] {spec['label']} {spec['fusion']} seed {spec['seed']}",
                file=sys.stderr,
            )
        return rows
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(threads,)
    ) as ex:
        rows = []
        for i, row in enumerate(ex.map(job, specs)):
            rows.append(row)
            print(
                f"[{i + 1}/{len(specs)}] {row['label']} {row['fusion']} seed {row['seed']}", file=sys.stderr
            )
        return rows


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def markdown(
    args: argparse.Namespace, unimodal: dict[str, Any], rows: list[dict[str, Any]], seconds: float
) -> str:
    def of(method: str, modality: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["method"] == method and r["method_args"].get("modality") == modality]

    ref = {m: [r[f"test/{m}/acc"] for r in of("unimodal", m)] for m in MODALITIES}
    strong = max(MODALITIES, key=lambda m: mean(ref[m]))
    weak = next(m for m in MODALITIES if m != strong)
    command = " ".join(["python analysis/compare_methods.py", *args.argv])
    out = [
        f"# Every method on `synthetic` (vector form): {len(args.seeds)} seeds, {args.epochs} epochs",
        "",
        f"Produced by `{command}` in {seconds / 60:.1f} min ({args.workers} worker(s), "
        f"{args.threads} thread(s) each, shared 2-core CPU).",
        f"Data: n_train {args.n_train}, n_val {args.n_val}, n_test {args.n_test}; "
        f"seeds {args.seeds} (data seed = run seed). Every run: Adam, lr 1e-3, batch 128, "
        "each method at its default hyper-parameters (no search); test accuracy at the best "
        "validation epoch of the multimodal head, mean ± std over seeds.",
        "",
        "## Unimodal references (the paper's Table I)",
        "",
        f"Learning rate chosen per modality from {args.unimodal_grid} on seed {args.seeds[0]} "
        "by the head's validation accuracy; MSLR-K/S/D start from these rates.",
        "",
        "| modality | best lr | test acc (alone) | best epoch |",
        "|---|---|---|---|",
    ]
    for m in MODALITIES:
        epochs = fmt([r["best_epoch"] for r in of("unimodal", m)], 1)
        out.append(f"| {m} | {unimodal[m]:g} | {fmt(ref[m])} | {epochs} |")
    out += [
        "",
        f"## Joint models (stronger modality alone: `{strong}`; Δ = {strong} − {weak} encoder; "
        f"{weak} gap = {weak} alone − {weak} encoder)",
        "",
        f"| method | fusion | multimodal | {MODALITIES[0]} encoder | {MODALITIES[1]} encoder | Δ "
        f"| {weak} gap | best epoch | epochs run | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = list(dict.fromkeys(r["label"] for r in rows if r["method"] != "unimodal"))
    for fusion in args.fusions:
        for label in labels:
            rs = [r for r in rows if r["label"] == label and r["fusion"] == fusion]
            if not rs:
                continue
            cells = [fmt([r[f"test/{m}/acc"] for r in rs]) for m in MODALITIES]
            delta = fmt([r[f"test/{strong}/acc"] - r[f"test/{weak}/acc"] for r in rs])
            gap = fmt([mean(ref[weak]) - r[f"test/{weak}/acc"] for r in rs])
            mm = fmt([r["test/mm/acc"] for r in rs])
            out.append(
                f"| {label} | {fusion} | {mm} | {cells[0]} | {cells[1]} | {delta} | {gap} | "
                f"{fmt([r['best_epoch'] for r in rs], 1)} | {fmt([r['epochs_run'] for r in rs], 1)} | "
                f"{mean([r['wall_seconds'] for r in rs]):.1f} |"
            )
    gb = [r for r in rows if r["method"] == "gblend"]
    if gb:
        extra_epochs = mean([r["gblend/extra_epochs_total"] for r in gb])
        extra_seconds = mean([r["gblend/extra_seconds_total"] for r in gb])
        out += [
            "",
            f"G-Blend's side trainings: {extra_epochs:.0f} extra training epochs and {extra_seconds:.1f} s "
            "per run on average (included in s / run).",
        ]
    out += ["", "## Ranking by mean multimodal test accuracy", ""]
    for fusion in args.fusions:
        mm = {
            lab: mean([r["test/mm/acc"] for r in rows if r["label"] == lab and r["fusion"] == fusion])
            for lab in labels
        }
        ranked = sorted(labels, key=lambda lab: -mm[lab])
        out.append(f"- {fusion}: " + " > ".join(f"{lab} {mm[lab]:.3f}" for lab in ranked))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--fusions", nargs="+", default=["concat", "sum"], choices=["concat", "sum"])
    p.add_argument("--regime", default="paper", choices=["inverted", "paper"], help="synthetic's data.regime")
    p.add_argument("--unimodal-grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    p.add_argument("--no-extra", action="store_true", help="skip the MILES setting tuned on this data")
    p.add_argument("--workers", type=int, default=1, help="parallel runs (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configs = CONFIGS + ([] if args.no_extra else EXTRA_CONFIGS)
    check_coverage(configs)
    data = {"form": "vector", "regime": args.regime, "n_train": args.n_train, "n_val": args.n_val,
            "n_test": args.n_test}  # fmt: skip
    started = time.perf_counter()

    def spec(label, method, method_args, fusion, seed, lr=None):
        return {
            "label": label,
            "method": method,
            "method_args": method_args,
            "fusion": fusion,
            "seed": seed,
            "lr": lr,
            "epochs": args.epochs,
            "data": data,
        }

    # 1. unimodal learning-rate search (first seed), then the reference rows at the best rates
    grid = [
        spec(f"{m} alone", "unimodal", {"modality": m}, "concat", args.seeds[0], lr)
        for m in MODALITIES
        for lr in args.unimodal_grid
    ]
    grid_rows = run_all(grid, args.workers, args.threads)

    def best_lr(m: str) -> float:  # best validation accuracy; ties broken by validation loss
        rs = [r for r in grid_rows if r["method_args"]["modality"] == m]
        return max(rs, key=lambda r: (r[f"val/{m}/acc"], -r[f"val/{m}/loss"]))["lr"]

    unimodal = {m: best_lr(m) for m in MODALITIES}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "unimodal_lrs.yaml").write_text(yaml.safe_dump({"unimodal_lrs": unimodal}))
    print(f"best unimodal learning rates: {unimodal}", file=sys.stderr)
    reference = [r for r in grid_rows if r["lr"] == unimodal[r["method_args"]["modality"]]]
    specs = [
        spec(f"{m} alone", "unimodal", {"modality": m}, "concat", s, unimodal[m])
        for m in MODALITIES
        for s in args.seeds[1:]
    ]
    # 2. every method x fusion x seed
    for label, method, method_args in configs:
        resolved = {k: (dict(unimodal) if v == UNIMODAL_LRS else v) for k, v in method_args.items()}
        specs += [spec(label, method, resolved, f, s) for f in args.fusions for s in args.seeds]
    rows = reference + run_all(specs, args.workers, args.threads)
    seconds = time.perf_counter() - started

    text = markdown(args, unimodal, rows, seconds)
    payload = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "unimodal_lrs": unimodal,
        "unimodal_grid": grid_rows,
        "seconds": seconds,
        "rows": rows,
    }
    (args.out_dir / "compare_methods.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / "compare_methods.md").write_text(text)
    print(text)
    print(
        f"wrote {args.out_dir / 'compare_methods.md'} and compare_methods.json ({seconds / 60:.1f} min)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
