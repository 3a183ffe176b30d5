"""Invokers: building them from ``meta.yaml`` and sharing them through pools.

``type:`` names a built-in (``echo``, ``openai``, ``python``) or a ``GenieInvoker`` subclass by
its dotted path. The rest of the mapping is the invoker's config; ``pool_size``, ``retry``,
``on_error`` and ``offline`` are read here, not passed on.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._imports import import_object
from .._tools import ApprovalRequired, parse_tools
from ..errors import InvokerConfigError, InvokerError, InvokerTimeout
from ._base import GenieInvoker

__all__ = ["DEFAULT_RESUMES", "GenieInvoker", "InvokerPool", "InvokerRegistry", "RetryPolicy", "build_invoker"]

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
    """How often a failed (or timed-out) invoker call is tried again, and how long to wait in between.

    In meta.yaml (``invoker: {retry: ...}``) or a machine's ``on_failure``: ``retry: 2`` (two
    retries: at most three calls), or a mapping::

        retry:
          retries: 2                # or attempts: 3 (every call counted)
          backoff_seconds: 0.5      # the wait before the first retry; it doubles after each
          max_backoff_seconds: 8    # no wait is longer
          jitter: 0.5               # up to this share of each wait is taken off at random (true: 0.5)
          timeout_seconds: 20       # a call taking longer is cancelled and counts as failed
          resumes: 2                # a run cut off with its process is resumed this often, then fails

    Example:
        >>> RetryPolicy.parse({"retries": 2, "backoff_seconds": 0.5}).delay(2)
        1.0
    """

    retries: int = 0
    """Retries after the first call."""
    backoff_seconds: float = 0.0
    """The wait before the first retry; doubled for each one after."""
    max_backoff_seconds: float | None = None
    """The longest wait (None: no cap)."""
    jitter: float = 0.0
    """Up to this share (0 to 1) of each wait is taken off at random, so retries spread out."""
    timeout_seconds: float | None = None
    """How long one call may take before it is cancelled and counted as a failure (None: no limit)."""
    resumes: int | None = None
    """How often a run of the state cut off with its process (a crash, a kill) is resumed before it
    fails instead (None: the default, :data:`DEFAULT_RESUMES`)."""

    @property
    def calls(self) -> int:
        """The most calls one invocation makes."""
        return self.retries + 1

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 is the first), jitter applied."""
        wait: float = self.backoff_seconds * 2.0 ** (retry - 1)
        if self.max_backoff_seconds is not None:
            wait = min(wait, self.max_backoff_seconds)
        if self.jitter:
            wait -= wait * self.jitter * random.random()
        return max(0.0, wait)

    @classmethod
    def parse(cls, value: Any) -> RetryPolicy:
        """A policy from its meta.yaml shape (a number of retries, or a mapping); a policy passes through.

        Raises:
            InvokerConfigError: naming the shape expected.
        """
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        shape = (
            "a number of retries, or a mapping of retries (or attempts), backoff_seconds, "
            "max_backoff_seconds, jitter, timeout_seconds, resumes"
        )
        try:
            if isinstance(value, bool) or not isinstance(value, int | Mapping):
                raise TypeError
            if isinstance(value, int):
                return cls(retries=max(0, value))
            unknown = set(value) - _RETRY_KEYS
            if unknown:
                raise TypeError
            if "retries" in value and "attempts" in value:
                raise TypeError
            retries = int(value["retries"]) if "retries" in value else int(value.get("attempts", 1)) - 1
            jitter = value.get("jitter", 0.0)
            jitter = 0.5 if jitter is True else float(jitter or 0.0)
            policy = cls(
                retries=max(0, retries),
                backoff_seconds=float(value.get("backoff_seconds", 0.0)),
                max_backoff_seconds=_optional_seconds(value.get("max_backoff_seconds")),
                jitter=jitter,
                timeout_seconds=_optional_seconds(value.get("timeout_seconds")),
                resumes=None if value.get("resumes") is None else int(value["resumes"]),
            )
        except (TypeError, ValueError):
            raise InvokerConfigError(f"'retry:' must be {shape}; got {value!r}") from None
        if policy.backoff_seconds < 0 or not 0 <= policy.jitter <= 1 or (policy.resumes or 0) < 0:
            raise InvokerConfigError(
                f"'retry:' {value!r}: backoff_seconds and resumes may not be negative, jitter is between 0 and 1"
            )
        return policy


_RETRY_KEYS = frozenset(
    {"retries", "attempts", "backoff_seconds", "max_backoff_seconds", "jitter", "timeout_seconds", "resumes"}
)
DEFAULT_RESUMES = 2
"""How often a run cut off with its process is resumed before it fails, unless ``retry: {resumes}`` says."""


def _optional_seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = float(value)
    if seconds <= 0:
        raise ValueError(value)
    return seconds


FailedCall = Callable[[int, BaseException, float], None]
"""Told ``(attempt, error, duration in seconds)`` of each failed call, retried or not."""


class InvokerPool:
    """Up to ``size`` invokers built from one config, each used by one call at a time.

    Invokers are built lazily, on first use, never at import or build time.
    """

    def __init__(self, factory: Callable[[], GenieInvoker], size: int, retry: RetryPolicy) -> None:
        if size < 1:
            raise InvokerConfigError(f"pool_size must be at least 1, got {size}")
        self._factory = factory
        self._size = size
        self.retry = retry
        """The policy of the ``invoker:`` mapping (a call may pass another)."""
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

    def _drop(self) -> None:
        with self._lock:
            self._created -= 1

    async def ainvoke(
        self, content: str, retry: RetryPolicy | None = None, on_failure: FailedCall | None = None
    ) -> str:
        """Answer ``content`` with a free invoker, retrying as configured.

        Args:
            content: the rendered template.
            retry: the policy for this call (default: the pool's, from its ``invoker:`` mapping).
            on_failure: told of each failed call (a session records them in its history).

        Raises:
            InvokerError: every attempt failed (``InvokerTimeout`` if the last one timed out); the
                last failure is chained.
        """
        policy = retry or self.retry
        # The pool serves several event loops (the GenieFlow's, and a fresh one per node run under
        # LangGraph's sync API), so its slots are a threading semaphore; waiting for one must
        # neither park a worker thread (the blocking invokers need them) nor, once cancelled,
        # leave a slot taken.
        delay = 0.001
        while not self._slots.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            invoker: GenieInvoker | None = None
            for attempt in range(1, policy.calls + 1):
                if invoker is None:
                    invoker = self._checkout()
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(policy.timeout_seconds) as deadline:
                        result = await invoker.ainvoke(content)
                    with self._lock:
                        self._idle.append(invoker)
                    return result if isinstance(result, str) else str(result)
                except ApprovalRequired:  # no failure: the run waits for a person's decision
                    with self._lock:
                        self._idle.append(invoker)
                    raise
                except Exception as exc:
                    error: BaseException = exc
                    if isinstance(exc, TimeoutError) and deadline.expired():
                        # A blocking call goes on in its thread: this invoker is not handed out again.
                        self._drop()
                        invoker = None
                        error = InvokerTimeout(policy.timeout_seconds or 0.0, attempt)
                    if on_failure is not None:
                        on_failure(attempt, error, time.perf_counter() - started)
                    if attempt >= policy.calls:
                        if invoker is not None:
                            with self._lock:
                                self._idle.append(invoker)
                        if isinstance(error, InvokerTimeout):
                            raise error from exc
                        if isinstance(exc, InvokerError):
                            raise
                        raise InvokerError(f"{type(invoker).__name__} failed: {type(exc).__name__}: {exc}") from exc
                    await asyncio.sleep(policy.delay(attempt))
                except BaseException:  # cancelled: the invoker may still be busy in its thread
                    if invoker is not None:
                        self._drop()
                    raise
            raise AssertionError("unreachable")
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
        if "tools" in effective:  # imports each tool and checks its approval policy now, not on first use
            parse_tools(effective["tools"], f"invoker type {effective['type']!r}")
        if effective["type"] == "python":
            from .python import PythonInvoker

            PythonInvoker.from_config({k: v for k, v in effective.items() if k not in _RESERVED_KEYS})
