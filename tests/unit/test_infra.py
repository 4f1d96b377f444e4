"""infra/: every Bicep file parses (pycep-parser) and the deployment keeps its least-privilege promises.

Bicep cannot be compiled here, so these tests read the parsed templates: what is deployed, what is conditional on
``applyMode``, and what the ABAC condition on Role Based Access Control Administrator lets the identity assign.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from remediate.catalog import builtin_role, builtin_roles

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KV_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
# Never anywhere in infra/: roles that could grant anything, or change a vault's permission model.
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f25e0fa2-a7c8-4377-a976-54943a77a395": "Key Vault Contributor",
    "8b54135c-b56d-4d72-a534-26097cfdc8d8": "Key Vault Data Access Administrator",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@cache
def tree(rel: str) -> dict[str, Any]:
    parsed: dict[str, Any] = BicepParser().parse(text=(INFRA / rel).read_text(encoding="utf-8"))
    return parsed


def body(resource: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(condition, config) of a resource or module, whether or not it is conditional or looped."""
    config = resource["config"]
    if "config" in config and ("condition" in config or "loop_type" in config):
        return config.get("condition"), config["config"]
    return None, config


def resources_of_type(rel: str, rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tree(rel).get("resources", {}).items() if v["type"].lower() == rtype.lower()}


def role_var(rel: str, resource: dict[str, Any]) -> str:
    """The role definition GUID of a role assignment whose roleDefinitionId is subscriptionResourceId(..., var)
    (or tenantResourceId(..., var) at a management group, which has no subscription: the same built-in role)."""
    _, cfg = body(resource)
    fn = cfg["properties"]["roleDefinitionId"]["function"]
    assert fn["type"] in ("subscription_resource_id", "tenant_resource_id")
    name = fn["parameters"]["resource_name_1"]
    variables = tree(rel).get("variables", {})
    if name in variables:
        value: str = variables[name]["value"]
        return value
    return str(name)


# --- parsing -------------------------------------------------------------------------------------------------------


def test_the_deployment_and_its_modules_exist() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert "main.bicep" in names
    assert {p for p in names if p.startswith("modules/")}, "modules/*.bicep"
    for module in tree("main.bicep")["modules"].values():
        assert (INFRA / module["detail"]["path"]).is_file(), module["detail"]["path"]


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = BicepParser().parse(text=path.read_text(encoding="utf-8"))
    assert parsed.get("resources") or parsed.get("modules"), f"{path}: nothing deployed"


def test_check_script_is_wired_into_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "infra/check.sh" in makefile
    script = (INFRA / "check.sh").read_text()
    assert "--framework bicep" in script and "--skip-download" in script
    assert "parsing_errors" in script, "checkov exits 0 on parse errors: the script must read the count"
    assert ".tools/checkov-venv" in script and "checkov==" in script


# --- least privilege -----------------------------------------------------------------------------------------------


def test_no_broad_or_permission_model_role_anywhere() -> None:
    for path in BICEP_FILES:
        text = path.read_text(encoding="utf-8").lower()
        for guid, name in FORBIDDEN_ROLES.items():
            assert guid not in text, f"{path.name} mentions {name}"


def test_every_role_guid_in_infra_is_known_and_expected() -> None:
    allowed_outside_kv = {READER, LOG_ANALYTICS_READER, RBAC_ADMINISTRATOR, STORAGE_QUEUE_DATA_CONTRIBUTOR,
                          STORAGE_TABLE_DATA_CONTRIBUTOR,
                          "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner (host storage)
                          "3913510d-42f4-4e42-8a64-420c390055eb"}  # Monitoring Metrics Publisher (App Insights)
    kv_data_roles = {r.name for r in builtin_roles() if r.role_name.startswith("Key Vault") and r.data_actions}
    for path in BICEP_FILES:
        for guid in {g.lower() for g in GUID.findall(path.read_text(encoding="utf-8"))}:
            assert guid in allowed_outside_kv or guid in kv_data_roles, f"{path.name}: unexpected GUID {guid}"


READER_MODULES = ("modules/target-subscription-reader.bicep", "modules/target-resourcegroup-reader.bicep")
VAULT_MODULE = "modules/target-vault-roles.bicep"
ACCESS_POLICY_ROLE_PARAM = "accessPolicyRoleName"
WRITER_ROLES = {RBAC_ADMINISTRATOR, ACCESS_POLICY_ROLE_PARAM}
SELF = "99999999-9999-9999-9999-999999999999"  # stands in for identity.properties.principalId


def role_assignments() -> list[tuple[str, str, dict[str, Any]]]:
    """(file, role, config) of every role assignment in infra/, whatever file it is in."""
    found = []
    for path in BICEP_FILES:
        rel = path.relative_to(INFRA).as_posix()
        for a in resources_of_type(rel, "Microsoft.Authorization/roleAssignments").values():
            found.append((rel, role_var(rel, a), body(a)[1]))
    return found


def target_scope(rel: str) -> str:
    scope: str = tree(rel)["globals"]["scope"]["value"]
    return scope


def module_of(path: str) -> dict[str, Any]:
    return next(m for m in tree("main.bicep")["modules"].values() if m["detail"]["path"] == path)


def test_reader_log_analytics_reader_queue_and_table_roles_are_assigned() -> None:
    for rel in READER_MODULES:
        assignments = resources_of_type(rel, "Microsoft.Authorization/roleAssignments")
        assert [(body(a)[0], role_var(rel, a)) for a in assignments.values()] == [(None, READER)], \
            f"{rel}: Reader only, unconditionally"
    ws = resources_of_type("modules/workspace-reader.bicep", "Microsoft.Authorization/roleAssignments")
    assert [role_var("modules/workspace-reader.bicep", a) for a in ws.values()] == [LOG_ANALYTICS_READER]
    app = resources_of_type("modules/app-roles.bicep", "Microsoft.Authorization/roleAssignments")
    app_roles = {role_var("modules/app-roles.bicep", a) for a in app.values()}
    assert {STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_TABLE_DATA_CONTRIBUTOR} <= app_roles
    for rel, _, cfg in role_assignments():
        assert cfg["properties"]["principalType"] == "ServicePrincipal", rel
        assert cfg["properties"]["principalId"] == "principalId", rel


def test_no_writer_role_is_assigned_at_subscription_or_resource_group_scope() -> None:
    # given every role assignment in infra/
    writers = [(rel, role, cfg) for rel, role, cfg in role_assignments() if role in WRITER_ROLES]
    # then the writer roles (RBAC administrator, access-policy writer) are in the per-vault module only, once each
    assert sorted((rel, role) for rel, role, _ in writers) == sorted(
        [(VAULT_MODULE, RBAC_ADMINISTRATOR), (VAULT_MODULE, ACCESS_POLICY_ROLE_PARAM)])
    # and each is scoped to an existing Key Vault (an assignment without `scope` would be at the resource group)
    vaults = {name: r for name, r in tree(VAULT_MODULE)["resources"].items()
              if r["type"] == "Microsoft.KeyVault/vaults"}
    assert target_scope(VAULT_MODULE) == "resourceGroup"
    for rel, role, cfg in writers:
        assert cfg.get("scope") in vaults, f"{rel}: {role} is not scoped to the vault"
        assert vaults[cfg["scope"]]["existing"] is True
        assert vaults[cfg["scope"]]["config"]["name"] == "vaultName"
    # and no subscription-scope file or main.bicep assigns anything but Reader
    for rel, role, _ in role_assignments():
        if target_scope(rel) in ("subscription", "managementGroup", "tenant"):
            assert role == READER, f"{rel}: {role} at subscription scope"
    assert not resources_of_type("main.bicep", "Microsoft.Authorization/roleAssignments")


def test_the_vault_module_runs_once_per_target_vault_in_apply_mode_only() -> None:
    main = tree("main.bicep")
    writers = module_of(VAULT_MODULE)
    loop = writers["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "writerVaultIds"
    operands = main["variables"]["writerVaultIds"]["value"]["operator"]["operands"]
    assert operands == {"condition": "applyMode", "true_value": "targetVaultIds", "false_value": []}
    assert main["parameters"]["targetVaultIds"]["default"] == []
    cfg = body(writers)[1]
    vault = loop["item_name"]
    # deployed into the vault's own subscription and resource group, for the vault named by the id's last segment
    rg = cfg["scope"]["function"]
    assert rg["type"] == "resource_group"
    for part, index in (("subscription_id", 2), ("resource_group_name", 4)):
        accessor = rg["parameters"][part]["operator"]["operands"]
        assert accessor["operand_2"] == index
        assert accessor["operand_1"]["function"]["parameters"]["input_string"] == vault
    params = cfg["params"]
    assert params["vaultName"]["function"]["type"] == "last"
    assert params["principalId"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "identity", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "properties", "operand_2": "principalId"}}}}}}
    assert params["rbacAdminCondition"] == "rbacAdminCondition"
    rbac_admin = next(cfg for rel, role, cfg in role_assignments() if role == RBAC_ADMINISTRATOR)
    assert rbac_admin["properties"]["condition"] == "rbacAdminCondition"
    assert rbac_admin["properties"]["conditionVersion"] == "2.0"
    assert body(module_of("modules/accesspolicy-role.bicep"))[0] == "applyMode"


def test_readers_may_stay_broad_and_take_no_apply_mode_input() -> None:
    for path in READER_MODULES:
        params = body(module_of(path))[1]["params"]
        assert set(params) == {"principalId"}, f"{path} gets only the principal"
        assert set(tree(path)["parameters"]) == {"principalId"}


def test_the_access_policy_role_is_assignable_only_where_the_target_vaults_are() -> None:
    params = body(module_of("modules/accesspolicy-role.bicep"))[1]["params"]
    scopes = params["assignableScopes"]["function"]
    assert scopes["type"] == "union"
    variables = tree("main.bicep")["variables"]
    used = [v for v in scopes["parameters"].values() if isinstance(v, str)]
    assert used == ["targetVaultResourceGroupScopes"]
    rg_scopes = variables["targetVaultResourceGroupScopes"]["value"]
    assert rg_scopes["loop_type"]["detail"]["array_name"] == "targetVaultIds"
    assert rg_scopes["config"] == "/subscriptions/${split(vaultId, '/')[2]}/resourceGroups/${split(vaultId, '/')[4]}"
    assert "targetSubscriptionScopes" not in variables and "targetResourceGroupScopes" not in variables


# --- the ABAC condition, rendered and evaluated --------------------------------------------------------------------

# Operators Microsoft documents for these attributes (conditions-authorization-actions-attributes).
DOCUMENTED_OPERATORS = {
    "RoleDefinitionId": {"GuidEquals", "GuidNotEquals", "ForAnyOfAnyValues:GuidEquals",
                         "ForAnyOfAllValues:GuidNotEquals"},
    "PrincipalId": {"GuidEquals", "GuidNotEquals", "ForAnyOfAnyValues:GuidEquals", "ForAnyOfAllValues:GuidNotEquals"},
    "PrincipalType": {"StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "ForAnyOfAnyValues:StringEqualsIgnoreCase",
                      "ForAnyOfAllValues:StringNotEqualsIgnoreCase"},
}
_TOKEN = re.compile(r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<not>!)|(?P<and>AND\b)|(?P<or>OR\b)"
                    r"|ActionMatches\{'(?P<action>[^']*)'\}"
                    r"|@(?P<source>Request|Resource)\[Microsoft\.Authorization/roleAssignments:(?P<attr>\w+)\] "
                    r"(?P<op>[\w:]+) \{(?P<values>[^}]*)\})")


def rendered_condition(principal_types: list[str] | None = None) -> str:
    """The ABAC condition as ARM receives it, for the default grantable roles (and principal types)."""
    main = tree("main.bicep")
    variables = main["variables"]
    grantable = main["parameters"]["grantableRoleIds"]["default"]
    types = principal_types or main["parameters"]["grantablePrincipalTypes"]["default"]
    joiner = variables["grantableRoleList"]["value"]["function"]
    assert joiner["type"] == "join" and joiner["parameters"]["delimiter"] == ", "
    assert variables["grantablePrincipalTypeList"]["value"] == \
        "\\'${join(grantablePrincipalTypes, '\\', \\'')}\\'", "each type quoted, comma-separated"
    raw: str = variables["rbacAdminCondition"]["value"]
    return (raw.replace("${grantableRoleList}", ", ".join(grantable))
            .replace("${grantablePrincipalTypeList}", ", ".join(f"'{t}'" for t in types))
            .replace("${selfPrincipalId}", SELF).replace("\\'", "'"))


def evaluate(condition: str, action: str, role: str, principal_type: str, principal_id: str) -> bool:
    """Evaluate the condition as Azure does for one role-assignment write or delete (single-valued attributes)."""
    tokens = []
    pos = 0
    while pos < len(condition.rstrip()):
        m = _TOKEN.match(condition, pos)
        assert m, f"unparsed condition text at {pos}: {condition[pos:pos + 40]!r}"
        tokens.append(m)
        pos = m.end()
    values = {"RoleDefinitionId": role, "PrincipalType": principal_type, "PrincipalId": principal_id}

    def atom(m: re.Match[str]) -> bool:
        if m["action"] is not None:
            return m["action"] == action
        attr, op = m["attr"], m["op"]
        assert op in DOCUMENTED_OPERATORS[attr], f"{op} is not documented for {attr}"
        listed = [v.strip().strip("'").lower() for v in m["values"].split(",")]
        value = values[attr].lower()
        # single-valued attribute: ForAnyOfAnyValues:XEquals is membership, ForAnyOfAllValues:XNotEquals its negation
        return (value not in listed) if "NotEquals" in op else (value in listed)

    i = 0

    def expr() -> bool:  # AND and OR have equal precedence here: the template parenthesises every mix
        nonlocal i
        result = term()
        while i < len(tokens) and (tokens[i]["and"] or tokens[i]["or"]):
            is_and = bool(tokens[i]["and"])
            i += 1
            rhs = term()
            result = (result and rhs) if is_and else (result or rhs)
        return result

    def term() -> bool:
        nonlocal i
        tok = tokens[i]
        i += 1
        if tok["not"]:
            return not term()
        if tok["lp"]:
            value = expr()
            assert tokens[i]["rp"], "unbalanced condition"
            i += 1
            return value
        return atom(tok)

    result = expr()
    assert i == len(tokens), "trailing condition text"
    return result


WRITE = "Microsoft.Authorization/roleAssignments/write"
DELETE = "Microsoft.Authorization/roleAssignments/delete"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
OTHER_SP = "11111111-1111-1111-1111-111111111111"


@pytest.mark.parametrize(("action", "role", "ptype", "principal", "allowed"), [
    (WRITE, SECRETS_USER, "ServicePrincipal", OTHER_SP, True),
    (DELETE, SECRETS_USER, "ServicePrincipal", OTHER_SP, True),
    (WRITE, SECRETS_USER, "ServicePrincipal", SELF, False),           # never itself
    (WRITE, SECRETS_USER, "ServicePrincipal", SELF.upper(), False),   # GUIDs compare without case
    (DELETE, SECRETS_USER, "ServicePrincipal", SELF, False),
    (WRITE, SECRETS_USER, "Group", OTHER_SP, False),                  # never a group
    (WRITE, SECRETS_USER, "User", OTHER_SP, False),                   # users only when the operator allows them
    (WRITE, KV_ADMINISTRATOR, "ServicePrincipal", OTHER_SP, False),   # privileged only when added
    (WRITE, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "ServicePrincipal", OTHER_SP, False),  # Owner
    (WRITE, RBAC_ADMINISTRATOR, "ServicePrincipal", OTHER_SP, False),
    (DELETE, RBAC_ADMINISTRATOR, "ServicePrincipal", SELF, False),    # cannot remove its own guard rail
    ("Microsoft.KeyVault/vaults/read", READER, "Group", SELF, True),   # other actions are not constrained
], ids=lambda v: str(v)[:16])
def test_abac_condition_decides_as_intended(action: str, role: str, ptype: str, principal: str,
                                            allowed: bool) -> None:
    assert evaluate(rendered_condition(), action, role, ptype, principal) is allowed


def test_abac_condition_allows_users_only_when_listed_and_never_itself() -> None:
    condition = rendered_condition(["ServicePrincipal", "User"])
    assert evaluate(condition, WRITE, SECRETS_USER, "User", OTHER_SP)
    assert not evaluate(condition, WRITE, SECRETS_USER, "User", SELF)
    assert not evaluate(condition, WRITE, SECRETS_USER, "Group", OTHER_SP)
    param = tree("main.bicep")["parameters"]["grantablePrincipalTypes"]
    allowed = next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")
    assert sorted(allowed) == ["ServicePrincipal", "User"], "never Group"
    assert param["default"] == ["ServicePrincipal"]


def test_abac_condition_excludes_the_apps_own_principal_id() -> None:
    main = tree("main.bicep")
    # the excluded id is the principal of the identity the function app runs as
    assert main["variables"]["selfPrincipalId"]["value"] == body(module_of(VAULT_MODULE))[1]["params"]["principalId"]
    functionapp = body(module_of("modules/functionapp.bicep"))[1]["params"]
    assert functionapp["identityId"] == {"operator": {"type": "property_accessor",
                                                      "operands": {"operand_1": "identity", "operand_2": "id"}}}
    condition = rendered_condition()
    exclusions = re.findall(r"@(Request|Resource)\[Microsoft\.Authorization/roleAssignments:PrincipalId\] "
                            r"ForAnyOfAllValues:GuidNotEquals \{([^}]*)\}", condition)
    assert exclusions == [("Request", SELF), ("Resource", SELF)]


def test_abac_condition_allows_only_key_vault_data_roles_for_the_grantable_principal_types() -> None:
    condition = rendered_condition()
    # Both actions are constrained: writes by the request's attributes, deletes by the existing assignment's.
    assert "!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})" in condition
    assert "!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})" in condition
    role_sets = re.findall(r"@(Request|Resource)\[Microsoft\.Authorization/roleAssignments:RoleDefinitionId\] "
                           r"ForAnyOfAnyValues:GuidEquals \{([^}]*)\}", condition)
    assert [source for source, _ in role_sets] == ["Request", "Resource"]
    type_sets = re.findall(r"@(Request|Resource)\[Microsoft\.Authorization/roleAssignments:PrincipalType\] "
                           r"ForAnyOfAnyValues:StringEqualsIgnoreCase \{([^}]*)\}", condition)
    assert type_sets == [("Request", "'ServicePrincipal'"), ("Resource", "'ServicePrincipal'")]
    for _, ids in role_sets:
        guids = [g.strip() for g in ids.split(",")]
        assert guids and all(GUID.fullmatch(g) for g in guids)
        for g in guids:
            role = builtin_role(g)
            assert role is not None, g
            assert role.role_name.startswith("Key Vault") and role.data_actions, role.role_name
            assert not any(a.startswith("Microsoft.Authorization/") and not a.endswith("/read")
                           for a in role.actions), f"{role.role_name} could manage access"
        assert KV_ADMINISTRATOR not in guids, "privileged only when the operator adds it"
    # Balanced parentheses: a malformed condition is rejected by ARM at deployment time.
    depth = 0
    for ch in condition:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0


def test_grantable_roles_are_limited_to_key_vault_data_roles_by_the_template() -> None:
    param = tree("main.bicep")["parameters"]["grantableRoleIds"]
    allowed = next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")
    for g in allowed:
        role = builtin_role(g)
        assert role is not None and role.role_name.startswith("Key Vault") and role.data_actions, g
    assert set(param["default"]) <= set(allowed)
    assert KV_ADMINISTRATOR in allowed and KV_ADMINISTRATOR not in param["default"]


def test_access_policy_role_has_exactly_read_and_access_policy_write() -> None:
    roles = resources_of_type("modules/accesspolicy-role.bicep", "Microsoft.Authorization/roleDefinitions")
    assert len(roles) == 1
    perms = body(next(iter(roles.values())))[1]["properties"]["permissions"]
    assert perms == [{
        "actions": ["Microsoft.KeyVault/vaults/read", "Microsoft.KeyVault/vaults/accessPolicies/write"],
        "notActions": [], "dataActions": [], "notDataActions": [],
    }]


def test_apply_mode_is_off_by_default() -> None:
    assert tree("main.bicep")["parameters"]["applyMode"]["default"] is False


# --- storage, function app, monitoring -----------------------------------------------------------------------------


def test_storage_is_identity_only_tls12_and_private_blobs() -> None:
    accounts = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts")
    assert len(accounts) == 1
    props = body(next(iter(accounts.values())))[1]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    containers = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert all(body(c)[1]["properties"]["publicAccess"] == "None" for c in containers.values())


def test_denials_queue_and_the_three_tables_exist() -> None:
    queues = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert {body(q)[1]["name"] for q in queues.values()} == {"denials"}
    tables = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert {body(t)[1]["name"] for t in tables.values()} == {"claims", "findings", "grants", "approvals", "vaultindex"}


def test_function_app_is_flex_consumption_python_311_with_the_user_assigned_identity() -> None:
    rel = "modules/functionapp.bicep"
    plan = body(next(iter(resources_of_type(rel, "Microsoft.Web/serverfarms").values())))[1]
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = body(next(iter(resources_of_type(rel, "Microsoft.Web/sites").values())))[1]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2" and props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    auth = config["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    settings = {s["name"]: s["value"] for s in tree(rel)["variables"]["platformAppSettings"]["value"]}
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert "AzureWebJobsStorage__accountName" in settings
    assert "AzureWebJobsStorage" not in settings, "no connection string (shared key) for host storage"
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings), "not on Flex"


def test_app_settings_cover_the_function_contract() -> None:
    settings = {s["name"]: s["value"] for s in tree("main.bicep")["variables"]["remediateAppSettings"]["value"]}
    assert set(settings) == {"AZURE_SUBSCRIPTION_IDS", "KV_REMEDIATE_POLICY", "KV_REMEDIATE_DEDUPE_WINDOW",
                             "KV_REMEDIATE_NOTIFY_URL", "KV_REMEDIATE_WEBHOOK_AUDIENCE", "KV_REMEDIATE_WEBHOOK_TENANT",
                             "KV_REMEDIATE_API_AUDIENCE", "KV_REMEDIATE_API_TENANT", "KV_REMEDIATE_SELF_OBJECT_ID",
                             "KV_REMEDIATE_NOTIFY_KIND", "KV_REMEDIATE_SLACK_SIGNING_SECRET",
                             "KV_REMEDIATE_SLACK_APPROVERS", "KV_REMEDIATE_SLACK_TEAM", "KV_REMEDIATE_PAGE_KEY"}
    # the Slack signing secret comes from a secure parameter, like the notification URL
    assert settings["KV_REMEDIATE_SLACK_SIGNING_SECRET"] == "slackSigningSecret"
    # and so does the findings page's form-token key, the same on every instance (a new one per deployment)
    assert settings["KV_REMEDIATE_PAGE_KEY"] == "pageKey"
    # the guard knows the identity the ABAC condition excludes: the same principal, from the same resource
    assert settings["KV_REMEDIATE_SELF_OBJECT_ID"] == tree("main.bicep")["variables"]["selfPrincipalId"]["value"]
    assert settings["KV_REMEDIATE_API_AUDIENCE"] == "remediateApiAudience"


def test_app_insights_uses_a_workspace_and_entra_only() -> None:
    comps = resources_of_type("modules/monitoring.bicep", "Microsoft.Insights/components")
    props = body(next(iter(comps.values())))[1]["properties"]
    assert props["DisableLocalAuth"] is True and props["WorkspaceResourceId"]


def test_key_vault_diagnostics_send_audit_events_to_the_resource_specific_table() -> None:
    diag = resources_of_type("modules/kv-diagnostics.bicep", "Microsoft.Insights/diagnosticSettings")
    props = body(next(iter(diag.values())))[1]["properties"]
    assert props["logAnalyticsDestinationType"] == "Dedicated"
    assert props["logs"] == [{"category": "AuditEvent", "enabled": True}]


# --- alert rule and action group -----------------------------------------------------------------------------------

DIMENSIONS = ["CallerObjectId", "AppId", "ResourceId", "OperationName", "Id", "HttpStatusCode"]


def alert_rule() -> dict[str, Any]:
    rules = resources_of_type("modules/alerting.bicep", "Microsoft.Insights/scheduledQueryRules")
    assert len(rules) == 1
    rule = next(iter(rules.values()))
    assert rule["api_version"] == "2023-03-15-preview"
    return body(rule)[1]


def test_alert_rule_query_covers_403_429_and_401_without_the_challenge() -> None:
    rule = alert_rule()
    assert rule["kind"] == "LogAlert"
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["query"] == "denialQuery"
    query = tree("modules/alerting.bicep")["variables"]["denialQuery"]["value"]
    assert query.lstrip().startswith("AZKVAuditLogs")
    assert "HttpStatusCode in (403, 429)" in query
    assert 'HttpStatusCode == 401 and OperationName != "Authentication"' in query
    by = query.rsplit(" by ", 1)[1]
    keys = [k.split("=")[0].strip() for k in by.split(",")]
    assert keys == DIMENSIONS


def test_alert_rule_splits_by_the_evidence_dimensions_and_calls_the_action_group() -> None:
    props = alert_rule()["properties"]
    criterion = props["criteria"]["allOf"][0]
    assert [d["name"] for d in criterion["dimensions"]] == DIMENSIONS
    assert all(d["operator"] == "Include" and d["values"] == ["*"] for d in criterion["dimensions"])
    assert len(criterion["dimensions"]) <= 6, "log search alerts split by at most six dimensions"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert props["actions"]["actionGroups"]


def test_the_alert_dimensions_are_read_by_the_intake() -> None:
    """A Log Alerts V2 payload carrying this rule's dimensions parses into a complete denial."""
    from remediate.intake import parse_one

    vault = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/"
             "microsoft.keyvault/vaults/kv1")
    values = {"CallerObjectId": "11111111-1111-1111-1111-111111111111",
              "AppId": "22222222-2222-2222-2222-222222222222", "ResourceId": vault, "OperationName": "SecretGet",
              "Id": "https://kv1.vault.azure.net/secrets/db-password", "HttpStatusCode": "403"}
    payload = {"schemaId": "azureMonitorCommonAlertSchema", "data": {
        "essentials": {"alertId": "/subscriptions/00000000-0000-0000-0000-000000000001/providers/"
                                  "Microsoft.AlertsManagement/alerts/33333333-3333-3333-3333-333333333333",
                       "alertRule": "kv-denials", "severity": "Sev2", "signalType": "Log", "monitorCondition": "Fired",
                       "monitoringService": "Log Alerts V2", "alertTargetIDs": [], "configurationItems": [],
                       "firedDateTime": "2026-01-01T00:00:00Z"},
        "alertContext": {"conditionType": "LogQueryCriteria", "condition": {
            "windowSize": "PT5M", "windowStartTime": "2025-12-31T23:55:00Z", "windowEndTime": "2026-01-01T00:00:00Z",
            "allOf": [{"searchQuery": tree("modules/alerting.bicep")["variables"]["denialQuery"]["value"],
                       "timeAggregation": "Count", "operator": "GreaterThan", "threshold": "0", "metricValue": 1,
                       "dimensions": [{"name": k, "value": v} for k, v in values.items()],
                       "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}}]}}}}
    result = parse_one("alert.json", json.dumps(payload).encode())
    assert len(result.denials) == 1
    d = result.denials[0]
    assert d.status == 403 and d.operation == "SecretGet"
    assert d.principal.object_id == values["CallerObjectId"] and d.principal.app_id == values["AppId"]
    assert d.vault.name == "kv1" and (d.vault.resource_id or "").lower() == vault
    assert d.object is not None and d.object.name == "db-password"


def test_action_group_webhook_posts_the_common_schema_to_api_alerts_with_a_function_key() -> None:
    rel = "modules/alerting.bicep"
    groups = resources_of_type(rel, "Microsoft.Insights/actionGroups")
    assert len(groups) == 1
    webhook = tree(rel)["variables"]["webhookBase"]["value"]
    assert webhook["useCommonAlertSchema"] is True
    uri = webhook["serviceUri"]
    assert uri == "https://${functionApp.properties.defaultHostName}/api/alerts?code=${alertsFunctionKey}"
    aad = tree(rel)["variables"]["webhookAad"]["value"]["operator"]["operands"]
    assert aad["true_value"]["useAadAuth"] is True and aad["false_value"] == {"useAadAuth": False}


def test_action_group_uses_a_key_of_the_alerts_function_never_a_host_key() -> None:
    from remediate.localhost.discovery import app_functions, load_app

    rel = "modules/alerting.bicep"
    variables = tree(rel)["variables"]
    # the key is listed on the alerts function (POST {site}/functions/{name}/listkeys answers {"default": key})
    key = variables["alertsFunctionKey"]["value"]["operator"]
    assert key["type"] == "property_accessor" and key["operands"]["operand_2"] == "default"
    listed = key["operands"]["operand_1"]["function"]
    assert listed["type"] == "list_func" and listed["parameters"]["func_name"] == "listKeys"
    assert listed["parameters"]["resource_identifier"] == "${functionApp.id}/functions/${alertsFunctionName}"
    # and that function is the one the app registers for POST /api/alerts
    name = variables["alertsFunctionName"]["value"]
    functions = {f.get_function_name(): json.loads(f.get_function_json()) for f in app_functions(load_app())}
    trigger = next(b for b in functions[name]["bindings"] if b["type"] == "httpTrigger")
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == ("alerts", ["POST"], "FUNCTION")
    # and no host key (valid for every function, /api/remediate included) is read anywhere in infra/
    for path in BICEP_FILES:
        text = path.read_text(encoding="utf-8")
        assert "/host/default" not in text and "functionKeys" not in text and "masterKey" not in text, path.name


def test_alerting_is_conditional_and_outputs_are_present() -> None:
    main = tree("main.bicep")
    alerting = next(m for m in main["modules"].values() if m["detail"]["path"] == "modules/alerting.bicep")
    assert body(alerting)[0] == "deployAlerting"
    outputs = main["outputs"]
    assert {"functionUrl", "identityPrincipalId", "alertRuleId"} <= set(outputs)
    assert "https://" in outputs["functionUrl"]["value"]


# --- parameters example --------------------------------------------------------------------------------------------


def test_example_parameters_match_main_parameters() -> None:
    example = json.loads((INFRA / "main.parameters.example.json").read_text())
    assert example["$schema"].endswith("deploymentParameters.json#")
    params = tree("main.bicep")["parameters"]
    assert set(example["parameters"]) <= set(params), set(example["parameters"]) - set(params)
