"""Who is looking at the findings page, and whether a POST from it is really theirs.

Identity (issue 11): a person is signed in by exactly one of

- **App Service Authentication (Easy Auth)**, only when the platform says it is on (``WEBSITE_AUTH_ENABLED`` is
  ``True``, set by App Service when authentication is configured): its ``X-MS-CLIENT-PRINCIPAL-ID``/``-NAME`` and
  the base64 JSON ``X-MS-CLIENT-PRINCIPAL`` (claims, with the app roles under its ``role_typ``). "External requests
  aren't allowed to set these headers, so they're present only if set by App Service" (Microsoft, configure
  authentication user identities). Without that setting the headers are ignored, whoever sent them.
- **An Entra ID bearer token** for the app's own audience (``KV_REMEDIATE_API_AUDIENCE`` / ``_TENANT``, the same
  registration as the apply role), validated by :mod:`remediate.app.webhook_auth` (signature, issuer, audience,
  lifetime), holding the app role ``KvRemediate.Approve`` (view and decide) or ``KvRemediate.Read`` (view only).
  Under ``kv-remediate serve`` the tests configure a loopback test issuer the same way.

CSRF (every POST of the page): a hidden form field carries ``<time>.<HMAC-SHA256>`` over the approver's object id,
the approval request id, the time and a random nonce kept in a ``SameSite=Strict; HttpOnly`` cookie (double
submit), keyed by ``KV_REMEDIATE_PAGE_KEY`` (or a random key per process when unset: then a page served by one
instance cannot be posted to another). The token lives one hour. The route also refuses a cross-origin ``Origin``
or ``Sec-Fetch-Site``. A GET never changes anything, so a link scanner following a chat link only reads the page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..armid import is_guid
from ..errors import ConfigError, WebhookAuthError

APPROVE_ROLE = "KvRemediate.Approve"
READ_ROLE = "KvRemediate.Read"
PAGE_ROLES = (APPROVE_ROLE, READ_ROLE)
EASY_AUTH_SETTING = "WEBSITE_AUTH_ENABLED"
PAGE_KEY_SETTING = "KV_REMEDIATE_PAGE_KEY"
CSRF_COOKIE = "kvr_csrf"
CSRF_FIELD = "csrf"
CSRF_TTL_S = 3600
_MIN_KEY_CHARS = 32
_MAX_NAME = 200
_NONCE_CHARS = (20, 100)
_ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_GROUP_CLAIMS = ("groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups")
_MAX_GROUPS = 200


def _groups(values: object) -> tuple[str, ...]:
    """Group object ids (GUIDs, lower-case, at most 200) from a claim's values; anything else is left out."""
    found = [v.lower() for v in values if isinstance(v, str) and is_guid(v)] if isinstance(values, list) else []
    return tuple(dict.fromkeys(found))[:_MAX_GROUPS]


@dataclass(frozen=True)
class Approver:
    """A signed-in person: object id (a GUID), a name for the record, app roles, and how they signed in."""

    object_id: str
    name: str
    roles: tuple[str, ...]
    via: Literal["easy_auth", "bearer"]
    groups: tuple[str, ...] = ()
    """The person's group object ids as signed in (the token's ``groups`` claim), for a policy ``approvers`` entry
    naming a group. A token with too many groups carries none (Entra's overage claim): then only the person's own
    id can match."""

    @property
    def may_decide(self) -> bool:
        """Holds the approver role (``KvRemediate.Approve``)."""
        return APPROVE_ROLE in self.roles

    @property
    def label(self) -> str:
        """``name (object id)`` for the record and the page."""
        return f"{self.name} ({self.object_id})" if self.name and self.name != self.object_id else self.object_id


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name."""
    low = name.lower()
    return next((v for k, v in headers.items() if k.lower() == low), None)


def easy_auth_enabled(env: Mapping[str, str]) -> bool:
    """App Service Authentication is configured for this app (the platform sets ``WEBSITE_AUTH_ENABLED=True``)."""
    return (env.get(EASY_AUTH_SETTING) or "").strip().lower() == "true"


def _clip_name(value: object) -> str:
    return value.strip()[:_MAX_NAME] if isinstance(value, str) else ""


def _easy_auth(headers: Mapping[str, str]) -> Approver | None:
    """The principal App Service put in the request headers, or None when there is none (anonymous)."""
    oid = (header(headers, "X-MS-CLIENT-PRINCIPAL-ID") or "").strip()
    if not oid:
        return None
    if not is_guid(oid):
        raise WebhookAuthError("bad_principal", "App Service Authentication's X-MS-CLIENT-PRINCIPAL-ID is not an "
                               "object id (a GUID); sign in with Microsoft Entra ID")
    idp = (header(headers, "X-MS-CLIENT-PRINCIPAL-IDP") or "aad").strip().lower()
    if idp != "aad":   # App Service names the provider; only Entra ID's ids are the tenant's object ids
        raise WebhookAuthError("bad_principal", f"signed in through App Service Authentication's {idp[:40]!r} "
                               "provider; only Microsoft Entra ID (aad) identities may use the findings page")
    roles: list[str] = []
    groups: list[str] = []
    raw = header(headers, "X-MS-CLIENT-PRINCIPAL")
    if raw:
        try:
            principal = json.loads(base64.b64decode(raw.strip() + "==", validate=False))
        except (ValueError, binascii.Error) as exc:
            raise WebhookAuthError("bad_principal", "App Service Authentication's X-MS-CLIENT-PRINCIPAL is not "
                                   "base64 JSON") from exc
        claims = principal.get("claims") if isinstance(principal, dict) else None
        role_typ = principal.get("role_typ") if isinstance(principal, dict) else None
        for claim in claims if isinstance(claims, list) else []:
            if not isinstance(claim, dict) or not isinstance(claim.get("val"), str):
                continue
            if claim.get("typ") in (*_ROLE_CLAIMS, role_typ):
                roles.append(claim["val"])
            elif claim.get("typ") in _GROUP_CLAIMS:
                groups.append(claim["val"])
    name = _clip_name(header(headers, "X-MS-CLIENT-PRINCIPAL-NAME")) or oid
    return Approver(oid.lower(), name, tuple(r for r in PAGE_ROLES if r in roles), "easy_auth", _groups(groups))


def _bearer(claims: Mapping[str, Any]) -> Approver:
    oid = claims.get("oid")
    if not isinstance(oid, str) or not is_guid(oid):
        raise WebhookAuthError("malformed", "approver bearer token rejected (malformed): no object id ('oid'); "
                               "sign in as a person or service principal of the tenant")
    name = next((_clip_name(claims.get(c)) for c in ("name", "preferred_username", "upn")
                 if _clip_name(claims.get(c))), oid)
    held = claims.get("roles")
    roles = tuple(r for r in PAGE_ROLES if isinstance(held, list) and r in held)
    return Approver(oid.lower(), name, roles, "bearer", _groups(claims.get("groups")))


def identify(headers: Mapping[str, str], env: Mapping[str, str], authenticator: Any) -> Approver | None:
    """The signed-in person, or None (anonymous). Easy Auth's headers count only when Easy Auth is enabled; a
    bearer token is validated by ``authenticator`` (a WebhookAuthenticator for PAGE_ROLES; None: not configured).
    A token that is present but invalid is refused (WebhookAuthError), never treated as anonymous. Blocking (a
    key fetch): call it off the event loop."""
    if easy_auth_enabled(env):
        found = _easy_auth(headers)
        if found is not None:
            return found
    if header(headers, "Authorization") is None:
        return None
    if authenticator is None:
        raise WebhookAuthError("not_configured", "approver bearer token rejected (not_configured): the app has no "
                               "token settings (KV_REMEDIATE_API_AUDIENCE, KV_REMEDIATE_API_TENANT); sign in "
                               "through App Service Authentication instead")
    return _bearer(authenticator.authenticate(headers))


def page_settings_from_env(env: Mapping[str, str] | None = None) -> Any:
    """The page's token settings (the apply route's tenant and audience, roles PAGE_ROLES, any app), or None."""
    from .webhook_auth import API_AUDIENCE_SETTING, API_TENANT_SETTING, WebhookAuthSettings

    return WebhookAuthSettings.from_env(env, audience_setting=API_AUDIENCE_SETTING, tenant_setting=API_TENANT_SETTING,
                                        roles=PAGE_ROLES, app_ids=(), purpose="approver")


def page_authenticator_from_env(env: Mapping[str, str] | None = None) -> Any:
    """The page's bearer-token validator for the app settings, or None when the token settings are not set."""
    from .webhook_auth import WebhookAuthenticator, keys_for

    settings = page_settings_from_env(env)
    return None if settings is None else WebhookAuthenticator(settings, keys_for(settings, env))


def client_address(headers: Mapping[str, str]) -> str:
    """Where a request came from, for the decision record: the address App Service's front end appended last to
    ``X-Forwarded-For`` (earlier entries are the client's word), as an IP address; "unknown" otherwise."""
    forwarded = (header(headers, "X-Forwarded-For") or "").split(",")[-1].strip()
    if forwarded.startswith("[") and "]" in forwarded:
        forwarded = forwarded[1:forwarded.index("]")]
    elif forwarded.count(":") == 1:
        forwarded = forwarded.split(":")[0]
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return "unknown"


class _ProcessKey:
    """The random CSRF key of this process, made once when no KV_REMEDIATE_PAGE_KEY is set."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.lock = threading.Lock()

    def get(self) -> bytes:
        with self.lock:
            if self.key is None:
                self.key = secrets.token_bytes(32)
            return self.key


_PROCESS_KEY = _ProcessKey()


def page_key(env: Mapping[str, str] | None = None) -> bytes:
    """The CSRF HMAC key: ``KV_REMEDIATE_PAGE_KEY`` (at least 32 characters), else a random key per process."""
    env = os.environ if env is None else env
    value = (env.get(PAGE_KEY_SETTING) or "").strip()
    if not value:
        return _PROCESS_KEY.get()
    if len(value) < _MIN_KEY_CHARS:
        raise ConfigError(f"setting {PAGE_KEY_SETTING}: at least {_MIN_KEY_CHARS} characters of random text "
                          "(e.g. `openssl rand -hex 32`), so the findings page's form tokens cannot be guessed")
    return value.encode()


def new_nonce() -> str:
    """A fresh cookie nonce (URL-safe, 32 bytes of randomness)."""
    return secrets.token_urlsafe(32)


def cookie_nonce(headers: Mapping[str, str]) -> str | None:
    """The CSRF nonce in the request's cookie, or None."""
    from http.cookies import CookieError, SimpleCookie

    raw = header(headers, "Cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(CSRF_COOKIE)
    value = morsel.value if morsel is not None else ""
    shaped = _NONCE_CHARS[0] <= len(value) <= _NONCE_CHARS[1] and value.replace("-", "").replace("_", "").isalnum()
    return value if shaped else None


def set_cookie(nonce: str, secure: bool) -> str:
    """The ``Set-Cookie`` value holding ``nonce``: HttpOnly, SameSite=Strict, scoped to the page's path."""
    return (f"{CSRF_COOKIE}={nonce}; Path=/api/findings; HttpOnly; SameSite=Strict; Max-Age={CSRF_TTL_S * 8}"
            + ("; Secure" if secure else ""))


def _mac(key: bytes, approver: str, request_id: str, when: int, nonce: str) -> str:
    msg = "\n".join(("kv-remediate-page/1", approver.lower(), request_id, str(when), nonce)).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def csrf_token(key: bytes, *, approver: str, request_id: str, nonce: str, now: datetime) -> str:
    """The hidden field for a decision form: ``<unix time>.<hex HMAC>`` bound to who, what and the cookie."""
    when = int(now.timestamp())
    return f"{when}.{_mac(key, approver, request_id, when, nonce)}"


def check_csrf(key: bytes, token: str, *, approver: str, request_id: str, nonce: str | None,
               now: datetime) -> str | None:
    """Why ``token`` does not authorise this POST (None when it does): missing cookie, malformed, stale (older
    than an hour, or from the future), or made for another person, request or browser."""
    if nonce is None:
        return "the form's cookie is missing (cookies blocked, or the form came from elsewhere); reload the page"
    when_text, _, mac = (token or "").partition(".")
    if not when_text.isdigit() or len(mac) != 64:  # noqa: PLR2004 - hex SHA-256
        return "the form carries no valid token; reload the page and use its buttons"
    when, current = int(when_text), int(now.timestamp())
    if when > current + 60 or current - when > CSRF_TTL_S:
        return "the form is more than an hour old; reload the page and decide again"
    if not hmac.compare_digest(mac, _mac(key, approver, request_id, when, nonce)):
        return "the form was not made for you and this request in this browser; reload the page"
    return None


def cross_origin(headers: Mapping[str, str]) -> str | None:
    """Why a POST is cross-site (None when it is not): an ``Origin`` whose host is not the request's ``Host``
    (or App Service's ``X-Original-Host``/``X-Forwarded-Host`` front-end host), or ``Sec-Fetch-Site`` other than
    same-origin/none."""
    site = (header(headers, "Sec-Fetch-Site") or "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return f"a {site} request (Sec-Fetch-Site) cannot decide; use the page's own buttons"
    origin = (header(headers, "Origin") or "").strip()
    if not origin:
        return None
    hosts = {(header(headers, h) or "").strip().lower() for h in ("Host", "X-Original-Host", "X-Forwarded-Host")}
    netloc = urllib.parse.urlsplit(origin).netloc.lower() if origin != "null" else "null"
    if netloc not in hosts - {""}:
        return "the form was posted from another site (Origin); use the page's own buttons"
    return None
