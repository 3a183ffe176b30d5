"""One state at run time: the LangGraph node that waits for, or computes, its next event.

* A user state's node waits with ``interrupt()`` for ``{"event", "event_input"}`` and runs the
  transition that event takes. Nothing happens before the interrupt, so a resumed node runs
  each hook exactly once.
* An invoker state's node renders its template, calls its invoker(s), and sends the state's
  completion event with the output, as Genie Flow's Celery chain does.
* A final state's node ends the run.

Every node works on a model of its own, validated from the channels (see ``_channels``), and
returns only the fields that changed, routing with ``Command(goto=...)``; the declared transitions
are given to LangGraph as destinations so drawings show every edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END
from langgraph.types import Command, interrupt

from . import _tracing
from ._channels import as_json, changed_fields, validate
from ._composite import NO_PROGRESS, ProgressSink
from ._failures import (
    OnErrorEvent,
    OnErrorState,
    apply_on_error,
    count_start,
    failure_scope,
    move_to_error_state,
    record_cut_offs,
    state_on_error,
)
from ._flow import CompiledFlow
from ._history import HistoryEntry, HistoryKind
from ._model import Actor, GenieModel, StateKind
from ._preferences import current_preferences, preferences_of
from ._subflows import call_subflow, model_at, node_name, pick_interruption, store_model
from ._subflows import finish as finish_flow
from ._subflows import interrupt as interrupt_flow
from ._tokens import streaming_tokens
from ._tools import (
    ApprovalRequest,
    ApprovalRequired,
    BadDecision,
    ToolRun,
    apply_decision,
    asked_by,
    current_tool_run,
    pending_approval,
    record_auto_approvals,
    record_request,
)
from ._usage import collecting_usage
from .errors import BudgetExceeded, EventNotAllowed, RunCutOff

logger = logging.getLogger("genie_graph")

current_progress: contextvars.ContextVar[ProgressSink] = contextvars.ContextVar(
    "genie_graph_progress", default=NO_PROGRESS
)
"""Set by the session runtime around a run, so invoker nodes can report sub-task counts."""

RECORD_INTRO = "genie_record_intro"


@dataclass
class EventReport:
    """What the user node tells the session runtime about the event it was resumed with."""

    decided: asyncio.Event = field(default_factory=asyncio.Event)
    durable: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the accepted transition's checkpoint is saved (the next node has started)."""
    target: str | None = None
    refusal: EventNotAllowed | None = None

    @property
    def accepted(self) -> bool:
        return self.target is not None

    def accept(self, target: str) -> None:
        if not self.decided.is_set():
            self.target = target
            self.decided.set()

    def refuse(self, refusal: EventNotAllowed) -> None:
        if not self.decided.is_set():
            self.refusal = refusal
            self.decided.set()

    def settle(self) -> None:
        """The run is over (or the accepted transition is durable): release every waiter."""
        self.decided.set()
        self.durable.set()


current_report: contextvars.ContextVar[EventReport | None] = contextvars.ContextVar(
    "genie_graph_event_report", default=None
)
"""Set by the session runtime around a resumed run, to learn at once where the event went."""


@dataclass
class _Scope:
    """Where a node runs: the session's model, and which flow of its stack the node's state belongs to.

    A node works on its flow's model (the session's own, or a sub-flow's kept in a frame); the
    update it returns is what differs in the session's channels.
    """

    root: CompiledFlow
    flow: CompiledFlow
    node: str
    session: GenieModel
    index: int
    """The frame of the node's flow on the session's stack; -1 for the session's own flow."""
    before: Mapping[str, Any]
    """The channels as the node got them."""

    @property
    def label(self) -> str | None:
        """The flow's name in history entries (None for the session's own flow)."""
        return None if self.index < 0 else self.flow.label

    def update(self, model: GenieModel) -> dict[str, Any]:
        """What the node changed, ``model`` being its flow's model (stored back into its frame)."""
        if self.index < 0:  # the session's own model (or one a failed transition rolled back to)
            return changed_fields(self.before, model)
        store_model(self.root, self.session, self.index, model)
        return changed_fields(self.before, self.session)

    def goto(self, model: GenieModel) -> str:
        """The node of the state ``model`` is in now."""
        return node_name(self.root, self.flow, self.flow.state_of(model))

    def refusal(self, event: str, reason: str = "") -> EventNotAllowed:
        return self.root.session_refusal(self.session, event, reason)


def _approval_payload(scope: _Scope, model: GenieModel, request: ApprovalRequest) -> dict[str, Any]:
    return {**_waiting_payload(scope, model), "approval": request.public()}


def _waiting_payload(scope: _Scope, model: GenieModel) -> dict[str, Any]:
    return {
        "session_id": model.session_id,
        "state": scope.node,
        "response": scope.root.response_of(scope.session) if model.dialogue else None,
        "next_actions": scope.root.session_actions(scope.session),
        "error": model.task_error,
    }


class _BadResume(ValueError):
    """A resume value that is not ``{"event": ..., "event_input": ...}``."""


_WAITING = "waiting_for_event"
"""Key of a ``task_error`` JSON that leaves an invoker state waiting for an event by hand."""


def _invoker_is_waiting(model: GenieModel, state_id: str) -> bool:
    """Whether a failed invoker state waits for an event instead of running again."""
    if not model.task_error:
        return False
    try:
        error = json.loads(model.task_error)
    except ValueError:
        return False
    return isinstance(error, dict) and error.get(_WAITING) is True and error.get("state") == state_id


def _refuse(state_id: str, refusal: EventNotAllowed, report: EventReport | None, error: str | None) -> Command[Any]:
    """Wait again in a fresh run of this node, so the refused value is never replayed.

    Only ``task_error`` changes (whatever a condition did to the model is dropped): plain
    LangGraph shows the refusal there; the session runtime rolls the whole step back.
    """
    if report is not None:
        report.refuse(refusal)
    if error is not None:  # an invoker state waiting by hand keeps its failure, with the refusal inside
        waiting = json.loads(error)
        waiting["refused"] = json.loads(refusal.to_json())
        return Command(update={"task_error": json.dumps(waiting)}, goto=state_id)
    return Command(update={"task_error": refusal.to_json()}, goto=state_id)


async def _await_event(scope: _Scope, model: GenieModel, waiting_error: str | None = None) -> Command[Any]:
    """Interrupt until an event arrives, then run the transition it takes (or the interruption it triggers).

    Nothing happens before ``interrupt()``: LangGraph re-runs the node from the top when it is
    resumed, and each hook must run once.
    """
    resume = interrupt(_waiting_payload(scope, model))
    report = current_report.get()
    flow, session = scope.flow, scope.session
    try:
        event, text = _parse_resume(resume)
        sent_by = _sent_by(resume)
        said, happened = len(model.dialogue), model.history[-1] if model.history else None
        session.flows.notice = None  # what this event leads to is told afresh
        async with _speaking(scope.root, sent_by):
            fired = await pick_interruption(scope.root, session, model, event, text) if scope.root.children else None
            if fired is None:
                await flow.send(model, event, text)
        if sent_by is not None:
            _tag_group_message(model, sent_by, said, happened)
        if fired is not None:
            declared_by, link = fired
            target = interrupt_flow(scope.root, session, scope.index, model, declared_by, link, event, text, scope.node)
            if sent_by is not None:
                _tag_group_message(model, sent_by, said, happened)
            update = changed_fields(scope.before, session)
            if report is not None:
                report.accept(scope.root.entry_node(target))
            return Command(update=update, goto=target)
    except EventNotAllowed as refusal:
        declared = refusal.received in refusal.allowed  # its conditions failed: the flow's reason stands
        return _refuse(scope.node, scope.refusal(event, refusal.reason if declared else ""), report, waiting_error)
    except _BadResume as bad:
        return _refuse(scope.node, scope.refusal("?", str(bad)), report, waiting_error)
    target = flow.state_of(model)
    if flow.kinds[target] is StateKind.INVOKER:  # counted before the run starts, as Genie Flow does
        current_progress.get().begin(target, flow.runner.count(flow.templates[target]) + 1)
    update = scope.update(model)  # a model that cannot be stored fails here, before acceptance
    goto = scope.goto(model)
    if report is not None:  # where the work starts: the runtime answers "poll" at once for an invoker state
        report.accept(scope.root.entry_node(goto))
    return Command(update=update, goto=goto)


def _sent_by(value: Any) -> tuple[str, int | None] | None:
    """A group message's sender and number, when the resume value carries them."""
    if isinstance(value, Mapping) and isinstance(value.get("sender"), str):
        number = value.get("message")
        return value["sender"], number if isinstance(number, int) else None
    return None


@contextlib.asynccontextmanager
async def _speaking(root: CompiledFlow, sent_by: tuple[str, int | None] | None) -> AsyncIterator[None]:
    """Templates rendered while a group message's event is taken see its sender (and their preferences)."""
    if sent_by is None:
        yield
        return
    sender = sent_by[0]
    token = current_preferences.set((sender, await preferences_of(root.runner.preferences, sender)))
    try:
        yield
    finally:
        current_preferences.reset(token)


def _tag_group_message(
    model: GenieModel, sent_by: tuple[str, int | None], said: int, last_before: HistoryEntry | None
) -> None:
    """Name the sender on the user's utterances, and the message on the events, this message added."""
    sender, number = sent_by
    for element in model.dialogue[said:]:
        if element.actor is Actor.USER and element.sender is None:
            element.sender = sender
    for entry in reversed(model.history):  # the history drops its oldest entries: find the new ones from the end
        if entry is last_before:
            break
        if entry.kind is HistoryKind.EVENT and entry.detail is None:
            entry.detail = {"sender": sender, "message": number}


def _parse_resume(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return "user_input", value
    if not isinstance(value, Mapping) or not isinstance(value.get("event"), str):
        raise _BadResume(f'resume with {{"event": <name>, "event_input": <text>}}, got {value!r}')
    text = value.get("event_input", "")
    return value["event"], "" if text is None else str(text)


def _run_blocking(afunc: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run an async node from LangGraph's sync API, also inside a thread with a running loop."""
    context = contextvars.copy_context()

    def run() -> Any:
        return asyncio.run(afunc(*args))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return context.run(run)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = context.run(run)
        except BaseException as exc:  # re-raised in the caller's thread, GraphInterrupt included
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="genie-graph-node")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _name_session(model: GenieModel, config: RunnableConfig) -> None:
    """A thread started without a session id (plain LangGraph, Studio) takes its thread id."""
    if not model.session_id:
        model.session_id = str((config.get("configurable") or {}).get("thread_id") or "")


def make_node(flow: CompiledFlow, state_id: str, root: CompiledFlow | None = None) -> RunnableCallable:
    """The LangGraph node for state ``state_id`` of ``flow`` (sync and async).

    ``root``: the session's own flow, when ``flow`` is one of its sub-flows or interrupting flows.
    """
    root = root or flow
    node_id = node_name(root, flow, state_id)
    kind = flow.kinds[state_id]
    is_initial = state_id == flow.initial
    is_final = state_id in flow.finals
    nested = flow is not root

    async def finish_node(model: GenieModel, config: RunnableConfig, scope: _Scope) -> Command[Any]:
        if not nested:
            return Command(goto=END)
        store_model(root, scope.session, scope.index, model)
        goto = await finish_flow(root, scope.session, model)  # back to the flow below, which goes on
        return Command(update=changed_fields(scope.before, scope.session), goto=goto)

    async def user_node(model: GenieModel, config: RunnableConfig, scope: _Scope) -> Command[Any]:
        if is_initial and model.state is None:
            _name_session(model, config)
            record = True if nested else (config.get("configurable") or {}).get(RECORD_INTRO, True)
            await flow.enter_initial_state(model, record_intro=bool(record))
            return Command(update=scope.update(model), goto=node_id)
        if is_final:
            return await finish_node(model, config, scope)
        return await _await_event(scope, model)

    async def subflow_node(model: GenieModel, config: RunnableConfig, scope: _Scope) -> Command[Any]:
        if is_initial and model.state is None:
            _name_session(model, config)
            await flow.enter_initial_state(model, record_intro=False)
        goto = call_subflow(root, scope.session, scope.index, model, node_id)
        return Command(update=changed_fields(scope.before, scope.session), goto=goto)

    async def invoker_node(model: GenieModel, config: RunnableConfig, scope: _Scope) -> Command[Any]:
        report = current_report.get()
        if report is not None:
            report.durable.set()  # this node runs after the accepted transition was saved
        if _invoker_is_waiting(model, node_id):
            return await _await_event(scope, model, model.task_error)
        decided: ApprovalRequest | None = None
        waiting_for = pending_approval(model, node_id)
        if waiting_for is not None:  # a tool call waits for a person: nothing runs before the decision
            resume = interrupt(_approval_payload(scope, model, waiting_for))
            try:
                decided = apply_decision(model, waiting_for, resume, state_id, scope.label)
            except BadDecision as bad:
                return _refuse(node_id, scope.refusal("?", str(bad)), report, None)
            if report is not None:
                report.accept(node_id)
        if is_initial and model.state is None:
            _name_session(model, config)
            await flow.enter_initial_state(model, record_intro=False)
        initial_run = model.state is not None and scope.before.get("state") is None
        entered = as_json(model) if nested or initial_run else scope.before
        template = flow.templates[state_id]
        progress = current_progress.get()
        progress.begin(state_id, flow.runner.count(template) + 1)
        event = flow.completion_event[state_id]
        failure: Exception | None = None
        handled: Exception | None = None  # a failure its on_error turned into an event or a move
        error_state: str | None = None
        starts = await count_start(model.session_id, node_id, config)
        started = time.perf_counter()
        override = flow.failures.overrides.get(state_id)
        tools = ToolRun(asked_by=asked_by(model), state=node_id, model=model, resume=decided)
        approval: ApprovalRequest | None = None
        tools_token = current_tool_run.set(tools)
        with collecting_usage() as usage, failure_scope(override) as failed_calls:
            try:
                flow.check_budget(model, state_id)
                if starts > flow.failures.resumes_of(state_id) + 1:  # its process died each time: fail cleanly
                    cut_off = RunCutOff(state_id, starts - 1)
                    on_error = state_on_error(flow.runner, template, override)
                    if on_error is None:
                        raise cut_off
                    output = apply_on_error(on_error, flow.runner.library, flow.render_data(model), cut_off)
                else:
                    output = await flow.runner.run(template, functools.partial(flow.render_data, model), progress)
            except ApprovalRequired as asked:  # the run waits for a person's decision on a tool call
                approval, output = asked.request, ""
            except OnErrorEvent as routed:
                handled, event, output = routed, routed.event, routed.content
            except OnErrorState as moved:
                handled, error_state, output = moved, moved.state, moved.message
            except BudgetExceeded as refused:
                logger.warning("invoker state %s of session %s not run: %s", state_id, model.session_id, refused)
                failure, output = refused, str(refused)
                event = refused.fallback_event or event
            except Exception as exc:  # an invoker's failure is kept on the session, not raised
                logger.warning("invoker state %s of session %s failed: %s", state_id, model.session_id, exc)
                failure, output = exc, ""
        current_tool_run.reset(tools_token)
        record_auto_approvals(model, tools.audit, state_id, scope.label)
        if approval is not None:
            flow.add_usage(model, node_id, usage.calls)
            record_request(model, approval, state_id, scope.label)
            return Command(update=scope.update(model), goto=node_id)  # it runs again to wait for the decision
        failed = failure or (handled.__cause__ if handled is not None else None)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)

        def record_run(model: GenieModel) -> None:
            """What the run leaves on the model whatever its transition does: usage and history."""
            flow.add_usage(model, node_id, usage.calls)
            record_cut_offs(model, state_id, starts, scope.label)
            for call in failed_calls:
                model.record_history(
                    HistoryKind.INVOKER_FAILURE,
                    state=state_id,
                    flow=scope.label,
                    template=call.template,
                    attempt=call.attempt,
                    error=call.error,
                    duration_ms=call.duration_ms,
                )
            if isinstance(failure, BudgetExceeded):  # it did not run: its budget_refused entry says so
                model.record_history(HistoryKind.BUDGET_REFUSED, state=state_id, flow=scope.label, error=str(failure))
            else:
                model.record_history(
                    HistoryKind.INVOKER_RUN,
                    state=state_id,
                    flow=scope.label,
                    outcome="ok" if failed is None else "failed",
                    duration_ms=duration_ms,
                    error=None if failed is None else f"{type(failed).__name__}: {failed}",
                    detail=None if handled is None else {"on_error": error_state or event},
                )

        record_run(model)
        # As Genie Flow does, the completion event is sent also after a failure (with ""), so a
        # front end finds the session where it expects it. Should that transition fail too
        # (no condition passes, a hook raises), the state waits for an event sent by hand.
        stuck: Exception | None = None
        try:
            if error_state is not None:
                await move_to_error_state(flow, model, state_id, error_state, output)
            else:
                await flow.send(model, event, output)
        except Exception as exc:
            logger.warning("completion event %s of state %s failed: %s", event, state_id, exc)
            stuck = exc
            model = validate(type(model), entered)  # as the run left it, before the failed transition
            record_run(model)
        progress.add_done()
        if failure is None and stuck is None:
            return Command(update=scope.update(model), goto=scope.goto(model))
        error: dict[str, Any] = {"session_id": model.session_id, "state": node_id}
        if failure is not None:
            error["exception"] = f"{type(failure).__name__}: {failure}"
        if isinstance(failure, BudgetExceeded):
            error["error"] = failure.code
        if stuck is not None:
            error["transition_error"] = f"{type(stuck).__name__}: {stuck}"
            error[_WAITING] = True
        model.task_error = json.dumps(error)
        return Command(update=scope.update(model), goto=node_id if stuck else scope.goto(model))

    if is_final and kind is StateKind.USER:
        afunc: Callable[..., Coroutine[Any, Any, Command[Any]]] = finish_node if not is_initial else user_node
    elif kind is StateKind.INVOKER:
        afunc = invoker_node
    elif kind is StateKind.SUBFLOW:
        afunc = subflow_node
    else:
        afunc = user_node

    traced = _tracing.traced_node(afunc, flow, state_id, node_id)

    async def node(channels: dict[str, Any], config: RunnableConfig) -> Command[Any]:
        # The node reads the channels as they are and validates them once; the update it returns
        # is what differs from them (no dump of the model as it came in).
        session = validate(root.model_class, channels)
        index = len(session.flows.frames) - 1 if nested else -1
        if nested and (index < 0 or session.flows.frames[index].flow != flow.label):
            active = session.flows.frames[-1].flow if index >= 0 else root.label
            raise RuntimeError(f"node {node_id} ran while flow {active!r} is active")
        scope = _Scope(root, flow, node_id, session, index, channels)
        source = root.runner.preferences
        with streaming_tokens(node_id):
            if source is None:
                return await traced(model_at(root, session, index), config, scope)
            sender = asked_by(session)  # looked up once per node run, for every template it renders
            token = current_preferences.set((sender, await preferences_of(source, sender)))
            try:
                return await traced(model_at(root, session, index), config, scope)
            finally:
                current_preferences.reset(token)

    def func(channels: dict[str, Any], config: RunnableConfig) -> Command[Any]:
        return _run_blocking(node, channels, config)  # type: ignore[no-any-return]

    # What LangGraph makes of a plain function node: its signature is read once, not on every call,
    # and no callback run is opened per node (trace=False); models called inside still stream tokens.
    return RunnableCallable(func, node, name=node_id, trace=False)


def channels_schema(model_class: type[GenieModel]) -> type[Any]:
    """The nodes' input: the model's channels as they are (a TypedDict), not the model LangGraph would build."""
    fields = dict.fromkeys(model_class.model_fields, Any)
    return TypedDict(f"{model_class.__name__}Channels", fields, total=False)  # type: ignore[operator, no-any-return]
