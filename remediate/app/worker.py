"""The queue worker on `denials`: claim, diagnose, apply what policy allows, report.

Per message (one denial, see messages.py):

1. A denial from a log alert that does not name the caller first claims its alert search (so a storm of such
   alerts reads the rows once), then reads the alert window's denials in the audit log with the app's own query
   over the configured workspaces (alert_rows.py; the alert's link only says which workspace, its KQL never runs).
2. Each denial claims its tuple (principal, vault, object, operation, status) in the Table ``claims`` with a
   conditional insert (window ``KV_REMEDIATE_DEDUPE_WINDOW``): exactly one message across every instance wins;
   the others add an occurrence to the winner's record and stop.
3. The winners go through :func:`run_batch` (one fact source shared by this process's concurrent invocations: a
   burst is a batch): diagnosed with the policy's plan options and, under ``mode: apply``, applied through the
   core's ``service.remediate`` only where the app itself read the denial in the vault's audit log
   (audit_proof.py: a Proof per denial; without one the guard refuses with ``refused_by: "evidence"``). Under
   ``mode: approve`` (or above ``approve_above_tier``) a plan every rule allows opens an approval request in the
   Table ``approvals`` instead (outcome ``pending_approval`` with its ``approval_id``), and the notification links
   to the findings page where people decide it. Each finding
   is reported: one structured log line, one record in the Table ``findings``, one notification when
   ``KV_REMEDIATE_NOTIFY_URL`` is set; every value in the line and the notification has its control characters
   escaped (and, in the notification, markup and mentions defused).

Failures raise, so the host retries the message (a grant Azure refused or dropped, outcome ``failed``, is a failure
too, raised after every finding was reported); on the last allowed attempt (host.json ``maxDequeueCount``) the
reason is logged as poison and the host moves the message to ``denials-poison``: nothing is retried forever.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func

from .settings import DENIALS_QUEUE, POISON_QUEUE, STORAGE_CONNECTION

if TYPE_CHECKING:
    from ..model import Denial, Finding, Proof
    from ..store.claims import Claim
    from .messages import QueuedDenial
    from .services import Runtime

log = logging.getLogger("kv_remediate.worker")

bp = func.Blueprint()


def _vault(denial: dict[str, Any]) -> str | None:
    v = denial.get("vault") or {}
    return v.get("name") or v.get("resource_id")


def _principal(denial: dict[str, Any]) -> str | None:
    p = denial.get("principal") or {}
    return p.get("object_id") or p.get("app_id") or p.get("upn")


def finding_line(finding: dict[str, Any], *, alert_id: str | None, invocation_id: str | None,
                 claim: Claim | None) -> dict[str, Any]:
    """The structured log line (and notification facts) of one finding; every string has its control
    characters escaped (a crafted id cannot forge a line or flip text)."""
    from .messages import escape_all

    denial = finding.get("denial") or {}
    obj = denial.get("object") or {}
    plan = finding.get("plan") or {}
    fix = (plan.get("commands") or {}).get("az") or next(iter(finding.get("advice") or []), None)
    line = {"event": "kv-remediate.finding", "alert_id": alert_id, "invocation_id": invocation_id,
            "vault": _vault(denial), "principal": _principal(denial), "cause": finding.get("cause"),
            "operation": denial.get("operation"),
            "object": f"{obj.get('kind')}/{obj.get('name')}" if obj.get("name") else obj.get("kind"),
            "status": denial.get("status"), "occurrences": finding.get("occurrences"),
            "outcome": finding.get("outcome"), "fix": fix, "dedupe_key": claim.key_hash if claim else None}
    escaped: dict[str, Any] = escape_all(line)
    return escaped


def notification(finding: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
    """A JSON body a Teams or Slack incoming webhook shows as a message (``text``), with the facts attached.

    Every value is made inert first (messages.chat_text: controls escaped, markup and mentions defused)."""
    from .messages import chat_code, chat_text, escape_all

    what = chat_text(line["operation"] or "a request")
    where = chat_text(line["vault"] or "an unknown vault")
    if line["object"]:
        where = f"{where} ({chat_text(line['object'])})"
    lines = [f"Key Vault denial diagnosed: {chat_text(line['cause'])}",
             f"Who: {chat_text(line['principal'] or 'unknown caller')}  |  What: {what}  |  Where: {where}",
             chat_text(finding.get("explanation") or "")]
    if line["fix"]:
        lines.append(f"Fix: `{chat_code(line['fix'])}`")
    if finding.get("outcome") in ("applied", "already_granted", "refused", "failed"):
        from ..render.findings import outcome_text

        lines.append(chat_text(outcome_text(finding)))
    if line["alert_id"]:
        lines.append(f"Alert: {chat_text(line['alert_id'])}")
    text = "\n".join(x for x in lines if x)
    summary = f"kv-remediate: {chat_text(line['cause'])} on {chat_text(line['vault'] or 'a vault')}"
    return {"text": text, "summary": summary, "kv_remediate": escape_all(line)}


def _with_audit(f: Finding, proof: Proof | None, limitation: str | None) -> Finding:
    """The finding with what the audit-log read found (``evidence.audit_log``): the proof, or why there is none."""
    from ..evidence import AuditLogEvidence

    return replace(f, evidence=replace(f.evidence, audit_log=AuditLogEvidence(proof, limitation)))


async def run_batch(rt: Runtime, denials: list[Denial], *, alert_id: str | None, window: tuple[str, str] | None,
                    known: dict[tuple[str | None, ...], Proof] | None = None) -> list[Finding]:
    """Diagnose (with the policy's plan options) and, under ``mode: apply``, apply what the policy allows through
    the one core function, ``service.remediate``, on the evidence the app read itself in the audit log.

    An invalid policy changes nothing: each finding says so (``refused_by: policy``)."""
    from ..apply import ApplyContext
    from ..errors import PolicyError
    from ..outcome import ApplyOutcome
    from ..plan import PlanOptions
    from ..service import DiagnoseOptions, diagnose, remediate
    from . import audit_proof

    try:
        policy = rt.policy()
    except PolicyError as exc:
        log.error("kv-remediate: not applying anything: %s", exc.message)
        async with rt.facts(shared=True) as facts:
            result = await diagnose(denials, facts)
        refused = ApplyOutcome(False, "refused", refused_by="policy", reason=exc.message)
        return [replace(f, outcome=refused) for f in result.findings]
    if policy.mode not in ("apply", "approve"):
        async with rt.facts(shared=True) as facts:
            result = await diagnose(denials, facts, DiagnoseOptions(PlanOptions(object_scope=policy.object_scope)))
        return list(result.findings)
    proved = await audit_proof.prove(rt, denials, window, known)
    ctx = ApplyContext(policy=policy, grants=rt.grants(), slots=await rt.claims(), now=datetime.now(UTC),
                       requested=True, actor=rt.actor, alert_id=alert_id, proofs=proved.proofs, backend=rt.writes_to,
                       own_principals=frozenset(rt.settings.self_object_ids), approvals=rt.approvals())
    async with rt.facts(shared=True) as facts:
        result = await remediate(denials, facts, ctx)
    out = []
    for f in result.findings:
        key = f.denial.identity_key()
        out.append(_with_audit(f, proved.proofs.get(key), proved.limitations.get(key)))
    return out


async def _claim(rt: Runtime, key: tuple[str | None, ...], claimant: str) -> Claim:
    return await (await rt.claims()).claim(key, rt.settings.dedupe_window, datetime.now(UTC), claimant)


async def _report(rt: Runtime, finding: Finding, *, alert_id: str | None, invocation_id: str | None,
                  claim: Claim | None) -> None:
    doc = finding.to_dict()
    if claim is not None:
        doc["dedupe"] = {"key_hash": claim.key_hash, "window_ends": claim.expires_at.isoformat()}
    line = finding_line(doc, alert_id=alert_id, invocation_id=invocation_id, claim=claim)
    log.info("kv-remediate finding %s", json.dumps(line, ensure_ascii=False, default=str),
             extra={"custom_dimensions": line})
    await (await rt.findings()).record(doc, alert_id=alert_id, invocation_id=invocation_id, when=datetime.now(UTC))
    if rt.settings.notify_url:
        from .notify import approval_message, finding_payload, kind_from_env

        if doc.get("approval_id"):
            await rt.notify(await approval_message(rt, doc, line))
        else:
            await rt.notify(finding_payload(kind_from_env(rt.settings.env, rt.settings.notify_url),
                                            notification(doc, line)))


async def _denials(rt: Runtime, item: QueuedDenial, claimant: str) -> tuple[list[Denial], dict[Any, Proof]] | None:
    """The message's denials (itself, or its alert's rows, with the proofs those rows are); None when another
    message already read them."""
    from . import alert_rows
    from .messages import escape_controls

    if item.rows_link is None:
        return [item.denial], {}
    window = item.rows_link.window or (None, None)
    claim = await _claim(rt, ("search", item.rows_link.link, *window), claimant)
    if not claim.won:
        log.debug("kv-remediate: alert %s rows already fetched by %s (%d occurrences)",
                  escape_controls(item.alert_id), claim.winner, claim.occurrences)
        return None
    got = await alert_rows.fetch(rt, item.denial, item.rows_link)
    for note in got.notes:
        log.warning("kv-remediate: alert %s: %s", escape_controls(item.alert_id), escape_controls(note))
    if not got.denials:
        log.warning("kv-remediate: alert %s: the audit log gave %d row(s), none a denial about the alert's vault; "
                    "diagnosing the alert itself", escape_controls(item.alert_id), got.rows)
        return [item.denial], {}
    return list(got.denials), dict(got.proofs)


async def handle(rt: Runtime, body: bytes | str, *, message_id: str, invocation_id: str | None) -> int:
    """Process one `denials` message; returns how many findings it reported (0 for a duplicate)."""
    from ..service import collapse
    from .messages import decode, escape_controls

    item = decode(body)
    got = await _denials(rt, item, message_id)
    if not got or not got[0]:
        return 0
    denials, known = got
    winners: list[Denial] = []
    claims: dict[tuple[str | None, ...], Claim] = {}
    for denial, count in collapse(denials):
        key = denial.identity_key()
        claim = await _claim(rt, key, message_id)
        if not claim.won:
            log.debug("kv-remediate: duplicate of %s's denial (%d occurrences)", escape_controls(claim.winner),
                      claim.occurrences)
            continue
        claims[key] = claims[denial.canonical().identity_key()] = claim
        winners.extend([denial] * count)
    if not winners:
        return 0
    findings = await run_batch(rt, winners, alert_id=item.alert_id,
                               window=item.rows_link.window if item.rows_link else None, known=known)
    for finding in findings:
        await _report(rt, finding, alert_id=item.alert_id, invocation_id=invocation_id,
                      claim=claims.get(finding.denial.identity_key()))
    failed_writes(findings)
    return len(findings)


def failed_writes(findings: list[Finding]) -> None:
    """Raise when Azure refused or dropped a write (outcome ``failed``), after every finding was reported: the
    invocation fails, so the host retries the message and, after ``maxDequeueCount`` attempts, moves it to the
    poison queue. A retry is safe: the write's intent-first record makes it resume (or adopt) that write, never
    make a second one, and the dedupe claims are this message's own. Refusals by policy, already-granted access and
    suggestions are decisions, not failures: the message completes."""
    from ..errors import ApplyError

    failed = [f.outcome for f in findings if f.outcome is not None and f.outcome.outcome == "failed"]
    if failed:
        grants = ", ".join(o.grant_id or "?" for o in failed)
        raise ApplyError(f"{len(failed)} grant(s) failed ({grants}): {failed[0].error or failed[0].detail}; the "
                         "host retries the message (each retry resumes the same recorded write)")


@bp.function_name("worker")
@bp.queue_trigger(arg_name="msg", queue_name=DENIALS_QUEUE, connection=STORAGE_CONNECTION)
async def worker(msg: func.QueueMessage, context: func.Context) -> None:
    """Diagnose one queued denial; failures raise so the host retries, then moves it to the poison queue."""
    from . import services

    rt = services.get()
    attempt = msg.dequeue_count or 1
    try:
        await handle(rt, msg.get_body(), message_id=msg.id or context.invocation_id,
                     invocation_id=context.invocation_id)
    except Exception as exc:
        from ..errors import RemediateError

        reason = exc.message if isinstance(exc, RemediateError) else f"{type(exc).__name__}: {exc}"
        if attempt >= rt.settings.max_dequeue_count:
            log.error("kv-remediate poison: message %s failed on attempt %d of %d (%s); the host moves it to the "
                      "queue '%s'", msg.id, attempt, rt.settings.max_dequeue_count, reason, POISON_QUEUE)
        else:
            log.warning("kv-remediate: message %s failed on attempt %d of %d (%s); it will be retried", msg.id,
                        attempt, rt.settings.max_dequeue_count, reason)
        raise
