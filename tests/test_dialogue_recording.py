"""What each kind of transition records in the dialogue (Genie Flow's TransitionManager table).

| source -> target  | actor     | persistence | recorded                                   |
|-------------------|-----------|-------------|--------------------------------------------|
| user -> user      | user      | RENDERED    | raw input as user + rendered as assistant  |
|                   |           |             | (GenieCompat: only the rendered, as user)  |
| user -> invoker   | user      | RAW         | the user's raw input                       |
| invoker -> user   | assistant | RENDERED    | the rendered target; actor_input = that    |
| invoker -> invoker| assistant | NONE        | nothing; actor_input keeps the raw output  |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from genie_graph import EventData, GenieCompat, GenieFlow, GenieModel, GenieStateMachine, State, build_graph
from genie_graph._model import DialoguePersistence, StateKind
from tests.helpers import ECHO_META, RENDERER_META, send, write_tree

INTRO = "Hello! Ask me something."


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "r/meta.yaml": RENDERER_META,
            "r/ask.jinja2": INTRO,
            "r/reply.jinja2": "Bot says {{ actor_input }}",
            "r/confirm.jinja2": "Confirm {{ actor_input }}?",
            "i/meta.yaml": ECHO_META,
            "i/think.jinja2": "{{ actor_input }}",
            "i/deep1.jinja2": "{{ actor_input }}",
            "i/deep2.jinja2": "{{ actor_input }}!",
        },
    )


class RecMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    think = State(value=1)
    deep1 = State(value=2)
    deep2 = State(value=3)
    reply = State(value=4)
    confirm = State(value=5)

    user_input = ask.to(think) | reply.to(deep1, cond="is_deep") | reply.to(think) | confirm.to(ask)
    ai_extraction = think.to(reply) | deep1.to(deep2) | deep2.to(reply)
    advance = reply.to(confirm)

    templates = dict(
        ask="r/ask.jinja2",
        think="i/think.jinja2",
        deep1="i/deep1.jinja2",
        deep2="i/deep2.jinja2",
        reply="r/reply.jinja2",
        confirm="r/confirm.jinja2",
    )

    def is_deep(self, event_data: EventData) -> bool:
        return str(event_data.args[0]).startswith("deep")

    def on_enter_think(self) -> None:
        # a hook chooses, just in time, not to record this one transition
        if self.model.actor_input == "secret":
            self.model.dialogue_persistence = DialoguePersistence.NONE

    def on_enter_confirm(self) -> None:
        if self.model.actor_input == "hush":
            self.model.dialogue_persistence = DialoguePersistence.NONE


class RecModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return RecMachine


def _pairs(dialogue: list[Any]) -> list[tuple[str, str]]:
    out = []
    for element in dialogue:
        if isinstance(element, dict):
            out.append((str(element["actor"]), element["actor_text"]))
        else:
            out.append((str(element.actor), element.actor_text))
    return out


# ---------------------------------------------------------------------------------------------
# step by step, through plain LangGraph (stream_mode="values" yields the state after each node)


def _steps(graph: Any, cfg: Any, event: str, text: str) -> list[dict[str, Any]]:
    return list(graph.stream(Command(resume={"event": event, "event_input": text}), cfg, stream_mode="values"))


def _graph(root: Path, compat: GenieCompat | None = None) -> tuple[Any, Any]:
    graph = build_graph(RecModel, root, checkpointer=InMemorySaver(), compat=compat)
    cfg: Any = {"configurable": {"thread_id": "rec"}}
    first = graph.invoke({}, cfg)
    assert _pairs(first["dialogue"]) == [("assistant", INTRO)]
    return graph, cfg


def _after(steps: list[dict[str, Any]], state_value: int) -> dict[str, Any]:
    """The last state yielded while the session is in the state with ``state_value``."""
    for values in reversed(steps):
        if values.get("state") == state_value:
            return values
    raise AssertionError(f"no step reached state {state_value}: {[s.get('state') for s in steps]}")


def test_user_to_invoker_raw_then_invoker_to_user_rendered(root: Path) -> None:
    graph, cfg = _graph(root)
    steps = _steps(graph, cfg, "user_input", "q1")

    in_think = _after(steps, RecMachine.think.value)  # user -> invoker: RAW, as user
    assert _pairs(in_think["dialogue"]) == [("assistant", INTRO), ("user", "q1")]
    assert in_think["actor"] == "user"
    assert in_think["actor_input"] == "q1"
    assert in_think["dialogue_persistence"] == DialoguePersistence.RAW
    assert (in_think["source_type"], in_think["target_type"]) == (StateKind.USER, StateKind.INVOKER)

    in_reply = _after(steps, RecMachine.reply.value)  # invoker -> user: RENDERED, as assistant
    assert _pairs(in_reply["dialogue"]) == [
        ("assistant", INTRO),
        ("user", "q1"),
        ("assistant", "Bot says Echo: q1"),
    ]
    assert in_reply["actor"] == "assistant"
    assert in_reply["actor_input"] == "Bot says Echo: q1"  # overwritten with the rendered text
    assert in_reply["dialogue_persistence"] == DialoguePersistence.RENDERED
    assert (in_reply["source_type"], in_reply["target_type"]) == (StateKind.INVOKER, StateKind.USER)


def test_invoker_to_invoker_records_nothing(root: Path) -> None:
    graph, cfg = _graph(root)
    _steps(graph, cfg, "user_input", "q1")
    steps = _steps(graph, cfg, "user_input", "deep q")

    in_deep1 = _after(steps, RecMachine.deep1.value)
    assert _pairs(in_deep1["dialogue"])[-1] == ("user", "deep q")
    recorded = len(in_deep1["dialogue"])

    in_deep2 = _after(steps, RecMachine.deep2.value)  # invoker -> invoker: NONE
    assert len(in_deep2["dialogue"]) == recorded
    assert in_deep2["actor"] == "assistant"
    assert in_deep2["dialogue_persistence"] == DialoguePersistence.NONE
    assert in_deep2["actor_input"] == "Echo: deep q"  # the raw output, for the next invoker
    assert (in_deep2["source_type"], in_deep2["target_type"]) == (StateKind.INVOKER, StateKind.INVOKER)

    in_reply = _after(steps, RecMachine.reply.value)
    assert _pairs(in_reply["dialogue"])[recorded:] == [("assistant", "Bot says Echo: Echo: deep q!")]
    assert in_reply["actor_input"] == "Bot says Echo: Echo: deep q!"


def test_user_to_user_records_raw_input_then_rendered_target(root: Path) -> None:
    graph, cfg = _graph(root)
    _steps(graph, cfg, "user_input", "q1")
    before = len(graph.get_state(cfg).values["dialogue"])
    values = _steps(graph, cfg, "advance", "yes please")[-1]
    assert values["state"] == RecMachine.confirm.value
    assert _pairs(values["dialogue"])[before:] == [
        ("user", "yes please"),
        ("assistant", "Confirm yes please?"),
    ]
    assert values["actor_input"] == "Confirm yes please?"
    assert values["dialogue_persistence"] == DialoguePersistence.RENDERED
    assert (values["source_type"], values["target_type"]) == (StateKind.USER, StateKind.USER)


def test_user_to_user_compat_records_only_the_rendered_text_as_user(root: Path) -> None:
    graph, cfg = _graph(root, GenieCompat(user_to_user_rendered_as_user=True))
    _steps(graph, cfg, "user_input", "q1")
    before = len(graph.get_state(cfg).values["dialogue"])
    values = _steps(graph, cfg, "advance", "yes please")[-1]
    assert _pairs(values["dialogue"])[before:] == [("user", "Confirm yes please?")]
    assert values["actor"] == "user"
    assert values["actor_input"] == "Confirm yes please?"
    # the other kinds of transition are not affected by the flag
    values = _steps(graph, cfg, "user_input", "again")[-1]  # confirm -> ask: user -> user
    assert _pairs(values["dialogue"])[-1] == ("user", INTRO)
    values = _steps(graph, cfg, "user_input", "q2")[-1]
    assert _pairs(values["dialogue"])[-2:] == [("user", "q2"), ("assistant", "Bot says Echo: q2")]


# ---------------------------------------------------------------------------------------------
# through GenieFlow, on each store


def test_full_dialogue_through_genie_flow(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("rec", RecModel)
        start = flow.create_new_session("rec")
        sid = start.session_id
        assert start.response == INTRO
        assert _pairs(flow.get_model("rec", sid).dialogue) == [("assistant", INTRO)]

        answer = send(flow, "rec", sid, "user_input", "q1")
        assert answer.response == "Bot says Echo: q1"
        model = flow.get_model("rec", sid)
        assert model.actor_input == "Bot says Echo: q1"
        assert model.actor == "assistant"

        answer = send(flow, "rec", sid, "user_input", "deep q")
        assert answer.response == "Bot says Echo: Echo: deep q!"

        answer = send(flow, "rec", sid, "advance", "yes")
        assert answer.response == "Confirm yes?"
        assert flow.get_model("rec", sid).actor_input == "Confirm yes?"

        answer = send(flow, "rec", sid, "user_input", "restart")  # confirm -> ask: user -> user
        assert answer.response == INTRO

        assert _pairs(flow.get_model("rec", sid).dialogue) == [
            ("assistant", INTRO),
            ("user", "q1"),  # user -> invoker: RAW
            ("assistant", "Bot says Echo: q1"),  # invoker -> user: RENDERED
            ("user", "deep q"),  # user -> invoker: RAW
            # deep1 -> deep2: invoker -> invoker, NONE
            ("assistant", "Bot says Echo: Echo: deep q!"),  # invoker -> user: RENDERED
            ("user", "yes"),  # user -> user: raw input as user ...
            ("assistant", "Confirm yes?"),  # ... then the rendered target as assistant
            ("user", "restart"),
            ("assistant", INTRO),
        ]


def test_user_to_user_compat_through_genie_flow(root: Path, store_url: str) -> None:
    compat = GenieCompat(user_to_user_rendered_as_user=True)
    with GenieFlow(template_root=root, store=store_url, compat=compat) as flow:
        flow.register_model("rec", RecModel)
        sid = flow.create_new_session("rec").session_id
        send(flow, "rec", sid, "user_input", "q1")
        answer = send(flow, "rec", sid, "advance", "yes")
        assert answer.response == "Confirm yes?"
        assert _pairs(flow.get_model("rec", sid).dialogue) == [
            ("assistant", INTRO),
            ("user", "q1"),
            ("assistant", "Bot says Echo: q1"),
            ("user", "Confirm yes?"),  # Genie Flow: the rendered bot text, stored as the user's
        ]


def test_hook_setting_persistence_none_skips_one_transition_only(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("rec", RecModel)
        sid = flow.create_new_session("rec").session_id

        # user -> invoker, silenced by on_enter_think; the invoker -> user after it records again
        send(flow, "rec", sid, "user_input", "secret")
        assert _pairs(flow.get_model("rec", sid).dialogue) == [
            ("assistant", INTRO),
            ("assistant", "Bot says Echo: secret"),
        ]

        # user -> user, silenced by on_enter_confirm: nothing recorded, actor_input not rendered
        send(flow, "rec", sid, "advance", "hush")
        model = flow.get_model("rec", sid)
        assert model.state == RecMachine.confirm.value
        assert len(model.dialogue) == 2
        assert model.actor_input == "hush"

        # the next transition (confirm -> ask, user -> user) records as usual
        send(flow, "rec", sid, "user_input", "again")
        model = flow.get_model("rec", sid)
        assert _pairs(model.dialogue)[2:] == [("user", "again"), ("assistant", INTRO)]
        assert model.dialogue_persistence == DialoguePersistence.RENDERED

        # and so does a later user -> invoker -> user
        send(flow, "rec", sid, "user_input", "q2")
        assert _pairs(flow.get_model("rec", sid).dialogue)[4:] == [
            ("user", "q2"),
            ("assistant", "Bot says Echo: q2"),
        ]


def test_ephemeral_session_does_not_record_the_intro(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("rec", RecModel)
        answer = flow.start_ephemeral_session("rec", "user_input", "q1")
        assert answer.error is None
        sid = answer.session_id
        answer = send(flow, "rec", sid, "poll")
        assert answer.response == "Bot says Echo: q1"
        assert _pairs(flow.get_model("rec", sid).dialogue) == [
            ("user", "q1"),
            ("assistant", "Bot says Echo: q1"),
        ]


def test_new_session_records_the_intro_as_the_assistants_first_utterance(root: Path, store_url: str) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("rec", RecModel)
        start = flow.create_new_session("rec")
        assert start.response == INTRO
        assert start.next_actions == ["user_input"]
        model = flow.get_model("rec", start.session_id)
        assert _pairs(model.dialogue) == [("assistant", INTRO)]
        assert model.state == RecMachine.ask.value
