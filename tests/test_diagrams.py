"""Flow diagrams: Mermaid and DOT text, PNG and SVG rendered offline, a session's state highlighted.

A flow that runs other flows (``graphs/ordering.py``) is drawn as its session graph: each flow in a
cluster, sub-flow calls and returns and interruptions as edges, a node inside a sub-flow highlighted and
the flows waiting on the stack outlined. The ordering session's diagram is saved as
``tests/artifacts/diagram-ordering.png``.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import graphs
from genie_graph import (
    Diagram,
    EventData,
    EventInput,
    GenieFlow,
    GenieModel,
    GenieStateMachine,
    Interruption,
    State,
    SubFlow,
)
from genie_graph._compiler import graph_of
from genie_graph._diagram import CALL_COLOR, HIGHLIGHT, INTERRUPTION_COLOR, WAITING, GraphvizMissing

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


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


# ---- flows that run other flows: sub-flows and interruptions --------------------------------
Q_AND_A_DOT = r"""digraph "graphs.q_and_a.QandAMachine" {
  graph [rankdir=TB, fontname="Helvetica"];
  node [fontname="Helvetica", fontsize=11];
  edge [fontname="Helvetica", fontsize=9];
  __start__ [shape=point, width=0.15, label=""];
  "intro" [label="Intro\n(intro)", shape="box", style="rounded", penwidth="2"];
  "user_enters_query" [label="User enters query\n(user_enters_query)", shape="box", style="rounded,filled", fillcolor="#ffd54f", penwidth="3"];
  "ai_creates_response" [label="Ai creates response\n(ai_creates_response)", shape="hexagon", style="solid"];
  __start__ -> "intro";
  "intro" -> "ai_creates_response" [label="user_input"];
  "user_enters_query" -> "ai_creates_response" [label="user_input"];
  "ai_creates_response" -> "user_enters_query" [label="ai_extraction"];
}
"""  # noqa: E501


def _line(dot: str, start: str) -> str:
    """The one line of ``dot`` that starts (after its indent) with ``start``."""
    found = [line.strip() for line in dot.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, found)
    return found[0]


def _cluster(dot: str, flow: str) -> str:
    """The text of the cluster of ``flow`` in ``dot``."""
    match = re.search(rf'  subgraph "cluster_{flow}" {{\n(.*?)\n  }}\n', dot, re.DOTALL)
    assert match is not None, f"no cluster of {flow}"
    return match.group(1)


def _svg_group(svg: str, title: str) -> str:
    match = re.search(rf"<title>{re.escape(title)}</title>.*?</g>", svg, re.DOTALL)
    assert match is not None, f"no <title>{title}</title> in the SVG"
    return match.group(0)


def test_flows_without_sub_flows_draw_as_before() -> None:
    with graphs.create_flow("memory://") as flow:
        plain = [key for key in flow.model_keys if not flow.flow_of(key).children]
        assert {"q_and_a", "q_and_a_cond", "q_and_a_capture", "topic_analysis"} <= set(plain)
        for model_key in plain:
            compiled = flow.flow_of(model_key)
            diagram = Diagram(compiled)
            assert "subgraph" not in diagram.dot and "compound" not in diagram.dot and "cluster" not in diagram.dot
            assert diagram.mermaid == graph_of(compiled).get_graph().draw_mermaid()  # LangGraph's own drawing
        assert Diagram(flow.flow_of("q_and_a"), "user_enters_query").dot == Q_AND_A_DOT


def test_every_flow_a_session_runs_is_drawn_in_its_own_cluster() -> None:
    with graphs.create_flow("memory://") as flow:
        compiled = flow.flow_of("ordering")
        dot = flow.draw("ordering").dot
    assert compiled.children and "compound=true" in dot.splitlines()[1]
    assert set(compiled.children) == {"address", "confirm", "cancel_order", "order_summary", "shop_help"}
    for node, (owner, state_id) in compiled.nodes.items():
        line = _line(dot, f'"{node}" [')
        assert f'label="{owner.names[state_id]}\\n({state_id})' in line
        if owner is not compiled:  # another flow's state is in that flow's cluster, named <flow>/<state>
            assert node == f"{owner.label}/{state_id}" and line in _cluster(dot, owner.label)
    for label in compiled.children:
        assert f'graph [label="{label}", style="rounded"' in _cluster(dot, label)
    for state_id in compiled.kinds:  # the session's own states are in no cluster
        assert not any(f'"{state_id}" [' in _cluster(dot, label) for label in compiled.children)
    # a sub-flow state is a 3D box naming the flow it calls; a final state that aborts its flow says so
    assert 'shape="box3d"' in _line(dot, '"getting_address" [') and "calls address" in _line(dot, '"getting_address" [')
    assert "calls confirm" in _line(dot, '"address/checking" [')
    assert "\\naborts" in _line(dot, '"cancel_order/cancelled" [')
    # every flow's own transitions, between node names
    for owner in [compiled, *compiled.children.values()]:
        for source, per_target in owner.targets.items():
            for target, labels in per_target.items():
                for label in labels:
                    prefix = "" if owner is compiled else f"{owner.label}/"
                    assert f'"{prefix}{source}" -> "{prefix}{target}" [label="{label}"];' in dot


def test_calls_returns_and_interruptions_are_edges() -> None:
    with graphs.create_flow("memory://") as flow:
        diagram = flow.draw("ordering")
    dot, mermaid = diagram.dot, diagram.mermaid
    call = f'[label="call", color="{CALL_COLOR}", fontcolor="{CALL_COLOR}", style="bold"];'
    assert f'"getting_address" -> "address/asking_street" {call}' in dot  # to the called flow's initial state
    assert f'"address/checking" -> "confirm/asking" {call}' in dot  # three flows deep
    # the called flow's final states return to where the calling state goes on with its on_complete event
    returns = [line.strip() for line in dot.splitlines() if 'label="returns"' in line]
    assert {line.split(" [")[0] for line in returns} == {
        '"address/delivered" -> "confirming"',  # address_done [has_address]
        '"address/delivered" -> "taking_order"',  # address_done
        '"address/skipped" -> "confirming"',
        '"address/skipped" -> "taking_order"',
        '"confirm/answered" -> "address/delivered"',  # checked [confirmed]
        '"confirm/answered" -> "address/asking_street"',  # checked
    }
    assert all('style="dashed"' in line for line in returns)
    # interruptions: dashed, from the declaring flow to the interrupting one, labelled with the trigger
    for target, trigger in (
        ("cancel_order/asking", "event 'cancel'"),
        ("order_summary/summarising", "condition asks_what_so_far"),
        ("shop_help/helping", "intent 'help'"),
    ):
        line = _line(dot, f'"taking_order" -> "{target}"')
        assert f'label="{trigger}"' in line and 'style="dashed"' in line and INTERRUPTION_COLOR in line
    assert not any(line.strip().startswith('"cancel_order/cancelled" ->') for line in dot.splitlines())  # it aborts

    assert 'subgraph cluster_address["address"]' in mermaid and "\t\taddress_asking_street(" in mermaid
    assert "getting_address == &nbsp;call&nbsp; ==> address_asking_street;" in mermaid
    assert "address_delivered -. &nbsp;returns&nbsp; .-> confirming;" in mermaid
    assert "taking_order -. &nbsp;event 'cancel'&nbsp; .-> cancel_order_asking;" in mermaid
    assert "taking_order -- &nbsp;user_input [is_done]&nbsp; --> getting_address;" in mermaid
    assert 'getting_address[["Getting address"]]' in mermaid and "order_summary_summarising{{" in mermaid
    assert "style " not in mermaid  # no session: nothing highlighted


class HelpMachine(GenieStateMachine):
    helping = State(initial=True)
    helped = State(final=True)

    user_input = helping.to(helped)

    templates = dict(helping="ordering/helping.jinja2", helped="ordering/helped.jinja2")


class HelpModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return HelpMachine


class StepMachine(GenieStateMachine):
    """A sub-flow that may abort, and declares an interruption of its own."""

    asking = State(initial=True)
    done = State(final=True)
    given_up = State(final=True)

    user_input = asking.to(given_up, cond="gives_up") | asking.to(done)

    abort_states = {"given_up"}
    interruptions = [Interruption(HelpModel, event="help", priority=1)]
    templates = dict(asking="ordering/helping.jinja2", done="ordering/helped.jinja2", given_up="ordering/helped.jinja2")

    def gives_up(self, event_data: EventData) -> bool:
        return bool(event_data.args and event_data.args[0] == "give up")


class StepModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return StepMachine


class MainMachine(GenieStateMachine):
    opening = State(initial=True)
    stepping = State()
    finished = State(final=True)
    stopped = State(final=True)

    user_input = opening.to(stepping)
    step_done = stepping.to(finished)
    step_failed = stepping.to(stopped)

    templates = dict(
        opening="ordering/helping.jinja2",
        stepping=SubFlow(StepModel, on_complete="step_done", on_abort="step_failed", name="step"),
        finished="ordering/helped.jinja2",
        stopped="ordering/helped.jinja2",
    )


class MainModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return MainMachine


def test_a_sub_flows_own_interruption_leaves_its_cluster_and_an_abort_has_its_edge() -> None:
    flow = GenieFlow(template_root=REPO / "prompts", store="memory://")
    try:
        flow.register_model("main", MainModel)
        diagram = flow.draw("main")
    finally:
        flow.close()
    dot, mermaid = diagram.dot, diagram.mermaid
    line = _line(dot, '"step/asking" -> "help/helping"')  # declared by the step flow: from its cluster
    assert "label=\"event 'help'\"" in line and 'ltail="cluster_step"' in line
    assert "cluster_step -. &nbsp;event 'help'&nbsp; .-> help_helping;" in mermaid
    assert 'label="returns"' in _line(dot, '"step/done" -> "finished"')
    assert 'label="aborts"' in _line(dot, '"step/given_up" -> "stopped"')  # SubFlow(on_abort="step_failed")
    assert not any(
        line.strip().startswith(('"step/done" -> "stopped"', '"step/given_up" -> "finished"'))
        for line in dot.splitlines()
    )
    for engine in ("wasm", "dot") if shutil.which("dot") else ("wasm",):
        svg = diagram.render("svg", engine=engine).decode()
        assert "<title>cluster_step</title>" in svg and "<title>step/asking&#45;&gt;help/helping</title>" in svg


def test_the_node_of_a_session_inside_a_sub_flow_is_highlighted_and_the_flows_waiting_outlined(
    tmp_path: Path,
) -> None:
    with graphs.create_flow(f"sqlite:///{tmp_path}/s.db") as flow:
        session_id = flow.create_new_session("ordering").session_id
        for text in ("tea", "done", "Main Street 1"):
            flow.process_event("ordering", EventInput(session_id=session_id, event="user_input", event_input=text))
            flow.wait_until_ready(session_id)
        compiled = flow.flow_of("ordering")
        model = flow.get_model("ordering", session_id)
        drawn = flow.draw("ordering", session_id)
        assert drawn.current == "address/asking_city"
        diagram = Diagram.of_session(compiled, model)
        assert (diagram.current, diagram.waiting) == ("address/asking_city", ("getting_address",))

        dot = diagram.dot
        assert dot.count(f'fillcolor="{HIGHLIGHT}"') == 1
        assert f'fillcolor="{HIGHLIGHT}"' in _line(dot, '"address/asking_city" [')
        assert _line(dot, '"address/asking_city" [') in _cluster(dot, "address")
        assert dot.count(f'color="{WAITING}"') == 1
        assert f'color="{WAITING}", penwidth="3"' in _line(dot, '"getting_address" [')
        assert diagram.mermaid.endswith(
            f"\tstyle getting_address stroke:{WAITING},stroke-width:3px,stroke-dasharray:5 3\n"
            f"\tstyle address_asking_city fill:{HIGHLIGHT},stroke:#333,stroke-width:3px\n"
        )
        assert f'fillcolor="{HIGHLIGHT}"' in _line(drawn.dot, '"address/asking_city" [')  # GenieFlow.draw too

        flow.process_event("ordering", EventInput(session_id=session_id, event="user_input", event_input="Springfield"))
        flow.wait_until_ready(session_id)
        deeper = Diagram.of_session(compiled, flow.get_model("ordering", session_id))
    assert (deeper.current, deeper.waiting) == ("confirm/asking", ("getting_address", "address/checking"))
    assert deeper.dot.count(f'color="{WAITING}"') == 2
    if shutil.which("dot") is None:
        return
    svg = deeper.render("svg", engine="dot").decode()
    assert "<title>cluster_confirm</title>" in svg and "<title>cluster_address</title>" in svg
    assert f'fill="{HIGHLIGHT}"' in _svg_group(svg, "confirm/asking")
    for node in ("getting_address", "address/checking"):
        assert f'stroke="{WAITING}"' in _svg_group(svg, node)
    png = deeper.render("png", engine="dot")
    width, height = _png_size(png)
    assert width > 800 and height > 600
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "diagram-ordering.png").write_bytes(png)
