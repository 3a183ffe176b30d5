"""Flows of the group-session tests, servable by ``genie-graph serve --flow tests.group_flows:flow``.

* ``notes`` (user states only): every ``user_input`` appends ``<sender>:<text>`` to ``notes`` and
  counts it, so a lost update shows as a missing note or a wrong count. Its reasoner is a Python
  function: a message starting with ``psst`` is ignored, one starting with ``meet:`` waits (up to
  ``MEET_TIMEOUT`` seconds) until another sender's reasoner has started too (processing that is not
  concurrent across senders fails to meet), and ``boom`` makes the reasoner raise. ``hold:<key>``
  waits (up to ``HOLD_TIMEOUT`` seconds) until a test calls ``release(<key>)``, so a test can close a
  flow while a reasoner works; ``huh`` makes it answer nonsense (``42``).
* ``think``: ``user_input`` goes to an LLM state (the ``python`` invoker ``tests.group_flows:echo``)
  and back; its reasoner is an invoker template answering DELEGATE or IGNORE (``psst`` and ``aside``
  are ignored, the latter with the reason on the next line, as LLMs write it; ``nonsense`` makes it
  answer neither).
* ``done``: ``user_input`` leads to a final state, which takes no more messages.

Templates are written to ``$GENIE_GRAPH_TEST_GROUP_TEMPLATES`` by ``write_templates``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from pydantic import Field

from genie_graph import Decision, EventData, GenieFlow, GenieModel, GenieStateMachine, GroupMessage, State

NOTES, THINK = "notes", "think"
DONE = "done"
MEET_TIMEOUT = 20.0
HOLD_TIMEOUT = 30.0

_released: set[str] = set()

_met: dict[str, set[str]] = {}
_met_guard = threading.Lock()
reasoned: list[tuple[str, str, str]] = []
"""(event, sender, content) as the ``notes`` reasoner starts and ends each message: ``start`` / ``end``."""


def release(key: str) -> None:
    """Let the ``notes`` reasoner go on with ``hold:<key>`` messages (now and later)."""
    with _met_guard:
        _released.add(key)


async def notes_reasoner(message: GroupMessage, model: GenieModel) -> Decision | str | int:
    reasoned.append(("start", message.sender, message.content))
    try:
        if message.content == "boom":
            raise RuntimeError("the reasoner exploded")
        if message.content == "huh":
            return 42
        if message.content.startswith("hold:"):
            key = message.content.removeprefix("hold:")
            for _ in range(int(HOLD_TIMEOUT / 0.01)):
                with _met_guard:
                    if key in _released:
                        break
                await asyncio.sleep(0.01)
            return Decision.DELEGATE
        if message.content.startswith("meet:"):
            room = message.content.removeprefix("meet:")
            with _met_guard:
                _met.setdefault(room, set()).add(message.sender)
            for _ in range(int(MEET_TIMEOUT / 0.01)):
                with _met_guard:
                    if len(_met[room]) > 1:
                        return Decision.DELEGATE
                await asyncio.sleep(0.01)
            return "IGNORE nobody else came to the meeting"
        if message.content.startswith("psst"):
            return "IGNORE a side remark"
        return Decision.DELEGATE
    finally:
        reasoned.append(("end", message.sender, message.content))


class NotesMachine(GenieStateMachine):
    open = State(initial=True, value=0)

    user_input = open.to(open)

    templates = dict(open="group/open.jinja2")
    group_reasoner = notes_reasoner

    def on_exit_open(self, event_data: EventData) -> None:
        model: NotesModel = self.model  # type: ignore[assignment]
        if event_data.args:
            model.notes.append(f"{self.sender()}:{event_data.args[0]}")
            model.count += 1

    def sender(self) -> str:
        from genie_graph._preferences import current_preferences

        found = current_preferences.get()
        return str(found[0]) if found and found[0] else "?"


class NotesModel(GenieModel):
    notes: list[str] = Field(default_factory=list)
    count: int = 0

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NotesMachine


def echo(prompt: str) -> str:
    """The LLM of the ``think`` flow: says back its prompt."""
    if prompt.startswith("DECIDE:"):
        if "nonsense" in prompt:
            return "perhaps, who knows"
        if "aside" in prompt:
            return "IGNORE\nan aside between people"
        return "IGNORE chit-chat" if "psst" in prompt else "DELEGATE for the assistant"
    return f"echo: {prompt.strip()}"


class ThinkMachine(GenieStateMachine):
    waiting = State(initial=True, value=0)
    thinking = State(value=100)

    user_input = waiting.to(thinking)
    ai_extraction = thinking.to(waiting)

    templates = dict(waiting="group/waiting.jinja2", thinking="group/llm/think.jinja2")
    group_reasoner = "group/llm/decide.jinja2"


class ThinkModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ThinkMachine


class DoneMachine(GenieStateMachine):
    asking = State(initial=True, value=0)
    done = State(final=True, value=1)

    user_input = asking.to(done)

    templates = dict(asking="group/asking.jinja2", done="group/done.jinja2")


class DoneModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DoneMachine


TEMPLATES = {
    "group/meta.yaml": "renderer: {}\n",
    "group/open.jinja2": "{% if actor_input %}noted {{ sender }}: {{ actor_input }}{% else %}Say things.{% endif %}",
    "group/waiting.jinja2": "{% if actor_input %}{{ actor_input }}{% else %}Ask me.{% endif %}",
    "group/asking.jinja2": "Anything else?",
    "group/done.jinja2": "Done, {{ sender }}.",
    "group/llm/meta.yaml": "invoker:\n  type: python\n  callable: tests.group_flows:echo\n",
    "group/llm/think.jinja2": "{{ sender }} asks {{ actor_input }} (prefs {{ preferences | tojson }})",
    "group/llm/decide.jinja2": "DECIDE: {{ sender }} said {{ message }} after {{ messages | length }} messages",
}


def write_templates(root: Path) -> Path:
    for name, text in TEMPLATES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def build(template_root: str | Path, store: str | None = None, **kwargs: object) -> GenieFlow:
    flow = GenieFlow(template_root=template_root, store=store, **kwargs)  # type: ignore[arg-type]
    flow.register_model(NOTES, NotesModel)
    flow.register_model(THINK, ThinkModel)
    flow.register_model(DONE, DoneModel)
    return flow


_TEMPLATES_ENV = "GENIE_GRAPH_TEST_GROUP_TEMPLATES"
flow = build(os.environ[_TEMPLATES_ENV]) if _TEMPLATES_ENV in os.environ else None
