from vtdtui.cli import main

raise SystemExit(main())
