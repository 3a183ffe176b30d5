"""Sub-flows and interruptions: other flows running inside a session, on a stack of frames.

Two declarations bring Colang 1.0's flow runtime to typed machines:

* :class:`SubFlow`, a state's entry in ``templates``: the state calls another flow, hands it some of
  its model's fields, and when that flow completes takes some of the child's fields back and goes on
  with an event (call and return).
* :class:`Interruption`, in a machine's ``interruptions``: a flow that may suspend this one when a
  trigger fires in a user state (an event, a condition on the user's input, or an intent an invoker
  classifies). When it completes, the suspended flow resumes where it was and offers its state's
  response again; when it aborts, the suspended flow aborts too unless declared otherwise.

Every flow a session can reach is compiled into the session's one graph: the session's own states
keep their ids as node names, another flow's states are nodes named ``<flow>/<state>``. The flows
running now are frames on ``model.flows`` (see ``_stack.py``), so one checkpoint holds the whole
session, an interrupt anywhere resumes where it stopped, and the dialogue, history, usage and budget
stay the session's.
"""

from __future__ import annotations

import inspect
import logging
import time
import types
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langgraph.graph import END

from ._declaration import FieldMap, Interruption, SubFlow
from ._history import HistoryKind
from ._model import Actor, DialoguePersistence, GenieModel, StateKind
from ._stack import FlowFrame, FlowNotice, FlowStatus, flow_label
from ._usage import collecting_usage
from .errors import FlowDefinitionError

if TYPE_CHECKING:
    from ._flow import CompiledFlow

logger = logging.getLogger("genie_graph")

_MANAGED_FIELDS = frozenset(GenieModel.model_fields)
"""Fields genie-graph keeps itself: a mapping may not name them."""

SHARED_FIELDS = ("session_id", "dialogue", "secondary_storage", "usage", "history", "task_error", "approvals")
"""Fields a sub-flow's model shares with the session: one conversation, one history, one bill."""

_NOT_IN_FRAMES = frozenset(SHARED_FIELDS) | {"flows", "flow_version", "seed_data"}


@dataclass(frozen=True)
class FlowLink:
    """A checked declaration: which child flow, and the fields going in and out."""

    child: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    on_complete: str | None = None
    on_abort: str | None = None
    interruption: Interruption | None = None


# ---- build time ---------------------------------------------------------------------------
def compose(root: CompiledFlow, compile_child: Callable[[type[GenieModel]], CompiledFlow]) -> None:
    """Link the sub-flows and interruptions ``root`` can reach, and name the session graph's nodes.

    Raises:
        FlowDefinitionError: a declaration is wrong (unknown fields or events, types that do not
            fit, a flow name used twice, ...); the message names it.
    """
    root.label = flow_label(root.model_class)
    children: dict[str, CompiledFlow] = {}
    pending = [root]

    def resolve(owner: CompiledFlow, spec: SubFlow | Interruption, where: str) -> CompiledFlow:
        if not (isinstance(spec.flow, type) and issubclass(spec.flow, GenieModel)):
            raise FlowDefinitionError(
                owner.name, f"{type(spec).__name__}.flow must be a GenieModel subclass, got {spec.flow!r}", [where]
            )
        label = spec.name or flow_label(spec.flow)
        known = children.get(label)
        if known is not None:
            if known.model_class is not spec.flow:
                raise FlowDefinitionError(
                    owner.name,
                    f"two flows are named {label!r}: {known.model_class.__qualname__} and {spec.flow.__qualname__}",
                    [where],
                    fix=f"Give one of them another name, e.g. {type(spec).__name__}(..., name='{label}_2')",
                )
            return known
        child = compile_child(spec.flow)
        child.label, child.nested = label, True
        if child.budget is None:  # the session's budget covers every flow it runs
            child.budget = root.budget
        children[label] = child
        pending.append(child)
        return child

    while pending:
        flow = pending.pop()
        for state_id, spec in flow.subflow_specs.items():
            child = resolve(flow, spec, state_id)
            flow.subflows[state_id] = _link_subflow(flow, state_id, spec, child)
        declared = getattr(flow.machine_class, "interruptions", ()) or ()
        for position, spec in enumerate(declared):
            if not isinstance(spec, Interruption):
                raise FlowDefinitionError(
                    flow.name,
                    f"interruptions[{position}] is {spec!r}, not a genie_graph.Interruption",
                    ["interruptions"],
                )
            child = resolve(flow, spec, f"interruptions[{position}]")
            flow.interruptions.append(_link_interruption(flow, position, spec, child))
    root.children = children
    nodes: dict[str, tuple[CompiledFlow, str]] = {state_id: (root, state_id) for state_id in root.kinds}
    for label, child in children.items():
        nodes.update({f"{label}/{state_id}": (child, state_id) for state_id in child.kinds})
    root.nodes = nodes


def _link_subflow(owner: CompiledFlow, state_id: str, spec: SubFlow, child: CompiledFlow) -> FlowLink:
    events = owner.events_out[state_id]
    if not events:
        raise FlowDefinitionError(
            owner.name,
            "a sub-flow state needs an outgoing event to go on with when the sub-flow returns",
            [state_id],
            fix="Add a transition out of it, e.g. address_given = getting_address.to(confirming)",
        )
    on_complete = spec.on_complete or events[0]
    for option, event in (("on_complete", on_complete), ("on_abort", spec.on_abort)):
        if event is not None and event not in events:
            raise FlowDefinitionError(
                owner.name,
                f"SubFlow({option}={event!r}) does not leave state {state_id!r}",
                [state_id],
                fix=f"Choose one of {', '.join(events)}",
            )
    where = f"SubFlow of state {state_id!r}"
    return FlowLink(
        child=child.label,
        inputs=_field_pairs(owner, where, "inputs", spec.inputs, child.model_class, owner.model_class),
        outputs=_field_pairs(owner, where, "outputs", spec.outputs, owner.model_class, child.model_class),
        on_complete=on_complete,
        on_abort=spec.on_abort,
    )


def _link_interruption(owner: CompiledFlow, position: int, spec: Interruption, child: CompiledFlow) -> FlowLink:
    where = f"interruptions[{position}]"
    triggers = [name for name in ("event", "when", "intent") if getattr(spec, name) is not None]
    if len(triggers) != 1:
        raise FlowDefinitionError(
            owner.name,
            f"an Interruption needs exactly one trigger (event=, when= or intent=), got {triggers or 'none'}",
            [where],
        )
    if spec.event is not None and (not spec.event or spec.event == "poll"):
        raise FlowDefinitionError(owner.name, f"Interruption(event={spec.event!r}) is no usable event name", [where])
    if spec.when is not None and not callable(spec.when):
        raise FlowDefinitionError(owner.name, "Interruption(when=...) must be callable as when(text, model)", [where])
    if spec.intent is not None and owner.intent_classifier is None:
        raise FlowDefinitionError(
            owner.name,
            f"Interruption(intent={spec.intent!r}) needs the machine's intent_classifier",
            [where],
            fix="Set intent_classifier = '<dir>/classify.jinja2', an invoker template answering the intent label",
        )
    if spec.on_abort not in ("abort", "resume"):
        raise FlowDefinitionError(
            owner.name, f"Interruption(on_abort={spec.on_abort!r}): use 'abort' or 'resume'", [where]
        )
    return FlowLink(
        child=child.label,
        inputs=_field_pairs(owner, where, "inputs", spec.inputs, child.model_class, owner.model_class),
        outputs=_field_pairs(owner, where, "outputs", spec.outputs, owner.model_class, child.model_class),
        on_abort=spec.on_abort,
        interruption=spec,
    )


def _field_pairs(
    owner: CompiledFlow,
    where: str,
    option: str,
    declared: FieldMap,
    destination: type[GenieModel],
    source: type[GenieModel],
) -> tuple[tuple[str, str], ...]:
    """``declared`` as ``(destination field, source field)`` pairs, each checked to exist and fit."""
    if isinstance(declared, str):
        raise FlowDefinitionError(owner.name, f"{where}: {option} must be a list or dict of field names", [where])
    pairs = list(declared.items()) if isinstance(declared, Mapping) else [(name, name) for name in declared]
    for target, origin in pairs:
        for name, model in ((target, destination), (origin, source)):
            if name in _MANAGED_FIELDS:
                raise FlowDefinitionError(
                    owner.name,
                    f"{where}: {option} names {name!r}, a field genie-graph manages itself",
                    [where],
                    fix="Map your own fields; the dialogue, history and usage are shared by every flow of a session",
                )
            if name not in model.model_fields:
                own = [field for field in model.model_fields if field not in _MANAGED_FIELDS]
                raise FlowDefinitionError(
                    owner.name,
                    f"{where}: {option} names {name!r}, which {model.__qualname__} does not have",
                    [where],
                    fix=f"Its fields: {', '.join(own) or '(none of its own)'}",
                )
        given = source.model_fields[origin].annotation
        wanted = destination.model_fields[target].annotation
        if not _fits(given, wanted):
            raise FlowDefinitionError(
                owner.name,
                f"{where}: {option} copies {source.__qualname__}.{origin} ({_type_name(given)}) into "
                f"{destination.__qualname__}.{target} ({_type_name(wanted)}), which does not take it",
                [where],
                fix="Map fields of the same type, or widen the destination's type",
            )
    return tuple(pairs)


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _fits(given: Any, wanted: Any) -> bool:
    """Whether every value of type ``given`` is a valid value of type ``wanted``."""
    if wanted is Any or given == wanted:
        return True
    if len(_members(given)) > 1:
        return all(_fits(member, wanted) for member in _members(given))
    if len(_members(wanted)) > 1:
        return any(_fits(given, member) for member in _members(wanted))
    given_origin, wanted_origin = typing.get_origin(given), typing.get_origin(wanted)
    if given_origin is not None or wanted_origin is not None:
        if given_origin != wanted_origin:
            return False
        given_args, wanted_args = typing.get_args(given), typing.get_args(wanted)
        return not wanted_args or (
            len(given_args) == len(wanted_args)
            and all(_fits(g, w) for g, w in zip(given_args, wanted_args, strict=True))
        )
    if isinstance(given, type) and isinstance(wanted, type):
        return issubclass(given, wanted) or (given is int and wanted is float)
    return False


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def check_interruptible(flow: CompiledFlow) -> bool | frozenset[str]:
    """The machine's ``interruptible``, checked: True, False, or the ids of user states."""
    declared = getattr(flow.machine_class, "interruptible", True)
    if isinstance(declared, bool):
        return declared
    if isinstance(declared, str) or not isinstance(declared, Collection):
        raise FlowDefinitionError(
            flow.name, f"interruptible must be True, False or a set of state ids, got {declared!r}", ["interruptible"]
        )
    wrong = sorted(state for state in declared if flow.kinds.get(state) is not StateKind.USER)
    if wrong:
        raise FlowDefinitionError(
            flow.name,
            "interruptible names states that are not user states of the machine",
            wrong,
            fix=f"User states: {', '.join(s for s, k in flow.kinds.items() if k is StateKind.USER)}",
        )
    return frozenset(declared)


def check_abort_states(flow: CompiledFlow) -> frozenset[str]:
    """The machine's ``abort_states``, checked to be final states."""
    declared = frozenset(getattr(flow.machine_class, "abort_states", ()) or ())
    wrong = sorted(state for state in declared if state not in flow.finals)
    if wrong:
        raise FlowDefinitionError(
            flow.name,
            "abort_states must be final states",
            wrong,
            fix="Declare them State(final=True)"
            if all(s in flow.kinds for s in wrong)
            else f"States: {', '.join(flow.kinds)}",
        )
    return declared


# ---- run time: where the session is -------------------------------------------------------
def flow_at(root: CompiledFlow, session: GenieModel, index: int) -> CompiledFlow:
    """The flow of frame ``index`` (-1: the session's own)."""
    return root if index < 0 else root.children[session.flows.frames[index].flow]


def node_name(root: CompiledFlow, flow: CompiledFlow, state_id: str) -> str:
    """The graph node of ``flow``'s state ``state_id``."""
    return state_id if flow is root else f"{flow.label}/{state_id}"


def model_at(root: CompiledFlow, session: GenieModel, index: int) -> GenieModel:
    """The model of frame ``index`` (-1: the session's model itself), sharing the session's dialogue and history."""
    if index < 0:
        model = session
    else:
        flow = flow_at(root, session, index)
        shared = {name: getattr(session, name) for name in SHARED_FIELDS}
        model = flow.model_class.model_validate({**session.flows.frames[index].model, **shared})
        model._history_bound = type(session).history_limit  # the history is the session's
    model._active_flows = [root.label] + [frame.flow for frame in session.flows.frames]
    return model


def store_model(root: CompiledFlow, session: GenieModel, index: int, model: GenieModel) -> None:
    """Write back what a node did to frame ``index``'s model (and to the session's shared fields)."""
    if index < 0 or model is session:
        return
    for name in SHARED_FIELDS:
        setattr(session, name, getattr(model, name))
    session.flows.frames[index].model = _own_fields(model)


def _own_fields(model: GenieModel) -> dict[str, Any]:
    names = set(type(model).model_fields) - _NOT_IN_FRAMES
    return model.model_dump(mode="json", include=names)


def position(root: CompiledFlow, session: GenieModel) -> tuple[CompiledFlow, str]:
    """The flow active now and its current state id."""
    frames = session.flows.frames
    if not frames:
        return root, root.state_of(session)
    flow = root.children[frames[-1].flow]
    state = frames[-1].model.get("state")
    return flow, flow.initial if state is None else flow.id_by_value[state]  # None: about to enter its initial state


def _interruptions_now(root: CompiledFlow, session: GenieModel) -> list[tuple[int, FlowLink]]:
    """The interruptions that may fire in the active flow, best first, each with the stack position
    of the flow declaring it (-1: the session's own). Ties keep declaration order, outer flows first."""
    active, state_id = position(root, session)
    if not active.is_interruptible(state_id):
        return []
    running = _running(root, session)
    candidates = [
        (index, link)
        for index in range(-1, len(session.flows.frames))
        for link in flow_at(root, session, index).interruptions
        if link.child not in running  # a flow running already is not started again by an interruption
    ]
    return sorted(candidates, key=lambda item: -item[1].interruption.priority)  # type: ignore[union-attr]


def _running(root: CompiledFlow, session: GenieModel) -> set[str]:
    return {root.label, *(frame.flow for frame in session.flows.frames)}


def running_trigger_events(root: CompiledFlow, session: GenieModel) -> set[str]:
    """Trigger events of interruptions whose flow is running already (they do not fire now)."""
    running = _running(root, session)
    flows = [root, *root.children.values()]
    return {
        link.interruption.event
        for flow in flows
        for link in flow.interruptions
        if link.interruption and link.interruption.event and link.child in running
    }


def trigger_events(root: CompiledFlow, session: GenieModel) -> list[str]:
    """Events that would interrupt the active flow now (beyond the ones its state takes)."""
    active, state_id = position(root, session)
    own = active.events_out[state_id]
    events: list[str] = []
    for _, link in _interruptions_now(root, session):
        event = link.interruption.event if link.interruption is not None else None
        if event is not None and event not in own and event not in events:
            events.append(event)
    return events


def all_trigger_events(root: CompiledFlow) -> set[str]:
    """Every event any interruption of the session's flows is triggered by."""
    flows = [root, *root.children.values()]
    return {
        link.interruption.event
        for f in flows
        for link in f.interruptions
        if link.interruption and link.interruption.event
    }


# ---- run time: calls, interruptions and returns ---------------------------------------------
def call_subflow(root: CompiledFlow, session: GenieModel, index: int, model: GenieModel, caller: str) -> str:
    """Start the sub-flow of the state ``model`` is in; returns the node to go to."""
    flow = flow_at(root, session, index)
    state_id = flow.state_of(model)
    link = flow.subflows[state_id]
    child = root.children[link.child]
    store_model(root, session, index, model)
    _push(root, session, child, link, model, "subflow", caller)
    session.record_history(HistoryKind.FLOW_STARTED, flow=child.label, state=state_id, detail={"kind": "subflow"})
    return node_name(root, child, child.initial)


def _push(
    root: CompiledFlow,
    session: GenieModel,
    child: CompiledFlow,
    link: FlowLink,
    parent: GenieModel,
    kind: Literal["subflow", "interruption"],
    caller: str,
    **fields: Any,
) -> None:
    values = {target: getattr(parent, origin) for target, origin in link.inputs}
    model = child.model_class.model_validate({**values, **fields})
    session.flows.frames.append(FlowFrame(flow=child.label, kind=kind, caller=caller, model=_own_fields(model)))


async def pick_interruption(
    root: CompiledFlow, session: GenieModel, model: GenieModel, event: str, text: str
) -> tuple[int, FlowLink] | None:
    """The interruption the user's event triggers in the active flow's state, or None.

    Returns the stack position of the flow declaring it, and its link. Candidates are tried best
    first; a condition or classifier is evaluated only when no better candidate fired, on the
    declaring flow's model. A machine's classifier is called at most once per event.
    """
    candidates = _interruptions_now(root, session)
    if not candidates:
        return None
    active, state_id = position(root, session)
    own = active.events_out[state_id]
    top = len(session.flows.frames) - 1
    intents: dict[int, str] = {}
    for index, link in candidates:
        spec = link.interruption
        assert spec is not None
        if spec.event is not None:
            hit = event == spec.event and event not in own
        else:
            declaring = model if index == top else model_at(root, session, index)
            if spec.when is not None:
                hit = await _holds(spec.when, text, declaring)
            else:
                if index not in intents:
                    intents[index] = await _classify(flow_at(root, session, index), declaring, text, model)
                hit = intents[index] == (spec.intent or "").strip().lower()
        if hit:
            return index, link
    return None


async def _holds(condition: Callable[..., bool | Awaitable[bool]], text: str, model: GenieModel) -> bool:
    try:
        arity = len(inspect.signature(condition).parameters)
    except (TypeError, ValueError):
        arity = 2
    outcome = condition(text) if arity == 1 else condition(text, model)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return bool(outcome)


async def _classify(flow: CompiledFlow, model: GenieModel, text: str, billed: GenieModel) -> str:
    """The intent label the flow's classifier answers for ``text`` (lower case, stripped).

    The classifier renders with ``model`` (its flow's); its usage is counted on ``billed``, the
    model the node stores (they share the session's usage either way).
    """
    assert flow.intent_classifier is not None
    intents = [
        link.interruption.intent for link in flow.interruptions if link.interruption and link.interruption.intent
    ]

    def render_data(names: Collection[str] | None = None) -> dict[str, Any]:
        return {**flow.render_data(model, names), "user_input": text, "intents": intents}

    started = time.perf_counter()
    with collecting_usage() as usage:
        try:
            label = await flow.runner.run(flow.intent_classifier, render_data)
        except Exception as exc:  # the user's event goes on as if no intent matched
            logger.warning("intent classifier %s failed: %s", flow.intent_classifier, exc)
            billed.record_history(
                HistoryKind.INVOKER_FAILURE,
                template=flow.intent_classifier,
                flow=flow.history_label,
                attempt=1,
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            label = ""
    flow.add_usage(billed, f"{flow.label}:intent", usage.calls)
    return label.strip().strip(".").lower()


def interrupt(
    root: CompiledFlow,
    session: GenieModel,
    index: int,
    model: GenieModel,
    declared_by: int,
    link: FlowLink,
    event: str,
    text: str,
    caller: str,
) -> str:
    """Suspend the flow of frame ``index`` for ``link``'s flow, declared by the flow of frame
    ``declared_by``; returns the node to go to."""
    flow = flow_at(root, session, index)
    state_id = flow.state_of(model)
    child = root.children[link.child]
    assert link.interruption is not None
    trigger = link.interruption.trigger
    label = None if index < 0 else flow.label
    resume_text = model._last_text(Actor.ASSISTANT)  # what the interrupted state had said, offered again
    if text:
        model.add_dialogue_element(Actor.USER, text)
    model.task_error = None
    target = node_name(root, child, child.initial)
    model.record_history(HistoryKind.EVENT, state=state_id, event=event, target=target, flow=label)
    model.record_history(
        HistoryKind.FLOW_INTERRUPTED, state=state_id, flow=label, detail={"by": child.label, "trigger": trigger}
    )
    store_model(root, session, index, model)
    _set_status(session, index, FlowStatus.INTERRUPTED)
    declaring = model if declared_by == index else model_at(root, session, declared_by)
    _push(root, session, child, link, declaring, "interruption", caller, actor=Actor.USER, actor_input=text)
    frame = session.flows.frames[-1]
    frame.declared_by, frame.resume_text = declared_by, resume_text
    frame.declaration = flow_at(root, session, declared_by).interruptions.index(link)
    session.record_history(
        HistoryKind.FLOW_STARTED, flow=child.label, state=state_id, detail={"kind": "interruption", "trigger": trigger}
    )
    session.flows.notice = FlowNotice(interrupted_by=child.label)
    return target


def _set_status(session: GenieModel, index: int, status: FlowStatus) -> None:
    if index < 0:
        session.flows.status = status
    else:
        session.flows.frames[index].status = status


async def finish(root: CompiledFlow, session: GenieModel, model: GenieModel) -> str:
    """The top frame's flow reached a final state: end it and return to the flow below.

    Returns the node to go to (``END`` when the session's own flow aborts).
    """
    index = len(session.flows.frames) - 1
    flow = flow_at(root, session, index)
    state_id = flow.state_of(model)
    status = FlowStatus.ABORTED if state_id in flow.abort_states else FlowStatus.COMPLETED
    store_model(root, session, index, model)
    kind = HistoryKind.FLOW_ABORTED if status is FlowStatus.ABORTED else HistoryKind.FLOW_COMPLETED
    session.record_history(kind, flow=flow.label, state=state_id)
    if status is FlowStatus.ABORTED:
        _notice(session).aborted.append(flow.label)
    _mark_final_words(session, model)
    frame = session.flows.frames.pop()
    return await _return_to(root, session, frame, status, model)


def _mark_final_words(session: GenieModel, model: GenieModel) -> None:
    """The final state's text and what the flows below say next are one answer to the user: the
    response starts at the final state's utterance (an empty one is dropped)."""
    entered_rendered = (
        model.dialogue_persistence is DialoguePersistence.RENDERED and model.target_type is StateKind.USER
    )
    if not (entered_rendered and session.dialogue and session.dialogue[-1].actor is Actor.ASSISTANT):
        return
    if not session.dialogue[-1].actor_text.strip():
        session.dialogue.pop()
        return
    notice = _notice(session)
    if notice.said_from is None:
        notice.said_from = len(session.dialogue) - 1


def _notice(session: GenieModel) -> FlowNotice:
    if session.flows.notice is None:
        session.flows.notice = FlowNotice()
    return session.flows.notice


async def _return_to(
    root: CompiledFlow, session: GenieModel, frame: FlowFrame, status: FlowStatus, child_model: GenieModel
) -> str:
    """Hand the ended frame's outcome to the flow below it; returns the node to go to."""
    index = len(session.flows.frames) - 1
    flow = flow_at(root, session, index)
    parent = model_at(root, session, index)
    state_id = flow.state_of(parent)
    if frame.kind == "subflow":
        link = flow.subflows[state_id]
        if status is FlowStatus.COMPLETED:
            _copy_outputs(link, child_model, parent)
            event = link.on_complete
        elif link.on_abort is not None:
            event = link.on_abort
        else:
            return await _abort(root, session, index, parent)
        assert event is not None
        await flow.send(parent, event, "")
        store_model(root, session, index, parent)
        return node_name(root, flow, flow.state_of(parent))
    declared_by = index if frame.declared_by is None else frame.declared_by
    declared = flow_at(root, session, declared_by).interruptions
    if frame.declaration is not None:
        link = declared[frame.declaration]
    else:
        link = next(link for link in declared if link.child == frame.flow)
    if status is FlowStatus.ABORTED and link.on_abort != "resume":
        return await _abort(root, session, index, parent)
    if status is FlowStatus.COMPLETED and declared_by == index:
        _copy_outputs(link, child_model, parent)
    elif status is FlowStatus.COMPLETED:  # the outputs go back to the flow that declared it, further down
        declaring = model_at(root, session, declared_by)
        _copy_outputs(link, child_model, declaring)
        store_model(root, session, declared_by, declaring)
    _set_status(session, index, FlowStatus.ACTIVE)
    label = None if index < 0 else flow.label
    # The same words again; rendered anew when the interrupting flow's outputs changed what they show.
    copied = status is FlowStatus.COMPLETED and bool(link.outputs)
    offered = frame.resume_text if frame.resume_text is not None and not copied else flow.render(state_id, parent)
    parent.add_dialogue_element(Actor.ASSISTANT, offered)  # the interrupted state's response, offered again
    parent.record_history(HistoryKind.FLOW_RESUMED, flow=label, state=state_id, detail={"after": frame.flow})
    store_model(root, session, index, parent)
    _notice(session).resumed = flow.label
    return frame.caller


def _copy_outputs(link: FlowLink, child: GenieModel, parent: GenieModel) -> None:
    for target, origin in link.outputs:
        setattr(parent, target, getattr(child, origin))


async def _abort(root: CompiledFlow, session: GenieModel, index: int, model: GenieModel) -> str:
    """Abort the flow of frame ``index`` (a flow it depended on aborted); returns the node to go to."""
    flow = flow_at(root, session, index)
    state_id = flow.state_of(model)
    session.record_history(HistoryKind.FLOW_ABORTED, flow=None if index < 0 else flow.label, state=state_id)
    _notice(session).aborted.append(flow.label)
    if index < 0:
        session.flows.status = FlowStatus.ABORTED
        return END
    frame = session.flows.frames.pop()
    return await _return_to(root, session, frame, FlowStatus.ABORTED, model)
