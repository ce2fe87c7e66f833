"""Tables IV and V: MILES over a grid of τ (``--param tau``) or μ (``--param mu``).

Usage: ``python analysis/sensitivity.py --param tau --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("sensitivity"))
