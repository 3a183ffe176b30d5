"""Redis, the production store: checkpoints via ``langgraph-checkpoint-redis``, and what sits beside them.

Keys (``{sid}`` is the session id):

* the saver's own: ``checkpoint:{sid}:...``, ``checkpoint_write:{sid}:...``,
  ``write_keys_zset:{sid}:...``, ``checkpoint_latest:{sid}:...``; only the latest
  ``keep_checkpoints`` checkpoints of a session are kept (see ``Store.prune``);
* ``genie:session:{sid}``: the session record (model key, user), the source of truth for whether a
  session exists; it expires after the idle time, and every other key of the session a little later;
* ``genie:sessions:{model_key}`` and ``genie:user:{email}:{model_key}``: sorted sets of session ids,
  scored by expiry time, to list sessions;
* ``genie:lock:{sid}``: the event lock (redis-py ``Lock``), held while an event is decided;
* ``genie:run:{sid}``: the run lease (a redis-py ``Lock`` whose token is the run id), held while a
  background run is queued or working and renewed by its heartbeat; a lease that expires marks an
  orphaned run, which the next poll (or a worker's sweep) resumes from its last checkpoint;
* ``genie:runs``: a sorted set of the sessions with a run, scored by the time their lease runs out;
  a session still in it after that time has an orphaned run, which a worker's sweep resumes;
* ``genie:progress:{sid}``: the sub-task counts of the run in flight; ``genie:error:{sid}``: the
  failure of the last run, until a poll reports it;
* a group session's members: ``genie:group:{sid}:members`` (a set); its log:
  ``genie:group:{sid}:seq`` (the last message number, ``INCR``-ed: the order received),
  ``genie:group:{sid}:messages`` (a hash, number -> message JSON),
  ``genie:group:{sid}:items:{seq}`` (a list of a message's execution items), and the leases
  ``genie:group:{sid}:lease:sender:{sender}`` (the process draining a sender's messages) and
  ``genie:group:{sid}:lease:flow`` (the process delivering a message to the flow); the log expires
  a little after the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.redis.aio import AsyncRedisSaver
from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer
from langgraph.checkpoint.redis.util import to_storage_safe_id
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redisvl.query import FilterQuery  # type: ignore[import-untyped]
from redisvl.query.filter import Tag  # type: ignore[import-untyped]

from ._stores import FeedItem, RunInFlight, SessionRecord, Store, StoreMark
from .errors import SessionBusy

_WRITE_KEYS = "write_keys_zset"
_RUNS = "genie:runs"
_MANY = 10_000
POOL_WAIT_SECONDS = 20
"""How long a call waits for a free Redis connection before the store counts as unavailable."""
DEFAULT_MAX_CONNECTIONS = 512
"""Redis connections one process opens at most ($GENIE_GRAPH_REDIS_MAX_CONNECTIONS); more calls wait."""
EXPIRY_GRACE_SECONDS = 60
"""Checkpoint keys outlive the session record by this much, so a session is gone before its parts."""


_COUNT_START = """
local starts = 1
if redis.call('HGET', KEYS[1], 'step') == ARGV[1] then
    starts = tonumber(redis.call('HGET', KEYS[1], 'starts')) + 1
end
redis.call('HSET', KEYS[1], 'step', ARGV[1], 'starts', starts)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return starts
"""
_LATEST_WRITES = """
local latest = redis.call('GET', KEYS[1])
if not latest then
    return {}
end
local writes = redis.call('ZRANGE', ARGV[1] .. string.sub(latest, #ARGV[2] + 1), 0, -1)
table.insert(writes, 1, latest)
return writes
"""
"""The latest checkpoint's key (from its pointer, ``KEYS[1]``) and its write keys (from its registry).

ARGV: the registry and checkpoint key prefixes; the keys differ only there.
"""

_PRUNE = """
local dropped, kept, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local last_dropped = 1 + 2 * dropped
for i = 2, last_dropped, 2 do
    for _, write in ipairs(redis.call('ZRANGE', KEYS[i + 1], 0, -1)) do
        redis.call('DEL', write)
    end
    redis.call('DEL', KEYS[i], KEYS[i + 1])
end
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then
    local seconds = ttl + grace
    for i = last_dropped + 1, #KEYS do
        redis.call('EXPIRE', KEYS[i], seconds)
    end
    for i = last_dropped + 1, last_dropped + 2 * kept, 2 do
        for _, write in ipairs(redis.call('ZRANGE', KEYS[i + 1], 0, -1)) do
            redis.call('EXPIRE', write, seconds)
        end
    end
end
return ttl
"""
"""Drop checkpoints with their registries and writes; give the kept ones the session's expiry (and grace).

KEYS: the session record, then (checkpoint, registry) pairs, the dropped ones first, then the
latest-checkpoint pointers. ARGV: the numbers of dropped and kept pairs, the grace in seconds.
"""

_STARTS_TTL_SECONDS = 7 * 24 * 3600
"""How long a session's count of run starts is kept without a new start."""


def _max_connections() -> int:
    value = os.environ.get("GENIE_GRAPH_REDIS_MAX_CONNECTIONS", "").strip()
    return int(value) if value else DEFAULT_MAX_CONNECTIONS


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _write_of(key: str) -> tuple[str, str, int]:
    """``(checkpoint_id, task_id, idx)`` of a write's key (``checkpoint_write:{sid}:{ns}:{id}:{task}:{idx}``)."""
    *_, checkpoint_id, task_id, idx = key.split(":")
    return checkpoint_id, task_id, int(idx)


_PLAIN_JSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""With these, ``orjson.dumps`` without a ``default`` refuses every type the saver encodes specially."""

_MARKER = re.compile(rb'"lc"\s*:\s*[12]|"(__interrupt__|__send__|__delta_snapshot__)"\s*:\s*true|"__bytes__"\s*:')
"""A key the saver's reviver acts on: a constructor envelope's ``lc`` or one of its type markers."""


def _plain_json(value: Any) -> bytes | None:
    """``value`` as JSON if it is plain JSON data with no key the saver's reviver acts on, else None."""
    try:
        data = orjson.dumps(value, option=_PLAIN_JSON_OPTIONS)
    except TypeError:
        return None
    return None if _MARKER.search(data) else data


class _Serializer(JsonPlusRedisSerializer):
    """The saver's serializer, without its per-node Python walk for plain JSON data.

    Channels hold the model as plain JSON (see ``_nodes.as_json``). The stock serializer walks
    every node of every value in Python on each write and read, which made a turn slower as the
    dialogue grew. Plain data is encoded and decoded by orjson alone, to the same bytes; anything
    else (constructor envelopes, interrupts, sends, sets, bytes, dataclasses) takes the stock path.
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, (dict, list)):
            data = _plain_json(obj)
            if data is not None:
                return "json", data
        return super().dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, data_bytes = data
        if type_ == "json" and not _MARKER.search(data_bytes):
            return orjson.loads(data_bytes)
        return super().loads_typed(data)


def _serializer(allowed_types: Iterable[tuple[str, str]]) -> _Serializer:
    """A serializer that revives exactly ``allowed_types``, given as ``(module, ClassName)``.

    The saver matches a constructor envelope's id, ``[*module.split("."), ClassName]``, as a whole.
    """
    return _Serializer(allowed_json_modules=sorted({(*module.split("."), name) for module, name in allowed_types}))


class _RedisSaver(AsyncRedisSaver):
    """The async saver, with the synchronous listing LangGraph's sync ``get_state_history`` needs.

    Stored channel values that are plain JSON skip the stock per-node revival walk.
    """

    def _recursive_deserialize(self, obj: Any) -> Any:
        if isinstance(obj, (dict, list)) and _plain_json(obj) is not None:
            return obj
        return super()._recursive_deserialize(obj)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's parameter name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        if self.loop is None:
            raise RuntimeError("the Redis saver is not set up yet")

        async def collect() -> list[CheckpointTuple]:
            return [item async for item in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from asyncio.run_coroutine_threadsafe(collect(), self.loop).result()


class RedisStore(Store):
    """Sessions in Redis 8 (or Redis Stack) with the JSON and Search modules (``redis://host:port/db``).

    Shared by any number of processes: the event lock, run leases and progress live in Redis too.
    """

    scheme = "redis"
    saver: AsyncRedisSaver
    shared = True
    packs_channels = True  # the saver keeps channel values as RedisJSON nodes, uncompressed

    def __init__(self, url: str, saver: AsyncRedisSaver, client: Redis) -> None:
        super().__init__(url, saver)
        # A subscription holds a pooled connection while its poll waits: most are left for commands.
        self.held_feeds = max(1, _max_connections() // 4)
        self.client = client
        self._latest_writes = client.register_script(_LATEST_WRITES)
        self._prune = client.register_script(_PRUNE)
        self._count_start = client.register_script(_COUNT_START)

    @classmethod
    async def open(cls, url: str, allowed_types: Iterable[tuple[str, str]] = ()) -> RedisStore:
        pool = BlockingConnectionPool.from_url(
            url,
            # many requests at once wait for a connection instead of failing with "Too many connections"
            max_connections=_max_connections(),
            timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=10,
            # a connection pooled before an outage fails once when Redis is back: retry it on a fresh one
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        client = Redis(connection_pool=pool)
        saver = _RedisSaver(redis_client=client)
        saver.serde = _serializer(allowed_types)
        await saver.asetup()
        return cls(url, saver, client)

    def allow_types(self, allowed_types: Iterable[tuple[str, str]]) -> None:
        """The ``(module, ClassName)`` pairs the saver may rebuild from JSON: the registered models' types."""
        self.saver.serde = _serializer(allowed_types)

    # ---- the saver's keys -----------------------------------------------------------------
    async def _checkpoints(self, thread_id: str) -> list[tuple[str, str]]:
        """``(checkpoint_ns, checkpoint_id)`` of every checkpoint of a thread, as stored."""
        query = FilterQuery(
            filter_expression=Tag("thread_id") == to_storage_safe_id(thread_id),
            return_fields=["checkpoint_ns", "checkpoint_id"],
            num_results=_MANY,
        )
        result = await self.saver.checkpoints_index.search(query)
        return [(getattr(doc, "checkpoint_ns", ""), getattr(doc, "checkpoint_id", "")) for doc in result.docs]

    async def _writes(self, thread_id: str) -> list[tuple[str, str, str, int]]:
        """``(checkpoint_ns, checkpoint_id, task_id, idx)`` of every pending write of a thread."""
        query = FilterQuery(
            filter_expression=Tag("thread_id") == to_storage_safe_id(thread_id),
            return_fields=["checkpoint_ns", "checkpoint_id", "task_id", "idx"],
            num_results=_MANY,
        )
        result = await self.saver.checkpoint_writes_index.search(query)
        return [
            (
                getattr(doc, "checkpoint_ns", ""),
                getattr(doc, "checkpoint_id", ""),
                getattr(doc, "task_id", ""),
                int(getattr(doc, "idx", 0)),
            )
            for doc in result.docs
        ]

    def _checkpoint_key(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return self.saver._make_redis_checkpoint_key(to_storage_safe_id(thread_id), ns, checkpoint_id)

    def _write_key(self, thread_id: str, write: tuple[str, str, str, int]) -> str:
        ns, checkpoint_id, task_id, idx = write
        return self.saver._make_redis_checkpoint_writes_key(
            to_storage_safe_id(thread_id), ns, checkpoint_id, task_id, idx
        )

    def _registry_key(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return ":".join([_WRITE_KEYS, to_storage_safe_id(thread_id), ns, checkpoint_id])

    def _latest_key(self, thread_id: str, ns: str) -> str:
        return ":".join(["checkpoint_latest", to_storage_safe_id(thread_id), ns])

    def _drop(
        self,
        pipe: Any,
        thread_id: str,
        checkpoints: list[tuple[str, str]],
        writes: list[tuple[str, str, str, int]],
    ) -> None:
        for ns, checkpoint_id in checkpoints:
            pipe.delete(
                self._checkpoint_key(thread_id, ns, checkpoint_id), self._registry_key(thread_id, ns, checkpoint_id)
            )
        for write in writes:
            pipe.delete(self._write_key(thread_id, write))
            pipe.zrem(self._registry_key(thread_id, write[0], write[1]), self._write_key(thread_id, write))

    async def prune(self, thread_id: str, keep: int) -> None:
        # One search for the thread's checkpoints; each one's writes are found through its registry.
        checkpoints = sorted(await self._checkpoints(thread_id), key=lambda item: item[1], reverse=True)
        kept, dropped = checkpoints[:keep], checkpoints[keep:]
        keys = [self._session_key(thread_id)]
        for ns, checkpoint_id in [*dropped, *kept]:
            keys += [
                self._checkpoint_key(thread_id, ns, checkpoint_id),
                self._registry_key(thread_id, ns, checkpoint_id),
            ]
        keys += [self._latest_key(thread_id, ns) for ns in {ns for ns, _id in kept}]
        await self._prune(keys=keys, args=[len(dropped), len(kept), EXPIRY_GRACE_SECONDS])

    async def mark(self, thread_id: str) -> StoreMark:
        saver = self.saver
        found = await self._latest_writes(
            keys=[saver._make_redis_checkpoint_latest_key(thread_id, "")], args=[_WRITE_KEYS, saver._checkpoint_prefix]
        )
        if not found:
            return StoreMark(frozenset(), frozenset(), latest="")
        latest, *writes = (_text(key) for key in found)
        return StoreMark(frozenset(), frozenset(_write_of(key) for key in writes), latest=latest.rsplit(":", 1)[-1])

    async def rollback(self, thread_id: str, mark: StoreMark) -> None:
        checkpoints, writes = await asyncio.gather(self._checkpoints(thread_id), self._writes(thread_id))
        new_checkpoints = [item for item in checkpoints if not mark.has_checkpoint(item[1])]
        new_writes = [w for w in writes if not mark.has_write(w[1], w[2], w[3])]
        pipe = self.client.pipeline(transaction=False)
        self._drop(pipe, thread_id, new_checkpoints, new_writes)
        remaining: dict[str, str] = {}
        for ns, checkpoint_id in checkpoints:
            if mark.has_checkpoint(checkpoint_id) and checkpoint_id > remaining.get(ns, ""):
                remaining[ns] = checkpoint_id
        for ns, checkpoint_id in remaining.items():  # the saver reads the latest checkpoint through this pointer
            pipe.set(self._latest_key(thread_id, ns), self._checkpoint_key(thread_id, ns, checkpoint_id), keepttl=True)
        await pipe.execute()

    async def size_of(self, thread_id: str) -> int:
        checkpoints = await self._checkpoints(thread_id)
        keys = [self._checkpoint_key(thread_id, ns, cid) for ns, cid in checkpoints]
        keys += [self._registry_key(thread_id, ns, cid) for ns, cid in checkpoints]
        keys += [self._latest_key(thread_id, ns) for ns in {ns for ns, _cid in checkpoints}]
        keys += [self._write_key(thread_id, write) for write in await self._writes(thread_id)]
        keys += [self._session_key(thread_id)]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key)
        return sum(int(size or 0) for size in await pipe.execute())

    async def delete(self, thread_id: str) -> None:
        record = await self.session(thread_id)
        await self.saver.adelete_thread(thread_id)
        messages = await self.message_count(thread_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._session_key(thread_id), *(self._run_keys(thread_id)))
        parts = ["seq", "messages", "members", *(f"items:{seq}" for seq in range(1, messages + 1))]
        pipe.delete(*(self._group_key(thread_id, part) for part in parts))
        pipe.zrem(_RUNS, thread_id)
        if record is not None:
            for key in self._index_keys(record):
                pipe.zrem(key, thread_id)
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)  # a pool we made, so ours to close

    # ---- sessions ------------------------------------------------------------------------
    @staticmethod
    def _session_key(session_id: str) -> str:
        return f"genie:session:{session_id}"

    @staticmethod
    def _index_keys(record: SessionRecord) -> list[str]:
        keys = [f"genie:sessions:{record.model_key}"]
        if record.user:
            keys.append(f"genie:user:{record.user}:{record.model_key}")
        return keys

    @staticmethod
    def _run_keys(session_id: str) -> list[str]:
        return [f"genie:{part}:{session_id}" for part in ("lock", "run", "step", "progress", "error", "starts")]

    async def add_session(self, record: SessionRecord) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self._session_key(record.session_id),
            mapping={
                "model_key": record.model_key,
                "user": record.user or "",
                "ttl": record.ttl_seconds or 0,
                "owner": record.owner or "",
            },
        )
        expires = time.time() + record.ttl_seconds if record.ttl_seconds else float("inf")
        if record.ttl_seconds:
            pipe.expire(self._session_key(record.session_id), int(record.ttl_seconds))
            pipe.hset(self._session_key(record.session_id), "expires", expires)
        for key in self._index_keys(record):
            pipe.zadd(key, {record.session_id: expires})
        await pipe.execute()

    async def session(self, session_id: str) -> SessionRecord | None:
        values = await self.client.hgetall(self._session_key(session_id))
        if not values:
            return None
        fields = {_text(k): _text(v) for k, v in values.items()}
        return SessionRecord(
            session_id,
            fields["model_key"],
            fields["user"] or None,
            float(fields.get("ttl") or 0) or None,
            fields.get("owner") or None,
            float(fields["expires"]) if fields.get("expires") else None,
        )

    async def touch(self, record: SessionRecord) -> None:
        if not record.ttl_seconds or record.recently_touched():
            return
        expires = time.time() + record.ttl_seconds
        pipe = self.client.pipeline(transaction=False)
        pipe.expire(self._session_key(record.session_id), int(record.ttl_seconds))
        pipe.hset(self._session_key(record.session_id), "expires", expires)
        for key in self._index_keys(record):
            pipe.zadd(key, {record.session_id: expires})
        await pipe.execute()

    async def sessions(self, model_key: str, user: str | None = None) -> list[str]:
        key = f"genie:user:{user}:{model_key}" if user else f"genie:sessions:{model_key}"
        await self.client.zremrangebyscore(key, "-inf", time.time())
        return [_text(member) for member in await self.client.zrange(key, 0, -1)]

    # ---- a group session's message log ---------------------------------------------------------
    @staticmethod
    def _group_key(session_id: str, part: str) -> str:
        return f"genie:group:{session_id}:{part}"

    async def add_members(self, session_id: str, members: Iterable[str], ttl_seconds: float | None) -> None:
        named = list(members)
        if not named:
            return
        key = self._group_key(session_id, "members")
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(key, *named)
        if ttl_seconds:
            pipe.expire(key, int(ttl_seconds) + EXPIRY_GRACE_SECONDS)
        await pipe.execute()

    async def members(self, session_id: str) -> set[str]:
        return {_text(member) for member in await self.client.smembers(self._group_key(session_id, "members"))}

    async def append_message(self, session_id: str, message: dict[str, Any], ttl_seconds: float | None) -> int:
        seq = int(await self.client.incr(self._group_key(session_id, "seq")))
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._group_key(session_id, "messages"), str(seq), orjson.dumps({**message, "seq": seq}))
        if ttl_seconds:
            for part in ("seq", "messages"):
                pipe.expire(self._group_key(session_id, part), int(ttl_seconds) + EXPIRY_GRACE_SECONDS)
        await pipe.execute()
        return seq

    async def save_message(self, session_id: str, seq: int, message: dict[str, Any]) -> None:
        await self.client.hset(self._group_key(session_id, "messages"), str(seq), orjson.dumps(message))

    async def load_messages(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        found = await self.client.hgetall(self._group_key(session_id, "messages"))
        numbered = sorted((int(seq), body) for seq, body in found.items() if int(seq) > after)
        return [orjson.loads(body) for _seq, body in numbered]

    async def load_message(self, session_id: str, seq: int) -> dict[str, Any] | None:
        body = await self.client.hget(self._group_key(session_id, "messages"), str(seq))
        return None if body is None else orjson.loads(body)

    async def message_count(self, session_id: str) -> int:
        return int(await self.client.get(self._group_key(session_id, "seq")) or 0)

    async def append_items(self, session_id: str, seq: int, items: list[dict[str, Any]]) -> None:
        key = self._group_key(session_id, f"items:{seq}")
        ttl = await self.client.ttl(self._group_key(session_id, "messages"))
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, *(orjson.dumps(item) for item in items))
        if ttl > 0:
            pipe.expire(key, ttl)
        await pipe.execute()

    async def load_items(self, session_id: str, seq: int, start: int = 0) -> list[dict[str, Any]]:
        found = await self.client.lrange(self._group_key(session_id, f"items:{seq}"), start, -1)
        return [orjson.loads(item) for item in found]

    @staticmethod
    def _group_lease_key(session_id: str, holder: str) -> str:
        return f"genie:group:{session_id}:lease:{holder}"

    @contextlib.asynccontextmanager
    async def group_lease(self, session_id: str, holder: str, lease_seconds: float) -> AsyncIterator[None]:
        key = self._group_lease_key(session_id, holder)
        lease = Lock(self.client, key, timeout=lease_seconds, sleep=0.02, thread_local=False)
        await lease.acquire(blocking=True)

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_seconds / 3)
                with contextlib.suppress(LockError, RedisConnectionError, RedisTimeoutError):
                    await lease.reacquire()

        renewal = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(LockError):
                await lease.release()

    async def group_lease_held(self, session_id: str, holder: str) -> bool:
        return bool(await self.client.exists(self._group_lease_key(session_id, holder)))

    # ---- coordination between processes --------------------------------------------------
    @contextlib.asynccontextmanager
    async def event_lock(self, session_id: str, event: str, wait_seconds: float) -> AsyncIterator[None]:
        lock = Lock(self.client, f"genie:lock:{session_id}", timeout=max(60.0, wait_seconds * 2), thread_local=False)
        if not await lock.acquire(blocking=True, blocking_timeout=wait_seconds):
            raise SessionBusy(session_id, event)
        try:
            yield
        finally:
            with contextlib.suppress(LockError):
                await lock.release()

    def _lease(self, session_id: str, seconds: float, run_id: str | None = None) -> Lock:
        lease = Lock(self.client, f"genie:run:{session_id}", timeout=seconds, thread_local=False)
        if run_id is not None:
            lease.local.token = run_id.encode()
        return lease

    async def _list_run(self, session_id: str, lease_seconds: float) -> None:
        await self.client.zadd(_RUNS, {session_id: time.time() + lease_seconds})

    async def claim_run(self, session_id: str, run_id: str, lease_seconds: float) -> bool:
        """Take the run lease for ``run_id``: True if no other run holds it (or it already is ours)."""
        lease = self._lease(session_id, lease_seconds, run_id)
        if await lease.owned():
            await lease.reacquire()
        elif not await lease.acquire(blocking=False, token=run_id):
            return False
        await self._list_run(session_id, lease_seconds)
        return True

    async def owns_run(self, session_id: str, run_id: str) -> bool:
        """Whether the run lease is held by ``run_id``."""
        return bool(await self._lease(session_id, 1, run_id).owned())

    async def renew_run(self, session_id: str, run_id: str, lease_seconds: float) -> bool:
        """Keep the lease alive; False if it was lost (expired and taken over)."""
        try:
            await self._lease(session_id, lease_seconds, run_id).reacquire()
        except LockError:
            return False
        await self._list_run(session_id, lease_seconds)
        return True

    async def end_run(self, session_id: str, run_id: str, error: str | None = None) -> None:
        """Release the lease; a failure is kept for the next poll to report."""
        pipe = self.client.pipeline(transaction=False)
        if error is not None:
            pipe.set(f"genie:error:{session_id}", error, ex=24 * 3600)
        pipe.delete(f"genie:progress:{session_id}")
        pipe.zrem(_RUNS, session_id)
        await pipe.execute()
        with contextlib.suppress(LockError):
            await self._lease(session_id, 1, run_id).release()

    async def orphaned_runs(self) -> list[str]:
        """Sessions whose lease ran out while listed: the run's process died without ending it."""
        overdue = [_text(member) for member in await self.client.zrangebyscore(_RUNS, "-inf", time.time())]
        if not overdue:
            return []
        pipe = self.client.pipeline(transaction=False)
        for session_id in overdue:
            pipe.exists(f"genie:run:{session_id}")
        held = await pipe.execute()
        return [session_id for session_id, is_held in zip(overdue, held, strict=True) if not is_held]

    async def forget_run(self, session_id: str) -> None:
        await self.client.zrem(_RUNS, session_id)

    async def count_start(self, session_id: str, step: str) -> int:
        """Count a start of ``step`` in the session's hash ``genie:starts:<id>`` (one atomic script)."""
        starts = await self._count_start(keys=[f"genie:starts:{session_id}"], args=[step, _STARTS_TTL_SECONDS])
        return int(starts)

    def _step(self, session_id: str, seconds: float, token: str) -> Lock:
        step = Lock(self.client, f"genie:step:{session_id}", timeout=seconds, thread_local=False)
        step.local.token = token.encode()
        return step

    async def take_step(self, session_id: str, token: str, lease_seconds: float) -> bool:
        """The step lock: one worker at a time works a session's invoker state, whatever the queue delivers."""
        return bool(await self._step(session_id, lease_seconds, token).acquire(blocking=False, token=token))

    async def renew_step(self, session_id: str, token: str, lease_seconds: float) -> bool:
        try:
            await self._step(session_id, lease_seconds, token).reacquire()
            return True
        except LockError:
            return False

    async def drop_step(self, session_id: str, token: str) -> None:
        with contextlib.suppress(LockError):
            await self._step(session_id, 1, token).release()

    async def run_in_flight(self, session_id: str) -> RunInFlight | None:
        """The run holding the lease (its sub-task counts and the session's model key), or None if none does.

        One round trip: a poll of a run in flight needs nothing else.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(f"genie:run:{session_id}")
        pipe.hmget(f"genie:progress:{session_id}", "total", "done")
        pipe.hget(self._session_key(session_id), "model_key")
        held, (total, done), model_key = await pipe.execute()
        if not held:
            return None
        return RunInFlight(int(total or 0), int(done or 0), None if model_key is None else _text(model_key))

    async def write_progress(self, session_id: str, total: int, done: int, ttl_seconds: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(f"genie:progress:{session_id}", mapping={"total": total, "done": done})
        pipe.expire(f"genie:progress:{session_id}", int(ttl_seconds) + 1)
        await pipe.execute()

    async def pop_error(self, session_id: str) -> str | None:
        value = await self.client.getdel(f"genie:error:{session_id}")
        return None if value is None else _text(value)

    async def ping(self) -> None:
        await asyncio.wait_for(self.client.ping(), timeout=5)

    # ---- the session feed over pub/sub: a worker's run reaches the API process's streams ----
    async def publish(self, session_id: str, items: list[FeedItem]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.publish(f"genie:feed:{session_id}", orjson.dumps(item))
        await pipe.execute()

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[asyncio.Queue[FeedItem]]:
        queue: asyncio.Queue[FeedItem] = asyncio.Queue()
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)

        async def relay() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    queue.put_nowait(orjson.loads(message["data"]))

        reader: asyncio.Task[None] | None = None
        try:  # (a subscription cut off half way gives its connection back too)
            await pubsub.subscribe(f"genie:feed:{session_id}")
            reader = asyncio.create_task(relay())
            yield queue
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                with contextlib.suppress(Exception):
                    await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]
