"""Where functions run: one asyncio event loop in a daemon thread (as the Python worker runs async functions),
the invocation context handed to functions that ask for one, and the call that awaits or offloads a function."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import azure.functions as func

from .discovery import ROOT


class InvocationContext(func.Context):
    """The invocation context handed to functions that ask for one."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local  # pragma: no cover - not used by the app

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(ROOT)

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class LoopThread:
    """One asyncio event loop in a daemon thread: where async functions run, as in the Python worker."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._thread = threading.Thread(target=self._run, name="kv-remediate-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                                             thread_name_prefix="kv-io"))
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def add_closer(self, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``close()`` on this loop when it stops (async clients must be closed on their loop)."""
        self._closers.append(close)

    def stop(self) -> None:
        """Close the async clients bound to this loop (the runtime's and any added closer's), then stop it."""
        from ..app import services

        rt = services.current()
        if self.loop.is_running():
            for close in [*self._closers, *([rt.aclose] if rt is not None else [])]:
                with contextlib.suppress(Exception):
                    self.submit(close()).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Await an async function, or run a sync one in the loop's executor."""
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    return await asyncio.to_thread(fn, **kwargs)
