"""The pure decision on plain data: every rule of causes.md's effective access, no Azure involved."""

from __future__ import annotations

from typing import Any

import pytest

from remediate import catalog
from remediate.abac import evaluate_condition
from remediate.decide import decide, gathered_facts, next_reads
from remediate.model import (
    AccessPolicyEntry,
    Denial,
    DenyAssignment,
    Facts,
    ObjectRef,
    Principal,
    PrincipalInfo,
    PrincipalKind,
    RoleAssignment,
    Signal,
    Vault,
    VaultLookup,
    VaultRef,
)
from remediate.reads import (
    Gathered,
    ReadAssignments,
    ReadDenyAssignments,
    ReadPrincipal,
    ReadRoleDefinitions,
    ReadVault,
)

SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
TENANT = "8b5d7c4e-1f2a-4c3b-9d8e-0a1b2c3d4e5f"
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
VAULT_ID = f"{RG}/providers/Microsoft.KeyVault/vaults/kv1"
OID = "11111111-2222-4333-8444-555555555555"
GROUP = "99999999-2222-4333-8444-555555555555"
OTHER = "77777777-2222-4333-8444-555555555555"
APP = "66666666-2222-4333-8444-555555555555"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
GET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


def denial(op: str = "SecretGet", obj: str | None = "db", status: int = 403, signal: Signal | None = None,
           app_id: str | None = None) -> Denial:
    return Denial(source="test", status=status, principal=Principal(object_id=OID, app_id=app_id, kind="app"),
                  vault=VaultRef("kv1", VAULT_ID), operation=op,
                  signals=frozenset({signal}) if signal else frozenset(),
                  object=ObjectRef("secrets", obj) if obj else None)


def ra(scope: str, role: str = SECRETS_USER, principal: str = OID, condition: str | None = None) -> RoleAssignment:
    return RoleAssignment(id=f"{scope}/providers/Microsoft.Authorization/roleAssignments/x", scope=scope,
                          role_definition_id=f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                                             f"{role}", principal_id=principal, condition=condition)


def entry(oid: str = OID, app: str | None = None, tenant: str = TENANT, **perms: tuple[str, ...]) -> AccessPolicyEntry:
    return AccessPolicyEntry(tenant_id=tenant, object_id=oid, application_id=app, permissions=dict(perms))


def facts(*, rbac: bool = True, assignments: tuple[RoleAssignment, ...] = (),
          policies: tuple[AccessPolicyEntry, ...] = (), denies: tuple[DenyAssignment, ...] = (),
          groups: tuple[str, ...] = (),
          roles: dict[str, catalog.RoleDefinition] | None = None) -> Facts:
    return Facts(vault=Vault(id=VAULT_ID, name="kv1", tenant_id=TENANT, rbac=rbac, access_policies=policies),
                 principal=PrincipalInfo(OID, groups=groups, groups_known=True), assignments=assignments,
                 deny_assignments=denies, roles=roles or {})


def deny(*, scope: str = VAULT_ID, principals: tuple[str, ...] = ("00000000-0000-0000-0000-000000000000",),
         exclude: tuple[str, ...] = (), child: bool = False, actions: tuple[str, ...] = ("*",),
         not_actions: tuple[str, ...] = ()) -> DenyAssignment:
    return DenyAssignment(id=f"{scope}/providers/Microsoft.Authorization/denyAssignments/d", name="lock", scope=scope,
                          data_actions=actions, not_data_actions=not_actions, principal_ids=principals,
                          exclude_principal_ids=exclude, do_not_apply_to_child_scopes=child)


CASES = [
    ("401 challenge", denial(status=401, signal=Signal.AUTH_CHALLENGE), None, "AUTH_CHALLENGE"),
    ("other 401", denial(status=401), None, "AUTH_FAILED"),
    ("429", denial(status=429), None, "THROTTLED"),
    ("firewall", denial(signal=Signal.NETWORK), facts(), "NETWORK_BLOCKED"),
    ("key ops", denial("KeyDecrypt", None, signal=Signal.KEY_OPERATION), None, "KEY_OPERATION_NOT_PERMITTED"),
    ("disabled", denial(signal=Signal.DISABLED), None, "OBJECT_DISABLED"),
    ("no principal", Denial(source="t", status=403, vault=VaultRef("kv1", VAULT_ID), operation="SecretGet"), None,
     "PRINCIPAL_NOT_IDENTIFIED"),
    ("vault unknown", denial(), None, "VAULT_NOT_FOUND"),
    ("unknown operation", denial(op="Frobnicate"), facts(), "UNKNOWN"),
    ("rbac nothing", denial(), facts(), "MISSING_ROLE_ASSIGNMENT"),
    ("rbac at vault", denial(), facts(assignments=(ra(VAULT_ID),)), "ALREADY_GRANTED"),
    ("rbac at rg", denial(), facts(assignments=(ra(RG),)), "ALREADY_GRANTED"),
    ("rbac at subscription", denial(), facts(assignments=(ra(f"/subscriptions/{SUB}"),)), "ALREADY_GRANTED"),
    ("rbac at management group", denial(),
     facts(assignments=(ra("/providers/Microsoft.Management/managementGroups/root"),)), "ALREADY_GRANTED"),
    ("rbac at the object", denial(), facts(assignments=(ra(VAULT_ID + "/secrets/db"),)), "ALREADY_GRANTED"),
    ("rbac at another object", denial(), facts(assignments=(ra(VAULT_ID + "/secrets/other"),)),
     "MISSING_ROLE_ASSIGNMENT"),
    ("rbac via group", denial(), facts(assignments=(ra(VAULT_ID, principal=GROUP),), groups=(GROUP,)),
     "ALREADY_GRANTED"),
    ("rbac wrong role", denial("SecretSet"), facts(assignments=(ra(VAULT_ID),)), "MISSING_ROLE_ASSIGNMENT"),
    ("deny everyone", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(),)), "DENY_ASSIGNMENT"),
    ("deny excluded", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(exclude=(OID,)),)),
     "ALREADY_GRANTED"),
    ("deny child-scope off", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(scope=RG, child=True),)),
     "ALREADY_GRANTED"),
    ("deny above applies to child", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(scope=RG),)),
     "DENY_ASSIGNMENT"),
    ("deny other principal", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(principals=(OTHER,)),)),
     "ALREADY_GRANTED"),
    ("deny via group", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(principals=(GROUP,)),),
                                       groups=(GROUP,)), "DENY_ASSIGNMENT"),
    ("deny notDataActions", denial(), facts(assignments=(ra(VAULT_ID),), denies=(deny(not_actions=(GET,)),)),
     "ALREADY_GRANTED"),
    ("condition holds", denial(obj="batch-1"), facts(assignments=(ra(VAULT_ID, condition=(
        "((!(ActionMatches{'" + GET + "'})) OR (@Resource[Microsoft.KeyVault/vaults/secrets:name] "
        "StringStartsWith 'batch-'))")),)), "ALREADY_GRANTED"),
    ("condition fails", denial(obj="db"), facts(assignments=(ra(VAULT_ID, condition=(
        "((!(ActionMatches{'" + GET + "'})) OR (@Resource[Microsoft.KeyVault/vaults/secrets:name] "
        "StringStartsWith 'batch-'))")),)), "CONDITION_NOT_MET"),
    ("condition not evaluable", denial(obj="db"), facts(assignments=(ra(VAULT_ID, condition=(
        "((!(ActionMatches{'" + GET + "'})) OR "
        "(@Resource[Microsoft.KeyVault/vaults/secrets:tags:env<$key_case_sensitive$>] StringEquals 'prod'))")),)),
     "CONDITION_NOT_MET"),
    ("rbac vault, access policy held", denial(), facts(policies=(entry(secrets=("get",)),)),
     "WRONG_PERMISSION_MODEL"),
    ("ap nothing", denial(), facts(rbac=False), "MISSING_ACCESS_POLICY"),
    ("ap granted", denial(), facts(rbac=False, policies=(entry(secrets=("Get",)),)), "ALREADY_GRANTED"),
    ("ap all", denial(), facts(rbac=False, policies=(entry(secrets=("all",)),)), "ALREADY_GRANTED"),
    ("ap via group", denial(), facts(rbac=False, policies=(entry(GROUP, secrets=("get",)),), groups=(GROUP,)),
     "ALREADY_GRANTED"),
    ("ap other tenant", denial(), facts(rbac=False, policies=(entry(tenant=OTHER, secrets=("get",)),)),
     "MISSING_ACCESS_POLICY"),
    ("ap compound only", denial(), facts(rbac=False, policies=(entry(app=APP, secrets=("get",)),)),
     "COMPOUND_IDENTITY_REQUIRED"),
    ("ap compound matching app", denial(app_id=APP), facts(rbac=False, policies=(entry(app=APP, secrets=("get",)),)),
     "ALREADY_GRANTED"),
    ("ap vault, rbac held", denial(), facts(rbac=False, assignments=(ra(VAULT_ID),)), "WRONG_PERMISSION_MODEL"),
]


@pytest.mark.parametrize(("name", "given", "read", "cause"), CASES, ids=[c[0] for c in CASES])
def test_cause(name: str, given: Denial, read: Facts | None, cause: str) -> None:
    # given a denial and what Azure says, when decided, then the cause is the one causes.md names
    assert decide(given, read).cause == cause


def test_not_data_actions_subtract() -> None:
    # given a custom role granting secrets/* except getSecret
    role = catalog.RoleDefinition(id="/x/c", name="c0ffee00-0000-4000-8000-000000000000", role_name="Custom",
                                  role_type="CustomRole", actions=(), not_actions=(),
                                  data_actions=("Microsoft.KeyVault/vaults/secrets/*",), not_data_actions=(GET,))
    read = facts(assignments=(ra(VAULT_ID, role=role.name),), roles={role.name: role})
    # when decided, then the role does not grant it and the evidence says why
    result = decide(denial(), read)
    assert result.cause == "MISSING_ROLE_ASSIGNMENT"
    assert "notDataActions" in result.evidence.role_assignments[0].reason


def test_access_policy_missing_is_only_what_lacks() -> None:
    # given an entry with get but not set: then only set is missing
    result = decide(denial("SecretSet"), facts(rbac=False, policies=(entry(secrets=("get", "list")),)))
    assert result.cause == "MISSING_ACCESS_POLICY" and result.detail.missing == {"secrets": ("set",)}


def test_condition_unrelated_action_is_vacuously_true() -> None:
    cond = "((!(ActionMatches{'" + GET + "'})) OR (@Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals 'a'))"
    assert evaluate_condition(cond, "Microsoft.KeyVault/vaults/secrets/readMetadata/action", "b") is True
    assert evaluate_condition(cond, GET, "a") is True
    assert evaluate_condition(cond, GET, "b") is False
    assert evaluate_condition(cond, GET, None) is None


def test_evidence_lists_every_assignment_considered() -> None:
    read = facts(assignments=(ra(VAULT_ID, role=SECRETS_OFFICER, principal=GROUP), ra(VAULT_ID + "/secrets/x")),
                 groups=(GROUP,))
    result = decide(denial(), read)
    assert [a.grants for a in result.evidence.role_assignments] == [True, False]
    assert result.evidence.role_assignments[0].via == "group"


def test_cause_vocabulary_matches_its_catalogue() -> None:
    # given the typed vocabulary and the one wording catalogue, then each code has exactly one wording
    from remediate.catalog.causes import CAUSES
    from remediate.model import GRANT_CAUSES, INPUT_CAUSES, Cause

    assert set(CAUSES) == {c.value for c in Cause}
    assert set(Cause) >= GRANT_CAUSES and not GRANT_CAUSES & INPUT_CAUSES


# --- which reads the facts so far call for (decide.next_reads, pure) ---------------------------------------------

OBJ_SCOPE = f"{VAULT_ID}/secrets/db"
CUSTOM = "c0ffee00-0000-4000-8000-000000000001"


def gathered(rbac: bool = True, assignments: tuple[RoleAssignment, ...] = (),
             denies: tuple[DenyAssignment, ...] = (), policies: tuple[AccessPolicyEntry, ...] = (),
             roles: dict[str, catalog.RoleDefinition] | None = None, **kw: Any) -> Gathered:
    vault = Vault(id=VAULT_ID, name="kv1", tenant_id=TENANT, rbac=rbac, access_policies=policies)
    state = Gathered(lookup=VaultLookup(vault, (SUB,)), assignments={OBJ_SCOPE.lower(): assignments},
                     deny_assignments={VAULT_ID.lower(): denies}, **kw)
    if roles is not None:
        ids = tuple(a.role_definition_id for a in assignments)
        state = state.with_result(ReadRoleDefinitions(ids), roles)
    return state


def test_the_input_alone_decides_so_nothing_is_read() -> None:
    assert next_reads(denial(status=429), Gathered()) == ()


@pytest.mark.parametrize(("kind", "graph"), [("app", False), (None, True)])
def test_with_the_vault_id_known_the_first_reads_start_together(kind: PrincipalKind | None, graph: bool) -> None:
    # given a denial naming the vault by id; when nothing is read yet
    d = denial().with_(principal=Principal(object_id=OID, kind=kind))
    reads = set(next_reads(d, Gathered()))
    # then vault, assignments and deny assignments start at once, and Graph's type too when the input lacks it
    expected = {ReadVault(d.vault), ReadAssignments(OID, OBJ_SCOPE), ReadDenyAssignments(VAULT_ID)}
    assert reads == expected | ({ReadPrincipal(OID, groups=False)} if graph else set())


def test_groups_are_read_only_when_an_entry_or_deny_names_someone_else() -> None:
    # given the vault, its deny assignments and the caller's assignments read (no grant)
    plain = next_reads(denial(), gathered(roles={}))
    named = next_reads(denial(), gathered(denies=(deny(principals=(GROUP,), actions=("x/*",)),), roles={}))
    # then the groups are wanted only where a deny assignment names another principal
    assert ReadPrincipal(OID, groups=True) not in plain
    assert ReadPrincipal(OID, groups=True) in named


def test_a_speculative_groups_read_is_left_out_once_a_custom_role_grants() -> None:
    # given a deny naming a group (groups could matter) and an assignment of a custom role not read yet
    role = catalog.RoleDefinition(id=f"/x/{CUSTOM}", name=CUSTOM, role_name="Custom", role_type="CustomRole",
                                  actions=(), not_actions=(), data_actions=(GET,), not_data_actions=())
    denies = (deny(principals=(GROUP,), actions=("x/*",)),)
    pending = gathered(assignments=(ra(VAULT_ID, role=CUSTOM),), denies=denies)
    # then the groups are read together with the role definition
    assert {ReadRoleDefinitions((ra(VAULT_ID, role=CUSTOM).role_definition_id,)), ReadPrincipal(OID, groups=True)} \
        <= set(next_reads(denial(), pending))
    # when the role turns out to grant, then the groups answer is not used: the finding is as if never read
    done = gathered(assignments=(ra(VAULT_ID, role=CUSTOM),), denies=denies, roles={CUSTOM: role},
                    groups=PrincipalInfo(OID, groups=(GROUP,), groups_known=True))
    assert ReadPrincipal(OID, groups=True) not in next_reads(denial(), done)
    facts_read = gathered_facts(denial(), done)
    assert facts_read is not None and not facts_read.principal.groups_known
    assert decide(denial(), facts_read).cause == "ALREADY_GRANTED"
