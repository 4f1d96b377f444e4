"""The only place that reads Azure: ARM (Key Vault, Authorization) through the real async SDK clients, and
Microsoft Graph through a small azure-core pipeline. Live Azure and the bundled emulator are the two backends;
they differ only in base URLs, TLS trust and the credential.

Everything is cached for the lifetime of one instance (one batch), and concurrent asks for the same fact share
one request: each vault once, deny assignments once per vault, assignments once per (principal, scope),
custom role definitions once, built-in role definitions never (package data).

Vaults named only by name are found with Azure Resource Graph (facts/resource_graph.py): one query for every name of
the batch, across every subscription the identity can read (``subscriptions``, when given, is only a filter). The
answer is where the vault is; its properties are then read from ARM. When Resource Graph finds nothing (it lags ARM
by minutes for new vaults) or fails, the configured subscriptions are searched through ARM as before, and the
lookup says so (:meth:`ArmFacts.vault_notes`). The name -> id resolution may outlive the batch (``index``:
store/vault_index.py); a 404 from ARM for an indexed id forgets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .. import catalog
from ..catalog import RoleDefinition
from ..model import DenyAssignment, RoleAssignment
from .convert import assignment_from_sdk, deny_from_sdk, role_from_sdk
from .graph import GraphReads
from .hsm_reads import HsmReads
from .locate import VaultLocator


class ArmFacts(VaultLocator, GraphReads, HsmReads):
    """Reads facts for a batch through the real SDK clients, with per-batch caches and a request counter: the
    vaults (facts/locate.py), the caller (facts/graph.py) and, here, what grants or denies it (ARM authorization).
    """

    # -- RBAC -----------------------------------------------------------------------------------------------

    async def assignments(self, principal_id: str, scope: str) -> tuple[RoleAssignment, ...]:
        """Assignments that apply at ``scope`` (the denied object's own scope, or the vault's) for the principal
        and its groups: ``atScope() and assignedTo('{id}')`` listed at that scope.

        Only documented semantics are relied on. The REST reference of Role Assignments - List For Scope
        (2022-04-01) says "Use $filter=atScope() to return all role assignments at or above the scope", and
        role-assignments-list-rest.md lists ``atScope() and assignedTo('{objectId}')`` as a supported
        combination; ``assignedTo`` includes the principal's (transitive) groups. It is what the Azure CLI sends
        for ``az role assignment list --assignee X --scope S`` (azure-cli role/custom.py
        ``_search_role_assignments``: ``f = 'atScope()'`` then ``f + " and assignedTo('{}')"``). Nothing
        documents that ``assignedTo()`` without ``atScope()`` at a resource scope includes assignments *below*
        it, so a grant on one secret/key/certificate is found by asking at that object's scope, never by
        asking at the vault and hoping. Root ('/') and subscription items come back with their own ids (the
        recorded ``atScope()`` list in tests/fixtures/recordings/04_*). One request per (principal, scope).
        """
        async def call() -> tuple[RoleAssignment, ...]:
            flt = f"atScope() and assignedTo('{principal_id}')"
            return tuple([assignment_from_sdk(a) async for a in
                          self.authorization_client().role_assignments.list_for_scope(scope, filter=flt)])

        async def fetch() -> tuple[RoleAssignment, ...]:
            return await self._read(f"listing role assignments of {principal_id} at {scope}", call, ())
        return await self._once(("ra", principal_id.lower(), scope.rstrip("/").lower()), fetch)

    async def deny_assignments(self, vault_id: str) -> tuple[DenyAssignment, ...]:
        """Deny assignments at, above and below the vault (one request per vault)."""
        async def call() -> tuple[DenyAssignment, ...]:
            return tuple([deny_from_sdk(d) async for d in
                          self.authorization_client().deny_assignments.list_for_scope(vault_id)])

        async def fetch() -> tuple[DenyAssignment, ...]:
            return await self._read(f"listing deny assignments at {vault_id}", call, ())
        return await self._once(("deny", vault_id.lower()), fetch)

    async def role_definitions(self, ids: Sequence[str]) -> dict[str, RoleDefinition]:
        """Definitions by lower-case GUID: built-ins from package data, custom ones fetched once each."""
        out: dict[str, RoleDefinition] = {}
        custom = []
        for rid in dict.fromkeys(ids):
            guid = rid.rstrip("/").rsplit("/", 1)[-1].lower()
            builtin = catalog.builtin_role(guid)
            if builtin is not None:
                out[guid] = builtin
            else:
                custom.append((guid, rid))

        async def fetch(rid: str) -> RoleDefinition | None:
            async def call() -> RoleDefinition | None:
                return role_from_sdk(await self.authorization_client().role_definitions.get_by_id(rid))
            return await self._read(f"reading role definition {rid}", call, None)

        got = await asyncio.gather(*(self._once(("rd", g), lambda r=r: fetch(r)) for g, r in custom))  # type: ignore[misc]
        for (guid, _), rd in zip(custom, got, strict=True):
            if rd is not None:
                out[guid] = rd
        return out
