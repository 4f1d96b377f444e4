"""The printed fixes: the access-policy command never drops a permission the entry holds, and the custom-role
alternative is created under a fixed id, assignable in the resource group, and assigned by that id (az and Bicep).

The az rest line is executed against the bundled emulator (which merges ``accessPolicies/add`` as ARM does) and the
vault is read back; the ``set-policy`` fallback is checked against azure-cli's own rule for it (``set_policy``
replaces each permission list it is given: ``secrets = policy.permissions.secrets if secret_permissions is None
else secret_permissions``, azure-cli src/azure-cli/azure/cli/command_modules/keyvault/custom.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import shlex
import ssl
import urllib.request
import uuid
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycep import BicepParser

from remediate.backends import EmulatorRun
from remediate.intake import parse_inputs
from remediate.model import AccessPolicyEntry, Vault
from remediate.render import commands
from remediate.service import diagnose

DEMO = resources.files("remediate").joinpath("demo")
TENANT: dict[str, Any] = json.loads(DEMO.joinpath("tenant.json").read_text())
NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
SUB = str(uuid.uuid5(NS, "subscription-prod"))
ALICE = str(uuid.uuid5(NS, "alice"))
SIGNER = str(uuid.uuid5(NS, "app-signer"))
LEGACY = f"/subscriptions/{SUB}/resourceGroups/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-legacy"
PAY = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments"
TID = "28f841eb-fe15-511b-b0ce-7c31211ef512"
SECRET_PERMS = ("get", "list", "set", "delete", "backup", "restore", "recover", "purge")


def _alice_set_denial() -> tuple[str, bytes]:
    return ("runbook", json.dumps({"principal_id": ALICE, "vault": "kv-legacy", "operation": "SecretSet",
                                   "object": "secrets/feature-flags"}).encode())


def _with_alice_holding(secrets: list[str], keys: list[str]) -> dict[str, Any]:
    tenant = copy.deepcopy(TENANT)
    vault = next(v for v in tenant["vaults"] if v["id"] == LEGACY)
    entry = next(e for e in vault["properties"]["accessPolicies"] if e["objectId"] == ALICE)
    entry["permissions"] = {"keys": keys, "secrets": secrets, "certificates": []}
    return tenant


def _send(emu: Any, az: str) -> int:
    """What pasting an ``az rest`` line does, against the emulator: the same method, URL and body, with a token."""
    argv = shlex.split(az, comments=True)
    assert argv[:2] == ["az", "rest"]
    opt = dict(zip(argv[2::2], argv[3::2], strict=True))
    token = emu.credential().get_token("https://management.azure.com/.default").token
    req = urllib.request.Request(emu.base_url + opt["--url"], data=opt["--body"].encode(),
                                 method=opt["--method"].upper(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=emu.ca_file), timeout=30) as resp:
        return int(resp.status)


def _entry(emu: Any, vault_id: str, oid: str) -> dict[str, list[str]]:
    vault = emu.state.vault(vault_id)
    [entry] = [e for e in vault["properties"]["accessPolicies"] if e["objectId"] == oid]
    return {k: list(v) for k, v in entry["permissions"].items()}


@pytest.mark.parametrize(("secrets", "keys"), [
    (["get", "list"], []),                      # the demo's alice
    (["Get", "List", "Delete"], ["get"]),       # mixed-case spellings as older APIs stored them; another kind held
    ([], ["get", "list"]),                      # nothing of the kind yet
])
def test_access_policy_command_keeps_what_the_entry_holds(secrets: list[str], keys: list[str]) -> None:
    # given alice's entry holding `secrets` and `keys`, and a SecretSet denial (set is missing)
    tenant = _with_alice_holding(secrets, keys)

    async def go(emu: EmulatorRun) -> Any:
        async with emu.facts() as facts:
            return (await diagnose(parse_inputs([_alice_set_denial()]).denials, facts)).findings

    with EmulatorRun(tenant) as run:
        [finding] = asyncio.run(go(run))
        plan = finding.plan
        assert plan is not None and plan.kind == "access_policy"
        az = plan.commands["az"]
        # when the printed command is pasted
        assert "/accessPolicies/add?api-version=2026-02-01" in az and "set-policy --" not in az
        assert _send(run.emulator, az) in (200, 201)
        # then the entry holds everything it held plus set, and the other kind is untouched
        after = _entry(run.emulator, LEGACY, ALICE)
    assert {p.lower() for p in after["secrets"]} == {p.lower() for p in secrets} | {"set"}
    assert [p.lower() for p in after.get("keys", [])] == [p.lower() for p in keys]
    # and the command's text says why it is not set-policy
    assert "removes nothing" in az and "not 'az keyvault set-policy', which replaces" in az


def _set_policy_result(held: dict[str, tuple[str, ...]], az: str) -> dict[str, set[str]]:
    """azure-cli's set_policy on an existing entry: each list given on the command line replaces the entry's."""
    argv = shlex.split(az, comments=True)
    assert argv[:3] == ["az", "keyvault", "set-policy"]
    flags = {v: k for k, v in commands.AP_FLAGS.items()}
    result = {k: {p.lower() for p in v} for k, v in held.items()}
    kind = None
    for tok in argv[3:]:
        if tok.startswith("--"):
            kind = flags.get(tok)
            if kind is not None:
                result[kind] = set()
        elif kind is not None:
            result[kind].add(tok.lower())
    return result


@settings(max_examples=200, deadline=None)
@given(held=st.lists(st.sampled_from(SECRET_PERMS), unique=True), key_held=st.lists(st.sampled_from(("get", "list")),
       unique=True), add=st.lists(st.sampled_from(SECRET_PERMS), min_size=1, unique=True),
       tenant=st.sampled_from((TID, None)))
def test_access_policy_command_never_drops_a_permission(held: list[str], key_held: list[str], add: list[str],
                                                        tenant: str | None) -> None:
    # given any entry and any missing secret permissions
    entry = AccessPolicyEntry(TID, ALICE, None, {"secrets": tuple(held), "keys": tuple(key_held)})
    vault = Vault(id=LEGACY, name="kv-legacy", tenant_id=tenant, rbac=False, access_policies=(entry,))
    holds = commands.held_permissions(vault, ALICE)
    # when the command is rendered
    az = commands.access_policy(LEGACY, "kv-legacy", ALICE, tenant, {"secrets": tuple(add)}, held=holds)["az"]
    if tenant:
        # then it is accessPolicies/add of exactly the missing ones (ARM merges; nothing else is sent)
        body = json.loads(shlex.split(az, comments=True)[-1])
        assert body["properties"]["accessPolicies"][0]["permissions"] == {"secrets": add}
    else:
        # then (no tenant for the add body) set-policy's replacement leaves everything held, plus the added
        after = _set_policy_result(holds, az)
        assert after["secrets"] >= set(held) | set(add)
        assert after.get("keys", set()) == set(key_held)
        assert "--key-permissions" not in az      # a kind we do not change is not given, so set-policy keeps it


def test_held_permissions_are_the_entry_set_policy_would_edit() -> None:
    # given the caller's own entry, a compound-identity entry and another tenant's entry for the same object
    own = AccessPolicyEntry(TID, ALICE, None, {"secrets": ("get",)})
    compound = AccessPolicyEntry(TID, ALICE, "ecb2d6de-fe82-5e59-aa3d-296da3b391f2", {"secrets": ("purge",)})
    foreign = AccessPolicyEntry("00000000-0000-0000-0000-000000000001", ALICE, None, {"keys": ("get",)})
    vault = Vault(id=LEGACY, name="kv-legacy", tenant_id=TID, rbac=False, access_policies=(own, compound, foreign))
    # when the held permissions are read, then only the caller's own entry in the vault's tenant counts
    assert commands.held_permissions(vault, ALICE.upper()) == {"secrets": ("get",)}


def test_custom_role_is_created_by_id_assignable_in_the_resource_group_and_assigned_by_that_id() -> None:
    # given a custom role for one data action at a key
    scope = PAY + "/keys/release-signing"
    name = "kv-remediate kv-payments KeysSignAction"
    out = commands.custom_role(name, ("Microsoft.KeyVault/vaults/keys/sign/action",), PAY, scope,
                               principal_id=SIGNER, principal_type="ServicePrincipal")
    rg = f"/subscriptions/{SUB}/resourceGroups/rg-payments"
    guid = commands.custom_role_guid(name, PAY)
    role_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    # when the az line is read
    tokens = shlex.split(out["az"], comments=True)
    create, assign = tokens[:tokens.index("&&")], tokens[tokens.index("&&") + 1:]
    # then the role is PUT under a fixed id at the resource group, assignable there and nowhere else
    assert create[:5] == ["az", "rest", "--method", "put", "--url"]
    assert create[5] == f"{rg}/providers/Microsoft.Authorization/roleDefinitions/{guid}?api-version=2022-04-01"
    body = json.loads(create[create.index("--body") + 1])["properties"]
    assert body["assignableScopes"] == [rg] and body["roleName"] == name and body["type"] == "CustomRole"
    assert body["permissions"] == [{"actions": [], "notActions": [], "dataActions": [
        "Microsoft.KeyVault/vaults/keys/sign/action"], "notDataActions": []}]
    # and assigned at the key by that id, never by name (no lookup right after creation)
    assert assign[:4] == ["az", "role", "assignment", "create"]
    assert assign[assign.index("--role") + 1] == role_id and assign[assign.index("--scope") + 1] == scope
    assert "az role definition create" not in out["az"] and name not in " ".join(assign)
    # and the same inputs give the same id (re-running updates the role instead of failing on its name)
    assert commands.custom_role_guid(name, PAY) == guid != commands.custom_role_guid(name + "x", PAY)
    assert "RoleDefinitionDoesNotExist" in out["az"].split("  # ", 1)[1]


def test_custom_role_bicep_defines_and_assigns() -> None:
    # given the Bicep of a custom-role alternative at a secret
    name = "kv-remediate kv-payments SecretsGetSecretAction"
    scope = PAY + "/secrets/db-password"
    bicep = commands.custom_role(name, ("Microsoft.KeyVault/vaults/secrets/getSecret/action",), PAY, scope,
                                 principal_id=SIGNER, principal_type="User")["bicep"]
    # when it is parsed
    tree = BicepParser().parse(text=bicep)
    resources_ = tree["resources"]
    # then it defines the role under the fixed id, assignable in the resource group, and assigns it at the secret
    role = resources_["customRole"]
    assert role["config"]["name"] == commands.custom_role_guid(name, PAY)
    assert role["type"] == "Microsoft.Authorization/roleDefinitions"
    assert "resourceGroup().id" in bicep.split("assignableScopes:", 1)[1].splitlines()[0]
    grant = resources_["grant"]
    assert grant["type"] == "Microsoft.Authorization/roleAssignments" and grant["config"]["scope"] == "target"
    role_ref = grant["config"]["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert role_ref["operator"]["operands"] == {"operand_1": "customRole", "operand_2": "name"}
    assert grant["config"]["properties"]["principalType"] == "User"
    assert resources_["target"]["type"] == "Microsoft.KeyVault/vaults/secrets"
    assert resources_["target"]["api_version"] == resources_["vault"]["api_version"] == "2026-02-01"


@pytest.mark.parametrize("vault_id", [
    "/subscriptions/x/resourceGroups/rg", PAY + "/../other", PAY + "'; rm -rf /",
    # armid's rules, not a looser local copy: a trailing newline ('$' matched before it), a subscription of hyphens,
    # a resource group ending in '.', and vault names Key Vault refuses are ids Azure cannot hold
    PAY + "\n", PAY.replace(PAY.split("/")[2], "-" * 36), PAY.replace("/resourceGroups/" + PAY.split("/")[4] + "/",
                                                                      "/resourceGroups/rg./"),
    PAY.rsplit("/", 1)[0] + "/1-a", PAY.rsplit("/", 1)[0] + "/kv--x-"])
def test_unsafe_ids_are_not_rendered(vault_id: str) -> None:
    # given an id that fails validation, when rendered, then nothing is printed to paste
    assert commands.custom_role("r", ("a",), vault_id, vault_id, principal_id=SIGNER, principal_type=None)["az"] \
        == commands.UNSAFE
    assert commands.access_policy(vault_id, "kv", ALICE, TID, {"secrets": ("get",)})["az"] == commands.UNSAFE
    assert commands.assignable_scope(vault_id) == vault_id


def _cli_role_assignment_put(emu: Any, argv: list[str]) -> int:
    """What ``az role assignment create --assignee-object-id --assignee-principal-type --role ID --scope`` sends
    (azure-cli role/custom.py ``_create_role_assignment``: PUT {scope}/providers/Microsoft.Authorization/
    roleAssignments/{new uuid} with roleDefinitionId, principalId and principalType; a full role definition id is
    used as given, ``_resolve_role_id``)."""
    opt = dict(zip(argv[4::2], argv[5::2], strict=True))
    body = {"properties": {"roleDefinitionId": opt["--role"], "principalId": opt["--assignee-object-id"],
                           "principalType": opt["--assignee-principal-type"]}}
    url = (f"{opt['--scope']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
           "?api-version=2022-04-01")
    return _send(emu, shlex.join(["az", "rest", "--method", "put", "--url", url, "--body", json.dumps(body)]))


def test_pasting_the_custom_role_lines_twice_creates_one_role_and_assigns_it() -> None:
    # given the demo's signer, whose Key Vault Crypto User grant has a custom-role alternative
    async def go(emu: EmulatorRun) -> Any:
        async with emu.facts() as facts:
            denial = ("runbook", json.dumps({"principal_id": SIGNER, "vault": "kv-payments", "operation": "KeySign",
                                             "object": "keys/release-signing"}).encode())
            return (await diagnose(parse_inputs([denial]).denials, facts)).findings

    with EmulatorRun(TENANT) as run:
        [finding] = asyncio.run(go(run))
        assert finding.plan is not None
        [alt] = finding.plan.alternatives
        tokens = shlex.split(alt.commands["az"], comments=True)
        create, assign = tokens[:tokens.index("&&")], tokens[tokens.index("&&") + 1:]
        # when the role definition PUT is pasted twice (the second is an update, not a name conflict)
        assert _send(run.emulator, shlex.join(create)) in (200, 201)
        assert _send(run.emulator, shlex.join(create)) in (200, 201)
        # and the assignment as the CLI sends it
        assert _cli_role_assignment_put(run.emulator, assign) in (200, 201)
        tenant = run.emulator.tenant()
    # then one role with that name exists, assignable in the resource group, and the signer holds it at the vault
    guid = commands.custom_role_guid(alt.role_name, PAY)
    roles = [r for r in tenant["role_definitions"] if (r.get("properties") or r).get("roleName") == alt.role_name]
    assert len(roles) == 1
    role = roles[0].get("properties") or roles[0]
    assert role["assignableScopes"] == [PAY.split("/providers/", maxsplit=1)[0]]
    grants = [a for a in tenant["role_assignments"]
              if (a.get("properties") or a).get("principalId") == SIGNER
              and str((a.get("properties") or a).get("roleDefinitionId", "")).endswith(guid)]
    assert [(g.get("properties") or g)["scope"].lower() for g in grants] == [PAY.lower()]


@pytest.mark.parametrize("tail", ["/SECRETS/x", "/secrets/x\n", "/secrets/a/b", "/secrets/"])
def test_object_scopes_outside_armids_rule_are_not_rendered(tail: str) -> None:
    # given an object scope armid does not accept, when a role assignment is rendered there, then nothing is printed
    role = "4633458b-17de-408a-b874-0445c86b69e6"
    assert commands.role_assignment(ALICE, "User", role, "Key Vault Secrets User", scope=PAY + tail,
                                    vault_id=PAY)["az"] == commands.UNSAFE
