"""Fixtures of the functional tests: stores on each real backend (Azurite tables, a SQLite file) and the
crash-safety world (an emulated tenant kept across attempts)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableClient as AsyncTableClient

from remediate.backends import EmulatorRun
from remediate.store.azure import table_client
from remediate.store.claims import ClaimStore, SqliteClaimStore, TableClaimStore
from remediate.store.grants import GrantStore, SqliteGrantStore, TableGrantStore
from tests.support.claims import StoreFactory
from tests.support.crash_world import Kind, World
from tests.support.demo_apply import TENANT


@pytest.fixture(params=["table", "sqlite"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Given a factory of stores that all share one fresh backend (a new table, or one SQLite file)."""
    opened: list[ClaimStore] = []
    if request.param == "table":
        service: TableServiceClient = request.getfixturevalue("table_service")
        conn: str = request.getfixturevalue("azurite")
        name = "claims" + uuid.uuid4().hex[:12]
        table_client(service, name)

        def table_store() -> ClaimStore:
            store = TableClaimStore(AsyncTableClient.from_connection_string(conn, table_name=name))
            opened.append(store)
            return store

        yield table_store
        for store in opened:
            await store.close()
        service.delete_table(name)
    else:
        path = tmp_path / "state" / "state.db"
        yield lambda: SqliteClaimStore(path)


@pytest.fixture(params=["sqlite", "table"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], GrantStore]]:
    """A grant store factory on each real backend (each call: a new client on the same data)."""
    if request.param == "sqlite":
        yield lambda: SqliteGrantStore(tmp_path / "state.db")
        return
    service: TableServiceClient = request.getfixturevalue("table_service")
    name = "grants" + uuid.uuid4().hex[:12]
    yield lambda: TableGrantStore(table_client(service, name))
    service.delete_table(name)


@pytest.fixture
def world_for(tmp_path: Path, backend: Callable[[], GrantStore]) -> Iterator[Callable[..., World]]:
    """Make a World (an emulated tenant kept across a crash-safety test's attempts) for a kind of grant."""
    runs: list[EmulatorRun] = []

    def make(kind: Kind, tenant: dict[str, Any] | None = None) -> World:
        run = EmulatorRun(copy.deepcopy(tenant or TENANT))
        run.__enter__()
        runs.append(run)
        return World(run, backend, tmp_path / "slots.db", kind)

    yield make
    for run in runs:
        run.__exit__(None, None, None)
