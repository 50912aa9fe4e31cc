from unikd.cli import main

raise SystemExit(main())
