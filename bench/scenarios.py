"""The scenarios, spoken over Genie Flow's HTTP API, so they run unchanged against every target.

Every request that fails (a non-200 status, an ``error`` in the answer, a timeout) counts as a
failed turn: it is reported, never dropped from the figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

POLL_INTERVAL = 0.002
"""A Genie Flow client polls 2 ms apart."""
TURN_TIMEOUT = 60.0


SESSIONS_PER_CLIENT = 32
"""Many concurrent sessions are spread over several HTTP clients, as many people's would be.

One httpx client holding a thousand connections spends time in proportion to them on every request
(its pool scans them all): with 1,000 sessions it was the client, not the server, that was busy
(py-spy: 88% of the client's time in the pool's bookkeeping; starting the sessions took 35 s)."""


class Clients:
    """HTTP clients for concurrent sessions: session ``index`` speaks through ``clients[index]``."""

    def __init__(self, base_url: str, sessions: int) -> None:
        count = max(1, -(-sessions // SESSIONS_PER_CLIENT))
        limits = httpx.Limits(max_connections=SESSIONS_PER_CLIENT + 2)
        self._clients = [
            httpx.AsyncClient(base_url=base_url, timeout=TURN_TIMEOUT, limits=limits) for _ in range(count)
        ]

    def __getitem__(self, index: int) -> httpx.AsyncClient:
        return self._clients[(index // SESSIONS_PER_CLIENT) % len(self._clients)]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))


class TurnFailed(Exception):
    """A request answered something other than a good 200."""


@dataclass
class Timings:
    """Latencies (seconds) of the operations that worked, and the failures."""

    seconds: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    polls: int = 0
    """Polls the turns made (the event aside)."""

    def add_failure(self, error: BaseException | str) -> None:
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.append(str(error)[:300])

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)

        def percentile(p: float) -> float | None:
            if not ordered:
                return None
            return round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

        return {
            "count": len(ordered),
            "failures": self.failures,
            "p50_ms": percentile(50),
            "p90_ms": percentile(90),
            "p99_ms": percentile(99),
            "mean_ms": round(1000 * statistics.fmean(ordered), 3) if ordered else None,
            "polls_per_turn": round(self.polls / (len(ordered) + self.failures), 2)
            if ordered or self.failures
            else None,
            "errors": self.errors,
        }


async def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise TurnFailed(f"HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    if body.get("error"):
        raise TurnFailed(f"error: {str(body['error'])[:200]}")
    return body  # type: ignore[no-any-return]


async def start_session(client: httpx.AsyncClient, model_key: str) -> str:
    body = await _json(await client.post(f"/{model_key}/start_session"))
    return str(body["session_id"])


async def send(client: httpx.AsyncClient, model_key: str, session_id: str, event: str, text: str) -> dict[str, Any]:
    payload = {"session_id": session_id, "event": event, "event_input": text}
    return await _json(await client.post(f"/{model_key}/event", json=payload))


async def polled_turn(
    client: httpx.AsyncClient, model_key: str, session_id: str, text: str, counted: Timings | None = None
) -> str:
    """An event into the invoker state, then polls 2 ms apart until the answer (counted in ``counted``)."""
    answer = await send(client, model_key, session_id, "user_input", text)
    deadline = time.monotonic() + TURN_TIMEOUT
    while answer["next_actions"] == ["poll"]:
        if time.monotonic() > deadline:
            raise TurnFailed(f"no answer within {TURN_TIMEOUT} s")
        await asyncio.sleep(POLL_INTERVAL)
        if counted is not None:
            counted.polls += 1
        answer = await send(client, model_key, session_id, "poll", "")
    return str(answer.get("response"))


async def streamed_turn(client: httpx.AsyncClient, model_key: str, session_id: str, text: str) -> str:
    """The same turn over server-sent events (genie-graph): the last frame is the response."""
    payload = {"session_id": session_id, "event": "user_input", "event_input": text}
    last: dict[str, Any] | None = None
    async with client.stream("POST", f"/{model_key}/event/stream", json=payload) as response:
        if response.status_code != 200:
            raise TurnFailed(f"HTTP {response.status_code}")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "response":
                last = json.loads(line.removeprefix("data: "))
    if last is None or last.get("error"):
        raise TurnFailed(f"stream ended without a good response: {last}")
    return str(last.get("response"))


async def _timed(timings: Timings, operation: Callable[[], Awaitable[Any]]) -> None:
    began = time.perf_counter()
    try:
        await asyncio.wait_for(operation(), TURN_TIMEOUT)
    except Exception as exc:  # every failure is counted, whatever it is
        timings.add_failure(exc if str(exc) else type(exc).__name__)
    else:
        timings.seconds.append(time.perf_counter() - began)


async def start_latency(client: httpx.AsyncClient, count: int) -> Timings:
    timings = Timings()
    for _ in range(count):
        await _timed(timings, lambda: start_session(client, "qa"))
    return timings


async def turn_latency(client: httpx.AsyncClient, turns: int, streamed: bool = False) -> Timings:
    """Sequential full turns in one session (a fresh session every 20 turns)."""
    timings = Timings()
    session_id = ""
    for n in range(turns):
        if n % 20 == 0:
            session_id = await start_session(client, "qa")
        text = f"question {n}"
        if streamed:
            await _timed(timings, lambda: streamed_turn(client, "qa", session_id, text))  # noqa: B023
        else:
            await _timed(timings, lambda: polled_turn(client, "qa", session_id, text, timings))  # noqa: B023
    return timings


async def user_to_user(client: httpx.AsyncClient, count: int) -> Timings:
    timings = Timings()
    session_id = await start_session(client, "pingpong")
    for n in range(count):
        await _timed(timings, lambda: send(client, "pingpong", session_id, "user_input", f"page {n}"))  # noqa: B023
    return timings


async def _open_sessions(clients: Clients, sessions: int, model_key: str, timings: Timings) -> list[tuple[int, str]]:
    """Start ``sessions`` sessions at once: ``(index, session id)`` of those that started."""
    opened: list[tuple[int, str]] = []

    async def open_one(index: int) -> None:
        try:
            opened.append((index, await start_session(clients[index], model_key)))
        except Exception as exc:
            timings.add_failure(exc)

    await asyncio.gather(*(open_one(index) for index in range(sessions)))
    return opened


async def throughput(clients: Clients, sessions: int, seconds: float, model_key: str = "qa") -> dict[str, Any]:
    """``sessions`` clients, each turning its own session for ``seconds``: turns per second.

    The sessions are started first (not timed); then every client turns its session back to back.
    """
    timings = Timings()
    ids = await _open_sessions(clients, sessions, model_key, timings)
    stop_at = time.monotonic() + seconds

    async def one_client(index: int, session_id: str) -> None:
        client, n = clients[index], 0
        while time.monotonic() < stop_at:
            text = f"q {index}.{n}"
            await _timed(timings, lambda: polled_turn(client, model_key, session_id, text, timings))  # noqa: B023
            n += 1

    began = time.perf_counter()
    await asyncio.gather(*(one_client(index, session_id) for index, session_id in ids))
    elapsed = time.perf_counter() - began
    return {"sessions": sessions, "turns_per_s": round(len(timings.seconds) / elapsed, 2), **timings.summary()}


ARRIVALS_PER_SECOND = 20.0
"""How often a turn arrives while many sessions are alive: people typing, not a thundering herd."""


async def alive_at_once(clients: Clients, sessions: int, rss: Callable[[], int]) -> dict[str, Any]:
    """``sessions`` sessions alive at once, each taking one turn; then the server's memory.

    The sessions are all started first. Their turns then arrive at a steady ``ARRIVALS_PER_SECOND``
    (in a random order), as people's would: a thousand clients polling 2 ms apart at the same instant
    would measure only the queue they make, on any server.
    """
    timings = Timings()
    ids = await _open_sessions(clients, sessions, "qa", timings)
    random.Random(7).shuffle(ids)
    began = time.perf_counter()

    async def arrive(order: int, index: int, session_id: str) -> None:
        await asyncio.sleep(max(0.0, began + order / ARRIVALS_PER_SECOND - time.perf_counter()))
        await _timed(timings, lambda: polled_turn(clients[index], "qa", session_id, "hello"))

    await asyncio.gather(*(arrive(order, index, session_id) for order, (index, session_id) in enumerate(ids)))
    return {
        "sessions": sessions,
        "arrivals_per_s": ARRIVALS_PER_SECOND,
        "rss_mb": round(rss() / 2**20, 1),
        **timings.summary(),
    }


async def slow_llm(clients: Clients, sessions: int) -> dict[str, Any]:
    """``sessions`` turns at once into a 1.5 s invoker: the wall time shows whether waits block each other."""
    timings = Timings()
    ids = await _open_sessions(clients, sessions, "qa_slow", timings)
    began = time.perf_counter()
    await asyncio.gather(
        *(
            _timed(timings, lambda i=i, sid=sid: polled_turn(clients[i], "qa_slow", sid, "slow", timings))  # type: ignore[misc]
            for i, sid in ids
        )
    )
    return {"sessions": sessions, "wall_s": round(time.perf_counter() - began, 2), **timings.summary()}


async def storage(client: httpx.AsyncClient, stored: Callable[[], int], checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """Bytes one session adds to the store after each number of turns (everything it leaves)."""
    before = stored()
    session_id = await start_session(client, "qa")
    sizes: dict[int, int] = {}
    failures = Timings()
    for turn in range(1, max(checkpoints) + 1):
        await _timed(failures, lambda: polled_turn(client, "qa", session_id, f"question {turn} " + "x" * 20))  # noqa: B023
        if turn in checkpoints:
            sizes[turn] = stored() - before
    return {"bytes_by_turns": sizes, "failures": failures.failures, "errors": failures.errors}
