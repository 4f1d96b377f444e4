"""``python -m remediate`` is the CLI."""

from .cli import main

raise SystemExit(main())
