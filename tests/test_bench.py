"""The benchmark harness in quick mode against genie-graph and the hand-written LangGraph floor: well-formed
results and plots (no timings judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_results_a_table_and_plots(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    targets = "genie-graph,langgraph-bare"
    command = [sys.executable, "-m", "bench", "all", "--quick", "--targets", targets, "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (raw,) = tmp_path.glob("*.json")
    results = json.loads(raw.read_text())
    measured = results["targets"]["genie-graph"]
    for scenario in ("start", "turn", "turn_sse", "user_to_user", "alive", "slow"):
        assert {"count", "failures", "p50_ms", "p99_ms"} <= set(measured[scenario]), scenario
        assert measured[scenario]["count"] > 0
    assert [level["sessions"] for level in measured["throughput"]] == results["config"]["concurrency"]
    assert all(level["turns_per_s"] > 0 for level in measured["throughput"])
    sizes = measured["storage"]["bytes_by_turns"]
    assert [int(turns) for turns in sizes] == results["config"]["storage_turns"] and all(sizes.values())
    floor = results["targets"]["langgraph-bare"]  # the hand-written graph behind a minimal app
    for scenario in ("start", "turn", "user_to_user", "alive", "slow"):
        assert floor[scenario]["count"] > 0 and floor[scenario]["failures"] == 0, (scenario, floor[scenario])
    assert all(level["turns_per_s"] > 0 for level in floor["throughput"])
    assert all(floor["storage"]["bytes_by_turns"].values())
    assert {row["checkpointer"] for row in results["overhead"]} == {"memory", "sqlite", "redis"}
    assert all(row["ratio"] > 0 for row in results["overhead"])
    hop = results["celery_hop"]  # the Celery hop alone, on a real worker
    assert hop["count"] > 0 and hop["failures"] == 0 and hop["p50_ms"] > 0, hop
    spread = results["processes"]  # the floor on one server process and on two
    for count in (1, 2):
        row = spread[f"processes_{count}"]
        assert row["failures"] == 0 and all(rate > 0 for rate in row["turns_per_s"]), row
    table = raw.with_suffix(".md").read_text()
    assert "| full turn p50 (polled 2 ms) |" in table and "failed or hung turns" in table
    assert "The Celery hop alone" in table and "A second server process" in table
    plots = sorted(tmp_path.glob("*.png"))
    assert len(plots) == 2
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "results:" in done.stdout
