"""How genie-graph's errors answer over HTTP: a status code and a JSON body naming what was wrong.

Every error body has ``error`` (a stable code a client can switch on) and ``detail`` (the message,
which says what to do next), plus the facts of the error. FastAPI's own 422 for a malformed body
keeps FastAPI's shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from genie_graph.errors import (
    ApprovalError,
    EventFailed,
    EventNotAllowed,
    FlowVersionUnsupported,
    NotAMember,
    SessionBusy,
    StoreUnavailable,
    UnknownMessage,
    UnknownModelKey,
    UnknownSession,
)


class ErrorBody(BaseModel):
    """The body of every error genie-graph's API answers (besides FastAPI's own 422)."""

    error: str = Field(description="a stable code: unknown_model_key, unknown_session, event_not_allowed, ...")
    detail: str = Field(description="what was wrong and what to do next")

    model_config = {"extra": "allow"}


class ApiError(Exception):
    """An error the API answers with ``status`` and an :class:`ErrorBody`."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None, **facts: Any):
        super().__init__(detail)
        self.status = status
        self.body = {"error": error, "detail": detail, **facts}
        self.headers = headers


def _refusal_facts(refused: EventNotAllowed) -> dict[str, Any]:
    return json.loads(refused.to_json())  # type: ignore[no-any-return]


def as_api_error(exc: Exception, genie_flow_status_codes: bool = False) -> ApiError:
    """The HTTP answer to one of genie-graph's errors (``exc`` of another type is re-raised)."""
    refusal_status = 500 if genie_flow_status_codes else 409
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModelKey):
        return ApiError(404, "unknown_model_key", str(exc), model_key=exc.model_key, known_model_keys=exc.known)
    if isinstance(exc, UnknownSession):
        return ApiError(404, "unknown_session", str(exc), session_id=exc.session_id)
    if isinstance(exc, EventNotAllowed):
        return ApiError(refusal_status, "event_not_allowed", str(exc), **_refusal_facts(exc))
    if isinstance(exc, SessionBusy):
        return ApiError(
            refusal_status,
            "session_busy",
            str(exc),
            session_id=exc.session_id,
            received_event=exc.received,
            next_actions=["poll"],
        )
    if isinstance(exc, EventFailed):
        return ApiError(
            500 if genie_flow_status_codes else 422,
            "event_failed",
            str(exc),
            session_id=exc.session_id,
            received_event=exc.received,
            possible_events=exc.allowed,
        )
    if isinstance(exc, FlowVersionUnsupported):
        return ApiError(
            409,
            exc.code,
            str(exc),
            session_id=exc.session_id,
            flow_version=exc.version,
            current_version=exc.current,
            served_versions=exc.served,
        )
    if isinstance(exc, ApprovalError):
        status = {"unknown_approval": 404, "approval_forbidden": 403}.get(exc.code, 409)
        return ApiError(status, exc.code, str(exc), session_id=exc.session_id, approval_id=exc.approval_id)
    if isinstance(exc, UnknownMessage):
        return ApiError(404, exc.code, str(exc), session_id=exc.session_id, seq=exc.seq, messages=exc.count)
    if isinstance(exc, NotAMember):
        return ApiError(403, exc.code, str(exc), session_id=exc.session_id, sender=exc.sender, members=exc.members)
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "store_unavailable", str(exc), headers={"Retry-After": "1"}, store=exc.url)
    raise exc


def install_error_handlers(app: FastAPI, genie_flow_status_codes: bool) -> None:
    """Answer genie-graph's errors with their status codes instead of a 500."""

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        error = as_api_error(exc, genie_flow_status_codes)
        return JSONResponse(error.body, status_code=error.status, headers=error.headers)

    handled = (
        ApiError,
        UnknownModelKey,
        UnknownSession,
        EventNotAllowed,
        SessionBusy,
        EventFailed,
        FlowVersionUnsupported,
        StoreUnavailable,
        ApprovalError,
        UnknownMessage,
        NotAMember,
    )
    for kind in handled:
        app.add_exception_handler(kind, handle)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer."""
    described = {
        400: "the JMESPath `path` does not parse",
        401: "API keys are on and the request carries no valid key",
        403: "the caller may not decide this approval request (`approval_forbidden`); nothing changed",
        404: "unknown model key, or unknown (or expired, or another caller's) session, or unknown approval "
        "request (`unknown_approval`), or unknown group message (`unknown_message`)",
        409: "the event is not allowed in the current state (`event_not_allowed`), "
        "or a run is in flight (`session_busy`), or the session started on a flow version this server neither "
        "serves nor migrates (`flow_version_unsupported`), or the approval request was decided or expired "
        "already (`approval_closed`); the session is unchanged",
        413: "`event_input` is larger than the configured limit",
        422: "the body is malformed, or a hook or template of the flow failed on this event (`event_failed`); "
        "the session is unchanged",
        503: "the store cannot be reached; nothing changed, retry",
    }
    return {status: {"model": ErrorBody, "description": described[status]} for status in statuses}
