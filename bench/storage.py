"""Bytes one session takes in the embedded SQLite store after 1, 10, 50 and 100 turns.

A turn is the benchmark's Q&A turn: a user question into the invoker state, the answer back
into the user state. Run: ``python -m bench.storage [--keep N ...]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from genie_graph import EventInput, GenieFlow
from graphs import create_flow

CHECKPOINTS = (1, 10, 50, 100)


def measure(keep: int, turns: int = max(CHECKPOINTS)) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix="genie-graph-storage-"))
    db = directory / "sessions.sqlite"
    flow: GenieFlow = create_flow(f"sqlite:///{db}", keep_checkpoints=keep)
    sizes: dict[int, int] = {}
    started = flow.create_new_session("q_and_a")
    session_id = started.session_id
    turn_seconds: list[float] = []
    for turn in range(1, turns + 1):
        began = time.perf_counter()
        flow.process_event(
            "q_and_a",
            EventInput(session_id=session_id, event="user_input", event_input=f"question {turn} " + "x" * 20),
        )
        flow.wait_until_ready(session_id)
        turn_seconds.append(time.perf_counter() - began)
        if turn in CHECKPOINTS:
            sizes[turn] = flow.session_bytes("q_and_a", session_id)
    flow.close()
    rows = (
        sqlite3.connect(db)
        .execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (session_id,))
        .fetchone()[0]
    )
    return {
        "keep_checkpoints": keep,
        "bytes_by_turns": sizes,
        "checkpoints_kept": rows,
        "turn_ms_first_10": round(1000 * sum(turn_seconds[:10]) / 10, 2),
        "turn_ms_last_10": round(1000 * sum(turn_seconds[-10:]) / 10, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=int, nargs="*", default=[1, 4, 12])
    args = parser.parse_args()
    for keep in args.keep:
        print(json.dumps(measure(keep)))


if __name__ == "__main__":
    main()
