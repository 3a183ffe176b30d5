"""Store URLs to LangGraph checkpointers, plus the pruning that keeps sessions small.

``memory://`` keeps sessions in the process; ``sqlite:///path/to.db`` in a SQLite file. Only this
module knows which saver is in use. Every store keeps the latest ``keep_checkpoints``
checkpoints of a session and drops the older ones after each event: a checkpoint holds the
whole model, so keeping all of them would grow a session quadratically with its dialogue.
Checkpoints are stored zlib-compressed.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from .errors import GenieGraphError

StoreScheme = Literal["memory", "sqlite"]
_COMPRESSED = "z+"
_MIN_COMPRESS = 128


class CompressingSerializer(SerializerProtocol):
    """LangGraph's serializer with zlib compression of larger payloads.

    Channel values are plain JSON data (see ``_nodes.changed_fields``), so no class needs to be
    imported on load: the serializer admits only LangGraph's own safe types.
    """

    def __init__(self, level: int = 6) -> None:
        self._inner = JsonPlusSerializer(allowed_msgpack_modules=None)
        self._level = level

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self._inner.dumps_typed(obj)
        if len(data) >= _MIN_COMPRESS:
            return _COMPRESSED + type_, zlib.compress(data, self._level)
        return type_, data

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if type_.startswith(_COMPRESSED):
            return self._inner.loads_typed((type_[len(_COMPRESSED) :], zlib.decompress(payload)))
        return self._inner.loads_typed(data)


@dataclass(frozen=True)
class StoreMark:
    """The checkpoint ids and ``(checkpoint_id, task_id, idx)`` write keys a thread had at a moment."""

    checkpoints: frozenset[str]
    writes: frozenset[tuple[str, str, int]]


class Store(ABC):
    """An opened store: a LangGraph checkpointer plus what only its backend knows how to do.

    The runtime talks to this interface only; a backend is one subclass.
    """

    scheme: ClassVar[StoreScheme]

    def __init__(self, url: str, saver: BaseCheckpointSaver[Any]) -> None:
        self.url = url
        self.saver = saver

    @abstractmethod
    async def prune(self, thread_id: str, keep: int) -> None:
        """Drop all but the latest ``keep`` checkpoints of a thread (and their writes)."""

    @abstractmethod
    async def mark(self, thread_id: str) -> StoreMark:
        """Remember which checkpoints and writes a thread has now, to :meth:`rollback` to them."""

    @abstractmethod
    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        """Drop every checkpoint and write a thread gained since ``mark``: undo a failed event."""

    @abstractmethod
    async def size_of(self, thread_id: str) -> int:
        """Bytes a session's checkpoints and pending writes take in the store."""

    async def delete(self, thread_id: str) -> None:
        """Forget a session entirely."""
        await self.saver.adelete_thread(thread_id)

    async def close(self) -> None:  # noqa: B027 - a backend without connections has nothing to do
        """Release the backend's connections."""


class MemoryStore(Store):
    """Sessions in this process only (``memory://``)."""

    scheme = "memory"
    saver: InMemorySaver

    def __init__(self, url: str) -> None:
        super().__init__(url, InMemorySaver(serde=CompressingSerializer()))

    async def prune(self, thread_id: str, keep: int) -> None:
        for ns, checkpoints in self.saver.storage.get(thread_id, {}).items():
            for checkpoint_id in sorted(checkpoints, reverse=True)[keep:]:
                del checkpoints[checkpoint_id]
                self.saver.writes.pop((thread_id, ns, checkpoint_id), None)
        self._drop_unreferenced_blobs(thread_id)

    async def mark(self, thread_id: str) -> StoreMark:
        saver = self.saver
        checkpoints = frozenset(cid for per_ns in saver.storage.get(thread_id, {}).values() for cid in per_ns)
        writes = frozenset(
            (key[2], task_id, idx)
            for key, stored in saver.writes.items()
            if key[0] == thread_id
            for task_id, idx in stored
        )
        return StoreMark(checkpoints, writes)

    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        saver = self.saver
        for ns, per_ns in saver.storage.get(thread_id, {}).items():
            for checkpoint_id in [cid for cid in per_ns if cid not in mark.checkpoints]:
                del per_ns[checkpoint_id]
                saver.writes.pop((thread_id, ns, checkpoint_id), None)
        for key, stored in saver.writes.items():
            if key[0] == thread_id:
                for write_key in [k for k in stored if (key[2], *k) not in mark.writes]:
                    del stored[write_key]
        self._drop_unreferenced_blobs(thread_id)

    async def size_of(self, thread_id: str) -> int:
        saver = self.saver
        total = 0
        for per_ns in saver.storage.get(thread_id, {}).values():
            for checkpoint, metadata, _parent in per_ns.values():
                total += len(checkpoint[1]) + len(metadata[1])
        total += sum(len(value[1]) for key, value in saver.blobs.items() if key[0] == thread_id)
        for key, writes in saver.writes.items():
            if key[0] == thread_id:
                total += sum(len(w[2][1]) for w in writes.values())
        return total

    def _drop_unreferenced_blobs(self, thread_id: str) -> None:
        saver = self.saver
        referenced: set[tuple[str, str, str, Any]] = set()
        for ns, checkpoints in saver.storage.get(thread_id, {}).items():
            for serialized, _metadata, _parent in checkpoints.values():
                versions = saver.serde.loads_typed(serialized).get("channel_versions", {})
                referenced.update((thread_id, ns, channel, version) for channel, version in versions.items())
        for key in [k for k in saver.blobs if k[0] == thread_id and k not in referenced]:
            del saver.blobs[key]


class SqliteStore(Store):
    """Sessions in a SQLite file (``sqlite:///path/to.db``), the embedded default."""

    scheme = "sqlite"

    def __init__(self, url: str, saver: BaseCheckpointSaver[Any], connection: aiosqlite.Connection) -> None:
        super().__init__(url, saver)
        self._conn = connection

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else urlparse(url).path
        if path in ("", ":memory:"):
            path = ":memory:"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        saver = AsyncSqliteSaver(connection, serde=CompressingSerializer())
        await saver.setup()
        # WAL without an fsync per commit: a crash of the process loses nothing, a power cut the last
        # commits at most; the default fsyncs each of the several checkpoints a turn writes.
        await connection.execute("PRAGMA synchronous=NORMAL")
        return cls(url, saver, connection)

    async def prune(self, thread_id: str, keep: int) -> None:
        await self._conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN "
            "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC LIMIT ?)",
            (thread_id, thread_id, keep),
        )
        await self._conn.execute(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN "
            "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?)",
            (thread_id, thread_id),
        )
        await self._conn.commit()

    async def _rows(self, sql: str, thread_id: str) -> list[tuple[Any, ...]]:
        async with self._conn.execute(sql, (thread_id,)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def _checkpoint_ids(self, thread_id: str) -> list[str]:
        return [
            row[0] for row in await self._rows("SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?", thread_id)
        ]

    async def _write_keys(self, thread_id: str) -> list[tuple[str, str, int]]:
        sql = "SELECT checkpoint_id, task_id, idx FROM writes WHERE thread_id = ?"
        return [(row[0], row[1], row[2]) for row in await self._rows(sql, thread_id)]

    async def mark(self, thread_id: str) -> StoreMark:
        return StoreMark(frozenset(await self._checkpoint_ids(thread_id)), frozenset(await self._write_keys(thread_id)))

    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        new_checkpoints = [cid for cid in await self._checkpoint_ids(thread_id) if cid not in mark.checkpoints]
        new_writes = [key for key in await self._write_keys(thread_id) if key not in mark.writes]
        await self._conn.executemany(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id = ?",
            [(thread_id, cid) for cid in new_checkpoints],
        )
        await self._conn.executemany(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id = ? AND task_id = ? AND idx = ?",
            [(thread_id, *key) for key in new_writes],
        )
        await self._conn.commit()

    async def size_of(self, thread_id: str) -> int:
        (checkpoints,) = (
            await self._rows(
                "SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints WHERE thread_id = ?",
                thread_id,
            )
        )[0]
        (writes,) = (
            await self._rows("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes WHERE thread_id = ?", thread_id)
        )[0]
        return int(checkpoints) + int(writes)

    async def close(self) -> None:
        await self._conn.close()


def default_store_url(data_dir: str | Path) -> str:
    """The embedded default: a SQLite file in ``data_dir``."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'sessions.sqlite'}"


async def open_store(url: str) -> Store:
    """Open the store a URL names (``memory://`` or ``sqlite:///path``), creating what it needs.

    Raises:
        GenieGraphError: the URL's scheme is not supported.
    """
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        return await SqliteStore.open(url)
    raise GenieGraphError(
        f"unsupported store URL {url!r}; use memory:// or sqlite:///path/to.db "
        "(redis://host:port/db arrives with the Redis backend)"
    )
