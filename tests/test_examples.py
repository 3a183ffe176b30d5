"""Every example flow end to end: offline on each store, and q_and_a(+capture) against a real HTTP LLM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import graphs
from genie_graph import POLL, EventInput, GenieFlow
from tests.conftest import STORES
from tests.helpers import send
from tests.openai_server import recorded_requests, reset_requests, start_openai_server
from tests.services import RedisServer, Worker

PROMPTS = Path(graphs.__file__).resolve().parent.parent / "prompts"


def _intro(example: str) -> str:
    return (PROMPTS / example / "intro.jinja2").read_text(encoding="utf-8").strip()


def _dialogue(flow: GenieFlow, key: str, session_id: str) -> list[tuple[str, str]]:
    return [(str(e.actor), e.actor_text) for e in flow.get_model(key, session_id).dialogue]


@pytest.fixture(scope="module")
def example_workers(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    """Two real Celery workers serving the examples (``graphs:flow``) from the test Redis."""
    logs = tmp_path_factory.mktemp("workers")
    workers = [Worker("graphs:flow", redis_server.url, logs / f"worker{n}.log").start() for n in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture(params=[*STORES, "redis+celery"])
def flow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GenieFlow]:
    """The examples on each store, and on Redis with their invoker states on Celery workers."""
    if request.param == "redis+celery":
        request.getfixturevalue("example_workers")
        flow = graphs.create_flow(request.getfixturevalue("redis_url"), runner="celery")
    else:
        flow = graphs.create_flow(_store_of(request, tmp_path))
    try:
        yield flow
    finally:
        flow.close()


def _store_of(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


def test_every_example_is_registered(flow: GenieFlow) -> None:
    examples = {"q_and_a", "q_and_a_cond", "q_and_a_capture", "topic_analysis", "ordering", "team_chat"}
    assert set(flow.model_keys) == examples
    assert set(graphs.MODELS) == set(flow.model_keys)


# ---- offline --------------------------------------------------------------------------------


def test_q_and_a_offline(flow: GenieFlow) -> None:
    start = flow.create_new_session("q_and_a")
    assert start.response.strip() == _intro("q_and_a")
    assert start.next_actions == ["user_input"]
    sid = start.session_id

    first = flow.process_event("q_and_a", EventInput(session_id=sid, event="user_input", event_input="Hello bot"))
    assert first.next_actions == [POLL]
    first = send(flow, "q_and_a", sid, POLL)
    second = send(flow, "q_and_a", sid, "user_input", "Tell me more")

    for answer, question in ((first, "Hello bot"), (second, "Tell me more")):
        assert answer.error is None
        assert answer.next_actions == ["user_input"]
        assert answer.response == (
            f"You said: {question!r}. (Offline answer: configure an OpenAI-compatible endpoint for real ones.)"
        )
    assert _dialogue(flow, "q_and_a", sid) == [
        ("assistant", start.response),
        ("user", "Hello bot"),
        ("assistant", first.response),
        ("user", "Tell me more"),
        ("assistant", second.response),
    ]


def test_q_and_a_cond_user_stop(flow: GenieFlow) -> None:
    start = flow.create_new_session("q_and_a_cond")
    assert start.response.strip() == _intro("q_and_a_cond")
    sid = start.session_id
    answer = send(flow, "q_and_a_cond", sid, "user_input", "What is a graph?")
    assert answer.next_actions == ["user_input"]
    assert "What is a graph?" in answer.response

    end = send(flow, "q_and_a_cond", sid, "user_input", "*STOP*")

    assert end.error is None
    assert end.response.strip() == "Thank you for this conversation. Goodbye!"
    assert end.next_actions == []
    model = flow.get_model("q_and_a_cond", sid)
    assert model.state == 300  # outro
    assert flow.get_task_state("q_and_a_cond", sid).next_actions == []
    refused = flow.process_event("q_and_a_cond", EventInput(session_id=sid, event="user_input", event_input="more?"))
    assert refused.error is not None
    assert flow.get_model("q_and_a_cond", sid).dialogue == model.dialogue


def test_q_and_a_cond_llm_stop(flow: GenieFlow) -> None:
    sid = flow.create_new_session("q_and_a_cond").session_id
    assert send(flow, "q_and_a_cond", sid, "user_input", "Hi there").next_actions == ["user_input"]

    # Not the *STOP* marker: the user text goes to the LLM, whose answer is **STOP**.
    end = send(flow, "q_and_a_cond", sid, "user_input", "ok I want to stop now")

    assert end.error is None
    assert end.response.strip() == "Thank you for this conversation. Goodbye!"
    assert end.next_actions == []
    model = flow.get_model("q_and_a_cond", sid)
    assert model.state == 300
    texts = [e.actor_text for e in model.dialogue]
    assert "ok I want to stop now" in texts  # recorded RAW on the way to the LLM
    assert texts[-1].strip() == "Thank you for this conversation. Goodbye!"


def test_q_and_a_capture_retries_then_captures_the_name(flow: GenieFlow) -> None:
    start = flow.create_new_session("q_and_a_capture")
    assert start.response.strip() == _intro("q_and_a_capture")
    assert start.next_actions == ["user_input"]
    sid = start.session_id

    retry = send(flow, "q_and_a_capture", sid, "user_input", "no idea, sorry")
    assert retry.error is None
    assert retry.response.strip() == "Sorry, I did not catch your name. Could you tell me again what your name is?"
    assert retry.next_actions == ["user_input"]
    # As in Genie Flow's README flow, on_exit_ai_extracts_name stores whatever the LLM said.
    assert flow.get_model("q_and_a_capture", sid).user_name == "UNDEFINED"
    assert flow.get_model("q_and_a_capture", sid).state == 200  # need_to_retry

    welcome = send(flow, "q_and_a_capture", sid, "user_input", "My name is Ada")
    assert welcome.error is None
    assert welcome.response.strip() == "Welcome Ada! How can I help? Please go ahead and ask me anything."
    assert welcome.next_actions == ["user_input"]
    assert flow.get_model("q_and_a_capture", sid).user_name == "Ada"

    answer = send(flow, "q_and_a_capture", sid, "user_input", "What is 2 + 2?")
    assert answer.error is None
    assert "What is 2 + 2?" in answer.response
    assert answer.next_actions == ["user_input"]
    model = flow.get_model("q_and_a_capture", sid)
    assert model.user_name == "Ada"
    assert model.state == 500  # user_enters_query


def test_team_chat_offline_as_a_group(flow: GenieFlow) -> None:
    session_id = flow.create_new_session("team_chat").session_id
    chat = flow.send_message("team_chat", session_id, "shall we go to Vienna", sender="alice")
    asked = flow.send_message("team_chat", session_id, "Genie, what is there to see?", sender="bob")
    ignored = flow.execution("team_chat", session_id, chat.seq, wait=60)
    answered = flow.execution("team_chat", session_id, asked.seq, wait=60)
    assert [item["event"] for item in ignored.items] == ["decision"]
    assert ignored.message.status == "ignored" and ignored.message.reason == "the team is talking among themselves"
    assert answered.message.status == "answered"
    assert answered.items[0]["data"]["decision"] == "delegate" and answered.items[-1]["event"] == "response"
    assert answered.response is not None and answered.response.response is not None
    assert answered.response.response.startswith("bob, you said: 'Genie, what is there to see?'")
    assert answered.response.next_actions == ["user_input"]
    model = flow.get_model("team_chat", session_id)
    said = [(element.actor, element.sender) for element in model.dialogue]
    assert said == [("assistant", None), ("user", "bob"), ("assistant", None)]  # the ignored message is not the flow's
    assert [m.seq for m in flow.messages("team_chat", session_id)] == [1, 2]


def test_topic_analysis_offline(flow: GenieFlow) -> None:
    start = flow.create_new_session("topic_analysis")
    assert start.response.strip() == _intro("topic_analysis")
    sid = start.session_id

    report = send(flow, "topic_analysis", sid, "user_input", "electric cars: range, price, charging")

    assert report.error is None
    assert report.next_actions == ["user_input"]
    text = report.response
    assert "# electric cars" in text
    assert "electric cars is a broad subject" in text
    # One line per aspect, in the order given, from the map over `aspects`.
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == [
        "- range: Range matters; an online model would say how much.",
        "- price: Price matters; an online model would say how much.",
        "- charging: Charging matters; an online model would say how much.",
    ]
    assert text.rstrip().endswith("Send another topic, or *STOP* to end.")
    model = flow.get_model("topic_analysis", sid)
    assert model.topic == "electric cars"
    assert model.aspects == ["range", "price", "charging"]
    assert len(model.analyses) == 1

    second = send(flow, "topic_analysis", sid, "user_input", "tea")
    assert "# tea" in second.response
    assert [line for line in second.response.splitlines() if line.startswith("- ")] == [
        "- benefits: Benefits matters; an online model would say how much.",
        "- drawbacks: Drawbacks matters; an online model would say how much.",
    ]

    end = send(flow, "topic_analysis", sid, "user_input", "*STOP*")
    assert end.response.strip() == "Analysed 2 topic(s). Goodbye!"
    assert end.next_actions == []


def test_topic_analysis_reports_progress_while_running(flow: GenieFlow) -> None:
    sid = flow.create_new_session("topic_analysis").session_id
    first = flow.process_event(
        "topic_analysis", EventInput(session_id=sid, event="user_input", event_input="bikes: speed, cost")
    )
    assert first.next_actions == [POLL]
    answer = flow.process_event("topic_analysis", EventInput(session_id=sid, event=POLL, event_input=""))
    if answer.next_actions == [POLL]:
        assert answer.progress is not None
        assert answer.progress.number_of_subtasks_executed <= answer.progress.total_number_of_subtasks
    final = send(flow, "topic_analysis", sid, POLL)
    assert "# bikes" in final.response


# ---- against an OpenAI-compatible HTTP server -------------------------------------------------


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    base_url, stop = start_openai_server()
    try:
        yield base_url
    finally:
        stop()


@pytest.fixture
def llm(llm_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_BASE_URL", llm_server)
    reset_requests(llm_server)
    return llm_server


@pytest.fixture
def online_flow(llm: str, tmp_path: Path) -> Iterator[GenieFlow]:
    flow = graphs.create_flow(f"sqlite:///{tmp_path / 'online.db'}")
    try:
        yield flow
    finally:
        flow.close()


def _user_prompts(url: str) -> list[str]:
    prompts = []
    for body in recorded_requests(url):
        [message] = body["messages"]
        assert message["role"] == "user"
        prompts.append(message["content"])
    return prompts


def test_q_and_a_against_openai_compatible_server(llm: str, online_flow: GenieFlow) -> None:
    sid = online_flow.create_new_session("q_and_a").session_id

    first = send(online_flow, "q_and_a", sid, "user_input", "What is LangGraph?")

    assert first.error is None
    assert first.next_actions == ["user_input"]
    assert first.response.startswith("ECHO: ")
    [prompt] = _user_prompts(llm)
    assert first.response == "ECHO: " + prompt
    assert prompt.startswith("You are a friendly chatbot")
    assert "*** MOST RECENT HUMAN STATEMENT ***\nWhat is LangGraph?\n---" in prompt
    assert _intro("q_and_a").splitlines()[0] in prompt  # the chat history holds the intro
    [body] = recorded_requests(llm)
    assert body["model"] == "gpt-4o-mini"

    second = send(online_flow, "q_and_a", sid, "user_input", "And Genie Flow?")
    assert second.response.startswith("ECHO: ")
    prompts = _user_prompts(llm)
    assert len(prompts) == 2
    assert "What is LangGraph?" in prompts[1]  # earlier turns are in the chat history
    assert "*** MOST RECENT HUMAN STATEMENT ***\nAnd Genie Flow?\n---" in prompts[1]


def test_q_and_a_capture_against_openai_compatible_server(llm: str, online_flow: GenieFlow) -> None:
    sid = online_flow.create_new_session("q_and_a_capture").session_id

    welcome = send(online_flow, "q_and_a_capture", sid, "user_input", "My name is Ada")

    assert welcome.error is None
    [prompt] = _user_prompts(llm)
    assert "extract the name" in prompt
    assert "*** MOST RECENT HUMAN STATEMENT ***\nMy name is Ada\n---" in prompt
    model = online_flow.get_model("q_and_a_capture", sid)
    assert model.user_name == "ECHO: " + prompt  # not UNDEFINED: the name is taken as answered
    assert welcome.response.startswith("Welcome ECHO: ")
    assert welcome.next_actions == ["user_input"]

    answer = send(online_flow, "q_and_a_capture", sid, "user_input", "How are you?")
    assert answer.error is None
    assert answer.response.startswith("ECHO: You are a friendly chatbot talking to ECHO: ")
    assert "*** MOST RECENT HUMAN STATEMENT ***\nHow are you?\n---" in _user_prompts(llm)[-1]


def test_http_500_from_the_llm_surfaces_as_error_and_session_stays_usable(llm: str, online_flow: GenieFlow) -> None:
    sid = online_flow.create_new_session("q_and_a").session_id
    assert send(online_flow, "q_and_a", sid, "user_input", "a good question").error is None
    reset_requests(llm)

    first = online_flow.process_event(
        "q_and_a", EventInput(session_id=sid, event="user_input", event_input="please fail __HTTP500__")
    )
    assert first.next_actions == [POLL]
    failed = send(online_flow, "q_and_a", sid, POLL)

    assert failed.error is not None
    assert "500" in failed.error
    assert "__HTTP500__" in failed.error  # the server's error message is passed on
    assert failed.next_actions == ["user_input"]
    failing_requests = _user_prompts(llm)
    assert failing_requests and all("__HTTP500__" in prompt for prompt in failing_requests)
    assert len(failing_requests) == 3  # the SDK's default max_retries (2) retries a 5xx
    model = online_flow.get_model("q_and_a", sid)
    assert model.task_error is not None and "500" in model.task_error
    assert online_flow.get_task_state("q_and_a", sid).ready is True

    # The session takes the next event and runs it. (q_and_a puts the whole chat history, which
    # now holds the marker, into every later prompt, so this server keeps failing it.)
    reset_requests(llm)
    again = send(online_flow, "q_and_a", sid, "user_input", "next question")
    assert again.next_actions == ["user_input"]
    assert "*** MOST RECENT HUMAN STATEMENT ***\nnext question\n---" in _user_prompts(llm)[-1]
    texts = [e.actor_text for e in online_flow.get_model("q_and_a", sid).dialogue]
    assert texts.count("please fail __HTTP500__") == 1
    assert texts.count("next question") == 1


def test_http_500_in_a_parallel_step_then_full_recovery(llm: str, online_flow: GenieFlow) -> None:
    """topic_analysis prompts hold only the topic and one aspect, so the next topic reaches the LLM clean.

    The marker is in an aspect only: the overview, running in parallel, succeeds at once, and the
    aspect fails after the client's retries.
    """
    sid = online_flow.create_new_session("topic_analysis").session_id

    failed = send(online_flow, "topic_analysis", sid, "user_input", "tea: __HTTP500__")

    assert failed.error is not None
    assert "500" in failed.error
    assert failed.next_actions == ["user_input"]
    assert online_flow.get_model("topic_analysis", sid).task_error is not None
    prompts = _user_prompts(llm)
    assert len([p for p in prompts if "__HTTP500__" in p]) == 3  # one aspect, tried 1 + 2 times
    assert len([p for p in prompts if "__HTTP500__" not in p]) == 1  # the overview

    reset_requests(llm)
    report = send(online_flow, "topic_analysis", sid, "user_input", "coffee: taste")

    assert report.error is None
    assert report.next_actions == ["user_input"]
    prompts = _user_prompts(llm)
    assert len(prompts) == 2  # the overview and one aspect, both to the server
    assert all("coffee" in p for p in prompts)
    assert "# coffee" in report.response
    assert "ECHO: Write a two-sentence overview" in report.response
    assert "- taste: ECHO: In one sentence, assess the aspect below" in report.response
    assert online_flow.get_model("topic_analysis", sid).task_error is None


def test_a_celery_turn_writes_a_checkpoint_where_each_run_stops(redis_url: str, example_workers: list[Worker]) -> None:
    """With the Celery runner a run writes once, when it stops (``durability="exit"``): a turn into an
    invoker state writes two checkpoints (where the event's process stops before the invoker state,
    where the worker's run waits for the user) and one pending write (the wait); writing at every
    step also wrote each step's channel writes, 21 a turn. Counted with Redis's ``MONITOR``, which
    sees every process's commands."""
    import threading

    client = redis.Redis.from_url(redis_url)
    with graphs.create_flow(redis_url, runner="celery") as flow:
        sid = flow.create_new_session("q_and_a").session_id
        seen: list[str] = []
        watching = threading.Event()

        def watch() -> None:
            with client.monitor() as monitor:
                watching.set()
                for command in monitor.listen():
                    seen.append(command["command"])
                    if command["command"].startswith("GET stop-watching"):
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert watching.wait(10)
        for turn in range(3):
            event = EventInput(session_id=sid, event="user_input", event_input=f"question {turn}")
            answer = flow.process_event("q_and_a", event, wait=30)
            while answer.next_actions == [POLL]:
                answer = flow.process_event("q_and_a", EventInput(session_id=sid, event=POLL, event_input=""), wait=30)
            assert answer.error is None and answer.next_actions == ["user_input"], answer
            assert f"question {turn}" in str(answer.response)
        redis.Redis.from_url(redis_url).get("stop-watching")
        watcher.join(10)
    client.close()
    saved = [command for command in seen if command.startswith(f"JSON.SET checkpoint:{sid}:")]
    writes = [command for command in seen if command.startswith(f"JSON.SET checkpoint_write:{sid}:")]
    assert len(saved) == 2 * 3, saved
    assert len(writes) == 1 * 3, writes
