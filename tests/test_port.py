"""Porting a real Genie Flow 0.12 application by changing imports only.

The flows in /work/shared/peers/genie-flow (qa_flow.py, invokers.py, templates/) are copied at
test time. The only edits: ``from genie_flow.genie import`` -> ``from genie_graph import`` in
qa_flow.py, ``from genie_flow_invoker import`` -> ``from genie_graph import`` in invokers.py, the
llm directory's meta.yaml names a verbatim invoker that is installed here, and the slow
directory's delay is made small.
"""

from __future__ import annotations

import difflib
import importlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import genie_graph
from genie_graph import POLL, AIResponse, EventInput, GenieFlow
from tests.helpers import send

PEER = Path("/work/shared/peers/genie-flow")
AI_RESPONSE_KEYS = {"session_id", "next_actions", "error", "response", "progress"}
VERBATIM_UPSTREAM = "genie_flow_invoker.invoker.verbatim.VerbatimInvoker"
VERBATIM_HERE = "tests.flows_port.verbatim.VerbatimInvoker"
SMALL_DELAY = 0.05


def port_source(source: str, old: str, new: str) -> str:
    """Replace one import line's prefix; assert nothing else changed."""
    assert source.count(old) == 1, f"expected exactly one {old!r}"
    ported = source.replace(old, new)
    changed = [
        line
        for line in difflib.unified_diff(source.splitlines(), ported.splitlines(), lineterm="", n=0)
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert len(changed) == 2, changed  # one line out, one line in
    return ported


def rewrite_meta_value(path: Path, old: str, new: str) -> None:
    """Change one value in a meta.yaml; assert the parsed mapping differs in that value only."""
    before = yaml.safe_load(path.read_text(encoding="utf-8"))
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    after = yaml.safe_load(path.read_text(encoding="utf-8"))
    differing = [k for k in before["invoker"] if before["invoker"][k] != after["invoker"][k]]
    assert len(differing) == 1 and set(before) == set(after) and set(before["invoker"]) == set(after["invoker"])


@dataclass
class Ported:
    qa_flow: ModuleType
    invokers: ModuleType
    templates: Path


@pytest.fixture
def ported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ported]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "qa_flow.py").write_text(
        port_source(
            (PEER / "qa_flow.py").read_text(encoding="utf-8"), "from genie_flow.genie import", "from genie_graph import"
        ),
        encoding="utf-8",
    )
    (app / "invokers.py").write_text(
        port_source(
            (PEER / "invokers.py").read_text(encoding="utf-8"),
            "from genie_flow_invoker import GenieInvoker",
            "from genie_graph import GenieInvoker",
        ),
        encoding="utf-8",
    )
    templates = Path(shutil.copytree(PEER / "templates", app / "templates"))
    rewrite_meta_value(templates / "llm" / "meta.yaml", VERBATIM_UPSTREAM, VERBATIM_HERE)
    rewrite_meta_value(templates / "slow" / "meta.yaml", "delay_s: 1.5", f"delay_s: {SMALL_DELAY}")

    for name in ("qa_flow", "invokers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(app))
    try:
        yield Ported(importlib.import_module("qa_flow"), importlib.import_module("invokers"), templates)
    finally:
        for name in ("qa_flow", "invokers"):
            sys.modules.pop(name, None)


def wire(ported: Ported, template_root: Path | None = None) -> GenieFlow:
    """main.py's wiring, on genie_graph."""
    flow = GenieFlow(template_root=template_root, store="memory://")
    flow.register_template_directory("response", ported.templates / "response")
    flow.register_template_directory("llm", ported.templates / "llm")
    flow.register_template_directory("slow", ported.templates / "slow")
    flow.register_model("qa", ported.qa_flow.QandAModel)
    flow.register_model("pingpong", ported.qa_flow.PingPongModel)
    flow.register_model("qa_slow", ported.qa_flow.SlowQandAModel)
    return flow


@pytest.fixture
def flow(ported: Ported) -> Iterator[GenieFlow]:
    genie = wire(ported)
    try:
        yield genie
    finally:
        genie.close()


def intro_text(ported: Ported) -> str:
    return (ported.templates / "response" / "intro.jinja2").read_text(encoding="utf-8").removesuffix("\n")


def assert_wire_shape(answer: AIResponse) -> dict[str, object]:
    dump = answer.model_dump()
    assert set(dump) == AI_RESPONSE_KEYS
    json.dumps(dump)  # JSON-serialisable as sent on the wire
    return dump


def assert_in_flight_progress(polls: list[AIResponse]) -> None:
    """Polls answered while a single-template invoker state runs have Genie Flow's shape.

    Genie Flow reports ``{todo: 2, done: 0|1}`` (1 invocation + 1 final transition), or
    ``{0, 0}`` once the invocation is tombstoned but not yet removed. (That the total is known
    from the very first poll is tested in test_composite.)
    """
    for answer in polls:
        assert answer.next_actions == [POLL]
        assert answer.response is None and answer.error is None
        assert answer.progress is not None
        total = answer.progress.total_number_of_subtasks
        done = answer.progress.number_of_subtasks_executed
        assert total in (0, 2)
        assert 0 <= done <= total


def turn(flow: GenieFlow, key: str, session_id: str, text: str) -> tuple[AIResponse, list[AIResponse]]:
    """Send ``user_input`` then poll as a Genie Flow client does; the final answer and the polls."""
    first = flow.process_event(key, EventInput(session_id=session_id, event="user_input", event_input=text))
    assert_wire_shape(first)
    polls: list[AIResponse] = []
    answer = first
    deadline = time.monotonic() + 10
    while answer.next_actions == [POLL] and answer.error is None:
        assert time.monotonic() < deadline, "run never settled"
        time.sleep(0.002)
        answer = flow.process_event(key, EventInput(session_id=session_id, event=POLL, event_input=""))
        assert_wire_shape(answer)
        polls.append(answer)
    return first, polls


# ---------------------------------------------------------------------------------------------


def test_ported_modules_use_genie_graph(ported: Ported) -> None:
    from statemachine import State as UpstreamState

    qa = ported.qa_flow
    assert issubclass(qa.QandAModel, genie_graph.GenieModel)
    assert issubclass(qa.QandAMachine, genie_graph.GenieStateMachine)
    assert isinstance(qa.QandAMachine.intro, UpstreamState)
    assert issubclass(ported.invokers.SleepInvoker, genie_graph.GenieInvoker)
    source = Path(str(qa.__file__)).read_text(encoding="utf-8")
    assert "from statemachine import State" in source and "genie_flow" not in source


@pytest.mark.parametrize("with_root", [False, True], ids=["prefixes-only", "with-template-root"])
def test_qa_flow_turns(ported: Ported, with_root: bool) -> None:
    genie = wire(ported, ported.templates if with_root else None)
    try:
        start = genie.create_new_session("qa")
        assert assert_wire_shape(start) == {
            "session_id": start.session_id,
            "next_actions": ["user_input"],
            "error": None,
            "response": intro_text(ported),
            "progress": None,
        }
        session_id = start.session_id
        questions = ["What is 2+2?", "And {{ 3*3 }}?", "Thanks!"]
        in_flight: list[AIResponse] = []
        for question in questions:
            first, polls = turn(genie, "qa", session_id, question)
            # entering the invoker state: only ["poll"], the user's text is not echoed back
            assert assert_wire_shape(first) == {
                "session_id": session_id,
                "next_actions": [POLL],
                "error": None,
                "response": None,
                "progress": None,
            }
            in_flight += polls[:-1]
            final = polls[-1]
            assert assert_wire_shape(final) == {
                "session_id": session_id,
                "next_actions": ["user_input"],
                "error": None,
                "response": f"Echo: {question}",
                "progress": None,
            }
        model = genie.get_model("qa", session_id)
        assert model.state == 300  # user_enters_query, by value
        assert [d.actor for d in model.dialogue] == ["assistant"] + ["user", "assistant"] * len(questions)
        assert [d.actor_text for d in model.dialogue[1::2]] == questions
        status = genie.get_task_state("qa", session_id).model_dump()
        assert status == {"session_id": session_id, "next_actions": ["user_input"], "ready": True}
        assert_in_flight_progress(in_flight)
    finally:
        genie.close()


def test_qa_flow_refuses_an_event_with_genie_flows_error_body(flow: GenieFlow) -> None:
    session_id = flow.create_new_session("qa").session_id
    refused = flow.process_event("qa", EventInput(session_id=session_id, event="ai_extraction", event_input="x"))
    dump = assert_wire_shape(refused)
    assert dump["response"] is None and dump["error"] is not None
    body = json.loads(str(dump["error"]))
    assert body["session_id"] == session_id
    assert body["current_state"] == {"id": "intro", "name": "Intro"}
    assert body["possible_events"] == ["user_input"]
    assert body["received_event"] == "ai_extraction"
    assert flow.get_model("qa", session_id).state == 100  # unchanged


def test_pingpong_flow_turns(flow: GenieFlow, ported: Ported) -> None:
    start = flow.create_new_session("pingpong")
    assert start.response == intro_text(ported)
    assert start.next_actions == ["user_input"]
    expected = [
        ("one", "Page A (you typed: one)"),
        ("two", "Page B (you typed: two)"),
        ("three", "Page A (you typed: three)"),
    ]
    for text, page in expected:
        answer = flow.process_event(
            "pingpong", EventInput(session_id=start.session_id, event="user_input", event_input=text)
        )
        # user -> user: answered at once, no poll
        assert assert_wire_shape(answer) == {
            "session_id": start.session_id,
            "next_actions": ["user_input"],
            "error": None,
            "response": page,
            "progress": None,
        }
    assert flow.get_model("pingpong", start.session_id).state == 200


def test_qa_slow_flow_with_the_ported_sleep_invoker(flow: GenieFlow, ported: Ported) -> None:
    invoker = ported.invokers.SleepInvoker.from_config({"delay_s": SMALL_DELAY})
    assert invoker.delay_s == SMALL_DELAY
    start = flow.create_new_session("qa_slow")
    assert start.response == intro_text(ported)
    in_flight: list[AIResponse] = []
    for question in ["slow one", "slow two"]:
        first, polls = turn(flow, "qa_slow", start.session_id, question)
        assert first.next_actions == [POLL] and first.response is None
        in_flight += polls[:-1]
        final = polls[-1]
        assert final.error is None
        assert final.response == f"(after {SMALL_DELAY}s) Echo: {question}"
        assert final.next_actions == ["user_input"]
    assert_in_flight_progress(in_flight)


def test_three_flows_side_by_side(flow: GenieFlow) -> None:
    """Sessions of the three flows interleave on one GenieFlow without mixing."""
    sessions = {key: flow.create_new_session(key).session_id for key in ("qa", "pingpong", "qa_slow")}
    answers = {key: send(flow, key, sid, "user_input", f"hi {key}") for key, sid in sessions.items()}
    assert answers["qa"].response == "Echo: hi qa"
    assert answers["pingpong"].response == "Page A (you typed: hi pingpong)"
    assert answers["qa_slow"].response == f"(after {SMALL_DELAY}s) Echo: hi qa_slow"
    assert flow.model_keys == ["qa", "pingpong", "qa_slow"]
