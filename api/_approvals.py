"""The approvals routes' bodies: tool calls waiting for a person, and a decision on one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ApprovalList(BaseModel):
    """A session's approval requests: the pending ones and the latest decided ones."""

    session_id: str
    approvals: list[dict[str, Any]] = Field(
        description="each request: id, tool, arguments, asked_by, state, template, approvers, requested_at, "
        "expires_at, status (pending, approved, denied, expired), decided_by, decided_at, reason"
    )


class ApprovalDecision(BaseModel):
    """A decision on a tool call: approve it (the tool runs) or deny it (the model hears so)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"approve": True, "reason": "fine by me"}]}
    )

    approve: bool
    reason: str | None = Field(default=None, max_length=2000, description="kept in the audit trail")
    by: str | None = Field(
        default=None,
        max_length=320,
        description="who decides (a user's email), when the server has no API keys; with API keys the caller decides",
    )
