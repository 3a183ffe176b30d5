"""Does a second server process carry more turns on this machine? The floor's answer.

The throughput target (turns per second at 16 sessions, 3× Genie Flow's) is missed on one server
process, and so it is by langgraph-bare, the same flows hand-written on the same uvicorn, FastAPI and
SQLite saver. A second embedded server process would need the session lock, run leases and feed
that only Redis shares between processes today. Before building that, this measures what a second
process gives the floor: 16 sessions turning back to back on one langgraph-bare server, then spread
over two (on the one SQLite file, as a load balancer would spread them), alternating, with the
servers' busy cores beside. Run: ``python -m bench.processes`` (starts its own servers).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from bench import scenarios
from bench.targets import LangGraphBare, cpu_seconds

SESSIONS = 16


class _Spread:
    """Session ``index`` speaks to server ``index % len(servers)``, each through its own clients."""

    def __init__(self, base_urls: list[str], sessions: int) -> None:
        self._clients = [scenarios.Clients(url, sessions) for url in base_urls]

    def __getitem__(self, index: int) -> httpx.AsyncClient:
        return self._clients[index % len(self._clients)][index]

    async def __aenter__(self) -> _Spread:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for clients in self._clients:
            await clients.__aexit__(*exc)


async def _turns_per_second(servers: list[LangGraphBare], seconds: float) -> tuple[float, float, int]:
    """Turns/s at :data:`SESSIONS` sessions, the servers' busy cores meanwhile, and failed turns."""
    pids = [server.process.pid for server in servers if server.process is not None]
    async with _Spread([server.base_url for server in servers], SESSIONS) as clients:
        await scenarios.throughput(clients, SESSIONS, min(1.0, seconds))  # type: ignore[arg-type]  # (warm)
        began, cpu = time.perf_counter(), sum(map(cpu_seconds, pids))
        measured = await scenarios.throughput(clients, SESSIONS, seconds)  # type: ignore[arg-type]
        cores = (sum(map(cpu_seconds, pids)) - cpu) / (time.perf_counter() - began)
    return float(measured["turns_per_s"]), cores, int(measured["failures"])


def measure(seconds: float = 5.0, rounds: int = 2) -> dict[str, Any]:
    """16 sessions on one langgraph-bare server and on two, ``rounds`` times each, alternating."""
    runs: dict[int, list[tuple[float, float, int]]] = {1: [], 2: []}
    for _ in range(rounds):
        for count in (1, 2):
            first = LangGraphBare().start()
            servers = [first] + [LangGraphBare(place=first.place).start() for _ in range(count - 1)]
            try:
                runs[count].append(asyncio.run(_turns_per_second(servers, seconds)))
            finally:
                for server in servers:
                    server.stop()
    return {
        "sessions": SESSIONS,
        "seconds": seconds,
        **{
            f"processes_{count}": {
                "turns_per_s": [run[0] for run in measured],
                "server_cores": [round(run[1], 2) for run in measured],
                "failures": sum(run[2] for run in measured),
                "median_turns_per_s": round(statistics.median(run[0] for run in measured), 1),
            }
            for count, measured in runs.items()
        },
    }


def main() -> None:
    result = measure()
    for count in (1, 2):
        row = result[f"processes_{count}"]
        print(
            f"langgraph-bare on {count} server process(es), {SESSIONS} sessions: {row['turns_per_s']} turns/s, "
            f"servers busy {row['server_cores']} cores, {row['failures']} failed"
        )


if __name__ == "__main__":
    main()
