"""Per search: best-so-far, parallel coordinates and parameter importance.

Usage: ``python analysis/diagnostics.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("diagnostics"))
