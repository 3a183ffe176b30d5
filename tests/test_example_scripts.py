"""The scripted conversations shipped beside the example flows (``graphs/*.genie.yaml``), run through
``genie_graph.testing`` as ``genie-graph test`` runs them: each passes, and together they take every
transition and condition outcome of every example."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import graphs
from genie_graph.testing import ScriptRunner, TransitionCoverage, find_scripts, load_scripts

SCRIPT_FILES = find_scripts(Path(graphs.__file__).resolve().parent, recursive=False)
SCRIPTS = [(path, script) for path in SCRIPT_FILES for script in load_scripts(path)]


@pytest.fixture(scope="module")
def runner() -> Iterator[ScriptRunner]:
    with ScriptRunner(graphs.create_flow) as runner:
        yield runner


def test_every_example_ships_scripts() -> None:
    assert sorted(path.name for path in SCRIPT_FILES) == sorted(f"{key}.genie.yaml" for key in graphs.MODELS)


@pytest.mark.parametrize(("path", "script"), SCRIPTS, ids=[f"{p.name}::{s.name}" for p, s in SCRIPTS])
def test_example_script_passes(runner: ScriptRunner, path: Path, script: object) -> None:
    runner.run(script)  # type: ignore[arg-type]


def test_example_scripts_cover_every_transition_and_condition() -> None:
    coverage = TransitionCoverage()
    flow = graphs.create_flow("memory://")
    coverage.declare_flow(flow)
    with ScriptRunner(flow, coverage=coverage) as runner:
        for path in SCRIPT_FILES:
            runner.run_file(path, raise_on_failure=True)
    flow.close()
    report = coverage.report()
    assert coverage.never_run() == [], report
    assert coverage.conditions_never_failed() == [], report
    assert coverage.percent() == 100.0, report
    assert set(coverage.model_keys) == set(graphs.MODELS)
