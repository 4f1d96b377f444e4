"""Text rendering of a diagnosis: per finding the verdict, the evidence tree and the fix; and the demo table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import AccessPolicyPlan, Finding, RoleAssignmentPlan

if TYPE_CHECKING:
    from ..service import DiagnosisStats


def _who(f: Finding, names: dict[str, str] | None = None) -> str:
    p = f.denial.principal
    known = f.evidence.principal
    name = (known.display_name if known else None) or (names or {}).get((p.object_id or "").lower())
    ident = p.upn or p.object_id or p.app_id or "?"
    return f"{name} ({ident})" if name else ident


def _where(f: Finding) -> str:
    v = f.denial.vault
    known = f.evidence.vault
    vault = (known.name if known else None) or v.name or (v.resource_id.rsplit("/", 1)[-1] if v.resource_id else "?")
    o = f.denial.object
    return f"{vault}/{o.kind}/{o.name}" if o and o.name else vault


def fix_summary(f: Finding) -> str:
    """One short line: what the plan does, or the gist of the advice."""
    p = f.plan
    if isinstance(p, RoleAssignmentPlan):
        scope = "object" if p.scope.count("/") > 8 else "vault"
        return f"assign {p.role_name} at {scope}" + (" (privileged)" if p.privileged else "")
    if isinstance(p, AccessPolicyPlan):
        return "access policy add " + "; ".join(f"{k} {'/'.join(v)}" for k, v in p.add.items())
    return (f.advice[0] if f.advice else "no change needed")[:70]


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [min(max(len(r[i]) for r in [headers, *rows]), 48) for i in range(len(headers))]
    def line(r: list[str]) -> str:
        cells = [(c if len(c) <= widths[i] else c[: widths[i] - 1] + "…").ljust(widths[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def summary_line(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats) -> str:
    grants = sum(1 for f in findings if f.plan is not None)
    return (f"{stats.denials} denial(s) -> {len(findings)} finding(s), {grants} with a grant to propose, "
            f"{len(findings) - grants} with advice only; {stats.requests.arm_requests} Azure request(s) in "
            f"{stats.elapsed_ms} ms")


def table(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats,
          names: dict[str, str] | None = None) -> str:
    """The demo table: cause, who, vault/object, operation, fix; then the summary line."""
    rows = [[f.cause, _who(f, names), _where(f),
             (f.denial.operation or "?") + (f" x{f.occurrences}" if f.occurrences > 1 else ""), fix_summary(f)]
            for f in findings]
    return _table(rows, ["CAUSE", "WHO", "VAULT/OBJECT", "OPERATION", "FIX"]) + "\n\n" + summary_line(findings, stats)


def _mark(ok: bool | None) -> str:
    return {True: "grants", False: "no", None: "?"}[ok]


def evidence_tree(f: Finding) -> list[str]:
    """The evidence behind a verdict, drawn as a tree a person can check."""
    ev = f.evidence
    out: list[str] = []
    p = ev.principal
    if p:
        kind = p.type or f.denial.principal.kind or "principal"
        out.append(f"├─ caller: {p.display_name or p.object_id} [{kind}]")
        if p.groups_known:
            out.append(f"│  └─ groups: {', '.join(p.groups) if p.groups else '(none)'}")
        else:
            out.append("│  └─ groups: not read (not needed, or Graph not permitted)")
    v = ev.vault
    if v:
        net = v.network_default_action or "Allow"
        out.append(f"├─ vault: {v.name} — model {v.permission_model}, network default {net}"
                   + (f", public access {v.public_network_access}" if v.public_network_access else ""))
    ras = ev.role_assignments
    if ras or (v and v.permission_model == "rbac"):
        out.append(f"├─ role assignments considered: {len(ras)}")
        for i, a in enumerate(ras):
            branch = "└─" if i == len(ras) - 1 else "├─"
            via = "" if a.via == "direct" else f" via group {a.principal_id}"
            out.append(f"│  {branch} {a.role_name or a.role_definition_id} at {a.scope}{via}: "
                       f"{_mark(a.grants)} — {a.reason}")
    aps = ev.access_policies
    if aps or (v and v.permission_model == "access_policy"):
        out.append(f"├─ access-policy entries for the caller or its groups: {len(aps)} "
                   f"(of {v.access_policy_entries if v else 0})")
        for i, e in enumerate(aps):
            branch = "└─" if i == len(aps) - 1 else "├─"
            app = f" app {e.application_id}" if e.application_id else ""
            out.append(f"│  {branch} {e.object_id}{app}: {_mark(e.grants)} — {e.reason}")
    denies = ev.deny_assignments
    if denies:
        out.append(f"├─ deny assignments: {len(denies)}")
        for i, d in enumerate(denies):
            branch = "└─" if i == len(denies) - 1 else "├─"
            out.append(f"│  {branch} {d.name} at {d.scope}: {'APPLIES' if d.applies else 'no'}")
    for lim in ev.limitations:
        out.append(f"├─ not checked: {lim}")
    if out:
        out[-1] = out[-1].replace("├─", "└─", 1)
    return out


def outcome_text(o: dict[str, Any]) -> str:
    """What remediate did with a finding, in one line."""
    kind = o.get("outcome")
    if kind == "applied":
        return f"Applied (grant {o.get('grant_id')}" + (f", expires {o['expires_at']}" if o.get("expires_at")
                                                        else "") + ")"
    if kind == "already_granted":
        return "Already granted: nothing changed"
    if kind == "refused":
        return f"Refused by policy rule '{o.get('refused_by')}': {o.get('reason')}"
    if kind == "failed":
        return f"FAILED: {o.get('error')}"
    if kind == "suggested":
        return f"Suggested only ({o.get('refused_by')}): {o.get('reason')}"
    return "No change: " + str(o.get("detail") or kind)


def finding_text(f: Finding) -> str:
    """One finding: headline, explanation, evidence tree, fix and advice."""
    times = f" (x{f.occurrences})" if f.occurrences > 1 else ""
    lines = [f"● {f.cause}{times}: {_who(f)} → {_where(f)} [{f.denial.operation or '?'}]",
             f"  {f.explanation}"]
    tree = evidence_tree(f)
    if tree:
        lines += ["  evidence:", *("  " + t for t in tree)]
    if f.plan is not None:
        lines += ["  fix:", f"    {f.plan.commands['az']}"]
        alts = getattr(f.plan, "alternatives", ())
        for alt in alts:
            lines += ["  narrower alternative (custom role):", f"    {alt.commands['az']}"]
    if f.outcome is not None:
        lines.append("  " + outcome_text(f.outcome.to_dict()))
    for a in f.advice:
        lines.append(f"  → {a}")
    return "\n".join(lines)


def report(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats,
           notes: tuple[str, ...] = ()) -> str:
    """The full text report of ``diagnose``."""
    parts = [finding_text(f) for f in findings] or ["no denials to diagnose"]
    parts += [f"note: {n}" for n in notes]
    parts.append(summary_line(findings, stats))
    return "\n\n".join(parts)
