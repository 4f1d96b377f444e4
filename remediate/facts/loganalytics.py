"""Fetch an alert's rows through the Log Analytics query API (its ``linkToSearchResultsAPI``).

Used when a Log Alerts V2 payload carries no usable dimensions (or a V1 alert no rows): the worker (and
``/api/diagnose``) asks the API for the rows of the alert's window with the function's own identity and parses
them like any AzureDiagnostics/AZKVAuditLogs rows. Live Azure and the bundled emulator differ only in the base
URL, TLS trust and the credential, as for facts/arm.py's Microsoft Graph client.

The link comes from a webhook payload, so it is not trusted: only HTTPS links to the Log Analytics API hosts and
its ``/v1/.../query`` paths are followed (never send the function's token anywhere else), and the query is sent
with the alert's own window (the links' ``timespan`` is sometimes malformed).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..errors import AzureUnavailableError, InputError

LOG_ANALYTICS_URL = "https://api.loganalytics.io"
LOG_ANALYTICS_SCOPE = "https://api.loganalytics.io/.default"
ALLOWED_HOSTS = frozenset({"api.loganalytics.io", "api.loganalytics.azure.com"})
_PATH = re.compile(r"^/v1/(?:workspaces/[A-Za-z0-9-]{1,64}|subscriptions/[^?#]+)/query$", re.IGNORECASE)
_LINK = "linkToSearchResultsAPI"


@dataclass(frozen=True)
class SearchRequest:
    """What to ask the query API: the query path (workspace or resource-centric), the KQL, the time span."""

    path: str
    query: str
    timespan: str | None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query}
        if self.timespan:
            out["timespan"] = self.timespan
        return out


def search_request(link: str, window: tuple[str, str] | None = None) -> SearchRequest:
    """Validate an alert's search link and read its query; ``window`` (start, end) overrides the link's timespan."""
    try:
        url = urllib.parse.urlsplit(link.strip())
    except ValueError as exc:
        raise InputError(_LINK, f"is not a URL ({exc})", "BAD_SEARCH_LINK") from exc
    host = (url.hostname or "").lower()
    if url.scheme != "https" or host not in ALLOWED_HOSTS:
        raise InputError(_LINK, f"must be an https link to the Log Analytics API ({', '.join(sorted(ALLOWED_HOSTS))})"
                         f"; got host {host or '(none)'!r}", "BAD_SEARCH_LINK")
    path = urllib.parse.unquote(url.path).rstrip("/")
    if not _PATH.match(path) or ".." in path:
        raise InputError(_LINK, "is not a Log Analytics query link (/v1/workspaces/{id}/query or "
                         "/v1/subscriptions/.../query)", "BAD_SEARCH_LINK")
    params = urllib.parse.parse_qs(url.query, keep_blank_values=False)
    query = (params.get("query") or [""])[0].strip()
    if not query:
        raise InputError(_LINK, "has no 'query' parameter", "BAD_SEARCH_LINK")
    timespan = f"{window[0]}/{window[1]}" if window else next(iter(params.get("timespan") or []), None)
    return SearchRequest(path=path, query=query, timespan=timespan)


class LogAnalyticsClient:
    """Runs alert searches with the function's identity; counts requests (``requests``, ``by_api``)."""

    def __init__(self, credential: Any, *, base_url: str = LOG_ANALYTICS_URL,
                 connection_verify: str | bool | None = None, retry_total: int = 4) -> None:
        self._credential = credential
        self._base = base_url.rstrip("/")
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
            from .arm import capped_retry_policy, json_pipeline

            self._client = json_pipeline(self._base, self._credential, LOG_ANALYTICS_SCOPE, count=self._count,
                                         connection_verify=self._verify,
                                         retry_policy=capped_retry_policy(30.0, self._retry_total))
        return self._client

    async def search(self, link: str, window: tuple[str, str] | None = None) -> dict[str, Any]:
        """The query API result (``{"tables": [...]}``) for an alert's search link over ``window``."""
        from azure.core.rest import HttpRequest

        req = search_request(link, window)
        where = f"the Log Analytics query API ({req.path})"
        try:
            response = await self._pipeline().send_request(
                HttpRequest("POST", f"{self._base}{req.path}", json=req.body()))
            await response.read()
        except ClientAuthenticationError as exc:
            raise AzureUnavailableError(f"calling {where} failed: the function's identity could not get a token "
                                        f"({_short(exc)})") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise AzureUnavailableError(f"calling {where} failed: not reachable ({_short(exc)}); retry later") from exc
        status = response.status_code
        if status in (401, 403):
            raise AzureUnavailableError(
                f"calling {where} was refused (HTTP {status}): grant the function's identity 'Log Analytics "
                "Reader' on the workspace the alert rule queries")
        if status in (400, 404):
            raise InputError(_LINK, f"the query API answered HTTP {status} ({_error_text(response)}); check the "
                             "alert rule's query and workspace", "BAD_SEARCH_LINK")
        if status >= 400:
            raise AzureUnavailableError(f"calling {where} failed with HTTP {status} "
                                        f"({_short(HttpResponseError(response=response))}); retry later")
        try:
            body = response.json()
        except ValueError as exc:
            raise AzureUnavailableError(f"calling {where}: the answer is not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("tables"), list):
            raise AzureUnavailableError(f"calling {where}: the answer has no 'tables'")
        return body

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
        return f"{err.get('code')}: {str(err.get('message'))[:200]}"
    except (ValueError, AttributeError):
        return "no error body"


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
