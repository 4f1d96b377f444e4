"""The Azure Storage adapter: settings, clients, the `denials` queue format, and error translation."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient

from remediate.errors import ConfigError, InputError, StorageError
from remediate.store.azure import (
    DEVELOPMENT_CONNECTION_STRING,
    async_queue_client,
    denial_message,
    parse_denial_message,
    queue_client,
    queue_service_client,
    storage_errors,
    storage_settings,
    table_client,
    table_service_client,
    uses_env_proxy,
)
from tests.support import azurite as azurite_launcher


def enqueue_denials(queue: QueueClient, denials: list[dict[str, Any]], alert_id: str | None) -> int:
    """Put one message per denial on the queue as /api/alerts does (app.http.accept_alert): every message is
    encoded and size-checked before the first is sent, so bad input sends nothing."""
    texts = [denial_message(d, alert_id) for d in denials]
    for text in texts:
        queue.send_message(text)
    return len(texts)


DENIAL = {"source": "alert", "status": 403, "principal": {"object_id": "p1"}, "vault": {"name": "kv"},
          "message": "Caller is not authorized — ünïcode"}


def test_development_storage_expands_to_loopback_endpoints() -> None:
    # given the local-development setting; when read; then it is an explicit 127.0.0.1 connection string
    settings = storage_settings({"KV_REMEDIATE_STORAGE": "UseDevelopmentStorage=true"})
    assert settings.connection_string == DEVELOPMENT_CONNECTION_STRING
    assert "127.0.0.1:10001" in DEVELOPMENT_CONNECTION_STRING and not settings.identity_based


def test_identity_based_settings_follow_functions_conventions() -> None:
    # given only an account name (and a user-assigned identity), written with ':' as some hosts do
    settings = storage_settings({"KV_REMEDIATE_STORAGE:accountName": "stkv", "KV_REMEDIATE_STORAGE__clientId": "c"})
    # then the service URIs are the account's public endpoints and the client id is kept
    assert settings.identity_based
    assert settings.table_service_uri == "https://stkv.table.core.windows.net"
    assert settings.queue_service_uri == "https://stkv.queue.core.windows.net"
    assert settings.client_id == "c"
    # and explicit service URIs win over the account name
    explicit = storage_settings({"X__queueServiceUri": "https://q.example", "X__tableServiceUri": "https://t.example"},
                                prefix="X")
    assert (explicit.table_service_uri, explicit.queue_service_uri) == ("https://t.example", "https://q.example")


ACCOUNT_URL = "https://stkv.table.core.windows.net"


@pytest.mark.parametrize(("env", "url", "expected"), [
    ({}, ACCOUNT_URL, False),
    ({"HTTPS_PROXY": "http://proxy.corp:3128"}, ACCOUNT_URL, True),
    ({"https_proxy": "http://proxy.corp:3128", "NO_PROXY": ".core.windows.net"}, ACCOUNT_URL, False),
    ({"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "127.0.0.1,localhost"}, "http://127.0.0.1:10002", False),
], ids=["no proxy", "proxy", "bypassed by suffix", "loopback bypassed"])
def test_env_proxy_is_honoured_only_where_it_applies(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                     url: str, expected: bool) -> None:
    # given proxy variables (or none) in the environment
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # when deciding whether the async clients must read them; then only a proxy that applies to the URL counts
    assert uses_env_proxy(url) is expected


async def test_async_queue_client_follows_identity_settings() -> None:
    # given identity-based settings (an account name) and the app's async credential (a fake: nothing is called)
    from remediate.emulator.credential import AsyncFakeCredential

    settings = storage_settings({"AzureWebJobsStorage__accountName": "stkv"}, prefix="AzureWebJobsStorage")
    # when the pump's async queue client is built; then it addresses the account's queue endpoint
    client = async_queue_client(settings, "denials", credential=AsyncFakeCredential())
    assert client.url == "https://stkv.queue.core.windows.net/denials"
    await client.close()
    # and without a credential the error names the settings to set, before any call
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__accountName"):
        async_queue_client(settings, "denials")


def test_missing_or_bad_settings_name_the_setting() -> None:
    # given no settings / a value that is no connection string; then the error names the setting and the fix
    with pytest.raises(ConfigError, match=r"KV_REMEDIATE_STORAGE__accountName"):
        storage_settings({})
    with pytest.raises(ConfigError, match="does not look like a storage connection string"):
        storage_settings({"KV_REMEDIATE_STORAGE": "not a connection string"})


def test_importing_the_adapter_does_not_import_azure_identity() -> None:
    # given a fresh interpreter; when the store modules are imported; then azure.identity is not loaded
    code = ("import sys, remediate.store.azure, remediate.store.claims, remediate.store.grants, "
            "remediate.store.findings; print('azure.identity' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_clients_from_settings_create_tables_and_queues_idempotently(azurite: str) -> None:
    # given settings with Azurite's connection string
    settings = storage_settings({"KV_REMEDIATE_STORAGE": azurite})
    tables, queues = table_service_client(settings), queue_service_client(settings)
    name = "t" + uuid.uuid4().hex[:10]
    # when the table and queue are requested twice (as two instances starting would)
    for _ in range(2):
        table = table_client(tables, name)
        queue = queue_client(queues, name)
    # then both exist and work
    table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert table.get_entity("p", "r")["RowKey"] == "r"
    assert queue.get_queue_properties().name == name
    tables.delete_table(name)
    queue.delete_queue()


def test_enqueued_denials_are_base64_json_the_queue_trigger_can_read(queue_service: QueueServiceClient,
                                                                     azurite: str) -> None:
    # given the denials queue built by the adapter
    name = "denials" + uuid.uuid4().hex[:8]
    queue = queue_client(queue_service, name)
    # when two denials of one alert are enqueued
    assert enqueue_denials(queue, [DENIAL, {**DENIAL, "status": 401}], "alert-7") == 2
    # then the raw messages are base64 (what the Functions host decodes) of our JSON format
    raw = QueueClient.from_connection_string(azurite, name)  # no decode policy: the bytes as stored
    texts = [m.content for m in raw.receive_messages(messages_per_page=32)]
    assert len(texts) == 2
    decoded = [base64.b64decode(t).decode() for t in texts]
    parsed = [parse_denial_message(d) for d in decoded]
    assert sorted(p[0]["status"] for p in parsed) == [401, 403]
    assert {p[1] for p in parsed} == {"alert-7"}
    assert parsed[0][0]["message"] == DENIAL["message"]
    assert json.loads(decoded[0])["schema"] == "kv-remediate/queued-denial@1"
    queue.delete_queue()


def test_oversized_denial_sends_nothing(queue_service: QueueServiceClient) -> None:
    # given a batch whose second denial is over the queue's message size
    queue = queue_client(queue_service, "big" + uuid.uuid4().hex[:8])
    # when enqueued; then it is refused as input and nothing was sent
    with pytest.raises(InputError) as info:
        enqueue_denials(queue, [DENIAL, {**DENIAL, "message": "x" * 60_000}], "alert-8")
    assert info.value.code == "DENIAL_TOO_LARGE"
    assert queue.get_queue_properties().approximate_message_count == 0
    queue.delete_queue()


def test_bad_queue_messages_are_input_errors() -> None:
    # given messages that are not ours; then each is a BAD_MESSAGE input error
    for text in ("not json", "[]", json.dumps({"schema": "other", "denial": {}})):
        with pytest.raises(InputError) as info:
            parse_denial_message(text)
        assert info.value.code == "BAD_MESSAGE"


def test_unreachable_storage_becomes_a_storage_error_that_says_what_to_do() -> None:
    # given a connection string pointing at a closed loopback port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = DEVELOPMENT_CONNECTION_STRING.replace("127.0.0.1:10002", f"127.0.0.1:{port}")
    service = TableServiceClient.from_connection_string(conn, retry_total=0)
    # when creating a table; then the SDK error is translated, chained, and actionable
    with pytest.raises(StorageError) as info:
        table_client(service, "claims")
    message = str(info.value)
    assert "creating the table on table 'claims'" in message and "Azurite" in message
    assert info.value.__cause__ is not None and info.value.exit_code == 3


def test_http_errors_are_translated_with_status_and_code(table_service: TableServiceClient) -> None:
    # given a table that does not exist; when an entity is read through the adapter's translation
    missing = table_service.get_table_client("nosuch" + uuid.uuid4().hex[:8])
    with pytest.raises(StorageError) as info, storage_errors("reading a claim", "table 'nosuch'"):
        missing.get_entity("p", "r")
    # then the message names the action, the target and the HTTP status
    assert "reading a claim on table 'nosuch' failed with HTTP 404" in str(info.value)


def test_missing_azurite_is_an_error_that_says_to_run_make_test(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    # given no Azurite install; when the launcher is asked to start it; then it fails (never skips) naming the fix
    monkeypatch.setattr(azurite_launcher, "AZURITE_BIN", tmp_path / "node_modules" / ".bin" / "azurite")
    with pytest.raises(azurite_launcher.AzuriteError, match="run `make test`"):
        azurite_launcher.start_azurite()
