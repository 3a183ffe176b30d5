"""The public surface of ``genie_graph``: every name Genie Flow authors and the issue need, documented."""

from __future__ import annotations

import importlib
import inspect
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import statemachine

import genie_graph

ROOT = Path(__file__).resolve().parent.parent

# GENIE_FLOW.md section 8, item 1: port by changing imports.
CHECKLIST = [
    "GenieModel",
    "GenieStateMachine",
    "VersionedModel",
    "SecondaryStore",
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "DialogueFormat",
    "User",
    "State",
]
# Issue 3, section 2.
ISSUE = [
    "GenieModel",
    "GenieStateMachine",
    "State",
    "EventData",
    "VersionedModel",
    "SecondaryStore",
    "User",
    "DialogueElement",
    "DialogueFormat",
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "GenieInvoker",
    "GenieFlow",
    "EventInput",
    "AIResponse",
    "AIStatusResponse",
    "AIProgressResponse",
    "build_graph",
]
# Issue 11, declared failure handling.
FAILURES = ["FailurePolicy", "RetryPolicy"]
# Issue 11, flow versions.
VERSIONS = ["Migration", "flow_version"]
REQUIRED = sorted(set(CHECKLIST) | set(ISSUE) | set(FAILURES) | set(VERSIONS))


def test_all_lists_every_required_name() -> None:
    missing = [name for name in REQUIRED if name not in genie_graph.__all__]
    assert not missing, f"missing from genie_graph.__all__: {missing}"


def test_all_has_no_private_names_and_no_duplicates() -> None:
    assert [name for name in genie_graph.__all__ if name.startswith("_")] == []
    assert len(genie_graph.__all__) == len(set(genie_graph.__all__))


@pytest.mark.parametrize("name", REQUIRED)
def test_required_name_is_importable(name: str) -> None:
    module = importlib.import_module("genie_graph")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from genie_graph import {name}", namespace)  # noqa: S102 - the import statement itself
    assert namespace[name] is getattr(genie_graph, name)


def test_every_name_in_all_exists() -> None:
    absent = [name for name in genie_graph.__all__ if not hasattr(genie_graph, name)]
    assert absent == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from genie_graph import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(genie_graph.__all__)


def test_state_is_python_statemachine_state() -> None:
    assert genie_graph.State is statemachine.State


def test_event_data_is_python_statemachine_event_data() -> None:
    from statemachine.event_data import EventData

    assert genie_graph.EventData is EventData


def test_api_models_have_genie_flow_fields() -> None:
    assert set(genie_graph.EventInput.model_fields) == {"session_id", "event", "event_input"}
    genie_flow_fields = {"session_id", "next_actions", "error", "response", "progress"}
    flow_fields = {"active_flows", "interrupted_by", "resumed", "aborted", "approvals"}  # left out unless set
    assert set(genie_graph.AIResponse.model_fields) == genie_flow_fields | flow_fields
    assert set(genie_graph.AIResponse(session_id="s").model_dump(mode="json")) == genie_flow_fields
    assert set(genie_graph.AIStatusResponse.model_fields) == {"session_id", "next_actions", "ready"}
    assert set(genie_graph.AIProgressResponse.model_fields) == {
        "total_number_of_subtasks",
        "number_of_subtasks_executed",
    }


def _own_public_callables(cls: type) -> list[tuple[str, object]]:
    found = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if callable(func):
            found.append((attr, func))
    return found


@pytest.mark.parametrize("name", [n for n in genie_graph.__all__ if callable(getattr(genie_graph, n))])
def test_public_callable_has_a_docstring(name: str) -> None:
    obj = getattr(genie_graph, name)
    assert (obj.__doc__ or "").strip(), f"genie_graph.{name} has no docstring"
    if inspect.isclass(obj) and obj.__module__.startswith("genie_graph"):
        undocumented = [attr for attr, func in _own_public_callables(obj) if not (func.__doc__ or "").strip()]
        assert undocumented == [], f"genie_graph.{name} methods without a docstring: {undocumented}"


def test_genie_flow_has_the_session_manager_methods_and_async_twins() -> None:
    flow = genie_graph.GenieFlow
    for method in ("create_new_session", "start_ephemeral_session", "process_event", "get_task_state", "get_model"):
        assert callable(getattr(flow, method)), method
        twin = getattr(flow, "a" + method)
        assert inspect.iscoroutinefunction(twin), f"a{method} is not async"
    for method in (
        "register_model",
        "register_template_directory",
        "close",
        "session_bytes",
        "wait_until_ready",
        "graph",
    ):
        assert callable(getattr(flow, method)), method


def test_py_typed_ships() -> None:
    assert resources.files("genie_graph").joinpath("py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = config["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["genie_graph"]
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(pattern in ("genie_graph", "genie_graph*") for pattern in included)
