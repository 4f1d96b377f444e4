"""The findings page's view of the approvals core: approval requests as the page shows them, and a decision
from the page handed to the core. The only module of the page that knows the core's types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..render.page import RequestView
    from .approver import Approver
    from .services import Runtime


@dataclass(frozen=True)
class Csrf:
    """What a decision form's token is bound to: the viewer, their cookie nonce, the time, the key's settings."""

    who: Approver
    nonce: str
    now: datetime
    env: Mapping[str, str]

    def token(self, request_id: str) -> str:
        from .approver import csrf_token, page_key

        return csrf_token(page_key(self.env), approver=self.who.object_id, request_id=request_id, nonce=self.nonce,
                          now=self.now)


@dataclass(frozen=True)
class DecisionOutcome:
    """What the page tells the approver after a POST: HTTP status, title and message."""

    status: int
    title: str
    message: str


async def requests(rt: Runtime, csrf: Csrf | None,
                   now: datetime) -> tuple[dict[str, list[RequestView]], list[RequestView]]:
    """Approval requests by finding record id, and the pending ones (newest first). Empty until the approvals
    core is merged."""
    del rt, csrf, now
    return {}, []


async def decide(rt: Runtime, request_id: str, decision: str, who: Approver, *, where: str,
                 reason: str) -> DecisionOutcome:
    """Hand one decision to the approvals core (not merged yet: refused, nothing changes)."""
    del rt, who, where, reason
    return DecisionOutcome(HTTPStatus.SERVICE_UNAVAILABLE, "Not available",
                           f"approval request {request_id}: {decision} is not available in this build")
