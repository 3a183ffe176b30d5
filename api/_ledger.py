"""What a session has used and what happened to it: the bodies of the usage and history routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from genie_graph import GenieModel
from genie_graph._flow import CompiledFlow
from genie_graph._history import HistoryEntry, HistoryKind
from genie_graph._usage import SessionUsage


class BudgetStatus(BaseModel):
    """The flow's budget per session, and what is left of it."""

    max_tokens: int | None = None
    max_cost: float | None = None
    on_exceeded: str | None = Field(None, description="the event sent instead of running an invoker once spent")
    remaining_tokens: int | None = None
    remaining_cost: float | None = None
    exceeded: bool = Field(description="whether invoker states are now refused")
    reason: str | None = Field(None, description="why the budget is spent")


class UsageReport(BaseModel):
    """A session's token usage and cost, in total and per state, template and model."""

    session_id: str
    usage: SessionUsage
    budget: BudgetStatus | None = Field(None, description="null when the flow declares no budget")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "session_id": "0190c3f2-6a8e-7d9b-a1f0-2c4b7e9d1a35",
                    "usage": {
                        "total": {"calls": 1, "input_tokens": 52, "output_tokens": 9, "cost": 9e-06},
                        "by_state": {"ai_creates_response": {"calls": 1, "input_tokens": 52, "output_tokens": 9}},
                        "by_template": {"q_and_a/ai_creates_response.jinja2": {"calls": 1}},
                        "by_model": {"gpt-4o-mini": {"calls": 1}},
                        "currency": "USD",
                    },
                    "budget": None,
                }
            ]
        }
    }


class HistoryReport(BaseModel):
    """A session's event history, oldest first."""

    session_id: str
    entries: list[HistoryEntry]
    limit: int = Field(description="how many entries the session keeps; older ones were dropped")


def usage_report(flow: CompiledFlow, model: GenieModel) -> UsageReport:
    """The usage route's body for ``model``."""
    budget = flow.budget_of(model)
    status = None
    if budget is not None:
        total = model.usage.total
        reason = budget.exceeded_by(model.usage)
        status = BudgetStatus(
            max_tokens=budget.max_tokens,
            max_cost=budget.max_cost,
            on_exceeded=budget.on_exceeded,
            remaining_tokens=None if budget.max_tokens is None else max(0, budget.max_tokens - total.total_tokens),
            remaining_cost=None if budget.max_cost is None else max(0.0, round(budget.max_cost - total.cost, 10)),
            exceeded=reason is not None,
            reason=reason,
        )
    return UsageReport(session_id=model.session_id, usage=model.usage, budget=status)


def history_report(model: GenieModel, kinds: list[HistoryKind] | None = None, last: int | None = None) -> HistoryReport:
    """The history route's body: the entries of ``kinds`` (all when None), the ``last`` ones only."""
    entries = [entry for entry in model.history if not kinds or entry.kind in kinds]
    if last is not None:
        entries = entries[-last:] if last > 0 else []
    return HistoryReport(session_id=model.session_id, entries=entries, limit=type(model).history_limit)
