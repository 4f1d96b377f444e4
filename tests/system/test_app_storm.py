"""Alert storm across instances: 1,000 identical alerts posted concurrently to `kv-remediate serve`, drained by 4
worker processes sharing the Azurite queue and the `claims` table → one diagnosis, 1,000 occurrences, nothing
lost."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from remediate.app import settings as app_settings
from remediate.intake import parse_one
from remediate.store.claims import key_hash
from tests.support.app import DEMO, LOOPBACK_ONLY, ROOT, call, clear_storage

ALERTS = 1000
CLIENTS = 50
WORKERS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(azurite: str, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """`kv-remediate serve --workers 4` as a subprocess on the demo snapshot; its base URL, log file and the
    function key it generated and printed (no key given: serve makes one, it never runs open)."""
    clear_storage(azurite)
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, **LOOPBACK_ONLY, app_settings.STORAGE_CONNECTION: azurite,
           app_settings.SNAPSHOT_SETTING: str(DEMO / "tenant.json"), "PYTHONPATH": str(ROOT)}
    env.pop("KV_REMEDIATE_FUNCTION_KEY", None)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "remediate.cli", "serve", "--port", str(port),
                                 "--workers", str(WORKERS)], cwd=str(tmp_path), env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if call(base + "/api/health", method="GET")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        printed = re.search(r"generated function key .*: (\S+)$", log.read_text(), re.MULTILINE)
        assert printed, log.read_text()
        yield base, log, printed.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_storm_of_identical_alerts_is_one_diagnosis_with_every_occurrence_counted(
        served: tuple[str, Path, str], azurite: str) -> None:
    base, log, key = served
    # given one alert (one denial) that fires 1,000 times
    body = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()
    [denial] = parse_one("alert", body).denials
    digest = key_hash(denial.identity_key())

    # when 50 clients post the copies concurrently
    def post(_: int) -> tuple[int, Any]:
        return call(base + "/api/alerts", body, headers={"Content-Type": "application/json", "x-functions-key": key})

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(post, range(ALERTS)))
    # then every copy is accepted
    assert answers == [(202, {"accepted": 1})] * ALERTS

    # when the 4 worker processes drain the queue
    tables = TableServiceClient.from_connection_string(azurite)
    claims = tables.get_table_client(app_settings.CLAIMS_TABLE)
    queues = QueueServiceClient.from_connection_string(azurite)
    queue = queues.get_queue_client(app_settings.DENIALS_QUEUE)
    deadline = time.monotonic() + 90
    occurrences = 0
    while time.monotonic() < deadline:
        try:
            occurrences = int(claims.get_entity(digest[:2], digest)["occurrences"])
        except Exception:
            occurrences = 0
        if occurrences >= ALERTS and queue.get_queue_properties().approximate_message_count == 0:
            break
        time.sleep(0.2)

    # then the tuple was claimed once and counted 1,000 times, diagnosed once, and nothing is left or poisoned
    assert occurrences == ALERTS
    assert queue.get_queue_properties().approximate_message_count == 0
    assert queues.get_queue_client(app_settings.POISON_QUEUE).get_queue_properties().approximate_message_count == 0
    records = list(tables.get_table_client(app_settings.FINDINGS_TABLE).list_entities())
    assert [(r["cause"], r["alert_id"]) for r in records] == [("MISSING_ROLE_ASSIGNMENT", denial.alert_id)]
    text = log.read_text(errors="replace")
    assert text.count("kv-remediate finding ") == 1
    assert "Traceback" not in text
