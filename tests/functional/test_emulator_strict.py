"""The emulator refuses what ARM and Graph refuse, with their real error shapes (issue 18 item 5).

Each refusal is driven through the real SDK client (or azure-core pipeline), asserted on status, code and
message, and noted in ``Emulator.unrouted`` so a product regression that sends such a request fails the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from remediate.emulator import Emulator
from tests.support.emulator import (
    ANA,
    APP,
    KV_ADMINS,
    KV_RBAC,
    MG_ROOT,
    SUB,
    auth_client,
    err_code,
    pipeline,
    small,
)

SUPPORTED = ("Supported filters are either 'atScope()' or 'principalId eq '{value}' or assignedTo('{value}')'.")


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(small(), page_size=50) as e:
        yield e


def graph(emu: Emulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    r = pipeline(emu).send_request(HttpRequest(method, f"{emu.base_url}{path}", json=body))
    return r.status_code, r.json() if r.content else None


# ---- ARM: role assignment filters ------------------------------------------------------------------------------
@pytest.mark.parametrize("flt", [
    f"atScope() and principalId eq '{APP}'",            # refused by ARM (azure-powershell PR #20433, azure-cli)
    f"principalId eq '{APP}' and atScope()",
    f"principalId eq '{APP}' and assignedTo('{APP}')",
    f"principalId eq {APP}",                             # unquoted (azure-rest-api-specs#28255)
    f"principalId eq '{APP}' and roleDefinitionId eq 'x'",
])
def test_unsupported_role_assignment_filter_is_arm_unsupported_query(emu: Emulator, flt: str) -> None:
    # given a filter ARM does not accept, when it is listed through the SDK
    with pytest.raises(HttpResponseError) as e:
        list(auth_client(emu).role_assignments.list_for_scope(KV_RBAC, filter=flt))
    # then ARM's 400 UnsupportedQuery, with ARM's words, and the request is noted as a gap
    assert e.value.status_code == 400 and err_code(e) == "UnsupportedQuery"
    assert e.value.error is not None and e.value.error.message == f"The filter '{flt}' is not supported. {SUPPORTED}"
    assert len(emu.unrouted) == 1


@pytest.mark.parametrize("flt", [
    f"atScope() and assignedTo('{APP}')", f"assignedTo('{APP}')", "atScope()", f"principalId eq '{ANA}'",
])
def test_documented_role_assignment_filters_are_served(emu: Emulator, flt: str) -> None:
    list(auth_client(emu).role_assignments.list_for_scope(KV_RBAC, filter=flt))
    assert emu.unrouted == []


def test_unfiltered_list_at_root_is_refused_and_filtered_is_served(emu: Emulator) -> None:
    auth = auth_client(emu)
    # given the tenant root, when listed without a filter: the 400 of azure-powershell#20323
    with pytest.raises(HttpResponseError) as e:
        list(auth.role_assignments.list_for_scope("/"))
    assert e.value.status_code == 400 and err_code(e) == "BadRequest"
    assert e.value.error is not None
    assert e.value.error.message == "The role assignments query at '/' scope is not allowed without any filters."
    # and with a filter it is served (the form azure-powershell switched to)
    assert isinstance(list(auth.role_assignments.list_for_scope("/", filter="atScope()")), list)


def test_object_scope_at_scope_list_sees_the_vault_and_above(emu: Emulator) -> None:
    """What facts.arm asks: ``atScope() and assignedTo()`` at a secret's scope returns what applies there."""
    secret = f"{KV_RBAC}/secrets/db-password"
    got = list(auth_client(emu).role_assignments.list_for_scope(secret, filter=f"atScope() and assignedTo('{APP}')"))
    # the vault's own grant and the management group's (via app-team -> kv-admins), nothing else
    assert {a.scope.lower() for a in got} == {KV_RBAC.lower(), MG_ROOT.lower()}


# ---- ARM: unknown routes -------------------------------------------------------------------------------------------
def test_unknown_arm_route_is_invalid_resource_type_with_arm_shape(emu: Emulator) -> None:
    r = pipeline(emu, "https://management.azure.com/.default").send_request(HttpRequest(
        "GET", f"{emu.base_url}/subscriptions/{SUB}/providers/Microsoft.KeyVault/deletedVaults?api-version=2023-07-01"))
    assert r.status_code == 404      # (managedHSMs, the example before, is served since the HSM work: state_hsm.py)
    assert r.json() == {"error": {"code": "InvalidResourceType", "message": "The resource type 'deletedVaults' could "
                                  "not be found in the namespace 'Microsoft.KeyVault' for api version '2023-07-01'."}}
    assert emu.unrouted == [f"GET /subscriptions/{SUB}/providers/Microsoft.KeyVault/deletedVaults"]


# ---- Graph: only documented routes -------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "segment"), [
    ("GET", f"/v1.0/directoryObjects/{APP}/transitiveMemberOf", "transitiveMemberOf"),   # issue 18 item 1
    ("GET", f"/v1.0/directoryObjects/{APP}/memberOf", "memberOf"),
    ("GET", f"/v1.0/servicePrincipals/{APP}/transitiveMembers", "transitiveMembers"),
    ("GET", "/v1.0/directoryObjects/getByIds", "getByIds"),                              # an action: POST only
    ("GET", f"/v1.0/directoryObjects/{APP}/getMemberGroups", "getMemberGroups"),
    ("GET", "/v1.0/applications", "applications"),
])
def test_unknown_graph_route_is_odata_400_with_graph_shape(emu: Emulator, method: str, path: str,
                                                          segment: str) -> None:
    status, body = graph(emu, method, path)
    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    assert body["error"]["message"] == f"Resource not found for the segment '{segment}'."
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    assert emu.unrouted == [f"{method} {path}"]


def test_unknown_graph_route_is_refused_before_consent() -> None:
    """Graph routes before it authorizes: an unknown segment is 400 even without consent, a known call 403."""
    with Emulator(small(), graph=False) as emu:
        assert graph(emu, "GET", f"/v1.0/directoryObjects/{APP}/transitiveMemberOf")[0] == 400
        status, body = graph(emu, "POST", f"/v1.0/directoryObjects/{APP}/getMemberGroups",
                             {"securityEnabledOnly": False})
        assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"


@pytest.mark.parametrize("collection", ["directoryObjects", "servicePrincipals"])
def test_get_member_groups_is_transitive(emu: Emulator, collection: str) -> None:
    status, body = graph(emu, "POST", f"/v1.0/{collection}/{APP}/getMemberGroups", {"securityEnabledOnly": False})
    assert status == 200 and KV_ADMINS in body["value"] and all(isinstance(g, str) for g in body["value"])
    assert body["@odata.context"].endswith("$metadata#Collection(Edm.String)")


def test_get_member_groups_wants_its_parameter_and_the_right_type(emu: Emulator) -> None:
    assert graph(emu, "POST", f"/v1.0/directoryObjects/{APP}/getMemberGroups", {})[0] == 400
    status, body = graph(emu, "POST", f"/v1.0/users/{APP}/getMemberGroups", {"securityEnabledOnly": False})
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"
    assert body["error"]["message"] == (f"Resource '{APP}' does not exist or one of its queried reference-property "
                                        "objects are not present.")
