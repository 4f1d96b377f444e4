"""The fact reads one denial can call for, and what has been read so far: the data of the gather loop.

``decide.next_reads(denial, gathered)`` (pure) says which reads the facts so far call for; ``service.gather_facts``
runs each one not yet started through a ``FactSource``, folds each result in with ``Gathered.with_result`` as it
arrives, and asks again, until every read has answered and nothing new is called for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .catalog import RoleDefinition
from .model import DenyAssignment, PrincipalInfo, RoleAssignment, VaultLookup, VaultRef


@dataclass(frozen=True, slots=True)
class ReadVault:
    """Find the vault (by id, else by name) and read its properties from ARM."""

    ref: VaultRef


@dataclass(frozen=True, slots=True)
class ReadAssignments:
    """The principal's role assignments (its groups' included) that apply at ``scope``."""

    principal_id: str
    scope: str


@dataclass(frozen=True, slots=True)
class ReadDenyAssignments:
    """Deny assignments at, above and below the vault."""

    vault_id: str


@dataclass(frozen=True, slots=True)
class ReadRoleDefinitions:
    """The definitions of the assignments' roles (built-ins from package data, custom ones from ARM)."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadPrincipal:
    """Microsoft Graph: the principal's type and name (``groups`` False), or its transitive groups (True)."""

    object_id: str
    groups: bool


FactRead = ReadVault | ReadAssignments | ReadDenyAssignments | ReadRoleDefinitions | ReadPrincipal


@dataclass(frozen=True)
class Gathered:
    """What has been read so far for one denial; None (or absent from a mapping) means not read yet."""

    lookup: VaultLookup | None = None
    assignments: Mapping[str, tuple[RoleAssignment, ...]] = field(default_factory=dict)   # by lower-case scope
    deny_assignments: Mapping[str, tuple[DenyAssignment, ...]] = field(default_factory=dict)   # by lower vault id
    roles: Mapping[str, RoleDefinition] = field(default_factory=dict)   # lower-case role GUID -> definition
    roles_read: frozenset[str] = frozenset()            # the role definition ids asked for (lower-case)
    principal: PrincipalInfo | None = None              # type and name (Graph getByIds)
    groups: PrincipalInfo | None = None                 # transitive groups (Graph getMemberGroups)

    def with_result(self, read: FactRead, value: Any) -> Gathered:
        """This state with one read's answer folded in (``value`` is what the FactSource returned for it)."""
        if isinstance(read, ReadVault):
            return replace(self, lookup=value)
        if isinstance(read, ReadAssignments):
            return replace(self, assignments={**self.assignments, read.scope.rstrip("/").lower(): value})
        if isinstance(read, ReadDenyAssignments):
            return replace(self, deny_assignments={**self.deny_assignments, read.vault_id.lower(): value})
        if isinstance(read, ReadRoleDefinitions):
            return replace(self, roles={**self.roles, **value},
                           roles_read=self.roles_read | {i.lower() for i in read.ids})
        if read.groups:
            return replace(self, groups=value)
        return replace(self, principal=value)
