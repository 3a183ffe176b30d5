"""The messages of Genie Flow's API, field for field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._user import User


class GenieMessage(BaseModel):
    """Base of every message that names a session."""

    session_id: str


class GenieMessageWithActions(GenieMessage):
    """A message that tells which events the session accepts next."""

    next_actions: list[str] = Field(default_factory=list)


def _is_none(value: object) -> bool:
    return value is None


_SESSION = "0190c3f2-6a8e-7d9b-a1f0-2c4b7e9d1a35"


class AIProgressResponse(BaseModel):
    """How far a background run is: sub-tasks in total and done so far."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"total_number_of_subtasks": 4, "number_of_subtasks_executed": 1}]}
    )

    total_number_of_subtasks: int
    number_of_subtasks_executed: int

    @property
    def percent_completed(self) -> float:
        """Done as a percentage of the total (0 before anything is done)."""
        if self.total_number_of_subtasks <= 0:
            return 0.0
        return 100.0 * self.number_of_subtasks_executed / self.total_number_of_subtasks


class AIResponse(GenieMessageWithActions):
    """The answer to a start or an event: the response text, or an error, or progress."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": _SESSION,
                    "next_actions": ["user_input"],
                    "error": None,
                    "response": "Welcome! How can I help?",
                    "progress": None,
                },
                {
                    "session_id": _SESSION,
                    "next_actions": ["poll"],
                    "error": None,
                    "response": None,
                    "progress": {"total_number_of_subtasks": 4, "number_of_subtasks_executed": 1},
                },
            ]
        }
    )

    error: str | None = None
    response: str | None = None
    progress: AIProgressResponse | None = None
    # Left out of the JSON unless the session runs sub-flows or interruptions: Genie Flow's response otherwise.
    active_flows: list[str] | None = Field(
        default=None,
        exclude_if=_is_none,
        description="The flows running, the session's own first, while a sub-flow or interruption runs.",
    )
    interrupted_by: str | None = Field(
        default=None, exclude_if=_is_none, description="The flow that interrupted the active one with this event."
    )
    resumed: str | None = Field(
        default=None,
        exclude_if=_is_none,
        description="The flow that resumed (its state's response offered again) when the flow interrupting it ended.",
    )
    aborted: list[str] | None = Field(
        default=None, exclude_if=_is_none, description="The flows that aborted with this event, innermost first."
    )
    approvals: list[dict[str, Any]] | None = Field(
        default=None,
        exclude_if=_is_none,
        description="Tool calls waiting for a person's decision (decide with POST .../approvals/{session}/{id}).",
    )


class AIStatusResponse(GenieMessageWithActions):
    """Whether a session is ready for its next event (no run in flight)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"session_id": _SESSION, "next_actions": ["user_input"], "ready": True}]}
    )

    ready: bool


class EventInput(GenieMessage):
    """An event sent to a session, with its input text (``""`` allowed, not null)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"session_id": _SESSION, "event": "user_input", "event_input": "What is the weather like?"}]
        }
    )

    event: str
    event_input: str


class SessionStartRequest(BaseModel):
    """The body of ``start_ephemeral_session``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"event": "user_input", "event_input": "Hello!", "user_info": None}]}
    )

    event: str
    event_input: str
    user_info: User | None = None
