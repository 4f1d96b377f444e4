"""Text rendering of a diagnosis for a person at a terminal: per finding the verdict, the evidence tree and the
fix; the demo's compact table with a numbered detail list; the outcome summary of ``remediate --apply``.

Everything fits ``WIDTH`` (120) columns: prose wraps, ``az`` commands break between arguments with a shell line
continuation (so a pasted command is still one command), and no id is ever split or cut with an ellipsis.
Names are the same everywhere: the principal's display name and type when known (``Names``), the vault as ARM
spells it.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..armid import VAULT_ID_SEGMENTS
from ..model import AccessPolicyPlan, Finding, RoleAssignmentPlan
from .table import aligned

if TYPE_CHECKING:
    from ..service import DiagnosisStats

WIDTH = 120   # the terminal width text output is laid out for (a narrower terminal wraps lines, nothing is cut)
TYPE_WORDS = {"serviceprincipal": "service principal", "user": "user", "group": "group", "app": "application"}
"""A principal's type (Graph's, or the token's ``idtyp``) in words: the same in the text and in the JSON's
``explanation`` sentence."""


@dataclass(frozen=True)
class Names:
    """What a person reads instead of bare ids: display names by lower-case object id (principals and groups, from
    Graph), and vault names as ARM spells them, by lower-case name."""

    principals: dict[str, str] = field(default_factory=dict)
    vaults: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def of(findings: Sequence[Finding], principals: dict[str, str] | None = None) -> Names:
        """The names the findings' own evidence carries (ARM's vault spelling, Graph's display names), plus
        ``principals`` looked up separately (one Graph call for the people reading the output)."""
        people = {k.lower(): v for k, v in (principals or {}).items()}
        vaults: dict[str, str] = {}
        for f in findings:
            p, v = f.evidence.principal, f.evidence.vault
            if p is not None and p.display_name and p.object_id:
                people.setdefault(p.object_id.lower(), p.display_name)
            if v is not None and v.name:
                vaults[v.name.lower()] = v.name
        return Names(people, vaults)


def principal_ids(findings: Sequence[Finding]) -> list[str]:
    """Every principal and group id a text report of ``findings`` names (for one display-name lookup)."""
    ids: list[str] = []
    for f in findings:
        ids.append(f.denial.principal.object_id or "")
        ev = f.evidence
        ids += list(ev.principal.groups) if ev.principal is not None else []
        ids += [a.principal_id for a in ev.role_assignments if a.via != "direct"]
        ids += [a.object_id for a in ev.access_policies]
    return sorted({i.lower() for i in ids if i})


def _type_word(f: Finding) -> str | None:
    p = f.evidence.principal
    plan_type = getattr(f.plan, "principal_type", None)
    kind = (p.type if p is not None else None) or plan_type or f.denial.principal.kind
    return TYPE_WORDS.get(str(kind).lower()) if kind else None


def _name(f: Finding, names: Names) -> str | None:
    p = f.denial.principal
    known = f.evidence.principal.display_name if f.evidence.principal is not None else None
    return known or names.principals.get((p.object_id or "").lower())


def who_short(f: Finding, names: Names) -> str:
    """The caller in a table cell: the display name when known, else its id (or "unknown")."""
    p = f.denial.principal
    return _name(f, names) or p.upn or p.object_id or p.app_id or "unknown"


def who_full(f: Finding, names: Names) -> str:
    """The caller in full: display name, type and id, e.g. "app-orders, service principal f5cc68ab-...".
    The same wording in ``demo``, ``diagnose`` and ``remediate``."""
    p = f.denial.principal
    ident = p.upn or p.object_id or (f"app {p.app_id}" if p.app_id else None)
    if ident is None:
        return "unknown caller (the input does not name it)"
    typ, name = _type_word(f), _name(f, names)
    if p.upn and p.object_id and p.upn != p.object_id:
        ident = f"{p.upn} ({p.object_id})"
    label = ", ".join(x for x in (name, typ) if x)
    return f"{label} {ident}" if label and typ else (f"{label}, {ident}" if label else ident)


def vault_name(f: Finding, names: Names) -> str:
    """The vault as ARM spells it (the input's spelling only when ARM never named it in this batch)."""
    v = f.denial.vault
    known = f.evidence.vault.name if f.evidence.vault is not None else None
    raw = v.name or (v.resource_id.rsplit("/", 1)[-1] if v.resource_id else None)
    if known:
        return str(known)
    if raw:
        return names.vaults.get(raw.lower(), raw)
    return "unknown vault"


def where(f: Finding, names: Names) -> str:
    """``vault/kind/name`` (or the vault alone)."""
    o = f.denial.object
    vault = vault_name(f, names)
    return f"{vault}/{o.kind}/{o.name}" if o and o.name else vault


def _who(f: Finding, names: dict[str, str] | None = None) -> str:
    return who_full(f, Names.of([f], names))


def _where(f: Finding) -> str:
    return where(f, Names.of([f]))


def fix_summary(f: Finding) -> str:
    """One short line: what the plan does, or the gist of the advice (whole: the caller wraps it)."""
    p = f.plan
    if isinstance(p, RoleAssignmentPlan):
        scope = "object" if len(p.scope.split("/")) > VAULT_ID_SEGMENTS else "vault"
        return f"assign {p.role_name} at {scope}" + (" (privileged)" if p.privileged else "")
    if isinstance(p, AccessPolicyPlan):
        return "access policy add " + "; ".join(f"{k} {'/'.join(v)}" for k, v in p.add.items())
    return f.advice[0] if f.advice else "no change needed"


def split_command(command: str) -> tuple[str, str]:
    """(the command, its trailing ``# comment``), split at a ``#`` outside quotes that follows a space."""
    quote = None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i and command[i - 1] == " ":
            return command[:i].rstrip(), command[i + 1:].strip()
    return command, ""


def _args(command: str) -> list[str]:
    """The command cut before each `` --option`` and ``&&`` outside quotes (an option and its value stay together)."""
    out, start, quote = [], 0, None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif command.startswith((" --", " && "), i):
            out.append(command[start:i])
            start = i + 1
    out.append(command[start:])
    return out


def command_lines(command: str, indent: str = "", width: int = WIDTH) -> list[str]:
    """A shell command laid out to fit ``width``: its comment first as ``#`` lines, then the command broken between
    options with `` \\`` continuations (pasted, it is still one command); a single value longer than a line (a JSON
    body) stays whole."""
    body, comment = split_command(command)
    out = [indent + "# " + c for c in textwrap.wrap(comment, max(width - len(indent) - 2, 20))] if comment else []
    line = ""
    for arg in _args(body):
        if line and len(indent) + len(line) + 1 + len(arg) + 2 > width:
            out.append(f"{indent}{line} \\")
            line = "  " + arg
            option, _, value = arg.partition(" ")
            if len(indent) + len(line) + 2 > width and option.startswith("--") and value:
                out.append(f"{indent}  {option} \\")   # the value on a line of its own: it stays whole
                line = "    " + value
        else:
            line = f"{line} {arg}" if line else arg
    out.append(indent + line)
    return out


def wrap_text(text: str, indent: str, width: int = WIDTH, first: str | None = None) -> list[str]:
    """Prose wrapped to ``width`` at spaces (an id or URL longer than a line stays whole)."""
    return textwrap.wrap(text, width, initial_indent=indent if first is None else first, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [first or indent]


def summary_line(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats) -> str:
    grants = sum(1 for f in findings if f.plan is not None)
    return (f"{stats.denials} denial(s) -> {len(findings)} finding(s), {grants} with a grant to propose, "
            f"{len(findings) - grants} with advice only; {stats.requests.arm_requests} Azure request(s) in "
            f"{stats.elapsed_ms} ms")


def table(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats,
          names: dict[str, str] | None = None, width: int = WIDTH) -> str:
    """The demo's view: a compact table (#, cause, who, vault/object, operation), the summary line, then the
    numbered details (the caller's name, type and id, the fix and its command, the advice)."""
    known = Names.of(findings, names)
    rows = [[str(i), f.cause, who_short(f, known), where(f, known),
             (f.denial.operation or "?") + (f" x{f.occurrences}" if f.occurrences > 1 else "")]
            for i, f in enumerate(findings, 1)]
    head = "\n".join(aligned(["#", "CAUSE", "WHO", "VAULT/OBJECT", "OPERATION"], rows, width=width,
                               wrap=("WHO", "VAULT/OBJECT")))
    details = [detail(i, f, known, width) for i, f in enumerate(findings, 1)]
    return "\n\n".join([head, summary_line(findings, stats), *details])


def detail(i: int, f: Finding, names: Names, width: int = WIDTH) -> str:
    """One numbered finding of the demo's detail list."""
    pad = " " * 4
    times = f" (x{f.occurrences})" if f.occurrences > 1 else ""
    lines = [f"{i:>2}  {f.cause}{times}"]
    lines += wrap_text(who_full(f, names), pad + " " * 8, width, pad + "who:    ")
    lines += wrap_text(f"{where(f, names)}, {f.denial.operation or 'operation unknown'}", pad + " " * 8, width,
                       pad + "where:  ")
    if f.plan is not None:
        lines += wrap_text(fix_summary(f), pad + " " * 8, width, pad + "fix:    ")
        lines += command_lines(f.plan.commands["az"], pad + " " * 8, width)
    for n, a in enumerate(f.advice):
        lines += wrap_text(a, pad + " " * 8, width, pad + ("advice: " if n == 0 else " " * 8))
    return "\n".join(lines)


def _mark(ok: bool | None) -> str:
    return {True: "grants", False: "no", None: "?"}[ok]


def _group(gid: str, names: Names) -> str:
    name = names.principals.get(gid.lower())
    return f"{name} ({gid})" if name else gid


def evidence_tree(f: Finding, names: Names | None = None) -> list[str]:
    """The evidence behind a verdict, drawn as a tree a person can check (groups by name when Graph gave one)."""
    names = names or Names.of([f])
    ev = f.evidence
    out: list[str] = []
    p = ev.principal
    if p:
        kind = p.type or f.denial.principal.kind or "principal"
        out.append(f"├─ caller: {_name(f, names) or p.object_id} [{kind}]")
        if p.groups_known:
            groups = [_group(g, names) for g in p.groups]
            out.append(f"│  └─ groups: {', '.join(groups) if groups else '(none)'}")
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
            via = "" if a.via == "direct" else f" via group {_group(a.principal_id, names)}"
            out.append(f"│  {branch} {a.role_name or a.role_definition_id} at {a.scope}{via}: "
                       f"{_mark(a.grants)} — {a.reason}")
    aps = ev.access_policies
    if aps or (v and v.permission_model == "access_policy"):
        out.append(f"├─ access-policy entries for the caller or its groups: {len(aps)} "
                   f"(of {v.access_policy_entries if v else 0})")
        for i, e in enumerate(aps):
            branch = "└─" if i == len(aps) - 1 else "├─"
            app = f" app {e.application_id}" if e.application_id else ""
            out.append(f"│  {branch} {_group(e.object_id, names)}{app}: {_mark(e.grants)} — {e.reason}")
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


def _waiting_text(o: dict[str, Any]) -> str:
    """A plan only suggested, or waiting for people to approve it (its request id and how to decide)."""
    if o.get("approval_id"):
        return (f"Waiting for approval (request {o.get('approval_id')}): {o.get('reason')}; decide with "
                f"`kv-remediate approve {o.get('approval_id')}` or on the findings page")
    if o.get("outcome") == "pending_approval":
        return "No change: " + str(o.get("detail") or "pending approval")
    return f"Suggested only ({o.get('refused_by')}): {o.get('reason')}"


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
    if kind in ("suggested", "pending_approval"):
        return _waiting_text(o)
    return "No change: " + str(o.get("detail") or kind)


def _wrap_tree(line: str, width: int) -> list[str]:
    """An evidence-tree line wrapped under its own branch (ids stay whole)."""
    if len(line) <= width:
        return [line]
    stem = len(line) - len(line.lstrip(" │├└─"))
    cont = "".join("│" if c in "│├" else " " for c in line[:stem])
    return wrap_text(line[stem:], cont + "   ", width, line[:stem])


def finding_text(f: Finding, names: Names | None = None, width: int = WIDTH) -> str:
    """One finding: headline, explanation, evidence tree, fix and advice, wrapped to ``width``."""
    names = names or Names.of([f])
    times = f" (x{f.occurrences})" if f.occurrences > 1 else ""
    lines = wrap_text(f"● {f.cause}{times}: {who_full(f, names)} → {where(f, names)} "
                      f"[{f.denial.operation or '?'}]", "    ", width, "")
    lines += wrap_text(f.explanation, "  ", width)
    tree = evidence_tree(f, names)
    if tree:
        lines.append("  evidence:")
        for t in tree:
            lines += _wrap_tree("  " + t, width)
    if f.plan is not None:
        lines += ["  fix:", *command_lines(f.plan.commands["az"], "    ", width)]
        alts = getattr(f.plan, "alternatives", ())
        for alt in alts:
            lines += ["  narrower alternative (custom role):", *command_lines(alt.commands["az"], "    ", width)]
    if f.outcome:
        lines += wrap_text(outcome_text(f.outcome.to_dict()), "    ", width, "  ")
    for a in f.advice:
        lines += wrap_text(a, "    ", width, "  → ")
    return "\n".join(lines)


def report(findings: list[Finding] | tuple[Finding, ...], stats: DiagnosisStats, notes: tuple[str, ...] = (),
           names: dict[str, str] | None = None, width: int = WIDTH) -> str:
    """The full text report of ``diagnose`` (and ``remediate``, whose outcome summary follows it)."""
    known = Names.of(findings, names)
    parts = [finding_text(f, known, width) for f in findings] or ["no denials to diagnose"]
    parts += ["\n".join(wrap_text(f"note: {n}", "  ", width)) for n in notes]
    parts.append(summary_line(findings, stats))
    return "\n\n".join(parts)


# --- remediate --apply: what happened, counted -----------------------------------------------------------------

def refusals(findings: Sequence[Finding], requested: bool) -> Counter[str]:
    """Plans refused, by the rule that refused them; under ``--apply`` a ``suggested`` outcome is a refusal too
    (by ``mode``: the policy says suggest), since the operator asked for a change that was not made."""
    out: Counter[str] = Counter()
    for f in findings:
        o = f.outcome
        if o is not None and (o.outcome == "refused" or (requested and o.outcome == "suggested")):
            out[o.refused_by or "policy"] += 1
    return out


def outcome_counts(findings: Sequence[Finding]) -> Counter[str]:
    """Findings by outcome (applied, already_granted, refused, suggested, failed, pending_approval, no_plan)."""
    return Counter(f.outcome.outcome if f.outcome is not None else "no_plan" for f in findings)


def apply_summary(findings: Sequence[Finding], requested: bool, snapshot: bool = False,
                  snapshot_out: str | None = None) -> str:
    """The closing lines of ``remediate``: applied / already granted / refused (by rule) / failed, counted; and,
    against a snapshot without ``--snapshot-out``, that the changes lived in the emulator only."""
    counts = outcome_counts(findings)
    refused = refusals(findings, requested)
    if not requested:
        head = (f"suggest only (no --apply): {sum(1 for f in findings if f.plan is not None)} plan(s) proposed, "
                "nothing changed")
    else:
        parts = [f"applied {counts['applied']}", f"already granted {counts['already_granted']}",
                 f"refused {sum(refused.values())}" + (" (" + ", ".join(f"{r}: {n}" for r, n in
                                                          sorted(refused.items())) + ")" if refused else ""),
                 f"failed {counts['failed']}"]
        if counts["pending_approval"]:
            parts.append(f"pending approval {counts['pending_approval']}")
        parts.append(f"no grant needed {counts['no_plan']}")
        head = "remediate --apply: " + ", ".join(parts)
    lines = wrap_text(head, "  ")
    repeated = [f.outcome.grant_id for f in findings if f.outcome is not None and f.outcome.repeats]
    if requested and repeated:
        lines += wrap_text(f"{len(repeated)} of the applied were the same write as an earlier grant, made again "
                           "(the emulator starts from the snapshot each run): counted on that grant's record ("
                           + ", ".join(str(g) for g in repeated) + "), not recorded twice", "  ")
    changed = counts["applied"] + counts["pending_approval"]
    if snapshot and requested and changed and not snapshot_out:
        lines += wrap_text(f"note: {changed} change(s) were made in the bundled emulator only, and are gone now that "
                           "it has stopped; add --snapshot-out FILE to keep the tenant as it stands after the run",
                           "  ")
    elif snapshot and snapshot_out and requested:
        lines.append(f"the tenant after the run was written to {snapshot_out}")
    return "\n".join(lines)
