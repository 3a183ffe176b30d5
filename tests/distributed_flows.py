"""A flow for the multi-process tests: Celery workers and runtime processes load it by name.

``build()`` makes the ``GenieFlow`` from the environment: ``GENIE_GRAPH_STORE`` (a Redis URL),
``DISTRIBUTED_TEMPLATES`` (where :func:`write_templates` wrote the templates),
``DISTRIBUTED_MARKERS`` (a directory the invoker leaves marks in) and ``DISTRIBUTED_LEASE``
(the run lease, in seconds). States: ``intro`` --user_input--> ``thinking`` (invoker on the
default queue) --ai_extraction--> ``answered`` --user_input--> ``thinking``; ``special`` from
``intro`` or ``answered`` goes to ``routed``, an invoker on the named queue ``special``.

The invoker's answer depends on the user's text:

* ``slow:<name>``: the first call for ``<name>`` writes ``<markers>/<name>`` (its pid) and then
  hangs (a worker to be killed); later calls answer at once;
* ``pause:<seconds>``: sleeps, then answers;
* anything else: ``Answer: <text> (pid <pid>)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, NamedQueueTaskTemplate, State
from tests.helpers import write_tree

MODEL_KEY = "distributed"
SPECIAL_QUEUE = "special"

TEMPLATES: dict[str, str] = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! Ask away.",
    "user/answered.jinja2": "{{ actor_input }}",
    "llm/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.distributed_flows:work"\n',
    "llm/prompt.jinja2": "{{ actor_input }}",
}


def work(prompt: str) -> str:
    text = prompt.strip()
    if text.startswith("slow:"):
        mark = Path(os.environ["DISTRIBUTED_MARKERS"]) / text.removeprefix("slow:")
        try:
            with open(mark, "x") as first:
                first.write(str(os.getpid()))
        except FileExistsError:
            return f"Answer: {text}"
        time.sleep(120)  # the test kills this worker meanwhile
    if text.startswith("pause:"):
        time.sleep(float(text.removeprefix("pause:")))
    return f"Answer: {text} (pid {os.getpid()})"


class DistributedMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    thinking = State(value=100)
    answered = State(value=200)
    routed = State(value=300)

    user_input = intro.to(thinking) | answered.to(thinking)
    special = intro.to(routed) | answered.to(routed)
    ai_extraction = thinking.to(answered) | routed.to(answered)

    templates = dict(
        intro="user/intro.jinja2",
        thinking="llm/prompt.jinja2",
        answered="user/answered.jinja2",
        routed=NamedQueueTaskTemplate("llm/prompt.jinja2", SPECIAL_QUEUE),
    )


class DistributedModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DistributedMachine


def write_templates(root: Path) -> Path:
    return write_tree(root, TEMPLATES)


def build(store: str | None = None) -> GenieFlow:
    flow = GenieFlow(
        template_root=os.environ["DISTRIBUTED_TEMPLATES"],
        store=store or os.environ["GENIE_GRAPH_STORE"],
        runner="celery",
        run_lease_seconds=float(os.environ.get("DISTRIBUTED_LEASE", "2")),
    )
    flow.register_model(MODEL_KEY, DistributedModel)
    return flow
