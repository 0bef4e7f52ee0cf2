from wan_ui.cli import main

raise SystemExit(main())
