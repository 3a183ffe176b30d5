"""``build_graph``: a GenieModel class and its machine, compiled to a LangGraph ``StateGraph``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ._composite import CompositeRunner
from ._flow import CompiledFlow, GenieCompat, compile_flow
from ._invokers import InvokerRegistry
from ._model import GenieModel
from ._nodes import channels_schema, make_node
from ._subflows import node_name
from ._templates import TemplateLibrary


def graph_of(
    flow: CompiledFlow, checkpointer: BaseCheckpointSaver[Any] | bool | None = None
) -> CompiledStateGraph[Any]:
    """The compiled LangGraph graph of an already compiled flow."""
    builder: StateGraph[Any] = StateGraph(flow.model_class)
    channels = channels_schema(flow.model_class)
    returns = _return_destinations(flow)
    for node, (owner, state_id) in flow.nodes.items():
        destinations = {
            node_name(flow, owner, target): " | ".join(labels) for target, labels in owner.targets[state_id].items()
        }
        if state_id in owner.subflows:
            child = flow.children[owner.subflows[state_id].child]
            destinations[node_name(flow, child, child.initial)] = "call"
        if state_id in owner.finals:
            destinations.update({END: "done"} if owner is flow else returns.get(owner.label, {}))
        if owner.is_interruptible(state_id):  # the interruptions its own flow declares
            for link in owner.interruptions:
                child = flow.children[link.child]
                destinations[node_name(flow, child, child.initial)] = link.interruption.trigger  # type: ignore[union-attr]
        builder.add_node(node, make_node(owner, state_id, flow), destinations=destinations, input_schema=channels)
    builder.add_edge(START, flow.initial)
    graph = builder.compile(checkpointer=checkpointer, name=flow.model_class.__name__)
    graph.genie_flow = flow  # type: ignore[attr-defined]
    return graph


def _return_destinations(flow: CompiledFlow) -> dict[str, dict[str, str]]:
    """Where each flow the session runs may go on after its final state (drawings only: nodes route
    with ``Command``): its callers' next states, or the states its interruption resumes."""
    returns: dict[str, dict[str, str]] = {}
    for owner in [flow, *flow.children.values()]:
        for state_id, link in owner.subflows.items():
            for target in owner.targets[state_id]:
                returns.setdefault(link.child, {})[node_name(flow, owner, target)] = "returns"
        for link in owner.interruptions:
            for state_id in owner.kinds:
                if owner.is_interruptible(state_id):
                    returns.setdefault(link.child, {})[node_name(flow, owner, state_id)] = "resumes"
            if flow.children[link.child].abort_states and link.on_abort != "resume":
                returns[link.child][END] = "aborts"
    return returns


def build_graph(
    model_class: type[GenieModel],
    template_root: str | Path | None = None,
    checkpointer: BaseCheckpointSaver[Any] | bool | None = None,
    *,
    template_directories: dict[str, str | Path] | None = None,
    compat: GenieCompat | None = None,
) -> CompiledStateGraph[Any]:
    """Validate a flow and compile it into a LangGraph graph whose state is the model.

    Each state becomes a node named by its id; every declared transition is an edge labelled
    ``event [conditions]``. User states wait with ``interrupt()`` and resume with
    ``Command(resume={"event": name, "event_input": text})``.

    Args:
        model_class: the flow's ``GenieModel`` subclass.
        template_root: the directory the ``templates`` names are relative to.
        checkpointer: a LangGraph checkpointer; needed to resume after an interrupt.
        template_directories: Genie Flow style ``prefix -> directory`` registrations.
        compat: Genie Flow behaviours to keep (see ``GenieCompat``).

    Returns:
        The compiled graph (``invoke``, ``stream``, ``get_state``, ... as any LangGraph graph).

    Raises:
        FlowDefinitionError: the declaration is wrong; the message names the culprit.
        TemplateError: a template is missing or does not compile.

    Example:
        >>> from langgraph.checkpoint.memory import InMemorySaver
        >>> from langgraph.types import Command
        >>> graph = build_graph(QandAModel, "prompts", InMemorySaver())  # doctest: +SKIP
        >>> config = {"configurable": {"thread_id": "1"}}
        >>> graph.invoke(QandAModel(), config)  # doctest: +SKIP
        >>> graph.invoke(Command(resume={"event": "user_input", "event_input": "Hi"}), config)  # doctest: +SKIP
    """
    compat = compat or GenieCompat()
    library = TemplateLibrary(template_root, strict_undefined=not compat.lenient_undefined)
    for prefix, directory in (template_directories or {}).items():
        library.register_template_directory(prefix, directory)
    flow = compile_flow(model_class, CompositeRunner(library, InvokerRegistry()), compat)
    return graph_of(flow, checkpointer)
