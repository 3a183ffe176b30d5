"""A small flow whose invoker the runtime tests control (gates, failures), plus its templates.

States: ``intro`` (user, initial) --user_input--> ``ai_answers`` (a ``python`` invoker calling
:func:`answer`) --ai_extraction--> ``user_enters_query`` (user) --user_input--> ``ai_answers``;
``advance`` is a user->user event from ``intro`` and from ``user_enters_query``.

What the invoker does depends on the user's text (the prompt is ``Q: <text>``):

* ``gate:<name>``: marks the gate ``<name>`` as entered, then blocks until the test releases it.
  With ``$RUNTIME_FLOWS_HOLD_FOREVER=1`` it instead blocks for good (a process to be killed);
  with ``$RUNTIME_FLOWS_DIE_ON_ENTRY=1`` it kills its own process with SIGKILL at once.
* ``fail:<text>``: raises ``RuntimeError("invoker exploded on <text>")``.
* anything else: answers ``Answer: <text>``.

A second flow, ``parallel`` (:data:`PARALLEL_KEY`), runs two branches at once in ``work``: one
that fails (once the other has started) and one held by the gate named in the user's text.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State

MODEL_KEY = "runtime"
PARALLEL_KEY = "parallel"
HOLD_FOREVER_ENV = "RUNTIME_FLOWS_HOLD_FOREVER"
DIE_ON_ENTRY_ENV = "RUNTIME_FLOWS_DIE_ON_ENTRY"
GATE_TIMEOUT = 30.0

TEMPLATES: dict[str, str] = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! Topic: {{ topic }}. Ask away.",
    "user/answer.jinja2": "You said: {{ actor_input }}",
    "llm/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.runtime_flows:answer"\n',
    "llm/answer.jinja2": "Q: {{ actor_input }}",
    "par_fail/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.runtime_flows:failing_branch"\n',
    "par_fail/branch.jinja2": "{{ actor_input }}",
    "par_held/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.runtime_flows:held_branch"\n',
    "par_held/branch.jinja2": "{{ actor_input }}",
}


@dataclass
class Gate:
    """``entered`` is set by the invoker, ``release`` by the test; ``finished`` / ``cancelled``
    tell how an async held branch ended."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


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
        if os.environ.get(DIE_ON_ENTRY_ENV) == "1":
            os.kill(os.getpid(), signal.SIGKILL)
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


def failing_branch(prompt: str) -> str:
    """Fails once the held branch of the same run has started."""
    name = prompt.strip().removeprefix("gate:")
    gate(name).entered.wait(GATE_TIMEOUT)
    raise RuntimeError(f"branch failed next to {name}")


async def held_branch(prompt: str) -> str:
    """Runs until its gate is released, or until it is cancelled."""
    held = gate(prompt.strip().removeprefix("gate:"))
    held.entered.set()
    try:
        while not held.release.is_set():
            await asyncio.sleep(0.005)
    except asyncio.CancelledError:
        held.cancelled.set()
        raise
    held.finished.set()
    return "held branch done"


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


class ParallelMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    work = State(value=100)
    done = State(value=200)

    user_input = intro.to(work) | done.to(work)
    ai_extraction = work.to(done)

    templates = dict(
        intro="user/intro.jinja2",
        work={"failing": "par_fail/branch.jinja2", "held": "par_held/branch.jinja2"},
        done="user/answer.jinja2",
    )


class ParallelModel(GenieModel):
    topic: str = "parallel"

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ParallelMachine


def write_templates(root: Path) -> Path:
    """Write the flow's templates under ``root`` and return it."""
    for relative, content in TEMPLATES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def create_flow(template_root: Path, store: str, **kwargs: object) -> GenieFlow:
    """A ``GenieFlow`` serving these flows under :data:`MODEL_KEY` and :data:`PARALLEL_KEY`."""
    flow = GenieFlow(template_root=template_root, store=store, **kwargs)  # type: ignore[arg-type]
    flow.register_model(MODEL_KEY, RuntimeModel)
    flow.register_model(PARALLEL_KEY, ParallelModel)
    return flow
