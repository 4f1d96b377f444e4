"""System tests: the app as separate processes under load (storm), generated requests (schemathesis), a process
killed mid-apply, the real Azure CLI; slow, and still part of `make test`."""
