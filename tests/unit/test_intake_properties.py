"""Property tests: parse_one never raises anything but InputError, whatever it is given.

Given arbitrary bytes, arbitrary JSON, or a published sample / variant mutated (truncated, keys deleted, values
replaced by other JSON types), when parse_one runs, then it returns a ParseResult or raises InputError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.errors import InputError
from remediate.intake import parse_one
from remediate.model import ParseResult
from tests.support.intake_expect import FIXTURES

CORPUS = sorted(p for p in (FIXTURES / "samples").rglob("*") if p.is_file()) + sorted(
    p for p in (FIXTURES / "variants").iterdir() if p.is_file())
JSON_CORPUS: list[Any] = []
for _p in CORPUS:
    try:
        JSON_CORPUS.append(json.loads(_p.read_bytes().decode("utf-8-sig")))
    except (ValueError, UnicodeDecodeError):
        pass

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=30)

# Keys and values that steer the parser into its deeper branches.
KEYS = ["schemaId", "data", "essentials", "alertContext", "condition", "allOf", "dimensions", "event", "name", "value",
        "SearchResults", "SearchResult", "tables", "Tables", "columns", "rows", "records", "error", "code", "message",
        "innererror", "operationName", "OperationName", "httpStatusCode_d", "identity", "claim", "properties",
        "resourceId", "_ResourceId", "requestUri_s", "monitorCondition", "alertTargetIDs", "metricNamespace",
        "StatusCode", "context", "activityLog", "principal_id", "vault", "operation", "object", "authorization",
        "claims", "subStatus", "conditionType", "searchQuery", "Identity", "HttpStatusCode", "ResultDescription"]
VALUES = ["azureMonitorCommonAlertSchema", "AzureMonitorMetricAlert", "Microsoft.Insights/activityLogs",
          "LogQueryCriteria", "Microsoft.KeyVault/vaults", "Resolved", "Fired", "403", "Forbidden", "SecretGet",
          "AZKVAuditLogs | where HttpStatusCode == 403",
          "/subscriptions/3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
          "https://kv1.vault.azure.net/secrets/s/", "Caller: appid=x;oid=y;iss=https://sts.windows.net/z/",
          "does not have keys sign permission on key vault 'kv1;location=x'", '{"claim":{"oid":1}}', "secrets/x"]
steered = st.recursive(
    st.none() | st.integers(min_value=-1, max_value=600) | st.sampled_from(VALUES) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=40)


def _parse_ok(name: str, data: bytes) -> None:
    try:
        result = parse_one(name, data)
    except InputError as exc:
        assert exc.message.startswith(name)
        return
    assert isinstance(result, ParseResult)
    json.dumps(result.to_dict())


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    _parse_ok("in.bin", data)


@SETTINGS
@given(st.text(max_size=2000))
def test_arbitrary_text(text: str) -> None:
    _parse_ok("in.txt", text.encode("utf-8", "replace"))


@SETTINGS
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    _parse_ok("in.json", json.dumps(value).encode())


@SETTINGS
@given(steered)
def test_steered_json(value: Any) -> None:
    _parse_ok("in.json", json.dumps(value).encode())


@SETTINGS
@given(st.sampled_from(CORPUS), st.data())
def test_truncated_corpus(path: Path, data: st.DataObject) -> None:
    raw = path.read_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    _parse_ok(path.name, raw[:cut])


def _mutate(value: Any, draw: st.DataObject, depth: int = 0) -> Any:
    """Delete keys, flip types, recurse: structure kept just enough to reach the deep branches."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            action = draw.draw(st.integers(0, 9))
            if action == 0:
                continue
            if action == 1:
                out[k] = draw.draw(json_values)
            else:
                out[k] = _mutate(v, draw, depth + 1) if depth < 12 else v
        return out
    if isinstance(value, list):
        return [_mutate(v, draw, depth + 1) for v in value if draw.draw(st.integers(0, 7))]
    if draw.draw(st.integers(0, 5)) == 0:
        return draw.draw(json_values)
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(JSON_CORPUS), st.data())
def test_mutated_json_corpus(value: Any, data: st.DataObject) -> None:
    _parse_ok("mutated.json", json.dumps(_mutate(value, data)).encode())


@SETTINGS
@given(st.sampled_from(CORPUS), st.data())
def test_corrupted_text_corpus(path: Path, data: st.DataObject) -> None:
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b"{}[]\":,\\'\n\r-0XA "))
    _parse_ok(path.name, bytes(raw))


def test_deeply_nested_json_is_an_input_error() -> None:
    # given JSON nested far beyond any payload, then it is refused, not a RecursionError
    with pytest.raises(InputError) as caught:
        parse_one("deep.json", b"[" * 100_000 + b"]" * 100_000)
    assert "deep.json" in caught.value.message
