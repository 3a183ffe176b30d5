"""genie-graph's overhead over a hand-written LangGraph graph, in process, on the same checkpointer.

The hand-written graph is ``../shared/peers/langgraph-bare``'s Q&A flow (intro, interrupt, an echo
node, a user state, interrupt ...), with a pydantic state holding the dialogue. genie-graph runs
the benchmark's ``qa`` flow through its runtime on the same event loop, as ``genie-graph serve`` does
(``aprocess_event`` with ``wait``: the event answers with the run's answer, as the hand-written
graph's ``ainvoke`` hands back its state). Both write checkpoints as genie-graph's store does
(``durability="exit"`` in memory, ``"sync"`` on SQLite and Redis) and run 5-turn sessions, so the
figures compare with the measured floors. On SQLite and Redis both use genie-graph's saver (LangGraph's
``SqliteSaver`` run inline on the loop, see ``_stores.InlineSqliteSaver``; the Redis saver with its one-trip
checkpoint read, see ``_redis._RedisSaver``), so the ratio is what the runtime adds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, interrupt
from pydantic import BaseModel, Field

from bench.scenarios import TURN_TIMEOUT, Timings
from genie_graph import EventInput
from genie_graph._stores import InlineSqliteSaver, MemoryStore, SqliteStore

TURNS_PER_SESSION = 5
ROUNDS = 4
"""Both sides run their sessions in this many alternating rounds."""


def _merge(into: Timings, timings: Timings) -> None:
    into.seconds += timings.seconds
    into.failures += timings.failures
    into.errors += timings.errors[: max(0, 5 - len(into.errors))]


class Utterance(BaseModel):
    actor: str
    text: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class QA(BaseModel):
    state: str = "intro"
    actor_input: str = ""
    dialogue: list[Utterance] = []


def _intro(s: QA) -> dict[str, Any]:
    dialogue = s.dialogue or [Utterance(actor="assistant", text="Welcome to Q and A")]
    event = interrupt({"next_actions": ["user_input"]})
    text = event["event_input"]
    return {"dialogue": [*dialogue, Utterance(actor="user", text=text)], "actor_input": text, "state": "ai"}


def _ai(s: QA) -> dict[str, Any]:
    out = "Echo: " + s.actor_input
    return {"dialogue": [*s.dialogue, Utterance(actor="assistant", text=out)], "actor_input": out, "state": "user"}


def _user_enters_query(s: QA) -> dict[str, Any]:
    event = interrupt({"next_actions": ["user_input"]})
    text = event["event_input"]
    return {"dialogue": [*s.dialogue, Utterance(actor="user", text=text)], "actor_input": text, "state": "ai"}


def bare_graph(saver: BaseCheckpointSaver[Any], ai: Callable[[QA], Any] = _ai) -> CompiledStateGraph[Any]:
    """The hand-written Q&A graph (``ai``: its echo node)."""
    builder: StateGraph[Any] = StateGraph(QA)
    builder.add_node("intro", _intro)
    builder.add_node("ai", ai)
    builder.add_node("user_enters_query", _user_enters_query)
    builder.add_edge(START, "intro")
    builder.add_edge("intro", "ai")
    builder.add_edge("ai", "user_enters_query")
    builder.add_edge("user_enters_query", "ai")
    return builder.compile(checkpointer=saver)


async def _bare_turns(saver: BaseCheckpointSaver[Any], sessions: int, durability: Durability = "sync") -> Timings:
    graph = bare_graph(saver)
    timings = Timings()
    for _ in range(sessions):
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
        await graph.ainvoke(QA(), config, durability=durability)
        for turn in range(TURNS_PER_SESSION):
            resume = Command(resume={"event": "user_input", "event_input": f"question {turn}"})
            began = time.perf_counter()
            await graph.ainvoke(resume, config, durability=durability)
            timings.seconds.append(time.perf_counter() - began)
    return timings


def _genie_turns(store: str, sessions: int) -> Timings:
    """The same turns through genie-graph's runtime, on the caller's event loop as a server runs it."""
    from bench.flows import create_flow

    async def turns() -> Timings:
        timings = Timings()
        flow = create_flow(store)
        await flow.attach_to_running_loop()
        try:
            for _ in range(sessions):
                session_id = (await flow.acreate_new_session("qa")).session_id
                for turn in range(TURNS_PER_SESSION):
                    event = EventInput(session_id=session_id, event="user_input", event_input=f"question {turn}")
                    began = time.perf_counter()
                    answer = await flow.aprocess_event("qa", event, wait=TURN_TIMEOUT)
                    timings.seconds.append(time.perf_counter() - began)
                    if answer.response is None or answer.error is not None:
                        timings.add_failure(f"no answer: {answer.model_dump()}")
        finally:
            await flow.aclose()
        return timings

    return asyncio.run(turns())


def overhead(sessions: int, redis_url: str | None) -> list[dict[str, Any]]:
    """Per-turn p50 of both, per checkpointer, and their ratio."""
    rows: list[dict[str, Any]] = []
    place = Path(tempfile.mkdtemp(prefix="genie-graph-overhead-"))

    async def bare(kind: str, sessions: int) -> Timings:
        serde = JsonPlusSerializer(allowed_msgpack_modules=[(Utterance.__module__, "Utterance")])
        if kind == "memory":
            return await _bare_turns(InMemorySaver(serde=serde), sessions, MemoryStore.durability)
        if kind == "sqlite":  # genie-graph's own saver, set up as its store does
            connection = sqlite3.connect(place / "bare.sqlite", check_same_thread=False)  # (each round adds to it)
            try:
                saver = InlineSqliteSaver(connection, serde=serde)
                saver.setup()
                connection.execute("PRAGMA synchronous=NORMAL")
                return await _bare_turns(saver, sessions, SqliteStore.durability)
            finally:
                connection.close()
        from genie_graph._redis import _RedisSaver, _serializer

        async with _RedisSaver.from_conn_string(redis_url) as saver:  # genie-graph's saver, as its store sets it up
            # it revives nested models only from an allow-list (see the Redis issue's trap)
            saver.serde = _serializer([(__name__, "Utterance")])
            await saver.asetup()
            return await _bare_turns(saver, sessions)

    stores = {"memory": "memory://", "sqlite": f"sqlite:///{place / 'genie.sqlite'}"}
    if redis_url:
        stores["redis"] = redis_url
    for kind, store in stores.items():
        # In alternating rounds, so a slow spell of the machine falls on both sides alike.
        hand_timings, genie_timings = Timings(), Timings()
        per_round = max(1, sessions // ROUNDS)
        for _ in range(ROUNDS if sessions >= ROUNDS else 1):
            _merge(hand_timings, asyncio.run(bare(kind, per_round)))
            _merge(genie_timings, _genie_turns(store, per_round))
        hand_written, genie = hand_timings.summary(), genie_timings.summary()
        ratio = genie["p50_ms"] / hand_written["p50_ms"] if genie["p50_ms"] and hand_written["p50_ms"] else None
        rows.append(
            {
                "checkpointer": kind,
                "langgraph_p50_ms": hand_written["p50_ms"],
                "genie_graph_p50_ms": genie["p50_ms"],
                "ratio": round(ratio, 2) if ratio else None,
                "langgraph": hand_written,
                "genie_graph": genie,
            }
        )
    return rows
