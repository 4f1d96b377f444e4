"""schemathesis against `serve` with the app's own OpenAPI document (/api/openapi.json): generated requests to every
route never get a 5xx, every 4xx carries the error JSON, and responses match the documented statuses, content
types and schemas. Bounded: at most 50 examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from remediate.localhost.discovery import load_app
from remediate.localhost.http import HttpServer
from tests.support.app import app_environment, snapshot_with_rows


@pytest.fixture
def served(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with app_environment(monkeypatch, azurite, snapshot_with_rows(tmp_path)):
        server = HttpServer(load_app(), port=0).start()
        try:
            yield server.base_url
        finally:
            server.stop()


def error_json_on_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answer is {"error": {"code": str, "message": str}}."""
    if 400 <= response.status_code < 500:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"{response.status_code} without the error JSON: {response.text[:200]}"
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
        assert "Traceback" not in error["message"]
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          error_json_on_4xx]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(served: str, mode: GenerationMode) -> None:
    # given the document the app serves
    schema = schemathesis.openapi.from_url(served + "/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # (schemathesis leaves out the route that serves the document itself)
    assert {op.label for op in operations} >= {"POST /api/alerts", "POST /api/diagnose", "GET /api/health"}
    for operation in operations:
        if operation.label.split(" ", 1)[1].startswith("/api/findings"):
            continue  # the findings page: HTML for people, tested in tests/functional/test_findings_page*.py
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to make invalid in a GET without parameters
        # when schemathesis sends requests generated for the operation (valid ones, then invalid ones)
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            # then no 5xx, the documented status, content type and schema, and the error JSON on every 4xx
            case.call_and_validate(base_url=served, checks=CHECKS)

        check()
