"""Pure policy (spec/policy.md): the policy model, its validation, and whether a plan may be applied.

The defaults change nothing (suggest only, no scopes). A plan is applied only when every rule allows it; the
first rule that refuses is named in the finding (``refused_by``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import catalog
from .armid import GrantScope, is_guid, parse_grant_scope, parse_vault_id, within
from .errors import PolicyError
from .model import PERMISSION_KINDS, AccessPolicyPlan, Finding, Plan, Proof, RoleAssignmentPlan

KEYS = {"mode", "scopes", "principal_types", "principals", "max_tier", "allow_privileged", "object_scope",
        "grant_ttl", "use_pim", "max_grants_per_hour"}
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")


@dataclass(frozen=True)
class Policy:
    """What kv-remediate may change. The defaults are suggest-only."""

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
    source: str = "defaults"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "scopes": list(self.scopes), "principal_types": list(self.principal_types),
                "principals": {"allow": list(self.allow), "deny": list(self.deny)}, "max_tier": self.max_tier,
                "allow_privileged": self.allow_privileged, "object_scope": self.object_scope,
                "grant_ttl": self.grant_ttl_text, "use_pim": self.use_pim,
                "max_grants_per_hour": self.max_grants_per_hour}


def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration of days, hours, minutes and seconds (``PT8H``, ``P1DT12H``), or None."""
    m = _DURATION.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT"):
        return None
    d, h, mi, s = (int(m.group(g) or 0) for g in "dhms")
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def _bad(source: str, key: str, problem: str) -> PolicyError:
    return PolicyError(f"policy {source}: key '{key}' {problem}")


def _bool(data: dict[str, Any], key: str, default: bool, source: str) -> bool:
    v = data.get(key, default)
    if not isinstance(v, bool):
        raise _bad(source, key, f"must be true or false, not {v!r}")
    return v


def _ids(value: Any, key: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) and is_guid(x) for x in value):
        raise _bad(source, key, "must be a list of object ids (GUIDs)")
    return tuple(x.lower() for x in value)


def policy_from_dict(data: Any, source: str = "policy") -> Policy:
    """Validate a parsed policy document; the error names the key and what is wrong."""
    if data is None:
        return Policy(source=source)
    if not isinstance(data, dict):
        raise PolicyError(f"policy {source}: must be a mapping of keys ({', '.join(sorted(KEYS))})")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise _bad(source, unknown[0], f"is not a policy key (known keys: {', '.join(sorted(KEYS))})")
    mode = data.get("mode", "suggest")
    if mode not in ("suggest", "apply"):
        raise _bad(source, "mode", f"must be 'suggest' or 'apply', not {mode!r}")
    scopes = data.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s.startswith("/") for s in scopes):
        raise _bad(source, "scopes", "must be a list of resource-id prefixes starting with '/'")
    if any(s.rstrip("/") == "" for s in scopes):
        raise _bad(source, "scopes", "must not contain '/' (the whole tenant); name subscriptions, groups or vaults")
    ptypes = data.get("principal_types", ["ServicePrincipal"])
    if not isinstance(ptypes, list) or not all(p in ("ServicePrincipal", "User") for p in ptypes):
        raise _bad(source, "principal_types", "must be a list of ServicePrincipal and/or User (never Group)")
    principals = data.get("principals", {}) or {}
    if not isinstance(principals, dict) or set(principals) - {"allow", "deny"}:
        raise _bad(source, "principals", "must be a mapping with optional 'allow' and 'deny' lists")
    tier = data.get("max_tier", 1)
    if not isinstance(tier, int) or isinstance(tier, bool) or not 0 <= tier <= 3:
        raise _bad(source, "max_tier", f"must be an integer from 0 to 3, not {tier!r}")
    rate = data.get("max_grants_per_hour", 20)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        raise _bad(source, "max_grants_per_hour", f"must be a non-negative integer, not {rate!r}")
    ttl_text = data.get("grant_ttl")
    ttl = None
    if ttl_text is not None:
        ttl = parse_duration(ttl_text) if isinstance(ttl_text, str) else None
        if ttl is None or ttl <= timedelta(0):
            raise _bad(source, "grant_ttl", f"must be a positive ISO 8601 duration such as PT8H, not {ttl_text!r}")
    use_pim = _bool(data, "use_pim", False, source)
    return Policy(mode=mode, scopes=tuple(scopes), principal_types=tuple(ptypes),
                  allow=_ids(principals.get("allow"), "principals.allow", source),
                  deny=_ids(principals.get("deny"), "principals.deny", source), max_tier=tier,
                  allow_privileged=_bool(data, "allow_privileged", False, source),
                  object_scope=_bool(data, "object_scope", False, source), grant_ttl=ttl, grant_ttl_text=ttl_text,
                  use_pim=use_pim, max_grants_per_hour=rate, source=source)


def parse_policy(text: str, source: str) -> Policy:
    """A policy from YAML or JSON text."""
    import yaml

    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        where = str(exc).splitlines()[0][:160]
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
    if policy.mode != "apply":
        return Verdict(False, "mode", "policy mode is 'suggest': nothing is changed")
    if not requested:
        return Verdict(False, "apply", "apply was not requested")
    write = exact_write(plan)
    if isinstance(write, Verdict):
        return write
    if isinstance(plan, RoleAssignmentPlan) and plan.privileged and not policy.allow_privileged:
        return Verdict(False, "allow_privileged", f"the plan needs {plan.role_name}, a privileged role")
    if isinstance(plan, AccessPolicyPlan) and plan.application_id:
        return Verdict(False, "principal_types", "compound (application-bound) entries are never granted")
    principal, ptype, scope = write.principal_id, write.principal_type, str(write.scope)
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
    if not any(within(scope, p) for p in policy.scopes):
        return Verdict(False, "scopes", f"{scope} is not under any allowed scope"
                       + ("" if policy.scopes else " (scopes is empty: nowhere)"))
    if write.scope.kind is not None and not policy.object_scope:
        return Verdict(False, "object_scope", "the plan is at the object scope but object_scope is false")
    if write.tier > policy.max_tier:
        return Verdict(False, "max_tier", f"the grant carries tier {write.tier}, above max_tier {policy.max_tier}")
    if proof is None:
        return Verdict(False, "evidence", "nothing proves this denial happened: kv-remediate did not find it in the "
                       "vault's audit log and no person approved the plan (an alert or text only says where to look)")
    if applied_last_hour >= policy.max_grants_per_hour:
        return Verdict(False, "max_grants_per_hour", f"{applied_last_hour} grants were applied on this vault in the "
                       f"last hour (limit {policy.max_grants_per_hour})")
    return Verdict(True)
