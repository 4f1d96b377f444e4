"""`serve` in this process for the function app tests (no tests here): the HTTP server and a pump for the queue
worker on one event loop, with the app's environment on Azurite, a snapshot and a notification receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediate.app import services
from remediate.localhost.discovery import load_app, queue_triggers
from remediate.localhost.http import HttpServer
from remediate.localhost.pump import QueuePump
from tests.support.app import NotifyReceiver, app_environment, call

WORKSPACE = "dddd3333-ee44-5555-66ff-777777aaaaaa"
"""The audit workspace the alert variants' search links name (configured in KV_REMEDIATE_AUDIT_WORKSPACES)."""


class App:
    """`serve` in this process: the HTTP server and a pump for the worker, sharing one event loop."""

    def __init__(self, conn: str, notify: NotifyReceiver) -> None:
        self.conn = conn
        self.notify = notify
        self.app = load_app()
        self.http = HttpServer(self.app, port=0).start()
        self.pump = QueuePump(queue_triggers(self.app)[0], self.http.loop, retry_delay=0)

    def post(self, path: str, body: bytes, **headers: str) -> tuple[int, Any]:
        return call(self.http.base_url + path, body, headers=headers)

    def findings(self) -> list[dict[str, Any]]:
        """The `findings` table, read on the app's loop (its async table clients live there)."""
        async def records() -> list[dict[str, Any]]:
            return await (await services.get().findings()).list(1000)

        got: list[dict[str, Any]] = self.http.loop.submit(records()).result(timeout=30)
        return got


def serve_app(azurite: str, snapshot: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[App]:
    """The app served on ``snapshot`` with a notification receiver and extra app ``settings``; stopped after."""
    with NotifyReceiver() as notify, app_environment(monkeypatch, azurite, snapshot, KV_REMEDIATE_NOTIFY_URL=notify.url,
                                                     **settings):
        served = App(azurite, notify)
        try:
            yield served
        finally:
            served.http.stop()
