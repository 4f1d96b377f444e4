"""Applying plans through the real SDK against the emulator: idempotent, exact, verified, audited, revocable."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remediate.apply import revoke, revoke_expired
from remediate.backends import EmulatorRun
from remediate.cli import main
from remediate.facts.writes import ArmWriter
from remediate.intake import parse_inputs
from remediate.outcome import Revocation
from remediate.store.grants import EMULATOR, GrantStore, SqliteGrantStore
from tests.support.demo_apply import APPLY, LEGACY, NOW, PAY, SUB, TENANT, ctx, denial, entry_of, gid, run


def known(tenant: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The tenant with these ids in its directory as service principals (grants go only to types Graph knows)."""
    tenant["principals"] = [*tenant.get("principals", []),
                            *({"id": p, "type": "ServicePrincipal", "display_name": f"sp-{p[:8]}"} for p in ids)]
    return tenant


def assignments_of(tenant: dict[str, Any], oid: str) -> list[dict[str, Any]]:
    return [a for a in tenant["role_assignments"] if a["properties"]["principalId"].lower() == oid.lower()]


def test_same_alert_applied_ten_times_is_one_assignment(tmp_path: Path) -> None:
    # given the same denial applied ten times in a row, each run seeing the tenant the last one left
    tenant, outcomes = copy.deepcopy(TENANT), []
    c = ctx(tmp_path)
    for _ in range(10):
        findings, _, tenant = run(tenant, [denial(gid("app-orders"), PAY)], c)
        outcomes.append(findings[0])
    # then one assignment exists; the nine reruns adopted our own grant (issue 17: "already granted" is only for
    # access we did not create): the same grant id, no new write, no new record
    assert [f["outcome"] for f in outcomes] == ["applied"] * 10
    assert [bool(f.get("adopted")) for f in outcomes] == [False] + [True] * 9
    assert len({f["grant_id"] for f in outcomes}) == 1
    assert len(assignments_of(tenant, gid("app-orders"))) == 1
    assert [r.outcome for r in c.grants.list()] == ["applied"]


def test_concurrent_same_grant_in_one_batch_is_one_assignment(tmp_path: Path) -> None:
    # given ten distinct denials (different secrets) for one principal that all need the same role
    denials = [denial(gid("app-orders"), PAY, obj=f"s{i}") for i in range(10)]
    findings, _, after = run(copy.deepcopy(TENANT), denials, ctx(tmp_path))
    # then exactly one write took, the rest found it already there
    outs = [f["outcome"] for f in findings]
    assert outs.count("applied") == 1 and outs.count("already_granted") == 9
    assert len(assignments_of(after, gid("app-orders"))) == 1


def test_fifty_principals_on_one_access_policy_vault(tmp_path: Path) -> None:
    # given 50 principals, each denied a different operation on one access-policy vault
    ops = ["SecretGet", "SecretList", "SecretSet", "KeyGet", "KeyList"]
    principals = [gid(f"ap-{i}") for i in range(50)]
    denials = [denial(p, LEGACY, op=ops[i % 5]) for i, p in enumerate(principals)]
    findings, _, after = run(known(copy.deepcopy(TENANT), principals), denials, ctx(tmp_path, dict(APPLY, max_tier=2)))
    # then all 50 entries exist, each with exactly its permission, and the existing entries are untouched
    assert [f["outcome"] for f in findings] == ["applied"] * 50
    expect = {"SecretGet": ("secrets", "get"), "SecretList": ("secrets", "list"), "SecretSet": ("secrets", "set"),
              "KeyGet": ("keys", "get"), "KeyList": ("keys", "list")}
    for i, p in enumerate(principals):
        e = entry_of(after, "kv-legacy", p)
        assert e is not None
        kind, perm = expect[ops[i % 5]]
        assert {k: v for k, v in e["permissions"].items() if v} == {kind: [perm]}
    assert entry_of(after, "kv-legacy", gid("alice")) == entry_of(TENANT, "kv-legacy", gid("alice"))


def test_faults_every_grant_exactly_once(tmp_path: Path) -> None:
    # given 20% injected faults (429 with Retry-After, 5xx, dropped connections) and 200 applies
    tenant = copy.deepcopy(TENANT)
    tenant["emulator"] = {"seed": 11, "faults": {"throttle_rate": 0.08, "retry_after_s": 0.01, "error_rate": 0.07,
                                                 "reset_rate": 0.05}}
    principals = [gid(f"fault-{i}") for i in range(100)]
    known(tenant, principals)
    denials = [denial(p, PAY if i % 2 else LEGACY, obj=f"o{i}") for i, p in enumerate(principals * 2)]
    findings, _, after = run(tenant, denials, ctx(tmp_path))
    outs = [f["outcome"] for f in findings]
    # then every principal got its grant exactly once (no duplicates), and every outcome was recorded
    assert "failed" not in outs, [f.get("error") for f in findings if f["outcome"] == "failed"][:3]
    for i, p in enumerate(principals):
        if i % 2:
            assert len(assignments_of(after, p)) == 1
        else:
            assert entry_of(after, "kv-legacy", p) is not None
    records = SqliteGrantStore(tmp_path / "state.db").list()
    assert [r.outcome for r in records] == ["applied"] * 100
    # and every finding points at the record of the write that served it
    assert {f["grant_id"] for f in findings} == {r.id for r in records}
    assert outs.count("applied") == 100 and outs.count("already_granted") == 100


def test_policy_refusal_changes_nothing_and_names_the_rule(tmp_path: Path) -> None:
    # given max_tier 1 and a denial that needs a tier-3 role (SecretSet -> Secrets Officer)
    findings, _, after = run(copy.deepcopy(TENANT), [denial(gid("app-orders"), PAY, op="SecretSet")], ctx(tmp_path))
    assert findings[0]["applied"] is False and findings[0]["refused_by"] == "max_tier"
    assert after["role_assignments"] == TENANT["role_assignments"]


def test_expired_grants_are_revoked_leaving_others_permissions(tmp_path: Path) -> None:
    # given alice (get, list) is granted set for 8 hours, and later someone else adds delete to her entry
    policy = dict(APPLY, grant_ttl="PT8H", max_tier=2)
    findings, _, tenant = run(copy.deepcopy(TENANT), [denial(gid("alice"), LEGACY, op="SecretSet", kind="user"),
                                                      denial(gid("app-orders"), PAY)], ctx(tmp_path, policy))
    assert [f["outcome"] for f in findings] == ["applied", "applied"]
    entry = entry_of(tenant, "kv-legacy", gid("alice"))
    assert entry is not None
    entry["permissions"]["secrets"].append("delete")

    # when the timer runs nine hours later
    later = NOW + timedelta(hours=9)
    grants = SqliteGrantStore(tmp_path / "state.db")

    async def go() -> Any:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                results = await revoke_expired(ArmWriter(facts), grants, later, actor="timer")
            return results, emu.emulator.tenant()
    results, after = asyncio.run(go())
    # then our two grants are undone, and only ours
    assert all(r.revoked for r in results) and len(results) == 2
    assert assignments_of(after, gid("app-orders")) == []
    e = entry_of(after, "kv-legacy", gid("alice"))
    assert e is not None and sorted(e["permissions"]["secrets"]) == ["delete", "get", "list"]
    assert {r.outcome for r in grants.list()} == {"applied", "revoked"}
    assert grants.expired(later) == []


def test_cli_apply_refused_exits_4_and_snapshot_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tenant_file, out_file, policy_file = tmp_path / "t.json", tmp_path / "after.json", tmp_path / "p.yaml"
    tenant_file.write_text(json.dumps(TENANT))
    policy_file.write_text(f"mode: apply\nscopes: [/subscriptions/{SUB}]\n")
    inputs = [str(f) for f in sorted(Path(str(resources.files("remediate").joinpath("demo", "inputs"))).iterdir())]
    code = main(["remediate", *inputs, "--snapshot", str(tenant_file), "--policy", str(policy_file), "--apply",
                 "--snapshot-out", str(out_file), "--state", str(tmp_path / "s.db"), "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    # then some plans were applied, the user grant and the tier-2 role were refused by name, and exit is 4
    vault = [f for f in doc["findings"] if (f["plan"] or {}).get("kind") != "hsm_role_assignment"]
    refused = {f["refused_by"] for f in vault if f["outcome"] == "refused"}
    assert code == 4 and refused == {"principal_types", "max_tier"}
    # (the demo's two Managed HSM plans are never applied by this policy: HSM plans are approval-only by default)
    hsm = [f for f in doc["findings"] if (f["plan"] or {}).get("kind") == "hsm_role_assignment"]
    assert len(hsm) == 2 and not [f for f in hsm if f["outcome"] == "applied"]
    assert json.loads(out_file.read_text())["role_assignments"] != TENANT["role_assignments"]
    assert main(["grants", "--state", str(tmp_path / "s.db"), "--output", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["grants"]
    assert {g["outcome"] for g in listed} == {"applied", "refused"}


def test_cli_apply_on_azure_tables_records_and_slots_there(tmp_path: Path, azurite: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # given KV_REMEDIATE_STORAGE naming Azurite (the app's tables) and a policy allowing one grant per vault and hour
    from azure.data.tables import TableServiceClient

    monkeypatch.setenv("KV_REMEDIATE_STORAGE", azurite)
    service = TableServiceClient.from_connection_string(azurite)
    for name in ("grants", "claims"):
        service.delete_table(name)
    tenant_file, policy_file = tmp_path / "t.json", tmp_path / "p.yaml"
    tenant_file.write_text(json.dumps(TENANT))
    policy_file.write_text(f"mode: apply\nscopes: [/subscriptions/{SUB}]\nmax_grants_per_hour: 1\n")
    requests = [{"principal_id": gid(name), "vault": "kv-payments", "operation": "SecretGet"}
                for name in ("app-orders", "app-reporting")]
    inputs = []
    for i, body in enumerate(requests):
        inputs.append(str(tmp_path / f"r{i}.json"))
        Path(inputs[-1]).write_text(json.dumps(body))
    # when the CLI applies both (no --state: the tables are the state)
    code = main(["remediate", *inputs, "--snapshot", str(tenant_file), "--policy", str(policy_file), "--apply",
                 "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    # then one grant used the vault's only slot, the other was refused by the rate rule; both are in the tables
    assert code == 4
    assert sorted(f["outcome"] for f in doc["findings"]) == ["applied", "refused"]
    assert {f["refused_by"] for f in doc["findings"]} == {None, "max_grants_per_hour"}
    # (the grant records are partition "grant"; the other partitions are the store's index rows)
    grants = list(service.get_table_client("grants").query_entities("PartitionKey eq 'grant'"))
    assert sorted(g["outcome"] for g in grants) == ["applied", "refused"]
    claims = list(service.get_table_client("claims").list_entities())
    assert len(claims) == 1 and '"rate"' in claims[0]["key"]


def test_suggest_is_the_default_and_apply_under_it_is_refused_by_mode(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    tenant_file = tmp_path / "t.json"
    tenant_file.write_text(json.dumps(TENANT))
    body = json.dumps({"principal_id": gid("app-orders"), "vault": "kv-payments", "operation": "SecretGet"})
    (tmp_path / "r.json").write_text(body)
    code = main(["remediate", str(tmp_path / "r.json"), "--snapshot", str(tenant_file), "--apply",
                 "--state", str(tmp_path / "s.db"), "--output", "json"])
    f = json.loads(capsys.readouterr().out)["findings"][0]
    # then nothing is applied, the plan is refused by `mode`, and (issue 14) --apply that changed nothing exits 4
    assert code == 4 and f["applied"] is False and f["refused_by"] == "mode"


def test_parse_errors_change_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    code = main(["remediate", str(tmp_path / "bad.json"), "--apply", "--state", str(tmp_path / "s.db")])
    assert code == 2 and capsys.readouterr().out == ""
    assert not (tmp_path / "s.db").exists() or SqliteGrantStore(tmp_path / "s.db").list() == []


_ = parse_inputs


def _two_writes() -> list[Any]:
    """A role assignment (app-orders on kv-payments) and an access-policy add (alice on kv-legacy)."""
    return [denial(gid("alice"), LEGACY, op="SecretSet", kind="user"), denial(gid("app-orders"), PAY)]


def test_a_second_run_against_the_original_snapshot_counts_a_repeat_not_a_second_record(
        tmp_path: Path, backend: Callable[[], GrantStore]) -> None:
    # given two writes applied in the emulator (no --snapshot-out: the emulator's tenant is gone after the run)
    policy = dict(APPLY, grant_ttl="PT8H", max_tier=2)
    first = replace(ctx(tmp_path, policy), grants=backend(), backend=EMULATOR)
    found1, _, _ = run(copy.deepcopy(TENANT), _two_writes(), first)
    # when the same denials are applied again an hour later against the original snapshot (a fresh emulator)
    later = replace(first, grants=backend(), now=NOW + timedelta(hours=1))
    found2, _, after = run(copy.deepcopy(TENANT), _two_writes(), later)
    # then both writes were made again in the emulator (it starts from the snapshot) under the same grant ids
    assert [f["outcome"] for f in found1 + found2] == ["applied"] * 4
    assert [f["grant_id"] for f in found2] == [f["grant_id"] for f in found1]
    assert [f.get("repeats") for f in found2] == [1, 1] and all("made again" in f["detail"] for f in found2)
    assert assignments_of(after, gid("app-orders")) and entry_of(after, "kv-legacy", gid("alice")) is not None
    # and the store holds one record per write: repeat counted, first and latest time, expiry from the latest
    records = sorted(backend().list(), key=lambda r: r.id)
    assert len(records) == 2 and {r.outcome for r in records} == {"applied"}
    assert all(r.repeats == 1 and r.first_time == NOW and r.time == NOW + timedelta(hours=1) for r in records)
    assert all(r.expires_at == NOW + timedelta(hours=9) and r.backend == EMULATOR for r in records)
    # and a third run within the same tenant (kept, as with --snapshot-out) adopts them: no write, no new count
    found3, _, _ = run(after, _two_writes(), replace(later, grants=backend()))
    assert [(f["outcome"], f.get("adopted")) for f in found3] == [("applied", True)] * 2
    assert [r.repeats for r in backend().list()] == [1, 1]


def test_emulator_and_azure_grants_are_never_mixed(tmp_path: Path, backend: Callable[[], GrantStore]) -> None:
    # given a grant recorded as made in Azure (backend None) for app-orders' role on kv-payments, due to expire
    policy = dict(APPLY, grant_ttl="PT1H")
    live = replace(ctx(tmp_path, policy), grants=backend())
    found_live, _, _ = run(copy.deepcopy(TENANT), [denial(gid("app-orders"), PAY)], live)
    # when a --snapshot run applies the same write in the emulator
    emu = replace(live, grants=backend(), backend=EMULATOR)
    found_emu, _, _ = run(copy.deepcopy(TENANT), [denial(gid("app-orders"), PAY)], emu)
    # then it is its own record (not a repeat, not an adoption of the Azure grant)
    assert found_emu[0]["outcome"] == "applied" and found_emu[0]["grant_id"] != found_live[0]["grant_id"]
    assert not found_emu[0].get("adopted") and not found_emu[0].get("repeats")
    by_id = {r.id: r for r in backend().list()}
    assert by_id[found_live[0]["grant_id"]].backend is None and by_id[found_emu[0]["grant_id"]].in_emulator

    # when the emulator's expired grants are revoked two hours later
    async def expire(backend_name: str | None) -> list[Revocation]:
        with EmulatorRun(copy.deepcopy(TENANT)) as run_:
            async with run_.facts() as facts:
                return await revoke_expired(ArmWriter(facts), backend(), NOW + timedelta(hours=2),
                                            backend=backend_name)
    results = asyncio.run(expire(EMULATOR))
    # then only the emulator's grant is touched; the Azure record stays applied and unrevoked
    assert [r.grant_id for r in results] == [found_emu[0]["grant_id"]]
    assert backend().get(found_live[0]["grant_id"]).revoked_at is None  # type: ignore[union-attr]
    # and revoking the Azure grant from a --snapshot run is refused with what to run instead
    rec = backend().get(found_live[0]["grant_id"])
    assert rec is not None

    async def cross() -> Revocation:
        with EmulatorRun(copy.deepcopy(TENANT)) as run_:
            async with run_.facts() as facts:
                return await revoke(rec, ArmWriter(facts), backend(), NOW, backend=EMULATOR)
    said = asyncio.run(cross())
    assert said.revoked is False and "made in Azure" in (said.reason or "")


def test_emulator_grants_never_use_azures_rate_budget(tmp_path: Path, backend: Callable[[], GrantStore]) -> None:
    # given one grant per vault and hour, used by a grant recorded as made in Azure on kv-payments
    policy = dict(APPLY, max_grants_per_hour=1)
    live = replace(ctx(tmp_path, policy), grants=backend())
    [made] = run(copy.deepcopy(TENANT), [denial(gid("app-orders"), PAY)], live)[0]
    # when a --snapshot run grants another principal on the same vault (and, then, Azure a third)
    [emu] = run(copy.deepcopy(TENANT), [denial(gid("app-reporting"), PAY)],
                replace(live, grants=backend(), backend=EMULATOR))[0]
    [again] = run(known(copy.deepcopy(TENANT), [gid("app-new")]), [denial(gid("app-new"), PAY)],
                  replace(live, grants=backend()))[0]
    # then the emulator had its own budget (slots and count), and Azure's stays spent by Azure's grant alone
    assert made["outcome"] == "applied" and emu["outcome"] == "applied"
    assert again["outcome"] == "refused" and again["refused_by"] == "max_grants_per_hour"
