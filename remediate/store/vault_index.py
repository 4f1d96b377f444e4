"""The vault name -> resource id index that outlives a batch.

Vault (and Managed HSM) names are globally unique DNS names within a cloud, so where a name lives changes only when
the vault is deleted (and purged) and created again elsewhere. The resolution is kept across invocations: in the
process (:class:`MemoryVaultIndex`) and, in the function app, in the Azure Table ``vaultindex``
(:class:`TableVaultIndex`, shared by every instance), each with a TTL. A 404 from ARM for an indexed id forgets the
entry (facts.arm). Facts that change (assignments, access policies) are never kept here: they keep the batch cache.

Entries are partitioned by ``scope`` (the ARM endpoint, or one emulator run), so two clouds or two emulators never
share an entry.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from azure.core.exceptions import ResourceNotFoundError

from ..armid import is_vault_name, parse_hsm_id, parse_vault_id
from .azure import storage_errors, target_of
from .encoding import from_table_time

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient as AsyncTableClient

VAULT_INDEX_TABLE = "vaultindex"
DEFAULT_TTL = timedelta(hours=24)
"""How long a resolution is trusted without ARM saying otherwise (a 404 forgets it at once)."""


class VaultIndex(Protocol):
    """name -> id, per scope; every method may raise StorageError (the caller treats that as a miss)."""

    async def get(self, scope: str, name: str) -> str | None: ...
    async def put(self, scope: str, name: str, resource_id: str) -> None: ...
    async def forget(self, scope: str, name: str) -> None: ...


def _valid(name: str, resource_id: str | None = None) -> bool:
    """Only valid names and ids that end in that name are stored or returned (never anything else)."""
    if not is_vault_name(name):
        return False
    if resource_id is None:
        return True
    parsed = parse_vault_id(resource_id) or parse_hsm_id(resource_id)
    return parsed is not None and parsed.name.lower() == name.lower()


class MemoryVaultIndex:
    """The process's index: a bounded LRU with a TTL (monotonic clock), safe across threads and event loops."""

    def __init__(self, ttl: timedelta = DEFAULT_TTL, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 100_000) -> None:
        self._ttl = ttl.total_seconds()
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    async def get(self, scope: str, name: str) -> str | None:
        key = (scope, name.lower())
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if hit[1] <= self._clock():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return hit[0]

    async def put(self, scope: str, name: str, resource_id: str) -> None:
        if not _valid(name, resource_id):
            return
        with self._lock:
            self._items[(scope, name.lower())] = (resource_id, self._clock() + self._ttl)
            self._items.move_to_end((scope, name.lower()))
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    async def forget(self, scope: str, name: str) -> None:
        with self._lock:
            self._items.pop((scope, name.lower()), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def partition_key(scope: str) -> str:
    """A Table-safe PartitionKey for ``scope`` (URLs hold '/', which keys may not)."""
    return hashlib.sha256(scope.encode()).hexdigest()[:32]


class TableVaultIndex:
    """The index in the Azure Table ``vaultindex`` (PartitionKey = hash of the scope, RowKey = lower-case name,
    ``ResourceId``, ``ResolvedAt``), shared by every instance of the app. Expired rows read as misses."""

    def __init__(self, table: AsyncTableClient, ttl: timedelta = DEFAULT_TTL, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._table = table
        self._ttl = ttl
        self._now = now

    async def close(self) -> None:
        await self._table.close()

    async def get(self, scope: str, name: str) -> str | None:
        if not is_vault_name(name):
            return None
        with storage_errors("reading the vault index", self._target()):
            try:
                entity = await self._table.get_entity(partition_key(scope), name.lower())
            except ResourceNotFoundError:
                return None
        resolved, rid = entity.get("ResolvedAt"), entity.get("ResourceId")
        if resolved is None or not isinstance(rid, str) or not _valid(name, rid):
            return None
        if from_table_time(resolved) + self._ttl <= self._now():
            return None
        return rid

    async def put(self, scope: str, name: str, resource_id: str) -> None:
        if not _valid(name, resource_id):
            return
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": partition_key(scope), "RowKey": name.lower(), "ResourceId": resource_id,
                  "ResolvedAt": self._now()}
        with storage_errors("writing the vault index", self._target()):
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _target(self) -> str:
        return target_of(self._table, f"table '{self._table.table_name}'")

    async def forget(self, scope: str, name: str) -> None:
        if not is_vault_name(name):
            return
        with storage_errors("deleting from the vault index", self._target()):
            await self._table.delete_entity(partition_key(scope), name.lower())


class LayeredVaultIndex:
    """The process's memory in front of a shared store: a memory hit costs nothing, a store hit fills memory, and
    writes and forgets go to both."""

    def __init__(self, layers: Sequence[VaultIndex]) -> None:
        self._layers = tuple(layers)

    async def get(self, scope: str, name: str) -> str | None:
        for i, layer in enumerate(self._layers):
            found = await layer.get(scope, name)
            if found is not None:
                for upper in self._layers[:i]:
                    await upper.put(scope, name, found)
                return found
        return None

    async def put(self, scope: str, name: str, resource_id: str) -> None:
        for layer in self._layers:
            await layer.put(scope, name, resource_id)

    async def forget(self, scope: str, name: str) -> None:
        for layer in self._layers:
            await layer.forget(scope, name)
