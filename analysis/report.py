"""Every artefact the runs support, with an index.md; ``--help`` for the options.

python analysis/report.py --tracking-uri sqlite:///mlflow.db --experiment miles_tune --out report
python analysis/report.py --exports runs/ --out report     # searches run with --no-tracking
"""

from miles_tune.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
