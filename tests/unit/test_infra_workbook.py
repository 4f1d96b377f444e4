"""infra/: the Azure Monitor workbook (issue 14) is deployed with the app, on its Application Insights, and its queries
read exactly what remediate/telemetry.py sends: findings by cause over time, top denied principals and vaults, grants
in force and their expiry, refusals by rule.

Given the parsed templates (pycep) and the workbook JSON, then the module is wired to the monitoring module's
component and each view queries a metric or span name the app records (checked against the app's own recording).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pycep import BicepParser

from remediate import telemetry
from remediate.outcome import Revocation

INFRA = Path(__file__).resolve().parents[2] / "infra"
WORKBOOK: dict[str, Any] = json.loads((INFRA / "modules" / "workbook.json").read_text(encoding="utf-8"))


def parsed(rel: str) -> dict[str, Any]:
    tree: dict[str, Any] = BicepParser().parse(text=(INFRA / rel).read_text(encoding="utf-8"))
    return tree


def queries() -> dict[str, str]:
    return {i["content"]["title"]: i["content"]["query"] for i in WORKBOOK["items"] if i["type"] == 3}


def test_main_deploys_the_workbook_on_the_apps_application_insights() -> None:
    module = parsed("main.bicep")["modules"]["workbook"]
    assert module["detail"]["path"] == "modules/workbook.bicep"
    source = json.dumps(module["config"]["params"]["appInsightsId"])
    assert all(f'"{part}"' in source for part in ("monitoring", "outputs", "appInsightsId"))
    (res,) = parsed("modules/workbook.bicep")["resources"].values()
    assert res["type"] == "Microsoft.Insights/workbooks"
    props = res["config"]["properties"]
    assert "appInsightsId" in json.dumps(props["sourceId"]) and "workbook.json" in json.dumps(props["serializedData"])
    assert res["config"]["kind"] == "shared"


@pytest.mark.parametrize(("title", "reads"), [
    ("Findings by cause over time", ["kv_remediate.findings", "cause", "timechart"]),
    ("Top denied principals", ["kv_remediate.findings", "principal"]),
    ("Top denied vaults", ["kv_remediate.findings", "vault"]),
    ("Grants in force and their expiry (last 90 days of grants)", ["kv-remediate grant", "kv-remediate revoke",
                                                                   "expires_at", "grant_id"]),
    ("Refusals by policy rule", ["kv_remediate.refusals", "rule"]),
    ("Approval decisions by outcome and channel", ["kv_remediate.approvals", "status", "channel"]),
])
def test_each_view_reads_what_the_app_sends(title: str, reads: list[str]) -> None:
    query = queries()[title]
    for word in reads:
        assert word in query, (title, word)


def test_every_name_the_workbook_reads_is_one_the_app_records() -> None:
    # given the names and dimensions the app records (the real recording, on in-memory providers)
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.enable(MeterProvider(metric_readers=[reader]), tracers)
    try:
        telemetry.record_revocations([Revocation("g", revoked=True)])
        telemetry.record_diagnosis([], 1.0, "app", 0)
        telemetry.record_outcomes([], True, "app")
        telemetry.record_approval("applied", None, "page", "00000000-0000-4000-8000-000000000001")
    finally:
        telemetry.disable()
    data = reader.get_metrics_data()
    recorded = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics} if data \
        else set()
    source = (Path(telemetry.__file__)).read_text(encoding="utf-8")
    # then every metric the workbook queries is a name of the app's instruments, every span name one it starts
    wanted = {n for q in queries().values() for n in re.findall(r'name == "([^"]+)"', q)}
    metrics = {n for n in wanted if n.startswith("kv_remediate.")}
    assert metrics <= {f"kv_remediate.{m}" for m in ("findings", "grants", "refusals", "revocations",
                                                     "diagnosis.duration", "approvals")}
    assert all(f'"{m}"' in source for m in metrics) and {"kv_remediate.revocations",
                                                        "kv_remediate.diagnosis.duration",
                                                        "kv_remediate.approvals"} <= recorded
    assert {n for n in wanted if n.startswith("kv-remediate ")} <= {"kv-remediate grant", "kv-remediate revoke"}
    assert all(f'"{n}"' in source for n in wanted)
    dims = {d for q in queries().values() for d in re.findall(r'customDimensions\["([a-z_]+)"\]', q)}
    assert dims <= {"cause", "vault", "principal", "rule", "grant_id", "outcome", "expires_at", "role", "scope",
                    "revoked", "status", "channel"}
