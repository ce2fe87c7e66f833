"""Fig. 2: u, δ, learning rates and validation metrics per epoch of the best MILES run.

Usage: ``python analysis/dynamics.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("dynamics"))
