"""Azure Monitor alert payloads about Key Vault, common schema and legacy, reduced to Denials.

Common schema (``schemaId: azureMonitorCommonAlertSchema``, or the bare ``{"alertContext": ...}`` fragment):
log search alerts (Log Alerts V2 ``dimensions``, simple log alerts ``event`` rows, V1 ``SearchResults``),
metric alerts (Key Vault ``ServiceApiResult``/``Availability`` with ``StatusCode``: vault and status only),
activity log alerts. Legacy: ``AzureMonitorMetricAlert``, log alert V1 with ``SearchResult``,
``Microsoft.Insights/activityLogs``. A resolved alert yields no denials; an alert about another resource type is
an InputError. A log alert whose dimensions (V2) or missing results (V1) do not name the caller yields what it
has, a note for a person pointing at ``linkToSearchResultsAPI``, and beside the denial a typed ``RowsLink`` (the
link of ``search_results_link`` and the alert's window) for the app to read its rows (``ParseResult.with_rows_links``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..model import RowsLink, VaultRef
from . import limits
from .claims import principal_from_claims
from .drafting import Draft, Outcome
from .logs import flatten, kv_evidence, query_rows, row_draft
from .operations import canonical_operation
from .values import (
    DENIAL_STATUSES,
    as_dict,
    as_list,
    guid,
    is_vault_id,
    lower_keys,
    resource_type,
    status_value,
    text,
    vault_from_resource_id,
)

COMMON_SCHEMA = "azuremonitorcommonalertschema"
_KV_TYPE = "microsoft.keyvault/vaults"
_KV_QUERY = re.compile(r"AZKVAuditLogs|MICROSOFT\.KEYVAULT|vault\.azure\.net|Microsoft\.KeyVault/vaults", re.IGNORECASE)
_QUERY_STATUS = re.compile(r"(?:httpStatusCode_d|HttpStatusCode|StatusCode)\s*==\s*(\d{3})\b|"
                           r"ResultSignature\s*==\s*[\"'](\w+)[\"']", re.IGNORECASE)
_QUERY_RANGE = re.compile(r"(?:httpStatusCode_d|HttpStatusCode)\s*(?:>=?|<=?|!=|in\b)", re.IGNORECASE)
_TABLE = re.compile(r"\s{0,64}(?:let [^;]{0,1024};\s{0,64}){0,32}([A-Za-z_][A-Za-z0-9_]{0,127})")
_METRIC_KINDS = {"singleresourcemultiplemetriccriteria", "multipleresourcemultiplemetriccriteria",
                 "dynamicthresholdcriteria", "webtestlocationavailabilitycriteria"}
_MAX_TIMESTAMP = 40  # longest alert window timestamp accepted (ISO 8601 with 7 fractional digits and an offset)
_STATUS_METRICS = {"serviceapiresult", "availability", "serviceapilatency"}


@dataclass(frozen=True)
class Essentials:
    """The common schema's ``essentials`` (what every alert carries)."""

    alert_id: str | None
    monitor_condition: str | None
    target_ids: tuple[str, ...]
    target_type: str | None
    fired: str | None
    signal_type: str | None

    @staticmethod
    def of(value: Any) -> Essentials:
        e = as_dict(value)
        ids = tuple(t for t in (text(x) for x in as_list(e.get("alertTargetIDs"))) if t)
        return Essentials(alert_id=text(e.get("alertId")), monitor_condition=text(e.get("monitorCondition")),
                          target_ids=ids, target_type=text(e.get("targetResourceType")),
                          fired=text(e.get("firedDateTime")), signal_type=text(e.get("signalType")))

    def vault(self) -> VaultRef:
        for t in self.target_ids:
            v, _ = vault_from_resource_id(t)
            if v.name:
                return v
        return VaultRef()

    def about(self) -> list[str]:
        types = [t for t in (resource_type(i) for i in self.target_ids) if t]
        if self.target_type:
            types.insert(0, self.target_type)
        return types


MAX_LINK = 8192
"""Longer search links are ignored: the app never follows a link's query, it only reads which workspace it names."""


def _link(value: Any) -> str | None:
    link = text(value)
    return link if link and len(link) <= MAX_LINK and link.lower().startswith("https://") else None


def search_results_link(payload: Any) -> str | None:
    """The Log Analytics API link of an alert (filtered link first), or None; only https links of bounded length.

    The link only tells the app where to look (app/alert_rows.py): its query is never run."""
    root = as_dict(payload)
    data = as_dict(root.get("data"))
    ctx = as_dict(data.get("alertContext")) or as_dict(root.get("alertContext")) or root
    lk = lower_keys(ctx)
    for key in ("linktofilteredsearchresultsapi", "linktosearchresultsapi"):
        link = _link(lk.get(key))
        if link:
            return link
    for item in as_list(as_dict(ctx.get("condition")).get("allOf")):
        il = lower_keys(as_dict(item))
        for key in ("linktofilteredsearchresultsapi", "linktosearchresultsapi"):
            link = _link(il.get(key))
            if link:
                return link
    return None


def search_results_window(payload: Any) -> tuple[str, str] | None:
    """The ``(start, end)`` the alert evaluated (V2 ``windowStartTime``/``windowEndTime``, V1 search interval).

    The time span to read the alert's rows for; None when the payload does not say (or says more than a time).
    """
    root = as_dict(payload)
    data = as_dict(root.get("data"))
    ctx = as_dict(data.get("alertContext")) or as_dict(root.get("alertContext")) or root
    cond = lower_keys(as_dict(ctx.get("condition")))
    lk = lower_keys(ctx)
    for start_key, end_key, where in (("windowstarttime", "windowendtime", cond),
                                      ("searchintervalstarttimeutc", "searchintervalendtimeutc", lk)):
        start, end = text(where.get(start_key)), text(where.get(end_key))
        if start and end and len(start) <= _MAX_TIMESTAMP and len(end) <= _MAX_TIMESTAMP:
            return start, end
    return None


def is_alert(obj: dict[str, Any]) -> bool:
    """Cheap test for any alert payload shape this module reads."""
    if "schemaId" in obj or "alertContext" in obj:
        return True
    data = as_dict(obj.get("data"))
    if "essentials" in data or "alertContext" in data or "context" in data:
        return True
    return "SearchResult" in obj and ("AlertRuleName" in obj or "SearchQuery" in obj)


def _not_kv(name: str, about: list[str]) -> InputError:
    what = ", ".join(dict.fromkeys(about)) or "a resource that is not named"
    return InputError(name, f"is an alert about {what}, not a Key Vault", "NOT_KEY_VAULT")


def _query_status(query: str | None) -> int | None:
    """The one status a query filters on (``httpStatusCode_d == 403``), if it names exactly one."""
    if not query:
        return None
    query = query[:limits.MAX_MESSAGE_CHARS]
    if _QUERY_RANGE.search(query):
        return None
    found = {status_value(a or b) for a, b in _QUERY_STATUS.findall(query)}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def _query_table(query: str | None) -> str | None:
    if not query:
        return None
    m = _TABLE.match(query[:limits.MAX_MESSAGE_CHARS])
    return m.group(1) if m else None


def _pairs(value: Any) -> dict[str, Any]:
    """A dimension list ``[{"name", "value"}]`` (or a plain object) as a lower-cased dict."""
    if isinstance(value, dict):
        return lower_keys(value)
    out: dict[str, Any] = {}
    for item in as_list(value):
        d = as_dict(item)
        n = text(d.get("name"))
        if n:
            out.setdefault(n.lower(), d.get("value"))
    return out


def _finish(d: Draft, ess: Essentials, out: Outcome, *, query: str | None, when: str | None) -> bool:
    """Common tail of every alert-derived draft; returns True when it became a denial."""
    if d.status is None:
        d.status = _query_status(query)
    if not d.vault.name and not d.vault.resource_id:
        d.add_vault(ess.vault())
    d.time = d.time or ess.fired or when
    d.alert_id = ess.alert_id
    if d.status is not None and d.status not in DENIAL_STATUSES:
        out.skipped += 1
        return False
    out.denials.append(d.build())
    return True


# --- log search alerts -----------------------------------------------------------------------------------------


def _log_v2(name: str, ess: Essentials, ctx: dict[str, Any], payload: Any) -> Outcome:
    cond = as_dict(ctx.get("condition"))
    items = [as_dict(i) for i in as_list(cond.get("allOf"))]
    limits.check_records(name, len(items) + sum(len(as_list(i.get("event"))) for i in items))
    limits.check_dimensions(name, max((len(as_list(i.get("dimensions"))) for i in items), default=0))
    when = text(cond.get("windowEndTime"))
    out = Outcome()
    queries = " ".join(text(i.get("searchQuery")) or "" for i in items)
    targets = " ".join(text(i.get("targetResourceTypes")) or "" for i in items)
    rows_kv = any(kv_evidence(flatten(_pairs(r))) for i in items for r in as_list(i.get("event")))
    dims_kv = any(kv_evidence(_pairs(i.get("dimensions"))) for i in items)
    kv = (_KV_TYPE in targets.lower() or bool(ess.vault().name) or bool(_KV_QUERY.search(queries))
          or rows_kv or dims_kv)
    if not kv:
        about = ess.about()
        about += [t.strip(" '\"") for t in targets.strip("[] ").split(",") if t.strip(" '\"")]
        table = _query_table(queries)
        if table:
            about.append(f"{table} rows")
        raise _not_kv(name, about)
    link = search_results_link(payload)
    for item in items:
        query = text(item.get("searchQuery"))
        events = as_list(item.get("event"))
        if events:
            for ev in events:
                d = row_draft(flatten(_pairs(ev)), "alert.simple_log")
                _finish(d, ess, out, query=query, when=when)
            continue
        dims = _pairs(item.get("dimensions"))
        d = row_draft(flatten(dims), "alert.log_search_v2")
        became = _finish(d, ess, out, query=query, when=when)
        if became and not d.principal.known:
            item_link = (text(lower_keys(item).get("linktofilteredsearchresultsapi"))
                         or text(lower_keys(item).get("linktosearchresultsapi")) or link)
            where = f" from linkToSearchResultsAPI: {item_link}" if item_link else " with the rule's query"
            note = f"{name}: the alert's dimensions do not name the caller; the rows must be fetched{where}"
            _rows_to_fetch(out, link, payload, note)
    return out


def _rows_to_fetch(out: Outcome, link: str | None, payload: Any, note: str) -> None:
    """The last denial names no caller: with the alert's link, where its rows are (the note goes to a person)."""
    if link is None:
        out.notes.append(note)
    else:
        out.rows_to_fetch(RowsLink(link, search_results_window(payload), note))


def _log_v1(name: str, ess: Essentials, ctx: dict[str, Any], source: str, *, results: Any,
            vault_ids: list[str], payload: Any) -> Outcome:
    lk = lower_keys(ctx)
    query = text(lk.get("searchquery"))
    rows = query_rows(as_dict(results)) or []
    tables = " ".join(" ".join(str(t) for t in as_list(as_dict(ds).get("tables")))
                      for ds in as_list(as_dict(results).get("dataSources")))
    flat_rows = [flatten(r) for r in rows]
    kv = (bool(_KV_QUERY.search(query or "")) or "azkvauditlogs" in tables.lower()
          or any(kv_evidence(r) for r in flat_rows) or bool(ess.vault().name) or any(is_vault_id(v) for v in vault_ids))
    if not kv:
        about = ess.about() + [t for t in (resource_type(v) for v in vault_ids) if t]
        table = _query_table(query)
        if table:
            about.append(f"{table} rows")
        raise _not_kv(name, about)
    out = Outcome()
    if not any(is_vault_id(v) for v in vault_ids):
        vault_ids = []
    when = text(lk.get("searchintervalendtimeutc"))
    if not flat_rows:
        dims = _pairs(lk.get("dimensions"))
        d = row_draft(flatten(dims), source)
        for v in vault_ids:
            d.add_vault(vault_from_resource_id(v)[0])
        if _finish(d, ess, out, query=query, when=when):
            link = text(lk.get("linktofilteredsearchresultsapi")) or text(lk.get("linktosearchresultsapi"))
            where = f" from LinkToSearchResultsAPI: {link}" if link else " with the rule's query"
            note = f"{name}: the alert carries no search results; the rows must be fetched{where}"
            if d.principal.known:
                out.notes.append(note)
            else:
                _rows_to_fetch(out, search_results_link(payload), payload, note)
        return out
    for row in flat_rows:
        d = row_draft(row, source)
        for v in vault_ids:
            d.add_vault(vault_from_resource_id(v)[0])
        _finish(d, ess, out, query=query, when=when)
    return out


# --- metric alerts ---------------------------------------------------------------------------------------------


def _metric(name: str, ess: Essentials, criteria: list[dict[str, Any]], source: str, *, resource_id: str | None,
            rtype: str | None, when: str | None) -> Outcome:
    namespaces = [(text(c.get("metricNamespace")) or "") for c in criteria]
    vault = ess.vault()
    if not vault.name and resource_id:
        vault = vault_from_resource_id(resource_id)[0]
    if not (any(n.lower() == _KV_TYPE for n in namespaces) or vault.name or (rtype or "").lower() == _KV_TYPE):
        raise _not_kv(name, [n for n in namespaces if n] + ess.about() + ([rtype] if rtype else []))
    limits.check_records(name, len(criteria))
    out = Outcome()
    for c in criteria:
        dims = _pairs(c.get("dimensions"))
        metric = (text(c.get("metricName")) or "").lower()
        status = status_value(dims.get("statuscode"))
        klass = (text(dims.get("statuscodeclass")) or "").lower()
        if status is None and klass and klass != "4xx":
            out.skipped += 1
            continue
        if status is None and metric not in _STATUS_METRICS:
            out.skipped += 1
            out.notes.append(f"{name}: the metric {c.get('metricName')!s} does not describe denied requests")
            continue
        d = Draft(source=source, status=status, status_only=True)
        d.add_vault(vault)
        for key in ("microsoft.resourceid", "resourceid"):
            d.add_vault(vault_from_resource_id(dims.get(key))[0])
        activity = text(dims.get("activityname"))
        if activity and canonical_operation(activity):
            d.operation = activity
        if _finish(d, ess, out, query=None, when=when):
            what = f"status {status}" if status else "a 4xx status class" if klass else "no status"
            out.notes.append(f"{name}: a metric alert names the vault and {what} only, not the caller; "
                             "the vault's AuditEvent logs name it")
    return out


# --- activity log alerts ---------------------------------------------------------------------------------------


def _activity(name: str, ess: Essentials, ctx: dict[str, Any], source: str) -> Outcome:
    auth = as_dict(ctx.get("authorization"))
    props = as_dict(ctx.get("properties"))
    scope = text(auth.get("scope")) or text(ctx.get("resourceId")) or text(props.get("entity"))
    op_name = text(ctx.get("operationName")) or text(auth.get("action")) or ""
    vault = vault_from_resource_id(scope)[0]
    if not vault.name:
        vault = ess.vault()
    if not vault.name and not op_name.lower().startswith("microsoft.keyvault/"):
        about = [text(ctx.get("resourceType")) or resource_type(scope) or "", *ess.about()]
        raise _not_kv(name, [a for a in about if a])
    out = Outcome()
    status_msg = as_dict(props.get("statusMessage"))
    err = as_dict(status_msg.get("error"))
    code = text(err.get("code"))
    status = (status_value(props.get("statusCode")) or status_value(ctx.get("subStatus"))
              or status_value(code))
    if status not in DENIAL_STATUSES:
        out.skipped += 1
        return out
    d = Draft(source=source, status=status, error_code=code)
    d.add_vault(vault)
    claims = as_dict(ctx.get("claims"))
    d.principal = principal_from_claims(claims)
    caller = text(ctx.get("caller")) or ""
    if guid(caller) and not d.principal.object_id:
        d.principal = principal_from_claims({**claims, "oid": caller})
    elif "@" in caller and not d.principal.upn:
        d.principal = principal_from_claims({**claims, "upn": caller})
    d.correlation_id = text(ctx.get("correlationId"))
    d.time = text(ctx.get("eventTimestamp"))
    msg = err.get("message")
    d.message = msg if isinstance(msg, str) else text(props.get("message"))
    _finish(d, ess, out, query=None, when=None)
    return out


# --- entry point -----------------------------------------------------------------------------------------------


def _context_outcome(name: str, ess: Essentials, ctx: dict[str, Any], payload: Any) -> Outcome:
    lk = lower_keys(ctx)
    if "searchresults" in lk or "searchquery" in lk:
        return _log_v1(name, ess, ctx, "alert.log_search_v1", results=lk.get("searchresults"),
                       vault_ids=[t for t in (text(x) for x in as_list(lk.get("affectedconfigurationitems"))) if t],
                       payload=payload)
    cond = as_dict(ctx.get("condition"))
    items = [as_dict(i) for i in as_list(cond.get("allOf"))]
    ctype = (text(ctx.get("conditionType")) or "").lower()
    if ctype == "logquerycriteria" or any("searchQuery" in i or "event" in i for i in items):
        return _log_v2(name, ess, ctx, payload)
    if ctype in _METRIC_KINDS or any("metricName" in i for i in items):
        return _metric(name, ess, items, "alert.metric", resource_id=None, rtype=None,
                       when=text(cond.get("windowEndTime")))
    if "authorization" in ctx or "eventSource" in ctx or "operationName" in ctx:
        return _activity(name, ess, ctx, "alert.activity_log")
    about = ess.about()
    if about and not ess.vault().name:
        raise _not_kv(name, about)
    raise InputError(name, "is an alert whose alertContext is not a log search, metric or activity log context",
                     "UNRECOGNISED_ALERT")


def _resolved(name: str) -> Outcome:
    return Outcome(notes=[f"{name}: the alert is resolved; nothing was denied"])


def parse_alert(name: str, obj: dict[str, Any]) -> Outcome:
    """Denials of one alert payload (any shape ``is_alert`` accepts)."""
    schema = (text(obj.get("schemaId")) or "").lower()
    data = as_dict(obj.get("data"))
    container = _common_container(schema, data, obj)
    if container is not None:
        ess = Essentials.of(container.get("essentials"))
        if (ess.monitor_condition or "").lower() == "resolved":
            return _resolved(name)
        return _context_outcome(name, ess, as_dict(container.get("alertContext")), obj)
    if "SearchResult" in obj:
        rid = text(obj.get("ResourceId"))
        return _log_v1(name, Essentials.of({}), obj, "alert.legacy_log_v1", results=obj.get("SearchResult"),
                       vault_ids=[rid] if rid else [], payload=obj)
    return _legacy_alert(name, schema, data, obj)


def _common_container(schema: str, data: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any] | None:
    """Where a common-schema alert keeps essentials and alertContext: under ``data``, or at the root when the
    payload is that ``data`` object alone; None for the legacy (pre-common-schema) shapes."""
    if schema == COMMON_SCHEMA or "essentials" in data or ("alertContext" in data and not schema):
        return data
    if "alertContext" in obj and not schema:
        return obj
    return None


def _legacy_alert(name: str, schema: str, data: dict[str, Any], obj: dict[str, Any]) -> Outcome:
    """Denials of a legacy (non-common-schema) metric or activity log alert: they describe the rule's context
    under ``data.context``."""
    status = (text(data.get("status")) or "").lower()
    if status in ("resolved", "deactivated"):
        return _resolved(name)
    context = as_dict(data.get("context"))
    if schema == "azuremonitormetricalert" or "condition" in context:
        cond = as_dict(context.get("condition"))
        return _metric(name, Essentials.of({}), [as_dict(i) for i in as_list(cond.get("allOf"))],
                       "alert.legacy_metric", resource_id=text(context.get("resourceId")),
                       rtype=text(context.get("resourceType")), when=text(context.get("timestamp")))
    if schema == "microsoft.insights/activitylogs" or "activityLog" in context:
        return _activity(name, Essentials.of({}), as_dict(context.get("activityLog")), "alert.legacy_activity_log")
    raise InputError(name, f"is an alert payload with an unknown schemaId {obj.get('schemaId')!r}",
                     "UNRECOGNISED_ALERT")
