"""``python -m remediate.cli``: the same command line as ``kv-remediate`` (the tests and serve's child processes
start it this way)."""

from . import main

raise SystemExit(main())
