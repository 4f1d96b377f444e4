"""The `denials` queue messages the webhook writes and the worker reads.

One message per denial, in the store's ``kv-remediate/queued-denial@1`` format (``store.azure.denial_message``),
carrying the alert id. A denial from a log alert whose payload does not name the caller also carries its
``RowsLink`` as ``"search": {"link", "window"}``: the worker fetches the alert's rows from that Log Analytics link
(alert_rows.py; the webhook never calls out, it only enqueues).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from ..errors import InputError
from ..model import Denial, ObjectRef, Principal, RowsLink, Signal, VaultRef

MESSAGE_SCHEMA = "kv-remediate/queued-denial@1"
"""``store.azure.DENIAL_MESSAGE_SCHEMA``, the format both write (here a literal, so this module imports no SDK)."""
_KINDS = frozenset({"app", "user"})


class Search(msgspec.Struct, frozen=True):
    """A message's ``search``: where the worker fetches an alert's rows (intake's ``RowsLink`` on the wire)."""

    link: str
    window: tuple[str, str] | None = None


@dataclass(frozen=True)
class QueuedDenial:
    """One message: the denial, its alert and (for alerts without the caller) where its rows are."""

    denial: Denial
    alert_id: str | None
    rows_link: RowsLink | None = None


# --- the message as it travels (Denial.to_dict's fields; other keys are ignored) ---------------------------------

class _PrincipalRecord(msgspec.Struct, frozen=True):
    object_id: str | None = None
    app_id: str | None = None
    tenant_id: str | None = None
    upn: str | None = None
    kind: str | None = None


class _VaultRecord(msgspec.Struct, frozen=True):
    name: str | None = None
    resource_id: str | None = None
    kind: Literal["vault", "managed_hsm"] = "vault"
    scope: str | None = None


class _ObjectRecord(msgspec.Struct, frozen=True):
    kind: str
    name: str | None = None
    version: str | None = None


class DenialRecord(msgspec.Struct, frozen=True):
    """A denial in a message: ``Denial.to_dict()`` output, every field typed."""

    source: Annotated[str, msgspec.Meta(min_length=1)]
    status: int | None = None
    error_code: str | None = None
    inner_code: str | None = None
    principal: _PrincipalRecord | None = None
    vault: _VaultRecord | None = None
    operation: str | None = None
    data_action: str | None = None
    access_policy_permission: dict[str, list[str]] | None = None
    object: _ObjectRecord | None = None
    caller_ip: str | None = None
    time: str | None = None
    correlation_id: str | None = None
    message: str | None = None
    cause_hint: str | msgspec.UnsetType | None = msgspec.UNSET
    signals: frozenset[Signal] = frozenset()
    alert_id: str | None = None

    def to_denial(self) -> Denial:
        p, v, o = self.principal or _PrincipalRecord(), self.vault or _VaultRecord(), self.object
        kind = p.kind if p.kind in _KINDS else None  # a kind we do not know is unknown, not an error
        perms = self.access_policy_permission
        denial = Denial(source=self.source, status=self.status, error_code=self.error_code,
                      inner_code=self.inner_code,
                      principal=Principal(object_id=p.object_id, app_id=p.app_id, tenant_id=p.tenant_id, upn=p.upn,
                                          kind=kind),  # type: ignore[arg-type]
                      vault=VaultRef(name=v.name, resource_id=v.resource_id, kind=v.kind, scope=v.scope),
                      operation=self.operation,
                      data_action=self.data_action,
                      access_policy_permission={k: tuple(xs) for k, xs in perms.items()} if perms is not None
                      else None, object=ObjectRef(kind=o.kind, name=o.name, version=o.version) if o else None,
                      caller_ip=self.caller_ip, time=self.time, correlation_id=self.correlation_id,
                      message=self.message, signals=self.signals, alert_id=self.alert_id)
        if self.cause_hint is not msgspec.UNSET and self.cause_hint != denial.cause_hint:
            raise _bad(f"denial field 'cause_hint' is {self.cause_hint!r}, but its status and signals say "
                       f"{denial.cause_hint!r} (a message from an older version?): send the alert again")
        return denial


class QueueMessage(msgspec.Struct, frozen=True):
    """One ``denials`` queue message (other keys, such as ``enqueued_at``, are ignored)."""

    schema: Literal["kv-remediate/queued-denial@1"]
    denial: DenialRecord
    alert_id: Any = None
    search: Search | None = None


def _bad(problem: str) -> InputError:
    return InputError("queue message", problem, "BAD_MESSAGE")


_WHERE = re.compile(r" - at `\$(.*)`$")
# A path "denial.<field>" names one of the denial's own fields (deeper paths name the innermost key).
_DENIAL_FIELD_PATH = 2
_DENIAL_PROBLEMS = {"status": "must be an integer or null", "principal": "must be an object or null",
                    "vault": "must be an object or null", "object": "must be null or an object with a 'kind'",
                    "access_policy_permission": "must map kinds to lists",
                    "signals": "must be a list of signals (" + ", ".join(sorted(x.value for x in Signal)) + ")"}


def _problem(error: msgspec.ValidationError, body: Any) -> str:
    """What is wrong, from msgspec's error and the field it points at (list and map positions dropped)."""
    where = _WHERE.search(str(error))
    path = re.sub(r"\[[^]]*\]", "", where.group(1) if where else "").lstrip(".").split(".")
    if path[0] == "search":
        return "'search.window' must be [start, end] or null" if path[1:] == ["window"] else \
            "'search' must be an object with a 'link'"
    if path[0] != "denial" or not isinstance(body.get("denial"), dict):
        return f"not a {MESSAGE_SCHEMA} message (needs 'schema' and a 'denial' object)"
    if len(path) == 1 or (path[1] == "source" and not body["denial"].get("source")):
        return "the denial has no 'source'"
    own = len(path) == _DENIAL_FIELD_PATH or path[1] == "access_policy_permission" or path[1:] == ["object", "kind"]
    field = path[1] if own else path[-1]
    return f"denial field {field!r} {_DENIAL_PROBLEMS.get(field, 'must be a string or null')}"


def _message(data: bytes | str) -> QueueMessage:
    try:
        body = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise _bad(f"not a {MESSAGE_SCHEMA} message (needs 'schema' and a 'denial' object)")
    try:
        return msgspec.convert(body, QueueMessage)
    except msgspec.ValidationError as exc:
        raise _bad(_problem(exc, body)) from exc


def denial_from_dict(d: dict[str, Any]) -> Denial:
    """The Denial of ``Denial.to_dict()`` output (the inverse); BAD_MESSAGE when a field has the wrong type.

    ``cause_hint`` is not read back: it is derived (``decide.cause_hint`` of the signals), so a message whose
    ``cause_hint`` is not what its own fields map to (a message written before signals existed, whose hint came
    from the text) is BAD_MESSAGE rather than decided without the input's words."""
    try:
        record = msgspec.convert(d, DenialRecord)
    except msgspec.ValidationError as exc:
        raise _bad(_problem(exc, {"denial": d})) from None
    return record.to_denial()


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
    import json

    from ..store.azure import denial_message

    text = denial_message(item.denial.to_dict(), item.alert_id)
    if item.rows_link is None:
        return text
    body = json.loads(text)
    body["search"] = item.rows_link.to_dict()
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def decode(data: bytes | str) -> QueuedDenial:
    """Read one message (as the trigger hands it over); BAD_MESSAGE InputError when it is not ours."""
    msg = _message(data)
    link = RowsLink(msg.search.link, msg.search.window) if msg.search is not None else None
    return QueuedDenial(msg.denial.to_denial(), msg.alert_id if isinstance(msg.alert_id, str) else None, link)
