"""Coordination points for invokers and custom steps: barriers and gates set by a test.

A test assigns the module attributes before it runs a flow and the callables read them at call
time. Every wait has a timeout, so a broken expectation fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

WAIT_SECONDS = 10.0

BARRIER: threading.Barrier | None = None
"""Sync callables wait here; set it to ``threading.Barrier(parties=N, timeout=10)``."""

ABARRIER: asyncio.Barrier | None = None
"""Async callables wait here; set it to ``asyncio.Barrier(N)``."""


class Gate:
    """Holds calls whose content starts with ``hold`` until the test releases them."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def pass_through(self, content: str) -> str:
        with self._lock:
            self.calls.append(content)
        if content.startswith("hold"):
            self.entered.set()
            if not self.release.wait(WAIT_SECONDS):
                raise TimeoutError("gate never released")
        return f"done:{content}"


GATE = Gate()


class Turnstile:
    """Lets calls whose content starts with ``step`` through one at a time, as the test admits them."""

    def __init__(self) -> None:
        self.admitted = threading.Semaphore(0)

    def pass_through(self, content: str) -> str:
        if content.startswith("step") and not self.admitted.acquire(timeout=WAIT_SECONDS):
            raise TimeoutError("the turnstile never admitted the call")
        return f"done:{content}"


TURNSTILE = Turnstile()


def turnstiled(content: str) -> str:
    """Pass through TURNSTILE: content starting with ``step`` waits until the test admits it."""
    return TURNSTILE.pass_through(content)


def barrier_echo(content: str) -> str:
    """Wait (in a worker thread) until BARRIER's parties all arrive, then answer ``content``."""
    assert BARRIER is not None, "set tests.flows_port.sync.BARRIER first"
    BARRIER.wait()
    return content


async def abarrier_echo(content: str) -> str:
    """Wait (on the event loop) until ABARRIER's parties all arrive, then answer ``content``."""
    assert ABARRIER is not None, "set tests.flows_port.sync.ABARRIER first"
    async with asyncio.timeout(WAIT_SECONDS):
        await ABARRIER.wait()
    return content


def gated(content: str) -> str:
    """Pass through GATE: content starting with ``hold`` blocks until the test releases it."""
    return GATE.pass_through(content)


_ORDER = threading.Event()


def reset_order() -> None:
    _ORDER.clear()


def finish_in_reverse(content: str) -> str:
    """``first`` only finishes after ``second`` has run: completion order is the reverse of the list."""
    if content == "first":
        if not _ORDER.wait(WAIT_SECONDS):
            raise TimeoutError("'second' never ran while 'first' waited")
        return '{"item": "first"}'
    _ORDER.set()
    return '{"item": "second"}'


def barrier_step(data: dict[str, Any]) -> str:
    """A custom (callable) composite step that waits on BARRIER; answers the state id it saw."""
    assert BARRIER is not None
    BARRIER.wait()
    return f"step saw {data['state_id']}"
