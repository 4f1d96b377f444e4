"""Pure policy (spec/policy.md): the policy file's schema, its validation, and whether a plan may be applied.

The file is validated by ``PolicyFile`` (a ``msgspec`` struct: types, ranges, unknown keys); its errors are
turned into a message naming the key and what is wrong. The defaults change nothing (suggest only, no scopes).
A plan is applied only when every rule allows it; the first rule that refuses is named in the finding
(``refused_by``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from . import catalog
from .armid import GUID_PATTERN, GrantScope, is_guid, parse_grant_scope, parse_vault_id, within
from .errors import PolicyError, clip
from .model import (
    PERMISSION_KINDS,
    AccessPolicyPlan,
    Finding,
    HsmRoleAssignmentPlan,
    Plan,
    Proof,
    RoleAssignmentPlan,
)

_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")
ObjectId = Annotated[str, msgspec.Meta(pattern=GUID_PATTERN, description="an Entra ID object id (GUID)")]
ScopePrefix = Annotated[str, msgspec.Meta(pattern="^/.*[^/]", description="a resource-id prefix (not '/')")]


class Principals(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Allow and deny lists of object ids; deny wins, an empty allow list allows everyone."""

    allow: list[ObjectId] | None = None
    deny: list[ObjectId] | None = None


class PolicyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The policy file (docs/policy.md), field for field and in its order: what kv-remediate may change."""

    mode: Literal["suggest", "apply", "approve"] = "suggest"
    scopes: list[ScopePrefix] = msgspec.field(default_factory=list)
    principal_types: list[Literal["ServicePrincipal", "User"]] = msgspec.field(
        default_factory=lambda: ["ServicePrincipal"])
    principals: Principals | None = None
    max_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] = 1
    allow_privileged: bool = False
    object_scope: bool = False
    grant_ttl: str | None = None
    use_pim: bool = False
    max_grants_per_hour: Annotated[int, msgspec.Meta(ge=0)] = 20
    approve_above_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    approval_ttl: str = "PT24H"
    approvers: list[ObjectId] | None = None
    min_approvals: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None


KEYS = frozenset(PolicyFile.__struct_fields__)
_PROBLEMS = {
    "mode": "must be 'suggest', 'apply' or 'approve', not {value!r}",
    "scopes": "must be a list of resource-id prefixes starting with '/'",
    "principal_types": "must be a list of ServicePrincipal and/or User (never Group)",
    "principals": "must be a mapping with optional 'allow' and 'deny' lists",
    "principals.allow": "must be a list of object ids (GUIDs)",
    "principals.deny": "must be a list of object ids (GUIDs)",
    "max_tier": "must be an integer from 0 to 3, not {value!r}",
    "max_grants_per_hour": "must be a non-negative integer, not {value!r}",
    "grant_ttl": "must be a positive ISO 8601 duration such as PT8H, not {value!r}",
    "allow_privileged": "must be true or false, not {value!r}",
    "object_scope": "must be true or false, not {value!r}",
    "use_pim": "must be true or false, not {value!r}",
    "approve_above_tier": "must be an integer from 0 to 3 (or null), not {value!r}",
    "approval_ttl": "must be a positive ISO 8601 duration such as PT24H, not {value!r}",
    "approvers": "must be a list of Entra ID object ids (GUIDs)",
    "min_approvals": "must be an integer from 1 to 10 (or null), not {value!r}",
}
DEFAULT_APPROVAL_TTL = "PT24H"
HIGH_TIER = 2
"""From this tier up, a request needs two distinct approvers unless ``min_approvals`` says otherwise."""
_WHERE = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")


def _problem(data: dict[str, Any], error: msgspec.ValidationError) -> tuple[str, str]:
    """The key (dotted, list positions dropped) and what is wrong with it, from msgspec's error."""
    text = str(error)
    where = _WHERE.search(text)
    path = where.group(1) if where else ""
    key = ".".join(re.sub(r"\[\d+\]", "", path).split(".")[1:])
    unknown = sorted(str(k) for k in set(data) - KEYS)
    if unknown:  # named before any other problem, the first by name (whichever msgspec met first)
        return unknown[0], f"is not a policy key (known keys: {', '.join(sorted(KEYS))})"
    value = data.get(key.split(".")[0])
    if key == "scopes" and isinstance(value, list) and all(isinstance(s, str) and s.startswith("/") for s in value):
        return key, "must not contain '/' (the whole tenant); name subscriptions, groups or vaults"
    return key, _PROBLEMS.get(key, "is not valid ({text})").format(value=value, text=text)


@dataclass(frozen=True)
class Policy:
    """What kv-remediate may change, as the guard reads it (``PolicyFile`` validated). The defaults are
    suggest-only."""

    mode: str = "suggest"
    scopes: tuple[str, ...] = ()
    principal_types: tuple[str, ...] = ("ServicePrincipal",)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_tier: int = 1
    allow_privileged: bool = False
    object_scope: bool = False
    grant_ttl: timedelta | None = None
    grant_ttl_text: str | None = None
    use_pim: bool = False
    max_grants_per_hour: int = 20
    approve_above_tier: int | None = None
    approval_ttl: timedelta = timedelta(hours=24)
    approval_ttl_text: str = DEFAULT_APPROVAL_TTL
    approvers: tuple[str, ...] = ()
    min_approvals: int | None = None
    source: str = "defaults"

    def required_approvals(self, tier: int) -> int:
        """How many distinct approvers a request for a write of ``tier`` needs: ``min_approvals`` when set,
        else 2 from tier 2 (change) up and 1 below."""
        if self.min_approvals is not None:
            return self.min_approvals
        return 2 if tier >= HIGH_TIER else 1

    def as_file(self) -> PolicyFile:
        """The policy as its file would say it."""
        return PolicyFile(mode=self.mode, scopes=list(self.scopes),  # type: ignore[arg-type]
                          principal_types=list(self.principal_types),  # type: ignore[arg-type]
                          principals=Principals(list(self.allow), list(self.deny)), max_tier=self.max_tier,
                          allow_privileged=self.allow_privileged, object_scope=self.object_scope,
                          grant_ttl=self.grant_ttl_text, use_pim=self.use_pim,
                          max_grants_per_hour=self.max_grants_per_hour, approve_above_tier=self.approve_above_tier,
                          approval_ttl=self.approval_ttl_text,
                          approvers=list(self.approvers) if self.approvers else None,
                          min_approvals=self.min_approvals)

    def to_dict(self) -> dict[str, Any]:
        """The policy file's JSON (every key, in the file's order)."""
        out: dict[str, Any] = msgspec.to_builtins(self.as_file())
        return out


def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration of days, hours, minutes and seconds (``PT8H``, ``P1DT12H``), or None."""
    m = _DURATION.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT"):
        return None
    d, h, mi, s = (int(m.group(g) or 0) for g in "dhms")
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def _bad(source: str, key: str, problem: str) -> PolicyError:
    return PolicyError(f"policy {source}: key '{key}' {problem}")


def policy_from_dict(data: Any, source: str = "policy") -> Policy:
    """Validate a parsed policy document (``PolicyFile``); the error names the key and what is wrong."""
    if data is None:
        return Policy(source=source)
    mapping = f"policy {source}: must be a mapping of keys ({', '.join(sorted(KEYS))})"
    if not isinstance(data, dict):
        raise PolicyError(mapping)
    if "principals" in data and not data["principals"]:
        data = {**data, "principals": None}  # an empty value (``principals: []``) has always meant no lists
    try:
        doc = msgspec.convert(data, PolicyFile)
    except msgspec.ValidationError as exc:
        key, problem = _problem(data, exc)
        raise (_bad(source, key, problem) if key else PolicyError(mapping)) from exc
    ttl = parse_duration(doc.grant_ttl) if doc.grant_ttl is not None else None
    if doc.grant_ttl is not None and (ttl is None or ttl <= timedelta(0)):
        raise _bad(source, "grant_ttl", _PROBLEMS["grant_ttl"].format(value=doc.grant_ttl))
    approval_ttl = parse_duration(doc.approval_ttl)
    if approval_ttl is None or approval_ttl <= timedelta(0):
        raise _bad(source, "approval_ttl", _PROBLEMS["approval_ttl"].format(value=doc.approval_ttl))
    approvers = tuple(dict.fromkeys(x.lower() for x in doc.approvers or ()))
    if approvers and doc.min_approvals is not None and doc.min_approvals > len(approvers):
        raise _bad(source, "min_approvals", f"is {doc.min_approvals}, more than the {len(approvers)} distinct "
                   "approvers listed: no request could ever be approved; list more approvers or lower it")
    principals = doc.principals or Principals()
    return Policy(mode=doc.mode, scopes=tuple(doc.scopes), principal_types=tuple(doc.principal_types),
                  allow=tuple(x.lower() for x in principals.allow or ()),
                  deny=tuple(x.lower() for x in principals.deny or ()), max_tier=doc.max_tier,
                  allow_privileged=doc.allow_privileged, object_scope=doc.object_scope, grant_ttl=ttl,
                  grant_ttl_text=doc.grant_ttl, use_pim=doc.use_pim, max_grants_per_hour=doc.max_grants_per_hour,
                  approve_above_tier=doc.approve_above_tier, approval_ttl=approval_ttl,
                  approval_ttl_text=doc.approval_ttl, approvers=approvers, min_approvals=doc.min_approvals,
                  source=source)


def parse_policy(text: str, source: str) -> Policy:
    """A policy from YAML or JSON text."""
    import yaml

    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        where = clip(str(exc), 160)
        raise PolicyError(f"policy {source}: is neither valid YAML nor JSON ({where})") from exc
    return policy_from_dict(data, source)


POLICY_SETTING = "KV_REMEDIATE_POLICY"


def load_policy(path: str | None = None, env: Mapping[str, str] | None = None) -> Policy:
    """The policy from ``path``, else the setting KV_REMEDIATE_POLICY (a file path, or the YAML/JSON itself),
    else the defaults (suggest only). Errors name the file or setting, and the key."""
    import os

    source = path
    if source is None:
        raw = ((os.environ if env is None else env).get(POLICY_SETTING) or "").strip()
        if not raw:
            return policy_from_dict(None, "defaults")
        if "\n" in raw or raw.startswith("{") or not Path(raw).is_file():
            return parse_policy(raw, f"setting {POLICY_SETTING}")
        source = raw
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy {source}: cannot be read ({type(exc).__name__}: {exc})") from exc
    return parse_policy(text, source)


@dataclass(frozen=True)
class Verdict:
    """Whether a plan may be applied; when not, the rule that refused it and why."""

    allowed: bool
    refused_by: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _role_tier(role_definition_id: str, subscription: str) -> tuple[int | None, str]:
    """The catalogue's tier of a built-in Key Vault data role named by its full id, or None with the reason."""
    prefix = f"/subscriptions/{subscription}/providers/microsoft.authorization/roledefinitions/"
    guid = role_definition_id.rsplit("/", 1)[-1]
    if role_definition_id.lower() != prefix + guid.lower():
        return None, f"role definition {role_definition_id!r} is not a role definition id of the vault's subscription"
    role = catalog.builtin_role(guid)
    if role is None or not role.role_name.startswith("Key Vault") or not role.data_actions:
        return None, f"role definition {guid} is not a built-in Key Vault data role in the catalogue"
    actions = catalog.expand(role.data_actions, role.not_data_actions)
    return max((catalog.tier(a) for a in actions), default=3), ""


def _permissions_tier(add: Mapping[str, tuple[str, ...]]) -> tuple[int | None, str]:
    """The catalogue's tier of access-policy permissions, or None when one is unknown or ``all``."""
    tiers = [0]
    for kind, perms in add.items():
        for p in perms:
            if kind not in PERMISSION_KINDS or p.lower() == "all" or catalog.canonical_permission(kind, p) is None:
                return None, f"{kind} permission {p!r} is not a single permission of the catalogue (never 'all')"
            tiers.extend(catalog.tier(a) for a in catalog.permission_data_actions(kind, p))
    if len(tiers) == 1:
        return None, "the plan adds no permission"
    return max(tiers), ""


@dataclass(frozen=True)
class Write:
    """The exact change a plan sends: who receives it, where, of which type, and the catalogue's tier of it."""

    principal_id: str
    principal_type: str | None
    scope: GrantScope
    tier: int


def exact_write(plan: Plan) -> Write | Verdict:
    """The write a plan makes, checked for shape: a canonical vault or object scope (``armid``), a GUID grantee,
    and a role or permissions the catalogue knows. A refusal when any of it is not what we would build."""
    if isinstance(plan, HsmRoleAssignmentPlan):
        return Verdict(False, "scopes", "Managed HSM local role assignments are not applied yet")
    if isinstance(plan, RoleAssignmentPlan):
        scope = parse_grant_scope(plan.scope)
        principal, ptype = plan.principal_id, plan.principal_type
        if scope is None:
            return Verdict(False, "scopes", f"{plan.scope!r} is not a vault, or a key, secret or certificate in one; "
                           "grants are made nowhere else")
        tier, why = _role_tier(plan.role_definition_id, scope.vault.subscription)
    else:
        vault = parse_vault_id(plan.vault_id)
        principal, ptype = plan.object_id, plan.principal_type
        if vault is None:
            return Verdict(False, "scopes", f"{plan.vault_id!r} is not a vault id; access policies are written "
                           "nowhere else")
        scope = GrantScope(vault)
        tier, why = _permissions_tier(plan.add)
    if tier is None:
        return Verdict(False, "permissions", why)
    if not is_guid(principal) or principal.strip("0-") == "":
        return Verdict(False, "principal_types", f"grantee {principal!r} is not an object id")
    return Write(principal.lower(), ptype, scope, max(tier, plan.tier))


def check(finding: Finding, policy: Policy, applied_last_hour: int = 0, *, requested: bool = True,
          proof: Proof | None = None, own_principals: frozenset[str] = frozenset()) -> Verdict:
    """Every rule of the policy, in order; the first that refuses wins. Pure: the caller counts recent grants,
    and says what proves the denial (``proof``: audit log we read, an approval, or an operator's act).

    The rules judge the exact write (``exact_write``), never the finding's description of it: its scope is a
    canonical vault or object id inside a policy scope by whole segments, its grantee an identified user or
    service principal that is not the app itself, its tier the catalogue's.
    """
    plan = finding.plan
    if plan is None:
        return Verdict(False, "plan", f"cause {finding.cause} is not fixed by a grant; nothing to apply")
    if policy.mode not in ("apply", "approve"):
        return Verdict(False, "mode", "policy mode is 'suggest': nothing is changed")
    if not requested:
        return Verdict(False, "apply", "apply was not requested")
    write = exact_write(plan)
    if isinstance(write, Verdict):
        return write
    # The rules in order, each a named step; the first refusal wins (a refusal is never None, an allowance is).
    refusal = (_plan_refusal(plan, policy) or _grantee_refusal(write, policy, own_principals)
               or _scope_refusal(write, policy) or _approval_refusal(write, policy, proof, applied_last_hour)
               or _evidence_refusal(policy, proof, applied_last_hour))
    return refusal or Verdict(True)


def needs_approval(write: Write, policy: Policy) -> bool:
    """Whether the policy routes this write to a person: ``mode: approve``, or a tier above ``approve_above_tier``."""
    return policy.mode == "approve" or (policy.approve_above_tier is not None
                                        and write.tier > policy.approve_above_tier)


def _approval_refusal(write: Write, policy: Policy, proof: Proof | None, applied_last_hour: int) -> Verdict | None:
    """``refused_by: "approval"``: every other rule allows the write, but the policy wants a person to approve it
    first. Only a ``Proof(kind="approval")`` (a decided approval request, approvals/service.py) satisfies it; an
    operator's ``--apply`` does not (it opens the request). Under ``mode: apply`` the denial must still be proven
    (a plan without evidence is refused by ``evidence``, not routed); under ``mode: approve`` the approval is the
    proof. The hourly budget is checked first: a plan the budget refuses never becomes a request."""
    if not needs_approval(write, policy) or (proof is not None and proof.kind == "approval"):
        return None
    if policy.mode == "apply" and proof is None:
        return None   # _evidence_refusal names it
    if applied_last_hour >= policy.max_grants_per_hour:
        return _evidence_refusal(policy, proof or Proof("approval", "pending"), applied_last_hour)
    why = "policy mode is 'approve'" if policy.mode == "approve" else \
        f"the grant carries tier {write.tier}, above approve_above_tier {policy.approve_above_tier}"
    need = policy.required_approvals(write.tier)
    return Verdict(False, "approval", f"{why}: the plan waits for {need} person(s) to approve it "
                   f"(expires after {policy.approval_ttl_text})",
                   details={"min_approvals": need, "approval_ttl": policy.approval_ttl_text, "tier": write.tier})


def _plan_refusal(plan: Plan, policy: Policy) -> Verdict | None:
    """What the plan itself asks for: a privileged role, or a compound (application-bound) entry."""
    if isinstance(plan, RoleAssignmentPlan) and plan.privileged and not policy.allow_privileged:
        return Verdict(False, "allow_privileged", f"the plan needs {plan.role_name}, a privileged role")
    if isinstance(plan, AccessPolicyPlan) and plan.application_id:
        return Verdict(False, "principal_types", "compound (application-bound) entries are never granted")
    return None


def _grantee_refusal(write: Write, policy: Policy, own_principals: frozenset[str]) -> Verdict | None:
    """Who receives the grant: an identified user or service principal of an allowed type, not the app itself,
    not denied, allowed when there is an allow list."""
    principal, ptype = write.principal_id, write.principal_type
    if ptype not in ("ServicePrincipal", "User"):
        return Verdict(False, "principal_types", f"the caller's principal type is {ptype or 'unknown'}; only an "
                       "identified service principal or user may receive a grant (never a group)")
    if ptype not in policy.principal_types:
        return Verdict(False, "principal_types", f"{ptype} is not in principal_types {list(policy.principal_types)}")
    if principal in own_principals:
        return Verdict(False, "principals.self", f"{principal} is kv-remediate's own identity; it never grants "
                       "itself access")
    if principal in policy.deny:
        return Verdict(False, "principals.deny", f"{principal} is on the deny list")
    if policy.allow and principal not in policy.allow:
        return Verdict(False, "principals.allow", f"{principal} is not on the allow list")
    return None


def _scope_refusal(write: Write, policy: Policy) -> Verdict | None:
    """Where and how much: inside an allowed scope, at the object only when allowed, within max_tier."""
    scope = str(write.scope)
    if not any(within(scope, p) for p in policy.scopes):
        return Verdict(False, "scopes", f"{scope} is not under any allowed scope"
                       + ("" if policy.scopes else " (scopes is empty: nowhere)"))
    if write.scope.kind is not None and not policy.object_scope:
        return Verdict(False, "object_scope", "the plan is at the object scope but object_scope is false")
    if write.tier > policy.max_tier:
        return Verdict(False, "max_tier", f"the grant carries tier {write.tier}, above max_tier {policy.max_tier}")
    return None


def _evidence_refusal(policy: Policy, proof: Proof | None, applied_last_hour: int) -> Verdict | None:
    """Whether the denial is proven, and the vault's hourly grant budget."""
    if proof is None:
        return Verdict(False, "evidence", "nothing proves this denial happened: kv-remediate did not find it in the "
                       "vault's audit log and no person approved the plan (an alert or text only says where to look)")
    if applied_last_hour >= policy.max_grants_per_hour:
        return Verdict(False, "max_grants_per_hour", f"{applied_last_hour} grants were applied on this vault in the "
                       f"last hour (limit {policy.max_grants_per_hour})")
    return None
