"""Replay of recorded ARM traffic through the real SDK clients and our adapters (issue 18, "Tests").

tests/support/replay.ReplayServer answers only the recorded method+path+query (tests/fixtures/recordings, sources in
its SOURCES.md) over loopback HTTPS; the SDK clients and facts.arm read the recorded bodies exactly as they
would read ARM's. What real bodies do that the emulator's never did: ``createdBy: null``, ids at the tenant root
(``/providers/Microsoft.Authorization/...``), role definition ids under a subscription for assignments at '/',
vaults with no ``networkAcls`` / ``publicNetworkAccess`` keys at all, ``vaultUri`` and ``.../accessPolicies/``
with trailing slashes, and permission lists in mixed case (``wrapKey``, ``managecontacts``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from remediate import catalog
from remediate.decide import scope_applies
from remediate.errors import AzureUnavailableError
from remediate.facts.arm import ArmFacts
from remediate.facts.convert import assignment_from_sdk
from remediate.facts.writes import ArmWriter
from remediate.model import VaultRef
from tests.support.emulator import auth_client, kv_client
from tests.support.replay import Interaction, ReplayServer, raw_body, recorded, spec_example

SUB = "00000000-0000-0000-0000-000000000000"
RG = f"/subscriptions/{SUB}/resourceGroups/cli_role_assign000001"
SP = "88c53162-584e-4c98-984b-62149c2e9bca"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
RBAC_VAULT = (f"/subscriptions/{SUB}/resourceGroups/cli_test_keyvault_rbac000001/providers/Microsoft.KeyVault/"
              "vaults/cli-test-keyvault-000002")
SPEC_VAULT = (f"/subscriptions/{SUB}/resourceGroups/sample-resource-group/providers/Microsoft.KeyVault/vaults/"
              "sample-vault")


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Iterator[ReplayServer]:
    interactions: list[Interaction] = request.param
    server = ReplayServer(*interactions)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def facts(server: ReplayServer) -> ArmFacts:
    return ArmFacts(server.async_credential(), [SUB], arm_url=server.base_url, graph_url=server.base_url,
                    transport_factory=server.async_transport, retry_total=0)


# ---- vaults ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("replay", [[recorded("05_vault_get_rbac_vault.yaml")]], indirect=True)
async def test_rbac_vault_without_network_keys_is_read(replay: ReplayServer) -> None:
    # given ARM's real body for an RBAC vault that never had networkAcls/publicNetworkAccess set
    async with facts(replay) as f:
        # when the vault is looked up by id
        found = await f.find_vault(VaultRef(resource_id=RBAC_VAULT))
    # then it is read, with "no network rule" rather than a crash or an invented default
    v = found.vault
    assert v is not None and v.rbac and v.name == "cli-test-keyvault-000002" and v.access_policies == ()
    assert (v.network_default_action, v.network_bypass, v.public_network_access) == (None, None, None)
    assert v.ip_rules == () and v.virtual_network_rules == 0 and v.tenant_id == "dfe47ca8-acfc-4539-9519-7d196a9c79e4"
    assert [s for s, _ in replay.served] == ["05_vault_get_rbac_vault.yaml"] and replay.refused == []


@pytest.mark.parametrize("replay", [[spec_example("08_spec_example_vaults_get_2026-05-15.json", "GET", SPEC_VAULT)]],
                         indirect=True)
async def test_access_policy_permissions_in_mixed_case_are_read_canonically(replay: ReplayServer) -> None:
    async with facts(replay) as f:
        v = (await f.find_vault(VaultRef(resource_id=SPEC_VAULT))).vault
    assert v is not None and not v.rbac and v.public_network_access == "Enabled"
    assert v.network_default_action is None            # the example has publicNetworkAccess but no networkAcls
    (entry,) = v.access_policies
    recorded_keys = raw_body(replay.interactions[0])["properties"]["accessPolicies"][0]["permissions"]["keys"]
    assert "wrapKey" in recorded_keys and "wrapkey" in entry.permissions["keys"]
    for kind, perms in entry.permissions.items():
        assert all(catalog.canonical_permission(kind, p) is not None for p in perms), (kind, perms)
    assert entry.permissions["certificates"][:2] == ("get", "list") and "managecontacts" in entry.permissions[
        "certificates"]


@pytest.mark.parametrize("replay", [[recorded("06_resources_list_filter_keyvault_vaults.yaml")]], indirect=True)
def test_generic_resource_list_of_vaults_has_no_properties(replay: ReplayServer) -> None:
    """``vaults.list()`` is the generic /resources list: ids and names only, no permission model (so the
    product never decides from it; it lists with list_by_subscription)."""
    items = list(kv_client(replay, SUB).vaults.list())
    assert [i.name for i in items][:3] == ["bim-df-kv", "bim-rbac1", "bim-rbac2"]
    assert all(str(i.id).startswith(f"/subscriptions/{SUB}/resourceGroups/") for i in items)
    assert replay.refused == [] and replay.served[0][1] is not None   # (our SDK's own api-version, not 2015-11-01)


@pytest.mark.parametrize("replay", [[spec_example("07_spec_example_vaults_updateAccessPolicy_add_2026-05-15.json",
                                                  "PUT", "/subscriptions/00000000-0000-0000-0000-000000000000/"
                                                  "resourceGroups/sample-group/providers/Microsoft.KeyVault/vaults/"
                                                  "sample-vault/accessPolicies/add")]], indirect=True)
def test_access_policy_add_answer_with_trailing_slash_id_is_read(replay: ReplayServer) -> None:
    from azure.mgmt.keyvault.models import (
        AccessPolicyEntry,
        Permissions,
        VaultAccessPolicyParameters,
        VaultAccessPolicyProperties,
    )

    entry = AccessPolicyEntry(tenant_id=SUB, object_id=SUB, permissions=Permissions(secrets=["get"]))
    got = kv_client(replay, SUB).vaults.update_access_policy(
        "sample-group", "sample-vault", "add",
        VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[entry])))
    assert str(got.id).endswith("/sample-vault/accessPolicies/")
    keys = got.properties.access_policies[0].permissions.keys_property or []
    assert [getattr(x, "value", x) for x in keys] == ["encrypt"]


# ---- role assignments ------------------------------------------------------------------------------------------
UAA = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
ATSCOPE_RG = "04_role_assignment_list_atScope_at_rg_returns_root_and_subscription_EXCERPT.yaml"


@pytest.mark.parametrize("replay", [[recorded(ATSCOPE_RG)]], indirect=True)
async def test_root_and_subscription_assignments_apply_to_a_vault_below(replay: ReplayServer) -> None:
    # given ARM's real atScope() answer at a resource group: items at '/' and at the subscription
    rg = f"/subscriptions/{SUB}/resourceGroups/cli_role_assign000001"
    async with facts(replay) as f:
        items = [assignment_from_sdk(a) async for a in
                 f.authorization_client().role_assignments.list_for_scope(rg, filter="atScope()")]
        uaa = [a.role_definition_id for a in items if a.role_definition_id.endswith(UAA)]
        roles = await f.role_definitions(uaa)      # a built-in: from package data, no request
    vault = f"{rg}/providers/Microsoft.KeyVault/vaults/kv1/secrets/s1"
    root = [a for a in items if a.scope == "/"]
    assert root and all(a.id.startswith("/providers/Microsoft.Authorization/roleAssignments/") for a in root)
    # then scope logic accepts the root and subscription items for an object below them
    assert all(scope_applies(a.scope, vault) for a in items)
    # and a built-in referenced by a subscription-scoped definition id is known from package data
    assert uaa and uaa[0].startswith(f"/subscriptions/{SUB}/providers/") and root[0].role_definition_id in uaa
    assert roles[UAA].role_name == "User Access Administrator" and len(replay.served) == 1


@pytest.mark.parametrize("replay", [[recorded(ATSCOPE_RG)]], indirect=True)
async def test_anything_not_recorded_is_refused(replay: ReplayServer) -> None:
    """The replay is strict: our own query (atScope() and assignedTo) was not recorded, so it is refused, and
    facts.arm reports that as Azure's refusal (never as an empty list)."""
    async with facts(replay) as f:
        with pytest.raises(AzureUnavailableError):
            await f.assignments(SP, RG)
    assert replay.refused and "assignedTo" in replay.refused[0]


@pytest.mark.parametrize("replay", [[recorded("03_role_assignment_list_principalId_eq_at_resource_group.yaml"),
                                     recorded("02_role_assignment_list_principalId_eq_at_subscription_returns_"
                                              "below.yaml")]], indirect=True)
async def test_read_back_by_principal_finds_the_recorded_assignment(replay: ReplayServer) -> None:
    async with facts(replay) as f:
        writer = ArmWriter(f)
        at_rg = await writer.role_assignment_exists(RG, "", f"/providers/Microsoft.Authorization/roleDefinitions/"
                                                    f"{READER}", SP)
        # at the subscription the same filter returns the RG item (below): it is not "at the subscription"
        at_sub = await writer.role_assignment_exists(f"/subscriptions/{SUB}", "", READER, SP)
    assert at_rg is True and at_sub is False
    assert {s for s, _ in replay.served} == {i.source for i in replay.interactions} and replay.refused == []


@pytest.mark.parametrize("replay", [[recorded("01_role_assignment_create_with_principalType_201.yaml")]],
                         indirect=True)
def test_created_assignment_with_created_by_null_is_read(replay: ReplayServer) -> None:
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    body = raw_body(replay.interactions[0])
    assert body["properties"]["createdBy"] is None
    got = auth_client(replay, SUB).role_assignments.create(RG, "88888888-0000-0000-0000-000000000001",
                                                           RoleAssignmentCreateParameters(  # type: ignore[call-arg]
                                                               role_definition_id=f"/subscriptions/{SUB}/providers/"
                                                               f"Microsoft.Authorization/roleDefinitions/{READER}",
                                                               principal_id=SP, principal_type="ServicePrincipal"))
    a = assignment_from_sdk(got)
    assert (a.scope, a.principal_id, a.principal_type) == (RG, SP, "ServicePrincipal")
    assert a.role_definition_id.endswith(READER) and got.created_by is None


# ---- deny assignments ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("replay", [[spec_example("09_spec_example_denyAssignments_listForScope_2022-04-01.json",
                                                  "GET", "/subscriptions/subId/providers/Microsoft.Authorization/"
                                                  "denyAssignments")]], indirect=True)
async def test_deny_assignments_are_read(replay: ReplayServer) -> None:
    async with facts(replay) as f:
        (d,) = await f.deny_assignments("/subscriptions/subId")
    assert (d.name, d.scope, d.principal_ids, d.exclude_principal_ids) == (
        "Deny assignment name", "/subscriptions/subId", ("principalId1",), ("principalId2",))
    assert d.data_actions == ("action",) and d.do_not_apply_to_child_scopes is False
