"""Key Vault audit records in every shape they are exported in, reduced to one row reader.

Shapes: raw AuditEvent JSON (storage / Event Hub: one record, a list, ``{"records": [...]}``, JSON lines),
Log Analytics ``AzureDiagnostics`` rows (``identity_claim_oid_g``, ``httpStatusCode_d``, ...), ``AZKVAuditLogs``
rows (``Identity``, ``HttpStatusCode``, ...) and Log Analytics query API results (``tables`` / ``Tables``).
Alert dimensions and search-result rows use the same reader (``row_draft``): column names are compared
case-insensitively and status never comes from ``ResultType``.
"""

from __future__ import annotations

import json
from typing import Any

from ..model import VaultRef
from . import limits
from .claims import merge_principal, principal_from_claims
from .drafting import Draft, Outcome
from .message import implied_status
from .operations import canonical_operation
from .values import (
    DENIAL_STATUSES,
    as_dict,
    as_list,
    ip_address,
    lower_keys,
    object_from_path,
    status_value,
    text,
    vault_from_resource_id,
    vault_name,
    vault_uri,
)

_STATUS_KEYS = ("httpstatuscode_d", "httpstatuscode", "statuscode", "status_code", "httpstatus", "status")
_URI_KEYS = ("requesturi_s", "requesturi", "request_uri", "url")
_ID_KEYS = ("id_s", "id", "objectid_s")
_RID_KEYS = ("_resourceid", "resourceid", "resource_id", "resourceid_s")
_IP_KEYS = ("calleripaddress", "callerip", "caller_ip", "clientip", "client_ip", "callerip_s")
_TIME_KEYS = ("time", "timegenerated", "timestamp", "eventtimestamp", "time_generated")
_ALIASES = {"oid": "oid", "objectid": "oid", "object_id": "oid", "principalid": "oid", "principal_id": "oid",
            "callerobjectid": "oid", "caller_oid": "oid", "appid": "appid", "app_id": "appid",
            "applicationid": "appid", "application_id": "appid", "clientid": "appid", "client_id": "appid",
            "upn": "upn", "userprincipalname": "upn", "idtyp": "idtyp", "tid": "tid", "iss": "iss"}
_AD_COLUMNS = frozenset({"httpstatuscode_d", "requesturi_s", "id_s", "identity_claim_oid_g", "identity_claim_appid_g",
                         "identity_claim_upn_s", "clientinfo_s", "isrbacauthorized_b", "isaccesspolicymatch_b"})


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Lower-cased keys, with the nested ``properties`` object (or its JSON string) merged underneath."""
    row = lower_keys(record)
    props = as_dict(row.get("properties"))
    for k, v in props.items():
        if isinstance(k, str):
            row.setdefault(k.lower(), v)
    return row


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = row.get(k)
        if v is not None and v != "":
            return v
    return None


def row_status(row: dict[str, Any]) -> int | None:
    """HTTP status from the status columns, then ResultSignature ("Forbidden"), never ResultType."""
    for k in _STATUS_KEYS:
        if k in row:
            s = status_value(row[k])
            if s is not None:
                return s
    return status_value(row.get("resultsignature"))


def kv_evidence(row: dict[str, Any]) -> bool:
    """True when a row visibly comes from Key Vault (columns, provider, vault URI or id, operation)."""
    provider = (text(row.get("resourceprovider")) or "").upper()
    if provider:
        return provider == "MICROSOFT.KEYVAULT"
    if (text(row.get("type")) or "").lower() == "azkvauditlogs":
        return True
    for k in row:
        if k.startswith("identity_claim_") or k in ("httpstatuscode_d", "requesturi_s", "id_s", "isrbacauthorized_b",
                                                      "isaccesspolicymatch_b", "isaccesspolicymatch"):
            return True
    if any(vault_from_resource_id(row.get(k))[0].name for k in _RID_KEYS):
        return True
    if any(vault_uri(row.get(k)) for k in _URI_KEYS + _ID_KEYS):
        return True
    op = text(row.get("operationname"))
    return bool(op and (canonical_operation(op) or op.startswith("Vault") or op == "Authentication"))


def _identity_claims(row: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    ident = as_dict(row.get("identity"))
    claim = as_dict(ident.get("claim")) or as_dict(ident.get("claims")) or ident
    for k, v in claim.items():
        if isinstance(k, str):
            claims.setdefault(k, v)
    for k, v in row.items():
        if k.startswith("identity_claim_"):
            claims.setdefault(k, v)
        else:
            alias = _ALIASES.get(k)
            if alias:
                claims.setdefault(alias, v)
    return claims


def row_draft(row: dict[str, Any], source: str) -> Draft:
    """One record / row / dimension set (lower-cased keys) as a Draft."""
    d = Draft(source=source)
    d.status = row_status(row)
    sig = text(row.get("resultsignature"))
    if sig and not sig[:1].isdigit() and status_value(sig) not in (None, 200):
        d.error_code = sig
    d.operation = text(row.get("operationname"))
    d.principal = principal_from_claims(_identity_claims(row))
    d.add_arm(d.operation)
    for k in _RID_KEYS:
        d.add_arm(row.get(k))
        vref, obj = vault_from_resource_id(row.get(k))
        d.add_vault(vref)
        d.object = d.object or obj
    d.add_vault(VaultRef(name=vault_name(row.get("resource")) or vault_name(row.get("vaultname"))))
    uri = _first(row, _URI_KEYS)
    d.add_uri(uri)
    for k in _ID_KEYS:
        u = vault_uri(row.get(k))
        if u is None:
            continue
        if u.vault:
            d.add_vault(VaultRef(name=u.vault))
        obj = object_from_path(u.path)
        if obj and (d.object is None or (d.object.name == obj.name and d.object.kind == obj.kind and obj.version)):
            d.object = obj
        if d.path is None and u.path not in ("", "/"):
            d.path = u.path
        break
    d.caller_ip = ip_address(_first(row, _IP_KEYS))
    d.time = text(_first(row, _TIME_KEYS))
    d.correlation_id = text(row.get("correlationid"))
    auth = row.get("isaddressauthorized_b", row.get("isaddressauthorized"))
    if isinstance(auth, bool):
        d.address_authorized = auth
    elif isinstance(auth, str) and auth.lower() in ("true", "false"):
        d.address_authorized = auth.lower() == "true"
    desc = text(row.get("resultdescription"))
    if desc:
        before = d.principal
        d.add_message(desc)
        d.principal = merge_principal(before, d.principal)
    return d


def record_source(row: dict[str, Any]) -> str:
    """log.azure_diagnostics, log.azkv_audit_logs or log.audit_event, from the record's own columns."""
    typ = (text(row.get("type")) or "").lower()
    if typ == "azurediagnostics" or not _AD_COLUMNS.isdisjoint(row):
        return "log.azure_diagnostics"
    if typ == "azkvauditlogs":
        return "log.azkv_audit_logs"
    return "log.audit_event"


def rows_outcome(rows: list[dict[str, Any]], source: str | None, *, keep_unknown_status: bool) -> Outcome:
    """Denials for the 401/403/429 rows; every other row (other status, other service) counts as skipped."""
    limits.check_records(limits.current_name(), len(rows))
    out = Outcome()
    for raw in rows:
        row = flatten(raw)
        if not kv_evidence(row):
            out.skipped += 1
            continue
        d = row_draft(row, source or record_source(row))
        if d.status is None:
            d.status = implied_status(d.message)
        if d.status in DENIAL_STATUSES or (d.status is None and keep_unknown_status):
            out.denials.append(d.build())
        else:
            out.skipped += 1
    return out


def looks_like_record(obj: dict[str, Any]) -> bool:
    """A single audit record or Log Analytics row (raw AuditEvent, AzureDiagnostics, AZKVAuditLogs)."""
    keys = {k.lower() for k in obj if isinstance(k, str)}
    if "operationname" not in keys and not any(k.startswith("identity_claim_") for k in keys):
        return False
    signals = {"httpstatuscode_d", "httpstatuscode", "resultsignature", "identity", "category", "type",
               "requesturi_s", "requesturi", "calleripaddress", "properties", "resultdescription"}
    return bool(keys & signals)


def query_rows(obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Rows of a Log Analytics query API result (``tables``/``Tables``, v1 and legacy casing), else None."""
    tables = obj.get("tables", obj.get("Tables"))
    if not isinstance(tables, list):
        return None
    rows: list[dict[str, Any]] = []
    limits.check_records(limits.current_name(), sum(len(as_list(as_dict(t).get("rows", as_dict(t).get("Rows"))))
                                                    for t in tables))
    for t in tables:
        td = as_dict(t)
        cols = as_list(td.get("columns", td.get("Columns")))
        names: list[str] = []
        for c in cols:
            cd = as_dict(c)
            names.append(text(cd.get("name", cd.get("ColumnName"))) or "" if cd else (text(c) or ""))
        for r in as_list(td.get("rows", td.get("Rows"))):
            if isinstance(r, list):
                rows.append({n: v for n, v in zip(names, r, strict=False) if n})
            elif isinstance(r, dict):
                rows.append(r)
    return rows


def records_of(obj: Any) -> list[dict[str, Any]] | None:
    """Records of a raw export: one record, a list of records, or ``{"records": [...]}``; else None."""
    if isinstance(obj, dict):
        recs = obj.get("records", obj.get("Records"))
        if isinstance(recs, list):
            return [r for r in recs if isinstance(r, dict)]
        if looks_like_record(obj):
            return [obj]
        return None
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        dicts = [r for r in obj if isinstance(r, dict)]
        if any(looks_like_record(r) for r in dicts):
            return dicts
    return None


def salvage_record(fragment: str) -> dict[str, Any] | None:
    """The fields of a record cut short (a truncated export or paste), up to its last complete value; else None.

    One linear pass tracks strings and brackets; the record is closed after the last ``,`` seen and decoded as JSON,
    so only complete values are kept and a value cut in half is dropped, never completed. Only a record (by
    ``looks_like_record``) is returned.
    """
    if not fragment.startswith("{"):
        return None
    cut = _last_cut(fragment)
    if cut is None:
        return None
    try:
        value = json.loads(fragment[:cut[0]] + cut[1])
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and looks_like_record(value) else None


def _last_cut(fragment: str) -> tuple[int, str] | None:
    """Where a cut JSON text can be closed (its last ``,`` outside strings) and the brackets that close it there;
    None when the text is not cut (complete, or its brackets do not match)."""
    closers: list[str] = []
    in_string = escaped = False
    cut: tuple[int, str] | None = None
    for i, ch in enumerate(fragment):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not closers or closers.pop() != ch or not closers:
                return None  # mismatched, or complete (then it was not cut)
        elif ch == ",":
            cut = (i, "".join(reversed(closers)))
    return cut
