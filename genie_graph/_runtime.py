"""``GenieFlow``: sessions as LangGraph threads, driven by Genie Flow's events and polls.

Every session is a thread of its flow's compiled graph (thread id = session id) in one store.
An event into a user state runs the graph to the next interrupt and answers at once; an event
into an invoker state answers ``["poll"]`` and runs the graph in the background, reporting
sub-task progress until it settles. Each method has an async twin prefixed ``a``; both run the
work on one event loop the ``GenieFlow`` owns, so they are safe from threads, scripts, async
servers and notebooks alike.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, Interrupt, StateSnapshot, StreamMode
from opentelemetry.trace import TracerProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from ulid import ULID

from . import _tracing
from ._api_models import AIProgressResponse, AIResponse, AIStatusResponse, EventInput
from ._channels import expect, recall, remembering, validate
from ._compiler import graph_of
from ._composite import CompositeRunner
from ._declaration import NamedQueueTaskTemplate
from ._diagram import Diagram
from ._failures import current_run_starts
from ._flow import POLL, CompiledFlow, GenieCompat, compile_flow
from ._group import Execution, GroupMessage, GroupProcessor
from ._invokers import DEFAULT_POOL_SIZE, InvokerRegistry
from ._model import GenieModel, StateKind, reachable_types
from ._nodes import RECORD_INTRO, EventReport, current_progress, current_report
from ._packing import packing_channels
from ._preferences import PreferencesSource, check_source
from ._stack import FlowStatus
from ._stores import (
    FeedItem,
    KeptAnswer,
    RunClaim,
    RunEnd,
    SessionLook,
    SessionRecord,
    Store,
    StoreMark,
    WorkTaken,
    default_store_url,
    open_store,
    written_checkpoints,
)
from ._templates import TemplateLibrary
from ._tokens import current_token_sink, loop_safe
from ._tools import ApprovalPolicy, ApprovalRequest, ApprovalStatus, pending_approval
from ._usage import PriceTable
from ._user import User
from ._versions import (
    Migration,
    VersionContext,
    load_other_version,
    migration_command,
    register_versions,
    write_migration,
)
from .errors import (
    ApprovalError,
    EventFailed,
    EventNotAllowed,
    FlowVersionUnsupported,
    GenieGraphError,
    NotAMember,
    SessionBusy,
    StoreUnavailable,
    UnknownModelKey,
    UnknownSession,
)

logger = logging.getLogger("genie_graph")
T = TypeVar("T")

DEFAULT_KEEP_CHECKPOINTS = 1
DEFAULT_SESSION_TTL_SECONDS = 24 * 3600.0
"""Idle time after which a session expires: Genie Flow's default of one day."""
DEFAULT_QUEUE = "genie-graph"
"""The Celery queue of invoker states that name none (``NamedQueueTaskTemplate`` names one)."""
RUNNERS = ("inline", "celery")
_MODEL_KEY = "genie_model_key"
_INTERRUPT = "__interrupt__"  # where LangGraph streams interrupts (its own constant is private)
_EVENT_LOCK_WAIT_SECONDS = 10.0
_FOLLOW_CHECK_SECONDS = 1.0
"""A followed run that publishes nothing for this long is checked in the store (a missed ``done``)."""
_FOLLOW_AFTER_DONE_SECONDS = 0.01
_FOLLOW_KEEPALIVE_SECONDS = 15.0
"""A followed run quiet for this long gets its progress repeated, so proxies keep the stream open."""
_KEPT_SESSIONS = 256
"""At most this many sessions are kept as their last run left them (see ``GenieFlow._keep_settled``)."""
_FEED_LINGER_SECONDS = 0.02
"""On a shared store, how long a run's feed waits after an item for more, to publish them in one round trip."""
_PROGRESS_DELAY_SECONDS = 0.2
"""On a shared store, how long a run goes on before its sub-task counts are written for other processes' polls."""


def _state_item(flow: CompiledFlow, state_id: str) -> dict[str, Any]:
    """A feed's ``state`` item: the state the session entered."""
    kind = flow.node_kind(state_id)
    return {
        "state": state_id,
        "name": flow.node_name(state_id),
        "kind": kind.name.lower() if kind is not None else None,
    }


def default_data_dir() -> Path:
    """``$GENIE_GRAPH_DATA_DIR``, else ``~/.local/share/genie-graph``."""
    return Path(os.environ.get("GENIE_GRAPH_DATA_DIR") or Path.home() / ".local" / "share" / "genie-graph")


@dataclass
class _Progress:
    """Sub-task counts of the run in flight (reset for each invoker state, as in Genie Flow).

    ``on_change`` is told the counts after each change: a shared store publishes them to polls
    in other processes.
    """

    total: int = 0
    done: int = 0
    key: str | None = None
    on_change: Any = None

    def begin(self, key: str, total: int) -> None:
        if self.key == key and self.done == 0:
            return  # already counted when the event into this state was accepted
        self.key, self.total, self.done = key, total, 0
        self._changed()

    def add_total(self, count: int) -> None:
        self.total += count
        self._changed()

    def add_done(self, count: int = 1) -> None:
        self.done += count
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.total, self.done)


@dataclass
class _Run:
    """A background run of a session's graph (in this process)."""

    task: asyncio.Task[None] | None = None
    progress: _Progress = field(default_factory=_Progress)
    error: str | None = None
    run_id: str = field(default_factory=lambda: str(ULID()))
    model_key: str = ""
    version: str | None = None
    """The flow version of the session (an older one kept serving it, or the current one)."""
    values: dict[str, Any] | None = None
    """The graph's state where the run stopped (from its stream): the answer needs no second read."""
    stopped: StateSnapshot | None = None
    """Where the run stopped (next nodes, interrupts, checkpoint), from its stream; the Celery runner's."""
    model: GenieModel | None = None
    """``values`` validated, while the run's own validations could be reused."""
    interrupts: tuple[Interrupt, ...] = ()
    """The interrupts the run stopped at."""
    recalled: tuple[Any, ...] = ()
    """Its long lists with their objects, for the next run to reuse when it reads them back."""
    others_wrote: int | None = None
    """The store's ``others_wrote()`` as the run started."""
    ended: bool = False
    """Whether the run ended here, its lease released (False: a worker goes on with it)."""
    written: dict[str, str] = field(default_factory=dict)
    """The last root checkpoint the run wrote (its thread's id to the checkpoint's)."""
    done_published: bool = False
    """Whether the store published the feed's ``done`` with the run's end."""


class _Stopped(NamedTuple):
    """Where a run of the graph stopped, as its stream told it."""

    values: dict[str, Any] | None
    snapshot: StateSnapshot | None
    """Next nodes, interrupts and checkpoint as ``aget_state`` would answer (values aside); None
    unless the run streamed its checkpoints."""
    worked: bool = True
    """Whether a node ran (False: it stopped before its first step)."""
    model: GenieModel | None = None
    """``values`` validated (None without values)."""
    interrupts: tuple[Interrupt, ...] = ()
    recalled: tuple[Any, ...] = ()
    """The long lists of ``values`` with the objects validated from them (see ``_channels.recall``)."""


class _Settled(NamedTuple):
    """A session as a run in this process left it."""

    snapshot: StateSnapshot
    """What the next event decides on besides the model: its interrupts (no values, checkpoint or next nodes)."""
    model: GenieModel
    answer: AIResponse
    """What a poll answers."""
    others_wrote: int
    """The store's ``others_wrote()`` then: kept only while it stays the same."""


@dataclass
class _FollowState:
    """A run followed by :meth:`GenieFlow.astream_event`."""

    model_key: str
    session_id: str
    queue: asyncio.Queue[FeedItem]
    answer: AIResponse
    finished: bool = False
    done_seen: bool = False
    quiet_since: float = field(default_factory=time.monotonic)


class _FeedWriter:
    """Publishes a run's feed items in order, off the run's path: a slow store never holds a run up.

    A process-local store hands each item to its subscribers at once. On a shared store each batch
    is a round trip to Redis, made by a task of its own, which lingers ``linger`` seconds after an
    item for those that follow (the run's steps come milliseconds apart). Closing does not wait for
    the linger. A run that ends takes the items not yet published (:meth:`take`) and has the store
    publish them with its end, in the same round trip.
    """

    def __init__(self, store: Store, session_id: str, linger: float = 0.0) -> None:
        self._store = store
        self._session_id = session_id
        self._linger = linger
        self._task: asyncio.Task[None] | None = None
        if store.shared:
            self._queue: asyncio.Queue[FeedItem | None] = asyncio.Queue()
            self._closing = asyncio.Event()
            self._batch: list[FeedItem] = []
            """Items taken from the queue and not published yet."""
            self._taking = False
            self._task = asyncio.get_running_loop().create_task(self._drain())

    def put(self, event: str, data: dict[str, Any]) -> None:
        if self._task is None:
            self._store.deliver(self._session_id, [{"event": event, "data": data}])
        else:
            self._queue.put_nowait({"event": event, "data": data})

    async def _drain(self) -> None:
        batch = self._batch
        while True:
            item = await self._queue.get()
            if item is not None:
                batch.append(item)
                if self._linger and not self._closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self._linger)
                while not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        break
                    batch.append(item)
            if batch and not self._taking:  # (taken: the batch is left to ``take``)
                with contextlib.suppress(Exception):  # the feed is best effort: polls still answer
                    await self._store.publish(self._session_id, list(batch))
                batch.clear()
            if item is None:
                return

    async def take(self) -> list[FeedItem]:
        """Stop publishing; the items not published yet, in order, for the caller to publish.

        A batch on its way lands first. The writer goes on publishing what is put after.
        """
        if self._task is None:
            return []
        self._taking = True  # (not a cancel: a batch half published would be published twice, or lost)
        self._queue.put_nowait(None)
        self._closing.set()
        with contextlib.suppress(Exception):
            await self._task
        taken = self._batch
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                taken.append(item)
        self._batch, self._taking = [], False
        self._task = asyncio.get_running_loop().create_task(self._drain())
        return taken

    async def close(self) -> None:
        """Publish what is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        self._closing.set()
        with contextlib.suppress(Exception):
            await self._task


class _SharedProgress:
    """A run's sub-task counts in a shared store, for polls that reach another process.

    Written only once the run has gone on for ``delay`` seconds (a poll elsewhere sees zero counts
    until then), and then the latest counts, one write at a time: a run of a few milliseconds
    writes nothing, and a long one is not held up by a write per sub-task.
    """

    def __init__(self, store: Store, session_id: str, ttl_seconds: float, delay: float) -> None:
        self._store = store
        self._session_id = session_id
        self._ttl_seconds = ttl_seconds
        self._loop = asyncio.get_running_loop()
        self._start_writing = self._loop.time() + delay
        self._counts: tuple[int, int] | None = None
        self._writer: asyncio.Task[None] | None = None

    def update(self, total: int, done: int) -> None:
        self._counts = (total, done)
        if self._writer is None:
            self._writer = self._loop.create_task(self._write())

    async def _write(self) -> None:
        await asyncio.sleep(max(0.0, self._start_writing - self._loop.time()))
        written = None
        while self._counts != written:
            written = self._counts
            assert written is not None
            with contextlib.suppress(Exception):  # progress is best effort; the run goes on without it
                await self._store.write_progress(self._session_id, *written, self._ttl_seconds)
        self._writer = None

    async def close(self) -> None:
        """Stop writing (before the run's end deletes the counts)."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)


class _LoopThread:
    """An event loop on a daemon thread, or a loop already running (a server's) that the flow shares;
    coroutines from any thread run on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.owned = loop is None
        self.loop = asyncio.new_event_loop() if loop is None else loop
        self._thread: threading.Thread | None = None
        if self.owned:
            self._thread = threading.Thread(target=self.loop.run_forever, name="genie-graph-loop", daemon=True)
            self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._on_loop():
            coro.close()
            raise GenieGraphError(
                "a synchronous GenieFlow method was called from its own event loop (a hook or "
                "invoker?); use the async twin (prefixed 'a') there"
            )
        return asyncio.run_coroutine_threadsafe(_tracing.carry(coro), self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._on_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_tracing.carry(coro), self.loop))

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def stop(self) -> None:
        """Stop the loop and its thread; safe to call twice, and from a finalizer on any thread.

        A shared loop is its owner's to stop."""
        if not self.owned or self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed meanwhile
            return
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
            if not self.loop.is_running():
                self.loop.close()


def _polling(session_id: str, progress: AIProgressResponse) -> AIResponse:
    """The answer to a poll while the session's run is in flight."""
    return AIResponse(session_id=session_id, next_actions=[POLL], progress=progress)


def _still_polling(answer: AIResponse) -> bool:
    return answer.next_actions == [POLL] and answer.error is None


def _progress_in(item: FeedItem) -> AIProgressResponse:
    counts = item["data"]
    return _progress_of(int(counts["total_number_of_subtasks"]), int(counts["number_of_subtasks_executed"]))


def _progress_of(total: int, done: int) -> AIProgressResponse:
    return AIProgressResponse(total_number_of_subtasks=total, number_of_subtasks_executed=done)


def _session_ttl(value: float | None | object) -> float | None:
    if value is ...:
        configured = os.environ.get("GENIE_GRAPH_SESSION_TTL")
        try:
            value = float(configured) if configured else DEFAULT_SESSION_TTL_SECONDS
        except ValueError:
            raise ValueError(f"GENIE_GRAPH_SESSION_TTL must be a number of seconds, got {configured!r}") from None
    if value is None:
        return None
    if not isinstance(value, int | float) or value < 0:
        raise ValueError(f"session_ttl_seconds must be a number of seconds >= 0 (0 or None: never), got {value!r}")
    return float(value) or None


def _user_key(user_info: User | None) -> str | None:
    return user_info.email.lower() if user_info is not None else None


def _close_at_exit(reference: weakref.ref[GenieFlow]) -> None:
    """Close the store when a script ends without ``close()``.

    Runs still in flight are cut off, not finished: at exit the interpreter takes no new work on
    threads, which sync hooks and invokers need. A cut-off run resumes from its last checkpoint at
    the session's next poll (on a persistent store).
    """
    flow = reference()
    if flow is not None:
        flow.close(timeout=0)


@dataclass
class _Registered:
    flow: CompiledFlow
    graph: CompiledStateGraph[Any] | None = None
    version: str = ""
    """The flow version new sessions start on (see ``_versions``)."""
    previous: dict[str, _Registered] = field(default_factory=dict)
    """Older versions still served, each on its own graph, by version."""
    migrations: dict[str, Migration] = field(default_factory=dict)
    """Older versions whose sessions are migrated on load, by version."""

    def serving(self, version: str | None) -> _Registered:
        """The registration serving sessions of ``version``: an older one kept, else this one."""
        return self.previous.get(version, self) if version is not None and self.previous else self


class GenieFlow:
    """Runs sessions of registered flows, with the methods of Genie Flow's ``SessionManager``.

    Args:
        template_root: the directory template names are relative to.
        store: ``memory://``, ``sqlite:///path/to.db`` or ``redis://host:port/db``; default
            ``$GENIE_GRAPH_STORE``, else a SQLite file in ``data_dir``.
        data_dir: where the default SQLite store lives (``$GENIE_GRAPH_DATA_DIR`` or
            ``~/.local/share/genie-graph``).
        runner: where invoker states run: ``"inline"`` (this process, the default) or
            ``"celery"`` (Celery workers started with ``genie-graph worker``; needs a Redis
            store). Default ``$GENIE_GRAPH_RUNNER``, else ``"inline"``.
        broker_url: the Celery broker; default ``$GENIE_GRAPH_BROKER_URL``, else the store's URL.
        session_ttl_seconds: idle time after which a session expires and answers "unknown
            session"; renewed by every event. Default ``$GENIE_GRAPH_SESSION_TTL`` or one day;
            ``None`` or 0: never.
        keep_checkpoints: checkpoints kept per session, newest first: enough to resume and to
            step back through the last few events with ``get_state_history``.
        pool_size: invokers per ``invoker:`` directory unless its meta.yaml says otherwise.
        run_lease_seconds: with a shared (Redis) store, how long a run may go without a
            heartbeat before it counts as orphaned (its process died) and is resumed from its
            last checkpoint by the next poll.
        dispatch_timeout_seconds: with the Celery runner, how long queued work may wait for a
            worker before the next poll queues it again.
        compat: Genie Flow behaviours to keep (see ``GenieCompat``).
        prices: the price table of LLM calls (a ``PriceTable``, its mapping, or a YAML file);
            default ``$GENIE_GRAPH_PRICES``, else every call costs 0 (tokens are still counted).
        preferences: each user's preferences: a mapping ``{user email: {name: value}}`` or a
            function of the email (sync or async) answering them; templates see the session
            user's as ``preferences``.
        tracing: OpenTelemetry spans for events, runs, states, transitions, renders and invoker
            calls, sent to the global ``TracerProvider`` (or to the one given); default
            ``$GENIE_GRAPH_TRACING``, else off.
        trace_content: put user text (event inputs, rendered templates, error messages) on
            spans; default ``$GENIE_GRAPH_TRACE_CONTENT``, else off.

    Example:
        >>> flow = GenieFlow(template_root="prompts", store="memory://")  # doctest: +SKIP
        >>> flow.register_model("q_and_a", QandAModel)  # doctest: +SKIP
        >>> start = flow.create_new_session("q_and_a")  # doctest: +SKIP
        >>> flow.process_event("q_and_a", EventInput(session_id=start.session_id,
        ...                    event="user_input", event_input="Hi"))  # doctest: +SKIP
    """

    def __init__(
        self,
        template_root: str | Path | None = None,
        store: str | None = None,
        *,
        data_dir: str | Path | None = None,
        runner: str | None = None,
        broker_url: str | None = None,
        session_ttl_seconds: float | None | object = ...,
        keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS,
        pool_size: int = DEFAULT_POOL_SIZE,
        run_lease_seconds: float = 30.0,
        dispatch_timeout_seconds: float = 300.0,
        compat: GenieCompat | None = None,
        prices: PriceTable | Mapping[str, Any] | str | Path | None = None,
        tracing: bool | TracerProvider | None = None,
        trace_content: bool | None = None,
        preferences: PreferencesSource | None = None,
    ) -> None:
        if keep_checkpoints < 1:
            raise ValueError(
                f"keep_checkpoints must be at least 1 (the latest resumes a session), got {keep_checkpoints}"
            )
        if run_lease_seconds <= 0 or dispatch_timeout_seconds <= 0:
            raise ValueError("run_lease_seconds and dispatch_timeout_seconds must be positive")
        self.compat = compat or GenieCompat()
        self._store_url = (
            store or os.environ.get("GENIE_GRAPH_STORE") or default_store_url(data_dir or default_data_dir())
        )
        self.runner = runner or os.environ.get("GENIE_GRAPH_RUNNER") or "inline"
        self._broker_url = broker_url or os.environ.get("GENIE_GRAPH_BROKER_URL")
        self.session_ttl_seconds = _session_ttl(session_ttl_seconds)
        self.run_lease_seconds = run_lease_seconds
        self.dispatch_timeout_seconds = dispatch_timeout_seconds
        self._check_runner_store()
        self.keep_checkpoints = keep_checkpoints
        self._library = TemplateLibrary(template_root, strict_undefined=not self.compat.lenient_undefined)
        price_table = PriceTable.parse(prices or os.environ.get("GENIE_GRAPH_PRICES") or None)
        self._tracing_settings = _tracing.configure(tracing, trace_content)
        self._runner = CompositeRunner(
            self._library, InvokerRegistry(pool_size), prices=price_table, preferences=check_source(preferences)
        )
        self._registered: dict[str, _Registered] = {}
        self._loop: _LoopThread | None = None
        self._loop_guard = threading.Lock()
        self._store: Store | None = None
        self._opening = asyncio.Lock()
        self._runs: dict[str, _Run] = {}
        self._settled: dict[str, _Settled] = {}
        self._recalled: dict[str, tuple[type[GenieModel], tuple[Any, ...]]] = {}
        """Each session's long lists as its last run here left them, with their objects and the model class
        they were validated for (see ``_channels.expect``)."""
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._group = GroupProcessor(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def store_url(self) -> str:
        """The URL of the store sessions live in."""
        return self._store_url

    @store_url.setter
    def store_url(self, url: str) -> None:
        if self._store is not None:
            raise GenieGraphError(
                f"this GenieFlow already uses the store {self._store_url!r}; set store_url before the first "
                "session, or make another GenieFlow"
            )
        self._store_url = url
        self._check_runner_store()

    @property
    def runner(self) -> str:
        """Where invoker states run: ``"inline"`` (this process) or ``"celery"`` (workers)."""
        return self._runner_name

    @runner.setter
    def runner(self, name: str) -> None:
        if name not in RUNNERS:
            raise ValueError(f"unknown runner {name!r}; use one of {', '.join(RUNNERS)}")
        previous = getattr(self, "_runner_name", None)
        self._runner_name = name
        if hasattr(self, "_store_url"):
            try:
                self._check_runner_store()
            except ValueError:
                self._runner_name = previous or "inline"
                raise

    @property
    def broker_url(self) -> str:
        """The Celery broker of the ``celery`` runner: ``broker_url``, else the store's URL."""
        return self._broker_url or self._store_url

    def _check_runner_store(self) -> None:
        if self.runner == "celery" and not self._store_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"runner='celery' needs a Redis store shared with the workers, got store {self._store_url!r}; "
                "pass store='redis://host:port/db' (or set GENIE_GRAPH_STORE)"
            )

    # ---- registration -------------------------------------------------------------------
    def register_template_directory(self, prefix: str, directory: str | Path) -> None:
        """Map Genie Flow template names ``prefix/...`` to a directory anywhere on disk."""
        self._library.register_template_directory(prefix, directory)

    def register_model(
        self, model_key: str, model_class: type[GenieModel], *, previous: Sequence[type[GenieModel]] = ()
    ) -> None:
        """Validate a flow and serve it under ``model_key``.

        New sessions start on this flow's version (see :func:`~genie_graph.flow_version`). Sessions
        started on an older version are migrated when the machine declares ``migrations`` for it,
        or keep running on their own version when its model is given in ``previous``.

        Args:
            model_key: the key clients use.
            model_class: the flow's model; its machine is the current version.
            previous: models of older versions of this flow whose sessions keep being served on their
                own version until they end (their templates must still exist).

        Raises:
            FlowDefinitionError, TemplateError: the flow (or an older version) is declared wrongly, or
                two versions share a version string.
            ValueError: the key is taken by another model class.
        """
        known = self._registered.get(model_key)
        if known is not None and known.flow.model_class is not model_class:
            raise ValueError(
                f"model key {model_key!r} is already registered for {known.flow.model_class.__qualname__}; "
                "choose another key"
            )
        flow = compile_flow(model_class, self._runner, self.compat)
        older = [compile_flow(old, self._runner, self.compat) for old in previous]
        version, versions, migrations = register_versions(flow, older)
        self._registered[model_key] = _Registered(
            flow,
            version=version,
            previous={old_version: _Registered(old, version=old_version) for old_version, old in versions.items()},
            migrations=migrations,
        )
        if self._store is not None:
            self._store.allow_types(self._allowed_types())

    def _allowed_types(self) -> set[tuple[str, str]]:
        return reachable_types(
            served.flow.model_class
            for registered in self._registered.values()
            for served in (registered, *registered.previous.values())
        )

    def flow_versions(self, model_key: str) -> dict[str, str]:
        """The flow versions ``model_key`` can load, each with how: ``current``, ``served`` or ``migrated``.

        Raises:
            UnknownModelKey: nothing is registered under ``model_key``.
        """
        self.flow_of(model_key)
        registered = self._registered[model_key]
        versions = {registered.version: "current"}
        versions.update({version: "served" for version in registered.previous})
        versions.update({version: "migrated" for version in registered.migrations if version not in versions})
        return versions

    @property
    def model_keys(self) -> list[str]:
        """The registered model keys, in registration order."""
        return list(self._registered)

    def flow_of(self, model_key: str) -> CompiledFlow:
        """The compiled flow registered under ``model_key``."""
        try:
            return self._registered[model_key].flow
        except KeyError:
            raise UnknownModelKey(model_key, self.model_keys) from None

    # ---- plumbing -----------------------------------------------------------------------
    def _loop_thread(self) -> _LoopThread:
        with self._loop_guard:
            if self._loop is not None and self._loop.loop.is_closed():  # a server's loop ended without aclose()
                self._loop, self._store = None, None  # its connections went with it: start afresh
                self._forget_loop_state()
            if self._loop is None:
                self._loop = _LoopThread()
                release = weakref.finalize(self, self._loop.stop)  # a flow dropped without close() frees its thread
                release.atexit = False  # at exit, _close_at_exit lets the runs finish first, then stops it
            return self._loop

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop_thread().run(coro)
        except Exception as exc:
            raise self._unavailable(exc) or exc  # noqa: B904 - the cause is chained in _unavailable
        finally:
            self._flush()

    async def _async(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await self._loop_thread().arun(coro)
        except Exception as exc:
            raise self._unavailable(exc) or exc  # noqa: B904
        finally:
            self._flush()

    def _flush(self) -> None:
        """What the caller is about to be told is durable first (a store may defer its commits)."""
        if self._store is not None:
            self._store.flush()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """A ``StoreUnavailable`` if ``exc`` is, or wraps, a failure to reach Redis (redisvl wraps them)."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, (RedisConnectionError, RedisTimeoutError)):
                unavailable = StoreUnavailable(self._store_url, cause)
                unavailable.__cause__ = exc
                return unavailable
            cause = cause.__cause__
        return None

    async def _open_store(self) -> Store:
        if self._store is None:
            async with self._opening:  # one connection, however many callers arrive at once
                if self._store is None:
                    store = await open_store(self._store_url, self._allowed_types())
                    store.write_listeners.append(self._forget_settled)
                    self._store = store
        return self._store

    def _forget_settled(self, session_id: str) -> None:
        self._settled.pop(session_id, None)

    async def _graph(self, model_key: str, version: str | None = None) -> CompiledStateGraph[Any]:
        """The graph of ``model_key``; of an older version kept serving its sessions when ``version`` names one."""
        registered = self._registered.get(model_key)
        if registered is None:
            raise UnknownModelKey(model_key, self.model_keys)
        registered = registered.serving(version)
        if registered.graph is None:
            store = await self._open_store()
            if registered.graph is None:
                registered.graph = graph_of(registered.flow, store.saver)
        return registered.graph

    def _config(self, model_key: str, session_id: str, **configurable: Any) -> RunnableConfig:
        return {
            "configurable": {"thread_id": session_id, **configurable},
            "metadata": {_MODEL_KEY: model_key},
        }

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    async def _record(self, model_key: str, session_id: str) -> SessionRecord:
        """The session's record; raises UnknownSession if it does not exist, expired, or is another key's."""
        self.flow_of(model_key)
        return self._checked(model_key, session_id, await (await self._open_store()).session(session_id))

    @staticmethod
    def _checked(model_key: str, session_id: str, record: SessionRecord | None) -> SessionRecord:
        if record is None or record.model_key != model_key:
            raise UnknownSession(model_key, session_id)
        return record

    async def _snapshot(
        self, model_key: str, session_id: str, record: SessionRecord | None = None
    ) -> tuple[StateSnapshot, GenieModel]:
        graph = await self._graph(model_key)
        if record is None:
            await self._record(model_key, session_id)
        snapshot = await graph.aget_state(self._config(model_key, session_id))
        metadata = snapshot.metadata or {}
        if not snapshot.values or metadata.get(_MODEL_KEY, model_key) != model_key:
            raise UnknownSession(model_key, session_id)
        registered = self._registered[model_key]
        stored = snapshot.values.get("flow_version")
        if stored is not None and stored != registered.version:  # started on another version of the flow
            return await self._load_other_version(model_key, session_id, stored)
        return snapshot, validate(registered.flow.model_class, snapshot.values)

    async def _load_other_version(
        self, model_key: str, session_id: str, stored: str
    ) -> tuple[StateSnapshot, GenieModel]:
        registered = self._registered[model_key]
        context = VersionContext(
            model_key,
            session_id,
            registered.flow,
            registered.version,
            {version: served.flow for version, served in registered.previous.items()},
            registered.migrations,
        )
        return await load_other_version(
            context, stored, lambda version: self._graph(model_key, version), self._config(model_key, session_id)
        )

    def _flow_for(self, model_key: str, model: GenieModel) -> CompiledFlow:
        """The flow serving a session: an older version kept for it, or the current one."""
        return self._registered[model_key].serving(model.flow_version).flow

    def _forget_finished_run(self, session_id: str) -> _Run | None:
        """Remove and return the session's run if it has finished; a live run stays registered."""
        run = self._runs.get(session_id)
        if run is None or run.task is None or not run.task.done():
            return None
        return self._runs.pop(session_id)

    def _in_flight(self, session_id: str) -> _Run | None:
        run = self._runs.get(session_id)
        return run if run is not None and run.task is not None and not run.task.done() else None

    async def _settle(self, session_id: str) -> None:
        """After a run: keep only the latest checkpoints of the session."""
        await (await self._open_store()).prune(session_id, self.keep_checkpoints)

    def _durability(self, store: Store) -> Durability:
        """When a run here writes its checkpoints: the store's choice, but once at the end with Celery.

        A Celery-runner run holds at most one invoker state, at its start (a worker's) or none (the
        process that took the event stops before it), and the checkpoint it starts from is saved:
        writing each step too would keep only the few milliseconds between an invoker's answer and
        the run's end, for a turn's worth of extra writes.
        """
        return "exit" if self.runner == "celery" else store.durability

    def _run_options(self, flow: CompiledFlow) -> dict[str, Any]:
        """With the Celery runner, a run in this process stops before invoker states: workers run those."""
        if self.runner != "celery":
            return {}
        return {"interrupt_before": flow.invoker_states}

    async def _heartbeat(self, store: Store, session_id: str, run_id: str, step_token: str | None) -> None:
        """Renew a shared run's lease (and a worker's step lock) until cancelled."""
        while True:
            await asyncio.sleep(self.run_lease_seconds / 3)
            try:
                alive = await store.renew_run(session_id, run_id, self.run_lease_seconds)
                if step_token is not None:
                    alive = await store.renew_step(session_id, step_token, self.run_lease_seconds) and alive
            except Exception as exc:  # the store is briefly away: try again at the next beat
                logger.warning("could not renew the run lease of session %s: %s", session_id, exc)
                continue
            if not alive:
                logger.warning(
                    "run %s of session %s lost its lease (it ran longer than the lease without a beat)",
                    run_id,
                    session_id,
                )

    async def _start_run(
        self,
        model_key: str,
        session_id: str,
        command: Command[Any] | None,
        report: EventReport | None = None,
        mark: StoreMark | None = None,
        *,
        run_id: str | None = None,
        step_token: str | None = None,
        version: str | None = None,
        claim: RunClaim | None = None,
    ) -> _Run | None:
        """Run the session's graph in the background until it waits for the user again.

        With a ``report``, the run resumes a user state with an event: if the event is refused,
        or a hook raises before the transition completes, the store is rolled back to ``mark``
        so the session is exactly as it was.

        On a shared store the run first takes the session's run lease (None if another run
        holds it) and beats while it works. With the Celery runner, a run here stops before an
        invoker state and queues it for a worker; a worker's run (``step_token`` set) does one
        invoker state and queues the next. ``version``: the session's flow version (an older one
        kept serving it runs on its own graph). ``claim``: the run lease an event's look already took.
        """
        store = await self._open_store()
        flow = self._registered[model_key].serving(version).flow
        if claim is not None:
            run_id = claim.run_id
        run = _Run(run_id=run_id or str(ULID()), model_key=model_key, version=version)
        self._settled.pop(session_id, None)
        if not store.shared:
            run.others_wrote = store.others_wrote()
        claimed = claim is not None and claim.lease_seconds == self.run_lease_seconds
        if store.shared and not claimed and not await store.claim_run(session_id, run.run_id, self.run_lease_seconds):
            return None
        if claim is not None:
            claim.kept = True
        feed = _FeedWriter(store, session_id, _FEED_LINGER_SECONDS if store.shared else 0.0)
        shared = (
            _SharedProgress(store, session_id, self.dispatch_timeout_seconds, _PROGRESS_DELAY_SECONDS)
            if store.shared
            else None
        )

        def publish(total: int, done: int) -> None:
            feed.put("progress", {"total_number_of_subtasks": total, "number_of_subtasks_executed": done})
            if shared is not None:
                shared.update(total, done)

        run.progress.on_change = publish

        async def execute() -> None:
            progress_token = current_progress.set(run.progress)
            written_token = written_checkpoints.set(run.written)
            report_token = current_report.set(report)
            starts_token = current_run_starts.set(store)  # counts cut-off runs, to stop resuming a poison run
            heartbeat = (
                asyncio.create_task(self._heartbeat(store, session_id, run.run_id, step_token))
                if store.shared
                else None
            )
            config = self._config(model_key, session_id)
            undo = False
            try:
                graph = await self._graph(model_key, version)
                if step_token is not None:
                    stopped = await self._work_one_invoker_state(graph, flow, config, feed)
                else:
                    stopped = await self._drive(graph, flow, command, config, feed, **self._run_options(flow))
                run.values, run.stopped, run.model = stopped.values, stopped.snapshot, stopped.model
                run.interrupts, run.recalled = stopped.interrupts, stopped.recalled
                undo = report is not None and not report.accepted
            except Exception as exc:
                undo = report is not None and not report.accepted
                if not undo:  # kept for the next poll: the session must stay answerable
                    logger.exception("run of session %s failed", session_id)
                run.error = f"{type(exc).__name__}: {exc}"
            finally:
                current_progress.reset(progress_token)
                written_checkpoints.reset(written_token)
                current_report.reset(report_token)
                current_run_starts.reset(starts_token)
                if heartbeat is not None:
                    heartbeat.cancel()
                if shared is not None:  # no progress written after the run ends
                    await shared.close()
                try:
                    run.ended = await self._after_run(model_key, session_id, run, undo, mark, step_token, feed)
                    if run.ended:
                        if not undo:
                            self._keep_settled(model_key, session_id, run)
                            self._recall(session_id, flow.model_class, run.recalled)
                        if not run.done_published:
                            feed.put("done", {"error": None if undo else run.error})
                    await feed.close()
                finally:
                    if (run.error is None or undo) and self._runs.get(session_id) is run:
                        del self._runs[session_id]
                    if report is not None:
                        report.settle()

        self._runs[session_id] = run
        traced = _tracing.traced_run(self._tracing_settings, execute(), model_key, session_id, run)
        run.task = asyncio.get_running_loop().create_task(traced)
        return run

    def _recall(self, session_id: str, model_class: type[GenieModel], recalled: tuple[Any, ...]) -> None:
        """Keep a run's long lists with their objects: the session's next event here that reads equal lists
        for the same model class reuses the objects (checked equal: whoever wrote the store since)."""
        self._recalled.pop(session_id, None)
        if recalled:
            self._recalled[session_id] = (model_class, recalled)
            if len(self._recalled) > _KEPT_SESSIONS:  # the oldest go
                del self._recalled[next(iter(self._recalled))]

    def _keep_settled(self, model_key: str, session_id: str, run: _Run) -> None:
        """Keep the session as a run that ended well left it: its polls and its next event read nothing back.

        Only where this process is the session's only writer (a local store, the inline runner, no
        other process writing the store since the run started), on the current flow version, with no
        tool call waiting (its request may expire meanwhile). Any later checkpoint write in this
        process (a run, ``load_sessions``, the graph's own ``update_state``) drops it.
        """
        store, model = self._store, run.model
        if store is None or store.shared or self.runner == "celery" or run.error is not None or model is None:
            return
        registered = self._registered[model_key]
        if model.flow_version not in (None, registered.version) or pending_approval(model) is not None:
            return
        try:
            others_wrote = store.others_wrote()
            if others_wrote != run.others_wrote:
                return
            snapshot = StateSnapshot(
                values={},  # (the model holds them)
                next=(),  # (only read where there are no interrupts: a run ended here stopped at one, or at the end)
                config=self._config(model_key, session_id),
                metadata={},
                created_at=None,
                parent_config=None,
                tasks=(),
                interrupts=run.interrupts,
            )
            answer = self._answer(registered.flow, model)
            self._settled[session_id] = _Settled(snapshot, model, answer, others_wrote)
        except Exception:  # keeping is an optimisation: the next poll reads the store instead
            logger.exception("could not keep session %s as its run left it", session_id)
            return
        if len(self._settled) > _KEPT_SESSIONS:  # the oldest go
            del self._settled[next(iter(self._settled))]

    def _settled_now(self, model_key: str, session_id: str) -> _Settled | None:
        """The session as the last run here left it, if no checkpoint was written since, here or elsewhere."""
        settled = self._settled.get(session_id)
        if settled is None:
            return None
        store = self._store
        if store is None or settled.others_wrote != store.others_wrote():
            self._settled.clear()  # another process wrote the store: any of them may have changed
            return None
        if settled.model.flow_version not in (None, self._registered[model_key].version):
            return None  # another key's session, or its flow was registered again since
        return settled

    async def _after_run(
        self,
        model_key: str,
        session_id: str,
        run: _Run,
        undo: bool,
        mark: StoreMark | None,
        step_token: str | None = None,
        feed: _FeedWriter | None = None,
    ) -> bool:
        """Undo a refused event or prune the checkpoints; then queue what a worker does next, or end the run.

        Returns whether the run ended (False: a worker goes on with it). A worker's run (``step_token``)
        frees the session's step before queueing the next one, which another worker may take at once.
        A shared run that ends has its ``feed``'s last items and its ``done`` published with its end.
        """
        store = await self._open_store()
        ended = False
        try:
            if undo and mark is not None:
                await store.rollback(session_id, mark)
            elif (
                self.runner == "celery"
                and not undo
                and run.error is None
                and await self._queued(model_key, session_id, run, step_token, feed)
            ):
                return False  # the lease goes on with the queued work
            else:
                end = self._run_end(session_id, run) if store.shared else None
                done: FeedItem | None = {"event": "done", "data": {"error": run.error}} if end is not None else None
                await self._settle_with_feed(store, session_id, end, feed, done)
                ended = end is not None
                run.done_published = done is not None and feed is not None
        except Exception as exc:
            logger.exception("could not settle the run of session %s", session_id)
            run.error = run.error or f"{type(exc).__name__}: {exc}"
        if store.shared and not ended:
            with contextlib.suppress(Exception):  # an unreachable store lets the lease run out instead
                await store.end_run(session_id, run.run_id, None if undo else run.error)
        return True

    async def _settle_with_feed(
        self,
        store: Store,
        session_id: str,
        end: RunEnd | None,
        feed: _FeedWriter | None,
        done: FeedItem | None = None,
        renew: RunClaim | None = None,
    ) -> None:
        """:meth:`Store.settle`, publishing in the same trip what the run's ``feed`` has not published yet,
        then ``done`` (if given). If the settle fails, the feed publishes its items itself."""
        items = await feed.take() if feed is not None else []
        try:
            await store.settle(session_id, self.keep_checkpoints, end, [*items, done] if done else items, renew)
        except Exception:
            if feed is not None:
                for item in items:
                    feed.put(item["event"], item["data"])
            raise

    async def _queued(
        self, model_key: str, session_id: str, run: _Run, step_token: str | None, feed: _FeedWriter | None = None
    ) -> bool:
        """With the Celery runner: if the run stopped before an invoker state, prune and queue that state.

        The run's ``feed`` is published with the prune, before the state is queued: what the worker's run
        publishes follows it."""
        flow = self._registered[model_key].serving(run.version).flow
        snapshot = run.stopped or await (await self._graph(model_key, run.version)).aget_state(
            self._config(model_key, session_id)
        )
        if not self._interrupted_run(flow, snapshot):
            return False
        store = await self._open_store()
        renew = RunClaim(run.run_id, self.dispatch_timeout_seconds)  # the lease waits for the queued work
        await self._settle_with_feed(store, session_id, None, feed, renew=renew)
        if step_token is not None:  # else the queued task could find the step taken, and be dropped
            await store.drop_step(session_id, step_token)
        await self._dispatch(model_key, session_id, run.run_id, snapshot, claimed=True)
        return True

    def _run_end(self, session_id: str, run: _Run) -> RunEnd:
        """How a shared run ends: with the answer its polls give, kept in the store, where that is safe."""
        checkpoint_id = run.written.get(session_id)
        if run.error is not None or run.values is None or checkpoint_id is None:
            return RunEnd(run.run_id, run.error)
        registered = self._registered[run.model_key]
        try:
            model = run.model or validate(registered.flow.model_class, run.values)
        except Exception:  # the poll reads the checkpoint, and reports what is wrong with it
            return RunEnd(run.run_id)
        if model.flow_version not in (None, registered.version) or pending_approval(model) is not None:
            return RunEnd(run.run_id)  # (an approval's answer changes when it expires)
        body = self._answer(registered.flow, model).model_dump_json().encode()
        return RunEnd(run.run_id, None, KeptAnswer(run.model_key, registered.version, body), checkpoint_id)

    async def _drive(
        self,
        graph: CompiledStateGraph[Any],
        flow: CompiledFlow,
        command: Command[Any] | None,
        config: RunnableConfig,
        feed: _FeedWriter,
        **options: Any,
    ) -> _Stopped:
        """Run the graph as ``ainvoke`` would, telling the feed each state entered and each LLM token.

        Returns where the run stopped. With the Celery runner the stream also carries each
        checkpoint, so what comes next is known without reading the checkpoint back.
        """
        store = await self._open_store()
        modes: list[StreamMode] = ["updates", "values"]
        durability = self._durability(store)
        if self.runner == "celery":  # the last streamed checkpoint is the one saved (at "exit": saved at the end)
            modes.append("checkpoints")
        stream = graph.astream(command, config, durability=durability, stream_mode=modes, **options)
        values: dict[str, Any] | None = None
        model: GenieModel | None = None
        recalled: tuple[Any, ...] = ()
        checkpoint: dict[str, Any] | None = None
        interrupts: tuple[Interrupt, ...] = ()
        worked = False
        sink = loop_safe(lambda node, text: feed.put("token", {"state": node, "text": text}))
        sinking = current_token_sink.set(sink)
        try:
            with packing_channels(store.packs_channels), remembering():  # the run's node tasks inherit all three
                async for mode, chunk in stream:
                    if mode == "values":
                        values = chunk
                    elif mode == "checkpoints":
                        checkpoint = chunk
                    else:
                        interrupts += tuple(chunk.get(_INTERRUPT, ()))
                        worked = worked or any(node != _INTERRUPT for node in chunk)
                        for update in chunk.values():
                            node = flow.node_of_update(update, values) if isinstance(update, dict) else None
                            if node is not None:
                                feed.put("state", _state_item(flow, node))
                if values is not None:
                    values = {key: value for key, value in values.items() if key != _INTERRUPT}
                    if self.runner != "celery":  # answered here: the lists the run's nodes validated are reused
                        model = validate(flow.model_class, values)
                        recalled = recall(values)
        finally:
            current_token_sink.reset(sinking)
        snapshot = None
        if checkpoint is not None:
            snapshot = StateSnapshot(
                values=values or {},
                next=tuple(checkpoint["next"]),
                config=checkpoint["config"],
                metadata=checkpoint["metadata"],
                created_at=None,
                parent_config=checkpoint["parent_config"],
                tasks=(),
                interrupts=interrupts,
            )
        return _Stopped(values, snapshot, worked, model, interrupts, recalled)

    async def _work_one_invoker_state(
        self, graph: CompiledStateGraph[Any], flow: CompiledFlow, config: RunnableConfig, feed: _FeedWriter
    ) -> _Stopped:
        """A worker's share of a run: the pending invoker state, then on to the next interrupt or invoker state.

        A run that stopped before the pending invoker state resumes past it (LangGraph does not stop
        twice before the same step): one pass works it and the user states after it, and stops
        before the next invoker state. Work left otherwise (a migration written since, a run cut
        off half way) stops at once that way; it is then worked a step at a time.
        """
        stopped = await self._drive(graph, flow, None, config, feed, interrupt_before=flow.invoker_states)
        if stopped.worked:
            return stopped
        while True:
            stopped = await self._drive(graph, flow, None, config, feed, interrupt_after=flow.invoker_states)
            snapshot = stopped.snapshot or await graph.aget_state(config)
            if not snapshot.next or snapshot.interrupts or self._interrupted_run(flow, snapshot):
                return stopped
            # a user state is next: run it up to its interrupt, so the session waits for an event

    def _queue_of(self, flow: CompiledFlow, state_id: str) -> str:
        template = flow.node_template(state_id)
        return template.queue_name if isinstance(template, NamedQueueTaskTemplate) else DEFAULT_QUEUE

    async def _dispatch(
        self, model_key: str, session_id: str, run_id: str, snapshot: StateSnapshot, *, claimed: bool = False
    ) -> None:
        """Queue the pending invoker state for a Celery worker; the run lease then waits for it (``claimed``:
        the caller has already set it to wait)."""
        from ._celery import send_advance

        store = await self._open_store()
        flow = self._registered[model_key].serving(snapshot.values.get("flow_version")).flow
        state_id = snapshot.next[0]
        checkpoint_id = snapshot.config["configurable"]["checkpoint_id"]
        if not claimed:
            await store.claim_run(session_id, run_id, self.dispatch_timeout_seconds)
        try:
            await asyncio.to_thread(
                send_advance, self, self._queue_of(flow, state_id), model_key, session_id, run_id, checkpoint_id
            )
        except Exception as exc:
            await store.end_run(session_id, run_id)  # the next poll queues it again
            raise StoreUnavailable(self.broker_url, exc) from exc

    @_tracing.traced_advance
    async def _advance(self, model_key: str, session_id: str, run_id: str, checkpoint_id: str) -> str:
        """A Celery worker's task: work the session's pending invoker state queued as ``run_id``.

        Returns what happened: ``"done"``, ``"busy"`` (another worker works the session) or
        ``"stale"`` (the work was done already, or the session is gone): a redelivered or
        duplicated task changes nothing.
        """
        store = await self._open_store()
        step_token = str(ULID())
        taken = await store.take_work(session_id, step_token, run_id, self.run_lease_seconds)
        if taken is None:
            return "busy"
        try:
            # the work's check and its run: one checkpoint read, its lists validated once
            with store.reusing_reads(session_id), remembering():
                return await self._advance_stepped(model_key, session_id, run_id, checkpoint_id, step_token, taken)
        finally:
            await store.drop_step(session_id, step_token)

    async def _advance_stepped(
        self, model_key: str, session_id: str, run_id: str, checkpoint_id: str, step_token: str, taken: WorkTaken
    ) -> str:
        """:meth:`_advance` while holding the session's step, and the run lease if ``taken.claimed``."""
        store = await self._open_store()
        owned = taken.owned
        if not taken.claimed:
            return "busy"
        flow = self._registered[model_key].flow
        try:
            record = self._checked(model_key, session_id, taken.record)
            snapshot, model = await self._snapshot(model_key, session_id, record)
            flow = self._flow_for(model_key, model)
        except (UnknownSession, FlowVersionUnsupported):
            snapshot = None
        if snapshot is None or not self._interrupted_run(flow, snapshot):
            await store.end_run(session_id, run_id)
            return "stale"
        if owned and snapshot.config["configurable"]["checkpoint_id"] != checkpoint_id:
            return "stale"  # queued again by the run that owns the lease: that task does the work
        # work queued by a process of an older version: the session's migration is written first
        config = self._config(model_key, session_id)
        snapshot = await write_migration(await self._graph(model_key), config, snapshot)
        claim = RunClaim(run_id, self.run_lease_seconds)  # (taken with the step)
        run = await self._start_run(
            model_key, session_id, None, step_token=step_token, version=model.flow_version, claim=claim
        )
        if run is None or run.task is None:
            return "busy"
        await asyncio.shield(run.task)
        return "done"

    def _answer(self, flow: CompiledFlow, model: GenieModel) -> AIResponse:
        actions = flow.session_actions(model)
        told = flow.flows_told(model)
        if model.task_error:
            return AIResponse(session_id=model.session_id, error=model.task_error, next_actions=actions, **told)
        # While a tool call waits for approval, the flow has said nothing yet: the request is the answer.
        response = None if "approvals" in told else flow.response_of(model)
        return AIResponse(session_id=model.session_id, response=response, next_actions=actions, **told)

    # ---- sessions -----------------------------------------------------------------------
    @_tracing.traced_create
    async def _create(
        self,
        model_key: str,
        user_info: User | Mapping[str, Any] | None,
        seed_data: str | None,
        record_intro: bool,
        owner: str | None = None,
    ) -> GenieModel:
        flow = self.flow_of(model_key)
        graph = await self._graph(model_key)
        session_id = str(ULID().to_uuid())
        version = self._registered[model_key].version
        model = flow.model_class(session_id=session_id, seed_data=seed_data, flow_version=version)
        user = (
            None if user_info is None else user_info if isinstance(user_info, User) else User.model_validate(user_info)
        )
        if user is not None:
            model.secondary_storage["user_info"] = user
        config = self._config(model_key, session_id, **{RECORD_INTRO: record_intro})
        store = await self._open_store()
        await store.add_session(SessionRecord(session_id, model_key, _user_key(user), self.session_ttl_seconds, owner))
        with remembering():
            try:
                with packing_channels(store.packs_channels):
                    # written once, where the intro stops: nobody has the session's id before that, so a
                    # process that dies half way leaves nothing anyone would resume
                    result = await graph.ainvoke(
                        model.model_dump(mode="json"), config, durability="exit", **self._run_options(flow)
                    )
            except BaseException:
                await store.delete(session_id)  # no half-made session is left behind
                raise
            await self._settle(session_id)
            if isinstance(result, dict) and result.get(_INTERRUPT):  # it waits for an event: the run's values say all
                return validate(flow.model_class, {k: v for k, v in result.items() if k != _INTERRUPT})
        snapshot, model = await self._snapshot(model_key, session_id)
        if self._interrupted_run(flow, snapshot):  # the initial state is an invoker state: hand it on
            await self._resume_cut_off_run(model_key, session_id, flow, snapshot)
        return model

    async def _create_new_session(
        self, model_key: str, user_info: User | Mapping[str, Any] | None, seed_data: str | None, owner: str | None
    ) -> AIResponse:
        flow = self.flow_of(model_key)
        model = await self._create(model_key, user_info, seed_data, record_intro=True, owner=owner)
        return self._answer(flow, model)

    def create_new_session(
        self,
        model_key: str,
        user_info: User | Mapping[str, Any] | None = None,
        seed_data: str | None = None,
        *,
        owner: str | None = None,
    ) -> AIResponse:
        """Start a session: its response is the rendered initial template.

        Args:
            model_key: a registered model key.
            user_info: who the session is for; kept as ``secondary_storage["user_info"]``.
            seed_data: passed to the model's ``seed_model()``.
            owner: the authenticated caller to bind the session to (see :meth:`session_owner`).

        Returns:
            ``AIResponse`` with the new session id, the intro text and the initial state's events.

        Raises:
            UnknownModelKey: nothing is registered under ``model_key``.
        """
        return self._sync(self._create_new_session(model_key, user_info, seed_data, owner))

    async def acreate_new_session(
        self,
        model_key: str,
        user_info: User | Mapping[str, Any] | None = None,
        seed_data: str | None = None,
        *,
        owner: str | None = None,
    ) -> AIResponse:
        """Async twin of :meth:`create_new_session`."""
        return await self._async(self._create_new_session(model_key, user_info, seed_data, owner))

    async def _start_ephemeral_session(
        self,
        model_key: str,
        event: str,
        event_input: str,
        user_info: User | Mapping[str, Any] | None,
        owner: str | None,
        strict: bool = False,
    ) -> AIResponse:
        flow = self.flow_of(model_key)
        if event == POLL:
            refused = EventNotAllowed(
                "", flow.initial, flow.names[flow.initial], flow.next_actions(flow.initial), event
            )
            if strict:
                raise refused
            return AIResponse(session_id="", error=refused.to_json(), next_actions=[])
        model = await self._create(model_key, user_info, None, record_intro=False, owner=owner)
        first = EventInput(session_id=model.session_id, event=event, event_input=event_input)
        try:
            return await self._send(model_key, first)
        except (EventNotAllowed, EventFailed) as refused:
            await (await self._open_store()).delete(model.session_id)  # no session is left for a refused start
            if strict:
                raise
            error = refused.to_json() if isinstance(refused, EventNotAllowed) else str(refused)
            return AIResponse(session_id=model.session_id, error=error, next_actions=[])

    def start_ephemeral_session(
        self,
        model_key: str,
        event: str,
        event_input: str,
        user_info: User | Mapping[str, Any] | None = None,
        *,
        owner: str | None = None,
        strict: bool = False,
    ) -> AIResponse:
        """Start a session without an intro and send it ``event`` at once.

        A refused first event leaves no session behind; it answers in ``error``, or with
        ``strict=True`` raises ``EventNotAllowed`` or ``EventFailed``. ``owner``: see :meth:`session_owner`.
        """
        return self._sync(self._start_ephemeral_session(model_key, event, event_input, user_info, owner, strict))

    async def astart_ephemeral_session(
        self,
        model_key: str,
        event: str,
        event_input: str,
        user_info: User | Mapping[str, Any] | None = None,
        *,
        owner: str | None = None,
        strict: bool = False,
    ) -> AIResponse:
        """Async twin of :meth:`start_ephemeral_session`."""
        return await self._async(self._start_ephemeral_session(model_key, event, event_input, user_info, owner, strict))

    # ---- events -------------------------------------------------------------------------
    async def _progress_elsewhere(self, session_id: str) -> AIProgressResponse | None:
        """Counts of the session's run in flight: in this process, or (shared store) in any."""
        run = self._in_flight(session_id)
        if run is not None:
            return _progress_of(run.progress.total, run.progress.done)
        store = await self._open_store()
        if store.shared:
            flight = await store.run_in_flight(session_id)
            if flight is not None:
                return _progress_of(flight.total, flight.done)
        return None

    @_tracing.traced_poll
    async def _poll(self, model_key: str, session_id: str) -> AIResponse:
        self.flow_of(model_key)
        store = await self._open_store()
        run = self._in_flight(session_id)
        if run is not None:  # a run is working here
            if run.model_key != model_key:  # another key's session, or none: the record says which
                await self._record(model_key, session_id)
            return _polling(session_id, _progress_of(run.progress.total, run.progress.done))
        # the record and (shared store) a run in another process, an unreported failure, the kept answer
        look = await store.look(session_id)
        if look.flight is not None:
            if look.flight.model_key != model_key:
                self._checked(model_key, session_id, look.record)
            return _polling(session_id, _progress_of(look.flight.total, look.flight.done))
        record = self._checked(model_key, session_id, look.record)
        settled = self._settled_now(model_key, session_id)
        if settled is not None:
            return settled.answer.model_copy()
        kept = look.answer
        if kept is not None and look.error is None:
            if (kept.model_key, kept.version) == (model_key, self._registered[model_key].version):
                self._forget_finished_run(session_id)  # a failed run here was followed by one that ended well
                return AIResponse.model_validate_json(kept.body)
        snapshot, model = await self._snapshot(model_key, session_id, record)
        flow = self._flow_for(model_key, model)
        if self._in_flight(session_id) is not None:  # a run started while the snapshot was read
            return await self._poll(model_key, session_id)
        failed = self._forget_finished_run(session_id)
        error = failed.error if failed is not None else None
        if look.error is not None:  # told once: another poll may have taken it meanwhile
            error = await store.pop_error(session_id) or error
        if error is not None:
            return AIResponse(session_id=session_id, error=error, next_actions=flow.session_actions(model))
        if await self._resume_cut_off_run(model_key, session_id, flow, snapshot):
            return AIResponse(session_id=session_id, next_actions=[POLL])
        waiting = pending_approval(model)
        if waiting is not None and waiting.expired():  # not decided in time: it counts as denied
            async with self._lock(session_id):
                if self._in_flight(session_id) is None:
                    await self._expire(model_key, session_id, model, waiting)
            return AIResponse(session_id=session_id, next_actions=[POLL])
        return self._answer(flow, model)

    async def _poll_waiting(
        self, model_key: str, session_id: str, wait: float, first: AIResponse | None = None, settled: bool = False
    ) -> AIResponse:
        """A poll that, while a run is in flight, waits up to ``wait`` seconds for news: the run settling,
        or its sub-task counts changing. The answer is a plain poll's, given as soon as it changes.

        ``first``: the answer already given (an event's ``["poll"]``), to wait from without a poll.
        ``settled``: wait for the run to settle only, not for its progress.
        """
        first = first or await self._poll(model_key, session_id)
        if wait <= 0 or not _still_polling(first):
            return first
        deadline = time.monotonic() + wait
        run = self._in_flight(session_id)
        if settled and run is not None and run.task is not None:  # the run is here: no feed needed to hear it end
            await asyncio.wait({run.task}, timeout=wait)
            answer = await self._poll(model_key, session_id)
            if not _still_polling(answer) or time.monotonic() >= deadline:
                return answer  # (else its work went on elsewhere, a Celery worker's: wait for that below)
        store = await self._open_store()
        async with store.subscribe(session_id) as queue:
            news: FeedItem | None = None
            while True:
                answer = await self._poll(model_key, session_id)  # looked at after subscribing: no news lost
                remaining = deadline - time.monotonic()
                if not _still_polling(answer) or remaining <= 0:
                    return answer
                if answer.progress != first.progress and not settled:
                    return answer
                if news is not None and news["event"] == "progress" and not settled:
                    counts = _progress_in(news)
                    if counts != first.progress:  # told by a run elsewhere before its counts are stored
                        return _polling(session_id, counts)
                done = news is not None and news["event"] == "done"
                check = _FOLLOW_AFTER_DONE_SECONDS if done else _FOLLOW_CHECK_SECONDS
                news = await self._news(session_id, queue, min(remaining, check))

    async def _news(self, session_id: str, queue: asyncio.Queue[FeedItem], timeout: float) -> FeedItem | None:
        """The run's next ``progress`` or ``done`` item (a run in this process: or its end); None on timeout."""

        async def next_news() -> FeedItem:
            while (item := await queue.get())["event"] not in ("progress", "done"):
                pass
            return item

        getter = asyncio.ensure_future(next_news())
        run = self._in_flight(session_id)
        waiting: set[asyncio.Future[Any]] = {getter} if run is None or run.task is None else {getter, run.task}
        try:
            finished, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
        if getter in finished and not getter.cancelled():
            return getter.result()
        return {"event": "done", "data": {}} if finished else None  # the run here ended

    async def _resume_cut_off_run(
        self,
        model_key: str,
        session_id: str,
        flow: CompiledFlow,
        snapshot: StateSnapshot,
        claim: RunClaim | None = None,
    ) -> bool:
        """Resume invoker work nobody is doing (its process ended half way, or it is yet to be queued).

        True if the session has such work, now resumed here, queued, or taken by another process.
        ``claim``: the run lease an event's look took, which the resumed work runs under.
        """
        if self._in_flight(session_id) is not None:
            return True
        if not self._interrupted_run(flow, snapshot):
            return False
        if self.runner == "celery":
            store = await self._open_store()
            run_id = claim.run_id if claim is not None else str(ULID())
            if await store.claim_run(session_id, run_id, self.dispatch_timeout_seconds):  # (ours: renewed)
                if claim is not None:
                    claim.kept = True
                try:  # a session loaded from an older version: its migration is written before the work is queued
                    snapshot = await write_migration(
                        await self._graph(model_key), self._config(model_key, session_id), snapshot
                    )
                except BaseException:
                    await store.end_run(session_id, run_id)
                    raise
                await self._dispatch(model_key, session_id, run_id, snapshot)
            return True
        # a session loaded from an older version: the run's first step writes its migration
        migration = migration_command(snapshot)
        await self._start_run(
            model_key, session_id, migration, version=snapshot.values.get("flow_version"), claim=claim
        )
        return True

    async def _sweep_orphaned_runs(self) -> list[str]:
        """Resume the runs whose process died, in sessions nobody polls: a worker does this now and then.

        Returns the ids of the sessions whose work was queued again (or resumed here).
        """
        store = await self._open_store()
        resumed: list[str] = []
        for session_id in await store.orphaned_runs():
            record = await store.session(session_id)
            if record is not None and record.model_key not in self._registered:
                continue  # another flow's session in the same Redis: its own workers sweep it
            try:
                snapshot = None if record is None else (await self._snapshot(record.model_key, session_id, record))[0]
            except (UnknownSession, FlowVersionUnsupported):
                snapshot = None
            if snapshot is not None and record is not None:
                flow = self._registered[record.model_key].serving(snapshot.values.get("flow_version")).flow
                if await self._resume_cut_off_run(record.model_key, session_id, flow, snapshot):
                    resumed.append(session_id)
                    continue
            await store.forget_run(session_id)  # gone, or nothing left to do
        return resumed

    def sweep_orphaned_runs(self) -> list[str]:
        """Queue again the invoker work of runs whose process died (shared stores only).

        Workers call this every few seconds (``genie-graph worker`` does); a poll does the same
        for its own session. Returns the ids of the sessions whose work was resumed.
        """
        return self._sync(self._sweep_orphaned_runs())

    @staticmethod
    def _interrupted_run(flow: CompiledFlow, snapshot: StateSnapshot) -> bool:
        """Invoker work is pending: the graph stopped before an invoker state, without an interrupt."""
        return (
            bool(snapshot.next)
            and not snapshot.interrupts
            and all(flow.node_kind(node) is StateKind.INVOKER for node in snapshot.next)
        )

    async def _send_waiting(self, model_key: str, event: EventInput, wait: float) -> AIResponse:
        """Process a non-poll event; if it starts a run, wait up to ``wait`` seconds for the run's answer."""
        answer = await self._send(model_key, event)
        if wait <= 0 or not _still_polling(answer):
            return answer
        return await self._poll_waiting(model_key, event.session_id, wait, first=answer, settled=True)

    @_tracing.traced_event
    async def _send(
        self, model_key: str, event: EventInput, *, sender: str | None = None, message: int | None = None
    ) -> AIResponse:
        """Process a non-poll event; a refusal raises and leaves the session as it was.

        ``sender`` and ``message`` name a group message's sender and number: the dialogue and the
        history record them.

        Raises:
            EventNotAllowed: the state does not take the event, or its conditions fail.
            SessionBusy: a background run is in flight.
            EventFailed: a hook raised before the transition completed.
        """
        flow = self.flow_of(model_key)
        session_id = event.session_id
        store = await self._open_store()
        async with self._lock(session_id):
            claim = RunClaim(str(ULID()), self.run_lease_seconds)  # the lease of the run the event may start
            shared_lock: contextlib.AbstractAsyncContextManager[SessionLook | None] = (
                store.event_lock(session_id, event.event, _EVENT_LOCK_WAIT_SECONDS, look=True, claim=claim)
                if store.shared
                else contextlib.nullcontext()
            )
            async with shared_lock as look:
                # the event's decision and its run: one checkpoint read, its lists validated once
                with store.reusing_reads(session_id), remembering():
                    recalled = self._recalled.get(session_id)
                    if recalled is not None and recalled[0] is flow.model_class:  # read back as the last run left them
                        expect(recalled[1])
                    return await self._send_locked(flow, model_key, event, store, sender, message, look)

    async def _send_locked(
        self,
        flow: CompiledFlow,
        model_key: str,
        event: EventInput,
        store: Store,
        sender: str | None = None,
        message: int | None = None,
        look: SessionLook | None = None,
    ) -> AIResponse:
        session_id = event.session_id
        if self._in_flight(session_id) is not None:
            await self._record(model_key, session_id)
            raise SessionBusy(session_id, event.event)
        look = look or await store.look(session_id, mark=True)  # (the mark undoes a refusal)
        record = self._checked(model_key, session_id, look.record)
        if look.flight is not None:
            raise SessionBusy(session_id, event.event)
        settled = self._settled_now(model_key, session_id)
        if settled is not None:
            snapshot, model = settled.snapshot, settled.model
        else:
            snapshot, model = await self._snapshot(model_key, session_id, record)
        flow = self._flow_for(model_key, model)
        if self._in_flight(session_id) is not None:  # started while the snapshot was read
            raise SessionBusy(session_id, event.event)
        self._forget_finished_run(session_id)
        if look.error is not None:
            await store.pop_error(session_id)  # a failure nobody polled is superseded by this event
        state_id = flow.node_of(model)
        if await self._resume_cut_off_run(model_key, session_id, flow, snapshot, look.claim):
            raise SessionBusy(session_id, event.event)
        if not snapshot.interrupts:
            aborted = model.flows.status is FlowStatus.ABORTED
            allowed = [] if aborted or state_id in flow.finals else flow.session_actions(model)
            reason = (
                f"the session's flow {flow.label!r} was aborted in state {state_id!r}; it takes no more events. "
                "Start a new session"
                if aborted
                else f"session is in state {state_id!r}, which waits for no event"
            )
            raise EventNotAllowed(session_id, state_id, flow.node_name(state_id), allowed, event.event, reason)
        if event.event not in flow.session_actions(model):
            raise flow.session_refusal(model, event.event)
        await store.touch(record)
        mark = look.mark or await store.mark(session_id)
        report = EventReport()
        resume: dict[str, Any] = {"event": event.event, "event_input": event.event_input}
        if sender is not None:
            resume.update(sender=sender, message=message)
        # A session loaded from an older version writes its migration in the same run: undone with a refusal.
        command: Command[Any] = migration_command(snapshot, resume) or Command(resume=resume)
        run = await self._start_run(
            model_key, session_id, command, report, mark, version=model.flow_version, claim=look.claim
        )
        if run is None:  # another process started a run meanwhile
            raise SessionBusy(session_id, event.event)
        await report.decided.wait()
        if report.accepted and flow.node_kind(report.target) is StateKind.INVOKER:  # type: ignore[arg-type]
            await report.durable.wait()  # answer "poll" only once the transition survives a restart
            return AIResponse(session_id=session_id, next_actions=[POLL])
        assert run.task is not None
        await asyncio.shield(run.task)
        if report.refusal is not None:
            raise report.refusal
        if not report.accepted:
            raise EventFailed(
                session_id,
                event.event,
                run.error or "the run ended before the transition",
                flow.session_actions(model),
            )
        if run.error is not None:
            if self._runs.get(session_id) is run:
                del self._runs[session_id]
            if store.shared:
                await store.pop_error(session_id)
            return AIResponse(session_id=session_id, error=run.error, next_actions=[])
        if run.model is not None:
            return self._answer(flow, run.model)
        if run.values is not None:
            return self._answer(flow, validate(flow.model_class, run.values))
        return self._answer(flow, (await self._snapshot(model_key, session_id))[1])

    # ---- approvals of tool calls ----------------------------------------------------------
    async def _decide(
        self,
        model_key: str,
        session_id: str,
        approval_id: str,
        approve: bool,
        by: str | None,
        roles: Sequence[str],
        reason: str | None,
    ) -> AIResponse:
        store = await self._open_store()
        async with self._lock(session_id):
            shared_lock = (
                store.event_lock(session_id, "approval", _EVENT_LOCK_WAIT_SECONDS)
                if store.shared
                else contextlib.nullcontext()
            )
            async with shared_lock:
                if await self._progress_elsewhere(session_id) is not None:
                    await self._record(model_key, session_id)
                    raise SessionBusy(session_id, "approval")
                record = await self._record(model_key, session_id)
                snapshot, model = await self._snapshot(model_key, session_id, record)
                request = next((r for r in model.approvals if r.id == approval_id), None)
                if request is None:
                    known = ", ".join(r.id for r in model.approvals if r.status is ApprovalStatus.PENDING) or "none"
                    raise ApprovalError(
                        "unknown_approval", session_id, approval_id, f"no such request (pending: {known})"
                    )
                if request.status is not ApprovalStatus.PENDING:
                    raise ApprovalError(
                        "approval_closed", session_id, approval_id, f"it was {request.status} by {request.decided_by}"
                    )
                if request.expired():
                    await self._expire(model_key, session_id, model, request)
                    raise ApprovalError(
                        "approval_closed", session_id, approval_id, "it expired, which counts as denied"
                    )
                members = [m for m in (record.owner, record.user) if m]
                members += await store.members(session_id) | {m.sender for m in await self._group.messages(session_id)}
                if not ApprovalPolicy(request.approvers).allows(request, by, roles, members):
                    raise ApprovalError(
                        "approval_forbidden",
                        session_id,
                        approval_id,
                        f"{by or 'an anonymous caller'} may not decide it; approvers: {request.approvers}"
                        + (f" (it was asked by {request.asked_by})" if request.approvers == "sender" else ""),
                    )
                decision = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
                return await self._resume_decision(model_key, session_id, model, request, decision, by, reason)

    async def _resume_decision(
        self,
        model_key: str,
        session_id: str,
        model: GenieModel,
        request: ApprovalRequest,
        decision: ApprovalStatus,
        by: str | None,
        reason: str | None,
    ) -> AIResponse:
        """Resume the run waiting for ``request`` with ``decision``: the tool loop goes on."""
        store = await self._open_store()
        mark = await store.mark(session_id)
        report = EventReport()
        resume = {"approval": request.id, "decision": str(decision), "by": by, "reason": reason}
        run = await self._start_run(
            model_key, session_id, Command(resume=resume), report, mark, version=model.flow_version
        )
        if run is None:
            raise SessionBusy(session_id, "approval")
        await report.decided.wait()
        if report.refusal is not None:
            raise report.refusal
        await report.durable.wait()
        return AIResponse(session_id=session_id, next_actions=[POLL])

    async def _expire(self, model_key: str, session_id: str, model: GenieModel, request: ApprovalRequest) -> None:
        """A request past its time counts as denied: the run goes on with that."""
        await self._resume_decision(model_key, session_id, model, request, ApprovalStatus.EXPIRED, "expiry", None)

    def decide_approval(
        self,
        model_key: str,
        session_id: str,
        approval_id: str,
        approve: bool,
        *,
        by: str | None = None,
        roles: Sequence[str] = (),
        reason: str | None = None,
    ) -> AIResponse:
        """Approve or deny a tool call the session's run waits for; the run goes on in the background.

        Args:
            model_key: the session's model key.
            session_id: the session.
            approval_id: the request's id (``AIResponse.approvals``, ``approvals(...)``).
            approve: True to run the tool, False to tell the model it was denied.
            by: who decides (an API caller's name, or a user's email); checked against the
                request's ``approvers``: ``sender`` (who the run was for, or the session's owner),
                ``member``, ``anyone`` or ``role:<name>``.
            roles: the decider's roles, for ``role:<name>`` approvers.
            reason: why, kept in the audit trail and told to the model on a denial.

        Returns:
            ``next_actions == ["poll"]``: poll for the run's answer.

        Raises:
            ApprovalError: ``unknown_approval``, ``approval_closed`` (decided, or expired: which
                counts as denied) or ``approval_forbidden``.
            SessionBusy: a run is in flight.
        """
        return self._sync(self._decide(model_key, session_id, approval_id, approve, by, roles, reason))

    async def adecide_approval(
        self,
        model_key: str,
        session_id: str,
        approval_id: str,
        approve: bool,
        *,
        by: str | None = None,
        roles: Sequence[str] = (),
        reason: str | None = None,
    ) -> AIResponse:
        """Async twin of :meth:`decide_approval`."""
        return await self._async(self._decide(model_key, session_id, approval_id, approve, by, roles, reason))

    async def _approvals(self, model_key: str, session_id: str) -> list[ApprovalRequest]:
        model = await self._get_model(model_key, session_id)
        waiting = pending_approval(model)
        if waiting is not None and waiting.expired():  # closed as it is listed, as a poll would
            async with self._lock(session_id):
                if self._in_flight(session_id) is None:
                    await self._expire(model_key, session_id, model, waiting)
            await self._wait(session_id)
            model = await self._get_model(model_key, session_id)
        return list(model.approvals)

    def approvals(self, model_key: str, session_id: str) -> list[ApprovalRequest]:
        """The session's approval requests, pending and decided (the latest decided ones)."""
        return self._sync(self._approvals(model_key, session_id))

    async def aapprovals(self, model_key: str, session_id: str) -> list[ApprovalRequest]:
        """Async twin of :meth:`approvals`."""
        return await self._async(self._approvals(model_key, session_id))

    async def _process_event(self, model_key: str, event: EventInput, wait: float = 0.0) -> AIResponse:
        if event.event == POLL:
            return await self._poll_waiting(model_key, event.session_id, wait)
        try:
            return await self._send_waiting(model_key, event, wait)
        except EventNotAllowed as refused:
            return AIResponse(session_id=event.session_id, error=refused.to_json(), next_actions=refused.allowed)
        except SessionBusy as busy:
            return AIResponse(session_id=event.session_id, error=str(busy), next_actions=[POLL])
        except EventFailed as failed:
            return AIResponse(session_id=event.session_id, error=str(failed), next_actions=failed.allowed)

    def process_event(self, model_key: str, event: EventInput, *, wait: float = 0.0) -> AIResponse:
        """Send an event (or ``poll``) to a session.

        An event into a user state answers with the rendered response and the next events.
        An event into an invoker state answers ``next_actions == ["poll"]`` at once while the
        invoker runs; ``poll`` answers ``["poll"]`` with progress until the run settles, then the
        latest response (or the invoker's error in ``error``) and the next events.

        ``wait``: how long (seconds) the call may wait for the run in flight. A ``poll`` answers as
        soon as the run settles or its progress changes, so a client polling in a loop makes one
        request per change instead of one per interval. An event into an invoker state answers
        with the run's answer if the run settles in time (a fast invoker's turn is one call), else
        ``["poll"]`` when ``wait`` is up.

        A refused event (not allowed in this state, conditions failing, a run in flight)
        answers with ``error`` set and leaves the session unchanged.

        Raises:
            UnknownModelKey, UnknownSession: the key or session does not exist.
        """
        return self._sync(self._process_event(model_key, event, wait))

    async def aprocess_event(self, model_key: str, event: EventInput, *, wait: float = 0.0) -> AIResponse:
        """Async twin of :meth:`process_event`."""
        return await self._async(self._process_event(model_key, event, wait))

    def send_event(self, model_key: str, event: EventInput, *, wait: float = 0.0) -> AIResponse:
        """Like :meth:`process_event`, but a refused event raises instead of answering an error.

        ``wait``: as in :meth:`process_event`.

        Raises:
            EventNotAllowed: the current state does not take the event, or its conditions fail.
            SessionBusy: a background run is in flight.
            EventFailed: a hook or template failed; the session is unchanged.
            UnknownModelKey, UnknownSession: the key or session does not exist.
        """
        if event.event == POLL:
            return self.process_event(model_key, event, wait=wait)
        return self._sync(self._send_waiting(model_key, event, wait))

    async def asend_event(self, model_key: str, event: EventInput, *, wait: float = 0.0) -> AIResponse:
        """Async twin of :meth:`send_event`."""
        if event.event == POLL:
            return await self.aprocess_event(model_key, event, wait=wait)
        return await self._async(self._send_waiting(model_key, event, wait))

    async def _follow(self, model_key: str, event: EventInput, stack: contextlib.AsyncExitStack) -> _FollowState:
        """Subscribe to the session's feed, then send the event (a refusal raises here)."""
        store = await self._open_store()
        await self._record(model_key, event.session_id)
        queue = await stack.enter_async_context(store.subscribe(event.session_id))
        if event.event == POLL:
            answer = await self._poll(model_key, event.session_id)
        else:
            answer = await self._send(model_key, event)
        return _FollowState(model_key, event.session_id, queue, answer)

    async def _next_item(self, state: _FollowState) -> FeedItem | None:
        """The next item of a followed run, or None once its final response has been given."""
        if state.finished:
            return None
        if state.answer.next_actions != [POLL]:  # answered at once: no run to follow
            state.finished = True
            model = await self._get_model(state.model_key, state.session_id)
            flow = self._flow_for(state.model_key, model)
            return {"event": "response", "data": state.answer.model_dump(mode="json"), "state": flow.node_of(model)}
        while True:
            # Once the run said it is done, its lease may still be held a moment (another process
            # releases it after publishing): look again soon rather than after a quiet second.
            soon = state.done_seen and time.monotonic() - state.quiet_since < _FOLLOW_CHECK_SECONDS
            wait = _FOLLOW_AFTER_DONE_SECONDS if soon else _FOLLOW_CHECK_SECONDS
            try:
                item = await asyncio.wait_for(state.queue.get(), timeout=wait)
            except TimeoutError:
                item = None  # no word for a while: ask the store whether the run is over
            if item is not None and item["event"] == "done":
                state.done_seen = True
                state.quiet_since = time.monotonic()
            elif item is not None:
                state.quiet_since = time.monotonic()
                return item
            progress = await self._progress_elsewhere(state.session_id)
            if progress is not None:
                if time.monotonic() - state.quiet_since >= _FOLLOW_KEEPALIVE_SECONDS:
                    state.quiet_since = time.monotonic()  # a long quiet call: say it still runs
                    return {"event": "progress", "data": progress.model_dump(mode="json")}
                continue
            final = await self._poll(state.model_key, state.session_id)
            if final.next_actions == [POLL]:  # a resumed or queued run goes on
                state.done_seen = False
                continue
            state.finished = True
            model = await self._get_model(state.model_key, state.session_id)
            flow = self._flow_for(state.model_key, model)
            return {"event": "response", "data": final.model_dump(mode="json"), "state": flow.node_of(model)}

    async def astream_event(self, model_key: str, event: EventInput) -> AsyncGenerator[FeedItem, None]:
        """Send an event and follow what its run does, as it happens.

        The event is sent when iteration starts, so a refusal raises from the first ``__anext__``
        (``EventNotAllowed``, ``SessionBusy``, ``EventFailed``) before anything is yielded. It yields
        ``{"event": kind, "data": {...}}`` items: ``state`` (the session entered a state: ``state``,
        ``name``, ``kind``), ``token`` (LLM text as it arrives: ``state``, ``text``), ``progress``
        (sub-task counts; repeated after 15 s without news, to keep proxies from closing the
        stream), and last ``response`` (the ``AIResponse`` a poll answers now, with the
        current ``state`` beside ``data``). Works across processes on Redis (a worker's tokens reach
        this process). Dropping the iterator early loses nothing: polling still answers.

        Raises:
            UnknownModelKey, UnknownSession, EventNotAllowed, SessionBusy, EventFailed.
        """
        stack = contextlib.AsyncExitStack()
        try:
            state = await self._async(self._follow(model_key, event, stack))
        except BaseException:
            await self._async(stack.aclose())
            raise
        try:
            while (item := await self._async(self._next_item(state))) is not None:
                yield item
        finally:
            await self._async(stack.aclose())

    # ---- group sessions: messages from many senders (see ``_group``) -------------------------
    async def _send_message_event(self, model_key: str, session_id: str, message: GroupMessage) -> AIResponse:
        event = EventInput(session_id=session_id, event=message.event, event_input=message.content)
        return await self._send(model_key, event, sender=message.sender, message=message.seq)

    async def _approvals_pending(self, model_key: str, session_id: str) -> bool:
        return any(r.status is ApprovalStatus.PENDING for r in await self._approvals(model_key, session_id))

    async def _follow_answer(
        self, model_key: str, session_id: str, feed: asyncio.Queue[FeedItem], answer: AIResponse
    ) -> AsyncGenerator[FeedItem, None]:
        """What the run an answer started does, up to its final response; past approval requests too.

        A response that waits for approvals is yielded, and following goes on until a response that
        does not.
        """
        state = _FollowState(model_key, session_id, feed, answer)
        while (item := await self._next_item(state)) is not None:
            yield item
            requests = item["data"].get("approvals") or [] if item["event"] == "response" else []
            if any(request.get("status") == "pending" for request in requests):
                state.finished = state.done_seen = False  # a decision resumes the run: follow it
                state.answer = AIResponse(session_id=session_id, next_actions=[POLL])

    async def _receive(self, model_key: str, session_id: str, content: str, sender: str, event: str) -> GroupMessage:
        flow = self.flow_of(model_key)
        if not isinstance(sender, str) or not sender.strip():
            raise ValueError(f"a group message needs its sender's name (a non-empty string), got {sender!r}")
        declared = flow.declared_events()
        if event not in declared:
            known = ", ".join(sorted(declared)) or "(none)"
            raise ValueError(f"a group message is sent as one of the flow's events ({known}), not {event!r}")
        sender = sender.strip()
        members = await (await self._open_store()).members(session_id)
        if members and sender not in members:
            await self._record(model_key, session_id)
            raise NotAMember(session_id, sender, list(members))
        return await self._group.receive(model_key, session_id, sender, content, event)

    async def _add_members(self, model_key: str, session_id: str, members: Sequence[str]) -> None:
        record = await self._record(model_key, session_id)
        named = [member.strip() for member in members]
        if any(not member for member in named):
            raise ValueError(f"members are non-empty names, got {list(members)!r}")
        await (await self._open_store()).add_members(session_id, named, record.ttl_seconds)

    def add_members(self, model_key: str, session_id: str, members: Sequence[str]) -> None:
        """Name members of a group session: from then on only they may write to it.

        A session without named members takes messages from anyone who has it. Members (and every
        sender who wrote) may also decide approval requests whose ``approvers`` is ``member``.

        Raises:
            UnknownModelKey, UnknownSession; ValueError: an empty name.
        """
        self._sync(self._add_members(model_key, session_id, members))

    async def aadd_members(self, model_key: str, session_id: str, members: Sequence[str]) -> None:
        """Async twin of :meth:`add_members`."""
        await self._async(self._add_members(model_key, session_id, members))

    async def _members(self, model_key: str, session_id: str) -> set[str]:
        await self._record(model_key, session_id)
        return await (await self._open_store()).members(session_id)

    def members(self, model_key: str, session_id: str) -> set[str]:
        """A group session's members, as named with :meth:`add_members` (none: anyone may write to it).

        Deciding an approval request whose ``approvers`` is ``member`` is also open to everyone who
        wrote to the session.
        """
        return self._sync(self._members(model_key, session_id))

    async def amembers(self, model_key: str, session_id: str) -> set[str]:
        """Async twin of :meth:`members`."""
        return await self._async(self._members(model_key, session_id))

    def send_message(
        self, model_key: str, session_id: str, content: str, sender: str, event: str = "user_input"
    ) -> GroupMessage:
        """Add a message from ``sender`` to a group session, and process it in the background.

        The message is numbered in the order received (``GroupMessage.seq``). Then, after the
        sender's earlier messages, the flow's ``group_reasoner`` decides whether it is for the flow;
        if so it is sent as ``event`` with ``content`` as its input, its sender named on the
        dialogue. Follow it with :meth:`execution` or :meth:`astream_execution`. Messages from
        different senders are processed concurrently, each sender's in order; the flow takes one at
        a time, so none is lost.

        Any session can take group messages; its members are the senders who wrote to it.

        Raises:
            UnknownModelKey, UnknownSession; ValueError: no sender, or ``event`` is not one of the
            flow's events.
        """
        return self._sync(self._receive(model_key, session_id, content, sender, event))

    async def asend_message(
        self, model_key: str, session_id: str, content: str, sender: str, event: str = "user_input"
    ) -> GroupMessage:
        """Async twin of :meth:`send_message`."""
        return await self._async(self._receive(model_key, session_id, content, sender, event))

    async def _messages(self, model_key: str, session_id: str, after: int) -> list[GroupMessage]:
        await self._record(model_key, session_id)
        return await self._group.messages(session_id, after)

    def messages(self, model_key: str, session_id: str, after: int = 0) -> list[GroupMessage]:
        """A group session's messages numbered above ``after``, in the order received, with their status."""
        return self._sync(self._messages(model_key, session_id, after))

    async def amessages(self, model_key: str, session_id: str, after: int = 0) -> list[GroupMessage]:
        """Async twin of :meth:`messages`."""
        return await self._async(self._messages(model_key, session_id, after))

    async def _execution(self, model_key: str, session_id: str, seq: int, wait: float | None) -> Execution:
        await self._record(model_key, session_id)
        deadline = None if wait is None else time.monotonic() + wait
        execution = await self._group.execution(model_key, session_id, seq)
        while not execution.finished and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.02)
            execution = await self._group.execution(model_key, session_id, seq)
        return execution

    def execution(self, model_key: str, session_id: str, seq: int, wait: float | None = 0) -> Execution:
        """Message ``seq`` of a group session and what its processing did so far.

        Args:
            wait: seconds to wait for it to finish (None: as long as it takes; 0: answer now).

        Raises:
            UnknownModelKey, UnknownSession, UnknownMessage.
        """
        return self._sync(self._execution(model_key, session_id, seq, wait))

    async def aexecution(self, model_key: str, session_id: str, seq: int, wait: float | None = 0) -> Execution:
        """Async twin of :meth:`execution`."""
        return await self._async(self._execution(model_key, session_id, seq, wait))

    async def astream_execution(
        self, model_key: str, session_id: str, seq: int, start: int = 0
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Message ``seq``'s execution items from index ``start`` on, as they happen, until it finishes.

        Items are ``{"event": kind, "data": {...}}``, in this order: one ``decision`` (``decision``
        ``delegate`` or ``ignore``, ``reason``, ``sender``); for a delegated message, ``state``
        and ``progress`` items of its run, an ``approval`` per tool call that waits for a person
        (decide it with :meth:`decide_approval`), and last a ``response`` (the ``AIResponse``, plus
        ``state``) or an ``error`` (``error``: ``event_not_allowed``, ... , ``message``). Items
        already there are yielded at once, so a reader may come late or come back. While the run
        goes on, its ``token`` items (``state``, ``text``: LLM text as it arrives) are passed on
        live between them; they are not recorded, so a late reader does not get them.

        Raises:
            UnknownModelKey, UnknownSession, UnknownMessage (from the first ``__anext__``).
        """
        await self._async(self._record(model_key, session_id))
        items = self._group.follow(model_key, session_id, seq, start)

        async def step() -> dict[str, Any] | None:
            return await anext(items, None)

        try:
            while (item := await self._async(step())) is not None:
                yield item
        finally:
            await self._async(items.aclose())

    # ---- inspection ---------------------------------------------------------------------
    async def _user_sessions(self, model_key: str, user_info: User | Mapping[str, Any] | None) -> list[str]:
        self.flow_of(model_key)
        user = (
            None if user_info is None else user_info if isinstance(user_info, User) else User.model_validate(user_info)
        )
        return await (await self._open_store()).sessions(model_key, _user_key(user))

    def user_sessions(self, model_key: str, user_info: User | Mapping[str, Any] | None = None) -> list[str]:
        """Ids of the live sessions of ``model_key`` started for ``user_info`` (matched by email,
        case-insensitively); with no user, every live session of the model key.

        Raises:
            UnknownModelKey: nothing is registered under ``model_key``.
            pydantic.ValidationError: ``user_info`` is not a valid ``User``.
        """
        return self._sync(self._user_sessions(model_key, user_info))

    async def auser_sessions(self, model_key: str, user_info: User | Mapping[str, Any] | None = None) -> list[str]:
        """Async twin of :meth:`user_sessions`."""
        return await self._async(self._user_sessions(model_key, user_info))

    async def _check_store(self) -> None:
        await (await self._open_store()).ping()

    def check_store(self) -> None:
        """Raise :class:`~genie_graph.errors.StoreUnavailable` if the store cannot be reached."""
        self._sync(self._check_store())

    async def acheck_store(self) -> None:
        """Async twin of :meth:`check_store`."""
        await self._async(self._check_store())

    async def _session_owner(self, model_key: str, session_id: str) -> str | None:
        return (await self._record(model_key, session_id)).owner

    def session_owner(self, model_key: str, session_id: str) -> str | None:
        """The caller the session was bound to when it was started (``owner=``), or None.

        Raises:
            UnknownModelKey, UnknownSession: the key or session does not exist.
        """
        return self._sync(self._session_owner(model_key, session_id))

    async def asession_owner(self, model_key: str, session_id: str) -> str | None:
        """Async twin of :meth:`session_owner`."""
        return await self._async(self._session_owner(model_key, session_id))

    async def _get_task_state(self, model_key: str, session_id: str) -> AIStatusResponse:
        self.flow_of(model_key)
        if await self._progress_elsewhere(session_id) is not None:
            await self._record(model_key, session_id)
            return AIStatusResponse(session_id=session_id, ready=False, next_actions=[])
        snapshot, model = await self._snapshot(model_key, session_id)
        flow = self._flow_for(model_key, model)
        if await self._resume_cut_off_run(model_key, session_id, flow, snapshot):
            return AIStatusResponse(session_id=session_id, ready=False, next_actions=[])
        return AIStatusResponse(session_id=session_id, ready=True, next_actions=flow.session_actions(model))

    def get_task_state(self, model_key: str, session_id: str) -> AIStatusResponse:
        """Whether the session is ready for an event, and which events it accepts."""
        return self._sync(self._get_task_state(model_key, session_id))

    async def aget_task_state(self, model_key: str, session_id: str) -> AIStatusResponse:
        """Async twin of :meth:`get_task_state`."""
        return await self._async(self._get_task_state(model_key, session_id))

    async def _get_model(self, model_key: str, session_id: str) -> GenieModel:
        return (await self._snapshot(model_key, session_id))[1]

    def get_model(self, model_key: str, session_id: str) -> GenieModel:
        """The session's model as last persisted.

        Raises:
            UnknownModelKey, UnknownSession: the key or session does not exist.
        """
        return self._sync(self._get_model(model_key, session_id))

    async def aget_model(self, model_key: str, session_id: str) -> GenieModel:
        """Async twin of :meth:`get_model`."""
        return await self._async(self._get_model(model_key, session_id))

    async def _session_bytes(self, model_key: str, session_id: str) -> int:
        await self._snapshot(model_key, session_id)
        return await (await self._open_store()).size_of(session_id)

    def session_bytes(self, model_key: str, session_id: str) -> int:
        """Bytes the session takes in the store (checkpoints and pending writes)."""
        return self._sync(self._session_bytes(model_key, session_id))

    async def _wait(self, session_id: str) -> None:
        run = self._runs.get(session_id)
        if run is not None and run.task is not None:
            await asyncio.shield(run.task)
            if run.ended:
                return
        store = await self._open_store()
        if store.shared:  # a run in another process (a worker): wait for its lease to go
            while await store.run_in_flight(session_id) is not None:
                await asyncio.sleep(0.02)

    def wait_until_ready(self, session_id: str) -> None:
        """Block until the session's background run (if any) has settled."""
        self._sync(self._wait(session_id))

    async def await_until_ready(self, session_id: str) -> None:
        """Async twin of :meth:`wait_until_ready`."""
        await self._async(self._wait(session_id))

    def graph(self, model_key: str) -> CompiledStateGraph[Any]:
        """The LangGraph graph serving ``model_key``, on this flow's store.

        Use it to inspect sessions (``get_state``, ``get_state_history``) with config
        ``{"configurable": {"thread_id": session_id}}``.
        """
        return self._sync(self._graph(model_key))

    def draw(self, model_key: str, session_id: str | None = None) -> Diagram:
        """The flow's diagram, with the session's current state highlighted when ``session_id`` is given.

        It displays inline in a notebook; ``.mermaid`` and ``.dot`` give the text, ``.render("png")``
        or ``.render("svg")`` the image (offline, through Graphviz).

        Raises:
            UnknownModelKey, UnknownSession: the key or session does not exist.
        """
        flow = self.flow_of(model_key)
        if session_id is None:
            return Diagram(flow)
        model = self.get_model(model_key, session_id)
        flow = self._registered[model_key].serving(model.flow_version).flow
        return Diagram.of_session(flow, model)

    # ---- lifecycle ----------------------------------------------------------------------
    async def _close(self, timeout: float) -> None:
        await self._group.close(timeout)
        tasks = [run.task for run in self._runs.values() if run.task is not None and not run.task.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:  # a cut-off run resumes on the next poll after a restart
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._forget_loop_state()

    def _forget_loop_state(self) -> None:
        """Drop what belongs to the loop that is going away: the next loop builds its own."""
        self._runs.clear()
        self._settled.clear()  # the store is closed with the loop: another process may write it meanwhile
        self._recalled.clear()
        self._locks.clear()
        self._group = GroupProcessor(self)
        self._opening = asyncio.Lock()
        for registered in self._registered.values():
            registered.graph = None
            for served in registered.previous.values():
                served.graph = None

    def close(self, timeout: float = 30.0) -> None:
        """Let background runs finish (up to ``timeout`` seconds, then cancel them), close the store
        and stop the event loop. The flow can be used again afterwards."""
        with self._loop_guard:
            loop, self._loop = self._loop, None
        if loop is None or loop.loop.is_closed():  # closed: nothing is left that could run
            return
        loop.run(self._close(timeout))
        loop.stop()

    async def aclose(self, timeout: float = 30.0) -> None:
        """Async twin of :meth:`close`, for an event loop's own code (a server's shutdown)."""
        with self._loop_guard:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        await loop.arun(self._close(timeout))
        if loop.owned:
            await asyncio.to_thread(loop.stop)

    async def attach_to_running_loop(self) -> bool:
        """Do this flow's work on the calling event loop from now on, instead of on a thread of its own.

        A server calls it at startup (``api.create_app`` does): requests then reach the flow without
        a hop between threads. Synchronous methods still work from other threads; on the loop itself
        use the async twins. Close with :meth:`aclose` before the loop ends.

        Returns:
            False if the flow already works on a loop of its own (it was used before): it stays there.
        """
        with self._loop_guard:
            if self._loop is not None:
                return self._loop.loop is asyncio.get_running_loop()
            self._loop = _LoopThread(asyncio.get_running_loop())
            return True

    def __enter__(self) -> GenieFlow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
