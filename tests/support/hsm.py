"""A Managed HSM tenant for the HSM tests, and the real SDK clients pointed at the emulator (no tests here).

The HSM's data plane is addressed by its real host name (``https://hsm-pay.managedhsm.azure.net``); the emulator's
transport resolves it to loopback, so the SDK's challenge protocol runs as against Azure (resource verification on).
"""

from __future__ import annotations

import copy
from typing import Any

from azure.keyvault.administration.aio import KeyVaultAccessControlClient
from azure.mgmt.keyvault.aio import KeyVaultManagementClient

from remediate.catalog.hsm import BUILTIN_ID_PREFIX, builtin_role_by_name
from remediate.emulator import Emulator

TENANT_ID = "72f988bf-0000-0000-0000-0000000000a1"
SUB = "00000000-0000-0000-0000-0000000000a1"
RG = "rg-hsm"
HSM = "hsm-pay"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/managedHSMs/{HSM}"
HSM_URL = f"https://{HSM}.managedhsm.azure.net"
ADMIN = "33333333-0000-0000-0000-000000000001"      # initial admin: Administrator at /
APP = "33333333-0000-0000-0000-000000000002"        # Crypto Service Encryption User at /keys/cmk
AUDITOR = "33333333-0000-0000-0000-000000000003"    # Crypto Auditor at /
STRANGER = "33333333-0000-0000-0000-000000000004"   # no local role at all
OFFICER = "33333333-0000-0000-0000-000000000005"    # Crypto User at /keys
SIGNER = "33333333-0000-0000-0000-000000000006"     # the custom role at /keys/sig
CUSTOM = "44444444-0000-0000-0000-000000000001"      # custom role: keys/sign/action only


def role_id(role_name: str) -> str:
    """A built-in local role's id as the HSM writes it."""
    role = builtin_role_by_name(role_name)
    assert role is not None, role_name
    return BUILTIN_ID_PREFIX + role.name


def tenant() -> dict[str, Any]:
    """One HSM with assignments at /, /keys and two key scopes, and one custom role; az's flat shapes, as a
    person pastes ``az keyvault role assignment list --hsm-name`` output."""
    return copy.deepcopy({
        "tenant_id": TENANT_ID, "subscriptions": [SUB],
        "managed_hsms": [{
            "id": HSM_ID, "name": HSM, "location": "westeurope", "resourceGroup": RG,
            "sku": {"family": "B", "name": "Standard_B1"},
            "properties": {"tenantId": TENANT_ID, "hsmUri": HSM_URL + "/", "initialAdminObjectIds": [ADMIN],
                           "enableSoftDelete": True, "softDeleteRetentionInDays": 90, "enablePurgeProtection": True,
                           "provisioningState": "Succeeded", "statusMessage": "The Managed HSM is provisioned and "
                                                                              "ready to use.",
                           "publicNetworkAccess": "Enabled",
                           "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [],
                                           "virtualNetworkRules": []},
                           "securityDomainProperties": {"activationStatus": "Active",
                                                        "activationStatusMessage": "Your HSM has been activated and "
                                                                                   "can be used for cryptographic "
                                                                                   "operations."}}}],
        "hsm_role_assignments": {HSM: [
            {"id": "/providers/Microsoft.Authorization/roleAssignments/0000aaaa-0000-0000-0000-000000000001",
             "name": "0000aaaa-0000-0000-0000-000000000001", "principalId": ADMIN,
             "roleDefinitionId": role_id("Managed HSM Administrator"), "roleName": "Managed HSM Administrator",
             "scope": "/", "type": "Microsoft.Authorization/roleAssignments"},
            {"name": "0000aaaa-0000-0000-0000-000000000002", "principalId": APP, "scope": "/keys/cmk",
             "roleDefinitionId": role_id("Managed HSM Crypto Service Encryption User")},
            {"name": "0000aaaa-0000-0000-0000-000000000003", "principalId": AUDITOR, "scope": "/",
             "roleDefinitionId": role_id("Managed HSM Crypto Auditor")},
            {"name": "0000aaaa-0000-0000-0000-000000000004", "principalId": OFFICER, "scope": "/keys",
             "roleDefinitionId": role_id("Managed HSM Crypto User")},
            {"name": "0000aaaa-0000-0000-0000-000000000005", "principalId": SIGNER, "scope": "/keys/sig",
             "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM}"},
        ]},
        "hsm_role_definitions": {HSM: [
            {"assignableScopes": ["/"], "description": "sign with one key", "name": CUSTOM,
             "id": f"/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM}",
             "permissions": [{"actions": [], "notActions": [],
                              "dataActions": ["Microsoft.KeyVault/managedHsm/keys/sign/action"],
                              "notDataActions": []}],
             "roleName": "kv-remediate sign", "roleType": "CustomRole",
             "type": "Microsoft.Authorization/roleDefinitions"}]},
    })


def renamed(t: dict[str, Any], name: str) -> dict[str, Any]:
    """The tenant with its HSM under another name (a host no client of this process has been challenged by yet:
    the SDK caches challenges per host for the whole process)."""
    h = t["managed_hsms"][0]
    h["id"], h["name"] = HSM_ID.rsplit("/", 1)[0] + "/" + name, name
    h["properties"]["hsmUri"] = f"https://{name}.managedhsm.azure.net/"
    t["hsm_role_assignments"] = {name: t["hsm_role_assignments"].pop(HSM)}
    t["hsm_role_definitions"] = {name: t["hsm_role_definitions"].pop(HSM)}
    return t


def access_client(emu: Emulator, url: str = HSM_URL, **kw: Any) -> KeyVaultAccessControlClient:
    """The real async KeyVaultAccessControlClient at the HSM's real URL, through the emulator's transport."""
    return KeyVaultAccessControlClient(url, emu.async_credential(), transport=emu.async_transport(), **kw)


def mgmt_client(emu: Emulator, **kw: Any) -> KeyVaultManagementClient:
    """The real async KeyVaultManagementClient (``managed_hsms``) on the emulator's ARM routes."""
    return KeyVaultManagementClient(emu.async_credential(), SUB, base_url=emu.base_url,
                                    transport=emu.async_transport(), **kw)
