"""The CLI as a person at a 120-column terminal meets it (issue 14): output that fits and says what it did, exit codes
that say what happened, help that explains, names that stay the same, and batches that can keep going.

In-process through ``remediate.cli.main`` against the bundled demo tenant in the emulator (the real SDK clients);
``--output text`` where a terminal is meant, and captured stdout (not a terminal) where "JSON when piped" is meant.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remediate import catalog
from remediate.cli import build_parser, main
from remediate.cli.batch import progress_line
from remediate.render.findings import command_lines
from remediate.render.table import wrap_cell

DEMO = resources.files("remediate").joinpath("demo")
TENANT: dict[str, Any] = json.loads(DEMO.joinpath("tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
PRINCIPALS = {p["display_name"]: p["id"] for p in TENANT["principals"]}
ORDERS = PRINCIPALS["app-orders (managed identity)"]
ALICE = PRINCIPALS["Alice Doe"]
INPUTS = sorted(str(DEMO.joinpath("inputs", n)) for n in (
    "01_audit_events.json", "02_python_sdk_error.txt", "03_firewall_body.json", "04_throttled_body.json",
    "05_dotnet_key_operation.txt", "06_go_auth_failed.txt", "07_disabled_secret_body.json",
    "08_vault_elsewhere_body.json", "09_metric_alert.json", "10_log_alert_v2.json"))


def tenant_file(tmp_path: Path) -> str:
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(TENANT))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_shell_word(text: str) -> bool:
    """Whether ``text`` is a single word to a shell (an id, a URL, a quoted JSON body): what may not be broken."""
    try:
        return len(shlex.split(text)) == 1
    except ValueError:
        return False


def assert_fits(text: str, width: int = 120) -> None:
    """Every line fits ``width``, except a line holding one unbreakable word (an ARM id, URL or JSON body that
    is longer than a line by itself: never split, never cut)."""
    assert "…" not in text, "nothing is cut with an ellipsis"
    for line in text.splitlines():
        if len(line) <= width:
            continue
        rest = line.strip().lstrip("│├└─ ").removesuffix(" \\").rstrip(":")
        for prefix in ("--", "&& "):
            if rest.startswith(prefix) and " " in rest:
                rest = rest.split(" ", 1)[1] if prefix == "--" else rest
        assert one_shell_word(rest), f"{len(line)} columns and breakable: {line!r}"


def shell_commands(text: str) -> list[str]:
    """The commands in a text, joined as a shell joins ``\\``-continued lines (comment lines dropped)."""
    joined = text.replace(" \\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("az ")]


# --- output a person reads ---------------------------------------------------------------------------------------

def test_demo_text_fits_120_columns_with_numbered_details_and_every_fix_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    # given the demo, asked for text (a terminal)
    code, text, _ = run(capsys, "demo", "--output", "text")
    code_json, doc_text, _ = run(capsys, "demo", "--output", "json")
    doc = json.loads(doc_text)
    # then it fits, the compact table's lines fit without exception, and each finding has a numbered detail
    assert code == code_json == 0
    assert_fits(text)
    table = text.split("\n\n")[1]
    assert table.startswith("#") and all(len(line) <= 120 for line in table.splitlines())
    n = len(doc["findings"])
    assert all(f"\n{i:>2}  {f['cause']}" in text for i, f in enumerate(doc["findings"], 1)) and n == 20
    # and every fix command is there, as the same shell words as the JSON's (pasted, it is the same command)
    wanted = [shlex.split(f["plan"]["commands"]["az"], comments=True) for f in doc["findings"] if f["plan"]]
    got = [shlex.split(c, comments=True) for c in shell_commands(text)]
    assert got == wanted and wanted


def test_demo_is_json_when_piped_and_with_output_json(capsys: pytest.CaptureFixture[str]) -> None:
    # given stdout that is not a terminal (captured, as in a pipe) and no --output
    code, out, err = run(capsys, "demo")
    # then it is the diagnosis document, like every other command
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "kv-remediate/diagnosis@1" and len(doc["findings"]) == 20
    assert err == ""


def test_names_are_the_same_in_demo_and_diagnose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given app-orders' denial in the demo and the same caller through diagnose
    _, demo, _ = run(capsys, "demo", "--output", "text")
    code, diag, _ = run(capsys, "diagnose", "--snapshot", tenant_file(tmp_path), "--principal", ORDERS, "--vault",
                        "KV-PAYMENTS", "--operation", "SecretGet", "--object", "secrets/db-password", "--output",
                        "text")
    who = f"app-orders (managed identity), service principal {ORDERS}"
    diag = " ".join(diag.split())
    # then both name it by display name, type and id, and the vault as ARM spells it (not the input's KV-PAYMENTS)
    assert code == 0 and who in demo and who in diag
    assert "→ kv-payments/secrets/db-password" in diag and "KV-PAYMENTS" not in diag
    # and the demo's 401 challenge, which names its vault in capitals, shows ARM's spelling too
    row = next(line for line in demo.splitlines() if "AUTH_CHALLENGE" in line)
    assert "kv-payments" in row and "KV-PAYMENTS" not in demo


def test_the_json_explanation_names_the_caller_as_graph_does(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # given app-orders named by object id alone (Graph is asked for its type, and gives its display name too)
    code, out, _ = run(capsys, "diagnose", "--snapshot", tenant_file(tmp_path), "--principal", ORDERS, "--vault",
                       "kv-payments", "--operation", "SecretGet", "--output", "json")
    finding = json.loads(out)["findings"][0]
    # then the explanation sentence names it by display name and type, not as "application <id>"
    assert code == 0 and finding["evidence"]["principal"]["display_name"] == "app-orders (managed identity)"
    assert finding["explanation"].startswith(f"app-orders (managed identity) (service principal {ORDERS}) has no role")


def test_groups_in_the_evidence_tree_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given app-billing, which holds its role through a group
    billing = PRINCIPALS["app-billing"]
    group = next(p for p in TENANT["principals"] if p["display_name"] == "grp-payments-readers")
    code, text, _ = run(capsys, "diagnose", "--snapshot", tenant_file(tmp_path), "--principal", billing, "--vault",
                        "kv-payments", "--operation", "SecretGet", "--object", "secrets/stripe-key", "--output", "text")
    # then the group is shown by name with its id
    flat = " ".join(text.replace("│", " ").split())
    assert code == 0 and f"via group grp-payments-readers ({group['id']})" in flat


def test_progress_goes_to_a_terminals_stderr_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # given a batch of 30 distinct denials (one runbook request each) and stderr that is a terminal
    files = []
    for i in range(30):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps({"principal_id": f"00000000-0000-4000-8000-{i:012d}", "vault": "kv-payments",
                                         "operation": "SecretGet"}))
    tenant = tenant_file(tmp_path)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    # when it is diagnosed as text, then as JSON
    code, _, err_text = run(capsys, "diagnose", *map(str, files), "--snapshot", tenant, "--output", "text")
    code_json, _, err_json = run(capsys, "diagnose", *map(str, files), "--snapshot", tenant, "--output", "json")
    # then the text run showed count, rate and the final count on stderr; the JSON run showed nothing
    assert code == code_json == 0
    assert "diagnosing 30/30 (100%)" in err_text and "/s" in err_text
    assert err_json == ""


def test_progress_line_says_count_rate_and_eta() -> None:
    assert progress_line("diagnosing", 120, 500, 4.0) == "diagnosing 120/500 (24%), 30.0/s, ETA 13s"
    assert progress_line("diagnosing", 500, 500, 10.0) == "diagnosing 500/500 (100%), 50.0/s"


@pytest.mark.parametrize(("value", "width", "lines"), [
    ("MISSING_ROLE_ASSIGNMENT", 14, ["MISSING_ROLE_", "ASSIGNMENT"]),
    ("Key Vault Crypto User", 17, ["Key Vault Crypto", "User"]),
    ("f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879", 10, ["f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879"]),   # an id stays whole
])
def test_cells_wrap_at_word_breaks_and_never_split_an_id(value: str, width: int, lines: list[str]) -> None:
    assert wrap_cell(value, width) == lines


def test_a_long_command_breaks_between_options_and_stays_one_command() -> None:
    cmd = ("az role assignment create --assignee-object-id " + ORDERS + " --assignee-principal-type ServicePrincipal "
           "--role 4633458b-17de-408a-b874-0445c86b69e6 --scope /subscriptions/" + SUB + "/resourceGroups/rg/providers/"
           "Microsoft.KeyVault/vaults/kv-payments  # why: a comment")
    lines = command_lines(cmd, "    ")
    assert lines[0] == "    # why: a comment"
    assert all(line.endswith(" \\") for line in lines[1:-1])
    assert shlex.split("\n".join(lines[1:]).replace(" \\\n", " ")) == shlex.split(cmd, comments=True)


# --- commands that change things -------------------------------------------------------------------------------

def write_policy(tmp_path: Path, **extra: Any) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "grant_ttl": "PT1H", **extra}))
    return str(path)


def test_apply_ends_with_a_counted_summary_exits_4_and_says_the_emulator_changes_are_gone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given the demo inputs, a policy that refuses users and tier 2, and --snapshot without --snapshot-out
    code, text, _ = run(capsys, "remediate", *INPUTS, "--snapshot", tenant_file(tmp_path), "--policy",
                        write_policy(tmp_path), "--apply", "--state", str(tmp_path / "s.db"), "--output", "text")
    # then the text ends with what happened, counted, names the rules, and says the changes are gone
    assert code == 4
    tail = text[text.index("remediate --apply:"):].replace("\n  ", " ")
    assert "applied 2, already granted 2, refused 3 (max_tier: 2, principal_types: 1), failed 0" in tail
    assert "made in the bundled emulator only, and are gone" in tail and "--snapshot-out" in tail
    assert_fits(text)


def test_apply_under_mode_suggest_is_a_refusal_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"principal_id": ORDERS, "vault": "kv-payments", "operation": "SecretGet"}))
    code, out, _ = run(capsys, "remediate", str(request), "--snapshot", tenant_file(tmp_path), "--apply",
                       "--state", str(tmp_path / "s.db"), "--output", "text")
    assert code == 4 and "refused 1 (mode: 1)" in out


def test_a_write_azure_refuses_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given Alice (a user) claiming an app token on an RBAC vault: ARM refuses the assignment (UnmatchedPrincipalType)
    vault = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")
    row = {"ResourceId": vault["id"], "OperationName": "SecretGet", "ResultSignature": "Forbidden",
           "httpStatusCode_d": 403, "identity_claim_oid_g": ALICE, "identity_claim_idtyp_s": "app",
           "Resource": "KV-PAYMENTS", "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent",
           "requestUri_s": "https://kv-payments.vault.azure.net/secrets/db?api-version=7.4"}
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([row]))
    code, out, _ = run(capsys, "remediate", str(rows), "--snapshot", tenant_file(tmp_path), "--policy",
                       write_policy(tmp_path, principal_types=["ServicePrincipal", "User"]), "--apply", "--state",
                       str(tmp_path / "s.db"), "--output", "json")
    # then the finding failed, and the exit code says Azure refused
    assert code == 3 and json.loads(out)["findings"][0]["outcome"] == "failed"


def test_grants_table_fits_and_revoke_says_what_was_removed_in_words(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # given an apply run that granted a role and an access-policy permission (tenant kept with --snapshot-out)
    after, final, state = tmp_path / "after.json", tmp_path / "final.json", str(tmp_path / "s.db")
    run(capsys, "remediate", *INPUTS, "--snapshot", tenant_file(tmp_path), "--policy", write_policy(tmp_path),
        "--apply", "--state", state, "--snapshot-out", str(after), "--output", "json")
    # when the grants are listed as text (names from the snapshot, and without it)
    code, text, _ = run(capsys, "grants", "--state", state, "--snapshot", str(after), "--output", "text")
    code2, bare, _ = run(capsys, "grants", "--state", state, "--output", "text")
    doc = json.loads(run(capsys, "grants", "--state", state, "--output", "json")[1])
    # then the table has the columns, fits 120 columns, and lists each grant id whole for revoke --grant
    assert code == code2 == 0
    for out in (text, bare):
        assert_fits(out)
        table = out.split("\n\n")[0]
        assert all(len(line) <= 120 for line in table.splitlines())
        assert table.splitlines()[0].split() == ["#", "STATE", "EXPIRES", "PRINCIPAL", "ROLE/PERMISSIONS", "SCOPE",
                                                 "CAUSE"]
        assert all(g["id"] in out for g in doc["grants"])
    assert "app-reporting" in text and "in force" in text and "refused by max_tier" in text.replace("\n", " ")
    # when the access-policy grant is revoked
    ap = next(g for g in doc["grants"] if g["outcome"] == "applied" and g["permissions_added"])
    code, said, _ = run(capsys, "revoke", "--grant", ap["id"], "--snapshot", str(after), "--snapshot-out",
                        str(final), "--state", state, "--output", "text")
    # then it names the grant, the vault, the principal and exactly what was removed, in words
    said = said.replace("\n    ", " ")
    assert code == 0 and "{" not in said
    assert (f"grant {ap['id']}: removed secrets get from the access-policy entry of "
            f"app-reporting ({ap['principal_id']}) on vault kv-legacy") in said
    ra = next(g for g in doc["grants"] if g["outcome"] == "applied" and g["assignment_id"])
    code, said, _ = run(capsys, "revoke", "--grant", ra["id"], "--snapshot", str(final), "--state", state,
                        "--output", "text")
    said = said.replace("\n    ", " ")
    assert code == 0 and "deleted the role assignment of Key Vault Secrets User to" in said and ORDERS in said
    assert "bundled emulator only" in said


# --- help and input ----------------------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_opens_with_what_the_tool_does_and_every_option_is_explained() -> None:
    parser = build_parser()
    assert parser.format_help().split("\n\n")[1].startswith("kv-remediate finds out why a request to Azure Key Vault")
    for name, sub in _subparsers(parser).items():
        # every option has help text, and every subcommand has examples
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        assert sub.epilog and sub.epilog.startswith("examples:\n  kv-remediate"), name
    assert "operations" in _subparsers(parser)


def test_operations_lists_names_with_data_action_and_permission(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(capsys, "operations", "--output", "text")
    row = next(line for line in text.splitlines() if line.startswith("KeyDecrypt "))
    assert code == 0 and "keys/decrypt/action" in row and "keys decrypt" in row
    assert all(len(line) <= 120 for line in text.splitlines())
    doc = json.loads(run(capsys, "operations", "--kind", "secrets")[1])
    get = next(o for o in doc["operations"] if o["name"] == "SecretGet")
    assert get["data_actions"] == ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]
    assert get["access_policy"] == {"secrets": ["get"]} and {o["object_kind"] for o in doc["operations"]} == {"secrets"}
    assert len(json.loads(run(capsys, "operations")[1])["operations"]) == len(catalog.operations())


@pytest.mark.parametrize(("wrong", "nearest"), [("decrypt", "KeyDecrypt"), ("secretgett", "SecretGet"),
                                                  ("sign", "KeySign")])
def test_a_wrong_operation_name_suggests_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture[str], wrong: str,
                                                     nearest: str) -> None:
    code, out, err = run(capsys, "diagnose", "--snapshot", tenant_file(tmp_path), "--principal", ORDERS, "--vault",
                         "kv-payments", "--operation", wrong)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert f"did you mean {nearest}" in err and "kv-remediate operations" in err


def test_keep_going_processes_the_usable_inputs_and_lists_the_others(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # given one usable input, one that is not JSON or an error text, and one file that does not exist
    bad = tmp_path / "bad.txt"
    bad.write_text("hello")
    good = str(DEMO.joinpath("inputs", "03_firewall_body.json"))
    missing = str(tmp_path / "missing.json")
    # when the batch is diagnosed without and with --keep-going
    code, out, err = run(capsys, "diagnose", good, str(bad), missing, "--snapshot", tenant_file(tmp_path))
    assert code == 2 and out == "" and missing in err   # all or nothing, as before
    code, out, err = run(capsys, "diagnose", good, str(bad), missing, "--snapshot", tenant_file(tmp_path),
                         "--keep-going", "--output", "json")
    # then the usable input is diagnosed, the unusable ones are named in notes, and the exit code is still 2
    doc = json.loads(out)
    assert code == 2 and [f["cause"] for f in doc["findings"]] == ["NETWORK_BLOCKED"]
    unusable = [n for n in doc["notes"] if "unusable input" in n]
    assert len(unusable) == 2 and str(bad) in unusable[0] and missing in unusable[1]
    # and parse takes it too
    code, out, _ = run(capsys, "parse", good, str(bad), "--keep-going", "--output", "json")
    assert code == 2 and len(json.loads(out)["denials"]) == 1


def test_a_second_snapshot_apply_says_the_grants_were_made_again_and_records_them_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given remediate --apply against a snapshot, without --snapshot-out (the changes are gone after the run)
    state, tenant, policy = str(tmp_path / "s.db"), tenant_file(tmp_path), write_policy(tmp_path)
    argv = ("remediate", *INPUTS, "--snapshot", tenant, "--policy", policy, "--apply", "--state", state)
    run(capsys, *argv, "--output", "json")
    first = json.loads(run(capsys, "grants", "--state", state, "--output", "json")[1])["grants"]
    # when the same run is made again against the original snapshot
    _, text, _ = run(capsys, *argv, "--output", "text")
    again = json.loads(run(capsys, "grants", "--state", state, "--output", "json")[1])["grants"]
    # then the text says the writes were made again and counted on their earlier grants
    flat = " ".join(text.split())
    applied = [g for g in first if g["outcome"] == "applied"]
    assert applied and f"{len(applied)} of the applied were the same write as an earlier grant, made again" in flat
    assert all(g["id"] in flat for g in applied)
    # and the store has no second record of any applied write, each now counted twice
    assert sorted(g["id"] for g in again if g["outcome"] == "applied") == sorted(g["id"] for g in applied)
    assert all(g["repeats"] == 1 and g["backend"] == "emulator" for g in again if g["outcome"] == "applied")
    # and `grants` says under each such grant that its write was made twice, in the emulator
    listed = " ".join(run(capsys, "grants", "--state", state, "--output", "text")[1].split())
    assert listed.count("the same write made 2 times, first ") == len(applied)
    assert listed.count(", in the bundled emulator (--snapshot)") == len(applied)
