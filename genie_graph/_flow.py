"""A flow compiled from its declaration: state kinds, events, and how one transition runs.

``compile_flow`` validates a ``GenieModel`` class and its ``GenieStateMachine`` once. The
resulting :class:`CompiledFlow` is what graph nodes and the session runtime share: it picks
the transition an event takes (conditions only), runs it with Genie Flow's hook order and
dialogue recording, and renders user-facing templates.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import re
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from statemachine import State
from statemachine.event_data import EventData, TriggerData
from statemachine.exceptions import InvalidDefinition
from statemachine.transition import Transition

from . import _tracing
from ._composite import CompositeRunner
from ._declaration import CompositeTemplate, GenieStateMachine, SubFlow
from ._failures import ON_ERROR_EVENT, FlowFailures, compile_failures
from ._history import HistoryKind
from ._invokers._base import run_blocking
from ._model import Actor, DialoguePersistence, GenieModel, StateKind
from ._preferences import current_preferences
from ._stack import FlowStatus
from ._subflows import (
    FlowLink,
    all_trigger_events,
    check_abort_states,
    check_interruptible,
    compose,
    node_name,
    position,
    running_trigger_events,
    trigger_events,
)
from ._tools import ApprovalStatus, asked_by, pending_approval
from ._usage import Budget, CallUsage
from .errors import BudgetExceeded, EventNotAllowed, FlowDefinitionError

_BASE_RENDER_DATA = inspect.getattr_static(GenieModel, "render_data")
"""GenieModel's own ``render_data``: a model class that overrides it gets its full render data."""

T = TypeVar("T")

POLL = "poll"
"""The reserved event name that asks how a background run is doing."""

TransitionObserver = Callable[[str, str, int | None], None]
"""Told ``(source state id, event, position)`` once a transition has run with all its hooks, where
position is the transition's index among the source state's transitions; position is None when the
event is declared in the state but the conditions of all its transitions failed (the event is refused).
"""

_RECORDING: dict[tuple[StateKind, StateKind], DialoguePersistence] = {
    (StateKind.USER, StateKind.USER): DialoguePersistence.RENDERED,
    (StateKind.USER, StateKind.INVOKER): DialoguePersistence.RAW,
    (StateKind.INVOKER, StateKind.USER): DialoguePersistence.RENDERED,
    (StateKind.INVOKER, StateKind.INVOKER): DialoguePersistence.NONE,
    # A sub-flow state records what led to it (the user's text, an invoker's output); its return
    # event renders the next user state as any transition out of an invoker state does.
    (StateKind.USER, StateKind.SUBFLOW): DialoguePersistence.RAW,
    (StateKind.INVOKER, StateKind.SUBFLOW): DialoguePersistence.RAW,
    (StateKind.SUBFLOW, StateKind.USER): DialoguePersistence.RENDERED,
    (StateKind.SUBFLOW, StateKind.INVOKER): DialoguePersistence.NONE,
    (StateKind.SUBFLOW, StateKind.SUBFLOW): DialoguePersistence.NONE,
}
_ACTOR = {StateKind.USER: Actor.USER, StateKind.INVOKER: Actor.ASSISTANT, StateKind.SUBFLOW: Actor.ASSISTANT}
_GENERIC_HOOKS = frozenset(
    {"on_enter_state", "on_exit_state", "before_transition", "on_transition", "after_transition"}
)
_HOOK_PATTERN = re.compile(r"^(on_enter|on_exit|before|after)_(\w+)$")


@dataclass(frozen=True)
class GenieCompat:
    """Genie Flow behaviours that genie-graph fixes by default; set a flag to get the old one.

    Attributes:
        user_to_user_rendered_as_user: on a user->user transition, record only the rendered
            target template, as a ``user`` utterance (Genie Flow). Default: record the user's raw
            input as ``user``, then the rendered template as ``assistant``.
        state_id_is_value: ``state_id`` in render data is the state's value (Genie Flow), not its id.
        lenient_undefined: a missing template variable renders as "" instead of raising.
    """

    user_to_user_rendered_as_user: bool = False
    state_id_is_value: bool = False
    lenient_undefined: bool = False


class _TransitionRecorder:
    """Genie Flow's ``TransitionManager`` work, done by ``CompiledFlow._send`` around each transition.

    It runs after the machine's own ``before`` and ``after`` callbacks, so the dialogue is recorded
    last, with whatever ``dialogue_persistence`` a hook left. (It is no python-statemachine
    listener: a listener costs each machine a scan of its attributes, and would make every flow
    look as if it had hooks that must run on a worker thread.)
    """

    def __init__(self, flow: CompiledFlow) -> None:
        self._flow = flow

    def before_transition(self, model: GenieModel, event_input: str | None, source: State, target: State) -> None:
        source_kind = self._flow.kinds[source.id]
        target_kind = self._flow.kinds[target.id]
        model.source_type = source_kind
        model.target_type = target_kind
        model.actor = _ACTOR[source_kind]
        model.dialogue_persistence = _RECORDING[(source_kind, target_kind)]
        model.actor_input = event_input
        model.task_error = None

    def after_transition(self, model: GenieModel, target: State) -> None:
        persistence = model.dialogue_persistence
        if persistence is DialoguePersistence.RAW:
            model.record_dialogue_element()
        elif persistence is DialoguePersistence.RENDERED:
            compat = self._flow.compat
            user_to_user = model.source_type is StateKind.USER and model.target_type is StateKind.USER
            if user_to_user and not compat.user_to_user_rendered_as_user and model.actor_input:
                model.add_dialogue_element(Actor.USER, model.actor_input)
            model.actor_input = self._flow.render(target.id, model)
            if user_to_user and not compat.user_to_user_rendered_as_user:
                model.actor = Actor.ASSISTANT  # actor_input now holds the assistant's text
            model.add_dialogue_element(model.actor or Actor.ASSISTANT, model.actor_input)


@dataclass
class CompiledFlow:
    """A validated flow: everything a node or the runtime needs to know about its states."""

    model_class: type[GenieModel]
    machine_class: type[GenieStateMachine]
    runner: CompositeRunner
    compat: GenieCompat
    templates: dict[str, CompositeTemplate]
    kinds: dict[str, StateKind]
    initial: str
    finals: frozenset[str]
    events_out: dict[str, list[str]]
    completion_event: dict[str, str]
    id_by_value: dict[Any, str]
    names: dict[str, str]
    targets: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """source id -> target id -> edge labels (``event [cond]``) of the declared transitions."""
    observers: list[TransitionObserver] = field(default_factory=list)
    """Told which transition each event took (``genie_graph.testing``'s transition coverage)."""
    failures: FlowFailures = field(default_factory=FlowFailures)
    """Per-state failure policies (``on_failure``), resume limits and ``on_error`` moves."""
    budget: Budget | Callable[[GenieModel], Budget | None] | None = None
    """The machine's limit on what one session may spend on invoker calls (or a function of the model)."""
    label: str = ""
    """The flow's name in node names, the history and ``active_flows`` (see ``SubFlow.name``)."""
    nested: bool = False
    """Compiled as a sub-flow or interrupting flow of another (its history entries name it)."""
    subflow_specs: dict[str, SubFlow] = field(default_factory=dict)
    """Sub-flow state id -> its declaration; ``subflows`` holds them checked."""
    subflows: dict[str, FlowLink] = field(default_factory=dict)
    interruptions: list[FlowLink] = field(default_factory=list)
    """The flows that may interrupt this one, in declaration order."""
    interruptible: bool | frozenset[str] = True
    abort_states: frozenset[str] = frozenset()
    intent_classifier: str | None = None
    group_reasoner: str | Callable[..., Any] | None = None
    """Decides whether a group message is for the flow (see ``_group``): an invoker template or a function."""
    children: dict[str, CompiledFlow] = field(default_factory=dict)
    """Of the session's own flow: every flow it can reach (sub-flows, interruptions), by name."""
    nodes: dict[str, tuple[CompiledFlow, str]] = field(default_factory=dict)
    """Of the session's own flow: the session graph's node names -> (flow, state id)."""
    plain: dict[tuple[str, str], tuple[int, Transition]] = field(default_factory=dict)
    """(state id, event) -> the transition the event always takes there, and its position, where no
    callback (validator, condition or hook, the machine's, the model's or a convention's) runs on the
    way: such an event needs no machine built (see ``plain_transitions``)."""

    def budget_of(self, model: GenieModel) -> Budget | None:
        """The budget of ``model``'s session: the machine's, or what its budget function answers."""
        if self.budget is None or isinstance(self.budget, Budget):
            return self.budget
        budget = self.budget(model)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"the machine's budget function returned {budget!r}; return a genie_graph.Budget or None")
        return budget

    def check_budget(self, model: GenieModel, state_id: str) -> None:
        """Refuse to run invoker state ``state_id`` once the session has spent its budget.

        Raises:
            BudgetExceeded: the budget is spent.
        """
        budget = self.budget_of(model)
        if budget is None:
            return
        reason = budget.exceeded_by(model.usage)
        if reason is None:
            return
        fallback = budget.on_exceeded
        if fallback is not None and fallback not in self.events_out[state_id]:
            fallback = None  # this state has no such way out: its completion event carries the error
        raise BudgetExceeded(state_id, reason, fallback)

    def add_usage(self, model: GenieModel, state_id: str, calls: Iterable[CallUsage]) -> None:
        """Count the invoker calls of a run of ``state_id`` in ``model.usage``, priced."""
        prices = self.runner.prices
        for call in calls:
            model.usage.currency = prices.currency
            model.usage.add(state_id, call, prices.cost(call))

    @property
    def history_label(self) -> str | None:
        """How history entries name the flow: None for a session's own flow."""
        return self.label if self.nested else None

    @property
    def name(self) -> str:
        return f"{self.machine_class.__module__}.{self.machine_class.__qualname__}"

    @property
    def invoker_states(self) -> list[str]:
        """Nodes of the session graph that call an invoker (a Celery worker's share of a run)."""
        return [node for node, (flow, state_id) in self.nodes.items() if flow.kinds[state_id] is StateKind.INVOKER]

    def is_interruptible(self, state_id: str) -> bool:
        """Whether an interruption may fire while this flow waits in user state ``state_id``."""
        if self.kinds.get(state_id) is not StateKind.USER or state_id in self.finals:
            return False
        return self.interruptible if isinstance(self.interruptible, bool) else state_id in self.interruptible

    # ---- the session graph's nodes (this flow's states, and its sub-flows' and interruptions') ----
    def node_kind(self, node: str) -> StateKind | None:
        """What node ``node`` of the session graph does (None: no such node)."""
        found = self.nodes.get(node)
        return None if found is None else found[0].kinds[found[1]]

    def node_template(self, node: str) -> CompositeTemplate | None:
        found = self.nodes.get(node)
        return None if found is None else found[0].templates[found[1]]

    def node_name(self, node: str) -> str:
        """The state name of node ``node``."""
        flow, state_id = self.nodes[node]
        return flow.names[state_id]

    def entry_node(self, node: str) -> str:
        """The node that does the work when the session goes to ``node``: a sub-flow state's child's first."""
        found = self.nodes.get(node)
        while found is not None and found[0].kinds[found[1]] is StateKind.SUBFLOW:
            owner, state_id = found
            child = self.children[owner.subflows[state_id].child]
            node = node_name(self, child, child.initial)
            found = self.nodes.get(node)
        return node

    def node_of(self, model: GenieModel) -> str:
        """The node of the state the session is in (a sub-flow's or interruption's when one runs)."""
        flow, state_id = position(self, model)
        return node_name(self, flow, state_id)

    def node_of_update(self, update: Mapping[str, Any], values: Mapping[str, Any] | None) -> str | None:
        """The node a node's channel update moves the session to (None: it stays, or is not known yet)."""
        if "flows" in update:
            frames = (update["flows"] or {}).get("frames") or []
            if frames:
                child = self.children.get(frames[-1]["flow"])
                state_id = None if child is None else child.id_by_value.get(frames[-1]["model"].get("state"))
                return None if child is None or state_id is None else node_name(self, child, state_id)
            state = update.get("state", (values or {}).get("state"))
        elif "state" in update:
            state = update["state"]
        else:
            return None
        return self.id_by_value.get(state)

    def flows_running(self, model: GenieModel) -> list[str]:
        """The names of the flows running, the session's own first."""
        return [self.label] + [frame.flow for frame in model.flows.frames]

    def response_of(self, model: GenieModel) -> str:
        """The response to the user: the last utterance, after the last words of flows that ended before it."""
        notice = model.flows.notice
        if notice is not None and notice.said_from is not None:
            said = [e.actor_text for e in model.dialogue[notice.said_from :] if e.actor is Actor.ASSISTANT]
            return "\n\n".join(text for text in said if text.strip())
        return model.dialogue[-1].actor_text if model.dialogue else ""

    def flows_told(self, model: GenieModel) -> dict[str, Any]:
        """What a response tells of the session's flows: empty unless sub-flows or interruptions ran."""
        stack, told = model.flows, dict[str, Any]()
        if stack.frames:
            told["active_flows"] = self.flows_running(model)
        waiting = [request.public() for request in model.approvals if request.status is ApprovalStatus.PENDING]
        if waiting:
            told["approvals"] = waiting
        if stack.notice is not None:
            told["interrupted_by"] = stack.notice.interrupted_by
            told["resumed"] = stack.notice.resumed
            told["aborted"] = list(stack.notice.aborted) or None
        return told

    def session_actions(self, model: GenieModel) -> list[str]:
        """The events the session takes now: its active state's, then the interruptions' that may fire.

        None while the session's flow is aborted, or while a tool call waits for approval.
        """
        if model.flows.status is FlowStatus.ABORTED or (model.approvals and pending_approval(model)):
            return []
        if not model.flows.frames and not self.interruptions:
            return self.next_actions(self.state_of(model))
        flow, state_id = position(self, model)
        return flow.next_actions(state_id) + trigger_events(self, model)

    def session_refusal(self, model: GenieModel, event: str, reason: str = "") -> EventNotAllowed:
        """The error refusing ``event`` where the session is now (nothing is changed)."""
        flow, state_id = position(self, model)
        node = node_name(self, flow, state_id)
        allowed = self.session_actions(model)
        if model.flows.status is FlowStatus.ABORTED:
            reason = reason or "the session's flow was aborted; it takes no more events"
        elif not reason and event in all_trigger_events(self) and event not in allowed:
            if flow.is_interruptible(state_id) and event in running_trigger_events(self, model):
                running = ", ".join(self.flows_running(model))
                reason = f"event {event!r} starts a flow that is running already (running: {running})"
            else:
                reason = (
                    f"event {event!r} interrupts a flow, but state {state_id!r} of flow {flow.label!r} "
                    "may not be interrupted (see the machine's `interruptible`)"
                )
        refusal = flow._refusal(model, state_id, event, reason)
        return EventNotAllowed(
            session_id=model.session_id,
            state=node,
            state_name=refusal.state_name,
            allowed=allowed,
            received=event,
            reason=refusal.reason,
        )

    # ---- state lookup -------------------------------------------------------------------
    def state_of(self, model: GenieModel) -> str:
        """The id of the model's current state."""
        try:
            return self.id_by_value[model.state]
        except KeyError:
            raise FlowDefinitionError(
                self.name, f"model.state {model.state!r} is no state value of this machine"
            ) from None

    def declared_events(self) -> set[str]:
        """Every event the session's flows declare, interruption triggers included."""
        flows = [self, *self.children.values()]
        return {event for f in flows for events in f.events_out.values() for event in events} | all_trigger_events(self)

    def next_actions(self, state_id: str) -> list[str]:
        """Events the state accepts, in declaration order, conditions not evaluated."""
        return list(self.events_out[state_id])

    # ---- rendering ----------------------------------------------------------------------
    def render_data(self, model: GenieModel, names: Collection[str] | None = None) -> dict[str, Any]:
        """What every template sees: the model's render data, adjusted by the compat flags.

        ``names`` (what a template reads, see ``TemplateLibrary.variables``) limits it to those
        entries, unless the model's class builds its own ``render_data``.
        """
        own = inspect.getattr_static(type(model), "render_data") is not _BASE_RENDER_DATA
        data: dict[str, Any] = model.render_data if names is None or own else model._render_data(names)
        if self.compat.state_id_is_value:
            data["state_id"] = model.state
        sender, preferences = current_preferences.get() or (asked_by(model), {})
        data.setdefault("sender", sender)  # (a model field of the same name wins)
        data.setdefault("preferences", dict(preferences))
        return data

    def render(self, state_id: str, model: GenieModel) -> str:
        """Render a user-facing state's template with the model's render data."""
        template = self.templates[state_id]
        if not isinstance(template, str):
            raise FlowDefinitionError(self.name, "only a template name can be rendered for a user", [state_id])
        return self.runner.library.render_reading(template, functools.partial(self.render_data, model))

    # ---- transitions --------------------------------------------------------------------
    def machine(self, model: GenieModel) -> GenieStateMachine:
        """A machine on ``model`` (no hooks run)."""
        return self.machine_class(model)

    async def enter_initial_state(self, model: GenieModel, *, record_intro: bool = True) -> None:
        """Put a new model in the initial state: run its enter hooks, record the intro.

        The intro is the initial state's rendered template, recorded as the assistant's first
        utterance (Genie Flow's ``create_new_session``); ephemeral sessions skip it.
        """
        machine = self.machine(model)  # a sync machine built on state None enters the initial state
        if model.state is None:  # an async one (async hooks) waits to be activated
            activation = machine.activate_initial_state()  # type: ignore[no-untyped-call]
            if inspect.isawaitable(activation):
                await activation
        model.record_history(HistoryKind.STATE_ENTERED, state=self.initial, flow=self.history_label)
        if record_intro:
            model.add_dialogue_element(Actor.ASSISTANT, self.render(self.initial, model))

    async def select(self, model: GenieModel, event: str, event_input: str) -> int:
        """Which transition ``event`` takes from the model's state; runs validators and conditions only.

        Returns:
            The transition's position among the current state's transitions.

        Raises:
            EventNotAllowed: the state has no transition for the event, or none whose
                conditions pass. Nothing is changed.
        """
        plain = self.plain.get((self.state_of(model), event))
        if plain is not None:
            return plain[0]
        machine = self.machine(model)
        return await _run_callbacks(machine, self._select(machine, model, event, event_input))

    async def _select(self, machine: GenieStateMachine, model: GenieModel, event: str, event_input: str) -> int:
        state_id = self.state_of(model)
        if event not in self.events_out[state_id]:
            raise self._refusal(model, state_id, event)
        for index, transition in enumerate(machine.current_state.transitions):
            if not transition.match(event):
                continue
            args, kwargs = _event_arguments(machine, event, event_input, transition)
            await _call(machine, transition.validators.key, *args, **kwargs)
            if await _all(machine, transition.cond.key, *args, **kwargs):
                return index
        raise self._refusal(
            model,
            state_id,
            event,
            f"event {event!r} is allowed in state {state_id!r} but the conditions of all its "
            "transitions failed for this input",
        )

    async def send(self, model: GenieModel, event: str, event_input: str) -> None:
        """Run the transition ``event`` takes, with every hook, on ``model`` (changed in place).

        Hooks run in Genie Flow's order: (validators and conditions,) before, exit, on, state
        change, enter, after; the dialogue is recorded last.

        Args:
            model: the session's model, in the source state.
            event: the event's name.
            event_input: the event's text (``event_data.args[0]``).

        Raises:
            EventNotAllowed: no transition passes; the model is unchanged.
        """
        plain = self.plain.get((self.state_of(model), event))
        with _tracing.transition(self, model, event, event_input):
            if plain is not None:
                self._take(model, event, event_input, *plain)
                return
            machine = self.machine(model)
            await _run_callbacks(machine, self._send(machine, model, event, event_input))

    def _take(self, model: GenieModel, event: str, event_input: str, chosen: int, transition: Transition) -> None:
        """What ``_send`` does for a transition with no callbacks: the model's part of it only."""
        source, target = transition.source, transition.target
        recorder = _TransitionRecorder(self)
        recorder.before_transition(model, event_input, source, target)
        model.state = target.value  # as the machine's ``current_state = target`` does
        recorder.after_transition(model, target)
        self._record(model, source, event, target, chosen)

    async def _send(self, machine: GenieStateMachine, model: GenieModel, event: str, event_input: str) -> None:
        try:
            chosen = await self._select(machine, model, event, event_input)
        except EventNotAllowed as refused:
            if refused.received in refused.allowed:  # declared here: every condition failed
                for observe in self.observers:
                    observe(refused.state, event, None)
            raise
        transition = list(machine.current_state.transitions)[chosen]
        args, kwargs = _event_arguments(machine, event, event_input, transition)
        source, target = transition.source, transition.target
        recorder = _TransitionRecorder(self)
        await _call(machine, transition.before.key, *args, **kwargs)
        recorder.before_transition(model, event_input, source, target)
        if not transition.internal:
            await _call(machine, source.exit.key, *args, **kwargs)
        await _call(machine, transition.on.key, *args, **kwargs)
        machine.current_state = target
        kwargs["state"] = target
        kwargs["event_data"].state = target
        if not transition.internal:
            await _call(machine, target.enter.key, *args, **kwargs)
        await _call(machine, transition.after.key, *args, **kwargs)
        recorder.after_transition(model, target)
        self._record(model, source, event, target, chosen)

    def _record(self, model: GenieModel, source: State, event: str, target: State, chosen: int) -> None:
        model.record_history(HistoryKind.EVENT, state=source.id, event=event, target=target.id, flow=self.history_label)
        for observe in self.observers:
            observe(source.id, event, chosen)

    def refusal(self, model: GenieModel, event: str, reason: str = "") -> EventNotAllowed:
        """The error refusing ``event`` in the model's current state (nothing is changed)."""
        return self._refusal(model, self.state_of(model), event, reason)

    def _refusal(self, model: GenieModel, state_id: str, event: str, reason: str = "") -> EventNotAllowed:
        known = {e for events in self.events_out.values() for e in events}
        if not reason and event not in known:
            reason = f"unknown event {event!r}; this flow's events are {', '.join(sorted(known))}"
            close = difflib.get_close_matches(event, self.events_out[state_id], n=1)
            if close:
                reason += f" (did you mean {close[0]!r}?)"
        return EventNotAllowed(
            session_id=model.session_id,
            state=state_id,
            state_name=self.names[state_id],
            allowed=self.events_out[state_id],
            received=event,
            reason=reason,
        )


def plain_transitions(machine: GenieStateMachine) -> dict[tuple[str, str], tuple[int, Transition]]:
    """The transitions that run no callback, by (state id, event): see ``CompiledFlow.plain``.

    ``machine`` is one built as the runtime builds them (on a model of the flow's class), so its
    callback registry holds whatever the machine, the model and python-statemachine's naming
    conventions attach to each transition. An event takes a plain transition only if no transition
    before it for that event has a condition or validator to evaluate.
    """
    registry = machine._callbacks._registry

    def runs(key: str) -> bool:
        return key in registry and bool(registry[key].items)

    plain: dict[tuple[str, str], tuple[int, Transition]] = {}
    for state in type(machine).states:
        decided: set[str] = set()
        for index, transition in enumerate(state.transitions):
            for event in transition.events:
                name = str(event)
                if name in decided:
                    continue
                decided.add(name)  # this transition is the first to decide for ``name``
                if runs(transition.validators.key) or runs(transition.cond.key):
                    continue
                hooks = [transition.before.key, transition.on.key, transition.after.key]
                if not transition.internal:
                    hooks += [transition.source.exit.key, transition.target.enter.key]
                if not any(runs(key) for key in hooks):
                    plain[(state.id, name)] = (index, transition)
    return plain


def _event_arguments(
    machine: GenieStateMachine, event: str, event_input: str, transition: Transition
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What python-statemachine passes callbacks (injected by parameter name)."""
    trigger = TriggerData(machine=machine, event=getattr(machine, event), args=(event_input,))
    event_data = EventData(trigger_data=trigger, transition=transition)
    return event_data.args, event_data.extended_kwargs


async def _run_callbacks(machine: GenieStateMachine, steps: Coroutine[Any, Any, T]) -> T:
    """Run a machine's callbacks: on the event loop when some are async, else in a worker thread.

    Sync hooks and conditions (the usual kind, often doing I/O in ported Genie Flow code) must not
    hold up the event loop that serves every other session.
    """
    if machine._callbacks.has_async_callbacks or not _has_callbacks(machine):
        return await steps  # async hooks, or none at all: nothing that could block the loop
    try:
        return await run_blocking(_drive, steps)
    except asyncio.CancelledError:
        if inspect.getcoroutinestate(steps) == inspect.CORO_CREATED:
            steps.close()  # cut off before its thread took it (the process is ending): it never runs
        raise


def _has_callbacks(machine: GenieStateMachine) -> bool:
    """Whether the machine has any hook, condition or validator (its own, or its model's)."""
    return any(executor.items for executor in machine._callbacks._registry.values())


def _drive(steps: Coroutine[Any, Any, T]) -> T:
    """Run to completion a coroutine that awaits nothing asynchronous (all its callbacks are sync)."""
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    steps.close()
    raise RuntimeError("a machine without async callbacks awaited something asynchronous")


# python-statemachine 2.x keeps the callbacks of a machine in a registry keyed per group; its
# engine calls them the same way. We drive them ourselves so that the conditions evaluated by
# ``select`` are not evaluated again when the chosen transition runs.
async def _call(sm: GenieStateMachine, key: str, /, *args: Any, **kwargs: Any) -> None:
    registry = sm._callbacks
    if registry.has_async_callbacks:
        if key in registry._registry:
            await registry.async_call(key, *args, **kwargs)
        return
    registry.call(key, *args, **kwargs)


async def _all(sm: GenieStateMachine, key: str, /, *args: Any, **kwargs: Any) -> bool:
    registry = sm._callbacks
    if registry.has_async_callbacks:
        if key not in registry._registry:
            return True
        return bool(await registry.async_all(key, *args, **kwargs))
    return bool(registry.all(key, *args, **kwargs))


def _label(transition: Transition) -> str:
    specs = []
    for spec in transition.cond:
        expression = str(spec.func) if isinstance(spec.func, str) else getattr(spec.func, "__name__", "cond")
        if not spec.expected_value:
            compound = any(f" {op} " in f" {expression} " for op in ("and", "or", "not"))
            expression = f"!({expression})" if compound else f"!{expression}"
        specs.append(expression)
    events = " ".join(str(e) for e in transition.events)
    return f"{events} [{' and '.join(specs)}]" if specs else events


def compile_flow(
    model_class: type[GenieModel],
    runner: CompositeRunner,
    compat: GenieCompat | None = None,
    *,
    composed: bool = True,
) -> CompiledFlow:
    """Validate a model class and its machine, and compile them.

    With ``composed`` (the default), the flows it reaches through sub-flows and interruptions are
    compiled too and linked into it (``children``, ``nodes``): it is a session's own flow.

    Raises:
        FlowDefinitionError: naming the states, events or hooks at fault.
    """
    flow_name = f"{model_class.__module__}.{model_class.__qualname__}"
    if not (isinstance(model_class, type) and issubclass(model_class, GenieModel)):
        raise FlowDefinitionError(flow_name, "is not a GenieModel subclass", fix="Subclass genie_graph.GenieModel")
    try:
        machine_class = model_class.get_state_machine_class()
    except NotImplementedError as exc:
        raise FlowDefinitionError(
            flow_name,
            "get_state_machine_class() is not implemented",
            fix="Add a classmethod get_state_machine_class returning the GenieStateMachine subclass",
        ) from exc
    if not (isinstance(machine_class, type) and issubclass(machine_class, GenieStateMachine)):
        raise FlowDefinitionError(
            flow_name,
            f"get_state_machine_class() returned {machine_class!r}",
            fix="Return a genie_graph.GenieStateMachine subclass",
        )
    name = f"{machine_class.__module__}.{machine_class.__qualname__}"
    states: list[State] = list(machine_class.states)
    ids = [s.id for s in states]

    initials = [s.id for s in states if s.initial]
    if len(initials) != 1:
        raise FlowDefinitionError(
            name, "needs exactly one initial state", initials or ids, fix="Mark one state State(initial=True)"
        )
    values = [s.value for s in states]
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise FlowDefinitionError(name, "state values must be unique", duplicates)

    templates = dict(getattr(machine_class, "templates", {}) or {})
    missing = [i for i in ids if i not in templates]
    if missing:
        raise FlowDefinitionError(
            name,
            "states without a template",
            missing,
            fix="Add an entry for each to the machine's `templates` dict",
        )
    unknown = [k for k in templates if k not in ids]
    if unknown:
        raise FlowDefinitionError(
            name,
            "templates given for states that do not exist",
            unknown,
            fix=f"Known states: {', '.join(ids)}",
        )

    events = [str(e) for e in machine_class.events]  # type: ignore[attr-defined]
    for attr in dir(machine_class):
        match = _HOOK_PATTERN.match(attr)
        if not match or attr in _GENERIC_HOOKS or not callable(getattr(machine_class, attr, None)):
            continue
        kind, subject = match.groups()
        valid = ids if kind in ("on_enter", "on_exit") else events
        if subject not in valid:
            raise FlowDefinitionError(
                name,
                f"hook {attr} names no {'state' if kind in ('on_enter', 'on_exit') else 'event'}",
                [attr],
                fix=f"Known {'states' if kind in ('on_enter', 'on_exit') else 'events'}: {', '.join(valid)}",
            )

    kinds: dict[str, StateKind] = {}
    subflow_specs: dict[str, SubFlow] = {}
    for state in states:
        template = templates[state.id]
        if isinstance(template, SubFlow):
            if state.final:
                raise FlowDefinitionError(name, "a final state cannot run a sub-flow", [state.id])
            subflow_specs[state.id] = template
            kinds[state.id] = StateKind.SUBFLOW
            continue
        runner.check(template, name, state.id)
        kinds[state.id] = StateKind.INVOKER if runner.invokes(template) else StateKind.USER

    events_out = {s.id: [str(e) for e in s.transitions.unique_events] for s in states}
    completion_event: dict[str, str] = {}
    declared_completions = dict(getattr(machine_class, "completion_events", {}) or {})
    for state in states:
        if kinds[state.id] is not StateKind.INVOKER:
            continue
        if not events_out[state.id]:
            raise FlowDefinitionError(
                name,
                "invoker states need an outgoing event",
                [state.id],
                fix="Add a transition out of it, e.g. ai_extraction = state.to(next)",
            )
        chosen = declared_completions.get(state.id, events_out[state.id][0])
        if chosen not in events_out[state.id]:
            raise FlowDefinitionError(
                name,
                f"completion event {chosen!r} does not leave the state",
                [state.id],
                fix=f"Choose one of {', '.join(events_out[state.id])}",
            )
        completion_event[state.id] = chosen

    reachable = {initials[0]}
    frontier = [initials[0]]
    by_id = {s.id: s for s in states}
    while frontier:
        for transition in by_id[frontier.pop()].transitions:  # type: ignore[attr-defined]
            if transition.target.id not in reachable:
                reachable.add(transition.target.id)
                frontier.append(transition.target.id)
    unreachable = [i for i in ids if i not in reachable]
    if unreachable:
        raise FlowDefinitionError(
            name, "unreachable states", unreachable, fix="Add a transition into each, or remove it"
        )

    budget = getattr(machine_class, "budget", None)
    if isinstance(budget, staticmethod):
        budget = budget.__func__
    if budget is not None:
        if not isinstance(budget, Budget) and not callable(budget):
            raise FlowDefinitionError(
                name,
                f"budget must be a genie_graph.Budget or a function of the model returning one, got {budget!r}",
                ["budget"],
            )
        if isinstance(budget, Budget) and budget.on_exceeded is not None and budget.on_exceeded not in events:
            raise FlowDefinitionError(
                name,
                f"Budget(on_exceeded={budget.on_exceeded!r}) names no event of the machine",
                ["budget"],
                fix=f"Known events: {', '.join(events)}",
            )

    failures = compile_failures(name, machine_class, runner, templates, kinds, events_out)
    targets: dict[str, dict[str, list[str]]] = {}
    for state in states:
        per_target = targets.setdefault(state.id, {})
        for transition in state.transitions:  # type: ignore[attr-defined]
            per_target.setdefault(transition.target.id, []).append(_label(transition))
        for error_state in sorted(failures.error_moves.get(state.id, ())):
            per_target.setdefault(error_state, []).append(ON_ERROR_EVENT)

    flow = CompiledFlow(
        model_class=model_class,
        machine_class=machine_class,
        runner=runner,
        compat=compat or GenieCompat(),
        templates=templates,
        kinds=kinds,
        initial=initials[0],
        finals=frozenset(s.id for s in states if s.final),
        events_out=events_out,
        completion_event=completion_event,
        id_by_value={s.value: s.id for s in states},
        names={s.id: s.name for s in states},
        targets=targets,
        budget=budget,
        failures=failures,
        subflow_specs=subflow_specs,
        intent_classifier=_intent_classifier(name, machine_class, runner),
        group_reasoner=_group_reasoner(name, machine_class, runner),
    )
    flow.interruptible = check_interruptible(flow)
    flow.abort_states = check_abort_states(flow)
    try:  # resolves every cond/unless name and expression, as python-statemachine does per instance
        machine = flow.machine_class(model_class.model_construct(state=by_id[initials[0]].value))
    except InvalidDefinition as exc:
        fix = "Define the named method on the machine or the model"
        unresolved = re.search(r"name '([^']+)'", str(exc))
        if unresolved:
            names = [n for n in dir(machine_class) + list(model_class.model_fields) if not n.startswith("_")]
            close = difflib.get_close_matches(unresolved.group(1), names, n=1)
            if close:
                fix = f"Did you mean {close[0]!r}? " + fix
        raise FlowDefinitionError(name, str(exc), fix=fix) from exc
    flow.plain = plain_transitions(machine)
    if composed:  # the flows it calls or that interrupt it, compiled into the same session graph
        compose(flow, lambda child: compile_flow(child, runner, compat, composed=False))
    return flow


def _invoker_template(name: str, runner: CompositeRunner, attribute: str, template: str, answers: str) -> str:
    """``template`` checked as a machine attribute naming an invoker template that ``answers``."""
    runner.check(template, name, attribute)
    if not runner.invokes(template):
        raise FlowDefinitionError(
            name,
            f"{attribute} {template!r} declares no invoker",
            [attribute],
            fix=f"Put a meta.yaml with an invoker in its directory; it answers {answers}",
        )
    return template


def _group_reasoner(
    name: str, machine_class: type[GenieStateMachine], runner: CompositeRunner
) -> str | Callable[..., Any] | None:
    reasoner = getattr(machine_class, "group_reasoner", None)
    if reasoner is None or (callable(reasoner) and not isinstance(reasoner, str)):
        return reasoner
    if not isinstance(reasoner, str):
        raise FlowDefinitionError(
            name,
            f"group_reasoner must be an invoker template name or a function, got {reasoner!r}",
            ["group_reasoner"],
        )
    return _invoker_template(name, runner, "group_reasoner", reasoner, "IGNORE or DELEGATE for {{ message }}")


def _intent_classifier(name: str, machine_class: type[GenieStateMachine], runner: CompositeRunner) -> str | None:
    template = getattr(machine_class, "intent_classifier", None)
    if template is None:
        return None
    if not isinstance(template, str):
        raise FlowDefinitionError(
            name, f"intent_classifier must be a template name, got {template!r}", ["intent_classifier"]
        )
    return _invoker_template(name, runner, "intent_classifier", template, "the intent label for {{ user_input }}")
