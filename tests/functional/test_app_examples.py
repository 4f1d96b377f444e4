"""The runbook examples against `serve`: the shell script prints the cause and the fix, and the error JSON on a
bad request; the PowerShell runbook calls the same route with the same key header."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from remediate.localhost.discovery import load_app
from remediate.localhost.http import HttpServer
from tests.support.app import APP_ORDERS, DEMO, ROOT, app_environment

SCRIPT = ROOT / "examples" / "diagnose.sh"
RUNBOOK = ROOT / "examples" / "Diagnose-KeyVaultDenial.ps1"


@pytest.fixture
def served(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        server = HttpServer(load_app(), port=0, function_key="example-key").start()
        try:
            yield server.base_url
        finally:
            server.stop()


def _run(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KV_REMEDIATE_URL": base, "KV_REMEDIATE_FUNCTION_KEY": "example-key"}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the example needs curl and jq")
def test_shell_example_prints_the_fix(served: str) -> None:
    # given serve with a function key; when the example asks about a denied secret read
    done = _run(served, APP_ORDERS, "kv-payments", "SecretGet", "secrets/db-password")
    # then it prints the cause and the az command of the fix
    assert done.returncode == 0, done.stderr
    assert "Cause:  MISSING_ROLE_ASSIGNMENT" in done.stdout
    assert "Fix:    az role assignment create --assignee-object-id " + APP_ORDERS in done.stdout
    # and an error text file works too
    done = _run(served, "--error", str(DEMO / "inputs" / "02_python_sdk_error.txt"))
    assert done.returncode == 0 and "Cause:  MISSING_ROLE_ASSIGNMENT" in done.stdout
    # and a bad request ends with the error JSON's code and message
    done = _run(served, "not-a-guid", "kv-payments", "SecretGet")
    assert done.returncode == 1 and "answered 400: BAD_INPUT" in done.stderr and "principal_id" in done.stderr


def test_powershell_runbook_calls_diagnose_with_the_function_key() -> None:
    # given the Automation runbook; then it posts to /api/diagnose with the x-functions-key header and prints the fix
    text = RUNBOOK.read_text()
    assert "/api/diagnose" in text and "'x-functions-key' = $FunctionKey" in text
    assert "$finding.plan.commands.az" in text and "Get-AutomationVariable" in text
