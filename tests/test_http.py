"""The HTTP API over real HTTP: ``genie-graph serve`` (uvicorn) as a process, driven with httpx.

The same suite runs on the embedded store (SQLite, inline runner) and on Redis + two Celery
workers. LLM states talk to a local OpenAI-compatible server, so tokens stream for real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.openai_server import start_openai_server
from tests.services import ApiServer, RedisServer, Worker

PREFIX = "/v1/ai"
LIMIT = 2048
USER = {"email": "ada@example.org", "firstname": "Ada", "lastname": "Lovelace"}


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    base_url, stop = start_openai_server()
    yield base_url
    stop()


@pytest.fixture(scope="module", params=["embedded", "redis+celery"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, llm_url: str
) -> Iterator[ApiServer]:
    place = tmp_path_factory.mktemp(f"http-{request.param.replace('+', '-')}")
    (place / "prices.yaml").write_text("currency: USD\nmodels:\n  gpt-4o-mini: {input: 0.15, output: 0.6}\n")
    # The workers price the calls they make, so they read the price table too.
    env = {"GENIE_GRAPH_OPENAI_BASE_URL": llm_url, "GENIE_GRAPH_PRICES": str(place / "prices.yaml")}
    # A wait long enough that a fast run's answer comes with its event on a loaded machine too (the
    # test asserts what the event answers, not how fast the run is); a 5 s LLM call still outlasts it.
    args = ["--max-event-input", str(LIMIT), "--event-wait", "2"]
    workers: list[Worker] = []
    if request.param == "embedded":
        api = ApiServer(place / "serve.log", f"sqlite:///{place}/sessions.sqlite", env=env, args=args)
    else:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        workers = [Worker("graphs:flow", redis_server.url, place / f"worker{n}.log", env=env) for n in range(2)]
        for worker in workers:
            worker.start()
        api = ApiServer(place / "serve.log", redis_server.url, runner="celery", env=env, args=args)
    api.start()
    yield api
    api.stop()
    for worker in workers:
        worker.stop()


@pytest.fixture
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + PREFIX, timeout=30) as http:
        yield http


def start(client: httpx.Client, model_key: str = "q_and_a", **body: Any) -> dict[str, Any]:
    answer = client.post(f"/{model_key}/start_session", json=body or None)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def event(
    client: httpx.Client, session_id: str, name: str, text: str = "", model_key: str = "q_and_a"
) -> httpx.Response:
    return client.post(f"/{model_key}/event", json={"session_id": session_id, "event": name, "event_input": text})


def settle(client: httpx.Client, session_id: str, answer: dict[str, Any], model_key: str = "q_and_a") -> dict[str, Any]:
    """Poll 2 ms apart, as a Genie Flow client does, until the run is over."""
    deadline = time.monotonic() + 60
    while answer["next_actions"] == ["poll"] and answer["error"] is None:
        assert time.monotonic() < deadline, answer
        time.sleep(0.002)
        response = event(client, session_id, "poll", model_key=model_key)
        assert response.status_code == 200, response.text
        answer = response.json()
    return answer


# ---- every route ---------------------------------------------------------------------------
def test_health_and_model_keys(server: ApiServer, client: httpx.Client) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert set(client.get("/").json()["model_keys"]) >= {"q_and_a", "q_and_a_cond", "q_and_a_capture"}


def test_start_session_by_get_and_post_with_genie_flows_shape(client: httpx.Client) -> None:
    by_get = client.get("/q_and_a/start_session").json()
    assert set(by_get) == {"session_id", "response", "next_actions", "error", "progress"}
    assert by_get["next_actions"] == ["user_input"] and by_get["response"].startswith("Welcome")
    by_post = start(client, user_info=USER, seed_data="seed")
    assert by_post["session_id"] != by_get["session_id"]
    stored = client.get(f"/q_and_a/model/{by_post['session_id']}", params={"path": "secondary_storage"}).json()
    assert "ada@example.org" in stored["response"]


def test_a_polling_client_through_every_example_flow(client: httpx.Client) -> None:
    for model_key in ("q_and_a", "q_and_a_cond", "q_and_a_capture"):
        session_id = start(client, model_key)["session_id"]
        for text in ("My name is Ada", "What is the capital of France?"):
            answer = event(client, session_id, "user_input", text, model_key)
            assert answer.status_code == 200, answer.text
            final = settle(client, session_id, answer.json(), model_key)
            assert final["error"] is None and final["response"], final
            if not final["next_actions"]:
                break  # the flow reached a final state
            assert "user_input" in final["next_actions"]
        status = client.get(f"/{model_key}/task_state/{session_id}").json()
        assert status == {"session_id": session_id, "ready": True, "next_actions": final["next_actions"]}


def test_ephemeral_session_and_model_paths(client: httpx.Client) -> None:
    answer = client.post(
        "/q_and_a/start_ephemeral_session", json={"event": "user_input", "event_input": "hi", "user_info": USER}
    )
    assert answer.status_code == 200, answer.text
    body = settle(client, answer.json()["session_id"], answer.json())
    session_id = body["session_id"]
    whole = client.get(f"/q_and_a/model/{session_id}").json()
    assert json.loads(whole["response"])["session_id"] == session_id
    first = client.get(f"/q_and_a/model/{session_id}", params={"path": "dialogue[0].actor_text"}).json()
    assert json.loads(first["response"]) == "hi"  # no intro in an ephemeral session
    assert first["next_actions"] == ["user_input"]


def test_user_sessions(client: httpx.Client) -> None:
    mine = [start(client, user_info=USER)["session_id"] for _ in range(2)]
    listed = client.post("/q_and_a/user_sessions", json=USER).json()
    assert listed["email"] == USER["email"] and set(mine) <= set(listed["sessions"])
    stranger = {**USER, "email": "nobody@example.org"}
    assert client.post("/q_and_a/user_sessions", json=stranger).json() is None


# ---- status codes --------------------------------------------------------------------------
def test_unknown_model_key_and_session_are_404(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    for response in (
        client.get("/nope/start_session"),
        client.get(f"/nope/task_state/{session_id}"),
        event(client, session_id, "user_input", "x", model_key="nope"),
    ):
        assert response.status_code == 404 and response.json()["error"] == "unknown_model_key", response.text
    for response in (
        client.get("/q_and_a/task_state/not-a-session"),
        client.get("/q_and_a/model/not-a-session"),
        event(client, "not-a-session", "user_input", "x"),
        event(client, "not-a-session", "poll"),
    ):
        assert response.status_code == 404 and response.json()["error"] == "unknown_session", response.text


def test_usage_and_history_of_a_session(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    answer = settle(client, session_id, event(client, session_id, "user_input", "count my tokens").json())
    assert answer["error"] is None
    usage = client.get(f"/q_and_a/usage/{session_id}")
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert body["session_id"] == session_id and body["budget"] is None
    total = body["usage"]["total"]
    # the test server counts words; its reply echoes the prompt after "ECHO:"
    assert total["calls"] == 1 and total["input_tokens"] > 3 and total["output_tokens"] == total["input_tokens"] + 1
    assert total["cost"] == pytest.approx((total["input_tokens"] * 0.15 + total["output_tokens"] * 0.6) / 1e6)
    assert body["usage"]["by_state"]["ai_creates_response"] == total
    assert body["usage"]["by_template"]["q_and_a/llm/ai_creates_response.jinja2"] == total
    assert body["usage"]["by_model"]["gpt-4o-mini"] == total

    history = client.get(f"/q_and_a/history/{session_id}").json()
    assert [(e["kind"], e["state"]) for e in history["entries"]] == [
        ("state_entered", "intro"),
        ("event", "intro"),
        ("invoker_run", "ai_creates_response"),
        ("event", "ai_creates_response"),
    ]
    assert history["entries"][1]["event"] == "user_input" and history["entries"][1]["target"] == "ai_creates_response"
    assert "count my tokens" not in json.dumps(history)  # no user text in the history
    runs = client.get(f"/q_and_a/history/{session_id}", params={"kind": "invoker_run", "last": 1}).json()
    assert [e["outcome"] for e in runs["entries"]] == ["ok"]
    for path in ("usage", "history"):
        missing = client.get(f"/q_and_a/{path}/not-a-session")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_session"
    assert client.get(f"/q_and_a/history/{session_id}", params={"kind": "nope"}).status_code == 422


def test_a_refused_event_is_409_and_changes_nothing(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    before = client.get(f"/q_and_a/model/{session_id}").json()["response"]
    refused = event(client, session_id, "ai_extraction", "x")
    assert refused.status_code == 409
    body = refused.json()
    assert body["error"] == "event_not_allowed"
    assert body["current_state"]["id"] == "intro" and body["possible_events"] == ["user_input"]
    assert body["received_event"] == "ai_extraction"
    assert client.get(f"/q_and_a/model/{session_id}").json()["response"] == before


def test_a_busy_session_is_409_with_its_own_code(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    slow = event(client, session_id, "user_input", "__SLOW__ please")  # the LLM server waits 5 s
    assert slow.json()["next_actions"] == ["poll"]
    busy = event(client, session_id, "user_input", "again")
    assert busy.status_code == 409 and busy.json()["error"] == "session_busy", busy.text
    assert busy.json()["next_actions"] == ["poll"]
    polled = event(client, session_id, "poll")
    assert polled.status_code == 200 and polled.json()["next_actions"] == ["poll"]
    answers = [polled.json()]
    while answers[-1]["next_actions"] == ["poll"] and len(answers) < 100:  # polled 2 ms apart, as Genie Flow's client
        time.sleep(0.002)
        answers.append(event(client, session_id, "poll").json())
    final = answers[-1]
    # each poll waits (up to a second) for the run's news: a handful answer the 5 s call, not thousands
    assert final["next_actions"] == ["user_input"] and len(answers) <= 10, answers[-3:]
    users = json.loads(
        client.get(f"/q_and_a/model/{session_id}", params={"path": "dialogue[?actor=='user'].actor_text"}).json()[
            "response"
        ]
    )
    assert users == ["__SLOW__ please"], final


def test_an_invoker_failure_is_200_with_error_and_the_session_goes_on(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    answer = event(client, session_id, "user_input", "__HTTP500__")
    final = settle(client, session_id, answer.json())
    assert "HTTP500" in final["error"] and final["next_actions"] == ["user_input"], final
    assert event(client, session_id, "poll").json()["error"] == final["error"]  # a poll says it again
    again = event(client, session_id, "user_input", "fine now")
    assert again.status_code == 200, again.text  # the session goes on: it takes the next event and runs it
    # (that run fails too: the prompt repeats the chat, whose first message asks the LLM server for a 500)
    assert settle(client, session_id, again.json())["next_actions"] == ["user_input"]
    users = client.get(f"/q_and_a/model/{session_id}", params={"path": "dialogue[?actor=='user'].actor_text"})
    assert json.loads(users.json()["response"]) == ["__HTTP500__", "fine now"]


def test_an_event_answers_with_a_fast_runs_answer(client: httpx.Client) -> None:
    """The event waits (here up to 2 s) for its run: a fast LLM's turn is one request."""
    session_id = start(client)["session_id"]
    answer = event(client, session_id, "user_input", "What is the capital of France?")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["next_actions"] == ["user_input"] and body["error"] is None, body
    assert body["response"].startswith("ECHO: ") and "capital of France" in body["response"], body
    assert event(client, session_id, "poll").json() == body  # as the poll after it answers


def test_malformed_bodies_bad_paths_and_large_inputs(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    assert client.post("/q_and_a/event", json={"session_id": session_id}).status_code == 422
    assert (
        client.post("/q_and_a/event", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 422
    )
    bad_path = client.get(f"/q_and_a/model/{session_id}", params={"path": "dialogue[-"})
    assert bad_path.status_code == 400 and bad_path.json()["error"] == "invalid_jmespath"
    large = event(client, session_id, "user_input", "x" * (LIMIT + 1))
    assert large.status_code == 413 and large.json()["limit_bytes"] == LIMIT
    assert event(client, session_id, "user_input", "é" * (LIMIT // 2 + 1)).status_code == 413  # bytes, not chars
    assert client.get(f"/q_and_a/task_state/{session_id}").json()["next_actions"] == ["user_input"]


# ---- streaming -----------------------------------------------------------------------------
def _frames(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            yield kind, json.loads(line.removeprefix("data: "))


def test_sse_streams_states_tokens_in_order_then_the_response(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    body = {"session_id": session_id, "event": "user_input", "event_input": "tell me a long story"}
    seen: list[tuple[str, dict[str, Any]]] = []
    with client.stream("POST", "/q_and_a/event", json=body, headers={"accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = list(_frames(response))
    kinds = [kind for kind, _data in seen]
    assert kinds[-1] == "response" and kinds.count("response") == 1
    tokens = [data["text"] for kind, data in seen if kind == "token"]
    final = seen[-1][1]
    assert len(tokens) > 1, seen
    assert "".join(tokens) == final["response"]  # every token, in order, before the end
    assert final["next_actions"] == ["user_input"] and final["state"] == "user_enters_query"
    assert ("state", {"state": "ai_creates_response", "name": "Ai creates response", "kind": "invoker"}) in seen


def test_tokens_arrive_while_the_run_still_goes(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    body = {"session_id": session_id, "event": "user_input", "event_input": "__DRIP__ slowly"}
    with client.stream("POST", "/q_and_a/event/stream", json=body) as response:
        frames = _frames(response)
        kind, data = next(frame for frame in frames if frame[0] == "token")
        assert client.get(f"/q_and_a/task_state/{session_id}").json()["ready"] is False  # the call goes on
        rest = list(frames)
    assert rest[-1][0] == "response" and "slowly" in rest[-1][1]["response"]


def test_a_dropped_stream_loses_nothing(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    body = {"session_id": session_id, "event": "user_input", "event_input": "__SLOW__ dropped"}
    with client.stream("POST", "/q_and_a/event/stream", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # then hang up mid-run
    final = settle(client, session_id, event(client, session_id, "poll").json())
    assert final["error"] is None and "dropped" in final["response"]


def test_a_refused_streamed_event_answers_its_status(client: httpx.Client) -> None:
    session_id = start(client)["session_id"]
    response = client.post(
        "/q_and_a/event/stream", json={"session_id": session_id, "event": "ai_extraction", "event_input": ""}
    )
    assert response.status_code == 409 and response.json()["error"] == "event_not_allowed"


# ---- authentication ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    place = tmp_path_factory.mktemp("http-auth")
    api = ApiServer(place / "serve.log", "memory://", env={"GENIE_GRAPH_API_KEYS": "alice:key-a,bob:key-b"}).start()
    yield api
    api.stop()


def test_api_keys_bind_sessions_to_their_caller(secured: ApiServer) -> None:
    base = secured.url + PREFIX
    alice = {"Authorization": "Bearer key-a"}
    bob = {"X-API-Key": "key-b"}
    assert httpx.get(f"{base}/q_and_a/start_session").status_code == 401
    assert httpx.get(f"{base}/q_and_a/start_session", headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(secured.url + "/health").status_code == 200
    session_id = httpx.post(f"{base}/q_and_a/start_session", json={"user_info": USER}, headers=alice).json()[
        "session_id"
    ]
    assert httpx.get(f"{base}/q_and_a/task_state/{session_id}", headers=alice).status_code == 200
    for response in (
        httpx.get(f"{base}/q_and_a/task_state/{session_id}", headers=bob),
        httpx.get(f"{base}/q_and_a/model/{session_id}", headers=bob),
        httpx.post(
            f"{base}/q_and_a/event",
            json={"session_id": session_id, "event": "user_input", "event_input": "hijack"},
            headers=bob,
        ),
    ):
        assert response.status_code == 404, response.text
    assert httpx.post(f"{base}/q_and_a/user_sessions", json=USER, headers=bob).json() is None
    assert httpx.post(f"{base}/q_and_a/user_sessions", json=USER, headers=alice).json()["sessions"] == [session_id]


def test_event_wait_0_answers_poll_at_once_as_genie_flow_does(tmp_path: Path, llm_url: str) -> None:
    env = {"GENIE_GRAPH_OPENAI_BASE_URL": llm_url}
    api = ApiServer(tmp_path / "serve.log", "memory://", env=env, args=["--event-wait", "0"]).start()
    try:
        with httpx.Client(base_url=api.url + PREFIX, timeout=30) as client:
            session_id = start(client)["session_id"]
            answer = event(client, session_id, "user_input", "What is the capital of France?").json()
            assert answer == {
                "session_id": session_id,
                "next_actions": ["poll"],
                "error": None,
                "response": None,
                "progress": None,
            }
            assert "capital of France" in settle(client, session_id, answer)["response"]
    finally:
        api.stop()


# ---- deployment: CORS, health, several server processes ------------------------------------
def test_cors_health_and_several_server_processes_on_redis(tmp_path: Path) -> None:
    """Two uvicorn processes share one Redis; /health follows the store; CORS answers browsers."""
    redis_server = RedisServer(tmp_path / "redis").start()
    api = ApiServer(
        tmp_path / "serve.log", redis_server.url, args=["--workers", "2", "--cors-origins", "http://localhost:5173"]
    )
    try:
        api.start()
        base = api.url + PREFIX
        preflight = httpx.options(
            f"{base}/q_and_a/event",
            headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
        with httpx.Client(base_url=base, timeout=30) as client:
            session_id = start(client)["session_id"]
            for n in range(6):  # new connections: uvicorn's processes take turns
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    answer = event(fresh, session_id, "user_input", f"question {n}").json()
                    assert settle(fresh, session_id, answer)["error"] is None
        redis_server.stop()
        down = httpx.get(api.url + "/health")
        assert down.status_code == 503 and down.json()["error"] == "store_unavailable"
        unavailable = httpx.post(
            f"{base}/q_and_a/event", json={"session_id": session_id, "event": "poll", "event_input": ""}
        )
        assert unavailable.status_code == 503 and unavailable.json()["error"] == "store_unavailable", unavailable.text
        redis_server.start()
        assert httpx.get(api.url + "/health").status_code == 200
    finally:
        api.stop()
        redis_server.stop()
