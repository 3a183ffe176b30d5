"""The ``python`` invoker: a function or a LangChain Runnable named by ``callable:``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any, Self

from .._imports import import_object
from ..errors import InvokerConfigError
from ._base import GenieInvoker, run_blocking


def _as_text(result: Any) -> str:
    content = getattr(result, "content", result)  # a chat model answers a message
    return content if isinstance(content, str) else str(content)


class PythonInvoker(GenieInvoker):
    """Calls ``callable`` with the rendered template text and answers what it returns.

    The callable may be a sync or async function taking one string, or a LangChain
    ``Runnable`` (its ``ainvoke`` is used).

    meta.yaml:
        invoker:
          type: python
          callable: "my_package.my_module:classify"
    """

    config_keys = frozenset({"callable"})

    def __init__(self, target: Any) -> None:
        self.target = target

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        path = config.get("callable")
        if not isinstance(path, str):
            raise InvokerConfigError("python invoker needs 'callable: \"package.module:function\"' in its meta.yaml")
        target = import_object(path)
        if not (callable(target) or hasattr(target, "ainvoke")):
            raise InvokerConfigError(f"python invoker: {path!r} is neither callable nor a Runnable")
        return cls(target)

    def invoke(self, content: str) -> str:
        if hasattr(self.target, "invoke") and hasattr(self.target, "ainvoke"):
            return _as_text(self.target.invoke(content))
        result = self.target(content)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return _as_text(result)

    async def ainvoke(self, content: str) -> str:
        if hasattr(self.target, "ainvoke"):
            return _as_text(await self.target.ainvoke(content))
        if inspect.iscoroutinefunction(self.target):
            return _as_text(await self.target(content))
        return _as_text(await run_blocking(self.target, content))
