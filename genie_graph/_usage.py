"""Token usage and its cost, per session, per state, per template and per model.

Invokers report what each call used with :func:`report_usage` (the ``openai`` invoker does so
from langchain's ``usage_metadata``; a custom invoker may call it itself). The invoker state's
node collects the reports of its run and adds them to ``GenieModel.usage``, priced by the
flow's :class:`PriceTable`. A :class:`Budget` on the machine stops invoker states from running
once a session has spent it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvokerConfigError

__all__ = ["Budget", "PriceTable", "SessionUsage", "UsageTotals", "report_usage"]


class UsageTotals(BaseModel):
    """Tokens, calls and cost added up over some invoker calls."""

    model_config = ConfigDict(extra="forbid")

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    """In the price table's currency; 0 for models without a price."""

    def add(self, call: CallUsage, cost: float) -> None:
        """Count one call that cost ``cost``."""
        self.calls += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.total_tokens += call.input_tokens + call.output_tokens
        self.cost = round(self.cost + cost, 10)


class SessionUsage(BaseModel):
    """What a session's invoker calls used, kept on the model (``GenieModel.usage``).

    Attributes:
        total: every call of the session.
        by_state: per invoker state id.
        by_template: per template name.
        by_model: per LLM model name (``unknown`` when the invoker did not say).
        currency: the price table's currency.
    """

    model_config = ConfigDict(extra="forbid")

    total: UsageTotals = Field(default_factory=UsageTotals)
    by_state: dict[str, UsageTotals] = Field(default_factory=dict)
    by_template: dict[str, UsageTotals] = Field(default_factory=dict)
    by_model: dict[str, UsageTotals] = Field(default_factory=dict)
    currency: str = "USD"

    def add(self, state_id: str, call: CallUsage, cost: float) -> None:
        """Count one call made in state ``state_id``."""
        self.total.add(call, cost)
        self.by_state.setdefault(state_id, UsageTotals()).add(call, cost)
        self.by_template.setdefault(call.template or "?", UsageTotals()).add(call, cost)
        self.by_model.setdefault(call.model or "unknown", UsageTotals()).add(call, cost)


@dataclass(frozen=True)
class CallUsage:
    """What one invoker call used, as reported with :func:`report_usage`."""

    input_tokens: int
    output_tokens: int
    model: str | None = None
    template: str | None = None


@dataclass
class UsageCollector:
    """Collects the calls of one invoker state's run (shared by the threads its invokers use)."""

    calls: list[CallUsage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: CallUsage) -> None:
        with self._lock:
            self.calls.append(call)


_collector: contextvars.ContextVar[UsageCollector | None] = contextvars.ContextVar(
    "genie_graph_usage_collector", default=None
)
_template: contextvars.ContextVar[str | None] = contextvars.ContextVar("genie_graph_usage_template", default=None)


@contextmanager
def collecting_usage() -> Iterator[UsageCollector]:
    """Collect the usage reported by every invoker call made inside the block."""
    collector = UsageCollector()
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)


def current_template() -> str | None:
    """The template whose invoker is being called (set by the runner around each call)."""
    return _template.get()


@contextmanager
def calling_template(name: str) -> Iterator[None]:
    """Attribute the usage reported inside the block to template ``name``."""
    token = _template.set(name)
    try:
        yield
    finally:
        _template.reset(token)


def report_usage(input_tokens: int, output_tokens: int, model: str | None = None) -> None:
    """Report the tokens one LLM call used; call it from an invoker's ``invoke``/``ainvoke``.

    Outside an invoker state's run (a plain script calling the invoker) it does nothing.

    Args:
        input_tokens: prompt tokens.
        output_tokens: completion tokens.
        model: the model's name, for per-model totals and prices.
    """
    collector = _collector.get()
    if collector is None:
        return
    collector.add(CallUsage(max(0, int(input_tokens)), max(0, int(output_tokens)), model, _template.get()))


@dataclass(frozen=True)
class ModelPrice:
    """Price per million tokens of one model."""

    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class PriceTable:
    """Prices per million input and output tokens, by model name.

    A model's price is found by its exact name, then by the longest name it starts with
    (``gpt-4o-mini-2024-07-18`` takes ``gpt-4o-mini``'s price), then ``default``; without any,
    its calls cost 0.

    In YAML (``GenieFlow(prices="prices.yaml")`` or ``$GENIE_GRAPH_PRICES``)::

        currency: USD
        models:
          gpt-4o-mini: {input: 0.15, output: 0.60}
          default: {input: 1.0, output: 2.0}
    """

    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    currency: str = "USD"

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | Path | PriceTable | None) -> PriceTable:
        """A price table from a mapping, a YAML file path, or None (everything free).

        Raises:
            InvokerConfigError: the file is missing or a price is not a number.
        """
        if data is None:
            return cls()
        if isinstance(data, PriceTable):
            return data
        if isinstance(data, str | Path):
            path = Path(data)
            if not path.is_file():
                raise InvokerConfigError(f"price table {str(path)!r} does not exist; pass a YAML file path")
            data = yaml.safe_load(path.read_text()) or {}
        shape = "{currency: USD, models: {name: {input: <per million>, output: <per million>}}}"
        if not isinstance(data, Mapping) or not isinstance(data.get("models", {}), Mapping):
            raise InvokerConfigError(f"a price table is {shape}; got {data!r}")
        models: dict[str, ModelPrice] = {}
        for name, price in dict(data.get("models") or {}).items():
            try:
                if not isinstance(price, Mapping) or set(price) - {"input", "output"}:
                    raise TypeError
                models[str(name)] = ModelPrice(float(price.get("input", 0)), float(price.get("output", 0)))
            except (TypeError, ValueError):
                raise InvokerConfigError(
                    f"price of model {name!r} must be {{input: N, output: N}}; got {price!r}"
                ) from None
        return cls(models=models, currency=str(data.get("currency", "USD")))

    def price_of(self, model: str | None) -> ModelPrice | None:
        """The price of ``model``: by its name, the longest name it starts with, or ``default``; else None."""
        name = model or ""
        if name in self.models:
            return self.models[name]
        prefixes = [known for known in self.models if known != "default" and name.startswith(known)]
        if prefixes:
            return self.models[max(prefixes, key=len)]
        return self.models.get("default")

    def cost(self, call: CallUsage) -> float:
        """What ``call`` cost in this table's currency."""
        price = self.price_of(call.model)
        if price is None:
            return 0.0
        return (call.input_tokens * price.input_per_million + call.output_tokens * price.output_per_million) / 1e6


@dataclass(frozen=True)
class Budget:
    """A limit on what one session may spend on invoker calls, declared on the machine.

    Once a session's usage reaches ``max_tokens`` or ``max_cost``, its invoker states no longer
    call their invokers: the run is refused with an ``over_budget`` error on the session, and
    ``on_exceeded`` is sent instead of the state's completion event (or, without it, the state
    waits for an event sent by hand, as after a failed transition).

    Example:
        >>> class Machine(GenieStateMachine):
        ...     budget = Budget(max_tokens=20_000, on_exceeded="over_budget")  # doctest: +SKIP
    """

    max_tokens: int | None = None
    max_cost: float | None = None
    on_exceeded: str | None = None
    """The event sent from the invoker state when its run is refused (its text: the error)."""

    def exceeded_by(self, usage: SessionUsage) -> str | None:
        """Why ``usage`` is over this budget, or None while it is within."""
        if self.max_tokens is not None and usage.total.total_tokens >= self.max_tokens:
            return f"the session used {usage.total.total_tokens} tokens of its budget of {self.max_tokens}"
        if self.max_cost is not None and usage.total.cost >= self.max_cost:
            return (
                f"the session spent {usage.total.cost:.6g} {usage.currency} of its budget of "
                f"{self.max_cost:.6g} {usage.currency}"
            )
        return None
