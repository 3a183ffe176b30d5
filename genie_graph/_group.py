"""Group sessions: many people in one conversation with a flow.

A group session is a session whose events come as *messages* from named senders
(``GenieFlow.send_message``). Each message is kept in the session's message log, numbered in the
order it was received, and then processed as an *execution*:

1. the flow's *group reasoner* decides whether the message is for the flow (``delegate``) or
   not (``ignore``);
2. a delegated message is sent to the flow as its event (``user_input`` unless it names
   another), tagged with its sender, and followed until the flow answers;
3. everything that happens is appended to the execution's items: ``decision``, ``state``,
   ``approval`` (a tool call waits for a person), ``response`` or ``error``.

Messages from different senders are processed concurrently (their reasoners run side by side);
messages from one sender strictly in order. The flow itself takes one event at a time, under the
session's lock, so the shared model never loses an update. Across processes (Redis) a lease per
sender keeps one process draining a sender's messages; a process that dies leaves them to the next
one that receives a message from that sender or reads one of their executions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ._api_models import AIResponse
from ._flow import POLL
from .errors import EventNotAllowed, GenieGraphError, SessionBusy, UnknownMessage

if TYPE_CHECKING:
    from ._flow import CompiledFlow
    from ._model import GenieModel
    from ._runtime import GenieFlow
    from ._stores import FeedItem, Store

__all__ = ["Decision", "Execution", "ExecutionItem", "GroupMessage", "MessageStatus"]

logger = logging.getLogger("genie_graph")


class Decision(StrEnum):
    """What the group reasoner made of a message."""

    IGNORE = "ignore"
    """Not for the flow (people talking among themselves): it is kept in the log, nothing runs."""
    DELEGATE = "delegate"
    """For the flow: it is sent as the message's event."""


class MessageStatus(StrEnum):
    """Where a message's execution is."""

    QUEUED = "queued"
    """Received; waiting for the sender's earlier messages."""
    REASONING = "reasoning"
    """The group reasoner is deciding."""
    DELEGATED = "delegated"
    """Sent to the flow (or waiting for the flow to take an event); the flow is working on it."""
    AWAITING_APPROVAL = "awaiting_approval"
    """A tool call of its run waits for a person's decision."""
    ANSWERED = "answered"
    """The flow answered: the last item is the ``response``."""
    IGNORED = "ignored"
    """The reasoner decided it is not for the flow."""
    REFUSED = "refused"
    """The flow does not take the message's event in its state (the ``error`` item says why)."""
    FAILED = "failed"
    """The run failed (the ``error`` item says how)."""

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to the message."""
        return self in _FINISHED


_FINISHED = frozenset({MessageStatus.ANSWERED, MessageStatus.IGNORED, MessageStatus.REFUSED, MessageStatus.FAILED})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GroupMessage(BaseModel):
    """One message of a group session's log.

    Attributes:
        seq: its place in the log (1 is the first message received).
        sender: who sent it.
        content: what they said (the event's input).
        event: the flow event it is sent as when delegated.
        received_at: when it was received (UTC).
        status: where its execution is.
        decision: what the group reasoner decided, once it has.
        reason: why, when the reasoner said.
    """

    seq: int
    sender: str
    content: str
    event: str = "user_input"
    received_at: datetime = Field(default_factory=_utc_now)
    status: MessageStatus = MessageStatus.QUEUED
    decision: Decision | None = None
    reason: str | None = None


ExecutionItem = dict[str, Any]
"""``{"event": "decision" | "state" | "progress" | "approval" | "response" | "error", "data": {...}}``."""


class Execution(BaseModel):
    """A message and what its processing did so far (``items``), in order."""

    message: GroupMessage
    items: list[ExecutionItem]

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen."""
        return self.message.status.finished

    @property
    def response(self) -> AIResponse | None:
        """The flow's answer, once there is one."""
        for item in reversed(self.items):
            if item["event"] == "response":
                return AIResponse.model_validate(item["data"])
        return None


GroupReasoner = Callable[[GroupMessage, "GenieModel"], Any]
"""``reasoner(message, model) -> Decision | "ignore" | "delegate" | bool | (decision, reason)`` (may be async)."""


# ---- the reasoner ------------------------------------------------------------------------
def parse_decision(answer: Any) -> tuple[Decision, str | None]:
    """A reasoner's answer as a decision and its reason.

    Accepts a :class:`Decision`, a bool (True delegates), a ``(decision, reason)`` pair, a mapping
    ``{"decision": ..., "reason": ...}``, or text: JSON of that mapping, or text whose first word
    is IGNORE or DELEGATE (any case), the rest being the reason.

    Raises:
        ValueError: none of these; the message says what is allowed.
    """
    if isinstance(answer, Decision):
        return answer, None
    if isinstance(answer, bool):
        return (Decision.DELEGATE if answer else Decision.IGNORE), None
    if isinstance(answer, tuple) and len(answer) == 2:
        decision, _ = parse_decision(answer[0])
        return decision, None if answer[1] is None else str(answer[1])
    if isinstance(answer, Mapping):
        decision, _ = parse_decision(answer.get("decision"))
        reason = answer.get("reason")
        return decision, None if reason is None else str(reason)
    if isinstance(answer, str):
        text = answer.strip()
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                return parse_decision(json.loads(text))
        word, *rest = text.split(maxsplit=1) or [""]  # the first word ends at any white space: "IGNORE\nwhy"
        word = word.strip(".:,!").lower()
        if word in (Decision.IGNORE, Decision.DELEGATE):
            return Decision(word), "".join(rest).strip(" .:-\n") or None
    raise ValueError(
        f"a group reasoner answers IGNORE or DELEGATE (text whose first word is one of them, a Decision, "
        f"a bool, or {{'decision': ..., 'reason': ...}}), got {answer!r}"
    )


async def decide(flow: CompiledFlow, message: GroupMessage, model: GenieModel, log: list[GroupMessage]) -> Any:
    """Ask the flow's group reasoner about ``message``; without one, every message is delegated."""
    reasoner = flow.group_reasoner
    if reasoner is None:
        return Decision.DELEGATE, None
    if isinstance(reasoner, str):

        def render_data(names: Collection[str] | None = None) -> dict[str, Any]:
            data = flow.render_data(model, names)
            data.update(
                message=message.content,
                user_input=message.content,
                sender=message.sender,
                messages=[{"seq": m.seq, "sender": m.sender, "content": m.content} for m in log],
            )
            return data

        return await flow.runner.run(reasoner, render_data)
    answer = reasoner(message, model)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


# ---- processing --------------------------------------------------------------------------
_RETRY_FIRST_SECONDS = 0.02
_RETRY_MAX_SECONDS = 0.5
_LEASE_SECONDS = 30.0
_FOLLOW_MAX_SECONDS = 0.2
_LOG_FOR_REASONER = 50
"""How many of the latest messages the reasoner's template sees as ``messages``."""


@dataclass
class _LocalLease:
    """A lease's lock in this process, and how many tasks hold it or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class GroupProcessor:
    """Runs the executions of a :class:`~genie_graph.GenieFlow`'s group messages (on its loop)."""

    def __init__(self, runtime: GenieFlow) -> None:
        self._runtime = runtime
        self._locks: dict[tuple[str, str], _LocalLease] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    # ---- receiving -----------------------------------------------------------------------
    async def receive(self, model_key: str, session_id: str, sender: str, content: str, event: str) -> GroupMessage:
        """Log a message (its number is its place in the log), and start draining its sender's messages."""
        store = await self._runtime._open_store()
        record = await self._runtime._record(model_key, session_id)
        message = GroupMessage(seq=0, sender=sender, content=content, event=event)
        seq = await store.append_message(session_id, message.model_dump(mode="json"), record.ttl_seconds)
        message.seq = seq
        self.drain(model_key, session_id, sender)
        return message

    def drain(self, model_key: str, session_id: str, sender: str) -> None:
        """Process ``sender``'s unfinished messages in order, in the background."""
        task = asyncio.get_running_loop().create_task(self._drain(model_key, session_id, sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float) -> None:
        """Let executions reach a stopping point (up to ``timeout`` seconds, then cancel them).

        One waiting for a busy flow or an approval stops waiting at once; unfinished messages stay
        in the log, and are taken up again when one of their sender's executions is read, or the
        sender writes again.
        """
        self._closing.set()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _lease(self, store: Store, session_id: str, holder: str) -> AsyncIterator[None]:
        """Hold ``holder``'s right in the session: in this process, and (a shared store) in every process."""
        key = (session_id, holder)
        local = self._locks.setdefault(key, _LocalLease())
        local.users += 1  # counted, not asked of the lock: a released lock is unlocked before its next holder runs
        try:
            async with local.lock, store.group_lease(session_id, holder, _LEASE_SECONDS):
                yield
        finally:
            local.users -= 1
            if not local.users:
                del self._locks[key]

    async def _drain(self, model_key: str, session_id: str, sender: str) -> None:
        store = await self._runtime._open_store()
        try:
            async with self._lease(store, session_id, f"sender:{sender}"):
                while True:
                    pending = [
                        message
                        for message in await self.messages(session_id)
                        if message.sender == sender and not message.status.finished
                    ]
                    if not pending or self._closing.is_set():
                        return
                    await self._process(model_key, session_id, pending[0])
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the messages of %s in group session %s could not be processed", sender, session_id)

    # ---- reading -------------------------------------------------------------------------
    async def messages(self, session_id: str, after: int = 0) -> list[GroupMessage]:
        """The log from message ``after + 1`` on, in the order received."""
        store = await self._runtime._open_store()
        return [GroupMessage.model_validate(body) for body in await store.load_messages(session_id, after)]

    async def execution(self, model_key: str, session_id: str, seq: int, start: int = 0) -> Execution:
        """Message ``seq`` and its items from ``start`` on; an unfinished one nobody drains is taken up here.

        Raises:
            UnknownMessage: the log has no message ``seq``.
        """
        store = await self._runtime._open_store()
        body = await store.load_message(session_id, seq)
        if body is None:
            count = await store.message_count(session_id)
            raise UnknownMessage(session_id, seq, count)
        message = GroupMessage.model_validate(body)
        holder = f"sender:{message.sender}"
        if not message.status.finished and (session_id, holder) not in self._locks:
            if not await store.group_lease_held(session_id, holder):
                self.drain(model_key, session_id, message.sender)  # the process draining it went away
        return Execution(message=message, items=await store.load_items(session_id, seq, start))

    async def follow(
        self, model_key: str, session_id: str, seq: int, start: int = 0
    ) -> AsyncGenerator[ExecutionItem, None]:
        """Message ``seq``'s items from ``start`` on, as they come, until its execution finishes.

        ``token`` items (LLM text as it arrives) of the message's run are passed on live, between
        the recorded items; they are not recorded, so a late reader does not see them.
        """
        store = await self._runtime._open_store()
        async with store.subscribe(session_id) as feed:
            delay = _RETRY_FIRST_SECONDS
            while True:
                execution = await self.execution(model_key, session_id, seq, start)  # (items read after the status)
                for item in execution.items:
                    yield item
                if execution.finished:
                    return
                start += len(execution.items)
                # The flow takes one delivered message at a time: while this one is, its tokens are its run's.
                ours = execution.message.status is MessageStatus.DELEGATED
                tokens = 0
                while not feed.empty():
                    item = feed.get_nowait()
                    if ours and item["event"] == "token":
                        tokens += 1
                        yield item
                busy = execution.items or tokens
                delay = _RETRY_FIRST_SECONDS if busy else min(delay * 2, _FOLLOW_MAX_SECONDS)
                with contextlib.suppress(TimeoutError):  # a token wakes the reader at once
                    item = await asyncio.wait_for(feed.get(), timeout=delay)
                    if ours and item["event"] == "token":
                        yield item

    # ---- one message ---------------------------------------------------------------------
    async def _save(self, session_id: str, message: GroupMessage) -> None:
        store = await self._runtime._open_store()
        await store.save_message(session_id, message.seq, message.model_dump(mode="json"))

    async def _emit(self, session_id: str, message: GroupMessage, *items: ExecutionItem) -> None:
        store = await self._runtime._open_store()
        await store.append_items(session_id, message.seq, list(items))

    async def _finish(self, session_id: str, message: GroupMessage, status: MessageStatus, item: ExecutionItem) -> None:
        await self._emit(session_id, message, item)
        message.status = status
        await self._save(session_id, message)

    async def _process(self, model_key: str, session_id: str, message: GroupMessage) -> None:
        fresh = message.status in (MessageStatus.QUEUED, MessageStatus.REASONING)
        if fresh:
            await self._reason(model_key, session_id, message)
            if message.decision is Decision.IGNORE:
                return
        store = await self._runtime._open_store()
        # The flow takes one event at a time: one message at a time is delivered and followed to its
        # answer, so a run's items and answer are never another message's.
        async with self._lease(store, session_id, "flow"), store.subscribe(session_id) as feed:
            if not fresh:  # taken up again: another sender's drain may have followed it to its end meanwhile
                body = await store.load_message(session_id, message.seq)
                message = message if body is None else GroupMessage.model_validate(body)
                if message.status.finished:
                    return
            delivered = await self._delivered(model_key, session_id)
            # A run delivered for another message that nobody follows (its process went away, e.g. while
            # a tool call waited for approval) is that message's: follow it to its end before delivering.
            for orphan in await self._orphans(session_id, message, delivered):
                poll = AIResponse(session_id=session_id, next_actions=[POLL])
                await self._follow_run(model_key, session_id, orphan, feed, poll)
                if not orphan.status.finished:
                    return  # closing: taken up again by the next process
                while not feed.empty():  # what is left of that run is not this message's
                    feed.get_nowait()
            answer: AIResponse | None
            if not fresh and message.seq in delivered:  # its process went away after delivering it
                answer = AIResponse(session_id=session_id, next_actions=[POLL])
            else:
                answer = await self._deliver(model_key, session_id, message)
            if answer is not None:
                await self._follow_run(model_key, session_id, message, feed, answer)

    async def _reason(self, model_key: str, session_id: str, message: GroupMessage) -> None:
        """Ask the group reasoner; record its decision (a failing reasoner delegates)."""
        message.status = MessageStatus.REASONING
        await self._save(session_id, message)
        model = await self._runtime._get_model(model_key, session_id)
        flow = self._runtime._flow_for(model_key, model)
        log = await self.messages(session_id, max(0, message.seq - _LOG_FOR_REASONER))
        log = [m for m in log if m.seq <= message.seq]
        started = time.perf_counter()
        try:
            decision, reason = parse_decision(await decide(flow, message, model, log))
        except Exception as exc:  # the message goes on to the flow, as if no reasoner were declared
            logger.warning("the group reasoner of %s failed on message %d: %s", flow.label, message.seq, exc)
            decision, reason = Decision.DELEGATE, f"the group reasoner failed ({type(exc).__name__}: {exc})"
        message.decision, message.reason = decision, reason
        data = {
            "decision": decision.value,
            "reason": reason,
            "sender": message.sender,
            "seq": message.seq,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        await self._emit(session_id, message, {"event": "decision", "data": data})
        message.status = MessageStatus.IGNORED if decision is Decision.IGNORE else MessageStatus.DELEGATED
        await self._save(session_id, message)

    async def _deliver(self, model_key: str, session_id: str, message: GroupMessage) -> AIResponse | None:
        """Send the message's event, waiting while the flow is busy or a tool call waits for approval."""
        runtime = self._runtime
        delay = _RETRY_FIRST_SECONDS
        while True:
            try:
                return await runtime._send_message_event(model_key, session_id, message)
            except SessionBusy:
                pass
            except EventNotAllowed as refusal:
                if not await runtime._approvals_pending(model_key, session_id):
                    error = {
                        "error": "event_not_allowed",
                        "message": str(refusal),
                        "state": refusal.state,
                        "allowed": refusal.allowed,
                    }
                    await self._finish(session_id, message, MessageStatus.REFUSED, {"event": "error", "data": error})
                    return None
            except GenieGraphError as exc:
                data = {"error": getattr(exc, "code", type(exc).__name__), "message": str(exc)}
                await self._finish(session_id, message, MessageStatus.FAILED, {"event": "error", "data": data})
                return None
            if self._closing.is_set():
                return None  # delivered by the next process that takes the sender's messages up
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _delivered(self, model_key: str, session_id: str) -> set[int]:
        """The messages the flow took already: their events in the session's history name them."""
        model = await self._runtime._get_model(model_key, session_id)
        return {
            number
            for entry in model.history
            if entry.kind == "event" and isinstance(number := (entry.detail or {}).get("message"), int)
        }

    async def _orphans(self, session_id: str, message: GroupMessage, delivered: set[int]) -> list[GroupMessage]:
        """Other messages delivered to the flow and unfinished, while ``message`` holds the flow's lease.

        Whoever delivers a message follows its run to the end under that lease: such a message's
        process went away (or closed) before its run ended.
        """
        return [
            other
            for other in await self.messages(session_id)
            if other.seq != message.seq and other.seq in delivered and not other.status.finished
        ]

    async def _items(self, session_id: str, message: GroupMessage) -> list[ExecutionItem]:
        store = await self._runtime._open_store()
        return await store.load_items(session_id, message.seq)

    async def _follow_run(
        self,
        model_key: str,
        session_id: str,
        message: GroupMessage,
        feed: asyncio.Queue[FeedItem],
        answer: AIResponse,
    ) -> None:
        """Record the run's states, its approval requests and its answer."""
        told = {item["data"]["id"] for item in await self._items(session_id, message) if item["event"] == "approval"}
        async for item in self._runtime._follow_answer(model_key, session_id, feed, answer):
            if item["event"] == "token":
                continue
            if item["event"] != "response":
                await self._emit(session_id, message, item)
                continue
            response = AIResponse.model_validate(item["data"])
            pending = [a for a in response.approvals or [] if a.get("status") == "pending"]
            fresh = [a for a in pending if a["id"] not in told]
            if pending:
                told.update(a["id"] for a in fresh)
                if fresh:
                    await self._emit(session_id, message, *({"event": "approval", "data": a} for a in fresh))
                if message.status is not MessageStatus.AWAITING_APPROVAL:
                    message.status = MessageStatus.AWAITING_APPROVAL
                    await self._save(session_id, message)
                if self._closing.is_set():
                    return  # followed again by the next process that takes the sender's messages up
                continue  # _follow_answer goes on once they are decided
            data = {**item["data"], "state": item.get("state")}
            if response.error is not None:
                await self._finish(session_id, message, MessageStatus.FAILED, {"event": "error", "data": data})
            else:
                await self._finish(session_id, message, MessageStatus.ANSWERED, {"event": "response", "data": data})
            return
