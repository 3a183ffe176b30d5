"""Store URLs to LangGraph checkpointers, plus the pruning that keeps sessions small.

``memory://`` keeps sessions in the process; ``sqlite:///path/to.db`` in a SQLite file. Only this
module knows which saver is in use. Every store keeps the latest ``keep_checkpoints``
checkpoints of a session and drops the older ones after each event: a checkpoint holds the
whole model, so keeping all of them would grow a session quadratically with its dialogue.
Checkpoints are stored zlib-compressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import sqlite3
import time
import zlib
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlparse

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    copy_checkpoint,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Durability

from ._packing import framed, is_packed, packed_bytes, packed_text, unframed
from .errors import GenieGraphError, StoreUnavailable

StoreScheme = Literal["memory", "sqlite", "redis"]
_COMPRESSED = "z+"
_WITH_LISTS = "lists+"
_PACKED = "packed"
_MIN_COMPRESS = 1024
"""Payloads under this (their packed lists aside) are stored as they are. A checkpoint holds more
than this besides them, so it is compressed (a 1-turn session's 4.2 KB to 1.6 KB). Compressing every
payload over 128 bytes cost 5% of an SQLite turn's instructions (callgrind, 5-turn sessions) for no
fewer bytes."""


class CompressingSerializer(SerializerProtocol):
    """LangGraph's serializer with zlib compression of larger payloads.

    Channel values are plain JSON data (see ``_nodes.changed_fields``), so no class needs to be
    imported on load: the serializer admits only LangGraph's own safe types. Packed lists (see
    ``_packing``), compressed already, are kept beside the compressed rest as their chunks' bytes:
    compressing their base64 text again cost a third of a long session's turn.
    """

    # Level 1: a 100-turn session's dialogue and history (45 KB of msgpack) compress in 65 us to 2.7 KB;
    # level 6 took 236 us for 2.3 KB, and a turn writes them several times.
    def __init__(self, level: int = 1) -> None:
        self._inner = JsonPlusSerializer(allowed_msgpack_modules=None)
        self._level = level

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if is_packed(obj):  # a step's write of a packed list
            return _PACKED, packed_bytes(obj)
        channels = obj.get("channel_values") if isinstance(obj, dict) else None
        lists = {name: value for name, value in channels.items() if is_packed(value)} if channels else {}
        if channels and lists:
            obj = {**obj, "channel_values": {**channels, **dict.fromkeys(lists, "")}}
        type_, data = self._inner.dumps_typed(obj)
        if len(data) >= _MIN_COMPRESS:
            type_, data = _COMPRESSED + type_, zlib.compress(data, self._level)
        if not lists:
            return type_, data
        return _WITH_LISTS + type_, framed(list(lists), [data, *map(packed_bytes, lists.values())])

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if type_ == _PACKED:
            return packed_text(payload)
        if not type_.startswith(_WITH_LISTS):
            return self._loads(type_, payload)
        names, parts = unframed(payload)
        value = self._loads(type_[len(_WITH_LISTS) :], parts[0])
        value["channel_values"].update((name, packed_text(part)) for name, part in zip(names, parts[1:], strict=True))
        return value

    def _loads(self, type_: str, payload: bytes) -> Any:
        if type_.startswith(_COMPRESSED):
            return self._inner.loads_typed((type_[len(_COMPRESSED) :], zlib.decompress(payload)))
        return self._inner.loads_typed((type_, payload))


@dataclass(frozen=True)
class StoreMark:
    """The checkpoint ids and ``(checkpoint_id, task_id, idx)`` write keys a thread had at a moment.

    A store may mark by ``latest`` instead: every checkpoint up to that id (ids grow with time) is
    marked, and ``writes`` lists only the writes of the latest one (the only one a run adds writes
    to). That takes one lookup instead of a listing of the whole thread.
    """

    checkpoints: frozenset[str]
    writes: frozenset[tuple[str, str, int]]
    latest: str | None = None

    def has_checkpoint(self, checkpoint_id: str) -> bool:
        """Whether the checkpoint was there when the mark was taken."""
        if self.latest is not None:
            return checkpoint_id <= self.latest
        return checkpoint_id in self.checkpoints

    def has_write(self, checkpoint_id: str, task_id: str, idx: int) -> bool:
        """Whether the write was there when the mark was taken."""
        if self.latest is not None and checkpoint_id < self.latest:
            return True
        return (checkpoint_id, task_id, idx) in self.writes


@dataclass(frozen=True)
class SessionRecord:
    """What the store knows about a session beside its checkpoints: whose it is, and for how long.

    ``user`` is the lower-cased email of the session's ``user_info``; ``ttl_seconds`` the idle time
    after which the session expires (None: never); ``owner`` the authenticated caller the session is
    bound to (the HTTP API's API-key name), None for a session anyone with its id may use;
    ``expires_at`` when it expires (epoch seconds), where the store read it.
    """

    session_id: str
    model_key: str
    user: str | None = None
    ttl_seconds: float | None = None
    owner: str | None = None
    expires_at: float | None = None

    def recently_touched(self) -> bool:
        """Whether the expiry was renewed less than a minute (or 1% of the TTL) ago: no need to renew it.

        Each event renews the idle TTL; renewing it at most once a minute saves a write per event and
        lets a session expire at most that much early.
        """
        if not self.ttl_seconds or self.expires_at is None:
            return False
        return self.expires_at - time.time() > self.ttl_seconds - min(_TOUCH_EVERY_SECONDS, self.ttl_seconds / 100)


_TOUCH_EVERY_SECONDS = 60.0


class RunInFlight(NamedTuple):
    """A run holding a session's lease (in any process): its sub-task counts, and the session's model key."""

    total: int
    done: int
    model_key: str | None


class KeptAnswer(NamedTuple):
    """What a poll answers for a checkpoint, kept by the run that wrote it (``AIResponse`` JSON)."""

    model_key: str
    version: str
    body: bytes


@dataclass
class RunClaim:
    """The run lease an event's look took with its lock (shared stores): the event's run, if it starts
    one, runs under it (``kept``); else the lease is released with the lock."""

    run_id: str
    lease_seconds: float
    kept: bool = False


class SessionLook(NamedTuple):
    """What a poll or an event learns of a session before reading its checkpoint (Redis: in one round trip)."""

    record: SessionRecord | None
    flight: RunInFlight | None = None
    """The run holding the session's lease in any process (shared stores)."""
    error: str | None = None
    """The last run's failure nobody was told yet, where no run is in flight (:meth:`Store.pop_error` takes it)."""
    mark: StoreMark | None = None
    """Where the store can take it in the same trip, with ``mark=True``; else the caller marks."""
    answer: KeptAnswer | None = None
    """The poll answer kept for the session's latest checkpoint (shared stores), if it still is the latest."""
    claim: RunClaim | None = None
    """The run lease the look took, where it was asked to and no run held it."""


class WorkTaken(NamedTuple):
    """What a Celery worker learns as it takes a session's step (:meth:`Store.take_work`)."""

    owned: bool
    """The run lease already was the queued run's (the process that queued it holds it for the worker)."""
    claimed: bool
    """The run lease is the queued run's now, renewed for the run (False: another run holds it)."""
    record: SessionRecord | None


FeedItem = dict[str, Any]
"""``{"event": "state" | "token" | "progress" | "done", "data": {...}}``: one thing a run did."""


class RunEnd(NamedTuple):
    """How a shared run ends, for :meth:`Store.settle`: its lease, its failure, and the answer it left."""

    run_id: str
    error: str | None = None
    answer: KeptAnswer | None = None
    """Kept only if ``checkpoint_id`` still is the session's latest checkpoint."""
    checkpoint_id: str | None = None


written_checkpoints: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "genie_graph_written_checkpoints", default=None
)
"""Where a run notes the id of the last root checkpoint it wrote, per thread (the tasks it starts inherit it)."""


class Store(ABC):
    """An opened store: a LangGraph checkpointer plus what only its backend knows how to do.

    The runtime talks to this interface only; a backend is one subclass. A ``shared`` store is
    used by several processes at once and also coordinates their runs (see ``_redis``).
    """

    scheme: ClassVar[StoreScheme]
    shared: ClassVar[bool] = False
    packs_channels: ClassVar[bool] = False
    """Whether runs pack the model's long lists in channels (see ``_packing``): for stores that write the
    channels at every step, where one compressed string is what each write and each checkpoint copies."""
    durability: ClassVar[Durability] = "sync"
    """When a run's checkpoints are written (LangGraph's ``durability``). ``"sync"``: before each next
    step starts, so a process that dies mid-run leaves the session where it was working, and resumes
    it there; ``"exit"``: once, when the run stops, which only a store that dies with the process
    (memory) can afford. Runs of the Celery runner write at exit on any store (``GenieFlow._durability``)."""

    def __init__(self, url: str, saver: BaseCheckpointSaver[Any]) -> None:
        self.url = url
        self.saver = saver
        self._feeds: dict[str, set[asyncio.Queue[FeedItem]]] = {}
        self._starts: dict[str, tuple[str, int]] = {}
        self._reusing: set[str] = set()
        self._kept: dict[str, CheckpointTuple] = {}
        self.write_listeners: list[Callable[[str], None]] = []
        """Told the thread id of every checkpoint write in this process (after what the run made it)."""
        self._read_checkpoint = saver.aget_tuple
        # Instance attributes: the saver's own methods, wrapped (LangGraph calls them on the saver).
        saver.aget_tuple = self._aget_tuple  # type: ignore[method-assign]
        for name in ("aput_writes", "adelete_thread"):
            setattr(saver, name, self._forgetting(getattr(saver, name)))
        saver.aput = self._noting(self._forgetting(saver.aput))  # type: ignore[method-assign,assignment]
        for name in ("put", "put_writes", "delete_thread"):  # (the graph's sync API: a user's update_state)
            setattr(saver, name, self._told(getattr(saver, name)))

    # ---- one checkpoint read per event ------------------------------------------------------
    @contextlib.contextmanager
    def reusing_reads(self, thread_id: str) -> Iterator[None]:
        """Within the context, the next two reads of the thread's latest checkpoint read the store once.

        An event reads the session's checkpoint to decide, then its run reads it again: both are
        the same while the session's lock is held and nothing was written, so the second read
        takes the first one's answer. Only the first read is kept, and only for the next one; any
        write to the thread, and leaving the context, drop it.
        """
        self._reusing.add(thread_id)
        try:
            yield
        finally:
            self._reusing.discard(thread_id)
            self._kept.pop(thread_id, None)

    async def _aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config.get("configurable") or {}
        thread_id = str(configurable.get("thread_id"))
        latest = not configurable.get("checkpoint_ns") and not configurable.get("checkpoint_id")
        if not latest:
            return await self._read_checkpoint(config)
        kept = self._kept.pop(thread_id, None)
        if kept is not None:
            return kept
        found = await self._read_checkpoint(config)
        if found is not None and thread_id in self._reusing:
            self._reusing.discard(thread_id)  # kept once: a later read (a poll's, racing a write) keeps nothing
            # a copy: LangGraph's aget_state applies pending writes to the checkpoint it was given
            self._kept[thread_id] = found._replace(checkpoint=copy_checkpoint(found.checkpoint))
        return found

    def _forgetting(self, write: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def written(config: RunnableConfig, *args: Any, **kwargs: Any) -> Any:
            self._kept.pop(self._tell(config), None)
            return await write(config, *args, **kwargs)

        return written

    @staticmethod
    def _noting(put: Callable[..., Awaitable[RunnableConfig]]) -> Callable[..., Awaitable[RunnableConfig]]:
        async def written(config: RunnableConfig, *args: Any, **kwargs: Any) -> RunnableConfig:
            saved = await put(config, *args, **kwargs)
            noted, configurable = written_checkpoints.get(), saved.get("configurable") or {}
            if noted is not None and not configurable.get("checkpoint_ns"):
                noted[str(configurable.get("thread_id"))] = str(configurable.get("checkpoint_id"))
            return saved

        return written

    def _told(self, write: Callable[..., Any]) -> Callable[..., Any]:
        def written(config: RunnableConfig, *args: Any, **kwargs: Any) -> Any:
            self._tell(config)
            return write(config, *args, **kwargs)

        return written

    def _tell(self, config: RunnableConfig | str) -> str:
        """Tell the write listeners of a write to the thread; returns its id."""
        thread_id = str(config if isinstance(config, str) else (config.get("configurable") or {}).get("thread_id"))
        for listener in self.write_listeners:
            listener(thread_id)
        return thread_id

    # ---- the session feed: what runs do, as it happens, for streaming clients -----------
    async def publish(self, session_id: str, items: list[FeedItem]) -> None:
        """Tell the session's subscribers, in this process (a shared store: in every process)."""
        self.deliver(session_id, items)

    def deliver(self, session_id: str, items: list[FeedItem]) -> None:
        """Tell the session's subscribers in this process, at once."""
        for queue in self._feeds.get(session_id, ()):
            for item in items:
                queue.put_nowait(item)

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[asyncio.Queue[FeedItem]]:
        """A queue receiving every item published for the session while the context is open."""
        queue: asyncio.Queue[FeedItem] = asyncio.Queue()
        self._feeds.setdefault(session_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._feeds.get(session_id, set())
            subscribers.discard(queue)
            if not subscribers:
                self._feeds.pop(session_id, None)

    # ---- a group session's message log (see ``_group``) ------------------------------------
    # Messages and execution items are JSON data; a message's number is its place in the log.
    @abstractmethod
    async def add_members(self, session_id: str, members: Iterable[str], ttl_seconds: float | None) -> None:
        """Name people as members of a group session (who may write to it, and decide as ``member``)."""

    @abstractmethod
    async def members(self, session_id: str) -> set[str]:
        """The named members of a group session (none: anyone with the session may write)."""

    @abstractmethod
    async def append_message(self, session_id: str, message: dict[str, Any], ttl_seconds: float | None) -> int:
        """Add a message at the end of the session's log and answer its number (1 for the first)."""

    @abstractmethod
    async def save_message(self, session_id: str, seq: int, message: dict[str, Any]) -> None:
        """Replace message ``seq`` (its status changed)."""

    @abstractmethod
    async def load_messages(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The log's messages numbered above ``after``, in order."""

    @abstractmethod
    async def load_message(self, session_id: str, seq: int) -> dict[str, Any] | None:
        """Message ``seq``, or None."""

    @abstractmethod
    async def message_count(self, session_id: str) -> int:
        """How many messages the log has."""

    @abstractmethod
    async def append_items(self, session_id: str, seq: int, items: list[dict[str, Any]]) -> None:
        """Add items at the end of message ``seq``'s execution."""

    @abstractmethod
    async def load_items(self, session_id: str, seq: int, start: int = 0) -> list[dict[str, Any]]:
        """Message ``seq``'s execution items from index ``start`` on."""

    @contextlib.asynccontextmanager
    async def group_lease(self, session_id: str, holder: str, lease_seconds: float) -> AsyncIterator[None]:
        """Hold ``holder``'s lease in a group session (``sender:<name>``, ``flow``) against other processes.

        A process-local store has no other process: the caller's local lock is enough."""
        yield

    async def group_lease_held(self, session_id: str, holder: str) -> bool:
        """Whether some process holds ``holder``'s lease (a process-local store: never another one)."""
        return False

    @abstractmethod
    async def prune(self, thread_id: str, keep: int) -> None:
        """Drop all but the latest ``keep`` checkpoints of a thread (and their writes)."""

    async def settle(
        self,
        thread_id: str,
        keep: int,
        end: RunEnd | None = None,
        feed: Sequence[FeedItem] = (),
        renew: RunClaim | None = None,
    ) -> None:
        """After a run: :meth:`prune`, then (a shared run's ``end``) :meth:`end_run`, keeping its answer,
        or (a shared run that goes on elsewhere, ``renew``) :meth:`claim_run` again for its new lease;
        then :meth:`publish` the run's last ``feed`` items (shared stores).

        Redis does it all in one round trip; a store without shared runs only prunes.
        """
        await self.prune(thread_id, keep)
        if end is not None:
            await self.end_run(thread_id, end.run_id, end.error)
        if renew is not None:
            await self.claim_run(thread_id, renew.run_id, renew.lease_seconds)
        if feed:
            await self.publish(thread_id, list(feed))

    async def look(self, session_id: str, *, mark: bool = False) -> SessionLook:
        """The session's record and, on a shared store, its run in flight, its last run's unreported
        failure (unless a run is in flight), its mark (with ``mark``) and its kept answer."""
        return SessionLook(await self.session(session_id))

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
        await self._forget(thread_id)
        self._starts.pop(thread_id, None)

    async def ping(self) -> None:  # noqa: B027 - an embedded store is there while its process is
        """Raise if the store cannot be reached."""

    def flush(self) -> None:  # noqa: B027 - a backend that writes at once has nothing to do
        """Make the writes so far durable now, before an answer that depends on them is given."""

    def others_wrote(self) -> int:
        """A number that changes whenever another connection (another process) has written the store.

        What a process keeps of its own writes is good while it stays the same. Memory has no other
        writers.
        """
        return 0

    async def close(self) -> None:  # noqa: B027 - a backend without connections has nothing to do
        """Release the backend's connections."""

    def allow_types(self, allowed_types: Iterable[tuple[str, str]]) -> None:  # noqa: B027 - JSON-only stores
        """The ``(module, ClassName)`` pairs a store that revives objects may rebuild."""

    # ---- the session index: existence, expiry, listing -----------------------------------
    @abstractmethod
    async def add_session(self, record: SessionRecord) -> None:
        """Record a new session (and index it by model key and user)."""

    @abstractmethod
    async def session(self, session_id: str) -> SessionRecord | None:
        """The session's record, or None if there is no such session or it expired."""

    @abstractmethod
    async def touch(self, record: SessionRecord) -> None:
        """Restart the session's idle time."""

    @abstractmethod
    async def sessions(self, model_key: str, user: str | None = None) -> list[str]:
        """Ids of the live sessions of a model key (of one user, if given)."""

    async def _forget(self, session_id: str) -> None:  # noqa: B027 - backends with an index override
        """Drop the session's record from the index."""

    # ---- coordination between processes: shared stores only (see ``_redis.RedisStore``) --
    def _not_shared(self) -> GenieGraphError:
        return GenieGraphError(f"the {self.scheme} store serves one process; runs across processes need Redis")

    def event_lock(
        self, session_id: str, event: str, wait_seconds: float, look: bool = False, claim: RunClaim | None = None
    ) -> AbstractAsyncContextManager[SessionLook | None]:
        """Hold the session's event lock; raises SessionBusy if it cannot be had in ``wait_seconds``.

        With ``look``, it may give the session's :meth:`look` (with its mark), taken with the lock; else
        None. With a ``claim`` too, that look also takes the run lease for it if no run holds it
        (``SessionLook.claim``); unless a run started under it (``claim.kept``), the lease is released
        with the lock.
        """
        raise self._not_shared()

    async def claim_run(self, session_id: str, run_id: str, lease_seconds: float) -> bool:
        """Take (or renew) the session's run lease for ``run_id``; False if another run holds it."""
        raise self._not_shared()

    async def owns_run(self, session_id: str, run_id: str) -> bool:
        """Whether ``run_id`` holds the session's run lease."""
        raise self._not_shared()

    async def renew_run(self, session_id: str, run_id: str, lease_seconds: float) -> bool:
        """Renew the run lease; False if it was lost."""
        raise self._not_shared()

    async def end_run(self, session_id: str, run_id: str, error: str | None = None) -> None:
        """Release the run lease, keeping ``error`` for the next poll."""
        raise self._not_shared()

    async def take_step(self, session_id: str, token: str, lease_seconds: float) -> bool:
        """Take the step lock a worker holds while it works the session."""
        raise self._not_shared()

    async def take_work(self, session_id: str, token: str, run_id: str, lease_seconds: float) -> WorkTaken | None:
        """What a worker does first with work queued as ``run_id``: take the session's step (None if
        another worker has it), then the run lease for ``run_id`` (renewed if it already is its),
        and read the session's record. A store may do it all in one trip."""
        if not await self.take_step(session_id, token, lease_seconds):
            return None
        owned = await self.owns_run(session_id, run_id)
        claimed = await self.claim_run(session_id, run_id, lease_seconds)
        return WorkTaken(owned, claimed, await self.session(session_id))

    async def renew_step(self, session_id: str, token: str, lease_seconds: float) -> bool:
        """Renew the step lock; False if it was lost."""
        raise self._not_shared()

    async def drop_step(self, session_id: str, token: str) -> None:
        """Release the step lock."""
        raise self._not_shared()

    async def run_in_flight(self, session_id: str) -> RunInFlight | None:
        """The run holding the session's lease in any process, or None."""
        raise self._not_shared()

    async def write_progress(self, session_id: str, total: int, done: int, ttl_seconds: float) -> None:
        """Publish the run's sub-task counts to polls in other processes."""
        raise self._not_shared()

    async def pop_error(self, session_id: str) -> str | None:
        """The failure of the last run (once)."""
        raise self._not_shared()

    async def orphaned_runs(self) -> list[str]:
        """Sessions whose run lease ran out without the run ending: its process died."""
        raise self._not_shared()

    async def forget_run(self, session_id: str) -> None:
        """Stop listing the session among the orphaned runs."""
        raise self._not_shared()

    # ---- runs cut off with their process: each start of an invoker state's run is counted --
    async def count_start(self, session_id: str, step: str) -> int:
        """Count one more start of the session's run at ``step`` (an invoker state at one checkpoint).

        Returns how many starts ``step`` had, this one included: a run resumed after its process
        ended starts the same step again. Counting another step forgets the session's previous
        one. Here in this process's memory, which is all the memory store needs.
        """
        last, count = self._starts.get(session_id, ("", 0))
        count = count + 1 if last == step else 1
        self._starts[session_id] = (step, count)
        return count


class _LocalIndex:
    """The session index of a single-process store: records with their expiry times."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[SessionRecord, float]] = {}

    @staticmethod
    def expiry(record: SessionRecord) -> float:
        return time.time() + record.ttl_seconds if record.ttl_seconds else float("inf")

    def live(self, session_id: str) -> SessionRecord | None:
        entry = self.records.get(session_id)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]


class MemoryStore(Store):
    """Sessions in this process only (``memory://``)."""

    scheme = "memory"
    durability = "exit"  # its checkpoints die with the process anyway: write them once per run
    saver: InMemorySaver

    def __init__(self, url: str) -> None:
        # Uncompressed: compressing costs a turn more than the memory it saves in a dev or test process.
        saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
        self._writes, self._blobs = _KeyedByThread(dict), _KeyedByThread()
        saver.writes, saver.blobs = self._writes, self._blobs
        super().__init__(url, saver)
        self._index = _LocalIndex()
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._items: dict[str, dict[int, list[dict[str, Any]]]] = {}
        self._members: dict[str, set[str]] = {}

    async def add_session(self, record: SessionRecord) -> None:
        self._index.records[record.session_id] = (record, _LocalIndex.expiry(record))

    async def session(self, session_id: str) -> SessionRecord | None:
        record = self._index.live(session_id)
        if record is None and session_id in self._index.records:
            await self.delete(session_id)  # expired: its checkpoints go too
        return record

    async def touch(self, record: SessionRecord) -> None:
        if record.session_id in self._index.records:
            self._index.records[record.session_id] = (record, _LocalIndex.expiry(record))

    async def sessions(self, model_key: str, user: str | None = None) -> list[str]:
        return [
            record.session_id
            for record, _expires in list(self._index.records.values())
            if record.model_key == model_key
            and (user is None or record.user == user)
            and self._index.live(record.session_id)
        ]

    async def _forget(self, session_id: str) -> None:
        self._index.records.pop(session_id, None)
        self._messages.pop(session_id, None)
        self._items.pop(session_id, None)
        self._members.pop(session_id, None)

    async def add_members(self, session_id: str, members: Iterable[str], ttl_seconds: float | None) -> None:
        self._members.setdefault(session_id, set()).update(members)

    async def members(self, session_id: str) -> set[str]:
        return set(self._members.get(session_id, ()))

    async def append_message(self, session_id: str, message: dict[str, Any], ttl_seconds: float | None) -> int:
        log = self._messages.setdefault(session_id, [])
        log.append({**message, "seq": len(log) + 1})
        return len(log)

    async def save_message(self, session_id: str, seq: int, message: dict[str, Any]) -> None:
        self._messages[session_id][seq - 1] = dict(message)

    async def load_messages(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        return [dict(message) for message in self._messages.get(session_id, [])[after:]]

    async def load_message(self, session_id: str, seq: int) -> dict[str, Any] | None:
        log = self._messages.get(session_id, [])
        return dict(log[seq - 1]) if 0 < seq <= len(log) else None

    async def message_count(self, session_id: str) -> int:
        return len(self._messages.get(session_id, []))

    async def append_items(self, session_id: str, seq: int, items: list[dict[str, Any]]) -> None:
        self._items.setdefault(session_id, {}).setdefault(seq, []).extend(items)

    async def load_items(self, session_id: str, seq: int, start: int = 0) -> list[dict[str, Any]]:
        return list(self._items.get(session_id, {}).get(seq, [])[start:])

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
            (key[2], task_id, idx) for key in self._writes.keys_of(thread_id) for task_id, idx in saver.writes[key]
        )
        return StoreMark(checkpoints, writes)

    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        saver = self.saver
        for ns, per_ns in saver.storage.get(thread_id, {}).items():
            for checkpoint_id in [cid for cid in per_ns if cid not in mark.checkpoints]:
                del per_ns[checkpoint_id]
                saver.writes.pop((thread_id, ns, checkpoint_id), None)
        for key in self._writes.keys_of(thread_id):
            stored = saver.writes[key]
            for write_key in [k for k in stored if (key[2], *k) not in mark.writes]:
                del stored[write_key]
        self._drop_unreferenced_blobs(thread_id)

    async def size_of(self, thread_id: str) -> int:
        saver = self.saver
        total = 0
        for per_ns in saver.storage.get(thread_id, {}).values():
            for checkpoint, metadata, _parent in per_ns.values():
                total += len(checkpoint[1]) + len(metadata[1])
        total += sum(len(saver.blobs[key][1]) for key in self._blobs.keys_of(thread_id))
        for key in self._writes.keys_of(thread_id):
            total += sum(len(w[2][1]) for w in saver.writes[key].values())
        return total

    def _drop_unreferenced_blobs(self, thread_id: str) -> None:
        saver = self.saver
        referenced: set[tuple[str, str, str, Any]] = set()
        for ns, checkpoints in saver.storage.get(thread_id, {}).items():
            for serialized, _metadata, _parent in checkpoints.values():
                versions = saver.serde.loads_typed(serialized).get("channel_versions", {})
                referenced.update((thread_id, ns, channel, version) for channel, version in versions.items())
        for key in self._blobs.keys_of(thread_id):
            if key not in referenced:
                del saver.blobs[key]


class _KeyedByThread(defaultdict[tuple[Any, ...], Any]):
    """``InMemorySaver``'s writes or blobs (keys start with the thread id), also indexed by thread.

    Work on one session (a mark, a rollback, pruning) then touches that session's keys only,
    instead of scanning every session's.
    """

    def __init__(self, default_factory: Callable[[], Any] | None = None) -> None:
        super().__init__(default_factory)
        self.by_thread: dict[str, set[tuple[Any, ...]]] = {}

    def __setitem__(self, key: tuple[Any, ...], value: Any) -> None:
        if key not in self:
            self.by_thread.setdefault(key[0], set()).add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[Any, ...]) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key: tuple[Any, ...], *default: Any) -> Any:
        if key in self:
            self._unindex(key)
        return super().pop(key, *default)

    def keys_of(self, thread_id: str) -> list[tuple[Any, ...]]:
        """The thread's keys (a copy: the caller may delete some)."""
        return list(self.by_thread.get(thread_id, ()))

    def _unindex(self, key: tuple[Any, ...]) -> None:
        keys = self.by_thread.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_thread[key[0]]


class InlineSqliteSaver(SqliteSaver):
    """LangGraph's ``SqliteSaver``, whose async methods run the statements inline on the caller's loop.

    On a WAL database with ``synchronous=NORMAL`` a statement takes tens of microseconds (a commit
    writes to the OS, not to the disk). Handing each one to aiosqlite's thread and waking the loop for
    its answer cost more than the statement: a bare LangGraph turn (the benchmark's hand-written
    graph) took 18-20 ms on ``AsyncSqliteSaver`` and 6-9 ms on this, measured side by side here.
    The connection is shared across threads under the saver's ``lock``, as ``SqliteSaver`` does.

    On an event loop, a write's commit is deferred up to ``commit_delay`` seconds: the steps a run
    takes in a row (a turn writes eight times) and other sessions' steps meanwhile share one commit.
    A commit (``flush``, or any of the store's own writes, such as the one before an invoker is
    called) makes all of them durable at once; the runtime flushes before it answers a caller. So a
    crash of the process loses at most the steps of the last few milliseconds, which no caller was
    told of, and the run resumes from the step before them.
    """

    commit_delay: float = 0.005
    _commit_timer: asyncio.TimerHandle | None = None
    _commit_loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        with self.lock:
            self.setup()
            cur = self.conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
                if transaction:
                    self._commit_soon()

    def _commit_soon(self) -> None:
        """Commit now off a loop, else within ``commit_delay`` (called under the lock)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.conn.commit()
            return
        if self._commit_timer is None or self._commit_loop is not loop:  # (a timer on a loop since left won't fire)
            self._commit_loop = loop
            self._commit_timer = loop.call_later(self.commit_delay, self._timed_commit)

    def _timed_commit(self) -> None:
        with self.lock:
            self._commit_timer = None
            self._commit()

    def flush(self) -> None:
        """Commit the deferred writes now."""
        with self.lock:
            self._commit()

    def _commit(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.commit()
        except sqlite3.ProgrammingError:  # closed meanwhile (closing commits first)
            pass

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)


class SqliteStore(Store):
    """Sessions in a SQLite file (``sqlite:///path/to.db``), the embedded default.

    Checkpoints go through :class:`InlineSqliteSaver`; the store's own tables share its connection
    and its lock, so a statement of one never meets another's open transaction.
    """

    scheme = "sqlite"
    saver: InlineSqliteSaver
    # LangGraph's SqliteSaver serializes every channel into each checkpoint and each step's writes: a
    # packed list is a string it copies, where a plain one it encodes and compresses again each time.
    packs_channels = True

    def __init__(self, url: str, saver: InlineSqliteSaver) -> None:
        super().__init__(url, saver)
        self._conn = saver.conn
        self._lock = saver.lock

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else urlparse(url).path
        if path in ("", ":memory:"):
            path = ":memory:"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False)
        saver = InlineSqliteSaver(connection, serde=CompressingSerializer())
        saver.setup()  # (WAL)
        # WAL without an fsync per commit: a crash of the process loses nothing, a power cut the last
        # commits at most; the default fsyncs each of the several checkpoints a turn writes.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SESSIONS_TABLE)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(genie_sessions)")}
        if "owner" not in columns:  # a database made before sessions had owners
            connection.execute("ALTER TABLE genie_sessions ADD COLUMN owner TEXT")
        connection.commit()
        return cls(url, saver)

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._conn.executemany(sql, rows)
            self._conn.commit()

    def flush(self) -> None:
        self.saver.flush()

    def others_wrote(self) -> int:
        with self._lock:  # SQLite's own count of other connections' commits
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(row) for row in self._conn.execute(sql, params).fetchall()]

    async def add_session(self, record: SessionRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO genie_sessions (session_id, model_key, user, ttl_seconds, expires_at, "
            "created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    record.session_id,
                    record.model_key,
                    record.user,
                    record.ttl_seconds,
                    _expiry(record),
                    time.time(),
                    record.owner,
                )
            ],
        )

    async def session(self, session_id: str) -> SessionRecord | None:
        sql = "SELECT model_key, user, ttl_seconds, expires_at, owner FROM genie_sessions WHERE session_id = ?"
        rows = self._read(sql, (session_id,))
        if not rows:
            return None
        model_key, user, ttl_seconds, expires_at, owner = rows[0]
        if expires_at is not None and expires_at <= time.time():
            await self.delete(session_id)  # expired: its checkpoints go too
            return None
        return SessionRecord(session_id, model_key, user, ttl_seconds, owner, expires_at)

    async def touch(self, record: SessionRecord) -> None:
        if record.recently_touched():
            return
        self._write(
            "UPDATE genie_sessions SET expires_at = ? WHERE session_id = ?", [(_expiry(record), record.session_id)]
        )

    async def sessions(self, model_key: str, user: str | None = None) -> list[str]:
        sql = "SELECT session_id FROM genie_sessions WHERE model_key = ? AND (expires_at IS NULL OR expires_at > ?)"
        params: tuple[Any, ...] = (model_key, time.time())
        if user is not None:
            sql += " AND user = ?"
            params += (user,)
        return [row[0] for row in self._read(sql + " ORDER BY created_at", params)]

    async def _forget(self, session_id: str) -> None:
        with self._lock:
            for table in _SESSION_TABLES:
                self._conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))  # noqa: S608
            self._conn.commit()

    async def add_members(self, session_id: str, members: Iterable[str], ttl_seconds: float | None) -> None:
        sql = "INSERT OR IGNORE INTO genie_group_members (session_id, member) VALUES (?, ?)"
        self._write(sql, [(session_id, member) for member in members])

    async def members(self, session_id: str) -> set[str]:
        rows = self._read("SELECT member FROM genie_group_members WHERE session_id = ?", (session_id,))
        return {row[0] for row in rows}

    async def append_message(self, session_id: str, message: dict[str, Any], ttl_seconds: float | None) -> int:
        with self._lock:
            row = self._conn.execute(
                "INSERT INTO genie_group_messages (session_id, seq, body) "
                "SELECT ?, COALESCE(MAX(seq), 0) + 1, ? FROM genie_group_messages WHERE session_id = ? RETURNING seq",
                (session_id, "{}", session_id),
            ).fetchall()[0]  # (all: a statement left unfinished would hold the commit up)
            seq = int(row[0])
            self._conn.execute(
                "UPDATE genie_group_messages SET body = ? WHERE session_id = ? AND seq = ?",
                (json.dumps({**message, "seq": seq}), session_id, seq),
            )
            self._conn.commit()
        return seq

    async def save_message(self, session_id: str, seq: int, message: dict[str, Any]) -> None:
        sql = "UPDATE genie_group_messages SET body = ? WHERE session_id = ? AND seq = ?"
        self._write(sql, [(json.dumps(message), session_id, seq)])

    async def load_messages(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        sql = "SELECT body FROM genie_group_messages WHERE session_id = ? AND seq > ? ORDER BY seq"
        return [json.loads(row[0]) for row in self._read(sql, (session_id, after))]

    async def load_message(self, session_id: str, seq: int) -> dict[str, Any] | None:
        sql = "SELECT body FROM genie_group_messages WHERE session_id = ? AND seq = ?"
        rows = self._read(sql, (session_id, seq))
        return json.loads(rows[0][0]) if rows else None

    async def message_count(self, session_id: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM genie_group_messages WHERE session_id = ?", (session_id,))
        return int(rows[0][0])

    async def append_items(self, session_id: str, seq: int, items: list[dict[str, Any]]) -> None:
        sql = "INSERT INTO genie_group_items (session_id, seq, body) VALUES (?, ?, ?)"
        self._write(sql, [(session_id, seq, json.dumps(item)) for item in items])

    async def load_items(self, session_id: str, seq: int, start: int = 0) -> list[dict[str, Any]]:
        sql = "SELECT body FROM genie_group_items WHERE session_id = ? AND seq = ? ORDER BY rowid LIMIT -1 OFFSET ?"
        return [json.loads(row[0]) for row in self._read(sql, (session_id, seq, start))]

    async def count_start(self, session_id: str, step: str) -> int:
        with self._lock:
            (starts,) = self._conn.execute(
                "INSERT INTO genie_run_starts (session_id, step, starts) VALUES (?, ?, 1) "
                "ON CONFLICT (session_id) DO UPDATE SET "
                "starts = CASE WHEN step = excluded.step THEN starts + 1 ELSE 1 END, step = excluded.step "
                "RETURNING starts",
                (session_id, step),
            ).fetchall()[0]
            self._conn.commit()  # durable before the invoker is called: the process may die in it
        return int(starts)

    async def prune(self, thread_id: str, keep: int) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN "
                "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC LIMIT ?)",
                (thread_id, thread_id, keep),
            )
            self._conn.execute(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN "
                "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?)",
                (thread_id, thread_id),
            )
            self._conn.commit()

    def _rows(self, sql: str, thread_id: str) -> list[tuple[Any, ...]]:
        return self._read(sql, (thread_id,))

    def _checkpoint_ids(self, thread_id: str) -> list[str]:
        return [row[0] for row in self._rows("SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?", thread_id)]

    def _write_keys(self, thread_id: str) -> list[tuple[str, str, int]]:
        sql = "SELECT checkpoint_id, task_id, idx FROM writes WHERE thread_id = ?"
        return [(row[0], row[1], row[2]) for row in self._rows(sql, thread_id)]

    async def mark(self, thread_id: str) -> StoreMark:
        return StoreMark(frozenset(self._checkpoint_ids(thread_id)), frozenset(self._write_keys(thread_id)))

    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        new_checkpoints = [cid for cid in self._checkpoint_ids(thread_id) if cid not in mark.checkpoints]
        new_writes = [key for key in self._write_keys(thread_id) if key not in mark.writes]
        with self._lock:
            self._conn.executemany(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id = ?",
                [(thread_id, cid) for cid in new_checkpoints],
            )
            self._conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id = ? AND task_id = ? AND idx = ?",
                [(thread_id, *key) for key in new_writes],
            )
            self._conn.commit()

    async def size_of(self, thread_id: str) -> int:
        (checkpoints,) = self._rows(
            "SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints WHERE thread_id = ?",
            thread_id,
        )[0]
        (writes,) = self._rows("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes WHERE thread_id = ?", thread_id)[0]
        return int(checkpoints) + int(writes)

    async def close(self) -> None:
        with self._lock:
            if self._conn.in_transaction:
                self._conn.commit()
            self._conn.close()


_SESSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS genie_sessions (
    session_id TEXT PRIMARY KEY, model_key TEXT NOT NULL, user TEXT, ttl_seconds REAL,
    expires_at REAL, created_at REAL NOT NULL, owner TEXT
);
CREATE INDEX IF NOT EXISTS genie_sessions_by_user ON genie_sessions (model_key, user);
CREATE TABLE IF NOT EXISTS genie_run_starts (session_id TEXT PRIMARY KEY, step TEXT NOT NULL, starts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS genie_group_messages (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS genie_group_items (session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS genie_group_items_by_message ON genie_group_items (session_id, seq);
CREATE TABLE IF NOT EXISTS genie_group_members (
    session_id TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (session_id, member)
);
"""


_SESSION_TABLES = (
    "genie_sessions",
    "genie_run_starts",
    "genie_group_messages",
    "genie_group_items",
    "genie_group_members",
)
"""The tables holding a session's rows beside its checkpoints."""


def _expiry(record: SessionRecord) -> float | None:
    return time.time() + record.ttl_seconds if record.ttl_seconds else None


def default_store_url(data_dir: str | Path) -> str:
    """The embedded default: a SQLite file in ``data_dir``."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'sessions.sqlite'}"


STORE_URL_FORMS = "memory://, sqlite:///path/to.db or redis://host:port/db"


async def open_store(url: str, allowed_types: Iterable[tuple[str, str]] = ()) -> Store:
    """Open the store a URL names (``memory://``, ``sqlite:///path``, ``redis://host:port/db``).

    Args:
        url: the store's URL.
        allowed_types: ``(module, ClassName)`` pairs a store that revives objects may rebuild.

    Raises:
        GenieGraphError: the URL's scheme is not supported, or the store cannot be reached.
    """
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        return await SqliteStore.open(url)
    if scheme in ("redis", "rediss", "unix"):
        from redis.exceptions import RedisError

        from ._redis import RedisStore

        try:
            return await RedisStore.open(url, allowed_types)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(url, exc) from exc
    raise GenieGraphError(f"unsupported store URL {url!r}; use {STORE_URL_FORMS}")
