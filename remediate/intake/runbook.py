"""A runbook request: ``{"principal_id", "vault", "operation", "object"}`` (the same as the CLI flags).

Unlike observed inputs, a request is an instruction: a value that cannot be right (an id that is not a GUID, an
operation the catalogue does not know, an object kind Key Vault does not have) is an InputError, not a null.
"""

from __future__ import annotations

from typing import Any

from .. import catalog
from ..errors import InputError
from ..model import ObjectRef, Principal, VaultRef
from .drafting import Draft, Outcome
from .values import guid, object_from_path, text, vault_from_resource_id, vault_name

FIELDS = frozenset({"principal_id", "vault", "operation", "object", "tenant_id"})


def is_runbook(obj: dict[str, Any]) -> bool:
    """A JSON object made only of runbook fields, naming at least the principal or the operation."""
    keys = set(obj)
    return bool(keys) and keys <= FIELDS and bool(keys & {"principal_id", "operation"})


def parse_runbook(name: str, obj: dict[str, Any]) -> Outcome:
    """The request as one Denial (source ``runbook``, status null), validated field by field."""
    raw_pid = obj.get("principal_id")
    pid = guid(raw_pid)
    if raw_pid is not None and pid is None:
        raise InputError(name, f"principal_id {raw_pid!r} is not an object id (a GUID)")
    raw_tid = obj.get("tenant_id")
    tid = guid(raw_tid)
    if raw_tid is not None and tid is None:
        raise InputError(name, f"tenant_id {raw_tid!r} is not a tenant id (a GUID)")

    vault = VaultRef()
    raw_vault = obj.get("vault")
    if raw_vault is not None:
        v = text(raw_vault) or ""
        if v.startswith("/"):
            vault, _ = vault_from_resource_id(v)
            if not vault.resource_id:
                raise InputError(name, f"vault {v!r} is not a Key Vault resource id")
        elif vault_name(v):
            vault = VaultRef(name=v)
        else:
            raise InputError(name, f"vault {raw_vault!r} is neither a vault name nor a resource id")

    operation = None
    raw_op = obj.get("operation")
    if raw_op is not None:
        op = catalog.operation(text(raw_op) or "")
        if op is None:
            raise InputError(name, f"operation {raw_op!r} is not a Key Vault operation name "
                                   "(e.g. SecretGet, KeyDecrypt)")
        operation = op.name

    ref: ObjectRef | None = None
    raw_obj = obj.get("object")
    if raw_obj is not None:
        raw = text(raw_obj) or ""
        parts = raw.split("/")
        found = object_from_path("/" + raw) if 2 <= len(parts) <= 3 and all(parts) else None
        if (found is None or found.kind not in catalog.OBJECT_KINDS or found.name is None
                or (len(parts) == 3 and found.version is None)):
            raise InputError(name, f"object {raw_obj!r} is not KIND/NAME[/VERSION] with KIND keys, secrets, "
                                   "certificates or storage, a name of letters, digits and hyphens (1-127) and a "
                                   "version of 32 hex digits")
        ref = found

    d = Draft(source="runbook", principal=Principal(object_id=pid, tenant_id=tid), vault=vault, operation=operation,
              object=ref)
    return Outcome(denials=[d.build()])
