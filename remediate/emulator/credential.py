"""Fake token credentials for the bundled emulator: no identity, no network, a token that never expires.

Used by ``--snapshot`` mode and the tests; the emulator accepts any bearer token, so these only exist to
satisfy the SDK's ``BearerTokenCredentialPolicy`` (which refuses to run without a credential).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

TOKEN = "emulator-token"
EXPIRES_ON = 4_102_444_800  # 2100-01-01T00:00:00Z: far enough that azure-core never refreshes it


class FakeCredential:
    """Sync ``TokenCredential``: always returns the same far-future ``AccessToken``."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The emulator token for any scope (no request is made)."""
        return AccessToken(TOKEN, EXPIRES_ON)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> FakeCredential:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncFakeCredential:
    """Async ``AsyncTokenCredential`` twin of :class:`FakeCredential` for the ``.aio`` clients."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The emulator token for any scope (no request is made)."""
        return AccessToken(TOKEN, EXPIRES_ON)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> AsyncFakeCredential:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
