"""Shared pytest fixtures.

Storage fixtures (``azurite``, ``table_service``, ``queue_service``): one private Azurite per test session on free
loopback ports; a missing Azurite install is a test failure (never a skip) that says to run ``make test``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from tests.azurite import AzuriteError, start_azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Connection string of a session-wide Azurite (devstoreaccount1, explicit 127.0.0.1 endpoints)."""
    try:
        emulator = start_azurite()
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield emulator.connection_string
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def table_service(azurite: str) -> TableServiceClient:
    """A Table service client on the session's Azurite."""
    return TableServiceClient.from_connection_string(azurite)


@pytest.fixture(scope="session")
def queue_service(azurite: str) -> QueueServiceClient:
    """A Queue service client on the session's Azurite."""
    return QueueServiceClient.from_connection_string(azurite)
