"""The typed core vocabulary: what a denial says, and (later in the flow) what we found and plan.

Frozen dataclasses with ``to_dict`` producing exactly the JSON of ``spec/cli.md`` (schema version 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

PrincipalKind = Literal["app", "user"]

DENIALS_SCHEMA = "kv-remediate/denials@1"
DIAGNOSIS_SCHEMA = "kv-remediate/diagnosis@1"


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Principal:
    """Who called: ids are validated GUIDs or None, never partial or masked values."""

    object_id: str | None = None
    app_id: str | None = None
    tenant_id: str | None = None
    upn: str | None = None
    kind: PrincipalKind | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def known(self) -> bool:
        return bool(self.object_id or self.app_id or self.upn)


@dataclass(frozen=True)
class VaultRef:
    """The vault as the input names it: a name, a resource id, or both (original case kept)."""

    name: str | None = None
    resource_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resource_id": self.resource_id}

    @property
    def key(self) -> str | None:
        """Case-insensitive identity for comparisons and caching."""
        if self.resource_id:
            return self.resource_id.lower()
        return self.name.lower() if self.name else None


@dataclass(frozen=True)
class ObjectRef:
    """A vault object: ``kind`` is keys, secrets, certificates or storage."""

    kind: str
    name: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version}


@dataclass(frozen=True)
class Denial:
    """One denied (401/403/429) Key Vault request, as much as the input tells; unknowns are None."""

    source: str
    status: int | None = None
    error_code: str | None = None
    inner_code: str | None = None
    principal: Principal = field(default_factory=Principal)
    vault: VaultRef = field(default_factory=VaultRef)
    operation: str | None = None
    data_action: str | None = None
    access_policy_permission: dict[str, tuple[str, ...]] | None = None
    object: ObjectRef | None = None
    caller_ip: str | None = None
    time: str | None = None
    correlation_id: str | None = None
    message: str | None = None
    cause_hint: str | None = None
    alert_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        if self.access_policy_permission is not None:
            out["access_policy_permission"] = {k: list(v) for k, v in self.access_policy_permission.items()}
        return out

    def with_(self, **changes: Any) -> Denial:
        return replace(self, **changes)

    def identity_key(self) -> tuple[str | None, ...]:
        """What makes two denials 'the same request' (principal, vault, object, operation)."""
        obj = self.object
        return (self.principal.object_id or self.principal.app_id or self.principal.upn, self.vault.key,
                obj.kind if obj else None, (obj.name or "").lower() if obj else None,
                (self.operation or self.data_action or "").lower(), self.status and str(self.status))


@dataclass(frozen=True)
class ParseResult:
    """What intake made of a batch: denials, how many records were not denials, and notes for a person."""

    denials: tuple[Denial, ...]
    skipped: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema": DENIALS_SCHEMA, "denials": [d.to_dict() for d in self.denials],
                "skipped": self.skipped, "notes": list(self.notes)}
