"""The benchmark's flows hand-written in LangGraph behind a minimal FastAPI app: the stack's own floor.

The Q&A graph of ``bench.inprocess`` (intro, interrupt, an echo node, a user state, interrupt ...) on
the same SQLite saver genie-graph uses (``InlineSqliteSaver``, ``durability="sync"``), served on
Genie Flow's routes with only what a turn needs: an event runs the graph to its next interrupt and
answers with what the graph said. No session lock, no check of the event, no history, no pruning
of old checkpoints, no run in the background: what is left is LangGraph, FastAPI and uvicorn, set up
as ``genie-graph serve`` sets them up. ``qa_slow`` waits 1.5 s (``asyncio.sleep``) in its echo node;
``pingpong`` is two user states.

    python -m bench.bare_server --port 8000 --db /tmp/bare.sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import Body, FastAPI, HTTPException
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from bench.inprocess import QA, Utterance, bare_graph
from genie_graph._cli import KEEP_ALIVE_SECONDS
from genie_graph._stores import InlineSqliteSaver

SLOW_SECONDS = 1.5


async def _slow_ai(s: QA) -> dict[str, Any]:
    await asyncio.sleep(SLOW_SECONDS)
    out = f"(after {SLOW_SECONDS}s) {s.actor_input}"
    return {"dialogue": [*s.dialogue, Utterance(actor="assistant", text=out)], "actor_input": out, "state": "user"}


def _page(name: str) -> Callable[[QA], dict[str, Any]]:
    def page(s: QA) -> dict[str, Any]:
        dialogue = s.dialogue or [Utterance(actor="assistant", text="Welcome to ping pong")]
        text = interrupt({"next_actions": ["user_input"]})["event_input"]
        said = [Utterance(actor="user", text=text), Utterance(actor="assistant", text=f"{name}: {text}")]
        return {"dialogue": [*dialogue, *said], "actor_input": text, "state": name}

    return page


def _pingpong_graph(saver: InlineSqliteSaver) -> CompiledStateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(QA)
    builder.add_node("page_a", _page("page_a"))
    builder.add_node("page_b", _page("page_b"))
    builder.add_edge(START, "page_a")
    builder.add_edge("page_a", "page_b")
    builder.add_edge("page_b", "page_a")
    return builder.compile(checkpointer=saver)


def create_app(database: str) -> FastAPI:
    """The app: ``/v1/ai/{qa,qa_slow,pingpong}/start_session`` and ``/event``, and ``/health``."""
    connection = sqlite3.connect(database, check_same_thread=False)
    saver = InlineSqliteSaver(
        connection, serde=JsonPlusSerializer(allowed_msgpack_modules=[(QA.__module__, "Utterance")])
    )
    saver.setup()
    connection.execute("PRAGMA synchronous=NORMAL")
    graphs = {"qa": bare_graph(saver), "qa_slow": bare_graph(saver, _slow_ai), "pingpong": _pingpong_graph(saver)}
    app = FastAPI()

    def graph_of(model_key: str) -> CompiledStateGraph[Any]:
        if model_key not in graphs:
            raise HTTPException(404, f"unknown model key {model_key!r}")
        return graphs[model_key]

    def answer(session_id: str, values: dict[str, Any]) -> dict[str, Any]:
        dialogue = values["dialogue"]
        said = dialogue[-1].text if dialogue else "Welcome"  # (the intro node records its text once it resumes)
        return {"session_id": session_id, "next_actions": ["user_input"], "error": None, "response": said}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/ai/{model_key}/start_session")
    async def start_session(model_key: str) -> dict[str, Any]:
        session_id = str(uuid.uuid4())
        values = await graph_of(model_key).ainvoke(QA(), _config(session_id), durability="sync")
        return answer(session_id, values)

    @app.post("/v1/ai/{model_key}/event")
    async def event(model_key: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        graph, config = graph_of(model_key), _config(body["session_id"])
        if body["event"] == "poll":
            return answer(body["session_id"], (await graph.aget_state(config)).values)
        resume = Command(resume={"event": body["event"], "event_input": body["event_input"]})
        return answer(body["session_id"], await graph.ainvoke(resume, config, durability="sync"))

    return app


def _config(session_id: str) -> Any:
    return {"configurable": {"thread_id": session_id}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.db),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
