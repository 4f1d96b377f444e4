"""Operation resolution against the catalogue: operation, data action and access-policy permission.

An operation is named only when the input (OperationName, data action, permission + path, method + path)
leaves exactly one candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .. import catalog
from .values import object_from_path, text

# --- operations ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    op: catalog.Operation
    method: str
    segs: tuple[str | None, ...]  # None = a {placeholder}
    optional_tail: bool  # the last placeholder is a version and may be absent
    literals: int


@lru_cache(maxsize=1)
def _templates() -> tuple[_Template, ...]:
    out = []
    for op in catalog.operations():
        segs = tuple(None if s.startswith("{") else s.lower() for s in op.path.split("/") if s)
        raw = [s for s in op.path.split("/") if s]
        optional = bool(raw) and raw[-1].endswith("-version}")
        out.append(_Template(op, op.method.upper(), segs, optional, sum(1 for s in segs if s is not None)))
    return tuple(out)


def _matches(t: _Template, segs: list[str]) -> bool:
    n = len(t.segs)
    if len(segs) == n - 1 and t.optional_tail:
        tsegs = t.segs[:-1]
    elif len(segs) == n:
        tsegs = t.segs
    else:
        return False
    return all(ts is None or ts == s.lower() for ts, s in zip(tsegs, segs, strict=True))


def ops_for_path(path: str | None, method: str | None = None) -> list[catalog.Operation]:
    """Operations whose REST template matches a path (and method); the most literal templates win."""
    if not path:
        return []
    segs = [s for s in path.split("?", 1)[0].split("/") if s]
    m = method.upper() if method else None
    found = [t for t in _templates() if (m is None or t.method == m) and _matches(t, segs)]
    if not found:
        return []
    best = max(t.literals for t in found)
    seen: dict[tuple[str, str], catalog.Operation] = {}
    for t in found:
        if t.literals == best:
            seen.setdefault((t.method, t.op.path), t.op)  # same REST call: the base operation (first) stands
    return list(seen.values())


@lru_cache(maxsize=512)
def _perm_kinds(perm: str) -> tuple[str, ...]:
    return tuple(k for k in catalog.OBJECT_KINDS if catalog.canonical_permission(k, perm))


@lru_cache(maxsize=512)
def _ops_for_permission(kind: str, perm: str) -> tuple[catalog.Operation, ...]:
    p = perm.lower()
    return tuple(o for o in catalog.operations()
                 if any(x.lower() == p for x in o.access_policy.get(kind, ())) and len(o.access_policy) == 1
                 and len(o.access_policy[kind]) == 1)


@lru_cache(maxsize=512)
def _ops_for_action(action: str) -> tuple[catalog.Operation, ...]:
    return tuple(catalog.operations_for_action(action))


@lru_cache(maxsize=512)
def _perms_for_action(action: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted(catalog.permissions_for_action(action).items()))


@lru_cache(maxsize=512)
def _perm_actions(kind: str, perm: str) -> tuple[str, ...]:
    return catalog.permission_data_actions(kind, perm)


@lru_cache(maxsize=512)
def canonical_operation(name: str) -> str | None:
    """The catalogue's spelling of a diagnostic OperationName, or None when it is not a data-plane operation."""
    op = catalog.operation(name)
    return op.name if op else None


def _narrow(cands: Iterable[catalog.Operation], path: str | None, method: str | None) -> list[catalog.Operation]:
    cands = list(cands)
    if len(cands) > 1 and path:
        by_path = {o.name for o in ops_for_path(path, method)}
        narrowed = [o for o in cands if o.name in by_path]
        if narrowed:
            cands = narrowed
    if len(cands) > 1 and method:
        narrowed = [o for o in cands if o.method.upper() == method.upper()]
        if narrowed:
            cands = narrowed
    return cands


@dataclass(frozen=True)
class OperationFacts:
    """Operation, data action and access-policy permission, each filled from the catalogue when implied."""

    operation: str | None
    data_action: str | None
    permission: dict[str, tuple[str, ...]] | None


def resolve_operation(*, operation: str | None = None, action: str | None = None,
                      permission: tuple[str, str] | None = None, word: str | None = None,
                      path: str | None = None, method: str | None = None,
                      kind: str | None = None) -> OperationFacts:
    """Decide operation / data action / access-policy permission from whatever the input names."""
    op_name = _operation_name(operation)
    perm = _permission(permission, word, path=path, kind=kind)
    act = catalog.canonical_action(action) if action else None

    op = catalog.operation(op_name) if op_name else None
    if op is None and op_name is None:
        op = _implied_operation(act, perm, path=path, method=method)
        op_name = op.name if op is not None else None
    return OperationFacts(op_name, _data_action(act, op, perm), _access_policy(perm, op, act))


def _operation_name(operation: str | None) -> str | None:
    """The operation named: canonical when the catalogue knows it, else kept only if it is a plain identifier."""
    raw_op = text(operation)
    if not raw_op:
        return None
    return canonical_operation(raw_op) or (raw_op if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{1,80}", raw_op) else None)


def _permission(permission: tuple[str, str] | None, word: str | None, *, path: str | None,
                kind: str | None) -> tuple[str, str] | None:
    """The access-policy permission named outright, or a bare word (``get``) placed on the one object kind the
    input's kind or path allows; None when unknown or still ambiguous."""
    if permission:
        perm_kind, p = permission
        canon = catalog.canonical_permission(perm_kind, p)
        return (perm_kind, canon) if canon else None
    if not word:
        return None
    kinds = _perm_kinds(word)
    if kind in kinds:
        kinds = (kind,)
    if path:
        obj = object_from_path(path)
        if obj and obj.kind in kinds:
            kinds = (obj.kind,)
    if len(kinds) != 1:
        return None
    canon = catalog.canonical_permission(kinds[0], word)
    return (kinds[0], canon) if canon else None


def _implied_operation(act: str | None, perm: tuple[str, str] | None, *, path: str | None,
                       method: str | None) -> catalog.Operation | None:
    """The one operation the data action, permission or request line implies when none is named; None when
    several (or none) fit."""
    cands: list[catalog.Operation] = []
    if act:
        cands = _narrow(_ops_for_action(act), path, method)
    elif perm:
        cands = _narrow(_ops_for_permission(*perm), path, method)
    elif path and method:
        cands = ops_for_path(path, method)
    return cands[0] if len(cands) == 1 else None


def _data_action(act: str | None, op: catalog.Operation | None, perm: tuple[str, str] | None) -> str | None:
    """The data action named, else the single one the operation, or else the permission, implies."""
    if act is not None:
        return act
    if op is not None and len(op.data_actions) == 1:
        return op.data_actions[0]
    if perm is not None:
        acts = _perm_actions(*perm)
        if len(acts) == 1:
            return acts[0]
    return None


def _access_policy(perm: tuple[str, str] | None, op: catalog.Operation | None,
                   act: str | None) -> dict[str, tuple[str, ...]] | None:
    """Access-policy permissions: the one named, else the operation's, else those the data action needs."""
    if perm is not None:
        return {perm[0]: (perm[1],)}
    if op is not None:
        return dict(op.access_policy)
    if act is not None:
        found = _perms_for_action(act)
        return dict(found) if found else None
    return None
