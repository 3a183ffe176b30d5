"""A run's results as a Markdown table with ratios, and PNG plots (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.scenarios import ARRIVALS_PER_SECOND

BASELINE = "genie-flow"


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:.1f}"


def _ratio(ours: Any, theirs: Any, higher_is_better: bool = False) -> str:
    if not ours or not theirs:
        return ""
    ratio = ours / theirs
    return f" ({ratio:.2f}×)" if not higher_is_better else f" ({ratio:.1f}×)"


def markdown(results: dict[str, Any]) -> str:
    """The summary table: one column per target; ratios against Genie Flow when it ran."""
    targets: dict[str, Any] = results["targets"]
    names = list(targets)
    base = targets.get(BASELINE) if BASELINE in targets and "error" not in targets[BASELINE] else None
    header = "| scenario | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows: list[str] = []

    def row(label: str, pick: Any, fmt: Any = _ms, higher_is_better: bool = False) -> None:
        cells = []
        for name in names:
            result = targets[name]
            value = pick(result) if "error" not in result else None
            cell = fmt(value)
            if base is not None and name != BASELINE and value is not None:
                cell += _ratio(value, pick(base), higher_is_better)
            cells.append(cell)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def get(*path: Any) -> Any:
        def pick(result: dict[str, Any]) -> Any:
            value: Any = result
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return None
                value = value[key]
            return value

        return pick

    row("start_session p50", get("start", "p50_ms"))
    row("full turn p50 (polled 2 ms)", get("turn", "p50_ms"))
    row("full turn p99 (polled 2 ms)", get("turn", "p99_ms"))
    row("… polls per turn", get("turn", "polls_per_turn"), _count)
    row("full turn p50 (SSE)", get("turn_sse", "p50_ms"))
    row("user→user p50", get("user_to_user", "p50_ms"))
    for level in results["config"]["concurrency"]:
        row(
            f"turns/s at {level} sessions",
            lambda r, level=level: next(
                (t["turns_per_s"] for t in r.get("throughput", []) if t["sessions"] == level), None
            ),
            lambda v: "—" if v is None else f"{v:.1f}",
            higher_is_better=True,
        )
    for turns in results["config"]["storage_turns"]:
        row(
            f"bytes per session after {turns} turns",
            lambda r, turns=turns: (
                (r.get("storage", {}).get("bytes_by_turns") or {}).get(str(turns))
                or (r.get("storage", {}).get("bytes_by_turns") or {}).get(turns)
            ),
            lambda v: "—" if v is None else f"{v / 1024:.1f} KB",
        )
    row(
        f"{results['config']['alive']} sessions alive, a turn every {1000 / ARRIVALS_PER_SECOND:.0f} ms: p99 turn",
        get("alive", "p99_ms"),
    )
    row("… server RSS", get("alive", "rss_mb"), lambda v: "—" if v is None else f"{v:.0f} MB")
    row(
        f"qa_slow (1.5 s LLM), {results['config']['slow']} at once: wall time",
        get("slow", "wall_s"),
        lambda v: "—" if v is None else f"{v:.2f} s",
    )
    row("… polls per turn", get("slow", "polls_per_turn"), _count)
    failures = []
    for name in names:
        result = targets[name]
        if "error" in result:
            failures.append(f"- **{name}** did not run: {result['error']}")
            continue
        count = sum(
            part.get("failures", 0)
            for part in [*(v for v in result.values() if isinstance(v, dict)), *result.get("throughput", [])]
        )
        failures.append(f"- **{name}**: {count} failed or hung turns")
    table = header + "\n".join(rows) + "\n"
    overhead = results.get("overhead") or []
    if overhead:
        table += "\n| in process, 5-turn sessions | hand-written LangGraph p50 | genie-graph p50 | ratio |\n"
        table += "|---|---|---|---|\n"
        for line in overhead:
            table += (
                f"| {line['checkpointer']} | {_ms(line['langgraph_p50_ms'])} | {_ms(line['genie_graph_p50_ms'])} "
                f"| {line['ratio']}× |\n"
            )
    hop = results.get("celery_hop")
    if hop and hop.get("p50_ms") is not None:
        table += (
            f"\nThe Celery hop alone (a task queued on Redis, run by a threads worker, which tells the sender): "
            f"p50 {_ms(hop['p50_ms'])}, p90 {_ms(hop['p90_ms'])}, "
            f"{hop['failures']} lost of {hop['count'] + hop['failures']}.\n"
        )
    spread = results.get("processes")
    if spread:
        one, two = spread["processes_1"], spread["processes_2"]
        table += (
            f"\nA second server process (langgraph-bare, {spread['sessions']} sessions spread over two servers on "
            f"one SQLite file): {_rates(one)} turns/s on one, {_rates(two)} on two; the servers kept "
            f"{_rates(one, 'server_cores')} and {_rates(two, 'server_cores')} cores busy.\n"
        )
    return table + "\n" + "\n".join(failures) + "\n"


def _rates(row: dict[str, Any], key: str = "turns_per_s") -> str:
    return " / ".join(f"{value:.1f}" if key == "turns_per_s" else f"{value:.2f}" for value in row[key])


def plots(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    """Latency percentiles and turns/s against concurrency, storage against turns: PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = {name: result for name, result in results["targets"].items() if "error" not in result}
    written: list[Path] = []

    figure, (latency, rate) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_levels: set[int] = set()
    for index, (name, result) in enumerate(targets.items()):
        levels = [t["sessions"] for t in result.get("throughput", [])]
        if not levels:
            continue
        all_levels.update(levels)
        color = colors[index % len(colors)]
        for percentile, style in (("p50_ms", "-"), ("p99_ms", "--")):
            values = [t[percentile] for t in result["throughput"]]
            latency.plot(levels, values, style, color=color, marker="o", label=f"{name} {percentile[:3]}")
        rate.plot(levels, [t["turns_per_s"] for t in result["throughput"]], color=color, marker="o", label=name)
    latency.set(
        xlabel="concurrent sessions", ylabel="turn latency (ms)", xscale="log", yscale="log", title="Turn latency"
    )
    rate.set(xlabel="concurrent sessions", ylabel="turns per second", xscale="log", title="Throughput")
    for axis in (latency, rate):
        axis.set_xticks(sorted(all_levels), [str(level) for level in sorted(all_levels)])
        axis.minorticks_off()
    latency.legend(fontsize=7)
    rate.legend(fontsize=7)
    figure.tight_layout()
    path = directory / f"{stem}-concurrency.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, result in targets.items():
        sizes = result.get("storage", {}).get("bytes_by_turns") or {}
        if sizes:
            turns = sorted(int(turn) for turn in sizes)
            axis.plot(turns, [sizes.get(str(t), sizes.get(t)) / 1024 for t in turns], marker="o", label=name)
    axis.set(xlabel="turns", ylabel="KB per session", title="Storage per session")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = directory / f"{stem}-storage.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written
