"""A flow the way a notebook uses it: sync calls from a thread whose event loop is running,
a graph driven with plain LangGraph calls, and stepping back through a session's history."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State, build_graph

from .helpers import ECHO_META, RENDERER_META, send, write_tree


class NoteMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    think = State(value=1)
    answer = State(value=2)

    user_input = intro.to(think) | answer.to(think)
    ai_extraction = think.to(answer)

    templates = dict(intro="n/intro.jinja2", think="n/llm/think.jinja2", answer="n/answer.jinja2")


class NoteModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NoteMachine


def _templates(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "prompts",
        {
            "n/meta.yaml": RENDERER_META,
            "n/intro.jinja2": "Hi, ask me.",
            "n/answer.jinja2": "{{ actor_input }}",
            "n/llm/meta.yaml": ECHO_META,
            "n/llm/think.jinja2": "{{ actor_input }}",
        },
    )


def test_sync_calls_work_while_the_callers_event_loop_runs(tmp_path: Path) -> None:
    """Jupyter runs cells inside an event loop; the sync API must still work there."""
    root = _templates(tmp_path)

    async def cell() -> list[str]:
        with GenieFlow(root, store="memory://") as flow:
            flow.register_model("note", NoteModel)
            sid = flow.create_new_session("note").session_id
            answers = [send(flow, "note", sid, "user_input", text).response or "" for text in ("one", "two")]
            graph = build_graph(NoteModel, root, InMemorySaver())
            config = {"configurable": {"thread_id": "plain"}}
            graph.invoke({}, config)
            state = graph.invoke(Command(resume={"event": "user_input", "event_input": "three"}), config)
            answers.append(state["dialogue"][-1]["actor_text"])
            return answers

    assert asyncio.run(cell()) == ["Echo: one", "Echo: two", "Echo: three"]


def test_step_back_through_recent_turns(tmp_path: Path) -> None:
    root = _templates(tmp_path)
    with GenieFlow(root, store="memory://", keep_checkpoints=12) as flow:
        flow.register_model("note", NoteModel)
        sid = flow.create_new_session("note").session_id
        for text in ("one", "two", "three"):
            send(flow, "note", sid, "user_input", text)
        graph = flow.graph("note")
        config = {"configurable": {"thread_id": sid}}
        history = list(graph.get_state_history(config))
        assert 3 < len(history) <= 12
        lengths = [len(snapshot.values.get("dialogue", [])) for snapshot in history]
        assert lengths == sorted(lengths, reverse=True), "newest first"
        assert lengths[0] == 7 and min(lengths) < 7

        # Step back: the checkpoint that waited for the second question, read by its config.
        waiting = next(s for s in history if s.interrupts and len(s.values.get("dialogue", [])) == 3)
        earlier = graph.get_state(waiting.config)
        assert [d["actor_text"] for d in earlier.values["dialogue"]] == ["Hi, ask me.", "one", "Echo: one"]
        assert earlier.next == ("answer",)
