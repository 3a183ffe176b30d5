"""``create_app``: a ``GenieFlow`` behind Genie Flow's HTTP routes, with proper status codes and streaming."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jmespath
from fastapi import APIRouter, Body, FastAPI, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, Field

from genie_graph import POLL, AIResponse, AIStatusResponse, EventInput, GenieFlow, SessionStartRequest, User
from genie_graph._history import HistoryKind
from genie_graph.errors import UnknownSession

from ._approvals import ApprovalDecision, ApprovalList
from ._auth import Caller, CallerDep
from ._describe import DIAGRAM_MEDIA_TYPES, DiagramFormat, Diagrams, FlowDescription, describe_flow, session_highlight
from ._errors import ApiError, ErrorBody, install_error_handlers, responses
from ._group import group_router
from ._ledger import HistoryReport, UsageReport, history_report, usage_report
from ._playground import install_playground
from ._stream import SSE_MEDIA_TYPE, event_stream

DEFAULT_PREFIX = "/v1/ai"
DEFAULT_MAX_EVENT_INPUT_BYTES = 64 * 1024
DEFAULT_POLL_WAIT_SECONDS = 1.0
"""How long a poll of a run in flight waits for news before answering ``["poll"]``."""
MAX_POLL_WAIT_SECONDS = 30.0
"""Longer, and proxies and clients' timeouts start cutting polls off."""
DEFAULT_EVENT_WAIT_SECONDS = 0.25
"""How long an event into an invoker state waits for the run's answer before answering ``["poll"]``:
a fast invoker's turn is one request, and a slow one's ``["poll"]`` comes too soon for a person to see."""

_EXAMPLE_SESSION = "0190c3f2-6a8e-7d9b-a1f0-2c4b7e9d1a35"
_SESSION_ID = Path(description="the session id `start_session` answered", examples=[_EXAMPLE_SESSION])
_MODEL_KEY = Path(description="a registered model key", examples=["q_and_a"])


class StartSessionBody(BaseModel):
    """The optional body of ``start_session``: who the session is for, and data to seed the model with."""

    user_info: User | None = None
    seed_data: str | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"user_info": {"email": "ada@example.org", "firstname": "Ada", "lastname": "Lovelace"}},
                {"seed_data": '{"topic": "weather"}'},
            ]
        }
    }


class UserSessions(BaseModel):
    """A user and their live sessions of one model key (Genie Flow's user document)."""

    email: str
    firstname: str
    lastname: str
    custom_properties: dict[str, str] | None = None
    name: str
    sessions: list[str] = Field(description="ids of the user's live sessions of the model key, oldest first")


class ModelKeys(BaseModel):
    """The registered model keys."""

    model_keys: list[str]


class Health(BaseModel):
    """The service is up and its store answers."""

    status: str = "ok"
    store: str = Field(description="the store's kind: memory, sqlite or redis")


_EVENT_EXAMPLES = {
    "user input": {
        "value": {
            "session_id": "0190c3f2-6a8e-7d9b-a1f0-2c4b7e9d1a35",
            "event": "user_input",
            "event_input": "What is the weather like?",
        }
    },
    "poll": {"value": {"session_id": "0190c3f2-6a8e-7d9b-a1f0-2c4b7e9d1a35", "event": "poll", "event_input": ""}},
}


def create_app(
    flow: GenieFlow,
    prefix: str = DEFAULT_PREFIX,
    *,
    api_keys: Mapping[str, str] | None = None,
    cors_origins: Sequence[str] = (),
    max_event_input_bytes: int = DEFAULT_MAX_EVENT_INPUT_BYTES,
    poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
    event_wait_seconds: float = DEFAULT_EVENT_WAIT_SECONDS,
    genie_flow_status_codes: bool = False,
    close_flow: bool = False,
    playground: bool = True,
    roles: Mapping[str, Sequence[str]] | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """A FastAPI app serving ``flow`` with Genie Flow's routes under ``prefix``.

    Args:
        flow: the ``GenieFlow`` with its models registered.
        prefix: where the routes are mounted (Genie Flow's ``/v1/ai`` by default).
        api_keys: ``{key: caller name}``. When given, every route but ``/health`` needs a key
            (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``), and sessions are bound to the
            caller that started them: another caller's session id answers 404.
        cors_origins: origins allowed to call from a browser (``["*"]`` for any).
        max_event_input_bytes: the largest ``event_input`` (UTF-8 bytes) accepted; larger answers 413.
        poll_wait_seconds: how long a poll of a run in flight may wait for news before it answers
            ``["poll"]``: it answers as soon as the run settles or its progress changes, so a client
            polling every few milliseconds makes one request per change. 0 answers at once, as Genie
            Flow does.
        event_wait_seconds: how long an event into an invoker state may wait for the run to settle.
            If it does, the event answers as the poll after it would (the answer and the next events),
            so a fast invoker's turn is one request; else it answers ``["poll"]`` when the time is up.
            0 answers ``["poll"]`` at once, as Genie Flow does.
        genie_flow_status_codes: answer refused events with 500, as Genie Flow does, instead of 409/422.
        close_flow: close ``flow`` when the app shuts down.
        playground: serve the playground, a web page to chat with the flows and watch their state
            machines, at ``/`` (and ``/playground/``). It uses the API like any client, so API keys
            apply to it too.
        roles: ``{caller name: [role, ...]}``, for tools whose approvals need ``role:<name>``.
        **fastapi_options: passed to ``FastAPI(...)`` (``title``, ``root_path``, ``debug``, ...).

    Returns:
        The app; serve it with uvicorn, or use ``genie-graph serve``.
    """
    if max_event_input_bytes < 1:
        raise ValueError(f"max_event_input_bytes must be at least 1, got {max_event_input_bytes}")
    if not 0 <= poll_wait_seconds <= MAX_POLL_WAIT_SECONDS:
        raise ValueError(f"poll_wait_seconds must be between 0 and {MAX_POLL_WAIT_SECONDS:g}, got {poll_wait_seconds}")
    if not 0 <= event_wait_seconds <= MAX_POLL_WAIT_SECONDS:
        raise ValueError(
            f"event_wait_seconds must be between 0 and {MAX_POLL_WAIT_SECONDS:g}, got {event_wait_seconds}"
        )
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The server's loop does the flow's work: a request reaches it without a hop between threads.
        attached = await flow.attach_to_running_loop()
        yield
        if close_flow or attached:  # connections made on this loop close with it; a later use reopens them
            await flow.aclose()

    fastapi_options.setdefault("title", "genie-graph")
    fastapi_options.setdefault(
        "description",
        "Genie Flow's poll/event API for dialogue flows compiled to LangGraph, with proper status codes "
        "and server-sent events.",
    )
    app = FastAPI(lifespan=lifespan, **fastapi_options)
    app.state.flow = flow
    install_error_handlers(app, genie_flow_status_codes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept"],
        )
    app.state.api_keys = dict(api_keys or {})
    app.state.roles = {name: list(granted) for name, granted in (roles or {}).items()}
    router = APIRouter(prefix=prefix)
    diagrams = Diagrams()

    async def check_owner(model_key: str, session_id: str, caller: Caller) -> None:
        if caller.name is None:
            return  # no API keys: sessions belong to nobody (an unknown one answers 404 where it is used)
        owner = await flow.asession_owner(model_key, session_id)
        if owner != caller.name and caller.name not in await flow.amembers(model_key, session_id):
            raise UnknownSession(model_key, session_id)  # another caller's session is none of yours (members' aside)

    def check_size(event_input: str) -> None:
        size = len(event_input.encode())
        if size > max_event_input_bytes:
            raise ApiError(
                413,
                "event_input_too_large",
                f"event_input is {size} bytes; at most {max_event_input_bytes} are accepted. "
                "Send a shorter text, or raise the server's limit (--max-event-input).",
                limit_bytes=max_event_input_bytes,
                received_bytes=size,
            )

    @router.get("/", summary="The registered model keys", response_model=ModelKeys, responses=responses(401))
    async def model_keys(_caller: CallerDep) -> ModelKeys:
        return ModelKeys(model_keys=flow.model_keys)

    async def start_session(
        model_key: Annotated[str, _MODEL_KEY], caller: CallerDep, body: StartSessionBody | None = None
    ) -> AIResponse:
        flow.flow_of(model_key)
        body = body or StartSessionBody()
        return await flow.acreate_new_session(model_key, body.user_info, body.seed_data, owner=caller.name)

    router.add_api_route(
        "/{model_key}/start_session",
        start_session,
        methods=["GET", "POST"],
        response_model=AIResponse,
        summary="Start a session",
        description="Renders the initial state's template: `response` is its text, `next_actions` the events "
        "the initial state takes. The body is optional.",
        responses=responses(401, 404, 503),
    )

    @router.post(
        "/{model_key}/start_ephemeral_session",
        response_model=AIResponse,
        summary="Start a session and send it an event at once",
        description="No intro is rendered. A refused first event leaves no session behind.",
        responses=responses(401, 404, 409, 413, 422, 503),
    )
    async def start_ephemeral_session(
        model_key: Annotated[str, _MODEL_KEY], request: SessionStartRequest, caller: CallerDep
    ) -> AIResponse:
        flow.flow_of(model_key)
        check_size(request.event_input)
        return await flow.astart_ephemeral_session(
            model_key, request.event, request.event_input, request.user_info, owner=caller.name, strict=True
        )

    async def send(model_key: str, event: EventInput, caller: Caller) -> AIResponse:
        flow.flow_of(model_key)
        check_size(event.event_input)
        await check_owner(model_key, event.session_id, caller)
        if event.event == POLL:
            return await flow.aprocess_event(model_key, event, wait=poll_wait_seconds)
        return await flow.asend_event(model_key, event, wait=event_wait_seconds)

    @router.post(
        "/{model_key}/event",
        response_model=AIResponse,
        summary="Send an event, or poll",
        description='`event: "poll"` polls: `next_actions == ["poll"]` with `progress` while a run is in '
        "flight, then the response (or the invoker's failure in `error`, with status 200). Any other event "
        "moves the session on: into a user state it answers with the response; into an invoker state with "
        "the run's answer if the run settles within the server's event wait (0.25 s by default), else "
        '`["poll"]`. With `Accept: text/event-stream` the answer is a stream of server-sent events '
        "(see `/event/stream`).",
        responses={
            **responses(401, 404, 409, 413, 422, 503),
            200: {"content": {"application/json": {}, SSE_MEDIA_TYPE: {}}},
        },
    )
    async def event(
        model_key: Annotated[str, _MODEL_KEY],
        body: Annotated[EventInput, Body(openapi_examples=_EVENT_EXAMPLES)],
        request: Request,
        caller: CallerDep,
    ) -> Any:
        if SSE_MEDIA_TYPE in request.headers.get("accept", ""):
            return await stream(model_key, body, caller)
        return await send(model_key, body, caller)

    @router.post(
        "/{model_key}/event/stream",
        summary="Send an event and follow its run as server-sent events",
        description="Events: `state` (the session entered a state), `token` (LLM text as it arrives), "
        "`progress` (sub-task counts), then `response` (the final AIResponse, as a poll would answer) "
        "and the stream ends. A refused event answers its error status before any stream starts. A client "
        "that drops the stream loses nothing: polling still answers.",
        response_class=StreamingResponse,
        responses={**responses(401, 404, 409, 413, 422, 503), 200: {"content": {SSE_MEDIA_TYPE: {}}}},
    )
    async def stream(
        model_key: Annotated[str, _MODEL_KEY],
        body: Annotated[EventInput, Body(openapi_examples=_EVENT_EXAMPLES)],
        caller: CallerDep,
    ) -> StreamingResponse:
        flow.flow_of(model_key)
        check_size(body.event_input)
        await check_owner(model_key, body.session_id, caller)
        items = await event_stream(flow, model_key, body)
        return StreamingResponse(items, media_type=SSE_MEDIA_TYPE, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/{model_key}/task_state/{session_id}",
        response_model=AIStatusResponse,
        summary="Whether the session is ready for an event",
        responses=responses(401, 404, 503),
    )
    async def task_state(
        model_key: Annotated[str, _MODEL_KEY], session_id: Annotated[str, _SESSION_ID], caller: CallerDep
    ) -> AIStatusResponse:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        return await flow.aget_task_state(model_key, session_id)

    @router.get(
        "/{model_key}/model/{session_id}",
        response_model=AIResponse,
        summary="The session's model as JSON, or a JMESPath into it",
        description="`response` is the JSON text of the model (or of what `path` selects).",
        responses=responses(400, 401, 404, 503),
    )
    async def model(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        caller: CallerDep,
        path: Annotated[
            str | None, Query(description="a JMESPath expression into the model", examples=["dialogue[-1].actor_text"])
        ] = None,
    ) -> AIResponse:
        flow.flow_of(model_key)
        expression = None
        if path:
            try:
                expression = jmespath.compile(path)
            except JMESPathError as exc:
                raise ApiError(
                    400,
                    "invalid_jmespath",
                    f"path {path!r} is not a valid JMESPath expression ({exc}); see https://jmespath.org",
                    path=path,
                ) from None
        await check_owner(model_key, session_id, caller)
        data = (await flow.aget_model(model_key, session_id)).model_dump(mode="json")
        status = await flow.aget_task_state(model_key, session_id)
        selected = expression.search(data) if expression is not None else data
        return AIResponse(
            session_id=session_id,
            response=json.dumps(selected),
            next_actions=status.next_actions if status.ready else [POLL],
        )

    @router.get(
        "/{model_key}/usage/{session_id}",
        response_model=UsageReport,
        summary="The session's token usage and cost",
        description="Tokens and cost of every invoker call of the session, in total and per state, template and "
        "model, priced by the server's price table (`GENIE_GRAPH_PRICES`); and the flow's budget, if it declares "
        "one, with what is left of it.",
        responses=responses(401, 404, 503),
    )
    async def usage(
        model_key: Annotated[str, _MODEL_KEY], session_id: Annotated[str, _SESSION_ID], caller: CallerDep
    ) -> UsageReport:
        compiled = flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        return usage_report(compiled, await flow.aget_model(model_key, session_id))

    @router.get(
        "/{model_key}/history/{session_id}",
        response_model=HistoryReport,
        summary="What happened to the session, oldest first",
        description="The session's event history: events accepted, states entered, invoker runs with their "
        "duration and outcome, invoker failures, budget refusals, migrations. It holds no user text.",
        responses=responses(401, 404, 503),
    )
    async def history(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        caller: CallerDep,
        kind: Annotated[list[HistoryKind] | None, Query(description="only entries of these kinds")] = None,
        last: Annotated[int | None, Query(ge=0, description="only the last N entries")] = None,
    ) -> HistoryReport:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        return history_report(await flow.aget_model(model_key, session_id), kind, last)

    @router.get(
        "/{model_key}/approvals/{session_id}",
        response_model=ApprovalList,
        summary="The session's tool calls waiting for a person, and the latest decided ones",
        responses=responses(401, 404, 503),
    )
    async def approvals(
        model_key: Annotated[str, _MODEL_KEY], session_id: Annotated[str, _SESSION_ID], caller: CallerDep
    ) -> ApprovalList:
        flow.flow_of(model_key)
        await check_owner(model_key, session_id, caller)
        requests = await flow.aapprovals(model_key, session_id)
        return ApprovalList(session_id=session_id, approvals=[request.public() for request in requests])

    @router.post(
        "/{model_key}/approvals/{session_id}/{approval_id}",
        response_model=AIResponse,
        summary="Approve or deny a tool call the session waits for",
        description="The run goes on in the background (poll for its answer): an approved tool runs, a denied "
        "one is reported to the model. Who may decide is the tool's `approvers`: `sender` (who the run was "
        "for, or the session's owner), `member`, `anyone` or `role:<name>` (the server's `roles`). A request "
        "past its `expires_at` counts as denied. Every decision is in the session's history.",
        responses=responses(401, 403, 404, 409, 503),
    )
    async def decide(
        model_key: Annotated[str, _MODEL_KEY],
        session_id: Annotated[str, _SESSION_ID],
        approval_id: Annotated[str, Path(max_length=64, description="the request's id")],
        body: ApprovalDecision,
        caller: CallerDep,
    ) -> AIResponse:
        flow.flow_of(model_key)
        who = caller.name if app.state.api_keys else body.by
        granted = list(app.state.roles.get(who, ())) if who is not None else []
        return await flow.adecide_approval(
            model_key, session_id, approval_id, body.approve, by=who, roles=granted, reason=body.reason
        )

    @router.get(
        "/{model_key}/flow",
        response_model=FlowDescription,
        summary="The flow's states, events, transitions and model fields",
        description="What the flow's author declared: every state (its kind, template and events), the "
        "transitions the diagram draws, and the model's fields, the flow's own (captured) ones first. A "
        "model's `state` holds a state's `value`.",
        responses=responses(401, 404),
    )
    async def flow_description(model_key: Annotated[str, _MODEL_KEY], _caller: CallerDep) -> FlowDescription:
        return describe_flow(model_key, flow.flow_of(model_key))

    @router.get(
        "/{model_key}/diagram",
        response_class=Response,
        summary="The flow's state diagram, with a session's current state highlighted",
        description="An SVG image (rendered on the server by Graphviz, offline) or its Mermaid or Graphviz DOT "
        "text. With `session_id`, that session's current state is highlighted.",
        responses={
            **responses(401, 404, 503),
            200: {
                "content": {"image/svg+xml": {}, "text/plain": {}},
                "description": "the diagram in the requested format",
            },
        },
    )
    async def diagram(
        model_key: Annotated[str, _MODEL_KEY],
        caller: CallerDep,
        session_id: Annotated[
            str | None, Query(description="highlight this session's current state", examples=[_EXAMPLE_SESSION])
        ] = None,
        format: Annotated[DiagramFormat, Query(description="svg, mermaid or dot")] = "svg",
    ) -> Response:
        compiled = flow.flow_of(model_key)
        current, waiting = None, tuple[str, ...]()
        if session_id is not None:
            await check_owner(model_key, session_id, caller)
            model = await flow.aget_model(model_key, session_id)
            # a session kept on an older flow version may be in a state this version no longer has
            current, waiting = session_highlight(compiled, model)
        content = await diagrams.get(model_key, compiled, current, format, waiting)
        return Response(content, media_type=DIAGRAM_MEDIA_TYPES[format])

    @router.post(
        "/{model_key}/user_sessions",
        response_model=UserSessions | None,
        summary="A user's live sessions of the model key",
        description="Genie Flow's user document with `sessions`, or null when the user has none. With API "
        "keys on, only the caller's own sessions are listed.",
        responses=responses(401, 404, 503),
    )
    async def user_sessions(model_key: Annotated[str, _MODEL_KEY], user: User, caller: CallerDep) -> Any:
        found = await flow.auser_sessions(model_key, user)
        if caller.name is not None:
            found = [sid for sid in found if await _owner_or_none(flow, model_key, sid) == caller.name]
        if not found:
            return None
        return UserSessions(**user.model_dump(mode="json"), sessions=found)

    app.include_router(router)
    app.include_router(group_router(flow, prefix, check_owner, check_size))
    if playground:
        install_playground(app, prefix)

    @app.get(
        "/health",
        response_model=Health,
        summary="The service is up and its store answers",
        responses={503: {"model": ErrorBody, "description": "the store cannot be reached"}},
    )
    async def health() -> Any:
        try:
            await flow.acheck_store()
        except Exception as exc:
            return JSONResponse(
                {"error": "store_unavailable", "detail": f"the store does not answer: {type(exc).__name__}: {exc}"},
                status_code=503,
            )
        return Health(store=flow.store_url.split(":", 1)[0])

    return app


async def _owner_or_none(flow: GenieFlow, model_key: str, session_id: str) -> str | None:
    try:
        return await flow.asession_owner(model_key, session_id)
    except UnknownSession:
        return None


def settings_from_env() -> dict[str, Any]:
    """``create_app`` options from the environment (what ``genie-graph serve`` passes to its workers)."""
    options: dict[str, Any] = {"prefix": os.environ.get("GENIE_GRAPH_API_PREFIX", DEFAULT_PREFIX)}
    keys = os.environ.get("GENIE_GRAPH_API_KEYS", "").strip()
    if keys:
        options["api_keys"] = parse_api_keys(keys)
    origins = os.environ.get("GENIE_GRAPH_CORS_ORIGINS", "").strip()
    if origins:
        options["cors_origins"] = [origin.strip() for origin in origins.split(",") if origin.strip()]
    if os.environ.get("GENIE_GRAPH_GENIE_FLOW_STATUS_CODES", "").strip() not in ("", "0"):
        options["genie_flow_status_codes"] = True
    if os.environ.get("GENIE_GRAPH_PLAYGROUND", "").strip().lower() in ("0", "false", "no", "off"):
        options["playground"] = False
    limit = os.environ.get("GENIE_GRAPH_MAX_EVENT_INPUT", "").strip()
    if limit:
        options["max_event_input_bytes"] = int(limit)
    for variable, option in (
        ("GENIE_GRAPH_POLL_WAIT", "poll_wait_seconds"),
        ("GENIE_GRAPH_EVENT_WAIT", "event_wait_seconds"),
    ):
        seconds = os.environ.get(variable, "").strip()
        if seconds:
            try:
                options[option] = float(seconds)
            except ValueError:
                raise ValueError(f"{variable}={seconds!r} is not a number of seconds, e.g. 1 or 0.25") from None
    roles = os.environ.get("GENIE_GRAPH_API_ROLES", "").strip()
    if roles:
        options["roles"] = parse_roles(roles)
    return options


def parse_roles(text: str) -> dict[str, list[str]]:
    """``alice:manager+auditor,bob:clerk`` as ``{"alice": ["manager", "auditor"], "bob": ["clerk"]}``.

    Raises:
        ValueError: an entry is not ``name:role[+role...]``.
    """
    roles: dict[str, list[str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, granted = entry.partition(":")
        names = [role.strip() for role in granted.split("+") if role.strip()]
        if not sep or not name.strip() or not names:
            raise ValueError(
                f"role entry {entry!r} is not name:role; write GENIE_GRAPH_API_ROLES=alice:manager+auditor"
            )
        roles.setdefault(name.strip(), []).extend(names)
    return roles


def parse_api_keys(text: str) -> dict[str, str]:
    """``name:key,name2:key2`` as ``{key: name}``.

    Raises:
        ValueError: an entry is not ``name:key``, or a name or key is used twice.
    """
    keys: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        if not sep or not name.strip() or not key.strip():
            raise ValueError(
                f"API key entry {entry!r} is not name:key; write GENIE_GRAPH_API_KEYS=alice:s3cret,bob:..."
            )
        if key.strip() in keys or name.strip() in keys.values():
            raise ValueError(f"API key entry {entry!r} repeats a name or a key; give each caller its own")
        keys[key.strip()] = name.strip()
    return keys
