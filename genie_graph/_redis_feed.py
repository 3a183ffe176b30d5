"""Session feeds over Redis pub/sub: every subscription of a process on one connection.

A subscription with a pub/sub object of its own took a pooled connection and, closing it, dropped
the connection: the next command connected again (a TCP connect and a ``HELLO`` on every turn that
waited), and no more polls could wait at once than the pool could spare connections. Here a process
subscribes and unsubscribes channels on one connection, read by one task that hands each message to
the store's subscribers in this process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

logger = logging.getLogger("genie_graph")

CONFIRM_SECONDS = 5.0
"""How long a subscriber waits for Redis to confirm its channel before it reads the session anyway."""
_RETRY_SECONDS = 0.1
FEED_PREFIX = "genie:feed:"
"""A session's feed is the channel ``FEED_PREFIX + session_id``."""
_STANDING_CHANNEL = FEED_PREFIX + "-"
"""Never published: keeps the connection subscribed, so redis-py never reads a health check's reply
in the subscribing task while the reading task reads (it sends the check with the next read instead)."""


class FeedHub:
    """The channels this process listens to, on one pub/sub connection, counted by subscriber.

    Args:
        client: the store's client (its pool lends the one connection, for the hub's life).
        deliver: called with a channel and each item published on it while someone here listens.
    """

    def __init__(self, client: Redis, deliver: Callable[[str, Any], None]) -> None:
        self._pubsub: PubSub = client.pubsub()
        self._deliver = deliver
        self._listeners: dict[str, int] = {}
        # One future per SUBSCRIBE sent, in order: Redis confirms each, in order.
        self._confirmations: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def join(self, channel: str) -> None:
        """Listen to ``channel``; returns once Redis confirms it, so nothing published after is missed."""
        await self._start()
        count = self._listeners.get(channel, 0)
        self._listeners[channel] = count + 1
        if count == 0:
            confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            pending = self._confirmations.setdefault(channel, collections.deque())
            pending.append(confirmation)
            try:
                await self._pubsub.subscribe(channel)
            except BaseException:
                with contextlib.suppress(ValueError):
                    pending.remove(confirmation)  # (never sent: no confirmation will come for it)
                if not pending:
                    self._confirmations.pop(channel, None)
                await self.leave(channel)
                raise
        else:
            pending = self._confirmations.get(channel, collections.deque())
            if not pending:
                return
            confirmation = pending[-1]  # subscribed by an earlier listener, not confirmed yet
        with contextlib.suppress(TimeoutError):  # (the feed is best effort: a wait still looks at the session)
            await asyncio.wait_for(asyncio.shield(confirmation), CONFIRM_SECONDS)

    async def leave(self, channel: str) -> None:
        """Stop listening to ``channel`` once its last listener here leaves."""
        count = self._listeners.get(channel, 0) - 1
        if count > 0:
            self._listeners[channel] = count
            return
        self._listeners.pop(channel, None)
        with contextlib.suppress(Exception):  # a connection lost meanwhile resubscribes only what is listened to
            await self._pubsub.unsubscribe(channel)

    async def _start(self) -> None:
        if self._reader is not None and not self._reader.done():
            return
        async with self._starting:
            if self._reader is None or self._reader.done():
                await self._pubsub.subscribe(_STANDING_CHANNEL)
                self._reader = asyncio.create_task(self._read(), name="genie-graph feed hub")

    async def _read(self) -> None:
        failing = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection broke: the next read connects again and resubscribes
                if not failing:
                    logger.warning("session feeds: reading Redis pub/sub failed (%s); reconnecting", exc)
                failing = True
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            if failing:
                logger.info("session feeds: Redis pub/sub is back")
                failing = False
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            if message["type"] == "message":
                if channel in self._listeners:
                    try:
                        item = orjson.loads(message["data"])
                    except orjson.JSONDecodeError:
                        logger.warning("session feeds: %s carried a message that is not JSON; dropped", channel)
                        continue
                    self._deliver(channel, item)
            elif message["type"] == "subscribe":
                pending = self._confirmations.get(channel)
                if pending:
                    confirmation = pending.popleft()
                    if not confirmation.done():
                        confirmation.set_result(None)
                if not pending:
                    self._confirmations.pop(channel, None)

    async def close(self) -> None:
        """Stop reading and give the connection back."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
