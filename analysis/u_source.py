"""Table VI: u computed on the training set against the validation set (a u_source grid).

Usage: ``python analysis/u_source.py --experiment miles_tune --out report``
(``--help`` for every option; ``python analysis/report.py`` writes every artefact).
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main("u_source"))
