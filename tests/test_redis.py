"""The Redis store itself: storage growth, expiry, the user index, the allow-list, an outage."""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import redis

import graphs
from genie_graph import EventInput, GenieFlow
from genie_graph._model import reachable_types
from genie_graph.errors import StoreUnavailable, UnknownSession
from tests.helpers import send
from tests.services import RedisServer

USER = {"email": "Ada@Example.org", "firstname": "Ada", "lastname": "Lovelace"}


def _turns(flow: GenieFlow, session_id: str, count: int) -> None:
    for n in range(count):
        answer = send(flow, "q_and_a", session_id, "user_input", f"question {n} " + "x" * 20)
        assert answer.error is None


def test_storage_stays_linear_and_below_genie_flows(redis_url: str) -> None:
    """Genie Flow keeps 42 KB for a 50-turn session; bare RedisSaver 4.9 MB."""
    with graphs.create_flow(redis_url) as flow:
        sizes = {}
        for turns in (10, 50, 100):
            session_id = flow.create_new_session("q_and_a").session_id
            _turns(flow, session_id, turns)
            sizes[turns] = flow.session_bytes("q_and_a", session_id)
    assert sizes[50] < 42_000, sizes
    per_turn_early = (sizes[50] - sizes[10]) / 40
    per_turn_late = (sizes[100] - sizes[50]) / 50
    assert 0.5 < per_turn_late / per_turn_early < 1.5, sizes  # linear: no copy of the dialogue per turn


def test_only_the_latest_checkpoints_stay_in_redis(redis_url: str) -> None:
    with graphs.create_flow(redis_url, keep_checkpoints=2) as flow:
        session_id = flow.create_new_session("q_and_a").session_id
        _turns(flow, session_id, 5)
        client = redis.Redis.from_url(redis_url)
        assert len(list(client.scan_iter(match=f"checkpoint:{session_id}:*"))) == 2
        history = list(flow.graph("q_and_a").get_state_history({"configurable": {"thread_id": session_id}}))
        assert len(history) == 2
        client.close()


def test_sessions_expire_after_the_idle_time_and_events_renew_it(redis_url: str) -> None:
    with graphs.create_flow(redis_url, session_ttl_seconds=2) as flow:
        idle = flow.create_new_session("q_and_a").session_id
        busy = flow.create_new_session("q_and_a").session_id
        client = redis.Redis.from_url(redis_url)
        assert 0 < client.ttl(f"genie:session:{idle}") <= 2
        for _ in range(3):
            time.sleep(0.8)
            send(flow, "q_and_a", busy, "user_input", "still here")
        with pytest.raises(UnknownSession):
            flow.get_model("q_and_a", idle)
        with pytest.raises(UnknownSession):
            flow.process_event("q_and_a", EventInput(session_id=idle, event="poll", event_input=""))
        assert idle not in flow.user_sessions("q_and_a")
        assert len(flow.get_model("q_and_a", busy).dialogue) == 7
        for key in client.scan_iter(match=f"*{busy}*"):  # every part of a session expires, a little after it
            assert client.ttl(key) > 0, key
        client.close()


def test_user_sessions_are_listed_per_model_key(store_url: str) -> None:
    # A user of this test only: other test modules start sessions for Ada on the same Redis.
    tag = uuid.uuid4().hex[:8]
    user = {**USER, "email": f"Ada.{tag}@Example.org"}
    with graphs.create_flow(store_url) as flow:
        mine = [flow.create_new_session("q_and_a", user_info=user).session_id for _ in range(2)]
        other_key = flow.create_new_session("q_and_a_cond", user_info=user).session_id
        someone_else = flow.create_new_session("q_and_a", user_info={**USER, "email": "bob@example.org"}).session_id
        anonymous = flow.create_new_session("q_and_a").session_id
        found = flow.user_sessions("q_and_a", {**user, "email": f"ada.{tag}@example.ORG"})
        assert sorted(found) == sorted(mine)
        assert flow.user_sessions("q_and_a_cond", user) == [other_key]
        assert {*mine, someone_else, anonymous} <= set(flow.user_sessions("q_and_a"))


def test_the_allow_list_names_exactly_the_registered_types(redis_url: str) -> None:
    with graphs.create_flow(redis_url) as flow:
        flow.create_new_session("q_and_a")
        allowed = set(flow._store.saver.serde._allowed_json_modules or ())  # type: ignore[union-attr]
    expected = reachable_types(graphs.MODELS.values())
    assert ("graphs.q_and_a", "QandAModel") in expected
    assert ("genie_graph._model", "DialogueElement") in expected
    assert {tuple(item) for item in allowed} == {(*module.split("."), name) for module, name in expected}


def test_a_redis_outage_gives_clear_errors_and_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with graphs.create_flow(server.url) as flow:
            session_id = flow.create_new_session("q_and_a").session_id
            send(flow, "q_and_a", session_id, "user_input", "before")
            server.stop()
            with pytest.raises(StoreUnavailable, match="unavailable.*retry once the store is back"):
                flow.process_event("q_and_a", EventInput(session_id=session_id, event="user_input", event_input="lost"))
            with pytest.raises(StoreUnavailable):
                flow.create_new_session("q_and_a")
            server.start()
            texts = [element.actor_text for element in flow.get_model("q_and_a", session_id).dialogue]
            assert [text.split(".")[0] for text in texts[1:]] == ["before", "You said: 'before'"]
            answer = send(flow, "q_and_a", session_id, "user_input", "after")
            assert answer.error is None and answer.response.startswith("You said: 'after'")
    finally:
        server.stop()


def test_serializer_fast_path_matches_the_stock_serializer() -> None:
    """Plain JSON skips the stock per-node walk but encodes to the same bytes; typed values still revive."""
    from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer
    from langgraph.types import Interrupt, Send

    from genie_graph import DialogueElement
    from genie_graph._redis import _serializer

    fast = _serializer(reachable_types([graphs.q_and_a.QandAModel]))
    stock = JsonPlusRedisSerializer(allowed_json_modules=fast._allowed_json_modules)
    plain = {"dialogue": [{"actor": "user", "actor_text": 'say "lc": 1 and __send__'}], "n": [1, 2.5, None, True]}
    assert fast.dumps_typed(plain) == stock.dumps_typed(plain)
    assert fast.loads_typed(fast.dumps_typed(plain)) == plain
    element = DialogueElement(actor="user", actor_text="hi")
    for typed in ({"element": element}, [Send("node", {"a": 1})], {"interrupt": Interrupt(value="x")}, {"s": {1, 2}}):
        encoded = fast.dumps_typed(typed)
        assert encoded == stock.dumps_typed(typed)
        assert fast.loads_typed(encoded) == stock.loads_typed(encoded)
    assert fast.loads_typed(fast.dumps_typed({"element": element}))["element"] == element
    unlisted = b'{"lc": 2, "type": "constructor", "id": ["collections", "OrderedDict"], "kwargs": {}}'
    assert not isinstance(fast.loads_typed(("json", unlisted)), OrderedDict)  # the allow-list holds


def test_waiting_polls_share_one_pubsub_connection(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every feed subscription of a process is on one pub/sub connection: with a pool of 4
    connections, 6 polls wait at once for a run in flight and all answer when it settles; and
    subscribing again and again opens no connection."""
    from concurrent.futures import ThreadPoolExecutor

    from tests import runtime_flows

    monkeypatch.setenv("GENIE_GRAPH_REDIS_MAX_CONNECTIONS", "4")
    flow = runtime_flows.create_flow(runtime_flows.write_templates(tmp_path / "templates"), redis_url)
    client = redis.Redis.from_url(redis_url)
    name = uuid.uuid4().hex
    held = runtime_flows.gate(name)
    try:
        sid = flow.create_new_session(runtime_flows.MODEL_KEY).session_id
        event = EventInput(session_id=sid, event="user_input", event_input=f"gate:{name}")
        assert flow.process_event(runtime_flows.MODEL_KEY, event).next_actions == ["poll"]
        assert held.entered.wait(10)
        store = flow._sync(flow._open_store())
        poll = EventInput(session_id=sid, event="poll", event_input="")
        first = flow.process_event(runtime_flows.MODEL_KEY, poll)
        with ThreadPoolExecutor(6) as pool:
            waiting = [pool.submit(flow.process_event, runtime_flows.MODEL_KEY, poll, wait=60) for _ in range(6)]
            deadline = time.monotonic() + 10
            while len(store._feeds.get(sid, ())) < 6 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert len(store._feeds.get(sid, ())) == 6  # all six wait, on a pool of four
            assert client.pubsub_numsub(f"genie:feed:{sid}") == [(f"genie:feed:{sid}".encode(), 1)]
            assert not any(future.done() for future in waiting)
            held.release.set()
            answers = [future.result(timeout=30) for future in waiting]
        # each answered at its news: the run's progress, or its end
        assert all(answer.error is None and answer.progress != first.progress for answer in answers), answers
        final = answers[0]
        for _ in range(5):
            if final.next_actions != ["poll"]:
                break
            final = flow.process_event(runtime_flows.MODEL_KEY, poll, wait=60)
        assert final.next_actions != ["poll"] and final.error is None, final
        assert client.pubsub_numsub(f"genie:feed:{sid}") == [(f"genie:feed:{sid}".encode(), 0)]  # left when done

        async def subscribe_often() -> None:
            for _ in range(20):
                async with store.subscribe(sid):
                    pass

        flow._sync(subscribe_often())
        connections = client.info("stats")["total_connections_received"]
        flow._sync(subscribe_often())
        assert client.info("stats")["total_connections_received"] == connections
    finally:
        held.release.set()
        flow.close()
        client.close()


def test_a_checkpoint_is_read_in_one_trip_as_the_stock_saver_reads_it(redis_url: str) -> None:
    """The saver reads a checkpoint, its pending writes and its parent's sends in one script; what it
    builds is what the stock saver's seven trips build: the latest, one by id, its parent, none."""
    from langgraph.checkpoint.redis.aio import AsyncRedisSaver

    from genie_graph._redis import _RedisSaver

    with graphs.create_flow(redis_url, keep_checkpoints=3) as flow:
        sid = flow.create_new_session("q_and_a").session_id
        _turns(flow, sid, 2)
        saver = flow._sync(flow._open_store()).saver
        assert isinstance(saver, _RedisSaver)

        def both(config: dict[str, Any]) -> tuple[Any, Any]:
            async def read() -> tuple[Any, Any]:
                return await _RedisSaver.aget_tuple(saver, config), await AsyncRedisSaver.aget_tuple(saver, config)

            return flow._sync(read())

        latest, stock = both({"configurable": {"thread_id": sid, "checkpoint_ns": ""}})
        assert latest is not None and latest == stock
        assert latest.pending_writes and latest.parent_config is not None  # (its interrupt, and a kept parent)
        assert both(latest.config) == (latest, stock)
        parent, stock_parent = both(latest.parent_config)
        assert parent is not None and parent == stock_parent
        assert both({"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}) == (None, None)


def test_a_checkpoint_and_its_writes_are_stored_as_the_stock_saver_stores_them(redis_url: str) -> None:
    """The saver writes in one round trip each what the stock saver writes in several: the same keys and
    documents (its search index and its reads find them alike)."""
    from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint
    from langgraph.checkpoint.redis.aio import AsyncRedisSaver

    from genie_graph._redis import _RedisSaver

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    checkpoint = create_checkpoint(empty_checkpoint(), None, 1)
    checkpoint["channel_values"] = {"state": "start", "dialogue": ["hi", {"actor": "user"}], "ünïcode": "ß"}
    checkpoint["channel_versions"] = {"state": 2, "dialogue": 1}
    with graphs.create_flow(redis_url) as flow:
        saver = flow._sync(flow._open_store()).saver
        assert isinstance(saver, _RedisSaver)

        def put(saver_class: type[AsyncRedisSaver], thread: str) -> Any:
            async def write() -> Any:
                config: Any = {
                    "configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": "1f0-parent"}
                }
                saved = await saver_class.aput(
                    saver, config, checkpoint, {"source": "loop", "step": 1, "parents": {}}, {}
                )
                await saver_class.aput_writes(saver, saved, [("state", "next"), ("__interrupt__", {"x": 1})], "task")
                return saved, await AsyncRedisSaver.aget_tuple(saver, saved)

            return flow._sync(write())

        ours, stock = put(_RedisSaver, "thread-ours"), put(AsyncRedisSaver, "thread-stock")

    def stored(thread: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in client.scan_iter(f"*{thread}*"):
            kind = client.type(key)
            value: Any
            if kind == "ReJSON-RL":
                value = client.json().get(key)
            else:
                value = client.get(key) if kind == "string" else client.zrange(key, 0, -1, withscores=True)
            if isinstance(value, dict):
                value.pop("checkpoint_ts", None)  # (the time of the write)
            found[key.replace(thread, "T")] = json.loads(json.dumps(value).replace(thread, "T"))
        return found

    assert stored("thread-ours") == stored("thread-stock") != {}
    (our_config, our_read), (stock_config, stock_read) = ours, stock
    assert our_config["configurable"]["checkpoint_id"] == stock_config["configurable"]["checkpoint_id"]
    assert our_read.checkpoint == stock_read.checkpoint and our_read.pending_writes == stock_read.pending_writes
    assert our_read.parent_config["configurable"]["checkpoint_id"] == "1f0-parent"


def test_a_poll_answers_from_the_answer_its_run_kept_until_a_checkpoint_is_written(redis_url: str) -> None:
    """A run keeps its answer beside the checkpoint it left: polls (in any process) answer from it without
    reading the checkpoint, until any other write moves the session on (here LangGraph's own update_state)."""
    client = redis.Redis.from_url(redis_url)

    def reads() -> int:  # checkpoint documents read, by the saver's script or not
        return int(client.info("commandstats").get("cmdstat_json.get", {}).get("calls", 0))

    poll = lambda flow, sid: flow.process_event("q_and_a", EventInput(session_id=sid, event="poll", event_input=""))  # noqa: E731
    with graphs.create_flow(redis_url) as flow, graphs.create_flow(redis_url) as elsewhere:
        sid = flow.create_new_session("q_and_a").session_id
        answered = send(flow, "q_and_a", sid, "user_input", "hello")
        before = reads()
        assert poll(flow, sid) == answered and poll(elsewhere, sid) == answered
        assert reads() == before
        config: Any = {"configurable": {"thread_id": sid}}
        flow.graph("q_and_a").update_state(config, {"actor_input": "changed"})
        before = reads()
        assert poll(elsewhere, sid) == answered  # the same dialogue, read from the new checkpoint
        assert reads() > before
        assert flow.get_model("q_and_a", sid).actor_input == "changed"
    client.close()


def test_a_runs_failure_is_told_once_to_the_first_poll_that_may_see_it(redis_url: str) -> None:
    """A run's failure waits in Redis for a poll of the session: a poll refused (another model key)
    leaves it there, the next good poll tells it, and the poll after that answers as usual."""
    client = redis.Redis.from_url(redis_url)
    poll = lambda flow, key, sid: flow.process_event(key, EventInput(session_id=sid, event="poll", event_input=""))  # noqa: E731
    with graphs.create_flow(redis_url) as flow:
        sid = flow.create_new_session("q_and_a").session_id
        answered = send(flow, "q_and_a", sid, "user_input", "hello")
        client.set(f"genie:error:{sid}", "RuntimeError: the run failed")  # as a run's end keeps it
        with pytest.raises(UnknownSession):
            poll(flow, "q_and_a_cond", sid)
        told = poll(flow, "q_and_a", sid)
        assert told.error == "RuntimeError: the run failed" and told.next_actions == ["user_input"]
        assert poll(flow, "q_and_a", sid) == answered
    client.close()


def test_an_event_takes_the_run_lease_with_its_lock_and_a_refusal_gives_both_back(redis_url: str) -> None:
    """An event's look takes the session's event lock and, if no run holds it, the run lease for the
    run the event may start. A refused event starts none: both are released and the session is listed
    in no run; the next event takes them again and its run ends as usual."""
    client = redis.Redis.from_url(redis_url)

    def held(sid: str) -> tuple[bool, bool, bool]:
        return (
            bool(client.exists(f"genie:lock:{sid}")),
            bool(client.exists(f"genie:run:{sid}")),
            client.zscore("genie:runs", sid) is not None,
        )

    with graphs.create_flow(redis_url) as flow:
        sid = flow.create_new_session("q_and_a").session_id
        refused = flow.process_event("q_and_a", EventInput(session_id=sid, event="ai_extraction", event_input=""))
        assert refused.error is not None and "ai_extraction" in refused.error
        assert held(sid) == (False, False, False)
        client.set(f"genie:run:{sid}", "another-run", px=60_000)  # a run elsewhere holds the lease
        busy = flow.process_event("q_and_a", EventInput(session_id=sid, event="user_input", event_input="hello"))
        assert busy.error is not None and busy.next_actions == ["poll"], busy
        assert client.get(f"genie:run:{sid}") == b"another-run"  # not ours to give back
        client.delete(f"genie:run:{sid}")
        answered = send(flow, "q_and_a", sid, "user_input", "hello")
        assert answered.error is None and "hello" in str(answered.response)
        assert held(sid) == (False, False, False)
    client.close()
