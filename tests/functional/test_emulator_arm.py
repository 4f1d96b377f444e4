"""The emulator's ARM routes, driven through the real azure-mgmt-keyvault and azure-mgmt-authorization clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)

from remediate.emulator import Emulator
from tests.support.emulator import (
    ANA,
    APP,
    APP_TEAM,
    KV_ADMINS,
    KV_POLICY,
    KV_RBAC,
    KV_READER,
    MG_ROOT,
    MI,
    READER,
    RG,
    SECRETS_USER,
    SUB,
    TENANT,
    async_auth_client,
    async_kv_client,
    auth_client,
    err_code,
    kv_client,
    small,
)

RA = "/providers/Microsoft.Authorization/roleAssignments/"


@pytest.fixture(scope="module")
def ro_emu() -> Iterator[Emulator]:
    """A read-only emulator shared by the module (page size 2 so paging is always exercised)."""
    with Emulator(small(), page_size=2) as emu:
        yield emu
    assert not emu.unrouted, emu.unrouted


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh emulator per test, for writes."""
    with Emulator(small(), page_size=2) as e:
        yield e
    assert not e.unrouted, e.unrouted


def names(items: object) -> list[str]:
    return sorted(str(getattr(i, "name", "")) for i in items)  # type: ignore[attr-defined]


def policy(object_id: str, application_id: str | None = None, **perms: list[str]) -> VaultAccessPolicyParameters:
    """The SDK's request model for one entry (the SDK names the keys list ``keys_property``)."""
    if "keys" in perms:
        perms["keys_property"] = perms.pop("keys")
    return VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[
        AccessPolicyEntry(tenant_id=TENANT, object_id=object_id, application_id=application_id,
                          permissions=Permissions(**perms))]))


def entry(emu: Emulator, vault: str, object_id: str) -> dict[str, list[str]] | None:
    v = next(v for v in emu.tenant()["vaults"] if v["id"] == vault)
    for e in v["properties"]["accessPolicies"]:
        if e["objectId"] == object_id:
            return dict(e["permissions"])
    return None


# ---- vaults -------------------------------------------------------------------------------------------------
def test_vault_get_and_lists_page_through_next_link(ro_emu: Emulator) -> None:
    kv = kv_client(ro_emu)
    v = kv.vaults.get("rg-app", "kv-rbac")
    assert v.id == KV_RBAC and v.properties.enable_rbac_authorization is True
    assert v.properties.network_acls is not None and v.properties.network_acls.default_action == "Allow"
    ro_emu.reset_count()
    assert names(kv.vaults.list_by_subscription()) == ["kv-policy", "kv-rbac"]
    assert names(kv.vaults.list()) == ["kv-policy", "kv-rbac"]
    assert names(kv.vaults.list_by_resource_group("rg-app")) == ["kv-policy", "kv-rbac"]
    assert ro_emu.request_count == 3  # two vaults fit one page of 2 each time


def test_vault_list_pages_when_more_vaults_than_a_page() -> None:
    data = small()
    for i in range(5):
        data["vaults"].append({"id": f"{RG}/providers/Microsoft.KeyVault/vaults/kv-extra{i}"})
    with Emulator(data, page_size=2) as emu:
        kv = kv_client(emu)
        assert len(list(kv.vaults.list_by_subscription())) == 7
        assert emu.request_count == 4
        assert len(list(kv.vaults.list())) == 7


def test_vault_not_found_is_resource_not_found(ro_emu: Emulator) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        kv_client(ro_emu).vaults.get("rg-app", "nope")
    assert err_code(e) == "ResourceNotFound"
    assert "nope" in str(e.value)


def test_paths_are_case_insensitive(ro_emu: Emulator) -> None:
    v = kv_client(ro_emu).vaults.get("RG-APP", "KV-RBAC")
    assert v.name == "kv-rbac"


def test_vault_writes_are_refused(emu: Emulator) -> None:
    kv = kv_client(emu)
    with pytest.raises(HttpResponseError) as e:
        kv.vaults.update("rg-app", "kv-rbac", {"properties": {"enableRbacAuthorization": False}})
    assert e.value.status_code == 405
    assert emu.tenant()["vaults"][0]["properties"]["enableRbacAuthorization"] is True


async def test_async_vault_get(ro_emu: Emulator) -> None:
    async with async_kv_client(ro_emu) as kv:
        v = await kv.vaults.get("rg-app", "kv-policy")
        assert (v.properties.access_policies or [])[0].object_id == MI


# ---- access policies ------------------------------------------------------------------------------------------
def test_access_policy_add_unions_per_kind_and_leaves_others(emu: Emulator) -> None:
    kv = kv_client(emu)
    r = kv.vaults.update_access_policy("rg-app", "kv-policy", "add", policy(MI, secrets=["get", "set"], keys=["sign"]))
    assert r.id == f"{KV_POLICY}/accessPolicies/" and r.type == "Microsoft.KeyVault/vaults/accessPolicies"
    assert r.properties.access_policies[0].permissions.secrets == ["get", "set"]
    # "get" is already held as "Get": kept as stored, not duplicated
    assert entry(emu, KV_POLICY, MI) == {"secrets": ["Get", "List", "set"], "keys": ["get", "sign"]}
    kv.vaults.update_access_policy("rg-app", "kv-policy", "add", policy(APP, certificates=["get"]))
    assert entry(emu, KV_POLICY, APP) == {"certificates": ["get"]}
    assert entry(emu, KV_POLICY, MI) == {"secrets": ["Get", "List", "set"], "keys": ["get", "sign"]}


def test_access_policy_replace_is_per_entry(emu: Emulator) -> None:
    kv = kv_client(emu)
    kv.vaults.update_access_policy("rg-app", "kv-policy", "add", policy(APP, keys=["get"]))
    kv.vaults.update_access_policy("rg-app", "kv-policy", "replace", policy(MI, keys=["list"]))
    assert entry(emu, KV_POLICY, MI) == {"keys": ["list"]}
    assert entry(emu, KV_POLICY, APP) == {"keys": ["get"]}


def test_access_policy_remove_takes_only_listed_permissions_case_sensitively(emu: Emulator) -> None:
    kv = kv_client(emu)
    # stored as "Get"/"List": a lower-case "get" does not match (ARM is case-sensitive here) and is a no-op 200
    kv.vaults.update_access_policy("rg-app", "kv-policy", "remove", policy(MI, secrets=["get"]))
    assert entry(emu, KV_POLICY, MI) == {"secrets": ["Get", "List"], "keys": ["get"]}
    kv.vaults.update_access_policy("rg-app", "kv-policy", "remove", policy(MI, secrets=["Get"]))
    assert entry(emu, KV_POLICY, MI) == {"secrets": ["List"], "keys": ["get"]}
    # an entry that does not exist is ignored
    kv.vaults.update_access_policy("rg-app", "kv-policy", "remove", policy(ANA, secrets=["get"]))
    # an entry left with nothing is deleted
    kv.vaults.update_access_policy("rg-app", "kv-policy", "remove", policy(MI, secrets=["List"], keys=["get"]))
    assert entry(emu, KV_POLICY, MI) is None


def test_access_policy_compound_identity_is_its_own_entry(emu: Emulator) -> None:
    kv = kv_client(emu)
    kv.vaults.update_access_policy("rg-app", "kv-policy", "add", policy(MI, APP, secrets=["get"]))
    v = kv.vaults.get("rg-app", "kv-policy")
    entries = v.properties.access_policies or []
    assert len(entries) == 2
    assert {e.application_id for e in entries} == {None, APP}


def test_access_policy_bad_requests(emu: Emulator) -> None:
    kv = kv_client(emu)
    with pytest.raises(HttpResponseError) as e:
        kv.vaults.update_access_policy("rg-app", "kv-policy", "add", policy(MI, secrets=["fly"]))
    assert e.value.status_code == 400 and err_code(e) == "BadRequest"
    with pytest.raises(HttpResponseError) as e:
        kv.vaults.update_access_policy("rg-app", "kv-policy", "merge", policy(MI, secrets=["get"]))
    assert e.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.update_access_policy("rg-app", "missing", "add", policy(MI, secrets=["get"]))


async def test_access_policy_concurrent_adds_all_land(emu: Emulator) -> None:
    import asyncio

    ids = [str(uuid.UUID(int=i + 1)) for i in range(30)]
    async with async_kv_client(emu) as kv:
        await asyncio.gather(*(kv.vaults.update_access_policy("rg-app", "kv-policy", "add",
                                                              policy(i, secrets=["get"])) for i in ids))
    for i in ids:
        assert entry(emu, KV_POLICY, i) == {"secrets": ["get"]}
    assert entry(emu, KV_POLICY, MI) == {"secrets": ["Get", "List"], "keys": ["get"]}


# ---- role assignments: listing and filters --------------------------------------------------------------------
def ra_names(items: object) -> list[str]:
    return sorted(str(getattr(a, "name", ""))[-1] for a in items)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("flt", "want"), [
    (None, ["1", "2", "3", "4"]),                                     # at, above (MG, RG) and below (object)
    ("atScope()", ["1", "2", "3"]),                                   # at or above only
    (f"assignedTo('{APP}')", ["1", "2"]),                             # own + via app-team -> kv-admins at the MG
    (f"atScope() and assignedTo('{APP}')", ["1", "2"]),
    (f"assignedTo('{ANA}') and atScope()", ["3"]),
    (f"principalId eq '{ANA}'", ["3", "4"]),                          # direct only, incl. the object scope
    (f"principalId eq '{APP}'", ["1"]),
    (f"assignedTo('{KV_ADMINS}')", ["2"]),
])
def test_role_assignment_filters(ro_emu: Emulator, flt: str | None, want: list[str]) -> None:
    assert ra_names(auth_client(ro_emu).role_assignments.list_for_scope(KV_RBAC, filter=flt)) == want


def test_role_assignment_scopes_compare_case_insensitively(ro_emu: Emulator) -> None:
    got = auth_client(ro_emu).role_assignments.list_for_scope(KV_RBAC.upper(), filter="atScope()")
    assert ra_names(got) == ["1", "2", "3"]


def test_role_assignment_object_scope_sees_vault_and_above(ro_emu: Emulator) -> None:
    got = auth_client(ro_emu).role_assignments.list_for_scope(f"{KV_RBAC}/secrets/db-password",
                                                             filter=f"atScope() and assignedTo('{ANA}')")
    assert ra_names(got) == ["3", "4"]


def test_management_group_assignments_reach_only_their_subscriptions(ro_emu: Emulator) -> None:
    auth = auth_client(ro_emu)
    at_mg = auth.role_assignments.list_for_scope(MG_ROOT, filter="atScope()")
    assert ra_names(at_mg) == ["2"]
    other = "/subscriptions/99999999-0000-0000-0000-000000000009"
    assert ra_names(auth.role_assignments.list_for_scope(other, filter="atScope()")) == []
    assert ra_names(auth.role_assignments.list_for_subscription(filter="atScope()")) == ["2"]


def test_role_assignment_list_pages_with_small_page_size(ro_emu: Emulator) -> None:
    ro_emu.reset_count()
    got = list(auth_client(ro_emu).role_assignments.list_for_scope(KV_RBAC))
    assert len(got) == 4 and ro_emu.request_count == 2


def test_role_assignment_bad_filter_is_400(ro_emu: Emulator) -> None:
    with pytest.raises(HttpResponseError) as e:
        list(auth_client(ro_emu).role_assignments.list_for_scope(KV_RBAC, filter="roleName eq 'x'"))
    assert e.value.status_code == 400 and err_code(e) == "UnsupportedQuery"
    assert ro_emu.unrouted == [f"GET {KV_RBAC}/providers/Microsoft.Authorization/roleAssignments"]  # noted as a gap
    ro_emu.unrouted.clear()


def test_group_member_of_is_followed_transitively(ro_emu: Emulator) -> None:
    assert ro_emu.state.groups_of(APP) == [APP_TEAM, KV_ADMINS]


async def test_async_role_assignment_list(ro_emu: Emulator) -> None:
    async with async_auth_client(ro_emu) as auth:
        got = [a async for a in auth.role_assignments.list_for_scope(KV_RBAC, filter=f"assignedTo('{APP}')")]
    assert ra_names(got) == ["1", "2"]


# ---- role assignments: writes --------------------------------------------------------------------------------
def create_params(principal: str, role: str, ptype: str | None = "ServicePrincipal") -> dict[str, object]:
    props: dict[str, object] = {"roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/"
                                                    f"roleDefinitions/{role}", "principalId": principal}
    if ptype:
        props["principalType"] = ptype
    return {"properties": props}


def test_role_assignment_create_get_delete(emu: Emulator) -> None:
    auth = auth_client(emu)
    name = str(uuid.uuid4())
    a = auth.role_assignments.create(KV_RBAC, name, create_params(MI, KV_READER))
    assert a.name == name and a.scope == KV_RBAC and a.principal_type == "ServicePrincipal"
    assert a.id == f"{KV_RBAC}{RA}{name}" and a.created_on is not None
    again = auth.role_assignments.create(KV_RBAC, name, create_params(MI, KV_READER))  # idempotent
    assert again.id == a.id
    got = auth.role_assignments.get(KV_RBAC, name)
    assert got.role_definition_id.endswith(KV_READER)
    assert auth.role_assignments.get_by_id(a.id).name == name
    deleted = auth.role_assignments.delete(KV_RBAC, name)
    assert deleted is not None and deleted.name == name
    assert auth.role_assignments.delete(KV_RBAC, name) is None  # 204 when absent
    with pytest.raises(ResourceNotFoundError) as e:
        auth.role_assignments.get(KV_RBAC, name)
    assert err_code(e) == "RoleAssignmentNotFound"


def test_role_assignment_duplicate_under_another_name_is_409(emu: Emulator) -> None:
    auth = auth_client(emu)
    with pytest.raises(ResourceExistsError) as e:
        auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(APP, SECRETS_USER))
    assert err_code(e) == "RoleAssignmentExists"
    assert len(emu.tenant()["role_assignments"]) == 4


def test_role_assignment_principal_checks(emu: Emulator) -> None:
    auth = auth_client(emu)
    stranger = str(uuid.uuid4())
    with pytest.raises(HttpResponseError) as e:
        auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(stranger, READER, ptype=None))
    assert e.value.status_code == 400 and err_code(e) == "PrincipalNotFound"
    # with principalType set, ARM accepts a principal it cannot see yet (replication delay)
    auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(stranger, READER))
    # a known principal gets its type filled in; a wrong type is refused
    a = auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(ANA, READER, ptype=None))
    assert a.principal_type == "User"
    with pytest.raises(HttpResponseError) as e:
        auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(MI, KV_READER, ptype="User"))
    assert err_code(e) == "UnmatchedPrincipalType"


def test_role_assignment_unknown_role_and_bad_name(emu: Emulator) -> None:
    auth = auth_client(emu)
    with pytest.raises(HttpResponseError) as e:
        auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(MI, str(uuid.uuid4())))
    assert err_code(e) == "RoleDefinitionDoesNotExist"
    with pytest.raises(HttpResponseError) as e:
        auth.role_assignments.create(KV_RBAC, "not-a-guid", create_params(MI, READER))
    assert err_code(e) == "InvalidRoleAssignmentId"


async def test_async_role_assignment_create_race_makes_one(emu: Emulator) -> None:
    import asyncio

    async with async_auth_client(emu) as auth:
        results = await asyncio.gather(*(auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()),
                                                                      create_params(MI, SECRETS_USER))
                                         for _ in range(10)), return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert all(isinstance(r, ResourceExistsError) for r in results if isinstance(r, Exception))


# ---- role definitions -------------------------------------------------------------------------------------------
def test_role_definitions_builtin_and_custom(ro_emu: Emulator) -> None:
    auth = auth_client(ro_emu)
    rd = auth.role_definitions.get(f"/subscriptions/{SUB}", SECRETS_USER)
    assert rd.role_name == "Key Vault Secrets User" and rd.role_type == "BuiltInRole"
    assert rd.id == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}"
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in rd.permissions[0].data_actions
    by_id = auth.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}")
    assert by_id.role_name == "Key Vault Secrets User"
    custom = auth.role_definitions.get(KV_RBAC, "cccccccc-0000-0000-0000-000000000001")
    assert custom.role_type == "CustomRole" and custom.role_name == "Secret Getter"
    everything = list(auth.role_definitions.list(f"/subscriptions/{SUB}"))
    assert len(everything) == 20
    customs = list(auth.role_definitions.list(f"/subscriptions/{SUB}", filter="type eq 'CustomRole'"))
    assert [c.role_name for c in customs] == ["Secret Getter"]
    with pytest.raises(ResourceNotFoundError):
        auth.role_definitions.get(f"/subscriptions/{SUB}", str(uuid.uuid4()))


def test_custom_role_definition_put_then_assign(emu: Emulator) -> None:
    auth = auth_client(emu)
    guid = str(uuid.uuid4())
    rd = auth.role_definitions.create_or_update(KV_RBAC, guid, {"properties": {
        "roleName": "kv-rbac secret reader", "description": "exactly the missing action", "type": "CustomRole",
        "permissions": [{"actions": [], "notActions": [], "notDataActions": [],
                         "dataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}],
        "assignableScopes": [KV_RBAC]}})
    assert rd.name == guid and rd.assignable_scopes == [KV_RBAC]
    a = auth.role_assignments.create(KV_RBAC, str(uuid.uuid4()), create_params(MI, guid))
    assert a.role_definition_id.endswith(guid)
    assert any(r["name"] == guid for r in emu.tenant()["role_definitions"])
    with pytest.raises(ResourceExistsError) as e:
        auth.role_definitions.create_or_update(KV_RBAC, str(uuid.uuid4()), {"properties": {
            "roleName": "KV-RBAC SECRET READER", "permissions": [], "assignableScopes": [KV_RBAC]}})
    assert err_code(e) == "RoleDefinitionWithSameNameExists"


# ---- deny assignments ---------------------------------------------------------------------------------------------
def test_deny_assignments_list_for_scope(ro_emu: Emulator) -> None:
    auth = auth_client(ro_emu)
    got = list(auth.deny_assignments.list_for_scope(KV_RBAC))
    assert len(got) == 1
    d = got[0]
    assert d.permissions[0].data_actions == ["Microsoft.KeyVault/vaults/secrets/purge/action"]
    assert d.exclude_principals[0].id == ANA and d.do_not_apply_to_child_scopes is False
    assert d.scope == RG and d.is_system_protected is True
    assert len(list(auth.deny_assignments.list_for_scope(KV_RBAC, filter="atScope()"))) == 1
    assert list(auth.deny_assignments.list_for_scope(f"/subscriptions/{SUB}", filter="atScope()")) == []
    assert auth.deny_assignments.get_by_id(d.id).name == d.name


# ---- PIM -------------------------------------------------------------------------------------------------------------
def test_pim_admin_assign_with_expiry_then_admin_remove(emu: Emulator) -> None:
    auth = auth_client(emu)
    rd = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}"
    start = datetime.now(UTC).replace(microsecond=0)
    req = auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), {"properties": {
        "principalId": MI, "roleDefinitionId": rd, "requestType": "AdminAssign", "justification": "alert 42",
        "scheduleInfo": {"startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "expiration": {"type": "AfterDuration", "duration": "PT8H"}}}})
    assert req.status == "Provisioned" and req.principal_type == "ServicePrincipal"
    created = [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == MI]
    end = (start + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S")
    assert len(created) == 1 and created[0]["expiresOn"].startswith(end)
    assert created[0]["name"] == req.target_role_assignment_schedule_id
    # a request name is single-use in Azure (Azure/bicep-types-az#1431): sending it again is refused
    with pytest.raises(HttpResponseError) as again:
        auth.role_assignment_schedule_requests.create(KV_RBAC, req.name, {"properties": {
            "principalId": MI, "roleDefinitionId": rd, "requestType": "AdminAssign"}})
    assert again.value.status_code == 400 and err_code(again) == "RoleAssignmentRequestExists"
    assert f"A role assignment request with Id: {req.name} already exists" in str(again.value)
    # a new request while the assignment is active: 400 RoleAssignmentExists (not a 409)
    with pytest.raises(HttpResponseError) as active:
        auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), {"properties": {
            "principalId": MI, "roleDefinitionId": rd, "requestType": "AdminAssign"}})
    assert active.value.status_code == 400 and err_code(active) == "RoleAssignmentExists"
    assert not isinstance(active.value, ResourceExistsError)
    removed = auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), {"properties": {
        "principalId": MI, "roleDefinitionId": rd, "requestType": "AdminRemove"}})
    assert removed.status == "Revoked"
    assert not [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == MI]
    with pytest.raises(HttpResponseError) as e:
        auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), {"properties": {
            "principalId": MI, "roleDefinitionId": rd, "requestType": "AdminRemove"}})
    assert err_code(e) == "RoleAssignmentDoesNotExist"


def _pim_policy(*rules: dict[str, object]) -> dict[str, object]:
    return {"properties": {"scope": f"/subscriptions/{SUB}", "roleDefinitionId": SECRETS_USER,
                           "effectiveRules": list(rules)}}


EXPIRATION = {"ruleType": "RoleManagementPolicyExpirationRule", "id": "Expiration_Admin_Assignment",
              "isExpirationRequired": True, "maximumDuration": "PT4H",
              "target": {"caller": "Admin", "level": "Assignment"}}
APPROVAL = {"ruleType": "RoleManagementPolicyApprovalRule", "id": "Approval_Admin_Assignment",
            "setting": {"isApprovalRequired": True}, "target": {"caller": "Admin", "level": "Assignment"}}


@pytest.mark.parametrize("duration, code, status", [
    ("PT8H", "RoleAssignmentRequestPolicyValidationFailed", None),   # longer than the rule's maximum
    ("PT2H", None, "Provisioned"),
])
def test_pim_expiration_rule_refuses_as_azure_does(duration: str, code: str | None, status: str | None) -> None:
    # given a role management policy whose expiration rule allows at most 4 hours
    snap = small()
    snap["role_management_policies"] = [_pim_policy(EXPIRATION)]
    with Emulator(snap) as emu:
        auth = auth_client(emu)
        body = {"properties": {"principalId": MI, "roleDefinitionId": SECRETS_USER, "requestType": "AdminAssign",
                               "scheduleInfo": {"expiration": {"type": "AfterDuration", "duration": duration}}}}
        # when a request asks for longer (or shorter); then it is refused with ARM's message (or provisioned)
        if code:
            with pytest.raises(HttpResponseError) as e:
                auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), body)
            assert e.value.status_code == 400 and err_code(e) == code
            assert 'The following policy rules failed: ["ExpirationRule"]' in str(e.value)
            assert not [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == MI]
        else:
            assert auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), body).status == status


def test_pim_approval_rule_leaves_the_request_pending_until_decided() -> None:
    # given a policy requiring an approver
    snap = small()
    snap["role_management_policies"] = [_pim_policy(APPROVAL)]
    with Emulator(snap) as emu:
        auth = auth_client(emu)
        body = {"properties": {"principalId": MI, "roleDefinitionId": SECRETS_USER, "requestType": "AdminAssign",
                               "scheduleInfo": {"expiration": {"type": "AfterDuration", "duration": "PT1H"}}}}
        # when a request is made; then it is PendingApproval, with an approval id and no assignment yet
        req = auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), body)
        assert req.status == "PendingApproval" and req.approval_id
        assert not [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == MI]
        # when the approver approves; then it is provisioned and the assignment exists, with its expiry
        emu.state.decide_schedule_request(str(req.id), approve=True)
        assert auth.role_assignment_schedule_requests.get(KV_RBAC, str(req.name)).status == "Provisioned"
        [a] = [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == MI]
        assert a["expiresOn"]


def test_pim_assignment_past_its_expiry_is_gone(emu: Emulator) -> None:
    auth = auth_client(emu)
    auth.role_assignment_schedule_requests.create(KV_RBAC, str(uuid.uuid4()), {"properties": {
        "principalId": MI, "roleDefinitionId": SECRETS_USER, "requestType": "AdminAssign",
        "scheduleInfo": {"startDateTime": "2020-01-01T00:00:00Z",
                         "expiration": {"type": "AfterDateTime", "endDateTime": "2020-01-02T00:00:00Z"}}}})
    assert ra_names(auth.role_assignments.list_for_scope(KV_RBAC, filter=f"principalId eq '{MI}'")) == []


# ---- unknown routes ------------------------------------------------------------------------------------------------
def test_unknown_route_is_404_and_recorded(emu: Emulator) -> None:
    kv = kv_client(emu)
    with pytest.raises(HttpResponseError) as e:
        kv.vaults.get_deleted("kv-gone", "westeurope")
    assert e.value.status_code == 404 and err_code(e) == "InvalidResourceType"
    assert emu.unrouted and "deletedVaults" in emu.unrouted[0]
    emu.unrouted.clear()


def test_role_assignment_re_put_may_change_condition_only(emu: Emulator) -> None:
    auth = auth_client(emu)
    name = str(uuid.uuid4())
    auth.role_assignments.create(KV_RBAC, name, create_params(MI, SECRETS_USER))
    cond = "@Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals 'db-password'"
    body = create_params(MI, SECRETS_USER)
    body["properties"].update(condition=cond, conditionVersion="2.0")  # type: ignore[attr-defined]
    a = auth.role_assignments.create(KV_RBAC, name, body)
    assert a.condition == cond and a.condition_version == "2.0"
    with pytest.raises(ResourceExistsError) as e:
        auth.role_assignments.create(KV_RBAC, name, create_params(ANA, SECRETS_USER, ptype="User"))
    assert err_code(e) == "RoleAssignmentUpdateNotPermitted"
