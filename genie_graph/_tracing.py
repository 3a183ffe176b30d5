"""OpenTelemetry spans for sessions: events, runs, states, transitions, renders and invoker calls.

Off unless a ``GenieFlow`` is made with ``tracing=True`` (or a ``TracerProvider``), or with
``$GENIE_GRAPH_TRACING=1``. Spans go to the globally configured ``TracerProvider``: the
deployer sets up the SDK and its exporters (``opentelemetry-instrument``, or a few lines at
start-up); genie-graph itself depends on ``opentelemetry-api`` only. The tree of one event::

    genie.event user_input                 GenieFlow._send (or genie.event poll, genie.session.start)
    └── genie.run                          the background run the event started (may outlive it)
        ├── genie.state user_enters_query  a LangGraph node: the resumed user state
        │   └── genie.transition           hooks, dialogue recording
        ├── genie.state ai_creates_response
        │   ├── genie.render <template>
        │   ├── genie.invoke <template>
        │   └── genie.transition
        │       └── genie.render <template>   the user state's response
        └── genie.state user_enters_query  waits for the next event (genie.waiting)

With the Celery runner the run stops before the invoker state and queues it; the task carries
the W3C ``traceparent``, so the worker's ``genie.advance`` span (and its run) join the trace.

No user text is put on a span (event input, rendered templates, error messages) unless
``trace_content=True`` or ``$GENIE_GRAPH_TRACE_CONTENT=1``: without it an error is recorded
with its type and stack frames only.

When a flow does not trace, each hook below costs one check of a context variable (or an
attribute) and creates nothing.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ._api_models import AIResponse, EventInput
    from ._flow import CompiledFlow
    from ._model import GenieModel

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

TRACING_ENV = "GENIE_GRAPH_TRACING"
CONTENT_ENV = "GENIE_GRAPH_TRACE_CONTENT"
INSTRUMENTATION = "genie_graph"

# Attribute names: genie.* for the flow, langgraph.* for LangGraph's own ids.
SESSION_ID = "genie.session_id"
MODEL_KEY = "genie.model_key"
FLOW_VERSION = "genie.flow_version"
RUN_ID = "genie.run_id"
EVENT = "genie.event"
EVENT_INPUT = "genie.event.input"  # user text: only with content on
EVENT_RECEIVED = "genie.event.received"  # an undeclared event's name, as sent: only with content on
EVENT_SENDER = "genie.event.sender"  # who sent a group message: only with content on
UNKNOWN_EVENT = "<undeclared>"
STATE = "genie.state"
STATE_KIND = "genie.state.kind"
WAITING = "genie.waiting"
SOURCE = "genie.transition.source"
TARGET = "genie.transition.target"
TEMPLATE = "genie.template"
RENDER_LENGTH = "genie.render.length"
RENDER_OUTPUT = "genie.render.output"  # user text: only with content on
INVOKER_TYPE = "genie.invoker.type"
INVOKER_MODEL = "genie.invoker.model"
OUTCOME = "genie.outcome"
NEXT_ACTIONS = "genie.next_actions"
ANSWER_ERROR = "genie.answer.error"
REFUSAL_ALLOWED = "genie.refusal.allowed"
LG_THREAD_ID = "langgraph.thread_id"
LG_RUN_ID = "langgraph.run_id"
LG_CHECKPOINT_ID = "langgraph.checkpoint_id"
LG_NODE = "langgraph.node"
LG_STEP = "langgraph.step"
LG_TASK_ID = "langgraph.task_id"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Tracing:
    """How a ``GenieFlow`` traces: its tracer, and whether user text may go on spans."""

    tracer: Tracer
    content: bool = False
    """Put user text on spans: event inputs, rendered templates, error messages."""


_NOTHING: AbstractContextManager[None] = nullcontext()
"""What a hook opens when the flow does not trace: no span, no generator."""
_active: ContextVar[Tracing | None] = ContextVar("genie_graph_tracing", default=None)
"""Set while a tracing flow works (its events, runs and the nodes inside them)."""


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"${name} must be 1 or 0 (true/false, on/off), got {os.environ[name]!r}")


def _version() -> str:
    try:
        return importlib_metadata.version("genie-graph")
    except importlib_metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0"


def configure(tracing: bool | TracerProvider | None, content: bool | None) -> Tracing | None:
    """A flow's tracing from its arguments, else from the environment; None when it is off.

    Raises:
        ValueError: ``$GENIE_GRAPH_TRACING`` or ``$GENIE_GRAPH_TRACE_CONTENT`` is not a flag.
    """
    on = _env_flag(TRACING_ENV) if tracing is None else tracing is not False
    if not on:
        return None
    provider = tracing if isinstance(tracing, TracerProvider) else None
    tracer = trace.get_tracer(INSTRUMENTATION, _version(), tracer_provider=provider)
    return Tracing(tracer, _env_flag(CONTENT_ENV) if content is None else content)


# ---- errors -------------------------------------------------------------------------------
def _record_error(span: Span, exc: BaseException, content: bool) -> None:
    """Status ERROR and an ``exception`` event; the message only with content (it may quote the user)."""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    allowed = getattr(exc, "allowed", None)
    if isinstance(allowed, list) and all(isinstance(event, str) for event in allowed):  # EventNotAllowed
        span.set_attribute(REFUSAL_ALLOWED, allowed)
    if content:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        return
    span.add_event("exception", {"exception.type": kind, "exception.stacktrace": _frames(exc)})
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _frames(exc: BaseException) -> str:
    """A traceback with its causes, as Python prints it, but with the types of the exceptions only."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for error in reversed(chain):
        frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(error).__module__}.{type(error).__qualname__}")
    return "\n\nThe above exception led to the following exception:\n\n".join(parts)


@contextmanager
def _span(
    settings: Tracing,
    name: str,
    attributes: Mapping[str, AttributeValue],
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    with settings.tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except GraphBubbleUp:  # interrupt(): the session now waits for an event, no failure
            span.set_attribute(WAITING, True)
            raise
        except Exception as exc:
            _record_error(span, exc, settings.content)
            raise


async def _spanned(
    settings: Tracing,
    name: str,
    attributes: dict[str, AttributeValue],
    coro: Coroutine[Any, Any, T],
    finish: Callable[[Span, T], None] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> T:
    token = _active.set(settings)
    try:
        with _span(settings, name, attributes, kind) as span:
            result = await coro
            if finish is not None:
                finish(span, result)
            return result
    finally:
        _active.reset(token)


# ---- GenieFlow: events, polls, new sessions, a worker's task -------------------------------
def _session(model_key: str, session_id: str) -> dict[str, AttributeValue]:
    return {MODEL_KEY: model_key, SESSION_ID: session_id, LG_THREAD_ID: session_id}


def _answered(span: Span, answer: AIResponse) -> None:
    span.set_attribute(NEXT_ACTIONS, list(answer.next_actions))
    if answer.error is not None:  # an invoker's failure shown by a poll: the run's span has it
        span.set_attribute(ANSWER_ERROR, True)


def _declared(flow: Any, model_key: str, event: str) -> bool:
    """Whether the flow declares ``event``: another name a client sent is not put in a span's name."""
    registered = flow._registered.get(model_key)
    if registered is None:
        return False
    flows = [registered.flow, *(older.flow for older in getattr(registered, "previous", {}).values())]
    return any(event in events for compiled in flows for events in compiled.events_out.values())


def traced_event(method: F) -> F:
    """Decorates ``GenieFlow._send``: a ``genie.event <event>`` span around the event."""

    @functools.wraps(method)
    def wrapper(flow: Any, model_key: str, event: EventInput, **sent_by: Any) -> Any:
        settings: Tracing | None = flow._tracing_settings
        if settings is None:
            return method(flow, model_key, event, **sent_by)
        name = event.event if _declared(flow, model_key, event.event) else UNKNOWN_EVENT
        attributes = {**_session(model_key, event.session_id), EVENT: name}
        if settings.content:
            attributes[EVENT_INPUT] = event.event_input
            attributes[EVENT_RECEIVED] = event.event
        if sent_by.get("sender") is not None and settings.content:
            attributes[EVENT_SENDER] = sent_by["sender"]
        return _spanned(
            settings, f"genie.event {name}", attributes, method(flow, model_key, event, **sent_by), _answered
        )

    return cast(F, wrapper)


def traced_poll(method: F) -> F:
    """Decorates ``GenieFlow._poll``: a ``genie.event poll`` span."""

    @functools.wraps(method)
    def wrapper(flow: Any, model_key: str, session_id: str) -> Any:
        settings: Tracing | None = flow._tracing_settings
        if settings is None:
            return method(flow, model_key, session_id)
        attributes = {**_session(model_key, session_id), EVENT: "poll"}
        return _spanned(settings, "genie.event poll", attributes, method(flow, model_key, session_id), _answered)

    return cast(F, wrapper)


def _created(span: Span, model: GenieModel) -> None:
    span.set_attribute(SESSION_ID, model.session_id)
    span.set_attribute(LG_THREAD_ID, model.session_id)
    if model.flow_version:
        span.set_attribute(FLOW_VERSION, model.flow_version)


def traced_create(method: F) -> F:
    """Decorates ``GenieFlow._create``: a ``genie.session.start`` span (the intro, or the initial invoker state)."""

    @functools.wraps(method)
    def wrapper(flow: Any, model_key: str, *args: Any, **kwargs: Any) -> Any:
        settings: Tracing | None = flow._tracing_settings
        if settings is None:
            return method(flow, model_key, *args, **kwargs)
        coro = method(flow, model_key, *args, **kwargs)
        return _spanned(settings, "genie.session.start", {MODEL_KEY: model_key}, coro, _created)

    return cast(F, wrapper)


def _outcome(span: Span, outcome: str) -> None:
    span.set_attribute(OUTCOME, outcome)


def traced_advance(method: F) -> F:
    """Decorates ``GenieFlow._advance``: a worker's ``genie.advance`` span, a child of the queuing run."""

    @functools.wraps(method)
    def wrapper(flow: Any, model_key: str, session_id: str, run_id: str, checkpoint_id: str) -> Any:
        settings: Tracing | None = flow._tracing_settings
        if settings is None:
            return method(flow, model_key, session_id, run_id, checkpoint_id)
        attributes = {**_session(model_key, session_id), RUN_ID: run_id, LG_CHECKPOINT_ID: checkpoint_id}
        coro = method(flow, model_key, session_id, run_id, checkpoint_id)
        return _spanned(settings, "genie.advance", attributes, coro, _outcome, SpanKind.CONSUMER)

    return cast(F, wrapper)


def traced_run(
    settings: Tracing | None, coro: Coroutine[Any, Any, T], model_key: str, session_id: str, run: Any
) -> Coroutine[Any, Any, T]:
    """A ``genie.run`` span around a background run (``_Run``); the span that started it learns its id."""
    if settings is None:
        return coro
    trace.get_current_span().set_attribute(RUN_ID, run.run_id)
    attributes = {**_session(model_key, session_id), RUN_ID: run.run_id}
    if run.version:
        attributes[FLOW_VERSION] = run.version
    return _traced_run(settings, coro, attributes, run)


async def _traced_run(
    settings: Tracing, coro: Coroutine[Any, Any, T], attributes: dict[str, AttributeValue], run: Any
) -> T:
    token = _active.set(settings)
    try:
        with _span(settings, "genie.run", attributes) as span:
            result = await coro
            if run.error is not None:  # kept on the session for the next poll, not raised
                message = run.error if settings.content else run.error.partition(":")[0]
                span.set_status(Status(StatusCode.ERROR, message))
            return result
    finally:
        _active.reset(token)


def carry(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """Carry the caller's OpenTelemetry context onto the flow's event loop (another thread).

    Without a span active in the caller (the usual case), the coroutine is returned as it is.
    """
    current = otel_context.get_current()
    if not current:
        return coro
    return _carried(current, coro)


async def _carried(parent: otel_context.Context, coro: Coroutine[Any, Any, T]) -> T:
    token = otel_context.attach(parent)
    try:
        return await coro
    finally:
        otel_context.detach(token)


# ---- Celery: the trace context travels with the task ------------------------------------------
def task_headers() -> dict[str, str] | None:
    """Headers for a Celery task queued by a tracing run: the W3C ``traceparent`` (and ``tracestate``)."""
    if _active.get() is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextmanager
def continued_from(request: Any) -> Iterator[None]:
    """In a Celery task: make the trace context its headers carry the current one."""
    headers = getattr(request, "headers", None) or {}
    carrier = {
        key: value
        for key in ("traceparent", "tracestate")
        if isinstance(value := headers.get(key, getattr(request, key, None)), str)
    }
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


# ---- a run's insides: states, transitions, renders, invoker calls ----------------------------
def _node_attributes(flow: CompiledFlow, state_id: str, model: GenieModel, config: RunnableConfig) -> dict[str, Any]:
    configurable = config.get("configurable") or {}
    meta = config.get("metadata") or {}
    attributes: dict[str, Any] = {
        STATE: state_id,
        STATE_KIND: flow.kinds[state_id].name.lower(),
        LG_NODE: meta.get("langgraph_node", state_id),
        SESSION_ID: model.session_id or configurable.get("thread_id", ""),
        LG_THREAD_ID: configurable.get("thread_id", ""),
    }
    for key, value in (
        (MODEL_KEY, meta.get("genie_model_key")),
        (LG_STEP, meta.get("langgraph_step")),
        (LG_CHECKPOINT_ID, (configurable.get("checkpoint_map") or {}).get("") or configurable.get("checkpoint_id")),
        (LG_TASK_ID, str(configurable.get("checkpoint_ns", "")).rpartition(":")[2] or None),
        (LG_RUN_ID, getattr(config.get("callbacks"), "parent_run_id", None)),  # the node's run (LangSmith's)
    ):
        if value is not None:
            attributes[key] = value if isinstance(value, (str, int)) else str(value)
    return attributes


def traced_node(
    afunc: Callable[..., Coroutine[Any, Any, T]], flow: CompiledFlow, state_id: str, node_id: str | None = None
) -> Callable[..., Coroutine[Any, Any, T]]:
    """A state's node with a ``genie.state <node>`` span carrying LangGraph's ids."""

    @functools.wraps(afunc)
    async def node(model: GenieModel, config: RunnableConfig, *rest: Any) -> T:
        settings = _active.get()
        if settings is None:
            return await afunc(model, config, *rest)
        with _span(settings, f"genie.state {node_id or state_id}", _node_attributes(flow, state_id, model, config)):
            return await afunc(model, config, *rest)

    return node


def transition(flow: CompiledFlow, model: GenieModel, event: str, event_input: str) -> AbstractContextManager[None]:
    """A ``genie.transition`` span around one event's transition (hooks, dialogue recording)."""
    settings = _active.get()
    return _NOTHING if settings is None else _transition(settings, flow, model, event, event_input)


@contextmanager
def _transition(
    settings: Tracing, flow: CompiledFlow, model: GenieModel, event: str, event_input: str
) -> Iterator[None]:
    source = flow.state_of(model)
    attributes: dict[str, AttributeValue] = {EVENT: event, STATE: source, SOURCE: source}
    if settings.content:
        attributes[EVENT_INPUT] = event_input
    with _span(settings, "genie.transition", attributes) as span:
        yield
        span.set_attribute(TARGET, flow.state_of(model))


def traced_render(method: F) -> F:
    """Decorates ``TemplateLibrary.render``: a ``genie.render <template>`` span."""

    @functools.wraps(method)
    def render(library: Any, name: str, render_data: Mapping[str, Any]) -> str:
        settings = _active.get()
        if settings is None:
            return cast(str, method(library, name, render_data))
        with _span(settings, f"genie.render {name}", {TEMPLATE: name}) as span:
            text = cast(str, method(library, name, render_data))
            span.set_attribute(RENDER_LENGTH, len(text))
            if settings.content:
                span.set_attribute(RENDER_OUTPUT, text)
            return text

    return cast(F, render)


def invoking(template: str, invoker: Mapping[str, Any]) -> AbstractContextManager[None]:
    """A ``genie.invoke <template>`` span around one invoker call (its retries included)."""
    settings = _active.get()
    return _NOTHING if settings is None else _invoking(settings, template, invoker)


@contextmanager
def _invoking(settings: Tracing, template: str, invoker: Mapping[str, Any]) -> Iterator[None]:
    attributes: dict[str, AttributeValue] = {TEMPLATE: template, INVOKER_TYPE: str(invoker.get("type", ""))}
    if isinstance(invoker.get("model"), str):
        attributes[INVOKER_MODEL] = invoker["model"]
    with _span(settings, f"genie.invoke {template}", attributes, SpanKind.CLIENT):
        yield
