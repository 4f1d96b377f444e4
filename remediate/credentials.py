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


def token_identity(token: str) -> tuple[str, str | None] | None:
    """(``oid``, display name) from the claims of an access token our own credential issued, as ``az account show``
    names the signed-in identity; None when the token is not a JWT carrying a GUID ``oid`` (the emulator's).

    The signature is not checked: the token comes from the operator's own credential and names who acts for the
    audit trail (approvals), never what they may do."""
    import base64
    import json
    import re

    parts = token.split(".")
    if len(parts) != 3:  # noqa: PLR2004  header.payload.signature
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", oid):
        return None
    name = next((claims[k] for k in ("name", "upn", "unique_name", "appid") if isinstance(claims.get(k), str)), None)
    return oid.lower(), name
