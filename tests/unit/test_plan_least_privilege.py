"""Least-privilege choice for every Key Vault data action in Microsoft's provider operations list."""

from __future__ import annotations

import pytest

from remediate import catalog
from remediate.model import Denial, Facts, ObjectRef, Principal, PrincipalInfo, Required, Vault, VaultRef
from remediate.plan import PlanOptions, candidates, least_privileged, rbac_plan
from remediate.render.commands import with_commands

KV = "Microsoft.KeyVault/vaults/"
SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
OID = "11111111-2222-4333-8444-555555555555"

# Written out by hand from the built-in role definitions and causes.md's ordering (lowest top tier, then
# fewest data actions, then name); None = no candidate covers it (Key Vault Administrator, privileged).
EXPECTED = {
    "certificatecas/delete": "Key Vault Certificates Officer",
    "certificatecas/read": "Key Vault Reader",
    "certificatecas/write": "Key Vault Certificates Officer",
    "certificatecontacts/write": "Key Vault Certificates Officer",
    "certificates/backup/action": "Key Vault Certificates Officer",
    "certificates/create/action": "Key Vault Certificates Officer",
    "certificates/delete": "Key Vault Certificates Officer",
    "certificates/import/action": "Key Vault Certificates Officer",
    "certificates/purge/action": "Key Vault Certificates Officer",
    "certificates/read": "Key Vault Reader",
    "certificates/recover/action": "Key Vault Certificates Officer",
    "certificates/release/action": "Key Vault Certificates Officer",
    "certificates/restore/action": "Key Vault Certificates Officer",
    "certificates/update/action": "Key Vault Certificates Officer",
    "keyrotationpolicies/read": "Key Vault Reader",
    "keyrotationpolicies/write": "Key Vault Crypto Officer",
    "keys/backup/action": "Key Vault Crypto User",
    "keys/create/action": "Key Vault Crypto Officer",
    "keys/decrypt/action": "Key Vault Crypto User",
    "keys/delete": "Key Vault Crypto Officer",
    "keys/encrypt/action": "Key Vault Crypto User",
    "keys/import/action": "Key Vault Crypto Officer",
    "keys/purge/action": "Key Vault Crypto Officer",
    "keys/read": "Key Vault Reader",
    "keys/recover/action": "Key Vault Crypto Officer",
    "keys/release/action": "Key Vault Crypto Service Release User",
    "keys/restore/action": "Key Vault Crypto Officer",
    "keys/rotate/action": "Key Vault Crypto Officer",
    "keys/sign/action": "Key Vault Crypto User",
    "keys/unwrap/action": "Key Vault Crypto Service Encryption User",
    "keys/update/action": "Key Vault Crypto User",
    "keys/verify/action": "Key Vault Crypto User",
    "keys/wrap/action": "Key Vault Crypto Service Encryption User",
    "secrets/backup/action": "Key Vault Secrets Officer",
    "secrets/delete": "Key Vault Secrets Officer",
    "secrets/getSecret/action": "Key Vault Secrets User",
    "secrets/purge/action": "Key Vault Secrets Officer",
    "secrets/readMetadata/action": "Key Vault Reader",
    "secrets/recover/action": "Key Vault Secrets Officer",
    "secrets/restore/action": "Key Vault Secrets Officer",
    "secrets/setSecret/action": "Key Vault Secrets Officer",
    "secrets/update/action": "Key Vault Secrets Officer",
    "storageaccounts/backup/action": None,
    "storageaccounts/delete": None,
    "storageaccounts/purge/action": None,
    "storageaccounts/read": "Key Vault Reader",
    "storageaccounts/recover/action": None,
    "storageaccounts/regeneratekey/action": None,
    "storageaccounts/restore/action": None,
    "storageaccounts/sas/delete": None,
    "storageaccounts/sas/read": "Key Vault Reader",
    "storageaccounts/sas/set/action": None,
    "storageaccounts/set/action": None,
}


def test_every_provider_data_action_has_an_expectation() -> None:
    assert {a.removeprefix(KV) for a in catalog.data_actions()} == set(EXPECTED)


def test_candidates_exclude_administrator_and_non_key_vault_roles() -> None:
    names = {c.role.role_name for c in candidates()}
    assert "Key Vault Administrator" not in names
    assert all(n.startswith("Key Vault") for n in names)


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_least_privileged_role_for_each_data_action(action: str) -> None:
    # given one denied data action
    # when the least-privileged candidate is chosen
    chosen = least_privileged((KV + action,))
    # then it is the expected built-in role (or none: privileged)
    assert (chosen.role.role_name if chosen else None) == EXPECTED[action]


def _denial(action: str, obj: ObjectRef | None = None) -> Denial:
    return Denial(source="test", status=403, principal=Principal(object_id=OID, kind="app"),
                  vault=VaultRef("kv1", VAULT_ID), data_action=KV + action, object=obj)


VAULT = Vault(id=VAULT_ID, name="kv1", tenant_id=OID, rbac=True)

def _facts() -> Facts:
    return Facts(vault=VAULT, principal=PrincipalInfo(OID))


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_plan_for_each_data_action(action: str) -> None:
    # given an RBAC vault and one missing data action
    required = Required((KV + action,), {})
    # when planned
    data = rbac_plan(_denial(action), _facts(), required, PlanOptions())
    assert data is not None
    plan = with_commands(data, VAULT)   # plans are data; render adds the commands
    # then the plan is at the vault, for a service principal, privileged only when nothing narrower exists
    assert plan.scope == VAULT_ID and plan.principal_type == "ServicePrincipal"
    assert plan.privileged == (EXPECTED[action] is None)
    if plan.privileged:
        assert plan.role_name == "Key Vault Administrator"
        assert plan.alternatives[0].data_actions == (KV + action,)
        # the resource group
        assert plan.alternatives[0].assignable_scopes == (VAULT_ID.split("/providers/", maxsplit=1)[0],)
    # and a custom-role alternative is offered exactly when the role's tier exceeds the denied action's
    over = plan.tier > catalog.tier(KV + action)
    assert bool(plan.alternatives) == (over or plan.privileged)
    assert plan.role_definition_id.endswith(plan.role_definition_id.rsplit("/", 1)[-1])
    assert plan.commands["az"].startswith("az role assignment create --assignee-object-id " + OID)


def test_object_scope_only_when_asked_and_known() -> None:
    obj = ObjectRef("secrets", "db-password")
    required = Required((KV + "secrets/getSecret/action",), {})
    at_vault = rbac_plan(_denial("secrets/getSecret/action", obj), _facts(), required, PlanOptions())
    at_object = rbac_plan(_denial("secrets/getSecret/action", obj), _facts(), required, PlanOptions(object_scope=True))
    assert at_vault is not None and at_vault.scope == VAULT_ID
    assert at_object is not None and at_object.scope == VAULT_ID + "/secrets/db-password"
    assert "scope: target" in with_commands(at_object, VAULT).commands["bicep"]
