"""A runtime process for the multi-process tests: JSON requests on stdin, JSON answers on stdout.

Each request line is ``{"op": "create" | "event" | "model", ...}``; each answer line is
``{"ok": <result>}`` or ``{"error": "<type>: <message>"}``. The flow is
``tests.distributed_flows.build()``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from genie_graph import EventInput
from tests.distributed_flows import MODEL_KEY, build


def handle(flow: Any, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "create":
        return flow.create_new_session(MODEL_KEY).model_dump(mode="json")
    if op == "event":
        event = EventInput(
            session_id=request["session_id"], event=request["event"], event_input=request.get("text", "")
        )
        return flow.process_event(MODEL_KEY, event).model_dump(mode="json")
    if op == "model":
        return flow.get_model(MODEL_KEY, request["session_id"]).model_dump(mode="json")
    raise ValueError(f"unknown op {op!r}")


def serve(flow: Any, handler: Callable[[Any, dict[str, Any]], Any]) -> None:
    """Answer JSON request lines from stdin with ``handler`` until stdin closes, then close the flow."""
    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        try:
            answer = {"ok": handler(flow, json.loads(line))}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    flow.close()


def main() -> None:
    serve(build(), handle)


if __name__ == "__main__":
    main()
