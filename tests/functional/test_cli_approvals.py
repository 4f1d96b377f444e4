"""The approval commands as an operator uses them, in-process through ``remediate.cli.main`` against the demo tenant
in the emulator (``--snapshot``, kept across runs with ``--snapshot-out``) and the SQLite state file:
``remediate --apply`` under mode approve opens a request, ``approvals`` lists it, ``approve``/``reject`` decide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from remediate.cli import main
from tests.functional.test_cli_operator import ORDERS, SUB, TENANT, assert_fits

OPERATOR = "0d0d0d0d-1111-4111-8111-0d0d0d0d0d0d"
OTHER = "0e0e0e0e-2222-4222-8222-0e0e0e0e0e0e"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    tenant = tmp_path / "tenant.json"
    tenant.write_text(json.dumps(TENANT))
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"mode: approve\nscopes: [/subscriptions/{SUB}]\nmax_tier: 3\n")
    return {"tenant": str(tenant), "policy": str(policy), "state": str(tmp_path / "state.db")}


def propose(capsys: pytest.CaptureFixture[str], w: dict[str, str]) -> dict[str, Any]:
    code, out = run(capsys, "remediate", "--principal", ORDERS, "--vault", "kv-payments", "--operation", "SecretGet",
                    "--object", "secrets/db-password", "--snapshot", w["tenant"], "--snapshot-out", w["tenant"],
                    "--policy", w["policy"], "--state", w["state"], "--apply", "--output", "json")
    assert code == 0, out
    [finding] = json.loads(out)["findings"]
    return dict(finding)


def assignments(w: dict[str, str]) -> list[dict[str, Any]]:
    tenant = json.loads(Path(w["tenant"]).read_text())
    return [a for a in tenant["role_assignments"] if a["properties"]["principalId"].lower() == ORDERS]


def test_apply_opens_a_request_listed_then_approved(capsys: pytest.CaptureFixture[str], world: dict[str, str]) -> None:
    # given remediate --apply under mode approve
    f = propose(capsys, world)
    assert (f["outcome"], f["refused_by"]) == ("pending_approval", "approval") and assignments(world) == []
    # when the operator lists what waits
    code, out = run(capsys, "approvals", "--state", world["state"], "--output", "json")
    assert code == 0 and [a["id"] for a in json.loads(out)["approvals"]] == [f["approval_id"]]
    code, text = run(capsys, "approvals", "--state", world["state"], "--output", "text")
    assert f["approval_id"] in text and "1 request(s)" in text and "Key Vault Secrets User" in text
    assert_fits(text)
    # when they approve it as themselves (the emulator's credential names nobody: --as)
    code, out = run(capsys, "approve", f["approval_id"], "--as", OPERATOR, "--snapshot", world["tenant"],
                    "--snapshot-out", world["tenant"], "--policy", world["policy"], "--state", world["state"],
                    "--output", "json")
    doc = json.loads(out)
    # then it is applied once and recorded with who, how and from where
    assert code == 0 and doc["status"] == "applied" and len(assignments(world)) == 1
    entry = doc["request"]["decisions"][0]
    assert (entry["approver"]["object_id"], entry["channel"], bool(entry["origin"])) == (OPERATOR, "cli", True)
    # and approving again changes nothing (exit 4: refused)
    code, out = run(capsys, "approve", f["approval_id"], "--as", OTHER, "--snapshot", world["tenant"],
                    "--policy", world["policy"], "--state", world["state"], "--output", "text")
    assert code == 4 and "already applied" in out and len(assignments(world)) == 1
    assert_fits(out)
    code, out = run(capsys, "approvals", "--state", world["state"], "--output", "text")
    assert "no approval requests waiting" in out


def test_reject(capsys: pytest.CaptureFixture[str], world: dict[str, str]) -> None:
    f = propose(capsys, world)
    # a request about the emulator is decided by a run on the emulator (--snapshot), never against Azure
    code, out = run(capsys, "reject", f["approval_id"], "--as", OPERATOR, "--state", world["state"],
                    "--policy", world["policy"], "--output", "json")
    assert (code, json.loads(out)["refused"]) == (4, "wrong_backend")
    code, out = run(capsys, "reject", f["approval_id"], "--as", OPERATOR, "--reason", "use a managed identity",
                    "--snapshot", world["tenant"], "--state", world["state"], "--policy", world["policy"],
                    "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "rejected" and "use a managed identity" in doc["request"]["detail"]
    assert assignments(world) == []


@pytest.mark.parametrize(("argv", "code", "words"), [
    (["approve", "00000000-0000-4000-8000-000000000001", "--as", OPERATOR], 2, "no approval request"),
    (["approve", "ID", "--as", "bob"], 2, "--as"),
    (["approve", "ID"], 2, "--as OBJECT_ID"),          # --snapshot: the emulator's credential names nobody
])
def test_bad_calls(capsys: pytest.CaptureFixture[str], world: dict[str, str], argv: list[str], code: int,
                   words: str) -> None:
    got = main([*argv, "--snapshot", world["tenant"], "--state", world["state"], "--policy", world["policy"],
                "--output", "text"])
    out, err = capsys.readouterr()
    assert got == code and words in out + err


def test_the_operator_is_named_by_the_credentials_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the credential in use signs in as a user (its token's claims, as `az account show` names the identity)
    import base64

    from azure.core.credentials import AccessToken

    from remediate import credentials
    from remediate.cli.approvals import operator
    from remediate.errors import InputError

    def jwt(claims: dict[str, Any]) -> str:
        def part(d: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
        return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"

    class Fake:
        claims: ClassVar[dict[str, Any]] = {}

        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            assert scopes == ("https://management.azure.com/.default",)
            return AccessToken(jwt(Fake.claims), 4_102_444_800)

    monkeypatch.setattr(credentials, "default_credential", lambda client_id=None: Fake())
    Fake.claims = {"oid": OPERATOR.upper(), "name": "Olga Operator", "upn": "olga@contoso.example"}
    who = operator(None, None)
    # then the decision is recorded under its object id and name
    assert (who.object_id, who.display_name) == (OPERATOR, "Olga Operator")
    # and a token without an object id names nobody: the operator must say --as
    Fake.claims = {"appid": OTHER}
    with pytest.raises(InputError, match="--as"):
        operator(None, None)
    # and --as wins over the credential
    assert operator(OTHER.upper(), None).object_id == OTHER
