"""pytest plugin for genie-graph flows; opt in with ``pytest -p genie_graph.testing.pytest_plugin``
or ``pytest_plugins = ["genie_graph.testing.pytest_plugin"]`` in a ``conftest.py``.

* Script files (``*.genie.yaml``) are collected as tests, one per script, and run against the
  flow that ``--genie-flow`` or the ini option ``genie_flow`` names (``package.module:attribute``:
  a ``GenieFlow`` or a function building one, e.g. ``graphs:create_flow``).
* Fixtures: ``genie_flow`` (that flow; override it in a conftest), ``genie_script_runner``
  (a :class:`~genie_graph.testing.ScriptRunner` on it, counting coverage) and
  ``transition_coverage`` (the run's :class:`~genie_graph.testing.TransitionCoverage`).
* ``--genie-coverage`` prints the transition coverage after the run; ``--genie-fail-under N``
  fails the run when it is under N percent. Counts from pytest-xdist workers are merged.

Example:
    ``pytest -p genie_graph.testing.pytest_plugin --genie-flow graphs:create_flow --genie-coverage graphs/``
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .._imports import import_object
from .._runtime import GenieFlow
from ..errors import GenieGraphError
from ._coverage import TransitionCoverage
from ._runner import FlowSource, ScriptFailure, ScriptRunner
from ._script import Script, ScriptError, is_script_file, load_scripts

_COVERAGE = pytest.StashKey[TransitionCoverage]()
_RUNNERS = pytest.StashKey[dict[str, ScriptRunner]]()
_VERDICT = pytest.StashKey[str]()
_WORKER_KEY = "genie_graph_transition_coverage"
_HOW = "pass --genie-flow package.module:attribute, set the ini option genie_flow, or override the genie_flow fixture"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("genie-graph", "genie-graph scripted conversations")
    group.addoption(
        "--genie-flow",
        metavar="MODULE:ATTR",
        default=None,
        help="the GenieFlow (or a function building one) that *.genie.yaml scripts run against",
    )
    group.addoption(
        "--genie-coverage", action="store_true", default=False, help="print the transition coverage of the scripts"
    )
    group.addoption(
        "--genie-fail-under",
        type=float,
        default=None,
        metavar="N",
        help="fail the run when the scripts' transition coverage is under N percent",
    )
    parser.addini("genie_flow", "package.module:attribute of the flow *.genie.yaml scripts run against", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_COVERAGE] = TransitionCoverage()
    config.stash[_RUNNERS] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    for runner in config.stash.get(_RUNNERS, {}).values():
        runner.close()


def _flow_spec(config: pytest.Config) -> str | None:
    spec = config.getoption("genie_flow") or config.getini("genie_flow")
    return str(spec).strip() or None


def load_flow_source(spec: str) -> FlowSource:
    """The ``GenieFlow``, or the function building one, that ``package.module:attribute`` names.

    Raises:
        ScriptError: it cannot be imported, or is neither.
    """
    try:
        target = import_object(spec)
    except GenieGraphError as exc:
        raise ScriptError(f"genie flow {spec!r}: {exc}; {_HOW}") from exc
    if isinstance(target, GenieFlow) or (callable(target) and not isinstance(target, type)):
        return target
    raise ScriptError(f"genie flow {spec!r} is a {type(target).__name__}, not a GenieFlow or a function building one")


def _shared_runner(config: pytest.Config) -> ScriptRunner:
    spec = _flow_spec(config)
    if spec is None:
        raise ScriptError(f"no flow to run the scripts against: {_HOW}")
    runners = config.stash[_RUNNERS]
    if spec not in runners:
        runners[spec] = ScriptRunner(load_flow_source(spec), coverage=config.stash[_COVERAGE])
    return runners[spec]


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def transition_coverage(pytestconfig: pytest.Config) -> TransitionCoverage:
    """The run's transition coverage: collected scripts and ``genie_script_runner`` add to it."""
    return pytestconfig.stash[_COVERAGE]


@pytest.fixture(scope="session")
def genie_flow(pytestconfig: pytest.Config) -> FlowSource:
    """The flow scripts run against (``--genie-flow`` / ini ``genie_flow``); override it in a conftest."""
    spec = _flow_spec(pytestconfig)
    if spec is None:
        pytest.fail(f"genie_flow fixture: no flow configured; {_HOW}", pytrace=False)
    try:
        return load_flow_source(spec)
    except ScriptError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def genie_script_runner(genie_flow: FlowSource, transition_coverage: TransitionCoverage) -> Iterator[ScriptRunner]:
    """A :class:`ScriptRunner` on ``genie_flow`` that counts into ``transition_coverage``.

    Example:
        >>> def test_stop(genie_script_runner):  # doctest: +SKIP
        ...     genie_script_runner.run([{"say": "*STOP*", "state": "outro"}], "q_and_a_cond")
    """
    with ScriptRunner(genie_flow, coverage=transition_coverage) as runner:
        yield runner


# ---- script files as tests ----------------------------------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_script_file(file_path):
        return GenieScriptFile.from_parent(parent, path=file_path)
    return None


class GenieScriptFile(pytest.File):
    """A ``*.genie.yaml`` file: one test per script."""

    def collect(self) -> Iterator[GenieScriptItem]:
        try:
            scripts = load_scripts(self.path)
        except ScriptError as exc:
            raise self.CollectError(str(exc)) from None
        for script in scripts:
            yield GenieScriptItem.from_parent(self, name=script.name, script=script)


class GenieScriptItem(pytest.Item):
    """One script of a script file, run against the configured flow."""

    def __init__(self, *, script: Script, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script = script

    def runtest(self) -> None:
        _shared_runner(self.config).run(self.script)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScriptFailure | ScriptError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, (self.script.line or 1) - 1, f"genie script: {self.script.name}"


# ---- the coverage report ------------------------------------------------------------------------
@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: add a worker's counts to the controller's."""
    data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if data:
        node.config.stash[_COVERAGE].merge_dict(data)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    coverage = config.stash[_COVERAGE]
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller reports
        workeroutput[_WORKER_KEY] = coverage.to_dict()
        return
    threshold = config.getoption("genie_fail_under")
    if threshold is not None:
        percent = coverage.percent()
        if percent + 1e-9 < threshold:
            config.stash[_VERDICT] = (
                f"FAIL: genie-graph transition coverage {percent:.1f}% is under --genie-fail-under {threshold:g}"
            )
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        else:
            config.stash[_VERDICT] = (
                f"genie-graph transition coverage {percent:.1f}% (--genie-fail-under {threshold:g})"
            )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None:
        return
    coverage = config.stash[_COVERAGE]
    if config.getoption("genie_coverage"):
        terminalreporter.write_sep("-", "genie-graph transition coverage")
        terminalreporter.write_line(coverage.report() if coverage.model_keys else "no scripts ran")
    verdict = config.stash.get(_VERDICT, None)
    if verdict is not None:
        terminalreporter.write_line(verdict, red=verdict.startswith("FAIL"), bold=True)
