# kv-remediate: `make demo` and `make test` work on a fresh machine (python3 = 3.11).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit bench clean catalog infra-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kv-remediate demo

test: $(STAMP)
	$(MAKE) lint
	$(MAKE) infra-check
	$(MAKE) unit

unit: $(STAMP)
	bash tools/install_azurite.sh
	bash tools/install_azcli.sh
	bash tools/install_browser.sh
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check remediate tests bench tools function_app.py
	$(VENV)/bin/mypy

bench: $(STAMP)
	bash tools/install_azurite.sh
	$(PY) -m bench

infra-check: $(STAMP)
	@if [ -f infra/check.sh ]; then bash infra/check.sh; else echo "infra-check: nothing to check yet"; fi

catalog:
	$(PYTHON) tools/build_catalog.py
	$(PYTHON) tools/build_hsm_catalog.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
