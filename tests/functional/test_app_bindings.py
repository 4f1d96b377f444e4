"""The function app's contract as the Functions host indexes it: names, routes, methods, auth levels, the queue
binding; and a cold start that loads little more than azure.functions."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from remediate.localhost.discovery import app_functions, blueprint_app, load_app
from tests.support.app import ROOT


def _functions() -> dict[str, dict[str, Any]]:
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in app_functions(load_app())}


def test_http_routes_methods_and_auth_levels() -> None:
    # given the app as the host indexes it (app.get_functions())
    functions = _functions()
    # then the HTTP functions are exactly the contract's routes, methods and auth levels
    http = {name: next(b for b in doc["bindings"] if b["type"] == "httpTrigger")
            for name, doc in functions.items() if name not in ("worker", "revoke_expired", "slack_decisions")}
    assert {n: (b["route"], b["methods"], b["authLevel"]) for n, b in http.items()} == {
        "alerts": ("alerts", ["POST"], "FUNCTION"),
        "diagnose": ("diagnose", ["POST"], "FUNCTION"),
        "remediate": ("remediate", ["POST"], "FUNCTION"),
        "openapi": ("openapi.json", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
        # the findings page: people sign in (Easy Auth or an Entra token), not with a function key
        "findings_page": ("findings", ["GET"], "ANONYMOUS"),
        "findings_approve": ("findings/approvals/{request_id}/approve", ["POST"], "ANONYMOUS"),
        "findings_reject": ("findings/approvals/{request_id}/reject", ["POST"], "ANONYMOUS"),
        "slack_actions": ("slack/actions", ["POST"], "ANONYMOUS"),
    }
    # and each answers through the http output binding
    for name in http:
        assert {"direction": "OUT", "type": "http", "name": "$return"} in functions[name]["bindings"]


def test_worker_is_a_queue_trigger_on_denials_with_the_host_storage_connection() -> None:
    # given the worker's bindings; then it is triggered by the `denials` queue on AzureWebJobsStorage
    assert _functions()["worker"]["bindings"] == [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "denials",
         "connection": "AzureWebJobsStorage"}]


def test_revocation_timer_runs_every_five_minutes() -> None:
    # given the timer's bindings; then it fires every 5 minutes and not at start-up
    (binding,) = _functions()["revoke_expired"]["bindings"]
    assert binding["type"] == "timerTrigger" and binding["schedule"] == "0 */5 * * * *"
    assert binding.get("runOnStartup") is False


def test_installed_serve_builds_the_same_app_as_function_app() -> None:
    # given the app serve builds when function_app.py is not beside the package (a pip install)
    rebuilt = {f.get_function_name(): json.loads(f.get_function_json()) for f in app_functions(blueprint_app())}
    # then it has the same functions and bindings
    assert rebuilt == _functions()


def test_host_json_limits_retries() -> None:
    # given host.json; then poison messages go aside after a bounded number of attempts
    host = json.loads((ROOT / "host.json").read_text())
    assert 1 <= host["extensions"]["queues"]["maxDequeueCount"] <= 10


def test_cold_start_imports_no_sdk() -> None:
    # given a fresh interpreter; when function_app is imported
    probe = "import json, sys, function_app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    loaded = json.loads(out)
    # then no Azure SDK client, credential, HTTP client or core service module was loaded
    # (the import-time ratio against azure.functions is measured by `make bench`, not by a timed test)
    heavy = ("azure.mgmt", "azure.identity", "azure.core", "azure.storage", "azure.data", "aiohttp", "jwt",
             "remediate.service", "remediate.intake", "remediate.emulator", "remediate.facts", "remediate.store")
    assert [m for m in loaded if m.startswith(heavy)] == []


def test_slack_decisions_is_a_queue_trigger_on_slack_actions() -> None:
    # given the Slack decision worker's bindings; then it is triggered by the `slack-actions` queue
    assert _functions()["slack_decisions"]["bindings"] == [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "slack-actions",
         "connection": "AzureWebJobsStorage"}]
