"""The app's Azure identity (``DefaultAzureCredential``), built in one place for every client that needs it.

azure.identity is imported inside the functions, never at module level: importing it costs cold-start time and
most invocations (snapshot, storage by connection string) never need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential


def default_credential(client_id: str | None = None) -> TokenCredential:
    """The sync identity; ``client_id`` picks a user-assigned managed identity (else the library's default,
    which reads ``AZURE_CLIENT_ID``)."""
    from azure.identity import DefaultAzureCredential

    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()


def async_default_credential(client_id: str | None = None) -> AsyncTokenCredential:
    """The async identity (bound to the event loop that uses it; close it there); ``client_id`` as above."""
    from azure.identity.aio import DefaultAzureCredential

    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()
