"""The study: the paper's whole protocol, for one dataset, in one command.

    python -m miles_tune.study --dataset synthetic --out studies/synthetic --budget small

Stages, in order: ``unimodal`` (a unimodal search per modality: Table I, and the rates MSLR
needs), ``methods`` (every method and control × fusion, the same budget for each),
``seeds`` (each best configuration re-run with K fresh seeds), ``sensitivity`` (MILES's
τ and μ grids around its best), ``u_source`` (MILES with u from the training set, searched
and re-run like the others), ``report`` (every analysis artefact). One folder holds it all:
``manifest.json``, ``mlflow.db``, ``ray_results/``, ``runs/`` and ``report/``; running the same
command again resumes it. What runs: :mod:`.plan`; the manifest: :mod:`.manifest`; the runner:
:mod:`.run`. Names resolve lazily: ``import miles_tune.study`` imports neither Ray nor MLflow.
"""

from __future__ import annotations

from miles_tune.lazy import lazy_exports

_EXPORTS = {
    "BUDGETS": "plan",
    "Arm": "plan",
    "Budget": "plan",
    "SearchSpec": "plan",
    "StudyPlan": "plan",
    "plan_study": "plan",
    "search_argv": "plan",
    "Manifest": "manifest",
    "run_study": "run",
    "main": "run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
