"""A second runtime process for the group-session tests: JSON requests on stdin, JSON answers on stdout.

The flow is ``tests.group_flows.build($GENIE_GRAPH_TEST_GROUP_PROCESS_TEMPLATES, $GENIE_GRAPH_TEST_GROUP_STORE)``.
Each request line is ``{"op": "send" | "execution", ...}``; each answer line is ``{"ok": <result>}``
or ``{"error": "<type>: <message>"}`` (``tests.runtime_process.serve``):

* ``send``: ``send_message(model_key, session_id, content, sender)``; answers the message's number.
* ``execution``: ``execution(model_key, session_id, seq, wait)``; answers it as JSON.
"""

from __future__ import annotations

import os
from typing import Any

TEMPLATES_ENV = "GENIE_GRAPH_TEST_GROUP_PROCESS_TEMPLATES"
STORE_ENV = "GENIE_GRAPH_TEST_GROUP_STORE"


def handle(flow: Any, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "send":
        message = flow.send_message(request["model_key"], request["session_id"], request["content"], request["sender"])
        return message.seq
    if op == "execution":
        execution = flow.execution(request["model_key"], request["session_id"], request["seq"], request.get("wait", 0))
        return execution.model_dump(mode="json")
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    from tests.group_flows import build
    from tests.runtime_process import serve

    serve(build(os.environ[TEMPLATES_ENV], os.environ[STORE_ENV]), handle)


if __name__ == "__main__":
    main()
