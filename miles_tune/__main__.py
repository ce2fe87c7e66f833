from miles_tune.train import main

raise SystemExit(main())
