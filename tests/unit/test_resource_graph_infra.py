"""infra/: Reader at named management groups, the alternative to listing subscriptions (issue 16)."""

from __future__ import annotations

from tests.unit.test_infra import READER, body, resources_of_type, role_var, target_scope, tree

MG_MODULE = "modules/target-managementgroup-reader.bicep"
HOP_MODULE = "modules/tenant-managementgroup-readers.bicep"


def test_the_management_group_module_assigns_reader_and_nothing_else() -> None:
    assert target_scope(MG_MODULE) == "managementGroup"
    assignments = resources_of_type(MG_MODULE, "Microsoft.Authorization/roleAssignments")
    assert [(body(a)[0], role_var(MG_MODULE, a)) for a in assignments.values()] == [(None, READER)]
    cfg = body(next(iter(assignments.values())))[1]
    assert cfg["properties"]["principalType"] == "ServicePrincipal"
    assert cfg["properties"]["principalId"] == "principalId"
    assert set(tree(MG_MODULE)["parameters"]) == {"principalId"}
    assert set(tree(MG_MODULE).get("resources", {})) == set(assignments)


def test_main_reaches_each_named_management_group_through_the_tenant_hop_only_when_named() -> None:
    # given main.bicep (a resource-group deployment) and the tenant-scope hop
    main = tree("main.bicep")
    assert main["parameters"]["readerManagementGroupNames"]["default"] == []
    hop = next(m for m in main["modules"].values() if m["detail"]["path"] == HOP_MODULE)
    condition, cfg = body(hop)
    # then the hop is deployed only when management groups are named, at the tenant, with only the names and the
    # function's principal
    assert condition is not None
    assert cfg["scope"]["function"]["type"] == "tenant"
    assert set(cfg["params"]) == {"managementGroupNames", "principalId"}
    assert cfg["params"]["managementGroupNames"] == "readerManagementGroupNames"
    # and the hop deploys the reader module once per name, at that management group, and nothing else
    assert target_scope(HOP_MODULE) == "tenant"
    assert not tree(HOP_MODULE).get("resources")
    (inner,) = tree(HOP_MODULE)["modules"].values()
    assert inner["detail"]["path"] == "target-managementgroup-reader.bicep"
    assert inner["config"]["loop_type"]["detail"]["array_name"] == "managementGroupNames"
    assert inner["config"]["config"]["scope"]["function"]["type"] == "management_group"
    assert set(inner["config"]["config"]["params"]) == {"principalId"}


def test_with_management_groups_the_app_searches_every_readable_subscription() -> None:
    settings = {s["name"]: s["value"] for s in tree("main.bicep")["variables"]["remediateAppSettings"]["value"]}
    operands = settings["AZURE_SUBSCRIPTION_IDS"]["operator"]["operands"]
    assert operands["false_value"] == ""
    assert operands["true_value"]["function"]["type"] == "join"
