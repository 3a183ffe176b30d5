"""The invoker protocol: what an invoker state calls with its rendered template.

Two shapes are accepted, so Genie Flow invokers port by changing an import:

* :class:`GenieInvoker` subclasses (Genie Flow's protocol): ``from_config(config)`` builds one,
  ``invoke(content) -> str`` answers; ``invoke`` may be ``async def``.
* anything with ``async ainvoke(content) -> str`` (genie-graph's own built-ins add it).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


BLOCKING_INVOKER_THREADS = 64
_blocking_pool: ThreadPoolExecutor | None = None
_blocking_pool_guard = threading.Lock()


async def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking invoker call in genie-graph's own thread pool.

    Not asyncio's default executor: that one has a handful of threads (cpu count + 4), which
    slow LLM calls of many sessions would exhaust, holding up everything else that uses it.
    """
    global _blocking_pool
    with _blocking_pool_guard:
        if _blocking_pool is None:
            _blocking_pool = ThreadPoolExecutor(BLOCKING_INVOKER_THREADS, thread_name_prefix="genie-graph-invoker")
    context = contextvars.copy_context()
    try:
        future = asyncio.get_running_loop().run_in_executor(_blocking_pool, lambda: context.run(function, *args))
    except RuntimeError as exc:
        # The pool takes no more work: the interpreter is shutting down. The run is cut off, not
        # failed, so its session resumes from the last checkpoint instead of recording a failure.
        raise asyncio.CancelledError(f"the process is ending ({exc})") from exc
    return await future


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
        return await run_blocking(self.invoke, content)
