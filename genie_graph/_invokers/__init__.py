"""Invokers: building them from ``meta.yaml`` and sharing them through pools.

``type:`` names a built-in (``echo``, ``openai``, ``python``) or a ``GenieInvoker`` subclass by
its dotted path. The rest of the mapping is the invoker's config; ``pool_size``, ``retry``,
``on_error`` and ``offline`` are read here, not passed on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._imports import import_object
from ..errors import InvokerConfigError, InvokerError
from ._base import GenieInvoker

__all__ = ["GenieInvoker", "InvokerPool", "InvokerRegistry", "RetryPolicy", "build_invoker"]

_RESERVED_KEYS = frozenset({"type", "pool_size", "retry", "on_error", "offline"})
DEFAULT_POOL_SIZE = 4


def _builtin(name: str) -> type[GenieInvoker] | None:
    if name == "echo":
        from .echo import EchoInvoker

        return EchoInvoker
    if name == "python":
        from .python import PythonInvoker

        return PythonInvoker
    if name == "openai":
        from .openai import OpenAIInvoker

        return OpenAIInvoker
    return None


def _openai_configured(config: Mapping[str, Any]) -> bool:
    """Whether an OpenAI-compatible endpoint or key is configured for this invoker."""
    key_env = str(config.get("api_key_env", "OPENAI_API_KEY"))
    return bool(
        config.get("base_url")
        or os.environ.get("GENIE_GRAPH_OPENAI_BASE_URL")
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get(key_env)
    )


def effective_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The invoker mapping to build: its ``offline:`` stand-in when no LLM endpoint is configured.

    ``GENIE_GRAPH_OFFLINE=1`` always picks the stand-in; ``GENIE_GRAPH_OFFLINE=0`` never does.
    """
    offline = config.get("offline")
    if offline is None:
        return config
    if not isinstance(offline, Mapping) or "type" not in offline:
        raise InvokerConfigError(f"'offline:' must be an invoker mapping with 'type:', got {offline!r}")
    switch = os.environ.get("GENIE_GRAPH_OFFLINE", "").strip().lower()
    if switch in ("1", "true", "yes"):
        use_offline = True
    elif switch in ("0", "false", "no"):
        use_offline = False
    else:
        use_offline = config.get("type") == "openai" and not _openai_configured(config)
    if not use_offline:
        return config
    inherited = {k: v for k, v in config.items() if k in ("pool_size", "retry", "on_error")}
    return {**inherited, **offline}


_BUILTINS = ("echo", "openai", "python")


def _invoker_class(config: Mapping[str, Any]) -> Any:
    """The class ``type:`` names: a built-in, or a class with ``from_config`` by its dotted path."""
    type_name = config.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise InvokerConfigError(
            f"invoker mapping {dict(config)!r} needs 'type:' ({', '.join(_BUILTINS)}, or package.module.Class)"
        )
    builtin = _builtin(type_name)
    if builtin is not None:
        return builtin
    if "." not in type_name and ":" not in type_name:
        raise InvokerConfigError(
            f"unknown invoker type {type_name!r}; use one of {', '.join(_BUILTINS)}, "
            "or the dotted path of a class with from_config(config) and invoke(content)"
        )
    cls = import_object(type_name)
    if not hasattr(cls, "from_config"):
        raise InvokerConfigError(f"invoker type {type_name!r} has no from_config(config) classmethod")
    return cls


def build_invoker(config: Mapping[str, Any]) -> GenieInvoker:
    """Build one invoker from an ``invoker:`` mapping.

    Raises:
        InvokerConfigError: unknown ``type:``, or the class has no ``from_config``.
    """
    cls = _invoker_class(config)
    params = {k: v for k, v in config.items() if k not in _RESERVED_KEYS}
    invoker: GenieInvoker = cls.from_config(params)
    if not hasattr(invoker, "ainvoke"):
        # A Genie Flow invoker that does not inherit our base: give it the async twin.
        invoker.ainvoke = lambda content, _inv=invoker: GenieInvoker.ainvoke(_inv, content)  # type: ignore[method-assign, misc]
    return invoker


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed invocation is tried again, and how long to wait in between.

    In meta.yaml: ``retry: 2`` (two retries: at most three calls), or
    ``retry: {retries: 2, backoff_seconds: 0.5}``, or ``retry: {attempts: 3}`` (three calls in all).
    The wait doubles after each retry.
    """

    attempts: int = 0
    """Retries after the first call."""
    backoff_seconds: float = 0.0

    @classmethod
    def parse(cls, value: Any) -> RetryPolicy:
        if value is None:
            return cls()
        shape = "a number of retries, or {retries: N, backoff_seconds: S}, or {attempts: N}"
        try:
            if isinstance(value, bool) or not isinstance(value, int | Mapping):
                raise TypeError
            if isinstance(value, int):
                return cls(attempts=max(0, value))
            unknown = set(value) - {"retries", "attempts", "backoff_seconds"}
            if unknown:
                raise TypeError
            retries = int(value["retries"]) if "retries" in value else int(value.get("attempts", 1)) - 1
            return cls(attempts=max(0, retries), backoff_seconds=float(value.get("backoff_seconds", 0.0)))
        except (TypeError, ValueError):
            raise InvokerConfigError(f"'retry:' must be {shape}; got {value!r}") from None


class InvokerPool:
    """Up to ``size`` invokers built from one config, each used by one call at a time.

    Invokers are built lazily, on first use, never at import or build time.
    """

    def __init__(self, factory: Callable[[], GenieInvoker], size: int, retry: RetryPolicy) -> None:
        if size < 1:
            raise InvokerConfigError(f"pool_size must be at least 1, got {size}")
        self._factory = factory
        self._size = size
        self._retry = retry
        self._idle: list[GenieInvoker] = []
        self._created = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    def _checkout(self) -> GenieInvoker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._created += 1
        try:
            return self._factory()
        except BaseException:
            with self._lock:
                self._created -= 1
            raise

    async def ainvoke(self, content: str) -> str:
        """Answer ``content`` with a free invoker, retrying as configured.

        Raises:
            InvokerError: every attempt failed; the last failure is chained.
        """
        # The pool serves several event loops (the GenieFlow's, and a fresh one per node run under
        # LangGraph's sync API), so its slots are a threading semaphore; waiting for one must
        # neither park a worker thread (the blocking invokers need them) nor, once cancelled,
        # leave a slot taken.
        delay = 0.001
        while not self._slots.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            invoker = self._checkout()
            try:
                for attempt in range(self._retry.attempts + 1):
                    try:
                        result = await invoker.ainvoke(content)
                        return result if isinstance(result, str) else str(result)
                    except Exception as exc:
                        if attempt >= self._retry.attempts:
                            if isinstance(exc, InvokerError):
                                raise
                            raise InvokerError(f"{type(invoker).__name__} failed: {type(exc).__name__}: {exc}") from exc
                        await asyncio.sleep(self._retry.backoff_seconds * (2**attempt))
                raise AssertionError("unreachable")
            finally:
                with self._lock:
                    self._idle.append(invoker)
        finally:
            self._slots.release()


class InvokerRegistry:
    """One pool per distinct ``invoker:`` mapping, shared by the templates that use it."""

    def __init__(self, default_pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.default_pool_size = default_pool_size
        self._pools: dict[str, InvokerPool] = {}
        self._lock = threading.Lock()

    def pool_for(self, config: Mapping[str, Any]) -> InvokerPool:
        """The pool serving invoker mapping ``config`` (after the offline switch)."""
        effective = effective_config(config)
        key = repr(sorted((k, repr(v)) for k, v in effective.items()))
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                size = int(effective.get("pool_size", self.default_pool_size))
                pool = InvokerPool(lambda: build_invoker(effective), size, RetryPolicy.parse(effective.get("retry")))
                self._pools[key] = pool
            return pool

    def check(self, config: Mapping[str, Any]) -> None:
        """Validate ``config`` at build time: type, keys, ``retry`` and a python ``callable``.

        Builds no invoker (``from_config`` runs on first use), so no client is made at start-up.
        """
        effective = effective_config(config)
        cls = _invoker_class(effective)
        RetryPolicy.parse(effective.get("retry"))
        known = getattr(cls, "config_keys", None)
        if known is not None:
            unknown = sorted(set(effective) - _RESERVED_KEYS - known)
            if unknown:
                raise InvokerConfigError(
                    f"invoker type {effective['type']!r} takes no key(s) {', '.join(unknown)}; "
                    f"its keys: {', '.join(sorted(known | _RESERVED_KEYS))}"
                )
        if effective["type"] == "python":
            from .python import PythonInvoker

            PythonInvoker.from_config({k: v for k, v in effective.items() if k not in _RESERVED_KEYS})
