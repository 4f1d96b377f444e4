"""Failure modes of each Microsoft Graph call (issue 18 items 1, 2 and 6): a 400 or 403 on one call is a
specific limitation on the finding that needed it, never an abort, and never stops the other call.

The tenant is the bundled emulator's; a thin subclass answers one Graph call with Graph's real error body
(``{"error": {"code", "message", "innerError"}}``) and passes everything else to the emulator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from remediate.emulator import Emulator
from remediate.emulator.state import ArmError
from remediate.emulator.wire import Response
from remediate.facts.arm import ArmFacts
from remediate.intake import parse_inputs
from remediate.service import diagnose
from tests.support.emulator import APP, KV_ADMINS, SUB, small

REFUSED = ArmError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
BAD = ArmError(400, "BadRequest", "Resource not found for the segment 'getMemberGroups'.")
THROTTLED = ArmError(429, "TooManyRequests", "Too many requests.")
TOO_MANY = ArmError(400, "Directory_ResultSizeLimitExceeded", "Request_ResultSizeLimitExceeded")


class FailingGraph(Emulator):
    """The emulator, with one Graph call (a path suffix) answered by a fixed Graph error."""

    def __init__(self, fail: dict[str, ArmError]) -> None:
        super().__init__(small())
        self.fail = fail
        self.graph_calls: list[str] = []

    def _dispatch(self, method: str, target: str, raw: bytes) -> Response:
        path = target.split("?", 1)[0]
        if path.startswith("/v1.0/"):
            self.graph_calls.append(path.rsplit("/", 1)[-1])
        for suffix, err in self.fail.items():
            if path.startswith("/v1.0/") and path.endswith(suffix):
                if err.code == "TooManyRequests":    # once, as a throttle is: then the call is served
                    del self.fail[suffix]
                    return Response(429, {"error": {"code": err.code, "message": err.message}}, {"Retry-After": "0"})
                return Response(err.status, {"error": {"code": err.code, "message": err.message, "innerError": {
                    "date": "2026-12-02T12:00:00", "request-id": "r", "client-request-id": "c"}}})
        return super()._dispatch(method, target, raw)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[FailingGraph]:
    emu = FailingGraph(request.param)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def diagnose_policy_vault_denial(emu: Emulator, n: int = 1, retries: int = 0) -> list[dict[str, Any]]:
    """A denial on the access-policy vault (it needs the caller's type and groups from Graph)."""
    inputs = [("runbook", json.dumps({"principal_id": APP, "vault": "kv-policy", "operation": op}).encode())
              for op in ("SecretGet", "SecretList", "KeyGet")[:n]]

    async def go() -> Any:
        async with ArmFacts(emu.async_credential(), [SUB], arm_url=emu.base_url, graph_url=emu.base_url,
                            transport_factory=emu.async_transport, retry_total=retries) as facts:
            return await diagnose(parse_inputs(inputs).denials, facts)
    return [f.to_dict() for f in asyncio.run(go()).findings]


def limitations(finding: dict[str, Any]) -> list[str]:
    return list(finding["evidence"]["limitations"])


@pytest.mark.parametrize("emulator", [{}], indirect=True)
def test_documented_calls_only_and_no_limitation_when_graph_answers(emulator: FailingGraph) -> None:
    (f,) = diagnose_policy_vault_denial(emulator)
    assert limitations(f) == [] and f["evidence"]["principal"]["groups_known"] is True
    assert KV_ADMINS in f["evidence"]["principal"]["groups"] and f["evidence"]["principal"]["type"] == \
        "ServicePrincipal"
    assert set(emulator.graph_calls) <= {"getByIds", "getMemberGroups"} and emulator.unrouted == []


@pytest.mark.parametrize(("emulator", "want"), [
    ({"getMemberGroups": REFUSED}, "refused POST /v1.0/directoryObjects/{id}/getMemberGroups (403 "
                                   "Authorization_RequestDenied"),
    ({"getMemberGroups": BAD}, "answered 400 BadRequest to POST /v1.0/directoryObjects/{id}/getMemberGroups"),
], indirect=["emulator"])
def test_group_call_failure_is_a_group_limitation_and_the_type_is_still_read(emulator: FailingGraph,
                                                                             want: str) -> None:
    # given Graph answering getMemberGroups with an error, when a denial on an access-policy vault is diagnosed
    (f,) = diagnose_policy_vault_denial(emulator)
    # then the finding is made, the type still comes from getByIds, and the group limitation says why
    assert f["cause"] and f["evidence"]["principal"]["type"] == "ServicePrincipal"
    (lim,) = limitations(f)
    assert lim.startswith("group memberships (Microsoft Graph ") and want in lim, lim
    if "403" in want:
        assert "Directory.Read.All" in lim


@pytest.mark.parametrize(("emulator", "want"), [
    ({"getByIds": REFUSED}, "refused POST /v1.0/directoryObjects/getByIds (403 Authorization_RequestDenied"),
    ({"getByIds": BAD}, "answered 400 BadRequest to POST /v1.0/directoryObjects/getByIds"),
], indirect=["emulator"])
def test_type_call_failure_is_a_type_limitation_and_groups_are_still_read(emulator: FailingGraph,
                                                                          want: str) -> None:
    (f,) = diagnose_policy_vault_denial(emulator)
    assert f["evidence"]["principal"]["groups_known"] is True and KV_ADMINS in f["evidence"]["principal"]["groups"]
    (lim,) = limitations(f)
    assert lim.startswith("the caller's principal type (Microsoft Graph ") and want in lim, lim


@pytest.mark.parametrize("emulator", [{"getByIds": REFUSED}], indirect=True)
def test_a_refusal_skips_later_calls_of_that_kind_only(emulator: FailingGraph) -> None:
    findings = diagnose_policy_vault_denial(emulator, n=3)
    assert len(findings) == 3 and all(limitations(f) for f in findings)
    # one getByIds (refused, never asked again), getMemberGroups asked once per principal (cached)
    assert emulator.graph_calls.count("getByIds") == 1 and emulator.graph_calls.count("getMemberGroups") == 1


@pytest.mark.parametrize("emulator", [{"getByIds": BAD, "getMemberGroups": BAD}], indirect=True)
def test_both_calls_failing_never_aborts_the_batch(emulator: FailingGraph) -> None:
    (f,) = diagnose_policy_vault_denial(emulator)
    assert len(limitations(f)) == 2 and f["cause"]


@pytest.mark.parametrize("emulator", [{"getMemberGroups": TOO_MANY}], indirect=True)
def test_more_groups_than_get_member_groups_returns_falls_back_to_the_typed_transitive_list(
        emulator: FailingGraph) -> None:
    """getMemberGroups' documented workaround for Directory_ResultSizeLimitExceeded: the object's own
    ``/servicePrincipals/{id}/transitiveMemberOf/microsoft.graph.group``, paged."""
    emulator.configure(page_size=1)
    (f,) = diagnose_policy_vault_denial(emulator)
    assert limitations(f) == [] and f["evidence"]["principal"]["groups_known"] is True
    assert KV_ADMINS in f["evidence"]["principal"]["groups"]
    assert emulator.graph_calls.count("microsoft.graph.group") == 2 and emulator.unrouted == []   # two pages


@pytest.mark.parametrize("emulator", [{"getMemberGroups": TOO_MANY, "microsoft.graph.group": REFUSED}],
                         indirect=True)
def test_size_limit_and_refused_fallback_is_a_specific_limitation(emulator: FailingGraph) -> None:
    (f,) = diagnose_policy_vault_denial(emulator)
    (lim,) = limitations(f)
    assert "more than 11,000 groups" in lim, lim


@pytest.mark.parametrize("emulator", [{"getByIds": THROTTLED, "getMemberGroups": THROTTLED}], indirect=True)
def test_a_throttled_graph_post_is_retried_not_a_limitation(emulator: FailingGraph) -> None:
    """getByIds and getMemberGroups are read-only POSTs: retried after a 429 like any read."""
    (f,) = diagnose_policy_vault_denial(emulator, retries=2)
    assert limitations(f) == [] and f["evidence"]["principal"]["type"] == "ServicePrincipal"
    assert emulator.graph_calls.count("getByIds") == 2 and emulator.graph_calls.count("getMemberGroups") == 2
