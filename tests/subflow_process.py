"""A runtime process for the sub-flow restart tests: JSON requests on stdin, JSON answers on stdout.

The flow is the examples' ``graphs.flow`` (so ``GENIE_GRAPH_STORE`` names the store), model key
``ordering``. Each request line is ``{"op": "create" | "send" | "model", ...}``; each answer line is
``{"ok": <result>}`` or ``{"error": "<type>: <message>"}``:

* ``create``: start a session; answers its ``AIResponse``.
* ``event``: an event as it is (``process_event``, no polling); answers its ``AIResponse``.
* ``send``: an event (``event``, ``text``), polled until the session settles; answers the last
  ``AIResponse`` as JSON, so keys that do not apply are left out as over HTTP.
* ``model``: the session's model (``model``) and the graph node it is at (``node``, e.g.
  ``address/asking_street``).
"""

from __future__ import annotations

import json
from typing import Any

MODEL_KEY = "ordering"


def handle(flow: Any, request: dict[str, Any]) -> Any:
    from genie_graph import EventInput
    from tests.helpers import send

    op = request["op"]
    if op == "create":
        return json.loads(flow.create_new_session(MODEL_KEY).model_dump_json())
    if op == "event":
        event = EventInput(session_id=request["session_id"], event=request["event"], event_input=request["text"])
        return json.loads(flow.process_event(MODEL_KEY, event).model_dump_json())
    if op == "send":
        answer = send(flow, MODEL_KEY, request["session_id"], request["event"], request.get("text", ""))
        return json.loads(answer.model_dump_json())
    if op == "model":
        model = flow.get_model(MODEL_KEY, request["session_id"])
        return {"model": model.model_dump(mode="json"), "node": flow.flow_of(MODEL_KEY).node_of(model)}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    import graphs
    from tests.runtime_process import serve

    serve(graphs.flow, handle)


if __name__ == "__main__":
    main()
