"""Small helpers shared by the tests: template trees on disk, and driving a session."""

from __future__ import annotations

import time
from pathlib import Path

from genie_graph import POLL, AIResponse, EventInput, GenieFlow

RENDERER_META = "renderer: {}\n"
ECHO_META = 'invoker:\n  type: echo\n  prefix: "Echo: "\n'


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: content}`` under ``root`` and return ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def send(flow: GenieFlow, model_key: str, session_id: str, event: str, text: str = "") -> AIResponse:
    """Send one event and poll (as a Genie Flow client does) until the session settles."""
    answer = flow.process_event(model_key, EventInput(session_id=session_id, event=event, event_input=text))
    deadline = time.monotonic() + 30
    while answer.next_actions == [POLL] and answer.error is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id} still running after 30 s")
        time.sleep(0.005)
        answer = flow.process_event(model_key, EventInput(session_id=session_id, event=POLL, event_input=""))
    return answer
