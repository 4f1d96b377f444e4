"""``python -m remediate.localhost [http|http-process|worker]``: the processes ``kv-remediate serve`` starts."""

from remediate.localhost.supervisor import main

raise SystemExit(main())
