"""Intake names the Managed HSM a denial is about: its resource id (an audit row's resourceId, upper-cased as Azure
Monitor writes it) or its data-plane host (a request URL in an error text), by the vault's own rules; anything
crafted is dropped, and an HSM denial never carries an access-policy permission."""

from __future__ import annotations

import json

import pytest

from remediate.intake import parse_one

SUB = "00000000-0000-0000-0000-0000000000a1"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-hsm/providers/Microsoft.KeyVault/managedHSMs/hsm-pay"
OID = "33333333-0000-0000-0000-000000000004"
TEXT = "Not authorized to access Microsoft.KeyVault/managedHsm/keys/wrap/action on /keys/cmk"


def row(resource_id: str, uri: str = "") -> bytes:
    return json.dumps([{"TimeGenerated": "2026-12-07T10:00:00Z", "OperationName": "KeyWrap",
                        "HttpStatusCode": "403", "ResultSignature": "Forbidden", "RequestUri": uri,
                        "Identity": json.dumps({"claim": {"oid": OID, "idtyp": "app"}}),
                        "_ResourceId": resource_id, "Type": "AZKVAuditLogs", "ResultDescription": TEXT}]).encode()


@pytest.mark.parametrize("rid", [HSM_ID, HSM_ID.upper(), HSM_ID.lower()])
def test_an_hsm_resource_id_names_the_hsm(rid: str) -> None:
    (d,) = parse_one("rows.json", row(rid)).denials
    assert d.vault.kind == "managed_hsm" and d.vault.resource_id == rid and (d.vault.name or "").lower() == "hsm-pay"
    assert d.vault.scope == "/keys/cmk" and d.data_action == "Microsoft.KeyVault/managedHsm/keys/wrap/action"
    assert d.access_policy_permission is None


@pytest.mark.parametrize("rid", [HSM_ID.replace("rg-hsm", "rg-hsm/..").replace("/providers", "/x/../providers"),
                                 HSM_ID.replace(SUB, "not-a-guid"), HSM_ID.replace("hsm-pay", "h%2Fsm")])
def test_a_crafted_hsm_id_is_not_kept(rid: str) -> None:
    (d,) = parse_one("rows.json", row(rid)).denials
    assert d.vault.kind == "managed_hsm" and d.vault.resource_id is None


@pytest.mark.parametrize(("host", "name"), [("hsm-pay.managedhsm.azure.net", "hsm-pay"),
                                            ("hsm-gov.managedhsm.usgovcloudapi.net", "hsm-gov"),
                                            ("hsm-cn.managedhsm.azure.cn", "hsm-cn")])
def test_an_hsm_host_in_an_error_text_names_the_hsm(host: str, name: str) -> None:
    text = f"(AccessDenied) {TEXT} (Activity ID: x)\nRequest: POST https://{host}/keys/cmk/wrapkey?api-version=7.4"
    (d,) = parse_one("err.txt", text.encode()).denials
    assert (d.vault.kind, d.vault.name, d.vault.scope) == ("managed_hsm", name, "/keys/cmk")


def test_an_hsm_host_with_a_name_of_the_wrong_shape_names_nothing() -> None:
    text = f"(AccessDenied) {TEXT}\nRequest: POST https://-bad-.managedhsm.azure.net/keys/cmk/wrapkey"
    (d,) = parse_one("err.txt", text.encode()).denials
    assert d.vault.kind == "managed_hsm" and d.vault.name is None


def test_a_vault_row_stays_a_vault() -> None:
    vault_id = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
    body = json.loads(row(vault_id, "https://kv1.vault.azure.net/keys/cmk/wrapkey?api-version=7.4"))
    body[0]["ResultDescription"] = "Caller is not authorized to perform action on resource."
    (d,) = parse_one("rows.json", json.dumps(body).encode()).denials
    assert d.vault.kind == "vault" and d.vault.resource_id == vault_id and d.vault.scope is None
