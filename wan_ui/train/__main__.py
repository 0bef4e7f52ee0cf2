from wan_ui.train.cli import main

raise SystemExit(main())
