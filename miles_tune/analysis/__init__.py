"""The paper's evidence from the runs: tables and figures from MLflow or ``trials.parquet``.

    from miles_tune.analysis import load_mlflow, main_table
    trials = load_mlflow("sqlite:///mlflow.db", ["miles_tune"])   # one row per trial
    main_table(trials)                                            # a DataFrame

Loading: :mod:`.trials`; the selection rule: :mod:`.select`; the tables: :mod:`.tables`;
rendering (Markdown, CSV, LaTeX, figures): :mod:`.render`, :mod:`.figures`; Fig. 2:
:mod:`.dynamics`; per-search diagnostics: :mod:`.diagnostics`; everything at once:
:mod:`.report`. The scripts in ``analysis/`` are thin command lines over these.
Names resolve lazily: ``import miles_tune.analysis`` imports neither pandas nor MLflow.
"""

from __future__ import annotations

from miles_tune.lazy import lazy_exports

_EXPORTS = {
    "load_mlflow": "trials",
    "load_exports": "trials",
    "load_history": "trials",
    "AnalysisError": "trials",
    "select": "select",
    "Selected": "select",
    "main_table": "tables",
    "unimodal_table": "tables",
    "sensitivity_table": "tables",
    "u_source_table": "tables",
    "unimodal_gap_table": "tables",
    "missing_modality_table": "tables",
    "to_markdown": "render",
    "to_latex": "render",
    "write_table": "render",
    "write_report": "report",
    "Inputs": "report",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
