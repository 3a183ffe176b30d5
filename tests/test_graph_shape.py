"""The LangGraph graph ``build_graph`` compiles: one node per state, one labelled edge per transition.

* nodes: every state id, plus ``__start__`` and ``__end__``;
* an unconditional edge ``__start__`` -> the initial state;
* for every declared transition an edge source -> target whose label (``edge.data``) holds the
  event and its conditions (``user_input [!user_says_stop]`` for ``unless=``; expressions as
  written; several transitions between the same two states share one edge and label);
* every final state has an edge to ``__end__``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START

from genie_graph import EventData, GenieModel, GenieStateMachine, State, build_graph
from graphs.q_and_a_capture import QandACaptureMachine, QandACaptureModel
from graphs.q_and_a_cond import QandACondMachine, QandACondModel
from tests.helpers import ECHO_META, RENDERER_META, write_tree

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def _edges(graph: Any) -> dict[tuple[str, str], str | None]:
    drawn = graph.get_graph()
    edges: dict[tuple[str, str], str | None] = {}
    for edge in drawn.edges:
        key = (edge.source, edge.target)
        assert key not in edges, f"two edges {key}"
        edges[key] = edge.data
    return edges


def _nodes(graph: Any) -> list[str]:
    return list(graph.get_graph().nodes)


def _declared(machine: type[GenieStateMachine]) -> list[tuple[str, str, str]]:
    """(source id, target id, event) for every declared transition, from python-statemachine."""
    out = []
    for state in machine.states:
        for transition in state.transitions:
            for event in transition.events:
                out.append((state.id, transition.target.id, str(event)))
    return out


def _check_common(graph: Any, machine: type[GenieStateMachine]) -> dict[tuple[str, str], str | None]:
    ids = [s.id for s in machine.states]
    nodes = _nodes(graph)
    assert sorted(nodes) == sorted([START, END, *ids])
    assert len(nodes) == len(ids) + 2

    edges = _edges(graph)
    initial = next(s.id for s in machine.states if s.initial)
    assert (START, initial) in edges
    assert [e for e in edges if e[0] == START] == [(START, initial)]
    start_edge = next(e for e in graph.get_graph().edges if e.source == START)
    assert not start_edge.conditional

    for source, target, event in _declared(machine):
        assert (source, target) in edges, f"no edge for {event}: {source} -> {target}"
        label = edges[(source, target)]
        assert label is not None and event in label, (source, target, label)

    for state in machine.states:
        if state.final:
            assert (state.id, END) in edges, f"final state {state.id} has no edge to {END}"
    return edges


# ---------------------------------------------------------------------------------------------
# the example flows


def test_q_and_a_cond_shape() -> None:
    graph = build_graph(QandACondModel, PROMPTS)
    edges = _check_common(graph, QandACondMachine)

    assert set(edges) == {
        (START, "intro"),
        ("intro", "ai_creates_response"),
        ("user_enters_query", "ai_creates_response"),
        ("user_enters_query", "outro"),
        ("ai_creates_response", "user_enters_query"),
        ("ai_creates_response", "outro"),
        ("outro", END),
    }
    assert edges[("intro", "ai_creates_response")] == "user_input"
    assert "user_input [!user_says_stop]" in str(edges[("user_enters_query", "ai_creates_response")])
    assert "user_input [user_says_stop]" in str(edges[("user_enters_query", "outro")])
    assert "ai_extraction [!user_wants_to_quit]" in str(edges[("ai_creates_response", "user_enters_query")])
    assert "ai_extraction [user_wants_to_quit]" in str(edges[("ai_creates_response", "outro")])


def test_q_and_a_capture_shape() -> None:
    graph = build_graph(QandACaptureModel, PROMPTS)
    edges = _check_common(graph, QandACaptureMachine)

    declared = {
        (START, "intro"),
        ("intro", "ai_extracts_name"),
        ("need_to_retry", "ai_extracts_name"),
        ("welcome_message", "ai_creates_response"),
        ("user_enters_query", "ai_creates_response"),
        ("ai_extracts_name", "welcome_message"),
        ("ai_extracts_name", "need_to_retry"),
        ("ai_creates_response", "user_enters_query"),
    }
    assert declared <= set(edges)
    # the flow has no final state: anything else LangGraph draws can only lead to __end__
    assert all(target == END for _source, target in set(edges) - declared)

    assert "ai_extraction [name_is_defined]" in str(edges[("ai_extracts_name", "welcome_message")])
    assert "ai_extraction [!name_is_defined]" in str(edges[("ai_extracts_name", "need_to_retry")])
    for plain in [
        ("intro", "ai_extracts_name"),
        ("need_to_retry", "ai_extracts_name"),
        ("welcome_message", "ai_creates_response"),
        ("user_enters_query", "ai_creates_response"),
    ]:
        assert edges[plain] == "user_input"
    assert edges[("ai_creates_response", "user_enters_query")] == "ai_extraction"


def test_shape_does_not_depend_on_the_checkpointer() -> None:
    plain = build_graph(QandACondModel, PROMPTS)
    saved = build_graph(QandACondModel, PROMPTS, checkpointer=InMemorySaver())
    assert _edges(plain) == _edges(saved)
    assert _nodes(plain) == _nodes(saved)


# ---------------------------------------------------------------------------------------------
# a custom machine: self-transitions, a list, an expression, unless, two events on one edge


class LoopMachine(GenieStateMachine):
    ask = State(initial=True, value=1)
    think = State(value=2)
    done = State(final=True, value=3)

    user_input = (
        ask.to(ask, cond="is_short and not is_rude")  # user self-transition, expression
        | ask.to(think, cond=["is_short", "is_rude"])  # a list of names
        | ask.to(done, unless="is_short")  # unless
    )
    advance = ask.to.itself()  # a second event on the same self-edge
    ai_extraction = think.to(think, cond="again") | think.to(ask)  # invoker self-transition

    templates = dict(ask="r/ask.jinja2", think="i/think.jinja2", done="r/done.jinja2")

    def is_short(self, event_data: EventData) -> bool:
        return len(str(event_data.args[0])) < 10

    def is_rude(self, event_data: EventData) -> bool:
        return "!" in str(event_data.args[0])

    def again(self, event_data: EventData) -> bool:
        return False


class LoopModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return LoopMachine


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "r/meta.yaml": RENDERER_META,
            "r/ask.jinja2": "Ask away",
            "r/done.jinja2": "Bye",
            "i/meta.yaml": ECHO_META,
            "i/think.jinja2": "{{ actor_input }}",
        },
    )


def test_custom_machine_with_self_transitions(root: Path) -> None:
    graph = build_graph(LoopModel, root)
    edges = _check_common(graph, LoopMachine)

    assert set(edges) == {
        (START, "ask"),
        ("ask", "ask"),
        ("ask", "think"),
        ("ask", "done"),
        ("think", "think"),
        ("think", "ask"),
        ("done", END),
    }
    self_label = str(edges[("ask", "ask")])
    assert "user_input [is_short and not is_rude]" in self_label
    assert "advance" in self_label
    assert "is_short" in str(edges[("ask", "think")]) and "is_rude" in str(edges[("ask", "think")])
    assert str(edges[("ask", "think")]).startswith("user_input [")
    assert "user_input [!is_short]" in str(edges[("ask", "done")])
    assert "ai_extraction [again]" in str(edges[("think", "think")])
    assert edges[("think", "ask")] == "ai_extraction"


def test_list_condition_label_names_every_condition(root: Path) -> None:
    label = str(_edges(build_graph(LoopModel, root))[("ask", "think")])
    assert label == "user_input [is_short and is_rude]"


class UnlessExpressionMachine(GenieStateMachine):
    a = State(initial=True, value=1)
    b = State(value=2)
    c = State(final=True, value=3)

    user_input = a.to(b, unless="x or y") | a.to(c, cond="x", unless="y") | b.to(a)

    templates = dict(a="r/ask.jinja2", b="r/ask.jinja2", c="r/done.jinja2")

    def x(self) -> bool:
        return True

    def y(self) -> bool:
        return False


class UnlessExpressionModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return UnlessExpressionMachine


def test_unless_expression_label_keeps_its_meaning(root: Path) -> None:
    """``unless="x or y"`` means "not (x or y)"; a label "!x or y" would say "(not x) or y"."""
    edges = _edges(build_graph(UnlessExpressionModel, root))
    label = str(edges[("a", "b")])
    assert label.startswith("user_input [")
    assert "!(x or y)" in label or "not (x or y)" in label, label
    assert "x and !y" in str(edges[("a", "c")])


# ---------------------------------------------------------------------------------------------
# drawing


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access during a drawing")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
def test_draw_mermaid_offline_examples() -> None:
    text = build_graph(QandACondModel, PROMPTS).get_graph().draw_mermaid()
    for state in ("intro", "user_enters_query", "ai_creates_response", "outro", START, END):
        assert state in text
    assert "user_input [!user_says_stop]" in text
    assert "ai_extraction [user_wants_to_quit]" in text

    text = build_graph(QandACaptureModel, PROMPTS).get_graph().draw_mermaid()
    assert "ai_extraction [!name_is_defined]" in text


@pytest.mark.usefixtures("no_network")
def test_draw_mermaid_offline_self_transitions(root: Path) -> None:
    text = build_graph(LoopModel, root).get_graph().draw_mermaid()
    assert text.startswith("---") or "graph TD" in text
    assert "ask -. " in text and ".-> ask;" in text
    assert "think -. " in text and ".-> think;" in text
    assert "is_short and not is_rude" in text
