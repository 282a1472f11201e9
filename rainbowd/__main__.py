from rainbowd.cli import main

raise SystemExit(main())
