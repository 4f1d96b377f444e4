"""What apply did with one finding, typed: merged into the finding's JSON (``applied``, ``refused_by``, ``outcome``
and the fields of spec/cli.md), in one fixed key order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

OutcomeKind = Literal["applied", "already_granted", "refused", "suggested", "failed", "pending_approval",
                      "no_plan", "pending", "abandoned", "revoked"]


@dataclass(frozen=True, slots=True)
class Expiry:
    """When an applied grant ends: an ISO time, or None for never (shown as ``"expires_at": null``)."""

    at: str | None


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """One finding's apply result. Optional fields are shown only when set (``expiry`` only for a grant of ours)."""

    applied: bool
    outcome: OutcomeKind
    refused_by: str | None = None
    reason: str | None = None
    error: str | None = None
    grant_id: str | None = None
    expiry: Expiry | None = None
    assignment_id: str | None = None
    permissions_added: Mapping[str, tuple[str, ...]] | None = None
    adopted: bool = False
    detail: str | None = None
    request_id: str | None = None
    repeats: int = 0                 # the same write was made this many times before, under the same grant record
    approval_id: str | None = None   # outcome pending_approval, refused_by approval: the approval request's id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"applied": self.applied, "refused_by": self.refused_by, "outcome": self.outcome}
        for key in ("reason", "error", "grant_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.expiry is not None:
            out["expires_at"] = self.expiry.at
        if self.assignment_id:
            out["assignment_id"] = self.assignment_id
        if self.permissions_added:
            out["permissions_added"] = {k: list(v) for k, v in self.permissions_added.items()}
        if self.adopted:
            out["adopted"] = True
        for key in ("detail", "request_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.repeats:
            out["repeats"] = self.repeats
        if self.approval_id is not None:
            out["approval_id"] = self.approval_id
        return out

    def shared(self, detail: str) -> ApplyOutcome:
        """This outcome as seen by another finding with the same plan: nothing applied for it."""
        kind: OutcomeKind = "already_granted" if self.outcome in ("applied", "already_granted") else self.outcome
        return replace(self, applied=False, outcome=kind, detail=detail)


RevocationKind = Literal["revoke", "reconcile", "sweep"]


@dataclass(frozen=True, slots=True)
class Revocation:
    """What undoing one grant did, typed (``revoke``, ``revoke --expired``/``--reconcile``, the timer): read by the
    text (render/grants.py) and telemetry by attribute; ``to_dict`` is the JSON of ``revoke --output json``.

    ``kind``: ``revoke`` (one applied grant), ``reconcile`` (an intent settled by reading Azure: ``reconciled`` is
    its new outcome, None when it could not be read), ``sweep`` (an expired labelled role assignment no record
    accounts for, or a vault whose assignments could not be listed: ``grant_id`` None)."""

    grant_id: str | None
    kind: RevocationKind = "revoke"
    revoked: bool = False
    vault: str | None = None                 # the vault's resource id
    principal: str | None = None             # the grantee's object id
    removed: Mapping[str, tuple[str, ...]] | None = None   # access-policy permissions this call removed
    assignment_id: str | None = None         # the role assignment concerned
    deleted: bool = False                    # ... deleted by this call (False: it was already gone, or kept)
    reconciled: str | None = None
    detail: str | None = None
    reason: str | None = None                # why nothing was done
    error: str | None = None                 # what failed (the grant stays as it was; retry)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "reconcile":
            out: dict[str, Any] = {"grant_id": self.grant_id, "reconciled": self.reconciled}
            if self.error is not None:
                out["error"] = self.error
            else:
                out["detail"] = self.detail
            return out
        out = {"grant_id": self.grant_id} if self.grant_id is not None else {"vault": self.vault}
        if self.kind == "sweep" and self.grant_id is not None:
            out["assignment_id"] = self.assignment_id
        out["revoked"] = self.revoked
        for key in ("reason", "error", "detail"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out
