"""``python -m miles_tune.analysis [ARTEFACT] ...``: the same as ``python analysis/report.py``
(no artefact) or ``python analysis/<artefact>.py``."""

from __future__ import annotations

import sys

from miles_tune.analysis.cli import SCRIPTS, main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] in SCRIPTS:
        name = SCRIPTS[argv[0]] or argv[0]
        raise SystemExit(main(name, argv[1:]))
    raise SystemExit(main(None, argv))
