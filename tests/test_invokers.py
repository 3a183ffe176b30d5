"""Invokers (genie_graph._invokers): built-ins, dotted classes, pools, laziness, the offline switch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genie_graph import GenieFlow, GenieInvoker, GenieModel, GenieStateMachine, State, build_graph
from genie_graph._invokers import InvokerPool, InvokerRegistry, RetryPolicy, build_invoker, effective_config
from genie_graph._invokers.echo import EchoInvoker
from genie_graph._invokers.openai import OpenAIInvoker
from genie_graph._invokers.python import PythonInvoker
from genie_graph.errors import InvokerConfigError, InvokerError
from tests.flows_port import probes
from tests.helpers import send, write_tree

KEY = "inv"


def make_model(ai_template: Any) -> type[GenieModel]:
    class InvMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        ai = State(value=2)
        show = State(value=3)

        user_input = intro.to(ai) | show.to(ai)
        ai_extraction = ai.to(show)

        templates = {"intro": "ui/intro.jinja2", "ai": ai_template, "show": "ui/show.jinja2"}

    class InvModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return InvMachine

    return InvModel


def tree_with(tmp_path: Path, meta: str, extra: dict[str, str] | None = None) -> Path:
    """A template root with a renderer ``ui`` directory and an ``llm`` directory using ``meta``."""
    return write_tree(
        tmp_path / "templates",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "{{ actor_input }}",
            "llm/meta.yaml": meta,
            "llm/ask.jinja2": "{{ actor_input }}",
            **(extra or {}),
        },
    )


@pytest.fixture
def flows() -> Iterator[list[GenieFlow]]:
    made: list[GenieFlow] = []
    yield made
    for flow in made:
        flow.close()


def turn(flows: list[GenieFlow], root: Path, text: str, template: Any = "llm/ask.jinja2", **kwargs: Any) -> str:
    """One user_input through ``template`` in a fresh GenieFlow; the response (error fails the test)."""
    flow = GenieFlow(template_root=root, store="memory://", **kwargs)
    flows.append(flow)
    flow.register_model(KEY, make_model(template))
    session_id = flow.create_new_session(KEY).session_id
    answer = send(flow, KEY, session_id, "user_input", text)
    assert answer.error is None, answer.error
    assert answer.response is not None
    return answer.response


# ---------------------------------------------------------------------------------------------
# echo


def test_echo_prefix_and_suffix() -> None:
    invoker = build_invoker({"type": "echo", "prefix": "<", "suffix": ">"})
    assert isinstance(invoker, EchoInvoker)
    assert invoker.invoke("  x  ") == "<x>"  # stripped by default
    assert asyncio.run(invoker.ainvoke("y")) == "<y>"
    assert build_invoker({"type": "echo", "strip": False}).invoke(" z ") == " z "
    assert build_invoker({"type": "echo"}).invoke("plain") == "plain"


def test_echo_in_a_flow(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = tree_with(tmp_path, 'invoker:\n  type: echo\n  prefix: "Echo: "\n  suffix: " (end)"\n')
    assert turn(flows, root, "hello") == "Echo: hello (end)"


# ---------------------------------------------------------------------------------------------
# python


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.flows_port.callables:shout", "HELLO"),
        ("tests.flows_port.callables.shout", "HELLO"),
        ("tests.flows_port.callables:ashout", "async:HELLO"),
        ("tests.flows_port.callables:RUNNABLE", "runnable:olleh"),
        ("tests.flows_port.callables:not_text", "{'got': 'hello'}"),
    ],
    ids=["sync", "sync-dotted", "async", "runnable", "non-text"],
)
def test_python_invoker(target: str, expected: str, tmp_path: Path, flows: list[GenieFlow]) -> None:
    invoker = build_invoker({"type": "python", "callable": target})
    assert isinstance(invoker, PythonInvoker)
    assert invoker.invoke("hello") == expected
    assert asyncio.run(invoker.ainvoke("hello")) == expected
    root = tree_with(tmp_path, f"invoker:\n  type: python\n  callable: {target}\n")
    assert turn(flows, root, "hello") == expected


def test_python_invoker_runnable_is_a_langchain_runnable() -> None:
    from langchain_core.runnables import RunnableLambda

    from tests.flows_port.callables import RUNNABLE

    assert isinstance(RUNNABLE, RunnableLambda)


@pytest.mark.parametrize(
    "config",
    [
        {"type": "python"},
        {"type": "python", "callable": "tests.flows_port.callables:missing"},
        {"type": "python", "callable": "tests.flows_port.no_such_module:f"},
    ],
    ids=["no-callable", "missing-attribute", "missing-module"],
)
def test_python_invoker_misconfigured(config: dict[str, Any]) -> None:
    with pytest.raises(InvokerConfigError):
        build_invoker(config)


# ---------------------------------------------------------------------------------------------
# dotted classes


def test_genie_invoker_subclass_gets_the_rest_of_the_mapping(tmp_path: Path, flows: list[GenieFlow]) -> None:
    probes.Recording.configs.clear()
    config = {
        "type": "tests.flows_port.probes.Recording",
        "tag": "T",
        "extra": {"nested": [1, 2]},
        "pool_size": 2,
        "retry": 1,
        "on_error": "fallback",
        "offline": {"type": "echo"},
    }
    invoker = build_invoker(config)
    assert isinstance(invoker, probes.Recording) and isinstance(invoker, GenieInvoker)
    assert probes.Recording.configs == [{"tag": "T", "extra": {"nested": [1, 2]}}]
    assert invoker.invoke("x") == "T:x"

    probes.Recording.configs.clear()
    meta = (
        "invoker:\n  type: tests.flows_port.probes.Recording\n  tag: M\n  extra: {nested: [1, 2]}\n"
        "  pool_size: 2\n  retry: 1\n  on_error: fallback\n  offline: {type: echo}\n"
    )
    assert turn(flows, tree_with(tmp_path, meta), "hello") == "M:hello"
    assert probes.Recording.configs == [{"tag": "M", "extra": {"nested": [1, 2]}}]


def test_genie_flow_style_class_without_our_base(tmp_path: Path, flows: list[GenieFlow]) -> None:
    assert not issubclass(probes.GenieFlowStyle, GenieInvoker)
    invoker = build_invoker({"type": "tests.flows_port.probes.GenieFlowStyle", "greeting": "Hello"})
    assert invoker.invoke("Ann") == "Hello, Ann"
    assert asyncio.run(invoker.ainvoke("Bob")) == "Hello, Bob"
    root = tree_with(tmp_path, "invoker:\n  type: tests.flows_port.probes.GenieFlowStyle\n  greeting: Howdy\n")
    assert turn(flows, root, "partner") == "Howdy, partner"


def test_async_invoke_of_a_subclass() -> None:
    class AsyncShout(GenieInvoker):
        @classmethod
        def from_config(cls, config: Any) -> AsyncShout:
            return cls()

        async def invoke(self, content: str) -> str:  # type: ignore[override]
            await asyncio.sleep(0)
            return content.upper()

    assert asyncio.run(AsyncShout().ainvoke("hi")) == "HI"


# ---------------------------------------------------------------------------------------------
# pools


async def _overfill(pool: InvokerPool, pool_size: int) -> list[str]:
    """Start ``pool_size + 1`` calls at once; count who is inside ``invoke`` once the pool is full."""
    probe = probes.AsyncPoolProbe
    calls = [asyncio.create_task(pool.ainvoke(f"call {i}")) for i in range(pool_size + 1)]
    try:
        async with asyncio.timeout(10):
            await probe.filled.wait()
        # Every call has started by now (one loop, no threads): the extra one waits for the pool.
        assert probe.active == pool_size
        assert probe.entered == pool_size
    finally:
        probe.release.set()
    return list(await asyncio.gather(*calls))


@pytest.mark.parametrize("pool_size", [1, 2, 3])
def test_pool_size_limits_concurrent_invocations(pool_size: int) -> None:
    probes.AsyncPoolProbe.reset(hold_until=pool_size)
    pool = InvokerRegistry().pool_for({"type": "tests.flows_port.probes.AsyncPoolProbe", "pool_size": pool_size})
    results = asyncio.run(_overfill(pool, pool_size))
    assert results == [f"call {i}" for i in range(pool_size + 1)]
    assert probes.AsyncPoolProbe.entered == pool_size + 1  # the extra call ran once a slot was free
    assert probes.AsyncPoolProbe.max_active == pool_size
    assert probes.AsyncPoolProbe.built <= pool_size  # invokers are reused, one call at a time each


def test_sync_invokers_fill_the_pool_but_never_exceed_it() -> None:
    """Blocking ``invoke`` in worker threads: pool_size calls are inside at once, never more."""
    probes.PoolProbe.reset(hold_until=2, expected=3)
    pool = InvokerRegistry().pool_for({"type": "tests.flows_port.probes.PoolProbe", "pool_size": 2})

    async def three() -> list[str]:
        return list(await asyncio.gather(*(pool.ainvoke(f"call {i}") for i in range(3))))

    assert asyncio.run(three()) == ["call 0", "call 1", "call 2"]
    assert probes.PoolProbe.max_active == 2
    assert probes.PoolProbe.built <= 2


def test_pool_size_limits_parallel_branches_in_a_flow(tmp_path: Path, flows: list[GenieFlow]) -> None:
    probes.PoolProbe.reset(hold_until=2, expected=3)
    root = tree_with(
        tmp_path,
        "invoker:\n  type: tests.flows_port.probes.PoolProbe\n  pool_size: 2\n",
        {"llm/a.jinja2": "a", "llm/b.jinja2": "b", "llm/c.jinja2": "c"},
    )
    template = {"a": "llm/a.jinja2", "b": "llm/b.jinja2", "c": "llm/c.jinja2"}
    assert turn(flows, root, "go", template) == '{"a": "a", "b": "b", "c": "c"}'
    assert probes.PoolProbe.max_active == 2


def test_default_pool_size_comes_from_genie_flow(tmp_path: Path, flows: list[GenieFlow]) -> None:
    probes.PoolProbe.reset(hold_until=2, expected=3)
    root = tree_with(
        tmp_path,
        "invoker:\n  type: tests.flows_port.probes.PoolProbe\n",
        {"llm/a.jinja2": "a", "llm/b.jinja2": "b", "llm/c.jinja2": "c"},
    )
    template = {"a": "llm/a.jinja2", "b": "llm/b.jinja2", "c": "llm/c.jinja2"}
    assert turn(flows, root, "go", template, pool_size=2) == '{"a": "a", "b": "b", "c": "c"}'
    assert probes.PoolProbe.max_active == 2


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(InvokerConfigError):
        InvokerPool(lambda: EchoInvoker(), 0, RetryPolicy())


def test_retry_policy_parsing() -> None:
    assert RetryPolicy.parse(None) == RetryPolicy(0, 0.0)
    assert RetryPolicy.parse(3) == RetryPolicy(3, 0.0)
    assert RetryPolicy.parse({"retries": 2, "backoff_seconds": 0.5}) == RetryPolicy(2, 0.5)
    assert RetryPolicy.parse({"attempts": 3}) == RetryPolicy(2, 0.0)  # three calls in all
    with pytest.raises(InvokerConfigError, match="retries"):
        RetryPolicy.parse({"attempts": "many"})
    with pytest.raises(InvokerConfigError):
        RetryPolicy.parse("often")
    with pytest.raises(InvokerConfigError):
        RetryPolicy.parse(True)


def test_pool_retries_then_raises_invoker_error() -> None:
    key = "pool-retry"
    probes.Flaky.attempts.pop(key, None)
    pool = InvokerPool(lambda: probes.Flaky(key, 10), 1, RetryPolicy(2))
    with pytest.raises(InvokerError, match="flaky failure 3"):
        asyncio.run(pool.ainvoke("x"))
    assert probes.Flaky.attempts[key] == 3


def test_same_mapping_shares_one_pool() -> None:
    registry = InvokerRegistry()
    one = registry.pool_for({"type": "echo", "prefix": "a"})
    assert registry.pool_for({"prefix": "a", "type": "echo"}) is one
    assert registry.pool_for({"type": "echo", "prefix": "b"}) is not one


# ---------------------------------------------------------------------------------------------
# laziness, and wrong types found early


def test_invokers_are_built_lazily(tmp_path: Path, flows: list[GenieFlow]) -> None:
    probes.Lazy.built = 0
    root = tree_with(tmp_path, "invoker:\n  type: tests.flows_port.probes.Lazy\n")
    flow = GenieFlow(template_root=root, store="memory://")
    flows.append(flow)
    flow.register_model(KEY, make_model("llm/ask.jinja2"))
    assert probes.Lazy.built == 0
    flow.graph(KEY)
    session_id = flow.create_new_session(KEY).session_id
    assert probes.Lazy.built == 0
    assert send(flow, KEY, session_id, "user_input", "one").response == "lazy:one"
    assert probes.Lazy.built == 1
    assert send(flow, KEY, session_id, "user_input", "two").response == "lazy:two"
    assert probes.Lazy.built == 1


def test_build_graph_builds_no_invoker(tmp_path: Path) -> None:
    probes.Lazy.built = 0
    root = tree_with(tmp_path, "invoker:\n  type: tests.flows_port.probes.Lazy\n")
    build_graph(make_model("llm/ask.jinja2"), root)
    assert probes.Lazy.built == 0


WRONG_TYPES = [
    "tests.flows_port.no_such_module.Invoker",
    "tests.flows_port.probes.Missing",
    "tests.flows_port.probes.NoFromConfig",
    "nodots",
]


@pytest.mark.parametrize("type_name", WRONG_TYPES)
def test_wrong_type_is_reported_at_register_model(type_name: str, tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = tree_with(tmp_path, f"invoker:\n  type: {type_name}\n")
    flow = GenieFlow(template_root=root, store="memory://")
    flows.append(flow)
    with pytest.raises(InvokerConfigError):
        flow.register_model(KEY, make_model("llm/ask.jinja2"))
    with pytest.raises(InvokerConfigError):
        build_graph(make_model("llm/ask.jinja2"), root)


def test_wrong_type_inside_a_composite_is_reported_at_register_model(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = tree_with(
        tmp_path,
        "invoker:\n  type: echo\n",
        {"bad/meta.yaml": "invoker:\n  type: tests.flows_port.probes.Missing\n", "bad/x.jinja2": "x"},
    )
    flow = GenieFlow(template_root=root, store="memory://")
    flows.append(flow)
    with pytest.raises(InvokerConfigError):
        flow.register_model(KEY, make_model(["llm/ask.jinja2", {"a": "llm/ask.jinja2", "b": "bad/x.jinja2"}]))


def test_missing_type_is_reported_at_register_model(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = tree_with(tmp_path, "invoker:\n  prefix: x\n")
    flow = GenieFlow(template_root=root, store="memory://")
    flows.append(flow)
    with pytest.raises(InvokerConfigError, match="type"):
        flow.register_model(KEY, make_model("llm/ask.jinja2"))


# ---------------------------------------------------------------------------------------------
# the offline switch

OPENAI_WITH_OFFLINE = {
    "type": "openai",
    "model": "gpt-4o-mini",
    "pool_size": 2,
    "retry": 1,
    "on_error": "sorry",
    "offline": {"type": "echo", "prefix": "offline: "},
}


def test_offline_stand_in_without_an_endpoint() -> None:
    effective = effective_config(OPENAI_WITH_OFFLINE)
    assert effective["type"] == "echo"
    assert {k: effective[k] for k in ("pool_size", "retry", "on_error")} == {
        "pool_size": 2,
        "retry": 1,
        "on_error": "sorry",
    }
    invoker = build_invoker(effective)
    assert isinstance(invoker, EchoInvoker)
    assert invoker.invoke("q") == "offline: q"


def test_offline_switch_forces_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GENIE_GRAPH_OFFLINE", "1")
    assert isinstance(build_invoker(effective_config(OPENAI_WITH_OFFLINE)), EchoInvoker)


def test_endpoint_env_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    effective = effective_config(OPENAI_WITH_OFFLINE)
    assert effective["type"] == "openai"
    invoker = build_invoker(effective)  # builds a client; no request is made
    assert isinstance(invoker, OpenAIInvoker)
    assert invoker.base_url.startswith("http://127.0.0.1:9/v1")


def test_api_key_env_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert isinstance(build_invoker(effective_config(OPENAI_WITH_OFFLINE)), OpenAIInvoker)


def test_offline_zero_never_uses_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_OFFLINE", "0")
    assert effective_config(OPENAI_WITH_OFFLINE)["type"] == "openai"


def test_offline_stand_in_answers_in_a_flow(tmp_path: Path, flows: list[GenieFlow]) -> None:
    meta = (
        "invoker:\n  type: openai\n  model: gpt-4o-mini\n"
        "  offline:\n    type: python\n    callable: tests.flows_port.callables:shout\n"
    )
    assert turn(flows, tree_with(tmp_path, meta), "quiet please") == "QUIET PLEASE"


def test_offline_must_be_an_invoker_mapping() -> None:
    with pytest.raises(InvokerConfigError):
        effective_config({"type": "openai", "offline": "echo"})
