"""Optional secure webhook: validate the Entra ID bearer token an Azure Monitor "Secure webhook" action sends.

Enabled when both ``KV_REMEDIATE_WEBHOOK_AUDIENCE`` and ``KV_REMEDIATE_WEBHOOK_TENANT`` are set (one without the
other is a configuration error: it must never silently leave the webhook open). A token is accepted only if:

- it is an RS256 JWT signed by one of the tenant's published keys (JWKS, selected by ``kid``);
- ``iss`` is ``https://sts.windows.net/{tenant}/`` (v1 tokens) or ``https://login.microsoftonline.com/{tenant}/v2.0``;
- ``aud`` is the configured audience (a comma-separated setting may list several, e.g. app id and its URI);
- ``exp`` and ``nbf`` hold at ``now`` give or take a small leeway.

Otherwise :class:`~remediate.errors.WebhookAuthError` (HTTP 401) says why. The checks are pure (token, keys and
``now`` are inputs); the key fetch is the only I/O, behind an injectable fetcher, cached with a TTL and re-fetched
once when a token names an unknown ``kid`` (key rollover), at most once per ``min_refresh``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from ..errors import ConfigError, WebhookAuthError

AUDIENCE_SETTING = "KV_REMEDIATE_WEBHOOK_AUDIENCE"
TENANT_SETTING = "KV_REMEDIATE_WEBHOOK_TENANT"
JWKS_URL = "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"
ALGORITHM = "RS256"

JwksFetcher = Callable[[str], Mapping[str, Any]]
"""Fetches a JWKS document (``{"keys": [...]}``) from a URL."""

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


@dataclass(frozen=True)
class WebhookAuthSettings:
    """Who may call: the tenant whose tokens we accept and the audience they must carry."""

    tenant: str
    audiences: tuple[str, ...]
    leeway: timedelta = timedelta(seconds=60)
    jwks_url: str = ""

    def __post_init__(self) -> None:
        if not _TENANT.match(self.tenant):
            raise ConfigError(f"setting {TENANT_SETTING}: {self.tenant!r} is not a tenant id or domain")
        if not self.audiences or not all(self.audiences):
            raise ConfigError(f"setting {AUDIENCE_SETTING}: give the audience (application id or URI) of the "
                              "tokens Azure Monitor sends")
        if not self.jwks_url:
            object.__setattr__(self, "jwks_url", JWKS_URL.format(tenant=self.tenant))

    @property
    def issuers(self) -> tuple[str, str]:
        return (f"https://sts.windows.net/{self.tenant}/", f"https://login.microsoftonline.com/{self.tenant}/v2.0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookAuthSettings | None:
        """The settings, or None when the secure webhook is not configured (neither setting set)."""
        env = os.environ if env is None else env
        audience = (env.get(AUDIENCE_SETTING) or "").strip()
        tenant = (env.get(TENANT_SETTING) or "").strip()
        if not audience and not tenant:
            return None
        if not audience or not tenant:
            missing = AUDIENCE_SETTING if not audience else TENANT_SETTING
            raise ConfigError(f"secure webhook half-configured: {missing} is not set; set both "
                              f"{AUDIENCE_SETTING} and {TENANT_SETTING}, or neither to accept unauthenticated alerts")
        return cls(tenant=tenant, audiences=tuple(a.strip() for a in audience.split(",") if a.strip()))


def _reject(reason: str, detail: str) -> WebhookAuthError:
    return WebhookAuthError(reason, f"webhook bearer token rejected ({reason}): {detail}")


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer ...`` header (header name case-insensitive)."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value or not value.strip():
        raise _reject("missing_token", "no Authorization header; configure the action group's webhook as a "
                      "'Secure webhook' with the app registration of this function")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _reject("missing_token", "the Authorization header is not 'Bearer <token>'")
    return token.strip()


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """RSA signing keys of a JWKS document by ``kid``; keys we cannot use (other types, no kid) are skipped."""
    out: dict[str, Any] = {}
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not entry.get("kid"):
            continue
        if entry.get("use") not in (None, "sig"):
            continue
        try:
            out[str(entry["kid"])] = jwt.PyJWK(entry, algorithm=ALGORITHM).key
        except jwt.PyJWTError:
            continue
    return out


def token_kid(token: str) -> str:
    """The ``kid`` of a token's header, checking the header names RS256 (no ``none``, no HMAC confusion)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _reject("malformed", f"not a JWT ({exc})") from exc
    if header.get("alg") != ALGORITHM:
        raise _reject("unsupported_alg", f"algorithm {header.get('alg')!r}; only {ALGORITHM} is accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _reject("malformed", "the token header has no 'kid'")
    return kid


def validate_token(token: str, *, settings: WebhookAuthSettings, keys: Mapping[str, Any],
                   now: datetime) -> dict[str, Any]:
    """Check signature, issuer, audience and lifetime at ``now``; returns the claims, or raises WebhookAuthError."""
    kid = token_kid(token)
    key = keys.get(kid)
    if key is None:
        raise _reject("unknown_key", f"signing key {kid!r} is not among tenant {settings.tenant}'s published keys")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM],
            options={"verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": False, "verify_iss": False})
    except jwt.InvalidSignatureError as exc:
        raise _reject("bad_signature", "the signature does not match the tenant's key") from exc
    except jwt.PyJWTError as exc:
        raise _reject("malformed", str(exc)) from exc
    if claims.get("iss") not in settings.issuers:
        raise _reject("wrong_issuer", f"issuer {claims.get('iss')!r} is not tenant {settings.tenant}'s "
                      f"({' or '.join(settings.issuers)})")
    aud = claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(a in settings.audiences for a in token_audiences):
        raise _reject("wrong_audience", f"audience {aud!r} is not {' or '.join(settings.audiences)}")
    at = now.astimezone(UTC).timestamp()
    leeway = settings.leeway.total_seconds()
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise _reject("malformed", "the token has no numeric 'exp'")
    if at > exp + leeway:
        raise _reject("expired", f"expired at {datetime.fromtimestamp(exp, UTC).isoformat()}")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and at < nbf - leeway:
        raise _reject("not_yet_valid", f"not valid before {datetime.fromtimestamp(nbf, UTC).isoformat()}")
    return claims


def http_fetcher(*, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> JwksFetcher:
    """A fetcher over HTTPS (only): GET the URL, parse JSON. ``context`` lets tests trust a loopback CA."""

    def fetch(url: str) -> Mapping[str, Any]:
        if not url.startswith("https://"):
            raise ValueError(f"refusing to fetch signing keys over a non-HTTPS URL: {url}")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = json.loads(response.read().decode())
        if not isinstance(body, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return body

    return fetch


@dataclass
class JwksCache:
    """The tenant's signing keys, fetched through ``fetcher``, kept for ``ttl``; thread-safe."""

    fetcher: JwksFetcher
    ttl: timedelta = timedelta(hours=12)
    min_refresh: timedelta = timedelta(minutes=1)
    fetches: int = 0
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    _fetched_at: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fetch(self, url: str, now: datetime) -> dict[str, Any]:
        try:
            keys = keys_from_jwks(self.fetcher(url))
        except WebhookAuthError:
            raise
        except Exception as exc:  # any I/O or parse failure of the fetcher
            raise _reject("keys_unavailable", f"could not fetch the signing keys from {url} ({exc}); "
                          "check outbound HTTPS to login.microsoftonline.com") from exc
        self.fetches += 1
        self._keys[url], self._fetched_at[url] = keys, now
        return keys

    def keys(self, url: str, now: datetime, *, kid: str | None = None) -> Mapping[str, Any]:
        """Keys for ``url``; re-fetched when older than ``ttl``, or once when ``kid`` is unknown (rate-limited)."""
        with self._lock:
            fetched = self._fetched_at.get(url)
            if fetched is None or now - fetched >= self.ttl:
                return self._fetch(url, now)
            keys = self._keys[url]
            if kid is not None and kid not in keys and now - fetched >= self.min_refresh:
                return self._fetch(url, now)
            return keys


@dataclass
class WebhookAuthenticator:
    """Validates requests for one configuration; keep one per process so the key cache is shared."""

    settings: WebhookAuthSettings
    cache: JwksCache

    def authenticate(self, headers: Mapping[str, str], now: datetime) -> dict[str, Any]:
        """The caller's claims, or WebhookAuthError (→ 401) saying why the request is refused."""
        token = bearer_token(headers)
        kid = token_kid(token)
        keys = self.cache.keys(self.settings.jwks_url, now, kid=kid)
        return validate_token(token, settings=self.settings, keys=keys, now=now)


def authenticator_from_env(env: Mapping[str, str] | None = None, *,
                           fetcher: JwksFetcher | None = None) -> WebhookAuthenticator | None:
    """The authenticator for the app settings, or None when the secure webhook is not configured."""
    settings = WebhookAuthSettings.from_env(env)
    if settings is None:
        return None
    return WebhookAuthenticator(settings, JwksCache(fetcher or http_fetcher()))
