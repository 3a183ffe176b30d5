"""The messages of Genie Flow's API, field for field."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ._user import User


class GenieMessage(BaseModel):
    """Base of every message that names a session."""

    session_id: str


class GenieMessageWithActions(GenieMessage):
    """A message that tells which events the session accepts next."""

    next_actions: list[str] = Field(default_factory=list)


class AIProgressResponse(BaseModel):
    """How far a background run is: sub-tasks in total and done so far."""

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

    error: str | None = None
    response: str | None = None
    progress: AIProgressResponse | None = None


class AIStatusResponse(GenieMessageWithActions):
    """Whether a session is ready for its next event (no run in flight)."""

    ready: bool


class EventInput(GenieMessage):
    """An event sent to a session, with its input text (``""`` allowed, not null)."""

    event: str
    event_input: str


class SessionStartRequest(BaseModel):
    """The body of ``start_ephemeral_session``."""

    event: str
    event_input: str
    user_info: User | None = None
