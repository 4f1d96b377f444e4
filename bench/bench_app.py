"""The function app under load, on loopback with the real parts (a private Azurite, the snapshot emulator).

1. ``/api/alerts`` latency: ``kv-remediate serve --workers 0`` in its own process, 50 concurrent keep-alive
   clients posting a Log Alerts V2 payload; p50/p95/p99 and requests/s (target: p99 < 200 ms).
2. Worker throughput per process: denials queued on ``denials``, drained by one worker (serve's queue pump
   driving the decorated worker function) against the emulator with no injected latency; denials/s for
   distinct denials (every one claimed, diagnosed, recorded) and for a storm (few distinct tuples, most
   messages only counted on the winner's claim) (target: ≥ 200 denials/s).

The worker lines also give the CPU the worker process and Azurite spent per denial: on a small machine Azurite
competes with the worker for the same cores (in Azure, storage is elsewhere and the host receives and deletes).

Environment: BENCH_APP_REQUESTS (default 5000), BENCH_APP_CLIENTS (50), BENCH_APP_DENIALS (1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path

from tests.support.azurite import start_azurite

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "remediate" / "demo"
REQUESTS = int(os.environ.get("BENCH_APP_REQUESTS", "5000"))
CLIENTS = int(os.environ.get("BENCH_APP_CLIENTS", "50"))
DENIALS = int(os.environ.get("BENCH_APP_DENIALS", "1000"))
LOOPBACK_ONLY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "NO_PROXY": "127.0.0.1,localhost", "AZURE_SUBSCRIPTION_IDS": ""}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BENCH_KEY = "bench-function-key-0123456789"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _client(port: int, body: bytes, count: int, latencies: list[float], failures: list[int]) -> None:
    """One keep-alive HTTP/1.1 client posting ``count`` alerts back to back (a minimal client: no GIL contention
    between 50 client threads, so the numbers are the server's)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /api/alerts?code={BENCH_KEY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(count):
        t = time.perf_counter()
        writer.write(head + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t)
        if status != HTTPStatus.ACCEPTED:
            failures.append(status)
    writer.close()


async def _load(port: int, body: bytes) -> tuple[list[float], list[int], float]:
    # warm up: every process has imported its handlers and opened its queue client (steady state, not cold start)
    await asyncio.gather(*(_client(port, body, 4, [], []) for _ in range(CLIENTS)))
    latencies: list[float] = []
    failures: list[int] = []
    began = time.perf_counter()
    await asyncio.gather(*(_client(port, body, REQUESTS // CLIENTS, latencies, failures) for _ in range(CLIENTS)))
    return latencies, failures, time.perf_counter() - began


def _app_env(conn: str) -> dict[str, str]:
    return {**LOOPBACK_ONLY, "AzureWebJobsStorage": conn, "KV_REMEDIATE_SNAPSHOT": str(DEMO / "tenant.json"),
            "KV_REMEDIATE_FUNCTION_KEY": BENCH_KEY}  # serve requires a key


def bench_alerts(conn: str, processes: int) -> None:
    """p99 of POST /api/alerts at CLIENTS concurrent clients against `serve` (HTTP only) with ``processes``
    Python processes (FUNCTIONS_WORKER_PROCESS_COUNT, as the Functions host runs them)."""
    port = _free_port()
    env = {**os.environ, **_app_env(conn), "PYTHONPATH": str(ROOT), "FUNCTIONS_WORKER_PROCESS_COUNT": str(processes)}
    log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "remediate.cli", "serve", "--port", str(port), "--workers", "0"],
                            env=env, stdout=log, stderr=log, cwd=tempfile.gettempdir())
    body = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/api/health")
                if c.getresponse().status == HTTPStatus.OK:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        latencies, failures, elapsed = asyncio.run(_load(port, body))
        ms = [x * 1000 for x in latencies]
        print(f"/api/alerts on serve ({processes} process(es)), {CLIENTS} concurrent clients, {len(ms)} requests: "
              f"p50 {_percentile(ms, 50):.1f} ms, p95 {_percentile(ms, 95):.1f} ms, p99 {_percentile(ms, 99):.1f} ms, "
              f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms; {len(ms) / elapsed:.0f} req/s; "
              f"non-202: {len(failures)} (target p99 < 200 ms)", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        os.unlink(log.name)


def _messages(distinct: bool) -> list[str]:
    """DENIALS queued denials: distinct tuples (objects × principals × operations), or a storm of 20 tuples."""
    from remediate.app.messages import QueuedDenial, encode
    from remediate.intake import parse_one

    principals = ["f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879", "e989b7d6-d9c3-5448-ab8e-532bf235de37",
                  "473cea9c-3bb5-55f0-b8e0-6f5a2b9ced49", "c7b519a3-3f10-5e2d-b9e8-a5c5948829e4"]
    vaults = ["kv-payments", "kv-legacy", "kv-shared"]
    out = []
    for i in range(DENIALS):
        n = i if distinct else i % 20
        request = {"principal_id": principals[n % len(principals)], "vault": vaults[n % len(vaults)],
                   "operation": "SecretGet", "object": f"secrets/s-{n}"}
        [denial] = parse_one("bench", json.dumps(request).encode()).denials
        out.append(encode(QueuedDenial(denial.with_(source="alert.log_search_v2"), f"bench-alert-{i}")))
    return out


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of ``pid`` (Linux /proc; 0 elsewhere)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _recorded() -> int:
    from remediate.app import services

    return len(await (await services.get().findings()).list(100000))


def bench_worker(conn: str, azurite_pid: int) -> None:
    """Denials/s drained by one worker process (the decorated function via serve's queue pump)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

    from remediate.app import services
    from remediate.app.settings import DENIALS_QUEUE
    from remediate.localhost.discovery import load_app, queue_triggers
    from remediate.localhost.invoke import LoopThread
    from remediate.localhost.pump import QueuePump
    from tests.support.app import clear_storage

    os.environ.update(_app_env(conn))
    queues = QueueServiceClient.from_connection_string(conn)
    for label, distinct in (("distinct denials", True), ("storm, 20 distinct tuples", False)):
        clear_storage(conn)
        services.reset()
        texts = _messages(distinct)
        queue = queues.get_queue_client(DENIALS_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        with ThreadPoolExecutor(10) as pool:  # the SDK pools 10 connections
            list(pool.map(queue.send_message, texts))
        loop = LoopThread()
        pump = QueuePump(queue_triggers(load_app())[0], loop, retry_delay=0)
        services.get().emulator  # noqa: B018 - start the emulator before the clock (once per process in Azure too)
        began, cpu, az_cpu = time.perf_counter(), _cpu_seconds(), _cpu_seconds(azurite_pid)
        processed = pump.drain(timeout=600)
        elapsed = time.perf_counter() - began
        cpu, az_cpu = _cpu_seconds() - cpu, _cpu_seconds(azurite_pid) - az_cpu
        findings = loop.submit(_recorded()).result()
        loop.stop()
        print(f"worker, 1 process, {label}: {processed} denials in {elapsed:.2f} s = {processed / elapsed:.0f} "
              f"denials/s; {findings} findings recorded; failures {pump.failed}; CPU per denial: worker "
              f"{cpu / processed * 1000:.1f} ms, Azurite {az_cpu / processed * 1000:.1f} ms (target ≥ 200/s)",
              flush=True)
        services.reset()


def main() -> None:
    azurite = start_azurite()
    try:
        for processes in (1, 2):
            bench_alerts(azurite.connection_string, processes)
        bench_worker(azurite.connection_string, azurite.process.pid)
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
