"""Azure Resource Graph: find Key Vaults (and Managed HSMs) by name, host or id across every subscription the
identity can read, in one query per batch, with no subscription list.

The wire (Azure REST API specs, ``specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/
2022-10-01/resourcegraph.json``, operation ``Resources``; client ``azure-mgmt-resourcegraph`` 8.x,
``ResourceGraphClient.resources``):

- ``POST {arm}/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01`` with a ``QueryRequest``:
  ``{"query", "subscriptions"?, "managementGroups"?, "options": {"$top", "$skipToken", "resultFormat"}}``.
  Without ``subscriptions`` and ``managementGroups`` the query runs at tenant scope: every subscription the caller
  can read. ``$top`` is 1..1000 and sets the page size (examples ``ResourcesFirstPageQuery.json`` /
  ``ResourcesNextPageQuery.json``: the first page answers ``$skipToken`` when more rows match, and the next page is
  the same query and scopes with ``options.$skipToken``; "id field is required in the response to return the pages
  in stable sorted fashion", so ``id`` is always projected).
- ``QueryResponse``: ``{"totalRecords", "count", "resultTruncated": "true"|"false", "$skipToken"?, "data",
  "facets"}``; with ``resultFormat: objectArray`` ``data`` is a list of row objects.
- Errors: ``ErrorResponse`` ``{"error": {"code", "message", "details": [{"code", "message", ...}]}}``. An invalid
  query is 400 ``BadRequest`` with ``details`` ``InvalidQuery`` ("Query is invalid. Please refer to the
  documentation for the Azure Resource Graph service and fix the error before retrying.") and ``ParserFailure``
  entries carrying ``line`` / ``characterPositionInLine`` / ``token`` (a real answer is quoted in
  grafana/grafana#35225).

The query is a fixed text with one list of string literals. Every literal is a value validated by ``armid``
(vault names, vault or HSM ids: letters, digits, hyphens, underscores, periods, parentheses and slashes only)
and written by :func:`kql_string`; :func:`build_query` refuses anything else, so no input can change the query.

Resource Graph is an index: it lags ARM by minutes for new resources and keeps its own copy of properties. It is
used only to learn *where* a vault is (its id); the vault's properties are always read from ARM (``vaults.get``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..armid import is_vault_name, parse_hsm_id, parse_vault_id
from ..clouds import CLOUDS, Cloud
from ..errors import clip

API_VERSION = "2022-10-01"
VAULT_TYPE = "microsoft.keyvault/vaults"
HSM_TYPE = "microsoft.keyvault/managedhsms"
MAX_TOP = 1000
"""``QueryRequestOptions.$top``: minimum 1, maximum 1000 (the REST spec); the page size we ask for."""
MAX_VALUES_PER_QUERY = 500
"""Literals per query: 500 vault names are ~14 KB of KQL; a larger batch is split into several queries."""

QUERY_HEAD = ("resources\n"
              f"| where type in~ ('{VAULT_TYPE}', '{HSM_TYPE}')\n")
QUERY_BY_NAME = "| where name in~ ({values})\n"
QUERY_BY_ID = "| where id in~ ({values})\n"
QUERY_TAIL = "| project id, name, type, subscriptionId, resourceGroup"
"""The only query shapes sent: ``QUERY_HEAD + (QUERY_BY_NAME | QUERY_BY_ID) + QUERY_TAIL``."""


class UnsafeQueryValue(ValueError):
    """A value that is not a validated vault name or id reached the query builder (a bug: callers validate)."""


def kql_string(value: str) -> str:
    """A single-quoted KQL string literal of a validated value; anything that could leave the literal is refused.

    Callers pass names and ids validated by ``armid``; this is defence in depth: a quote, a backslash, a control
    character or a non-printable character is refused rather than escaped."""
    if not value or not value.isprintable() or any(c in value for c in "'\"\\|;\n\r\t`"):
        raise UnsafeQueryValue(f"refusing to write {value!r} into a Resource Graph query")
    return f"'{value}'"


@dataclass(frozen=True)
class GraphTarget:
    """What to look for: a vault (``kind`` "vault") or Managed HSM ("hsm") by its lower-case name."""

    kind: str
    name: str


def target_from_host(host: str, clouds: Sequence[Cloud] = tuple(CLOUDS.values())) -> GraphTarget | None:
    """The vault or HSM a data-plane host names (``kv1.vault.azure.net``, ``hsm1.managedhsm.usgovcloudapi.net``,
    any cloud's suffix from clouds.py), or None when the host is not one (or its name is not a valid name)."""
    label, _, suffix = host.strip().rstrip(".").lower().partition(".")
    kind = next((k for c in clouds for k, s in (("vault", c.vault_suffix), ("hsm", c.hsm_suffix)) if suffix == s),
                None)
    if kind is None or not is_vault_name(label):
        return None
    return GraphTarget(kind, label)


def build_query(*, names: Sequence[str] = (), ids: Sequence[str] = ()) -> str:
    """The query for vault/HSM ``names`` or resource ``ids`` (exactly one of the two, non-empty, each validated)."""
    if bool(names) == bool(ids):
        raise UnsafeQueryValue("give names or ids, not both and not neither")
    if len(names) + len(ids) > MAX_VALUES_PER_QUERY:
        raise UnsafeQueryValue(f"more than {MAX_VALUES_PER_QUERY} values in one query")
    if names:
        bad = [n for n in names if not is_vault_name(n)]
        if bad:
            raise UnsafeQueryValue(f"not vault names: {bad[:3]!r}")
        values = ", ".join(kql_string(n) for n in dict.fromkeys(n.lower() for n in names))
        return QUERY_HEAD + QUERY_BY_NAME.format(values=values) + QUERY_TAIL
    bad = [i for i in ids if parse_vault_id(i) is None and parse_hsm_id(i) is None]
    if bad:
        raise UnsafeQueryValue(f"not vault or Managed HSM ids: {bad[:3]!r}")
    values = ", ".join(kql_string(i) for i in dict.fromkeys(ids))
    return QUERY_HEAD + QUERY_BY_ID.format(values=values) + QUERY_TAIL


@dataclass(frozen=True)
class GraphRow:
    """One row of the answer: where a vault or HSM is (never its properties: those are ARM's)."""

    id: str
    name: str
    kind: str   # "vault" | "hsm"


def row_from_graph(raw: Any) -> GraphRow | None:
    """A validated row (``id`` a vault or HSM id whose last segment is ``name``), or None for anything else."""
    if not isinstance(raw, dict):
        return None
    rid, name, rtype = raw.get("id"), raw.get("name"), str(raw.get("type") or "").lower()
    if not isinstance(rid, str) or not isinstance(name, str):
        return None
    if rtype == VAULT_TYPE and (vid := parse_vault_id(rid)) is not None and vid.name.lower() == name.lower():
        return GraphRow(str(vid), vid.name, "vault")
    if rtype == HSM_TYPE and (hid := parse_hsm_id(rid)) is not None and hid.name.lower() == name.lower():
        return GraphRow(str(hid), hid.name, "hsm")
    return None


def chunks(values: Sequence[str], size: int = MAX_VALUES_PER_QUERY) -> list[list[str]]:
    """``values`` (deduplicated, order kept) in lists of at most ``size``."""
    unique = list(dict.fromkeys(values))
    return [unique[i:i + size] for i in range(0, len(unique), size)]


async def query_rows(client: Any, query: str, *, subscriptions: Sequence[str] = (),
                     management_groups: Sequence[str] = (), top: int = MAX_TOP, **kwargs: Any) -> list[GraphRow]:
    """Every row of ``query`` through ``client.resources`` (the async ``ResourceGraphClient``), page by page with
    ``$skipToken``. SDK errors propagate (the caller translates them)."""
    from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

    rows: list[GraphRow] = []
    token: str | None = None
    while True:
        request = QueryRequest(
            query=query, subscriptions=list(subscriptions) or None, management_groups=list(management_groups) or None,
            options=QueryRequestOptions(top=max(1, min(top, MAX_TOP)), skip_token=token, result_format="objectArray"))
        page = await client.resources(request, **kwargs)
        data = page.data if isinstance(page.data, list) else []
        rows += [r for r in (row_from_graph(x) for x in data) if r is not None]
        token = page.skip_token or None
        if not token or not data:
            return rows


def error_summary(exc: Any) -> str:
    """``status code: message (detail codes)`` of a Resource Graph ``HttpResponseError`` (its ErrorResponse)."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) or getattr(exc, "error_code", None) or type(exc).__name__
    details = [str(getattr(d, "code", "")) for d in (getattr(err, "details", None) or []) if getattr(d, "code", "")]
    status = getattr(exc, "status_code", None)
    first = clip(str(exc), 160)
    return " ".join(x for x in (str(status) if status else "", str(code),
                                f"({', '.join(details)})" if details else "", f"- {first}" if first else "") if x)
