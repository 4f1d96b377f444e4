"""Shared extraction for every input family: ids, vaults, objects, claims, status, operation, cause hint.

Everything here is total: any value of any JSON type goes in, a validated value or ``None`` comes out.
Nothing is guessed: a masked, partial or nil GUID is ``None``; an operation is named only when the input
(OperationName, data action, permission + path, method + path) leaves exactly one candidate.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import armid, catalog
from ..model import Denial, ObjectRef, Principal, PrincipalKind, VaultRef
from . import limits

# --- primitive accessors (total over JSON values) ---------------------------------------------------------


def text(value: Any) -> str | None:
    """A non-empty stripped string, or None (numbers are stringified; containers are not text)."""
    if isinstance(value, str):
        v = value.strip()
        return v or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return None


def as_dict(value: Any) -> dict[str, Any]:
    """A dict, a JSON object serialised in a string (Log Analytics ``dynamic`` columns), or {}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def as_list(value: Any) -> list[Any]:
    """A list, or []."""
    return value if isinstance(value, list) else []


def lower_keys(record: Mapping[Any, Any]) -> dict[str, Any]:
    """Keys lower-cased (column and dimension names are case-insensitive); first spelling wins."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(k, str):
            out.setdefault(k.lower(), v)
    return out


# --- identifiers ---------------------------------------------------------------------------------------------

# C0 and C1 controls, DEL, and the invisible format characters that reorder or forge text (bidi embeddings,
# overrides and isolates, zero-width characters, line/paragraph separators, the BOM): never part of an id or name.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_MAX_ID = 256


def has_control(value: str) -> bool:
    """True when a string holds a control or invisible formatting character (see ``CONTROL_CHARS``)."""
    return CONTROL_CHARS.search(value) is not None


def identifier(value: Any) -> str | None:
    """``text`` for ids and names: None when it is long (> 256) or holds a control or formatting character."""
    if not isinstance(value, str) or len(value) > _MAX_ID or has_control(value):
        return None
    return text(value)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NIL_GUID = "00000000-0000-0000-0000-000000000000"
_MASKED = re.compile(r"XXXX|xxxx|<[^>]*>|\*\*\*|\.\.\.|REDACTED|\{[^}]*\}")
_VAULT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]")
_VERSION = re.compile(r"[0-9a-fA-F]{32}")


def guid(value: Any) -> str | None:
    """A well-formed, non-nil GUID (lower-cased), else None: masked, partial and placeholder ids are unknown."""
    return _guid(value) if isinstance(value, str) else None


@lru_cache(maxsize=8192)
def _guid(value: str) -> str | None:
    if len(value) > 64 or has_control(value):
        return None
    v = value.strip()
    if len(v) != 36 or not _GUID.fullmatch(v) or v == _NIL_GUID:
        return None
    return v.lower()


def masked(value: str) -> bool:
    """True when a value carries a redaction marker (XXXX, <...>, ***, {placeholder}, REDACTED)."""
    return _MASKED.search(value) is not None


def vault_name(value: Any) -> str | None:
    """A syntactically valid Key Vault name (3-24 letters, digits, hyphens), original case, else None."""
    return _vault_name(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _vault_name(value: str) -> str | None:
    if len(value) > 64 or has_control(value):
        return None
    v = value.strip()
    if not _VAULT_NAME.fullmatch(v) or "--" in v or masked(v):
        return None
    return v


def object_name(value: Any) -> str | None:
    """A key, secret or certificate name by Key Vault's rule (``^[0-9A-Za-z-]{1,127}$``), unless masked, else None.

    Nothing is decoded or trimmed into shape: ``x%2F..``, ``a.b``, ``a b``, a backslash, a look-alike letter or a
    control character is not a name, so the object is unknown rather than partially kept.
    """
    if not isinstance(value, str) or len(value) > 127 or not armid.is_object_name(value) or masked(value):
        return None
    return value


def ip_address(value: Any) -> str | None:
    """A valid IPv4/IPv6 address (a port suffix is dropped), else None."""
    return _ip_address(value.strip()) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _ip_address(v: str) -> str | None:
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        return None


# --- vaults and objects --------------------------------------------------------------------------------------

# ASCII: no unicode case folding (a Kelvin sign is not a 'k'); every part bounded.
_VAULT_ID = re.compile(
    r"/subscriptions/([^/'\"\r\n]{1,80})/resourcegroups/([^/'\"\r\n]{1,90})/providers/microsoft\.keyvault/vaults/"
    r"([^/\s'\"?#]{1,64})((?:/[^/\s'\"?#]{1,1024}){0,16})", re.IGNORECASE | re.ASCII)
_MAX_RESOURCE_ID = 4096
_DOTS = re.compile(r"\.\.|/\.(?:/|$)")
_PROVIDER_TYPE = re.compile(r"/providers/([^/]+/[^/]+)", re.IGNORECASE)
_OBJECT_KINDS = {"keys": "keys", "secrets": "secrets", "certificates": "certificates", "storage": "storage",
                 "deletedkeys": "keys", "deletedsecrets": "secrets", "deletedcertificates": "certificates",
                 "deletedstorage": "storage"}
_NOT_OBJECTS = {"contacts", "issuers", "restore"}
_MAX_PATH = 4096


_NO_VAULT: tuple[VaultRef, ObjectRef | None] = (VaultRef(), None)


def vault_from_resource_id(value: Any) -> tuple[VaultRef, ObjectRef | None]:
    """Vault (and a trailing object path) from a resource id.

    The vault id is kept only when its subscription is a GUID, its resource group and vault name are valid by
    ARM's and Key Vault's rules, and the id holds no ``..``, ``%`` or backslash; the object only by
    ``object_from_path``'s rules. A control character anywhere makes the whole id unknown.
    """
    if not isinstance(value, str) or "/" not in value or len(value) > _MAX_RESOURCE_ID or has_control(value):
        return _NO_VAULT
    return _vault_from_resource_id(value.strip())


@lru_cache(maxsize=4096)
def _vault_from_resource_id(v: str) -> tuple[VaultRef, ObjectRef | None]:
    m = _VAULT_ID.search(v)
    if m is None:
        return _NO_VAULT
    sub, rg, name, rest = m.group(1), m.group(2), m.group(3), m.group(4)
    tail = v[m.end():]
    if tail and tail[0] not in "?#":
        if not rest:
            return _NO_VAULT  # the vault segment runs on past what a name can be ("kv1 x", "kv1\\..")
        rest += tail  # the object segment runs on ("secrets/x y"): judged whole, never cut to "x"
    vname = vault_name(name)
    whole = v[m.start():]
    rid: str | None = None
    if (vname and guid(sub) and armid.parse_vault_id(v[m.start():m.start(4)]) is not None and not masked(rg)
            and "%" not in whole and "\\" not in whole and not _DOTS.search(whole)):
        rid = v[m.start():m.start(4)]
    obj = object_from_path(rest.split("?", 1)[0].split("#", 1)[0]) if rest else None
    return VaultRef(name=vname, resource_id=rid), obj


def resource_type(value: Any) -> str | None:
    """The ``Provider/type`` of a resource id ("Microsoft.Compute/virtualMachines"), or None."""
    v = text(value)
    if v is None:
        return None
    types = _PROVIDER_TYPE.findall(v)
    if types:
        return str(types[-1])
    if re.fullmatch(r"/subscriptions/[^/]+/?", v, re.IGNORECASE):
        return "Microsoft.Resources/subscriptions"
    return None


def is_vault_id(value: Any) -> bool:
    """True when a resource id points at a Key Vault (or something inside one)."""
    v = text(value)
    return bool(v and _VAULT_ID.search(v))


def _segment(raw: str) -> str | None:
    """One path segment percent-decoded once; None when it is not a plain segment after that.

    Not plain: decoding leaves a ``%`` (double encoding), a ``/`` or backslash, invalid UTF-8, or a control
    character; or the segment is ``.``/``..`` (a client or proxy would move the request elsewhere).
    """
    try:
        d = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        return None
    if "%" in d or "/" in d or "\\" in d or d in (".", "..") or has_control(d):
        return None
    return d


def _dot_parts(decoded: str) -> bool:
    """True when a decoded segment holds a '.' or '..' path component (``%2e%2e%2f..``)."""
    return any(p in (".", "..") for p in decoded.replace("\\", "/").split("/"))


def object_from_path(path: str) -> ObjectRef | None:
    """Object kind, name and version from a data-plane path (/secrets/n/v, /deletedkeys/n, ...).

    Canonical or nothing: the kind is keys, secrets, certificates or storage (``deleted*`` and any ASCII case map
    to it); a path with a ``.``/``..`` segment (plain or encoded), a backslash or a control character names no
    object; a name that is not valid by Key Vault's rule after one percent-decoding is unknown (None); a version
    is 32 hex digits or unknown.
    """
    if not isinstance(path, str) or len(path) > _MAX_PATH or "\\" in path or has_control(path):
        return None
    raw = [s for s in path.split("/") if s]
    if not raw:
        return None
    segs = [_segment(s) for s in raw]
    first = segs[0]
    if first is None or not first.isascii():
        return None
    kind = _OBJECT_KINDS.get(first.lower())
    if kind is None:
        return None
    if any(s in (".", "..") for s in (unquote(r) for r in raw)) or any(_dot_parts(unquote(r)) for r in raw[2:]):
        return None  # the request lands elsewhere: plain or encoded dot segments, or '%2F..' after the name
    if len(segs) < 2:
        return None
    if segs[1] is not None and segs[1].isascii() and segs[1].lower() in _NOT_OBJECTS:
        return None
    name = object_name(segs[1])
    version = None
    if name is not None and len(segs) >= 3 and segs[2] is not None and _VERSION.fullmatch(segs[2]) \
            and segs[2].strip("0"):
        version = segs[2].lower()
    return ObjectRef(kind=kind, name=name, version=version)


@dataclass(frozen=True)
class Uri:
    """A Key Vault data-plane URI split into the parts intake uses."""

    vault: str | None
    path: str


def vault_uri(value: Any) -> Uri | None:
    """Vault name and path from ``https://<name>.vault.azure.net/...`` (any sovereign cloud suffix)."""
    if not isinstance(value, str) or "://" not in value or len(value) > _MAX_PATH or has_control(value):
        return None  # urlsplit drops tabs and newlines ("db\nx" would become "dbx"): refuse, never repair
    return _vault_uri(value.strip())


@lru_cache(maxsize=4096)
def _vault_uri(v: str) -> Uri | None:
    try:
        parts = urlsplit(v)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    label, _, rest = host.partition(".")
    if not rest.startswith(("vault.", "vaultcore.")):
        return None
    return Uri(vault=vault_name(label), path=parts.path or "/")


# --- claims and principals -----------------------------------------------------------------------------------

_CLAIM_URI_PREFIXES = ("http://schemas.microsoft.com/identity/claims/",
                       "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/",
                       "http_schemas_microsoft_com_identity_claims_",
                       "http_schemas_xmlsoap_org_ws_2005_05_identity_claims_")
_CLAIM_ALIASES = {"objectidentifier": "oid", "tenantid": "tid", "scope": "scp", "upn": "upn", "name": "name",
                  "emailaddress": "email", "nameidentifier": "sub"}
_ISS_TENANT = re.compile(r"sts\.windows\.net/([^/\s;'\"]+)|login\.microsoftonline\.com/([^/\s;'\"]+)", re.IGNORECASE)


def claim_name(key: str) -> str:
    """Short claim name for a short, long-URI or Log Analytics-flattened claim key."""
    k = key.lower()
    if k.startswith("identity_claim_"):
        k = k[len("identity_claim_"):]
        if len(k) > 2 and k[-2] == "_" and k[-1] in "sgdbt":
            k = k[:-2]
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


# --- status --------------------------------------------------------------------------------------------------

CODE_STATUS = {"forbidden": 403, "unauthorized": 401, "throttled": 429, "toomanyrequests": 429,
               "too many requests": 429, "forbiddenbyrbac": 403, "forbiddenbypolicy": 403, "forbiddenbyfirewall": 403,
               "forbiddenbyconnection": 403, "accessdenied": 403, "keyoperationforbidden": 403, "secretdisabled": 403,
               "notfound": 404, "secretnotfound": 404, "keynotfound": 404, "certificatenotfound": 404,
               "vaultnotfound": 404, "resourcenotfound": 404, "badparameter": 400, "badrequest": 400,
               "conflict": 409, "ok": 200, "created": 201, "accepted": 202, "nocontent": 204,
               "internalservererror": 500, "serviceunavailable": 503, "gatewaytimeout": 504,
               "methodnotallowed": 405, "authorizationfailed": 403, "linkedauthorizationfailed": 403,
               "preconditionfailed": 412, "requesttimeout": 408}
DENIAL_STATUSES = frozenset({401, 403, 429})


def status_value(value: Any) -> int | None:
    """An HTTP status from 403, 403.0, "403", "403 (Forbidden)", "Forbidden", "TooManyRequests"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 100 <= value <= 599 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and 100 <= value <= 599 else None
    v = text(value)
    if v is None:
        return None
    head = v[:3]
    if head.isdigit() and (len(v) == 3 or not v[3].isdigit()):
        n = int(head)
        return n if 100 <= n <= 599 else None
    return CODE_STATUS.get(v.lower())


# --- message text (Key Vault's error text, wherever it appears) ----------------------------------------------

# Every quantifier is bounded and no '\s*' can run across lines (the message is also cut to MAX_MESSAGE_CHARS first).
_MSG = re.compile(
    r"Caller:[ \t]{0,8}(?P<caller>[^\r\n\\]{0,512}?appid=[^\r\n\s\\]{0,1024})"
    r"|The user, group or application '(?P<ugoa>[^'\r\n]{0,1024})'"
    r"|Action:[ \t]{0,8}'?(?P<action>Microsoft\.KeyVault/[A-Za-z/]{1,128})"
    r"|Resource:[ \t]{0,8}'(?P<resource>[^'\r\n]{0,1024})'"
    r"|Vault:[ \t]{0,8}(?P<vault>[^;\s\\\"']{1,64});location="
    r"|key vault '(?P<kv>[^';\r\n]{1,64})(?:;location=[^'\r\n]{0,64})?'"
    r"|does not have (?P<pkind>keys|secrets|certificates|storage) (?P<perm>[A-Za-z]{1,40}) permission"
    r"|Operation:[ \t]{0,8}\\?\"(?P<opq>[A-Za-z]{1,80})\\?\""
    r"|Operation (?P<opnp>[A-Za-z]{1,80}) is not (?:permitted|allowed)"
    r"|Client address(?::[ \t]{0,8}| \()(?P<ip>[0-9A-Fa-f.:]{2,45})"
    r"|on a disabled (?P<dkind>secret|key|certificate)")

_NETWORK = re.compile(r"ForbiddenByFirewall|ForbiddenByConnection|network security perimeter|\bNSP\b|"
                      r"Client address[^\r\n]{0,40}is not authorized|Public network access is disabled",
                      re.IGNORECASE)
_FIRST_PARTY = re.compile(r"Access denied to first party service", re.IGNORECASE)
_KEY_OP = re.compile(r"KeyOperationForbidden|is not permitted on this key", re.IGNORECASE)
_DISABLED = re.compile(r"SecretDisabled|KeyDisabled|CertificateDisabled|not allowed on a disabled", re.IGNORECASE)
_OBO = re.compile(r"on[- ]behalf[- ]of|compound identit|\bOBO\b", re.IGNORECASE)
_CHALLENGE = re.compile(r"AKV10000|missing a Bearer|Request is missing a Bearer", re.IGNORECASE)
_IMPLIED_403 = re.compile(r"Caller is not authorized to perform action|"
                          r"does not have \w{1,40} \w{1,40} permission on key vault|"
                          r"Client address[^\r\n]{0,40}is not authorized|is not permitted on this key|"
                          r"Access denied to first party service|not allowed on a disabled", re.IGNORECASE)
_AKV401 = re.compile(r"\bAKV100\d\d\b")
_THROTTLED = re.compile(r"\bThrottled\b")


@dataclass(frozen=True)
class MessageFacts:
    """What Key Vault's error text names: caller, action, resource, vault, permission, operation, address."""

    principal: Principal = field(default_factory=Principal)
    action: str | None = None
    vault: VaultRef = field(default_factory=VaultRef)
    object: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None


_NO_FACTS = MessageFacts()


def message_facts(message: str | None) -> MessageFacts:
    """Scan one message once; the first occurrence of each field wins (tools often print it twice)."""
    if not message:
        return _NO_FACTS
    return _message_facts(message[:limits.MAX_MESSAGE_CHARS])


@lru_cache(maxsize=2048)
def _message_facts(message: str) -> MessageFacts:
    principal, vault = Principal(), VaultRef()
    action: str | None = None
    obj: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None
    if "\\n" in message:
        message = message.replace("\\r\\n", "\n").replace("\\n", "\n")
    for m in _MSG.finditer(message):
        g = m.lastgroup
        if g == "perm":
            g = "pkind"
        if g == "caller" and not principal.known:
            principal = principal_from_caller(m.group("caller").strip().strip("'\""))
        elif g == "ugoa" and not principal.known:
            principal = principal_from_caller(m.group("ugoa"))
        elif g == "action" and action is None:
            action = catalog.canonical_action(m.group("action"))
        elif g == "resource" and obj is None:
            vref, obj = vault_from_resource_id(m.group("resource"))
            if vref.name and not vault.name:
                vault = vref
            elif vref.resource_id and not vault.resource_id:
                vault = VaultRef(name=vault.name, resource_id=vref.resource_id)
        elif g in ("vault", "kv"):
            name = vault_name(m.group(g))
            if name and not vault.name:
                vault = VaultRef(name=name, resource_id=vault.resource_id)
        elif g == "pkind" and permission is None:
            permission = (m.group("pkind"), m.group("perm"))
        elif g in ("opq", "opnp") and operation_word is None:
            operation_word = m.group(g)
        elif g == "ip" and caller_ip is None:
            caller_ip = ip_address(m.group("ip"))
        elif g == "dkind" and obj is None:
            obj = ObjectRef(kind=m.group("dkind") + "s")
    return MessageFacts(principal, action, vault, obj, permission, operation_word, caller_ip)


def implied_status(message: str | None) -> int | None:
    """A status the service's own wording implies (403 texts; AKV100xx are 401), for inputs that carry none."""
    if not message:
        return None
    message = message[:limits.MAX_MESSAGE_CHARS]
    if _IMPLIED_403.search(message):
        return 403
    if _AKV401.search(message):
        return 401
    return None


# --- operations ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    op: catalog.Operation
    method: str
    segs: tuple[str | None, ...]  # None = a {placeholder}
    optional_tail: bool  # the last placeholder is a version and may be absent
    literals: int


@lru_cache(maxsize=1)
def _templates() -> tuple[_Template, ...]:
    out = []
    for op in catalog.operations():
        segs = tuple(None if s.startswith("{") else s.lower() for s in op.path.split("/") if s)
        raw = [s for s in op.path.split("/") if s]
        optional = bool(raw) and raw[-1].endswith("-version}")
        out.append(_Template(op, op.method.upper(), segs, optional, sum(1 for s in segs if s is not None)))
    return tuple(out)


def _matches(t: _Template, segs: list[str]) -> bool:
    n = len(t.segs)
    if len(segs) == n - 1 and t.optional_tail:
        tsegs = t.segs[:-1]
    elif len(segs) == n:
        tsegs = t.segs
    else:
        return False
    return all(ts is None or ts == s.lower() for ts, s in zip(tsegs, segs, strict=True))


def ops_for_path(path: str | None, method: str | None = None) -> list[catalog.Operation]:
    """Operations whose REST template matches a path (and method); the most literal templates win."""
    if not path:
        return []
    segs = [s for s in path.split("?", 1)[0].split("/") if s]
    m = method.upper() if method else None
    found = [t for t in _templates() if (m is None or t.method == m) and _matches(t, segs)]
    if not found:
        return []
    best = max(t.literals for t in found)
    seen: dict[tuple[str, str], catalog.Operation] = {}
    for t in found:
        if t.literals == best:
            seen.setdefault((t.method, t.op.path), t.op)  # same REST call: the base operation (first) stands
    return list(seen.values())


@lru_cache(maxsize=512)
def _perm_kinds(perm: str) -> tuple[str, ...]:
    return tuple(k for k in catalog.OBJECT_KINDS if catalog.canonical_permission(k, perm))


@lru_cache(maxsize=512)
def _ops_for_permission(kind: str, perm: str) -> tuple[catalog.Operation, ...]:
    p = perm.lower()
    return tuple(o for o in catalog.operations()
                 if any(x.lower() == p for x in o.access_policy.get(kind, ())) and len(o.access_policy) == 1
                 and len(o.access_policy[kind]) == 1)


@lru_cache(maxsize=512)
def _ops_for_action(action: str) -> tuple[catalog.Operation, ...]:
    return tuple(catalog.operations_for_action(action))


@lru_cache(maxsize=512)
def _perms_for_action(action: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted(catalog.permissions_for_action(action).items()))


@lru_cache(maxsize=512)
def _perm_actions(kind: str, perm: str) -> tuple[str, ...]:
    return catalog.permission_data_actions(kind, perm)


@lru_cache(maxsize=512)
def canonical_operation(name: str) -> str | None:
    """The catalogue's spelling of a diagnostic OperationName, or None when it is not a data-plane operation."""
    op = catalog.operation(name)
    return op.name if op else None


def _narrow(cands: Iterable[catalog.Operation], path: str | None, method: str | None) -> list[catalog.Operation]:
    cands = list(cands)
    if len(cands) > 1 and path:
        by_path = {o.name for o in ops_for_path(path, method)}
        narrowed = [o for o in cands if o.name in by_path]
        if narrowed:
            cands = narrowed
    if len(cands) > 1 and method:
        narrowed = [o for o in cands if o.method.upper() == method.upper()]
        if narrowed:
            cands = narrowed
    return cands


@dataclass(frozen=True)
class OperationFacts:
    """Operation, data action and access-policy permission, each filled from the catalogue when implied."""

    operation: str | None
    data_action: str | None
    permission: dict[str, tuple[str, ...]] | None


def resolve_operation(*, operation: str | None = None, action: str | None = None,
                      permission: tuple[str, str] | None = None, word: str | None = None,
                      path: str | None = None, method: str | None = None,
                      kind: str | None = None) -> OperationFacts:
    """Decide operation / data action / access-policy permission from whatever the input names."""
    op_name: str | None = None
    raw_op = text(operation)
    if raw_op:
        op_name = canonical_operation(raw_op) or (raw_op if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{1,80}", raw_op)
                                                  else None)
    perm: tuple[str, str] | None = None
    if permission:
        kind, p = permission
        canon = catalog.canonical_permission(kind, p)
        perm = (kind, canon) if canon else None
    elif word:
        kinds = _perm_kinds(word)
        if kind in kinds:
            kinds = (kind,)
        if path:
            obj = object_from_path(path)
            if obj and obj.kind in kinds:
                kinds = (obj.kind,)
        if len(kinds) == 1:
            canon = catalog.canonical_permission(kinds[0], word)
            perm = (kinds[0], canon) if canon else None
    act = catalog.canonical_action(action) if action else None

    op = catalog.operation(op_name) if op_name else None
    if op is None and op_name is None:
        cands: list[catalog.Operation] = []
        if act:
            cands = _narrow(_ops_for_action(act), path, method)
        elif perm:
            cands = _narrow(_ops_for_permission(*perm), path, method)
        elif path and method:
            cands = ops_for_path(path, method)
        if len(cands) == 1:
            op = cands[0]
            op_name = op.name

    data_action = act
    if data_action is None and op is not None and len(op.data_actions) == 1:
        data_action = op.data_actions[0]
    if data_action is None and perm is not None:
        acts = _perm_actions(*perm)
        if len(acts) == 1:
            data_action = acts[0]

    perms: dict[str, tuple[str, ...]] | None = None
    if perm is not None:
        perms = {perm[0]: (perm[1],)}
    elif op is not None:
        perms = dict(op.access_policy)
    elif act is not None:
        found = _perms_for_action(act)
        if found:
            perms = dict(found)
    return OperationFacts(op_name, data_action, perms)


# --- cause hint ----------------------------------------------------------------------------------------------


def cause_hint(*, status: int | None, texts: Iterable[str | None], principal: Principal,
               operation: str | None = None, address_authorized: bool | None = None,
               status_only: bool = False) -> str | None:
    """The cause the input alone decides (causes.md), else None."""
    blob = "\n".join(t[:limits.MAX_MESSAGE_CHARS] for t in texts if t)
    return _cause_hint(status, blob, principal.known, (operation or "").lower(), address_authorized, status_only)


@lru_cache(maxsize=2048)
def _cause_hint(status: int | None, blob: str, known: bool, operation: str, address_authorized: bool | None,
                status_only: bool) -> str | None:
    if status == 429 or _THROTTLED.search(blob):
        return "THROTTLED"
    if status == 401:
        if _CHALLENGE.search(blob) or (operation == "authentication" and not known):
            return "AUTH_CHALLENGE"
        return None if status_only else "AUTH_FAILED"
    if status != 403:
        return None
    if _NETWORK.search(blob) or address_authorized is False:
        return "NETWORK_BLOCKED"
    if _FIRST_PARTY.search(blob):
        return "TRUSTED_SERVICE_DENIED"
    if _KEY_OP.search(blob):
        return "KEY_OPERATION_NOT_PERMITTED"
    if _DISABLED.search(blob):
        return "OBJECT_DISABLED"
    if _OBO.search(blob):
        return "COMPOUND_IDENTITY_REQUIRED"
    if not known:
        return "PRINCIPAL_NOT_IDENTIFIED"
    return None


# --- assembling one denial -----------------------------------------------------------------------------------


def _code(value: Any) -> str | None:
    """An error code (``Forbidden``, ``ForbiddenByRbac``): a short word, or None."""
    v = identifier(value)
    return v if v is not None and len(v) <= 128 and _CODE.fullmatch(v) else None


_CODE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass
class Draft:
    """A denial being assembled from several places of one input; ``build`` validates and fills the rest."""

    source: str
    status: int | None = None
    error_code: str | None = None
    inner_code: str | None = None
    principal: Principal = field(default_factory=Principal)
    vault: VaultRef = field(default_factory=VaultRef)
    operation: str | None = None
    action: str | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    object: ObjectRef | None = None
    path: str | None = None
    method: str | None = None
    caller_ip: str | None = None
    time: str | None = None
    correlation_id: str | None = None
    message: str | None = None
    alert_id: str | None = None
    address_authorized: bool | None = None
    status_only: bool = False

    def add_vault(self, vref: VaultRef) -> None:
        """Merge another mention of the vault (first name and first valid resource id win)."""
        self.vault = VaultRef(name=self.vault.name or vref.name, resource_id=self.vault.resource_id or vref.resource_id)

    def add_uri(self, value: Any) -> None:
        """Vault, path and object from a data-plane request URI or object id."""
        u = vault_uri(value)
        if u is None:
            return
        if u.vault:
            self.add_vault(VaultRef(name=u.vault))
        if self.path is None and u.path not in ("", "/"):
            self.path = u.path
        if self.object is None:
            self.object = object_from_path(u.path)

    def add_message(self, message: str | None) -> None:
        """Everything Key Vault's error text names, where the draft does not know it yet."""
        if not message:
            return
        if self.message is None:
            self.message = message
        f = message_facts(message)
        self.principal = merge_principal(self.principal, f.principal)
        self.add_vault(f.vault)
        self.object = self.object or f.object
        self.action = self.action or f.action
        self.permission = self.permission or f.permission
        self.operation_word = self.operation_word or f.operation_word
        self.caller_ip = self.caller_ip or f.caller_ip

    def build(self) -> Denial:
        """The validated Denial; the vault name follows the resource id when both are known."""
        ops = resolve_operation(operation=self.operation, action=self.action, permission=self.permission,
                                word=self.operation_word, path=self.path, method=self.method,
                                kind=self.object.kind if self.object else None)
        vault = self.vault
        if vault.resource_id and not vault.name:
            vault = VaultRef(name=vault.resource_id.rsplit("/", 1)[-1], resource_id=vault.resource_id)
        texts = (self.message, self.error_code, self.inner_code)
        hint = cause_hint(status=self.status, texts=texts, principal=self.principal, operation=ops.operation,
                          address_authorized=self.address_authorized, status_only=self.status_only)
        message = self.message[:limits.MAX_MESSAGE_CHARS].strip() if self.message else None
        limits.count_denial(self.principal)
        return Denial(
            source=self.source, status=self.status, error_code=_code(self.error_code),
            inner_code=_code(self.inner_code), principal=self.principal, vault=vault, operation=ops.operation,
            data_action=ops.data_action, access_policy_permission=ops.permission, object=self.object,
            caller_ip=self.caller_ip, time=identifier(self.time), correlation_id=guid(self.correlation_id),
            message=message or None, cause_hint=hint, alert_id=identifier(self.alert_id))


@dataclass
class Outcome:
    """What one input (or one block of it) yielded; merged into a ParseResult by the package entry point."""

    denials: list[Denial] = field(default_factory=list)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.denials.extend(other.denials)
        self.skipped += other.skipped
        self.notes.extend(other.notes)
