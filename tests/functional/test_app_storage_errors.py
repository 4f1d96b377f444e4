"""Storage that cannot be used, as a person meets it (issue 14): /api/alerts answers 503 STORAGE_UNAVAILABLE with a
whole message whose advice fits the cause, and /api/health says ``degraded`` naming the storage setting (never its
value). Against a closed loopback port (nothing listening) and a real Azurite run without
``--skipApiVersionCheck`` (it refuses the storage SDK's newer API version, as a plain ``npx azurite`` does)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.app.health import health
from remediate.app.http import alerts
from remediate.errors import clip
from tests.support.app import DEMO, guard_loopback
from tests.support.azurite import connection_string, start_azurite

ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _app_on(monkeypatch: pytest.MonkeyPatch, conn: str) -> None:
    guard_loopback(monkeypatch)
    monkeypatch.setenv(app_settings.STORAGE_CONNECTION, conn)
    monkeypatch.setenv(app_settings.SNAPSHOT_SETTING, str(DEMO / "tenant.json"))
    services.reset()


@pytest.fixture
def closed_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = _closed_port()
    conn = connection_string(port, port, port)
    _app_on(monkeypatch, conn)
    yield conn
    services.reset()


@pytest.fixture(scope="module")
def strict_azurite() -> Iterator[str]:
    """Azurite as `npx azurite` runs it: checking API versions (in memory, no telemetry, loopback)."""
    emulator = start_azurite(skip_api_version_check=False)
    try:
        yield emulator.connection_string
    finally:
        emulator.stop()


def _health() -> dict[str, Any]:
    response = health(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    assert response.status_code == 200
    doc: dict[str, Any] = json.loads(response.get_body())
    return doc


def _post_alert() -> tuple[int, dict[str, Any]]:
    response = alerts(func.HttpRequest("POST", "http://localhost/api/alerts", body=ALERT,
                                       headers={"Content-Type": "application/json"}))
    return response.status_code, json.loads(response.get_body())


def _whole(message: str) -> None:
    """The message is whole: it ends its last sentence, and any clipped quote ends after a whole word (clip)."""
    assert message.rstrip(")").rstrip()[-1].isalnum(), message
    for kept in re.findall(r"\(([^()]*)…\)", message):
        assert kept and not kept.endswith(" "), message


def test_a_closed_port_is_a_503_that_asks_whether_storage_runs(closed_storage: str) -> None:
    # given AzureWebJobsStorage pointing at a loopback port nothing listens on; when an alert is posted
    status, doc = _post_alert()
    # then 503 STORAGE_UNAVAILABLE, naming where it reached for and asking whether storage is running
    message = doc["error"]["message"]
    assert status == 503 and doc["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert "could not be reached" in message and "Is storage running there?" in message
    assert "AzureWebJobsStorage" in message and "firewall" not in message
    _whole(message)


def test_a_closed_port_makes_health_degraded_naming_the_setting_not_its_value(closed_storage: str) -> None:
    # when /api/health is asked (twice: the second answer is the cached check)
    first, second = _health(), _health()
    # then degraded, the storage setting named with the cause, and no endpoint or key in the answer
    assert first["status"] == second["status"] == "degraded"
    [problem] = [p for p in first["problems"] if p["setting"] == app_settings.STORAGE_CONNECTION]
    assert "did not answer: is storage (or Azurite) running" in problem["problem"]
    assert "127.0.0.1" not in json.dumps(first) and "AccountKey" not in json.dumps(first)
    assert second["problems"] == first["problems"]


def test_azurite_refusing_the_api_version_gets_the_flag_as_advice(monkeypatch: pytest.MonkeyPatch,
                                                                 strict_azurite: str) -> None:
    # given Azurite that checks API versions (its refusal text is long enough to have been cut mid-word before)
    _app_on(monkeypatch, strict_azurite)
    try:
        status, doc = _post_alert()
        health_doc = _health()
    finally:
        services.reset()
    # then the 503 says Azurite refused this SDK's API version and gives the flag or the upgrade, whole
    message = doc["error"]["message"]
    assert status == 503 and doc["error"]["code"] == "STORAGE_UNAVAILABLE", doc
    assert "does not support the API version" in message and "--skipApiVersionCheck" in message
    assert "azurite@latest" in message and "configuratio." not in message and "Retry;" not in message
    _whole(message)
    # and health is degraded, naming the setting, with the same advice
    assert health_doc["status"] == "degraded"
    [problem] = [p for p in health_doc["problems"] if p["setting"] == app_settings.STORAGE_CONNECTION]
    assert "--skipApiVersionCheck" in problem["problem"]


def test_health_is_ok_on_a_working_azurite(monkeypatch: pytest.MonkeyPatch, azurite: str) -> None:
    # given the tests' Azurite (with --skipApiVersionCheck); then storage is no problem
    _app_on(monkeypatch, azurite)
    try:
        doc = _health()
    finally:
        services.reset()
    assert doc["status"] == "ok" and doc["problems"] == []


@pytest.mark.parametrize("text", [
    "The API version 2026-10-06 is not supported by Azurite. Please upgrade Azurite to latest version and retry. If "
    "you are using Azurite in Visual Studio, please check you have installed latest Visual Studio patch. Azurite "
    "command line parameter \"--skipApiVersionCheck\" or Visual Studio Code configuration \"Skip Api Version Check\" "
    "can skip this error.",
    "x" * 400,
    "short",
    "first line\nsecond line",
])
def test_clip_never_cuts_mid_word(text: str) -> None:
    # given an error text; when clipped to 300 characters
    out = clip(text)
    first = text.splitlines()[0]
    # then it is the whole first line when it fits, else a prefix ending at a word boundary, marked with …
    assert len(out) <= 300
    if len(first) <= 300:
        assert out == first
    else:
        assert out.endswith("…")
        kept = out[:-1]
        assert first.startswith(kept)
        if " " in first[:300]:
            assert first[len(kept)] in " ,;:.-(\"" or not first[len(kept) - 1].isalnum()
