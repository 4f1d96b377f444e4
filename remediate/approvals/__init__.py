"""Human approval of plans (issue 11): ``model`` (pure: the request bound to one exact write, its hash, the state
machine) and ``service`` (open, decide and apply exactly once, expire, list; through an
``store.approvals.ApprovalStore``: Azure Table ``approvals`` in the app, SQLite for the CLI)."""

from .model import (
    OPEN_STATES,
    Act,
    ApprovalRequest,
    ApprovalState,
    Approver,
    Channel,
    DecisionEntry,
    EndCode,
    ExactChange,
    HistoryEvent,
    RefusalCode,
    Rules,
    Step,
    Verb,
    exact_change,
    history,
    plan_hash,
)

__all__ = ["OPEN_STATES", "Act", "ApprovalRequest", "ApprovalState", "Approver", "Channel", "DecisionEntry",
           "EndCode", "ExactChange", "HistoryEvent", "RefusalCode", "Rules", "Step", "Verb", "exact_change", "history",
           "plan_hash"]
