from intentd.sandbox.cli import main

raise SystemExit(main())
