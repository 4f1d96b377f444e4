"""infra/ for Managed HSMs: Reader on each listed HSM resource (ARM) and nothing else assigned by Bicep; the HSM's
local roles are output as az commands (Bicep cannot assign them): Crypto Auditor at / always, Policy Administrator
only in apply mode."""

from __future__ import annotations

import json

from tests.unit.test_infra import READER, body, module_of, resources_of_type, role_var, tree

HSM_MODULE = "modules/target-hsm-reader.bicep"


def test_each_listed_hsm_gets_reader_on_the_hsm_resource_only() -> None:
    # given the HSM module
    assignments = resources_of_type(HSM_MODULE, "Microsoft.Authorization/roleAssignments")
    hsms = resources_of_type(HSM_MODULE, "Microsoft.KeyVault/managedHSMs")
    # then it assigns Reader, unconditionally, scoped to the existing HSM (not its resource group)
    assert [(body(a)[0], role_var(HSM_MODULE, a)) for a in assignments.values()] == [(None, READER)]
    [(name, hsm)] = hsms.items()
    assert hsm["existing"] is True and hsm["config"]["name"] == "hsmName"
    assert body(next(iter(assignments.values())))[1]["scope"] == name
    # and main.bicep runs it once per id of managedHsmIds (empty by default)
    module = module_of(HSM_MODULE)
    assert module["config"]["loop_type"]["detail"]["array_name"] == "managedHsmIds"
    assert tree("main.bicep")["parameters"]["managedHsmIds"]["default"] == []


def test_local_roles_are_commands_auditor_always_policy_administrator_in_apply_mode_only() -> None:
    out = tree("main.bicep")["outputs"]["hsmLocalRoleCommands"]["value"]
    assert out["loop_type"]["detail"]["array_name"] == "hsmNames"
    args = out["config"]["function"]["parameters"]
    always, apply = json.dumps(args["arg_1"]), args["arg_2"]["operator"]["operands"]
    assert "Managed HSM Crypto Auditor" in always and "--scope /" in always and "Administrator" not in always
    assert apply["condition"] == "applyMode" and apply["false_value"] == []
    assert "Managed HSM Policy Administrator" in json.dumps(apply["true_value"])
    assert "--assignee-principal-type ServicePrincipal" in json.dumps(apply["true_value"])
    scope = tree("main.bicep")["parameters"]["hsmApplyScope"]
    assert scope["default"] == "/"
    allowed = next(d for d in scope["decorators"] if d["type"] == "allowed")
    assert sorted(allowed["argument"]) == ["/", "/keys"]
