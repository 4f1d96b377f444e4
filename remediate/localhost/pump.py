"""The queue pump: each queue-triggered function run against its Storage queue with the Functions host's rules
(batch size, visibility timeout on failure, ``<queue>-poison`` after ``maxDequeueCount``), settled on the loop."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from ..app.settings import host_settings
from .discovery import QueueTrigger, queue_triggers
from .invoke import InvocationContext, LoopThread, call

log = logging.getLogger("kv_remediate.serve")


class QueuePump:
    """Runs one queue-triggered function against its Storage queue, with the host's retry and poison rules."""

    # Keyword-only settings, each defaulted to the host's (host.json); tests and the bench set the few they change.
    def __init__(self, trigger: QueueTrigger, loop: LoopThread, *, env: Mapping[str, str] | None = None,  # noqa: PLR0913
                 concurrency: int | None = None, retry_delay: float | None = None,
                 max_dequeue_count: int | None = None, poll_max: float = 1.0, lease_seconds: int = 300) -> None:
        from ..store.azure import queue_client, queue_service_client, storage_settings

        host = host_settings()
        self.trigger = trigger
        self.loop = loop
        self.concurrency = concurrency or max(1, host["batch_size"] + host["new_batch_threshold"])
        self.retry_delay = host["visibility_timeout"] if retry_delay is None else retry_delay
        self.max_dequeue_count = max_dequeue_count or host["max_dequeue_count"]
        self.poll_max = poll_max
        self.lease_seconds = lease_seconds
        self._settings = storage_settings(os.environ if env is None else env, prefix=trigger.connection)
        service = queue_service_client(self._settings)
        self.queue = queue_client(service, trigger.queue_name)
        queue_client(service, f"{trigger.queue_name}-poison")
        self._settlers: tuple[Any, ...] | None = None  # async (queue, poison, credential), opened on the loop
        self._inflight = 0
        self._cond = threading.Condition()
        loop.add_closer(self._close_settlers)
        self.processed = 0
        self.failed = 0
        self.poisoned = 0

    def _settle_clients(self) -> tuple[Any, Any]:
        """Async clients of the queue and its poison queue, on the loop: settling a message costs no thread hop."""
        if self._settlers is None:
            from ..store.azure import async_credential, async_queue_client

            credential = async_credential(self._settings) if self._settings.identity_based else None
            self._settlers = (async_queue_client(self._settings, self.trigger.queue_name, credential=credential),
                              async_queue_client(self._settings, f"{self.trigger.queue_name}-poison",
                                                 credential=credential), credential)
        return self._settlers[0], self._settlers[1]

    async def _close_settlers(self) -> None:
        settlers, self._settlers = self._settlers, None
        for client in settlers or ():
            if client is not None:
                await client.close()

    async def _invoke(self, m: Any) -> None:
        try:
            msg = QueueMessage(  # type: ignore[no-untyped-call]
                id=m.id, body=(m.content or "").encode(), dequeue_count=m.dequeue_count,
                expiration_time=m.expires_on, insertion_time=m.inserted_on, time_next_visible=m.next_visible_on,
                pop_receipt=m.pop_receipt)
            kwargs: dict[str, Any] = {self.trigger.arg: msg}
            if self.trigger.wants_context:
                kwargs["context"] = InvocationContext(self.trigger.name)
            queue, poison = self._settle_clients()
            try:
                await call(self.trigger.fn, kwargs)
            except Exception as exc:
                self.failed += 1
                if (m.dequeue_count or 1) >= self.max_dequeue_count:
                    log.warning("kv-remediate serve: moving message %s to %s-poison after %d attempts (%s)", m.id,
                                self.trigger.queue_name, m.dequeue_count, type(exc).__name__)
                    await poison.send_message(m.content)
                    await queue.delete_message(m.id, m.pop_receipt)
                    self.poisoned += 1
                else:
                    await queue.update_message(m.id, m.pop_receipt, visibility_timeout=int(self.retry_delay))
                return
            await queue.delete_message(m.id, m.pop_receipt)
            self.processed += 1
        except Exception:
            log.exception("kv-remediate serve: settling message %s failed; it reappears after its lease", m.id)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def poll_once(self) -> int:
        """Receive up to the free capacity and start those invocations; returns how many were received."""
        with self._cond:
            free = self.concurrency - self._inflight
        if free <= 0:
            return 0
        messages = list(self.queue.receive_messages(messages_per_page=min(32, free), max_messages=min(32, free),
                                                    visibility_timeout=self.lease_seconds))
        with self._cond:
            self._inflight += len(messages)
        for m in messages:
            self.loop.submit(self._invoke(m))
        return len(messages)

    def _wait_capacity(self, stop: threading.Event) -> None:
        low = max(1, self.concurrency // 2)
        with self._cond:
            while self._inflight >= low and not stop.is_set():
                self._cond.wait(0.1)

    def idle(self) -> bool:
        with self._cond:
            return self._inflight == 0

    def run(self, stop: threading.Event) -> None:
        """Pump until ``stop`` is set: poll with back-off when the queue is empty (10 ms up to ``poll_max``)."""
        delay = 0.01
        while not stop.is_set():
            self._wait_capacity(stop)
            try:
                got = self.poll_once()
            except Exception as exc:
                log.warning("kv-remediate serve: receiving from queue '%s' failed (%s); retrying",
                            self.trigger.queue_name, type(exc).__name__)
                got = 0
            if got:
                delay = 0.01
                continue
            stop.wait(delay)
            delay = min(self.poll_max, delay * 2)

    def drain(self, *, timeout: float = 60.0) -> int:
        """Process until the queue has no message (visible or not) and nothing is in flight (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll_once() == 0:
                if self.idle() and self.queue.get_queue_properties().approximate_message_count == 0:
                    return self.processed
                time.sleep(0.02)
        raise TimeoutError(f"queue '{self.trigger.queue_name}' not drained within {timeout} s")


def run_worker(app: func.FunctionApp, stop: threading.Event, *, loop: LoopThread | None = None,
               **pump_kw: Any) -> list[QueuePump]:
    """Pump every queue trigger of ``app`` in background threads until ``stop`` is set."""
    loop = loop or LoopThread()
    pumps = [QueuePump(t, loop, **pump_kw) for t in queue_triggers(app)]
    for p in pumps:
        threading.Thread(target=p.run, args=(stop,), name=f"kv-remediate-pump-{p.trigger.name}", daemon=True).start()
    return pumps
