from miles_tune.cli import train_main

raise SystemExit(train_main())
