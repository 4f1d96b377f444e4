"""Intake: every Key Vault denial format becomes a typed ``Denial`` (``kv-remediate parse``).

``parse_inputs`` takes a batch of ``(name, bytes)`` and returns one ``ParseResult``; any unusable input raises
``InputError`` (naming the input and the problem) before anything is returned, so a batch fails as a whole.
Nothing else is ever raised. Inputs over intake's caps (``limits``: denials per input, distinct principals per
batch, records, blocks) raise ``TooLargeError`` (an InputError, HTTP 413). Ids and names are canonical or None:
an object is keys/secrets/certificates/storage with a name by Key Vault's rule, a vault id only when every
segment is valid, and no id or name holds a control character. A denial carries the ``signals`` its input gives
(never a cause: ``decide.cause_hint`` maps them); a denial from a log alert that does not name the caller comes
with a typed ``RowsLink`` to its alert's rows (``ParseResult.with_rows_links``), and notes are for people only.

``Denial.source`` vocabulary (stable; family first):

- ``alert.log_search_v2``   common-schema Log Alerts V2, one denial per ``allOf`` item (its ``dimensions``)
- ``alert.simple_log``      common-schema simple log alert, one denial per ``event`` row
- ``alert.log_search_v1``   common-schema log alert V1, one denial per ``SearchResults`` row
- ``alert.metric``          common-schema metric alert on a vault (vault and status only)
- ``alert.activity_log``    common-schema activity log alert on a vault
- ``alert.legacy_metric``   non-common ``AzureMonitorMetricAlert``
- ``alert.legacy_log_v1``   non-common log alert V1 (``SearchResult``)
- ``alert.legacy_activity_log``  non-common ``Microsoft.Insights/activityLogs``
- ``log.audit_event``       raw AuditEvent JSON (storage, Event Hub, JSON lines)
- ``log.azure_diagnostics`` Log Analytics ``AzureDiagnostics`` rows
- ``log.azkv_audit_logs``   Log Analytics ``AZKVAuditLogs`` rows
- ``log.query_api``         Log Analytics query API result (``tables``)
- ``error.rest``            a bare REST error body ``{"error": {...}}``
- ``error.log_line``        text (a log line, a recording) that embeds a REST error body
- ``error.python``          azure-core ``HttpResponseError`` output
- ``error.python_legacy``   azure-keyvault 1.x / msrest ``KeyVaultErrorException``
- ``error.azure_cli``       Azure CLI ``ERROR: (Code) ...``
- ``error.azure_core``      azure-core's ``(Code) message / Code: / Message:`` text without the tool's marker
- ``error.dotnet``          .NET ``RequestFailedException`` (``Status: 403 (Forbidden)``, ``Content:``)
- ``error.go``              Go azcore ``ResponseError`` (``RESPONSE 403: ...``)
- ``error.go_autorest``     Go autorest (``StatusCode=403 -- Original Error: ...``)
- ``error.java``            Java ``HttpResponseException`` (v1 and v2 core)
- ``error.javascript``      JavaScript ``RestError``
- ``error.powershell``      Az PowerShell error records (``Microsoft.Azure.Commands...``, ``Set-AzKeyVaultSecret``)
- ``error.text``            Key Vault's error message on its own (no tool framing)
- ``platform.app_service_reference``  App Service / Functions Key Vault reference status (ARM list or text)
- ``runbook``               a runbook request ``{"principal_id", "vault", "operation", "object"}``
"""

from __future__ import annotations

from ..errors import InputError, TooLargeError
from ..model import ParseResult
from . import limits
from .alerts import search_results_link
from .detect import decode, parse_text, payload
from .drafting import Outcome
from .limits import DEFAULT_MAX_DENIALS, DEFAULT_MAX_PRINCIPALS, MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING

__all__ = ["DEFAULT_MAX_DENIALS", "DEFAULT_MAX_PRINCIPALS", "MAX_DENIALS_SETTING", "MAX_PRINCIPALS_SETTING",
           "InputError", "TooLargeError", "parse_inputs", "parse_one", "payload", "search_results_link"]


def _parse(name: str, data: bytes) -> Outcome:
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(name, "unreadable: not bytes")
    limits.start_input(name)
    return parse_text(name, decode(name, bytes(data)))


def parse_one(name: str, data: bytes, *, max_denials: int | None = DEFAULT_MAX_DENIALS,
              max_principals: int | None = DEFAULT_MAX_PRINCIPALS) -> ParseResult:
    """The denials in one input; InputError when it is unusable.

    ``max_denials`` caps the denials the input may yield (default 100: one alert or request body), and
    ``max_principals`` the distinct principals among them (default 50); None is no cap. Over a cap:
    ``TooLargeError`` (an InputError, code TOO_LARGE, ``status`` 413), raised before anything is returned.
    """
    with limits.budget(max_denials, max_principals):
        return _parse(name, data).result()


def parse_inputs(inputs: list[tuple[str, bytes]], *, max_denials: int | None = DEFAULT_MAX_DENIALS,
                 max_principals: int | None = DEFAULT_MAX_PRINCIPALS) -> ParseResult:
    """The denials of a batch, in input order; the first unusable input fails the whole batch.

    ``max_denials`` applies to each input (default 100), ``max_principals`` to the distinct principals of the
    whole batch (default 50); None is no cap. Over a cap: ``TooLargeError`` naming the input, before anything
    is returned.
    """
    total = Outcome()
    with limits.budget(max_denials, max_principals):
        for name, data in inputs:
            total.extend(_parse(name, data))
    return total.result()
