"""What a client can learn about a flow besides its sessions: its states, transitions and fields, and its diagram.

The playground draws from these; any front end may. A flow is fixed once registered, so a description
is built on demand and a diagram, once rendered, is kept per state.

A flow that runs other flows (sub-flows, interruptions) is described as its session graph: ``nodes``
lists every node (the flow's own states by id, the others' as ``<flow>/<state>``), ``children`` the
flows it can reach, ``interruptions`` and ``subflows`` how they are linked. ``states``,
``transitions`` and ``initial`` stay the flow's own, as for any flow.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field, JsonValue

from genie_graph import Diagram, GenieModel, MapTaskTemplate, NamedQueueTaskTemplate
from genie_graph._declaration import SubFlow
from genie_graph._flow import CompiledFlow
from genie_graph._model import StateKind
from genie_graph._subflows import FlowLink, node_name
from genie_graph.errors import FlowDefinitionError

DiagramFormat = Literal["svg", "mermaid", "dot"]
"""The forms of a diagram: an SVG image, Mermaid text, Graphviz DOT text."""

_DiagramKey = tuple[str, str | None, tuple[str, ...], DiagramFormat]
"""A kept diagram: model key, highlighted node, outlined (waiting) nodes, format."""

DIAGRAM_MEDIA_TYPES: dict[DiagramFormat, str] = {
    "svg": "image/svg+xml",
    "mermaid": "text/plain; charset=utf-8",
    "dot": "text/plain; charset=utf-8",
}


class StateInfo(BaseModel):
    """One state of a flow."""

    id: str = Field(description="the state's id (its attribute name on the machine class)")
    name: str = Field(description="the state's readable name")
    value: int | str | None = Field(description="the state's value: what a model's `state` field holds in it")
    kind: Literal["user", "invoker", "subflow"] = Field(
        description="`user`: waits for the user, its template is the response; `invoker`: its template goes to an "
        "invoker (an LLM) in the background; `subflow`: it runs another flow and goes on when that one returns"
    )
    initial: bool
    final: bool
    template: JsonValue = Field(
        description="the template name, or its composition: a list runs in sequence, an object in parallel, "
        '`{"map": name, "over": path}` once per item, `{"queue": name, "template": ...}` on a worker queue, '
        '`"python:module.function"` a Python step; of a sub-flow state `{"subflow": flow}`'
    )
    events: list[str] = Field(description="the events the state takes, in declaration order (conditions aside)")
    completion_event: str | None = Field(
        None, description="an invoker state's event, sent with the invoker's output when its run is done"
    )


class TransitionInfo(BaseModel):
    """One declared transition: an edge of the diagram."""

    source: str = Field(description="the id of the state it leaves")
    target: str = Field(description="the id of the state it enters")
    label: str = Field(description="`event [conditions]`, as the diagram labels it", examples=["user_input [is_done]"])


class NodeInfo(StateInfo):
    """One node of the session graph: a state of the flow, or of a flow it runs (``<flow>/<state>``)."""

    id: str = Field(description="the node's name: a state id of the flow itself, `<flow>/<state>` of another flow")
    flow: str = Field(description="the name of the flow the state belongs to")
    state: str = Field(description="the state's id in its own flow")
    initial: bool = Field(description="the initial state of its own flow")
    final: bool = Field(description="a final state of its own flow")
    calls: str | None = Field(None, description="of a sub-flow state, the flow it runs")
    aborts: bool = Field(False, description="one of its flow's `abort_states`: reaching it aborts the flow")


class InterruptionInfo(BaseModel):
    """A flow that may interrupt the flow declaring it (an ``Interruption``)."""

    flow: str = Field(description="the interrupting flow")
    trigger: str = Field(description="what triggers it, as the history names it", examples=["event 'cancel'"])
    event: str | None = Field(None, description="the event that triggers it, if an event does")
    intent: str | None = Field(None, description="the intent label that triggers it, if an intent does")
    condition: str | None = Field(None, description="the condition on the user's input that triggers it, if one does")
    priority: int = Field(description="the higher wins when several fire")
    on_abort: Literal["abort", "resume"] = Field(description="what the interrupted flow does if it aborts")


class SubFlowInfo(BaseModel):
    """A sub-flow state: the node that calls another flow, and how it goes on."""

    node: str = Field(description="the sub-flow state's node")
    flow: str = Field(description="the flow it calls")
    on_complete: str | None = Field(description="the event it sends when the flow it called completes")
    on_abort: str | None = Field(description="the event it sends when that flow aborts (null: it aborts too)")
    inputs: dict[str, str] = Field(description="`{called flow's field: caller's field}` copied in at the start")
    outputs: dict[str, str] = Field(description="`{caller's field: called flow's field}` copied back on completion")


class ChildFlowInfo(BaseModel):
    """A flow the session's flow can run, as a sub-flow or an interruption."""

    name: str = Field(description="the flow's name: its nodes are `<name>/<state>`")
    machine: str
    model: str
    initial: str = Field(description="the node of its initial state")
    finals: list[str] = Field(description="the nodes of its final states")
    abort_states: list[str] = Field(description="the nodes of the final states that abort it")
    interruptible: bool | list[str] = Field(
        description="whether interruptions may fire in its user states, or the nodes where they may"
    )
    interruptions: list[InterruptionInfo] = Field(description="the flows that may interrupt it")


class FieldInfo(BaseModel):
    """One field of the flow's model."""

    name: str
    captured: bool = Field(description="declared by the flow's own model (what the dialogue captures), not GenieModel")
    type: str = Field(description="the field's type annotation", examples=["str | None"])
    description: str | None = None


class FlowDescription(BaseModel):
    """A flow as its author declared it: states, events, transitions and the model's fields."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model_key": "q_and_a",
                    "machine": "graphs.q_and_a.QandAMachine",
                    "model": "graphs.q_and_a.QandAModel",
                    "initial": "intro",
                    "states": [
                        {
                            "id": "intro",
                            "name": "Intro",
                            "value": 0,
                            "kind": "user",
                            "initial": True,
                            "final": False,
                            "template": "q_and_a/intro.jinja2",
                            "events": ["user_input"],
                            "completion_event": None,
                        }
                    ],
                    "events": ["user_input", "ai_extraction"],
                    "transitions": [{"source": "intro", "target": "ai_creates_response", "label": "user_input"}],
                    "fields": [{"name": "session_id", "captured": False, "type": "str", "description": None}],
                }
            ]
        }
    }

    model_key: str
    machine: str = Field(description="the state machine class, by its qualified name")
    model: str = Field(description="the model class, by its qualified name")
    initial: str = Field(description="the id of the initial state")
    states: list[StateInfo] = Field(description="every state, in declaration order")
    events: list[str] = Field(description="every event some state takes")
    transitions: list[TransitionInfo] = Field(description="the flow's own declared transitions")
    fields: list[FieldInfo] = Field(description="the model's fields: the flow's own (captured) ones first")
    flow: str = Field("", description="the flow's name, first in a response's `active_flows`")
    nodes: list[NodeInfo] = Field(
        default_factory=list,
        description="every node of the session graph: the flow's states, then those of the flows it runs",
    )
    children: list[ChildFlowInfo] = Field(
        default_factory=list, description="the flows it can run (sub-flows and interruptions), with their own"
    )
    interruptions: list[InterruptionInfo] = Field(default_factory=list, description="the flows that may interrupt it")
    subflows: list[SubFlowInfo] = Field(
        default_factory=list, description="every sub-flow state of the session graph, the children's too"
    )
    node_transitions: list[TransitionInfo] = Field(
        default_factory=list,
        description="the declared transitions of every node, sources and targets as node names (the children's "
        "too); the flow's own are `transitions`",
    )


def _template(template: Any) -> JsonValue:
    if isinstance(template, str):
        return template
    if isinstance(template, MapTaskTemplate):
        return {"map": template.template_name, "over": template.list_attribute}
    if isinstance(template, NamedQueueTaskTemplate):
        return {"queue": template.queue_name, "template": _template(template.template)}
    if isinstance(template, list):
        return [_template(step) for step in template]
    if isinstance(template, dict):
        return {str(key): _template(part) for key, part in template.items()}
    target = getattr(template, "__func__", template)
    return f"python:{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return _QUALIFIED.sub(r"\1", str(annotation))


_KINDS: dict[StateKind, Literal["user", "invoker", "subflow"]] = {
    StateKind.USER: "user",
    StateKind.INVOKER: "invoker",
    StateKind.SUBFLOW: "subflow",
}


def _node_info(root: CompiledFlow, flow: CompiledFlow, state_id: str) -> NodeInfo:
    value_of = {state: value for value, state in flow.id_by_value.items()}
    template = flow.templates[state_id]
    link = flow.subflows.get(state_id)
    return NodeInfo(
        id=node_name(root, flow, state_id),
        flow=flow.label,
        state=state_id,
        name=flow.names[state_id],
        value=value_of[state_id],
        kind=_KINDS[flow.kinds[state_id]],
        initial=state_id == flow.initial,
        final=state_id in flow.finals,
        template={"subflow": link.child if link else "?"} if isinstance(template, SubFlow) else _template(template),
        events=flow.next_actions(state_id),
        completion_event=flow.completion_event.get(state_id),
        calls=link.child if link else None,
        aborts=state_id in flow.abort_states,
    )


def _interruption_info(link: FlowLink) -> InterruptionInfo:
    spec = link.interruption
    assert spec is not None
    return InterruptionInfo(
        flow=link.child,
        trigger=spec.trigger,
        event=spec.event,
        intent=spec.intent,
        condition=getattr(spec.when, "__name__", "when") if spec.when is not None else None,
        priority=spec.priority,
        on_abort=spec.on_abort,
    )


def _transitions(root: CompiledFlow, flow: CompiledFlow) -> list[TransitionInfo]:
    return [
        TransitionInfo(source=node_name(root, flow, source), target=node_name(root, flow, target), label=label)
        for source, per_target in flow.targets.items()
        for target, labels in per_target.items()
        for label in labels
    ]


def _child_info(root: CompiledFlow, child: CompiledFlow) -> ChildFlowInfo:
    interruptible = child.interruptible
    return ChildFlowInfo(
        name=child.label,
        machine=child.name,
        model=f"{child.model_class.__module__}.{child.model_class.__qualname__}",
        initial=node_name(root, child, child.initial),
        finals=[node_name(root, child, state) for state in child.kinds if state in child.finals],
        abort_states=[node_name(root, child, state) for state in child.kinds if state in child.abort_states],
        interruptible=interruptible
        if isinstance(interruptible, bool)
        else [node_name(root, child, state) for state in child.kinds if state in interruptible],
        interruptions=[_interruption_info(link) for link in child.interruptions],
    )


def describe_flow(model_key: str, flow: CompiledFlow) -> FlowDescription:
    """The description of the flow registered under ``model_key``."""
    placed = list(flow.nodes.values()) or [(flow, state_id) for state_id in flow.kinds]
    nodes = [_node_info(flow, owner, state_id) for owner, state_id in placed]
    own_fields = set(StateInfo.model_fields)
    states = [
        StateInfo.model_validate(node.model_dump(include=own_fields))
        for node, (owner, _) in zip(nodes, placed, strict=True)
        if owner is flow
    ]
    flows = [flow, *flow.children.values()]
    triggers = [link.interruption.event for f in flows for link in f.interruptions if link.interruption]
    events = list(
        dict.fromkeys([*(event for node in nodes for event in node.events), *(e for e in triggers if e is not None)])
    )
    transitions = _transitions(flow, flow)
    subflows = [
        SubFlowInfo(
            node=node_name(flow, owner, state_id),
            flow=link.child,
            on_complete=link.on_complete,
            on_abort=link.on_abort,
            inputs=dict(link.inputs),
            outputs=dict(link.outputs),
        )
        for owner in flows
        for state_id, link in owner.subflows.items()
    ]
    base = GenieModel.model_fields
    own = flow.model_class.model_fields
    ordered = [name for name in own if name not in base] + [name for name in own if name in base]
    fields = [
        FieldInfo(
            name=name,
            captured=name not in base,
            type=_type_name(own[name].annotation),
            description=own[name].description,
        )
        for name in ordered
    ]
    return FlowDescription(
        model_key=model_key,
        machine=flow.name,
        model=f"{flow.model_class.__module__}.{flow.model_class.__qualname__}",
        initial=flow.initial,
        states=states,
        events=events,
        transitions=transitions,
        fields=fields,
        flow=flow.label,
        nodes=nodes,
        children=[_child_info(flow, child) for child in flow.children.values()],
        interruptions=[_interruption_info(link) for link in flow.interruptions],
        subflows=subflows,
        node_transitions=[transition for owner in flows for transition in _transitions(flow, owner)],
    )


def session_highlight(flow: CompiledFlow, model: GenieModel) -> tuple[str | None, tuple[str, ...]]:
    """What a diagram of ``flow`` marks for the session of ``model``: the node it is in (None when this
    version of the flow has no such state), and the nodes of the flows waiting on its stack."""
    try:
        current: str | None = flow.node_of(model)
    except (KeyError, FlowDefinitionError):  # a session kept on an older flow version
        current = flow.id_by_value.get(model.state)
    if current not in flow.nodes and current not in flow.kinds:
        current = None
    waiting = tuple(frame.caller for frame in model.flows.frames if frame.caller in flow.nodes)
    return current, waiting


class Diagrams:
    """Rendered diagrams, kept per model key, highlighted state (and waiting ones) and format.

    Rendering runs in a worker thread, one render at a time, so the WebAssembly build of Graphviz
    is never entered from two threads at once; the first SVG of a process compiles that build,
    which takes about a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[_DiagramKey, tuple[CompiledFlow, bytes]] = {}

    async def get(
        self,
        model_key: str,
        flow: CompiledFlow,
        current: str | None,
        diagram_format: DiagramFormat,
        waiting: tuple[str, ...] = (),
    ) -> bytes:
        """The diagram of ``flow`` with ``current`` highlighted and ``waiting`` outlined, in ``diagram_format``."""
        key = (model_key, current, waiting, diagram_format)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is flow:
            return kept[1]
        return await anyio.to_thread.run_sync(functools.partial(self._render, key, flow))

    def _render(self, key: _DiagramKey, flow: CompiledFlow) -> bytes:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] is flow:
                return kept[1]
            _, current, waiting, diagram_format = key
            diagram = Diagram(flow, current, waiting)
            if diagram_format == "svg":
                data = diagram.render("svg")
            else:
                data = (diagram.mermaid if diagram_format == "mermaid" else diagram.dot).encode()
            self._kept[key] = (flow, data)
            return data
