"""Failures after an invoker state, and failed events: the session always stays answerable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from genie_graph import POLL, EventData, EventInput, GenieFlow, GenieModel, GenieStateMachine, State

from .helpers import RENDERER_META, send, write_tree

CALLS: Counter[str] = Counter()


def llm(prompt: str) -> str:
    """A deterministic 'LLM' that counts its calls and fails on request."""
    CALLS[prompt] += 1
    if "explode" in prompt:
        raise RuntimeError("the model exploded")
    return "ANSWER " + prompt


class FailMachine(GenieStateMachine):
    ask = State(initial=True, value="ask")
    think = State(value="think")
    reply = State(value="reply")

    user_input = ask.to(think) | reply.to(think)
    ai_extraction = think.to(reply, cond="accepts")

    templates = dict(ask="f/ask.jinja2", think="f/llm/think.jinja2", reply="f/reply.jinja2")

    def accepts(self, event_data: EventData) -> bool:
        return "refuse" not in event_data.args[0]

    def on_exit_think(self) -> None:
        if "hook" in (self.model.actor_input or ""):
            raise ValueError("hook exploded")
        if self.model.actor_input == "":
            json.loads(self.model.actor_input)  # a hook that cannot take the "" sent after a failure


class FailModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return FailMachine


@pytest.fixture
def flow(tmp_path: Path, store_url: str) -> GenieFlow:
    root = write_tree(
        tmp_path / "prompts",
        {
            "f/meta.yaml": RENDERER_META,
            "f/ask.jinja2": "Ask me.",
            "f/reply.jinja2": "{{ actor_input }}",
            "f/llm/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.test_failures:llm"\n',
            "f/llm/think.jinja2": "{{ actor_input }}",
        },
    )
    flow = GenieFlow(root, store=store_url)
    flow.register_model("f", FailModel)
    yield flow
    flow.close()


@pytest.mark.parametrize(
    ("text", "cause"),
    [("hook", "hook exploded"), ("refuse", "conditions of all its transitions failed")],
    ids=["hook_raises", "no_condition_passes"],
)
def test_a_failed_completion_waits_for_an_event_by_hand(flow: GenieFlow, text: str, cause: str) -> None:
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", text)
    assert answer.error is not None and cause in answer.error
    assert answer.next_actions == ["ai_extraction"]
    assert flow.get_model("f", sid).state == "think"

    calls = CALLS[text]
    for _ in range(3):  # polls answer the error; they never run the invoker again
        again = flow.process_event("f", EventInput(session_id=sid, event=POLL, event_input=""))
        assert again.error == answer.error and again.next_actions == ["ai_extraction"]
    assert CALLS[text] == calls
    status = flow.get_task_state("f", sid)
    assert status.ready and status.next_actions == ["ai_extraction"]

    refused = flow.process_event("f", EventInput(session_id=sid, event="ai_extraction", event_input="refuse"))
    assert refused.error is not None and "conditions" in refused.error
    assert flow.get_model("f", sid).state == "think"

    moved = flow.process_event("f", EventInput(session_id=sid, event="ai_extraction", event_input="by hand"))
    assert moved.error is None and moved.response == "by hand"
    assert moved.next_actions == ["user_input"]
    assert flow.get_model("f", sid).task_error is None
    assert send(flow, "f", sid, "user_input", "fine").response == "ANSWER fine"


def test_an_invoker_failure_is_reported_with_its_own_cause(flow: GenieFlow) -> None:
    """The completion event carries "" after a failure; when a hook chokes on it, both causes show."""
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", "explode")
    assert answer.error is not None
    error = json.loads(answer.error)
    assert "the model exploded" in error["exception"]
    assert "JSONDecodeError" in error["transition_error"]
    assert answer.next_actions == ["ai_extraction"]


def test_a_template_failing_on_a_user_event_leaves_the_session_and_its_events(tmp_path: Path) -> None:
    class BrokenMachine(GenieStateMachine):
        a = State(initial=True, value=1)
        b = State(value=2)
        user_input = a.to(b) | b.to(a)
        templates = dict(a="t/a.jinja2", b="t/b.jinja2")

    class BrokenModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return BrokenMachine

    root = write_tree(tmp_path, {"t/meta.yaml": RENDERER_META, "t/a.jinja2": "A", "t/b.jinja2": "{{ nme }}"})
    with GenieFlow(root, store="memory://") as flow:
        flow.register_model("b", BrokenModel)
        sid = flow.create_new_session("b").session_id
        before = flow.get_model("b", sid).model_dump()
        answer = flow.process_event("b", EventInput(session_id=sid, event="user_input", event_input="x"))
        assert answer.error is not None and "nme" in answer.error and "template" in answer.error
        assert answer.next_actions == ["user_input"]
        assert flow.get_model("b", sid).model_dump() == before


def test_an_event_answered_poll_survives_the_script_ending_at_once(tmp_path: Path) -> None:
    """A script may end right after its event was answered ["poll"], without close()."""
    db = tmp_path / "s.sqlite"
    repo = Path(__file__).resolve().parent.parent
    script = textwrap.dedent(
        f"""
        from genie_graph import EventInput
        from graphs import create_flow
        flow = create_flow("sqlite:///{db}")
        sid = flow.create_new_session("q_and_a").session_id
        answer = flow.process_event("q_and_a", EventInput(session_id=sid, event="user_input", event_input="q1"))
        assert answer.next_actions == ["poll"], answer
        print(sid)
        """
    )
    env = {**os.environ, "GENIE_GRAPH_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr, done.stderr  # a clean exit
    sid = done.stdout.strip().splitlines()[-1]

    from graphs import create_flow

    with create_flow(f"sqlite:///{db}") as flow:
        answer = send(flow, "q_and_a", sid, POLL)
        assert answer.error is None
        assert "q1" in (answer.response or "")
        assert [d.actor_text for d in flow.get_model("q_and_a", sid).dialogue][1] == "q1"
