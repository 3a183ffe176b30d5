"""``genie-graph test``: run script files against the flow, report each, and the transition coverage."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .._runtime import GenieFlow
from ..errors import GenieGraphError
from ._coverage import TransitionCoverage
from ._runner import ScriptRunner
from ._script import ScriptError, _display_path, find_scripts, load_scripts


class NoScriptsFound(ScriptError):
    """No script file was found where ``genie-graph test`` looked."""


def flow_directory(flow_spec: str) -> Path:
    """The directory of the module a ``--flow`` spec (``package.module:attribute``) names: where its scripts live."""
    module = importlib.import_module(flow_spec.partition(":")[0])
    location = getattr(module, "__file__", None)
    if location is None:  # a namespace package
        return Path(next(iter(module.__path__)))
    return Path(location).resolve().parent


def _indented(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def run_test_command(
    flow: GenieFlow,
    flow_spec: str,
    paths: Sequence[str],
    *,
    coverage: bool,
    fail_under: float | None,
    select: str | None,
    out: TextIO,
) -> int:
    """Run script files (default: ``*.genie.yaml`` beside the flow's module) and print the outcome.

    Returns:
        0 when every script passed (and coverage reached ``fail_under``), else 1.

    Raises:
        NoScriptsFound: no script file where it looked, or none selected.
    """
    if paths:
        try:
            files = find_scripts(*paths)
        except ScriptError as exc:  # a path that does not exist: a usage error
            raise NoScriptsFound(str(exc)) from exc
        where = ", ".join(paths)
    else:
        directory = flow_directory(flow_spec)
        files = find_scripts(directory, recursive=False)
        where = f"{_display_path(directory)} (beside {flow_spec})"
    if not files:
        raise NoScriptsFound(
            f"no script files (*.genie.yaml) in {where}; write some beside the flow, or give their paths"
        )
    counting = coverage or fail_under is not None
    tally = TransitionCoverage()
    if counting:
        tally.declare_flow(flow)
    passed = failed = errors = 0
    with ScriptRunner(flow, coverage=tally) as runner:
        for path in files:
            try:
                scripts = load_scripts(path)
            except ScriptError as exc:
                errors += 1
                print(f"ERROR {_display_path(path)}\n{_indented(str(exc))}", file=out, flush=True)
                continue
            for script in scripts:
                name = f"{_display_path(path)}::{script.name}"
                if select is not None and select.lower() not in name.lower():
                    continue
                try:
                    result = runner.run(script, raise_on_failure=False)
                except GenieGraphError as exc:  # the script does not fit the flow, or the flow failed to start
                    errors += 1
                    print(f"ERROR {name}\n{_indented(str(exc))}", file=out, flush=True)
                    continue
                if result.failure is None:
                    passed += 1
                    print(f"PASS  {name} ({len(result.turns)} turn(s))", file=out, flush=True)
                else:
                    failed += 1
                    print(f"FAIL  {name}\n{_indented(str(result.failure))}", file=out, flush=True)
    total = passed + failed + errors
    if total == 0:
        raise NoScriptsFound(f"no script matches -k {select!r} in {where}")
    summary = (
        [f"{passed} passed"] + ([f"{failed} failed"] if failed else []) + ([f"{errors} error(s)"] if errors else [])
    )
    print(f"\n{total} script(s): {', '.join(summary)}", file=out)
    status = 0 if failed == errors == 0 else 1
    if coverage:
        print(f"\n{tally.report()}", file=out)
    if fail_under is not None:
        percent = tally.percent()
        if percent + 1e-9 < fail_under:
            print(f"\ntransition coverage {percent:.1f}% is under --fail-under {fail_under:g}%", file=out)
            status = 1
        elif not coverage:
            print(f"\ntransition coverage {percent:.1f}% (--fail-under {fail_under:g}%)", file=out)
    return status
