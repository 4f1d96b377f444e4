"""A grant record and the questions every grant store answers (issue 5): the typed record of every applied,
already-granted, refused, failed and revoked change, and the ``GrantStore`` interface its two backends implement
(store/grants_sqlite.py, store/grants_table.py; store/grants.py names them all)."""

from __future__ import annotations

import builtins
import hashlib
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from ..errors import InputError
from .encoding import iso, parse_iso, utc

Outcome = Literal["applied", "already_granted", "refused", "failed", "revoked", "pending", "abandoned",
                  "pending_approval"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
UNRESOLVED: tuple[str, ...] = ("pending", "pending_approval")
"""Outcomes whose write may still take effect in Azure: the reconciler reads Azure to settle them."""

TIME_FIELDS = ("time", "expires_at", "revoked_at", "first_time")
MANAGED_HSM = "managed_hsm"
"""``GrantRecord.resource_kind`` of a Managed HSM grant (the ``VaultRef.kind`` vocabulary)."""
EMULATOR = "emulator"
"""``GrantRecord.backend`` of a grant made in the bundled emulator (``--snapshot``); None is live Azure."""


def new_grant_id() -> str:
    """A new record id (UUID4): short enough for ``kv-remediate revoke --grant ID``, safe as a Table RowKey."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class GrantRecord:
    """One audited change (or refusal) for one finding; ``before``/``after`` are what ARM showed around the write."""

    outcome: Outcome
    time: datetime
    id: str = field(default_factory=new_grant_id)
    alert_id: str | None = None
    correlation_id: str | None = None
    finding: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    refused_by: str | None = None
    before: Any = None
    after: Any = None
    actor: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_detail: str | None = None
    vault_id: str | None = None
    principal_id: str | None = None
    scope: str | None = None
    role_definition_id: str | None = None
    assignment_id: str | None = None
    permissions_added: dict[str, list[str]] | None = None
    detail: str | None = None
    write_key: str | None = None       # the write's identity (see apply.write_key): one open grant per key
    requests: list[str] | None = None  # PIM schedule request ids sent for this grant (single-use in Azure)
    backend: str | None = None         # where the write was made: None live Azure, "emulator" the bundled emulator
    repeats: int = 0                   # how many more times this same write was made again under this record
    first_time: datetime | None = None  # when a repeated write was first made (``time`` is the latest attempt)
    resource_kind: str | None = None   # "managed_hsm": a Managed HSM local role assignment (vault_id is the HSM's ARM
                                       # id, scope its local scope); None (or "vault"): a vault grant
    custom_role: str | None = None     # the GUID of the custom local role the HSM grant defined or reused (kept)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"grant outcome must be one of {', '.join(OUTCOMES)} (got {self.outcome!r})")
        if self.repeats is None:   # a record written before repeats were counted (a Table entity lacks the field)
            object.__setattr__(self, "repeats", 0)
        for name in TIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value, name))

    @property
    def vault_key(self) -> str | None:
        """Case-insensitive vault identity (ARM ids are case-insensitive)."""
        return self.vault_id.lower() if self.vault_id else None

    @property
    def is_hsm(self) -> bool:
        """A Managed HSM grant: read, revoked and reconciled through the HSM's data plane (facts/hsm.py), not ARM."""
        return self.resource_kind == MANAGED_HSM

    @property
    def in_emulator(self) -> bool:
        """Made in the bundled emulator: never revoked, settled or matched by a run against Azure (nor the reverse)."""
        return self.backend == EMULATOR

    @property
    def is_open(self) -> bool:
        """Holds its write identity: unresolved, or applied and not revoked."""
        return self.outcome in UNRESOLVED or (self.outcome == "applied" and self.revoked_at is None)

    @property
    def is_due_indexed(self) -> bool:
        """Belongs in the expiry index: may be (or become) an applied grant with a time limit, not yet revoked."""
        return self.expires_at is not None and self.revoked_at is None and self.outcome in ("applied", *UNRESOLVED)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 UTC text."""
        out = asdict(self)
        for name in TIME_FIELDS:
            out[name] = iso(out[name]) if out[name] is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrantRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in TIME_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = parse_iso(values[name])
        return cls(**values)


class GrantStore(Protocol):
    """Where grant records live; every backend answers the same questions the same way."""

    def add(self, record: GrantRecord) -> None:
        """Store a new record; an existing id is an error (records are never overwritten)."""
        ...

    def get(self, id: str) -> GrantRecord | None:
        ...

    def list(self, *, vault: str | None = None, outcome: str | None = None,
             limit: int | None = None) -> builtins.list[GrantRecord]:
        """Records newest first, optionally only one vault (case-insensitive) and/or one outcome."""
        ...

    def expired(self, now: datetime) -> builtins.list[GrantRecord]:
        """Applied, not yet revoked grants whose ``expires_at`` is at or before ``now`` (oldest expiry first)."""
        ...

    def mark_revoked(self, id: str, when: datetime, detail: str | None = None) -> bool:
        """Stamp a grant revoked; True if this call did it, False if it already was (first revocation wins)."""
        ...

    def count_applied_since(self, vault_id: str, since: datetime, backend: str | None = None) -> int:
        """Applied grants on ``vault_id`` at or after ``since`` (revoked ones count: they were made), made in
        ``backend`` (None: Azure; "emulator": the bundled emulator's grants never count against Azure's, nor the
        reverse)."""
        ...

    def begin(self, record: GrantRecord) -> GrantRecord:
        """Record a ``pending`` intent holding ``record.write_key``; if an open record already holds that key,
        record nothing and return that one (the caller resumes it instead of writing again)."""
        ...

    def open_for(self, write_key: str) -> GrantRecord | None:
        """The open record holding ``write_key``, if any."""
        ...

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        """Replace record ``id`` by ``record`` (same id) if its outcome is still ``expect``; False if it was not
        (someone else settled it first). Leaving an open outcome releases the write key."""
        ...

    def unresolved_before(self, before: datetime) -> builtins.list[GrantRecord]:
        """``pending``/``pending_approval`` records made at or before ``before`` (oldest first)."""
        ...

    def vaults(self) -> builtins.list[str]:
        """Every vault id a grant was begun on (lower-case), for the reconciler's sweep of labelled assignments."""
        ...


def not_found(id: str) -> InputError:
    return InputError(f"grant {id}", "no such grant is recorded; list them with `kv-remediate grants`",
                      code="GRANT_NOT_FOUND")


def check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise InputError("outcome filter", f"must be one of {', '.join(OUTCOMES)} (got {outcome!r})")


def exists_error(id: str) -> InputError:
    return InputError(f"grant {id}", "a record with this id already exists; records are never overwritten",
                      code="GRANT_EXISTS")


def key_hash(write_key: str) -> str:
    """A write key as a Table-safe RowKey (hex SHA-256)."""
    return hashlib.sha256(write_key.encode()).hexdigest()
