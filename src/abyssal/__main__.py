from abyssal.cli.main import main

raise SystemExit(main())
