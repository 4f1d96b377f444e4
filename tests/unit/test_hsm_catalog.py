"""The Managed HSM package data and typed values (pure): the nine built-in local roles, the key data actions, the
least-privilege built-in for each key data action (table-driven from the role data, the input the plan will use),
scope normalisation and the deterministic assignment name."""

from __future__ import annotations

import pytest

from remediate.catalog import hsm as catalog
from remediate.hsm_model import assignment_name, key_scope, normalise_scope, scopes_for

P = "Microsoft.KeyVault/managedHsm/"
NARROW = {"keys/wrap/action": "Managed HSM Crypto Service Encryption User",
          "keys/unwrap/action": "Managed HSM Crypto Service Encryption User",
          "keys/read/action": "Managed HSM Crypto Service Encryption User",   # 3 actions; the Auditor has 4
          "keys/release/action": "Managed HSM Crypto Service Release User",
          "keys/backup/action": "Managed HSM Backup",
          "keys/restore/action": "Managed HSM Restore",
          "keys/deletedKeys/read/action": "Managed HSM Crypto Officer",
          "keys/deletedKeys/recover/action": "Managed HSM Crypto Officer",
          "keys/deletedKeys/delete": "Managed HSM Crypto Auditor"}   # the doc anomaly, kept as the doc says


def smallest_builtin(action: str) -> str | None:
    granting = [r for r in catalog.builtin_roles() if r.grants(action)]
    return min(granting, key=lambda r: (len(r.data_actions), r.role_name)).role_name if granting else None


def test_nine_builtin_roles_with_unique_ids_and_hsm_actions_only() -> None:
    roles = catalog.builtin_roles()
    assert len(roles) == 9
    assert len({r.name for r in roles}) == 9
    assert all(r.builtin and r.id == catalog.BUILTIN_ID_PREFIX + r.name for r in roles)
    assert all(a.startswith(P) for r in roles for a in r.data_actions)
    assert catalog.builtin_role("21dbd100-6940-42c2-9190-5d6cb909625c") == \
        catalog.builtin_role_by_name("managed hsm crypto service release user")


def test_the_doc_anomalies_are_recorded_where_they_are() -> None:
    auditor = catalog.builtin_role_by_name("Managed HSM Crypto Auditor")
    assert auditor is not None and auditor.grants(P + "keys/deletedKeys/delete") and auditor.anomalies


@pytest.mark.parametrize("action", [d.name for d in catalog.key_data_actions()])
def test_each_key_data_action_has_its_least_privilege_builtin(action: str) -> None:
    short = action[len(P):]
    expected = NARROW.get(short)
    if short == "keys/export/action":          # in rbac.json's enum, granted by no built-in per the doc's matrix
        expected = None
    elif expected is None:                     # encrypt/decrypt/sign/verify/create/...: only Crypto User grants it
        expected = "Managed HSM Crypto User"
    assert smallest_builtin(action) == expected


@pytest.mark.parametrize(("raw", "scope"), [("/", "/"), ("", "/"), ("//", "/"), ("keys", "/keys"), ("/Keys/", "/keys"),
                                            ("//keys/cmk", "/keys/cmk")])
def test_scopes_normalise(raw: str, scope: str) -> None:
    assert normalise_scope(raw) == scope


@pytest.mark.parametrize("raw", ["/secrets", "/keys/a/b", "/keys/a b", "/keys/../x", "/keys/" + "k" * 128, "/x/keys"])
def test_other_scopes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_scope(raw)


def test_scopes_for_a_key_and_the_assignment_name_is_deterministic() -> None:
    assert scopes_for(None) == ("/", "/keys")
    assert scopes_for("cmk") == ("/", "/keys", key_scope("cmk"))
    rid = catalog.BUILTIN_ID_PREFIX + "33413926-3206-4cdd-b39a-83574fe37a17"
    name = assignment_name("AB", "/keys/cmk", rid)
    assert name == assignment_name("ab", "keys/cmk", "33413926-3206-4CDD-b39a-83574fe37a17")
    assert name != assignment_name("ab", "/keys", rid)


def test_canonical_key_action_and_tier() -> None:
    assert catalog.canonical_key_action("KEYS/WRAP/ACTION") == P + "keys/wrap/action"
    assert catalog.canonical_key_action("secrets/get") is None
    assert (catalog.tier(P + "keys/read/action"), catalog.tier("keys/sign/action"), catalog.tier("keys/delete")) == \
        (0, 1, 3)
