"""Parse throughput over a 10,000-record mixed batch (target: >= 10,000 records/s on one core).

The batch mixes every family as it arrives in practice: large exports (Event Hub records, JSON lines, Log
Analytics query results, az CLI rows) and many small inputs (alerts, REST bodies, SDK and CLI error texts).
A record is one log row, alert row/dimension set or error: what becomes one denial or one skipped count.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from remediate.intake import parse_inputs

TARGET_RECORDS = 10_000
TARGET_RATE = 10_000.0
RUNS = 7
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
VARIANTS = FIXTURES / "variants"
SAMPLES = FIXTURES / "samples"

SMALL_INPUTS = [
    VARIANTS / "alert_v2_azurediagnostics_dimensions.json",
    VARIANTS / "alert_v2_azkvauditlogs_dimensions_vault_scope.json",
    VARIANTS / "alert_v1_searchresults_azurediagnostics.json",
    VARIANTS / "alert_metric_serviceapiresult_403.json",
    VARIANTS / "alert_simple_log_event_azkvauditlogs.json",
    VARIANTS / "error_javascript_resterror.txt",
    VARIANTS / "error_java_v1_httpresponseexception.txt",
    VARIANTS / "error_python_azure_core_traceback.txt",
    VARIANTS / "error_go_azcore_with_request_line.txt",
    VARIANTS / "error_dotnet_crlf_message_then_content.txt",
    VARIANTS / "error_azcli_markdown_escaped.md",
    SAMPLES / "errors" / "kv_403_forbiddenbyrbac_body_aca_blog.json",
    SAMPLES / "errors" / "kv_403_forbiddenbyfirewall_body_appservice_lab.json",
    SAMPLES / "errors" / "sdk_go_autorest_403_forbiddenbyrbac_terraform.txt",
    SAMPLES / "errors" / "azcli_403_forbiddenbyrbac_setsecret_saas_accelerator.txt",
    SAMPLES / "logs" / "kv_auditevent_raw_keypurge_403_accesspolicy_sekoia.json",
]


def _records(path: Path) -> list[Any]:
    doc = json.loads(path.read_text())
    return list(doc["records"]) if isinstance(doc, dict) else list(doc)


def build_batch() -> list[tuple[str, bytes]]:
    """About 10,000 records: ~70 % in four large exports, the rest as a few thousand small inputs."""
    batch: list[tuple[str, bytes]] = []
    records = _records(VARIANTS / "logs_auditevent_eventhub_records.json")
    batch.append(("eventhub.json", json.dumps({"records": records * 600}).encode()))            # 2,400
    lines = "\n".join(json.dumps(r) for r in records * 300) + "\n"
    batch.append(("PT1H.json", lines.encode()))                                                  # 1,200
    query = json.loads((VARIANTS / "logs_query_api_azurediagnostics.json").read_text())
    query["tables"][0]["rows"] = query["tables"][0]["rows"] * 700
    batch.append(("query.json", json.dumps(query).encode()))                                     # 2,100
    rows = _records(VARIANTS / "logs_azkvauditlogs_rows_az_cli.json")
    batch.append(("az-rows.json", json.dumps(rows * 650).encode()))                              # 1,300
    small = [(p.name, p.read_bytes()) for p in SMALL_INPUTS]
    total = _records_in(batch)
    i = 0
    while total < TARGET_RECORDS:
        name, data = small[i % len(small)]
        batch.append((f"{i}-{name}", data))
        total += _records_in(batch[-1:])
        i += 1
    return batch


def _records_in(inputs: list[tuple[str, bytes]]) -> int:
    result = parse_inputs(inputs, max_denials=None, max_principals=None)  # operator exports: no caps
    return len(result.denials) + result.skipped


def build_distinct_batch() -> list[tuple[str, bytes]]:
    """10,000 audit records that share no principal, object, address or message (every cache misses)."""
    base = _records(VARIANTS / "logs_auditevent_eventhub_records.json")
    out: list[dict[str, Any]] = []
    for i in range(TARGET_RECORDS):
        rec = json.loads(json.dumps(base[i % len(base)]))
        oid = f"{i:08x}-1e4a-4b6c-8d7e-9f0a1b2c3d4e"
        rec["identity"]["claim"]["oid"] = oid
        rec["callerIpAddress"] = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        rec["properties"]["requestUri"] = rec["properties"]["requestUri"].replace("db-password", f"s{i}")
        rec["resultDescription"] = rec["resultDescription"].replace("5b8f1c2d", oid[:8])
        out.append(rec)
    return [("distinct.json", json.dumps({"records": out}).encode())]


def _measure(label: str, batch: list[tuple[str, bytes]]) -> float:
    result = parse_inputs(batch, max_denials=None, max_principals=None)
    n = len(result.denials) + result.skipped
    rates = []
    for _ in range(RUNS):
        start = time.perf_counter()
        parse_inputs(batch, max_denials=None, max_principals=None)
        rates.append(n / (time.perf_counter() - start))
    median = statistics.median(rates)
    print(f"parse [{label}]: {n} records ({len(result.denials)} denials, {result.skipped} skipped) in "
          f"{len(batch)} inputs, {sum(len(d) for _, d in batch) / 1e6:.1f} MB: median {median:,.0f} records/s "
          f"over {RUNS} runs (min {min(rates):,.0f}, max {max(rates):,.0f})")
    return median


def main() -> None:
    """Print the median rate of the mixed batch (the target) and of a batch where no value repeats."""
    mixed = _measure("mixed", build_batch())
    _measure("distinct values", build_distinct_batch())
    verdict = "meets" if mixed >= TARGET_RATE else "BELOW"
    print(f"parse: {verdict} the {TARGET_RATE:,.0f} records/s target on the mixed batch")


if __name__ == "__main__":
    main()
