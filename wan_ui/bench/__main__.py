from wan_ui.bench.runner import main

raise SystemExit(main())
