"""Attribute-based (ABAC) conditions on role assignments, evaluated where Key Vault's common shape allows: pure.

A condition is evaluated here only when it is the documented Key Vault shape on the object name; anything else is
reported as not evaluable (None), never guessed.
"""

from __future__ import annotations

import re

from . import catalog

_COND_RE = re.compile(
    r"@(?P<src>Resource|Request)\[(?P<attr>[^\]]+)\]\s+(?P<op>StringEquals|StringEqualsIgnoreCase|"
    r"StringStartsWith|StringStartsWithIgnoreCase|StringNotEquals|StringLike)\s+'(?P<val>[^']*)'",
    re.IGNORECASE)
_ACTION_RE = re.compile(r"!?\(?\s*ActionMatches\{'(?P<action>[^']+)'\}", re.IGNORECASE)


def evaluate_condition(condition: str, action: str, object_name: str | None) -> bool | None:
    """Evaluate the common Key Vault ABAC shape on the object name; None when it cannot be evaluated here.

    Handles ``((!(ActionMatches{'A'})) OR (@Resource[...secrets:name] StringEquals 'x'))`` and its
    StringStartsWith / OR-joined variants; anything else (tags, environment, several clauses) is
    reported as not evaluable rather than guessed.
    """
    text = " ".join(condition.split())
    actions = [m.group("action") for m in _ACTION_RE.finditer(text)]
    if not actions:
        return None
    if not any(catalog.action_matches(a, action) for a in actions):
        return True   # the condition only restricts other actions: (!ActionMatches) is true
    clauses = list(_COND_RE.finditer(text))
    rest = _ACTION_RE.sub("", text)
    if not clauses or object_name is None or re.search(r"\band\b", _COND_RE.sub("", rest), re.IGNORECASE):
        return None
    for c in clauses:
        ok = _clause_holds(c, object_name)
        if ok is None:
            return None
        if ok:
            return True
    return False


def _clause_holds(clause: re.Match[str], name: str) -> bool | None:
    """Whether one ``@Resource[...name] <op> 'value'`` clause holds for the object ``name``; None when the clause
    is on another attribute or uses an operator not evaluated here."""
    attr = clause.group("attr").lower()
    if not attr.endswith(":name") and not attr.endswith("/name"):
        return None
    op, val = clause.group("op").lower(), clause.group("val")
    if op in ("stringequals", "stringequalsignorecase"):
        return name.lower() == val.lower() if op.endswith("ignorecase") else name == val
    if op.startswith("stringstartswith"):
        return name.lower().startswith(val.lower()) if op.endswith("ignorecase") else name.startswith(val)
    if op == "stringnotequals":
        return name != val
    return None
