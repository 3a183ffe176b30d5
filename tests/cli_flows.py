"""Small flows for the CLI tests (``genie-graph --flow tests.cli_flows:flow ...``).

The templates are written at import time into ``$GENIE_GRAPH_CLI_TEMPLATES`` (the tests point it
at a pytest tmp dir), else into a temporary directory removed when the process exits.

* ``echo``: intro -> ai_answers (echo invoker) -> user_enters_query, which loops back with
  ``user_input`` or ends with ``stop`` (a conditional transition) in the final state ``done``.
* ``once``: intro -> ai_answers (echo invoker) -> done (final): one answer, then the session ends.
* ``slow``: intro -> ai_works (two slow python steps in sequence) -> user_enters_query; a
  question containing "boom" makes the second step fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State

TEMPLATES: dict[str, str] = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! I echo what you say.\nAsk me anything.",
    "user/answer.jinja2": "{{ actor_input }}",
    "user/bye.jinja2": "Bye!",
    "user/last.jinja2": "Last words: {{ actor_input }}",
    "ai/meta.yaml": 'invoker: {type: echo, prefix: "Echo: "}\n',
    "ai/answer.jinja2": "{{ actor_input }}",
    "slow/meta.yaml": 'invoker: {type: python, callable: "tests.cli_flows:slow_step"}\n',
    "slow/step.jinja2": "{{ actor_input }}",
}


def slow_step(text: str) -> str:
    """A python-invoker step that takes a while, and fails on "boom" (second step only)."""
    time.sleep(0.25)
    if "boom" in text and text.startswith("step1:"):
        raise RuntimeError("the step blew up")
    return f"step{text.count('step') + 1}: {text}"


def _template_root() -> Path:
    configured = os.environ.get("GENIE_GRAPH_CLI_TEMPLATES")
    if configured:
        root = Path(configured)
    else:
        root = Path(tempfile.mkdtemp(prefix="genie-graph-cli-"))
        atexit.register(shutil.rmtree, root, True)
    for name, text in TEMPLATES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


class EchoMachine(GenieStateMachine):
    intro = State(initial=True, value=100)
    ai_answers = State(value=200)
    user_enters_query = State(value=300)
    done = State(final=True, value=400)

    user_input = intro.to(ai_answers) | user_enters_query.to(ai_answers)
    ai_extraction = ai_answers.to(user_enters_query)
    stop = user_enters_query.to(done, cond="may_stop")

    templates = dict(
        intro="user/intro.jinja2",
        ai_answers="ai/answer.jinja2",
        user_enters_query="user/answer.jinja2",
        done="user/bye.jinja2",
    )

    def may_stop(self) -> bool:
        return True


class EchoModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return EchoMachine


class OnceMachine(GenieStateMachine):
    intro = State(initial=True, value=100)
    ai_answers = State(value=200)
    done = State(final=True, value=300)

    user_input = intro.to(ai_answers)
    ai_extraction = ai_answers.to(done)

    templates = dict(intro="user/intro.jinja2", ai_answers="ai/answer.jinja2", done="user/last.jinja2")


class OnceModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return OnceMachine


class SlowMachine(GenieStateMachine):
    intro = State(initial=True, value=100)
    ai_works = State(value=200)
    user_enters_query = State(value=300)

    user_input = intro.to(ai_works) | user_enters_query.to(ai_works)
    ai_extraction = ai_works.to(user_enters_query)

    templates = dict(
        intro="user/intro.jinja2",
        ai_works=["slow/step.jinja2", "slow/step.jinja2"],
        user_enters_query="user/answer.jinja2",
    )


class SlowModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SlowMachine


def create_flow(store: str | None = None) -> GenieFlow:
    """All test flows on one ``GenieFlow`` (``memory://`` unless another store is given)."""
    flow = GenieFlow(template_root=_template_root(), store=store or "memory://")
    flow.register_model("echo", EchoModel)
    flow.register_model("once", OnceModel)
    flow.register_model("slow", SlowModel)
    return flow


flow = create_flow()
not_a_flow = 42
