"""Read a vault's audit log through the Log Analytics query API, with the app's own fixed query.

Two uses, one query (``AUDIT_QUERY``): the worker (and ``/api/diagnose``) find the denials of a log alert whose
payload does not name the caller, and, under ``mode: apply``, the worker proves that a denial really happened
before it applies a plan (a grant needs evidence the app read itself, never an input's claim).

Trust: an alert's ``linkToSearchResultsAPI`` is attacker-shaped. Its KQL is never run and its path is never
followed: :func:`link_target` only reads which workspace (or vault resource) it names, and the caller keeps that
only when it is one of the configured workspaces (``KV_REMEDIATE_AUDIT_WORKSPACES``) or a vault in the configured
subscriptions. The query always goes to ``/v1/workspaces/{configured id}/query`` with our text.

Injection safety: the query API has no bind parameters (the request body is only ``query``, ``timespan`` and
``workspaces``), so values are placed in the text. Each is first validated against a closed alphabet: workspace
and principal ids are GUIDs (hex and ``-``), the vault name matches Key Vault's rule ``^[A-Za-z0-9-]{3,24}$``, the
operation is the catalogue's own spelling (letters only), times are re-formatted from parsed datetimes. Then each is
written as a single-quoted KQL string literal (``kql_string``; quote and backslash escaped as KQL's string-literal
rules say, as defence in depth). No validated value contains a quote, a backslash, a newline or a pipe, so no value
can end its literal, and the query's shape is a constant: the ``let`` header carries the values, the body below it
never changes (the emulator refuses any other text, see emulator/routes_logs.py).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..armid import is_guid, is_vault_name
from ..clouds import PUBLIC, Cloud
from ..errors import AzureUnavailableError, InputError, clip

ALLOWED_HOSTS = PUBLIC.logs_hosts()     # the public cloud's; other clouds pass their own (clouds.Cloud.logs_hosts)
MAX_WINDOW = timedelta(days=2)
MAX_ROWS = 200
_LINK = "linkToSearchResultsAPI"
_WS_PATH = re.compile(r"^/v1/workspaces/([^/]+)/query$", re.IGNORECASE)
_RES_PATH = re.compile(r"^/v1(/subscriptions/([^/]+)/resourcegroups/[^/]+/providers/microsoft\.keyvault/vaults/"
                       r"([^/]+))/query$", re.IGNORECASE)

AUDIT_QUERY_BODY = """\
union isfuzzy=true
    (AZKVAuditLogs
    | where TimeGenerated between (kvStart .. kvEnd)
    | where _ResourceId endswith strcat('/microsoft.keyvault/vaults/', kvVault)
    | where HttpStatusCode in (401, 403)
    | project TimeGenerated, CorrelationId, OperationName, ResultSignature, httpStatusCode_d = toreal(HttpStatusCode),
        ResultDescription, CallerIPAddress = CallerIpAddress, requestUri_s = RequestUri, ResourceId = _ResourceId,
        identity_claim_oid_g = tostring(Identity.claim.oid), identity_claim_appid_g = tostring(Identity.claim.appid)),
    (AzureDiagnostics
    | where TimeGenerated between (kvStart .. kvEnd)
    | where ResourceProvider == 'MICROSOFT.KEYVAULT' and Category == 'AuditEvent' and Resource =~ kvVault
    | where httpStatusCode_d in (401, 403)
    | project TimeGenerated, CorrelationId, OperationName, ResultSignature, httpStatusCode_d, ResultDescription,
        CallerIPAddress, requestUri_s, ResourceId = _ResourceId,
        identity_claim_oid_g = tostring(column_ifexists('identity_claim_oid_g', '')),
        identity_claim_appid_g = tostring(column_ifexists('identity_claim_appid_g', '')))
| where isempty(kvPrincipal) or identity_claim_oid_g =~ kvPrincipal
| where isempty(kvOperation) or OperationName =~ kvOperation
| extend Category = 'AuditEvent', ResourceProvider = 'MICROSOFT.KEYVAULT'
| order by TimeGenerated asc
| take 200"""
"""The fixed part of the audit query: every request sends exactly this text after the ``let`` header."""

AUDIT_QUERY_HEADER = ("let kvStart = datetime({start});\nlet kvEnd = datetime({end});\nlet kvVault = {vault};\n"
                      "let kvPrincipal = {principal};\nlet kvOperation = {operation};\n")
"""The parameters, each a validated value written as a KQL literal (``kql_string``)."""


def kql_string(value: str) -> str:
    """A single-quoted KQL string literal (backslash and quote escaped; callers pass validated values only)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def kql_time(when: datetime) -> str:
    """A datetime as KQL's ``datetime(...)`` accepts it (UTC, ISO 8601, 7 fraction digits like Log Analytics)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


# The longest time text worth matching: "2024-01-01T00:00:00.123456789+00:00" is 35 characters.
_MAX_TIME_TEXT = 40


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` or offset, up to 7 fraction digits) as an aware datetime; None when unreadable."""
    if not isinstance(text, str) or len(text) > _MAX_TIME_TEXT:
        return None
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?$", text.strip(),
                 re.IGNORECASE)
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = m.group(3) or "Z"
    try:
        return datetime.fromisoformat(f"{m.group(1)}.{frac}{'+00:00' if zone.upper() == 'Z' else zone}")
    except ValueError:
        return None


@dataclass(frozen=True)
class AuditQuery:
    """The parameters of one audit-log read; validated on construction (InputError naming the field otherwise)."""

    vault: str
    start: datetime
    end: datetime
    principal: str | None = None
    operation: str | None = None

    def __post_init__(self) -> None:
        from .. import catalog

        if not is_vault_name(self.vault or ""):
            raise InputError("audit query", f"vault name {self.vault!r} is not a Key Vault name", "BAD_AUDIT_QUERY")
        if self.principal is not None and not is_guid(self.principal):
            raise InputError("audit query", "the principal is not an object id (GUID)", "BAD_AUDIT_QUERY")
        if self.operation is not None:
            op = catalog.operation(self.operation)
            if op is None or op.name != self.operation or not self.operation.isalpha():
                raise InputError("audit query", f"operation {self.operation!r} is not in the catalogue",
                                 "BAD_AUDIT_QUERY")
        if self.start.tzinfo is None or self.end.tzinfo is None or not self.start <= self.end:
            raise InputError("audit query", "the window must be two aware times, start before end", "BAD_AUDIT_QUERY")
        if self.end - self.start > MAX_WINDOW:
            raise InputError("audit query", f"the window is longer than {MAX_WINDOW}", "BAD_AUDIT_QUERY")

    def kql(self) -> str:
        """The query text: the ``let`` header of validated literals, then the fixed body."""
        header = AUDIT_QUERY_HEADER.format(start=kql_time(self.start), end=kql_time(self.end),
                                           vault=kql_string(self.vault.lower()),
                                           principal=kql_string((self.principal or "").lower()),
                                           operation=kql_string(self.operation or ""))
        return header + AUDIT_QUERY_BODY

    def timespan(self) -> str:
        """The request's ``timespan`` (the same window; the service intersects it with the query's own filter)."""
        return f"{kql_time(self.start)}/{kql_time(self.end)}"


@dataclass(frozen=True)
class LinkTarget:
    """What an alert's link may tell us: a workspace id, or a vault resource (subscription, name)."""

    workspace: str | None = None
    subscription: str | None = None
    vault: str | None = None


def link_target(link: str, hosts: frozenset[str] = ALLOWED_HOSTS) -> LinkTarget:
    """Where an alert's search link points (never its query); InputError BAD_SEARCH_LINK when it is not a
    Log Analytics query link (on one of the cloud's ``hosts``) to a workspace id or a Key Vault vault."""
    try:
        url = urllib.parse.urlsplit(link.strip())
    except ValueError as exc:
        raise InputError(_LINK, f"is not a URL ({exc})", "BAD_SEARCH_LINK") from exc
    host = (url.hostname or "").lower()
    if url.scheme != "https" or host not in hosts:
        raise InputError(_LINK, f"must be an https link to the Log Analytics API ({', '.join(sorted(hosts))})",
                         "BAD_SEARCH_LINK")
    path = urllib.parse.unquote(url.path).rstrip("/")
    if (m := _WS_PATH.match(path)) and is_guid(m.group(1)):
        return LinkTarget(workspace=m.group(1).lower())
    if (m := _RES_PATH.match(path)) and is_guid(m.group(2)) and is_vault_name(m.group(3)):
        return LinkTarget(subscription=m.group(2).lower(), vault=m.group(3).lower())
    raise InputError(_LINK, "names neither a workspace id (/v1/workspaces/{guid}/query) nor a Key Vault vault "
                     "(/v1/subscriptions/{guid}/resourceGroups/.../vaults/{name}/query)", "BAD_SEARCH_LINK")


@dataclass(frozen=True)
class QueryResult:
    """Rows (dicts by column name) of one workspace, and the service's partial-error text when it gave one."""

    workspace: str
    rows: tuple[dict[str, Any], ...]
    partial: str | None = None


def _rows(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for t in body.get("tables") or []:
        if not isinstance(t, dict):
            continue
        names = [str(c.get("name")) for c in t.get("columns") or [] if isinstance(c, dict)]
        for r in t.get("rows") or []:
            if isinstance(r, list) and len(r) == len(names):
                out.append(dict(zip(names, r, strict=True)))
    return tuple(out[:MAX_ROWS])


class LogAnalyticsClient:
    """Runs the audit query with the function's identity; counts requests (``requests``, ``by_api``)."""

    def __init__(self, credential: Any, *, cloud: Cloud = PUBLIC, base_url: str | None = None,
                 connection_verify: str | bool | None = None, retry_total: int = 4) -> None:
        self._credential = credential
        self._scope = cloud.logs_scope      # the token audience follows the cloud's endpoint
        self._base = (base_url or cloud.logs).rstrip("/")
        self._verify = connection_verify
        self._retry_total = retry_total
        self._client: Any = None
        self.requests = 0
        self.by_api: dict[str, int] = {}

    def _count(self, request: Any) -> None:
        self.requests += 1
        self.by_api["log_analytics"] = self.by_api.get("log_analytics", 0) + 1

    def _pipeline(self) -> Any:
        if self._client is None:
            from .pipeline import capped_retry_policy, json_pipeline

            self._client = json_pipeline(self._base, self._credential, self._scope, count=self._count,
                                         connection_verify=self._verify,
                                         retry_policy=capped_retry_policy(30.0, self._retry_total))
        return self._client

    async def audit(self, workspace: str, query: AuditQuery) -> QueryResult:
        """The audit rows of ``query`` in ``workspace`` (a GUID). AzureUnavailableError when the service cannot be
        asked or refuses (the caller turns it into a limitation); a 200 with a partial ``error`` keeps the rows
        and says so in ``partial``."""
        from azure.core.rest import HttpRequest

        if not is_guid(workspace):
            raise InputError("audit workspace", "is not a workspace id (GUID)", "BAD_AUDIT_QUERY")
        where = f"the Log Analytics query API (workspace {workspace})"
        try:
            response = await self._pipeline().send_request(HttpRequest(
                "POST", f"{self._base}/v1/workspaces/{workspace.lower()}/query",
                json={"query": query.kql(), "timespan": query.timespan()}))
            await response.read()
        except ClientAuthenticationError as exc:
            raise AzureUnavailableError(f"calling {where} failed: the function's identity could not get a token "
                                        f"({_short(exc)})") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise AzureUnavailableError(f"calling {where} failed: not reachable ({_short(exc)}); retry later") from exc
        status = response.status_code
        if status in (401, 403):
            raise AzureUnavailableError(f"calling {where} was refused (HTTP {status}): grant the function's identity "
                                        "'Log Analytics Reader' on the audit workspace")
        if status >= HTTPStatus.BAD_REQUEST:
            raise AzureUnavailableError(f"calling {where} failed with HTTP {status} ({_error_text(response)}); "
                                        f"{'check the workspace id' if status in (400, 404) else 'retry later'}")
        try:
            body = response.json()
        except ValueError as exc:
            raise AzureUnavailableError(f"calling {where}: the answer is not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("tables"), list):
            raise AzureUnavailableError(f"calling {where}: the answer has no 'tables'")
        partial = None
        # A non-fatal failure is a 200 whose body also has an 'error' (code PartialError, details in 'details'):
        # learn.microsoft.com/azure/azure-monitor/logs/api/response-format ("Azure Monitor Log Analytics API
        # errors"). The rows may be incomplete, so the caller treats it as a limitation, never as a full answer.
        err = body.get("error")
        if isinstance(err, dict):
            partial = f"{err.get('code') or 'PartialError'}: {clip(str(err.get('message') or ''), 200)}"
        return QueryResult(workspace.lower(), _rows(body), partial)

    async def close(self) -> None:
        """Close the pipeline (and its HTTP session) if one was opened."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> LogAnalyticsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _error_text(response: Any) -> str:
    try:
        err = response.json().get("error") or {}
        inner = err.get("innererror") or {}
        more = f" ({inner.get('code')})" if isinstance(inner, dict) and inner.get("code") else ""
        return f"{err.get('code')}{more}: {clip(str(err.get('message')), 200)}"
    except (ValueError, AttributeError):
        return "no error body"


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return clip(text) if text else type(exc).__name__


__all__ = ["AUDIT_QUERY_BODY", "AUDIT_QUERY_HEADER", "AuditQuery", "LinkTarget",
           "LogAnalyticsClient", "QueryResult", "kql_string", "kql_time", "link_target", "parse_time"]
