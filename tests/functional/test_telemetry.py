"""Telemetry for Application Insights (issue 14): findings, grants, refusals, revocations and time to diagnose as
OpenTelemetry metrics and spans with the custom dimensions the workbook reads (cause, vault, principal, outcome, rule).

Given the OpenTelemetry SDK with in-memory readers (no network), when the core diagnoses and remediates the demo
batch (the real SDK clients against the emulator), then the counters, histogram and spans say what happened. And
the function app turns it on only with APPLICATIONINSIGHTS_CONNECTION_STRING, importing OpenTelemetry only then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remediate import telemetry
from remediate.cli import main
from remediate.outcome import Revocation

ROOT = Path(__file__).resolve().parents[2]
DEMO = resources.files("remediate").joinpath("demo")
TENANT: dict[str, Any] = json.loads(DEMO.joinpath("tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
INPUTS = sorted(str(f) for f in Path(str(DEMO.joinpath("inputs"))).iterdir())


class Recorded:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        out = []
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        out += [(dict(p.attributes), p) for p in m.data.data_points]
        return out

    def sums(self, name: str, key: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for attrs, p in self.points(name):
            out[str(attrs[key])] += int(p.value)
        return out


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    r = Recorded()
    telemetry.enable(r.meters, r.tracers)
    try:
        yield r
    finally:
        telemetry.disable()


def test_nothing_is_recorded_or_imported_without_enabling() -> None:
    # given telemetry not enabled: recording is a no-op (no error, nothing kept)
    telemetry.disable()
    telemetry.record_diagnosis([], 1.0, "cli", 0)
    telemetry.record_outcomes([], True, "cli")
    telemetry.record_revocations([Revocation("x", revoked=True)])
    assert not telemetry.enabled()


def test_diagnose_and_remediate_record_findings_grants_refusals_and_duration(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given the demo batch and a policy that applies, refusing users and tier 2
    tenant, policy = tmp_path / "t.json", tmp_path / "p.json"
    tenant.write_text(json.dumps(TENANT))
    policy.write_text(json.dumps({"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "grant_ttl": "PT1H"}))
    # when it is remediated with --apply
    code = main(["remediate", *INPUTS, "--snapshot", str(tenant), "--policy", str(policy), "--apply", "--state",
                 str(tmp_path / "s.db"), "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 4
    # then findings are counted by cause (occurrences included), with vault and principal dimensions
    causes: Counter[str] = Counter()
    for f in doc["findings"]:
        causes[f["cause"]] += f["occurrences"]
    assert recorded.sums("kv_remediate.findings", "cause") == causes
    orders = next(p["id"] for p in TENANT["principals"] if p["display_name"].startswith("app-orders"))
    dims = [a for a, _ in recorded.points("kv_remediate.findings")]
    assert {"cause": "MISSING_ROLE_ASSIGNMENT", "vault": "kv-payments", "principal": orders,
            "operation": "SecretGet"} in dims
    # and every apply outcome is counted, refusals by their rule
    assert recorded.sums("kv_remediate.grants", "outcome") == Counter(f.get("outcome") or "no_plan"
                                                                      for f in doc["findings"])
    hsm_refusals = Counter(f["refused_by"] for f in doc["findings"] if f.get("outcome") == "refused"
                           and (f["plan"] or {}).get("kind") == "hsm_role_assignment")   # the demo's Managed HSM
    assert recorded.sums("kv_remediate.refusals", "rule") == Counter({"max_tier": 2, "principal_types": 1}) + \
        hsm_refusals
    # and the time to diagnose is one histogram point for the batch
    (attrs, point), = recorded.points("kv_remediate.diagnosis.duration")
    assert attrs == {"entry": "cli"} and point.count == 1 and point.sum >= 0
    # and each recorded grant is a span naming it, its outcome, expiry, role and scope
    spans = {s.name: s for s in recorded.spans.get_finished_spans()}
    assert {"kv-remediate diagnose", "kv-remediate remediate", "kv-remediate grant"} <= set(spans)
    grants = [s for s in recorded.spans.get_finished_spans() if s.name == "kv-remediate grant"]
    applied = [dict(s.attributes or {}) for s in grants if (s.attributes or {}).get("outcome") == "applied"]
    ids = {f["grant_id"] for f in doc["findings"] if f.get("outcome") == "applied"}
    assert {a["grant_id"] for a in applied} == ids and all(a["expires_at"] for a in applied)
    assert any(a["role"] == "Key Vault Secrets User" and a["vault"] == "kv-payments" for a in applied)


def test_revocations_are_counted_and_traced(recorded: Recorded) -> None:
    telemetry.record_revocations([Revocation("g1", revoked=True, detail="deleted"),
                                  Revocation("g2", reason="record is 'refused'"),
                                  Revocation("g3", "reconcile", reconciled="abandoned")])
    assert recorded.sums("kv_remediate.revocations", "outcome") == Counter(
        {"revoked": 1, "not_revoked": 1, "reconciled": 1})
    spans = [dict(s.attributes or {}) for s in recorded.spans.get_finished_spans() if s.name == "kv-remediate revoke"]
    assert [(s["grant_id"], s["revoked"]) for s in spans] == [("g1", True), ("g2", False), ("g3", False)]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env})


# A guard run first in the child: any connection to a non-loopback address is refused and remembered.
GUARD = """
import atexit, socket, ipaddress
tried = []
atexit.register(lambda: print('at-exit', tried))   # runs last: after OpenTelemetry's own shutdown flush
_connect = socket.socket.connect
def connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        loop = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = host == 'localhost'
    if not loop:
        tried.append(host)
        raise OSError('non-loopback connection refused by the test: ' + str(host))
    return _connect(self, address)
socket.socket.connect = connect
"""


def test_the_app_imports_no_opentelemetry_without_the_setting() -> None:
    # given no APPLICATIONINSIGHTS_CONNECTION_STRING; when the app is imported and its runtime built
    got = _python("import sys, function_app\nfrom remediate.app import services\nservices.get()\n"
                  "from remediate import telemetry\n"
                  "print(telemetry.enabled(), any(m.startswith(('opentelemetry', 'azure.monitor')) "
                  "for m in sys.modules))")
    # then telemetry is off and nothing of OpenTelemetry was imported
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["False", "False"]


def test_with_the_setting_the_app_configures_azure_monitor_on_first_use_only() -> None:
    # given a connection string whose endpoints are on loopback, and Azure Monitor's own statsbeat off
    conn = ("InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://127.0.0.1:9/;"
            "LiveEndpoint=https://127.0.0.1:9/")
    code = GUARD + (
        "import sys, function_app\n"
        "before = any(m.startswith('azure.monitor') for m in sys.modules)\n"
        "from remediate.app import services\nfrom remediate import telemetry\n"
        "services.get()\n"
        "from opentelemetry import metrics\n"
        "print(before, telemetry.enabled(), type(metrics.get_meter_provider()).__module__, tried)\n")
    got = _python(code, APPLICATIONINSIGHTS_CONNECTION_STRING=conn, APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
                  KV_REMEDIATE_SNAPSHOT=str(DEMO.joinpath("tenant.json")))
    assert got.returncode == 0, got.stderr[-2000:]
    first, last = got.stdout.strip().splitlines()
    before, enabled, provider, tried = first.split(maxsplit=3)
    # then the import did not load it, the first use did, with the SDK's providers, and nothing left the machine
    assert (before, enabled) == ("False", "True") and provider.startswith("opentelemetry.sdk.metrics")
    assert tried == "[]" and last == "at-exit []"


@pytest.mark.parametrize(("revocation", "keys"), [
    (Revocation("g", revoked=True, removed={"secrets": ("get",)}, detail="removed {'secrets': ['get']} from the entry"),
     ["grant_id", "revoked", "detail"]),
    (Revocation("g", reason="already revoked"), ["grant_id", "revoked", "reason"]),
    (Revocation("g", error="ARM answered 503"), ["grant_id", "revoked", "error"]),
    (Revocation("g", "reconcile", reconciled="abandoned", detail="not in Azure"), ["grant_id", "reconciled", "detail"]),
    (Revocation("g", "reconcile", error="ARM answered 503"), ["grant_id", "reconciled", "error"]),
    (Revocation(None, "sweep", vault="/subscriptions/s/v", error="403"), ["vault", "revoked", "error"]),
    (Revocation("g", "sweep", revoked=True, assignment_id="/a", deleted=True, detail="deleted"),
     ["grant_id", "assignment_id", "revoked", "detail"]),
])
def test_a_revocation_keeps_the_json_keys_of_revoke_output_json(revocation: Revocation, keys: list[str]) -> None:
    # given a typed revocation, when shown as JSON, then it has exactly the keys `revoke --output json` always had
    assert list(revocation.to_dict()) == keys
