"""Tokens, cost and budgets (issue 11): real langchain-openai calls to a local OpenAI-compatible server.

The test server counts one token per whitespace-separated word (prompt: every message; completion:
the reply), so the expected figures are computed here from the prompts the server received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genie_graph import (
    Budget,
    EventInput,
    GenieFlow,
    GenieInvoker,
    GenieModel,
    GenieStateMachine,
    HistoryKind,
    PriceTable,
    State,
    report_usage,
)
from genie_graph.errors import FlowDefinitionError, InvokerConfigError
from tests.helpers import send, write_tree
from tests.openai_server import recorded_requests, reset_requests, start_openai_server

KEY = "usage"
PRICES = {"currency": "EUR", "models": {"priced-model": {"input": 2.0, "output": 8.0}, "default": {"input": 1.0}}}


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    base_url, stop = start_openai_server()
    yield base_url
    stop()


@pytest.fixture
def llm(server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GENIE_GRAPH_OPENAI_BASE_URL", "GENIE_GRAPH_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    reset_requests(server_url)
    return server_url


class Counting(GenieInvoker):
    """Reports its own usage from a worker thread (a blocking invoke)."""

    @classmethod
    def from_config(cls, config: Any) -> Counting:
        return cls()

    def invoke(self, content: str) -> str:
        report_usage(input_tokens=len(content), output_tokens=3, model="counting-model")
        return "counted"


def make_model(budget: Budget | Callable[[GenieModel], Budget | None] | None = None) -> type[GenieModel]:
    class UsageMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        ai = State(value=2)
        show = State(value=3)
        broke = State(value=4)

        user_input = intro.to(ai) | show.to(ai)
        ai_extraction = ai.to(show)
        over_budget = ai.to(broke)
        restart = broke.to(intro)

        templates = {
            "intro": "ui/intro.jinja2",
            "ai": ["llm/first.jinja2", "llm/second.jinja2", "own/count.jinja2"],
            "show": "ui/show.jinja2",
            "broke": "ui/broke.jinja2",
        }

    UsageMachine.budget = budget if isinstance(budget, Budget | None) else staticmethod(budget)  # type: ignore[assignment]

    class UsageModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return UsageMachine

    return UsageModel


def tree(tmp_path: Path, url: str) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "{{ actor_input }}",
            "ui/broke.jinja2": "Out of budget: {{ actor_input }}",
            "llm/meta.yaml": f"invoker:\n  type: openai\n  model: priced-model\n  base_url: {url}\n",
            "llm/first.jinja2": "say {{ actor_input }}",
            "llm/second.jinja2": "{{ previous_result }} again",
            "own/meta.yaml": "invoker:\n  type: tests.test_usage.Counting\n",
            "own/count.jinja2": "{{ previous_result }}",
        },
    )


def words(body: dict[str, Any]) -> int:
    return sum(len(str(m["content"]).split()) for m in body["messages"])


@pytest.fixture
def flows() -> Iterator[list[GenieFlow]]:
    made: list[GenieFlow] = []
    yield made
    for flow in made:
        flow.close()


def open_flow(flows: list[GenieFlow], root: Path, store_url: str, budget: Any = None) -> GenieFlow:
    flow = GenieFlow(template_root=root, store=store_url, prices=PRICES)
    flows.append(flow)
    flow.register_model(KEY, make_model(budget))
    return flow


def test_every_call_is_counted_per_state_template_and_model_and_priced(
    llm: str, tmp_path: Path, store_url: str, flows: list[GenieFlow]
) -> None:
    flow = open_flow(flows, tree(tmp_path, llm), store_url)
    session = flow.create_new_session(KEY).session_id
    answer = send(flow, KEY, session, "user_input", "hello world")
    assert answer.error is None and answer.response == "counted"

    first, second = recorded_requests(llm)
    assert first["messages"][-1]["content"] == "say hello world"
    first_out, second_out = len("ECHO: say hello world".split()), len("ECHO: ECHO: say hello world again".split())
    own_in = len("ECHO: ECHO: say hello world again")
    usage = flow.get_model(KEY, session).usage
    assert usage.currency == "EUR"
    llm_in, llm_out = words(first) + words(second), first_out + second_out
    assert usage.by_template["llm/first.jinja2"].model_dump() == {
        "calls": 1,
        "input_tokens": words(first),
        "output_tokens": first_out,
        "total_tokens": words(first) + first_out,
        "cost": pytest.approx((words(first) * 2.0 + first_out * 8.0) / 1e6),
    }
    assert usage.by_template["llm/second.jinja2"].input_tokens == words(second)
    assert usage.by_template["own/count.jinja2"].model_dump() == {
        "calls": 1,
        "input_tokens": own_in,
        "output_tokens": 3,
        "total_tokens": own_in + 3,
        "cost": pytest.approx(own_in * 1.0 / 1e6),  # no price of its own: the default's
    }
    assert usage.by_model["priced-model"].calls == 2
    assert usage.by_model["priced-model"].total_tokens == llm_in + llm_out
    assert usage.by_model["counting-model"].calls == 1
    assert list(usage.by_state) == ["ai"]
    assert usage.by_state["ai"] == usage.total
    assert usage.total.calls == 3
    assert usage.total.total_tokens == llm_in + llm_out + own_in + 3
    assert usage.total.cost == pytest.approx((llm_in * 2 + llm_out * 8 + own_in) / 1e6)

    send(flow, KEY, session, "user_input", "once more")
    assert flow.get_model(KEY, session).usage.total.calls == 6  # kept across turns and reloads
    [run_1, run_2] = [e for e in flow.get_model(KEY, session).history if e.kind is HistoryKind.INVOKER_RUN]
    assert (run_1.state, run_1.outcome, run_2.outcome) == ("ai", "ok", "ok")
    assert run_1.duration_ms is not None and run_1.duration_ms > 0


def test_streamed_runs_count_their_tokens_too(llm: str, tmp_path: Path, flows: list[GenieFlow]) -> None:
    flow = open_flow(flows, tree(tmp_path, llm), "memory://")
    session = flow.create_new_session(KEY).session_id

    async def follow() -> list[str]:
        event = EventInput(session_id=session, event="user_input", event_input="stream me")
        return [item["event"] async for item in flow.astream_event(KEY, event)]

    kinds = asyncio.run(follow())
    assert "token" in kinds
    bodies = recorded_requests(llm)
    assert all(body.get("stream") for body in bodies)
    assert all(body["stream_options"] == {"include_usage": True} for body in bodies)
    usage = flow.get_model(KEY, session).usage
    assert usage.by_model["priced-model"].input_tokens == sum(words(b) for b in bodies)
    assert usage.by_model["priced-model"].output_tokens > 0


def test_a_spent_budget_refuses_the_run_and_sends_the_declared_fallback(
    llm: str, tmp_path: Path, store_url: str, flows: list[GenieFlow]
) -> None:
    flow = open_flow(flows, tree(tmp_path, llm), store_url, Budget(max_tokens=10, on_exceeded="over_budget"))
    session = flow.create_new_session(KEY).session_id
    assert send(flow, KEY, session, "user_input", "hello").error is None  # the first run may overshoot
    spent = flow.get_model(KEY, session).usage.total.total_tokens
    assert spent > 10
    reset_requests(llm)

    answer = send(flow, KEY, session, "user_input", "more please")
    assert recorded_requests(llm) == []  # no call was made
    model = flow.get_model(KEY, session)
    assert flow.flow_of(KEY).state_of(model) == "broke"
    assert answer.next_actions == ["restart"]
    shown = model.dialogue[-1].actor_text  # the fallback state's template shows the refusal
    assert shown.startswith("Out of budget: ") and f"used {spent} tokens of its budget of 10" in shown
    error = json.loads(answer.error or "{}")
    assert error["error"] == "budget_exceeded" and error["state"] == "ai"
    assert model.usage.total.total_tokens == spent  # nothing was added
    refused = [e for e in model.history if e.kind is HistoryKind.BUDGET_REFUSED]
    assert len(refused) == 1 and refused[0].state == "ai"
    assert model.history[-1].kind is HistoryKind.EVENT and model.history[-1].event == "over_budget"


def test_without_a_fallback_the_completion_event_carries_the_refusal(
    llm: str, tmp_path: Path, flows: list[GenieFlow]
) -> None:
    flow = open_flow(flows, tree(tmp_path, llm), "memory://", Budget(max_cost=1e-9))
    session = flow.create_new_session(KEY).session_id
    send(flow, KEY, session, "user_input", "hello")
    answer = send(flow, KEY, session, "user_input", "again")
    model = flow.get_model(KEY, session)
    assert flow.flow_of(KEY).state_of(model) == "show"
    assert "EUR of its budget of 1e-09 EUR" in model.dialogue[-1].actor_text
    assert json.loads(answer.error or "{}")["error"] == "budget_exceeded"


def test_budget_and_price_table_mistakes_are_named(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = tree(tmp_path, "http://127.0.0.1:9/v1")
    flow = GenieFlow(template_root=root, store="memory://")
    flows.append(flow)
    with pytest.raises(FlowDefinitionError, match="on_exceeded='nope'.*Known events"):
        flow.register_model(KEY, make_model(Budget(max_tokens=5, on_exceeded="nope")))
    with pytest.raises(InvokerConfigError, match="price of model 'm' must be"):
        PriceTable.parse({"models": {"m": {"input": "lots"}}})
    with pytest.raises(InvokerConfigError, match="does not exist"):
        PriceTable.parse(tmp_path / "missing.yaml")


def test_price_table_from_yaml_and_prefix_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("currency: USD\nmodels:\n  gpt-4o: {input: 2.5, output: 10}\n  gpt-4o-mini: {input: 0.15}\n")
    table = PriceTable.parse(path)
    mini = table.price_of("gpt-4o-mini-2024-07-18")
    assert mini is not None and mini.input_per_million == 0.15  # the longest matching name wins
    assert table.price_of("claude") is None
    monkeypatch.setenv("GENIE_GRAPH_PRICES", str(path))
    flow = GenieFlow(store="memory://")
    try:
        assert flow._runner.prices == table
    finally:
        flow.close()


def test_history_is_bounded(tmp_path: Path, flows: list[GenieFlow], llm: str) -> None:
    model_class = make_model()
    model_class.history_limit = 5
    flow = GenieFlow(template_root=tree(tmp_path, llm), store="memory://")
    flows.append(flow)
    flow.register_model(KEY, model_class)
    session = flow.create_new_session(KEY).session_id
    for text in ("a", "b", "c"):
        send(flow, KEY, session, "user_input", text)
    history = flow.get_model(KEY, session).history
    assert len(history) == 5
    assert [e.kind for e in history][-2:] == [HistoryKind.INVOKER_RUN, HistoryKind.EVENT]
    assert history[-1].model_dump(include={"state", "event", "target"}) == {
        "state": "ai",
        "event": "ai_extraction",
        "target": "show",
    }


def test_a_budget_function_gives_each_session_its_own(llm: str, tmp_path: Path, flows: list[GenieFlow]) -> None:
    def per_session(model: GenieModel) -> Budget | None:
        return None if model.secondary_storage.get("user_info") else Budget(max_tokens=1, on_exceeded="over_budget")

    flow = open_flow(flows, tree(tmp_path, llm), "memory://", per_session)
    user = {"email": "vip@example.org", "firstname": "V", "lastname": "P"}
    vip = flow.create_new_session(KEY, user_info=user).session_id
    anonymous = flow.create_new_session(KEY).session_id
    for _ in range(2):
        assert send(flow, KEY, vip, "user_input", "hi").error is None
        send(flow, KEY, anonymous, "user_input", "hi")
    assert flow.flow_of(KEY).state_of(flow.get_model(KEY, vip)) == "show"
    assert flow.flow_of(KEY).state_of(flow.get_model(KEY, anonymous)) == "broke"


def test_a_script_with_fakes_counts_words_as_tokens_and_meets_the_budget(tmp_path: Path) -> None:
    from genie_graph.testing import run_script

    flow = GenieFlow(template_root=tree(tmp_path, "http://127.0.0.1:9/v1"), store="memory://")
    flow.register_model(KEY, make_model(Budget(max_tokens=12, on_exceeded="over_budget")))
    try:
        result = run_script(
            flow,
            KEY,
            [
                {"say": "hello there", "state": "show", "fields": {"usage.by_model.fake.calls": 3}},
                {"say": "and again", "state": "broke", "error": "used 14 tokens of its budget of 12"},
            ],
            fakes={"first": "one two three", "second": "four", "count": "five six"},
        )
    finally:
        flow.close()
    # first: "say hello there" (3 words) -> 3 words; second: "one two three again" (4) -> 1; count: "four" (1) -> 2
    assert result.turns[0].model.usage.total.total_tokens == 3 + 3 + 4 + 1 + 1 + 2
