"""Sub-flows and interruptions (issue 9), in process, on every store.

The flows are in ``tests/subflow_flows.py``; their templates are written under each test's
``tmp_path``. A session's position is read as the runtime reports it: the node of the active
flow's state (``<flow>/<state>`` for a flow other than the session's own).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from statemachine import State

import graphs
from genie_graph import (
    AIResponse,
    FlowStatus,
    GenieFlow,
    GenieModel,
    GenieStateMachine,
    HistoryKind,
    Interruption,
    SubFlow,
    build_graph,
)
from genie_graph._stack import FlowStack
from genie_graph.errors import FlowDefinitionError
from tests import subflow_flows as F
from tests.helpers import send, write_tree

GENIE_FLOW_KEYS = {"session_id", "next_actions", "error", "response", "progress"}
FLOW_KINDS = {
    HistoryKind.FLOW_STARTED,
    HistoryKind.FLOW_INTERRUPTED,
    HistoryKind.FLOW_RESUMED,
    HistoryKind.FLOW_COMPLETED,
    HistoryKind.FLOW_ABORTED,
}
PROMPTS = Path(graphs.__file__).resolve().parent.parent / "prompts"


@pytest.fixture(autouse=True)
def _reset_records() -> Iterator[None]:
    F.CALLS.clear()
    F.CLASSIFIED.clear()
    yield
    F.CALLS.clear()
    F.CLASSIFIED.clear()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "templates", F.TEMPLATES)


@pytest.fixture
def genie(root: Path, store_url: str) -> Iterator[GenieFlow]:
    with GenieFlow(template_root=root, store=store_url) as flow:
        yield flow


class Chat:
    """One session of a flow, driven event by event as a Genie Flow client does."""

    def __init__(self, flow: GenieFlow, key: str, model_class: type[GenieModel]) -> None:
        if key not in flow.model_keys:
            flow.register_model(key, model_class)
        self.flow, self.key = flow, key
        self.start = flow.create_new_session(key)
        assert self.start.error is None, self.start.error
        self.sid = self.start.session_id

    def say(self, text: str = "", event: str = "user_input") -> AIResponse:
        return send(self.flow, self.key, self.sid, event, text)

    def ok(self, text: str = "", event: str = "user_input") -> AIResponse:
        answer = self.say(text, event)
        assert answer.error is None, answer.error
        return answer

    @property
    def model(self) -> Any:
        return self.flow.get_model(self.key, self.sid)

    @property
    def state(self) -> str:
        """The node the runtime reports for the session (``<flow>/<state>`` inside another flow)."""
        return self.flow.flow_of(self.key).node_of(self.model)

    def dialogue(self) -> list[tuple[str, str]]:
        return [(str(e.actor), e.actor_text) for e in self.model.dialogue]

    def history(self, start: int = 0) -> list[tuple[str, str | None, str | None, str | None, str | None]]:
        return [
            (str(entry.kind), entry.flow, entry.state, entry.event, entry.target)
            for entry in self.model.history[start:]
        ]


def _refusal(answer: AIResponse) -> dict[str, Any]:
    assert answer.error is not None, f"expected a refusal, got {answer!r}"
    return json.loads(answer.error)  # type: ignore[no-any-return]


# =============================================================================================
# 1. call and return: inputs in, outputs back, the on_complete event and its condition
# =============================================================================================


def test_subflow_inputs_reach_the_child_and_outputs_come_back(genie: GenieFlow) -> None:
    chat = Chat(genie, "map", F.MapParentModel)
    assert chat.start.response == "Who are you?"
    assert chat.start.active_flows is None

    answer = chat.ok("Ada")
    # the child renders its inputs: customer -> who, count (int 3) -> n (float)
    assert answer.response == "Hello Ada, n=3.0 [map_parent>child]"
    assert answer.next_actions == ["user_input"]
    assert answer.active_flows == ["map_parent", "child"]
    assert chat.state == "child/asking"
    model = chat.model
    [frame] = model.flows.frames
    assert (frame.flow, frame.kind, frame.caller, frame.status) == ("child", "subflow", "calling", FlowStatus.ACTIVE)
    assert (frame.model["who"], frame.model["n"], frame.model["answer"]) == ("Ada", 3.0, "")
    assert (model.customer, model.result, model.ok) == ("Ada", None, False)

    assert genie.get_task_state("map", chat.sid).next_actions == ["user_input"]
    # the calling state's own events are not the session's while the child runs
    refusal = _refusal(chat.say(event="skip"))
    assert refusal["current_state"]["id"] == "child/asking"
    assert refusal["possible_events"] == ["user_input"]
    assert chat.state == "child/asking"

    answer = chat.ok("yes")
    # the child's final text, then the parent's next state after on_complete (its condition saw ok=True)
    assert answer.response == "Child got yes.\n\nAccepted yes for Ada."
    assert answer.active_flows is None
    assert answer.next_actions == ["user_input"]
    assert chat.state == "accepted"
    model = chat.model
    assert (model.result, model.ok, model.flows.frames) == ("yes", True, [])
    assert chat.dialogue() == [
        ("assistant", "Who are you?"),
        ("user", "Ada"),
        ("assistant", "Hello Ada, n=3.0 [map_parent>child]"),
        ("user", "yes"),
        ("assistant", "Child got yes."),  # the child's last words and the parent's next state: one response,
        ("assistant", "Accepted yes for Ada."),  # two utterances
    ]

    answer = chat.ok("bye")
    assert (answer.response, answer.next_actions, chat.state) == ("Bye.", [], "finished")


def test_subflow_on_complete_event_takes_its_conditioned_transition(genie: GenieFlow) -> None:
    chat = Chat(genie, "map", F.MapParentModel)
    chat.ok("Bob")
    answer = chat.ok("no")
    assert answer.response == "Child got no.\n\nRejected no."
    assert chat.state == "rejected"  # child_returned's condition failed (ok=False), not the "skip" event
    assert (chat.model.result, chat.model.ok) == ("no", False)


def test_subflow_list_shorthand_and_custom_name(genie: GenieFlow) -> None:
    chat = Chat(genie, "list", F.ListParentModel)
    answer = chat.ok("go")
    assert answer.response == "Hello Bob, n=2.5 [list_parent>helper_child]"
    assert chat.state == "helper_child/asking"
    assert answer.active_flows == ["list_parent", "helper_child"]
    assert chat.model.flows.frames[0].model["who"] == "Bob"

    answer = chat.ok("yes")
    assert answer.response == "Child got yes.\n\nAfter: yes True"  # default on_complete: the only event out
    assert answer.next_actions == []
    assert chat.state == "after"
    assert (chat.model.answer, chat.model.accepted) == ("yes", True)


def test_subflow_starting_with_an_invoker_state(genie: GenieFlow) -> None:
    chat = Chat(genie, "count", F.CountCallerModel)
    answer = chat.ok("a,b")
    assert answer.response == "Counted: Echo: 2 items\n\nShown: Echo: 2 items"
    assert (answer.next_actions, chat.state) == (["user_input"], "shown")
    assert (chat.model.summary, chat.model.flows.frames) == ("Echo: 2 items", [])


def test_two_subflows_in_a_row(genie: GenieFlow) -> None:
    """The first's outputs are the second's inputs; the first's final text is part of the answer."""
    chat = Chat(genie, "chain", F.ChainModel)
    assert chat.ok("Ann").response == "Hello Ann, n=0.0 [chain>first]"
    assert chat.state == "first/asking"

    answer = chat.ok("Zed")
    assert chat.state == "second/asking"
    assert chat.model.customer == "Zed"
    assert answer.active_flows == ["chain", "second"]
    assert answer.response == "Child got Zed.\n\nHello Zed, n=0.0 [chain>second]"
    assert chat.dialogue()[-3:] == [
        ("user", "Zed"),
        ("assistant", "Child got Zed."),
        ("assistant", "Hello Zed, n=0.0 [chain>second]"),
    ]


def test_two_subflows_in_a_row_pass_fields_on(genie: GenieFlow) -> None:
    chat = Chat(genie, "chain", F.ChainModel)
    chat.ok("Ann")
    chat.ok("Zed")
    answer = chat.ok("Yan")
    assert answer.response == "Child got Yan.\n\nChain: Zed then Yan"
    assert (chat.state, chat.model.final, chat.model.flows.frames) == ("shown", "Yan", [])


# =============================================================================================
# 2. build-time errors
# =============================================================================================


class TypedChildModel(F.AckModel):
    number: int = 0
    label: str = ""
    maybe: str | None = None
    ratio: float = 0.0


def _bad_flow(spec: Any = None, **machine_attrs: Any) -> type[GenieModel]:
    """A flow with a user, an invoker and a sub-flow state; ``spec`` is the sub-flow state's template."""
    template = spec if spec is not None else SubFlow(TypedChildModel)

    class BadMachine(GenieStateMachine):
        start = State(initial=True)
        thinking = State()
        calling = State()
        finished = State(final=True)

        user_input = start.to(thinking)
        ai_extraction = thinking.to(calling)
        returned = calling.to(finished)
        other = calling.to(start)

        templates = dict(
            start="ui/plain.jinja2", thinking="llm/echo.jinja2", calling=template, finished="ui/plain.jinja2"
        )

    for name, value in machine_attrs.items():
        setattr(BadMachine, name, value)

    class BadParentModel(GenieModel):
        customer: str = ""
        count: int = 0
        maybe: str | None = None
        ratio: float = 0.0
        tags: list[str] = []

        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return BadMachine

    return BadParentModel


def _bad_child() -> type[GenieModel]:
    class BadChildMachine(GenieStateMachine):
        asking = State(initial=True)
        done = State(final=True)

        user_input = asking.to(done)

        abort_states = {"asking"}
        templates = dict(asking="ui/plain.jinja2", done="ui/plain.jinja2")

    class BadChildModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return BadChildMachine

    return BadChildModel


HELP_ON_EVENT = Interruption(F.HelpModel, event="help")

BUILD_ERRORS: list[tuple[str, Any, dict[str, Any], list[str], str]] = [
    # (id, sub-flow spec, machine attributes, substrings of the message, culprit)
    (
        "unknown input field of the parent",
        SubFlow(TypedChildModel, inputs={"label": "nope"}),
        {},
        ["inputs names 'nope'", "BadParentModel does not have"],
        "SubFlow of state 'calling'",
    ),
    (
        "unknown input field of the child",
        SubFlow(TypedChildModel, inputs={"nope": "customer"}),
        {},
        ["inputs names 'nope'", "TypedChildModel does not have"],
        "SubFlow of state 'calling'",
    ),
    (
        "unknown output field of the child",
        SubFlow(TypedChildModel, outputs={"customer": "nope"}),
        {},
        ["outputs names 'nope'", "TypedChildModel does not have"],
        "SubFlow of state 'calling'",
    ),
    (
        "unknown output field of the parent, list shorthand",
        SubFlow(TypedChildModel, outputs=["label"]),
        {},
        ["outputs names 'label'", "BadParentModel does not have"],
        "SubFlow of state 'calling'",
    ),
    (
        "managed field as input",
        SubFlow(TypedChildModel, inputs={"label": "dialogue"}),
        {},
        ["'dialogue'", "manages itself"],
        "SubFlow of state 'calling'",
    ),
    (
        "managed field as output, list shorthand",
        SubFlow(TypedChildModel, outputs=["history"]),
        {},
        ["'history'", "manages itself"],
        "SubFlow of state 'calling'",
    ),
    (
        "str into int",
        SubFlow(TypedChildModel, inputs={"number": "customer"}),
        {},
        ["BadParentModel.customer (str)", "TypedChildModel.number (int)", "does not take it"],
        "SubFlow of state 'calling'",
    ),
    (
        "float into int",
        SubFlow(TypedChildModel, inputs={"number": "ratio"}),
        {},
        ["BadParentModel.ratio (float)", "TypedChildModel.number (int)"],
        "SubFlow of state 'calling'",
    ),
    (
        "str | None into str",
        SubFlow(TypedChildModel, outputs={"customer": "maybe"}),
        {},
        ["TypedChildModel.maybe", "BadParentModel.customer (str)", "does not take it"],
        "SubFlow of state 'calling'",
    ),
    (
        "str into list[str]",
        SubFlow(TypedChildModel, inputs={"items": "customer"}),
        {},
        ["BadParentModel.customer (str)", "TypedChildModel.items"],
        "SubFlow of state 'calling'",
    ),
    (
        "on_complete does not leave the state",
        SubFlow(TypedChildModel, on_complete="user_input"),
        {},
        ["on_complete='user_input'", "does not leave state 'calling'"],
        "calling",
    ),
    (
        "on_abort does not leave the state",
        SubFlow(TypedChildModel, on_abort="ai_extraction"),
        {},
        ["on_abort='ai_extraction'", "does not leave state 'calling'"],
        "calling",
    ),
    (
        "two flows with the same name",
        SubFlow(TypedChildModel, name="dup"),
        {"interruptions": [Interruption(F.HelpModel, event="help", name="dup")]},
        ["two flows are named 'dup'", "TypedChildModel", "HelpModel"],
        "interruptions[0]",
    ),
    (
        "an interruption without a trigger",
        None,
        {"interruptions": [HELP_ON_EVENT, Interruption(F.NoteModel)]},
        ["exactly one trigger", "none"],
        "interruptions[1]",
    ),
    (
        "an interruption with two triggers",
        None,
        {"interruptions": [Interruption(F.HelpModel, event="help", when=F.has_x)]},
        ["exactly one trigger", "'event'", "'when'"],
        "interruptions[0]",
    ),
    (
        "an intent without intent_classifier",
        None,
        {"interruptions": [Interruption(F.HelpModel, intent="help")]},
        ["intent='help'", "intent_classifier"],
        "interruptions[0]",
    ),
    (
        "an interruption's on_abort neither abort nor resume",
        None,
        {"interruptions": [Interruption(F.HelpModel, event="help", on_abort="explode")]},  # type: ignore[arg-type]
        ["on_abort='explode'"],
        "interruptions[0]",
    ),
    (
        "an interruption triggered by poll",
        None,
        {"interruptions": [Interruption(F.HelpModel, event="poll")]},
        ["event='poll'"],
        "interruptions[0]",
    ),
    (
        "something else than an Interruption",
        None,
        {"interruptions": [SubFlow(F.HelpModel)]},
        ["not a genie_graph.Interruption"],
        "interruptions",
    ),
    (
        "interruptible names an invoker state",
        None,
        {"interruptible": {"start", "thinking"}},
        ["interruptible", "not user states"],
        "thinking",
    ),
    (
        "interruptible names a sub-flow state",
        None,
        {"interruptible": {"calling"}},
        ["interruptible", "not user states"],
        "calling",
    ),
    (
        "interruptible names an unknown state",
        None,
        {"interruptible": {"ghost"}},
        ["interruptible", "not user states"],
        "ghost",
    ),
    (
        "abort_states names a state that is not final",
        None,
        {"abort_states": {"finished", "start"}},
        ["abort_states must be final states"],
        "start",
    ),
    (
        "a sub-flow's own declaration is wrong",
        "child",
        {},
        ["BadChildMachine", "abort_states must be final states"],
        "asking",
    ),
]


@pytest.mark.parametrize(
    ("spec", "attrs", "expected", "culprit"),
    [pytest.param(*case[1:], id=case[0]) for case in BUILD_ERRORS],
)
def test_build_time_errors_name_the_culprit(
    root: Path, spec: Any, attrs: dict[str, Any], expected: list[str], culprit: str
) -> None:
    if spec == "child":
        spec = SubFlow(_bad_child())
    model = _bad_flow(spec, **attrs)
    with pytest.raises(FlowDefinitionError) as raised:
        build_graph(model, root)
    message = str(raised.value)
    for part in expected:
        assert part in message, message
    assert culprit in raised.value.culprits, (raised.value.culprits, message)


def test_build_time_accepts_compatible_types(root: Path) -> None:
    spec = SubFlow(
        TypedChildModel,
        inputs={"maybe": "customer", "ratio": "count", "label": "customer", "items": "tags"},  # str -> str | None,
        outputs={"maybe": "label", "ratio": "number", "customer": "label"},  # int -> float
    )
    interruption = Interruption(TypedChildModel, event="typed", inputs={"ratio": "count"}, outputs={"maybe": "label"})
    model = _bad_flow(spec, interruptions=[interruption])
    graph = build_graph(model, root)
    assert {"typed_child/acking", "typed_child/acked", "calling", "start"} <= set(graph.nodes)


def test_genie_flow_registration_reports_the_same_errors(root: Path) -> None:
    with GenieFlow(template_root=root, store="memory://") as flow:
        with pytest.raises(FlowDefinitionError, match="does not take it"):
            flow.register_model("bad", _bad_flow(SubFlow(TypedChildModel, inputs={"number": "customer"})))
        assert "bad" not in flow.model_keys


# =============================================================================================
# 3. three levels, each waiting for events; hooks once per event; resumes in place
# =============================================================================================

HELP_HOOKS = ["help.c_help", "help.on_exit_helping", "help.on_user_input", "help.on_enter_helped"]
NEST_STEPS: list[tuple[str, str, str, list[str], str, list[str]]] = [
    # (event, text, node after it, next_actions, response, hooks it runs)
    (
        "help",
        "help me",
        "help/helping",
        ["user_input"],
        "Help: how can I help? [nest_root>help]",
        ["help.on_enter_helping"],
    ),
    ("user_input", "ok", "r_ask", ["user_input", "help"], "Help: glad to help.\n\nR: ask", HELP_HOOKS),
    (
        "user_input",
        "r1",
        "a/a_ask",
        ["user_input", "help"],
        "A: ask (got r1)",
        ["root.c_root", "root.on_exit_r_ask", "root.on_user_input", "root.on_enter_r_call", "a.on_enter_a_ask"],
    ),
    (
        "user_input",
        "a1",
        "b/b_one",
        ["user_input", "help"],
        "B: one (got a1)",
        ["a.c_a", "a.on_exit_a_ask", "a.on_user_input", "a.on_enter_a_call", "b.on_enter_b_one"],
    ),
    (  # an interruption in a sub-flow's initial state: it is not entered again when resumed
        "help",
        "help me",
        "help/helping",
        ["user_input"],
        "Help: how can I help? [nest_root>a>b>help]",
        ["help.on_enter_helping"],
    ),
    ("user_input", "ok", "b/b_one", ["user_input", "help"], "Help: glad to help.\n\nB: one (got a1)", HELP_HOOKS),
    (
        "user_input",
        "b1",
        "b/b_two",  # after the invoker state b_think; b_two waits for a new event
        ["user_input", "help"],
        "B: two (Echo: b1)",
        [
            *("b.c_b", "b.on_exit_b_one", "b.on_user_input", "b.on_enter_b_think"),
            *("b.c_b", "b.on_exit_b_think", "b.on_ai_extraction", "b.on_enter_b_two"),
        ],
    ),
    (
        "help",
        "help me",
        "help/helping",
        ["user_input"],  # the help flow does not interrupt itself
        "Help: how can I help? [nest_root>a>b>help]",
        ["help.on_enter_helping"],
    ),
    (
        "user_input",
        "thanks",
        "b/b_two",  # resumed where it was: no hook of b runs, "thanks" is not b_two's input
        ["user_input", "help"],
        "Help: glad to help.\n\nB: two (Echo: b1)",
        HELP_HOOKS,
    ),
    (
        "user_input",
        "b2",
        "a/a_after",
        ["user_input", "help"],
        "B: end\n\nA: after (b2)",
        [
            *("b.c_b", "b.on_exit_b_two", "b.on_user_input", "b.on_enter_b_end"),
            *("a.c_a", "a.on_exit_a_call", "a.on_b_done", "a.on_enter_a_after"),
        ],
    ),
    (
        "help",
        "help me",
        "help/helping",
        ["user_input"],
        "Help: how can I help? [nest_root>a>help]",
        ["help.on_enter_helping"],
    ),
    ("user_input", "ok", "a/a_after", ["user_input", "help"], "Help: glad to help.\n\nA: after (b2)", HELP_HOOKS),
    (
        "user_input",
        "a2",
        "r_after",
        ["user_input", "help"],
        "A: end\n\nR: after (b2)",
        [
            *("a.c_a", "a.on_exit_a_after", "a.on_user_input", "a.on_enter_a_end"),
            *("root.c_root", "root.on_exit_r_call", "root.on_a_done", "root.on_enter_r_after"),
        ],
    ),
    (
        "help",
        "help me",
        "help/helping",
        ["user_input"],
        "Help: how can I help? [nest_root>help]",
        ["help.on_enter_helping"],
    ),
    ("user_input", "ok", "r_after", ["user_input", "help"], "Help: glad to help.\n\nR: after (b2)", HELP_HOOKS),
    (
        "user_input",
        "r2",
        "r_end",
        [],
        "R: end",
        ["root.c_root", "root.on_exit_r_after", "root.on_user_input", "root.on_enter_r_end"],
    ),
]
NEST_FRAMES = {  # node -> the flows on the stack, outermost first
    "r_ask": [],
    "a/a_ask": ["a"],
    "b/b_one": ["a", "b"],
    "b/b_two": ["a", "b"],
    "a/a_after": ["a"],
    "r_after": [],
    "r_end": [],
}


def test_three_levels_run_each_hook_once_and_resume_in_place(genie: GenieFlow) -> None:
    chat = Chat(genie, "nest", F.NestRootModel)
    assert chat.start.response == "R: ask"
    assert chat.start.next_actions == ["user_input", "help"]
    assert chat.state == "r_ask"
    assert Counter(F.CALLS) == Counter(["root.on_enter_r_ask"])

    expected_dialogue = [("assistant", "R: ask")]
    for event, text, node, actions, response, hooks in NEST_STEPS:
        before = Counter(F.CALLS)
        answer = chat.ok(text, event)
        step = f"{event} {text!r}"
        assert Counter(F.CALLS) - before == Counter(hooks), step
        assert sum(F.CALLS.values()) - sum(before.values()) == len(hooks), step  # nothing ran twice
        assert answer.response == response, step
        assert answer.next_actions == actions, step
        assert chat.state == node, step
        model = chat.model
        if node in NEST_FRAMES:
            assert [frame.flow for frame in model.flows.frames] == NEST_FRAMES[node], step
        expected_dialogue += [("user", text)] + [("assistant", said) for said in response.split("\n\n")]
        assert chat.dialogue() == expected_dialogue, step
        if node == "b/b_two":
            assert model.flows.frames[-1].model["b_result"] == ""  # the resume value was not reused

    model = chat.model
    assert (model.r_text, model.r_result) == ("r1", "b2")
    assert model.flows.frames == []
    refusal = _refusal(chat.say("more"))
    assert "waits for no event" in refusal["reason"]


def test_three_levels_through_plain_langgraph(root: Path) -> None:
    """The same conversation on the bare graph: each interrupt names its node, and waits anew."""
    graph = build_graph(F.NestRootModel, root, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "nest-plain"}}
    graph.invoke({}, config)
    [waiting] = graph.get_state(config).interrupts
    assert (waiting.value["state"], waiting.value["response"]) == ("r_ask", "R: ask")

    for event, text, node, actions, response, hooks in NEST_STEPS:
        before = Counter(F.CALLS)
        graph.invoke(Command(resume={"event": event, "event_input": text}), config)
        step = f"{event} {text!r}"
        assert Counter(F.CALLS) - before == Counter(hooks), step
        assert sum(F.CALLS.values()) - sum(before.values()) == len(hooks), step
        snapshot = graph.get_state(config)
        if node == "r_end":
            assert snapshot.interrupts == () and snapshot.next == ()
            assert snapshot.values["dialogue"][-1]["actor_text"] == response
            continue
        [waiting] = snapshot.interrupts
        assert waiting.value["state"] == node, step
        assert waiting.value["response"] == response, step
        assert waiting.value["next_actions"] == actions, step
        assert waiting.value["error"] is None, step


# =============================================================================================
# 4. interruptions: event and condition triggers, resume, abort cascades
# =============================================================================================

INT_ACTIONS = ["user_input", "help", "quiet", "note"]


def test_event_interruption_suspends_and_resumes_where_it_was(genie: GenieFlow) -> None:
    chat = Chat(genie, "int", F.IntRootModel)
    assert chat.start.next_actions == INT_ACTIONS
    assert chat.ok("tea").response == "Main: items=tea"

    answer = chat.ok("please", "help")
    assert answer.response == "Help: how can I help? [int_root>help]"
    assert answer.interrupted_by == "help"
    assert answer.active_flows == ["int_root", "help"]
    assert answer.next_actions == ["user_input", "quiet", "note"]  # the session's other interruptions may fire
    assert chat.state == "help/helping"
    model = chat.model
    assert model.flows.status is FlowStatus.INTERRUPTED
    [frame] = model.flows.frames
    assert (frame.flow, frame.kind, frame.caller, frame.declared_by) == ("help", "interruption", "main", -1)
    assert frame.model["actor_input"] == "please"  # the user's text is the interrupting flow's input
    assert model.items == ["tea"]

    answer = chat.ok("thanks")
    assert answer.response == "Help: glad to help.\n\nMain: items=tea"  # final text, then the question again
    assert (answer.resumed, answer.interrupted_by, answer.active_flows) == ("int_root", None, None)
    assert answer.next_actions == INT_ACTIONS
    assert chat.state == "main"
    model = chat.model
    assert (model.flows.status, model.flows.frames, model.items) == (FlowStatus.ACTIVE, [], ["tea"])
    assert chat.dialogue() == [
        ("assistant", "Main: items=-"),
        ("user", "tea"),
        ("assistant", "Main: items=tea"),
        ("user", "please"),
        ("assistant", "Help: how can I help? [int_root>help]"),
        ("user", "thanks"),
        ("assistant", "Help: glad to help."),
        ("assistant", "Main: items=tea"),
    ]

    answer = chat.ok("coffee")  # the session goes on as before
    assert (answer.response, answer.resumed) == ("Main: items=tea,coffee", None)


def test_condition_interruptions_sync_with_model_and_async(genie: GenieFlow) -> None:
    chat = Chat(genie, "int", F.IntRootModel)
    chat.ok("tea")

    # when(text): an interruption whose first state is an invoker state completes within the event
    answer = chat.ok("what did I order so far?")
    assert answer.response == "Sum: Echo: what did I order so far? -> tea\n\nMain: items=tea"
    assert (answer.interrupted_by, answer.resumed) == ("sum", "int_root")
    assert chat.state == "main"
    assert chat.model.items == ["tea"]

    # when(text, model) sees the declaring flow's model: one item is not enough
    answer = chat.ok("total")
    assert (answer.response, answer.interrupted_by) == ("Main: items=tea,total", None)
    answer = chat.ok("total")
    assert (answer.response, answer.interrupted_by) == ("Ack total: say anything", "total")
    assert chat.state == "total/acking"
    assert chat.model.flows.frames[-1].model["items"] == ["tea", "total"]
    assert chat.ok("fine").response == "Ack total done.\n\nMain: items=tea,total"

    # an async condition
    answer = chat.ok("async please")
    assert (answer.response, answer.interrupted_by) == ("Ack async_ack: say anything", "async_ack")
    assert chat.ok("fine").response == "Ack async_ack done.\n\nMain: items=tea,total"

    # an interrupting flow whose final state renders nothing: the resumed question stands alone
    assert chat.ok("", "quiet").response == "Quiet: say anything"
    answer = chat.ok("whatever")
    assert (answer.response, answer.resumed) == ("Main: items=tea,total", "int_root")
    assert chat.model.items == ["tea", "total"]


def test_resume_reoffers_the_same_response_as_before(genie: GenieFlow) -> None:
    """A state showing ``actor_input`` (as Genie Flow templates do) offers its response unchanged."""
    chat = Chat(genie, "echo", F.EchoRootModel)
    assert chat.ok("hi").response == "You said: hi"
    chat.ok("", "help")
    answer = chat.ok("ok")
    assert answer.response == "Help: glad to help.\n\nYou said: hi"


def test_abort_cascades_to_a_subflow_with_on_abort(genie: GenieFlow) -> None:
    chat = Chat(genie, "abort", F.AbortRootModel)
    assert chat.start.next_actions == ["user_input", "cancel", "soft"]
    assert chat.ok("go").response == "M: start"
    assert chat.ok("go").response == "L: ask"
    assert chat.state == "leaf/l_ask"
    assert chat.model.flows.frames[-1].caller == "mid/m_call"

    answer = chat.ok("", "cancel")  # declared by the session's flow, fires two flows down
    assert (answer.response, answer.interrupted_by) == ("Cancel? (yes/no)", "cancel")
    assert answer.next_actions == ["user_input"]  # the cancel flow may not be interrupted
    assert answer.active_flows == ["abort_root", "mid", "leaf", "cancel"]
    assert chat.state == "cancel/c_ask"
    assert [frame.status for frame in chat.model.flows.frames] == [
        FlowStatus.ACTIVE,  # mid waits for leaf, its sub-flow
        FlowStatus.INTERRUPTED,
        FlowStatus.ACTIVE,
    ]

    answer = chat.ok("yes")  # cancel aborts -> leaf aborts -> mid (no on_abort) aborts -> on_abort of r_call
    assert answer.response == "Cancelled.\n\nR: mid aborted"
    assert answer.aborted == ["cancel", "leaf", "mid"]
    assert answer.active_flows is None
    assert answer.next_actions == ["user_input", "cancel", "soft"]
    assert chat.state == "r_aborted"
    assert (chat.model.flows.frames, chat.model.flows.status) == ([], FlowStatus.ACTIVE)

    assert chat.ok("again").response == "R: start"  # the session goes on


def test_abort_cascades_up_to_the_session(genie: GenieFlow) -> None:
    chat = Chat(genie, "strict", F.AbortStrictModel)
    chat.ok("go")
    chat.ok("go")
    chat.ok("", "cancel")
    answer = chat.ok("yes")
    assert answer.response == "Cancelled."
    assert answer.aborted == ["cancel", "leaf", "mid", "abort_strict"]
    assert answer.next_actions == []
    model = chat.model
    assert (model.flows.status, model.flows.frames) == (FlowStatus.ABORTED, [])
    assert chat.state == "s_call"
    dialogue = chat.dialogue()

    for event, text in (("user_input", "hello?"), ("cancel", ""), ("mid_done", "")):
        answer = chat.say(text, event)
        assert answer.error is not None and "aborted" in answer.error, answer
        assert answer.next_actions == []
    assert genie.get_task_state("strict", chat.sid).next_actions == []
    assert chat.dialogue() == dialogue


def test_subflow_reaching_an_abort_state_sends_on_abort(genie: GenieFlow) -> None:
    chat = Chat(genie, "abort", F.AbortRootModel)
    chat.ok("go")
    answer = chat.ok("quit")  # mid's m_quit is one of its abort_states
    assert answer.response == "M: quitting\n\nR: mid aborted"
    assert answer.aborted == ["mid"]
    assert chat.state == "r_aborted"

    # an interruption of the sub-flow itself: cancel aborts mid, whose caller goes on with on_abort
    chat.ok("again")
    chat.ok("go")
    chat.ok("", "cancel")
    answer = chat.ok("yes")
    assert (answer.response, answer.aborted) == ("Cancelled.\n\nR: mid aborted", ["cancel", "mid"])
    assert chat.state == "r_aborted"


def test_interruption_with_on_abort_resume(genie: GenieFlow) -> None:
    chat = Chat(genie, "abort", F.AbortRootModel)
    chat.ok("go")
    chat.ok("go")
    assert chat.ok("", "soft").response == "Cancel? (yes/no)"
    assert chat.state == "soft_cancel/c_ask"
    answer = chat.ok("yes")  # aborted, but declared on_abort="resume": the leaf goes on
    assert answer.response == "Cancelled.\n\nL: ask"
    assert (answer.aborted, answer.resumed) == (["soft_cancel"], "leaf")
    assert answer.active_flows == ["abort_root", "mid", "leaf"]
    assert chat.state == "leaf/l_ask"
    assert chat.model.r_flag == "unset"  # no outputs from an aborted flow

    chat.ok("", "soft")
    answer = chat.ok("no")  # completed: its outputs go back to the declaring flow (the session's)
    assert (answer.response, answer.aborted, answer.resumed) == ("Kept.\n\nL: ask", None, "leaf")
    assert chat.model.r_flag == "no"

    answer = chat.ok("fine")  # leaf completes, then mid, then the session's flow goes on
    assert answer.response == "L: end\n\nM: end\n\nR: mid completed"
    assert chat.state == "r_ok"


def test_the_same_flow_declared_twice_keeps_the_options_of_the_trigger_that_fired(genie: GenieFlow) -> None:
    chat = Chat(genie, "twin", F.TwinRootModel)
    assert chat.ok("", "soft").interrupted_by == "cancel"
    answer = chat.ok("yes")  # fired by "soft": on_abort="resume"
    assert (answer.response, answer.aborted, answer.resumed) == ("Cancelled.\n\nMain: items=-", ["cancel"], "twin_root")
    assert (answer.next_actions, chat.state) == (["user_input", "cancel", "soft"], "main")

    chat.ok("", "soft")
    answer = chat.ok("no")  # completed: the outputs of the "soft" declaration are copied
    assert (answer.response, chat.model.flag) == ("Kept.\n\nMain: items=-", "no")

    chat.ok("", "cancel")
    answer = chat.ok("yes")  # fired by "cancel": the session's flow aborts with it
    assert (answer.aborted, answer.next_actions) == (["cancel", "twin_root"], [])


def test_a_failing_condition_trigger_leaves_the_session_unchanged(genie: GenieFlow) -> None:
    chat = Chat(genie, "boom", F.BoomRootModel)
    chat.ok("tea")
    before = chat.model
    answer = chat.say("boom")
    assert answer.error is not None and "condition exploded" in answer.error
    assert answer.next_actions == ["user_input"]
    after = chat.model
    assert (after.items, len(after.dialogue), len(after.history), after.flows) == (
        ["tea"],
        len(before.dialogue),
        len(before.history),
        before.flows,
    )
    assert chat.ok("cake").response == "Main: items=tea,cake"


def test_streamed_events_report_the_nodes_of_subflows(genie: GenieFlow) -> None:
    chat = Chat(genie, "nest", F.NestRootModel)
    chat.ok("r1")
    chat.ok("a1")

    def follow(event: str, text: str) -> list[dict[str, Any]]:
        async def items() -> list[dict[str, Any]]:
            return [item async for item in genie.astream_event("nest", _event(chat.sid, event, text))]

        return asyncio.run(items())

    items = follow("user_input", "b1")  # into an invoker state of the innermost flow
    states = [item["data"]["state"] for item in items if item["event"] == "state"]
    assert states[:2] == ["b/b_think", "b/b_two"], items
    assert {"state": "b/b_think", "name": "B think", "kind": "invoker"} in [
        item["data"] for item in items if item["event"] == "state"
    ]
    response = items[-1]
    assert (response["event"], response["state"]) == ("response", "b/b_two")
    assert response["data"]["response"] == "B: two (Echo: b1)"
    assert response["data"]["active_flows"] == ["nest_root", "a", "b"]

    [response] = follow("help", "")
    assert (response["event"], response["state"], response["data"]["interrupted_by"]) == (
        "response",
        "help/helping",
        "help",
    )
    [response] = follow("user_input", "thanks")
    assert (response["state"], response["data"]["resumed"]) == ("b/b_two", "b")


# =============================================================================================
# 5. priorities, outer flows' interruptions, interruptions of interruptions
# =============================================================================================


def test_priority_decides_then_declaration_order(genie: GenieFlow) -> None:
    chat = Chat(genie, "prio", F.PrioRootModel)
    assert chat.start.next_actions == ["user_input", "ping", "help"]
    cases = [
        ("user_input", "x", "beta"),  # alpha (1) and beta (2) fire: beta
        ("user_input", "y", "gamma"),  # gamma and delta tie: the first declared
        ("ping", "z", "zeta"),  # the event ping (0) and the condition on z (3): zeta
        ("ping", "", "epsilon"),
        ("user_input", "x y", "beta"),
    ]
    for event, text, winner in cases:
        answer = chat.ok(text, event)
        assert (answer.interrupted_by, chat.state) == (winner, f"{winner}/acking"), (event, text)
        assert answer.response == f"Ack {winner}: say anything"
        assert len(chat.model.flows.frames) == 1
        answer = chat.ok("done")
        assert answer.response == f"Ack {winner} done.\n\nPrio: main"
        assert chat.state == "main"
    assert [e.actor_text for e in chat.model.dialogue[-2:]] == ["Ack beta done.", "Prio: main"]


def test_interruptions_of_outer_and_inner_flows_while_a_subflow_runs(genie: GenieFlow) -> None:
    chat = Chat(genie, "prio", F.PrioRootModel)
    answer = chat.ok("inner")
    assert (answer.response, chat.state) == ("Inner: ask", "inner/i_ask")
    assert answer.next_actions == ["user_input", "ping", "help"]

    answer = chat.ok("x")  # inner's theta (5) beats the session's alpha (1) and beta (2)
    assert (answer.interrupted_by, chat.state) == ("theta", "theta/acking")
    assert chat.model.flows.frames[-1].declared_by == 0
    answer = chat.ok("done")
    assert (answer.response, answer.resumed, chat.state) == ("Ack theta done.\n\nInner: ask", "inner", "inner/i_ask")

    answer = chat.ok("y")  # the session's gamma ties with inner's eta: the session's flow's come first
    assert (answer.interrupted_by, chat.state) == ("gamma", "gamma/acking")
    assert chat.model.flows.frames[-1].declared_by == -1
    assert answer.active_flows == ["prio_root", "inner", "gamma"]
    chat.ok("done")

    answer = chat.ok("", "help")  # an outer event trigger while the sub-flow runs
    assert (answer.interrupted_by, chat.state) == ("help", "help/helping")
    assert chat.ok("thanks").response == "Help: glad to help.\n\nInner: ask"

    answer = chat.ok("leave")
    assert (answer.response, chat.state) == ("Inner: done\n\nPrio: main", "main")


def test_nested_interruptions_resume_in_order_and_a_flow_does_not_interrupt_itself(genie: GenieFlow) -> None:
    chat = Chat(genie, "prio", F.PrioRootModel)
    chat.ok("x")  # beta interrupts the session's flow
    answer = chat.ok("y")  # gamma interrupts beta
    assert (answer.response, answer.interrupted_by) == ("Ack gamma: say anything", "gamma")
    assert answer.active_flows == ["prio_root", "beta", "gamma"]
    model = chat.model
    assert model.flows.status is FlowStatus.INTERRUPTED
    assert [(f.flow, f.status, f.caller) for f in model.flows.frames] == [
        ("beta", FlowStatus.INTERRUPTED, "main"),
        ("gamma", FlowStatus.ACTIVE, "beta/acking"),
    ]

    answer = chat.ok("done")  # gamma completes: beta resumes, not the session's flow
    assert (answer.response, answer.resumed) == ("Ack gamma done.\n\nAck beta: say anything", "beta")
    assert (answer.active_flows, chat.state) == (["prio_root", "beta"], "beta/acking")
    assert chat.model.flows.status is FlowStatus.INTERRUPTED

    answer = chat.ok("x")  # beta does not interrupt itself: alpha, the other one taking "x", does
    assert (answer.interrupted_by, answer.active_flows) == ("alpha", ["prio_root", "beta", "alpha"])
    assert chat.ok("done").response == "Ack alpha done.\n\nAck beta: say anything"

    answer = chat.ok("done")
    assert (answer.response, answer.resumed, chat.state) == ("Ack beta done.\n\nPrio: main", "prio_root", "main")
    assert (chat.model.flows.status, chat.model.flows.frames) == (FlowStatus.ACTIVE, [])

    answer = chat.ok("", "help")
    assert answer.next_actions == ["user_input", "ping"]  # no "help" while the help flow runs
    length = len(chat.model.dialogue)
    refused = chat.say("", "help")
    assert refused.error is not None and refused.next_actions == ["user_input", "ping"]
    assert (chat.state, len(chat.model.dialogue), len(chat.model.flows.frames)) == ("help/helping", length, 1)


# =============================================================================================
# 6. where interruptions may not fire
# =============================================================================================


def test_interruptible_states_only(genie: GenieFlow) -> None:
    chat = Chat(genie, "guard", F.GuardRootModel)
    assert chat.start.next_actions == ["user_input", "help"]
    answer = chat.ok("close")
    assert (answer.response, answer.next_actions, chat.state) == ("Guard: closed", ["user_input"], "closed")

    before = chat.model
    answer = chat.say("", "help")
    refusal = _refusal(answer)
    assert answer.next_actions == ["user_input"]
    assert "'closed'" in refusal["reason"] and "interrupted" in refusal["reason"]
    assert refusal["current_state"]["id"] == "closed"
    after = chat.model
    assert (after.state, len(after.dialogue), len(after.history)) == (
        before.state,
        len(before.dialogue),
        len(before.history),
    )
    assert (chat.state, after.flows.frames) == ("closed", [])

    answer = chat.ok("x")  # a condition trigger does not fire either: the state takes the text itself
    assert (answer.response, answer.interrupted_by, chat.state) == ("Guard: closed", None, "closed")

    chat.ok("open")
    answer = chat.ok("x")
    assert (answer.interrupted_by, chat.state) == ("alpha", "alpha/acking")


def test_a_flow_that_may_not_be_interrupted(genie: GenieFlow) -> None:
    chat = Chat(genie, "guard", F.GuardRootModel)
    answer = chat.ok("lock")
    assert (answer.response, answer.next_actions, chat.state) == ("Locked: asking", ["user_input"], "locked/asking")

    length = len(chat.model.dialogue)
    answer = chat.say("", "help")
    refusal = _refusal(answer)
    assert "'asking'" in refusal["reason"] and "'locked'" in refusal["reason"] and "interrupted" in refusal["reason"]
    assert refusal["current_state"]["id"] == "locked/asking"
    assert answer.next_actions == ["user_input"]
    assert (chat.state, len(chat.model.dialogue)) == ("locked/asking", length)

    answer = chat.say("x")  # no interruption fires, and the flow's own condition refuses the text
    refusal = _refusal(answer)
    assert refusal["current_state"]["id"] == "locked/asking"
    assert "conditions" in refusal["reason"]
    assert (chat.state, len(chat.model.dialogue), len(chat.model.flows.frames)) == ("locked/asking", length, 1)

    answer = chat.ok("release")
    assert (answer.response, answer.interrupted_by, chat.state) == ("Released.\n\nGuard: open", None, "opened")


# =============================================================================================
# 7. an interruption's inputs and outputs: the flow that declared it
# =============================================================================================


def test_interruption_outputs_go_back_to_the_declaring_flow_below(genie: GenieFlow) -> None:
    chat = Chat(genie, "decl", F.DeclRootModel)
    assert chat.start.next_actions == ["user_input"]
    assert chat.ok("go").next_actions == ["user_input", "note"]
    answer = chat.ok("go")
    assert (answer.response, chat.state, answer.next_actions) == ("B ask", "decl_b/db_ask", ["user_input", "note"])

    answer = chat.ok("", "note")  # declared by decl_a (frame 0), interrupting decl_b (frame 1)
    assert answer.response == "Note about shipping:"  # decl_a's a_topic, not decl_b's field of that name
    frames = chat.model.flows.frames
    assert [(f.flow, f.status) for f in frames] == [
        ("decl_a", FlowStatus.ACTIVE),
        ("decl_b", FlowStatus.INTERRUPTED),
        ("note", FlowStatus.ACTIVE),
    ]
    assert (frames[-1].declared_by, frames[-1].model["topic"]) == (0, "shipping")

    answer = chat.ok("fragile")
    assert (answer.response, answer.resumed, chat.state) == ("Noted.\n\nB ask", "decl_b", "decl_b/db_ask")
    model = chat.model
    assert model.flows.frames[0].model["a_note"] == "fragile"  # decl_a declared it: its field is set
    assert model.flows.frames[1].model["a_note"] == "untouched"  # decl_b was interrupted, not written
    assert model.a_note == "root's own"

    answer = chat.ok("fine")
    assert (answer.response, chat.state) == ("B: end\n\nA after: note=fragile", "decl_a/da_after")

    chat.ok("", "note")  # now declared by the flow it interrupts
    assert chat.model.flows.frames[-1].declared_by == 0
    assert chat.ok("second").response == "Noted.\n\nA after: note=second"
    assert chat.model.flows.frames[0].model["a_note"] == "second"


def test_interruption_outputs_to_the_sessions_own_flow(genie: GenieFlow) -> None:
    chat = Chat(genie, "int", F.IntRootModel)
    assert chat.ok("", "note").response == "Note about general:"
    assert chat.ok("remember milk").response == "Noted.\n\nMain: items=-"
    assert (chat.model.note, chat.model.items) == ("remember milk", [])


def test_an_interrupting_flow_with_a_subflow_of_its_own(genie: GenieFlow) -> None:
    chat = Chat(genie, "detour", F.DetourRootModel)
    chat.ok("tea")
    answer = chat.ok("", "detour")
    assert (answer.response, answer.active_flows) == ("Detour: ask", ["detour_root", "detour"])
    answer = chat.ok("cake")
    assert (answer.response, answer.active_flows) == ("L: ask", ["detour_root", "detour", "leaf"])
    assert chat.state == "leaf/l_ask"
    answer = chat.ok("fine")  # leaf returns to detour, which completes: the session's flow resumes
    assert answer.response == "L: end\n\nDetour: end\n\nMain: items=tea,cake"
    assert (answer.resumed, chat.state, chat.model.items) == ("detour_root", "main", ["tea", "cake"])
    assert chat.model.flows.frames == []


@pytest.fixture(params=["sqlite", "redis"])
def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that outlives its GenieFlow (a memory store does not)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


def test_a_session_inside_subflows_survives_a_restart(root: Path, durable_store_url: str) -> None:
    """One checkpoint holds the whole stack: another GenieFlow on the same store goes on where it was."""
    store_url = durable_store_url
    with GenieFlow(template_root=root, store=store_url) as first:
        chat = Chat(first, "nest", F.NestRootModel)
        for text in ("r1", "a1", "b1"):
            chat.ok(text)
        chat.ok("help me", "help")
        sid = chat.sid
    calls = Counter(F.CALLS)
    with GenieFlow(template_root=root, store=store_url) as second:
        second.register_model("nest", F.NestRootModel)
        assert second.flow_of("nest").node_of(second.get_model("nest", sid)) == "help/helping"
        answer = send(second, "nest", sid, "user_input", "thanks")
        assert (answer.response, answer.resumed) == ("Help: glad to help.\n\nB: two (Echo: b1)", "b")
        answer = send(second, "nest", sid, "user_input", "b2")
        assert answer.response == "B: end\n\nA: after (b2)"
        assert second.flow_of("nest").node_of(second.get_model("nest", sid)) == "a/a_after"
    hooks = HELP_HOOKS + [
        *("b.c_b", "b.on_exit_b_two", "b.on_user_input", "b.on_enter_b_end"),
        *("a.c_a", "a.on_exit_a_call", "a.on_b_done", "a.on_enter_a_after"),
    ]
    assert Counter(F.CALLS) - calls == Counter(hooks)


# =============================================================================================
# 8. the history
# =============================================================================================


def test_history_of_a_call_and_a_return(genie: GenieFlow) -> None:
    chat = Chat(genie, "map", F.MapParentModel)
    assert chat.history() == [("state_entered", None, "start", None, None)]
    chat.ok("Ada")
    assert chat.history(1) == [
        ("event", None, "start", "user_input", "calling"),
        ("flow_started", "child", "calling", None, None),
        ("state_entered", "child", "asking", None, None),
    ]
    assert chat.model.history[2].detail == {"kind": "subflow"}
    chat.ok("yes")
    assert chat.history(4) == [
        ("event", "child", "asking", "user_input", "done"),
        ("flow_completed", "child", "done", None, None),
        ("event", None, "calling", "child_returned", "accepted"),
    ]


def test_history_of_an_interruption_a_resume_and_an_abort(genie: GenieFlow) -> None:
    chat = Chat(genie, "abort", F.AbortRootModel)
    chat.ok("go")
    chat.ok("go")
    start = len(chat.model.history)
    chat.ok("", "soft")
    chat.ok("no")
    history = chat.model.history[start:]
    assert chat.history(start) == [
        ("event", "leaf", "l_ask", "soft", "soft_cancel/c_ask"),
        ("flow_interrupted", "leaf", "l_ask", None, None),
        ("flow_started", "soft_cancel", "l_ask", None, None),
        ("state_entered", "soft_cancel", "c_ask", None, None),
        ("event", "soft_cancel", "c_ask", "user_input", "c_no"),
        ("flow_completed", "soft_cancel", "c_no", None, None),
        ("flow_resumed", "leaf", "l_ask", None, None),
    ]
    assert history[1].detail == {"by": "soft_cancel", "trigger": "event 'soft'"}
    assert history[2].detail == {"kind": "interruption", "trigger": "event 'soft'"}
    assert history[6].detail == {"after": "soft_cancel"}

    start = len(chat.model.history)
    chat.ok("", "cancel")
    chat.ok("yes")
    assert chat.history(start) == [
        ("event", "leaf", "l_ask", "cancel", "cancel/c_ask"),
        ("flow_interrupted", "leaf", "l_ask", None, None),
        ("flow_started", "cancel", "l_ask", None, None),
        ("state_entered", "cancel", "c_ask", None, None),
        ("event", "cancel", "c_ask", "user_input", "c_yes"),
        ("flow_aborted", "cancel", "c_yes", None, None),
        ("flow_aborted", "leaf", "l_ask", None, None),
        ("flow_aborted", "mid", "m_call", None, None),
        ("event", None, "r_call", "mid_aborted", "r_aborted"),
    ]


def test_history_of_the_sessions_own_flow_interrupted_and_aborted(genie: GenieFlow) -> None:
    chat = Chat(genie, "int", F.IntRootModel)
    chat.ok("", "help")
    chat.ok("thanks")
    assert chat.history(1) == [
        ("event", None, "main", "help", "help/helping"),
        ("flow_interrupted", None, "main", None, None),
        ("flow_started", "help", "main", None, None),
        ("state_entered", "help", "helping", None, None),
        ("event", "help", "helping", "user_input", "helped"),
        ("flow_completed", "help", "helped", None, None),
        ("flow_resumed", None, "main", None, None),
    ]

    strict = Chat(genie, "strict", F.AbortStrictModel)
    strict.ok("go")
    strict.ok("go")
    strict.ok("", "cancel")
    start = len(strict.model.history)
    strict.ok("yes")
    assert [entry[:3] for entry in strict.history(start)] == [
        ("event", "cancel", "c_ask"),
        ("flow_aborted", "cancel", "c_yes"),
        ("flow_aborted", "leaf", "l_ask"),
        ("flow_aborted", "mid", "m_call"),
        ("flow_aborted", None, "s_call"),
    ]


def test_history_stays_bounded_with_subflows(genie: GenieFlow) -> None:
    chat = Chat(genie, "bounded", F.BoundedLoopRootModel)
    assert F.BoundedLoopRootModel.history_limit == 10
    chat.ok("go")
    assert chat.state == "loop_child/looping"
    for round_ in range(1, 16):
        answer = chat.ok(f"round {round_}")
        assert answer.response == f"Loop {round_}"
        assert len(chat.model.history) <= 10, (round_, chat.history())
    chat.ok("", "help")
    assert len(chat.model.history) <= 10
    chat.ok("thanks")
    assert len(chat.model.history) <= 10
    assert chat.model.history[-1].kind is HistoryKind.FLOW_RESUMED
    answer = chat.ok("stop")
    assert (answer.response, chat.state) == ("Stopped.\n\nLoop root.", "start")
    history = chat.model.history
    assert len(history) == 10
    assert [entry.kind for entry in history[-3:]] == [
        HistoryKind.EVENT,
        HistoryKind.FLOW_COMPLETED,
        HistoryKind.EVENT,
    ]


def test_the_sessions_history_bound_is_the_sessions_own(genie: GenieFlow) -> None:
    """A sub-flow's model class with a smaller ``history_limit`` does not cut the session's history."""
    chat = Chat(genie, "short", F.ShortMemoryRootModel)
    chat.ok("go")
    for round_ in range(1, 5):
        chat.ok(f"round {round_}")
    history = chat.model.history
    assert [entry.kind for entry in history] == [
        HistoryKind.STATE_ENTERED,
        HistoryKind.EVENT,
        HistoryKind.FLOW_STARTED,
        HistoryKind.STATE_ENTERED,
        *[HistoryKind.EVENT] * 4,
    ]


# =============================================================================================
# 9. what responses tell
# =============================================================================================


def test_response_fields_and_their_json(genie: GenieFlow) -> None:
    chat = Chat(genie, "abort", F.AbortRootModel)
    assert set(chat.start.model_dump(mode="json")) == GENIE_FLOW_KEYS

    answer = chat.ok("go")
    assert set(answer.model_dump(mode="json")) == GENIE_FLOW_KEYS | {"active_flows"}
    assert answer.model_dump(mode="json")["active_flows"] == ["abort_root", "mid"]

    answer = chat.ok("", "cancel")
    dumped = answer.model_dump(mode="json")
    assert set(dumped) == GENIE_FLOW_KEYS | {"active_flows", "interrupted_by"}
    assert (dumped["interrupted_by"], dumped["active_flows"]) == ("cancel", ["abort_root", "mid", "cancel"])

    answer = chat.ok("no")
    dumped = answer.model_dump(mode="json")
    assert set(dumped) == GENIE_FLOW_KEYS | {"active_flows", "resumed"}
    assert dumped["resumed"] == "mid"

    answer = chat.ok("quit")
    dumped = answer.model_dump(mode="json")
    assert set(dumped) == GENIE_FLOW_KEYS | {"aborted"}
    assert dumped["aborted"] == ["mid"]

    answer = chat.ok("again")  # nothing happened to any flow: Genie Flow's response exactly
    assert set(answer.model_dump(mode="json")) == GENIE_FLOW_KEYS
    assert (answer.active_flows, answer.interrupted_by, answer.resumed, answer.aborted) == (None, None, None, None)

    # polls while an interrupting flow's invoker runs tell the same
    int_chat = Chat(genie, "int", F.IntRootModel)
    answer = int_chat.ok("so far?")
    assert set(answer.model_dump(mode="json")) == GENIE_FLOW_KEYS | {"interrupted_by", "resumed"}
    status = genie.get_task_state("int", int_chat.sid)
    assert set(status.model_dump(mode="json")) == {"session_id", "next_actions", "ready"}


# =============================================================================================
# 10. a Genie Flow flow without sub-flows behaves as before
# =============================================================================================


def test_a_genie_flow_example_is_unchanged(store_url: str) -> None:
    from graphs.q_and_a_cond import QandACondModel

    with GenieFlow(template_root=PROMPTS, store=store_url) as flow:
        flow.register_model("q", QandACondModel)
        compiled = flow.flow_of("q")
        assert compiled.children == {} and compiled.interruptions == []
        assert set(compiled.nodes) == {"intro", "user_enters_query", "ai_creates_response", "outro"}
        assert set(flow.graph("q").nodes) - {"__start__"} == set(compiled.nodes)

        start = flow.create_new_session("q")
        intro = (PROMPTS / "q_and_a_cond" / "intro.jinja2").read_text(encoding="utf-8").strip()
        answers = [start]
        assert (start.response, start.next_actions) == (intro, ["user_input"])

        sid = start.session_id
        answer = flow.process_event("q", _event(sid, "user_input", "What is a graph?"))
        assert (answer.next_actions, answer.response) == (["poll"], None)
        answers.append(answer)
        answer = send(flow, "q", sid, "poll")
        assert answer.response == (
            "You said: 'What is a graph?'. (Offline answer: configure an OpenAI-compatible endpoint for real ones.)"
        )
        assert answer.next_actions == ["user_input"]
        answers.append(answer)

        answer = send(flow, "q", sid, "user_input", "*STOP*")
        assert (answer.response, answer.next_actions) == ("Thank you for this conversation. Goodbye!", [])
        answers.append(answer)
        refused = send(flow, "q", sid, "user_input", "more?")
        assert refused.error is not None and "waits for no event" in refused.error
        answers.append(refused)

        for answer in answers:
            assert set(answer.model_dump(mode="json")) == GENIE_FLOW_KEYS
        model = flow.get_model("q", sid)
        assert model.flows == FlowStack()
        assert not {entry.kind for entry in model.history} & FLOW_KINDS
        assert all(entry.flow is None for entry in model.history)
        assert [str(e.actor) for e in model.dialogue] == ["assistant", "user", "assistant", "user", "assistant"]


def _event(session_id: str, event: str, text: str) -> Any:
    from genie_graph import EventInput

    return EventInput(session_id=session_id, event=event, event_input=text)


# =============================================================================================
# 11. the intent trigger
# =============================================================================================


def test_intent_classifier_runs_once_per_event(genie: GenieFlow) -> None:
    chat = Chat(genie, "intent", F.IntentRootModel)
    assert chat.start.next_actions == ["user_input", "urgent"]
    assert F.CLASSIFIED == []

    answer = chat.ok("I need help")  # two intent interruptions, one classification
    assert F.CLASSIFIED == ["I need help"]
    assert (answer.interrupted_by, chat.state) == ("help_intent", "help_intent/acking")
    chat.ok("fine")  # the help flow may be interrupted by the billing one: classified again, once
    assert F.CLASSIFIED == ["I need help", "fine"]
    assert chat.state == "main"

    answer = chat.ok("about my bill")  # the second intent: still one call
    assert F.CLASSIFIED[2:] == ["about my bill"]
    assert (answer.interrupted_by, chat.state) == ("billing", "billing/acking")
    chat.ok("fine")

    answer = chat.ok("nothing special")  # no intent: the state takes the text
    assert F.CLASSIFIED[4:] == ["nothing special"]
    assert (answer.response, answer.interrupted_by) == ("Intent: nothing special", None)
    assert len(F.CLASSIFIED) == 5


def test_intent_classifier_is_not_called_when_a_better_trigger_fires(genie: GenieFlow) -> None:
    chat = Chat(genie, "intent", F.IntentRootModel)
    answer = chat.ok("help", "urgent")  # the event trigger (priority 5) fires first
    assert (answer.interrupted_by, chat.state) == ("urgent", "urgent/acking")
    assert F.CLASSIFIED == []

    chat.ok("fine")
    count = len(F.CLASSIFIED)
    answer = chat.ok("x help")  # the condition (priority 5) fires first
    assert (answer.interrupted_by, chat.state) == ("alpha", "alpha/acking")
    assert len(F.CLASSIFIED) == count
