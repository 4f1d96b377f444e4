"""Secure webhook on POST /api/alerts (through `serve`): an Entra ID bearer token from Azure Monitor Action Groups
(its app id, the ActionGroupsSecureWebhook role), checked before anything else, against the tenant's keys published
over loopback HTTPS. Valid → 202; wrong audience, issuer, app or role, expired, bad signature or no token → 401
with the error JSON and nothing queued; a domain as the tenant is a configuration problem health names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.queue import QueueServiceClient

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.app.webhook_auth import APPLY_ROLE
from remediate.localhost.discovery import load_app
from remediate.localhost.http import HttpServer
from tests.support.app import DEMO, app_environment, call
from tests.support.entra import (
    FORGED,
    WEBHOOK_AUDIENCE,
    WEBHOOK_SETTINGS,
    bearer,
    jwks_server,
    token,
    webhook_authenticator,
)

AUDIENCE = WEBHOOK_AUDIENCE


@pytest.fixture
def secured(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`serve` with the secure webhook on (settings set; keys fetched from the loopback JWKS)."""
    with jwks_server() as (url, ctx, _), app_environment(monkeypatch, azurite, DEMO / "tenant.json",
                                                         **WEBHOOK_SETTINGS):
        services.install(services.Runtime(authenticator=webhook_authenticator(url, ctx)))
        server = HttpServer(load_app(), port=0).start()
        try:
            yield server.base_url + "/api/alerts"
        finally:
            server.stop()


ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()


def _queued(conn: str) -> int:
    queue = QueueServiceClient.from_connection_string(conn).get_queue_client(app_settings.DENIALS_QUEUE)
    return int(queue.get_queue_properties().approximate_message_count)


def test_valid_token_is_accepted(secured: str, azurite: str) -> None:
    # given a token from the tenant's key for our audience; when the alert is posted with it; then 202
    status, doc = call(secured, ALERT, headers=bearer(token()))
    assert (status, doc) == (202, {"accepted": 1})
    assert _queued(azurite) == 1


@pytest.mark.parametrize("headers, reason", [
    (bearer(token(aud="api://someone-else")), "wrong_audience"),
    (bearer(token(iss="https://sts.windows.net/00000000-0000-0000-0000-000000000000/")), "wrong_issuer"),
    (bearer(token(exp=timedelta(minutes=-10))), "expired"),
    (bearer(token(key=FORGED)), "bad_signature"),
    # another app of the tenant, even holding the role; Action Groups without the role
    (bearer(token(appid="0a1b2c3d-0000-4000-8000-000000000bad")), "wrong_app"),
    (bearer(token(roles=[])), "missing_role"),
    (bearer(token(roles=[APPLY_ROLE])), "missing_role"),
    ({}, "missing_token"),
])
def test_invalid_or_missing_token_is_refused_before_anything_else(secured: str, azurite: str,
                                                                   headers: dict[str, str], reason: str) -> None:
    # given a request whose token is wrong in one way (or missing); when posted
    status, doc = call(secured, ALERT, headers=headers)
    # then 401 with the error JSON naming why, and nothing was queued
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED" and f"({reason})" in doc["error"]["message"]
    assert _queued(azurite) == 0


def test_unauthenticated_junk_is_401_not_400(secured: str) -> None:
    # given no token and a body that is not even JSON; then the token is checked first: 401, not 400
    status, doc = call(secured, b"{junk")
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"


def test_half_configured_secure_webhook_never_leaves_the_route_open(azurite: str, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    # given only the audience setting (the tenant is missing)
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json", KV_REMEDIATE_WEBHOOK_AUDIENCE=AUDIENCE):
        server = HttpServer(load_app(), port=0).start()
        try:
            # when an alert is posted; then it is refused as a configuration error, and health names the setting
            status, doc = call(server.base_url + "/api/alerts", ALERT)
            assert status == 500 and doc["error"]["code"] == "BAD_CONFIG"
            assert _queued(azurite) == 0
            status, health = call(server.base_url + "/api/health", method="GET")
            assert status == 200 and health["status"] == "degraded"
            assert [p["setting"] for p in health["problems"]] == ["KV_REMEDIATE_WEBHOOK_TENANT"]
            assert AUDIENCE not in json.dumps(health)
        finally:
            server.stop()


@pytest.mark.parametrize("setting", ["KV_REMEDIATE_WEBHOOK_TENANT", "KV_REMEDIATE_API_TENANT"])
def test_a_domain_as_tenant_is_a_health_problem_naming_the_setting(azurite: str, monkeypatch: pytest.MonkeyPatch,
                                                                    setting: str) -> None:
    # given the tenant given as a domain (a token's issuer names the tenant by id, so it would never match)
    audience = setting.replace("_TENANT", "_AUDIENCE")
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json", **{audience: AUDIENCE,
                                                                        setting: "contoso.onmicrosoft.com"}):
        server = HttpServer(load_app(), port=0).start()
        try:
            # when health is asked; then it is degraded, names the setting and says why, never the value
            status, health = call(server.base_url + "/api/health", method="GET")
            assert status == 200 and health["status"] == "degraded"
            [problem] = [p for p in health["problems"] if p["setting"] == setting]
            assert "domain" in problem["problem"] and "GUID" in problem["problem"]
            assert "contoso" not in json.dumps(health)
            # and the route refuses as a configuration error rather than accepting anything
            if setting == "KV_REMEDIATE_WEBHOOK_TENANT":
                status, doc = call(server.base_url + "/api/alerts", ALERT, headers=bearer(token()))
                assert status == 500 and doc["error"]["code"] == "BAD_CONFIG" and _queued(azurite) == 0
        finally:
            server.stop()
