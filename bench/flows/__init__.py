"""The benchmark's flows on genie-graph: the peer's ``main.py`` wiring, on a ``GenieFlow``.

``flow`` (store from ``$GENIE_GRAPH_STORE``) serves ``qa``, ``pingpong`` and ``qa_slow``, the model
keys Genie Flow's benchmark stack serves, so one HTTP driver runs against both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genie_graph import GenieFlow

from .qa_flow import PingPongModel, QandAModel, SlowQandAModel

HERE = Path(__file__).resolve().parent


def create_flow(store: str | None = None, **options: Any) -> GenieFlow:
    """The three benchmark flows on one ``GenieFlow``."""
    flow = GenieFlow(template_root=HERE / "templates", store=store, **options)
    flow.register_template_directory("response", HERE / "templates" / "response")
    flow.register_template_directory("llm", HERE / "templates" / "llm")
    flow.register_template_directory("slow", HERE / "templates" / "slow")
    flow.register_model("qa", QandAModel)
    flow.register_model("pingpong", PingPongModel)
    flow.register_model("qa_slow", SlowQandAModel)
    return flow


flow = create_flow(os.environ.get("GENIE_GRAPH_STORE"))
