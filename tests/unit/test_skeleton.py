"""The project skeleton is what Azure Functions and users expect."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_host_json_uses_v2_bundle() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"


def test_function_app_imports_no_management_sdk_at_module_level() -> None:
    text = (ROOT / "function_app.py").read_text()
    assert "azure.mgmt" not in text and "azure.identity" not in text


def test_health_route_registered() -> None:
    import function_app

    routes = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert "health" in routes
