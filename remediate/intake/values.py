"""Primitive values as inputs carry them: JSON accessors, identifiers, vault and object references, status.

Everything here is total: any value of any JSON type goes in, a validated value or ``None`` comes out.
Nothing is guessed: a masked, partial or nil GUID is ``None``; a vault id is kept only when every segment is
valid by ``armid``'s rules; an object only with a name by Key Vault's rule.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import armid
from ..clouds import CLOUDS
from ..model import ObjectRef, VaultRef

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


_NIL_GUID = "00000000-0000-0000-0000-000000000000"
_MAX_RAW_ID = 64  # longest raw GUID or vault name looked at before trimming (a GUID is 36, a vault name 24)
_GUID_LENGTH = len(_NIL_GUID)  # a GUID in 8-4-4-4-12 form is 36 characters
_MAX_OBJECT_NAME = 127  # Key Vault's longest key, secret or certificate name (armid.OBJECT_NAME)
_MASKED = re.compile(r"XXXX|xxxx|(?<![A-Za-z0-9])(?:XXX|xxx)(?![A-Za-z0-9])|<[^>]*>|\[[^\]]*\]|\*\*\*|\.\.\.|"
                     r"REDACTED|\{[^}]*\}")


def guid(value: Any) -> str | None:
    """A well-formed, non-nil GUID (lower-cased), else None: masked, partial and placeholder ids are unknown."""
    return _guid(value) if isinstance(value, str) else None


@lru_cache(maxsize=8192)
def _guid(value: str) -> str | None:
    if len(value) > _MAX_RAW_ID or has_control(value):
        return None
    v = value.strip()
    if len(v) != _GUID_LENGTH or not armid.is_guid(v) or v == _NIL_GUID:
        return None
    return v.lower()


def masked(value: str) -> bool:
    """True when a value carries a redaction marker (XXXX, a lone XXX, <...>, [...], ***, {placeholder},
    REDACTED)."""
    return _MASKED.search(value) is not None


def vault_name(value: Any) -> str | None:
    """A syntactically valid Key Vault name (3-24 letters, digits, hyphens), original case, else None."""
    return _vault_name(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _vault_name(value: str) -> str | None:
    if len(value) > _MAX_RAW_ID or has_control(value):
        return None
    v = value.strip()
    if not armid.is_vault_name(v) or masked(v):
        return None
    return v


def object_name(value: Any) -> str | None:
    """A key, secret or certificate name by Key Vault's rule (``^[0-9A-Za-z-]{1,127}$``), unless masked, else None.

    Nothing is decoded or trimmed into shape: ``x%2F..``, ``a.b``, ``a b``, a backslash, a look-alike letter or a
    control character is not a name, so the object is unknown rather than partially kept.
    """
    if not isinstance(value, str) or len(value) > _MAX_OBJECT_NAME or not armid.is_object_name(value) or masked(value):
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

# Locates a vault id inside longer text (a message's 'Resource:', a resource id with an object path after it);
# whether the id found is valid is armid.parse_vault_id's rule, not this pattern's.
# ASCII: no unicode case folding (a Kelvin sign is not a 'k'); every part bounded.
_VAULT_ID = re.compile(
    r"/subscriptions/([^/'\"\r\n]{1,80})/resourcegroups/([^/'\"\r\n]{1,90})/providers/microsoft\.keyvault/vaults/"
    r"([^/\s'\"?#]{1,64})((?:/[^/\s'\"?#]{1,1024}){0,16})", re.IGNORECASE | re.ASCII)
_HSM_ID = re.compile(
    r"/subscriptions/([^/'\"\r\n]{1,80})/resourcegroups/([^/'\"\r\n]{1,90})/providers/microsoft\.keyvault/managedhsms/"
    r"([^/\s'\"?#]{1,64})(?=$|[/?#\s'\"])", re.IGNORECASE | re.ASCII)
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
        return _hsm_from_resource_id(v), None
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


def _hsm_from_resource_id(v: str) -> VaultRef:
    """A Managed HSM (``kind`` managed_hsm) from its resource id, by the same rules as a vault's; else no vault."""
    m = _HSM_ID.search(v)
    if m is None:
        return VaultRef()
    sub, rg, name = m.group(1), m.group(2), m.group(3)
    whole = v[m.start():m.end()]
    ok = (guid(sub) and armid.parse_hsm_id(whole) is not None and not masked(rg) and "%" not in whole
          and "\\" not in whole and not _DOTS.search(whole))
    return VaultRef(name=vault_name(name), resource_id=whole if ok else None, kind="managed_hsm")


# A Managed HSM key reached through ARM (issue 12): an ARM key resource under managedHSMs, ARM's control-plane
# operation on HSM keys (``Microsoft.KeyVault/managedHSMs/keys/write``; a data action is ``managedHsm/...`` and ends
# in ``/action`` or a verb of its own), or the setting ARM's refusal names ("enable the setting
# 'AllowKeyManagementOperationsThroughARM'"). Bounded, ASCII, any case.
_HSM_ARM = re.compile(
    r"(?P<rid>/subscriptions/[^/\s'\"]{1,80}/resourcegroups/[^/\s'\"]{1,90}/providers/microsoft\.keyvault/managedhsms/"
    r"[^/\s'\"?#]{1,64})/keys(?:/(?P<key>[^/\s'\"?#]{1,127}))?(?=$|[/?#\s'\".,;)\]])"
    r"|(?<![A-Za-z0-9/])microsoft\.keyvault/managedhsms/keys/(?:versions/)?(?P<verb>read|write)(?![A-Za-z/])"
    r"|(?P<setting>AllowKeyManagementOperationsThroughARM)", re.IGNORECASE | re.ASCII)
# ARM's operation on HSM keys as the data action ARM asks the HSM for on the user's behalf once trusted (inference:
# the doc says ARM "act[s] on behalf of the user" to "create new keys or list keys"; key PUT creates, GET reads).
_ARM_VERB_ACTIONS = {"write": "Microsoft.KeyVault/managedHsm/keys/create",
                     "read": "Microsoft.KeyVault/managedHsm/keys/read/action"}


@dataclass(frozen=True)
class HsmArmPath:
    """What an input says about a Managed HSM key reached through ARM: the HSM (validated like any resource id),
    the key name (validated), and the data action ARM's operation stands for. Only where to look."""

    hsm: VaultRef
    key: str | None = None
    action: str | None = None


def hsm_arm_path(value: Any) -> HsmArmPath | None:
    """The ARM path to an HSM key that ``value`` names (a resource id, an operation name, an error text); None when it
    names none. The first mention of each part wins."""
    v = text(value)
    if v is None:
        return None
    low = v[:_MAX_RESOURCE_ID * 4].lower()   # a plain substring test first: nearly every text names neither
    if "managedhsms/" not in low and "allowkeymanagementoperationsthrougharm" not in low:
        return None
    if has_control(v.replace("\n", " ").replace("\r", " ").replace("\t", " ")):
        return None
    hsm, key, action, seen = VaultRef(), None, None, False
    for m in _HSM_ARM.finditer(v[:_MAX_RESOURCE_ID * 4]):
        seen = True
        if m.group("rid") and not hsm.name:
            hsm = _hsm_from_resource_id(m.group("rid"))
            key = object_name(m.group("key")) if m.group("key") else None
        if m.group("verb") and action is None:
            action = _ARM_VERB_ACTIONS[m.group("verb").lower()]
    return HsmArmPath(hsm, key, action) if seen else None


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
    segs = [_segment(s) for s in raw]
    kind = _object_kind(segs[0]) if segs else None
    if kind is None or _lands_elsewhere(raw):
        return None
    match segs:
        case [_, second, *rest] if not _not_an_object(second):
            name = object_name(second)
            return ObjectRef(kind=kind, name=name, version=_object_version(rest) if name is not None else None)
        case _:
            return None  # a kind with no name, or a collection that holds no objects (contacts, issuers, ...)


def _object_kind(first: str | None) -> str | None:
    """The canonical kind a path's first decoded segment names (``DeletedSecrets`` -> secrets), else None."""
    if first is None or not first.isascii():
        return None
    return _OBJECT_KINDS.get(first.lower())


def _lands_elsewhere(raw: list[str]) -> bool:
    """True when a client would send the request elsewhere: plain or encoded dot segments, or '%2F..' after the
    name."""
    return any(s in (".", "..") for s in (unquote(r) for r in raw)) or any(_dot_parts(unquote(r)) for r in raw[2:])


def _not_an_object(second: str | None) -> bool:
    """True when the segment after the kind is a collection of the vault's (contacts, issuers, restore), not a
    name."""
    return second is not None and second.isascii() and second.lower() in _NOT_OBJECTS


def _object_version(rest: list[str | None]) -> str | None:
    """The version segment after the name when it is 32 hex digits and not all zeros (lower-cased), else None."""
    v = rest[0] if rest else None
    return v.lower() if v is not None and armid.is_version(v) and v.strip("0") else None


_HSM_SUFFIXES = frozenset(c.hsm_suffix for c in CLOUDS.values())


@dataclass(frozen=True)
class Uri:
    """A Key Vault data-plane URI split into the parts intake uses."""

    vault: str | None
    path: str
    hsm: bool = False     # a Managed HSM's host (``NAME.managedhsm.azure.net``)


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
    if rest in _HSM_SUFFIXES:
        return Uri(vault=vault_name(label), path=parts.path or "/", hsm=True)
    if not rest.startswith(("vault.", "vaultcore.")):
        return None
    return Uri(vault=vault_name(label), path=parts.path or "/")


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
_STATUS_MIN = 100  # lowest HTTP status code (1xx)
_STATUS_MAX = 599  # highest HTTP status code (5xx)
_STATUS_DIGITS = 3  # an HTTP status code is three digits


def status_value(value: Any) -> int | None:
    """An HTTP status from 403, 403.0, "403", "403 (Forbidden)", "Forbidden", "TooManyRequests"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if _STATUS_MIN <= value <= _STATUS_MAX else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and _STATUS_MIN <= value <= _STATUS_MAX else None
    v = text(value)
    if v is None:
        return None
    head = v[:_STATUS_DIGITS]
    if head.isdigit() and (len(v) == _STATUS_DIGITS or not v[_STATUS_DIGITS].isdigit()):
        n = int(head)
        return n if _STATUS_MIN <= n <= _STATUS_MAX else None
    return CODE_STATUS.get(v.lower())
