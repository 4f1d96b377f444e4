"""Helpers for the function app tests (no tests here): the app's environment on Azurite and the snapshot emulator,
alert payloads rebased onto the demo tenant, a loopback notification receiver, and guards that keep every test
on loopback with fake credentials.

Guards: ``HTTP(S)_PROXY`` point at a closed loopback port with ``NO_PROXY`` for loopback only, so a request to any
other address (Azure, the instance metadata address) fails at once; ``DefaultAzureCredential`` is replaced by
a class that fails the test if anything builds it; ``KV_REMEDIATE_SNAPSHOT`` is always set.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from remediate.app import services
from remediate.app import settings as app_settings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "remediate" / "demo"
VARIANTS = ROOT / "tests" / "fixtures" / "variants"

DEMO_SUB = "946986aa-ba68-5122-92be-d8e38bdbfa86"
APP_ORDERS = "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879"
APP_ORDERS_CLIENT = "3843e054-fd19-573e-be2a-5ce232d8c82c"
APP_SIGNER = "e989b7d6-d9c3-5448-ab8e-532bf235de37"
APP_SIGNER_CLIENT = "a84e6df5-9b9d-5b02-901c-43507c5ef966"
TENANT = "28f841eb-fe15-511b-b0ce-7c31211ef512"
KV_PAYMENTS = f"/subscriptions/{DEMO_SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments"

DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
LOOPBACK_ONLY = {"HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY,
                 "https_proxy": DEAD_PROXY, "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK, "AZURE_SUBSCRIPTION_IDS": ""}

# The fixtures' tenant (variants) → the demo tenant, so their denials meet real vaults and principals.
_REBASE = [("3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11", DEMO_SUB), ("kv-payments-prod", "kv-payments"),
           ("5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e", APP_ORDERS), ("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                                                                  APP_ORDERS_CLIENT),
           ("72f988bf-86f1-41af-91ab-2d7cd011db47", TENANT)]


def rebase(text: str) -> str:
    """A fixture payload with its subscription, vault, principal and tenant replaced by the demo tenant's."""
    for old, new in _REBASE:
        text = re.sub(re.escape(old), new, text, flags=re.IGNORECASE)
    return text


def variant(name: str) -> bytes:
    return rebase((VARIANTS / name).read_text(encoding="utf-8")).encode()


def audit_row(when: str, *, oid: str, appid: str, operation: str, uri: str, status: int = 403,
              vault_id: str = KV_PAYMENTS) -> dict[str, Any]:
    """An AzureDiagnostics AuditEvent row as the Log Analytics query API returns it."""
    name = vault_id.rsplit("/", 1)[-1]
    return {"TimeGenerated": when, "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent",
            "Resource": name.upper(), "ResourceId": vault_id.upper(), "_ResourceId": vault_id.lower(),
            "OperationName": operation, "ResultSignature": "Forbidden" if status == 403 else "OK",
            "httpStatusCode_d": status, "identity_claim_oid_g": oid, "identity_claim_appid_g": appid,
            "identity_claim_idtyp_s": "app", "CallerIPAddress": "203.0.113.9",
            "requestUri_s": f"https://{name}.vault.azure.net{uri}?api-version=7.4",
            "CorrelationId": "0c0c0c0c-0000-4000-8000-000000000001"}


def snapshot_with_rows(tmp_path: Path) -> Path:
    """The demo tenant plus Log Analytics rows around the no-dimensions alert's window (09:45-10:00)."""
    tenant = json.loads((DEMO / "tenant.json").read_text(encoding="utf-8"))
    legacy = KV_PAYMENTS.replace("rg-payments", "rg-legacy").replace("kv-payments", "kv-legacy")
    tenant["log_rows"] = [
        audit_row("2026-11-20T09:50:00Z", oid=APP_SIGNER, appid=APP_SIGNER_CLIENT, operation="KeySign",
                  uri="/keys/release-signing/sign"),
        audit_row("2026-11-20T09:51:00Z", oid=APP_SIGNER, appid=APP_SIGNER_CLIENT, operation="KeySign",
                  uri="/keys/release-signing/sign"),
        audit_row("2026-11-20T09:52:00Z", oid=APP_SIGNER, appid=APP_SIGNER_CLIENT, operation="SecretGet",
                  uri="/secrets/other", vault_id=legacy),   # another vault: not this alert's
        audit_row("2026-11-20T09:53:00Z", oid=APP_SIGNER, appid=APP_SIGNER_CLIENT, operation="SecretGet",
                  uri="/secrets/db-password", status=200),  # not a denial
        audit_row("2026-11-20T08:00:00Z", oid=APP_ORDERS, appid=APP_ORDERS_CLIENT, operation="SecretGet",
                  uri="/secrets/db-password"),             # outside the window
    ]
    path = tmp_path / "tenant-with-rows.json"
    path.write_text(json.dumps(tenant), encoding="utf-8")
    return path


class _Refuse:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test built DefaultAzureCredential: tests must use the snapshot or explicit fakes")


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route any non-loopback request into a closed port and make DefaultAzureCredential fail the test."""
    import azure.identity
    import azure.identity.aio

    for k, v in LOOPBACK_ONLY.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", _Refuse)
    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", _Refuse)


def clear_storage(connection_string: str) -> None:
    """Empty the app's queues and tables so tests do not see each other's claims and findings."""
    queues = QueueServiceClient.from_connection_string(connection_string)
    for name in (app_settings.DENIALS_QUEUE, app_settings.POISON_QUEUE):
        with contextlib.suppress(Exception):
            queues.get_queue_client(name).clear_messages()
    tables = TableServiceClient.from_connection_string(connection_string)
    for name in (app_settings.CLAIMS_TABLE, app_settings.FINDINGS_TABLE, app_settings.GRANTS_TABLE,
                 app_settings.APPROVALS_TABLE):
        table = tables.get_table_client(name)
        with contextlib.suppress(Exception):
            for e in list(table.list_entities(select=["PartitionKey", "RowKey"])):
                table.delete_entity(e["PartitionKey"], e["RowKey"])


@contextlib.contextmanager
def app_environment(monkeypatch: pytest.MonkeyPatch, connection_string: str, snapshot: Path,
                    **settings: str) -> Iterator[None]:
    """The app's settings for one test (storage on Azurite, the snapshot), a fresh runtime before and after."""
    guard_loopback(monkeypatch)
    monkeypatch.setenv(app_settings.STORAGE_CONNECTION, connection_string)
    monkeypatch.setenv(app_settings.SNAPSHOT_SETTING, str(snapshot))
    for name in (app_settings.NOTIFY_SETTING, app_settings.WINDOW_SETTING, app_settings.POLICY_SETTING,
                 app_settings.PUBLIC_URL_SETTING, "WEBSITE_HOSTNAME",
                 "KV_REMEDIATE_WEBHOOK_AUDIENCE", "KV_REMEDIATE_WEBHOOK_TENANT", "KV_REMEDIATE_API_AUDIENCE",
                 "KV_REMEDIATE_API_TENANT", app_settings.SELF_SETTING, "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME"):
        monkeypatch.delenv(name, raising=False)
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    clear_storage(connection_string)
    services.reset()
    try:
        yield
    finally:
        services.reset()


class NotifyReceiver:
    """A loopback HTTP endpoint standing in for a Teams/Slack incoming webhook; keeps the JSON bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "1")
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> NotifyReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def call(url: str, body: bytes | None = None, *, method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP request on loopback; the status and the JSON body (or None)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw) if raw else None
