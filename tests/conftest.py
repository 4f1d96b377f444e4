"""Shared pytest fixtures, and the loopback guard every test runs under.

The guard (``loopback_only``, autouse, see tests/support/loopback.py): a connection or name lookup in this process
that could leave the machine fails the test at once, naming the address; a refusal the code under test swallowed,
or one on another thread, fails the test phase it happened in (setup, call or teardown).

Storage fixtures (``azurite``, ``table_service``, ``queue_service``): one private Azurite per test session on free
loopback ports; a missing Azurite install is a test failure (never a skip) that says to run ``make test``.
``token_endpoint``: the managed-identity endpoint on loopback for the live-mode tests (functional and system).
Fixtures of one layer live in that layer's conftest.py; helpers in tests/support/.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from tests.support import loopback
from tests.support.azurite import AzuriteError, start_azurite
from tests.support.live import TokenEndpoint

LAYERS = ("unit", "functional", "system")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A test module left directly in tests/ would not be collected (testpaths names the layers): refuse to run."""
    stray = sorted(p.name for p in Path(__file__).parent.glob("test_*.py"))
    if stray:
        raise pytest.UsageError(f"test modules directly in tests/ are not collected: {', '.join(stray)}; move each "
                                f"into the layer it belongs to (tests/{{{','.join(LAYERS)}}}/, see README Development)")


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[loopback.Guard]:
    """Every test, and every fixture it sets up, reaches only loopback (127.0.0.0/8, ::1) and unix sockets."""
    with loopback.installed() as guard:
        yield guard


def _refusals_fail(phase: str) -> Generator[None, object, object]:
    """Run a test phase; fail it if the guard refused anything the phase did not itself fail on."""
    try:
        result = yield
    except BaseException:
        loopback.GUARD.take()
        raise
    refused = loopback.GUARD.take()
    if refused:
        pytest.fail(f"loopback guard: {len(refused)} refusal(s) during {phase} (swallowed by the code under test or "
                    "on another thread): " + "; ".join(refused), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _refusals_fail("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _refusals_fail("the test"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    return (yield from _refusals_fail("teardown"))


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


@pytest.fixture()
def token_endpoint() -> Iterator[tuple[str, list[str]]]:
    """The managed-identity token endpoint on loopback: its URL and the resources it was asked for."""
    TokenEndpoint.resources = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/msi/token", TokenEndpoint.resources
    finally:
        server.shutdown()
