"""``python -m bench all [--quick] [--targets ...]``: every scenario against every target, in one run.

Starts each target's stack itself, runs the scenarios over HTTP, stops it, then measures
genie-graph's in-process overhead over a hand-written LangGraph graph, and the Celery hop alone
(``bench.celery_hop``). Writes
``bench/results/<date>.json`` (raw), ``<date>.md`` (the table with ratios) and ``<date>-*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from bench import celery_hop, processes, scenarios
from bench.inprocess import overhead
from bench.report import markdown, plots
from bench.targets import GenieFlowPeer, GenieGraphEmbedded, GenieGraphRedis, LangGraphBare, Target, setup_genie_flow

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("genie-graph", "genie-graph-redis", "langgraph-bare", "genie-flow")


@dataclass(frozen=True)
class Config:
    """How much of each scenario a run does."""

    starts: int
    turns: int
    user_events: int
    concurrency: tuple[int, ...]
    seconds_per_level: float
    storage_turns: tuple[int, ...]
    alive: int
    slow: int
    overhead_sessions: int
    hops: int
    process_seconds: float
    process_rounds: int


QUICK = Config(
    starts=20,
    turns=20,
    user_events=20,
    concurrency=(4, 16),
    seconds_per_level=2.0,
    storage_turns=(1, 10),
    alive=50,
    slow=8,
    overhead_sessions=4,
    hops=20,
    process_seconds=1.0,
    process_rounds=1,
)
FULL = Config(
    starts=200,
    turns=200,
    user_events=200,
    concurrency=(16, 64, 256),
    seconds_per_level=10.0,
    storage_turns=(1, 10, 50, 100),
    alive=1000,
    slow=64,
    overhead_sessions=40,
    hops=500,
    process_seconds=5.0,
    process_rounds=2,
)


def _make(name: str) -> Target:
    targets = {
        "genie-graph": GenieGraphEmbedded,
        "genie-graph-redis": GenieGraphRedis,
        "langgraph-bare": LangGraphBare,
        "genie-flow": GenieFlowPeer,
    }
    return targets[name]()


async def _measure(target: Target, config: Config, progress: tqdm) -> dict[str, Any]:
    most = max(config.alive, max(config.concurrency), config.slow)
    async with (
        httpx.AsyncClient(base_url=target.base_url, timeout=scenarios.TURN_TIMEOUT) as client,
        scenarios.Clients(target.base_url, most) as clients,
    ):
        result: dict[str, Any] = {}

        async def step(label: str, work: Any) -> Any:
            progress.set_postfix_str(f"{target.name}: {label}")
            value = await work
            progress.update(1)
            return value

        # Storage first, on a store holding no other session: a shared structure that grows by doubling
        # (Redis's index of sessions crossing a power of two) would be charged to whichever session
        # crossed it (+8 KB for one session in a run that measured it after the others).
        result["storage"] = await step("storage", scenarios.storage(client, target.stored_bytes, config.storage_turns))
        result["start"] = (await step("start_session", scenarios.start_latency(client, config.starts))).summary()
        result["turn"] = (await step("turn", scenarios.turn_latency(client, config.turns))).summary()
        if target.streams:
            sse = await step("turn over SSE", scenarios.turn_latency(client, config.turns, streamed=True))
            result["turn_sse"] = sse.summary()
        else:
            progress.update(1)
        result["user_to_user"] = (await step("user→user", scenarios.user_to_user(client, config.user_events))).summary()
        result["throughput"] = []
        for level in config.concurrency:
            measured = await step(f"{level} sessions", scenarios.throughput(clients, level, config.seconds_per_level))
            result["throughput"].append(measured)
        result["alive"] = await step(
            f"{config.alive} alive", scenarios.alive_at_once(clients, config.alive, target.rss_bytes)
        )
        result["slow"] = await step("qa_slow", scenarios.slow_llm(clients, config.slow))
        return result


def run(names: list[str], config: Config, out: Path, redis_for_overhead: bool = True) -> Path:
    """Run everything; returns the JSON file written."""
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "config": asdict(config),
        "targets": {},
    }
    steps_per_target = 7 + len(config.concurrency)
    with tqdm(total=steps_per_target * len(names) + 1, desc="bench", file=sys.stderr, leave=True) as progress:
        redis_url: str | None = None
        for name in names:
            target = _make(name)
            if isinstance(target, GenieFlowPeer) and (missing := GenieFlowPeer.available()):
                results["targets"][name] = {"error": missing}
                progress.update(steps_per_target)
                continue
            progress.set_postfix_str(f"{name}: starting")
            try:
                target.start()
                results["targets"][name] = asyncio.run(_measure(target, config, progress))
            except Exception as exc:  # a target that cannot run is reported, not hidden
                results["targets"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                target.stop()
        progress.set_postfix_str("in process: genie-graph vs hand-written LangGraph; the Celery hop; 2 processes")
        redis_server = None
        if redis_for_overhead:
            import tempfile

            from tests.services import RedisServer

            redis_server = RedisServer(Path(tempfile.mkdtemp(prefix="genie-graph-bench-redis-"))).start()
            redis_url = redis_server.url
        try:
            results["overhead"] = overhead(config.overhead_sessions, redis_url)
            if redis_url is not None:
                results["celery_hop"] = celery_hop.measure(redis_url, config.hops)
            results["processes"] = processes.measure(config.process_seconds, config.process_rounds)
        finally:
            if redis_server is not None:
                redis_server.stop()
        progress.update(1)
    out.mkdir(parents=True, exist_ok=True)
    stem = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    raw = out / f"{stem}.json"
    raw.write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(markdown(results))
    plots(results, out, stem)
    return raw


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("command", choices=["all"], help="run every scenario against every target")
    parser.add_argument("--quick", action="store_true", help="small counts, under two minutes (for CI)")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)} (all)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where results go ({RESULTS})")
    parser.add_argument("--setup-genie-flow", action="store_true", help="make Genie Flow's venv first (PyPI)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown or not names:
        parser.error(f"unknown target(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TARGETS)}")
    if args.setup_genie_flow:
        setup_genie_flow()
    began = time.monotonic()
    raw = run(names, QUICK if args.quick else FULL, args.out)
    print(raw.with_suffix(".md").read_text())
    print(f"results: {raw} (+ .md and -*.png beside it), in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
