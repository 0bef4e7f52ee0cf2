from wan_ui.tune.cli import main

raise SystemExit(main())
