"""A session's event history: a typed, append-only, bounded record kept on the model.

Every session's ``GenieModel.history`` lists what happened to it in order: events received,
states entered, invoker runs with their duration and outcome, and failures. It is part of the
checkpointed state, so it survives restarts and moves between processes like the rest of the
model. The oldest entries are dropped beyond ``GenieModel.history_limit``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from ._assignments import CountsAssignments

__all__ = ["HistoryEntry", "HistoryKind"]


class HistoryKind(StrEnum):
    """What a history entry records."""

    EVENT = "event"
    """An event was accepted: ``event`` took the session from ``state`` to ``target``."""
    STATE_ENTERED = "state_entered"
    """The session entered ``state``."""
    INVOKER_RUN = "invoker_run"
    """An invoker state's run ended (``outcome`` ok or failed, ``duration_ms``)."""
    INVOKER_FAILURE = "invoker_failure"
    """One invoker call failed (``template``, ``attempt``, ``error``); retries may follow."""
    BUDGET_REFUSED = "budget_refused"
    """An invoker state was not run: the session's budget is spent."""
    MIGRATED = "migrated"
    """The session was loaded from an older flow version and migrated (``detail``: from, to)."""
    FLOW_STARTED = "flow_started"
    """``flow`` started, as a sub-flow called by ``state`` or interrupting it (``detail``: kind)."""
    FLOW_INTERRUPTED = "flow_interrupted"
    """``flow`` was suspended in ``state`` (``detail``: by which flow, and what triggered it)."""
    FLOW_RESUMED = "flow_resumed"
    """``flow`` resumed in ``state`` after the flow interrupting it ended."""
    FLOW_COMPLETED = "flow_completed"
    """``flow`` reached its final state ``state``."""
    APPROVAL_REQUESTED = "approval_requested"
    """A tool call waits for a person's approval (``detail``: id, tool, arguments, asked_by, approvers)."""
    APPROVAL_DECIDED = "approval_decided"
    """A tool call was approved, denied or expired (``detail``: id, tool, status, by, reason): the audit trail."""
    FLOW_ABORTED = "flow_aborted"
    """``flow`` aborted in ``state`` (one of its ``abort_states``, or a flow it depended on aborted)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HistoryEntry(CountsAssignments):
    """One thing that happened to a session.

    Attributes:
        kind: what happened.
        at: when (UTC).
        state: the state it happened in (the source state of an event).
        event: the event's name, for ``event`` entries.
        target: the state an event led to.
        template: the template whose invoker ran or failed.
        outcome: ``ok`` or ``failed`` for invoker runs.
        duration_ms: how long an invoker run or call took.
        attempt: which call of an invoker failed (1 is the first).
        error: what went wrong, for failures.
        flow: the sub-flow or interrupting flow the entry is about; None for the session's own flow.
        detail: anything else, as JSON data.
    """

    model_config = ConfigDict(extra="forbid")

    kind: HistoryKind
    at: datetime = Field(default_factory=_utc_now)
    state: str | None = None
    event: str | None = None
    target: str | None = None
    template: str | None = None
    outcome: str | None = None
    duration_ms: float | None = None
    attempt: int | None = None
    error: str | None = None
    flow: str | None = None
    detail: dict[str, Any] | None = None
