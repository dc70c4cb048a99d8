"""Allow ``python -m mailstead``."""

from mailstead.cli.main import main

raise SystemExit(main())
