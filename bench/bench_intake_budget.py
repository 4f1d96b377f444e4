"""Intake's time budget on adversarial bodies at the 4 MiB body limit (target: <= 50 ms per 4 MiB, linear).

Each case is a body built to make one parser family work hard: blank lines and spaces for line-anchored
patterns, repeated ``"error":`` and partial GUIDs for the body and id scanners, deep and wide JSON, long lines,
many ``ResultDescription`` rows, many ``---`` blocks, many alert dimensions. Every case is timed at 1, 2 and
4 MiB (best of a few runs) through ``parse_one`` with the default caps: a case may end in ``InputError`` /
``TooLargeError`` (that is the point of a cap), but it must end quickly and in time linear in its size.
``json.loads`` alone on the same body is printed beside it: that part is the standard library's floor.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from remediate.errors import InputError
from remediate.intake import parse_one

MIB = 1024 * 1024
SIZES = (1, 2, 4)
RUNS = 3
TARGET_MS = 50.0
# Below this many ms the smallest input's time is noise: no growth ratio is printed against it.
MIN_BASE_MS = 0.05
GUID = "3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11"
RID = f"/subscriptions/{GUID}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"


def _fill(unit: str, size: int, head: str = "", tail: str = "") -> bytes:
    """``head`` + ``unit`` repeated to ``size`` bytes + ``tail``."""
    n = max(1, (size - len(head) - len(tail)) // max(1, len(unit)))
    return (head + unit * n + tail).encode()


def _json_list(item: object, size: int) -> bytes:
    one = json.dumps(item)
    n = max(1, size // (len(one) + 1))
    return ("[" + ",".join([one] * n) + "]").encode()


def cases() -> dict[str, Callable[[int], bytes]]:
    """Body builders by name: each takes a size in bytes."""
    return {
        "newlines": lambda n: _fill("\n", n, "x"),
        "newlines after error text": lambda n: _fill("\n", n, "Status: 403 (Forbidden)\nMessage: denied\n"),
        "spaces": lambda n: _fill(" ", n, "Code: Forbidden"),
        "spaces and tabs lines": lambda n: _fill(" \t \n", n, "Caller: appid=x\n"),
        "repeated Message: lines": lambda n: _fill("Message: x\n", n, "Status: 403\n"),
        "repeated Code: lines": lambda n: _fill("  Code: Forbidden\n", n),
        "repeated (Code) lines": lambda n: _fill("(Forbidden) x\n", n),
        "repeated at x.js lines": lambda n: _fill("   at aaaaaaaaaaaaaaaaaaaaaaaaa\n", n, "RestError\n"),
        'repeated "error":': lambda n: _fill('{"error":', n),
        'repeated {"error": {}}': lambda n: _fill('{"error": {}} ', n, "log line "),
        "distinct error bodies": lambda n: "".join(
            json.dumps({"error": {"code": "Forbidden", "message": f"m{i}"}}) + "\n"
            for i in range(n // 50)).encode(),
        "escaped error bodies": lambda n: _fill('{\\"error\\": {\\"code\\": \\"Forbidden\\"', n),
        "repeated Caller:": lambda n: _fill("Caller: ", n, "Status: 403\n"),
        "repeated Caller: appid=": lambda n: _fill("Caller: appid=;", n, "Status: 403\n"),
        "partial GUIDs": lambda n: _fill("3f1c2b7a-5d44-4e8b-9c1e-", n, "Status: 403\noid="),
        "repeated Resource ids": lambda n: _fill(f"Resource: '{RID}/secrets/", n, "Status: 403\n"),
        "repeated /subscriptions/": lambda n: _fill("/subscriptions/", n, "Status: 403\n"),
        "one long line": lambda n: _fill("a", n, "Status: 403 "),
        "long line of backslashes": lambda n: _fill("\\", n, 'Status: 403 Message="'),
        "markdown escapes": lambda n: _fill("\\(", n, "ERROR: (Forbidden) "),
        "quote and box lines": lambda n: _fill("> │ \n", n, "> Status: 403\n"),
        "--- blocks": lambda n: _fill("x\n---\n", n),
        "code fences": lambda n: _fill("```\n", n, "Status: 403\n"),
        "deep JSON arrays": lambda n: _fill("[", n),
        "deep JSON objects": lambda n: _fill('{"a":', n),
        "wide JSON ints": lambda n: _fill("0,", n, "[", "0]"),
        "wide JSON empty objects": lambda n: _fill("{},", n, "[", "{}]"),
        "JSON lines of {}": lambda n: _fill("{}\n", n),
        "records not Key Vault": lambda n: _json_list({"operationName": "x", "category": "y"}, n),
        "records with ResultDescription": lambda n: _json_list(
            {"operationName": "SecretGet", "resultSignature": "Forbidden", "httpStatusCode_d": 403,
             "ResultDescription": "Caller: appid=;" * 20}, n),
        "distinct denials": lambda n: "\n".join(
            json.dumps({"operationName": "SecretGet", "httpStatusCode_d": 403, "resourceId": RID,
                        "identity_claim_oid_g": f"{i:08x}-5d44-4e8b-9c1e-2a6f0d9b8e11"})
            for i in range(n // 190)).encode(),
        "alert with many dimensions": lambda n: json.dumps({
            "schemaId": "azureMonitorCommonAlertSchema",
            "data": {"essentials": {"alertTargetIDs": [RID]}, "alertContext": {
                "conditionType": "LogQueryCriteria",
                "condition": {"allOf": [{"searchQuery": "AZKVAuditLogs", "dimensions": [
                    {"name": f"d{i}", "value": "x"} for i in range(n // 30)]}]}}}}).encode(),
        "alert with a long query": lambda n: json.dumps({
            "schemaId": "azureMonitorCommonAlertSchema",
            "data": {"essentials": {"alertTargetIDs": [RID]}, "alertContext": {
                "conditionType": "LogQueryCriteria",
                "condition": {"allOf": [{"searchQuery": "let a=1;" * (n // 8), "dimensions": []}]}}}}).encode(),
        "query result rows": lambda n: json.dumps({"tables": [{"name": "t", "columns": [{"name": "a"}],
                                                               "rows": [["x"]] * (n // 7)}]}).encode(),
    }


def _time(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000.0


def _intake(body: bytes) -> str:
    try:
        r = parse_one("body", body)
    except InputError as exc:
        return exc.code
    return f"{len(r.denials)} denials"


def _json_floor(body: bytes) -> float:
    def load() -> None:
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            pass
    return _time(load)


async def _longest_loop_block(bodies: list[bytes]) -> float:
    """The event loop's longest stall (ms) while the app parses ``bodies`` as its routes do (in a worker thread):
    a 1 ms ticker runs beside the parses and the largest gap over its own sleep is the block."""
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    task = asyncio.create_task(ticker())
    for body in bodies:
        await asyncio.to_thread(_intake, body)
    done.set()
    await task
    return worst * 1000.0


def main() -> None:
    print(f"intake on adversarial bodies: best of {RUNS}, ms at {', '.join(f'{s} MiB' for s in SIZES)} "
          f"(target <= {TARGET_MS:.0f} ms at 4 MiB); json.loads alone at 4 MiB; outcome")
    worst = ("", 0.0)
    worst_over_floor = ("", 0.0)
    for name, build in cases().items():
        times = []
        outcome = ""
        body = b""
        for s in SIZES:
            body = build(s * MIB)
            outcome = _intake(body)
            times.append(_time(lambda b=body: _intake(b)))  # type: ignore[misc]
        floor = _json_floor(body) if body.lstrip()[:1] in (b"{", b"[") else 0.0
        ratio = times[-1] / times[0] if times[0] > MIN_BASE_MS else 0.0
        flag = "" if times[-1] <= TARGET_MS else "  over target"
        print(f"  {name:32} {'  '.join(f'{t:8.1f}' for t in times)}   json {floor:7.1f}   x{ratio:4.1f}  "
              f"{outcome}{flag}")
        if times[-1] > worst[1]:
            worst = (name, times[-1])
        if times[-1] - floor > worst_over_floor[1]:
            worst_over_floor = (name, times[-1] - floor)
    print(f"  worst at 4 MiB: {worst[0]} {worst[1]:.1f} ms; worst above json.loads: "
          f"{worst_over_floor[0]} {worst_over_floor[1]:.1f} ms")
    bodies = [build(SIZES[-1] * MIB) for build in cases().values()]
    block = asyncio.run(_longest_loop_block(bodies))
    print(f"  event loop's longest block while every 4 MiB body is parsed off the loop (asyncio.to_thread, as the "
          f"routes do): {block:.1f} ms")


if __name__ == "__main__":
    main()
