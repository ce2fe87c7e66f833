"""The greedy effect on the built-in synthetic data, and what MILES does about it.

Trains each configuration below for several seeds (data seed = run seed) and prints a
Markdown table of test metrics at the best validation epoch, mean ± std:
the multimodal head and each encoder's unimodal head.

    python analysis/greedy_table.py --regime inverted --out analysis/results/greedy_vector.json
    python analysis/greedy_table.py --regime paper --out analysis/results/greedy_vector_paper.json
    python analysis/greedy_table.py --regime paper --amp bf16 \
        --out analysis/results/greedy_vector_paper_bf16.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:  # run as a script (python analysis/greedy_table.py) or imported as a module
    from _runs import fmt, summary_row, train_run
except ModuleNotFoundError as exc:  # pragma: no cover
    if exc.name != "_runs":
        raise
    from analysis._runs import fmt, summary_row, train_run

CONFIGS: dict[str, dict] = {
    "fast alone (unimodal)": {"method": "unimodal", "method_args": {"modality": "fast"}},
    "slow alone (unimodal)": {"method": "unimodal", "method_args": {"modality": "slow"}},
    "vanilla, L_mm only (probes)": {"method": "vanilla", "method_args": {"aux_losses": False}},
    "vanilla, Eq. 3 loss": {"method": "vanilla", "method_args": {"aux_losses": True}},
    "MILES τ 0.2 μ 0.5": {"method": "miles", "method_args": {"tau": 0.2, "mu": 0.5}},
    "MILES τ 0.1 μ 0.5": {"method": "miles", "method_args": {"tau": 0.1, "mu": 0.5}},
    "MILES τ 0.05 μ 0.1": {"method": "miles", "method_args": {"tau": 0.05, "mu": 0.1}},
}


def run(name: str, overrides: dict, seed: int, epochs: int, data: dict) -> dict:
    return summary_row(name, seed, train_run(overrides, seed, epochs, data))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--form", default="vector", choices=["vector", "image"])
    p.add_argument("--regime", default="paper", choices=["inverted", "paper"], help="synthetic's data.regime")
    p.add_argument("--only", nargs="*", help="substrings of config names to run")
    p.add_argument("--amp", default="off", choices=["off", "bf16"], help="the runs' mixed precision")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    data = {"form": args.form, "regime": args.regime}
    rows = []
    for name, overrides in CONFIGS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        for seed in args.seeds:
            rows.append(run(name, {**overrides, "amp": args.amp}, seed, args.epochs, data))
            print(f"done {name} seed {seed}", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))
    print(
        f"| configuration ({args.form}, {args.regime}, {len(args.seeds)} seeds, {args.epochs} epochs, "
        f"amp {args.amp}) "
        "| multimodal | fast encoder | slow encoder | best epoch |"
    )
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == name]
        unimodal = name.endswith("(unimodal)")
        mm = "–" if unimodal else fmt([r["test/mm/acc"] for r in rs])
        cells = []
        for m in ("fast", "slow"):
            trained = not unimodal or name.startswith(m)
            cells.append(fmt([r[f"test/{m}/acc"] for r in rs]) if trained else "–")
        ep = fmt([r["best_epoch"] for r in rs]).replace(".000", "")
        print(f"| {name} | {mm} | {cells[0]} | {cells[1]} | {ep} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
