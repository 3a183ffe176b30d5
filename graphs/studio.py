"""The example flows as plain LangGraph graphs, for LangGraph Studio (``langgraph dev``).

``langgraph.json`` at the repository root names each one, e.g. ``"q_and_a": "graphs.studio:q_and_a"``.
The server brings its own checkpointer. LLM states answer offline unless an endpoint is configured.
"""

from __future__ import annotations

from genie_graph import build_graph

from . import MODELS, PROMPTS

q_and_a = build_graph(MODELS["q_and_a"], PROMPTS)
q_and_a_cond = build_graph(MODELS["q_and_a_cond"], PROMPTS)
q_and_a_capture = build_graph(MODELS["q_and_a_capture"], PROMPTS)
topic_analysis = build_graph(MODELS["topic_analysis"], PROMPTS)
ordering = build_graph(MODELS["ordering"], PROMPTS)
team_chat = build_graph(MODELS["team_chat"], PROMPTS)
