"""Every ``az`` command a plan prints is accepted by the real Azure CLI (azure-cli from PyPI, tools/install_azcli.sh).

How the check works offline: without a login the CLI parses and validates the arguments first, then stops with
"Please run 'az login' to setup account." (exit 1). An argument error stops it earlier with exit 2
("unrecognized arguments", "the following arguments are required", "is not a valid value"). So exit 1 with the
login message means the command line is one the CLI accepts. Each run gets a throw-away AZURE_CONFIG_DIR, no
credentials, telemetry off, and a proxy on a closed loopback port; the CLI's once-a-day version check (a HEAD to
its release storage, done before the login check on a fresh config dir) is answered from a seeded
``versionCheck.json`` so nothing is attempted; test_cli_reaches_nothing_but_loopback proves it with strace.

Plans come from the demo (remediate/demo/tenant.json + inputs) and the small test tenant through the real SDK
clients and the bundled emulator, and from the planner directly for every data action and access-policy permission
in the catalogue (vault and object scope, each principal type, tenant known or not).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remediate import catalog
from remediate.backends import EmulatorRun
from remediate.catalog.hsm import key_data_actions
from remediate.decide import decide
from remediate.hsm_model import HsmAccess, ManagedHsm
from remediate.intake import parse_inputs
from remediate.model import (
    AccessPolicyEntry,
    Denial,
    Facts,
    ObjectRef,
    Principal,
    PrincipalInfo,
    Required,
    Vault,
    VaultRef,
)
from remediate.plan import PlanOptions, access_policy_plan, rbac_plan
from remediate.plan_hsm import hsm_plan
from remediate.render.commands import UNSAFE, with_commands
from remediate.render.hsm_commands import with_hsm_commands
from remediate.service import DiagnoseOptions, diagnose

ROOT = Path(__file__).resolve().parents[2]
AZ = Path(os.environ.get("KV_REMEDIATE_AZ") or ROOT / ".tools" / "azcli-venv" / "bin" / "az")
DEMO = resources.files("remediate").joinpath("demo")
SMALL = ROOT / "tests" / "fixtures" / "tenants" / "small.json"
LOGIN_STOP = "Please run 'az login'"
SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv1"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.KeyVault/managedHSMs/hsm-pay"
OID = "11111111-2222-4333-8444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _az_or_skip() -> Path:
    if AZ.exists():
        return AZ
    msg = f"the Azure CLI is not installed at {AZ}: run `bash tools/install_azcli.sh` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def az_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which the CLI has no account, sends no telemetry and reaches nothing."""
    az = _az_or_skip()
    version = subprocess.run([str(az.parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('azure-cli'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    home = tmp_path_factory.mktemp("az-home")
    config = home / ".azure"
    config.mkdir()
    # azure.cli.core.util.get_cached_latest_versions: a cache younger than a day for this version is used as is
    (config / "versionCheck.json").write_text(json.dumps({
        "versions": {"azure-cli": {"local": version}, "core": {"local": version}},
        "update_time": str(datetime.datetime.now())}), encoding="utf-8")
    dead = "http://127.0.0.1:9"      # the discard port: nothing listens, a connect fails at once
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "0", "AZURE_CORE_NO_COLOR": "1",
            "AZURE_CORE_ONLY_SHOW_ERRORS": "1", "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead,
            "https_proxy": dead, "NO_PROXY": "", "no_proxy": ""}


def az_argvs(command: str) -> list[list[str]]:
    """The ``az`` invocations of one printed line: comments dropped, ``&&`` chains split."""
    argvs: list[list[str]] = [[]]
    for token in shlex.split(command, comments=True):
        if token == "&&":
            argvs.append([])
        else:
            argvs[-1].append(token)
    return [a for a in argvs if a]


def run_az(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "az", argv
    return subprocess.run([str(AZ), *argv[1:]], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def _plans(findings: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for f in findings:
        plan = f.get("plan")
        if plan:
            yield plan
            yield from plan.get("alternatives") or ()


def _runbook(principal: str, vault: str, operation: str, obj: str | None) -> tuple[str, bytes]:
    return ("runbook", json.dumps({"principal_id": principal, "vault": vault, "operation": operation,
                                   "object": obj}).encode())


def _diagnose(tenant: Path | dict[str, Any], inputs: list[tuple[str, bytes]], object_scope: bool
              ) -> list[dict[str, Any]]:
    async def go() -> Any:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                opts = DiagnoseOptions(plan=PlanOptions(object_scope=object_scope))
                return await diagnose(parse_inputs(inputs).denials, facts, opts)
    return [f.to_dict() for f in asyncio.run(go()).findings]


def tenant_commands() -> dict[str, str]:
    """Printed command -> where it came from, for the demo and the small tenant, vault and object scope."""
    out: dict[str, str] = {}
    demo_inputs = sorted((f.name, f.read_bytes()) for f in DEMO.joinpath("inputs").iterdir())
    small = json.loads(SMALL.read_text())
    ops = ("SecretGet", "SecretSet", "KeySign", "KeyDecrypt", "CertificateGet", "SecretList")
    kinds = {o.name: o.object_kind for o in catalog.operations()}
    small_inputs = [_runbook(p["id"], v["name"], op, None if op.endswith("List") else f"{kinds[op]}/item-1")
                    for p in small["principals"] for v in small["vaults"] for op in ops]
    for name, tenant, inputs in (("demo", json.loads(DEMO.joinpath("tenant.json").read_text()), demo_inputs),
                                 ("small", small, small_inputs)):
        for object_scope in (False, True):
            for plan in _plans(_diagnose(tenant, inputs, object_scope)):
                out.setdefault(plan["commands"]["az"], f"{name} tenant ({plan['kind']})")
    return out


def planner_commands() -> dict[str, str]:
    """Every data action (RBAC, vault and object scope, each principal type) and every access-policy permission
    per kind (with and without an existing entry, tenant known or not)."""
    out: dict[str, str] = {}
    for op in catalog.operations():
        for action in op.data_actions:
            obj = ObjectRef(op.object_kind, "item-1") if op.object_kind in ("keys", "secrets", "certificates") else None
            for ptype in ("ServicePrincipal", "User", None):
                denial = Denial(source="test", status=403, principal=Principal(object_id=OID), data_action=action,
                                vault=VaultRef("kv1", VAULT_ID), object=obj)
                facts = Facts(vault=Vault(id=VAULT_ID, name="kv1", tenant_id=TENANT, rbac=True),
                              principal=PrincipalInfo(OID, type=ptype))
                for object_scope in (False, True):
                    data = rbac_plan(denial, facts, Required((action,), {}), PlanOptions(object_scope=object_scope))
                    assert data is not None and facts.vault is not None
                    plan = with_commands(data, facts.vault)
                    out.setdefault(plan.commands["az"], f"planner {action} ({ptype})")
                    for alt in plan.alternatives:
                        out.setdefault(alt.commands["az"], f"planner custom role {action}")
    out.update(hsm_planner_commands())
    every: dict[str, set[str]] = {}
    for op in catalog.operations():
        for kind, perms in op.access_policy.items():
            every.setdefault(kind, set()).update(perms)
    for kind, perms in every.items():
        held = AccessPolicyEntry(TENANT, OID, None, {kind: ("get", "list")})
        for tenant in (TENANT, None):
            for entries in ((), (held,)):
                vault = Vault(id=VAULT_ID, name="kv1", tenant_id=tenant, rbac=False, access_policies=entries)
                denial = Denial(source="test", status=403, principal=Principal(object_id=OID),
                                vault=VaultRef("kv1", VAULT_ID))
                data = access_policy_plan(denial, Facts(vault=vault, principal=PrincipalInfo(OID)),
                                          {kind: tuple(sorted(perms))})
                assert data is not None
                plan = with_commands(data, vault)
                out.setdefault(plan.commands["az"], f"planner access policy {kind} (tenant {tenant})")
    return out


def hsm_planner_commands() -> dict[str, str]:
    """Every managedHsm key data action's Managed HSM plan (a built-in or a custom local role and its built-in
    alternative), at a key and at /keys, for each principal type Graph may give."""
    out: dict[str, str] = {}
    hsm = ManagedHsm(id=HSM_ID, name="hsm-pay", hsm_uri="https://hsm-pay.managedhsm.azure.net/",
                     activation_status="Active")
    for d in key_data_actions():
        for scope in ("/keys/item-1", "/keys"):
            for ptype in ("ServicePrincipal", "User", None):
                denial = Denial(source="test", status=403, principal=Principal(object_id=OID), data_action=d.name,
                                vault=VaultRef("hsm-pay", HSM_ID, kind="managed_hsm", scope=scope))
                facts = Facts(vault=None, principal=PrincipalInfo(OID, type=ptype), hsm=hsm,
                              hsm_access=HsmAccess("hsm-pay", (), (), ()))
                data = hsm_plan(denial, decide(denial, facts), facts)
                assert data is not None
                plan = with_hsm_commands(data)
                out.setdefault(plan.commands["az"], f"planner hsm {d.name} ({ptype})")
                for alt in plan.alternatives:
                    out.setdefault(alt.commands["az"], f"planner hsm built-in alternative {d.name}")
    return out


BATCH = ROOT / "tests" / "support" / "az_parse_batch.py"


def run_batch(argvs: list[list[str]], env: dict[str, str], chunks: int = 2) -> list[dict[str, Any]]:
    """``argvs`` through tests/support/az_parse_batch.py: a few warm CLI processes instead of one process per line."""
    size = max(1, -(-len(argvs) // chunks))
    parts = [argvs[i:i + size] for i in range(0, len(argvs), size)]

    def one(part: list[list[str]]) -> list[dict[str, Any]]:
        done = subprocess.run([str(AZ.parent / "python"), str(BATCH)], input=json.dumps(part), env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return list(json.loads(done.stdout))

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        return [r for rs in pool.map(one, parts) for r in rs]


def accepted(result: dict[str, Any]) -> bool:
    """The CLI parsed the line and stopped only because nobody is logged in."""
    return result["code"] == 1 and LOGIN_STOP in (result["exception"] or "")


def test_parse_check_tells_an_argument_error_from_the_login_stop(az_env: dict[str, str]) -> None:
    # given the CLI without an account
    valid = ["az", "keyvault", "set-policy", "--name", "kv1", "--object-id", OID, "--secret-permissions", "get"]
    unknown = [*valid, "--bogus-flag", "x"]
    missing = ["az", "role", "assignment", "create", "--role", "Reader"]
    bad_value = ["az", "keyvault", "set-policy", "--name", "kv1", "--object-id", OID, "--secret-permissions", "bogus"]
    # when each is run
    ok, unk, miss, bad = (run_az(a, az_env) for a in (valid, unknown, missing, bad_value))
    # then a valid line reaches the login stop, and each argument error stops before it with exit 2
    assert ok.returncode == 1 and LOGIN_STOP in ok.stderr, ok.stderr
    assert unk.returncode == 2 and "unrecognized arguments" in unk.stderr and LOGIN_STOP not in unk.stderr
    assert miss.returncode == 2 and "the following arguments are required" in miss.stderr
    assert bad.returncode == 2 and "is not a valid value" in bad.stderr


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_cli_reaches_nothing_but_loopback(az_env: dict[str, str], tmp_path: Path) -> None:
    # given a printed command and the CLI under strace
    _az_or_skip()
    trace = tmp_path / "trace"
    argv = ["az", "rest", "--method", "put", "--url", VAULT_ID + "/accessPolicies/add?api-version=2026-02-01",
            "--body", "{}"]
    # when it runs
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), str(AZ), *argv[1:]],
                          env=az_env, capture_output=True, text=True, timeout=120, check=False)
    # then it stopped at the login check and opened no connection except on loopback (not even DNS)
    assert done.returncode == 1 and LOGIN_STOP in done.stderr, done.stderr
    inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert all("127.0.0.1" in line or "::1" in line for line in inet), inet


def test_every_printed_command_parses(az_env: dict[str, str]) -> None:
    # given every az command the demo, the small tenant and the planner print
    commands = {**planner_commands(), **tenant_commands()}
    assert not [c for c in commands if c == UNSAFE]
    kinds = {src.split(" (")[0] for src in commands.values()}
    assert {"demo tenant", "small tenant"} <= kinds
    assert any("az rest" in c and "accessPolicies/add" in c for c in commands)
    assert any("az keyvault set-policy" in c for c in commands)
    assert any("roleDefinitions/" in c and "az role assignment create" in c for c in commands)
    # and the Managed HSM's local RBAC commands, from the demo's HSM findings and the planner
    assert any(src.startswith("demo tenant (hsm_role_assignment") for src in commands.values())
    assert any("az keyvault role definition update --hsm-name" in c for c in commands)
    assert any("az keyvault role assignment create --hsm-name" in c and "--assignee-principal-type" in c
               for c in commands)
    lines = [(c, argv) for c in sorted(commands) for argv in az_argvs(c)]
    # and argument errors among them (first, middle, last), which must still be caught late in a warm process
    bad = ["az", "role", "assignment", "create", "--role", "Reader", "--scope", VAULT_ID, "--no-such-flag"]
    argvs = [bad, *[a for _, a in lines[:len(lines) // 2]], bad, *[a for _, a in lines[len(lines) // 2:]], bad]
    # when each goes through the real CLI
    results = run_batch(argvs, az_env)
    # then the planted errors stop at the parser and every printed line at the login check
    assert len(results) == len(argvs)
    planted = [results[0], results[len(lines) // 2 + 1], results[-1]]
    assert all(r["code"] == 2 and not accepted(r) for r in planted), planted
    printed = [r for r in results if r not in planted]
    where = {tuple(a): commands[c] for c, a in lines}
    problems = [f"{where[tuple(r['argv'])]}: exit {r['code']}: {shlex.join(r['argv'])[:300]}\n    "
                f"{r['exception'] or ' | '.join(r['messages'])[:400]}" for r in printed if not accepted(r)]
    assert not problems, f"{len(problems)} of {len(lines)} command lines rejected:\n" + "\n".join(problems)
