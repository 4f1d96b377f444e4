"""A runbook request: ``{"principal_id", "vault", "operation", "object"}`` (the same as the CLI flags).

Unlike observed inputs, a request is an instruction: a value that cannot be right (an id that is not a GUID, an
operation the catalogue does not know, an object kind Key Vault does not have) is an InputError, not a null.
``RunbookRequest`` is the request's schema (``msgspec``: the field types, no other keys; the OpenAPI document
derives its request bodies from it); the values are then checked by intake's own validators.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from .. import catalog
from ..errors import InputError
from ..model import ObjectRef, Principal, VaultRef
from .drafting import Draft, Outcome
from .values import guid, object_from_path, text, vault_from_resource_id, vault_name

_VAULT = "[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]"
_SEG = "[A-Za-z0-9._()-]{1,90}"
_KINDS = "|".join(catalog.OBJECT_KINDS)
_KIND_NAME = 2  # an object given as "kind/name" has two parts
_KIND_NAME_VERSION = 3  # an object given as "kind/name/version" has three parts


def _doc(description: str, **schema: Any) -> msgspec.Meta:
    """A field's description and JSON Schema (for the OpenAPI document; intake's validators do the checking)."""
    return msgspec.Meta(description=description, extra_json_schema=schema or None)


class RunbookRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One denial described by hand (same as the CLI's flags): at least the principal or the operation."""

    principal_id: Annotated[str, _doc("object id of the caller", format="uuid")] | None = None
    vault: Annotated[str, _doc("vault name or resource id", oneOf=[
        {"type": "string", "pattern": f"^{_VAULT}$"},
        {"type": "string", "pattern": f"^/subscriptions/{_SEG}/resourceGroups/{_SEG}/providers/"
                                      f"Microsoft\\.KeyVault/vaults/{_VAULT}$"}])] | None = None
    operation: Annotated[str, _doc("Key Vault operation (diagnostic log OperationName)")] | None = None
    object: Annotated[str, _doc("KIND/NAME[/VERSION], e.g. secrets/db-password",
                                pattern=f"^({_KINDS})/[A-Za-z0-9-]{{1,127}}(/[0-9a-fA-F]{{32}})?$")] | None = None
    tenant_id: Annotated[str, _doc("tenant id of the caller", format="uuid")] | None = None


FIELDS = frozenset(RunbookRequest.__struct_fields__)
NAMING = ("principal_id", "operation")
"""A request names at least one of these (else the object is not taken for a runbook request)."""

_PROBLEMS = {
    "principal_id": "principal_id {value!r} is not an object id (a GUID)",
    "tenant_id": "tenant_id {value!r} is not a tenant id (a GUID)",
    "vault": "vault {value!r} is neither a vault name nor a resource id",
    "operation": "operation {value!r} is not a Key Vault operation name (e.g. SecretGet, KeyDecrypt)",
    "object": "object {value!r} is not KIND/NAME[/VERSION] with KIND keys, secrets, certificates or storage, a "
              "name of letters, digits and hyphens (1-127) and a version of 32 hex digits",
}
_FIELD = re.compile(r" - at `\$\.(\w+)`$")


def is_runbook(obj: dict[str, Any]) -> bool:
    """A JSON object made only of runbook fields, naming at least the principal or the operation."""
    keys = set(obj)
    return bool(keys) and keys <= FIELDS and bool(keys & set(NAMING))


def _request(name: str, obj: dict[str, Any]) -> RunbookRequest:
    """The request's fields by type (strings or null); the error names the field and its value."""
    try:
        return msgspec.convert(obj, RunbookRequest)
    except msgspec.ValidationError as exc:
        where = _FIELD.search(str(exc))
        field = where.group(1) if where else ""
        if field not in _PROBLEMS:
            raise InputError(name, f"is not a runbook request ({exc})") from exc
        raise InputError(name, _PROBLEMS[field].format(value=obj.get(field))) from exc


def parse_runbook(name: str, obj: dict[str, Any]) -> Outcome:
    """The request as one Denial (source ``runbook``, status null), validated field by field."""
    req = _request(name, obj)
    pid, tid = guid(req.principal_id), guid(req.tenant_id)
    for field, raw, value in (("principal_id", req.principal_id, pid), ("tenant_id", req.tenant_id, tid)):
        if raw is not None and value is None:
            raise InputError(name, _PROBLEMS[field].format(value=raw))

    vault = VaultRef()
    if req.vault is not None:
        v = text(req.vault) or ""
        if v.startswith("/"):
            vault, _ = vault_from_resource_id(v)
            if not vault.resource_id:
                raise InputError(name, f"vault {v!r} is not a Key Vault resource id")
        elif vault_name(v):
            vault = VaultRef(name=v)
        else:
            raise InputError(name, _PROBLEMS["vault"].format(value=req.vault))

    operation = None
    if req.operation is not None:
        op = catalog.operation(text(req.operation) or "")
        if op is None:
            near = catalog.nearest_operations(text(req.operation) or "")   # catalogue names only, never the input
            hint = f"; did you mean {' or '.join(near)}?" if near else "; `kv-remediate operations` lists them all"
            raise InputError(name, _PROBLEMS["operation"].format(value=req.operation) + hint)
        operation = op.name

    ref: ObjectRef | None = None
    if req.object is not None:
        raw = text(req.object) or ""
        parts = raw.split("/")
        found = object_from_path("/" + raw) if _KIND_NAME <= len(parts) <= _KIND_NAME_VERSION and all(parts) else None
        if (found is None or found.kind not in catalog.OBJECT_KINDS or found.name is None
                or (len(parts) == _KIND_NAME_VERSION and found.version is None)):
            raise InputError(name, _PROBLEMS["object"].format(value=req.object))
        ref = found

    d = Draft(source="runbook", principal=Principal(object_id=pid, tenant_id=tid), vault=vault, operation=operation,
              object=ref)
    return Outcome(denials=[d.build()])


class RemediateRequest(RunbookRequest, frozen=True, forbid_unknown_fields=True):
    """A runbook request, plus whether to apply what policy allows (``/api/remediate``: ``apply`` is taken off
    before the request is parsed)."""

    apply: Annotated[bool, msgspec.Meta(description="apply (default: false, suggest only)")] = False
