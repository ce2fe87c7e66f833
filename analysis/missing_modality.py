"""The test metric without each modality: zeroed, mean-filled, or the other head.

Usage: ``python analysis/missing_modality.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("missing_modality"))
