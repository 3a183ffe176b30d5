"""Flow diagrams: Mermaid and DOT text, PNG and SVG rendered offline, a session's state highlighted."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import graphs
from genie_graph import Diagram, EventInput
from genie_graph._diagram import HIGHLIGHT, GraphvizMissing

REPO = Path(__file__).resolve().parent.parent


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_every_state_and_transition_is_drawn_in_both_texts() -> None:
    with graphs.create_flow("memory://") as flow:
        for model_key in flow.model_keys:
            compiled = flow.flow_of(model_key)
            diagram = flow.draw(model_key)
            for state_id in compiled.kinds:
                assert f'"{state_id}" [' in diagram.dot and state_id in diagram.mermaid
            for source, per_target in compiled.targets.items():
                for target, labels in per_target.items():
                    for label in labels:
                        assert f'"{source}" -> "{target}" [label="{label}"];' in diagram.dot
                        assert label in diagram.mermaid


def test_a_png_and_an_svg_render_offline_with_nothing_but_pip() -> None:
    with graphs.create_flow("memory://") as flow:
        diagram = flow.draw("q_and_a_cond")
        png = diagram.render("png", engine="wasm")
        width, height = _png_size(png)
        assert width > 400 and height > 400 and len(png) > 10_000
        svg = diagram.render("svg", engine="wasm").decode()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Ai creates response" in svg
        assert "<svg" in (diagram._repr_svg_() or "")  # a notebook shows it inline


def test_graphvizs_own_dot_renders_when_installed_and_is_named_when_not() -> None:
    diagram = graphs.flow.draw("q_and_a_cond")
    if shutil.which("dot") is None:  # .ci/run installs Graphviz; a bare machine gets a clear error
        with pytest.raises(GraphvizMissing, match="apt-get install graphviz"):
            diagram.render("png", engine="dot")
        return
    width, height = _png_size(diagram.render("png", engine="dot"))
    assert width > 200 and height > 200
    assert "Ai creates response" in diagram.render("svg", engine="dot").decode()


def test_a_sessions_current_state_is_highlighted(tmp_path: Path) -> None:
    with graphs.create_flow(f"sqlite:///{tmp_path}/s.db") as flow:
        session_id = flow.create_new_session("q_and_a").session_id
        assert (
            '"intro" [label="Intro\\n(intro)", shape="box", style="rounded,filled"'
            in flow.draw("q_and_a", session_id).dot
        )
        flow.process_event("q_and_a", EventInput(session_id=session_id, event="user_input", event_input="hi"))
        flow.wait_until_ready(session_id)
        diagram = flow.draw("q_and_a", session_id)
        assert diagram.current == "user_enters_query"
        assert diagram.dot.count(f'fillcolor="{HIGHLIGHT}"') == 1
        assert f"style user_enters_query fill:{HIGHLIGHT}" in diagram.mermaid
        assert Diagram(flow.flow_of("q_and_a")).current is None


def test_the_command_line_writes_images_and_highlights_a_session(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    with graphs.create_flow(store) as flow:
        session_id = flow.create_new_session("q_and_a_capture").session_id
    png, svg = tmp_path / "flow.png", tmp_path / "flow.svg"
    command = [sys.executable, "-m", "genie_graph._cli", "--store", store, "draw", "q_and_a_capture"]
    result = subprocess.run(
        [*command, "--png", str(png), "--svg", str(svg), "--session", session_id],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    width, height = _png_size(png.read_bytes())
    assert png.stat().st_size > 10_000 and width > 200 and height > 300
    assert HIGHLIGHT in svg.read_text()
    dot = subprocess.run([*command, "--format", "dot"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert dot.startswith('digraph "graphs.q_and_a_capture.QandACaptureMachine"')
