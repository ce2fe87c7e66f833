"""Table I: the best unimodal model per dataset and modality (the `unimodal` searches).

Usage: ``python analysis/unimodal.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("unimodal"))
