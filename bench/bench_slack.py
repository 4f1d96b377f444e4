"""How fast ``POST /api/slack/actions`` answers Slack (which gives up after 3 s): the signature check over the raw
body, the typed click, the approver mapping and one queue write, on `serve`'s HTTP server in this process with a
private Azurite. Sequential signed clicks on one keep-alive connection; p50/p95/p99 and max (target: p99 well under
3 s; the decision itself runs afterwards on the queue worker, outside this budget).

Environment: BENCH_SLACK_CLICKS (default 300).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import time
import urllib.parse
from http import HTTPStatus

from tests.support.azurite import start_azurite

CLICKS = int(os.environ.get("BENCH_SLACK_CLICKS", "300"))
WARM_UP = 10   # the first clicks import the handlers and create the queue client and the queue
SECRET = "bench-slack-signing-secret"
APPROVER = "0d7e3c4b-1111-4222-8333-944455556666"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _click(n: int, response_url: str) -> tuple[bytes, dict[str, str]]:
    from remediate.app.slack_auth import sign

    payload = {"type": "block_actions", "user": {"id": "U0APPROVER", "team_id": "T0TEAM"}, "team": {"id": "T0TEAM"},
               "response_url": response_url,
               "actions": [{"action_id": "kv_remediate_approve", "value": f"bench-{n}", "type": "button"}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = int(time.time())
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(ts),
                  "X-Slack-Signature": sign(SECRET, ts, body)}


def main() -> None:
    from remediate.app import services
    from remediate.localhost.discovery import load_app
    from remediate.localhost.http import HttpServer

    azurite = start_azurite()
    env = {"AzureWebJobsStorage": azurite.connection_string, "KV_REMEDIATE_SLACK_SIGNING_SECRET": SECRET,
           "KV_REMEDIATE_SLACK_APPROVERS": f"U0APPROVER={APPROVER}", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    services.reset()
    server = HttpServer(load_app(), port=0).start()
    try:
        host, port = urllib.parse.urlsplit(server.base_url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        ms: list[float] = []
        for n in range(CLICKS + WARM_UP):
            body, headers = _click(n, "https://hooks.slack.com/actions/T0TEAM/1/bench")
            t = time.perf_counter()
            conn.request("POST", "/api/slack/actions", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != HTTPStatus.OK:
                raise RuntimeError(f"click {n}: HTTP {response.status}")
            if n >= WARM_UP:
                ms.append((time.perf_counter() - t) * 1000)
        print(f"/api/slack/actions (verify, parse, map, enqueue on Azurite), {len(ms)} sequential clicks: "
              f"p50 {_percentile(ms, 50):.1f} ms, p95 {_percentile(ms, 95):.1f} ms, p99 {_percentile(ms, 99):.1f} ms, "
              f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms (Slack's limit: 3000 ms)", flush=True)
    finally:
        server.stop()
        services.reset()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        azurite.stop()


if __name__ == "__main__":
    main()
