"""The example flows, registered on one ``GenieFlow``.

``flow`` serves them all (store from ``$GENIE_GRAPH_STORE``, default the embedded SQLite file);
``create_flow(store=...)`` makes another one, e.g. ``create_flow("memory://")`` in a notebook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genie_graph import GenieFlow, GenieModel

from .ordering import OrderModel
from .q_and_a import QandAModel
from .q_and_a_capture import QandACaptureModel
from .q_and_a_cond import QandACondModel
from .team_chat import TeamChatModel
from .topic_analysis import TopicAnalysisModel

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"

MODELS: dict[str, type[GenieModel]] = {
    "q_and_a": QandAModel,
    "q_and_a_cond": QandACondModel,
    "q_and_a_capture": QandACaptureModel,
    "topic_analysis": TopicAnalysisModel,
    "ordering": OrderModel,
    "team_chat": TeamChatModel,
}


def create_flow(store: str | None = None, **kwargs: Any) -> GenieFlow:
    """A ``GenieFlow`` with every example registered; ``kwargs`` go to ``GenieFlow``."""
    flow = GenieFlow(template_root=PROMPTS, store=store, **kwargs)
    for model_key, model_class in MODELS.items():
        flow.register_model(model_key, model_class)
    return flow


flow = create_flow(os.environ.get("GENIE_GRAPH_STORE"))
