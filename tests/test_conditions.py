"""cond= and unless= as Genie Flow (python-statemachine 2.x) evaluates them, and refused events.

* a condition is a method name, a list of names (all must pass) or a boolean expression;
  ``unless=`` negates; names resolve on the machine and on the model;
* the candidate transitions of an event are tried in declaration order; the first that passes wins;
* an event the state does not accept, or whose conditions all fail, is refused with Genie Flow's
  error JSON and leaves the session exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from genie_graph import AIResponse, EventData, EventInput, GenieFlow, GenieModel, GenieStateMachine, State, build_graph
from genie_graph.errors import FlowDefinitionError
from tests.helpers import RENDERER_META, send, write_tree

STATES = ["ask", "s_list", "s_expr", "s_name", "s_model", "s_unless", "done"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = {"r/meta.yaml": RENDERER_META}
    for state in STATES:
        files[f"r/{state}.jinja2"] = f"in {state}: {{{{ actor_input }}}}"
    return write_tree(tmp_path / "templates", files)


def _words(event_data: EventData) -> set[str]:
    return set(str(event_data.args[0]).split()) if event_data.args else set()


class CondMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    s_list = State(value=1)
    s_expr = State(value=2)
    s_name = State(value=3)
    s_model = State(value=4)
    s_unless = State(value=5)
    done = State(final=True, value=6)

    # declaration order matters: the first transition whose conditions pass is taken
    user_input = (
        ask.to(s_list, cond=["has_x", "has_y"])  # a list: all must pass
        | ask.to(s_expr, cond="has_x and not has_y")  # an expression
        | ask.to(s_name, cond="has_z")  # a method name
        | ask.to(s_model, cond="model_allows")  # a method of the model
        | ask.to(s_unless, unless="has_w")  # unless: passes when has_w fails
    )
    advance = s_list.to(ask) | s_expr.to(ask) | s_name.to(ask) | s_model.to(ask) | s_unless.to(ask) | ask.to(done)
    finish = s_name.to(done)  # declared, but not accepted in 'ask'

    templates = {state: f"r/{state}.jinja2" for state in STATES}

    def has_x(self, event_data: EventData) -> bool:
        return "x" in _words(event_data)

    def has_y(self, event_data: EventData) -> bool:
        return "y" in _words(event_data)

    def has_z(self, event_data: EventData) -> bool:
        return "z" in _words(event_data)

    def has_w(self, event_data: EventData) -> bool:
        return "w" in _words(event_data)


class CondModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CondMachine

    def model_allows(self, event_data: EventData) -> bool:
        """A condition found on the model, not on the machine."""
        return "please" in _words(event_data)


# input -> the state user_input takes from 'ask'
ROUTES = [
    ("x y", "s_list"),
    ("x y z please", "s_list"),  # every later transition passes too: the first one wins
    ("x", "s_expr"),
    ("x z please", "s_expr"),  # s_expr is declared before s_name and s_model
    ("z", "s_name"),
    ("z please", "s_name"),
    ("please", "s_model"),
    ("please w", "s_model"),
    ("y", "s_unless"),  # the list fails (no x), the expression fails (no x)
    ("hello", "s_unless"),
]
REFUSED_INPUT = "w y"  # no x, no z, no please, and w: every transition out of 'ask' fails

VALUE_OF = {state.id: state.value for state in CondMachine.states}


# ---------------------------------------------------------------------------------------------
# routing


@pytest.mark.parametrize(("text", "target"), ROUTES)
def test_first_passing_transition_wins_plain_langgraph(root: Path, text: str, target: str) -> None:
    graph = build_graph(CondModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "cond"}}
    graph.invoke({}, cfg)
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": text}), cfg)
    assert result["state"] == VALUE_OF[target]
    assert result["dialogue"][-1]["actor_text"] == f"in {target}: {text}"
    assert graph.get_state(cfg).next == (target,)


def test_routes_through_genie_flow(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("cond", CondModel)
        sid = flow.create_new_session("cond").session_id
        for text, target in ROUTES:
            answer = send(flow, "cond", sid, "user_input", text)
            assert answer.error is None, (text, answer.error)
            assert answer.response == f"in {target}: {text}", text
            assert flow.get_model("cond", sid).state == VALUE_OF[target], text
            assert send(flow, "cond", sid, "advance", "").error is None
            assert flow.get_model("cond", sid).state == VALUE_OF["ask"]


def test_expression_condition_on_an_example_flow(store_url: str) -> None:
    """q_and_a_cond: user_enters_query goes to outro when the input is *STOP*, else on."""
    from graphs.q_and_a_cond import QandACondMachine, QandACondModel

    prompts = Path(__file__).resolve().parent.parent / "prompts"
    with GenieFlow(template_root=prompts, store=store_url) as flow:
        flow.register_model("qa", QandACondModel)
        sid = flow.create_new_session("qa").session_id
        answer = send(flow, "qa", sid, "user_input", "What is a graph?")
        assert answer.error is None
        assert flow.get_model("qa", sid).state == QandACondMachine.user_enters_query.value
        answer = send(flow, "qa", sid, "user_input", "*STOP*")
        assert answer.error is None
        assert flow.get_model("qa", sid).state == QandACondMachine.outro.value
        assert answer.response == "Thank you for this conversation. Goodbye!"
        assert answer.next_actions == []


# ---------------------------------------------------------------------------------------------
# refusals through GenieFlow: Genie Flow's error JSON, and the session left exactly as it was


def _history_len(flow: GenieFlow, key: str, sid: str) -> int:
    return len(list(flow.graph(key).get_state_history({"configurable": {"thread_id": sid}})))


def _snapshot(flow: GenieFlow, key: str, sid: str) -> tuple[dict[str, Any], int]:
    return flow.get_model(key, sid).model_dump(), _history_len(flow, key, sid)


def _assert_refusal(
    answer: AIResponse, sid: str, state: str, state_name: str, possible: list[str], received: str
) -> None:
    assert answer.error is not None
    assert answer.response is None
    error = json.loads(answer.error)
    assert error["session_id"] == sid
    assert error["current_state"] == {"id": state, "name": state_name}
    assert error["possible_events"] == possible
    assert error["received_event"] == received


REFUSALS = [
    ("declared_not_allowed", "finish", "hello"),  # declared, but not from 'ask'
    ("placeholder_not_declared", "ai_extraction", "hello"),  # a Genie event this machine leaves None
    ("unknown_event", "no_such_event", "hello"),
    ("all_conditions_fail", "user_input", REFUSED_INPUT),
]


@pytest.mark.parametrize(("case", "event", "text"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_event_leaves_the_session_as_it_was(
    root: Path, store_url: str, case: str, event: str, text: str
) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("cond", CondModel)
        sid = flow.create_new_session("cond").session_id
        # a few steps first, so the session has a history to keep
        send(flow, "cond", sid, "user_input", "x")
        send(flow, "cond", sid, "advance", "")

        before = _snapshot(flow, "cond", sid)
        answer = flow.process_event("cond", EventInput(session_id=sid, event=event, event_input=text))
        _assert_refusal(answer, sid, "ask", CondMachine.ask.name, ["user_input", "advance"], event)
        assert _snapshot(flow, "cond", sid) == before

        # and again: refusals do not pile up
        answer = flow.process_event("cond", EventInput(session_id=sid, event=event, event_input=text))
        assert answer.error is not None
        assert _snapshot(flow, "cond", sid) == before

        # a valid event still works
        answer = send(flow, "cond", sid, "user_input", "z")
        assert answer.error is None
        assert answer.response == "in s_name: z"
        assert flow.get_model("cond", sid).state == VALUE_OF["s_name"]


def test_refusal_in_a_final_state(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("cond", CondModel)
        sid = flow.create_new_session("cond").session_id
        answer = send(flow, "cond", sid, "advance", "bye")
        assert answer.error is None
        assert answer.next_actions == []
        before = _snapshot(flow, "cond", sid)
        answer = flow.process_event("cond", EventInput(session_id=sid, event="user_input", event_input="x"))
        _assert_refusal(answer, sid, "done", CondMachine.done.name, [], "user_input")
        assert _snapshot(flow, "cond", sid) == before


def test_refusal_names_the_state_in_the_error(root: Path) -> None:
    assert CondMachine.ask.name == "Ask"
    assert CondMachine.s_unless.name == "S unless"


# ---------------------------------------------------------------------------------------------
# refusals through plain LangGraph: re-interrupt with the error, then a good resume works


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "finish", "event_input": "hello"},
        {"event": "ai_extraction", "event_input": "hello"},
        {"event": "no_such_event", "event_input": "hello"},
        {"event": "user_input", "event_input": REFUSED_INPUT},
        {"no_event": True},
    ],
    ids=["declared_not_allowed", "placeholder_not_declared", "unknown", "conditions_fail", "malformed"],
)
def test_bad_resume_reinterrupts_with_error(root: Path, bad: dict[str, Any]) -> None:
    graph = build_graph(CondModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "cond-plain"}}
    graph.invoke({}, cfg)
    values_before = graph.get_state(cfg).values
    first = graph.get_state(cfg).interrupts[0].value
    assert first["error"] is None
    assert first["state"] == "ask"

    graph.invoke(Command(resume=bad), cfg)
    snapshot = graph.get_state(cfg)
    assert snapshot.next == ("ask",)
    # Plain LangGraph has no runtime to roll back: the refusal is shown in task_error, nothing else moves.
    changed = {k: v for k, v in snapshot.values.items() if k != "task_error"}
    assert changed == {k: v for k, v in values_before.items() if k != "task_error"}
    assert snapshot.values["task_error"] == snapshot.interrupts[0].value["error"]
    assert len(snapshot.interrupts) == 1
    payload = snapshot.interrupts[0].value
    assert payload["state"] == "ask"
    assert payload["error"]
    assert payload["next_actions"] == ["user_input", "advance"]
    if "event" in bad:
        error = json.loads(payload["error"])
        assert error["current_state"] == {"id": "ask", "name": "Ask"}
        assert error["possible_events"] == ["user_input", "advance"]
        assert error["received_event"] == bad["event"]

    # twice in a row, then a good one
    graph.invoke(Command(resume=bad), cfg)
    assert graph.get_state(cfg).interrupts[0].value["error"]
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "x y"}), cfg)
    assert result["state"] == VALUE_OF["s_list"]
    assert result["dialogue"][-1]["actor_text"] == "in s_list: x y"
    snapshot = graph.get_state(cfg)
    assert snapshot.next == ("s_list",)
    assert snapshot.interrupts[0].value["error"] is None


# ---------------------------------------------------------------------------------------------
# unknown condition names are found when the graph is built


def _machine_with(**condition: Any) -> type[GenieModel]:
    class Broken(GenieStateMachine):
        a = State(initial=True, value=1)
        b = State(value=2)
        user_input = a.to(b, **condition) | b.to(a)
        templates = dict(a="r/ask.jinja2", b="r/s_list.jinja2")

        def has_x(self) -> bool:
            return True

    class BrokenModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return Broken

    return BrokenModel


@pytest.mark.parametrize(
    "condition",
    [
        {"cond": "ghost_condition"},
        {"cond": ["has_x", "ghost_condition"]},
        {"cond": "has_x and not ghost_condition"},
        {"unless": "ghost_condition"},
    ],
    ids=["name", "list", "expression", "unless"],
)
def test_unknown_condition_fails_at_build_graph(root: Path, condition: dict[str, Any]) -> None:
    model = _machine_with(**condition)  # declaring the class is fine ...
    with pytest.raises(FlowDefinitionError, match="ghost_condition"):
        build_graph(model, root)  # ... building the graph names the missing condition


def test_unknown_condition_fails_at_register_model(root: Path) -> None:
    flow = GenieFlow(template_root=root, store="memory://")
    try:
        with pytest.raises(FlowDefinitionError, match="ghost_condition"):
            flow.register_model("broken", _machine_with(cond="ghost_condition"))
        assert flow.model_keys == []
    finally:
        flow.close()


# ---------------------------------------------------------------------------------------------
# a later resume applies the later input, even when a condition's answer changed meanwhile

GATE: dict[str, Any] = {"mode": "flag", "open": False, "calls": 0}
"""An outside fact a condition reads (a feature flag, an opening time, a quota ...).

mode "flag": the gate is ``open``; mode "once": open for its first evaluation only.
"""


@pytest.fixture
def gate() -> Any:
    GATE.update(mode="flag", open=False, calls=0)
    yield GATE
    GATE.update(mode="flag", open=False, calls=0)


class GateMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    s_list = State(value=1)

    user_input = ask.to(s_list, cond="gate_is_open") | s_list.to(ask)

    templates = dict(ask="r/ask.jinja2", s_list="r/s_list.jinja2")

    def gate_is_open(self) -> bool:
        GATE["calls"] += 1
        if GATE["mode"] == "once":
            return bool(GATE["calls"] == 1)
        return bool(GATE["open"])


class GateModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return GateMachine


def test_refused_resume_is_not_replayed_when_a_condition_changes(root: Path, gate: Any) -> None:
    graph = build_graph(GateModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "gate"}}
    graph.invoke({}, cfg)

    graph.invoke(Command(resume={"event": "user_input", "event_input": "first"}), cfg)
    assert graph.get_state(cfg).interrupts[0].value["error"]  # refused: the gate is closed

    gate["open"] = True
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "second"}), cfg)
    assert result["state"] == GateMachine.s_list.value
    assert result["actor_input"] == "in s_list: second"
    assert [d["actor_text"] for d in result["dialogue"]][1:] == ["second", "in s_list: second"]


def test_event_accepted_by_process_event_is_not_lost_when_a_condition_changes(
    root: Path, store_url: str, gate: Any
) -> None:
    """If the answer says the event went through, the session must have moved (and vice versa)."""
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("gate", GateModel)
        sid = flow.create_new_session("gate").session_id
        gate["mode"] = "once"  # open for the first evaluation of the event only
        answer = flow.process_event("gate", EventInput(session_id=sid, event="user_input", event_input="hi"))
        moved = flow.get_model("gate", sid).state == GateMachine.s_list.value
        assert (answer.error is None) == moved, (answer, moved)
        assert moved, "Genie Flow evaluates the condition once per event: it was open, the event must pass"
        assert gate["calls"] == 1
