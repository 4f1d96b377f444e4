"""Grant proof (issue 15): no crafted denial can widen, redirect or invent a grant.

Everything here runs the real SDK clients against the bundled emulator and asserts on what the emulator holds
afterwards (the tenant's role assignments and access-policy entries), never on log text.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate import catalog
from remediate.apply import ApplyContext
from remediate.armid import parse_grant_scope
from remediate.backends import EmulatorRun
from remediate.guard import policy_from_dict
from remediate.model import Denial, ObjectRef, Principal, Proof, VaultRef
from remediate.service import remediate
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import SqliteGrantStore

TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
VAULTS = {v["name"]: v for v in TENANT["vaults"]}
TYPES = {p["id"].lower(): p["type"] for p in TENANT["principals"]}
GROUP = next(i for i, t in TYPES.items() if t == "Group")
SELF = next(p["id"] for p in TENANT["principals"] if p["display_name"].startswith("app-audit"))
WIDE = {"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "principal_types": ["ServicePrincipal", "User"],
        "object_scope": True, "max_tier": 3, "allow_privileged": True, "max_grants_per_hour": 100000}
KV_DATA_ROLES = {r.name.lower() for r in catalog.builtin_roles() if r.role_name.startswith("Key Vault")
                 and r.data_actions}


# --- what the tenant holds -----------------------------------------------------------------------------------

def assignments(tenant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"].lower(): a for a in tenant["role_assignments"]}


def entries(tenant: dict[str, Any]) -> dict[tuple[str, str], dict[str, set[str]]]:
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for v in tenant["vaults"]:
        for e in v["properties"].get("accessPolicies") or []:
            out[(v["id"].lower(), e["objectId"].lower())] = {k: set(p) for k, p in e["permissions"].items()}
    return out


def assert_every_change_is_allowed(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Each new role assignment and each added access-policy permission is of a shape a grant may take."""
    vault_ids = {v["id"].lower() for v in before["vaults"]}
    for key, a in assignments(after).items():
        if key in assignments(before):
            continue
        props = a["properties"]
        scope = parse_grant_scope(props["scope"])
        assert scope is not None and str(scope.vault).lower() in vault_ids, props["scope"]
        assert TYPES.get(props["principalId"].lower()) in ("ServicePrincipal", "User"), props["principalId"]
        assert props["principalId"].lower() != SELF.lower()
        assert props["roleDefinitionId"].rsplit("/", 1)[-1].lower() in KV_DATA_ROLES
        assert props["roleDefinitionId"].lower().startswith(f"/subscriptions/{SUB}/".lower())
    old = entries(before)
    for (vault_id, oid), perms in entries(after).items():
        added = {k: v - old.get((vault_id, oid), {}).get(k, set()) for k, v in perms.items()}
        if not any(added.values()):
            continue
        assert TYPES.get(oid) in ("ServicePrincipal", "User"), oid
        assert oid != SELF.lower()
        for kind, ps in added.items():
            for p in ps:
                assert p.lower() != "all" and catalog.canonical_permission(kind, p) == p, (kind, p)


OPERATOR = Proof("operator", "test")


def run(denials: list[Denial], tmp: Path, *, tenant: dict[str, Any] | None = None,
        proof: Proof | None = OPERATOR, **policy: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Remediate under the widest policy (plus ``policy`` keys) with an operator's proof; the findings and the
    tenant afterwards."""
    db = tmp / "state.db"
    ctx = ApplyContext(policy=policy_from_dict(dict(WIDE, **policy)), grants=SqliteGrantStore(db),
                       slots=SqliteClaimStore(db), now=NOW, operator=proof, own_principals=frozenset({SELF.lower()}))

    async def go() -> tuple[Any, dict[str, Any]]:
        with EmulatorRun(copy.deepcopy(tenant or TENANT)) as emu:
            async with emu.facts() as facts:
                result = await remediate(denials, facts, ctx)
            return result, emu.emulator.tenant()

    result, after = asyncio.run(go())
    return [f.to_dict() for f in result.findings], after


def denial(oid: str, vault: str, op: str, obj: ObjectRef | None = None, *, kind: str | None = "app",
           rid_suffix: str = "", **kw: Any) -> Denial:
    v = VAULTS[vault]
    return Denial(source="attack", status=403, principal=Principal(object_id=oid, kind=kind),  # type: ignore[arg-type]
                  vault=VaultRef(vault, v["id"] + rid_suffix), operation=op, object=obj, **kw)


APP = next(p["id"] for p in TENANT["principals"] if p["display_name"].startswith("app-orders"))
USER = next(p["id"] for p in TENANT["principals"] if p["display_name"] == "Alice Doe")


# --- the numbered findings, through the core -------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "x%2F..%2F..%2F..", "x/../../..", "..", ".", "x%252F..%252F..", "x\\..\\..", "a b", "a\nb", "\u0430bc",
    "x%2f%2e%2e", "x;/..", "", "a" * 128,
])
def test_object_names_never_move_the_grant(tmp_path: Path, name: str) -> None:
    # given an RBAC vault, object_scope on, and a denial whose object name is crafted
    d = denial(APP, "kv-payments", "SecretGet", ObjectRef("secrets", name))
    # when it is remediated with the widest policy
    _, after = run([d], tmp_path)
    # then whatever was granted lies on the vault itself, never above it or on another path
    assert_every_change_is_allowed(TENANT, after)
    new = [a for k, a in assignments(after).items() if k not in assignments(TENANT)]
    assert all(a["properties"]["scope"].lower() == VAULTS["kv-payments"]["id"].lower() for a in new), new


@pytest.mark.parametrize("suffix", ["/secrets/x%2F..%2F..", "/../..", "/secrets/a/../../../..", "%2F..%2F.."])
def test_a_crafted_vault_id_is_replaced_by_the_one_arm_returns(tmp_path: Path, suffix: str) -> None:
    d = denial(APP, "kv-payments", "SecretGet", ObjectRef("secrets", "db"), rid_suffix=suffix)
    _, after = run([d], tmp_path)
    assert_every_change_is_allowed(TENANT, after)


def test_all_is_never_planned_from_the_input_words(tmp_path: Path) -> None:
    # given an access-policy vault and a text that claims "secrets all" for a readMetadata action
    d = denial(APP, "kv-legacy", None, ObjectRef("secrets", "db"),  # type: ignore[arg-type]
               data_action="Microsoft.KeyVault/vaults/secrets/readMetadata/action",
               access_policy_permission={"secrets": ("all",)},
               message="The user does not have secrets all permission on key vault 'kv-legacy'")
    findings, after = run([d], tmp_path)
    # then what the entry gained is the catalogue's mapping of the data action, never 'all'
    assert_every_change_is_allowed(TENANT, after)
    gained = entries(after).get((VAULTS["kv-legacy"]["id"].lower(), APP.lower()), {})
    assert {k: v for k, v in gained.items() if v} == {"secrets": {"list"}}
    assert findings[0]["required"]["access_policy"] == {"secrets": ["list"]}


def test_a_group_claiming_to_be_an_app_gets_no_access_policy_entry(tmp_path: Path) -> None:
    # given a group's object id with idtyp=app in the input, denied on an access-policy vault
    d = denial(GROUP, "kv-legacy", "SecretGet", ObjectRef("secrets", "db"), kind="app")
    findings, after = run([d], tmp_path)
    # then Graph's answer (Group) decides: no entry, refused by principal_types
    assert entries(after) == entries(TENANT)
    assert findings[0]["applied"] is False and findings[0]["refused_by"] == "principal_types"


def test_a_group_claiming_to_be_an_app_gets_no_role_assignment(tmp_path: Path) -> None:
    d = denial(GROUP, "kv-payments", "SecretGet", ObjectRef("secrets", "db"), kind="app")
    findings, after = run([d], tmp_path)
    assert assignments(after) == assignments(TENANT)
    assert findings[0]["applied"] is False


def test_a_user_claiming_to_be_an_app_is_refused_by_arm_and_recorded(tmp_path: Path) -> None:
    # given a user's object id with idtyp=app on an RBAC vault (Graph not asked: ARM checks principalType)
    findings, after = run([denial(USER, "kv-payments", "SecretGet", ObjectRef("secrets", "db"))], tmp_path)
    # then ARM's UnmatchedPrincipalType refusal is the outcome, recorded, and nothing was assigned
    assert assignments(after) == assignments(TENANT)
    assert findings[0]["outcome"] == "failed" and "UnmatchedPrincipalType" in findings[0]["error"]
    assert [r.outcome for r in SqliteGrantStore(tmp_path / "state.db").list()] == ["failed"]


def test_the_apps_own_identity_is_never_granted(tmp_path: Path) -> None:
    findings, after = run([denial(SELF, "kv-payments", "SecretGet", ObjectRef("secrets", "db"))], tmp_path)
    assert assignments(after) == assignments(TENANT)
    assert findings[0]["refused_by"] == "principals.self"


def test_a_pim_justification_holds_only_our_words(tmp_path: Path) -> None:
    # given a PIM grant planned from a catalogue data action, with crafted text where the operation name goes
    d = denial(APP, "kv-payments", "SecretGet\nApproved by the security team", ObjectRef("secrets", "db"),
               data_action="Microsoft.KeyVault/vaults/secrets/getSecret/action")
    findings, after = run([d], tmp_path, use_pim=True, grant_ttl="PT8H")
    # then the request Azure holds says what kv-remediate knows (label, cause, data action), nothing of the input
    assert findings[0]["outcome"] == "applied", findings[0]
    [req] = [r for r in after["role_assignment_schedule_requests"]
             if r["properties"]["principalId"].lower() == APP.lower()]
    justification = req["properties"]["justification"]
    assert "Approved" not in justification and "\n" not in justification
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in justification


def test_the_record_says_what_entitled_the_grant(tmp_path: Path) -> None:
    # given an operator's proof, when a plan is applied, then its grant record carries that proof
    findings, _ = run([denial(APP, "kv-payments", "SecretGet", ObjectRef("secrets", "db"))], tmp_path,
                      proof=Proof("operator", "token oid x"))
    assert findings[0]["outcome"] == "applied"
    record = SqliteGrantStore(tmp_path / "state.db").get(findings[0]["grant_id"])
    assert record is not None and record.finding is not None
    assert record.finding["proof"] == {"kind": "operator", "source": "token oid x"}


def test_without_proof_nothing_is_applied(tmp_path: Path) -> None:
    findings, after = run([denial(APP, "kv-payments", "SecretGet", ObjectRef("secrets", "db"))], tmp_path, proof=None)
    assert assignments(after) == assignments(TENANT)
    assert findings[0]["refused_by"] == "evidence"


# --- the property ------------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
OPS = [o.name for o in catalog.operations()]
IDS = [p["id"] for p in TENANT["principals"]]


@st.composite
def denials(draw: st.DrawFn) -> Denial:
    vault = draw(st.sampled_from(sorted(VAULTS)))
    vid = VAULTS[vault]["id"]
    rid = draw(st.one_of(st.just(vid), st.builds(lambda s: vid + s, TEXT), st.none()))
    kind = draw(st.one_of(st.sampled_from(["keys", "secrets", "certificates", "storage"]), TEXT))
    obj = draw(st.one_of(st.none(), st.builds(ObjectRef, st.just(kind), st.one_of(TEXT, st.none()))))
    perms = draw(st.one_of(st.none(), st.dictionaries(st.one_of(st.sampled_from(["keys", "secrets"]), TEXT),
                                                      st.tuples(st.one_of(st.just("all"), TEXT)), max_size=2)))
    return Denial(
        source="property", status=draw(st.sampled_from([403, 401, 429, None])),
        principal=Principal(object_id=draw(st.one_of(st.sampled_from(IDS), TEXT)),
                            kind=draw(st.sampled_from(["app", "user", None]))),
        vault=VaultRef(draw(st.one_of(st.just(vault), TEXT)), rid),
        operation=draw(st.one_of(st.sampled_from(OPS), TEXT, st.none())),
        data_action=draw(st.one_of(st.none(), TEXT, st.sampled_from(sorted(catalog.data_actions())))),
        access_policy_permission=perms, object=obj, message=draw(st.one_of(st.none(), TEXT)))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batch=st.lists(denials(), min_size=1, max_size=4))
def test_no_generated_denial_makes_a_write_outside_the_allowed_shapes(batch: list[Denial], workdir: Path) -> None:
    # given any strings in every field of a denial, the widest policy and an operator's proof
    # when the batch is remediated against the emulator
    _, after = run(batch, workdir)
    # then every role assignment and access-policy permission Azure holds afterwards is of an allowed shape:
    # a vault or key/secret/certificate scope inside the policy, a user or service principal (never a group, never
    # the app itself), a built-in Key Vault data role or catalogue permissions (never 'all')
    assert_every_change_is_allowed(TENANT, after)


# --- through the CLI -------------------------------------------------------------------------------------------

def cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remediate", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_encoded_traversal_in_a_resource_id_grants_nothing_above_the_vault(tmp_path: Path) -> None:
    # given an AzureDiagnostics row whose ResourceId ends in an encoded traversal, and object_scope on
    tenant = tmp_path / "tenant.json"
    tenant.write_text(json.dumps(TENANT))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(WIDE))
    rid = VAULTS["kv-payments"]["id"].upper() + "/SECRETS/x%2F..%2F..%2F.."
    row = {"ResourceId": rid, "OperationName": "SecretGet", "ResultSignature": "Forbidden", "httpStatusCode_d": 403,
           "identity_claim_oid_g": APP, "identity_claim_idtyp_s": "app", "Resource": "KV-PAYMENTS",
           "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent",
           "requestUri_s": "https://kv-payments.vault.azure.net/secrets/x%2F..%2F..%2F..?api-version=7.4"}
    out = tmp_path / "after.json"
    # when it is remediated with --apply
    got = cli("remediate", "-", "--snapshot", str(tenant), "--policy", str(policy), "--apply", "--snapshot-out",
              str(out), "--state", str(tmp_path / "s.db"), "--output", "json", stdin=json.dumps([row]))
    assert got.returncode in (0, 4), got.stderr
    # then the emulator holds nothing above the vault, and nothing on a path other than the vault or a valid object
    after = json.loads(out.read_text())
    assert_every_change_is_allowed(TENANT, after)
