"""The invoker protocol: what an invoker state calls with its rendered template.

Two shapes are accepted, so Genie Flow invokers port by changing an import:

* :class:`GenieInvoker` subclasses (Genie Flow's protocol): ``from_config(config)`` builds one,
  ``invoke(content) -> str`` answers; ``invoke`` may be ``async def``.
* anything with ``async ainvoke(content) -> str`` (genie-graph's own built-ins add it).
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self


class GenieInvoker(ABC):
    """Base class for invokers, compatible with ``genie_flow_invoker.GenieInvoker``.

    Example:
        >>> class Shout(GenieInvoker):
        ...     @classmethod
        ...     def from_config(cls, config):
        ...         return cls()
        ...     def invoke(self, content: str) -> str:
        ...         return content.upper()
    """

    config_keys: ClassVar[frozenset[str] | None] = None
    """The ``invoker:`` keys ``from_config`` reads; when set, others are refused at build time."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build an invoker from the ``invoker:`` mapping of a ``meta.yaml`` (minus ``type``)."""

    @abstractmethod
    def invoke(self, content: str) -> str:
        """Answer the rendered template ``content``; may be declared ``async def``."""

    async def ainvoke(self, content: str) -> str:
        """Async twin of :meth:`invoke`; a blocking ``invoke`` runs in a worker thread."""
        if inspect.iscoroutinefunction(self.invoke):
            return await self.invoke(content)  # type: ignore[no-any-return]
        return await asyncio.to_thread(self.invoke, content)
