"""Sessions outlive their process on SQLite, and a session's storage stays linear in its length.

The restart tests run each side in its own Python process (``sys.executable -c ...``), so
nothing survives in memory between them; the killed run is ended with SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graphs
from genie_graph import POLL, EventInput, GenieFlow
from tests import runtime_flows
from tests.helpers import send

ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 60


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)  # the autouse _offline fixture already removed any LLM endpoint
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["GENIE_GRAPH_DATA_DIR"] = str(tmp_path / "data")
    env.pop("GENIE_GRAPH_STORE", None)
    env.update(extra)
    return env


def _run(tmp_path: Path, script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 0, f"subprocess failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


FIRST_PROCESS = """
    import json, sys
    import graphs
    from tests.helpers import send

    flow = graphs.create_flow(sys.argv[1])
    start = flow.create_new_session("q_and_a")
    sid = start.session_id
    first = send(flow, "q_and_a", sid, "user_input", "What is the capital of France?")
    second = send(flow, "q_and_a", sid, "user_input", "And of Italy?")
    flow.close()
    print(json.dumps({"session_id": sid, "intro": start.response,
                      "answers": [first.response, second.response]}))
"""

SECOND_PROCESS = """
    import json, sys
    import graphs
    from tests.helpers import send

    flow = graphs.create_flow(sys.argv[1])
    sid = sys.argv[2]
    before = [[str(e.actor), e.actor_text] for e in flow.get_model("q_and_a", sid).dialogue]
    status = flow.get_task_state("q_and_a", sid)
    third = send(flow, "q_and_a", sid, "user_input", "And of Spain?")
    after = [[str(e.actor), e.actor_text] for e in flow.get_model("q_and_a", sid).dialogue]
    flow.close()
    print(json.dumps({"before": before, "ready": status.ready, "next_actions": status.next_actions,
                      "third": third.response, "third_next": third.next_actions,
                      "third_error": third.error, "after": after}))
"""


def test_session_continues_in_a_new_process(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 's.db'}"

    first = _run(tmp_path, FIRST_PROCESS, store)
    sid = first["session_id"]
    assert all(answer and "What is the capital" in first["answers"][0] for answer in first["answers"])
    assert "And of Italy?" in first["answers"][1]

    second = _run(tmp_path, SECOND_PROCESS, store, sid)

    assert second["before"] == [
        ["assistant", first["intro"]],
        ["user", "What is the capital of France?"],
        ["assistant", first["answers"][0]],
        ["user", "And of Italy?"],
        ["assistant", first["answers"][1]],
    ]
    assert second["ready"] is True
    assert second["next_actions"] == ["user_input"]
    assert second["third_error"] is None
    assert "And of Spain?" in second["third"]
    assert second["third_next"] == ["user_input"]
    assert second["after"] == [
        *second["before"],
        ["user", "And of Spain?"],
        ["assistant", second["third"]],
    ]


HELD_PROCESS = """
    import sys, time
    from pathlib import Path
    from genie_graph import EventInput
    from tests import runtime_flows as rf

    templates, store = Path(sys.argv[1]), sys.argv[2]
    flow = rf.create_flow(templates, store)
    sid = flow.create_new_session(rf.MODEL_KEY).session_id
    answer = flow.process_event(rf.MODEL_KEY, EventInput(session_id=sid, event="user_input",
                                                         event_input="gate:killme"))
    assert answer.next_actions == ["poll"], answer
    assert rf.gate("killme").entered.wait(30), "invoker never started"
    # Another GenieFlow has its own connection: it sees only what is committed to the file.
    observer = rf.create_flow(templates, store)
    deadline = time.monotonic() + 30
    while observer.get_model(rf.MODEL_KEY, sid).state != 100:  # ai_answers
        assert time.monotonic() < deadline, "the accepted event never reached the file"
        time.sleep(0.01)
    print(sid, flush=True)
    rf.gate("never").release.wait()  # held here until killed
"""

RESUMING_PROCESS = """
    import json, sys
    from pathlib import Path
    from tests import runtime_flows as rf
    from tests.helpers import send

    rf.gate("killme").release.set()  # when the run is redone here, its invoker answers at once
    flow = rf.create_flow(Path(sys.argv[1]), sys.argv[2])
    sid = sys.argv[3]
    answer = send(flow, rf.MODEL_KEY, sid, "poll")
    model = flow.get_model(rf.MODEL_KEY, sid)
    after = send(flow, rf.MODEL_KEY, sid, "user_input", "after the crash")
    dialogue = [[str(e.actor), e.actor_text] for e in flow.get_model(rf.MODEL_KEY, sid).dialogue]
    flow.close()
    print(json.dumps({"response": answer.response, "next_actions": answer.next_actions, "error": answer.error,
                      "state": model.state, "task_error": model.task_error,
                      "after": after.response, "dialogue": dialogue}))
"""

EXPECTED_AFTER_RESUME = [
    ["assistant", "Hello! Topic: nothing. Ask away."],
    ["user", "gate:killme"],
    ["assistant", "You said: Answer: gate:killme"],
    ["user", "after the crash"],
    ["assistant", "You said: Answer: after the crash"],
]


def _kill_mid_flight(tmp_path: Path) -> tuple[Path, str, str]:
    """Start a session whose invoker blocks, SIGKILL its process while the invoker is held."""
    templates = runtime_flows.write_templates(tmp_path / "templates")
    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HELD_PROCESS), str(templates), store],
        cwd=ROOT,
        env=_env(tmp_path, **{runtime_flows.HOLD_FOREVER_ENV: "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        sid = proc.stdout.readline().strip()  # printed while the invoker is blocked
        if not sid:
            proc.kill()
            _out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            pytest.fail(f"held process ended before its run started:\n{err}")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=PROCESS_TIMEOUT) == -signal.SIGKILL
        return templates, store, sid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_run_killed_mid_flight_resumes_in_a_new_process(tmp_path: Path) -> None:
    templates, store, sid = _kill_mid_flight(tmp_path)

    result = _run(tmp_path, RESUMING_PROCESS, str(templates), store, sid)

    assert result["error"] is None
    assert result["response"] == "You said: Answer: gate:killme"
    assert result["next_actions"] == ["user_input", "advance"]
    assert result["state"] == 200  # user_enters_query
    assert result["task_error"] is None
    assert result["after"] == "You said: Answer: after the crash"
    assert result["dialogue"] == EXPECTED_AFTER_RESUME


DYING_PROCESS = """
    import sys
    from pathlib import Path
    from genie_graph import EventInput
    from tests import runtime_flows as rf

    flow = rf.create_flow(Path(sys.argv[1]), sys.argv[2])
    sid = flow.create_new_session(rf.MODEL_KEY).session_id
    print(sid, flush=True)
    answer = flow.process_event(rf.MODEL_KEY, EventInput(session_id=sid, event="user_input",
                                                         event_input="gate:killme"))
    assert answer.next_actions == ["poll"], answer
    flow.wait_until_ready(sid)  # the invoker kills this process when it starts
    print("the invoker did not kill the process", file=sys.stderr)
"""


def test_event_answered_with_poll_survives_a_kill_as_its_invoker_starts(tmp_path: Path) -> None:
    """``["poll"]`` means the event was accepted: once its invoker is running, a crash must not lose it.

    The invoker SIGKILLs its own process the moment it starts.
    """
    templates = runtime_flows.write_templates(tmp_path / "templates")
    store = f"sqlite:///{tmp_path / 's.db'}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DYING_PROCESS), str(templates), store],
        cwd=ROOT,
        env=_env(tmp_path, **{runtime_flows.DIE_ON_ENTRY_ENV: "1"}),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    sid = done.stdout.strip().splitlines()[0]

    result = _run(tmp_path, RESUMING_PROCESS, str(templates), store, sid)

    assert result["response"] == "You said: Answer: gate:killme", (
        "the user's event, answered with ['poll'] and already being worked on, was lost in the crash"
    )
    assert result["dialogue"] == EXPECTED_AFTER_RESUME


ANSWERED_THEN_KILLED = """
    import json, os, signal, sys
    from pathlib import Path
    from genie_graph import EventInput
    from tests import runtime_flows as rf

    flow = rf.create_flow(Path(sys.argv[1]), sys.argv[2])
    sid = flow.create_new_session(rf.MODEL_KEY).session_id
    for n in range(3):  # events into a user state: no run, nothing of the store's own is written
        answer = flow.process_event(rf.MODEL_KEY, EventInput(session_id=sid, event="advance", event_input=f"kept {n}"))
    print(json.dumps({"session_id": sid, "response": answer.response}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # at once: before a deferred commit could come
"""


def test_an_answered_event_survives_a_kill_right_after_its_answer(tmp_path: Path) -> None:
    """SQLite's commits are deferred a few milliseconds, but never past an answer: what a caller was
    told is durable when it is told."""
    templates = runtime_flows.write_templates(tmp_path / "templates")
    store = f"sqlite:///{tmp_path / 's.db'}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ANSWERED_THEN_KILLED), str(templates), store],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    told = json.loads(done.stdout.strip().splitlines()[-1])
    assert told["response"] == "You said: kept 2"
    with runtime_flows.create_flow(templates, store) as flow:
        model = flow.get_model(runtime_flows.MODEL_KEY, told["session_id"])
        assert [element.actor_text for element in model.dialogue][-2:] == ["kept 2", "You said: kept 2"]


def test_sqlite_commits_are_deferred_on_a_loop_only(tmp_path: Path) -> None:
    import asyncio

    from langgraph.checkpoint.base import empty_checkpoint

    from genie_graph._stores import SqliteStore

    async def on_a_loop() -> tuple[bool, bool]:
        store = await SqliteStore.open(f"sqlite:///{tmp_path / 'loop.db'}")
        saver = store.saver
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        saver.put(config, empty_checkpoint(), {}, {})  # type: ignore[arg-type]
        deferred = saver.conn.in_transaction
        await asyncio.sleep(saver.commit_delay * 10)
        committed = not saver.conn.in_transaction
        await store.close()
        return deferred, committed

    assert asyncio.run(on_a_loop()) == (True, True)  # deferred, then committed by the timer
    store = asyncio.run(SqliteStore.open(f"sqlite:///{tmp_path / 'off.db'}"))
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    store.saver.put(config, empty_checkpoint(), {}, {})  # type: ignore[arg-type]
    assert not store.saver.conn.in_transaction  # off a loop (LangGraph's sync API): committed at once
    asyncio.run(store.close())

    with GenieFlow(store=f"sqlite:///{tmp_path / 'flow.db'}") as flow:

        async def write_deferred() -> bool:
            opened = await flow._open_store()
            assert isinstance(opened, SqliteStore)
            opened.saver.commit_delay = 60.0  # no timer comes in time: only the call's own flush
            opened.saver.put(config, empty_checkpoint(), {}, {})  # type: ignore[arg-type]
            return opened.saver.conn.in_transaction

        assert flow._sync(write_deferred())  # deferred while the call runs
        assert isinstance(flow._store, SqliteStore)
        assert not flow._store.saver.conn.in_transaction  # committed before the call answered


def test_killed_run_is_not_reported_ready_with_an_event_it_would_refuse(tmp_path: Path) -> None:
    """Before anyone polls, the task state must not advertise an event the session refuses."""
    templates, store, sid = _kill_mid_flight(tmp_path)
    with runtime_flows.create_flow(templates, store) as flow:
        status = flow.get_task_state(runtime_flows.MODEL_KEY, sid)
        if status.ready:
            assert status.next_actions, "ready, but no event accepted"
            event = status.next_actions[0]
            answer = flow.process_event(
                runtime_flows.MODEL_KEY, EventInput(session_id=sid, event=event, event_input="probe")
            )
            assert answer.error is None, (
                f"task state said ready with next_actions {status.next_actions}, "
                f"but {event!r} was refused: {answer.error}"
            )
        else:
            assert status.next_actions == []
            runtime_flows.gate("killme").release.set()  # the redone run answers at once here
            final = send(flow, runtime_flows.MODEL_KEY, sid, POLL)
            assert final.response == "You said: Answer: gate:killme"


# ---- storage per session ------------------------------------------------------------------


def _checkpoint_rows(db: Path, thread_id: str) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread_id,)).fetchone()
    return int(count)


def _questions(kind: str) -> list[str]:
    """100 user questions: alike (compress well), or random words (compress poorly, closer to real chat)."""
    if kind == "alike":
        return [f"Question number {turn}: what about topic {turn}?" for turn in range(1, 101)]
    rng = random.Random(1234)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(14)) + "?" for _ in range(100)]


@pytest.mark.parametrize(
    ("keep", "kind"),
    [(None, "alike"), (None, "random-words"), (6, "random-words")],
    ids=["default-keep-alike", "default-keep-random-words", "keep-6-random-words"],
)
def test_storage_per_session_stays_linear(tmp_path: Path, keep: int | None, kind: str) -> None:
    db = tmp_path / "s.db"
    flow: GenieFlow = graphs.create_flow(f"sqlite:///{db}", **({} if keep is None else {"keep_checkpoints": keep}))
    try:
        sid = flow.create_new_session("q_and_a").session_id
        measured: dict[int, int] = {}
        checkpoints: dict[int, int] = {}
        for turn, question in enumerate(_questions(kind), start=1):
            answer = send(flow, "q_and_a", sid, "user_input", question)
            assert answer.error is None
            if turn in (10, 50, 100):
                measured[turn] = flow.session_bytes("q_and_a", sid)
                checkpoints[turn] = _checkpoint_rows(db, sid)
        dialogue_length = len(flow.get_model("q_and_a", sid).dialogue)
        kept = flow.keep_checkpoints
    finally:
        flow.close()

    b10, b50, b100 = measured[10], measured[50], measured[100]
    print(
        f"\nq_and_a on SQLite, {kind} questions, bytes per session (keep_checkpoints={kept}): "
        f"10 turns: {b10} B, 50 turns: {b50} B, 100 turns: {b100} B; "
        f"per turn 10->50: {(b50 - b10) / 40:.0f} B, 50->100: {(b100 - b50) / 50:.0f} B; "
        f"checkpoint rows: {checkpoints}"
    )
    assert dialogue_length == 1 + 2 * 100
    assert 0 < b10 < b50 < b100
    # Linear: the last 50 turns cost per turn about what turns 10..50 cost (30 % slack).
    assert (b100 - b50) <= 1.3 * (b50 - b10) * 50 / 40, measured
    assert checkpoints == {10: kept, 50: kept, 100: kept}


@pytest.mark.parametrize("keep", [2, 10])
def test_checkpoints_kept_per_session_match_keep_checkpoints(tmp_path: Path, keep: int) -> None:
    db = tmp_path / "s.db"
    flow = graphs.create_flow(f"sqlite:///{db}", keep_checkpoints=keep)
    try:
        sessions = [flow.create_new_session("q_and_a").session_id for _ in range(2)]
        for turn in range(12):
            for sid in sessions:
                send(flow, "q_and_a", sid, "user_input", f"turn {turn}")
        for sid in sessions:
            assert _checkpoint_rows(db, sid) == keep
            assert len(list(flow.graph("q_and_a").get_state_history({"configurable": {"thread_id": sid}}))) == keep
            assert len(flow.get_model("q_and_a", sid).dialogue) == 1 + 2 * 12
    finally:
        flow.close()


def test_a_poll_sees_what_another_process_wrote_after_the_run(tmp_path: Path) -> None:
    """The first poll after a run takes the run's answer as kept in memory, unless another writer
    (here another connection to the same file, as another process would be) wrote the store since."""
    store = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    poll = lambda sid: EventInput(session_id=sid, event=POLL, event_input="")  # noqa: E731
    here, there = graphs.create_flow(store), graphs.create_flow(store)
    try:
        sid = here.create_new_session("q_and_a").session_id
        here.process_event("q_and_a", EventInput(session_id=sid, event="user_input", event_input="first"))
        here.wait_until_ready(sid)  # here keeps the answer to "first" for the next poll
        assert "first" in (here.process_event("q_and_a", poll(sid)).response or "")  # taken from memory

        here.process_event("q_and_a", EventInput(session_id=sid, event="user_input", event_input="second"))
        here.wait_until_ready(sid)
        answered = send(there, "q_and_a", sid, "user_input", "third")  # the other writer moves the session on
        assert "third" in (answered.response or "")
        polled = here.process_event("q_and_a", poll(sid))
        assert polled == there.process_event("q_and_a", poll(sid)) and "third" in (polled.response or "")
    finally:
        here.close()
        there.close()


def test_an_event_is_decided_on_what_another_process_wrote_after_the_run(tmp_path: Path) -> None:
    """An event after a run here decides on the session as that run left it, unless another writer
    (another connection to the same file) wrote the store since: here it ended the session."""
    store = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    here, there = graphs.create_flow(store), graphs.create_flow(store)
    try:
        sid = here.create_new_session("q_and_a_cond").session_id
        assert send(here, "q_and_a_cond", sid, "user_input", "hello").next_actions == ["user_input"]
        assert send(there, "q_and_a_cond", sid, "user_input", "*STOP*").next_actions == []  # the outro: final
        refused = here.process_event("q_and_a_cond", EventInput(session_id=sid, event="user_input", event_input="more"))
        assert refused.error is not None and "outro" in refused.error, refused
        assert (
            here.get_model("q_and_a_cond", sid).dialogue[-1].actor_text
            == there.get_model("q_and_a_cond", sid).dialogue[-1].actor_text
        )
    finally:
        here.close()
        there.close()
