"""The findings page's sign-in and form protection (pure): Easy Auth principal headers, the CSRF token bound to
person, request, time and cookie, the Origin check and the client address recorded with a decision."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from remediate.app.approver import (
    APPROVE_ROLE,
    PAGE_ROLES,
    READ_ROLE,
    check_csrf,
    client_address,
    cookie_nonce,
    cross_origin,
    csrf_token,
    identify,
    new_nonce,
    page_key,
    set_cookie,
)
from remediate.app.webhook_auth import WebhookAuthenticator, WebhookAuthSettings
from remediate.errors import ConfigError, WebhookAuthError
from tests.support.entra import API_AUDIENCE, TENANT, jwk, token
from tests.support.entra import KEY as SIGNING_KEY

KEY = b"k" * 32
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OID = "0a1b2c3d-0000-4000-8000-0000000a5501"
OTHER = "0a1b2c3d-0000-4000-8000-0000000a5502"
ON = {"WEBSITE_AUTH_ENABLED": "True"}


def _principal(roles: list[str], role_typ: str = "roles") -> str:
    claims = [{"typ": role_typ, "val": r} for r in roles]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "role_typ": role_typ}).encode()).decode()


def _easy(roles: list[str], **extra: str) -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL-ID": OID, "X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.example",
            "X-MS-CLIENT-PRINCIPAL": _principal(roles), **extra}


def _validator() -> WebhookAuthenticator:
    """The page's real token validator with the test tenant's key as a fixed key set (no fetch)."""
    settings = WebhookAuthSettings(tenant=TENANT, audiences=(API_AUDIENCE,), roles=PAGE_ROLES, app_ids=(),
                                   purpose="approver")
    return WebhookAuthenticator(settings, jwt.PyJWKSet.from_dict({"keys": [jwk(SIGNING_KEY, "k1")]}))


def test_easy_auth_headers_are_ignored_unless_the_platform_says_easy_auth_is_on() -> None:
    assert identify(_easy([APPROVE_ROLE]), {}, None) is None
    assert identify(_easy([APPROVE_ROLE]), {"WEBSITE_AUTH_ENABLED": "false"}, None) is None
    who = identify(_easy([APPROVE_ROLE]), ON, None)
    assert who is not None and who.may_decide and who.via == "easy_auth" and who.object_id == OID


@pytest.mark.parametrize(("roles", "decide", "held"), [
    ([APPROVE_ROLE], True, (APPROVE_ROLE,)), ([READ_ROLE], False, (READ_ROLE,)), (["Other", "Admin"], False, ())])
def test_easy_auth_roles_come_from_the_principal_claims(roles: list[str], decide: bool,
                                                        held: tuple[str, ...]) -> None:
    who = identify(_easy(roles), ON, None)
    assert who is not None and who.may_decide is decide and who.roles == held


def test_the_long_role_claim_type_counts_too() -> None:
    role = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    who = identify({**_easy([]), "X-MS-CLIENT-PRINCIPAL": _principal([APPROVE_ROLE], role)}, ON, None)
    assert who is not None and who.may_decide


@pytest.mark.parametrize("headers", [
    {"X-MS-CLIENT-PRINCIPAL-ID": "<script>", "X-MS-CLIENT-PRINCIPAL": _principal([APPROVE_ROLE])},
    {"X-MS-CLIENT-PRINCIPAL-ID": OID, "X-MS-CLIENT-PRINCIPAL": "%%%not base64 json"},
    # another App Service Authentication provider (GitHub, Google, ...): its ids are not the tenant's object ids
    _easy([APPROVE_ROLE], **{"X-MS-CLIENT-PRINCIPAL-IDP": "github"}),
])
def test_malformed_easy_auth_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookAuthError):
        identify(headers, ON, None)


def _bearer(**kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + token(**{"aud": API_AUDIENCE, "appid": None, "oid": OID, **kw})}


def test_a_bearer_token_needs_a_configured_validator_an_object_id_and_a_page_role() -> None:
    with pytest.raises(WebhookAuthError, match="not_configured"):
        identify(_bearer(roles=[APPROVE_ROLE]), {}, None)
    with pytest.raises(WebhookAuthError, match="oid"):
        identify(_bearer(roles=[APPROVE_ROLE], drop=("oid",)), {}, _validator())
    with pytest.raises(WebhookAuthError, match="missing_role"):
        identify(_bearer(roles=["KvRemediate.Apply"]), {}, _validator())
    who = identify(_bearer(roles=[READ_ROLE, "KvRemediate.Apply"]), {}, _validator())
    assert who is not None and who.roles == (READ_ROLE,) and not who.may_decide and who.via == "bearer"
    assert identify({}, {}, _validator()) is None


def _token(**kw: Any) -> str:
    args: dict[str, Any] = {"approver": OID, "request_id": "req-1", "nonce": "n" * 43, "now": NOW, **kw}
    return csrf_token(KEY, **args)


def test_a_csrf_token_authorises_only_its_person_request_browser_and_hour() -> None:
    good = _token()
    check = {"approver": OID, "request_id": "req-1", "nonce": "n" * 43, "now": NOW + timedelta(minutes=5)}
    assert check_csrf(KEY, good, **check) is None
    assert check_csrf(KEY, good, **{**check, "approver": OTHER})
    assert check_csrf(KEY, good, **{**check, "request_id": "req-2"})
    assert check_csrf(KEY, good, **{**check, "nonce": "m" * 43})
    assert check_csrf(KEY, good, **{**check, "nonce": None})
    assert check_csrf(KEY, good, **{**check, "now": NOW + timedelta(hours=1, seconds=1)})
    assert check_csrf(KEY, _token(now=NOW + timedelta(minutes=5)), **{**check, "now": NOW})  # from the future
    assert check_csrf(b"x" * 32, good, **check)
    for bad in ("", "x", good.split(".")[1], "1." + "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")):
        assert check_csrf(KEY, bad, **check)


def test_the_cookie_nonce_is_read_only_when_well_formed() -> None:
    nonce = new_nonce()
    assert cookie_nonce({"Cookie": f"a=b; kvr_csrf={nonce}"}) == nonce
    assert cookie_nonce({"Cookie": "kvr_csrf=short"}) is None
    assert cookie_nonce({"Cookie": "kvr_csrf=" + "<" * 40}) is None
    assert cookie_nonce({}) is None
    cookie = set_cookie(nonce, secure=True)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.endswith("; Secure")


def test_the_page_key_setting_must_be_long_enough() -> None:
    assert page_key({"KV_REMEDIATE_PAGE_KEY": "s" * 40}) == b"s" * 40
    assert page_key({}) == page_key({}) and len(page_key({})) == 32
    with pytest.raises(ConfigError, match="KV_REMEDIATE_PAGE_KEY"):
        page_key({"KV_REMEDIATE_PAGE_KEY": "short"})


@pytest.mark.parametrize(("headers", "refused"), [
    ({"Host": "app.example", "Origin": "https://app.example"}, False),
    ({"Host": "internal:80", "X-Original-Host": "app.example", "Origin": "https://app.example"}, False),
    ({"Host": "app.example"}, False),
    ({"Host": "app.example", "Origin": "https://evil.example"}, True),
    ({"Host": "app.example", "Origin": "null"}, True),
    ({"Host": "app.example", "Sec-Fetch-Site": "cross-site"}, True),
    ({"Host": "app.example", "Sec-Fetch-Site": "same-site"}, True),
])
def test_a_post_from_another_origin_is_refused(headers: dict[str, str], refused: bool) -> None:
    assert bool(cross_origin(headers)) is refused


@pytest.mark.parametrize(("forwarded", "expect"), [
    ("198.51.100.7", "198.51.100.7"), ("10.0.0.1, 203.0.113.5:51234", "203.0.113.5"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("<script>", "unknown"), ("", "unknown")])
def test_the_client_address_is_the_front_end_last_hop_as_an_ip(forwarded: str, expect: str) -> None:
    assert client_address({"X-Forwarded-For": forwarded} if forwarded else {}) == expect


GROUP = "9f1c0000-0000-4000-8000-00000000beef"


def test_group_ids_come_from_the_token_or_the_easy_auth_principal_and_only_guids() -> None:
    who = identify(_bearer(roles=[APPROVE_ROLE], extra={"groups": [GROUP.upper(), "<script>", 7, GROUP]}), {},
                   _validator())
    assert who is not None and who.groups == (GROUP,)
    claims = [{"typ": "roles", "val": APPROVE_ROLE}, {"typ": "groups", "val": GROUP}, {"typ": "groups", "val": "x"}]
    principal = base64.b64encode(json.dumps({"claims": claims, "role_typ": "roles"}).encode()).decode()
    who = identify({**_easy([]), "X-MS-CLIENT-PRINCIPAL": principal}, ON, None)
    assert who is not None and who.groups == (GROUP,) and who.may_decide
