"""The model's long lists (dialogue, history) packed into one compressed string in the graph's channels.

For the stores that write the channels at every step (``Store.packs_channels``). On Redis, which
keeps channels as JSON documents, every field of every dialogue element would be a JSON node of its
own, several times the text's size, rewritten at every step. On SQLite, LangGraph's saver encodes and
compresses every channel into each checkpoint and each step's writes, so a long dialogue was encoded
several times per turn; packed, it is encoded once when it changes and copied as a string after.
The in-memory store keeps plain lists. The runtime turns packing on around the runs it drives on a
packing store; nodes run elsewhere (LangGraph Studio, plain LangGraph) write plain lists, and a model
reads either form.
"""

from __future__ import annotations

import base64
import contextvars
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

PACKED_FIELDS = ("dialogue", "history")

packing: contextvars.ContextVar[bool] = contextvars.ContextVar("genie_graph_packing", default=False)
"""Set by the runtime around runs on a store that keeps channels as JSON documents."""

_PREFIX = "zlib+json:"


def pack(items: list[Any]) -> str:
    """A JSON list as one string: zlib-compressed, base64-encoded, marked."""
    return _PREFIX + base64.b64encode(zlib.compress(orjson.dumps(items), 1)).decode("ascii")


def packed_size(value: Any) -> int:
    """How many characters of ``value`` (a packed list, or a checkpoint holding some) are packed lists."""
    if isinstance(value, str):
        return len(value) if value.startswith(_PREFIX) else 0
    channels = value.get("channel_values") if isinstance(value, dict) else None
    if not isinstance(channels, dict):
        return 0
    return sum(len(item) for item in channels.values() if isinstance(item, str) and item.startswith(_PREFIX))


def unpack(value: Any) -> Any:
    """A packed list back as the list; any other value unchanged (validation goes on with it)."""
    if isinstance(value, str) and value.startswith(_PREFIX):
        return orjson.loads(zlib.decompress(base64.b64decode(value[len(_PREFIX) :])))
    return value


@contextmanager
def packing_channels(on: bool) -> Iterator[None]:
    """Pack the long lists of the models that nodes write inside the block (the tasks it starts too)."""
    token = packing.set(on)
    try:
        yield
    finally:
        packing.reset(token)
