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

_MARK = "zlib+json"
_PREFIX = _MARK + "+n:"
"""Marks a packed list in chunks that say how many items they hold (``zlib+json:``: in one piece, as
packed before chunks; read alike)."""
CHUNK = 64
"""Items per compressed chunk. A list that grows at its end, or loses items at its start (a bounded
history), keeps its whole chunks as they are: a turn compresses its new items and the rest of the
chunk its oldest were dropped from, not the whole list again (SQLite's turns 250 to 300 of a session
took 2.94-3.04 ms in one piece, 2.55-2.68 ms in chunks). A full chunk, compressed once for good,
takes zlib's level 6; the growing one level 1. A 100-turn dialogue's 18 KB of JSON take 2.0 KB so
(1.8 KB in one piece)."""
_SEPARATOR = "."  # (neither it nor "_" is in base64's alphabet)


def pack(items: list[Any], reuse: str | None = None, dropped: int = 0, unchanged: int = 0) -> str:
    """A JSON list as one string: chunks of up to :data:`CHUNK` items, each zlib-compressed and base64-encoded.

    ``reuse`` is an earlier packed value whose items ``[dropped : dropped + unchanged]`` are
    ``items[:unchanged]``: its chunks wholly among them are copied instead of compressed again.
    """
    kept: list[str] = []
    begin = end = 0  # where the copied chunks are in ``items``
    if reuse is not None and reuse.startswith(_PREFIX):
        position = -dropped
        for chunk in reuse[len(_PREFIX) :].split(_SEPARATOR):
            count = int(chunk.partition("_")[0])
            first, position = position, position + count
            if first < 0:
                continue
            # a partial chunk is copied only at the start: at the end it takes the new items instead
            if position > unchanged or (count < CHUNK and kept) or (count < CHUNK and position == unchanged):
                break
            if not kept:
                begin = first
            kept.append(chunk)
            end = position
    chunks = [*_chunks(items[:begin]), *kept, *_chunks(items[end:])] if kept else _chunks(items)
    return _PREFIX + _SEPARATOR.join(chunks or [_chunk([])])


def _chunks(items: list[Any]) -> list[str]:
    return [_chunk(items[start : start + CHUNK]) for start in range(0, len(items), CHUNK)]


def _chunk(items: list[Any]) -> str:
    level = 6 if len(items) == CHUNK else 1
    return f"{len(items)}_" + base64.b64encode(zlib.compress(orjson.dumps(items), level)).decode("ascii")


def is_packed(value: Any) -> bool:
    """Whether ``value`` is a packed list."""
    return isinstance(value, str) and value.startswith(_MARK) and ":" in value


def packed_bytes(value: str) -> bytes:
    """A packed list as bytes, its chunks' compressed bytes as they are (not base64), for a store of bytes."""
    head, _, body = value.partition(":")
    counts, chunks = [], []
    for chunk in body.split(_SEPARATOR):
        count, _, text = chunk.rpartition("_")
        counts.append(count)
        chunks.append(base64.b64decode(text))
    return framed([head, counts], chunks)


def packed_text(data: bytes) -> str:
    """:func:`packed_bytes` back as the packed list."""
    (head, counts), chunks = unframed(data)
    texts = [base64.b64encode(chunk).decode("ascii") for chunk in chunks]
    return f"{head}:" + _SEPARATOR.join(f"{n}_{text}" if n else text for n, text in zip(counts, texts, strict=True))


def framed(meta: Any, parts: list[bytes]) -> bytes:
    """``parts`` as one payload, after a JSON header of ``meta`` and their lengths (see :func:`unframed`)."""
    header = orjson.dumps([meta, [len(part) for part in parts]])
    return len(header).to_bytes(4, "big") + header + b"".join(parts)


def unframed(data: bytes) -> tuple[Any, list[bytes]]:
    """:func:`framed`'s ``meta`` and ``parts`` back."""
    size = int.from_bytes(data[:4], "big")
    meta, lengths = orjson.loads(data[4 : 4 + size])
    parts, at = [], 4 + size
    for length in lengths:
        parts.append(data[at : at + length])
        at += length
    return meta, parts


def unpack(value: Any) -> Any:
    """A packed list back as the list; any other value unchanged (validation goes on with it)."""
    if is_packed(value):
        chunks = value[value.index(":") + 1 :].split(_SEPARATOR)
        texts = (chunk.rpartition("_")[2] for chunk in chunks)
        return [item for text in texts for item in orjson.loads(zlib.decompress(base64.b64decode(text)))]
    return value


@contextmanager
def packing_channels(on: bool) -> Iterator[None]:
    """Pack the long lists of the models that nodes write inside the block (the tasks it starts too)."""
    token = packing.set(on)
    try:
        yield
    finally:
        packing.reset(token)
