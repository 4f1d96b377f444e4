"""Attack tests for intake (issue 15): canonical objects and vault ids, no control characters, caps.

Given crafted inputs in every place an object, a vault id or a principal is read from (a Key Vault error text's
``Resource:``, an audit row's ``requestUri_s`` / ``id_s`` / ``_ResourceId``, an alert's dimensions, a runbook
request), when intake parses them (``parse_one``, ``parse_inputs`` and ``kv-remediate parse``), then an object is
None or keys/secrets/certificates/storage with a name valid by Key Vault's rule (never a partly kept name), a
vault id is None or valid segment by segment, an id or name with a control character is None, and an input over a
cap raises ``TooLargeError`` naming the input before anything is returned (the CLI exits 2 with one stderr line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from remediate import armid
from remediate.cli import main
from remediate.errors import InputError, TooLargeError
from remediate.intake import (
    DEFAULT_MAX_DENIALS,
    DEFAULT_MAX_PRINCIPALS,
    MAX_DENIALS_SETTING,
    MAX_PRINCIPALS_SETTING,
    parse_inputs,
    parse_one,
)
from remediate.intake.values import object_from_path, vault_from_resource_id
from remediate.model import Denial

SUB = "3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11"
OID = "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e"
APPID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments"
VERSION = "0123456789abcdef0123456789abcdef"

# Object names that are not Key Vault names once percent-decoded (or not at all): never kept, not even in part.
BAD_NAMES = [
    "x%2F..%2F..%2F..", "x%2f..%2f..", "x%252F..%252F..", "x%25252F..", "x%5C..%5C..", "x\\..\\..",
    "%2E%2E", "%2e", "x%00", "x%0Aforged", "x%0D%0AApproved", "x%E2%80%AEtxt", "x%C0%AE%C0%AE", "x%FF",
    "x%20y", "x.y", "x..y", "x_y", "ｘ", "x\u2215..", "sec\u0440et", "x%7Ey", "a" * 128,
]
# Kind segments: the canonical kind, or no object at all.
KIND_TRICKS = [
    ("SECRETS/db", ("secrets", "db")), ("Secrets/db", ("secrets", "db")), ("deletedsecrets/db", ("secrets", "db")),
    ("DeletedKeys/k1", ("keys", "k1")), ("%73ecrets/db", ("secrets", "db")), ("secrets%2F..%2Fkeys/db", None),
    ("secrets%2F../db", None), ("secrets%252F..%252Fkeys/db", None), ("\u212aeys/k1", None), ("ſecrets/db", None),
    ("secrets\\keys/db", None), ("vaults/db", None), ("secrets%00/db", None),
]
# Plain or encoded dot segments anywhere: the request lands elsewhere, so it names no object.
TRAVERSALS = ["secrets/x/../../..", "secrets/x/..", "secrets/../keys/k1", "secrets/./x", "secrets/x/%2E%2E/y",
              "secrets/x/%2e%2e%2f%2e%2e", "secrets/%2e%2e/keys/k1"]


def _no_object(bad: str) -> bool:
    """Names after which no object is named at all: a backslash (WHATWG URL parsers read it as '/'), a name that
    decodes to a dot segment, or bytes that are not UTF-8 once decoded."""
    return "\\" in bad or bad.lower() in ("%2e%2e", "%2e")


def _assert_canonical(d: Denial) -> None:
    """The invariant every denial keeps, whatever it was given."""
    obj = d.object
    if obj is not None:
        assert obj.kind in ("keys", "secrets", "certificates", "storage")
        assert obj.name is None or armid.is_object_name(obj.name)
        assert obj.version is None or armid.is_version(obj.version)
        assert obj.name is not None or obj.version is None
    if d.vault.resource_id is not None:
        assert armid.parse_vault_id(d.vault.resource_id) is not None
    if d.vault.name is not None:
        assert armid.is_vault_name(d.vault.name)


def _error_body(resource: str) -> bytes:
    msg = (f"Caller is not authorized to perform action on resource.\r\nCaller: appid={APPID};oid={OID};"
           f"iss=https://sts.windows.net/{TID}/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
           f"Resource: '{resource}'\r\nVault: kv-payments;location=eastus\r\n")
    return json.dumps({"error": {"code": "Forbidden", "message": msg, "innererror": {"code": "ForbiddenByRbac"}}}
                      ).encode()


def _record(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "TimeGenerated": "2026-11-20T10:00:00Z", "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent",
        "OperationName": "SecretGet", "ResultSignature": "Forbidden", "httpStatusCode_d": 403,
        "Resource": "KV-PAYMENTS", "_ResourceId": VAULT_ID.lower(), "identity_claim_oid_g": OID,
        "identity_claim_appid_g": APPID, "identity_claim_http_schemas_microsoft_com_identity_claims_tenantid_g": TID,
        "requestUri_s": "https://kv-payments.vault.azure.net/secrets/db/?api-version=7.4"}
    row.update(over)
    return row


def _rows(*rows: dict[str, Any]) -> bytes:
    return json.dumps(list(rows)).encode()


def _alert(dims: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaId": "azureMonitorCommonAlertSchema", "data": {
        "essentials": {"alertId": "a1", "monitorCondition": "Fired", "alertTargetIDs": [VAULT_ID]},
        "alertContext": {"conditionType": "LogQueryCriteria", "condition": {"allOf": [
            {"searchQuery": "AZKVAuditLogs | where HttpStatusCode == 403", "dimensions": d} for d in dims]}}}}).encode()


def _dims(oid: str = OID, **extra: str) -> list[dict[str, Any]]:
    values = {"_ResourceId": VAULT_ID, "identity_claim_oid_g": oid, "OperationName": "SecretGet", **extra}
    return [{"name": k, "value": v} for k, v in values.items()]


def _only(data: bytes, name: str = "input") -> Denial:
    result = parse_one(name, data)
    assert len(result.denials) == 1
    d = result.denials[0]
    _assert_canonical(d)
    return d


# --- encoded traversal and bad names ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_bad_name_in_an_error_texts_resource_is_unknown_not_cut(bad: str) -> None:
    # given Key Vault's RBAC error whose Resource names secrets/<bad>
    d = _only(_error_body(f"{VAULT_ID}/secrets/{bad}"))
    # then the object is a secret with no name (no object at all for a backslash, which WHATWG URL parsers read as
    # '/'); the vault id is dropped when the id itself carries '%', '..' or '\'
    if _no_object(bad):
        assert d.object is None
    else:
        assert d.object is not None and d.object.kind == "secrets" and d.object.name is None
    assert d.vault.name == "kv-payments"
    assert (d.vault.resource_id is None) == any(c in bad for c in ("%", "..", "\\"))


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("column", ["requestUri_s", "id_s"])
def test_a_bad_name_in_a_request_uri_is_unknown(bad: str, column: str) -> None:
    # given an audit row whose request URI (or object id) names secrets/<bad>, with a version after it
    row = _record(**{column: f"https://kv-payments.vault.azure.net/secrets/{bad}/{VERSION}?api-version=7.4"})
    if column == "id_s":
        row.pop("requestUri_s")
    d = _only(_rows(row))
    # then the secret's name and version are unknown, never a prefix of the crafted name (a backslash: no object)
    if _no_object(bad):
        assert d.object is None
        return
    assert d.object is not None and d.object.kind == "secrets"
    assert d.object.name is None and d.object.version is None


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_bad_name_in_a_resource_id_column_is_unknown(bad: str) -> None:
    d = _only(_rows(_record(_ResourceId=f"{VAULT_ID}/secrets/{bad}", requestUri_s=None)))
    assert d.object is None if _no_object(bad) else (d.object is not None and d.object.name is None)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_dot_segments_name_no_object(path: str) -> None:
    # given a request URI and a Resource with plain or encoded dot segments
    d = _only(_rows(_record(requestUri_s=f"https://kv-payments.vault.azure.net/{path}?api-version=7.4")))
    e = _only(_error_body(f"{VAULT_ID}/{path}"))
    # then neither names an object, and the error text's vault id (with '..' in it) is not kept
    assert d.object is None and e.object is None
    assert e.vault.resource_id is None and e.vault.name == "kv-payments"


@pytest.mark.parametrize(("path", "expected"), KIND_TRICKS)
def test_kind_segment_tricks_map_to_the_canonical_kind_or_nothing(path: str, expected: tuple[str, str] | None) -> None:
    obj = object_from_path("/" + path)
    assert (None if obj is None else (obj.kind, obj.name)) == expected
    d = _only(_rows(_record(requestUri_s=f"https://kv-payments.vault.azure.net/{path}?api-version=7.4")))
    assert (None if d.object is None else (d.object.kind, d.object.name)) == expected


@pytest.mark.parametrize(("version", "kept"), [
    (VERSION, VERSION), (VERSION.upper(), VERSION), ("0" * 32, None), (VERSION[:31], None), (VERSION + "0", None),
    (VERSION[:30] + "%41", None), (VERSION[:31] + "g", None)])
def test_versions_are_32_hex_digits_or_unknown(version: str, kept: str | None) -> None:
    obj = object_from_path(f"/secrets/db/{version}")
    assert obj is not None and obj.name == "db" and obj.version == kept


@pytest.mark.parametrize("rid", [
    "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/rg./providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/rg%2F../providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/r\\g/providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/rg..x/providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/{'r' * 91}/providers/Microsoft.KeyVault/vaults/kv-payments",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-payments/secrets/x%2F..",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-payments/../../other",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.\u212aeyVault/vaults/kv-payments",
])
def test_a_vault_id_is_kept_only_when_every_segment_is_valid(rid: str) -> None:
    vref, _ = vault_from_resource_id(rid)
    assert vref.resource_id is None


@pytest.mark.parametrize("rid", [
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv%2F..",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1 x",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/k",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv\u0430",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-payments\x1b[2K",
])
def test_a_bad_vault_segment_names_no_vault(rid: str) -> None:
    vref, obj = vault_from_resource_id(rid)
    assert vref.name is None and vref.resource_id is None and obj is None


def test_a_valid_id_keeps_vault_object_and_version() -> None:
    vref, obj = vault_from_resource_id(f"{VAULT_ID}/secrets/db-password/{VERSION}")
    assert vref.resource_id == VAULT_ID and vref.name == "kv-payments"
    assert obj is not None and (obj.kind, obj.name, obj.version) == ("secrets", "db-password", VERSION)


@pytest.mark.parametrize("obj", ["secrets/x%2F..%2F..", "secrets/x/../..", "SECRETS%2F../x", "secrets/x y",
                                 "secrets/x\u202e", "keys/.."])
def test_a_runbook_request_with_a_bad_object_is_refused(obj: str) -> None:
    body = json.dumps({"principal_id": OID, "vault": "kv-payments", "operation": "SecretGet", "object": obj})
    with pytest.raises(InputError, match="object"):
        parse_one("request body", body.encode())


# --- through the CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["x%2F..%2F..%2F..", "x%252F..", "x\\..", "x%0Aforged", "%2E%2E"])
def test_cli_parse_never_prints_a_crafted_object_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      bad: str) -> None:
    # given an error body and an audit row crafted with the same object name
    a, b = tmp_path / "error.json", tmp_path / "rows.json"
    a.write_bytes(_error_body(f"{VAULT_ID}/secrets/{bad}"))
    b.write_bytes(_rows(_record(requestUri_s=f"https://kv-payments.vault.azure.net/secrets/{bad}?api-version=7.4")))
    # when kv-remediate parse prints the denials document
    code = main(["parse", "--output", "json", str(a), str(b)])
    out, err = capsys.readouterr()
    # then both denials name a secret with no name (or no object), never the crafted name
    assert code == 0 and err == ""
    objects = [d["object"] for d in json.loads(out)["denials"]]
    expected = None if _no_object(bad) else {"kind": "secrets", "name": None, "version": None}
    assert objects == [expected] * 2


# --- control characters ---------------------------------------------------------------------------------------

CONTROLS = ["\x1b[2K", "\n", "\r", "\x07", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\u200b",
            "\ufeff"]


@pytest.mark.parametrize("c", CONTROLS)
def test_control_characters_make_ids_and_names_unknown(c: str) -> None:
    # given an audit row whose every id and name carries a control or bidi character
    row = _record(identity_claim_oid_g=OID + c, identity_claim_appid_g=c + APPID,
                  identity_claim_http_schemas_microsoft_com_identity_claims_tenantid_g=TID[:8] + c + TID[8:],
                  identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn_s=f"alice{c}@contoso.com",
                  Resource=f"kv-payments{c}", _ResourceId=f"{VAULT_ID}{c}",
                  requestUri_s=f"https://kv-payments.vault.azure.net/secrets/db{c}x?api-version=7.4")
    d = _only(_rows(row))
    # then each is unknown: none is trimmed or cut into a valid-looking value
    p = d.principal
    assert (p.object_id, p.app_id, p.tenant_id, p.upn) == (None, None, None, None)
    assert d.vault.resource_id is None
    assert d.vault.name is None
    assert d.object is None or d.object.name is None
    assert _only(_rows(_record(Resource=f"kv-payments{c}", _ResourceId=None, requestUri_s=None))).vault.name is None


@pytest.mark.parametrize("c", ["\x1b", "\u202e", "\u2028", "\x85"])
def test_control_characters_in_an_alerts_dimensions(c: str) -> None:
    data = _alert([_dims(oid=OID + c, requestUri_s=f"https://kv-payments.vault.azure.net/secrets/db{c}")])
    d = _only(data, "alert")
    assert d.principal.object_id is None
    assert d.object is None or d.object.name is None


def test_a_runbook_request_with_a_control_character_in_its_id_is_refused() -> None:
    body = json.dumps({"principal_id": OID + "\u202e", "vault": "kv-payments", "operation": "SecretGet"})
    with pytest.raises(InputError, match="principal_id"):
        parse_one("request body", body.encode())


# --- caps -----------------------------------------------------------------------------------------------------


def test_documented_defaults_and_setting_names() -> None:
    assert (DEFAULT_MAX_DENIALS, DEFAULT_MAX_PRINCIPALS) == (100, 50)
    assert (MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING) == ("KV_REMEDIATE_MAX_DENIALS", "KV_REMEDIATE_MAX_PRINCIPALS")
    assert TooLargeError.code == "TOO_LARGE" and TooLargeError.status == 413 and issubclass(TooLargeError, InputError)


@pytest.mark.parametrize(("count", "cap", "raises"), [(100, None, False), (101, None, True), (5, 4, True),
                                                        (4, 4, False), (101, 0, True)])
def test_denials_per_alert_are_capped(count: int, cap: int | None, raises: bool) -> None:
    # given one alert fanning out into `count` dimension sets of one principal
    data = _alert([_dims() for _ in range(count)])
    kwargs: dict[str, Any] = {} if cap is None else {"max_denials": cap}
    if cap == 0:
        kwargs = {"max_denials": None}
        raises = False
    if not raises:
        assert len(parse_one("alert", data, **kwargs).denials) == count
        return
    # then it is refused as a whole, naming the input, the cap and what to do
    with pytest.raises(TooLargeError) as exc:
        parse_one("alert", data, **kwargs)
    limit = cap if cap is not None else DEFAULT_MAX_DENIALS
    assert exc.value.code == "TOO_LARGE" and exc.value.status == 413
    assert exc.value.source == "alert" and exc.value.cap == limit and exc.value.count == limit + 1
    assert exc.value.message.startswith("alert: more than ")
    assert f"the cap is {limit}" in exc.value.message and MAX_DENIALS_SETTING in exc.value.message


def _principal(i: int) -> str:
    return f"{i + 1:08x}-3e4a-4b6c-8d7e-9f0a1b2c3d4e"


def test_distinct_principals_per_batch_are_capped_across_inputs() -> None:
    # given a batch of three inputs, 20 distinct callers each (60 > 50), the same caller repeated is one
    inputs = [(f"rows-{n}.json", _rows(*(_record(identity_claim_oid_g=_principal(n * 20 + i)) for i in range(20)),
                                       _record(identity_claim_oid_g=_principal(n * 20))))
              for n in range(3)]
    assert len(parse_inputs(inputs[:2]).denials) == 42
    with pytest.raises(TooLargeError) as exc:
        parse_inputs(inputs)
    # then the input that passed the cap is named, with the cap and the setting to raise
    assert exc.value.source == "rows-2.json" and exc.value.cap == DEFAULT_MAX_PRINCIPALS
    assert "distinct principals" in exc.value.message and MAX_PRINCIPALS_SETTING in exc.value.message
    assert len(parse_inputs(inputs, max_principals=60).denials) == 63
    with pytest.raises(TooLargeError):
        parse_inputs(inputs, max_principals=59)


def test_the_denial_cap_counts_per_input_not_per_batch() -> None:
    inputs = [(f"alert-{n}", _alert([_dims() for _ in range(60)])) for n in range(3)]
    assert len(parse_inputs(inputs).denials) == 180


@pytest.mark.parametrize("shape", ["text blocks", "separators", "json lines", "rows", "json objects", "json values",
                                   "json arrays", "dimensions"])
def test_structural_caps_refuse_huge_inputs(shape: str) -> None:
    if shape == "dimensions":
        data = _alert([_dims() + [{"name": f"d{i}", "value": "x"} for i in range(1001)]])
    elif shape == "json arrays":
        data = ("[" + "[]" * 50_001 + "]").encode()
    elif shape == "text blocks":
        data = "\n---\n".join("Status: 403" for _ in range(1001)).encode()
    elif shape == "separators":
        data = ("Status: 403\n" + "|---|---|\n" * 2001).encode()
    elif shape == "json objects":
        data = ("[" + ",".join(["{}"] * 50_001) + "]").encode()
    elif shape == "json values":
        data = ("[" + ",".join(["0"] * 250_002) + "]").encode()
    elif shape == "json lines":
        data = "\n".join("{}" for _ in range(10_001)).encode()
    else:
        data = json.dumps([{"operationName": "x", "category": "y"}] * 10_001).encode()
    with pytest.raises(TooLargeError) as exc:
        parse_one("body", data)
    assert exc.value.source == "body" and exc.value.status == 413


def test_cli_exits_2_with_one_line_when_an_input_is_over_a_cap(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ok, big = tmp_path / "ok.json", tmp_path / "big.json"
    ok.write_bytes(_error_body(f"{VAULT_ID}/secrets/db"))
    big.write_bytes(_alert([_dims() for _ in range(DEFAULT_MAX_DENIALS + 1)]))
    code = main(["parse", "--output", "json", "--max-denials", str(DEFAULT_MAX_DENIALS), str(ok), str(big)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(big) in err and "more than 100 denials" in err and "Traceback" not in err


def test_cli_takes_the_cap_from_the_setting_and_is_uncapped_without_one(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # given an operator's export with more denials than the app's default cap
    big = tmp_path / "big.json"
    big.write_bytes(_alert([_dims() for _ in range(DEFAULT_MAX_DENIALS + 1)]))
    # when the CLI parses it with no cap set, then it is one batch (an operator's file, not an unattended alert)
    monkeypatch.delenv(MAX_DENIALS_SETTING, raising=False)
    assert main(["parse", "--output", "json", str(big)]) == 0
    assert len(json.loads(capsys.readouterr().out)["denials"]) == DEFAULT_MAX_DENIALS + 1
    # and with the app's setting in the environment, the CLI keeps the same cap
    monkeypatch.setenv(MAX_DENIALS_SETTING, "10")
    assert main(["parse", "--output", "json", str(big)]) == 2
    assert "the cap is 10" in capsys.readouterr().err
    monkeypatch.setenv(MAX_DENIALS_SETTING, "ten")
    assert main(["parse", "--output", "json", str(big)]) == 2
    assert MAX_DENIALS_SETTING in capsys.readouterr().err


def test_error_text_past_the_text_budget_is_not_read_and_a_note_says_so() -> None:
    # given a log of 2,000 lines each embedding a different 403 body (about 150 KiB of text)
    lines = ["2026-11-20 ERROR " + json.dumps({"error": {"code": "Forbidden", "message": f"m{i}"}})
             for i in range(2000)]
    data = "\n".join(lines).encode()
    # when it is parsed without a denial cap
    result = parse_one("app.log", data, max_denials=None)
    # then only the first 32 KiB were read (fewer denials than lines), and a note names the input and the limit
    assert 0 < len(result.denials) < 2000
    assert "app.log: only the first 32 KiB of error text were read" in result.notes
