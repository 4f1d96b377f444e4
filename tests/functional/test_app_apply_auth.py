"""Applying over HTTP needs an identity (issue 15 finding 4): POST /api/remediate with apply, through `serve`, the
snapshot emulator and Azurite. A token for the app's audience holding KvRemediate.Apply applies (the emulator
holds the assignment afterwards, the record names the operator); a function key alone, a wrong role, audience or
tenant, an expired or forged token, Action Groups' own token, or no token settings at all: 401 with the error JSON
and nothing read from Azure or changed. The app's own identity is never a grantee. A too-deep JSON body is a 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueServiceClient

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.app.http import diagnose, remediate_route
from remediate.intake import parse_one
from tests.support.app import APP_ORDERS, DEMO, DEMO_SUB, call, variant
from tests.support.entra import (
    API_AUDIENCE,
    API_SETTINGS,
    FORGED,
    WEBHOOK_AUDIENCE,
    api_authenticator,
    bearer,
    jwks_server,
    operator_token,
    token,
)
from tests.support.served_app import App, serve_app

POLICY = {"mode": "apply", "scopes": [f"/subscriptions/{DEMO_SUB}"], "grant_ttl": "PT8H"}
REQUEST = {"principal_id": APP_ORDERS, "vault": "kv-payments", "operation": "SecretGet",
           "object": "secrets/db-password"}
APPLY = json.dumps({**REQUEST, "apply": True}).encode()


def _serve(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, tokens: bool = True,
           **settings: str) -> Iterator[App]:
    snapshot = tmp_path / "tenant.json"
    snapshot.write_text((DEMO / "tenant.json").read_text())
    with jwks_server() as (url, ctx, _):
        extra = {**API_SETTINGS, **settings} if tokens else settings
        for app in serve_app(azurite, snapshot, monkeypatch, KV_REMEDIATE_POLICY=json.dumps(POLICY), **extra):
            if tokens:
                services.install(services.Runtime(api_authenticator=api_authenticator(url, ctx)))
            yield app


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _serve(azurite, tmp_path, monkeypatch)


def _assignments(principal: str = APP_ORDERS) -> list[dict[str, Any]]:
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"] if a["properties"]["principalId"] == principal]


def _arm_calls() -> int:
    """Requests the emulator has answered (0 when it never started: nothing was read)."""
    rt = services.get()
    if not rt.emulator_started:
        return 0
    run = rt.emulator
    assert run is not None
    return len(getattr(run.emulator, "requests", []) or [])


def test_a_token_with_the_apply_role_applies_and_names_the_operator(app: App) -> None:
    # given an operator's token for the app's audience holding KvRemediate.Apply
    status, doc = app.post("/api/remediate", APPLY, **bearer(operator_token()))
    # then the plan is applied: the emulator holds the role assignment, and the grant is recorded
    assert status == 200 and doc["findings"][0]["outcome"] == "applied", doc
    assert len(_assignments()) == 1
    [record] = services.get().grants().list()
    assert record.outcome == "applied"


def test_query_flag_and_v2_token_apply_too(app: App) -> None:
    # given a v2 token (the app in azp) and ?apply=true
    tok = operator_token(iss="https://login.microsoftonline.com/28f841eb-fe15-511b-b0ce-7c31211ef512/v2.0",
                         appid=None, azp="0a1b2c3d-0000-4000-8000-00000000a99c")
    status, doc = app.post("/api/remediate?apply=true", json.dumps(REQUEST).encode(), **bearer(tok))
    assert status == 200 and doc["findings"][0]["outcome"] == "applied"
    assert len(_assignments()) == 1


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing_token"),                                                      # the function key alone
    (bearer(operator_token(roles=[])), "missing_role"),
    (bearer(operator_token(roles=["KvRemediate.Read"])), "missing_role"),
    (bearer(operator_token(aud=WEBHOOK_AUDIENCE)), "wrong_audience"),
    (bearer(operator_token(aud="https://management.azure.com")), "wrong_audience"),
    (bearer(operator_token(exp=timedelta(minutes=-10))), "expired"),
    (bearer(operator_token(key=FORGED)), "bad_signature"),
    (bearer(operator_token(tenant="00000000-0000-4000-8000-000000000001")), "wrong_issuer"),
    (bearer(token()), "wrong_audience"),                                        # Action Groups' webhook token
    (bearer(token(aud=API_AUDIENCE)), "missing_role"),                          # ... even for our audience
    ({"Authorization": "Basic b3BlcmF0b3I6cGFzcw=="}, "missing_token"),
])
@pytest.mark.parametrize("how", ["body", "query"])
def test_apply_without_a_valid_token_is_401_and_nothing_is_read_or_changed(
        app: App, headers: dict[str, str], reason: str, how: str) -> None:
    # given an apply request that is not an operator's authenticated act
    query = ("/api/remediate?apply=1", json.dumps(REQUEST).encode())
    path, body = ("/api/remediate", APPLY) if how == "body" else query
    status, doc = app.post(path, body, **headers)
    # then 401 with the error JSON naming why, no Azure read, no assignment, no record
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED", doc
    assert f"({reason})" in doc["error"]["message"]
    assert _arm_calls() == 0 and not services.get().emulator_started
    assert _assignments() == [] and services.get().grants().list() == []


def test_without_token_settings_nothing_is_applied_over_http(azurite: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _serve(azurite, tmp_path, monkeypatch, tokens=False):
        # given no KV_REMEDIATE_API_* settings; when even a well-formed operator token asks to apply
        status, doc = app.post("/api/remediate", APPLY, **bearer(operator_token()))
        # then 401 (not_configured), nothing changed; without apply the same request still diagnoses
        assert status == 401 and "(not_configured)" in doc["error"]["message"]
        assert "KV_REMEDIATE_API_AUDIENCE" in doc["error"]["message"]
        status, doc = app.post("/api/remediate", json.dumps(REQUEST).encode())
        assert status == 200 and doc["findings"][0]["cause"] == "MISSING_ROLE_ASSIGNMENT"
        assert doc["findings"][0]["applied"] is False and _assignments() == []


def test_the_apps_own_identity_is_never_a_grantee(azurite: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # given the app's own object id configured, and an operator asking to grant that very principal
    for app in _serve(azurite, tmp_path, monkeypatch, KV_REMEDIATE_SELF_OBJECT_ID=APP_ORDERS.upper()):
        status, doc = app.post("/api/remediate", APPLY, **bearer(operator_token()))
        # then the guard refuses it (principals.self) and the emulator holds nothing new
        assert status == 200 and doc["findings"][0]["refused_by"] == "principals.self", doc
        assert _assignments() == []
        # and health says the setting is set (never its value) and that the own identity is refused
        status, health = call(app.http.base_url + "/api/health", method="GET")
        assert health["own_identity"]["set"] is True and "never a grantee" in health["own_identity"]["refused"]
        assert APP_ORDERS not in json.dumps(health).lower()


def _deep(depth: int = 20_000) -> bytes:
    """Nested past the JSON decoder's recursion limit, with fewer brackets than intake's structure cap (50,000)."""
    return b'{"principal_id": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("path", ["/api/remediate", "/api/remediate?apply=true", "/api/diagnose", "/api/alerts"])
def test_too_deep_json_is_a_400_naming_the_body(app: App, path: str) -> None:
    # given a body nested deeper than the JSON parser's recursion limit; when posted with a valid token
    status, doc = app.post(path, _deep(), **bearer(operator_token()))
    # then 400 with the error JSON naming the body, never a 500 or a traceback; nothing changed
    assert status == 400 and doc["error"]["code"] in ("BAD_INPUT", "NOT_AN_ALERT"), doc
    assert "body" in doc["error"]["message"] or "alert" in doc["error"]["message"]
    assert "Traceback" not in json.dumps(doc) and _assignments() == []


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/remediate", 400, "BAD_INPUT"),      # the apply flag's own parse meets the nesting first
    ("/api/diagnose", 413, "TOO_LARGE"),       # intake counts the brackets before decoding
    ("/api/alerts", 400, "NOT_AN_ALERT"),      # not decodable, so not an alert payload
])
def test_json_past_the_structure_cap_is_refused_naming_the_body(app: App, path: str, status: int, code: str) -> None:
    # given a body with more nested arrays than any real input (100,000); when posted with a valid token
    got, doc = app.post(path, _deep(100_000), **bearer(operator_token()))
    # then it is refused with the error JSON naming the body, never a 500 or a traceback, and nothing changed
    assert (got, doc["error"]["code"]) == (status, code), doc
    assert "body" in doc["error"]["message"] or "alert" in doc["error"]["message"]
    assert "Traceback" not in json.dumps(doc) and _assignments() == []


def _request(body: bytes, url: str = "http://127.0.0.1/api/remediate", **headers: str) -> func.HttpRequest:
    params = dict(p.split("=", 1) for p in url.partition("?")[2].split("&") if p)
    return func.HttpRequest("POST", url, headers=headers, params=params, body=body)


def test_decorated_functions_refuse_and_apply_directly(app: App) -> None:
    # given the decorated functions called as the host calls them (no serve in between)
    loop = app.http.loop
    denied = loop.submit(remediate_route(_request(APPLY))).result(timeout=60)
    assert denied.status_code == 401 and json.loads(denied.get_body())["error"]["code"] == "UNAUTHORIZED"
    assert _assignments() == []
    deep = loop.submit(diagnose(_request(_deep(), "http://127.0.0.1/api/diagnose"))).result(timeout=60)
    assert deep.status_code == 400 and json.loads(deep.get_body())["error"]["code"] == "BAD_INPUT"
    ok = loop.submit(remediate_route(_request(APPLY, **bearer(operator_token())))).result(timeout=60)
    assert ok.status_code == 200 and json.loads(ok.get_body())["findings"][0]["outcome"] == "applied"
    assert len(_assignments()) == 1


@pytest.mark.parametrize("path", ["/api/alerts", "/api/diagnose", "/api/remediate"])
def test_an_input_over_the_denial_cap_is_413_and_nothing_is_done(azurite: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    # given KV_REMEDIATE_MAX_DENIALS=1 and an alert that carries two denials
    body = variant("alert_v1_searchresults_azurediagnostics.json")
    assert len(parse_one("alert", body).denials) >= 2
    for app in _serve(azurite, tmp_path, monkeypatch, KV_REMEDIATE_MAX_DENIALS="1"):
        # when it is posted; then 413 TOO_LARGE naming the cap, nothing queued or read
        status, doc = app.post(path, body, **bearer(operator_token()))
        assert status == 413 and doc["error"]["code"] == "TOO_LARGE" and "cap is 1" in doc["error"]["message"]
        queue = QueueServiceClient.from_connection_string(azurite).get_queue_client(app_settings.DENIALS_QUEUE)
        assert queue.get_queue_properties().approximate_message_count == 0
        assert not services.get().emulator_started


def test_an_unusable_cap_setting_is_a_health_problem(azurite: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _serve(azurite, tmp_path, monkeypatch, KV_REMEDIATE_MAX_PRINCIPALS="-5"):
        status, health = call(app.http.base_url + "/api/health", method="GET")
        assert status == 200 and any(p["setting"] == "KV_REMEDIATE_MAX_PRINCIPALS" for p in health["problems"])
        assert services.get().settings.max_principals == 50
