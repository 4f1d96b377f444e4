"""The `denials` queue messages the webhook writes and the worker reads.

One message per denial, in the store's ``kv-remediate/queued-denial@1`` format (``store.azure.denial_message``),
carrying the alert id. A denial from a log alert whose payload does not name the caller also carries its
``RowsLink`` as ``"search": {"link", "window"}``: the worker fetches the alert's rows from that Log Analytics link
(alert_rows.py; the webhook never calls out, it only enqueues).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..model import Denial, ObjectRef, Principal, RowsLink, Signal, VaultRef

_KINDS = frozenset({"app", "user"})


@dataclass(frozen=True)
class QueuedDenial:
    """One message: the denial, its alert and (for alerts without the caller) where its rows are."""

    denial: Denial
    alert_id: str | None
    rows_link: RowsLink | None = None


def _bad(problem: str) -> InputError:
    return InputError("queue message", problem, "BAD_MESSAGE")


def _str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad(f"denial field {key!r} must be a string or null")
    return v


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(f"denial field {key!r} must be an object or null")
    return v


def _signals(d: dict[str, Any]) -> frozenset[Signal]:
    v = d.get("signals")
    if v is None:
        return frozenset()
    if not isinstance(v, list) or not all(isinstance(x, str) and x in _SIGNALS for x in v):
        raise _bad(f"denial field 'signals' must be a list of signals ({', '.join(sorted(_SIGNALS))})")
    return frozenset(Signal(x) for x in v)


_SIGNALS = frozenset(s.value for s in Signal)


def denial_from_dict(d: dict[str, Any]) -> Denial:
    """The Denial of ``Denial.to_dict()`` output (the inverse); BAD_MESSAGE when a field has the wrong type.

    ``cause_hint`` is not read back: it is derived (``decide.cause_hint`` of the signals), so a message whose
    ``cause_hint`` is not what its own fields map to (a message written before signals existed, whose hint came
    from the text) is BAD_MESSAGE rather than decided without the input's words."""
    source = _str(d, "source")
    if not source:
        raise _bad("the denial has no 'source'")
    status = d.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        raise _bad("denial field 'status' must be an integer or null")
    p, v, o = _obj(d, "principal"), _obj(d, "vault"), d.get("object")
    kind = _str(p, "kind")
    principal = Principal(object_id=_str(p, "object_id"), app_id=_str(p, "app_id"), tenant_id=_str(p, "tenant_id"),
                          upn=_str(p, "upn"), kind=kind if kind in _KINDS else None)  # type: ignore[arg-type]
    ref = None
    if o is not None:
        if not isinstance(o, dict) or not isinstance(o.get("kind"), str):
            raise _bad("denial field 'object' must be null or an object with a 'kind'")
        ref = ObjectRef(kind=o["kind"], name=_str(o, "name"), version=_str(o, "version"))
    perms = d.get("access_policy_permission")
    access: dict[str, tuple[str, ...]] | None = None
    if perms is not None:
        if not isinstance(perms, dict) or not all(isinstance(x, list) for x in perms.values()):
            raise _bad("denial field 'access_policy_permission' must map kinds to lists")
        access = {str(k): tuple(str(x) for x in xs) for k, xs in perms.items()}
    denial = Denial(source=source, status=status, error_code=_str(d, "error_code"), inner_code=_str(d, "inner_code"),
                    principal=principal, vault=VaultRef(name=_str(v, "name"), resource_id=_str(v, "resource_id")),
                    operation=_str(d, "operation"), data_action=_str(d, "data_action"),
                    access_policy_permission=access, object=ref, caller_ip=_str(d, "caller_ip"),
                    time=_str(d, "time"), correlation_id=_str(d, "correlation_id"), message=_str(d, "message"),
                    signals=_signals(d), alert_id=_str(d, "alert_id"))
    hint = _str(d, "cause_hint")
    if "cause_hint" in d and hint != denial.cause_hint:
        raise _bad(f"denial field 'cause_hint' is {hint!r}, but its status and signals say {denial.cause_hint!r} "
                   "(a message from an older version?): send the alert again")
    return denial




def escape_controls(value: Any) -> Any:
    """``value`` with every control character written as its escape (``\\n``, ``\\x1b``, ``\\u202e``), so a
    crafted id cannot start a new log line or flip text; non-strings are returned as they are."""
    if not isinstance(value, str):
        return value
    from ..intake.values import CONTROL_CHARS  # the set intake refuses in ids: one list of what forges text

    return CONTROL_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


def escape_all(obj: Any) -> Any:
    """``escape_controls`` over every string in a JSON-like value (keys too)."""
    if isinstance(obj, dict):
        return {escape_controls(k): escape_all(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [escape_all(v) for v in obj]
    return escape_controls(obj)


_MARKUP = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "'", "*": "\\*", "~": "\\~",
                         "[": "\\[", "]": "\\]"})


def chat_text(value: Any) -> str:
    """A value as plain text in a Teams/Slack message: controls escaped, ``<>&`` entity-escaped (Slack's own rule,
    which also defuses ``<!channel>``/``<@U..>`` mentions and Teams ``<at>`` tags), markdown marks backslashed and
    backticks made quotes (no value can close our code span or format "approved" text)."""
    return str(escape_controls("" if value is None else str(value))).translate(_MARKUP)


def chat_code(value: Any) -> str:
    """A value inside a code span: controls escaped, ``<>&`` escaped, backticks made quotes."""
    text = str(escape_controls("" if value is None else str(value)))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def encode(item: QueuedDenial) -> str:
    """The message text (size-checked by the store's encoder)."""
    from ..store.azure import denial_message

    text = denial_message(item.denial.to_dict(), item.alert_id)
    if item.rows_link is None:
        return text
    body = json.loads(text)
    body["search"] = item.rows_link.to_dict()
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def decode(data: bytes | str) -> QueuedDenial:
    """Read one message (as the trigger hands it over); BAD_MESSAGE InputError when it is not ours."""
    from ..store.azure import parse_denial_message

    denial, alert_id = parse_denial_message(data)
    body = json.loads(data)
    link = None
    raw = body.get("search")
    if raw is not None:
        if not isinstance(raw, dict) or not isinstance(raw.get("link"), str):
            raise _bad("'search' must be an object with a 'link'")
        window = raw.get("window")
        if window is not None and not (isinstance(window, list) and len(window) == 2
                                       and all(isinstance(x, str) for x in window)):
            raise _bad("'search.window' must be [start, end] or null")
        link = RowsLink(raw["link"], (window[0], window[1]) if window else None)
    return QueuedDenial(denial_from_dict(denial), alert_id, link)
