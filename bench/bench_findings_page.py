"""The findings page (issue 11): ``GET /api/findings`` rendering 1,000 findings from the Table ``findings`` on a
private Azurite (target: ≤ 300 ms server time).

1,000 findings (the demo inputs' real diagnoses, spread over the last 7 days across vaults and principals) are
recorded in the Table; the page is then served by the function app in this process (``serve``'s HTTP server on
loopback, signed in through App Service Authentication's headers) and fetched with ``since=all`` (every one of
the 1,000 listed). Server time is measured around the function host's handling (from the parsed request to the response
object: reading the Table, the grant records, building the view and rendering the HTML); the loopback
round trip (client-side) is shown beside it. Warm: the first request (imports, Jinja2's template compile, the
table clients) is reported separately as cold.

Environment: BENCH_PAGE_FINDINGS (default 1000), BENCH_PAGE_REQUESTS (20).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.azurite import start_azurite

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "remediate" / "demo"
FINDINGS = int(os.environ.get("BENCH_PAGE_FINDINGS", "1000"))
REQUESTS = int(os.environ.get("BENCH_PAGE_REQUESTS", "20"))
TARGET_MS = 300
LOOPBACK_ONLY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "NO_PROXY": "127.0.0.1,localhost", "AZURE_SUBSCRIPTION_IDS": ""}
APPROVER = "0a1b2c3d-0000-4000-8000-0000000a5501"


def _demo_findings() -> list[dict[str, Any]]:
    """The demo inputs' findings, diagnosed by the CLI on the bundled snapshot."""
    out: list[dict[str, Any]] = []
    for path in sorted((DEMO / "inputs").iterdir()):
        run = subprocess.run([sys.executable, "-m", "remediate.cli", "diagnose", "--snapshot",
                              str(DEMO / "tenant.json"), "--output", "json", str(path)],
                             capture_output=True, text=True, check=False, cwd=ROOT,
                             env={**os.environ, **LOOPBACK_ONLY, "PYTHONPATH": str(ROOT)})
        if run.stdout.strip():
            out += json.loads(run.stdout)["findings"]
    return out


def _varied(base: list[dict[str, Any]], i: int) -> dict[str, Any]:
    """Finding ``i``: a demo finding with its vault and principal names varied (distinct rows to filter)."""
    f = json.loads(json.dumps(base[i % len(base)]))
    vault = f["denial"].get("vault") or {}
    if vault.get("name"):
        vault["name"] = f"{vault['name']}-{i % 37}"
    f["denial"]["principal"]["upn"] = f"user{i % 113}@contoso.example"
    return f


def _headers() -> dict[str, str]:
    principal = {"auth_typ": "aad", "role_typ": "roles", "claims": [{"typ": "roles", "val": "KvRemediate.Approve"}]}
    return {"X-MS-CLIENT-PRINCIPAL-ID": APPROVER, "X-MS-CLIENT-PRINCIPAL-NAME": "bench@contoso.example",
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()}


def _timed(server: Any) -> list[float]:
    """Time every request the server's function host handles (routing, the handler, the response), in seconds."""
    spent: list[float] = []
    host = server.function_host
    original = host.handle

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t)

    host.handle = timed
    return spent


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    azurite = start_azurite()
    try:
        _run(azurite.connection_string)
    finally:
        azurite.stop()


def _run(conn: str) -> None:
    os.environ.update({**LOOPBACK_ONLY, "AzureWebJobsStorage": conn, "WEBSITE_AUTH_ENABLED": "True",
                       "KV_REMEDIATE_SNAPSHOT": str(DEMO / "tenant.json")})
    from remediate.app import services
    from remediate.localhost.discovery import load_app
    from remediate.localhost.http import HttpServer

    base = _demo_findings()
    services.reset()
    server = HttpServer(load_app(), port=0).start()
    spent = _timed(server)
    try:
        async def record() -> None:
            store = await services.get().findings()
            now = datetime.now(UTC)
            for i in range(FINDINGS):
                await store.record(_varied(base, i), alert_id=None, invocation_id=None,
                                   when=now - timedelta(minutes=i * 10 * 7 * 24 * 6 // max(FINDINGS, 1) // 6))

        server.loop.submit(record()).result(timeout=600)
        port = int(server.base_url.rsplit(":", 1)[1])
        rows, size, loopback = _fetch_all(port)
        cold, warm = spent[0] * 1000, [x * 1000 for x in spent[1:]]
        print(f"findings page: {rows} findings listed ({size / 1024:.0f} KiB of HTML) from the Table on Azurite; "
              f"server time warm p50 {_percentile(warm, 50):.0f} ms, p95 {_percentile(warm, 95):.0f} ms, "
              f"max {max(warm):.0f} ms over {len(warm)} requests (cold first request {cold:.0f} ms); "
              f"loopback round trip p50 {statistics.median(loopback):.0f} ms (target ≤ {TARGET_MS} ms server time)",
              flush=True)
        _opened(port, spent)
    finally:
        server.stop()
        services.reset()


def _fetch_all(port: int) -> tuple[int, int, list[float]]:
    loopback: list[float] = []
    rows = size = 0
    for _ in range(REQUESTS + 1):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t = time.perf_counter()
        c.request("GET", "/api/findings?since=all", headers={**_headers(), "Host": f"127.0.0.1:{port}"})
        r = c.getresponse()
        body = r.read()
        loopback.append((time.perf_counter() - t) * 1000)
        if r.status != http.client.OK:
            raise RuntimeError(f"GET /api/findings answered {r.status}: {body[:500]!r}")
        rows, size = body.count(b"<tr><td>"), len(body)
        c.close()
    return rows, size, loopback[1:]


def _opened(port: int, spent: list[float]) -> None:
    """One finding opened (evidence tree, change, history) among the 1,000."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/api/findings?since=all", headers={**_headers(), "Host": f"127.0.0.1:{port}"})
    body = c.getresponse().read().decode()
    rid = body.split("/api/findings?since=all&amp;id=", 1)[1].split("#", 1)[0] if "&amp;id=" in body else ""
    before = len(spent)
    for _ in range(5):
        c.request("GET", f"/api/findings?since=all&id={rid}", headers={**_headers(), "Host": f"127.0.0.1:{port}"})
        c.getresponse().read()
    ms = [x * 1000 for x in spent[before:]]
    print(f"findings page with one finding opened among {FINDINGS}: server time p50 {statistics.median(ms):.0f} ms",
          flush=True)


if __name__ == "__main__":
    main()
