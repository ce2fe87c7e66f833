"""Tables II and III: per dataset and fusion, each method's selected model (best validation
metric over its searches), its test metrics, Δ between encoders and the budget spent.

Usage: ``python analysis/main_table.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("main"))
