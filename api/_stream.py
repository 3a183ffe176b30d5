"""Server-sent events: an event's run followed as it happens (``GenieFlow.astream_event``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from genie_graph import EventInput, GenieFlow

SSE_MEDIA_TYPE = "text/event-stream"


def _frame(item: dict[str, Any]) -> bytes:
    data = dict(item["data"])
    if item["event"] == "response":
        data = {**data, "state": item.get("state")}
    return f"event: {item['event']}\ndata: {json.dumps(data)}\n\n".encode()


async def event_stream(flow: GenieFlow, model_key: str, event: EventInput) -> AsyncIterator[bytes]:
    """Send the event now (a refusal raises before any byte is streamed); then stream its run.

    Frames: ``event: state|token|progress|response`` with a JSON ``data`` line; ``response``
    (the final ``AIResponse`` plus the current ``state``) is the last.
    """
    items = flow.astream_event(model_key, event)
    try:
        first = await anext(items)
    except BaseException:
        await items.aclose()
        raise

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield _frame(first)
            async for item in items:
                yield _frame(item)
        finally:
            await items.aclose()

    return frames()
