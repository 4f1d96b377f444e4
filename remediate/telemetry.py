"""Metrics and traces for Application Insights: findings, grants, refusals, revocations and time to diagnose.

OpenTelemetry through ``azure-monitor-opentelemetry``, switched on only when ``APPLICATIONINSIGHTS_CONNECTION_STRING``
is set (:func:`configure_from_env`, called by the function app when its runtime is first built, never at import).
OpenTelemetry is imported only then: without the setting nothing is imported and every ``record_*`` call is one
check of a module flag, so the CLI and a cold start pay nothing. Tests call :func:`enable` with SDK providers and
in-memory readers (no network).

What is sent (OpenTelemetry attributes become Application Insights ``customDimensions``):

- counter ``kv_remediate.findings`` per finding: ``cause``, ``vault``, ``principal``, ``operation``;
- counter ``kv_remediate.grants`` per apply outcome: ``outcome``, ``cause``, ``vault``, ``principal``;
- counter ``kv_remediate.refusals`` per refused plan: ``rule``, ``cause``, ``vault``, ``principal``;
- counter ``kv_remediate.revocations``: ``outcome`` (revoked, not_revoked, reconciled), ``vault``, ``principal``;
- counter ``kv_remediate.approvals`` per act on an approval request: ``status`` (recorded, applied, failed,
  rejected, refused), ``refused`` (why not), ``end``, ``channel``; span ``kv-remediate approval`` per act
  (``approval_id``, ``approver``, ``principal``, ``scope``, ``state``);
- histogram ``kv_remediate.diagnosis.duration`` (ms) per batch: ``entry`` (cli, http, worker);
- spans ``kv-remediate diagnose`` / ``kv-remediate remediate`` per batch, and one ``kv-remediate grant`` span per
  recorded grant outcome (``grant_id``, ``outcome``, ``rule``, ``expires_at``, ``role``, ``scope``, ``vault``,
  ``principal``, ``cause``) and ``kv-remediate revoke`` per revocation (``grant_id``, ``revoked``): the
  workbook in ``infra/`` reads grants in force from them.

Values are ids and codes we produced ourselves (canonical GUIDs, ARM names, catalogue codes), never input text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcome import Revocation

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
SCOPE = "kv_remediate"

log = logging.getLogger("kv_remediate.telemetry")


@dataclass(frozen=True)
class _Instruments:
    findings: Any
    grants: Any
    refusals: Any
    revocations: Any
    approvals: Any
    duration: Any
    tracer: Any


@dataclass
class _State:
    """What this process records to (None: off), and whether Application Insights was set up already."""
    active: _Instruments | None = None
    configured: bool = False


_STATE = _State()


def enabled() -> bool:
    """Whether telemetry is being recorded."""
    return _STATE.active is not None


def enable(meter_provider: Any = None, tracer_provider: Any = None) -> None:
    """Record to these providers (default: OpenTelemetry's global ones, which ``configure_azure_monitor`` set)."""
    from opentelemetry import metrics, trace

    meter = (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)
    _STATE.active = _Instruments(
        findings=meter.create_counter("kv_remediate.findings", unit="{finding}",
                                      description="diagnosed denials (identical ones collapsed), by cause"),
        grants=meter.create_counter("kv_remediate.grants", unit="{grant}",
                                    description="what remediate did with a plan, by outcome"),
        refusals=meter.create_counter("kv_remediate.refusals", unit="{plan}",
                                      description="plans the policy refused, by rule"),
        revocations=meter.create_counter("kv_remediate.revocations", unit="{grant}",
                                         description="grants revoked (or settled) by the timer or the CLI"),
        approvals=meter.create_counter("kv_remediate.approvals", unit="{act}",
                                       description="acts on approval requests, by what they came to"),
        duration=meter.create_histogram("kv_remediate.diagnosis.duration", unit="ms",
                                        description="time to diagnose one batch"),
        tracer=tracer)


def disable() -> None:
    """Stop recording (tests)."""
    _STATE.active = None


def _credential(environ: Mapping[str, str]) -> Any:
    """The managed identity named by ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``ClientId=...;Authorization=AAD``,
    what the Functions host uses when local authentication is off), else None (the connection string's key)."""
    raw = environ.get(AUTHENTICATION_SETTING, "")
    parts = dict(p.split("=", 1) for p in raw.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId") or None
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Send to Application Insights when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (once per process);
    returns whether telemetry is on. A failure to configure is logged, never raised: the app serves without it."""
    env = os.environ if environ is None else environ
    conn = (env.get(CONNECTION_SETTING) or "").strip()
    if _STATE.configured or not conn:
        return enabled()
    _STATE.configured = True
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor

        # The resource is read from App Service's settings only: the VM detector would ask the instance metadata
        # address, which a Functions host does not need and a test machine must never be sent to.
        os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service")
        kwargs: dict[str, Any] = {"connection_string": conn, "logger_name": "kv_remediate"}
        credential = _credential(env)
        if credential is not None:
            kwargs["credential"] = credential
        configure_azure_monitor(**kwargs)
        enable()
    except Exception as exc:   # telemetry must never stop the app
        log.warning("kv-remediate: Application Insights telemetry is off: %s", exc)
    return enabled()


def _finding_dims(f: Any) -> dict[str, str]:
    d = f.denial
    vault = (f.evidence.vault.name if f.evidence.vault is not None else None) or d.vault.name or (
        d.vault.resource_id.rsplit("/", 1)[-1] if d.vault.resource_id else None)
    return {"cause": str(f.cause), "vault": str(vault or "unknown").lower(),
            "principal": str(d.principal.object_id or d.principal.app_id or "unknown"),
            "operation": str(d.operation or "unknown")}


def record_diagnosis(findings: Iterable[Any], elapsed_ms: float, entry: str, denials: int) -> None:
    """One batch diagnosed: a span, the findings counted by cause, vault and principal, and the time it took."""
    t = _STATE.active
    if t is None:
        return
    findings = list(findings)
    with t.tracer.start_as_current_span("kv-remediate diagnose", attributes={
            "entry": entry, "denials": denials, "findings": len(findings), "elapsed_ms": elapsed_ms}):
        for f in findings:
            t.findings.add(f.occurrences, _finding_dims(f))
    t.duration.record(elapsed_ms, {"entry": entry})


def record_outcomes(findings: Iterable[Any], requested: bool, entry: str) -> None:
    """What remediate did per finding: grants by outcome, refusals by rule, one span per recorded grant."""
    t = _STATE.active
    if t is None:
        return
    with t.tracer.start_as_current_span("kv-remediate remediate", attributes={"entry": entry,
                                                                               "apply_requested": requested}):
        for f in findings:
            o = f.outcome.to_dict() if f.outcome is not None else {}
            outcome = str(o.get("outcome") or "no_plan")
            dims = _finding_dims(f)
            base = {"cause": dims["cause"], "vault": dims["vault"], "principal": dims["principal"]}
            t.grants.add(1, {**base, "outcome": outcome})
            refused = outcome == "refused" or (requested and outcome == "suggested")
            if refused:
                t.refusals.add(1, {**base, "rule": str(o.get("refused_by") or "policy")})
            if o.get("grant_id"):
                plan = f.plan
                role = getattr(plan, "role_name", None) or "access policy " + "; ".join(
                    f"{k} {','.join(v)}" for k, v in (getattr(plan, "add", None) or {}).items())
                attrs = {**base, "grant_id": str(o["grant_id"]), "outcome": outcome,
                         "rule": str(o.get("refused_by") or ""), "expires_at": str(o.get("expires_at") or ""),
                         "role": role, "scope": str(getattr(plan, "scope", None) or getattr(plan, "vault_id", ""))}
                with t.tracer.start_as_current_span("kv-remediate grant", attributes=attrs):
                    pass


def record_revocations(results: Iterable[Revocation], records: Mapping[str, Any] | None = None) -> None:
    """Revocations (the timer, ``kv-remediate revoke``): counted, and one span each naming the grant."""
    t = _STATE.active
    if t is None:
        return
    for r in results:
        rec = (records or {}).get(str(r.grant_id))
        vault = str(getattr(rec, "vault_id", None) or r.vault or "unknown").rstrip("/").rsplit("/", 1)[-1]
        outcome = "reconciled" if r.kind == "reconcile" else ("revoked" if r.revoked else "not_revoked")
        dims = {"outcome": outcome, "vault": vault.lower(), "principal": str(getattr(rec, "principal_id", None)
                                                                             or r.principal or "unknown")}
        t.revocations.add(1, dims)
        with t.tracer.start_as_current_span("kv-remediate revoke", attributes={
                **dims, "grant_id": str(r.grant_id or ""), "revoked": r.revoked}):
            pass


def record_approval(status: str, request: Any, channel: str, approver: str, refused: str | None = None) -> None:
    """One act on an approval request (page, Slack, Teams, CLI): counted by what it came to, one span naming it."""
    t = _STATE.active
    if t is None:
        return
    dims = {"status": status, "refused": refused or "", "end": str(getattr(request, "end", None) or ""),
            "channel": channel}
    t.approvals.add(1, dims)
    change = getattr(request, "change", None)
    with t.tracer.start_as_current_span("kv-remediate approval", attributes={
            **dims, "approval_id": str(getattr(request, "id", "") or ""), "approver": approver,
            "state": str(getattr(request, "state", "") or ""), "principal": str(getattr(change, "principal_id", "")),
            "scope": str(getattr(change, "scope", ""))}):
        pass
