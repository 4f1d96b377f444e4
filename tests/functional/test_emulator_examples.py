"""The emulator against azure-rest-api-specs' own request/response examples (shared/reference/arm-examples).

Each example's response body becomes snapshot state (or its request is sent), and what the real SDK returns is
compared with the example. ``RoleAssignments_ValidateInvalid.2020-10-01.json`` (the ``validate`` action) is not
emulated: the product never calls it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization.v2020_10_01.models import RoleAssignmentScheduleRequest

from remediate.emulator import Emulator
from tests.support.emulator import (
    auth_client,
    example,
    kv_client,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def sub_of(resource_id: str) -> str:
    return resource_id.split("/")[2]


@pytest.mark.parametrize("name", ["keyvault/getVault.json", "keyvault/createVaultWithNetworkAcls.json"])
def test_vault_bodies_round_trip_through_the_sdk(name: str) -> None:
    ex = example(name)
    body = ex["responses"]["200"]["body"]
    p = ex["parameters"]
    with Emulator({"vaults": [body]}) as emu:
        kv = kv_client(emu, sub=p["subscriptionId"])
        got = kv.vaults.get(p["resourceGroupName"], p["vaultName"])
        assert got.as_dict() == body
        assert [v.as_dict() for v in kv.vaults.list_by_subscription()] == [body]
        if "parameters" in p:  # a create: the emulator never writes vaults
            with pytest.raises(HttpResponseError) as e:
                kv.vaults.begin_create_or_update(p["resourceGroupName"], p["vaultName"], p["parameters"]).result()
            assert e.value.status_code == 405


def test_update_access_policies_add() -> None:
    ex = example("keyvault/updateAccessPoliciesAdd.json")
    p = ex["parameters"]
    vault_id = (f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
                f"/providers/Microsoft.KeyVault/vaults/{p['vaultName']}")
    tenant = p["parameters"]["properties"]["accessPolicies"][0]["tenantId"]
    with Emulator({"tenant_id": tenant, "vaults": [{"id": vault_id}]}) as emu:
        kv = kv_client(emu, sub=p["subscriptionId"])
        got = kv.vaults.update_access_policy(p["resourceGroupName"], p["vaultName"], p["operationKind"],
                                             p["parameters"])
        assert got.as_dict() == ex["responses"]["200"]["body"]
        after = kv.vaults.get(p["resourceGroupName"], p["vaultName"])
        assert [e.as_dict() for e in after.properties.access_policies or []] == \
            p["parameters"]["properties"]["accessPolicies"]


def test_role_assignments_list_for_scope() -> None:
    ex = example("authorization/RoleAssignments_ListForScope.json")
    items = ex["responses"]["200"]["body"]["value"]
    with Emulator({"role_assignments": items}) as emu:
        auth = auth_client(emu, sub=sub_of(items[0]["id"]))
        got = [a.serialize(keep_readonly=True) for a in auth.role_assignments.list_for_scope(ex["parameters"]["scope"])]
    assert got == items


def test_role_assignments_create_for_resource_201_then_200() -> None:
    ex = example("authorization/RoleAssignments_CreateForResource.json")
    p = ex["parameters"]
    role = p["parameters"]["properties"]["roleDefinitionId"]
    snapshot: dict[str, Any] = {"role_definitions": [{"id": role, "properties": {"roleName": "Example role"}}]}
    with Emulator(snapshot) as emu:
        auth = auth_client(emu, sub=sub_of(role))
        created = auth.role_assignments.create(p["scope"], p["roleAssignmentName"], p["parameters"])
        again = auth.role_assignments.create(p["scope"], p["roleAssignmentName"], p["parameters"])
    for status, got in (("201", created), ("200", again)):
        want = ex["responses"][status]["body"]
        body = got.serialize(keep_readonly=True)
        assert {k: body[k] for k in ("id", "name", "type")} == {k: want[k] for k in ("id", "name", "type")}
        for k in ("principalId", "principalType", "scope"):
            assert body["properties"][k] == want["properties"][k]
        # the example answers with the tenant-level form of the role id; the GUID is what identifies it
        assert body["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] == \
            want["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]


def test_get_role_definition_by_id() -> None:
    ex = example("authorization/GetRoleDefinitionById.json")
    body = ex["responses"]["200"]["body"]
    with Emulator({"role_definitions": [body]}) as emu:
        got = auth_client(emu, sub="subID").role_definitions.get_by_id(body["id"])
    assert got.serialize(keep_readonly=True) == body


def test_deny_assignments_list_for_scope() -> None:
    ex = example("authorization/GetDenyAssignmentByScope.json")
    items = ex["responses"]["200"]["body"]["value"]
    with Emulator({"deny_assignments": items}) as emu:
        got = [d.serialize(keep_readonly=True)
               for d in auth_client(emu, sub="subId").deny_assignments.list_for_scope(ex["parameters"]["scope"])]
    assert got == items


def test_put_role_assignment_schedule_request() -> None:
    ex = example("authorization/PutRoleAssignmentScheduleRequest.json")
    p = ex["parameters"]
    props = p["parameters"]["properties"]
    want = RoleAssignmentScheduleRequest.deserialize(ex["responses"]["201"]["body"])
    snapshot = {"principals": [{"id": props["principalId"], "type": "User", "display_name": "User Account"}],
                "role_definitions": [{"id": props["roleDefinitionId"], "properties": {"roleName": "Contributor*"}}]}
    with Emulator(snapshot) as emu:
        auth = auth_client(emu, sub=sub_of(props["roleDefinitionId"]))
        got = auth.role_assignment_schedule_requests.create(p["scope"], p["roleAssignmentScheduleRequestName"],
                                                            p["parameters"])
    for attr in ("name", "scope", "role_definition_id", "principal_id", "principal_type", "request_type", "status",
                 "linked_role_eligibility_schedule_id", "condition", "condition_version"):
        assert getattr(got, attr) == getattr(want, attr), attr
    assert str(got.id).lower() == str(want.id).lower() and str(got.type).lower() == str(want.type).lower()
    assert got.schedule_info is not None and want.schedule_info is not None
    assert got.schedule_info.serialize() == want.schedule_info.serialize()
    uuid.UUID(str(got.target_role_assignment_schedule_id))
