"""Azure Storage adapter: Table/Queue clients from app settings, the `denials` queue format, SDK errors → domain errors.

Settings follow the Functions host's conventions for a connection named ``prefix`` (default
``KV_REMEDIATE_STORAGE``), so the queue trigger and this code read the same settings:

- ``<prefix>`` holding a connection string (``UseDevelopmentStorage=true`` for Azurite on its default ports, or an
  explicit string with endpoints), used locally and in tests;
- identity-based: ``<prefix>__accountName``, or ``<prefix>__tableServiceUri`` / ``<prefix>__queueServiceUri``,
  optionally ``<prefix>__clientId`` for a user-assigned identity. The credential (``DefaultAzureCredential``) is
  imported and built lazily inside :func:`_credential`, never at import time (cold start, and tests never build one).

Every SDK exception that leaves this package is translated by :func:`storage_errors` into
:class:`~remediate.errors.StorageError` (``raise ... from exc``) with what was tried, on what, and what to do next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..errors import ConfigError, InputError, StorageError, clip

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables import TableClient, TableServiceClient
    from azure.data.tables.aio import TableClient as AsyncTableClient
    from azure.storage.queue import QueueClient, QueueServiceClient
    from azure.storage.queue.aio import QueueClient as AsyncQueueClient

DEFAULT_PREFIX = "KV_REMEDIATE_STORAGE"
CLAIMS_TABLE = "claims"
FINDINGS_TABLE = "findings"
GRANTS_TABLE = "grants"
DENIALS_QUEUE = "denials"
DENIAL_MESSAGE_SCHEMA = "kv-remediate/queued-denial@1"

# Queue messages are at most 64 KiB; base64 inflates by 4/3, so the JSON text must stay under 48 KiB.
MAX_MESSAGE_TEXT = 48 * 1024

_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={_DEV_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


@dataclass(frozen=True)
class StorageSettings:
    """Where storage lives: a connection string, or service URIs reached with the app's identity."""

    setting: str
    connection_string: str | None = None
    table_service_uri: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None

    def describe(self) -> str:
        """Where we connect, without secrets (for messages and health)."""
        if self.connection_string is not None:
            return f"the connection string in setting {self.setting}"
        return f"{self.table_service_uri or self.queue_service_uri} (identity-based, settings {self.setting}__*)"


def _lookup(env: Mapping[str, str], name: str) -> str | None:
    """App settings are case-insensitive on Windows hosts and ``__`` may be written ``:``; accept both."""
    for candidate in (name, name.replace("__", ":")):
        value = env.get(candidate)
        if value:
            return value.strip()
    lowered = {k.lower(): v for k, v in env.items()}
    value = lowered.get(name.lower())
    return value.strip() if value else None


def storage_settings(env: Mapping[str, str] | None = None, prefix: str = DEFAULT_PREFIX) -> StorageSettings:
    """Read the storage connection named ``prefix`` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    conn = _lookup(env, prefix)
    if conn:
        if conn.lower().replace(" ", "") == "usedevelopmentstorage=true":
            conn = DEVELOPMENT_CONNECTION_STRING
        if "=" not in conn:
            raise ConfigError(f"setting {prefix} does not look like a storage connection string; set it to "
                              "'UseDevelopmentStorage=true', an account connection string, or use "
                              f"{prefix}__accountName for an identity-based connection")
        return StorageSettings(setting=prefix, connection_string=conn)
    account = _lookup(env, f"{prefix}__accountName")
    table_uri = _lookup(env, f"{prefix}__tableServiceUri")
    queue_uri = _lookup(env, f"{prefix}__queueServiceUri")
    if account:
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
    if not (table_uri or queue_uri):
        raise ConfigError(f"no storage connection configured: set {prefix} to a connection string "
                          f"('UseDevelopmentStorage=true' for Azurite) or {prefix}__accountName "
                          f"(or {prefix}__tableServiceUri and {prefix}__queueServiceUri) for the app's identity")
    return StorageSettings(setting=prefix, table_service_uri=table_uri, queue_service_uri=queue_uri,
                           client_id=_lookup(env, f"{prefix}__clientId"))


def _credential(settings: StorageSettings) -> TokenCredential:
    """The app's identity; imported here so nothing builds (or imports) azure.identity before it is needed."""
    from ..credentials import default_credential

    return default_credential(settings.client_id)


def async_credential(settings: StorageSettings) -> AsyncTokenCredential:
    """The app's identity for the async clients (bound to the event loop that uses it; close it there)."""
    from ..credentials import async_default_credential

    return async_default_credential(settings.client_id)


STORAGE_SETTINGS = "AzureWebJobsStorage (the function app) or KV_REMEDIATE_STORAGE (the CLI)"
"""The settings that name the storage account, for advice (the message says which endpoint it reached for)."""


def _api_version_refused(exc: HttpResponseError) -> bool:
    """Azurite answering a storage SDK newer than itself: 400 InvalidHeaderValue naming the API version."""
    text = str(exc).lower()
    return "api version" in text and ("not supported" in text or "azurite" in text)


def storage_failure(action: str, target: str, exc: BaseException) -> StorageError:
    """A storage SDK exception as a StorageError whose advice fits the cause (never cut mid-word)."""
    why = _short(exc)
    if isinstance(exc, ClientAuthenticationError):
        return StorageError(
            f"{action} on {target} was refused: our credentials were not accepted ({why}). Check the account key in "
            f"the connection string ({STORAGE_SETTINGS}), or grant the app's identity 'Storage Table Data "
            "Contributor' and 'Storage Queue Data Contributor' on the account")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StorageError(
            f"{action} on {target} failed: the storage endpoint could not be reached ({why}). Is storage running "
            f"there? {STORAGE_SETTINGS} points at it: start the storage account's emulator (Azurite) there, or "
            "correct the setting")
    if isinstance(exc, HttpResponseError):
        return _http_failure(action, target, exc, why)
    return StorageError(f"{action} on {target} failed ({why})")


def _http_failure(action: str, target: str, exc: HttpResponseError, why: str) -> StorageError:
    """An HTTP answer from storage as a StorageError whose advice fits its status and code."""
    status = exc.status_code if exc.status_code is not None else "no status"
    code = getattr(exc, "error_code", None) or "unknown error code"
    head = f"{action} on {target} failed with HTTP {status} ({code}): {why}"
    if _api_version_refused(exc):
        advice = (f"{action} on {target} was refused by Azurite: it does not support the API version of this "
                  "storage SDK. Start Azurite with --skipApiVersionCheck (as `make test` does), or upgrade it (npm "
                  "install azurite@latest)")
    elif status == HTTPStatus.FORBIDDEN:
        advice = (f"{head}. The account refused this identity or this network: grant the app's identity 'Storage "
                  "Table Data Contributor' and 'Storage Queue Data Contributor', or allow this network in the "
                  "account's firewall")
    elif code in ("TableNotFound", "QueueNotFound", "ResourceNotFound") or status == HTTPStatus.NOT_FOUND:
        advice = (f"{head}. The table or queue does not exist: deploy infra/ (it creates them) or check the account "
                  f"{STORAGE_SETTINGS} names")
    elif isinstance(status, int) and status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        advice = (f"{head}. The storage service failed or is busy: retry; if it persists, check the storage "
                  "account's health")
    else:
        advice = f"{head}. Check the request and the account's configuration; retry once it is fixed"
    return StorageError(advice)


def storage_cause(exc: BaseException) -> str:
    """Why storage could not be used and what to do, without the endpoint or the exception's text (for the
    anonymous /api/health, which names settings but never their values)."""
    if isinstance(exc, ClientAuthenticationError):
        return ("the account did not accept our credentials: check the account key in the connection string, or the "
                "identity's 'Storage Table Data Contributor' and 'Storage Queue Data Contributor' roles")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return "the storage endpoint did not answer: is storage (or Azurite) running where the setting points?"
    if isinstance(exc, HttpResponseError):
        if _api_version_refused(exc):
            return ("Azurite does not support this storage SDK's API version: start it with --skipApiVersionCheck or "
                    "upgrade it (npm install azurite@latest)")
        if exc.status_code == HTTPStatus.FORBIDDEN:
            return ("the account refused this identity or this network (HTTP 403): check the identity's data roles "
                    "and the account's firewall")
        return f"storage answered HTTP {exc.status_code} ({getattr(exc, 'error_code', None) or 'no error code'})"
    return f"storage could not be used ({type(exc).__name__})"


@contextmanager
def storage_errors(action: str, target: str) -> Iterator[None]:
    """Translate Azure SDK exceptions raised inside the block into :class:`StorageError` (``from exc``)."""
    try:
        yield
    except (ClientAuthenticationError, ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
        raise storage_failure(action, target, exc) from exc


def _short(exc: BaseException) -> str:
    return clip(str(exc)) or type(exc).__name__


def target_of(client: Any, what: str) -> str:
    """``what`` (e.g. "table 'grants'") with the endpoint its client talks to, for the error's "where"."""
    url = str(getattr(client, "url", "") or "")
    return f"{what} at {url.split('?', 1)[0]}" if url else what


def table_service_client(settings: StorageSettings, **kw: Any) -> TableServiceClient:
    """A Table service client for ``settings`` (``kw``: azure-core options, e.g. ``retry_total``, timeouts)."""
    from azure.data.tables import TableServiceClient

    if settings.connection_string is not None:
        try:
            return TableServiceClient.from_connection_string(settings.connection_string, **kw)
        except ValueError as exc:
            raise ConfigError(f"setting {settings.setting}: unusable connection string ({exc})") from exc
    if not settings.table_service_uri:
        raise ConfigError(f"set {settings.setting}__tableServiceUri or {settings.setting}__accountName")
    return TableServiceClient(endpoint=settings.table_service_uri, credential=_credential(settings), **kw)


def _service_url(settings: StorageSettings, service: str) -> str:
    """The ``table`` or ``queue`` endpoint that ``settings`` name (for the proxy decision below)."""
    if settings.connection_string is None:
        return (settings.table_service_uri if service == "table" else settings.queue_service_uri) or ""
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (part.partition("=") for part in settings.connection_string.split(";")) if v}
    return fields.get(f"{service}endpoint") or (
        f"{fields.get('defaultendpointsprotocol', 'https')}://{fields.get('accountname', '')}.{service}."
        f"{fields.get('endpointsuffix', 'core.windows.net')}")


def uses_env_proxy(url: str) -> bool:
    """Whether the environment configures a proxy that ``url`` does not bypass (``NO_PROXY``).

    Asked to honour the environment, aiohttp re-reads the proxy variables and ~/.netrc in a worker thread on every
    request; the async clients decide once here instead, so the worker's storage calls stay on the event loop.
    """
    import urllib.request
    from urllib.parse import urlsplit

    proxies = urllib.request.getproxies()
    if not any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return False
    return not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


async def async_table_client(settings: StorageSettings, name: str, *,
                             credential: AsyncTokenCredential | None = None) -> AsyncTableClient:
    """An async client of table ``name`` (the worker's hot path: no thread hop per call), creating the table
    when missing. Identity-based settings need ``credential`` (see :func:`async_credential`)."""
    from azure.data.tables.aio import TableClient as AsyncTableClient

    env = uses_env_proxy(_service_url(settings, "table"))
    try:
        if settings.connection_string is not None:
            client = AsyncTableClient.from_connection_string(settings.connection_string, table_name=name,
                                                             use_env_settings=env)
        elif settings.table_service_uri and credential is not None:
            client = AsyncTableClient(endpoint=settings.table_service_uri, table_name=name, credential=credential,
                                      use_env_settings=env)
        else:
            raise ConfigError(f"set {settings.setting}__tableServiceUri or {settings.setting}__accountName")
    except ValueError as exc:
        raise ConfigError(f"setting {settings.setting}: unusable connection string ({exc})") from exc
    try:
        with storage_errors("creating the table", target_of(client, f"table '{name}'")):
            try:
                await client.create_table()
            except ResourceExistsError:
                pass
    except BaseException:
        await client.close()
        raise
    return client


def queue_service_client(settings: StorageSettings, **kw: Any) -> QueueServiceClient:
    """A Queue service client for ``settings`` (messages base64 encoded, as the Functions queue trigger expects;
    ``kw``: azure-core options, e.g. ``retry_total``, timeouts)."""
    from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    policies: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(),
                                "message_decode_policy": TextBase64DecodePolicy(), **kw}
    if settings.connection_string is not None:
        try:
            return QueueServiceClient.from_connection_string(settings.connection_string, **policies)
        except ValueError as exc:
            raise ConfigError(f"setting {settings.setting}: unusable connection string ({exc})") from exc
    if not settings.queue_service_uri:
        raise ConfigError(f"set {settings.setting}__queueServiceUri or {settings.setting}__accountName")
    return QueueServiceClient(account_url=settings.queue_service_uri, credential=_credential(settings), **policies)


def async_queue_client(settings: StorageSettings, name: str, *,
                       credential: AsyncTokenCredential | None = None) -> AsyncQueueClient:
    """An async client of the existing queue ``name`` (base64 text messages, as the Functions trigger expects)."""
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient as AsyncQueueClient

    policies: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(),
                                "message_decode_policy": TextBase64DecodePolicy(),
                                "use_env_settings": uses_env_proxy(_service_url(settings, "queue"))}
    try:
        if settings.connection_string is not None:
            return AsyncQueueClient.from_connection_string(settings.connection_string, name, **policies)
    except ValueError as exc:
        raise ConfigError(f"setting {settings.setting}: unusable connection string ({exc})") from exc
    if not settings.queue_service_uri or credential is None:
        raise ConfigError(f"set {settings.setting}__queueServiceUri or {settings.setting}__accountName")
    return AsyncQueueClient(settings.queue_service_uri, name, credential=credential, **policies)


def table_client(service: TableServiceClient, name: str, *, create: bool = True) -> TableClient:
    """The client of table ``name``, creating the table when missing (idempotent, safe across instances)."""
    with storage_errors("creating the table", target_of(service, f"table '{name}'")):
        if create:
            try:
                service.create_table(name)
            except ResourceExistsError:
                pass
        return service.get_table_client(name)


def queue_client(service: QueueServiceClient, name: str = DENIALS_QUEUE, *, create: bool = True) -> QueueClient:
    """The client of queue ``name`` (base64 text messages), creating the queue when missing."""
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    client = service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                      message_decode_policy=TextBase64DecodePolicy())
    if create:
        with storage_errors("creating the queue", target_of(service, f"queue '{name}'")):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
    return client


def denial_message(denial: Mapping[str, Any], alert_id: str | None, *, now: datetime | None = None) -> str:
    """The JSON text of one `denials` queue message (schema ``kv-remediate/queued-denial@1``)."""
    body = {"schema": DENIAL_MESSAGE_SCHEMA, "alert_id": alert_id,
            "enqueued_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "denial": dict(denial)}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode()) > MAX_MESSAGE_TEXT:
        raise InputError(f"alert {alert_id or '(no id)'}",
                         f"one denial is {len(text.encode())} bytes as JSON, over the queue's {MAX_MESSAGE_TEXT} "
                         "byte limit; shorten its message text", code="DENIAL_TOO_LARGE")
    return text


def parse_denial_message(text: str | bytes) -> tuple[dict[str, Any], str | None]:
    """Read a `denials` queue message (as the trigger hands it over, already base64-decoded) → (denial, alert_id)."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("queue message", f"not JSON ({exc})", code="BAD_MESSAGE") from exc
    if not isinstance(body, dict) or body.get("schema") != DENIAL_MESSAGE_SCHEMA or not isinstance(
            body.get("denial"), dict):
        raise InputError("queue message", f"not a {DENIAL_MESSAGE_SCHEMA} message (needs 'schema' and a 'denial' "
                         "object)", code="BAD_MESSAGE")
    alert_id = body.get("alert_id")
    return body["denial"], alert_id if isinstance(alert_id, str) else None
