from tokend.cli import main

raise SystemExit(main())
