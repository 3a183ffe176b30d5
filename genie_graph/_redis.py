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
* ``genie:answer:{sid}``: what a poll answers, kept by the run that ended with the checkpoint it
  names; polls in any process answer from it while that checkpoint is the latest;
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
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, cast

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.redis.aio import AsyncRedisSaver
from langgraph.checkpoint.redis.base import BaseRedisSaver
from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer
from langgraph.checkpoint.redis.util import (
    EMPTY_ID_SENTINEL,
    from_storage_safe_id,
    to_storage_safe_id,
    to_storage_safe_str,
)
from langgraph.constants import TASKS
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redisvl.query import FilterQuery  # type: ignore[import-untyped]
from redisvl.query.filter import Tag  # type: ignore[import-untyped]
from ulid import ULID

from ._redis_feed import FEED_PREFIX, FeedHub
from ._stores import (
    FeedItem,
    KeptAnswer,
    RunClaim,
    RunEnd,
    RunInFlight,
    SessionLook,
    SessionRecord,
    Store,
    StoreMark,
    WorkTaken,
)
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
_LOOK = """
if ARGV[4] and not redis.call('SET', KEYS[7], ARGV[4], 'NX', 'PX', ARGV[5]) then
    return {}
end
local held = redis.call('EXISTS', KEYS[1])
local claimed = 0
if ARGV[6] and held == 0 then
    redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[7])
    redis.call('ZADD', KEYS[8], ARGV[8], ARGV[9])
    claimed = 1
end
local counts = redis.call('HMGET', KEYS[2], 'total', 'done')
local record = redis.call('HGETALL', KEYS[3])
local failure = false
if held == 0 then
    failure = redis.call('GET', KEYS[4])
end
local latest = redis.call('GET', KEYS[5])
local writes = {}
if latest and ARGV[1] == '1' then
    writes = redis.call('ZRANGE', ARGV[2] .. string.sub(latest, #ARGV[3] + 1), 0, -1)
end
local answer = {}
if latest and held == 0 then
    local kept = redis.call('HMGET', KEYS[6], 'checkpoint', 'model_key', 'version', 'body')
    if kept[1] == latest then
        answer = {kept[2], kept[3], kept[4]}
    end
end
return {held, counts, record, failure, latest, writes, answer, claimed}
"""
"""What a poll or an event needs before the checkpoint, in one trip (see ``RedisStore.look``).

KEYS: the run lease, progress, session record, failure, latest-checkpoint pointer and kept answer;
then the event lock, to take first, and the runs' sorted set. ARGV: whether to list the latest
checkpoint's writes (a mark), the registry and checkpoint key prefixes (the keys differ only there);
then the event lock's token and milliseconds: an empty answer if another holds it; then a run id,
its lease's milliseconds, its score in the runs' set and the session id: the run lease is taken for
it if no run holds it, as ``_CLAIM`` does. The failure is read where no run is in flight, not popped:
the caller pops it when it reports it.
"""

_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[2] then
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[3], ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"""
"""Release the event lock ``KEYS[1]`` (token ``ARGV[1]``) and the run lease ``KEYS[2]`` its look took for
run ``ARGV[2]`` and no run kept, unlisting session ``ARGV[3]`` from the runs' set ``KEYS[3]``."""

_SETTLE = """
local function prune(session_key, index, query, keep, grace, checkpoint_prefix, registry_prefix, latest_prefix)
    local found = redis.call('FT.SEARCH', index, query, 'NOCONTENT', 'DIALECT', 2, 'LIMIT', 0, 10000)
    local checkpoints = {}
    for i = 2, #found do
        checkpoints[#checkpoints + 1] = {found[i], string.match(found[i], ':([^:]*)$')}
    end
    table.sort(checkpoints, function(a, b) return a[2] > b[2] end)
    local ttl = redis.call('TTL', session_key)
    for i, checkpoint in ipairs(checkpoints) do
        local key, id = checkpoint[1], checkpoint[2]
        local rest = string.sub(key, #checkpoint_prefix + 1)
        local registry = registry_prefix .. rest
        local writes = redis.call('ZRANGE', registry, 0, -1)
        if i > keep then
            for _, write in ipairs(writes) do
                redis.call('DEL', write)
            end
            redis.call('DEL', key, registry)
        elseif ttl > 0 then
            local seconds = ttl + grace
            for _, write in ipairs(writes) do
                redis.call('EXPIRE', write, seconds)
            end
            redis.call('EXPIRE', key, seconds)
            redis.call('EXPIRE', registry, seconds)
            redis.call('EXPIRE', latest_prefix .. string.sub(rest, 1, #rest - #id - 1), seconds)
        end
    end
    return ttl
end

local ttl = prune(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7])
if ARGV[8] == '1' then
    if ARGV[11] == '1' then
        redis.call('SET', KEYS[5], ARGV[12], 'EX', ARGV[13])
    end
    redis.call('DEL', KEYS[3])
    redis.call('ZREM', KEYS[4], ARGV[10])
    if redis.call('GET', KEYS[2]) == ARGV[9] then
        redis.call('DEL', KEYS[2])
    end
    local pointer = redis.call('GET', KEYS[6])
    local checkpoint_id = ARGV[14]
    local kept = ARGV[17] ~= '' and checkpoint_id ~= '' and ttl ~= -2
    if kept and pointer and string.sub(pointer, -#checkpoint_id) == checkpoint_id then
        redis.call('HSET', KEYS[7], 'checkpoint', pointer, 'model_key', ARGV[15], 'version', ARGV[16], 'body', ARGV[17])
        if ttl > 0 then
            redis.call('EXPIRE', KEYS[7], ttl + tonumber(ARGV[4]))
        end
    else
        redis.call('DEL', KEYS[7])
    end
end
if ARGV[18] ~= '' then
    local holder = redis.call('GET', KEYS[2])
    if holder == ARGV[18] then
        redis.call('PEXPIRE', KEYS[2], ARGV[19])
    elseif not holder then
        redis.call('SET', KEYS[2], ARGV[18], 'PX', ARGV[19])
    end
    if not holder or holder == ARGV[18] then
        redis.call('ZADD', KEYS[4], ARGV[20], ARGV[21])
    end
end
for i = 22, #ARGV do
    redis.call('PUBLISH', KEYS[8], ARGV[i])
end
return ttl
"""
"""After a run, in one trip: drop all but the latest checkpoints (found by the saver's search index,
with their registries and writes) and give the kept ones the session's expiry plus a grace; then, for
a run that ends, keep its failure, release its lease and progress, and keep its answer for the
checkpoint it left (if that still is the latest).

KEYS: the session record, run lease, progress, the runs' sorted set, failure, latest-checkpoint
pointer, kept answer, feed channel. ARGV: index, query, how many to keep, grace, the checkpoint,
registry and pointer key prefixes; whether the run ends, its run id, the session id, whether it
failed, the failure, its expiry; the checkpoint the answer is for, its model key, flow version and
body; then a run id whose lease to renew (or take, if free) as ``_CLAIM`` does, its milliseconds, its
score in the runs' set and the session id (all '' but for a run that goes on elsewhere); then the
feed items to publish, last of all (a ``done`` among them follows the answer kept).
"""

_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif holder then
    return 0
else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
"""Take (or renew, if it is ours) the run lease ``KEYS[1]`` for token ``ARGV[1]`` for ``ARGV[2]`` ms,
and list the session ``ARGV[4]`` in the runs' sorted set ``KEYS[2]`` until ``ARGV[3]``; 0 if another
run holds the lease. The token is what redis-py's ``Lock`` compares: renewing and releasing stay its."""

_TAKE_WORK = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {}
end
local holder = redis.call('GET', KEYS[2])
local owned = 0
local claimed = 0
if holder == ARGV[3] then
    owned = 1
end
if owned == 1 or not holder then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
    claimed = 1
end
return {owned, claimed, redis.call('HGETALL', KEYS[4])}
"""
"""A worker's start, in one trip (see ``Store.take_work``): the step lock ``KEYS[1]`` for token ``ARGV[1]``
for ``ARGV[2]`` ms (an empty answer if another worker holds it); then the run lease ``KEYS[2]`` for run
``ARGV[3]``, taken or renewed as ``_CLAIM`` does (the runs' set ``KEYS[3]``, score ``ARGV[4]``, session
``ARGV[5]``); and the session record ``KEYS[4]``."""

_ERROR_SECONDS = 24 * 3600
"""How long the failure of a run nobody polled is kept."""

_READ = """
local key = ARGV[1]
if key == '' then
    key = redis.call('GET', KEYS[1])
    if not key then
        return {}
    end
end
local checkpoint = redis.call('JSON.GET', key)
if not checkpoint then
    return {}
end
local rest = string.sub(key, #ARGV[2] + 1)
local id = string.match(rest, ':([^:]*)$')
local function documents(registry, only)
    local found = {}
    for _, write in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
        if not only or string.find(write, only, 1, true) then
            local document = redis.call('JSON.GET', write)
            if document then
                found[#found + 1] = document
            end
        end
    end
    return found
end
local sends = {}
local parent = string.match(redis.call('JSON.GET', key, 'parent_checkpoint_id') or '', '^"(.*)"$')
if parent and parent ~= '' and parent ~= ARGV[4] then
    sends = documents(ARGV[3] .. string.sub(rest, 1, #rest - #id) .. parent, ARGV[5])
end
return {checkpoint, documents(ARGV[3] .. rest, nil), sends}
"""
"""A checkpoint with its pending writes and its parent's pending sends, as the stock saver reads them
in seven trips (see ``_RedisSaver.aget_tuple``).

KEYS: the latest-checkpoint pointer. ARGV: the checkpoint's key ('' for the latest), the checkpoint
and registry key prefixes, the empty-id sentinel, the channel name that marks a send's write key.
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


def _json(document: dict[str, Any]) -> bytes:
    """A saver document as JSON (with the standard library where ``orjson`` declines a value)."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document).encode()


def _timestamp_ms(checkpoint_id: str) -> Any:
    """The stock saver's ``checkpoint_ts``: the id's time if it is a ULID, else now (milliseconds)."""
    try:
        return ULID.from_str(checkpoint_id).timestamp
    except Exception:  # (LangGraph's ids are UUIDs, not ULIDs: the stock saver then takes the time now)
        return time.time() * 1000


def _serializer(allowed_types: Iterable[tuple[str, str]]) -> _Serializer:
    """A serializer that revives exactly ``allowed_types``, given as ``(module, ClassName)``.

    The saver matches a constructor envelope's id, ``[*module.split("."), ClassName]``, as a whole.
    """
    return _Serializer(allowed_json_modules=sorted({(*module.split("."), name) for module, name in allowed_types}))


class _RedisSaver(AsyncRedisSaver):
    """The async saver, with the synchronous listing LangGraph's sync ``get_state_history`` needs.

    Stored channel values that are plain JSON skip the stock per-node revival walk, and a checkpoint
    is read in one round trip (the stock read takes seven: pointer, document, its values again,
    and the pending writes' and sends' registries and documents). Writes store the stock documents
    under the stock keys, each in one round trip of raw commands (the stock checkpoint write takes
    two, through redisvl, and every write builds a ``redis.json()`` wrapper per command and encodes
    with the standard library's ``json``).
    """

    _read: AsyncScript | None = None

    def _stock_writes(self) -> bool:
        """Whether to write as the stock saver does: on a cluster, or with its TTLs (genie-graph sets none)."""
        return bool(self.cluster_mode or (self.ttl_config and "default_ttl" in self.ttl_config))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        stream_mode: str = "values",
    ) -> RunnableConfig:
        """The stock document and latest-checkpoint pointer, in one round trip."""
        if self._stock_writes():
            return await super().aput(config, checkpoint, metadata, new_versions, stream_mode)
        configurable = config["configurable"]
        thread_id, checkpoint_ns = configurable["thread_id"], configurable["checkpoint_ns"]
        run_id = configurable.get("run_id", metadata.get("run_id"))
        # the stock saver's choice of ids: the config's checkpoint id is the parent of a new checkpoint
        config_id = configurable.get("checkpoint_id")
        checkpoint_id = config_id or configurable.get("thread_ts", "") or checkpoint.get("id", "")
        parent_id = None
        if checkpoint.get("id") and config_id and checkpoint["id"] != config_id:
            parent_id, checkpoint_id = config_id, checkpoint["id"]
        document: dict[str, Any] = {
            "thread_id": to_storage_safe_id(thread_id),
            "run_id": to_storage_safe_id(run_id) if run_id else "",
            "checkpoint_ns": to_storage_safe_str(checkpoint_ns),
            "checkpoint_id": to_storage_safe_id(checkpoint_id),
            "parent_checkpoint_id": to_storage_safe_id(parent_id) if parent_id else "",
            "checkpoint_ts": _timestamp_ms(checkpoint_id),
            "checkpoint": self._dump_checkpoint(checkpoint.copy()),
            "metadata": self._dump_metadata(metadata),
            "has_writes": False,
        }
        if "source" in metadata and "step" in metadata:  # (the stock listing filters on them)
            document["source"], document["step"] = metadata["source"], metadata["step"]
        key = self._make_redis_checkpoint_key_cached(thread_id, checkpoint_ns, checkpoint_id)
        pipeline = self._redis.pipeline(transaction=False)
        pipeline.execute_command("JSON.SET", key, "$", _json(document))
        pipeline.set(self._make_redis_checkpoint_latest_key(thread_id, checkpoint_ns), key)
        await pipeline.execute()
        saved = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}
        return {"configurable": saved}

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """The stock write documents, the checkpoint's ``has_writes`` and their registry, in one round trip."""
        if self._stock_writes() or not writes:
            return await super().aput_writes(config, writes, task_id, task_path)
        configurable = config["configurable"]
        thread_id, checkpoint_id = configurable["thread_id"], configurable["checkpoint_id"]
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        pipeline = self._redis.pipeline(transaction=False)
        keys: list[str] = []
        for index, (channel, value) in enumerate(writes):
            type_, blob = self.serde.dumps_typed(value)
            idx = WRITES_IDX_MAP.get(channel, index)
            document = {
                "thread_id": to_storage_safe_id(thread_id),
                "checkpoint_ns": to_storage_safe_str(checkpoint_ns),
                "checkpoint_id": to_storage_safe_id(checkpoint_id),
                "task_id": task_id,
                "task_path": task_path,
                "idx": idx,
                "channel": channel,
                "type": type_,
                "blob": self._encode_blob(blob),
            }
            key = self._make_redis_checkpoint_writes_key_cached(thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
            pipeline.execute_command("JSON.SET", key, "$", _json(document))
            keys.append(key)
        checkpoint_key = self._make_redis_checkpoint_key(thread_id, checkpoint_ns, checkpoint_id)
        pipeline.execute_command("JSON.MERGE", checkpoint_key, "$", b'{"has_writes":true}')
        if self._key_registry:
            registry = self._key_registry.make_write_keys_zset_key(thread_id, checkpoint_ns, checkpoint_id)
            pipeline.zadd(registry, {key: index for index, key in enumerate(keys)})
        await pipeline.execute()
        return None

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The stock read in one trip, built by the stock saver's own helpers."""
        if self.ttl_config and self.ttl_config.get("refresh_on_read"):
            return await super().aget_tuple(config)
        configurable = config["configurable"]
        thread_id, checkpoint_ns = configurable["thread_id"], configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        key = ""
        if checkpoint_id and checkpoint_id != EMPTY_ID_SENTINEL:
            key = self._make_redis_checkpoint_key(
                to_storage_safe_id(thread_id), to_storage_safe_str(checkpoint_ns), to_storage_safe_id(checkpoint_id)
            )
        if self._read is None:
            self._read = self._redis.register_script(_READ)
        found = await self._read(
            keys=[self._make_redis_checkpoint_latest_key(thread_id, checkpoint_ns)],
            args=[key, self._checkpoint_prefix, _WRITE_KEYS, EMPTY_ID_SENTINEL, TASKS],
        )
        if not found:
            return None
        document, write_documents, send_documents = found
        data = orjson.loads(document)
        stored_checkpoint = data.get("checkpoint") or {}
        channel_values = self._recursive_deserialize(stored_checkpoint.get("channel_values", {}))
        sends = sorted(
            (write for write in map(orjson.loads, send_documents) if write.get("channel") == TASKS),
            key=lambda write: (write.get("task_path", ""), write.get("task_id", ""), write.get("idx", 0)),
        )
        writes: dict[tuple[str, str], dict[str, Any]] = {}
        for write in map(orjson.loads, write_documents):
            task_id, idx = write.get("task_id", ""), str(write.get("idx", 0))
            writes[(task_id, idx)] = {
                "task_id": task_id,
                "idx": idx,
                "channel": write.get("channel", ""),
                "type": write.get("type", ""),
                "blob": write.get("blob", b""),
            }
        metadata = data.get("metadata", "{}")
        metadata = orjson.loads(metadata) if isinstance(metadata, str) else metadata
        stored_id = from_storage_safe_id(data["checkpoint_id"])
        parent_id = from_storage_safe_id(data["parent_checkpoint_id"]) if data.get("parent_checkpoint_id") else None
        return CheckpointTuple(
            config={
                "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": stored_id}
            },
            checkpoint=self._load_checkpoint(
                stored_checkpoint,
                channel_values,
                [(write.get("type", ""), write.get("blob", b"")) for write in sends],
            ),
            metadata=cast(
                CheckpointMetadata,
                {
                    name.replace("\u0000", ""): value.replace("\u0000", "") if isinstance(value, str) else value
                    for name, value in metadata.items()
                },
            ),
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": parent_id}}
                if parent_id
                else None
            ),
            pending_writes=BaseRedisSaver._load_writes(self.serde, writes),
        )

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
        self.client = client
        self._feed_hub: FeedHub | None = None
        self._look = client.register_script(_LOOK)
        self._settle = client.register_script(_SETTLE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._take_work = client.register_script(_TAKE_WORK)
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
        await self.settle(thread_id, keep)

    async def settle(
        self,
        thread_id: str,
        keep: int,
        end: RunEnd | None = None,
        feed: Sequence[FeedItem] = (),
        renew: RunClaim | None = None,
    ) -> None:
        saver = self.saver
        ending: list[Any] = ["0", "", "", "0", "", "", "", "", "", ""]
        if end is not None:
            answer = end.answer
            ending = [
                "1",
                end.run_id,
                thread_id,
                "0" if end.error is None else "1",
                end.error or "",
                _ERROR_SECONDS,
                end.checkpoint_id or "",
                answer.model_key if answer else "",
                answer.version if answer else "",
                answer.body if answer else "",
            ]
        await self._settle(
            keys=[
                self._session_key(thread_id),
                *(f"genie:{part}:{thread_id}" for part in ("run", "progress")),
                _RUNS,
                f"genie:error:{thread_id}",
                saver._make_redis_checkpoint_latest_key(thread_id, ""),
                f"genie:answer:{thread_id}",
                self._feed_channel(thread_id),
            ],
            args=[
                saver.checkpoints_index.name,
                str(Tag("thread_id") == to_storage_safe_id(thread_id)),
                keep,
                EXPIRY_GRACE_SECONDS,
                saver._checkpoint_prefix,
                _WRITE_KEYS,
                "checkpoint_latest",
                *ending,
                *(
                    (
                        renew.run_id,
                        max(1, int(renew.lease_seconds * 1000)),
                        time.time() + renew.lease_seconds,
                        thread_id,
                    )
                    if renew is not None
                    else ("", "", "", "")
                ),
                *(orjson.dumps(item) for item in feed),
            ],
        )

    async def look(self, session_id: str, *, mark: bool = False) -> SessionLook:
        found = await self._looked(session_id, mark)
        assert found is not None
        return found

    async def _looked(
        self, session_id: str, mark: bool, lock: Lock | None = None, claim: RunClaim | None = None
    ) -> SessionLook | None:
        """:meth:`look`; with a ``lock``, only if that (the event lock) is free: it is taken first, in the same
        trip, and then the run lease for ``claim`` if no run holds it."""
        keys = [
            *(f"genie:{part}:{session_id}" for part in ("run", "progress")),
            self._session_key(session_id),
            f"genie:error:{session_id}",
            self.saver._make_redis_checkpoint_latest_key(session_id, ""),
            f"genie:answer:{session_id}",
        ]
        args: list[Any] = ["1" if mark else "0", _WRITE_KEYS, self.saver._checkpoint_prefix]
        if lock is not None:
            keys += [_text(lock.name), _RUNS]
            args += [lock.local.token, int(lock.timeout * 1000)]  # type: ignore[operator]
            if claim is not None:
                lease_ms = max(1, int(claim.lease_seconds * 1000))
                args += [claim.run_id, lease_ms, time.time() + claim.lease_seconds, session_id]
        looked = await self._look(keys=keys, args=args)
        if not looked:
            return None
        held, (total, done), fields, failure, latest, writes, answer, claimed = looked
        record = self._record_of(session_id, dict(zip(fields[::2], fields[1::2], strict=True)))
        flight = None
        if held:
            flight = RunInFlight(int(total or 0), int(done or 0), record.model_key if record else None)
        store_mark = None
        if mark:  # every checkpoint up to the latest, and the latest one's writes
            latest_id = _text(latest).rsplit(":", 1)[-1] if latest else ""
            store_mark = StoreMark(frozenset(), frozenset(_write_of(_text(key)) for key in writes), latest=latest_id)
        kept = KeptAnswer(_text(answer[0]), _text(answer[1]), answer[2]) if answer else None
        error = None if not failure else _text(failure)
        return SessionLook(record, flight, error, store_mark, kept, claim if claimed else None)

    async def mark(self, thread_id: str) -> StoreMark:
        store_mark = (await self.look(thread_id, mark=True)).mark
        assert store_mark is not None
        return store_mark

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
        keys += [self._session_key(thread_id), *self._run_keys(thread_id)]  # (its kept answer among them)
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
        if self._feed_hub is not None:
            await self._feed_hub.close()
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
        parts = ("lock", "run", "step", "progress", "error", "starts", "answer")
        return [f"genie:{part}:{session_id}" for part in parts]

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
        return self._record_of(session_id, await self.client.hgetall(self._session_key(session_id)))

    @staticmethod
    def _record_of(session_id: str, values: dict[Any, Any]) -> SessionRecord | None:
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
    async def event_lock(
        self, session_id: str, event: str, wait_seconds: float, look: bool = False, claim: RunClaim | None = None
    ) -> AsyncIterator[SessionLook | None]:
        lock = Lock(self.client, f"genie:lock:{session_id}", timeout=max(60.0, wait_seconds * 2), thread_local=False)
        looked = None
        try:
            if look:  # a free lock is taken in the same trip as the look (and the run lease, if free)
                lock.local.token = uuid.uuid1().hex.encode()
                looked = await self._looked(session_id, True, lock, claim)
            if looked is None and not await lock.acquire(blocking=True, blocking_timeout=wait_seconds):
                raise SessionBusy(session_id, event)
            yield looked
        finally:
            taken = looked.claim if looked is not None else None
            if taken is None or taken.kept:
                with contextlib.suppress(LockError):
                    await lock.release()
            else:  # no run started under the lease the look took: both go in one trip
                await self._release(
                    keys=[_text(lock.name), f"genie:run:{session_id}", _RUNS],
                    args=[lock.local.token, taken.run_id, session_id],
                )

    def _lease(self, session_id: str, seconds: float, run_id: str | None = None) -> Lock:
        lease = Lock(self.client, f"genie:run:{session_id}", timeout=seconds, thread_local=False)
        if run_id is not None:
            lease.local.token = run_id.encode()
        return lease

    async def _list_run(self, session_id: str, lease_seconds: float) -> None:
        await self.client.zadd(_RUNS, {session_id: time.time() + lease_seconds})

    async def claim_run(self, session_id: str, run_id: str, lease_seconds: float) -> bool:
        """Take the run lease for ``run_id``: True if no other run holds it (or it already is ours)."""
        claimed = await self._claim(
            keys=[f"genie:run:{session_id}", _RUNS],
            args=[run_id, max(1, int(lease_seconds * 1000)), time.time() + lease_seconds, session_id],
        )
        return bool(claimed)

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
            pipe.set(f"genie:error:{session_id}", error, ex=_ERROR_SECONDS)
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

    async def take_work(self, session_id: str, token: str, run_id: str, lease_seconds: float) -> WorkTaken | None:
        taken = await self._take_work(
            keys=[f"genie:step:{session_id}", f"genie:run:{session_id}", _RUNS, self._session_key(session_id)],
            args=[token, max(1, int(lease_seconds * 1000)), run_id, time.time() + lease_seconds, session_id],
        )
        if not taken:
            return None
        owned, claimed, fields = taken
        record = self._record_of(session_id, dict(zip(fields[::2], fields[1::2], strict=True)))
        return WorkTaken(bool(owned), bool(claimed), record)

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
        """The run holding the lease (its sub-task counts and the session's model key), or None if none does."""
        return (await self.look(session_id)).flight

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
    @staticmethod
    def _feed_channel(session_id: str) -> str:
        return FEED_PREFIX + session_id

    async def publish(self, session_id: str, items: list[FeedItem]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.publish(self._feed_channel(session_id), orjson.dumps(item))
        await pipe.execute()

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[asyncio.Queue[FeedItem]]:
        if self._feed_hub is None:
            self._feed_hub = FeedHub(self.client, self._deliver_message)
        channel = self._feed_channel(session_id)
        async with super().subscribe(session_id) as queue:
            await self._feed_hub.join(channel)
            try:
                yield queue
            finally:
                await self._feed_hub.leave(channel)

    def _deliver_message(self, channel: str, item: FeedItem) -> None:
        self.deliver(channel.removeprefix(FEED_PREFIX), [item])
