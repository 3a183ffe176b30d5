"""Every notebook runs top to bottom in a real Jupyter kernel, offline; a failing cell fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.services import offline_env

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    assert {"quickstart.ipynb", "port_from_genie_flow.ipynb", "composite_templates.ipynb"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_a_notebook_is_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.parametrize("name", ALL)
def test_a_notebook_runs_top_to_bottom(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in offline_env().items():
        monkeypatch.setenv(variable, value)
    root = str(NOTEBOOKS.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    if name == "quickstart.ipynb":  # the diagram displays inline
        assert any("image/svg+xml" in output.get("data", {}) for output in outputs)
