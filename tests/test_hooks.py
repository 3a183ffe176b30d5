"""Genie Flow's hook order for one transition, each hook run exactly once per transition.

Every hook appends its name to ``model.calls`` (persisted with the session) and bumps a
module-level counter (which also sees calls made on copies of the model that are thrown away,
and calls repeated when LangGraph re-executes a node resumed after ``interrupt()``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from genie_graph import POLL, EventData, EventInput, GenieFlow, GenieModel, GenieStateMachine, State, build_graph
from genie_graph._model import DialoguePersistence
from tests.helpers import ECHO_META, RENDERER_META, send, write_tree

COUNTS: Counter[str] = Counter()
"""Module-level record of every hook call, across model copies and node re-executions."""


@pytest.fixture(autouse=True)
def _reset_counts() -> Iterator[None]:
    COUNTS.clear()
    yield
    COUNTS.clear()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "r/meta.yaml": RENDERER_META,
            "r/ask.jinja2": "What do you want to know?",
            "r/reply.jinja2": "Bot says {{ actor_input }}",
            "i/meta.yaml": ECHO_META,
            "i/think.jinja2": "{{ actor_input }}",
        },
    )


# ---------------------------------------------------------------------------------------------
# the machine: ask (user, initial) -user_input-> think (invoker) -ai_extraction-> reply (user)
#              reply -user_input-> think, reply -advance-> ask (user -> user)


class HookMachine(GenieStateMachine):
    ask = State(initial=True, value=10)
    think = State(value=20)
    reply = State(value=30)

    user_input = ask.to(think, cond="c_user_input") | reply.to(think, cond="c_user_input")
    ai_extraction = think.to(reply, cond="c_ai_extraction")
    advance = reply.to(ask, cond="c_advance")

    templates = dict(ask="r/ask.jinja2", think="i/think.jinja2", reply="r/reply.jinja2")

    def _log(self, name: str) -> None:
        self.model.calls.append(name)
        COUNTS[name] += 1

    def _note(self, text: str) -> None:
        self.model.notes.append(text)

    # conditions: see the raw input; actor_input still holds the previous one
    def c_user_input(self, event_data: EventData) -> bool:
        self._log("c_user_input")
        self._note(f"c_user_input arg={event_data.args[0]!r} actor_input={self.model.actor_input!r}")
        return bool(event_data.args[0] != "refuse")

    def c_ai_extraction(self, event_data: EventData) -> bool:
        self._log("c_ai_extraction")
        self._note(f"c_ai_extraction arg={event_data.args[0]!r} actor_input={self.model.actor_input!r}")
        return True

    def c_advance(self, event_data: EventData) -> bool:
        self._log("c_advance")
        self._note(f"c_advance arg={event_data.args[0]!r} actor_input={self.model.actor_input!r}")
        return True

    # generic hooks
    def before_transition(self) -> None:
        self._log("before_transition")

    def on_exit_state(self) -> None:
        self._log("on_exit_state")

    def on_transition(self) -> None:
        self._log("on_transition")

    def on_enter_state(self) -> None:
        self._log("on_enter_state")

    def after_transition(self) -> None:
        self._log("after_transition")
        self._note(f"after_transition dialogue_len={len(self.model.dialogue)}")

    # event hooks
    def before_user_input(self) -> None:
        self._log("before_user_input")

    def before_ai_extraction(self) -> None:
        self._log("before_ai_extraction")

    def before_advance(self) -> None:
        self._log("before_advance")

    def on_user_input(self) -> None:
        self._log("on_user_input")
        self._note(f"on_user_input state={self.model.state}")

    def on_ai_extraction(self) -> None:
        self._log("on_ai_extraction")
        self._note(f"on_ai_extraction state={self.model.state}")

    def on_advance(self) -> None:
        self._log("on_advance")
        self._note(f"on_advance state={self.model.state}")

    def after_user_input(self) -> None:
        self._log("after_user_input")

    def after_ai_extraction(self) -> None:
        self._log("after_ai_extraction")

    def after_advance(self) -> None:
        self._log("after_advance")

    # state hooks
    def on_exit_ask(self) -> None:
        self._log("on_exit_ask")
        self._note(f"on_exit_ask actor_input={self.model.actor_input!r}")

    def on_exit_think(self) -> None:
        self._log("on_exit_think")
        self._note(f"on_exit_think actor_input={self.model.actor_input!r}")

    def on_exit_reply(self) -> None:
        self._log("on_exit_reply")
        self._note(f"on_exit_reply actor_input={self.model.actor_input!r}")

    def on_enter_ask(self) -> None:
        self._log("on_enter_ask")
        self._note(f"on_enter_ask state={self.model.state}")

    def on_enter_think(self) -> None:
        self._log("on_enter_think")
        self._note(f"on_enter_think state={self.model.state}")

    def on_enter_reply(self) -> None:
        self._log("on_enter_reply")
        self._note(f"on_enter_reply state={self.model.state} actor_input={self.model.actor_input!r}")


class HookModel(GenieModel):
    calls: list[str] = []
    notes: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return HookMachine


def _one(event: str, source: str, target: str) -> list[str]:
    """Genie Flow's order of calls for one transition (recording follows after_transition)."""
    return [
        f"c_{event}",
        "before_transition",
        f"before_{event}",
        "on_exit_state",
        f"on_exit_{source}",
        "on_transition",
        f"on_{event}",
        "on_enter_state",
        f"on_enter_{target}",
        f"after_{event}",
        "after_transition",
    ]


INTRO_CALLS = ["on_enter_state", "on_enter_ask"]

# (event, input, calls made by it, including the invoker's completion transition)
SCRIPT: list[tuple[str, str, list[str]]] = [
    ("user_input", "q1", _one("user_input", "ask", "think") + _one("ai_extraction", "think", "reply")),
    ("user_input", "q2", _one("user_input", "reply", "think") + _one("ai_extraction", "think", "reply")),
    ("advance", "back", _one("advance", "reply", "ask")),
    ("user_input", "q3", _one("user_input", "ask", "think") + _one("ai_extraction", "think", "reply")),
]


def _expected_totals(include_conditions: bool = True) -> Counter[str]:
    totals = Counter(INTRO_CALLS)
    for _event, _text, calls in SCRIPT:
        totals.update(calls)
    if not include_conditions:
        totals = Counter({k: v for k, v in totals.items() if not k.startswith("c_")})
    return totals


def _hook_counts(include_conditions: bool = True) -> Counter[str]:
    if include_conditions:
        return Counter(COUNTS)
    return Counter({k: v for k, v in COUNTS.items() if not k.startswith("c_")})


# ---------------------------------------------------------------------------------------------
# (a) plain LangGraph


def test_hook_order_and_counts_through_plain_langgraph(root: Path) -> None:
    graph = build_graph(HookModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "hooks-plain"}}

    result = graph.invoke({}, cfg)
    assert result["calls"] == INTRO_CALLS
    assert COUNTS == Counter(INTRO_CALLS)

    for event, text, expected in SCRIPT:
        before = len(graph.get_state(cfg).values["calls"])
        result = graph.invoke(Command(resume={"event": event, "event_input": text}), cfg)
        assert result["calls"][before:] == expected, event

    assert result["calls"] == INTRO_CALLS + [c for _e, _t, calls in SCRIPT for c in calls]
    assert _hook_counts() == _expected_totals()


def test_refused_resume_then_replayed_node_runs_hooks_once(root: Path) -> None:
    """A refused resume re-interrupts inside the node; the next resume re-executes that node."""
    graph = build_graph(HookModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "hooks-replay"}}
    graph.invoke({}, cfg)

    # 'advance' is not allowed in 'ask': the node interrupts again with an error
    graph.invoke(Command(resume={"event": "advance", "event_input": "nope"}), cfg)
    snapshot = graph.get_state(cfg)
    assert snapshot.interrupts and snapshot.interrupts[0].value["error"]
    assert snapshot.values["calls"] == INTRO_CALLS
    assert COUNTS == Counter(INTRO_CALLS)

    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "q1"}), cfg)
    expected = _one("user_input", "ask", "think") + _one("ai_extraction", "think", "reply")
    assert result["calls"] == INTRO_CALLS + expected
    assert COUNTS == Counter(INTRO_CALLS + expected)


def test_refused_by_condition_then_replayed_node_evaluates_conditions_once_per_event(root: Path) -> None:
    """A resume refused by a condition, then a good one: one evaluation per event sent.

    Genie Flow evaluates the conditions once per ``send``; LangGraph re-executing the node for
    the second resume must not evaluate the first (refused) event's conditions again.
    """
    graph = build_graph(HookModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "hooks-cond-replay"}}
    graph.invoke({}, cfg)

    graph.invoke(Command(resume={"event": "user_input", "event_input": "refuse"}), cfg)
    assert graph.get_state(cfg).interrupts[0].value["error"]
    assert graph.get_state(cfg).values["calls"] == INTRO_CALLS
    assert COUNTS["c_user_input"] == 1

    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "q1"}), cfg)
    expected = _one("user_input", "ask", "think") + _one("ai_extraction", "think", "reply")
    assert result["calls"] == INTRO_CALLS + expected
    assert _hook_counts(include_conditions=False) == Counter(
        c for c in INTRO_CALLS + expected if not c.startswith("c_")
    )
    assert COUNTS["c_user_input"] == 2  # 'refuse' once, 'q1' once


def test_observations_through_plain_langgraph(root: Path) -> None:
    graph = build_graph(HookModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "hooks-notes"}}
    graph.invoke({}, cfg)
    graph.invoke(Command(resume={"event": "user_input", "event_input": "q1"}), cfg)
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "q2"}), cfg)
    _check_observations(result["notes"], len(result["dialogue"]))


# ---------------------------------------------------------------------------------------------
# (b) GenieFlow on each store


def _drive_genie_flow(flow: GenieFlow, sid: str) -> None:
    for event, text, expected in SCRIPT:
        before = len(flow.get_model("hooks", sid).calls)  # type: ignore[attr-defined]
        answer = send(flow, "hooks", sid, event, text)
        assert answer.error is None, answer.error
        model = flow.get_model("hooks", sid)
        assert model.calls[before:] == expected, event  # type: ignore[attr-defined]


def test_hook_order_and_counts_through_genie_flow(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("hooks", HookModel)
        start = flow.create_new_session("hooks")
        assert start.error is None
        assert flow.get_model("hooks", start.session_id).calls == INTRO_CALLS  # type: ignore[attr-defined]
        assert COUNTS == Counter(INTRO_CALLS)

        _drive_genie_flow(flow, start.session_id)

        model = flow.get_model("hooks", start.session_id)
        assert model.calls == INTRO_CALLS + [c for _e, _t, calls in SCRIPT for c in calls]  # type: ignore[attr-defined]
    # every hook other than the conditions ran exactly once per transition
    assert _hook_counts(include_conditions=False) == _expected_totals(include_conditions=False)


def test_conditions_run_once_per_event_through_genie_flow(root: Path, store_url: str) -> None:
    """Genie Flow evaluates a transition's conditions once per send; so must genie-graph."""
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("hooks", HookModel)
        start = flow.create_new_session("hooks")
        _drive_genie_flow(flow, start.session_id)
    expected = _expected_totals()
    assert {k: v for k, v in COUNTS.items() if k.startswith("c_")} == {
        k: v for k, v in expected.items() if k.startswith("c_")
    }


def test_observations_through_genie_flow(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("hooks", HookModel)
        sid = flow.create_new_session("hooks").session_id
        send(flow, "hooks", sid, "user_input", "q1")
        send(flow, "hooks", sid, "user_input", "q2")
        model = flow.get_model("hooks", sid)
    _check_observations(model.notes, len(model.dialogue))  # type: ignore[attr-defined]


def _check_observations(notes: list[str], dialogue_len: int) -> None:
    assert notes == [
        "on_enter_ask state=10",  # session creation enters the initial state
        # ask -user_input-> think: conditions see the raw input, actor_input the previous one
        "c_user_input arg='q1' actor_input=None",
        "on_exit_ask actor_input='q1'",  # already the new input
        "on_user_input state=10",  # state not changed yet
        "on_enter_think state=20",  # state changed before the enter hooks
        "after_transition dialogue_len=1",  # intro only: recording comes after after_transition
        # think -ai_extraction-> reply: conditions and on_exit_think see the raw invoker output
        "c_ai_extraction arg='Echo: q1' actor_input='q1'",
        "on_exit_think actor_input='Echo: q1'",
        "on_ai_extraction state=20",
        "on_enter_reply state=30 actor_input='Echo: q1'",
        "after_transition dialogue_len=2",  # intro + user 'q1'; the reply not yet recorded
        # reply -user_input-> think: the previous actor_input is the rendered reply
        "c_user_input arg='q2' actor_input='Bot says Echo: q1'",
        "on_exit_reply actor_input='q2'",
        "on_user_input state=30",
        "on_enter_think state=20",
        "after_transition dialogue_len=3",
        "c_ai_extraction arg='Echo: q2' actor_input='q2'",
        "on_exit_think actor_input='Echo: q2'",
        "on_ai_extraction state=20",
        "on_enter_reply state=30 actor_input='Echo: q2'",
        "after_transition dialogue_len=4",
    ]
    assert dialogue_len == 5


# ---------------------------------------------------------------------------------------------
# the initial state's enter hooks


def test_initial_on_enter_runs_once_on_session_creation(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("hooks", HookModel)
        sid = flow.create_new_session("hooks").session_id
        assert COUNTS == Counter(INTRO_CALLS)
        # reading the session, or asking its task state, builds no machine that re-enters it
        flow.get_task_state("hooks", sid)
        flow.process_event("hooks", _poll(sid))
        assert flow.get_model("hooks", sid).calls == INTRO_CALLS  # type: ignore[attr-defined]
        # the first event does not re-run the initial state's enter hooks either
        send(flow, "hooks", sid, "user_input", "q1")
        assert COUNTS["on_enter_ask"] == 1
        assert flow.get_model("hooks", sid).calls.count("on_enter_ask") == 1  # type: ignore[attr-defined]


def test_initial_on_enter_runs_once_for_an_ephemeral_session(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("hooks", HookModel)
        answer = flow.start_ephemeral_session("hooks", "user_input", "q1")
        assert answer.error is None
        sid = answer.session_id
        flow.wait_until_ready(sid)
        model = flow.get_model("hooks", sid)
        expected = INTRO_CALLS + _one("user_input", "ask", "think") + _one("ai_extraction", "think", "reply")
        assert model.calls == expected  # type: ignore[attr-defined]
    assert _hook_counts(include_conditions=False) == Counter(c for c in expected if not c.startswith("c_"))


def _poll(session_id: str) -> EventInput:
    return EventInput(session_id=session_id, event=POLL, event_input="")


# ---------------------------------------------------------------------------------------------
# argument injection by name


class InjectMachine(GenieStateMachine):
    ask = State(initial=True, value="ask")
    think = State(value="think")
    reply = State(value="reply")

    user_input = ask.to(think) | reply.to(think)
    ai_extraction = think.to(reply)
    advance = reply.to(ask)

    templates = dict(ask="r/ask.jinja2", think="i/think.jinja2", reply="r/reply.jinja2")

    def _note(self, text: str) -> None:
        self.model.notes.append(text)
        COUNTS[text.split(" ", 1)[0]] += 1

    def before_user_input(self, event_data: EventData) -> None:
        self._note(
            f"before_user_input event_data: event={event_data.event} source={event_data.source.id} "
            f"target={event_data.target.id} args={list(event_data.args)} "
            f"machine_ok={event_data.machine is self} model_ok={event_data.machine.model is self.model}"
        )

    def on_exit_ask(self, event: str) -> None:
        self._note(f"on_exit_ask event={event}")

    def on_user_input(self, source: State, target: State) -> None:
        self._note(f"on_user_input source={source.id} target={target.id}")

    def on_enter_think(self, model: HookModel) -> None:
        self._note(f"on_enter_think model_ok={model is self.model} input={model.actor_input}")

    def after_user_input(self, machine: GenieStateMachine) -> None:
        self._note(f"after_user_input machine_ok={machine is self} state={machine.current_state.id}")

    def on_exit_think(self) -> None:
        self._note("on_exit_think no-args")

    def on_enter_reply(self, target: State, event: str, model: HookModel, source: State) -> None:
        self._note(f"on_enter_reply {source.id}->{target.id} on {event} input={model.actor_input}")

    def on_advance(
        self,
        event_data: EventData,
        event: str,
        source: State,
        target: State,
        model: HookModel,
        machine: GenieStateMachine,
    ) -> None:
        self._note(
            f"on_advance {event_data.event}/{event} {source.id}->{target.id} "
            f"model_ok={model is self.model} machine_ok={machine is self} arg={event_data.args[0]}"
        )


class InjectModel(GenieModel):
    notes: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return InjectMachine


EXPECTED_INJECTION = [
    "before_user_input event_data: event=user_input source=ask target=think args=['q1'] machine_ok=True model_ok=True",
    "on_exit_ask event=user_input",
    "on_user_input source=ask target=think",
    "on_enter_think model_ok=True input=q1",
    "after_user_input machine_ok=True state=think",
    "on_exit_think no-args",
    "on_enter_reply think->reply on ai_extraction input=Echo: q1",
    "on_advance advance/advance reply->ask model_ok=True machine_ok=True arg=bye",
]


def test_argument_injection_through_plain_langgraph(root: Path) -> None:
    graph = build_graph(InjectModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "inject"}}
    graph.invoke({}, cfg)
    graph.invoke(Command(resume={"event": "user_input", "event_input": "q1"}), cfg)
    result = graph.invoke(Command(resume={"event": "advance", "event_input": "bye"}), cfg)
    assert result["notes"] == EXPECTED_INJECTION
    assert sum(COUNTS.values()) == len(EXPECTED_INJECTION)


def test_argument_injection_through_genie_flow(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("inject", InjectModel)
        sid = flow.create_new_session("inject").session_id
        assert send(flow, "inject", sid, "user_input", "q1").error is None
        assert send(flow, "inject", sid, "advance", "bye").error is None
        assert flow.get_model("inject", sid).notes == EXPECTED_INJECTION  # type: ignore[attr-defined]
    assert sum(COUNTS.values()) == len(EXPECTED_INJECTION)


# ---------------------------------------------------------------------------------------------
# dialogue recording runs last: a hook's choice of persistence is what gets recorded


class SilentMachine(GenieStateMachine):
    ask = State(initial=True, value=1)
    reply = State(value=2)

    user_input = ask.to(reply) | reply.to(reply)

    templates = dict(ask="r/ask.jinja2", reply="r/reply.jinja2")

    def after_transition(self) -> None:
        # the machine's own after_transition runs before the recording
        if self.model.actor_input == "quiet":
            self.model.dialogue_persistence = DialoguePersistence.NONE


class SilentModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SilentMachine


def test_recording_runs_after_the_machines_after_transition(root: Path) -> None:
    graph = build_graph(SilentModel, root, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "silent"}}
    graph.invoke({}, cfg)
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "quiet"}), cfg)
    assert [d["actor_text"] for d in result["dialogue"]] == ["What do you want to know?"]
    result = graph.invoke(Command(resume={"event": "user_input", "event_input": "loud"}), cfg)
    assert [(d["actor"], d["actor_text"]) for d in result["dialogue"]] == [
        ("assistant", "What do you want to know?"),
        ("user", "loud"),
        ("assistant", "Bot says loud"),
    ]


# ---------------------------------------------------------------------------------------------
# Transitions with no callback run without building a machine; any callback, wherever it is
# declared, keeps them on the machine's path.


class PlainMachine(GenieStateMachine):
    ask = State(initial=True, value=10)
    think = State(value=20)
    reply = State(value=30)

    user_input = ask.to(think) | reply.to(think, cond="ready") | reply.to(ask)
    ai_extraction = think.to(reply)
    advance = reply.to(ask)

    templates = {"ask": "r/ask.jinja2", "think": "i/think.jinja2", "reply": "r/reply.jinja2"}

    def ready(self) -> bool:
        return True


class PlainModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PlainMachine


class ExitHookMachine(PlainMachine):
    def on_exit_think(self) -> None:
        COUNTS["on_exit_think"] += 1


class ExitHookModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ExitHookMachine


class ModelHookModel(GenieModel):
    """The hook is on the model, where python-statemachine also looks for callbacks."""

    def on_enter_reply(self) -> None:
        COUNTS["on_enter_reply"] += 1

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PlainMachine


class GenericHookMachine(PlainMachine):
    def on_enter_state(self) -> None:
        COUNTS["on_enter_state"] += 1


class GenericHookModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return GenericHookMachine


def test_plain_transitions_are_those_no_callback_runs_on(root: Path) -> None:
    flow = GenieFlow(template_root=root, store="memory://")
    for key, model in [("plain", PlainModel), ("exit", ExitHookModel), ("model", ModelHookModel)]:
        flow.register_model(key, model)
    flow.register_model("generic", GenericHookModel)

    def plain(key: str) -> set[tuple[str, str]]:
        return set(flow.flow_of(key).plain)

    # reply's user_input is decided by a condition first, so it is never plain
    assert plain("plain") == {("ask", "user_input"), ("think", "ai_extraction"), ("reply", "advance")}
    assert plain("exit") == {("ask", "user_input"), ("reply", "advance")}
    assert plain("model") == {("ask", "user_input"), ("reply", "advance")}
    assert plain("generic") == set()


@pytest.mark.parametrize(("key", "hook"), [("exit", "on_exit_think"), ("model", "on_enter_reply")])
def test_hooks_wherever_declared_run_once_per_transition(root: Path, key: str, hook: str) -> None:
    flow = GenieFlow(template_root=root, store="memory://")
    flow.register_model(key, ExitHookModel if key == "exit" else ModelHookModel)
    with flow:
        session = flow.create_new_session(key).session_id
        for turn in range(2):
            flow.process_event(key, EventInput(session_id=session, event="user_input", event_input=f"q{turn}"))
            flow.wait_until_ready(session)
            answer = flow.process_event(key, EventInput(session_id=session, event=POLL, event_input=""))
            assert answer.response == f"Bot says Echo: q{turn}"
    assert COUNTS[hook] == 2


def test_a_plain_transition_leaves_the_model_as_the_machine_does(root: Path) -> None:
    flow = GenieFlow(template_root=root, store="memory://")
    flow.register_model("plain", PlainModel)
    compiled = flow.flow_of("plain")

    def after(plain: bool) -> dict[str, Any]:
        model = PlainModel(session_id="s")
        asyncio.run(compiled.enter_initial_state(model))
        saved = dict(compiled.plain)
        if not plain:
            compiled.plain.clear()
        try:
            asyncio.run(compiled.send(model, "user_input", "hello"))
        finally:
            compiled.plain.update(saved)
        data = model.model_dump(exclude={"history", "dialogue"})
        return data | {
            "history": [h.kind for h in model.history],
            "dialogue": [(u.actor, u.actor_text) for u in model.dialogue],
        }

    assert after(plain=True) == after(plain=False)
