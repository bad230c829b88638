from trustserve.worker.main import main

raise SystemExit(main())
