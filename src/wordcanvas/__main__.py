from wordcanvas.cli import main

raise SystemExit(main())
