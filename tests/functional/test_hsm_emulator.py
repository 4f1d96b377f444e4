"""The Managed HSM on the bundled emulator, driven by the real clients: azure-keyvault-administration's async
KeyVaultAccessControlClient at the HSM's real host name (local RBAC at /, /keys and /keys/{name}; paging; the
recorded 404 and 403 bodies; the 401 challenge) and azure-mgmt-keyvault's managed_hsms on the ARM routes."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.core.rest import HttpRequest

from remediate.catalog.hsm import builtin_roles
from remediate.emulator import Emulator
from tests.support.hsm import (
    ADMIN,
    APP,
    AUDITOR,
    CUSTOM,
    HSM,
    HSM_ID,
    HSM_URL,
    OFFICER,
    RG,
    SIGNER,
    STRANGER,
    access_client,
    mgmt_client,
    renamed,
    role_id,
    tenant,
)


async def _principals_at(emu: Emulator, scope: str) -> set[str]:
    async with access_client(emu) as client:
        return {a.properties.principal_id async for a in client.list_role_assignments(scope)}


@pytest.mark.parametrize(("scope", "expected"), [
    ("/", {ADMIN, AUDITOR, OFFICER}),                 # top level only: no key-level assignment shows
    ("/keys", {ADMIN, AUDITOR, OFFICER}),
    ("/keys/cmk", {ADMIN, AUDITOR, OFFICER, APP}),     # the key's own, and the HSM-level ones above it
    ("/keys/sig", {ADMIN, AUDITOR, OFFICER, SIGNER}),
])
async def test_listing_at_each_scope_shows_what_applies_there(scope: str, expected: set[str]) -> None:
    # given the HSM with assignments at /, /keys, /keys/cmk and /keys/sig
    with Emulator(tenant()) as emu:
        # when the real client lists at the scope
        got = await _principals_at(emu, scope)
    # then the key-level assignments show only at their key
    assert got == expected


async def test_the_first_request_is_challenged_and_the_sdk_authenticates_for_the_managedhsm_audience() -> None:
    # given an HSM host no client of this process has been challenged by (the SDK caches challenges per host)
    with Emulator(renamed(tenant(), "hsm-challenged")) as emu:
        emu.reset_count()
        async with access_client(emu, url="https://hsm-challenged.managedhsm.azure.net") as client:
            # when it reads one assignment
            got = await client.get_role_assignment("/", "0000aaaa-0000-0000-0000-000000000001")
            first = emu.request_count
            await client.get_role_assignment("/", "0000aaaa-0000-0000-0000-000000000001")
        # then the HSM challenged once (401 + retry with a token), and the second read needed no challenge
        assert got.properties.principal_id == ADMIN
        assert first == 2
        assert emu.request_count == 3


async def test_list_pages_through_next_link() -> None:
    # given 23 assignments at /keys and a page size of 5
    t = tenant()
    t["hsm_role_assignments"][HSM] += [
        {"name": f"0000bbbb-0000-0000-0000-{i:012d}", "principalId": f"55555555-0000-0000-0000-{i:012d}",
         "scope": "/keys", "roleDefinitionId": role_id("Managed HSM Crypto Service Release User")} for i in range(20)]
    with Emulator(t, page_size=5) as emu:
        async with access_client(emu) as client:
            await client.get_role_definition("/", CUSTOM)       # the challenge, answered once for this host
            emu.reset_count()
            # when the client lists them
            got = {a.properties.principal_id async for a in client.list_role_assignments("/keys")}
        # then every page is followed: 23 assignments in 5 pages
        assert len(got) == 23
        assert emu.request_count == 5


async def test_role_definitions_at_root_are_the_builtins_and_the_custom_role() -> None:
    with Emulator(tenant()) as emu:
        async with access_client(emu) as client:
            defs = [d async for d in client.list_role_definitions("/")]
    by_name = {d.name: d for d in defs}
    assert {r.name for r in builtin_roles()} <= set(by_name)
    assert by_name[CUSTOM].role_type == "CustomRole"
    assert [str(getattr(a, "value", a)) for p in by_name[CUSTOM].permissions for a in p.data_actions] == [
        "Microsoft.KeyVault/managedHsm/keys/sign/action"]
    auditor = by_name["2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"]
    assert auditor.id == "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/" + auditor.name
    assert str(getattr(auditor.role_type, "value", auditor.role_type)) == "AKVBuiltInRole"


async def test_create_get_delete_with_the_recorded_shapes() -> None:
    with Emulator(tenant()) as emu:
        async with access_client(emu) as client:
            # when an assignment is created at a key scope
            made = await client.create_role_assignment(
                "/keys/cmk", role_id("Managed HSM Crypto Service Release User"), STRANGER,
                name="0000cccc-0000-0000-0000-000000000001")
            # then it has the HSM's id shape ({scope}/providers/...) and reads back
            assert made.role_assignment_id == ("/keys/cmk/providers/Microsoft.Authorization/roleAssignments/"
                                               "0000cccc-0000-0000-0000-000000000001")
            got = await client.get_role_assignment("/keys/cmk", made.name)
            assert got.properties.principal_id == STRANGER
            # and deleting it twice is fine (the SDK swallows the second 404)
            await client.delete_role_assignment("/keys/cmk", made.name)
            await client.delete_role_assignment("/keys/cmk", made.name)
            # and it is gone: the recorded 404 body
            with pytest.raises(ResourceNotFoundError) as info:
                await client.get_role_assignment("/keys/cmk", made.name)
    assert info.value.error is not None
    assert info.value.error.code == "RoleAssignmentNotFound"
    assert info.value.error.message.startswith("Requested role assignment not found (Activity ID: ")
    assert info.value.response is not None
    assert info.value.error.message.endswith(f"{info.value.response.headers['x-ms-request-id']})")


async def test_unknown_role_definition_is_the_recorded_404() -> None:
    with Emulator(tenant()) as emu:
        async with access_client(emu) as client:
            with pytest.raises(ResourceNotFoundError) as info:
                await client.get_role_definition("/", "66666666-0000-0000-0000-000000000001")
    assert info.value.error is not None and info.value.error.code == "RoleDefinitionNotFound"
    assert info.value.error.message.startswith("Requested role definition not found (Activity ID: ")


@pytest.mark.parametrize(("caller", "scope", "action"), [
    (STRANGER, "/", "Microsoft.KeyVault/managedHsm/roleAssignments/read/action"),
    (APP, "/keys/cmk", "Microsoft.KeyVault/managedHsm/roleAssignments/read/action"),  # wrap/unwrap only
    (STRANGER, "/", "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action"),
])
async def test_reading_without_a_local_role_is_the_published_403(caller: str, scope: str, action: str) -> None:
    # given the HSM sees `caller` as the one asking
    t = tenant()
    t["emulator"] = {"hsm_caller": caller}
    with Emulator(t) as emu:
        async with access_client(emu) as client:
            # when it lists assignments (or definitions)
            with pytest.raises(HttpResponseError) as info:
                if "roleDefinitions" in action:
                    _ = [d async for d in client.list_role_definitions(scope)]
                else:
                    _ = [a async for a in client.list_role_assignments(scope)]
    # then the HSM's words (azure-cli#32719)
    assert info.value.status_code == 403
    assert info.value.error is not None and info.value.error.code == "AccessDenied"
    assert info.value.error.message.startswith(f"Not authorized to access {action} on {scope} (Activity ID: ")


async def test_a_role_at_keys_reads_at_keys_and_at_a_key() -> None:
    # given the Crypto User (roleAssignments/read/action) assigned at /keys is the caller
    t = tenant()
    t["emulator"] = {"hsm_caller": OFFICER}
    with Emulator(t) as emu:
        # when it lists at /keys and at one key, then both answer
        assert OFFICER in await _principals_at(emu, "/keys")
        assert APP in await _principals_at(emu, "/keys/cmk")


async def test_an_auditor_reads_but_cannot_assign() -> None:
    t = tenant()
    t["emulator"] = {"hsm_caller": AUDITOR}
    with Emulator(t) as emu:
        async with access_client(emu) as client:
            assert len([a async for a in client.list_role_assignments("/")]) == 3
            with pytest.raises(HttpResponseError) as info:
                await client.create_role_assignment("/keys/cmk", role_id("Managed HSM Crypto User"), AUDITOR)
    assert info.value.status_code == 403
    assert "Not authorized to access Microsoft.KeyVault/managedHsm/roleAssignments/write/action on /keys/cmk" in \
        str(info.value)
    # and nothing was written
    assert all(a["properties"]["principalId"] != AUDITOR or a["properties"]["scope"] == "/"
               for a in emu.tenant()["hsm_role_assignments"][HSM])


async def test_an_unknown_hsm_host_does_not_resolve() -> None:
    # given an HSM name the tenant does not have: its host resolves nowhere (as in DNS), and nothing leaves loopback
    with Emulator(tenant()) as emu:
        async with access_client(emu, url="https://hsm-nope.managedhsm.azure.net", retry_total=0) as client:
            with pytest.raises(ServiceRequestError):
                await client.get_role_assignment("/", "0000aaaa-0000-0000-0000-000000000001")


async def test_management_plane_get_and_list_and_404() -> None:
    with Emulator(tenant()) as emu:
        async with mgmt_client(emu) as client:
            got = await client.managed_hsms.get(RG, HSM)
            listed = [h.id async for h in client.managed_hsms.list_by_subscription()]
            in_rg = [h.id async for h in client.managed_hsms.list_by_resource_group(RG)]
            with pytest.raises(ResourceNotFoundError) as info:
                await client.managed_hsms.get(RG, "hsm-nope")
    assert got.id == HSM_ID
    assert got.properties.hsm_uri == HSM_URL + "/"
    assert got.properties.initial_admin_object_ids == [ADMIN]
    assert str(getattr(got.properties.security_domain_properties.activation_status, "value", "")) == "Active"
    assert listed == in_rg == [HSM_ID]
    assert "The Resource 'Microsoft.KeyVault/managedHSMs/hsm-nope' under resource group 'rg-hsm' was not found" in \
        str(info.value)


async def test_a_data_plane_path_the_emulator_does_not_serve_is_recorded_as_unrouted() -> None:
    with Emulator(tenant()) as emu:
        async with access_client(emu) as client:
            response = await client.send_request(HttpRequest("GET", "/keys/cmk"))
    assert response.status_code == 404
    assert emu.unrouted == [f"GET {HSM_URL}/keys/cmk"]
