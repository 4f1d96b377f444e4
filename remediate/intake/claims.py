"""Claims and principals: who called, from token claims in any spelling or Key Vault's ``Caller`` text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..model import Principal, PrincipalKind
from .values import guid, identifier, masked, text

# --- claims and principals -----------------------------------------------------------------------------------

_CLAIM_URI_PREFIXES = ("http://schemas.microsoft.com/identity/claims/",
                       "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/",
                       "http_schemas_microsoft_com_identity_claims_",
                       "http_schemas_xmlsoap_org_ws_2005_05_identity_claims_")
_CLAIM_ALIASES = {"objectidentifier": "oid", "tenantid": "tid", "scope": "scp", "upn": "upn", "name": "name",
                  "emailaddress": "email", "nameidentifier": "sub"}
_TYPE_SUFFIX = 2  # length of a Log Analytics column type suffix ("_s", "_g", "_d", "_b", "_t")
_ISS_TENANT = re.compile(r"sts\.windows\.net/([^/\s;'\"]+)|login\.microsoftonline\.com/([^/\s;'\"]+)", re.IGNORECASE)


def claim_name(key: str) -> str:
    """Short claim name for a short, long-URI or Log Analytics-flattened claim key."""
    k = key.lower()
    if k.startswith("identity_claim_"):
        k = k[len("identity_claim_"):]
        if len(k) > _TYPE_SUFFIX and k[-2] == "_" and k[-1] in "sgdbt":
            k = k[:-_TYPE_SUFFIX]
    for prefix in _CLAIM_URI_PREFIXES:
        if k.startswith(prefix):
            k = k[len(prefix):]
            return _CLAIM_ALIASES.get(k, k)
    return k


def tenant_from_iss(value: Any) -> str | None:
    """Tenant GUID from an issuer URI (https://sts.windows.net/<tid>/)."""
    v = text(value)
    if v is None:
        return None
    m = _ISS_TENANT.search(v)
    return guid(m.group(1) or m.group(2)) if m else None


_UPN = re.compile(r"[^\s@]{1,128}@[^\s@]{1,127}")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """A Principal from token claims in any spelling; kind from idtyp, else upn/scp (user) or appidacr (app)."""
    c: dict[str, Any] = {}
    for k, v in claims.items():
        if isinstance(k, str):
            c.setdefault(claim_name(k), v)
    oid = guid(c.get("oid"))
    appid = guid(c.get("appid")) or guid(c.get("azp"))
    tid = guid(c.get("tid")) or tenant_from_iss(c.get("iss"))
    upn = identifier(c.get("upn"))
    if upn and (masked(upn) or not _UPN.fullmatch(upn)):
        upn = None
    idtyp = (text(c.get("idtyp")) or "").lower()
    kind: PrincipalKind | None = None
    if idtyp in ("app", "user"):
        kind = "app" if idtyp == "app" else "user"
    elif text(c.get("upn")) or text(c.get("scp")):
        kind = "user"
    elif text(c.get("appidacr")) in ("1", "2") or text(c.get("azpacr")) in ("1", "2") or text(c.get("xms_mirid")):
        kind = "app"
    return Principal(object_id=oid, app_id=appid, tenant_id=tid, upn=upn, kind=kind)


def merge_principal(a: Principal, b: Principal) -> Principal:
    """Fill a's unknowns from b (a wins where both know)."""
    return Principal(object_id=a.object_id or b.object_id, app_id=a.app_id or b.app_id,
                     tenant_id=a.tenant_id or b.tenant_id, upn=a.upn or b.upn, kind=a.kind or b.kind)


@lru_cache(maxsize=2048)
def principal_from_caller(caller: str) -> Principal:
    """``appid=..;oid=..;numgroups=..;iss=..;xmsmirid=..`` (the Caller text of Key Vault errors)."""
    pairs: dict[str, str] = {}
    for part in caller[:2048].split(";"):
        k, sep, v = part.partition("=")
        if sep:
            pairs.setdefault(k.strip().lower(), v.strip())
    p = principal_from_claims({"oid": pairs.get("oid"), "appid": pairs.get("appid"), "tid": pairs.get("tid"),
                               "iss": pairs.get("iss"), "upn": pairs.get("upn"), "idtyp": pairs.get("idtyp")})
    if p.kind is None and (pairs.get("xmsmirid") or pairs.get("xms_mirid")):
        p = Principal(p.object_id, p.app_id, p.tenant_id, p.upn, "app")
    return p
