"""Every cause code end to end: intake -> the real azure-mgmt clients -> the bundled HTTPS emulator -> decision.

The demo tenant and its inputs are the shared fixture; extra inputs and tenant tweaks cover the rest.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remediate.backends import EmulatorRun
from remediate.cli import main
from remediate.intake import parse_inputs
from remediate.service import diagnose

DEMO = resources.files("remediate").joinpath("demo")
TENANT: dict[str, Any] = json.loads(DEMO.joinpath("tenant.json").read_text())
NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")


def gid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


SUB = gid("subscription-prod")
PAY_ID = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments"


def run(tenant: dict[str, Any], inputs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    async def go() -> Any:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                return await diagnose(parse_inputs(inputs).denials, facts)
    return [f.to_dict() for f in asyncio.run(go()).findings]


def demo_inputs() -> list[tuple[str, bytes]]:
    return sorted((f.name, f.read_bytes()) for f in DEMO.joinpath("inputs").iterdir())


def runbook(principal: str, vault: str, operation: str, obj: str | None = None) -> tuple[str, bytes]:
    return ("runbook", json.dumps({"principal_id": principal, "vault": vault, "operation": operation,
                                   "object": obj}).encode())


@pytest.fixture(scope="module")
def demo_findings() -> list[dict[str, Any]]:
    return run(TENANT, demo_inputs())


# (who, object name or None, operation) -> expected cause, for the demo batch
DEMO_EXPECTED = [
    (gid("app-orders"), "db-password", "SecretGet", "MISSING_ROLE_ASSIGNMENT"),
    (gid("app-billing"), "stripe-key", "SecretGet", "ALREADY_GRANTED"),          # through a group
    (gid("alice"), "feature-flags", "SecretSet", "MISSING_ACCESS_POLICY"),
    (gid("app-reporting"), "report-db", "SecretGet", "WRONG_PERMISSION_MODEL"),  # RBAC role on an AP vault
    (gid("app-batch"), "db-password", "SecretGet", "CONDITION_NOT_MET"),
    (gid("app-partner"), "partner-token", "SecretGet", "DENY_ASSIGNMENT"),
    (gid("bob"), "portal-config", "SecretGet", "COMPOUND_IDENTITY_REQUIRED"),
    (gid("app-audit"), None, "KeyList", "ALREADY_GRANTED"),                       # management-group grant
    (None, None, "Authentication", "AUTH_CHALLENGE"),
    (gid("app-signer"), "release-signing", "KeySign", "MISSING_ROLE_ASSIGNMENT"),
    (gid("mi-web"), None, None, "NETWORK_BLOCKED"),
    (None, None, None, "THROTTLED"),
    (None, None, "KeyDecrypt", "KEY_OPERATION_NOT_PERMITTED"),
    (None, None, None, "AUTH_FAILED"),
    (None, None, "SecretGet", "OBJECT_DISABLED"),  # "Operation get ... on a disabled secret"
    (gid("app-legacy"), None, None, "VAULT_NOT_FOUND"),
    (None, None, "SecretGet", "PRINCIPAL_NOT_IDENTIFIED"),
    (gid("app-orders"), "orders-signing", "KeySign", "MISSING_ROLE_ASSIGNMENT"),
    (gid("app-orders"), "cmk-orders", "KeyEncrypt", "MISSING_ROLE_ASSIGNMENT"),     # Managed HSM: a custom local role
    (gid("mi-web"), "cmk-storage", "KeyWrap", "MISSING_ROLE_ASSIGNMENT"),           # Managed HSM: Encryption User
]


def test_demo_batch_causes(demo_findings: list[dict[str, Any]]) -> None:
    got = [(f["denial"]["principal"]["object_id"], (f["denial"]["object"] or {}).get("name"),
            f["denial"]["operation"], f["cause"]) for f in demo_findings]
    assert got == DEMO_EXPECTED


def test_identical_denials_collapse(demo_findings: list[dict[str, Any]]) -> None:
    assert demo_findings[0]["occurrences"] == 3
    assert sum(f["occurrences"] for f in demo_findings) == 22


def test_plans_are_least_privilege(demo_findings: list[dict[str, Any]]) -> None:
    by_cause = {(f["denial"]["principal"]["object_id"], f["denial"]["operation"]): f for f in demo_findings}
    orders = by_cause[(gid("app-orders"), "SecretGet")]["plan"]
    assert orders["kind"] == "role_assignment" and orders["role_name"] == "Key Vault Secrets User"
    assert orders["scope"] == PAY_ID and orders["principal_type"] == "ServicePrincipal"
    assert "alternatives" not in orders
    signer = by_cause[(gid("app-signer"), "KeySign")]["plan"]
    assert signer["role_name"] == "Key Vault Crypto User"   # tier 2 role for a tier 1 action
    assert signer["alternatives"][0]["data_actions"] == ["Microsoft.KeyVault/vaults/keys/sign/action"]
    # assignable in the resource group (Microsoft advises against a resource there), assigned at the vault
    assert signer["alternatives"][0]["assignable_scopes"] == [PAY_ID.split("/providers/", maxsplit=1)[0]]
    assert signer["alternatives"][0]["scope"] == PAY_ID
    alice = by_cause[(gid("alice"), "SecretSet")]["plan"]
    assert alice["kind"] == "access_policy" and alice["add"] == {"keys": [], "secrets": ["set"],
                                                                 "certificates": [], "storage": []}
    assert alice["object_id"] == gid("alice") and alice["application_id"] is None
    # accessPolicies/add merges server-side; set-policy would replace alice's secret list (get,list) with "set"
    assert "/accessPolicies/add?" in alice["commands"]["az"] and "name: 'add'" in alice["commands"]["bicep"]
    wrong = by_cause[(gid("app-reporting"), "SecretGet")]
    assert wrong["plan"]["kind"] == "access_policy" and wrong["plan"]["add"]["secrets"] == ["get"]


def test_no_grant_for_causes_a_grant_cannot_fix(demo_findings: list[dict[str, Any]]) -> None:
    for f in demo_findings:
        if f["cause"] not in ("MISSING_ROLE_ASSIGNMENT", "MISSING_ACCESS_POLICY", "WRONG_PERMISSION_MODEL"):
            assert f["plan"] is None and f["advice"], f["cause"]


def test_evidence_shows_group_and_management_group_grants(demo_findings: list[dict[str, Any]]) -> None:
    billing = next(f for f in demo_findings if f["denial"]["principal"]["object_id"] == gid("app-billing"))
    grant = billing["evidence"]["role_assignments"][0]
    assert grant["via"] == "group" and grant["principal_id"] == gid("grp-payments-readers") and grant["grants"]
    audit = next(f for f in demo_findings if f["denial"]["principal"]["object_id"] == gid("app-audit"))
    assert audit["evidence"]["role_assignments"][0]["scope"].startswith("/providers/Microsoft.Management/")


def test_remaining_causes() -> None:
    # given a vault that uses RBAC but still carries an access-policy entry for the caller
    tenant = copy.deepcopy(TENANT)
    pay = next(v for v in tenant["vaults"] if v["name"] == "kv-payments")
    pay["properties"]["accessPolicies"] = [{"tenantId": tenant["tenant_id"], "objectId": gid("app-legacy"),
                                           "permissions": {"secrets": ["get"]}}]
    first_party = {"error": {"code": "Forbidden", "message": "Access denied to first party service.\r\nCaller: "
                             f"appid={gid('x')};oid={gid('app-orders')};iss=https://sts.windows.net/{gid('tenant')}/"
                             "\r\nVault: kv-payments;location=westeurope", "innererror": {"code": "AccessDenied"}}}
    opaque = {"error": {"code": "Forbidden", "message": f"Caller: appid={gid('x')};oid={gid('app-orders')};"
                        f"iss=https://sts.windows.net/{gid('tenant')}/\r\nVault: kv-payments;location=westeurope"}}
    inputs = [runbook(gid("app-legacy"), "kv-payments", "SecretGet", "secrets/legacy"),
              ("first-party.json", json.dumps(first_party).encode()),
              ("opaque.json", json.dumps(opaque).encode())]
    # when diagnosed, then
    causes = [f["cause"] for f in run(tenant, inputs)]
    assert causes == ["WRONG_PERMISSION_MODEL", "TRUSTED_SERVICE_DENIED", "UNKNOWN"]


def test_graph_not_permitted_is_stated() -> None:
    # given Graph refuses the function and alice's access comes through a group entry
    tenant = copy.deepcopy(TENANT)
    tenant["graph"] = False
    findings = run(tenant, [runbook(gid("alice"), "kv-legacy", "SecretSet", "secrets/x")])
    # then the diagnosis carries on with the token's claims and says what could not be checked
    assert findings[0]["cause"] == "MISSING_ACCESS_POLICY"
    assert "Graph" in findings[0]["explanation"] and findings[0]["evidence"]["limitations"]


def test_cold_diagnosis_with_known_vault_id_costs_at_most_three_requests(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # given a denial whose token claims say what the caller is, and whose vault id is known
    tenant_file = tmp_path / "t.json"
    tenant_file.write_text(json.dumps(TENANT))
    body = {"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action on resource.\r\n"
                      f"Caller: appid={gid('appid-orders')};oid={gid('app-orders')};idtyp=app;"
                      f"iss=https://sts.windows.net/{gid('tenant')}/\r\n"
                      "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
                      f"Resource: '{PAY_ID.lower()}/secrets/db-password'\r\nVault: kv-payments;location=westeurope",
                      "innererror": {"code": "ForbiddenByRbac"}}}
    denial = tmp_path / "denial.json"
    denial.write_text(json.dumps(body))
    # when diagnosed cold
    code = main(["diagnose", "--snapshot", str(tenant_file), str(denial), "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    # then vault, assignments and deny assignments are the only requests
    assert code == 0 and doc["schema"] == "kv-remediate/diagnosis@1"
    assert doc["findings"][0]["cause"] == "MISSING_ROLE_ASSIGNMENT"
    assert doc["stats"]["arm_requests"] <= 3, doc["stats"]


def test_runbook_request_without_caller_type_asks_graph_once(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tenant_file = tmp_path / "t.json"
    tenant_file.write_text(json.dumps(TENANT))
    code = main(["diagnose", "--snapshot", str(tenant_file), "--principal", gid("app-orders"), "--vault", PAY_ID,
                 "--operation", "SecretGet", "--object", "secrets/db-password", "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["findings"][0]["plan"]["principal_type"] == "ServicePrincipal"
    assert doc["stats"]["requests_by_api"] == {"arm": 3, "graph": 1}


def test_vault_by_name_is_found_by_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tenant_file = tmp_path / "t.json"
    tenant_file.write_text(json.dumps(TENANT))
    assert main(["diagnose", "--snapshot", str(tenant_file), "--principal", gid("alice"), "--vault", "kv-legacy",
                 "--operation", "SecretGet", "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"][0]["cause"] == "ALREADY_GRANTED"


def test_demo_command_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--output", "text"]) == 0
    out = capsys.readouterr().out
    assert "CAUSE" in out and "MISSING_ROLE_ASSIGNMENT" in out and "finding(s)" in out


def test_bad_snapshot_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"vaults": 7}')
    code = main(["diagnose", "--snapshot", str(bad), "--principal", gid("alice"), "--vault", "kv-legacy",
                 "--operation", "SecretGet"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "vaults" in captured.err


def test_unreachable_azure_is_a_domain_error_with_the_remedy() -> None:
    # given an ARM endpoint nothing listens on (loopback, closed port) and no retries
    from remediate.emulator.credential import AsyncFakeCredential
    from remediate.errors import AzureUnavailableError
    from remediate.facts.arm import ArmFacts
    from remediate.model import VaultRef

    async def go() -> None:
        async with ArmFacts(AsyncFakeCredential(), [SUB], arm_url="https://127.0.0.1:9", retry_total=0) as facts:
            await facts.find_vault(VaultRef("kv-payments", PAY_ID))

    # when a vault is read, then the error says what was tried, why it failed and what to do (CLI exit 3)
    with pytest.raises(AzureUnavailableError) as err:
        asyncio.run(go())
    assert "reading vault kv-payments" in err.value.message and err.value.exit_code == 3
    assert "could not be reached" in err.value.message
