"""The Celery hop alone: a task queued on Redis, taken by a worker, which tells the sender it ran.

The Redis + Celery turn hands its invoker state to a worker and waits for the worker's word. This
times that hand-over with nothing in it (no graph, no checkpoint, no HTTP), on a Celery configured
as genie-graph's runner configures it (``genie_graph._celery.CELERY_SETTINGS``: late acks,
prefetch 1; a threads pool), so the README can say how much of a Redis turn the hop alone takes.
Run: ``python -m bench.celery_hop`` (starts its own Redis and worker).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery  # type: ignore[import-untyped]

from genie_graph._celery import CELERY_SETTINGS

QUEUE = "bench-hop"
BROKER_ENV = "BENCH_HOP_BROKER"

app = Celery("bench_hop", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"), set_as_current=False)
app.conf.update(task_default_queue=QUEUE, **CELERY_SETTINGS)
_replies: redis.Redis | None = None


@app.task(name="bench.hop")  # type: ignore[untyped-decorator]
def hop(reply_key: str) -> None:
    """Tell the sender, on ``reply_key``, that the task ran."""
    global _replies
    if _replies is None:
        _replies = redis.Redis.from_url(app.conf.broker_url)
    _replies.lpush(reply_key, b"1")


def measure(redis_url: str, hops: int = 200) -> dict[str, Any]:
    """Start a worker on ``redis_url``, time ``hops`` hops (after 20 to warm up) and stop it."""
    from tests.services import python_process, terminate

    log = Path(tempfile.mkdtemp(prefix="genie-graph-bench-hop-")) / "worker.log"
    env = {BROKER_ENV: redis_url}
    worker = python_process(
        [
            "-m",
            "celery",
            "-A",
            "bench.celery_hop",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "-Q",
            QUEUE,
            "--loglevel",
            "INFO",
        ],
        env=env,
        log=log,
    )
    client = redis.Redis.from_url(redis_url)
    app.conf.broker_url = redis_url
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hop worker did not start; see {log}")
            time.sleep(0.05)
        seconds: list[float] = []
        failures = 0
        for n in range(hops + 20):
            key = f"bench:hop:{uuid.uuid4().hex}"
            began = time.perf_counter()
            app.send_task("bench.hop", args=[key], queue=QUEUE)
            if client.brpop([key], timeout=10) is None:
                failures += 1
                continue
            if n >= 20:
                seconds.append(time.perf_counter() - began)
        ordered = sorted(seconds)
        return {
            "count": len(ordered),
            "failures": failures,
            "p50_ms": round(1000 * statistics.median(ordered), 3) if ordered else None,
            "p90_ms": round(1000 * ordered[int(0.9 * len(ordered))], 3) if ordered else None,
        }
    finally:
        client.close()
        terminate(worker)


def main() -> int:
    from tests.services import RedisServer

    server = RedisServer(Path(tempfile.mkdtemp(prefix="genie-graph-bench-redis-"))).start()
    try:
        print(measure(server.url))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
