"""What a client can learn about a flow besides its sessions: its states, transitions and fields, and its diagram.

The playground draws from these; any front end may. A flow is fixed once registered, so a description
is built on demand and a diagram, once rendered, is kept per state.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field, JsonValue

from genie_graph import Diagram, GenieModel, MapTaskTemplate, NamedQueueTaskTemplate
from genie_graph._flow import CompiledFlow
from genie_graph._model import StateKind

DiagramFormat = Literal["svg", "mermaid", "dot"]
"""The forms of a diagram: an SVG image, Mermaid text, Graphviz DOT text."""

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
    kind: Literal["user", "invoker"] = Field(
        description="`user`: waits for the user, its template is the response; `invoker`: its template goes to an "
        "invoker (an LLM) in the background"
    )
    initial: bool
    final: bool
    template: JsonValue = Field(
        description="the template name, or its composition: a list runs in sequence, an object in parallel, "
        '`{"map": name, "over": path}` once per item, `{"queue": name, "template": ...}` on a worker queue, '
        '`"python:module.function"` a Python step'
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
    transitions: list[TransitionInfo]
    fields: list[FieldInfo] = Field(description="the model's fields: the flow's own (captured) ones first")


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


def describe_flow(model_key: str, flow: CompiledFlow) -> FlowDescription:
    """The description of the flow registered under ``model_key``."""
    value_of = {state_id: value for value, state_id in flow.id_by_value.items()}
    states = [
        StateInfo(
            id=state_id,
            name=flow.names[state_id],
            value=value_of[state_id],
            kind="invoker" if kind is StateKind.INVOKER else "user",
            initial=state_id == flow.initial,
            final=state_id in flow.finals,
            template=_template(flow.templates[state_id]),
            events=flow.next_actions(state_id),
            completion_event=flow.completion_event.get(state_id),
        )
        for state_id, kind in flow.kinds.items()
    ]
    events = list(dict.fromkeys(event for state in states for event in state.events))
    transitions = [
        TransitionInfo(source=source, target=target, label=label)
        for source, per_target in flow.targets.items()
        for target, labels in per_target.items()
        for label in labels
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
    )


class Diagrams:
    """Rendered diagrams, kept per model key, highlighted state and format.

    Rendering runs in a worker thread, one render at a time, so the WebAssembly build of Graphviz
    is never entered from two threads at once; the first SVG of a process compiles that build,
    which takes about a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str | None, DiagramFormat], tuple[CompiledFlow, bytes]] = {}

    async def get(
        self, model_key: str, flow: CompiledFlow, current: str | None, diagram_format: DiagramFormat
    ) -> bytes:
        """The diagram of ``flow`` with ``current`` highlighted, in ``diagram_format``."""
        key = (model_key, current, diagram_format)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is flow:
            return kept[1]
        return await anyio.to_thread.run_sync(functools.partial(self._render, key, flow))

    def _render(self, key: tuple[str, str | None, DiagramFormat], flow: CompiledFlow) -> bytes:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] is flow:
                return kept[1]
            diagram = Diagram(flow, key[1])
            diagram_format = key[2]
            if diagram_format == "svg":
                data = diagram.render("svg")
            else:
                data = (diagram.mermaid if diagram_format == "mermaid" else diagram.dot).encode()
            self._kept[key] = (flow, data)
            return data
