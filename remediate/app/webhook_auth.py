"""Entra ID bearer tokens: the secure webhook (``/api/alerts``) and the apply role (``/api/remediate`` with apply).

Two uses of one validator:

- **Secure webhook**, on when ``KV_REMEDIATE_WEBHOOK_AUDIENCE`` and ``KV_REMEDIATE_WEBHOOK_TENANT`` are both set (one
  without the other is a configuration error: it must never silently leave the webhook open). The caller must be
  Azure Monitor Action Groups itself: ``appid``/``azp`` is the Action Groups application
  ``461e8683-5575-4561-ac7f-899cc907d62a`` and ``roles`` holds ``ActionGroupsSecureWebhook`` (Microsoft Learn,
  "Azure Monitor action groups", section "Secure webhook PowerShell script": the role is created on the webhook's
  app registration and assigned to that application's service principal, so only tokens Action Groups obtains for
  it carry both).
- **Apply over HTTP**, on when ``KV_REMEDIATE_API_AUDIENCE`` and ``KV_REMEDIATE_API_TENANT`` are set: the caller (any
  user or service principal of the tenant) must hold the app role ``KvRemediate.Apply`` of the app's own
  registration (``roles`` claim). Without these settings, nothing is ever applied over HTTP.

A token is accepted only if:

- it is an RS256 JWT signed by one of the tenant's published keys (JWKS, selected by ``kid``);
- ``iss`` is ``https://sts.windows.net/{tenant}/`` (v1 tokens) or ``https://login.microsoftonline.com/{tenant}/v2.0``;
  the tenant is a tenant id (a GUID): a domain can never equal the issuer's id, so it is a configuration error;
- ``aud`` is the configured audience (a comma-separated setting may list several, e.g. app id and its URI);
- ``exp`` and ``nbf`` are present and hold now, give or take a small leeway (``jwt.decode`` checks all of the above);
- ``roles`` holds the required role, and for the webhook ``appid``/``azp`` is the Action Groups application.

Otherwise :class:`~remediate.errors.WebhookAuthError` (HTTP 401) says why. The keys come from ``jwt.PyJWKClient``
(HTTPS only): the key set is cached for a TTL and re-fetched once when a token names an unknown ``kid`` (key
rollover), at most once per ``min_refresh``. Its fetch is the only I/O and blocks (urllib), so the routes run
:meth:`WebhookAuthenticator.authenticate` off the event loop (sync handlers run in worker threads; the async
``/api/remediate`` uses ``asyncio.to_thread``).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

from ..armid import is_guid
from ..errors import ConfigError, WebhookAuthError

AUDIENCE_SETTING = "KV_REMEDIATE_WEBHOOK_AUDIENCE"
TENANT_SETTING = "KV_REMEDIATE_WEBHOOK_TENANT"
API_AUDIENCE_SETTING = "KV_REMEDIATE_API_AUDIENCE"
API_TENANT_SETTING = "KV_REMEDIATE_API_TENANT"
ACTION_GROUPS_APP_ID = "461e8683-5575-4561-ac7f-899cc907d62a"
"""Azure Monitor Action Groups' application id ("AzNS AAD Webhook"), as Microsoft's secure-webhook script uses it."""
ACTION_GROUPS_ROLE = "ActionGroupsSecureWebhook"
APPLY_ROLE = "KvRemediate.Apply"
JWKS_URL = "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"
ALGORITHM = "RS256"

KEYS_TTL = timedelta(hours=12)
"""How long a fetched key set is used before it is fetched again."""
KEYS_MIN_REFRESH = timedelta(minutes=1)
"""How often, at most, a token naming an unknown ``kid`` may make us fetch the key set again (rollover)."""

Keys = jwt.PyJWKClient | jwt.PyJWKSet
"""Where a token's signing key is looked up: the tenant's JWKS endpoint (cached), or a fixed key set."""

def tenant_problem(tenant: str) -> str | None:
    """Why ``tenant`` is not usable as the token tenant (None when it is a tenant id)."""
    if is_guid(tenant):
        return None
    if re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$", tenant) and "." in tenant:
        return (f"{tenant!r} is a domain; give the tenant id (a GUID, e.g. from `az account show --query tenantId`): "
                "token issuers name the tenant by id, so a domain never matches and every request would be refused")
    return "is not a tenant id (a GUID, e.g. from `az account show --query tenantId`)"


@dataclass(frozen=True)
class WebhookAuthSettings:
    """Who may call: the tenant whose tokens we accept, the audience, the role and (webhook) the calling app.

    The defaults are the secure webhook's (Action Groups' app id and role); :func:`api_settings_from_env` makes
    the apply route's (any app of the tenant, role ``KvRemediate.Apply``).
    """

    tenant: str
    audiences: tuple[str, ...]
    leeway: timedelta = timedelta(seconds=60)
    jwks_url: str = ""
    roles: tuple[str, ...] = (ACTION_GROUPS_ROLE,)
    app_ids: tuple[str, ...] = (ACTION_GROUPS_APP_ID,)
    """The callers' application ids (``appid`` v1, ``azp`` v2); empty: any application of the tenant."""
    tenant_setting: str = TENANT_SETTING
    audience_setting: str = AUDIENCE_SETTING
    purpose: str = "webhook"

    def __post_init__(self) -> None:
        problem = tenant_problem(self.tenant)
        if problem:
            raise ConfigError(f"setting {self.tenant_setting}: {problem}")
        if not self.audiences or not all(self.audiences):
            raise ConfigError(f"setting {self.audience_setting}: give the audience (application id or URI) of the "
                              "tokens callers send")
        if not self.roles or not all(self.roles):
            raise ConfigError(f"{self.purpose} tokens: at least one required app role must be named")
        object.__setattr__(self, "tenant", self.tenant.lower())
        object.__setattr__(self, "app_ids", tuple(a.lower() for a in self.app_ids))
        if not self.jwks_url:
            object.__setattr__(self, "jwks_url", JWKS_URL.format(tenant=self.tenant))

    @property
    def issuers(self) -> tuple[str, str]:
        return (f"https://sts.windows.net/{self.tenant}/", f"https://login.microsoftonline.com/{self.tenant}/v2.0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, audience_setting: str = AUDIENCE_SETTING,
                 tenant_setting: str = TENANT_SETTING, **kw: Any) -> WebhookAuthSettings | None:
        """The settings, or None when neither setting is set; one without the other is a ConfigError."""
        env = os.environ if env is None else env
        audience = (env.get(audience_setting) or "").strip()
        tenant = (env.get(tenant_setting) or "").strip()
        if not audience and not tenant:
            return None
        if not audience or not tenant:
            missing = audience_setting if not audience else tenant_setting
            raise ConfigError(f"{kw.get('purpose', 'webhook')} token settings half-configured: {missing} is not "
                              f"set; set both {audience_setting} and {tenant_setting}, or neither")
        return cls(tenant=tenant, audiences=tuple(a.strip() for a in audience.split(",") if a.strip()),
                   tenant_setting=tenant_setting, audience_setting=audience_setting, **kw)


def api_settings_from_env(env: Mapping[str, str] | None = None) -> WebhookAuthSettings | None:
    """The apply route's token settings (role ``KvRemediate.Apply``, any app), or None when not configured."""
    return WebhookAuthSettings.from_env(env, audience_setting=API_AUDIENCE_SETTING, tenant_setting=API_TENANT_SETTING,
                                        roles=(APPLY_ROLE,), app_ids=(), purpose="apply")


def _reject(reason: str, detail: str, purpose: str = "webhook") -> WebhookAuthError:
    return WebhookAuthError(reason, f"{purpose} bearer token rejected ({reason}): {detail}")


def bearer_token(headers: Mapping[str, str], purpose: str = "webhook") -> str:
    """The token of an ``Authorization: Bearer ...`` header (header name case-insensitive)."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value or not value.strip():
        hint = ("configure the action group's webhook as a 'Secure webhook' with the app registration of this "
                "function" if purpose == "webhook" else
                f"send an Entra ID access token for this app holding the app role {APPLY_ROLE}; a function key alone "
                "only diagnoses")
        raise _reject("missing_token", f"no Authorization header; {hint}", purpose)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _reject("missing_token", "the Authorization header is not 'Bearer <token>'", purpose)
    return token.strip()


def signing_keys(url: str, *, ssl_context: ssl.SSLContext | None = None, ttl: timedelta = KEYS_TTL,
                 min_refresh: timedelta = KEYS_MIN_REFRESH, timeout: float = 5.0) -> jwt.PyJWKClient:
    """The tenant's published signing keys at ``url`` (HTTPS only): the key set is cached for ``ttl``, and a token
    naming an unknown ``kid`` makes it fetch again at most once per ``min_refresh``. ``ssl_context`` lets tests
    trust a loopback CA. The fetch blocks: call it off the event loop."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing to fetch signing keys over a non-HTTPS URL: {url}")
    return jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=True, lifespan=ttl.total_seconds(),
                           cooldown_duration=min_refresh.total_seconds(), timeout=timeout, ssl_context=ssl_context,
                           headers={"Accept": "application/json"})


def token_kid(token: str, purpose: str = "webhook") -> str:
    """The ``kid`` of a token's header, checking the header names RS256 (no ``none``, no HMAC confusion)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _reject("malformed", f"not a JWT ({exc})", purpose) from exc
    if header.get("alg") != ALGORITHM:
        raise _reject("unsupported_alg", f"algorithm {header.get('alg')!r}; only {ALGORITHM} is accepted", purpose)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _reject("malformed", "the token header has no 'kid'", purpose)
    return kid


def _decode(token: str, key: jwt.PyJWK, settings: WebhookAuthSettings) -> dict[str, Any]:
    """``jwt.decode``: signature, issuer, audience, exp/nbf (with leeway), required claims; errors → reasons."""
    p = settings.purpose
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=list(settings.audiences), issuer=list(settings.issuers),
            leeway=settings.leeway, options={"require": ["exp", "nbf", "iss", "aud"], "verify_signature": True})
    except jwt.InvalidSignatureError as exc:
        raise _reject("bad_signature", "the signature does not match the tenant's key", p) from exc
    except jwt.ExpiredSignatureError as exc:
        raise _reject("expired", f"expired (leeway {int(settings.leeway.total_seconds())} s)", p) from exc
    except jwt.ImmatureSignatureError as exc:
        raise _reject("not_yet_valid", f"not valid yet ({exc})", p) from exc
    except jwt.InvalidIssuerError as exc:
        raise _reject("wrong_issuer", f"issuer is not tenant {settings.tenant}'s "
                      f"({' or '.join(settings.issuers)})", p) from exc
    except jwt.InvalidAudienceError as exc:
        raise _reject("wrong_audience", f"audience is not {' or '.join(settings.audiences)}", p) from exc
    except jwt.MissingRequiredClaimError as exc:
        raise _reject("malformed", f"the token has no {exc.claim!r} claim", p) from exc
    except jwt.PyJWTError as exc:
        raise _reject("malformed", str(exc), p) from exc
    return claims


def signing_key(keys: Keys, kid: str, settings: WebhookAuthSettings) -> jwt.PyJWK:
    """The RS256 signing key named ``kid``: unknown_key when the tenant does not publish it, keys_unavailable when
    its key set cannot be fetched (or holds no usable key)."""
    p = settings.purpose
    unknown = _reject("unknown_key", f"signing key {kid!r} is not among tenant {settings.tenant}'s published keys", p)
    if isinstance(keys, jwt.PyJWKSet):
        try:
            key = keys[kid]
        except KeyError:
            raise unknown from None
    else:
        try:
            key = keys.get_signing_key(kid)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            cached = keys.jwk_set_cache.get() if keys.jwk_set_cache is not None else None
            if isinstance(exc, jwt.PyJWKClientConnectionError) or cached is None:
                raise _unavailable(keys.uri, exc, p) from exc
            raise unknown from exc
        except Exception as exc:  # any other I/O or parse failure of the fetch (e.g. a body that is not JSON)
            raise _unavailable(keys.uri, exc, p) from exc
    if key.algorithm_name != ALGORITHM or key.public_key_use not in (None, "sig"):
        raise unknown
    return key


def _unavailable(url: str, exc: Exception, purpose: str) -> WebhookAuthError:
    return _reject("keys_unavailable", f"could not fetch the signing keys from {url} ({exc}); check outbound HTTPS "
                   "to login.microsoftonline.com", purpose)


def caller_app(claims: Mapping[str, Any]) -> str:
    """The calling application's id: ``appid`` (v1 tokens) or ``azp`` (v2 tokens); "" when neither."""
    value = claims.get("appid") or claims.get("azp")
    return value.lower() if isinstance(value, str) else ""


def validate_token(token: str, *, settings: WebhookAuthSettings, keys: Keys) -> dict[str, Any]:
    """Check signature, issuer, audience, lifetime, role and calling app; the claims, or WebhookAuthError."""
    p = settings.purpose
    claims = _decode(token, signing_key(keys, token_kid(token, p), settings), settings)
    roles = claims.get("roles")
    held = [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
    if not any(r in held for r in settings.roles):
        raise _reject("missing_role", f"the token's roles {held} do not include {' or '.join(settings.roles)}; "
                      "assign the app role to the caller on this app's registration (Enterprise applications → "
                      "Users and groups, or an app role assignment for a service principal)", p)
    if settings.app_ids and caller_app(claims) not in settings.app_ids:
        raise _reject("wrong_app", f"the calling application {caller_app(claims) or '(none)'} is not "
                      f"{' or '.join(settings.app_ids)} (Azure Monitor Action Groups)", p)
    return claims


@dataclass
class WebhookAuthenticator:
    """Validates requests for one configuration; keep one per process so the key cache is shared."""

    settings: WebhookAuthSettings
    keys: Keys

    def authenticate(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The caller's claims, or WebhookAuthError (→ 401) saying why the request is refused. May fetch the
        tenant's keys (blocking): call it off the event loop."""
        token = bearer_token(headers, self.settings.purpose)
        return validate_token(token, settings=self.settings, keys=self.keys)


TEST_JWKS_SETTING = "KV_REMEDIATE_TEST_JWKS"


def under_serve(env: Mapping[str, str]) -> bool:
    """Whether this process is ``kv-remediate serve`` or a child it started (the pid serve recorded is this
    process's or its parent's): a deployed function app never is, whatever its settings say."""
    from ..localhost.children import PARENT_SETTING  # serve records its pid there for its children

    pid = (env.get(PARENT_SETTING) or "").strip()
    return pid.isdigit() and int(pid) in (os.getpid(), os.getppid())


def local_issuer_keys(env: Mapping[str, str] | None = None) -> jwt.PyJWKSet | None:
    """A local test issuer's public keys for ``serve``: ``KV_REMEDIATE_TEST_JWKS`` holds a JWKS document (the JSON,
    or a file's path). Honoured only under ``serve`` (``under_serve``), so the app in Azure only ever accepts
    tokens Entra ID signed; the tokens are checked as Entra's (issuer of ``KV_REMEDIATE_API_TENANT``, audience,
    lifetime, roles). Elsewhere it is ignored. A document that is not a JWKS is a ConfigError naming the setting."""
    env = os.environ if env is None else env
    raw = (env.get(TEST_JWKS_SETTING) or "").strip()
    if not raw or not under_serve(env):
        return None
    try:
        text = raw if raw.startswith("{") else Path(raw).read_text(encoding="utf-8")
        return jwt.PyJWKSet.from_json(text)
    except (OSError, UnicodeDecodeError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
        raise ConfigError(f"{TEST_JWKS_SETTING}: not a readable JWKS document (the JSON, or a file's path): "
                          f"{type(exc).__name__}: {exc}") from exc


def keys_for(settings: WebhookAuthSettings, env: Mapping[str, str] | None = None) -> Keys:
    """Where tokens' signing keys come from: the tenant's published keys, or under ``serve`` a configured test
    issuer's (``local_issuer_keys``)."""
    local = local_issuer_keys(env)
    return local if local is not None else signing_keys(settings.jwks_url)


def authenticator_from_env(env: Mapping[str, str] | None = None) -> WebhookAuthenticator | None:
    """The secure-webhook authenticator for the app settings, or None when it is not configured."""
    settings = WebhookAuthSettings.from_env(env)
    if settings is None:
        return None
    return WebhookAuthenticator(settings, signing_keys(settings.jwks_url))


def api_authenticator_from_env(env: Mapping[str, str] | None = None) -> WebhookAuthenticator | None:
    """The apply-role authenticator for the app settings, or None when it is not configured (no HTTP apply)."""
    settings = api_settings_from_env(env)
    if settings is None:
        return None
    return WebhookAuthenticator(settings, keys_for(settings, env))
