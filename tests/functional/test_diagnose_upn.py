"""A user known only by UPN (an audit record whose object id is redacted): diagnosis resolves the UPN through
Microsoft Graph (``GET /v1.0/users/{userPrincipalName}``, one call per UPN) instead of PRINCIPAL_NOT_IDENTIFIED,
and says why when Graph may not be asked.

The tenant is the bundled emulator's small tenant (ana@contoso.com is a user there); the real SDK clients talk
to it over HTTPS on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from remediate.emulator import Emulator
from remediate.emulator.wire import Response
from remediate.facts.arm import ArmFacts
from remediate.intake import parse_inputs
from remediate.service import Diagnosis, diagnose
from tests.support.emulator import ANA, SUB, small

UPN = "ana@contoso.com"


def audit_record(upn: str, secret: str = "api-key") -> bytes:
    """A raw AuditEvent SecretGet 403 whose identity names the user by UPN and an X-masked object id."""
    return json.dumps({
        "time": "2026-12-01T10:00:00.0000000Z", "category": "AuditEvent", "operationName": "SecretGet",
        "resultType": "Success", "resultSignature": "Forbidden",
        "resourceId": f"/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/RG-APP/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-RBAC",
        "identity": {"claim": {"oid": "11111111-0000-0000-XXXX-XXXXXXXXXXXX", "upn": upn, "scp": "user_impersonation"}},
        "properties": {"httpStatusCode": 403,
                       "requestUri": f"https://kv-rbac.vault.azure.net/secrets/{secret}/?api-version=7.4"},
    }).encode()


class CountingGraph(Emulator):
    """The emulator, counting the Graph paths it is asked for."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        super().__init__(snapshot)
        self.graph_paths: list[str] = []

    def _dispatch(self, method: str, target: str, raw: bytes) -> Response:
        if target.startswith("/v1.0/"):
            self.graph_paths.append(f"{method} {target.split('?', 1)[0]}")
        return super()._dispatch(method, target, raw)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[CountingGraph]:
    snap = small()
    snap["graph"] = request.param
    emu = CountingGraph(snap)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def run(emu: Emulator, *inputs: bytes) -> Diagnosis:
    denials = parse_inputs([(f"record{i}.json", data) for i, data in enumerate(inputs)]).denials

    async def go() -> Diagnosis:
        async with ArmFacts(emu.async_credential(), [SUB], arm_url=emu.base_url, graph_url=emu.base_url,
                            transport_factory=emu.async_transport) as facts:
            return await diagnose(denials, facts)
    return asyncio.run(go())


@pytest.mark.parametrize("emulator", [True], indirect=True)
def test_a_user_known_by_upn_is_resolved_through_graph_once(emulator: CountingGraph) -> None:
    # given two audit records of the same user, known only by UPN (object id redacted), for two secrets
    result = run(emulator, audit_record(UPN, "api-key"), audit_record(UPN.upper(), "other-key"))
    # then the user is identified by the object id Graph gives, and the fix is aimed at it
    causes = {f.cause for f in result.findings}
    assert "PRINCIPAL_NOT_IDENTIFIED" not in causes, [f.explanation for f in result.findings]
    for f in result.findings:
        assert f.denial.principal.object_id == ANA and f.denial.principal.kind == "user"
        assert f.plan is not None and f.plan.to_dict()["principal_id"] == ANA
    # and Graph was asked once for the user (UPNs compare case-insensitively), by the documented route
    lookups = [p for p in emulator.graph_paths if p.startswith("GET /v1.0/users/")]
    assert len(lookups) == 1 and lookups[0].lower() == f"get /v1.0/users/{UPN}"
    assert result.notes == ()


@pytest.mark.parametrize("emulator", [True], indirect=True)
def test_an_unknown_upn_stays_unidentified_and_the_note_says_why(emulator: CountingGraph) -> None:
    # given a UPN no user in the tenant has
    result = run(emulator, audit_record("nobody@contoso.com"))
    # then no principal is guessed, and the note says Graph has no such user
    assert [f.cause for f in result.findings] == ["PRINCIPAL_NOT_IDENTIFIED"]
    assert result.findings[0].denial.principal.object_id is None
    assert any("nobody@contoso.com" in n and "no user with this user principal name" in n for n in result.notes)


@pytest.mark.parametrize("emulator", [False], indirect=True)
def test_without_graph_consent_the_limitation_is_said(emulator: CountingGraph) -> None:
    # given a tenant whose Graph refuses the function (no admin consent)
    result = run(emulator, audit_record(UPN))
    # then the caller stays unidentified, and the note names the refusal and the permission that would allow it
    assert [f.cause for f in result.findings] == ["PRINCIPAL_NOT_IDENTIFIED"]
    assert any(UPN in n and "403" in n and "User.Read.All" in n for n in result.notes), result.notes


@pytest.mark.parametrize("emulator", [True], indirect=True)
@pytest.mark.parametrize("crafted", [
    f"../servicePrincipals/{ANA}@contoso.com", "ana@contoso.com/../../groups", "ana@contoso.com?$filter=x",
    "ana@contoso.com#frag", "x'),users('ana@contoso.com", "$x/../../directoryObjects@contoso.com",
])
def test_a_crafted_upn_reaches_only_the_users_route_and_names_nobody(emulator: CountingGraph, crafted: str) -> None:
    # given an audit record whose UPN claim is shaped to reach another Graph route or another user
    result = run(emulator, audit_record(crafted))
    # then it is not a UPN Entra ID can hold: Graph is never asked for it, and no fix is aimed at anyone
    assert not [p for p in emulator.graph_paths if "/users" in p], emulator.graph_paths
    assert all(f.plan is None for f in result.findings), [f.to_dict() for f in result.findings]
    assert all(f.denial.principal.object_id != ANA for f in result.findings)
