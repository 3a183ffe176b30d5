"""Invoker classes that record how the library builds and calls them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from genie_graph import GenieInvoker

WAIT_SECONDS = 10.0


class Recording(GenieInvoker):
    """Records every ``from_config`` mapping; answers ``<tag>:<content>``."""

    configs: list[dict[str, Any]] = []

    def __init__(self, tag: str) -> None:
        self.tag = tag

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Recording:
        cls.configs.append(dict(config))
        return cls(str(config.get("tag", "rec")))

    def invoke(self, content: str) -> str:
        return f"{self.tag}:{content}"


class GenieFlowStyle:
    """A Genie Flow invoker that does not inherit genie_graph's base: from_config + sync invoke."""

    built = 0

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    @classmethod
    def from_config(cls, config: dict) -> GenieFlowStyle:
        cls.built += 1
        return cls(config["greeting"])

    def invoke(self, content: str) -> str:
        return f"{self.greeting}, {content}"


class Flaky(GenieInvoker):
    """Fails ``fail_times`` times per ``key``, then answers ``ok after N attempts``."""

    attempts: dict[str, int] = {}
    _lock = threading.Lock()

    def __init__(self, key: str, fail_times: int) -> None:
        self.key = key
        self.fail_times = fail_times

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Flaky:
        return cls(str(config["key"]), int(config["fail_times"]))

    def invoke(self, content: str) -> str:
        with self._lock:
            count = self.attempts.get(self.key, 0) + 1
            self.attempts[self.key] = count
        if count <= self.fail_times:
            raise RuntimeError(f"flaky failure {count}")
        return f"ok after {count} attempts: {content}"


class Broken(GenieInvoker):
    """Always raises."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Broken:
        return cls()

    def invoke(self, content: str) -> str:
        raise RuntimeError("boom")


class PoolProbe(GenieInvoker):
    """Counts how many calls are inside ``invoke`` at once.

    Calls wait until ``hold_until`` calls have been inside at the same time once (or all expected
    calls have entered), so a pool of the right size fills up completely before anyone leaves.
    """

    cond = threading.Condition()
    active = 0
    max_active = 0
    entered = 0
    expected = 0
    hold_until = 0
    filled = False
    built = 0

    @classmethod
    def reset(cls, hold_until: int, expected: int) -> None:
        with cls.cond:
            cls.active = cls.max_active = cls.entered = cls.built = 0
            cls.filled = False
            cls.hold_until, cls.expected = hold_until, expected

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PoolProbe:
        with cls.cond:
            cls.built += 1
        return cls()

    def invoke(self, content: str) -> str:
        cls = type(self)
        with cls.cond:
            cls.active += 1
            cls.entered += 1
            cls.max_active = max(cls.max_active, cls.active)
            cls.filled = cls.filled or cls.active >= cls.hold_until
            cls.cond.notify_all()
            ok = cls.cond.wait_for(lambda: cls.filled or cls.entered >= cls.expected, timeout=WAIT_SECONDS)
            cls.active -= 1
            cls.cond.notify_all()
        if not ok:
            raise TimeoutError("pool never filled up")
        return content


class Lazy(GenieInvoker):
    """Counts ``from_config`` calls, to show invokers are built on first use only."""

    built = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Lazy:
        cls.built += 1
        return cls()

    def invoke(self, content: str) -> str:
        return f"lazy:{content}"


class NoFromConfig:
    """Not an invoker: it has no from_config."""

    def invoke(self, content: str) -> str:
        return content


class AsyncPoolProbe(GenieInvoker):
    """An ``async def invoke`` that counts how many calls are inside it and holds them.

    Everything runs on one event loop, so when ``filled`` is set every started call has either
    entered ``invoke`` or is waiting for the pool: a deterministic count, no clock involved.
    """

    active = 0
    max_active = 0
    entered = 0
    built = 0
    hold_until = 0
    filled: asyncio.Event = asyncio.Event()
    release: asyncio.Event = asyncio.Event()

    @classmethod
    def reset(cls, hold_until: int) -> None:
        cls.active = cls.max_active = cls.entered = cls.built = 0
        cls.hold_until = hold_until
        cls.filled = asyncio.Event()
        cls.release = asyncio.Event()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AsyncPoolProbe:
        cls.built += 1
        return cls()

    async def invoke(self, content: str) -> str:  # type: ignore[override]
        cls = type(self)
        cls.active += 1
        cls.entered += 1
        cls.max_active = max(cls.max_active, cls.active)
        if cls.active >= cls.hold_until:
            cls.filled.set()
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await cls.release.wait()
        finally:
            cls.active -= 1
        return content
