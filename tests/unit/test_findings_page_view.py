"""The findings page's views (pure): filters read from a query string, list rows from stored records, the exact
change, the evidence tree, the history from finding, request and grant records, the 7-day summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remediate.render.page import (
    Decision,
    Event,
    Filters,
    PageInput,
    RequestView,
    Viewer,
    build,
    change_of,
    history,
    in_force,
    render,
    row_of,
    summary,
    tree,
)
from remediate.store.grant_records import GrantRecord

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
VAULT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a"
OID = "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879"
CAUSES = ("MISSING_ROLE_ASSIGNMENT", "NETWORK_BLOCKED")


def _finding(cause: str = "MISSING_ROLE_ASSIGNMENT", **extra: Any) -> dict[str, Any]:
    return {"cause": cause, "explanation": "why", "outcome": extra.pop("outcome", None),
            "denial": {"status": 403, "error_code": "Forbidden", "time": "2026-12-07T10:00:00Z",
                       "principal": {"object_id": OID}, "vault": {"name": "kv-a", "resource_id": VAULT},
                       "operation": "SecretGet", "object": {"kind": "secrets", "name": "db"}},
            "plan": {"kind": "role_assignment", "principal_id": OID, "scope": VAULT + "/secrets/db",
                     "role_name": "Key Vault Secrets User", "tier": 1, "privileged": False,
                     "commands": {"az": "az role assignment create", "bicep": "resource x"}},
            "evidence": {"principal": {"display_name": "app-orders"}, "vault": {"name": "kv-a"}}, **extra}


def _record(when: datetime, **kw: Any) -> dict[str, Any]:
    f = _finding(**kw)
    return {"id": f"r-{int(when.timestamp())}", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "cause": f["cause"],
            "vault": VAULT, "principal": OID, "finding": f}


def _grant(outcome: str = "applied", **kw: Any) -> GrantRecord:
    values: dict[str, Any] = {"outcome": outcome, "time": NOW - timedelta(hours=1), "principal_id": OID,
                              "vault_id": VAULT, "after": {"id": "x"}, **kw}
    return GrantRecord(**values)


def test_filters_drop_values_outside_their_choices() -> None:
    f = Filters.from_params({"cause": "<b>", "outcome": "applied", "since": "1y", "vault": " kv " + "x" * 300,
                             "id": "a b", "approval": "abc-1"}, CAUSES)
    assert (f.cause, f.outcome, f.since, f.id, f.approval) == ("", "applied", "7d", "", "abc-1")
    assert f.vault == ("kv " + "x" * 300)[:200]
    assert f.query(id="r1") == "vault=" + f.vault.replace(" ", "+") + "&outcome=applied&since=7d&id=r1&approval=abc-1"


def test_a_row_reads_a_whole_record_and_a_list_row_alike() -> None:
    whole = row_of(_record(NOW, outcome="applied"))
    listed = row_of({"id": whole.id, "time": whole.time, "cause": whole.cause, "vault": VAULT, "principal": OID,
                     "outcome": "applied", "explanation": "why", "vault_name": "kv-a", "principal_name": "app-orders",
                     "operation": "SecretGet on secrets/db"})
    assert whole == listed and whole.principal == "app-orders" and whole.operation == "SecretGet on secrets/db"
    assert row_of({"id": "x"}).outcome == "diagnosed"


def test_the_exact_change_leaves_out_commands_and_alternatives() -> None:
    change = dict(change_of({**_finding()["plan"], "alternatives": [{}], "add": {"secrets": ["get", "list"]}}))
    assert change["Role"] == "Key Vault Secrets User" and change["Change"] == "role assignment"
    assert change["Permissions added"] == "secrets: get, list" and change["Privileged role"] == "no"
    assert "commands" not in str(change) and "alternatives" not in str(change).lower()


def test_a_managed_hsm_plans_exact_change_names_the_hsm_and_the_custom_role_it_defines() -> None:
    # given an HSM plan that defines our custom local role before assigning it
    plan = {"kind": "hsm_role_assignment", "hsm": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/"
            "managedHSMs/hsm-payments", "scope": "/keys/cmk", "role_name": "kv-remediate keys/encrypt/action",
            "custom_role": {"name": "0c4c5f2e-0000-5000-8000-000000000001", "role_name": "kv-remediate encrypt",
                            "data_actions": ["Microsoft.KeyVault/managedHsm/keys/encrypt/action"]},
            "commands": {"az": "az ..."}}
    # when the page shows its exact change
    change = dict(change_of(plan))
    # then the HSM, the local scope and the role it defines (with exactly its data actions) are all shown
    assert change["Change"] == "hsm role assignment" and change["Managed HSM"].endswith("/hsm-payments")
    assert change["Scope"] == "/keys/cmk"
    assert change["Defines custom role"] == ("kv-remediate encrypt (0c4c5f2e-0000-5000-8000-000000000001): "
                                             "Microsoft.KeyVault/managedHsm/keys/encrypt/action")


def test_the_evidence_tree_keeps_keys_and_stops_at_depth() -> None:
    node = tree({"a": {"b": [1, 2], "c": [{"d": None}], "e": True, "f": {}}})
    (a,) = node.children
    assert [(c.key, c.text) for c in a.children] == [("b", "1, 2"), ("c", None), ("e", "yes"), ("f", "(none)")]
    deep: Any = "leaf"
    for _ in range(30):
        deep = {"k": deep}
    n = tree(deep)
    depth = 0
    while n.children:
        n, depth = n.children[0], depth + 1
    assert n.text == "…" and depth < 30


def test_history_runs_from_denial_to_revocation() -> None:
    events = (Event("requested", "2026-12-07T10:05:00Z", "approval request q1"),
              Event("approved", "2026-12-07T10:06:00Z", "by Alice (a); via page; from 198.51.100.7; CHG-1"),
              Event("applied", "2026-12-07T10:06:01Z", "applied"))
    request = RequestView(id="q1", state="applied", created="2026-12-07T10:05:00Z", expires=None,
                          decisions=(Decision("approve", "Alice (a)", "2026-12-07T10:06:00Z", "page", "CHG-1"),),
                          end="applied", end_time="2026-12-07T10:06:01Z", grant_id="g1", events=events)
    grant = _grant(id="g1", revoked_at=NOW, revoke_detail="expired")
    states = [e.state for e in history(_record(NOW), [grant], [request])]
    assert states == ["denied", "proposed", "requested", "approved", "applied", "verified", "revoked"]
    # without the grant record in the stores, the request's own end says it was applied
    assert [e.state for e in history(_record(NOW), [], [request])][-1] == "applied"
    expired = RequestView(id="q2", state="expired", created="t", expires="t2")
    assert [e.state for e in history(_record(NOW), [], [expired])][-1] == "expired"


def test_summary_counts_causes_over_seven_days_and_grants_in_force() -> None:
    records = [_record(NOW - timedelta(days=d), cause=c) for d, c in
               ((0, "NETWORK_BLOCKED"), (1, "NETWORK_BLOCKED"), (2, "MISSING_ROLE_ASSIGNMENT"), (9, "NETWORK_BLOCKED"))]
    grants = [_grant(), _grant(revoked_at=NOW), _grant(expires_at=NOW - timedelta(minutes=1)),
              _grant(expires_at=NOW + timedelta(hours=1)), _grant("refused")]
    s = summary(records, grants, NOW)
    assert [(b.cause, b.count) for b in s.by_cause] == [("NETWORK_BLOCKED", 2), ("MISSING_ROLE_ASSIGNMENT", 1)]
    assert s.total == 3 and s.grants_in_force == 2 == len(in_force(grants, NOW))
    assert s.grants_by_vault == (("kv-a", 2),)


@pytest.mark.parametrize(("params", "rows"), [({}, 2), ({"since": "24h"}, 1), ({"cause": "NETWORK_BLOCKED"}, 1),
                                              ({"principal": "APP-ORDERS"}, 2), ({"vault": "kv-b"}, 0)])
def test_build_filters_rows_and_renders_escaped(params: dict[str, str], rows: int) -> None:
    records = [_record(NOW - timedelta(hours=1), cause="NETWORK_BLOCKED"), _record(NOW - timedelta(days=3))]
    data = PageInput(records=records, opened=None, grants=[], history_grants=[], requests=[], pending=[],
                     viewer=Viewer("<b>me</b>", True, "bearer"), now=NOW, nonce="n0nce")
    page = build(params, data, CAUSES)
    assert len(page.rows) == rows
    html = render(page)
    assert "&lt;b&gt;me&lt;/b&gt;" in html and "<b>me</b>" not in html and '<style nonce="n0nce">' in html


def test_a_findings_history_leaves_out_grants_made_before_its_denial() -> None:
    from remediate.render.page import grants_for, index_grants

    record = _record(NOW)   # denied at 10:00 on the day of NOW
    earlier = _grant(time=datetime(2026, 12, 6, tzinfo=UTC))
    later = _grant(time=NOW)
    assert grants_for(record, index_grants([earlier, later])) == [later]
