"""The group routes: sessions many people write to, each message followed as an execution.

``POST {prefix}/{key}/group/start_session`` starts one (optionally naming its members);
``POST .../group/{session}/messages`` adds a message (the sender is the authenticated caller, or
the body's ``sender`` without API keys) and answers 202 with its number; its execution is read
with ``GET .../messages/{seq}`` (``?wait=`` seconds to long-poll) or followed as server-sent
events with ``GET .../messages/{seq}/stream``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from genie_graph import AIResponse, Execution, GenieFlow, GroupMessage, User

from ._auth import Caller, CallerDep
from ._errors import ApiError, responses
from ._stream import SSE_MEDIA_TYPE

_MODEL_KEY = Path(description="a registered model key", examples=["team_chat"])
_SESSION_ID = Path(description="the session id `start_session` answered")
_SEQ = Path(ge=1, description="the message's number in the session's log (1 is the first)")
_NAME = Field(min_length=1, max_length=320, pattern=r"\S")


class GroupStartBody(BaseModel):
    """A group session: who it is for, seed data, and optionally its members (only they may write)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"members": ["alice@example.org", "bob@example.org"]}]}
    )

    user_info: User | None = None
    seed_data: str | None = None
    members: list[Annotated[str, _NAME]] | None = Field(
        default=None,
        max_length=1000,
        description="who may write to the session (with API keys, the caller is added); none: anyone with its id",
    )


class MessageBody(BaseModel):
    """A message to a group session."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"content": "Genie, what is the weather in Vienna?", "sender": "alice"}]},
    )

    content: str = Field(description="what the sender says: the event's input when it reaches the flow")
    sender: Annotated[str, _NAME] | None = Field(
        default=None,
        description="who says it: required without API keys; with API keys the caller is the sender (a different "
        "name here is refused)",
    )
    event: str = Field(default="user_input", description="the flow event the message is sent as, if delegated")


class MembersBody(BaseModel):
    """People to name as members of a group session."""

    model_config = ConfigDict(extra="forbid")

    members: list[Annotated[str, _NAME]] = Field(min_length=1, max_length=1000)


class MessageAccepted(BaseModel):
    """A message taken into the session's log: its number, and where to follow its execution."""

    message: GroupMessage
    execution: str = Field(description="the execution's URL (GET; `?wait=<seconds>` long-polls)")
    stream: str = Field(description="the execution's server-sent events URL")


class MessageLog(BaseModel):
    """A group session's members and messages, in the order received."""

    session_id: str
    members: list[str] = Field(description="the named members (none: anyone with the session may write)")
    messages: list[GroupMessage]


def _frame(index: int | None, item: dict[str, Any]) -> bytes:
    identity = "" if index is None else f"id: {index}\n"
    return f"{identity}event: {item['event']}\ndata: {json.dumps(item['data'])}\n\n".encode()


async def _frames(flow: GenieFlow, model_key: str, session_id: str, seq: int, start: int) -> AsyncIterator[bytes]:
    items = flow.astream_execution(model_key, session_id, seq, start)
    index = start
    try:
        async for item in items:
            if item["event"] == "token":  # passed on live, not recorded: no id to resume from
                yield _frame(None, item)
                continue
            yield _frame(index, item)
            index += 1
    finally:
        await items.aclose()


def group_router(
    flow: GenieFlow,
    prefix: str,
    check_owner: Callable[[str, str, Caller], Awaitable[None]],
    check_size: Callable[[str], None],
) -> APIRouter:
    """The group routes, under ``prefix``; ``check_owner`` admits the session's owner and members."""
    router = APIRouter(prefix=prefix, tags=["group sessions"])

    def links(model_key: str, session_id: str, seq: int) -> tuple[str, str]:
        execution = f"{prefix}/{model_key}/group/{session_id}/messages/{seq}"
        return execution, f"{execution}/stream"

    async def stream_response(model_key: str, session_id: str, seq: int, start: int) -> StreamingResponse:
        await flow.aexecution(model_key, session_id, seq)  # an unknown message answers 404 before streaming
        return StreamingResponse(
            _frames(flow, model_key, session_id, seq, start),
            media_type=SSE_MEDIA_TYPE,
            headers={"Cache-Control": "no-cache"},
        )

    @router.post(
        "/{model_key}/group/start_session",
        response_model=AIResponse,
        summary="Start a group session",
        description="Like `start_session`, and it may name the session's `members`: then only they (and, with API "
        "keys, the caller who started it) may write to it. Without members, anyone who has the session id may "
        "write when the server has no API keys; with API keys, only its owner until members are named.",
        responses=responses(401, 404, 503),
    )
    async def start_group_session(
        model_key: Annotated[str, _MODEL_KEY], caller: CallerDep, body: GroupStartBody | None = None
    ) -> AIResponse:
        flow.flow_of(model_key)
        body = body or GroupStartBody()
        answer = await flow.acreate_new_session(model_key, body.user_info, body.seed_data, owner=caller.name)
        if body.members:
            named = [*body.members, *([caller.name] if caller.name else [])]
            await flow.aadd_members(model_key, answer.session_id, named)
        return answer

    @router.post(
        "/{model_key}/group/{session_id}/members",
        response_model=MessageLog,
        summary="Name members of a group session",
        description="From then on only members may write to it. Members may also decide approval requests whose "
        "`approvers` is `member`.",
        responses=responses(401, 404, 503),
    )
    async def add_members(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        body: MembersBody,
        caller: CallerDep,
    ) -> MessageLog:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        owner = await flow.asession_owner(model_key, session_id)  # with API keys the owner stays a writer
        await flow.aadd_members(model_key, session_id, [*body.members, *([owner] if owner else [])])
        return await message_log(model_key, session_id, caller)

    @router.post(
        "/{model_key}/group/{session_id}/messages",
        status_code=202,
        response_model=MessageAccepted,
        summary="Write a message to a group session",
        description="The message is numbered in the order received and processed in the background: after the "
        "sender's earlier messages, the flow's group reasoner decides whether it is for the flow (`delegate`) or "
        "not (`ignore`); a delegated message is sent as its `event`. Messages of different senders are processed "
        "concurrently, each sender's in order. Follow the execution at `execution` (poll) or `stream` (SSE); "
        "with `Accept: text/event-stream` this answer is that stream.",
        responses={
            **responses(401, 404, 413, 422, 503),
            403: {
                "description": "without API keys: the body's sender is not a named member (`not_a_member`); with "
                "API keys: the body names another sender than the caller (`sender_mismatch`). Nothing was logged. "
                "With API keys, a caller who is neither the session's owner nor a member gets 404."
            },
            202: {"content": {"application/json": {}, SSE_MEDIA_TYPE: {}}},
        },
    )
    async def write_message(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        body: MessageBody,
        request: Request,
        caller: CallerDep,
    ) -> Any:
        flow.flow_of(model_key)
        check_size(body.content)
        await check_owner(model_key, session_id, caller)  # with API keys: the owner and named members only
        if caller.name is not None and body.sender not in (None, caller.name):
            raise ApiError(
                403,
                "sender_mismatch",
                f"you are {caller.name!r}; a message cannot be sent as {body.sender!r}. Leave `sender` out.",
                sender=body.sender,
            )
        sender = caller.name or body.sender
        if sender is None:
            raise ApiError(422, "sender_required", "name the message's `sender`: the server has no API keys to tell")
        try:
            message = await flow.asend_message(model_key, session_id, body.content, sender, body.event)
        except ValueError as exc:
            raise ApiError(422, "invalid_message", str(exc)) from None
        execution, stream = links(model_key, session_id, message.seq)
        if SSE_MEDIA_TYPE in request.headers.get("accept", ""):
            answer = await stream_response(model_key, session_id, message.seq, 0)
            answer.status_code = 202  # accepted, as documented; Location says where to resume the stream
            answer.headers["Location"] = execution
            return answer
        accepted = MessageAccepted(message=message, execution=execution, stream=stream)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers={"Location": execution})

    @router.get(
        "/{model_key}/group/{session_id}/messages",
        response_model=MessageLog,
        summary="A group session's messages, in the order received",
        responses=responses(401, 404, 503),
    )
    async def message_log(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        caller: CallerDep,
        after: Annotated[int, Query(ge=0, description="only the messages numbered above this")] = 0,
    ) -> MessageLog:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        messages = await flow.amessages(model_key, session_id, after)
        members = sorted(await flow.amembers(model_key, session_id))
        return MessageLog(session_id=session_id, members=members, messages=messages)

    @router.get(
        "/{model_key}/group/{session_id}/messages/{seq}",
        response_model=Execution,
        summary="A message's execution: its status and what happened so far",
        description="`items` in order: `decision` (`delegate` or `ignore`), for a delegated message `state` and "
        "`progress` items, an `approval` per tool call waiting for a person, and last `response` (the flow's "
        "answer) or `error`. `message.status` says where it is; `?wait=<seconds>` waits (up to 30) for it "
        "to finish.",
        responses=responses(401, 404, 503),
    )
    async def execution(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        seq: Annotated[int, _SEQ],
        caller: CallerDep,
        wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for the execution to finish")] = 0,
    ) -> Execution:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        return await flow.aexecution(model_key, session_id, seq, wait=wait)

    @router.get(
        "/{model_key}/group/{session_id}/messages/{seq}/stream",
        summary="Follow a message's execution as server-sent events",
        description="One frame per item (`event:` its kind, `data:` its JSON, `id:` its index), those already "
        "there first; the stream ends when the execution finishes. Reconnect with `Last-Event-ID` to go on "
        "after the last frame seen. While the message's run goes on, `token` frames (LLM text as it arrives, "
        "no `id`: they are not recorded) come between them.",
        response_class=StreamingResponse,
        responses={**responses(401, 404, 503), 200: {"content": {SSE_MEDIA_TYPE: {}}}},
    )
    async def execution_stream(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        seq: Annotated[int, _SEQ],
        caller: CallerDep,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
    ) -> StreamingResponse:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        return await stream_response(model_key, session_id, seq, 0 if last_event_id is None else last_event_id + 1)

    return router
