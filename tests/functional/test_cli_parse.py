"""``kv-remediate parse`` end to end: JSON and text output, exit codes, and the bad-input contract.

Given files on disk, when ``kv-remediate parse`` runs (in-process through ``remediate.cli.main`` and once as a
subprocess), then stdout carries the denials document or the table, and bad input exits 2 with one stderr line
naming the input and nothing on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from remediate.cli import main
from tests.support.intake_expect import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
RBAC = FIXTURES / "samples" / "errors" / "kv_403_forbiddenbyrbac_body_aca_blog.json"
DOTNET = FIXTURES / "samples" / "errors" / "sdk_dotnet_requestfailedexception_troubleshooting.txt"
NOT_FOUND = FIXTURES / "samples" / "errors" / "kv_404_secretnotfound_body_aca_blog.json"
VM_ALERT = FIXTURES / "samples" / "alerts" / "legacy_activitylog_alert_administrative_noncommon_md.json"
V2_NO_DIMS = FIXTURES / "variants" / "alert_v2_no_dimensions_vault_scope.json"


def test_parse_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    # given an RBAC error body, the three .NET samples and a 404 body
    code = main(["parse", "--output", "json", str(RBAC), str(DOTNET), str(NOT_FOUND)])
    out, err = capsys.readouterr()
    # then the document has four denials in input order and one skipped record
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["schema"] == "kv-remediate/denials@1"
    assert [d["status"] for d in doc["denials"]] == [403, 401, 403, 403]
    assert doc["skipped"] == 1
    first = doc["denials"][0]
    assert set(first) >= {"source", "status", "error_code", "inner_code", "principal", "vault", "operation",
                          "data_action", "access_policy_permission", "object", "caller_ip", "time",
                          "correlation_id", "message", "cause_hint"}
    assert first["access_policy_permission"] == {"secrets": ["get"]}


def test_parse_text_output_has_table_notes_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["parse", "--output", "text", str(V2_NO_DIMS), str(NOT_FOUND)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "kv-payments-prod" in out and "alert.log_search_v2" in out
    assert "Notes:" in out and "linkToSearchResultsAPI: https://api.loganalytics.io/" in out
    assert out.rstrip().splitlines()[-1] == "1 denial (1 × 403); 1 record skipped (not 401/403/429)"


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty"),
    (b"\xff\xfe\xfa\x00\x01", "unreadable bytes"),
    (b"hello", "not JSON and not a recognised error text"),
    (b"{\"schemaId\": \"azureMonitorCommonAlertSchema\", \"data\": {\"essentials\": {}}}", "alert"),
])
def test_bad_input_exits_2_with_one_stderr_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                content: bytes, problem: str) -> None:
    bad = tmp_path / "input.bin"
    bad.write_bytes(content)
    code = main(["parse", "--output", "json", str(bad)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(bad) in err and problem in err
    assert "Traceback" not in err


def test_non_key_vault_alert_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["parse", str(VM_ALERT)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (f"kv-remediate parse: {VM_ALERT}: is an alert about Microsoft.Compute/virtualMachines, "
                   "not a Key Vault\n")


def test_a_bad_input_in_a_batch_fails_it_before_anything_is_printed(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("nothing to see here\n")
    code = main(["parse", "--output", "text", str(RBAC), str(bad), str(DOTNET)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("kv-remediate parse: ") and str(bad) in err and err.count("\n") == 1


def test_oversized_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    assert main(["parse", str(big)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "larger than 4 MiB" in err


def test_parse_as_a_subprocess_reading_stdin() -> None:
    # given the CLI run as users run it, with the body on standard input
    proc = subprocess.run([sys.executable, "-m", "remediate", "parse", "--output", "json", "-"],
                          input=RBAC.read_bytes(), capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["denials"][0]["inner_code"] == "ForbiddenByRbac"
    bad = subprocess.run([sys.executable, "-m", "remediate", "parse", "-"], input=b"\x00\x01",
                         capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stdout == b""
    assert bad.stderr.decode().count("\n") == 1 and b"<stdin>" in bad.stderr
