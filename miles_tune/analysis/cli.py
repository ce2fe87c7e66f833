"""The analysis command lines: ``python analysis/<artefact>.py`` and ``python analysis/report.py``.

    python analysis/report.py --tracking-uri sqlite:///mlflow.db --experiment miles_tune --out report
    python analysis/main_table.py --experiment miles_tune --dataset cremad --out report
    python analysis/report.py --exports runs/ --out report          # searches run with --no-tracking

Reads the runs (MLflow, or ``trials.parquet`` exports), optionally only some datasets,
fusions, methods or searches, and writes the artefacts into ``--out``. A bad argument, an
unknown experiment or an unreadable file is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCRIPTS = {  # script name in analysis/ -> artefact
    "main_table": "main",
    "unimodal": "unimodal",
    "sensitivity": None,  # --param tau|mu
    "u_source": "u_source",
    "unimodal_gap": "unimodal_gap",
    "missing_modality": "missing_modality",
    "dynamics": "dynamics",
    "diagnostics": "diagnostics",
}


def build_parser(artefact: str | None) -> argparse.ArgumentParser:
    from miles_tune.analysis.report import artefacts

    what = "every artefact the runs support, and index.md" if artefact is None else f"the {artefact} artefact"
    p = argparse.ArgumentParser(
        prog=f"python analysis/{'report' if artefact is None else artefact}.py",
        description=f"Write {what} from the runs of miles_tune searches.",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        help="MLflow experiment (repeatable; default: miles_tune)",
    )
    p.add_argument(
        "--exports",
        action="append",
        default=[],
        metavar="PATH",
        help="read trials.parquet files (a file, a search's results folder, or runs/) instead of MLflow",
    )
    p.add_argument("--dataset", action="append", default=[], help="only these datasets (repeatable)")
    p.add_argument("--fusion", action="append", default=[], help="only these fusions (repeatable)")
    p.add_argument("--method", action="append", default=[], help="only these methods (repeatable)")
    p.add_argument("--search", action="append", default=[], help="only these searches, by name (repeatable)")
    p.add_argument("--out", default="report", help="folder to write into (default: report)")
    if artefact in (None, "dynamics"):
        p.add_argument("--run-id", help="dynamics: this MLflow run instead of the best MILES run")
    if artefact == "sensitivity":
        p.add_argument("--param", required=True, choices=["tau", "mu"], help="the grid's parameter")
    if artefact is None:
        names = [a.name for a in artefacts()]
        p.add_argument("--only", action="append", default=[], choices=names, help="only these artefacts")
    return p


def load_inputs(args: argparse.Namespace):  # noqa: ANN201 -> report.Inputs
    from miles_tune.analysis.report import Inputs
    from miles_tune.analysis.trials import AnalysisError, export_files, load_exports, load_mlflow

    filters = {
        "datasets": args.dataset,
        "fusions": args.fusion,
        "methods": args.method,
        "searches": args.search,
    }
    if args.exports:
        if args.tracking_uri or args.experiment:
            raise AnalysisError("--exports reads Parquet files: leave out --tracking-uri and --experiment")
        trials = load_exports(args.exports, **filters)
        inputs = Inputs(
            trials, exports=export_files(args.exports), spaces=dict(trials.attrs.get("spaces", {}))
        )
        inputs.source = "trials.parquet in " + ", ".join(args.exports)
    else:
        from miles_tune.tracking import normalise_tracking_uri

        uri = normalise_tracking_uri(args.tracking_uri)
        trials = load_mlflow(uri, args.experiment or ["miles_tune"], **filters)
        inputs = Inputs(trials, tracking_uri=uri, spaces=dict(trials.attrs.get("spaces", {})))
        names = args.experiment or ["miles_tune"]
        inputs.source = f"the MLflow experiment{'s' if len(names) > 1 else ''} {', '.join(names)}"
    inputs.run_id = getattr(args, "run_id", None)
    return inputs


def main(artefact: str | None = None, argv: list[str] | None = None) -> int:
    """``artefact`` None: every artefact and index.md; else that one artefact (no index)."""
    from miles_tune.analysis.report import Skipped, write_report
    from miles_tune.analysis.report import artefact as lookup
    from miles_tune.analysis.trials import AnalysisError

    args = build_parser(artefact).parse_args(argv)
    out = Path(args.out)
    try:
        inputs = load_inputs(args)
        if artefact is None:
            done = write_report(inputs, out, args.only or None)
        else:
            name = f"sensitivity_{args.param}" if artefact == "sensitivity" else artefact
            try:
                done = {name: lookup(name).write(inputs, out)}
            except Skipped as why:
                print(f"error: cannot write {name}: {why}", file=sys.stderr)
                return 1
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(inputs.trials)} trials of "
        f"{inputs.trials['search'].nunique() if len(inputs.trials) else 0} searches"
    )
    for name, result in done.items():
        if isinstance(result, str):
            print(f"  {name:<17} skipped: {result}")
        else:
            print(f"  {name:<17} {', '.join(str(p) for p in result)}")
    if artefact is None:
        print(f"index: {out / 'index.md'}")
    return 0
