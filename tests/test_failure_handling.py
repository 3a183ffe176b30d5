"""Declared failure handling: retries, timeouts, on_error (text, event, state), per-state policies,
the history of failures, and runs whose process dies (killed for real, in a subprocess).

The invoker is a real ``GenieInvoker`` in this module, scripted by the prompt (the user's text):

* ``failN:...`` fails its first N calls (``fail:...`` always fails);
* ``hangN:...`` hangs its first N calls (until the module's tests end);
* ``die_once:<marker file>`` kills its process the first time (it writes the marker), then answers;
* ``die:...`` kills its process every time (only in a child process; in the test process it raises);
* anything else answers ``ANSWER <prompt>``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from genie_graph import (
    POLL,
    EventData,
    EventInput,
    FailurePolicy,
    GenieFlow,
    GenieInvoker,
    GenieModel,
    GenieStateMachine,
    HistoryKind,
    RetryPolicy,
    State,
)
from genie_graph.errors import FlowDefinitionError, InvokerConfigError

from .helpers import RENDERER_META, send, write_tree

ROOT = Path(__file__).resolve().parent.parent
CALLS: Counter[str] = Counter()
RELEASE = threading.Event()
CHILD = "GENIE_FAILURE_TEST_CHILD"


class Scripted(GenieInvoker):
    """Answers, fails, hangs or kills its process, as the prompt says (see the module docstring)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Scripted:
        return cls()

    def invoke(self, content: str) -> str:
        CALLS[content] += 1
        call = CALLS[content]
        command, _, rest = content.partition(":")
        if command.startswith("fail") and call <= int(command[4:] or 1_000_000):
            raise RuntimeError(f"flaky call {call}")
        if command.startswith("hang") and call <= int(command[4:] or 1_000_000):
            RELEASE.wait(120)
            raise RuntimeError("released at the end of the tests")
        if command == "die_once":
            try:
                Path(rest).open("x").close()
            except FileExistsError:
                return f"ANSWER {content}"
            self._die()
        if command == "die":
            self._die()
        return f"ANSWER {content}"

    @staticmethod
    def _die() -> None:
        if os.environ.get(CHILD) != "1":
            raise RuntimeError("would kill the test process")
        os.kill(os.getpid(), signal.SIGKILL)


INVOKER = "  type: tests.test_failure_handling.Scripted\n"
TEMPLATES = {
    "f/meta.yaml": RENDERER_META,
    "f/ask.jinja2": "Ask me.",
    "f/answer.jinja2": "{{ actor_input }}",
    "f/sorry.jinja2": "Sorry.",
    "f/other.jinja2": "{{ actor_input }}",
    "errors/meta.yaml": RENDERER_META,
    "errors/llm_down.jinja2": "The model is unavailable ({{ error }}). Ask again, {{ name }}.",
    # retries with a capped, jittered backoff and a timeout per call
    "llm/meta.yaml": (
        "invoker:\n" + INVOKER + "  retry: {retries: 2, backoff_seconds: 0.01, max_backoff_seconds: 0.02, "
        "jitter: true, timeout_seconds: 0.5}\n"
    ),
    "llm/think.jinja2": "{{ actor_input }}",
    "plain/meta.yaml": "invoker:\n" + INVOKER + "  retry: 1\n",
    "plain/think.jinja2": "{{ actor_input }}",
    "to_state/meta.yaml": (
        "invoker:\n" + INVOKER + "  retry: 1\n  on_error: {state: sorry, template: errors/llm_down.jinja2}\n"
    ),
    "to_state/think.jinja2": "{{ actor_input }}",
    "to_state/second.jinja2": "fail:{{ actor_input }}",
    "to_event/meta.yaml": (
        "invoker:\n" + INVOKER + "  on_error:\n    event: llm_failed\n    content: 'failed: {{ error }}'\n"
    ),
    "to_event/think.jinja2": "{{ actor_input }}",
    "die/meta.yaml": "invoker:\n" + INVOKER + "  retry: {resumes: 1}\n",
    "die/think.jinja2": "{{ actor_input }}",
}


class FailureModel(GenieModel):
    name: str = "Ada"
    think_exits: int = 0
    sorry_entries: list[str] = []


def make_model(think_template: Any, on_failure: Mapping[str, Any] | None = None) -> type[FailureModel]:
    """ask -user_input-> think (invoker: ``think_template``) -ai_extraction-> answer; llm_failed -> other.

    ``sorry`` is reached from ``answer`` by ``apologise`` only: no transition leads there from ``think``.
    """

    class FailureMachine(GenieStateMachine):
        ask = State(initial=True, value="ask")
        think = State(value="think")
        answer = State(value="answer")
        sorry = State(value="sorry")
        other = State(value="other")

        user_input = ask.to(think) | answer.to(think) | sorry.to(think) | other.to(think)
        ai_extraction = think.to(answer)
        llm_failed = think.to(other)
        apologise = answer.to(sorry)

        templates = dict(
            ask="f/ask.jinja2",
            think=think_template,
            answer="f/answer.jinja2",
            sorry="f/sorry.jinja2",
            other="f/other.jinja2",
        )

        def on_exit_think(self) -> None:
            self.model.think_exits += 1

        def on_enter_sorry(self, event_data: EventData) -> None:
            self.model.sorry_entries.append(f"{event_data.event}: {event_data.args[0]}")

    FailureMachine.on_failure = dict(on_failure or {})

    class Model(FailureModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return FailureMachine

    return Model


@pytest.fixture(scope="module", autouse=True)
def _release_hanging_calls() -> Iterator[None]:
    yield
    RELEASE.set()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "prompts", TEMPLATES)


@pytest.fixture
def make_flow(templates: Path, store_url: str) -> Iterator[Any]:
    flows: list[GenieFlow] = []

    def make(think: Any, on_failure: Mapping[str, Any] | None = None) -> GenieFlow:
        flow = GenieFlow(templates, store=store_url)
        flow.register_model("f", make_model(think, on_failure))
        flows.append(flow)
        return flow

    yield make
    for flow in flows:
        flow.close()


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:8]}"


def failures(flow: GenieFlow, sid: str) -> list[Any]:
    return [e for e in flow.get_model("f", sid).history if e.kind is HistoryKind.INVOKER_FAILURE]


def runs(flow: GenieFlow, sid: str) -> list[Any]:
    return [e for e in flow.get_model("f", sid).history if e.kind is HistoryKind.INVOKER_RUN]


# ---- retries and timeouts -----------------------------------------------------------------------


def test_failed_calls_are_retried_until_one_succeeds_and_each_is_in_the_history(make_flow: Any) -> None:
    flow = make_flow("llm/think.jinja2")
    sid = flow.create_new_session("f").session_id
    text = unique("fail2")
    answer = send(flow, "f", sid, "user_input", text)
    assert answer.error is None and answer.response == f"ANSWER {text}"
    assert CALLS[text] == 3
    entries = failures(flow, sid)
    assert [(e.state, e.template, e.attempt) for e in entries] == [
        ("think", "llm/think.jinja2", 1),
        ("think", "llm/think.jinja2", 2),
    ]
    assert ["flaky call 1" in (entries[0].error or ""), "flaky call 2" in (entries[1].error or "")] == [True, True]
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in entries)
    assert [r.outcome for r in runs(flow, sid)] == ["ok"]
    assert flow.get_model("f", sid).task_error is None


def test_a_call_that_times_out_is_cancelled_and_retried(make_flow: Any) -> None:
    flow = make_flow("llm/think.jinja2")
    sid = flow.create_new_session("f").session_id
    text = unique("hang1")
    answer = send(flow, "f", sid, "user_input", text)
    assert answer.error is None and answer.response == f"ANSWER {text}"
    [entry] = failures(flow, sid)
    assert entry.attempt == 1 and entry.error is not None
    assert entry.error.startswith("InvokerTimeout: the call did not answer within 0.5 s")


def test_calls_that_all_time_out_fail_the_run_with_the_timeout(make_flow: Any) -> None:
    flow = make_flow("llm/think.jinja2")
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", unique("hang"))
    assert answer.error is not None
    assert "did not answer within 0.5 s (attempt 3)" in json.loads(answer.error)["exception"]
    assert [e.attempt for e in failures(flow, sid)] == [1, 2, 3]


# ---- after the last failure -----------------------------------------------------------------------


def test_without_on_error_the_error_shows_until_the_flow_moves_on(make_flow: Any) -> None:
    flow = make_flow("plain/think.jinja2")
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", unique("fail"))
    assert answer.error is not None and "flaky call 2" in json.loads(answer.error)["exception"]
    assert answer.next_actions == ["user_input", "apologise"]  # Genie Flow's way: the completion event was sent
    assert flow.get_model("f", sid).state == "answer"
    again = flow.process_event("f", EventInput(session_id=sid, event=POLL, event_input=""))
    assert again.error == answer.error  # polls keep answering it ...
    assert [e.attempt for e in failures(flow, sid)] == [1, 2]
    assert [r.outcome for r in runs(flow, sid)] == ["failed"]

    fine = send(flow, "f", sid, "user_input", "fine")  # ... until the flow moves on
    assert fine.error is None and fine.response == "ANSWER fine"
    assert flow.get_model("f", sid).task_error is None
    assert flow.process_event("f", EventInput(session_id=sid, event=POLL, event_input="")).error is None


def test_the_error_is_cleared_in_the_http_api_once_the_flow_moves_on(templates: Path) -> None:
    from fastapi.testclient import TestClient

    from api import create_app

    flow = GenieFlow(templates, store="memory://")
    flow.register_model("f", make_model("plain/think.jinja2"))
    with TestClient(create_app(flow, playground=False)) as client:

        def event(sid: str, name: str, text: str = "") -> dict[str, Any]:
            body = {"session_id": sid, "event": name, "event_input": text}
            answer: dict[str, Any] = client.post("/v1/ai/f/event", json=body).json()
            for _ in range(3000):
                if answer["next_actions"] != [POLL] or answer["error"] is not None:
                    return answer
                answer = client.post("/v1/ai/f/event", json={**body, "event": POLL, "event_input": ""}).json()
            raise AssertionError(f"session {sid} did not settle: {answer}")

        sid = client.get("/v1/ai/f/start_session").json()["session_id"]
        failed = event(sid, "user_input", unique("fail"))
        assert failed["error"] is not None and failed["response"] is None
        moved = event(sid, "user_input", "fine")
        assert moved["error"] is None and moved["response"] == "ANSWER fine"
        assert event(sid, POLL)["error"] is None
        model = client.get(f"/v1/ai/f/model/{sid}").json()
        assert json.loads(model["response"])["task_error"] is None


def test_on_error_state_moves_to_it_with_the_rendered_message(make_flow: Any) -> None:
    flow = make_flow("to_state/think.jinja2")
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", unique("fail"))
    assert answer.error is None
    assert answer.response == "The model is unavailable (Scripted failed: RuntimeError: flaky call 2). Ask again, Ada."
    assert answer.next_actions == ["user_input"]
    model = flow.get_model("f", sid)
    assert model.state == "sorry" and model.task_error is None
    assert (model.dialogue[-1].actor, model.dialogue[-1].actor_text) == ("assistant", answer.response)
    assert model.sorry_entries == [f"on_error: {answer.response}"]  # its enter hook ran, with the message
    assert model.think_exits == 0  # the invoker state's exit hook (capturing an output) did not
    moves = [(e.state, e.event, e.target) for e in model.history if e.kind is HistoryKind.EVENT]
    assert moves[-1] == ("think", "on_error", "sorry")
    assert [e.attempt for e in failures(flow, sid)] == [1, 2]
    [run] = runs(flow, sid)
    assert run.outcome == "failed" and run.detail == {"on_error": "sorry"}

    fine = send(flow, "f", sid, "user_input", "fine")  # the user goes on from the error state
    assert fine.error is None and fine.response == "ANSWER fine"
    assert flow.get_model("f", sid).state == "answer"


def test_on_error_event_sends_it_instead_of_the_completion_event(make_flow: Any) -> None:
    flow = make_flow("to_event/think.jinja2")
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", unique("fail"))
    assert answer.error is None
    assert answer.response == "failed: Scripted failed: RuntimeError: flaky call 1"
    model = flow.get_model("f", sid)
    assert model.state == "other" and model.task_error is None
    assert model.think_exits == 1  # a declared transition: its hooks run
    assert [e.attempt for e in failures(flow, sid)] == [1]


def test_a_state_policy_overrides_its_directory(make_flow: Any) -> None:
    policy = {"retry": {"retries": 3}, "on_error": {"state": "sorry", "message": "Down: {{ error }}"}}
    flow = make_flow("plain/think.jinja2", {"think": policy})  # the directory says retry: 1, no on_error
    sid = flow.create_new_session("f").session_id
    text = unique("fail3")
    assert send(flow, "f", sid, "user_input", text).response == f"ANSWER {text}"
    assert [e.attempt for e in failures(flow, sid)] == [1, 2, 3]

    down = send(flow, "f", sid, "user_input", unique("fail"))
    assert down.error is None and down.response == "Down: Scripted failed: RuntimeError: flaky call 4"
    assert flow.get_model("f", sid).state == "sorry"


def test_a_state_policy_object_keeps_the_directory_keys_it_does_not_set(make_flow: Any) -> None:
    flow = make_flow("to_state/think.jinja2", {"think": FailurePolicy(retry=RetryPolicy(retries=2))})
    sid = flow.create_new_session("f").session_id
    answer = send(flow, "f", sid, "user_input", unique("fail"))
    assert answer.response is not None and "flaky call 3" in answer.response  # its retry, the directory's on_error
    assert flow.get_model("f", sid).state == "sorry"


def test_each_template_of_a_composite_keeps_its_own_policy_and_history(make_flow: Any) -> None:
    flow = make_flow(["plain/think.jinja2", "to_state/second.jinja2"])
    sid = flow.create_new_session("f").session_id
    text = unique("fail1")
    answer = send(flow, "f", sid, "user_input", text)  # the first step fails once; the second always
    assert answer.error is None and answer.response is not None
    assert answer.response.startswith("The model is unavailable (Scripted failed: RuntimeError: flaky call 2)")
    assert flow.get_model("f", sid).state == "sorry"
    assert [(e.template, e.attempt) for e in failures(flow, sid)] == [
        ("plain/think.jinja2", 1),
        ("to_state/second.jinja2", 1),
        ("to_state/second.jinja2", 2),
    ]


# ---- build-time checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_failure", "expected"),
    [
        ({"nowhere": {"retry": 1}}, "on_failure names states that do not exist"),
        ({"answer": {"retry": 1}}, "on_failure names a user state"),
        ({"think": {"retries": 1}}, "takes retry: and on_error:"),
        ({"think": {"retry": {"retries": 1, "wait": 2}}}, "'retry:' must be"),
        ({"think": {"on_error": {"state": "limbo", "message": "x"}}}, "'limbo', which does not exist"),
        ({"think": {"on_error": {"state": "think", "message": "x"}}}, "an invoker state"),
        ({"think": {"on_error": {"state": "sorry", "template": "errors/missing.jinja2"}}}, "missing.jinja2"),
        ({"think": {"on_error": {"state": "sorry", "message": "{{ oops"}}}, "on_error of its on_failure"),
        ({"think": {"on_error": {"event": "apologise"}}}, "does not leave state 'think'"),
        ({"think": {"on_error": {"state": "sorry"}}}, "a state form is"),
    ],
)
def test_a_wrong_policy_is_refused_at_registration(templates: Path, on_failure: dict[str, Any], expected: str) -> None:
    with GenieFlow(templates, store="memory://") as flow, pytest.raises(FlowDefinitionError) as caught:
        flow.register_model("f", make_model("plain/think.jinja2", on_failure))
    assert expected in str(caught.value)


def test_a_wrong_on_error_in_a_meta_yaml_is_refused_at_registration(templates: Path) -> None:
    write_tree(templates, {"bad/meta.yaml": "invoker:\n" + INVOKER + "  on_error: {state: nowhere, message: x}\n"})
    write_tree(templates, {"bad/think.jinja2": "{{ actor_input }}"})
    with GenieFlow(templates, store="memory://") as flow, pytest.raises(FlowDefinitionError) as caught:
        flow.register_model("f", make_model("bad/think.jinja2"))
    assert "the meta.yaml of template 'bad/think.jinja2'" in str(caught.value)
    assert caught.value.culprits == ["think"]


def test_the_diagram_shows_the_on_error_move(templates: Path) -> None:
    with GenieFlow(templates, store="memory://") as flow:
        flow.register_model("f", make_model("to_state/think.jinja2"))
        assert flow.flow_of("f").targets["think"]["sorry"] == ["on_error"]


def test_retry_policy_shapes_and_waits() -> None:
    assert RetryPolicy.parse(2) == RetryPolicy(retries=2)
    assert RetryPolicy.parse({"attempts": 3}).retries == 2
    policy = RetryPolicy.parse({"retries": 5, "backoff_seconds": 1, "max_backoff_seconds": 3, "timeout_seconds": 9})
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert policy.timeout_seconds == 9 and policy.calls == 6
    jittered = RetryPolicy.parse({"retries": 1, "backoff_seconds": 2, "jitter": True})
    assert jittered.jitter == 0.5
    assert all(1.0 <= jittered.delay(1) <= 2.0 for _ in range(100))
    for wrong in ({"retries": 1, "attempts": 2}, {"timeout_seconds": 0}, {"jitter": 2}, "3", True):
        with pytest.raises(InvokerConfigError):
            RetryPolicy.parse(wrong)


# ---- a process that dies mid-run ---------------------------------------------------------------------

DIE_MODEL = make_model("die/think.jinja2")


def build_flow(store: str, templates: str, lease: float) -> GenieFlow:
    """The flow the child processes run (and the test, to look at what they left)."""
    flow = GenieFlow(templates, store=store, run_lease_seconds=lease)
    flow.register_model("f", DIE_MODEL)
    return flow


CHILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from genie_graph import POLL, EventInput
    from tests.test_failure_handling import build_flow

    store, templates, session_id, text = sys.argv[1:5]
    flow = build_flow(store, templates, lease=1.0)
    if session_id == "new":
        session_id = flow.create_new_session("f").session_id
        print(session_id, flush=True)
        answer = flow.process_event("f", EventInput(session_id=session_id, event="user_input", event_input=text))
    else:
        answer = flow.process_event("f", EventInput(session_id=session_id, event=POLL, event_input=""))
    deadline = time.monotonic() + 60
    while answer.next_actions == [POLL] and answer.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = flow.process_event("f", EventInput(session_id=session_id, event=POLL, event_input=""))
    print("survived", answer.model_dump_json(), flush=True)
    flow.close()
    """
)


def run_child(store: str, templates: Path, session_id: str, text: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CHILD: "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, store, str(templates), session_id, text],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(params=["sqlite", "redis"])
def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


def test_a_run_whose_process_is_killed_is_resumed(durable_store: str, templates: Path, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    child = run_child(durable_store, templates, "new", f"die_once:{marker}")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert marker.exists()
    sid = child.stdout.split()[0]

    with build_flow(durable_store, str(templates), lease=1.0) as flow:
        answer = send(flow, "f", sid, POLL)  # resumed here once the dead run's lease is gone
        assert answer.error is None and answer.response == f"ANSWER die_once:{marker}"
        model = flow.get_model("f", sid)
        assert model.state == "answer" and model.task_error is None
        [cut_off] = failures(flow, sid)
        assert cut_off.attempt == 1 and cut_off.detail == {"cut_off": True}
        assert [d.actor_text for d in model.dialogue][-1] == answer.response  # recorded once


def test_a_run_that_kills_its_process_every_time_is_failed_cleanly(durable_store: str, templates: Path) -> None:
    first = run_child(durable_store, templates, "new", "die:poison")
    assert first.returncode == -signal.SIGKILL, first.stderr
    sid = first.stdout.split()[0]
    resumed = run_child(durable_store, templates, sid)  # retry: {resumes: 1}: resumed once, and it dies again
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr

    with build_flow(durable_store, str(templates), lease=1.0) as flow:
        answer = send(flow, "f", sid, POLL)  # not resumed a second time: failed, and the poll says why
        assert answer.error is not None
        error = json.loads(answer.error)
        assert error["exception"].startswith("RunCutOff: the run of state 'think' was started 2 times")
        assert answer.next_actions == ["user_input", "apologise"]
        assert flow.get_model("f", sid).state == "answer"
        assert [(e.attempt, (e.detail or {}).get("cut_off")) for e in failures(flow, sid)] == [(1, True), (2, True)]
        assert send(flow, "f", sid, POLL).error == answer.error  # polls answer; nothing runs again

        fine = send(flow, "f", sid, "user_input", "fine")
        assert fine.error is None and fine.response == "ANSWER fine"
        assert flow.get_model("f", sid).task_error is None


def build_celery_flow(store: str | None = None) -> GenieFlow:
    """The flow of the Celery workers of the test below (``genie-graph worker --flow``)."""
    store = store or os.environ["GENIE_GRAPH_STORE"]
    flow = GenieFlow(os.environ["FAILURE_TEMPLATES"], store=store, runner="celery", run_lease_seconds=1.0)
    flow.register_model("f", DIE_MODEL)
    return flow


def test_a_celery_run_that_kills_its_worker_every_time_is_failed_cleanly(
    redis_url: str, templates: Path, tmp_path: Path
) -> None:
    from tests.services import Worker

    env = {CHILD: "1", "FAILURE_TEMPLATES": str(templates), "GENIE_GRAPH_STORE": redis_url}
    with GenieFlow(templates, store=redis_url, runner="celery", run_lease_seconds=1.0) as flow:
        flow.register_model("f", DIE_MODEL)
        sid = flow.create_new_session("f").session_id
        queued = flow.process_event("f", EventInput(session_id=sid, event="user_input", event_input="die:celery"))
        assert queued.next_actions == [POLL]
        for n in range(2):  # a worker takes the run (the second by its sweep) and dies with it
            worker = Worker("tests.test_failure_handling:build_celery_flow", redis_url, tmp_path / f"w{n}.log", env=env)
            worker.start()
            assert worker.process is not None
            assert worker.process.wait(timeout=60) == -signal.SIGKILL
        survivor = Worker("tests.test_failure_handling:build_celery_flow", redis_url, tmp_path / "w2.log", env=env)
        survivor.start()
        try:
            answer = send(flow, "f", sid, POLL)  # the third start is refused: failed cleanly
        finally:
            survivor.stop()
        assert answer.error is not None
        assert json.loads(answer.error)["exception"].startswith(
            "RunCutOff: the run of state 'think' was started 2 times"
        )
        assert [(e.detail or {}).get("cut_off") for e in failures(flow, sid)] == [True, True]
        assert flow.get_model("f", sid).state == "answer"


# ---- an OpenAI-compatible server that fails or hangs -------------------------------------------------


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    from tests.openai_server import start_openai_server

    url, stop = start_openai_server()
    yield url
    stop()


@pytest.mark.parametrize(("text", "cause"), [("__SLOW__", "did not answer within 0.5 s"), ("__HTTP500__", "500")])
def test_an_llm_server_that_hangs_or_fails_ends_in_the_error_state(
    tmp_path: Path, llm_url: str, text: str, cause: str
) -> None:
    meta = (
        f"invoker:\n  type: openai\n  model: test-model\n  base_url: {llm_url}\n  api_key_env: NO_SUCH_KEY\n"
        "  max_retries: 0\n  retry: {retries: 1, timeout_seconds: 0.5}\n"
        "  on_error: {state: sorry, message: 'The model failed: {{ error }}'}\n"
    )
    root = write_tree(
        tmp_path / "prompts", {**TEMPLATES, "openai/meta.yaml": meta, "openai/think.jinja2": "{{ actor_input }}"}
    )
    with GenieFlow(root, store="memory://") as flow:
        flow.register_model("f", make_model("openai/think.jinja2"))
        sid = flow.create_new_session("f").session_id
        answer = send(flow, "f", sid, "user_input", text)
        assert answer.error is None and answer.response is not None
        assert answer.response.startswith("The model failed: ") and cause in answer.response
        assert flow.get_model("f", sid).state == "sorry"
        assert [e.attempt for e in failures(flow, sid)] == [1, 2]
        assert send(flow, "f", sid, "user_input", "back again").response == "ECHO: back again"
