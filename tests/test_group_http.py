"""Group sessions over real HTTP (issue 10): ``genie-graph serve`` processes driven with httpx.

* ``keyed``/``keyed_twin``: two API processes (inline runner) with API keys on one Redis, serving
  ``tests.group_flows:flow``: members, senders from the keys, polling and SSE executions, errors,
  and many senders writing through both processes at once.
* ``celery``: two API processes without API keys (``runner="celery"``) and one Celery worker on
  that Redis: the body names the sender, and the ``think`` flow's LLM state runs on the worker.

Each server is started once per module; every test works in sessions of its own.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.group_flows import NOTES, THINK, write_templates
from tests.services import ApiServer, RedisServer, Worker

PREFIX = "/v1/ai"
FLOW = "tests.group_flows:flow"
KEYS = {"alice": "key-a", "bob": "key-b", "carol": "key-c", "dave": "key-d", "erin": "key-e"}
FINISHED = {"answered", "ignored", "refused", "failed"}
SSE = "text/event-stream"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


# ---- servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_templates(tmp_path_factory.mktemp("group-templates"))


def _keyed_server(place: Path, redis_server: RedisServer, templates: Path) -> ApiServer:
    env = {
        "GENIE_GRAPH_TEST_GROUP_TEMPLATES": str(templates),
        "GENIE_GRAPH_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
    }
    return ApiServer(place / "serve.log", redis_server.url, env=env, flow=FLOW).start()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, templates: Path) -> Iterator[ApiServer]:
    """An API process with API keys (one per name of ``KEYS``) on Redis."""
    api = _keyed_server(tmp_path_factory.mktemp("group-keyed"), redis_server, templates)
    yield api
    api.stop()


@pytest.fixture(scope="module")
def keyed_twin(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, templates: Path
) -> Iterator[ApiServer]:
    """A second API process like ``keyed``, on the same Redis."""
    api = _keyed_server(tmp_path_factory.mktemp("group-keyed-twin"), redis_server, templates)
    yield api
    api.stop()


@pytest.fixture(scope="module")
def celery(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, templates: Path
) -> Iterator[list[ApiServer]]:
    """Two API processes without API keys on the Celery runner, and a worker, on the same Redis."""
    place = tmp_path_factory.mktemp("group-celery")
    env = {"GENIE_GRAPH_TEST_GROUP_TEMPLATES": str(templates)}
    worker = Worker(FLOW, redis_server.url, place / "worker.log", env=env)
    servers = [
        ApiServer(place / f"serve{n}.log", redis_server.url, runner="celery", env=env, flow=FLOW) for n in range(2)
    ]
    try:
        with ThreadPoolExecutor(3) as pool:  # the three processes start side by side
            starting: list[Future[Any]] = [pool.submit(worker.start), *(pool.submit(api.start) for api in servers)]
            for started in starting:
                started.result()
        yield servers
    finally:
        for api in servers:
            api.stop()
        worker.stop()


@pytest.fixture
def client(keyed: ApiServer) -> Iterator[httpx.Client]:
    with _at(keyed) as http:
        yield http


# ---- helpers ---------------------------------------------------------------------------------
def _at(server: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + PREFIX, timeout=60)


def start(client: httpx.Client, model_key: str, headers: dict[str, str] | None = None, **body: Any) -> str:
    answer = client.post(f"/{model_key}/group/start_session", json=body or None, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["session_id"])


def write(
    client: httpx.Client, model_key: str, session_id: str, content: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Post a message; it must be accepted. Answers the accepted message."""
    answer = client.post(f"/{model_key}/group/{session_id}/messages", json={"content": content}, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()["message"]  # type: ignore[no-any-return]


def finish(
    client: httpx.Client, model_key: str, session_id: str, seq: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Long-poll message ``seq``'s execution until it is finished."""
    for _ in range(12):
        answer = client.get(f"/{model_key}/group/{session_id}/messages/{seq}", params={"wait": 10}, headers=headers)
        assert answer.status_code == 200, answer.text
        execution: dict[str, Any] = answer.json()
        if execution["message"]["status"] in FINISHED:
            return execution
    raise AssertionError(f"message {seq} of {session_id} never finished: {execution}")


def log(
    client: httpx.Client, model_key: str, session_id: str, headers: dict[str, str] | None = None, after: int = 0
) -> dict[str, Any]:
    answer = client.get(f"/{model_key}/group/{session_id}/messages", params={"after": after}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def model(
    client: httpx.Client, model_key: str, session_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    answer = client.get(f"/{model_key}/model/{session_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["response"])  # type: ignore[no-any-return]


def parse_sse(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Server-sent event frames as ``(id, event, data)``; each frame must have exactly those three fields."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, colon, value = line.partition(":")
            assert colon and name in ("id", "event", "data") and name not in fields, f"not an SSE frame: {block!r}"
            fields[name] = value.removeprefix(" ")
        assert set(fields) == {"id", "event", "data"}, block
        frames.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    assert text.endswith("\n\n") or not text, f"a frame is cut short: {text[-200:]!r}"
    return frames


def stream(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, str]:
    with client.stream(method, path, **kwargs) as response:
        return response, response.read().decode()


def as_items(frames: list[tuple[int, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"event": kind, "data": data} for _, kind, data in frames]


# ---- members and senders, with API keys ------------------------------------------------------
def test_members_write_as_themselves_and_only_members_read(client: httpx.Client) -> None:
    session_id = start(client, NOTES, auth("alice"), members=["bob"])
    path = f"/{NOTES}/group/{session_id}/messages"
    assert log(client, NOTES, session_id, auth("alice")) == {
        "session_id": session_id,
        "members": ["alice", "bob"],  # the caller who started it is one
        "messages": [],
    }

    accepted = client.post(path, json={"content": "hello"}, headers=auth("bob"))
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    execution = f"{PREFIX}/{NOTES}/group/{session_id}/messages/1"
    assert body["execution"] == execution and body["stream"] == f"{execution}/stream"
    assert accepted.headers["location"] == execution
    assert (body["message"]["seq"], body["message"]["sender"], body["message"]["content"]) == (1, "bob", "hello")
    assert body["message"]["event"] == "user_input"
    assert finish(client, NOTES, session_id, 1, auth("bob"))["items"][-1]["data"]["response"] == "noted bob: hello"

    # naming oneself is allowed; naming someone else is not
    mine = client.post(path, json={"content": "hi all", "sender": "alice"}, headers=auth("alice"))
    assert mine.status_code == 202 and mine.json()["message"]["sender"] == "alice", mine.text
    assert finish(client, NOTES, session_id, 2, auth("alice"))["message"]["status"] == "answered"
    mismatch = client.post(path, json={"content": "I am alice", "sender": "alice"}, headers=auth("bob"))
    assert mismatch.status_code == 403, mismatch.text
    assert mismatch.json()["error"] == "sender_mismatch" and mismatch.json()["sender"] == "alice"
    assert "'bob'" in mismatch.json()["detail"] and "'alice'" in mismatch.json()["detail"]

    stranger = client.post(path, json={"content": "let me in"}, headers=auth("carol"))
    assert stranger.status_code == 404, stranger.text  # with API keys a non-member learns nothing, not even members
    assert stranger.json()["error"] == "unknown_session"
    assert client.post(path, json={"content": "x"}).status_code == 401  # no key at all

    logged = log(client, NOTES, session_id, auth("bob"))
    assert [(m["seq"], m["sender"], m["content"]) for m in logged["messages"]] == [
        (1, "bob", "hello"),
        (2, "alice", "hi all"),
    ]  # nothing of the refused messages was logged

    # a non-member reads nothing: the session is as unknown to them as anyone else's
    for refused in (
        client.get(path, headers=auth("carol")),
        client.get(f"{path}/1", headers=auth("carol")),
        client.get(f"{path}/1", params={"wait": 1}, headers=auth("carol")),
        client.get(f"{path}/1/stream", headers=auth("carol")),
        client.get(f"/{NOTES}/model/{session_id}", headers=auth("carol")),
        client.post(f"/{NOTES}/group/{session_id}/members", json={"members": ["carol"]}, headers=auth("carol")),
    ):
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"] == "unknown_session" and refused.json()["session_id"] == session_id

    # a member names carol: from then on she writes and reads
    added = client.post(f"/{NOTES}/group/{session_id}/members", json={"members": ["carol"]}, headers=auth("bob"))
    assert added.status_code == 200, added.text
    assert added.json()["members"] == ["alice", "bob", "carol"] and len(added.json()["messages"]) == 2
    assert write(client, NOTES, session_id, "thanks", auth("carol"))["seq"] == 3
    assert finish(client, NOTES, session_id, 3, auth("carol"))["items"][-1]["data"]["response"] == "noted carol: thanks"
    assert [m["sender"] for m in log(client, NOTES, session_id, auth("carol"))["messages"]] == ["bob", "alice", "carol"]
    notes = model(client, NOTES, session_id, auth("alice"))
    assert notes["notes"] == ["bob:hello", "alice:hi all", "carol:thanks"] and notes["count"] == 3
    senders = [(e["actor_text"], e.get("sender")) for e in notes["dialogue"] if e["actor"] == "user"]
    assert senders == [("hello", "bob"), ("hi all", "alice"), ("thanks", "carol")]


def test_the_owner_still_writes_after_naming_members_later(client: httpx.Client) -> None:
    """``start_session``'s contract: with members named, they and the caller who started it may write."""
    session_id = start(client, NOTES, auth("alice"))
    added = client.post(f"/{NOTES}/group/{session_id}/members", json={"members": ["bob"]}, headers=auth("alice"))
    assert added.status_code == 200 and added.json()["members"] == ["alice", "bob"], added.text
    assert write(client, NOTES, session_id, "from bob", auth("bob"))["sender"] == "bob"
    assert write(client, NOTES, session_id, "still mine", auth("alice"))["sender"] == "alice"
    refused = client.post(f"/{NOTES}/group/{session_id}/messages", json={"content": "x"}, headers=auth("carol"))
    assert refused.status_code == 404 and refused.json()["error"] == "unknown_session", refused.text


def test_another_callers_plain_session_takes_no_group_message(client: httpx.Client) -> None:
    """With API keys another caller's session answers 404 on every route: a group message is no way in.

    With API keys only the owner and named members write to a session; a sender is no member.
    """
    answer = client.post(f"/{NOTES}/start_session", headers=auth("alice"))  # alice's own, not a group session
    session_id = answer.json()["session_id"]
    assert client.get(f"/{NOTES}/model/{session_id}", headers=auth("bob")).status_code == 404
    intruder = client.post(f"/{NOTES}/group/{session_id}/messages", json={"content": "hi"}, headers=auth("bob"))
    assert intruder.status_code == 404 and intruder.json()["error"] == "unknown_session", intruder.text
    assert log(client, NOTES, session_id, auth("alice"))["messages"] == []
    assert client.get(f"/{NOTES}/model/{session_id}", headers=auth("bob")).status_code == 404


def test_different_senders_are_reasoned_about_at_the_same_time(client: httpx.Client) -> None:
    """Two ``meet:`` messages meet only if their reasoners run concurrently (else one is ignored)."""
    session_id = start(client, NOTES, auth("alice"), members=["bob"])
    room = f"meet:{uuid.uuid4().hex}"
    first = write(client, NOTES, session_id, room, auth("alice"))
    second = write(client, NOTES, session_id, room, auth("bob"))
    for message in (first, second):
        execution = finish(client, NOTES, session_id, message["seq"], auth("alice"))
        assert execution["message"]["decision"] == "delegate", execution
    assert model(client, NOTES, session_id, auth("bob"))["count"] == 2


# ---- without API keys ------------------------------------------------------------------------
def test_without_keys_the_body_names_the_sender(celery: list[ApiServer]) -> None:
    with httpx.Client(base_url=celery[0].url + PREFIX, timeout=60) as client:
        session_id = start(client, THINK)
        path = f"/{THINK}/group/{session_id}/messages"
        missing = client.post(path, json={"content": "who am I?"})
        assert missing.status_code == 422, missing.text
        assert missing.json()["error"] == "sender_required" and "sender" in missing.json()["detail"]
        assert log(client, THINK, session_id)["messages"] == []

        accepted = client.post(path, json={"content": "who am I?", "sender": "zoe"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["message"]["sender"] == "zoe"
        execution = finish(client, THINK, session_id, 1)
        assert execution["items"][0]["data"]["sender"] == "zoe"
        assert execution["items"][-1]["data"]["response"] == "echo: zoe asks who am I? (prefs {})"
        assert log(client, THINK, session_id)["members"] == []  # named members only: writing names nobody

        # named members without keys: the body's sender must be one of them
        closed = start(client, NOTES, members=["zoe"])
        outsider = client.post(f"/{NOTES}/group/{closed}/messages", json={"content": "hi", "sender": "yuri"})
        assert outsider.status_code == 403 and outsider.json()["error"] == "not_a_member", outsider.text
        assert outsider.json()["sender"] == "yuri"
        member = client.post(f"/{NOTES}/group/{closed}/messages", json={"content": "hi", "sender": "zoe"})
        assert member.status_code == 202 and member.json()["message"]["sender"] == "zoe", member.text
        assert finish(client, NOTES, closed, 1)["message"]["status"] == "answered"
        assert model(client, NOTES, closed)["notes"] == ["zoe:hi"]


# ---- following an execution ------------------------------------------------------------------
def test_a_poll_with_wait_answers_the_finished_execution(client: httpx.Client) -> None:
    session_id = start(client, NOTES, auth("alice"))
    assert write(client, NOTES, session_id, "hello", auth("alice"))["status"] == "queued"
    write(client, NOTES, session_id, "psst not for you", auth("alice"))

    delegated = finish(client, NOTES, session_id, 1, auth("alice"))
    assert delegated["message"]["status"] == "answered" and delegated["message"]["decision"] == "delegate"
    first, *_, last = delegated["items"]
    assert first == {
        "event": "decision",
        "data": {**first["data"], "decision": "delegate", "sender": "alice", "seq": 1},
    }
    assert last["event"] == "response" and last["data"]["response"] == "noted alice: hello"
    assert last["data"]["session_id"] == session_id and last["data"]["error"] is None

    ignored = finish(client, NOTES, session_id, 2, auth("alice"))
    assert ignored["message"]["status"] == "ignored" and ignored["message"]["reason"] == "a side remark"
    assert [item["event"] for item in ignored["items"]] == ["decision"]
    assert ignored["items"][0]["data"]["decision"] == "ignore"
    assert model(client, NOTES, session_id, auth("alice"))["notes"] == ["alice:hello"]

    later = log(client, NOTES, session_id, auth("alice"), after=1)
    assert [(m["seq"], m["status"]) for m in later["messages"]] == [(2, "ignored")]


def test_an_execution_streams_as_server_sent_events_and_resumes(client: httpx.Client) -> None:
    session_id = start(client, THINK, auth("alice"), members=["bob"])
    message = write(client, THINK, session_id, "what is up?", auth("bob"))
    path = f"/{THINK}/group/{session_id}/messages/{message['seq']}/stream"

    response, text = stream(client, "GET", path, headers=auth("alice"))
    assert response.status_code == 200 and response.headers["content-type"].startswith(SSE), text
    frames = parse_sse(text)
    assert [frame[0] for frame in frames] == list(range(len(frames)))
    kinds = [frame[1] for frame in frames]
    assert kinds[0] == "decision" and kinds[-1] == "response" and "state" in kinds, kinds
    assert frames[0][2]["decision"] == "delegate" and frames[0][2]["sender"] == "bob"
    assert frames[-1][2]["response"] == "echo: bob asks what is up? (prefs {})"
    polled = finish(client, THINK, session_id, message["seq"], auth("bob"))
    assert as_items(frames) == polled["items"]  # the stream and the poll tell the same

    for seen in (0, 2, len(frames) - 2):
        response, text = stream(client, "GET", path, headers={**auth("bob"), "Last-Event-ID": str(seen)})
        assert response.status_code == 200, text
        assert parse_sse(text) == frames[seen + 1 :]
    response, text = stream(client, "GET", path, headers={**auth("bob"), "Last-Event-ID": str(len(frames) - 1)})
    assert response.status_code == 200 and parse_sse(text) == []

    missing, text = stream(client, "GET", f"/{THINK}/group/{session_id}/messages/9/stream", headers=auth("bob"))
    assert missing.status_code == 404 and json.loads(text)["error"] == "unknown_message", text


def test_posting_with_accept_event_stream_streams_the_execution(client: httpx.Client) -> None:
    session_id = start(client, THINK, auth("alice"))
    write(client, THINK, session_id, "psst first", auth("alice"))
    response, text = stream(
        client,
        "POST",
        f"/{THINK}/group/{session_id}/messages",
        json={"content": "and now?"},
        headers={**auth("alice"), "Accept": SSE},
    )
    assert response.is_success and response.headers["content-type"].startswith(SSE), text
    frames = parse_sse(text)
    assert [frame[0] for frame in frames] == list(range(len(frames)))
    assert frames[0][1:] == ("decision", {**frames[0][2], "decision": "delegate", "seq": 2, "sender": "alice"})
    assert frames[-1][1] == "response"
    assert frames[-1][2]["response"] == "echo: alice asks and now? (prefs {})"
    assert as_items(frames) == finish(client, THINK, session_id, 2, auth("alice"))["items"]

    ignored, text = stream(
        client,
        "POST",
        f"/{THINK}/group/{session_id}/messages",
        json={"content": "psst again"},
        headers={**auth("alice"), "Accept": SSE},
    )
    assert [(kind, data["decision"]) for _, kind, data in parse_sse(text)] == [("decision", "ignore")]
    assert [m["status"] for m in log(client, THINK, session_id, auth("alice"))["messages"]] == [
        "ignored",
        "answered",
        "ignored",
    ]


def test_the_sse_answer_to_a_post_says_where_its_execution_is(client: httpx.Client) -> None:
    """A client whose stream breaks must learn the execution's URL to resume it (the route documents 202)."""
    session_id = start(client, NOTES, auth("alice"))
    response, text = stream(
        client,
        "POST",
        f"/{NOTES}/group/{session_id}/messages",
        json={"content": "hello"},
        headers={**auth("alice"), "Accept": SSE},
    )
    assert response.status_code == 202, text
    assert response.headers["location"] == f"{PREFIX}/{NOTES}/group/{session_id}/messages/1"
    assert [kind for _, kind, _ in parse_sse(text)] == ["decision", "response"]


# ---- errors ----------------------------------------------------------------------------------
def test_error_bodies_name_what_was_wrong_and_nothing_is_logged(client: httpx.Client) -> None:
    session_id = start(client, NOTES, auth("alice"))
    path = f"/{NOTES}/group/{session_id}/messages"

    def refused(answer: httpx.Response, status: int, error: str) -> dict[str, Any]:
        assert answer.status_code == status, answer.text
        body: dict[str, Any] = answer.json()
        assert body["error"] == error and body["detail"], body
        return body

    invalid = refused(
        client.post(path, json={"content": "hi", "event": "nope"}, headers=auth("alice")), 422, "invalid_message"
    )
    assert "'nope'" in invalid["detail"] and "user_input" in invalid["detail"]
    large = refused(
        client.post(path, json={"content": "x" * (64 * 1024 + 1)}, headers=auth("alice")), 413, "event_input_too_large"
    )
    assert large["limit_bytes"] == 64 * 1024 and large["received_bytes"] == 64 * 1024 + 1
    unknown_key = refused(
        client.post(f"/nope/group/{session_id}/messages", json={"content": "hi"}, headers=auth("alice")),
        404,
        "unknown_model_key",
    )
    assert unknown_key["model_key"] == "nope" and NOTES in unknown_key["known_model_keys"]
    unknown = refused(
        client.post(f"/{NOTES}/group/no-such-session/messages", json={"content": "hi"}, headers=auth("alice")),
        404,
        "unknown_session",
    )
    assert unknown["session_id"] == "no-such-session"
    members = client.post(f"/{NOTES}/group/no-such-session/members", json={"members": ["bob"]}, headers=auth("alice"))
    refused(members, 404, "unknown_session")
    refused(client.post(f"/{NOTES}/group/start_session", json={"members": []}), 401, "unauthorized")
    refused(client.get(path), 401, "unauthorized")
    # a malformed body keeps FastAPI's shape
    extra = client.post(path, json={"content": "hi", "to": "bob"}, headers=auth("alice"))
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "to"], extra.text
    empty = client.post(f"/{NOTES}/group/{session_id}/members", json={"members": []}, headers=auth("alice"))
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "members"], empty.text
    assert log(client, NOTES, session_id, auth("alice"))["messages"] == []

    write(client, NOTES, session_id, "hello", auth("alice"))
    missing = refused(client.get(f"{path}/2", headers=auth("alice")), 404, "unknown_message")
    assert (missing["seq"], missing["messages"], missing["session_id"]) == (2, 1, session_id)
    assert "2" in missing["detail"]
    assert client.get(f"{path}/0", headers=auth("alice")).status_code == 422  # numbers start at 1
    assert client.get(f"{path}/1", params={"wait": 31}, headers=auth("alice")).status_code == 422
    assert client.get(f"{path}/1/stream", headers={**auth("alice"), "Last-Event-ID": "-1"}).status_code == 422


# ---- many senders, two API processes ---------------------------------------------------------
def _plan(sender: str, count: int) -> list[str]:
    """A sender's messages in the order sent: every fourth is a side remark the reasoner ignores."""
    return [f"psst {sender} {n}" if n % 4 == 3 else f"{sender} says {n}" for n in range(count)]


def _send_all(
    urls: list[str], model_key: str, session_id: str, sender: str, offset: int, count: int, keyed: bool
) -> list[dict[str, Any]]:
    """Post ``sender``'s messages one after the other, alternating between the servers; the accepted messages."""
    accepted = []
    headers = auth(sender) if keyed else {}
    with httpx.Client(timeout=60) as client:
        for n, content in enumerate(_plan(sender, count)):
            body = {"content": content, **({} if keyed else {"sender": sender})}
            url = f"{urls[(offset + n) % len(urls)]}{PREFIX}/{model_key}/group/{session_id}/messages"
            answer = client.post(url, json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["message"])
    return accepted


def _write_at_once(
    urls: list[str], model_key: str, session_id: str, senders: list[str], count: int, keyed: bool
) -> dict[str, list[dict[str, Any]]]:
    with ThreadPoolExecutor(len(senders)) as pool:
        futures = {
            sender: pool.submit(_send_all, urls, model_key, session_id, sender, offset, count, keyed)
            for offset, sender in enumerate(senders)
        }
        return {sender: future.result() for sender, future in futures.items()}


def _check_log(logged: list[dict[str, Any]], sent: dict[str, list[dict[str, Any]]]) -> None:
    """Numbers 1..N without gaps or duplicates; each sender's messages in the order sent."""
    total = sum(len(messages) for messages in sent.values())
    assert [m["seq"] for m in logged] == list(range(1, total + 1))
    for sender, messages in sent.items():
        assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
        mine = [(m["seq"], m["content"]) for m in logged if m["sender"] == sender]
        assert mine == [(m["seq"], m["content"]) for m in messages]
        for message in logged:
            if message["sender"] == sender:
                ignored = message["content"].startswith("psst")
                assert message["status"] == ("ignored" if ignored else "answered"), message


def test_many_senders_through_two_api_processes_lose_nothing(keyed: ApiServer, keyed_twin: ApiServer) -> None:
    senders, count = ["alice", "bob", "carol", "dave"], 12
    urls = [keyed.url, keyed_twin.url]
    with _at(keyed) as client:
        session_id = start(client, NOTES, auth("alice"), members=senders)
    sent = _write_at_once(urls, NOTES, session_id, senders, count, keyed=True)

    clients = [_at(keyed), _at(keyed_twin)]
    try:
        for sender, messages in sent.items():
            for n, message in enumerate(messages):
                reader = clients[n % 2]  # read through either process
                execution = finish(reader, NOTES, session_id, message["seq"], auth(senders[(n + 1) % len(senders)]))
                assert execution["items"][0]["event"] == "decision", execution
                assert execution["items"][0]["data"]["sender"] == sender
                if message["content"].startswith("psst"):
                    assert len(execution["items"]) == 1, execution
                else:  # this message's own answer, not another's
                    assert execution["items"][-1]["data"]["response"] == f"noted {sender}: {message['content']}"
        _check_log(log(clients[1], NOTES, session_id, auth("bob"))["messages"], sent)
        notes = model(clients[0], NOTES, session_id, auth("carol"))
        for reader in clients:  # either process streams any execution, whichever process ran it
            for seq in (1, len(notes["notes"])):
                path = f"/{NOTES}/group/{session_id}/messages/{seq}/stream"
                response, text = stream(reader, "GET", path, headers=auth("dave"))
                assert response.status_code == 200, text
                assert as_items(parse_sse(text)) == finish(reader, NOTES, session_id, seq, auth("dave"))["items"]
    finally:
        for reader in clients:
            reader.close()
    delegated = {
        sender: [f"{sender}:{m['content']}" for m in messages if not m["content"].startswith("psst")]
        for sender, messages in sent.items()
    }
    assert notes["count"] == sum(len(mine) for mine in delegated.values()) == len(notes["notes"])
    for sender, mine in delegated.items():
        assert [note for note in notes["notes"] if note.startswith(f"{sender}:")] == mine


def test_many_senders_with_celery_workers_each_get_the_llms_answer(celery: list[ApiServer]) -> None:
    senders, count = ["ann", "ben", "cid"], 6
    urls = [api.url for api in celery]
    with _at(celery[1]) as client:
        session_id = start(client, THINK)
    sent = _write_at_once(urls, THINK, session_id, senders, count, keyed=False)

    clients = [_at(api) for api in celery]
    try:
        for sender, messages in sent.items():
            for n, message in enumerate(messages):
                execution = finish(clients[n % 2], THINK, session_id, message["seq"])
                first, last = execution["items"][0], execution["items"][-1]
                assert first["event"] == "decision" and first["data"]["sender"] == sender, execution
                if message["content"].startswith("psst"):
                    assert first["data"]["decision"] == "ignore" and len(execution["items"]) == 1, execution
                else:
                    assert last["event"] == "response", execution
                    assert last["data"]["response"] == f"echo: {sender} asks {message['content']} (prefs {{}})"
                    assert last["data"]["state"] == "waiting"
        _check_log(log(clients[0], THINK, session_id)["messages"], sent)
        dialogue = model(clients[1], THINK, session_id)["dialogue"]
    finally:
        for reader in clients:
            reader.close()
    said = [(e.get("sender"), e["actor_text"]) for e in dialogue if e["actor"] == "user"]
    expected = Counter(
        (sender, m["content"]) for sender, messages in sent.items() for m in messages if "psst" not in m["content"]
    )
    assert Counter(said) == expected
    for sender in senders:
        assert [text for who, text in said if who == sender] == [
            m["content"] for m in sent[sender] if "psst" not in m["content"]
        ]
