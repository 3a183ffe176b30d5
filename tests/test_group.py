"""Group sessions in the library (issue 10): many senders in one session with a flow.

The flows are ``tests/group_flows.py`` (``notes``: user states only and a Python reasoner; ``think``:
an LLM state and a template reasoner; ``done``: a final state). Tool-call approvals in a group session
use the shop flow of ``tests/approval_flows.py`` with the real langchain-openai client against the
OpenAI-compatible test server. A second process on the same Redis is ``tests/group_process.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genie_graph import (
    Decision,
    DialogueFormat,
    Execution,
    GenieFlow,
    GroupMessage,
    HistoryKind,
    MessageStatus,
)
from genie_graph._group import parse_decision
from genie_graph.errors import ApprovalError, NotAMember, UnknownMessage, UnknownSession
from tests import approval_tools, group_flows
from tests.approval_flows import KEY as SHOP
from tests.approval_flows import ShopModel
from tests.group_flows import DONE, NOTES, THINK, build, release, write_templates
from tests.helpers import write_tree
from tests.openai_server import reset_requests
from tests.services import offline_env

WAIT = 60.0
"""Seconds an execution is waited for: a bound against a hang, never a measure of speed."""


# ---- helpers ------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_templates(tmp_path / "templates")


@pytest.fixture
def flow(root: Path, store_url: str) -> Iterator[GenieFlow]:
    with build(root, store_url) as built:
        yield built


@pytest.fixture
def memory_flow(root: Path) -> Iterator[GenieFlow]:
    with build(root, "memory://") as built:
        yield built


def _session(flow: GenieFlow, key: str = NOTES) -> str:
    return flow.create_new_session(key).session_id


def _finish(flow: GenieFlow, key: str, session_id: str, seq: int) -> Execution:
    execution = flow.execution(key, session_id, seq, wait=WAIT)
    assert execution.finished, f"message {seq} did not finish: {execution}"
    return execution


def _until(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` until it answers something true (bounded, against a hang)."""
    deadline = time.monotonic() + WAIT
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)
    return found


def _kinds(execution: Execution) -> list[str]:
    return [item["event"] for item in execution.items]


def _tag() -> str:
    """A unique prefix, so this test's lines in ``group_flows.reasoned`` are its own."""
    return uuid.uuid4().hex[:8]


async def _collect(stream: AsyncGenerator[dict[str, Any], None]) -> list[dict[str, Any]]:
    return [item async for item in stream]


# ---- 1. the log ---------------------------------------------------------------------------
def test_messages_are_numbered_in_the_order_received_and_listed_with_their_status(flow: GenieFlow) -> None:
    session_id = _session(flow)
    plan = [("alice", "hello"), ("bob", "hi"), ("alice", "psst bob, lunch?"), ("carol", "morning"), ("bob", "ok")]
    sent = [flow.send_message(NOTES, session_id, text, sender=sender) for sender, text in plan]
    assert [m.seq for m in sent] == [1, 2, 3, 4, 5]
    assert all(isinstance(m, GroupMessage) and m.event == "user_input" for m in sent)
    for message in sent:
        _finish(flow, NOTES, session_id, message.seq)

    log = flow.messages(NOTES, session_id)
    assert [(m.seq, m.sender, m.content) for m in log] == [(i + 1, s, t) for i, (s, t) in enumerate(plan)]
    assert [m.status for m in log] == ["answered", "answered", "ignored", "answered", "answered"]
    assert [m.decision for m in log] == [Decision.DELEGATE] * 2 + [Decision.IGNORE] + [Decision.DELEGATE] * 2
    assert [m.received_at for m in log] == sorted(m.received_at for m in log)
    assert [m.seq for m in flow.messages(NOTES, session_id, after=3)] == [4, 5]
    assert flow.messages(NOTES, session_id, after=5) == []
    assert [m.seq for m in asyncio.run(flow.amessages(NOTES, session_id, after=1))] == [2, 3, 4, 5]
    notes = flow.get_model(NOTES, session_id).notes  # senders take turns in any order, each in their own
    assert sorted(notes) == ["alice:hello", "bob:hi", "bob:ok", "carol:morning"]
    assert notes.index("bob:hi") < notes.index("bob:ok")


def test_a_new_session_has_an_empty_log_and_members_are_only_those_named(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    assert memory_flow.messages(NOTES, session_id) == []
    assert memory_flow.members(NOTES, session_id) == set()
    memory_flow.send_message(NOTES, session_id, "hi", sender="  alice  ")  # a name is trimmed
    assert [m.sender for m in memory_flow.messages(NOTES, session_id)] == ["alice"]
    memory_flow.add_members(NOTES, session_id, ["bob"])
    asyncio.run(memory_flow.aadd_members(NOTES, session_id, [" carol "]))
    assert memory_flow.members(NOTES, session_id) == {"bob", "carol"}
    assert asyncio.run(memory_flow.amembers(NOTES, session_id)) == {"bob", "carol"}


# ---- 2. same sender strictly in order, no lost update ------------------------------------------
def test_each_senders_messages_are_processed_in_order_and_no_update_is_lost(flow: GenieFlow) -> None:
    session_id = _session(flow)
    tag = _tag()
    senders = [f"{tag}-s{k}" for k in range(4)]
    burst = [f"{tag}-burst{k}" for k in range(3)]
    per_sender = 10
    sent: dict[str, list[int]] = {sender: [] for sender in senders + burst}
    failures: list[BaseException] = []

    def talk(sender: str) -> None:
        try:
            for i in range(per_sender):
                sent[sender].append(flow.send_message(NOTES, session_id, f"m{i}", sender=sender).seq)
                if i % 3 == 0:  # a client reading along takes nothing up twice
                    flow.execution(NOTES, session_id, sent[sender][-1])
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=talk, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for i in range(per_sender):  # and a burst: several senders at once from this thread too
        for sender in burst:
            sent[sender].append(flow.send_message(NOTES, session_id, f"m{i}", sender=sender).seq)
    for thread in threads:
        thread.join()
    assert failures == []

    log = flow.messages(NOTES, session_id)
    total = per_sender * (len(senders) + len(burst))
    assert [m.seq for m in log] == list(range(1, total + 1))
    for sender, seqs in sent.items():  # each sender's numbers grow in the order sent
        assert seqs == sorted(seqs) and [m.seq for m in log if m.sender == sender] == seqs
    executions = [_finish(flow, NOTES, session_id, m.seq) for m in log]
    assert {e.message.status for e in executions} == {MessageStatus.ANSWERED}
    twice = [(e.message.seq, _kinds(e)) for e in executions if _kinds(e) != ["decision", "response"]]
    assert twice == []  # each reasoned and delivered once

    model = flow.get_model(NOTES, session_id)
    delegated = [m for m in flow.messages(NOTES, session_id) if m.decision is Decision.DELEGATE]
    assert model.count == len(delegated) == total == len(model.notes)
    for sender in sent:
        assert [n for n in model.notes if n.startswith(f"{sender}:")] == [f"{sender}:m{i}" for i in range(per_sender)]
    # one sender's reasoner never runs twice at once: its starts and ends alternate
    for sender in sent:
        steps = [event for event, who, _ in group_flows.reasoned if who == sender]
        assert steps == ["start", "end"] * per_sender


# ---- 3. concurrent across senders -----------------------------------------------------------
def test_different_senders_are_reasoned_about_at_the_same_time(flow: GenieFlow) -> None:
    session_id = _session(flow)
    room = f"meet:{_tag()}"
    first = flow.send_message(NOTES, session_id, room, sender="alice")
    second = flow.send_message(NOTES, session_id, room, sender="bob")
    done = [_finish(flow, NOTES, session_id, m.seq) for m in (first, second)]
    assert [e.message.decision for e in done] == [Decision.DELEGATE, Decision.DELEGATE]  # they met
    steps = [(event, who) for event, who, content in group_flows.reasoned if content == room]
    assert sorted(steps[:2]) == [("start", "alice"), ("start", "bob")]  # both started before either ended
    assert sorted(steps[2:]) == [("end", "alice"), ("end", "bob")]
    assert sorted(flow.get_model(NOTES, session_id).notes) == [f"alice:{room}", f"bob:{room}"]


# ---- 4. the reasoner ----------------------------------------------------------------------
def test_an_ignored_message_only_gets_a_decision_and_leaves_the_dialogue_alone(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    before = memory_flow.get_model(NOTES, session_id)
    seq = memory_flow.send_message(NOTES, session_id, "psst, coffee?", sender="alice").seq
    execution = _finish(memory_flow, NOTES, session_id, seq)
    assert execution.message.status is MessageStatus.IGNORED
    assert (execution.message.decision, execution.message.reason) == (Decision.IGNORE, "a side remark")
    [item] = execution.items
    assert item["event"] == "decision"
    assert {k: item["data"][k] for k in ("decision", "reason", "sender", "seq")} == {
        "decision": "ignore",
        "reason": "a side remark",
        "sender": "alice",
        "seq": seq,
    }
    assert execution.response is None
    after = memory_flow.get_model(NOTES, session_id)
    assert after.dialogue == before.dialogue and (after.notes, after.count) == ([], 0)
    assert [e for e in after.history if e.kind == HistoryKind.EVENT] == []


def test_a_delegated_message_reaches_the_flow(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    seq = memory_flow.send_message(NOTES, session_id, "hi", "al").seq
    execution = memory_flow.execution(NOTES, session_id, seq, wait=None)  # as long as it takes
    assert execution.finished
    assert (execution.message.status, execution.message.decision) == (MessageStatus.ANSWERED, Decision.DELEGATE)
    assert _kinds(execution) == ["decision", "response"]
    assert execution.response is not None and execution.response.response == "noted al: hi"
    assert execution.items[-1]["data"]["state"] == "open"


def test_a_template_reasoner_decides(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow, THINK)
    asked = _finish(memory_flow, THINK, session_id, memory_flow.send_message(THINK, session_id, "why?", "al").seq)
    assert (asked.message.decision, asked.message.reason) == (Decision.DELEGATE, "for the assistant")
    chat = _finish(memory_flow, THINK, session_id, memory_flow.send_message(THINK, session_id, "psst", "bo").seq)
    assert (chat.message.status, chat.message.reason) == (MessageStatus.IGNORED, "chit-chat")
    # an LLM often puts its reason on the next line: still the first word decides
    aside = _finish(memory_flow, THINK, session_id, memory_flow.send_message(THINK, session_id, "aside", "bo").seq)
    assert (aside.message.status, aside.message.reason) == (MessageStatus.IGNORED, "an aside between people")
    assert _kinds(aside) == ["decision"]
    model = memory_flow.get_model(THINK, session_id)
    assert [d.actor_text for d in model.dialogue if d.actor == "user"] == ["why?"]


def test_a_failing_reasoner_delegates_and_says_why(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    execution = _finish(memory_flow, NOTES, session_id, memory_flow.send_message(NOTES, session_id, "boom", "al").seq)
    assert (execution.message.status, execution.message.decision) == (MessageStatus.ANSWERED, Decision.DELEGATE)
    reason = execution.message.reason
    assert reason is not None and "RuntimeError" in reason and "the reasoner exploded" in reason
    assert execution.items[0]["data"]["reason"] == reason
    assert memory_flow.get_model(NOTES, session_id).notes == ["al:boom"]


def test_a_reasoner_answering_nonsense_delegates_and_says_what_is_allowed(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    python = _finish(memory_flow, NOTES, session_id, memory_flow.send_message(NOTES, session_id, "huh", "al").seq)
    assert (python.message.status, python.message.decision) == (MessageStatus.ANSWERED, Decision.DELEGATE)
    assert python.message.reason is not None and "ValueError" in python.message.reason
    assert "IGNORE or DELEGATE" in python.message.reason and "42" in python.message.reason
    think = _session(memory_flow, THINK)
    template = _finish(memory_flow, THINK, think, memory_flow.send_message(THINK, think, "nonsense", "al").seq)
    assert template.message.decision is Decision.DELEGATE and template.message.status is MessageStatus.ANSWERED
    assert template.message.reason is not None and "perhaps, who knows" in template.message.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Decision.IGNORE, (Decision.IGNORE, None)),
        (Decision.DELEGATE, (Decision.DELEGATE, None)),
        (True, (Decision.DELEGATE, None)),
        (False, (Decision.IGNORE, None)),
        ((Decision.IGNORE, "off topic"), (Decision.IGNORE, "off topic")),
        (("delegate", None), (Decision.DELEGATE, None)),
        ((False, 7), (Decision.IGNORE, "7")),
        ({"decision": "ignore", "reason": "banter"}, (Decision.IGNORE, "banter")),
        ({"decision": True}, (Decision.DELEGATE, None)),
        ('{"decision": "DELEGATE", "reason": "a question"}', (Decision.DELEGATE, "a question")),
        ("  ignore", (Decision.IGNORE, None)),
        ("IGNORE because they greet each other.", (Decision.IGNORE, "because they greet each other")),
        ("Delegate: asks the assistant", (Decision.DELEGATE, "asks the assistant")),
        ("DELEGATE.", (Decision.DELEGATE, None)),
        ("IGNORE\nthey talk among themselves", (Decision.IGNORE, "they talk among themselves")),
        ("DELEGATE\n\nReason: a question for you", (Decision.DELEGATE, "Reason: a question for you")),
        ("delegate\tplease", (Decision.DELEGATE, "please")),
    ],
)
def test_parse_decision_takes_the_documented_answers(answer: Any, expected: tuple[Decision, str | None]) -> None:
    assert parse_decision(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [None, 42, "", "maybe", "IGNORED it", "{not json", '{"reason": "no decision"}', ["ignore"], ("a", "b", "c"), {}],
)
def test_parse_decision_refuses_anything_else_and_says_what_is_allowed(answer: Any) -> None:
    with pytest.raises(ValueError, match="IGNORE or DELEGATE") as refused:
        parse_decision(answer)
    assert "a Decision" in str(refused.value) and "a bool" in str(refused.value)


# ---- 5. execution items, polled and streamed --------------------------------------------------
def test_execution_items_come_in_order_and_the_stream_yields_the_same(flow: GenieFlow) -> None:
    session_id = _session(flow, THINK)
    seq = flow.send_message(THINK, session_id, "what now?", sender="alice").seq
    streamed = asyncio.run(_collect(flow.astream_execution(THINK, session_id, seq)))
    execution = _finish(flow, THINK, session_id, seq)
    assert streamed == execution.items
    kinds = _kinds(execution)
    assert kinds[0] == "decision" and kinds[-1] == "response"
    assert set(kinds[1:-1]) <= {"state", "progress"}
    states = [item["data"]["state"] for item in execution.items if item["event"] == "state"]
    assert states == ["thinking", "waiting"]  # the run's own states, once each
    assert execution.response is not None and execution.response.response == "echo: alice asks what now? (prefs {})"
    assert execution.items[-1]["data"]["state"] == "waiting"
    late = asyncio.run(_collect(flow.astream_execution(THINK, session_id, seq, start=2)))
    assert late == execution.items[2:]
    assert asyncio.run(_collect(flow.astream_execution(THINK, session_id, seq, start=len(execution.items)))) == []


def test_a_stream_opened_before_the_message_is_processed_follows_it_to_the_end(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    key = _tag()

    async def scenario() -> tuple[list[dict[str, Any]], Execution]:
        message = await memory_flow.asend_message(NOTES, session_id, f"hold:{key}", sender="alice")
        stream = memory_flow.astream_execution(NOTES, session_id, message.seq)
        reading = asyncio.ensure_future(_collect(stream))
        waiting = await memory_flow.aexecution(NOTES, session_id, message.seq)
        assert not waiting.finished and waiting.items == []  # its reasoner holds it
        release(key)
        items = await reading
        return items, await memory_flow.aexecution(NOTES, session_id, message.seq, wait=WAIT)

    items, execution = asyncio.run(scenario())
    assert execution.finished and items == execution.items and _kinds(execution) == ["decision", "response"]


def test_executions_of_many_senders_carry_only_their_own_runs_items(flow: GenieFlow) -> None:
    """The flow takes one message at a time: a run's states are never recorded on another message."""
    session_id = _session(flow, THINK)
    seqs = [flow.send_message(THINK, session_id, f"q{i}", sender=f"s{i % 4}").seq for i in range(12)]
    for seq in seqs:
        execution = _finish(flow, THINK, session_id, seq)
        states = [item["data"]["state"] for item in execution.items if item["event"] == "state"]
        assert states == ["thinking", "waiting"], f"message {seq}: {_kinds(execution)}"
        assert execution.response is not None
        assert (
            execution.response.response
            == f"echo: {execution.message.sender} asks {execution.message.content} (prefs {{}})"
        )
    model = flow.get_model(THINK, session_id)
    assert len([d for d in model.dialogue if d.actor == "user"]) == 12


# ---- 6. refusals and errors ----------------------------------------------------------------
def test_a_message_whose_event_the_state_does_not_take_is_refused(flow: GenieFlow) -> None:
    session_id = _session(flow, THINK)
    seq = flow.send_message(THINK, session_id, "done?", sender="alice", event="ai_extraction").seq
    execution = _finish(flow, THINK, session_id, seq)
    assert execution.message.status is MessageStatus.REFUSED and execution.message.event == "ai_extraction"
    assert _kinds(execution) == ["decision", "error"]
    error = execution.items[-1]["data"]
    assert (error["error"], error["state"], error["allowed"]) == ("event_not_allowed", "waiting", ["user_input"])
    assert "ai_extraction" in error["message"]
    assert execution.response is None
    # the session is as it was: the next message goes through
    answered = _finish(flow, THINK, session_id, flow.send_message(THINK, session_id, "hi", sender="bob").seq)
    assert answered.message.status is MessageStatus.ANSWERED


def test_a_flow_in_its_final_state_refuses_further_messages(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow, DONE)
    first = _finish(memory_flow, DONE, session_id, memory_flow.send_message(DONE, session_id, "bye", "alice").seq)
    assert first.response is not None and first.response.response == "Done, alice."
    late = _finish(memory_flow, DONE, session_id, memory_flow.send_message(DONE, session_id, "wait!", "bob").seq)
    assert late.message.status is MessageStatus.REFUSED
    error = late.items[-1]["data"]
    assert (error["error"], error["state"], error["allowed"]) == ("event_not_allowed", "done", [])
    assert "waits for no event" in error["message"]


def test_bad_messages_are_refused_when_sent_and_nothing_is_logged(memory_flow: GenieFlow) -> None:
    session_id = _session(memory_flow)
    with pytest.raises(ValueError, match="one of the flow's events") as undeclared:
        memory_flow.send_message(NOTES, session_id, "x", sender="alice", event="no_such_event")
    assert "user_input" in str(undeclared.value) and "no_such_event" in str(undeclared.value)
    for sender in ("", "   "):
        with pytest.raises(ValueError, match="sender"):
            memory_flow.send_message(NOTES, session_id, "x", sender=sender)
    assert memory_flow.messages(NOTES, session_id) == []
    with pytest.raises(ValueError, match="non-empty"):
        memory_flow.add_members(NOTES, session_id, ["bob", " "])


def test_unknown_sessions_and_messages_are_named(memory_flow: GenieFlow) -> None:
    missing = "no-such-session"
    with pytest.raises(UnknownSession):
        memory_flow.send_message(NOTES, missing, "x", sender="alice")
    with pytest.raises(UnknownSession):
        memory_flow.messages(NOTES, missing)
    with pytest.raises(UnknownSession):
        memory_flow.execution(NOTES, missing, 1)
    with pytest.raises(UnknownSession):
        memory_flow.add_members(NOTES, missing, ["bob"])
    session_id = _session(memory_flow)
    with pytest.raises(UnknownMessage) as none_yet:
        memory_flow.execution(NOTES, session_id, 1)
    assert (none_yet.value.seq, none_yet.value.count) == (1, 0) and "no messages yet" in str(none_yet.value)
    _finish(memory_flow, NOTES, session_id, memory_flow.send_message(NOTES, session_id, "x", sender="alice").seq)
    with pytest.raises(UnknownMessage, match="messages 1 to 1"):
        memory_flow.execution(NOTES, session_id, 2)
    with pytest.raises(UnknownMessage):
        asyncio.run(_collect(memory_flow.astream_execution(NOTES, session_id, 7)))


def test_only_named_members_may_write_once_members_are_named(flow: GenieFlow) -> None:
    session_id = _session(flow)
    flow.add_members(NOTES, session_id, ["alice", "bob"])
    assert flow.members(NOTES, session_id) == {"alice", "bob"}
    _finish(flow, NOTES, session_id, flow.send_message(NOTES, session_id, "hi", sender="alice").seq)
    with pytest.raises(NotAMember) as refused:
        flow.send_message(NOTES, session_id, "let me in", sender="mallory")
    assert (refused.value.sender, refused.value.members) == ("mallory", ["alice", "bob"])
    assert [m.sender for m in flow.messages(NOTES, session_id)] == ["alice"]  # nothing logged
    flow.add_members(NOTES, session_id, ["mallory"])
    assert flow.send_message(NOTES, session_id, "thanks", sender="mallory").seq == 2
    _finish(flow, NOTES, session_id, 2)
    assert flow.get_model(NOTES, session_id).notes == ["alice:hi", "mallory:thanks"]


# ---- 7. who said what ------------------------------------------------------------------------
def test_the_dialogue_and_history_name_each_messages_sender(flow: GenieFlow) -> None:
    session_id = _session(flow)
    plan = [("alice", "one"), ("bob", "two"), ("alice", "three")]
    for sender, text in plan:  # one at a time, so the dialogue's order is the log's
        _finish(flow, NOTES, session_id, flow.send_message(NOTES, session_id, text, sender=sender).seq)
    model = flow.get_model(NOTES, session_id)
    said = [(d.sender, d.actor_text) for d in model.dialogue if d.actor == "user"]
    assert said == plan
    assert all(d.sender is None for d in model.dialogue if d.actor != "user")
    events = [e.detail for e in model.history if e.kind == HistoryKind.EVENT]
    assert events == [
        {"sender": "alice", "message": 1},
        {"sender": "bob", "message": 2},
        {"sender": "alice", "message": 3},
    ]
    chat = DialogueFormat.CHAT.format(model.dialogue)
    assert "[USER alice]: one" in chat and "[USER bob]: two" in chat and "[ASSISTANT]: noted bob: two" in chat
    assert "Q: (bob) two" in DialogueFormat.QUESTION_ANSWER.format(model.dialogue)
    assert 'name: "alice"' in DialogueFormat.YAML.format(model.dialogue)


def test_the_prompt_shows_the_sender_and_their_own_preferences(root: Path) -> None:
    asked: list[str] = []

    async def preferences(user: str) -> dict[str, Any] | None:
        asked.append(user)
        return {"alice": {"tone": "formal"}, "bob": {"tone": "casual", "lang": "nl"}}.get(user)

    with build(root, "memory://", preferences=preferences) as flow:
        session_id = _session(flow, THINK)
        answers = {}
        for sender in ("alice", "bob", "carol"):
            seq = flow.send_message(THINK, session_id, "plan?", sender=sender).seq
            response = _finish(flow, THINK, session_id, seq).response
            assert response is not None
            answers[sender] = response.response
    assert answers == {
        "alice": 'echo: alice asks plan? (prefs {"tone": "formal"})',
        "bob": 'echo: bob asks plan? (prefs {"lang": "nl", "tone": "casual"})',
        "carol": "echo: carol asks plan? (prefs {})",
    }
    assert {"alice", "bob", "carol"} <= set(asked)


# ---- 8. approvals in a group session ---------------------------------------------------------
def _shop_root(tmp_path: Path, server_url: str) -> Path:
    tools = {"place_order": {"function": "tests.approval_tools:place_order", "approval": {"approvers": "member"}}}
    invoker = {"type": "openai", "model": "shop-model", "base_url": server_url, "tools": tools}
    return write_tree(
        tmp_path / "shop-templates",
        {
            "shop/meta.yaml": "renderer: {}\n",
            "shop/ask.jinja2": "{% if actor_input %}{{ actor_input }}{% else %}What would you like?{% endif %}",
            "shop/llm/meta.yaml": json.dumps({"invoker": invoker}),
            "shop/llm/think.jinja2": "{{ actor_input }}",
        },
    )


ORDER = 'please __CALL:place_order:{"item": "tea", "total": 30}__'
ORDERED = "TOOLS: place_order=order placed: tea for 30 EUR"


@pytest.fixture
def calls_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv(approval_tools.CALLS_FILE, str(path))
    monkeypatch.delenv("GENIE_GRAPH_OPENAI_MODEL", raising=False)
    return path


def _shop(root: Path, store: str) -> GenieFlow:
    flow = GenieFlow(template_root=root, store=store)
    flow.register_model(SHOP, ShopModel)
    return flow


def _awaiting_approval(flow: GenieFlow, session_id: str, seq: int) -> Execution:
    return _until(
        lambda: (e := flow.execution(SHOP, session_id, seq)).message.status is MessageStatus.AWAITING_APPROVAL and e,
        f"message {seq} waits for an approval",
    )


def test_a_members_tool_call_waits_for_another_members_approval(
    tmp_path: Path, openai_server_url: str, store_url: str, calls_file: Path
) -> None:
    reset_requests(openai_server_url)
    with _shop(_shop_root(tmp_path, openai_server_url), store_url) as flow:
        session_id = _session(flow, SHOP)
        flow.add_members(SHOP, session_id, ["alice", "bob"])
        order = flow.send_message(SHOP, session_id, ORDER, sender="alice")
        waiting = _awaiting_approval(flow, session_id, order.seq)
        [approval] = [item["data"] for item in waiting.items if item["event"] == "approval"]
        assert (approval["tool"], approval["arguments"], approval["asked_by"], approval["approvers"]) == (
            "place_order",
            {"item": "tea", "total": 30},
            "alice",
            "member",
        )
        assert _kinds(waiting)[0] == "decision" and not waiting.finished and approval_tools.calls() == []

        hello = flow.send_message(SHOP, session_id, "hello", sender="bob")  # waits for the flow, not refused
        meanwhile = _until(
            lambda: (e := flow.execution(SHOP, session_id, hello.seq)).message.status is MessageStatus.DELEGATED and e,
            "bob's message is delegated",
        )
        assert _kinds(meanwhile) == ["decision"]
        [request] = flow.approvals(SHOP, session_id)
        assert (request.id, request.asked_by, request.status) == (approval["id"], "alice", "pending")

        with pytest.raises(ApprovalError) as forbidden:
            flow.decide_approval(SHOP, session_id, request.id, True, by="mallory")
        assert forbidden.value.code == "approval_forbidden"
        assert flow.execution(SHOP, session_id, hello.seq).message.status is MessageStatus.DELEGATED
        assert flow.decide_approval(SHOP, session_id, request.id, True, by="bob").next_actions == ["poll"]

        answered = _finish(flow, SHOP, session_id, order.seq)
        assert answered.message.status is MessageStatus.ANSWERED and _kinds(answered)[-1] == "response"
        assert answered.response is not None and answered.response.response == ORDERED
        assert _kinds(answered).count("approval") == 1
        assert _kinds(answered).index("approval") < len(answered.items) - 1
        greeted = _finish(flow, SHOP, session_id, hello.seq)
        assert greeted.message.status is MessageStatus.ANSWERED
        assert greeted.response is not None and greeted.response.response == "ECHO: hello"
        model = flow.get_model(SHOP, session_id)
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]
    [decided] = model.approvals
    assert (decided.status, decided.decided_by, decided.asked_by) == ("approved", "bob", "alice")
    said = [(d.sender, d.actor_text) for d in model.dialogue if d.actor == "user"]
    assert said == [("alice", ORDER), ("bob", "hello")]  # bob's message came after the decision
    order_of_events = [  # the group messages' events (not the invoker's completions) and the decision
        (e.kind, (e.detail or {}).get("message"))
        for e in model.history
        if e.kind == "approval_decided" or (e.kind == "event" and e.detail is not None)
    ]
    assert order_of_events == [("event", order.seq), ("approval_decided", None), ("event", hello.seq)]


# ---- 9. restarts on SQLite --------------------------------------------------------------------
def test_messages_cut_off_while_their_reasoner_worked_finish_after_a_restart(root: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'sessions.sqlite'}"
    key = _tag()
    first = build(root, store)
    session_id = _session(first)
    held = first.send_message(NOTES, session_id, f"hold:{key}", sender="alice")
    behind = first.send_message(NOTES, session_id, "after", sender="alice")
    _until(lambda: ("start", "alice", f"hold:{key}") in group_flows.reasoned, "the reasoner holds")
    first.close(timeout=0.1)  # the held reasoner is cut off
    release(key)
    with build(root, store) as second:
        assert [m.status for m in second.messages(NOTES, session_id)] == ["reasoning", "queued"]
        for seq in (held.seq, behind.seq):
            execution = _finish(second, NOTES, session_id, seq)
            assert execution.message.status is MessageStatus.ANSWERED and _kinds(execution) == ["decision", "response"]
        model = second.get_model(NOTES, session_id)
    assert (model.notes, model.count) == ([f"alice:hold:{key}", "alice:after"], 2)


def test_messages_cut_off_while_a_tool_call_waited_finish_after_a_restart(
    tmp_path: Path, openai_server_url: str, calls_file: Path
) -> None:
    """After a restart the waiting run is still alice's, whichever execution is read first."""
    reset_requests(openai_server_url)
    root = _shop_root(tmp_path, openai_server_url)
    store = f"sqlite:///{tmp_path / 'sessions.sqlite'}"
    first = _shop(root, store)
    session_id = _session(first, SHOP)
    order = first.send_message(SHOP, session_id, ORDER, sender="alice")
    _awaiting_approval(first, session_id, order.seq)
    hello = first.send_message(SHOP, session_id, "hello", sender="bob")
    _until(
        lambda: first.execution(SHOP, session_id, hello.seq).message.status is MessageStatus.DELEGATED,
        "bob's message is delegated",
    )
    first.close(timeout=0.1)
    with _shop(root, store) as second:
        assert [m.status for m in second.messages(SHOP, session_id)] == ["awaiting_approval", "delegated"]
        assert not second.execution(SHOP, session_id, hello.seq).finished  # bob's is taken up first
        [request] = second.approvals(SHOP, session_id)
        assert request.asked_by == "alice"
        second.decide_approval(SHOP, session_id, request.id, True, by="bob")
        answered = _finish(second, SHOP, session_id, order.seq)
        greeted = _finish(second, SHOP, session_id, hello.seq)
        model = second.get_model(SHOP, session_id)
    assert answered.response is not None and answered.response.response == ORDERED
    assert _kinds(answered).count("approval") == 1
    assert greeted.response is not None and greeted.response.response == "ECHO: hello"
    bobs_states = [item["data"]["state"] for item in greeted.items if item["event"] == "state"]
    assert bobs_states == ["think", "ask"]  # bob's own run, not alice's resumed one
    assert [(d.sender, d.actor_text) for d in model.dialogue if d.actor == "user"] == [
        ("alice", ORDER),
        ("bob", "hello"),
    ]
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]


# ---- 10. two processes on one Redis -----------------------------------------------------------
class _Process:
    """``tests/group_process.py``: a second GenieFlow on the same store, spoken to over stdin/stdout."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        checkout = Path(__file__).resolve().parent.parent
        environment = {**os.environ, **offline_env(), **env, "PYTHONPATH": str(checkout)}
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self._guard = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.group_process"],
            cwd=checkout,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self._read() == "ready"

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the group process ended; see {self._log.name}"
        answer = json.loads(line)
        assert "error" not in answer, answer["error"]
        return answer["ok"]

    def call(self, **request: Any) -> Any:
        assert self.process.stdin is not None
        with self._guard:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return self._read()

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung child
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._log.close()


def test_two_processes_on_one_redis_process_each_message_once_in_each_senders_order(
    root: Path, tmp_path: Path, redis_url: str
) -> None:
    env = {"GENIE_GRAPH_TEST_GROUP_PROCESS_TEMPLATES": str(root), "GENIE_GRAPH_TEST_GROUP_STORE": redis_url}
    other = _Process(env, tmp_path / "group_process.log")
    try:
        with build(root, redis_url) as here:
            session_id = _session(here)
            senders = [f"p{k}" for k in range(4)]
            per_sender = 8
            sent: dict[str, list[int]] = {sender: [] for sender in senders}
            failures: list[BaseException] = []

            def talk(sender: str, offset: int) -> None:
                try:
                    for i in range(per_sender):  # in turn through each process, one after the other
                        if (i + offset) % 2:
                            seq = other.call(
                                op="send", model_key=NOTES, session_id=session_id, content=f"m{i}", sender=sender
                            )
                        else:
                            seq = here.send_message(NOTES, session_id, f"m{i}", sender=sender).seq
                        sent[sender].append(seq)
                except BaseException as exc:  # pragma: no cover - reported below
                    failures.append(exc)

            threads = [threading.Thread(target=talk, args=(s, k)) for k, s in enumerate(senders)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []

            total = per_sender * len(senders)
            assert sorted(seq for seqs in sent.values() for seq in seqs) == list(range(1, total + 1))
            for seq in range(1, total + 1):
                if seq % 2:  # followed from either process
                    execution = Execution.model_validate(
                        other.call(op="execution", model_key=NOTES, session_id=session_id, seq=seq, wait=WAIT)
                    )
                else:
                    execution = here.execution(NOTES, session_id, seq, wait=WAIT)
                assert execution.message.status is MessageStatus.ANSWERED, execution
                assert _kinds(execution) == ["decision", "response"]  # reasoned and delivered once
            model = here.get_model(NOTES, session_id)
    finally:
        other.stop()
    assert model.count == total == len(model.notes)
    for sender, seqs in sent.items():
        assert seqs == sorted(seqs)
        assert [n for n in model.notes if n.startswith(f"{sender}:")] == [f"{sender}:m{i}" for i in range(per_sender)]
    events = [(e.detail or {}).get("message") for e in model.history if e.kind == HistoryKind.EVENT]
    assert sorted(events) == list(range(1, total + 1))  # each message was delivered exactly once


def test_a_followed_execution_passes_on_the_llms_tokens_live(
    tmp_path: Path, openai_server_url: str, calls_file: Path
) -> None:
    """Tokens of the message's own run reach a live reader between the recorded items; they are not recorded."""
    reset_requests(openai_server_url)
    with _shop(_shop_root(tmp_path, openai_server_url), "memory://") as flow:
        session_id = _session(flow, SHOP)

        async def follow() -> list[dict[str, Any]]:
            sent = await flow.asend_message(SHOP, session_id, "__DRIP__ tell me slowly", sender="alice")
            return [item async for item in flow.astream_execution(SHOP, session_id, sent.seq)]

        items = asyncio.run(follow())
        recorded = flow.execution(SHOP, session_id, 1)
    kinds = [item["event"] for item in items]
    assert kinds[0] == "decision" and kinds[-1] == "response" and "token" in kinds
    tokens = [item["data"] for item in items if item["event"] == "token"]
    assert {token["state"] for token in tokens} == {"think"}
    assert recorded.response is not None
    assert "".join(token["text"] for token in tokens) == recorded.response.response
    assert [item for item in items if item["event"] != "token"] == recorded.items  # the recorded ones, in order
    assert "token" not in _kinds(recorded)
