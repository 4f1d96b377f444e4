"""The CLI's arguments: what each command takes, its help and its examples."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from .approvals import cmd_approvals, cmd_approve, cmd_reject
from .commands import (
    cmd_demo,
    cmd_diagnose,
    cmd_grants,
    cmd_operations,
    cmd_parse,
    cmd_remediate,
    cmd_revoke,
    cmd_serve,
)

DESCRIPTION = """\
kv-remediate finds out why a request to Azure Key Vault was denied (403, 401 or 429) and how to fix it.

Give it what you have: an Azure Monitor alert, Key Vault audit-log records, or the error text an SDK or the Azure
CLI printed (a file, or - for standard input). It reads the vault, its role assignments or access policies and the
caller from Azure, names the cause (a missing role, a firewall, a disabled secret, throttling, ...) and prints the
least-privilege fix as an az command and Bicep. `remediate --apply` makes that change where your policy allows it,
`grants` lists what was changed, and `revoke` takes it back. Nothing changes unless you ask.

Output is text on a terminal and JSON when piped (or --output json)."""

EPILOG = """\
examples:
  kv-remediate demo                                    # try it on the bundled sample tenant, no Azure needed
  kv-remediate diagnose error.txt                      # why was this denied, and what is the fix?
  kv-remediate diagnose --principal OID --vault kv-payments --operation SecretGet --object secrets/db-password
  az monitor log-analytics query ... | kv-remediate diagnose -   # audit-log rows from a pipe (JSON out)
  kv-remediate remediate alert.json --policy policy.yaml --apply
  kv-remediate operations                              # the operation names --operation accepts
  kv-remediate approvals                               # requests waiting for approval (policy mode approve)

exit codes: 0 done; 2 unusable input, arguments or policy; 3 Azure could not be reached or refused a change;
4 remediate --apply was refused by policy for at least one finding. See docs/cli.md."""


_OUTPUT_HELP = "text (a person reads it; the default on a terminal) or json (the default when piped)"
_SNAPSHOT_HELP = ("serve a tenant described in FILE from the bundled emulator instead of Azure (docs/snapshot.md); "
                  "without it, Azure with DefaultAzureCredential")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join("  " + line for line in lines)


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=["text", "json"], help=_OUTPUT_HELP)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a file with an alert, audit-log records or error text, or - for standard input; several "
                        "files are one batch (none: standard input)")
    p.add_argument("--keep-going", action="store_true",
                   help="process the usable inputs of the batch and list the unusable ones in notes (exit 2 still); "
                        "default: one unusable input stops the whole batch")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    _add_inputs(p)
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--subscription", action="append", metavar="ID",
                   help="subscription to search for vaults (repeatable; default: AZURE_SUBSCRIPTION_IDS)")
    p.add_argument("--principal", metavar="OID", help="instead of INPUT: the caller's object id (a GUID)")
    p.add_argument("--vault", metavar="NAME_OR_ID", help="instead of INPUT: the vault's name or resource id")
    p.add_argument("--operation", metavar="NAME",
                   help="instead of INPUT: what was denied, e.g. SecretGet, KeyDecrypt (`kv-remediate operations`)")
    p.add_argument("--object", metavar="KIND/NAME", help="instead of INPUT: the object, e.g. secrets/db-password")
    _add_output(p)
    _add_cap_args(p)


def _add_cap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-denials", type=int, metavar="N",
                   help="refuse an input that yields more than N denials (default: KV_REMEDIATE_MAX_DENIALS, "
                        "else no cap; 0: no cap)")
    p.add_argument("--max-principals", type=int, metavar="N",
                   help="refuse a batch naming more than N distinct principals (default: "
                        "KV_REMEDIATE_MAX_PRINCIPALS, else no cap; 0: no cap)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="kv-remediate", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"kv-remediate {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="what the input says, no Azure calls", formatter_class=fmt,
                       description="Show the denials an input holds (who, which vault and object, which operation), "
                                   "without calling Azure.",
                       epilog=_examples("kv-remediate parse error.txt",
                                        "kv-remediate parse alert.json rows.json --output json | jq '.denials[]'",
                                        "kv-remediate parse exports/*.json --keep-going   # skip unusable files"))
    _add_inputs(p)
    _add_output(p)
    _add_cap_args(p)
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("diagnose", help="why it failed, and the least-privilege fix", formatter_class=fmt,
                       description="Find why each denial happened, with the evidence read from Azure, and the "
                                   "least-privilege fix (az and Bicep). Changes nothing.",
                       epilog=_examples(
                           "kv-remediate diagnose error.txt",
                           "kv-remediate diagnose --principal f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879 --vault kv-payments "
                           "--operation SecretGet --object secrets/db-password",
                           "kv-remediate diagnose alert.json --snapshot tenant.json   # offline, against a snapshot",
                           "kv-remediate diagnose rows.json --output json | jq -r '.findings[].plan.commands.az'"))
    _add_batch_args(p)
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("remediate", help="diagnose, then apply what policy allows", formatter_class=fmt,
                       description="Diagnose, then (with --apply and a policy whose mode is apply) make the fixes "
                                   "every policy rule allows; ends with what was applied, already granted, refused "
                                   "(by which rule) and failed. Exit 4 when anything was refused, 3 when Azure "
                                   "refused a write.",
                       epilog=_examples(
                           "kv-remediate remediate alert.json --policy policy.yaml            # what would be done",
                           "kv-remediate remediate alert.json --policy policy.yaml --apply",
                           "kv-remediate remediate rows.json --snapshot t.json --policy p.yaml --apply "
                           "--snapshot-out after.json"))
    _add_batch_args(p)
    p.add_argument("--policy", metavar="FILE",
                   help="remediation policy, YAML or JSON (docs/policy.md; default: KV_REMEDIATE_POLICY, else "
                        "suggest only)")
    p.add_argument("--apply", action="store_true",
                   help="apply the plans policy allows (default: only suggest)")
    p.add_argument("--snapshot-out", metavar="FILE",
                   help="with --snapshot: write the tenant as it stands after the run (else the emulator's changes "
                        "are gone when it stops)")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    p.set_defaults(func=cmd_remediate)
    _add_record_commands(sub, fmt)
    _add_approval_commands(sub, fmt)
    return parser


def _add_approval_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """approvals (what waits for people), approve ID and reject ID (an operator's decision)."""
    p = sub.add_parser("approvals", help="approval requests waiting for people", formatter_class=fmt,
                       description="List the approval requests still pending (policy mode approve, or plans above "
                                   "approve_above_tier): id, approvals so far, time left, grantee and the exact "
                                   "change, newest first. Requests past their approval_ttl are ended as expired.",
                       epilog=_examples("kv-remediate approvals", "kv-remediate approvals --all --limit 20",
                                        "kv-remediate approvals --output json | jq -r '.approvals[].id'"))
    p.add_argument("--state", metavar="FILE", help="state database (default ~/.kv-remediate/state.db; the app's "
                   "Tables when KV_REMEDIATE_STORAGE is set)")
    p.add_argument("--all", action="store_true", help="every request, whatever its state")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N requests (default 100)")
    _add_output(p)
    p.set_defaults(func=cmd_approvals)
    for verb, func, what in (("approve", cmd_approve, "approve one request; the approval that completes it re-reads "
                              "the tenant and applies exactly the approved change (or nothing, if it changed)"),
                             ("reject", cmd_reject, "reject one request: it ends, nothing is applied")):
        p = sub.add_parser(verb, help=what.split(";")[0].split(":")[0], formatter_class=fmt,
                           description=what[0].upper() + what[1:] + ". Recorded with who decided (the credential's "
                           "object id, or --as), when, and from which host.",
                           epilog=_examples(f"kv-remediate {verb} 3f0c...   # an id from `kv-remediate approvals`",
                                            f"kv-remediate {verb} ID --snapshot t.json --as OBJECT_ID --snapshot-out "
                                            "t.json"))
        p.add_argument("id", metavar="ID", help="the request id (`kv-remediate approvals`)")
        p.add_argument("--as", dest="as_oid", metavar="OBJECT_ID",
                       help="record the decision under this Entra ID object id (default: the credential's oid)")
        p.add_argument("--reason", metavar="TEXT", help="why (kept with the decision)")
        p.add_argument("--policy", metavar="FILE",
                       help="remediation policy (default: KV_REMEDIATE_POLICY): approvers and min_approvals")
        p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
        p.add_argument("--snapshot-out", metavar="FILE",
                       help="with --snapshot: write the tenant as it stands after the run")
        p.add_argument("--state", metavar="FILE", help="state database (default ~/.kv-remediate/state.db)")
        _add_output(p)
        p.set_defaults(func=func)


def _add_record_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """The commands that read or undo the record, and the ones that show or serve: grants, revoke, operations,
    demo, serve."""
    p = sub.add_parser("grants", help="the audit trail of applied, refused and revoked grants", formatter_class=fmt,
                       description="List the grant records: state, expiry, principal, role or permissions, scope "
                                   "and cause, newest first, with the ids `revoke --grant` takes.",
                       epilog=_examples("kv-remediate grants", "kv-remediate grants --limit 20",
                                        "kv-remediate grants --snapshot tenant.json   # principals by name",
                                        "kv-remediate grants --output json | jq '.grants[] | "
                                        "select(.outcome==\"applied\")'"))
    p.add_argument("--snapshot", metavar="FILE",
                   help="read principals' display names from this tenant snapshot (records live in the state store)")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the N newest records")
    _add_output(p)
    p.set_defaults(func=cmd_grants)

    p = sub.add_parser("revoke", help="remove expired grants, or one recorded grant", formatter_class=fmt,
                       description="Undo what kv-remediate granted: the role assignment it created, or exactly the "
                                   "access-policy permissions it added (others' permissions stay).",
                       epilog=_examples("kv-remediate revoke --expired",
                                        "kv-remediate revoke --grant 0b9f2c4e-...   # an id from `kv-remediate grants`",
                                        "kv-remediate revoke --reconcile   # what the app's timer does"))
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expired", action="store_true", help="revoke every grant whose time limit has passed")
    g.add_argument("--grant", metavar="ID", help="revoke this one grant (an id from `kv-remediate grants`)")
    g.add_argument("--reconcile", action="store_true",
                   help="what the revocation timer does: settle intents a crash left pending (reading Azure), "
                        "revoke expired grants, delete expired role assignments labelled as ours with no record")
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--snapshot-out", metavar="FILE",
                   help="with --snapshot: write the tenant as it stands after the run")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    _add_output(p)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("operations", help="the operation names, with their data action and access-policy permission",
                       formatter_class=fmt,
                       description="List the Key Vault operations kv-remediate knows (the audit log's OperationName, "
                                   "what --operation takes), each with the RBAC data action and the access-policy "
                                   "permission it needs.",
                       epilog=_examples("kv-remediate operations", "kv-remediate operations --kind keys",
                                        "kv-remediate operations --output json | jq -r '.operations[].name'"))
    p.add_argument("--kind", choices=["keys", "secrets", "certificates", "storage"], help="only this object kind")
    _add_output(p)
    p.set_defaults(func=cmd_operations)

    p = sub.add_parser("demo", help="the main job on the bundled sample tenant", formatter_class=fmt,
                       description="Diagnose the bundled sample inputs against the bundled sample tenant (5 vaults, "
                                   "12 principals) in the local emulator: no Azure account needed.",
                       epilog=_examples("kv-remediate demo", "kv-remediate demo --output json | jq '.stats'"))
    _add_output(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="the function app's routes and queue worker on loopback (like func start)",
                       formatter_class=fmt,
                       description="Run the function app's HTTP routes and queue worker on loopback, as `func start` "
                                   "would (README, \"Local serve\"). Without a storage setting (AzureWebJobsStorage) "
                                   "it starts the bundled Azurite (in memory) and stops it on exit.",
                       epilog=_examples("kv-remediate serve --snapshot remediate/demo/tenant.json",
                                        "kv-remediate serve --port 7072 --workers 2"))
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7071, help="port to listen on (default 7071, as func start)")
    p.add_argument("--workers", type=int, default=1, help="queue worker processes (0: HTTP only)")
    p.add_argument("--function-key", metavar="KEY",
                   help="the function key routes require (default: KV_REMEDIATE_FUNCTION_KEY, else a random key "
                        "generated and printed at start)")
    p.add_argument("--insecure-no-key", action="store_true",
                   help="accept requests without a function key (Host/Origin checks and CSRF refusal still apply)")
    p.add_argument("--worker-restarts", type=int, default=5, metavar="N",
                   help="restart a dead worker process at most N times within 5 minutes (back-off 1, 2, 4... s); "
                        "past that, serve stops with exit 1 (default 5; 0: never restart)")
    p.set_defaults(func=cmd_serve)
