"""Bytes one session takes in the embedded SQLite store after 1, 10, 50 and 100 turns.

A turn is the benchmark's Q&A turn: a user question into the invoker state, the answer back
into the user state. Run: ``python -m bench.storage [--keep N ...]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from genie_graph import EventInput, GenieFlow
from graphs import create_flow

CHECKPOINTS = (1, 10, 50, 100)


_WORDS = (
    "about above across after again against almost along already also always among another answer "
    "anything around asked away back because become before began behind being below best better between "
    "both brought build called came cannot carry certain change children city close come could country "
    "course during early earth enough even every example family father feel few find first follow food "
    "form found four friend from gave give going good great group grow half hand hard have head hear help "
    "here high himself home house however idea important inside itself just keep kind knew know land large "
    "last later learn leave left less letter life light line little live long look made make many mean "
    "might mile more most mother move much must name near need never next night nothing number often once "
    "only open order other over own paper part people perhaps place plant point possible present problem "
    "question quite rather read ready real right river road room said same school second seem several "
    "should show side since small something sound space stand start state still story study such sure "
    "take tell than their them there these thing think those though thought three through together took "
    "toward tree turn under until upon usually very walk want watch water well went were what when where "
    "which while white whole why will with without word work world would write year young"
).split()


def question(turn: int, text: str) -> str:
    """The user's text of one turn: alike each turn, or random words (compresses like real text)."""
    if text == "alike":
        return f"question {turn} " + "x" * 20
    rng = random.Random(turn)
    return " ".join(rng.choice(_WORDS) for _ in range(12)) + "?"


def measure(keep: int, turns: int = max(CHECKPOINTS), text: str = "alike") -> dict[str, object]:
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
            EventInput(session_id=session_id, event="user_input", event_input=question(turn, text)),
        )
        flow.wait_until_ready(session_id)
        turn_seconds.append(time.perf_counter() - began)
        if turn in CHECKPOINTS:
            sizes[turn] = flow.session_bytes("q_and_a", session_id)
    flow.close()
    rows = (
        sqlite3.connect(db).execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (session_id,)).fetchone()[0]
    )
    return {
        "keep_checkpoints": keep,
        "text": text,
        "bytes_by_turns": sizes,
        "checkpoints_kept": rows,
        "turn_ms_first_10": round(1000 * sum(turn_seconds[:10]) / 10, 2),
        "turn_ms_last_10": round(1000 * sum(turn_seconds[-10:]) / 10, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=int, nargs="*", default=[1, 4, 12])
    parser.add_argument("--text", choices=["alike", "random"], nargs="*", default=["alike", "random"])
    args = parser.parse_args()
    for text in args.text:
        for keep in args.keep:
            print(json.dumps(measure(keep, text=text)))


if __name__ == "__main__":
    main()
