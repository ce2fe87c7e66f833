"""``python -m miles_tune.study``: see :mod:`miles_tune.study.run`."""

from miles_tune.study.run import main

if __name__ == "__main__":
    raise SystemExit(main())
