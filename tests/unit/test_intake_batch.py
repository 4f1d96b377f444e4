"""Batch and input-level rules: order, skipped counts, blocks, duplicates, bad input, the search-results link.

Given a batch (or one input with several blocks), when parse_inputs / parse_one runs, then the outcome follows
the contract in spec/cli.md.
"""

from __future__ import annotations

import json

import pytest

from remediate.errors import InputError
from remediate.intake import parse_inputs, parse_one, payload, search_results_link
from tests.support.intake_expect import FIXTURES

SAMPLES = FIXTURES / "samples"
VARIANTS = FIXTURES / "variants"


def _read(rel: str) -> bytes:
    base = VARIANTS if "/" not in rel else SAMPLES
    return (base / rel).read_bytes()


def test_batch_keeps_input_order_and_sums_skipped() -> None:
    # given an error body, a 404 body and a record export, when parsed as one batch
    result = parse_inputs([
        ("a.json", _read("errors/kv_403_forbiddenbyrbac_body_aca_blog.json")),
        ("b.json", _read("errors/kv_404_secretnotfound_body_aca_blog.json")),
        ("c.json", _read("logs_auditevent_eventhub_records.json")),
    ])
    # then denials come in input order and the 404 + the 200 record are skipped
    assert [d.source for d in result.denials] == ["error.rest"] + ["log.audit_event"] * 3
    assert result.skipped == 2
    assert result.to_dict()["schema"] == "kv-remediate/denials@1"


def test_a_bad_input_fails_the_whole_batch_naming_it() -> None:
    with pytest.raises(InputError) as err:
        parse_inputs([("good.json", _read("errors/kv_401_akv10000_body.json")), ("bad.txt", b"hello world")])
    assert err.value.message.startswith("bad.txt: ")


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "is empty"),
    (b"  \n\r\n ", "is empty"),
    (b"\xff\xfe\xfa", "unreadable bytes"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "unreadable bytes"),
    (b"{\"error\": ", "not valid JSON"),
    (b"{\"hello\": 1}", "not a recognised Key Vault input (top-level keys: hello)"),
    (b"[1, 2, 3]", "not a recognised Key Vault input"),
    (b"just some words", "not JSON and not a recognised error text"),
])
def test_unusable_input_is_an_input_error_that_names_it(data: bytes, problem: str) -> None:
    with pytest.raises(InputError) as err:
        parse_one("input-7", data)
    assert err.value.message.startswith("input-7: ")
    assert problem in err.value.message


def test_blocks_separated_by_dashes_are_parsed_one_by_one() -> None:
    # given three published .NET samples in one file, then three denials, one per block
    result = parse_one("dotnet.txt", _read("errors/sdk_dotnet_requestfailedexception_troubleshooting.txt"))
    assert [d.status for d in result.denials] == [401, 403, 403]


def test_one_error_printed_twice_is_one_denial() -> None:
    # the az CLI prints "(Forbidden) message" then "Code:"/"Message:" with the same text
    cli = parse_one("cli.txt", _read("errors/azcli_403_forbiddenbyrbac_setsecret_saas_accelerator.txt"))
    # .NET prints the message, then "Content:" with the body
    dotnet = parse_one("net.txt", _read("error_dotnet_crlf_message_then_content.txt"))
    assert len(cli.denials) == 1 and len(dotnet.denials) == 1


def test_crlf_lf_and_blank_lines_give_the_same_denial() -> None:
    lf = parse_one("lf", _read("errors/azcli_403_forbiddenbyrbac_setsecret_saas_accelerator.txt")).denials[0]
    crlf = parse_one("crlf", _read("error_azcli_crlf.txt")).denials[0]
    blank = parse_one("blank", _read("error_azcli_blank_line_separated.txt")).denials[0]
    for d in (crlf, blank):
        assert (d.principal, d.vault, d.operation, d.object) == (lf.principal, lf.vault, lf.operation, lf.object)


def test_status_never_comes_from_result_type() -> None:
    # given records whose ResultType says Success (as Key Vault writes it on failures) or Unauthorized
    rows = [{"OperationName": "SecretGet", "ResultType": "Success", "httpStatusCode_d": 403,
             "Resource": "KV1", "identity_claim_oid_g": "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e"},
            {"OperationName": "SecretGet", "ResultType": "Unauthorized", "Resource": "KV1",
             "ResourceProvider": "MICROSOFT.KEYVAULT"}]
    result = parse_one("rows.json", json.dumps(rows).encode())
    # then the first is a 403 denial and the second (no status at all) is skipped
    assert [d.status for d in result.denials] == [403]
    assert result.skipped == 1


def test_rows_of_other_services_are_skipped() -> None:
    rows = [{"OperationName": "SecretGet", "httpStatusCode_d": 403, "ResourceProvider": "MICROSOFT.STORAGE",
             "Resource": "acct"}]
    assert parse_one("rows.json", json.dumps(rows).encode()).skipped == 1


def test_resolved_alert_yields_no_denials_and_a_note() -> None:
    result = parse_one("resolved.json", _read("alert_metric_resolved_keyvault.json"))
    assert result.denials == () and result.skipped == 0
    assert "resolved" in result.notes[0]


def test_search_results_link_is_exposed_for_the_fetching_code() -> None:
    # given a Log Alerts V2 payload whose dimensions do not name the caller
    data = _read("alert_v2_no_dimensions_vault_scope.json")
    link = search_results_link(payload(data))
    # then the filtered API link is returned, and the note quotes it
    assert link is not None and link.startswith("https://api.loganalytics.io/v1/workspaces/")
    assert link.endswith("%7C%20where%20x")
    assert link in parse_one("v2.json", data).notes[0]
    assert search_results_link(payload(_read("errors/kv_401_akv10000_body.json"))) is None
    assert search_results_link(None) is None


def test_runbook_request_validation() -> None:
    ok = parse_one("rb.json", json.dumps({"principal_id": "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e",
                                          "vault": "kv1", "operation": "keydecrypt",
                                          "object": "keys/cmk/0123456789abcdef0123456789abcdef"}).encode())
    d = ok.denials[0]
    assert (d.source, d.status, d.operation, d.vault.name) == ("runbook", None, "KeyDecrypt", "kv1")
    assert d.object is not None and d.object.version == "0123456789abcdef0123456789abcdef"
    for bad, text in [({"principal_id": "XXXX", "operation": "SecretGet"}, "principal_id"),
                      ({"principal_id": "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e", "vault": "a_b"}, "vault"),
                      ({"operation": "SecretGet", "object": "blobs/x"}, "object")]:
        with pytest.raises(InputError, match=text):
            parse_one("rb.json", json.dumps(bad).encode())


def test_non_key_vault_alert_names_the_resource_type() -> None:
    with pytest.raises(InputError) as err:
        parse_one("vm.json", _read("alerts/legacy_activitylog_alert_administrative_noncommon_md.json"))
    assert err.value.message == ("vm.json: is an alert about Microsoft.Compute/virtualMachines, not a Key Vault")
    assert err.value.code == "NOT_KEY_VAULT"


def _v1_without_rows() -> bytes:
    doc = json.loads(_read("alert_v1_searchresults_azurediagnostics.json"))
    ctx = doc["data"]["alertContext"]
    del ctx["SearchResults"]
    ctx["IncludedSearchResults"] = "False"
    ctx["Dimensions"] = [{"name": "Resource", "value": "KV-PAYMENTS-PROD"}]
    return json.dumps(doc).encode()


def test_v1_alert_without_search_results_points_at_its_link() -> None:
    # given a V1 log alert that did not include its rows
    result = parse_one("v1.json", _v1_without_rows())
    # then one denial with what the alert says, and a note with the API link
    (d,) = result.denials
    assert (d.source, d.vault.name, d.principal.known) == ("alert.log_search_v1", "KV-PAYMENTS-PROD", False)
    assert "LinkToSearchResultsAPI: https://api.loganalytics.io/" in result.notes[0]


@pytest.mark.parametrize("data", [_read("alert_v2_no_dimensions_vault_scope.json"), _v1_without_rows()],
                         ids=["v2 without dimensions", "v1 without results"])
def test_an_alert_that_does_not_name_the_caller_hands_over_a_typed_rows_link(data: bytes) -> None:
    # given a log alert whose payload does not name the caller
    # when parsed in a batch with an error body (whose caller is masked: there is no alert to read rows from)
    rbac = _read("errors/kv_403_forbiddenbyrbac_body_aca_blog.json")
    result = parse_inputs([("alert.json", data), ("rbac.json", rbac)])
    (alert, alert_link), (other, other_link) = result.with_rows_links()
    # then the alert's denial comes with its link and window as a typed value, its note stays for a person
    assert alert_link is not None and alert_link.link == search_results_link(payload(data))
    assert alert_link.window is not None and alert_link.note in result.notes
    assert not alert.principal.known
    # and the error body's denial has no rows link, though it does not name its caller either
    assert other.source == "error.rest" and not other.principal.known and other_link is None


@pytest.mark.parametrize(("dims", "metric", "statuses", "skipped"), [
    ([{"name": "StatusCodeClass", "value": "4xx"}], "ServiceApiResult", [None], 0),
    ([{"name": "StatusCodeClass", "value": "5xx"}], "ServiceApiResult", [], 1),
    ([{"name": "StatusCode", "value": "200"}], "ServiceApiResult", [], 1),
    ([], "ServiceApiLatency", [None], 0),
    ([], "SaturationShoebox", [], 1),
])
def test_metric_alert_status_dimensions(dims: list[dict[str, str]], metric: str, statuses: list[int | None],
                                        skipped: int) -> None:
    doc = json.loads(_read("alert_metric_serviceapiresult_403.json"))
    crit = doc["data"]["alertContext"]["condition"]["allOf"][0]
    crit["dimensions"], crit["metricName"] = dims, metric
    result = parse_one("metric.json", json.dumps(doc).encode())
    assert [d.status for d in result.denials] == statuses
    assert result.skipped == skipped
    assert all(d.vault.name == "kv-payments-prod" and d.cause_hint is None for d in result.denials)


def test_error_text_saved_as_a_json_string() -> None:
    text = _read("errors/azcli_403_forbiddenbyrbac_setsecret_saas_accelerator.txt").decode()
    (d,) = parse_one("err.json", json.dumps(text).encode()).denials
    assert (d.status, d.operation) == (403, "SecretSet")


def test_records_pasted_one_after_another() -> None:
    # given two pretty-printed audit records pasted back to back (not a JSON array)
    a = _read("logs/kv_auditevent_raw_keypurge_403_accesspolicy_sekoia.json")
    b = _read("logs/kv_auditevent_raw_authentication_401_google_secops.json")
    result = parse_one("pasted.json", a + b"\n" + b)
    assert [d.operation for d in result.denials] == ["KeyPurge", "Authentication"]
