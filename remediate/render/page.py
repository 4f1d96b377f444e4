"""The findings page (``GET /api/findings``): stored findings, grants in force and approval requests as typed
views, rendered to HTML by one Jinja2 template with autoescaping on.

Pure: the caller reads the stores and passes the clock. Everything a finding holds is attacker-shaped (vault and
principal names, error texts and alert fields come from whoever can call a vault), so the template never marks
anything safe: every value is escaped, and the page carries a strict Content-Security-Policy (no script at all,
styles only by a per-response nonce). Jinja2 is imported on first render, never at cold start.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

    from ..store.grant_records import GrantRecord

TEMPLATES = Path(__file__).with_name("templates")
SINCE = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "all": None}
"""The time filter's choices (the finding's recorded time at or after now minus this)."""
SINCE_LABELS = {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days", "all": "any time"}
OUTCOMES = ("diagnosed", "suggested", "pending_approval", "applied", "already_granted", "refused", "failed",
            "no_plan", "pending", "abandoned", "revoked")
"""What became of a finding (its ``outcome``; "diagnosed" when the worker only diagnosed it)."""
MAX_TEXT = 200
"""The longest filter text read from the query string."""
MAX_TREE_DEPTH = 12
_CHANGE_LABELS = {"kind": "Change", "role_name": "Role", "role_definition_id": "Role definition",
                  "principal_id": "Principal", "object_id": "Principal", "application_id": "Application",
                  "principal_type": "Principal type", "scope": "Scope", "vault_id": "Vault", "add": "Permissions added",
                  "permissions": "Permissions", "tier": "Risk tier", "privileged": "Privileged role",
                  "tenant_id": "Tenant", "expires": "Expires", "duration": "Duration", "data_actions": "Data actions",
                  "hsm": "Managed HSM"}
_NOT_A_CHANGE = ("commands", "alternatives", "custom_role")


@dataclass(frozen=True)
class Filters:
    """The page's GET form: each filter is optional; ``id`` opens one finding."""

    cause: str = ""
    vault: str = ""
    principal: str = ""
    outcome: str = ""
    since: str = "7d"
    id: str = ""
    approval: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str], causes: Iterable[str]) -> Filters:
        """The filters of a query string: a value outside a choice list is dropped (never echoed raw), text is
        trimmed to ``MAX_TEXT`` characters."""
        def text(name: str) -> str:
            value = params.get(name) or ""
            return value.strip()[:MAX_TEXT] if isinstance(value, str) else ""

        def ident(name: str) -> str:
            value = text(name)
            return value if all(c.isalnum() or c == "-" for c in value) else ""

        cause, outcome, since = text("cause"), text("outcome"), text("since") or "7d"
        return cls(cause=cause if cause in set(causes) else "", vault=text("vault"), principal=text("principal"),
                   outcome=outcome if outcome in OUTCOMES else "", since=since if since in SINCE else "7d",
                   id=ident("id"), approval=ident("approval"))

    def since_time(self, now: datetime) -> datetime | None:
        span = SINCE[self.since]
        return None if span is None else now - span

    def query(self, **changes: str) -> str:
        """This filter set (with ``changes``) as a query string, empty values left out."""
        keys = ("cause", "vault", "principal", "outcome", "since", "id", "approval")
        values = {**{k: getattr(self, k) for k in keys}, **changes}
        return urllib.parse.urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class Event:
    """One step of a finding's history: denied, proposed, requested, approved, rejected, expired, applied,
    verified, refused, failed, revoked."""

    state: str
    time: str | None
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """One person's decision on an approval request, as the core recorded it."""

    decision: str
    who: str
    time: str | None
    where: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RequestView:
    """An approval request as the page shows it; ``csrf`` is the form token when the viewer may decide."""

    id: str
    state: str
    created: str | None
    expires: str | None
    plan_hash: str = ""
    summary: str = ""
    decisions: tuple[Decision, ...] = ()
    approvals_needed: int = 1
    approved: int = 0
    end: str = ""
    end_time: str | None = None
    detail: str = ""
    grant_id: str = ""
    events: tuple[Event, ...] = ()
    csrf: str = ""

    @property
    def pending(self) -> bool:
        return self.state == "pending"


@dataclass(frozen=True)
class Row:
    """One finding in the list."""

    id: str
    time: str
    cause: str
    vault: str
    vault_id: str
    principal: str
    principal_id: str
    operation: str
    outcome: str
    explanation: str


@dataclass(frozen=True)
class Node:
    """One entry of the evidence tree: a key and either a scalar text or children."""

    key: str
    text: str | None = None
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Detail:
    """One opened finding: its explanation, evidence tree, exact change, commands, history and requests."""

    row: Row
    advice: tuple[str, ...]
    change: tuple[tuple[str, str], ...]
    az: str | None
    bicep: str | None
    evidence: tuple[Node, ...]
    history: tuple[Event, ...]
    requests: tuple[RequestView, ...]
    refused_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Bar:
    """One cause's bar in the summary chart (``x``/``width`` in the SVG's units)."""

    cause: str
    count: int
    width: int
    y: int


@dataclass(frozen=True)
class Summary:
    by_cause: tuple[Bar, ...]
    total: int
    grants_in_force: int
    grants_by_vault: tuple[tuple[str, int], ...]
    chart_height: int


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their label and whether they may decide; None label: anonymous (nothing shown)."""

    label: str
    may_decide: bool
    via: str


@dataclass(frozen=True)
class Page:
    """Everything the template shows."""

    filters: Filters
    rows: tuple[Row, ...]
    shown: int
    summary: Summary
    detail: Detail | None
    pending: tuple[RequestView, ...]
    viewer: Viewer
    causes: tuple[str, ...]
    nonce: str
    notice: str = ""
    outcomes: tuple[str, ...] = OUTCOMES
    since_labels: Mapping[str, str] = field(default_factory=lambda: dict(SINCE_LABELS))


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _last_segment(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value


def row_of(record: Mapping[str, Any]) -> Row:
    """A stored finding as a list row: a whole record (with ``finding``) or a list row of
    ``FindingStore.rows`` (its LIST_COLUMNS); missing parts read as empty."""
    from ..store.findings import list_columns

    f = record.get("finding")
    columns: Mapping[str, Any] = list_columns(f) if isinstance(f, dict) else record
    vault_id = _s(record.get("vault"))
    principal_id = _s(record.get("principal"))
    return Row(id=_s(record.get("id")), time=_s(record.get("time")),
               cause=_s(record.get("cause") or _d(f).get("cause")),
               vault=_s(columns.get("vault_name")) or _last_segment(vault_id), vault_id=vault_id,
               principal=_s(columns.get("principal_name")) or principal_id, principal_id=principal_id,
               operation=_s(columns.get("operation")), outcome=_s(columns.get("outcome")) or "diagnosed",
               explanation=_s(columns.get("explanation")))


def _matches(row: Row, filters: Filters, since: datetime | None) -> bool:
    if filters.cause and row.cause != filters.cause:
        return False
    if filters.outcome and row.outcome != filters.outcome:
        return False
    if filters.vault and filters.vault.lower() not in f"{row.vault} {row.vault_id}".lower():
        return False
    if filters.principal and filters.principal.lower() not in f"{row.principal} {row.principal_id}".lower():
        return False
    return not (since is not None and row.time and row.time < _iso(since))


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if when.microsecond else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "(none)" if value is None else _s(value)


def tree(value: Any, key: str = "", depth: int = 0) -> Node:
    """A JSON value as a tree of nodes (keys in their stored order; deeper than MAX_TREE_DEPTH shown as text)."""
    if depth >= MAX_TREE_DEPTH:
        return Node(key, "…")
    if not isinstance(value, dict | list):
        return Node(key, _scalar(value))
    if not value:
        return Node(key, "(none)")
    if isinstance(value, dict):
        return Node(key, None, tuple(tree(v, _s(k), depth + 1) for k, v in value.items()))
    if all(not isinstance(v, dict | list) for v in value):
        return Node(key, ", ".join(_scalar(v) for v in value))
    return Node(key, None, tuple(tree(v, f"{key} {i + 1}" if key else str(i + 1), depth + 1)
                                 for i, v in enumerate(value)))


def change_of(plan: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The exact write a plan makes, as labelled lines (commands and alternatives left out)."""
    out: list[tuple[str, str]] = []
    for key, value in plan.items():
        if key in _NOT_A_CHANGE or value is None:
            continue
        label = _CHANGE_LABELS.get(key, key.replace("_", " ").capitalize())
        if isinstance(value, dict):
            text = "; ".join(f"{k}: {', '.join(map(_s, v)) if isinstance(v, list) else _s(v)}"
                             for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(_s(v) for v in value)
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = _s(value).replace("_", " ") if key == "kind" else _s(value)
        out.append((label, text))
    custom = plan.get("custom_role")
    if isinstance(custom, dict):   # a Managed HSM plan defines this local role first: part of the exact change
        actions = custom.get("data_actions")
        listed = ", ".join(_s(a) for a in actions) if isinstance(actions, list) else ""
        out.append(("Defines custom role", f"{_s(custom.get('role_name'))} ({_s(custom.get('name'))}): {listed}"))
    return tuple(out)


def _grant_key(principal: str, vault: str) -> tuple[str, str]:
    return principal.lower(), vault.lower()


def plan_target(f: Any) -> tuple[str, str] | None:
    """(principal, vault id), lower-case, of the write a finding's plan proposes; None without a plan."""
    plan = _d(_d(f).get("plan"))
    principal = _s(plan.get("principal_id") or plan.get("object_id"))
    scope = _s(plan.get("scope") or plan.get("vault_id"))
    if not principal or not scope:
        return None
    marker = "/providers/microsoft.keyvault/"
    low = scope.lower()
    if marker in low:   # a role assignment's scope may be below the vault: the vault's id is its first 9 segments
        parts = scope.split("/")
        scope = "/".join(parts[:9])
    return _grant_key(principal, scope)


def history(record: Mapping[str, Any], grants: Sequence[GrantRecord],
            requests: Sequence[RequestView]) -> tuple[Event, ...]:
    """denied -> proposed -> requested/approved/rejected/expired -> applied -> verified -> revoked, from what the
    finding record, the approval requests and the grant records hold (oldest first)."""
    f = _d(record.get("finding"))
    denial = _d(f.get("denial"))
    events: list[Event] = [Event("denied", _s(denial.get("time")) or None,
                                 f"{_s(denial.get('status'))} {_s(denial.get('error_code'))}".strip())]
    if f.get("plan"):
        events.append(Event("proposed", _s(record.get("time")) or None, _s(_d(f.get("plan")).get("role_name"))))
    granted = {g.id for g in grants}
    for req in requests:
        events += _request_events(req, granted)
    outcome = _s(f.get("outcome"))
    if outcome in ("refused", "failed") and not grants:
        events.append(Event(outcome, _s(record.get("time")) or None, _s(f.get("refused_by") or f.get("error"))))
    for g in grants:
        events += _grant_events(g)
    return tuple(events)


def _request_events(req: RequestView, granted: set[str]) -> list[Event]:
    """A request's part of the history (the approvals core's ``history``: requested, every act, how it ended),
    with an applied end told by the grant record instead when the stores hold it, and a request past its expiry
    that the timer has not ended yet shown expired."""
    out = [e for e in req.events if not (e.state == "applied" and req.grant_id and req.grant_id in granted)]
    if req.state == "expired" and not any(e.state == "expired" for e in out):
        out.append(Event("expired", req.expires, "no decision in time"))
    return out


def _grant_events(g: GrantRecord) -> list[Event]:
    from ..store.encoding import iso

    when = iso(g.time)
    if g.outcome in ("applied", "already_granted"):
        out = [Event(g.outcome.replace("_", " "), when, f"grant {g.id}" + (f" by {g.actor}" if g.actor else ""))]
        if g.after is not None:
            out.append(Event("verified", when, "read back from Azure after the write"))
        if g.revoked_at is not None:
            out.append(Event("revoked", iso(g.revoked_at), _s(g.revoke_detail)))
        return out
    return [Event(g.outcome.replace("_", " "), when, _s(g.refused_by or g.detail))]


def grants_for(record: Mapping[str, Any], by_target: Mapping[tuple[str, str], Sequence[GrantRecord]]) -> list[
        GrantRecord]:
    """The grant records of the write this finding's plan proposed (same principal and vault), oldest first,
    recorded no earlier than the finding's denial."""
    f = _d(record.get("finding"))
    target = plan_target(f)
    if target is None:
        return []
    try:
        since = datetime.fromisoformat(_s(_d(f.get("denial")).get("time")))
    except ValueError:
        since = None
    found = by_target.get(target, ())
    if since is not None and since.tzinfo is not None:
        found = [g for g in found if g.time >= since]
    return sorted(found, key=lambda g: g.time)


def index_grants(grants: Iterable[GrantRecord]) -> dict[tuple[str, str], list[GrantRecord]]:
    """Grant records by (principal, vault), lower-case."""
    out: dict[tuple[str, str], list[GrantRecord]] = {}
    for g in grants:
        if g.principal_id and g.vault_id:
            out.setdefault(_grant_key(g.principal_id, g.vault_id), []).append(g)
    return out


def in_force(grants: Iterable[GrantRecord], now: datetime) -> list[GrantRecord]:
    """Applied grants not revoked and not yet expired."""
    return [g for g in grants if g.outcome == "applied" and g.revoked_at is None
            and (g.expires_at is None or g.expires_at > now)]


CHART_WIDTH = 300
BAR_HEIGHT = 22


def summary(records: Sequence[Mapping[str, Any]], grants: Sequence[GrantRecord], now: datetime) -> Summary:
    """Findings by cause over the last 7 days and the grants in force (by vault)."""
    week = _iso(now - timedelta(days=7))
    counts = Counter(_s(r.get("cause")) or "UNKNOWN" for r in records if _s(r.get("time")) >= week)
    top = max(counts.values(), default=0)
    bars = tuple(Bar(cause, n, max(2, round(CHART_WIDTH * n / top)), i * BAR_HEIGHT)
                 for i, (cause, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    live = in_force(grants, now)
    vaults = Counter(_last_segment(g.vault_id or "") or "unknown" for g in live)
    return Summary(bars, sum(counts.values()), len(live), tuple(sorted(vaults.items())),
                   max(BAR_HEIGHT, len(bars) * BAR_HEIGHT))


def detail_of(record: Mapping[str, Any], grants: Sequence[GrantRecord],
              requests: Sequence[RequestView]) -> Detail:
    """The opened finding."""
    f = _d(record.get("finding"))
    plan = _d(f.get("plan"))
    commands = _d(plan.get("commands"))
    advice = f.get("advice")
    return Detail(row=row_of(record), advice=tuple(_s(a) for a in advice) if isinstance(advice, list) else (),
                  change=change_of(plan), az=_s(commands.get("az")) or None, bicep=_s(commands.get("bicep")) or None,
                  evidence=tree(_d(f.get("evidence"))).children, history=history(record, grants, requests),
                  requests=tuple(requests), refused_by=_s(f.get("refused_by")) or None,
                  reason=_s(f.get("reason") or f.get("error")) or None)


@dataclass(frozen=True)
class PageInput:
    """What the route read for one page: list rows newest first (FindingStore.rows), the opened finding's whole
    record (``id``), applied grant records (grants in force), the
    opened finding's vault's grant records (its history), approval requests by finding id and the pending ones,
    who is looking, the clock and the style nonce."""

    records: Sequence[Mapping[str, Any]]
    opened: Mapping[str, Any] | None
    grants: Sequence[GrantRecord]
    history_grants: Sequence[GrantRecord]
    requests: Sequence[RequestView]
    pending: Sequence[RequestView]
    viewer: Viewer
    now: datetime
    nonce: str
    notice: str = ""


def build(params: Mapping[str, str], data: PageInput, causes: Sequence[str]) -> Page:
    """The page for a query string over what the stores hold."""
    filters = Filters.from_params(params, causes)
    since = filters.since_time(data.now)
    rows = [r for r in map(row_of, data.records) if _matches(r, filters, since)]
    opened = data.opened if (filters.id or filters.approval) else None
    detail = None
    if opened is not None:
        detail = detail_of(opened, grants_for(opened, index_grants(data.history_grants)), data.requests)
    elif filters.id or filters.approval:
        filters = replace(filters, id="", approval="")
    return Page(filters=filters, rows=tuple(rows), shown=len(rows),
                summary=summary(data.records, data.grants, data.now), detail=detail, pending=tuple(data.pending),
                viewer=data.viewer, causes=tuple(causes), nonce=data.nonce, notice=data.notice)


_ISO_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(?:Z|\+00:00)$")


def when(value: str | None) -> str:
    """A recorded UTC time as people read it (``2026-12-07 15:14:27 UTC``); anything else as it is (escaped)."""
    m = _ISO_TIME.match(value or "")
    return f"{m.group(1)} {m.group(2)} UTC" if m else (value or "")


class _Env:
    """The process's Jinja2 environment (templates compiled once), made on first render."""

    def __init__(self) -> None:
        self.env: jinja2.Environment | None = None
        self.lock = threading.Lock()

    def get(self) -> jinja2.Environment:
        with self.lock:
            if self.env is None:
                import jinja2

                self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                                              lstrip_blocks=True, auto_reload=False)
                self.env.filters["when"] = when
            return self.env


_ENV = _Env()


def render(page: Page) -> str:
    """The page as HTML (every value autoescaped)."""
    return _ENV.get().get_template("findings.html.j2").render(page=page, nonce=page.nonce)


def render_outcome(title: str, message: str, *, ok: bool, back: str, nonce: str) -> str:
    """The answer to a decision POST: what happened, and a link back to the finding."""
    return _ENV.get().get_template("decision.html.j2").render(title=title, message=message, ok=ok, back=back,
                                                              nonce=nonce)


def content_security_policy(nonce: str) -> str:
    """No script at all; styles only from the page's nonce'd block; forms post only to this origin."""
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
