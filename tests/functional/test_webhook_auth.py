"""Entra ID bearer tokens (secure webhook and the apply role): real RS256 signatures with keys made here, JWKS served
over loopback HTTPS. Lifetimes are checked by ``jwt.decode`` against the wall clock, so tokens are made around now."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from remediate.app.webhook_auth import (
    ACTION_GROUPS_APP_ID,
    APPLY_ROLE,
    WebhookAuthenticator,
    WebhookAuthSettings,
    api_authenticator_from_env,
    api_settings_from_env,
    authenticator_from_env,
    signing_keys,
    validate_token,
)
from remediate.errors import ConfigError, WebhookAuthError
from tests.support import entra
from tests.support.entra import jwk

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://kv-remediate-webhook"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY, ROLLED_KEY = _key(), _key(), _key()


def token(*, key: rsa.RSAPrivateKey = KEY, **kw: Any) -> str:
    return entra.token(key=key, tenant=TENANT, aud=kw.pop("aud", AUDIENCE), **kw)


SETTINGS = WebhookAuthSettings(tenant=TENANT, audiences=(AUDIENCE,))
API = WebhookAuthSettings(tenant=TENANT, audiences=(AUDIENCE,), roles=(APPLY_ROLE,), app_ids=(), purpose="apply")
KEYS = jwt.PyJWKSet.from_dict({"keys": [jwk(KEY, "k1"), {"kty": "EC", "kid": "ec"}, {"kty": "RSA"}]})


def closed_port_url() -> str:
    """An HTTPS URL on a loopback port nothing listens on: any key fetch there fails with connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"https://127.0.0.1:{port}/keys"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds added to the monotonic clock, the one PyJWKClient's key cache reads (it cannot be told the time)."""
    real = time.monotonic
    skew = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew[0])
    return skew


def reason(tok: str, keys: jwt.PyJWKSet = KEYS, settings: WebhookAuthSettings = SETTINGS) -> str:
    with pytest.raises(WebhookAuthError) as info:
        validate_token(tok, settings=settings, keys=keys)
    assert info.value.status == 401 and f"({info.value.reason})" in str(info.value)
    return info.value.reason


def test_valid_v1_and_v2_tokens_are_accepted() -> None:
    # given Action Groups' tokens from the tenant's key with the v1 and the v2 issuer (v2 names the app in azp)
    v1 = token(iss=f"https://sts.windows.net/{TENANT}/")
    v2 = token(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", appid=None, azp=ACTION_GROUPS_APP_ID)
    for tok in (v1, v2):
        # when validated; then the claims come back
        claims = validate_token(tok, settings=SETTINGS, keys=KEYS)
        assert claims["tid"] == TENANT


@pytest.mark.parametrize("tok, expected", [
    (lambda: token(aud="api://someone-else"), "wrong_audience"),
    (lambda: token(iss="https://sts.windows.net/00000000-0000-0000-0000-000000000000/"), "wrong_issuer"),
    (lambda: token(iss=f"https://login.microsoftonline.com/{TENANT}/"), "wrong_issuer"),
    (lambda: token(iss="https://sts.windows.net/contoso.onmicrosoft.com/"), "wrong_issuer"),
    (lambda: token(exp=timedelta(minutes=-2)), "expired"),
    (lambda: token(nbf=timedelta(minutes=5)), "not_yet_valid"),
    (lambda: token(key=OTHER_KEY), "bad_signature"),
    (lambda: token(kid="unknown"), "unknown_key"),
    (lambda: token(drop=("exp",)), "malformed"),
    (lambda: token(drop=("nbf",)), "malformed"),
    (lambda: "not.a.jwt", "malformed"),
    (lambda: jwt.encode({"aud": AUDIENCE}, "secret-long-enough-for-hmac-sha256-32b", algorithm="HS256",
                        headers={"kid": "k1"}), "unsupported_alg"),
    # the tenant's other apps, with the right audience: not Action Groups, or without its role
    (lambda: token(appid="0a1b2c3d-0000-4000-8000-000000000bad"), "wrong_app"),
    (lambda: token(appid=None), "wrong_app"),
    (lambda: token(roles=[]), "missing_role"),
    (lambda: token(roles=["ActionGroupsSecureWebhook.Other", APPLY_ROLE]), "missing_role"),
    (lambda: token(drop=("roles",)), "missing_role"),
])
def test_each_invalid_webhook_token_is_rejected_with_its_reason(tok: Any, expected: str) -> None:
    # given a token wrong in one way; when validated; then it is rejected naming what is wrong
    assert reason(tok()) == expected


def test_apply_tokens_need_the_apply_role_from_any_app() -> None:
    # given the apply settings (role KvRemediate.Apply, any calling app)
    claims = validate_token(token(roles=[APPLY_ROLE], appid=entra.OPERATOR_APPID), settings=API, keys=KEYS)
    assert claims["appid"] == entra.OPERATOR_APPID
    # then Action Groups' own token (its role, not ours) and a token without roles are refused
    assert reason(token(), settings=API) == "missing_role"
    assert reason(token(roles=[], appid=entra.OPERATOR_APPID), settings=API) == "missing_role"
    with pytest.raises(WebhookAuthError, match="apply bearer token rejected"):
        validate_token(token(), settings=API, keys=KEYS)


def test_small_clock_skew_is_tolerated() -> None:
    # given a token that expired 30 s ago and one valid from 30 s in the future; then both pass (60 s leeway)
    validate_token(token(exp=timedelta(seconds=-30)), settings=SETTINGS, keys=KEYS)
    validate_token(token(nbf=timedelta(seconds=30)), settings=SETTINGS, keys=KEYS)


def test_missing_or_non_bearer_authorization_is_rejected() -> None:
    # given an authenticator whose key fetch would fail (keys_unavailable) if it were ever called
    auth = WebhookAuthenticator(SETTINGS, signing_keys(closed_port_url()))
    # when requests carry no token, or not a bearer one; then missing_token
    for headers in ({}, {"Authorization": ""}, {"authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        with pytest.raises(WebhookAuthError) as info:
            auth.authenticate(headers)
        assert info.value.reason == "missing_token"


def test_keys_are_cached_and_refetched_once_on_rollover(clock: list[float]) -> None:
    # given the tenant's JWKS endpoint, which starts publishing a new key after the first fetch
    assert SETTINGS.jwks_url == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    published = [jwk(KEY, "k1")]
    with entra.jwks_server(published) as (url, ctx, calls):
        settings = WebhookAuthSettings(tenant=TENANT, audiences=(AUDIENCE,), jwks_url=url)
        keys = signing_keys(url, ssl_context=ctx, ttl=timedelta(hours=1), min_refresh=timedelta(minutes=1))
        auth = WebhookAuthenticator(settings, keys)
        # when many valid requests arrive; then the keys are fetched once
        for _ in range(5):
            auth.authenticate({"Authorization": f"Bearer {token()}"})
        assert len(calls) == 1
        # when the tenant rolls to a new key; then one re-fetch picks it up
        published.append(jwk(ROLLED_KEY, "k2"))
        clock[0] = timedelta(minutes=2).total_seconds()
        auth.authenticate({"Authorization": f"Bearer {token(key=ROLLED_KEY, kid='k2')}"})
        assert len(calls) == 2
        # and unknown kids do not make every request fetch again (at most once per min_refresh)
        for _ in range(5):
            with pytest.raises(WebhookAuthError):
                auth.authenticate({"Authorization": f"Bearer {token(kid='k9')}"})
        assert len(calls) == 2
        # and the TTL expiry refreshes
        clock[0] = timedelta(minutes=59).total_seconds()
        auth.authenticate({"Authorization": f"Bearer {token()}"})
        clock[0] = timedelta(hours=2, minutes=3).total_seconds()
        auth.authenticate({"Authorization": f"Bearer {token(exp=timedelta(hours=3))}"})
        assert len(calls) == 3


def test_key_fetch_failure_rejects_with_keys_unavailable() -> None:
    # given keys that cannot be fetched; when a token arrives; then it is refused with a reason saying keys are
    # unavailable
    auth = WebhookAuthenticator(SETTINGS, signing_keys(closed_port_url()))
    with pytest.raises(WebhookAuthError) as info:
        auth.authenticate({"Authorization": f"Bearer {token()}"})
    assert info.value.reason == "keys_unavailable" and "Connection refused" in str(info.value)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, ssl.SSLContext, list[str]]]:
    """A loopback HTTPS server publishing the JWKS (certificate from a throwaway CA the client trusts)."""
    with entra.jwks_server([jwk(KEY, "k1")]) as served:
        yield served


def test_end_to_end_over_loopback_https(jwks_server: tuple[str, ssl.SSLContext, list[str]]) -> None:
    # given the real HTTPS key client pointed at the loopback JWKS
    url, ctx, hits = jwks_server
    settings = WebhookAuthSettings(tenant=TENANT, audiences=("other", AUDIENCE), jwks_url=url)
    auth = WebhookAuthenticator(settings, signing_keys(url, ssl_context=ctx))
    # when a valid token and then a forged one arrive
    claims = auth.authenticate({"Authorization": f"Bearer {token()}"})
    with pytest.raises(WebhookAuthError) as info:
        auth.authenticate({"Authorization": f"Bearer {token(key=OTHER_KEY)}"})
    # then the valid one passes, the forged one fails on its signature, and the keys were fetched once
    assert claims["aud"] == AUDIENCE and info.value.reason == "bad_signature"
    assert len(hits) == 1


def test_signing_keys_refuse_plain_http() -> None:
    # given the real key client; when asked for an http:// URL; then it refuses before any connection
    with pytest.raises(ValueError, match="non-HTTPS"):
        signing_keys("http://127.0.0.1:9/keys")


def test_settings_from_env() -> None:
    # given neither setting: disabled; both: enabled with the tenant's issuers; one: a configuration error
    assert authenticator_from_env({}) is None and api_authenticator_from_env({}) is None
    auth = authenticator_from_env({"KV_REMEDIATE_WEBHOOK_AUDIENCE": "a, api://b",
                                   "KV_REMEDIATE_WEBHOOK_TENANT": TENANT.upper()})
    assert auth is not None and auth.settings.audiences == ("a", "api://b")
    assert auth.settings.issuers[1] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert auth.settings.app_ids == (ACTION_GROUPS_APP_ID,) and auth.settings.roles == ("ActionGroupsSecureWebhook",)
    api = api_settings_from_env({"KV_REMEDIATE_API_AUDIENCE": "api://kv", "KV_REMEDIATE_API_TENANT": TENANT})
    assert api is not None and api.roles == (APPLY_ROLE,) and api.app_ids == () and api.purpose == "apply"
    with pytest.raises(ConfigError, match="KV_REMEDIATE_WEBHOOK_TENANT"):
        authenticator_from_env({"KV_REMEDIATE_WEBHOOK_AUDIENCE": "a"})
    with pytest.raises(ConfigError, match="KV_REMEDIATE_API_AUDIENCE"):
        api_settings_from_env({"KV_REMEDIATE_API_TENANT": TENANT})


@pytest.mark.parametrize("tenant", ["contoso.onmicrosoft.com", "contoso.com", "evil/../x", "common", "organizations",
                                    TENANT + "x", ""])
def test_only_tenant_ids_are_accepted(tenant: str) -> None:
    # given a tenant that is a domain, a multi-tenant alias or junk; then a ConfigError naming the setting
    with pytest.raises(ConfigError, match="KV_REMEDIATE_WEBHOOK_TENANT") as info:
        WebhookAuthSettings(tenant=tenant, audiences=("a",))
    assert "GUID" in info.value.message


# -- a local test issuer for `kv-remediate serve` (KV_REMEDIATE_TEST_JWKS) ---------------------------------------

def _serve_env(pid: int, jwks: str) -> dict[str, str]:
    from remediate.app.webhook_auth import API_AUDIENCE_SETTING, API_TENANT_SETTING, TEST_JWKS_SETTING
    from remediate.localhost.children import PARENT_SETTING

    return {API_AUDIENCE_SETTING: entra.API_AUDIENCE, API_TENANT_SETTING: entra.TENANT, PARENT_SETTING: str(pid),
            TEST_JWKS_SETTING: jwks}


def _page_token(key: rsa.RSAPrivateKey = entra.KEY) -> str:
    from remediate.app.approver import APPROVE_ROLE

    return entra.token(key=key, aud=entra.API_AUDIENCE, roles=[APPROVE_ROLE], appid=None,
                       oid="0a1b2c3d-0000-4000-8000-0000000a5501")


@pytest.mark.parametrize("as_file", [False, True])
def test_under_serve_a_configured_test_issuers_tokens_sign_people_in(tmp_path: Any, as_file: bool) -> None:
    import json
    import os

    from remediate.app.approver import page_authenticator_from_env
    from remediate.app.webhook_auth import api_authenticator_from_env

    # given serve's own process, and a test issuer's JWKS (inline or in a file)
    doc = json.dumps({"keys": [jwk(entra.KEY, "k1")]})
    if as_file:
        (tmp_path / "jwks.json").write_text(doc)
        doc = str(tmp_path / "jwks.json")
    env = _serve_env(os.getpid(), doc)
    # when the page (and the apply route) authenticate a token that issuer signed for the app
    page = page_authenticator_from_env(env)
    claims = page.authenticate({"Authorization": f"Bearer {_page_token()}"})
    # then the person is signed in, with nothing fetched from the internet (the loopback guard would fail it)
    assert claims["oid"] == "0a1b2c3d-0000-4000-8000-0000000a5501"
    assert isinstance(api_authenticator_from_env(env).keys, jwt.PyJWKSet)
    # and a token signed by any other key is still refused
    with pytest.raises(WebhookAuthError, match=r"unknown_key|bad_signature|signature"):
        page.authenticate({"Authorization": f"Bearer {_page_token(entra.FORGED)}"})


def test_outside_serve_the_test_issuer_setting_is_ignored() -> None:
    import json

    from remediate.app.approver import page_authenticator_from_env

    # given the setting in a process serve did not start (a deployed app: no pid, or another process's pid)
    doc = json.dumps({"keys": [jwk(entra.KEY, "k1")]})
    for pid in (1, 0):
        env = _serve_env(pid, doc)
        # then the page checks tokens against the tenant's published keys, never the configured ones
        keys = page_authenticator_from_env(env).keys
        assert isinstance(keys, jwt.PyJWKClient) and entra.TENANT in keys.uri


@pytest.mark.parametrize("bad", ["{not json", '{"keys": []}', "/no/such/jwks.json"])
def test_a_test_issuer_setting_that_is_not_a_jwks_is_a_config_error_naming_it(bad: str) -> None:
    import os

    from remediate.app.approver import page_authenticator_from_env

    with pytest.raises(ConfigError, match="KV_REMEDIATE_TEST_JWKS"):
        page_authenticator_from_env(_serve_env(os.getpid(), bad))
