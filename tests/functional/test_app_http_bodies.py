"""What the HTTP routes make of a body (issue 14): its size (413), media type (415), encoding (UTF-8, UTF-16/UTF-32
and UTF-8 with a byte-order mark, a declared charset; else a message that says so) and a bare JSON scalar (not a
denial), with the statuses the OpenAPI document declares.

Given a body, when it is posted to the app's functions (the real handlers, the demo tenant in the emulator, the queue
on Azurite), then the answer is the documented status with the error JSON naming the problem, and nothing is queued
or diagnosed from a body that was refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from remediate.app import http
from remediate.app import settings as app_settings
from remediate.app.openapi import document
from tests.support.app import APP_ORDERS, DEMO, app_environment, snapshot_with_rows

REQUEST = json.dumps({"principal_id": APP_ORDERS, "vault": "kv-payments", "operation": "SecretGet",
                      "object": "secrets/db-password"})
ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_text(encoding="utf-8")


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with app_environment(monkeypatch, azurite, snapshot_with_rows(tmp_path)):
        yield azurite


def post(route: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    req = func.HttpRequest("POST", f"http://localhost/api/{route}", headers=headers, body=body)
    if route == "alerts":
        resp = http.alerts(req)
    elif route == "remediate":
        resp = asyncio.run(http.remediate_route(req))
    else:
        resp = asyncio.run(http.diagnose(req))
    return resp.status_code, json.loads(resp.get_body())


def queued(connection: str) -> int:
    queue = QueueClient.from_connection_string(connection, app_settings.DENIALS_QUEUE)
    try:
        return int(queue.get_queue_properties().approximate_message_count)
    except Exception:
        return 0


@pytest.mark.parametrize(("encoding", "body"), [
    ("utf-8", REQUEST.encode()),
    ("utf-8 with BOM", REQUEST.encode("utf-8-sig")),
    ("utf-16 (LE, BOM)", REQUEST.encode("utf-16")),
    ("utf-16 (BE, BOM)", b"\xfe\xff" + REQUEST.encode("utf-16-be")),
    ("utf-32 (BOM)", REQUEST.encode("utf-32")),
])
@pytest.mark.parametrize("route", ["diagnose", "remediate"])
def test_encoded_bodies_with_a_byte_order_mark_are_decoded(app: str, route: str, encoding: str, body: bytes) -> None:
    # given the same runbook request in each encoding; then each is diagnosed alike
    status, doc = post(route, body)
    assert status == 200, (encoding, doc)
    assert [f["cause"] for f in doc["findings"]] == ["MISSING_ROLE_ASSIGNMENT"]


def test_a_declared_charset_is_decoded(app: str) -> None:
    body = json.dumps({"principal_id": APP_ORDERS, "vault": "kv-payments", "operation": "SecretGet"},
                      ensure_ascii=False).encode("latin-1")
    assert post("diagnose", body, "application/json; charset=ISO-8859-1")[0] == 200


def test_an_alert_in_utf16_is_queued(app: str) -> None:
    # given the demo's Log Alerts V2 alert, as PowerShell 5 would write it (UTF-16 with a BOM)
    status, doc = post("alerts", ALERT.encode("utf-16"))
    # then it is read as the alert it is, not refused as "not an alert"
    assert status == 202 and doc["accepted"] >= 1 and queued(app) >= 1


@pytest.mark.parametrize(("route", "body", "code", "words"), [
    ("diagnose", b'{"principal_id": "caf\xe9"}', "BAD_ENCODING", "is not UTF-8 text: byte 0xe9 at offset 21"),
    ("diagnose", REQUEST.encode("utf-16-le"), "BAD_ENCODING", "UTF-16 (little-endian) without a byte-order mark"),
    ("alerts", ALERT.encode("utf-16-be"), "BAD_ENCODING", "UTF-16 (big-endian) without a byte-order mark"),
    ("alerts", b"\xef\xbb\xbf", "EMPTY_BODY", "empty once decoded"),
    ("diagnose", "  ".encode("utf-16"), "EMPTY_BODY", "empty once decoded"),
    ("diagnose", b"null", "NOT_A_DENIAL", "is the JSON value null, not a denial"),
    ("remediate", b" null\n", "NOT_A_DENIAL", "is the JSON value null, not a denial"),
    ("alerts", b"null", "NOT_A_DENIAL", "is the JSON value null, not an Azure Monitor alert"),
    ("diagnose", b"42", "NOT_A_DENIAL", "is the JSON value 42"),
    ("diagnose", b"true", "NOT_A_DENIAL", "is the JSON value true"),
])
def test_unreadable_bodies_are_refused_with_a_message_that_says_why(app: str, route: str, body: bytes, code: str,
                                                                     words: str) -> None:
    status, doc = post(route, body)
    assert status == 400 and doc["error"]["code"] == code and words in doc["error"]["message"]
    assert "not JSON" not in doc["error"]["message"]
    assert queued(app) == 0


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data; boundary=x", "text/html",
                                          "image/png", "application/octet-stream"])
@pytest.mark.parametrize("route", ["alerts", "diagnose", "remediate"])
def test_an_unsupported_content_type_is_415(app: str, route: str, content_type: str) -> None:
    status, doc = post(route, ALERT.encode() if route == "alerts" else REQUEST.encode(), content_type)
    assert status == 415 and doc["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/json" in doc["error"]["message"] and queued(app) == 0


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8",
                                          "text/plain", "application/vnd.kv+json",
                                          "application/x-www-form-urlencoded"])   # curl -d's and urllib's default
def test_json_text_and_no_content_type_are_read(app: str, content_type: str | None) -> None:
    assert post("diagnose", REQUEST.encode(), content_type)[0] == 200


def test_an_unknown_charset_is_415(app: str) -> None:
    status, doc = post("diagnose", REQUEST.encode(), "application/json; charset=klingon")
    assert status == 415 and "klingon" in doc["error"]["message"]


@pytest.mark.parametrize("route", ["alerts", "diagnose", "remediate"])
def test_a_body_over_4_mib_is_413(app: str, route: str) -> None:
    status, doc = post(route, b" " * 10 + b"x" * (4 * 1024 * 1024 + 1), "text/plain")
    assert status == 413 and doc["error"]["code"] == "BODY_TOO_LARGE" and queued(app) == 0


def test_the_openapi_document_declares_413_415_and_the_body_rules() -> None:
    paths = document()["paths"]
    for route in ("/api/alerts", "/api/diagnose", "/api/remediate"):
        op = paths[route]["post"]
        assert {"400", "413", "415"} <= set(op["responses"]), route
        assert "byte-order mark" in op["description"] and "415" in op["description"]
        assert "NOT_A_DENIAL" in op["responses"]["400"]["description"]
