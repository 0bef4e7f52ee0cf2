from wan_ui.train.trainer import main

raise SystemExit(main())
