"""azure-core plumbing every reader shares (ARM, Microsoft Graph, Log Analytics, Managed HSM): the capped retry
policy, the small JSON pipeline for APIs without a management SDK, and a handle on a transport several clients
share. SDKs are imported inside the functions (cold start)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


READ_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
"""azure-core's idempotent methods plus POST, for POST calls that only read (Graph getByIds, getMemberGroups)."""


def capped_retry_policy(cap_s: float, total: int) -> Any:
    """The SDK's retry policy, honouring Retry-After but never sleeping longer than ``cap_s`` per retry."""
    from azure.core.pipeline.policies import AsyncRetryPolicy

    class CappedRetryPolicy(AsyncRetryPolicy):  # type: ignore[misc,type-arg]
        def get_retry_after(self, response: Any) -> float | None:
            after = super().get_retry_after(response)
            return None if after is None else min(float(after), cap_s)

    # Each kind of failure (status, read, connect) may use the whole budget: under an alert storm ARM throttles
    # in runs, and every write is idempotent, so retrying is always safe; the per-invocation budget bounds it.
    return CappedRetryPolicy(retry_total=total, retry_status=total, retry_read=total, retry_connect=total,
                             retry_backoff_factor=0.2, retry_backoff_max=cap_s)


def json_pipeline(base_url: str, credential: Any, scope: str, *, count: Callable[[Any], None],
                  retry_policy: Any, transport: Any = None, connection_verify: str | bool | None = None) -> Any:
    """A small azure-core pipeline for the JSON APIs without a management SDK (Microsoft Graph, Log Analytics):
    bearer token for ``scope``, retries, request counting, JSON decoding."""
    from azure.core import AsyncPipelineClient
    from azure.core.pipeline.policies import (
        AsyncBearerTokenCredentialPolicy,
        ContentDecodePolicy,
        CustomHookPolicy,
        HeadersPolicy,
        RequestIdPolicy,
        UserAgentPolicy,
    )
    from azure.core.pipeline.transport import AioHttpTransport

    from .. import __version__

    if transport is None:
        transport = AioHttpTransport(**({} if connection_verify is None else {"connection_verify": connection_verify}))
    return AsyncPipelineClient(
        base_url=base_url,
        policies=[RequestIdPolicy(), HeadersPolicy({"Accept": "application/json"}),
                  UserAgentPolicy(f"kv-remediate/{__version__}"), retry_policy,
                  AsyncBearerTokenCredentialPolicy(credential, scope), CustomHookPolicy(raw_request_hook=count),
                  ContentDecodePolicy()],
        transport=transport)


@functools.cache
def shared_transport_class() -> Any:
    """A handle on a transport several clients share: sends through it, never opens or closes it for them
    (azure-core imported lazily, like every SDK here; the class is built once, on first use)."""
    from azure.core.pipeline.transport import AsyncHttpTransport

    class SharedTransport(AsyncHttpTransport):  # type: ignore[misc,type-arg]
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def __aenter__(self) -> Any:
            await self._inner.open()
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def open(self) -> None:
            await self._inner.open()

        async def close(self) -> None:
            return None        # the owner (ArmFacts.close) closes the shared transport once

        async def send(self, request: Any, **kwargs: Any) -> Any:
            return await self._inner.send(request, **kwargs)

        async def sleep(self, duration: float) -> None:
            await self._inner.sleep(duration)

    return SharedTransport
