"""§V-B: each encoder's gap to its best unimodal model, mean ± std over encoders.

Usage: ``python analysis/unimodal_gap.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("unimodal_gap"))
