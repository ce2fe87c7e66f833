"""``python -m miles_tune.train``: the command line lives in :mod:`miles_tune.cli`, above the loop."""

from miles_tune.cli import train_main

raise SystemExit(train_main())
