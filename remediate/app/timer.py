"""The revocation timer: every 5 minutes, reconcile and remove grants whose time limit (``grant_ttl``) has passed,
then end approval requests past their ``approval_ttl`` and finish any a crash left approved.

Only what the app itself granted is undone (its records in Table ``grants``): the role assignment it created,
or exactly the access-policy permissions it added. Each run first settles intents a crash left ``pending`` for
longer than ``apply.GRACE`` (by reading Azure), then revokes expired grants, then deletes expired role
assignments labelled as ours whose record was lost (see ``apply.reconcile``). So a grant outlives its expiry by
at most one timer period (5 minutes), plus the grace when its record was left pending. Expired grants are
revoked even when the policy has since become invalid: taking access away is always safe.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from ..outcome import Revocation

log = logging.getLogger("kv_remediate.timer")

bp = func.Blueprint()
SCHEDULE = "0 */5 * * * *"


async def revoke_due() -> list[Revocation]:
    """Reconcile, then revoke every expired grant now; one structured log line per action."""
    from .. import telemetry
    from ..apply import reconcile
    from ..facts.writes import ArmWriter
    from . import services

    rt = services.get()
    async with rt.facts() as facts:
        results = await reconcile(ArmWriter(facts), rt.grants(), datetime.now(UTC), actor=rt.actor,
                                  backend=rt.writes_to)
    for r in results:
        said = r.to_dict()
        log.info("kv-remediate revoke %s", json.dumps(said, default=str), extra={"custom_dimensions": said})
    if telemetry.enabled():
        grants = rt.grants()
        records = {r.grant_id: rec for r in results if r.grant_id
                   for rec in [grants.get(r.grant_id)] if rec is not None}
        telemetry.record_revocations(results, records)
    return results


@bp.function_name("revoke_expired")
@bp.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
async def revoke_timer(timer: func.TimerRequest) -> None:
    """Every 5 minutes: settle stale intents, revoke expired grants and expired labelled orphans."""
    if timer.past_due:
        log.warning("kv-remediate: the revocation timer is past due; catching up")
    await revoke_due()
    await approvals_due()


async def approvals_due() -> None:
    """Approval requests past their expiry end as ``expired``; those a crash left ``approved`` are finished. A
    failure here is logged and does not undo the revocations that ran first (the next run tries again)."""
    from ..errors import RemediateError
    from .approvals import settle_due

    try:
        expired, finished = await settle_due()
    except RemediateError as exc:
        log.error("kv-remediate: approval requests were not settled: %s", exc.message)
        return
    for r in expired:
        log.info("kv-remediate approval %s expired", r.id, extra={"custom_dimensions": {
            "event": "approval_expired", "approval_id": r.id}})
    for d in finished:
        log.info("kv-remediate approval %s finished after a crash: %s", d.request.id if d.request else "?",
                 d.status)
