"""The app settings that are plain typed values, declared once (a ``msgspec`` struct: the type, the range and the
setting's name) and read each on its own from its text, so a bad value is one problem for /api/health and its
default stands in. Settings that need more than a type (the snapshot file, the notification URL, the cloud,
storage, token and policy settings) are checked by ``settings.Settings.from_env`` and their owners.

Kept apart from ``settings`` (whose constants the blueprints import at cold start): msgspec loads on first use.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

import msgspec

from ..armid import GUID_PATTERN
from ..intake.limits import DEFAULT_MAX_DENIALS, DEFAULT_MAX_PRINCIPALS, MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING
from .settings import AUDIT_WORKSPACES_SETTING, DEFAULT_WINDOW, SELF_SETTING, SUBSCRIPTIONS_SETTING, WINDOW_SETTING

Guid = Annotated[str, msgspec.Meta(pattern=GUID_PATTERN)]
Cap = Annotated[int, msgspec.Meta(gt=0, le=1_000_000)]


class SettingValues(msgspec.Struct, frozen=True):
    """Typed settings by their names. A tuple is a comma-separated list: each entry is checked on its own, the
    good ones are kept (GUIDs lower-cased, in order, once) and any other makes the setting a problem."""

    self_object_ids: tuple[Guid, ...] = msgspec.field(default=(), name=SELF_SETTING)
    max_denials: Cap = msgspec.field(default=DEFAULT_MAX_DENIALS, name=MAX_DENIALS_SETTING)
    max_principals: Cap = msgspec.field(default=DEFAULT_MAX_PRINCIPALS, name=MAX_PRINCIPALS_SETTING)
    subscriptions: tuple[Guid, ...] = msgspec.field(default=(), name=SUBSCRIPTIONS_SETTING)
    dedupe_window: timedelta = msgspec.field(default=DEFAULT_WINDOW, name=WINDOW_SETTING)
    audit_workspaces: tuple[Guid, ...] = msgspec.field(default=(), name=AUDIT_WORKSPACES_SETTING)

    def __post_init__(self) -> None:
        if self.dedupe_window <= timedelta(0):
            raise ValueError("the window must be positive")


PROBLEMS = {
    "dedupe_window": "is not a positive ISO 8601 duration (e.g. PT10M); using the default of 10 minutes",
    "max_denials": f"is not a positive integer; using the default of {DEFAULT_MAX_DENIALS}",
    "max_principals": f"is not a positive integer; using the default of {DEFAULT_MAX_PRINCIPALS}",
    "self_object_ids": "is not a comma-separated list of object ids (GUIDs)",
    "subscriptions": "has entries that are not subscription ids (GUIDs); they are ignored",
    "audit_workspaces": "has entries that are not workspace ids (GUIDs); they are ignored",
}
"""What is wrong with each setting (never its value)."""


def _typed(f: msgspec.structs.FieldInfo, value: Any) -> Any:
    """``value`` as the field ``f`` holds it (its type and range; the struct's own checks), or None. Text of ASCII
    digits is a number; a duration is ISO 8601 text."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    try:
        return getattr(msgspec.convert({f.encode_name: value}, SettingValues), f.name)
    except msgspec.ValidationError:
        return None


def read(env: Mapping[str, str]) -> tuple[SettingValues, list[tuple[str, str]]]:
    """The typed settings, and (setting, problem) for each that is unusable: a value's default stands in, a list
    keeps its good entries."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for f in msgspec.structs.fields(SettingValues):
        raw = (env.get(f.encode_name) or "").strip()
        if not raw:
            continue
        if typing.get_origin(f.type) is tuple:
            entries = [s.strip() for s in raw.split(",") if s.strip()]
            good = [e for e in entries if _typed(f, [e]) is not None]
            guids = typing.get_args(f.type)[0] is Guid
            values[f.name] = tuple(dict.fromkeys(e.lower() for e in good)) if guids else tuple(good)
            ok = len(good) == len(entries)
        elif ok := (value := _typed(f, raw)) is not None:
            values[f.name] = value
        if not ok:
            problems.append((f.encode_name, PROBLEMS[f.name]))
    return SettingValues(**values), problems
