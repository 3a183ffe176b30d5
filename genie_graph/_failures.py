"""Declared failure handling: retries, timeouts and what happens after an invoker's last failure.

A template directory declares it in its ``meta.yaml`` (``invoker: {retry: ..., on_error: ...}``);
a machine overrides it per invoker state with ``on_failure = {"state_id": {...}}`` (the same two
keys; each one given replaces the directory's for every template the state runs). After the last
failed call, ``on_error`` decides:

* a string: rendered (with ``error``) it becomes the template's output, and the flow goes on;
* ``{event: name, content: "..."}``: the state sends ``name`` with the rendered content instead of
  its completion event (a declared transition: conditions and hooks run);
* ``{state: id, template: name}`` or ``{state: id, message: "..."}``: the session moves to user
  state ``id`` and the rendered message is the assistant's answer (see
  :func:`move_to_error_state`);
* nothing: Genie Flow's way: the completion event is sent with ``""`` and the failure shows in
  ``task_error`` until the flow moves on.

Each failed call (retried or not) is collected here while the state runs and recorded in the
session's history by the invoker node. A run whose process ends before it finishes is resumed
from its last checkpoint; :func:`count_start` counts the starts of each invoker state's run so
that a run that keeps killing its process is failed cleanly (``RunCutOff``) instead of resumed for
ever.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import jinja2
from statemachine.event import Event
from statemachine.event_data import EventData, TriggerData
from statemachine.transition import Transition

from ._declaration import CompositeTemplate, MapTaskTemplate, NamedQueueTaskTemplate
from ._history import HistoryKind
from ._invokers import DEFAULT_RESUMES, RetryPolicy
from ._model import Actor, DialoguePersistence, GenieModel, StateKind
from .errors import FlowDefinitionError, GenieGraphError, InvokerConfigError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ._composite import CompositeRunner
    from ._flow import CompiledFlow
    from ._templates import TemplateLibrary

__all__ = ["FailurePolicy", "OnError", "RetryPolicy"]

logger = logging.getLogger("genie_graph")

ON_ERROR_EVENT = "on_error"
"""The event name the history (and hooks' ``event``) show for a move to an ``on_error`` state."""

_ON_ERROR_SHAPE = (
    'a text template ("Sorry: {{ error }}"), {event: name, content: "..."}, '
    'or {state: id, template: path} / {state: id, message: "..."}'
)


@dataclass(frozen=True)
class OnError:
    """What happens after an invoker's last failed call (``on_error:``); exactly one form is set.

    Attributes:
        text: a template whose rendering becomes the failed template's output.
        event: the event the invoker state sends instead of its completion event.
        content: the template of that event's input text.
        state: the user state the session moves to.
        template: the template (a path under the template root) of the message shown there.
        message: an inline template of that message (instead of ``template``).
    """

    text: str | None = None
    event: str | None = None
    content: str = ""
    state: str | None = None
    template: str | None = None
    message: str | None = None

    @classmethod
    def parse(cls, value: Any) -> OnError | None:
        """An ``on_error:`` value in its meta.yaml shape (an ``OnError`` passes through).

        Raises:
            InvokerConfigError: the shape is wrong; the message names the shapes allowed.
        """
        if value is None or isinstance(value, OnError):
            return value
        if isinstance(value, str):
            return cls(text=value)
        if not isinstance(value, Mapping):
            raise InvokerConfigError(f"'on_error:' must be {_ON_ERROR_SHAPE}; got {value!r}")
        keys = set(value)
        if "event" in keys and "state" in keys:
            raise InvokerConfigError(f"'on_error:' {dict(value)!r} names an event and a state; keep one")
        if "event" in keys:
            unknown = keys - {"event", "content"}
            if unknown or not isinstance(value["event"], str) or not isinstance(value.get("content", ""), str):
                raise InvokerConfigError(
                    f"'on_error:' {dict(value)!r}: an event form is {{event: name, content: text}}"
                )
            return cls(event=value["event"], content=value.get("content", ""))
        if "state" in keys:
            unknown = keys - {"state", "template", "message"}
            has_one = ("template" in keys) != ("message" in keys)
            if unknown or not has_one or not all(isinstance(value[k], str) for k in keys):
                raise InvokerConfigError(
                    f"'on_error:' {dict(value)!r}: a state form is {{state: id, template: path}} "
                    'or {state: id, message: "text"}'
                )
            return cls(state=value["state"], template=value.get("template"), message=value.get("message"))
        raise InvokerConfigError(f"'on_error:' must be {_ON_ERROR_SHAPE}; got {dict(value)!r}")


@dataclass(frozen=True)
class FailurePolicy:
    """A state's own failure handling, overriding its templates' ``meta.yaml`` (``on_failure``).

    Each field given replaces the directory's ``retry:`` or ``on_error:`` for every template the
    state runs; a field left None keeps the directory's. Both take their meta.yaml shapes.

    Attributes:
        retry: a :class:`RetryPolicy`, or its meta.yaml shape (``3``, ``{retries: 3, timeout_seconds: 10}``).
        on_error: an :class:`OnError`, or its meta.yaml shape (text, ``{event, content}``,
            ``{state, template}`` / ``{state, message}``).

    Example:
        >>> class Machine(GenieStateMachine):  # doctest: +SKIP
        ...     on_failure = {
        ...         "summarise": {"retry": {"retries": 3, "timeout_seconds": 30}},
        ...         "answer": FailurePolicy(on_error={"state": "sorry", "template": "errors/llm_down.jinja2"}),
        ...     }
    """

    retry: RetryPolicy | None = None
    on_error: OnError | None = None

    def __post_init__(self) -> None:
        if self.retry is not None:
            object.__setattr__(self, "retry", RetryPolicy.parse(self.retry))
        object.__setattr__(self, "on_error", OnError.parse(self.on_error))

    @classmethod
    def parse(cls, value: Any) -> FailurePolicy:
        """A policy from ``{retry: ..., on_error: ...}`` (a ``FailurePolicy`` passes through).

        Raises:
            InvokerConfigError: an unknown key, or a wrong ``retry`` / ``on_error``.
        """
        if isinstance(value, FailurePolicy):
            return value
        if not isinstance(value, Mapping):
            raise InvokerConfigError(f"a failure policy is a mapping of retry: and on_error:, got {value!r}")
        unknown = set(value) - {"retry", "on_error"}
        if unknown:
            raise InvokerConfigError(
                f"a failure policy takes retry: and on_error:, not {', '.join(sorted(map(str, unknown)))}"
            )
        return cls(retry=value.get("retry"), on_error=value.get("on_error"))


# ---- run time: what a state's run collects -----------------------------------------------------


@dataclass(frozen=True)
class FailedCall:
    """One failed invoker call, for the session's history."""

    template: str
    attempt: int
    error: str
    duration_ms: float


@dataclass
class _Scope:
    override: FailurePolicy | None
    calls: list[FailedCall] = field(default_factory=list)


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("genie_graph_failure_scope", default=None)


@contextlib.contextmanager
def failure_scope(override: FailurePolicy | None) -> Iterator[list[FailedCall]]:
    """Collect the failed calls of one invoker state's run, under the state's own policy (if any)."""
    scope = _Scope(override)
    token = _scope.set(scope)
    try:
        yield scope.calls
    finally:
        _scope.reset(token)


def state_override() -> FailurePolicy | None:
    """The policy of the invoker state running now (``on_failure``), or None."""
    scope = _scope.get()
    return None if scope is None else scope.override


def note_failure(template: str, attempt: int, error: BaseException, seconds: float) -> None:
    """Collect a failed call of ``template`` (outside an invoker state's run, nothing happens)."""
    scope = _scope.get()
    if scope is not None:
        scope.calls.append(FailedCall(template, attempt, f"{type(error).__name__}: {error}", round(seconds * 1000, 3)))


class OnErrorEvent(Exception):  # noqa: N818 - a signal to the invoker node, never seen by users
    """An invoker failed and its ``on_error: {event, content}`` names the event to send instead."""

    def __init__(self, event: str, content: str) -> None:
        self.event = event
        self.content = content
        super().__init__(f"on_error sends {event!r}")


class OnErrorState(Exception):  # noqa: N818 - a signal to the invoker node, never seen by users
    """An invoker failed and its ``on_error: {state, ...}`` moves the session to ``state``."""

    def __init__(self, state: str, message: str) -> None:
        self.state = state
        self.message = message
        super().__init__(f"on_error moves to {state!r}")


def apply_on_error(on_error: OnError, library: TemplateLibrary, data: Mapping[str, Any], error: BaseException) -> str:
    """Act on the last failure: the output that replaces the failed template's, or raise the move.

    ``error`` is in the render data as ``error`` (its message).

    Raises:
        OnErrorEvent: ``on_error`` names an event.
        OnErrorState: ``on_error`` names a state.
    """
    error_data = {**data, "error": str(error)}
    if on_error.event is not None:
        raise OnErrorEvent(on_error.event, library.render_string(on_error.content, error_data)) from error
    if on_error.state is not None:
        if on_error.template is not None:
            message = library.render(on_error.template, error_data)
        else:
            message = library.render_string(on_error.message or "", error_data)
        raise OnErrorState(on_error.state, message) from error
    return library.render_string(on_error.text or "", error_data)


def leaf_templates(template: CompositeTemplate) -> list[str]:
    """The template names a composite runs (callables have none)."""
    if isinstance(template, str):
        return [template]
    if isinstance(template, NamedQueueTaskTemplate):
        return leaf_templates(template.template)
    if isinstance(template, MapTaskTemplate):
        return [template.template_name]
    if isinstance(template, list):
        return [name for step in template for name in leaf_templates(step)]
    if isinstance(template, dict):
        return [name for part in template.values() for name in leaf_templates(part)]
    return []


def state_on_error(
    runner: CompositeRunner, template: CompositeTemplate, override: FailurePolicy | None
) -> OnError | None:
    """What a failure of a whole state's run leads to: its own ``on_error``, or its single template's."""
    if override is not None and override.on_error is not None:
        return override.on_error
    if isinstance(template, NamedQueueTaskTemplate):
        template = template.template
    if isinstance(template, str):
        config = runner.library.config_of(template)
        if config.invoker is not None:
            return OnError.parse(config.invoker.get("on_error"))
    return None


# ---- run time: a move to an on_error state ------------------------------------------------------


async def move_to_error_state(
    flow: CompiledFlow, model: GenieModel, source_id: str, target_id: str, message: str
) -> None:
    """Move the session from invoker state ``source_id`` to user state ``target_id`` after a failure.

    It is a move without an event, whether or not a transition between the two is declared: the
    invoker state's exit hooks and the event hooks do not run (they would capture an output that
    does not exist); the target's enter hooks do, seeing ``event`` ``"on_error"`` and the message as
    ``event_data.args[0]``. The message is recorded as the assistant's utterance (unless an enter
    hook sets ``dialogue_persistence`` to ``NONE``), so the next poll answers it; ``task_error``
    stays clear, as the failure was handled. The history shows an ``event`` entry ``on_error``.
    """
    from ._flow import _call, _run_callbacks

    machine = flow.machine(model)
    source = machine.current_state
    target = next(state for state in flow.machine_class.states if state.id == target_id)

    async def steps() -> None:
        transition = Transition(source, target, event=ON_ERROR_EVENT)
        trigger = TriggerData(machine=machine, event=Event(ON_ERROR_EVENT), args=(message,))
        event_data = EventData(trigger_data=trigger, transition=transition)
        args, kwargs = event_data.args, event_data.extended_kwargs
        model.source_type = flow.kinds[source_id]
        model.target_type = flow.kinds[target_id]
        model.actor = Actor.ASSISTANT
        model.dialogue_persistence = DialoguePersistence.RENDERED
        model.actor_input = message
        model.task_error = None
        machine.current_state = target
        kwargs["state"] = target
        event_data.state = target
        await _call(machine, target.enter.key, *args, **kwargs)
        if model.dialogue_persistence is not DialoguePersistence.NONE:
            model.add_dialogue_element(Actor.ASSISTANT, message)
        model.record_history(HistoryKind.EVENT, state=source_id, event=ON_ERROR_EVENT, target=target_id)

    await _run_callbacks(machine, steps())


# ---- run time: runs cut off with their process ----------------------------------------------------


class RunStarts(Protocol):
    """Counts the starts of an invoker state's run (the session's store does)."""

    async def count_start(self, session_id: str, step: str) -> int:
        """Count one more start of ``step``; how many there were, this one included."""


current_run_starts: contextvars.ContextVar[RunStarts | None] = contextvars.ContextVar(
    "genie_graph_run_starts", default=None
)
"""Set by the session runtime around a run; plain LangGraph runs count nothing."""


async def count_start(session_id: str, state_id: str, config: RunnableConfig) -> int:
    """Count a start of invoker state ``state_id``'s run at this checkpoint: 1 the first time.

    A run resumed after its process ended starts the same step again, so the count says how
    often it was cut off. 0 when nothing counts (no session runtime, or the store is away).
    """
    counter = current_run_starts.get()
    if counter is None or not session_id:
        return 0
    metadata = config.get("metadata") or {}
    step = f"{state_id}:{metadata.get('langgraph_step')}:{metadata.get('langgraph_checkpoint_ns', '')}"
    try:
        return await counter.count_start(session_id, step)
    except Exception as exc:  # best effort: a run goes on without its count
        logger.warning("could not count the start of state %s in session %s: %s", state_id, session_id, exc)
        return 0


def record_cut_offs(model: GenieModel, state_id: str, starts: int, flow: str | None = None) -> None:
    """Record in the history the earlier starts of this run that were cut off with their process."""
    for attempt in range(1, starts):
        model.record_history(
            HistoryKind.INVOKER_FAILURE,
            state=state_id,
            flow=flow,
            attempt=attempt,
            error="cut off: the process running it ended before it finished; resumed from the last checkpoint",
            detail={"cut_off": True},
        )


# ---- build time ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowFailures:
    """A compiled flow's failure handling.

    Attributes:
        overrides: invoker state id -> its own policy (the machine's ``on_failure``).
        resumes: invoker state id -> how often a cut-off run of it is resumed before it fails.
        error_moves: invoker state id -> the user states an ``on_error`` may move it to.
    """

    overrides: dict[str, FailurePolicy] = field(default_factory=dict)
    resumes: dict[str, int] = field(default_factory=dict)
    error_moves: dict[str, set[str]] = field(default_factory=dict)

    def resumes_of(self, state_id: str) -> int:
        return self.resumes.get(state_id, DEFAULT_RESUMES)


def compile_failures(
    flow_name: str,
    machine_class: type,
    runner: CompositeRunner,
    templates: Mapping[str, CompositeTemplate],
    kinds: Mapping[str, StateKind],
    events_out: Mapping[str, list[str]],
) -> FlowFailures:
    """Validate the machine's ``on_failure`` and every ``on_error`` its invoker states may apply.

    Raises:
        FlowDefinitionError: naming the state whose policy is wrong: an unknown or user state in
            ``on_failure``, an ``on_error`` event that does not leave the state, an ``on_error``
            state that is no user state, a missing message template.
    """
    declared = getattr(machine_class, "on_failure", None) or {}
    if not isinstance(declared, Mapping):
        raise FlowDefinitionError(
            flow_name, "on_failure must map invoker state ids to failure policies", ["on_failure"]
        )
    if declared and "failure" in events_out.get("", []) + [e for events in events_out.values() for e in events]:
        raise FlowDefinitionError(
            flow_name,
            "on_failure would be python-statemachine's hook of the event 'failure'",
            ["on_failure", "failure"],
            fix="Rename the event 'failure'",
        )
    overrides: dict[str, FailurePolicy] = {}
    for state_id, value in declared.items():
        if state_id not in kinds:
            raise FlowDefinitionError(
                flow_name,
                "on_failure names states that do not exist",
                [str(state_id)],
                fix=f"Known states: {', '.join(kinds)}",
            )
        if kinds[state_id] is not StateKind.INVOKER:
            raise FlowDefinitionError(
                flow_name,
                "on_failure names a user state; only invoker states call invokers that can fail",
                [state_id],
                fix="Remove it, or give the state an invoker template",
            )
        try:
            overrides[state_id] = FailurePolicy.parse(value)
        except GenieGraphError as exc:
            raise FlowDefinitionError(flow_name, f"on_failure[{state_id!r}]: {exc}", [state_id]) from exc

    resumes: dict[str, int] = {}
    error_moves: dict[str, set[str]] = {}
    for state_id, kind in kinds.items():
        if kind is not StateKind.INVOKER:
            continue
        override = overrides.get(state_id)
        policies: list[tuple[str, OnError | None, RetryPolicy]] = []
        for name in leaf_templates(templates[state_id]):
            invoker = runner.library.config_of(name).invoker
            if invoker is None:
                continue
            try:
                directory_on_error = OnError.parse(invoker.get("on_error"))
                directory_retry = RetryPolicy.parse(invoker.get("retry"))
            except InvokerConfigError as exc:
                raise FlowDefinitionError(flow_name, f"template {name!r}: {exc}", [state_id]) from exc
            own = override is not None and override.on_error is not None
            on_error = override.on_error if own and override is not None else directory_on_error
            retry = override.retry if override is not None and override.retry is not None else directory_retry
            policies.append(("on_failure" if own else name, on_error, retry))
        if override is not None and override.on_error is not None and not policies:
            policies.append(("on_failure", override.on_error, override.retry or RetryPolicy()))
        limits = [retry.resumes for _name, _on_error, retry in policies if retry.resumes is not None]
        if override is not None and override.retry is not None and override.retry.resumes is not None:
            limits = [override.retry.resumes]
        resumes[state_id] = max(limits) if limits else DEFAULT_RESUMES
        for name, on_error, _retry in policies:
            if on_error is None:
                continue
            _check_on_error(flow_name, state_id, name, on_error, runner.library, kinds, events_out)
            if on_error.state is not None:
                error_moves.setdefault(state_id, set()).add(on_error.state)
    return FlowFailures(overrides, resumes, error_moves)


def _check_on_error(
    flow_name: str,
    state_id: str,
    where: str,
    on_error: OnError,
    library: TemplateLibrary,
    kinds: Mapping[str, StateKind],
    events_out: Mapping[str, list[str]],
) -> None:
    origin = "its on_failure" if where == "on_failure" else f"the meta.yaml of template {where!r}"
    if on_error.event is not None and on_error.event not in events_out[state_id]:
        raise FlowDefinitionError(
            flow_name,
            f"on_error of {origin} sends event {on_error.event!r}, which does not leave state {state_id!r}",
            [state_id],
            fix=f"Declare a transition {on_error.event} out of it, or use one of {', '.join(events_out[state_id])}",
        )
    if on_error.state is not None:
        if on_error.state not in kinds:
            raise FlowDefinitionError(
                flow_name,
                f"on_error of {origin} moves to state {on_error.state!r}, which does not exist",
                [state_id],
                fix=f"Known states: {', '.join(kinds)}",
            )
        if kinds[on_error.state] is not StateKind.USER:
            raise FlowDefinitionError(
                flow_name,
                f"on_error of {origin} moves to {on_error.state!r}, an invoker state; error states are user states",
                [state_id],
                fix="Name a user state that shows the message and takes the user's next event",
            )
    sources = [s for s in (on_error.text, on_error.content, on_error.message) if s]
    try:
        if on_error.template is not None:
            library.check(on_error.template)
        for source in sources:
            library._env.parse(source)  # a syntax error shows now, not on the first failure
    except (GenieGraphError, jinja2.TemplateSyntaxError) as exc:
        raise FlowDefinitionError(flow_name, f"on_error of {origin}: {exc}", [state_id]) from exc
