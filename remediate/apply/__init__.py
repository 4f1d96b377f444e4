"""Apply guarded plans (idempotent, verified, audited, crash-safe) and revoke expired grants.

Only here do plans become changes: the guard's verdict first (pure), then at most one write through
facts.writes (a deterministic role-assignment name, a PIM schedule request with a fresh name, or
``accessPolicies/add`` of exactly the missing permissions), one verifying read, and a record in the grant store
for every applied, already-granted, refused, failed and revoked change.

Crash safety (issue 17): the intent is recorded first (a ``pending`` record holding the write's identity, plan,
alert and expiry), the write is labelled as ours in Azure where Azure allows it (a role assignment's
``description``, a PIM request's ``justification``: "kv-remediate grant <id>; expires <time>"), and the record is
settled after the verifying read. A retry (redelivered message, CLI rerun) meets the open record of the same write
and resumes it: what already reached Azure is adopted with its original expiry, never re-granted or reported as
``already_granted`` (that is only for access we did not create). :func:`reconcile` (the revocation timer,
``revoke --reconcile``) settles intents left ``pending`` by a crash, by reading Azure, revokes what has expired,
and removes expired role assignments labelled as ours whose record was lost.

Grant-store calls are synchronous (SQLite, or the sync Table client) and run in a worker thread, so an apply never
stalls the event loop the worker's other invocations share.

The package, by subject: ``records`` (the context, labels, write keys and grant records, and reading back whether
a record's write is in Azure), ``grant`` (guard, intent, write, verify, settle: one plan applied or resumed) and
``revoke`` (revocation, and the reconciler's pass).
"""

from .grant import apply_findings, apply_one
from .records import GRACE, HOUR, LABEL_PREFIX, ApplyContext, label, parse_label, write_key
from .revoke import reconcile, revoke, revoke_expired, settle_unresolved, sweep_labelled

__all__ = ["GRACE", "HOUR", "LABEL_PREFIX", "ApplyContext", "apply_findings", "apply_one", "label", "parse_label",
           "reconcile", "revoke", "revoke_expired", "settle_unresolved", "sweep_labelled", "write_key"]
