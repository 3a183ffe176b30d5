"""OpenAIInvoker against a real OpenAI-compatible server process, through the real langchain-openai client."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import openai
import pytest

from genie_graph._invokers.openai import OpenAIInvoker
from genie_graph.errors import InvokerConfigError, InvokerError
from tests.openai_server import recorded_requests, reset_requests, start_openai_server

# Variables that would otherwise leak in from the developer's shell and change what is tested.
_ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "GENIE_GRAPH_OPENAI_BASE_URL",
    "GENIE_GRAPH_OPENAI_MODEL",
    "GENIE_GRAPH_OPENAI_TEMPERATURE",
)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    base_url, stop = start_openai_server()
    try:
        yield base_url
    finally:
        stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def url(server_url: str) -> str:
    reset_requests(server_url)
    return server_url


def _invoker(url: str, **config: object) -> OpenAIInvoker:
    return OpenAIInvoker.from_config({"model": "test-model", "base_url": url, **config})


def test_plain_text_sync(url: str) -> None:
    assert _invoker(url).invoke("hello there") == "ECHO: hello there"
    [body] = recorded_requests(url)
    assert body["model"] == "test-model"
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert not body.get("stream")


def test_plain_text_async(url: str) -> None:
    invoker = _invoker(url)
    assert asyncio.run(invoker.ainvoke("first")) == "ECHO: first"
    # A second, fresh event loop: the client must not reuse connections owned by the closed first loop.
    assert asyncio.run(invoker.ainvoke("second")) == "ECHO: second"
    assert [b["messages"][-1]["content"] for b in recorded_requests(url)] == ["first", "second"]


def test_concurrent_async_calls(url: str) -> None:
    invoker = _invoker(url)

    async def many() -> list[str]:
        return await asyncio.gather(*(invoker.ainvoke(f"n{i}") for i in range(5)))

    assert asyncio.run(many()) == [f"ECHO: n{i}" for i in range(5)]


def test_yaml_conversation_is_sent_as_messages(url: str) -> None:
    content = (
        "- role: system\n"
        "  content: You are terse.\n"
        "- role: user\n"
        "  content: hi\n"
        "- role: assistant\n"
        "  content: hello\n"
        "- role: user\n"
        "  content: __MESSAGES__ again\n"
    )
    reply = _invoker(url).invoke(content)
    expected = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "__MESSAGES__ again"},
    ]
    assert json.loads(reply) == expected
    [body] = recorded_requests(url)
    assert [(m["role"], m["content"]) for m in body["messages"]] == [(m["role"], m["content"]) for m in expected]


def test_yaml_ai_and_human_roles_map_to_assistant_and_user(url: str) -> None:
    content = "- role: human\n  content: q\n- role: ai\n  content: a\n- role: human\n  content: __MESSAGES__\n"
    reply = asyncio.run(_invoker(url).ainvoke(content))
    assert [m["role"] for m in json.loads(reply)] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    "content",
    [
        "- just\n- a list\n",
        "- role: user\n  content: hi\n  name: extra-key\n",
        "- role: narrator\n  content: hi\n",
        "role: user\ncontent: a mapping, not a list\n",
        "[]",
        "Dear model: please: answer",  # not valid YAML at all
    ],
)
def test_other_text_is_one_user_message(url: str, content: str) -> None:
    assert _invoker(url).invoke(content) == "ECHO: " + content
    [body] = recorded_requests(url)
    assert body["messages"] == [{"role": "user", "content": content}]


def test_http_500_raises_invoker_error(url: str) -> None:
    invoker = _invoker(url, max_retries=0)
    with pytest.raises(InvokerError, match="500") as info:
        invoker.invoke("__HTTP500__")
    message = str(info.value)
    assert "test-model" in message
    assert url in message
    assert isinstance(info.value.__cause__, openai.InternalServerError)
    assert len(recorded_requests(url)) == 1


def test_http_500_raises_invoker_error_async(url: str) -> None:
    invoker = _invoker(url, max_retries=0)
    with pytest.raises(InvokerError, match="500") as info:
        asyncio.run(invoker.ainvoke("__HTTP500__"))
    assert isinstance(info.value.__cause__, openai.InternalServerError)


def test_http_500_is_retried_max_retries_times(url: str) -> None:
    with pytest.raises(InvokerError, match="500"):
        _invoker(url, max_retries=1).invoke("__HTTP500__")
    assert len(recorded_requests(url)) == 2


def test_timeout_raises_invoker_error(url: str) -> None:
    invoker = _invoker(url, timeout=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(InvokerError, match="(?i)timed out") as info:
        invoker.invoke("__SLOW__")
    assert time.monotonic() - started < 4
    assert isinstance(info.value.__cause__, openai.APITimeoutError)


def test_timeout_raises_invoker_error_async(url: str) -> None:
    invoker = _invoker(url, timeout=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(InvokerError) as info:
        asyncio.run(invoker.ainvoke("__SLOW__"))
    assert time.monotonic() - started < 4
    assert isinstance(info.value.__cause__, openai.APITimeoutError)


def test_environment_overrides_meta_yaml(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_BASE_URL", url)
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_MODEL", "model-from-env")
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_TEMPERATURE", "0.25")
    # Nothing listens on port 9: the call only succeeds if the environment's base_url wins.
    invoker = OpenAIInvoker.from_config(
        {"model": "model-from-yaml", "base_url": "http://127.0.0.1:9/v1", "temperature": 0.9}
    )
    assert invoker.invoke("hi") == "ECHO: hi"
    [body] = recorded_requests(url)
    assert body["model"] == "model-from-env"
    assert body["temperature"] == 0.25


def test_openai_base_url_is_the_last_fallback(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    invoker = OpenAIInvoker.from_config({"model": "test-model"})
    assert invoker.base_url.rstrip("/") == url
    assert invoker.invoke("fallback") == "ECHO: fallback"


def test_defaults(url: str) -> None:
    invoker = OpenAIInvoker.from_config({"base_url": url})
    assert (invoker.model, invoker.timeout, invoker.max_retries, invoker.temperature) == (
        "gpt-4o-mini",
        60.0,
        2,
        None,
    )
    invoker.invoke("x")
    [body] = recorded_requests(url)
    assert body["model"] == "gpt-4o-mini"
    assert "temperature" not in body


def test_missing_api_key_without_base_url_is_a_config_error() -> None:
    with pytest.raises(InvokerConfigError, match="OPENAI_API_KEY"):
        OpenAIInvoker.from_config({"model": "gpt-4o-mini"})


def test_missing_custom_api_key_env_is_named() -> None:
    with pytest.raises(InvokerConfigError, match="MY_LLM_KEY"):
        OpenAIInvoker.from_config({"api_key_env": "MY_LLM_KEY"})


def test_api_key_from_named_env_var_needs_no_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-test")
    invoker = OpenAIInvoker.from_config({"api_key_env": "MY_LLM_KEY"})
    assert invoker.base_url.rstrip("/") == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    "config",
    [
        {"temperature": "warm"},
        {"timeout": 0},
        {"max_retries": -1},
        {"max_retries": 1.5},
    ],
)
def test_malformed_config_is_a_config_error(url: str, config: dict[str, object]) -> None:
    with pytest.raises(InvokerConfigError):
        _invoker(url, **config)


def test_malformed_env_temperature_is_a_config_error(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_OPENAI_TEMPERATURE", "hot")
    with pytest.raises(InvokerConfigError, match="GENIE_GRAPH_OPENAI_TEMPERATURE"):
        _invoker(url)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_connection_refused_raises_invoker_error() -> None:
    invoker = OpenAIInvoker.from_config({"base_url": f"http://127.0.0.1:{_unused_port()}/v1", "max_retries": 0})
    with pytest.raises(InvokerError, match="Connection") as info:
        invoker.invoke("anyone there?")
    assert isinstance(info.value.__cause__, openai.APIConnectionError)
    with pytest.raises(InvokerError, match="Connection"):
        asyncio.run(invoker.ainvoke("anyone there?"))
