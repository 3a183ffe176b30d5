"""What a session keeps of its sub-flows and interruptions: a stack of flow frames on the model.

The session's own flow is at the bottom (its state is ``model.state``); each sub-flow it calls,
and each flow that interrupts it, is a :class:`FlowFrame` on ``model.flows.frames`` holding that
flow's own fields. The top frame is the flow that is active now; those below it are waiting for
it to return (called a sub-flow) or are suspended until it ends (interrupted).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FlowFrame", "FlowNotice", "FlowStack", "FlowStatus", "flow_label"]


class FlowStatus(StrEnum):
    """Where a flow is in its life (Colang 1.0's ``FlowStatus``)."""

    ACTIVE = "active"
    """It runs, or waits for the user's next event."""
    INTERRUPTED = "interrupted"
    """Suspended by an interrupting flow; it resumes where it was when that flow completes."""
    COMPLETED = "completed"
    """It reached one of its final states."""
    ABORTED = "aborted"
    """It reached one of its ``abort_states``, or a flow it depended on aborted."""


FrameKind = Literal["subflow", "interruption"]


class FlowFrame(BaseModel):
    """A flow running on top of the session's own flow.

    Attributes:
        flow: the flow's name (its ``SubFlow``/``Interruption`` ``name``).
        kind: ``subflow`` (called by a state, returns to it) or ``interruption`` (suspends the flow below).
        status: ``active`` for the top frame, ``interrupted`` for a frame an interruption suspended.
        caller: the node that called it (a sub-flow state) or that it interrupted (a user state).
        declared_by: of an interruption, the stack position of the flow that declared it (-1: the
            session's own); its ``inputs`` came from that flow's model, its ``outputs`` go back there.
        declaration: of an interruption, its position in that flow's ``interruptions``.
        resume_text: of an interruption, the response the interrupted state had given, offered
            again when it resumes.
        model: the flow's own model fields (its ``state`` among them); the dialogue, history and usage
            are the session's.
    """

    model_config = ConfigDict(extra="forbid")

    flow: str
    kind: FrameKind
    status: FlowStatus = FlowStatus.ACTIVE
    caller: str
    declared_by: int | None = None
    declaration: int | None = None
    resume_text: str | None = None
    model: dict[str, Any] = Field(default_factory=dict)


class FlowNotice(BaseModel):
    """What happened to the session's flows since the user's last event, for the client's response."""

    model_config = ConfigDict(extra="forbid")

    interrupted_by: str | None = None
    """The flow that interrupted the active flow."""
    resumed: str | None = None
    """The flow that resumed after the flow interrupting it ended."""
    aborted: list[str] = Field(default_factory=list)
    """The flows that aborted, innermost first."""
    said_from: int | None = None
    """The dialogue position of the first words of a flow that ended before the response: the
    response is every assistant utterance from there on."""


class FlowStack(BaseModel):
    """The session's sub-flows and interruptions (``GenieModel.flows``)."""

    model_config = ConfigDict(extra="forbid")

    frames: list[FlowFrame] = Field(default_factory=list)
    """The flows above the session's own, outermost first; the last one is active."""
    status: FlowStatus = FlowStatus.ACTIVE
    """The status of the session's own flow."""
    notice: FlowNotice | None = None
    """What the last event led to (interruptions, resumes, aborts), or None."""


def flow_label(model_class: type[Any]) -> str:
    """The default name of a flow: its model class's name in snake case, without a ``Model`` suffix.

    Example:
        >>> class OrderHelpModel: ...
        >>> flow_label(OrderHelpModel)
        'order_help'
    """
    name = model_class.__name__
    if name.endswith("Model") and len(name) > len("Model"):
        name = name[: -len("Model")]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
