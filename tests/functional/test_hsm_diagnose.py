"""Every Managed HSM cause end to end: inputs (or typed denials) through ``service.diagnose`` (what the CLI and the app
call), the real azure-mgmt-keyvault and azure-keyvault-administration clients and Microsoft Graph against the bundled
emulator, to the finding, its plan and its commands."""

from __future__ import annotations

from typing import Any

import pytest

from remediate.backends import EmulatorRun
from remediate.errors import HsmAccessDeniedError
from remediate.intake import parse_inputs
from remediate.model import Cause, Denial, Finding, HsmRoleAssignmentPlan, Principal, Signal, VaultRef
from remediate.service import Diagnosis, diagnose
from tests.support.hsm import APP, CUSTOM, HSM, HSM_ID, OFFICER, SIGNER, STRANGER, TENANT_ID, role_id, tenant

P = "Microsoft.KeyVault/managedHsm/"
MEMBER = "33333333-0000-0000-0000-000000000007"     # in GROUP, which holds Crypto User at /
GROUP = "33333333-0000-0000-0000-0000000000aa"


def world(**changes: Any) -> dict[str, Any]:
    """The HSM tenant with the callers in the directory (and MEMBER's group holding Crypto User at /)."""
    t = tenant()
    t["principals"] = [{"id": p, "type": "ServicePrincipal", "display_name": name, "member_of": groups}
                       for p, name, groups in ((STRANGER, "app-stranger", []), (APP, "app-cmk", []),
                                               (OFFICER, "app-officer", []), (SIGNER, "app-signer", []),
                                               (MEMBER, "app-member", [GROUP]))]
    t["hsm_role_assignments"][HSM].append({"name": "0000aaaa-0000-0000-0000-000000000009", "principalId": GROUP,
                                           "scope": "/", "roleDefinitionId": role_id("Managed HSM Crypto User")})
    for k, v in changes.items():
        t["managed_hsms"][0]["properties"][k] = v
    return t


def hsm_denial(oid: str | None, action: str, scope: str | None = "/keys/cmk", *, by_id: bool = False,
               name: str = HSM, **kw: Any) -> Denial:
    d = Denial(source="test", status=403, principal=Principal(object_id=oid),
               vault=VaultRef(name=name, resource_id=HSM_ID if by_id else None, kind="managed_hsm", scope=scope),
               data_action=action)
    return d.with_(**kw) if kw else d


async def run(denials: list[Denial], t: dict[str, Any] | None = None, **facts_kw: Any) -> Diagnosis:
    with EmulatorRun(t or world()) as emu:
        async with emu.facts(**facts_kw) as facts:
            return await diagnose(denials, facts)


def only(d: Diagnosis) -> Finding:
    (f,) = d.findings
    return f


@pytest.mark.parametrize("by_id", [True, False])
async def test_encrypt_without_a_role_gets_a_custom_local_role_with_crypto_user_as_the_alternative(
        by_id: bool) -> None:
    # given a caller with no local role, denied encrypt on key cmk (the HSM by id, or by name: Resource Graph)
    got = await run([hsm_denial(STRANGER, P + "keys/encrypt/action", by_id=by_id)])
    f = only(got)
    # then a custom local role with exactly encrypt, defined at / and assigned at /keys/cmk, Graph's type
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT and f.permission_model == "hsm_local_rbac"
    plan = f.plan
    assert isinstance(plan, HsmRoleAssignmentPlan) and plan.hsm == HSM_ID and plan.scope == "/keys/cmk"
    assert plan.custom_role is not None and plan.custom_role.data_actions == (P + "keys/encrypt/action",)
    assert plan.principal_type == "ServicePrincipal" and plan.tier == 1
    assert [(a.role_name, a.tier) for a in plan.alternatives] == [("Managed HSM Crypto User", 3)]
    assert "az keyvault role definition update --hsm-name hsm-pay" in plan.commands["az"]
    # and the three scopes were read on the HSM's own data plane
    assert got.stats.requests.requests_by_api["hsm"] >= 4
    assert [c.scope for c in f.evidence.role_assignments] == []   # the caller holds nothing anywhere


async def test_wrap_without_a_role_gets_crypto_service_encryption_user_at_the_key() -> None:
    f = only(await run([hsm_denial(STRANGER, P + "keys/wrap/action")]))
    assert isinstance(f.plan, HsmRoleAssignmentPlan) and f.plan.custom_role is None
    assert (f.plan.role_name, f.plan.scope) == ("Managed HSM Crypto Service Encryption User", "/keys/cmk")
    assert "--scope /keys/cmk --role 33413926-3206-4cdd-b39a-83574fe37a17" in f.plan.commands["az"]


@pytest.mark.parametrize(("oid", "action", "scope", "via_scope"), [
    (APP, "keys/wrap/action", "/keys/cmk", "/keys/cmk"),       # at the key itself (not listed at / or /keys)
    (OFFICER, "keys/encrypt/action", "/keys/any", "/keys"),    # at /keys
    (SIGNER, "keys/sign/action", "/keys/sig", "/keys/sig"),    # a custom role the HSM lists
    (MEMBER, "keys/decrypt/action", "/keys/cmk", "/"),         # through a group, at /
])
async def test_a_role_already_held_is_already_granted(oid: str, action: str, scope: str, via_scope: str) -> None:
    f = only(await run([hsm_denial(oid, P + action, scope)]))
    assert f.cause == Cause.ALREADY_GRANTED and f.plan is None
    grant = next(c for c in f.evidence.role_assignments if c.grants)
    assert grant.scope == via_scope
    assert (grant.via == "group") == (oid == MEMBER)


async def test_a_custom_role_at_one_key_does_not_reach_another() -> None:
    # given SIGNER's custom sign role at /keys/sig, when sign is denied on /keys/other
    f = only(await run([hsm_denial(SIGNER, P + "keys/sign/action", "/keys/other")]))
    # then the scopes that reach /keys/other (/, /keys, /keys/other) hold nothing of SIGNER's: the plan is the
    # same least-privilege custom role, at /keys/other
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT and not f.evidence.role_assignments
    assert isinstance(f.plan, HsmRoleAssignmentPlan) and f.plan.scope == "/keys/other"
    assert f.plan.custom_role is not None and f.plan.custom_role.data_actions == (P + "keys/sign/action",)
    assert f.plan.custom_role.name != CUSTOM    # ours, by its own deterministic name, not the HSM's other role


async def test_an_hsm_not_activated_is_hsm_not_activated_and_its_data_plane_is_not_asked() -> None:
    t = world(securityDomainProperties={"activationStatus": "NotActivated",
                                        "activationStatusMessage": "Your HSM has not been activated."})
    got = await run([hsm_denial(STRANGER, P + "keys/wrap/action", by_id=True)], t)
    f = only(got)
    assert f.cause == Cause.HSM_NOT_ACTIVATED and f.plan is None and "NotActivated" in f.explanation
    assert "security-domain download --hsm-name hsm-pay" in " ".join(f.advice)


@pytest.mark.parametrize("resource_graph", [True, False])
async def test_an_hsm_nobody_can_see_is_vault_not_found_in_hsm_words(resource_graph: bool) -> None:
    f = only(await run([hsm_denial(STRANGER, P + "keys/wrap/action", name="hsm-nope")],
                       resource_graph=resource_graph))
    assert f.cause == Cause.VAULT_NOT_FOUND and "Managed HSM 'hsm-nope'" in f.explanation and f.plan is None


async def test_found_through_arm_when_resource_graph_is_off() -> None:
    f = only(await run([hsm_denial(STRANGER, P + "keys/wrap/action")], resource_graph=False))
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT and isinstance(f.plan, HsmRoleAssignmentPlan)
    assert f.plan.hsm == HSM_ID


async def test_a_network_refusal_quotes_the_hsms_rules_and_grants_nothing() -> None:
    t = world(publicNetworkAccess="Disabled",
              networkAcls={"bypass": "AzureServices", "defaultAction": "Deny",
                           "ipRules": [{"value": "198.51.100.0/24"}], "virtualNetworkRules": []})
    d = hsm_denial(STRANGER, P + "keys/wrap/action", signals=frozenset({Signal.NETWORK}), caller_ip="203.0.113.9")
    got = await run([d], t)
    f = only(got)
    assert f.cause == Cause.NETWORK_BLOCKED and f.plan is None
    assert "Managed HSM 'hsm-pay'" in f.explanation and "default action Deny" in f.explanation
    assert "hsm" not in got.stats.requests.requests_by_api       # local RBAC is not what decides


async def test_the_401_challenge_and_an_unnamed_caller_read_nothing() -> None:
    challenge = hsm_denial(None, P + "keys/wrap/action", status=401, signals=frozenset({Signal.AUTH_CHALLENGE}))
    unnamed = hsm_denial(None, P + "keys/encrypt/action")
    got = await run([challenge, unnamed])
    assert [f.cause for f in got.findings] == [Cause.AUTH_CHALLENGE, Cause.PRINCIPAL_NOT_IDENTIFIED]
    assert "managedhsm.azure.net" in got.findings[0].explanation
    assert got.stats.requests.arm_requests == 0


async def test_an_administrative_action_gets_advice_and_no_grant() -> None:
    f = only(await run([hsm_denial(STRANGER, P + "roleAssignments/write/action", "/")]))
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT and f.plan is None and "administrative" in f.explanation


async def test_an_hsm_whose_arm_host_is_not_the_one_its_name_implies_is_read_where_arm_says() -> None:
    # given ARM naming the HSM's data plane in another cloud's suffix than the public one the name implies
    t = world(hsmUri=f"https://{HSM}.managedhsm.azure.cn/")
    f = only(await run([hsm_denial(APP, P + "keys/wrap/action")], t))
    # then the early read at the implied host is ignored and ARM's host decides (APP holds the role there)
    assert f.cause == Cause.ALREADY_GRANTED


async def test_an_hsm_that_refuses_our_identity_says_which_local_role_to_grant_it() -> None:
    t = world()
    t["emulator"] = {"hsm_caller": STRANGER}    # the HSM checks kv-remediate's own identity: it holds no role
    with pytest.raises(HsmAccessDeniedError) as err:
        await run([hsm_denial(APP, P + "keys/wrap/action")], t)
    assert "Managed HSM Crypto Auditor" in err.value.message


async def test_pasted_texts_and_audit_rows_reach_the_same_finding() -> None:
    # given the HSM's own words: an SDK error with its request URL, and an AZKVAuditLogs row with its resource id
    text = (f"azure.core.exceptions.HttpResponseError: (AccessDenied) Not authorized to access {P}keys/wrap/action "
            f"on /keys/cmk (Activity ID: 1b6e1c36-7a5e-11ef-9a3f-00155d8a3b3c)\nRequest: POST "
            f"https://{HSM}.managedhsm.azure.net/keys/cmk/wrapkey?api-version=7.4\n"
            f"Caller: appid=11111111-2222-3333-4444-555555555555;oid={STRANGER};"
            f"iss=https://sts.windows.net/{TENANT_ID}/")
    row = ('[{"TimeGenerated": "2026-12-07T10:00:00Z", "OperationName": "KeyWrap", "HttpStatusCode": "403", '
           '"ResultSignature": "Forbidden", "Identity": "{\\"claim\\": {\\"oid\\": \\"' + STRANGER + '\\", '
           '\\"idtyp\\": \\"app\\"}}", "_ResourceId": "' + HSM_ID.lower() + '", "Type": "AZKVAuditLogs", '
           '"ResultDescription": "Not authorized to access ' + P + 'keys/wrap/action on /keys/cmk"}]')
    parsed = parse_inputs([("err.txt", text.encode()), ("rows.json", row.encode())])
    assert [d.vault.kind for d in parsed.denials] == ["managed_hsm", "managed_hsm"]
    got = await run(list(parsed.denials))
    assert [(f.cause, getattr(f.plan, "role_name", None)) for f in got.findings] == \
        [(Cause.MISSING_ROLE_ASSIGNMENT, "Managed HSM Crypto Service Encryption User")] * 2
