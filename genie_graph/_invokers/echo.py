"""The ``echo`` invoker: offline and deterministic, for demos and tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from ._base import GenieInvoker


class EchoInvoker(GenieInvoker):
    """Answers the rendered template itself, between an optional ``prefix`` and ``suffix``.

    meta.yaml:
        invoker:
          type: echo
          prefix: "Echo: "
    """

    config_keys = frozenset({"prefix", "suffix", "strip"})

    def __init__(self, prefix: str = "", suffix: str = "", strip: bool = True) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.strip = strip

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        return cls(str(config.get("prefix", "")), str(config.get("suffix", "")), bool(config.get("strip", True)))

    def invoke(self, content: str) -> str:
        return f"{self.prefix}{content.strip() if self.strip else content}{self.suffix}"

    async def ainvoke(self, content: str) -> str:
        return self.invoke(content)
