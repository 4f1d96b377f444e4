"""Fake token credentials for the bundled emulator: no identity, no network, a token that never expires.

Used by ``--snapshot`` mode and the tests; the emulator accepts any bearer token, so these only exist to
satisfy the SDK's ``BearerTokenCredentialPolicy`` (which refuses to run without a credential).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

TOKEN = "emulator-token"
EXPIRES_ON = 4_102_444_800  # 2100-01-01T00:00:00Z: far enough that azure-core never refreshes it


class FakeCredential:
    """Sync ``TokenCredential``: always returns the same far-future ``AccessToken``."""

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        """The emulator token for any scope (no request is made)."""
        return AccessToken(TOKEN, EXPIRES_ON)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> FakeCredential:
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                 traceback: TracebackType | None = None) -> None:
        self.close()


class AsyncFakeCredential:
    """Async ``AsyncTokenCredential`` twin of :class:`FakeCredential` for the ``.aio`` clients."""

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        """The emulator token for any scope (no request is made)."""
        return AccessToken(TOKEN, EXPIRES_ON)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> AsyncFakeCredential:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self.close()


def _conforms(sync: FakeCredential, aio: AsyncFakeCredential) -> tuple[TokenCredential, AsyncTokenCredential]:
    """Static check (mypy) that the fakes satisfy azure-core's credential protocols."""
    return sync, aio
