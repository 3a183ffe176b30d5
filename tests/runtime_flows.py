"""A small flow whose invoker the runtime tests control (gates, failures), plus its templates.

States: ``intro`` (user, initial) --user_input--> ``ai_answers`` (a ``python`` invoker calling
:func:`answer`) --ai_extraction--> ``user_enters_query`` (user) --user_input--> ``ai_answers``;
``advance`` is a user->user event from ``intro`` and from ``user_enters_query``.

What the invoker does depends on the user's text (the prompt is ``Q: <text>``):

* ``gate:<name>``: marks the gate ``<name>`` as entered, then blocks until the test releases it.
  With ``$RUNTIME_FLOWS_HOLD_FOREVER=1`` it instead blocks for good (a process to be killed).
* ``fail:<text>``: raises ``RuntimeError("invoker exploded on <text>")``.
* anything else: answers ``Answer: <text>``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State

MODEL_KEY = "runtime"
HOLD_FOREVER_ENV = "RUNTIME_FLOWS_HOLD_FOREVER"
GATE_TIMEOUT = 30.0

TEMPLATES: dict[str, str] = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! Topic: {{ topic }}. Ask away.",
    "user/answer.jinja2": "You said: {{ actor_input }}",
    "llm/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.runtime_flows:answer"\n',
    "llm/answer.jinja2": "Q: {{ actor_input }}",
}


@dataclass
class Gate:
    """A pair of events: ``entered`` is set by the invoker, ``release`` by the test."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


_gates: dict[str, Gate] = {}
_gates_lock = threading.Lock()


def gate(name: str) -> Gate:
    """The gate called ``name`` (created on first use)."""
    with _gates_lock:
        return _gates.setdefault(name, Gate())


def answer(prompt: str) -> str:
    """The ``python`` invoker of ``ai_answers``."""
    text = prompt.removeprefix("Q: ").strip()
    if text.startswith("gate:"):
        held = gate(text.removeprefix("gate:").split()[0])
        held.entered.set()
        if os.environ.get(HOLD_FOREVER_ENV) == "1":
            threading.Event().wait()
        if not held.release.wait(GATE_TIMEOUT):
            raise TimeoutError(f"gate {text!r} was never released")
        return f"Answer: {text}"
    if text.startswith("fail:"):
        raise RuntimeError(f"invoker exploded on {text.removeprefix('fail:')}")
    return f"Answer: {text}"


class RuntimeMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    ai_answers = State(value=100)
    user_enters_query = State(value=200)

    user_input = intro.to(ai_answers) | user_enters_query.to(ai_answers)
    ai_extraction = ai_answers.to(user_enters_query)
    advance = intro.to(user_enters_query) | user_enters_query.to(user_enters_query)

    templates = dict(
        intro="user/intro.jinja2",
        ai_answers="llm/answer.jinja2",
        user_enters_query="user/answer.jinja2",
    )


class RuntimeModel(GenieModel):
    topic: str = "nothing"

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return RuntimeMachine

    def seed_model(self) -> None:
        assert self.seed_data is not None
        self.topic = json.loads(self.seed_data)["topic"]


def write_templates(root: Path) -> Path:
    """Write the flow's templates under ``root`` and return it."""
    for relative, content in TEMPLATES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def create_flow(template_root: Path, store: str, **kwargs: object) -> GenieFlow:
    """A ``GenieFlow`` serving this flow under :data:`MODEL_KEY`."""
    flow = GenieFlow(template_root=template_root, store=store, **kwargs)  # type: ignore[arg-type]
    flow.register_model(MODEL_KEY, RuntimeModel)
    return flow
