"""Sub-flows and interruptions (issue 9) outlive their process, move between processes, and work over HTTP.

The example ``graphs/ordering.py`` runs here against real services, each started once for the module
(early, and a few at a time):

* SQLite: a runtime process (``tests/subflow_process.py``) takes the order into the address sub-flow
  and has ``cancel`` interrupt it, then exits, or is SIGKILLed; this process goes on from there. Another
  is SIGKILLed while the "so far" interruption's LLM call is in flight; this process redoes the run.
* Redis: two runtime processes take turns on one session; one is SIGKILLed half way.
* Redis + two Celery workers behind ``genie-graph serve --runner celery``: the "so far" interruption,
  whose first state is an invoker state, runs on a worker while the client polls.
* ``genie-graph serve`` (uvicorn) on SQLite: the JSON of each answer, the history route, refusals.
* The real langchain-openai client: the ordering flow's intent classifier and summary prompts go to
  ``tests/openai_server.py``'s handler, here taught to answer the classifier's prompt with a label
  (the server itself echoes every prompt, which is never an intent label).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import graphs
from genie_graph import EventInput
from tests import openai_server
from tests.helpers import send
from tests.openai_server import recorded_requests, reset_requests
from tests.services import ApiServer, RedisServer, Worker, offline_env

ROOT = Path(__file__).resolve().parent.parent
KEY = "ordering"
PREFIX = "/v1/ai"
GENIE_FLOW_KEYS = {"session_id", "next_actions", "error", "response", "progress"}
FLOW_KEYS = ("active_flows", "interrupted_by", "resumed", "aborted")
ASK_STREET = "Where shall we deliver?"
ANYTHING_ELSE = "Anything else?"
ORDER_SO_FAR = 'Your order so far: {}. Anything else? Say "done" when your order is complete.'

# The cancel conversation of graphs/ordering.genie.yaml, taken all the way to a placed order:
# (event, text, the node the session is at after it, the flow keys its answer has, texts the response holds)
STEPS: list[tuple[str, str, str, dict[str, Any], list[str]]] = [
    ("user_input", "jam", "taking_order", {}, ["Your order so far: jam.", ANYTHING_ELSE]),
    ("user_input", "done", "address/asking_street", {"active_flows": ["order", "address"]}, [ASK_STREET]),
    (
        "cancel",
        "",
        "cancel_order/asking",
        {"active_flows": ["order", "address", "cancel_order"], "interrupted_by": "cancel_order"},
        ["Cancel your whole order (jam)? (yes/no)"],
    ),
    (
        "user_input",
        "no",
        "address/asking_street",
        {"active_flows": ["order", "address"], "resumed": "address"},
        ["Good, your order stays.", ASK_STREET],
    ),
    ("user_input", "Main Street 1", "address/asking_city", {"active_flows": ["order", "address"]}, ["And the city?"]),
    (
        "user_input",
        "Springfield",
        "confirm/asking",
        {"active_flows": ["order", "address", "confirm"]},
        ["Main Street 1, Springfield: is that right? (yes/no)"],
    ),
    (
        "user_input",
        "yes",
        "confirming",
        {},
        ["Thanks, we deliver to Main Street 1, Springfield.", "Shall I place the order?"],
    ),
    ("user_input", "yes", "placed", {}, ["Your order is placed."]),
]
CUT = 3
"""The first process stops after this many steps: cancel_order interrupts the address sub-flow."""

NEXT_ACTIONS = {"cancel_order/asking": ["user_input"], "confirming": ["user_input"], "placed": []}
"""The events each node takes, where they are not ``[user_input, cancel]``."""

# Every hook and flow change of that conversation, once: (kind, flow, state, event, target).
HISTORY = [
    ("state_entered", None, "taking_order", None, None),
    ("event", None, "taking_order", "user_input", "taking_order"),
    ("event", None, "taking_order", "user_input", "getting_address"),
    ("flow_started", "address", "getting_address", None, None),
    ("state_entered", "address", "asking_street", None, None),
    ("event", "address", "asking_street", "cancel", "cancel_order/asking"),
    ("flow_interrupted", "address", "asking_street", None, None),
    ("flow_started", "cancel_order", "asking_street", None, None),
    ("state_entered", "cancel_order", "asking", None, None),
    ("event", "cancel_order", "asking", "user_input", "kept"),
    ("flow_completed", "cancel_order", "kept", None, None),
    ("flow_resumed", "address", "asking_street", None, None),
    ("event", "address", "asking_street", "user_input", "asking_city"),
    ("event", "address", "asking_city", "user_input", "checking"),
    ("flow_started", "confirm", "checking", None, None),
    ("state_entered", "confirm", "asking", None, None),
    ("event", "confirm", "asking", "user_input", "answered"),
    ("flow_completed", "confirm", "answered", None, None),
    ("event", "address", "checking", "checked", "delivered"),
    ("flow_completed", "address", "delivered", None, None),
    ("event", None, "getting_address", "address_done", "confirming"),
    ("event", None, "confirming", "user_input", "placed"),
]


# ---- checking a session -------------------------------------------------------------------------
def flow_keys(answer: dict[str, Any]) -> dict[str, Any]:
    """The sub-flow keys an answer's JSON has (they are left out where they do not apply)."""
    return {key: answer[key] for key in FLOW_KEYS if key in answer}


def check_step(step: int, answer: dict[str, Any]) -> None:
    _event, text, node, keys, contains = STEPS[step]
    where = f"step {step} ({text or _event!r})"
    assert answer["error"] is None, (where, answer)
    assert set(answer) - set(FLOW_KEYS) == GENIE_FLOW_KEYS, (where, answer)
    assert flow_keys(answer) == keys, (where, answer)
    assert answer["next_actions"] == NEXT_ACTIONS.get(node, ["user_input", "cancel"]), (where, answer)
    for part in contains:
        assert part in answer["response"], (where, part, answer["response"])


def history_of(model: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(e["kind"], e["flow"], e["state"], e["event"], e["target"]) for e in model["history"]]


def dialogue_of(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["actor"], e["actor_text"]) for e in model["dialogue"]]


def check_finished(model: dict[str, Any], reference: dict[str, Any]) -> None:
    """The session after all of STEPS: every hook ran once, nothing said twice, as in one process."""
    assert history_of(model) == HISTORY
    assert history_of(model) == history_of(reference)
    assert [e["detail"] for e in model["history"]] == [e["detail"] for e in reference["history"]]
    assert dialogue_of(model) == dialogue_of(reference)
    users = [text for actor, text in dialogue_of(model) if actor == "user"]
    assert users == [text for _event, text, *_ in STEPS if text]  # cancel carries no text
    said = [text for actor, text in dialogue_of(model) if actor == "assistant"]
    assert all(a != b for a, b in zip(said, said[1:], strict=False))  # nothing said twice in a row
    assert model["items"] == ["jam"]  # on_user_input of taking_order ran once
    assert model["address"] == "Main Street 1, Springfield"
    assert model["flows"]["frames"] == [] and model["flows"]["status"] == "active"


def as_json(answer: Any) -> dict[str, Any]:
    """An in-process AIResponse as the JSON a client gets."""
    return json.loads(answer.model_dump_json())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The conversation in one process on the memory store: what every other run must equal."""
    flow = graphs.create_flow("memory://")
    try:
        session_id = flow.create_new_session(KEY).session_id
        for step, (event, text, node, *_rest) in enumerate(STEPS):
            check_step(step, as_json(send(flow, KEY, session_id, event, text)))
            assert flow.flow_of(KEY).node_of(flow.get_model(KEY, session_id)) == node
        model = flow.get_model(KEY, session_id).model_dump(mode="json")
    finally:
        flow.close()
    assert history_of(model) == HISTORY
    return model


# ---- runtime processes --------------------------------------------------------------------------
class Runtime:
    """A ``tests/subflow_process.py`` process on ``store``, spoken to over its stdin/stdout."""

    def __init__(self, store: str, log: Path, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.environment = {**os.environ, **offline_env(), "PYTHONPATH": str(ROOT), **(env or {})}
        self.environment.update(
            GENIE_GRAPH_STORE=store, GENIE_GRAPH_DATA_DIR=str(data_dir), GENIE_GRAPH_RUNNER="inline"
        )
        self.environment.pop("GENIE_GRAPH_OFFLINE", None)
        self.log_path = log
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Runtime:
        """Start the process and wait until it is ready for requests."""
        with open(self.log_path, "ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.subflow_process"],
                cwd=ROOT,
                env=self.environment,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.read() == "ready"
        return self

    def read(self) -> Any:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"runtime process ended; see {self.log_path}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["ok"]

    def call(self, **request: Any) -> Any:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.read()

    def send(self, session_id: str, event: str, text: str = "") -> dict[str, Any]:
        return self.call(op="send", session_id=session_id, event=event, text=text)  # type: ignore[no-any-return]

    def node(self, session_id: str) -> str:
        return self.call(op="model", session_id=session_id)["node"]  # type: ignore[no-any-return]

    def model(self, session_id: str) -> dict[str, Any]:
        return self.call(op="model", session_id=session_id)["model"]  # type: ignore[no-any-return]

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        """End the process as a server does: its input closes, it closes its flow and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


class SteeredHandler(openai_server._Handler):
    """``tests/openai_server.py``'s handler, except that it answers the intent classifier's prompt with
    a label ("Help." when the statement asks for help, else "none") instead of echoing it.

    The first prompt holding ``__HOLD__`` is held until ``release`` is set (``held`` tells it arrived).
    """

    held = threading.Event()
    release = threading.Event()

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        prompt = openai_server._last_user_content(messages)
        if "__HOLD__" in prompt and not SteeredHandler.held.is_set():
            SteeredHandler.held.set()
            SteeredHandler.release.wait(30)
        if "*** INTENTS ***" not in prompt:
            super()._chat(body)
            return
        statement = prompt.rsplit("*** MOST RECENT HUMAN STATEMENT ***", 1)[-1].lower()
        reply = "Help." if "help" in statement or "how does" in statement else "none"
        model = str(body.get("model") or "fake-model")
        usage = openai_server._usage(messages, reply)
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, reply, 0.0, usage if with_usage else None)
        else:
            self._send_json(200, openai_server._completion(model, reply, usage))


# ---- the services, started early and a few at a time ------------------------------------------
def side_by_side(*calls: Callable[[], object]) -> None:
    """Call ``calls`` in threads at once and wait for them all; raise the first failure."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


@pytest.fixture(scope="module")
def starter() -> Iterator[ThreadPoolExecutor]:
    """Starts the module's processes in the order asked, as many at once as there are cores: all at once
    they would slow each other down past their start timeouts on a busy machine."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="start") as pool:
        yield pool


def started(futures: list[Future[Any]]) -> None:
    for future in futures:
        future.result()


def quietly(futures: list[Future[Any]]) -> None:
    """Wait for starts before stopping what they started (a failed start is reported by its test)."""
    for future in futures:
        with contextlib.suppress(BaseException):
            future.result()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("subflows-durable")


@pytest.fixture(scope="module")
def sqlite_launch(
    place: Path, llm_url: str, starter: ThreadPoolExecutor
) -> Iterator[tuple[dict[str, tuple[Runtime, str]], list[Future[Any]]]]:
    """Runtime processes, each on its own SQLite file: one will exit, one will be killed, and one will be
    killed while its LLM call is held (it talks to ``llm_url``)."""
    launched = {}
    for name in ("exits", "killed", "held"):
        store = f"sqlite:///{place / f'{name}.sqlite'}"
        env = {"GENIE_GRAPH_OPENAI_BASE_URL": llm_url} if name == "held" else None
        launched[name] = (Runtime(store, place / f"runtime-{name}.log", place / "data", env), store)
    futures = [starter.submit(runtime.start) for runtime, _store in launched.values()]
    yield launched, futures
    quietly(futures)
    side_by_side(*(runtime.stop for runtime, _store in launched.values()))


@pytest.fixture(scope="module")
def redis_launch(
    place: Path, redis_server: RedisServer, starter: ThreadPoolExecutor
) -> Iterator[tuple[list[Runtime], list[Future[Any]]]]:
    """Two runtime processes on the one Redis."""
    pair = [Runtime(redis_server.url, place / f"runtime-redis{n}.log", place / "data") for n in range(2)]
    futures = [starter.submit(runtime.start) for runtime in pair]
    yield pair, futures
    quietly(futures)
    side_by_side(*(runtime.stop for runtime in pair))


@pytest.fixture(scope="module")
def celery_launch(
    place: Path, redis_server: RedisServer, starter: ThreadPoolExecutor
) -> Iterator[tuple[ApiServer, list[Worker], list[Future[Any]]]]:
    """``genie-graph serve --runner celery`` and two ``genie-graph worker`` processes on the one Redis."""
    env = {"GENIE_GRAPH_DATA_DIR": str(place / "data")}
    workers = [Worker("graphs:flow", redis_server.url, place / f"celery-worker{n}.log", env=env) for n in range(2)]
    api = ApiServer(place / "celery-serve.log", redis_server.url, runner="celery", env=env)
    futures = [starter.submit(service.start) for service in (*workers, api)]
    yield api, workers, futures
    quietly(futures)
    side_by_side(api.stop, *(worker.stop for worker in workers))


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """``tests/openai_server.py``'s handler (steered for the classifier), served from a thread of this process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SteeredHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="steered-openai-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        SteeredHandler.release.set()  # a held call lets go, so the processes calling it can close
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def http_launch(
    place: Path, llm_url: str, starter: ThreadPoolExecutor
) -> Iterator[tuple[ApiServer, list[Future[Any]]]]:
    """``genie-graph serve`` (inline runner) on SQLite, its LLM states going to ``llm_url``."""
    env = {"GENIE_GRAPH_OPENAI_BASE_URL": llm_url, "GENIE_GRAPH_DATA_DIR": str(place / "data")}
    api = ApiServer(place / "serve.log", f"sqlite:///{place / 'http.sqlite'}", env=env)
    futures = [starter.submit(api.start)]
    yield api, futures
    quietly(futures)
    api.stop()


LAUNCHES = ("sqlite_launch", "redis_launch", "celery_launch", "http_launch")


@pytest.fixture(scope="module", autouse=True)
def _launch_early(request: pytest.FixtureRequest) -> None:
    """Queue the start of every process the selected tests of this module need, in the tests' order."""
    needed = {name for item in request.session.items if item.module is request.module for name in item.fixturenames}
    for name in LAUNCHES:
        if name in needed:
            request.getfixturevalue(name)


@pytest.fixture(scope="module")
def sqlite_runtimes(
    sqlite_launch: tuple[dict[str, tuple[Runtime, str]], list[Future[Any]]],
) -> dict[str, tuple[Runtime, str]]:
    launched, futures = sqlite_launch
    started(futures)
    return launched


@pytest.fixture(scope="module")
def redis_runtimes(redis_launch: tuple[list[Runtime], list[Future[Any]]]) -> list[Runtime]:
    pair, futures = redis_launch
    started(futures)
    return pair


@pytest.fixture(scope="module")
def celery_api(celery_launch: tuple[ApiServer, list[Worker], list[Future[Any]]]) -> tuple[ApiServer, list[Worker]]:
    api, workers, futures = celery_launch
    started(futures)
    return api, workers


@pytest.fixture(scope="module")
def http_api(http_launch: tuple[ApiServer, list[Future[Any]]]) -> ApiServer:
    api, futures = http_launch
    started(futures)
    return api


def continue_here(store: str, session_id: str, reference: dict[str, Any]) -> None:
    """A new process (this one) takes the session on from the cancel question to the placed order."""
    flow = graphs.create_flow(store)
    try:
        model = flow.get_model(KEY, session_id)
        assert flow.flow_of(KEY).node_of(model) == "cancel_order/asking"
        assert [frame.flow for frame in model.flows.frames] == ["address", "cancel_order"]
        assert [frame.status for frame in model.flows.frames] == ["interrupted", "active"]
        status = flow.get_task_state(KEY, session_id)
        assert status.ready and status.next_actions == ["user_input"]  # cancel_order may not be interrupted
        for step in range(CUT, len(STEPS)):
            event, text, node, *_rest = STEPS[step]
            check_step(step, as_json(send(flow, KEY, session_id, event, text)))
            assert flow.flow_of(KEY).node_of(flow.get_model(KEY, session_id)) == node
        check_finished(flow.get_model(KEY, session_id).model_dump(mode="json"), reference)
    finally:
        flow.close()


def start_and_interrupt(runtime: Runtime) -> str:
    session_id = runtime.call(op="create")["session_id"]
    for step in range(CUT):
        event, text, node, *_rest = STEPS[step]
        check_step(step, runtime.send(session_id, event, text))
        assert runtime.node(session_id) == node
    return session_id  # type: ignore[no-any-return]


# ---- 1. SQLite: the process ends mid-interruption -----------------------------------------------
def test_sqlite_interrupted_sub_flow_resumes_after_its_process_exits(
    sqlite_runtimes: dict[str, tuple[Runtime, str]], reference: dict[str, Any]
) -> None:
    runtime, store = sqlite_runtimes["exits"]
    session_id = start_and_interrupt(runtime)
    runtime.stop()
    assert runtime.process is not None and runtime.process.returncode == 0
    continue_here(store, session_id, reference)


def test_sqlite_interrupted_sub_flow_resumes_after_its_process_is_sigkilled(
    sqlite_runtimes: dict[str, tuple[Runtime, str]], reference: dict[str, Any]
) -> None:
    runtime, store = sqlite_runtimes["killed"]
    session_id = start_and_interrupt(runtime)
    runtime.kill()
    continue_here(store, session_id, reference)


def test_sqlite_summary_interruption_killed_mid_llm_call_is_redone_in_a_new_process(
    sqlite_runtimes: dict[str, tuple[Runtime, str]], llm_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, store = sqlite_runtimes["held"]
    session_id = runtime.call(op="create")["session_id"]
    assert flow_keys(runtime.send(session_id, "user_input", "tea")) == {}  # the classifier answered "none"
    reset_requests(llm_url)
    question = "what did I order so far? __HOLD__"
    accepted = runtime.call(op="event", session_id=session_id, event="user_input", text=question)
    assert accepted["next_actions"] == ["poll"] and accepted["error"] is None
    try:
        assert SteeredHandler.held.wait(30), "the summary's LLM call never arrived"
        runtime.kill()  # while the summary's LLM call is in flight
    finally:
        SteeredHandler.release.set()

    monkeypatch.setenv("GENIE_GRAPH_OPENAI_BASE_URL", llm_url)
    flow = graphs.create_flow(store)
    try:
        # A client that sends an event before polling is told the cut-off run comes first. (Checked at the
        # end, so that what a poll does is checked whatever this answers.)
        try:
            busy: Any = as_json(send(flow, KEY, session_id, "user_input", "hello?"))
        except Exception as exc:
            busy = exc
        told = as_json(send(flow, KEY, session_id, "poll"))
        model = flow.get_model(KEY, session_id)
        node = flow.flow_of(KEY).node_of(model)
    finally:
        flow.close()
    prompts = _prompts(llm_url)
    assert len(prompts) == 2 and prompts[0] == prompts[1], prompts  # the call cut off, and the call redone
    assert "*** ITEMS ORDERED ***\ntea\n---" in prompts[1]
    assert told["error"] is None
    assert told["response"] == f"ECHO: {prompts[1]}\n\n" + ORDER_SO_FAR.format("tea")
    assert flow_keys(told) == {"interrupted_by": "order_summary", "resumed": "order"}
    assert told["next_actions"] == ["user_input", "cancel"]
    assert node == "taking_order" and model.flows.frames == []
    assert [(str(e.actor), e.actor_text) for e in model.dialogue][1:] == [
        ("user", "tea"),
        ("assistant", ORDER_SO_FAR.format("tea")),
        ("user", question),
        ("assistant", f"ECHO: {prompts[1]}"),  # the summary's last words, then the question offered again:
        ("assistant", ORDER_SO_FAR.format("tea")),  # one response, two utterances
    ]
    assert model.items == ["tea"]
    kinds = [str(entry.kind) for entry in model.history]
    for kind in ("flow_interrupted", "flow_started", "flow_completed", "flow_resumed", "invoker_run"):
        assert kinds.count(kind) == 1, (kind, kinds)
    runs = [entry for entry in model.history if entry.kind in ("invoker_run", "invoker_failure")]
    assert [(str(e.kind), e.state, e.outcome) for e in runs] == [
        ("invoker_failure", "summarising", None),  # the start cut off with its process ...
        ("invoker_run", "summarising", "ok"),  # ... and the run redone here
    ]
    assert runs[0].detail == {"cut_off": True}
    problems = []
    if not (isinstance(busy, dict) and busy["next_actions"] == ["poll"] and "busy" in busy["error"]):
        problems.append(f"an event before the first poll was answered {busy!r}, not 'busy' with ['poll']")
    if [e.flow for e in runs] != ["order_summary", "order_summary"]:
        problems.append(f"the invoker entries name the flows {[e.flow for e in runs]}, not the one they ran in")
    assert not problems, problems


def test_a_session_whose_interruption_starts_with_an_invoker_state_has_a_node_while_it_runs(
    place: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the summary's invoker state runs, the session is somewhere: node_of and draw answer."""
    import graphs._offline as offline

    entered, gate = threading.Event(), threading.Event()
    answer = offline.answer

    def held_answer(prompt: str) -> str:
        if "*** ITEMS ORDERED ***" in prompt:
            entered.set()
            gate.wait(30)
        return answer(prompt)

    monkeypatch.setattr(offline, "answer", held_answer)
    flow = graphs.create_flow(f"sqlite:///{place / 'mid-run.sqlite'}")
    try:
        session_id = flow.create_new_session(KEY).session_id
        send(flow, KEY, session_id, "user_input", "tea")
        accepted = flow.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="so far?"))
        assert accepted.next_actions == ["poll"]
        try:
            assert entered.wait(30), "the summary never started"
            deadline = time.monotonic() + 5  # the checkpoint with the interruption's frame is written by now
            while not flow.get_model(KEY, session_id).flows.frames and time.monotonic() < deadline:
                time.sleep(0.01)
            model = flow.get_model(KEY, session_id)
            assert flow.get_task_state(KEY, session_id).next_actions == []
            assert flow.flow_of(KEY).node_of(model) in ("taking_order", "order_summary/summarising")
            flow.draw(KEY, session_id)
        finally:
            gate.set()
        told = as_json(send(flow, KEY, session_id, "poll"))
        assert told["response"].startswith("So far you ordered: tea.")
    finally:
        flow.close()


# ---- 2. Redis: two processes take turns ---------------------------------------------------------
def test_redis_processes_take_turns_through_an_interruption_and_a_sigkill(
    redis_runtimes: list[Runtime], redis_server: RedisServer, reference: dict[str, Any]
) -> None:
    first, second = redis_runtimes
    session_id = first.call(op="create")["session_id"]
    for step in range(CUT):  # second, first, second: the cancel comes from the second
        event, text, node, *_rest = STEPS[step]
        check_step(step, (second if step % 2 == 0 else first).send(session_id, event, text))
        assert (first if step % 2 == 0 else second).node(session_id) == node  # the other one sees it
    second.kill()
    here = graphs.create_flow(redis_server.url)  # a new process: this one, alternating with the first
    try:
        for step in range(CUT, len(STEPS)):
            event, text, node, *_rest = STEPS[step]
            if step % 2 == 1:
                check_step(step, as_json(send(here, KEY, session_id, event, text)))
                assert first.node(session_id) == node
            else:
                check_step(step, first.send(session_id, event, text))
                assert here.flow_of(KEY).node_of(here.get_model(KEY, session_id)) == node
        check_finished(first.model(session_id), reference)
        check_finished(here.get_model(KEY, session_id).model_dump(mode="json"), reference)
    finally:
        here.close()


def test_redis_an_abort_in_one_process_is_final_in_the_other(
    redis_runtimes: list[Runtime], redis_server: RedisServer
) -> None:
    first = redis_runtimes[0]
    here = graphs.create_flow(redis_server.url)
    try:
        session_id = here.create_new_session(KEY).session_id
        for step in range(CUT):
            event, text, *_rest = STEPS[step]
            check_step(
                step,
                first.send(session_id, event, text) if step % 2 else as_json(send(here, KEY, session_id, event, text)),
            )
        aborted = first.send(session_id, "user_input", "yes")
        assert aborted["response"] == "Your order is cancelled. Goodbye!"
        assert aborted["next_actions"] == [] and aborted["error"] is None
        assert flow_keys(aborted) == {"aborted": ["cancel_order", "address", "order"]}
        model = here.get_model(KEY, session_id)
        assert model.flows.status == "aborted" and model.flows.frames == []
        assert here.flow_of(KEY).node_of(model) == "getting_address"
        refused = as_json(send(here, KEY, session_id, "user_input", "hello?"))
        assert "aborted" in refused["error"] and refused["next_actions"] == []
        assert len(here.get_model(KEY, session_id).dialogue) == len(model.dialogue)
    finally:
        here.close()


# ---- HTTP clients -------------------------------------------------------------------------------
def start(client: httpx.Client, model_key: str = KEY) -> dict[str, Any]:
    answer = client.post(f"/{model_key}/start_session")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def post_event(
    client: httpx.Client, session_id: str, event: str, text: str = "", model_key: str = KEY
) -> httpx.Response:
    return client.post(f"/{model_key}/event", json={"session_id": session_id, "event": event, "event_input": text})


def settle(
    client: httpx.Client, session_id: str, answer: dict[str, Any], model_key: str = KEY, seen: list[dict] | None = None
) -> dict[str, Any]:
    """Poll as a Genie Flow client does until the run is over; ``seen`` collects the answers while it runs."""
    deadline = time.monotonic() + 60
    while answer["next_actions"] == ["poll"] and answer["error"] is None:
        assert time.monotonic() < deadline, answer
        if seen is not None:
            seen.append(answer)
        time.sleep(0.005)
        response = post_event(client, session_id, "poll", model_key=model_key)
        assert response.status_code == 200, response.text
        answer = response.json()
    return answer


def say(client: httpx.Client, session_id: str, event: str, text: str = "", model_key: str = KEY) -> dict[str, Any]:
    response = post_event(client, session_id, event, text, model_key)
    assert response.status_code == 200, response.text
    return settle(client, session_id, response.json(), model_key)


def model_json(client: httpx.Client, session_id: str) -> dict[str, Any]:
    response = client.get(f"/{KEY}/model/{session_id}")
    assert response.status_code == 200, response.text
    return json.loads(response.json()["response"])  # type: ignore[no-any-return]


# ---- 3. Redis + two Celery workers --------------------------------------------------------------
def test_celery_workers_run_the_summary_interruption_three_flows_deep(
    celery_api: tuple[ApiServer, list[Worker]],
) -> None:
    api, workers = celery_api
    with httpx.Client(base_url=api.url + PREFIX, timeout=30) as client:
        session_id = start(client)["session_id"]
        assert flow_keys(say(client, session_id, "user_input", "tea")) == {}

        def ask_so_far() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            response = post_event(client, session_id, "user_input", "what did I order so far?")
            assert response.status_code == 200, response.text
            first = response.json()  # the summary is an invoker state, a worker's: its answer, or ["poll"] first
            running: list[dict[str, Any]] = []
            return settle(client, session_id, first, seen=running), running  # (the polling answers, first's too)

        told, running = ask_so_far()
        assert told["error"] is None
        assert told["response"].startswith("So far you ordered: tea.") and ANYTHING_ELSE in told["response"]
        assert flow_keys(told) == {"interrupted_by": "order_summary", "resumed": "order"}
        assert told["next_actions"] == ["user_input", "cancel"]
        for answer in running:  # while it runs, no key claims an outcome yet
            assert "resumed" not in answer and "aborted" not in answer, answer

        address = say(client, session_id, "user_input", "done")
        assert flow_keys(address) == {"active_flows": ["order", "address"]}
        told, _running = ask_so_far()  # from inside the address sub-flow this time
        assert told["error"] is None
        assert told["response"].startswith("So far you ordered: tea.") and ASK_STREET in told["response"]
        assert flow_keys(told) == {
            "active_flows": ["order", "address"],
            "interrupted_by": "order_summary",
            "resumed": "address",
        }

        assert say(client, session_id, "user_input", "Main Street 1")["response"] == "And the city?"
        confirm = say(client, session_id, "user_input", "Springfield")
        assert flow_keys(confirm) == {"active_flows": ["order", "address", "confirm"]}  # three flows deep
        assert confirm["response"] == "Main Street 1, Springfield: is that right? (yes/no)"
        confirming = say(client, session_id, "user_input", "yes")
        assert flow_keys(confirming) == {} and confirming["next_actions"] == ["user_input"]
        assert "Thanks, we deliver to Main Street 1, Springfield." in confirming["response"]
        placed = say(client, session_id, "user_input", "yes")
        assert placed["next_actions"] == [] and placed["response"].startswith("Your order is placed.")

        model = model_json(client, session_id)
        users = [text for actor, text in dialogue_of(model) if actor == "user"]
        assert users == ["tea", "what did I order so far?", "done", "what did I order so far?"] + [
            "Main Street 1",
            "Springfield",
            "yes",
            "yes",
        ]
        said = [text for actor, text in dialogue_of(model) if actor == "assistant"]
        assert all(a != b for a, b in zip(said, said[1:], strict=False))  # nothing said twice in a row
        assert model["items"] == ["tea"] and model["address"] == "Main Street 1, Springfield"
        runs = client.get(f"/{KEY}/history/{session_id}", params={"kind": "invoker_run"}).json()["entries"]
        assert [(run["flow"], run["state"], run["outcome"]) for run in runs] == [
            ("order_summary", "summarising", "ok")
        ] * 2
        kinds = [entry["kind"] for entry in model["history"]]
        assert kinds.count("flow_interrupted") == 2 and kinds.count("flow_resumed") == 2
    worked = "".join(worker.log.read_text(errors="replace") for worker in workers)
    assert session_id in worked, "no worker logged the session's runs"
    assert all(worker.process is not None and worker.process.poll() is None for worker in workers)


# ---- 4 and 5. uvicorn on SQLite, its LLM states through the real langchain-openai client ---------
@pytest.fixture
def client(http_api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_api.url + PREFIX, timeout=30) as http:
        yield http


def test_http_a_plain_session_answers_only_genie_flows_keys(client: httpx.Client) -> None:
    started = start(client, "q_and_a")
    assert set(started) == GENIE_FLOW_KEYS
    session_id = started["session_id"]
    response = post_event(client, session_id, "user_input", "Hello there", "q_and_a")
    assert response.status_code == 200, response.text
    running: list[dict[str, Any]] = []
    answer = settle(client, session_id, response.json(), "q_and_a", seen=running)
    assert answer["error"] is None and answer["response"]
    for body in [response.json(), *running, answer]:
        assert set(body) == GENIE_FLOW_KEYS, body
    assert set(client.get(f"/q_and_a/model/{session_id}").json()) == GENIE_FLOW_KEYS


def test_http_flow_keys_appear_only_where_they_apply_and_the_history_shows_the_interruption(
    client: httpx.Client, reference: dict[str, Any]
) -> None:
    started = start(client)
    assert set(started) == GENIE_FLOW_KEYS
    session_id = started["session_id"]
    for step, (event, text, *_rest) in enumerate(STEPS):
        check_step(step, say(client, session_id, event, text))
    check_finished(model_json(client, session_id), reference)

    response = client.get(f"/{KEY}/history/{session_id}", params={"kind": "flow_interrupted"})
    assert response.status_code == 200, response.text
    [entry] = response.json()["entries"]
    assert entry["kind"] == "flow_interrupted" and entry["flow"] == "address" and entry["state"] == "asking_street"
    assert entry["detail"] == {"by": "cancel_order", "trigger": "event 'cancel'"}
    both = client.get(f"/{KEY}/history/{session_id}", params=[("kind", "flow_interrupted"), ("kind", "flow_resumed")])
    assert [(e["kind"], e["flow"]) for e in both.json()["entries"]] == [
        ("flow_interrupted", "address"),
        ("flow_resumed", "address"),
    ]


def test_http_cancelling_from_the_address_aborts_the_order(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    for step in range(CUT):
        event, text, *_rest = STEPS[step]
        check_step(step, say(client, session_id, event, text))
    aborted = say(client, session_id, "user_input", "yes")
    assert aborted["error"] is None and aborted["next_actions"] == []
    assert aborted["response"] == "Your order is cancelled. Goodbye!"
    assert flow_keys(aborted) == {"aborted": ["cancel_order", "address", "order"]}
    before = model_json(client, session_id)
    refused = post_event(client, session_id, "user_input", "hello?")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "event_not_allowed" and "aborted" in refused.json()["detail"]
    assert model_json(client, session_id) == before
    aborts = client.get(f"/{KEY}/history/{session_id}", params={"kind": "flow_aborted"}).json()["entries"]
    assert [entry["flow"] for entry in aborts] == ["cancel_order", "address", None]


def test_http_a_refused_trigger_in_confirming_changes_nothing(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    for text in ("bread", "done", "Elm Street 2", "Shelbyville"):
        say(client, session_id, "user_input", text)
    confirming = say(client, session_id, "user_input", "yes")
    assert confirming["next_actions"] == ["user_input"] and "Shall I place the order?" in confirming["response"]
    before = model_json(client, session_id)

    refused = post_event(client, session_id, "cancel")
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "event_not_allowed"
    assert body["current_state"]["id"] == "confirming" and body["possible_events"] == ["user_input"]
    assert body["received_event"] == "cancel" and "may not be interrupted" in body["detail"]

    after = model_json(client, session_id)
    assert len(after["history"]) == len(before["history"])
    assert after["dialogue"] == before["dialogue"]
    assert after == before
    status = client.get(f"/{KEY}/task_state/{session_id}").json()
    assert status["ready"] is True and status["next_actions"] == ["user_input"]
    again = say(client, session_id, "user_input", "no")  # the session goes on: back to ordering
    assert again["error"] is None and "Your order so far: bread." in again["response"]


def _prompts(url: str) -> list[str]:
    prompts = []
    for body in recorded_requests(url):
        assert body["model"] == "gpt-4o-mini"
        [message] = body["messages"]
        assert message["role"] == "user"
        prompts.append(message["content"])
    return prompts


def test_openai_client_runs_the_intent_classifier_and_the_summary(client: httpx.Client, llm_url: str) -> None:
    session_id = start(client)["session_id"]
    reset_requests(llm_url)

    tea = say(client, session_id, "user_input", "tea")
    assert flow_keys(tea) == {} and "Your order so far: tea." in tea["response"]
    [classified] = _prompts(llm_url)  # "none": no interruption, the text is an item
    assert "*** INTENTS ***\nhelp\n---" in classified
    assert "*** MOST RECENT HUMAN STATEMENT ***\ntea\n---" in classified

    reset_requests(llm_url)
    told = say(client, session_id, "user_input", "what did I order so far?")
    [summary] = _prompts(llm_url)  # the condition fired first: the classifier was not asked
    assert summary.startswith("A customer asks about the order")
    assert "*** ITEMS ORDERED ***\ntea\n---" in summary
    assert "*** MOST RECENT HUMAN STATEMENT ***\nwhat did I order so far?\n---" in summary
    assert told["error"] is None
    assert told["response"] == f"ECHO: {summary}\n\n" + ORDER_SO_FAR.format("tea")
    assert flow_keys(told) == {"interrupted_by": "order_summary", "resumed": "order"}

    reset_requests(llm_url)
    helping = say(client, session_id, "user_input", "how does this shop work?")
    [classified] = _prompts(llm_url)
    assert "*** MOST RECENT HUMAN STATEMENT ***\nhow does this shop work?\n---" in classified
    assert helping["error"] is None and "I take orders" in helping["response"]
    assert flow_keys(helping) == {"active_flows": ["order", "shop_help"], "interrupted_by": "shop_help"}
    back = say(client, session_id, "user_input", "thanks")
    assert flow_keys(back) == {"resumed": "order"}
    assert "Your order so far: tea." in back["response"]
    assert len(recorded_requests(llm_url)) == 1  # inside shop_help, nothing is classified

    model = model_json(client, session_id)
    assert model["items"] == ["tea"]  # neither the question nor the help request became an item
    usage = client.get(f"/{KEY}/usage/{session_id}").json()["usage"]
    assert usage["total"]["calls"] == 3
    assert usage["by_template"]["ordering/llm/classify_intent.jinja2"]["calls"] == 2
    assert usage["by_template"]["ordering/llm/summarising.jinja2"]["calls"] == 1
