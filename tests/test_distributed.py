"""Many processes, one Redis: two runtime processes and two Celery workers (real processes).

The runtimes take events for the same sessions; the workers run the invoker states, one of them
also the named queue ``special``. A worker is SIGKILLed half way through an invocation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.distributed_flows import SPECIAL_QUEUE, write_templates
from tests.services import RedisServer, Worker, offline_env

LEASE_SECONDS = 2.0


class Runtime:
    """A runtime process (``tests/runtime_process.py``) spoken to over its stdin/stdout."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        root = Path(__file__).resolve().parent.parent
        environment = {**os.environ, **offline_env(), **env, "PYTHONPATH": str(root)}
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime_process"],
            cwd=root,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.read() == "ready"

    def write(self, **request: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"runtime process ended; see {self.log.name}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["ok"]

    def call(self, **request: Any) -> Any:
        self.write(**request)
        return self.read()

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    write_templates(root / "templates")
    (root / "markers").mkdir()
    return root


@pytest.fixture(scope="module")
def env(place: Path, redis_server: RedisServer) -> dict[str, str]:
    return {
        "GENIE_GRAPH_STORE": redis_server.url,
        "DISTRIBUTED_TEMPLATES": str(place / "templates"),
        "DISTRIBUTED_MARKERS": str(place / "markers"),
        "DISTRIBUTED_LEASE": str(LEASE_SECONDS),
    }


@pytest.fixture(scope="module")
def workers(place: Path, env: dict[str, str], redis_server: RedisServer) -> Iterator[list[Worker]]:
    spec = "tests.distributed_flows:build"
    pool = [
        Worker(spec, redis_server.url, place / "worker0.log", env=env).start(),
        Worker(spec, redis_server.url, place / "worker1.log", queues=f"genie-graph,{SPECIAL_QUEUE}", env=env).start(),
    ]
    yield pool
    for worker in pool:
        worker.stop()


@pytest.fixture(scope="module")
def runtimes(place: Path, env: dict[str, str], workers: list[Worker]) -> Iterator[list[Runtime]]:
    pair = [Runtime(env, place / f"runtime{n}.log") for n in range(2)]
    yield pair
    for runtime in pair:
        runtime.stop()


def settle(runtimes: list[Runtime], session_id: str, answer: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Poll, alternating between the runtimes, until the session waits for the user again."""
    deadline = time.monotonic() + timeout
    turn = 0
    while answer["next_actions"] == ["poll"] and answer["error"] is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id} did not settle within {timeout} s: {answer}")
        time.sleep(0.02)
        answer = runtimes[turn % 2].call(op="event", session_id=session_id, event="poll")
        turn += 1
    return answer


def dialogue(runtime: Runtime, session_id: str) -> list[tuple[str, str]]:
    model = runtime.call(op="model", session_id=session_id)
    return [(element["actor"], element["actor_text"]) for element in model["dialogue"]]


def test_events_alternating_between_runtimes_stay_consistent(runtimes: list[Runtime]) -> None:
    first, second = runtimes
    session_id = first.call(op="create")["session_id"]
    expected = [("assistant", "Hello! Ask away.")]
    for n, runtime in enumerate([second, first, second, first]):
        answer = runtime.call(op="event", session_id=session_id, event="user_input", text=f"question {n}")
        assert answer["next_actions"] == ["poll"], answer
        answer = settle(runtimes, session_id, answer)
        assert answer["error"] is None
        assert answer["response"].startswith(f"Answer: question {n} (pid ")
        assert answer["next_actions"] == ["user_input", "special"]
        expected += [("user", f"question {n}"), ("assistant", answer["response"])]
        assert dialogue(runtimes[n % 2], session_id) == expected


def test_concurrent_events_for_one_session_serialize(runtimes: list[Runtime]) -> None:
    first, second = runtimes
    session_id = first.call(op="create")["session_id"]
    first.write(op="event", session_id=session_id, event="user_input", text="pause:1.5")
    second.write(op="event", session_id=session_id, event="user_input", text="pause:1.5")
    answers = [first.read(), second.read()]
    accepted = [a for a in answers if a["error"] is None]
    refused = [a for a in answers if a["error"] is not None]
    assert len(accepted) == 1 and len(refused) == 1, answers
    assert "busy" in refused[0]["error"]
    assert refused[0]["next_actions"] == ["poll"]
    settle(runtimes, session_id, accepted[0])
    users = [text for actor, text in dialogue(first, session_id) if actor == "user"]
    assert users == ["pause:1.5"]


def test_named_queue_runs_only_on_its_workers(runtimes: list[Runtime], workers: list[Worker]) -> None:
    first, _second = runtimes
    session_id = first.call(op="create")["session_id"]
    for n in range(3):
        answer = first.call(op="event", session_id=session_id, event="special", text=f"route {n}")
        answer = settle(runtimes, session_id, answer)
        assert answer["response"] == f"Answer: route {n} (pid {workers[1].pid})"


def test_a_sigkilled_worker_loses_and_duplicates_nothing(
    runtimes: list[Runtime], workers: list[Worker], place: Path
) -> None:
    first, second = runtimes
    session_id = first.call(op="create")["session_id"]
    answer = first.call(op="event", session_id=session_id, event="user_input", text="slow:kill-me")
    mark = place / "markers" / "kill-me"
    deadline = time.monotonic() + 30
    while not mark.exists() or not mark.read_text():
        assert time.monotonic() < deadline, "no worker started the invocation"
        time.sleep(0.02)
    pid = int(mark.read_text())
    victim = next(worker for worker in workers if worker.pid == pid)
    assert second.call(op="event", session_id=session_id, event="poll")["next_actions"] == ["poll"]
    os.kill(pid, signal.SIGKILL)
    assert victim.process is not None
    victim.process.wait(timeout=10)
    try:
        answer = settle(runtimes, session_id, answer, timeout=60)
        assert answer["error"] is None
        assert answer["response"] == "Answer: slow:kill-me"
        assert dialogue(second, session_id) == [
            ("assistant", "Hello! Ask away."),
            ("user", "slow:kill-me"),
            ("assistant", "Answer: slow:kill-me"),
        ]
        later = settle(
            runtimes, session_id, first.call(op="event", session_id=session_id, event="user_input", text="after")
        )
        assert later["response"].startswith("Answer: after (pid ")
    finally:
        victim.start()  # the module's other tests keep two workers


def test_a_sigkilled_workers_run_is_resumed_without_a_poll(
    runtimes: list[Runtime], workers: list[Worker], place: Path
) -> None:
    """The surviving worker's sweep finds the orphaned run; nobody polls the session meanwhile."""
    first, _second = runtimes
    session_id = first.call(op="create")["session_id"]
    first.call(op="event", session_id=session_id, event="user_input", text="slow:unpolled")
    mark = place / "markers" / "unpolled"
    deadline = time.monotonic() + 30
    while not mark.exists() or not mark.read_text():
        assert time.monotonic() < deadline, "no worker started the invocation"
        time.sleep(0.02)
    victim = next(worker for worker in workers if worker.pid == int(mark.read_text()))
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.process is not None
    victim.process.wait(timeout=10)
    try:
        deadline = time.monotonic() + 60
        while len(dialogue(first, session_id)) < 3:  # reading the model does not resume runs
            assert time.monotonic() < deadline, "the orphaned run was not resumed"
            time.sleep(0.1)
        assert dialogue(first, session_id)[1:] == [("user", "slow:unpolled"), ("assistant", "Answer: slow:unpolled")]
    finally:
        victim.start()
