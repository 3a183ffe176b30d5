"""Tool calling in ``tests/openai_server.py``, through the real langchain-openai client."""

from __future__ import annotations

import json
import operator
import urllib.request
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.openai_server import recorded_requests, reset_requests, start_openai_server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    base_url, stop = start_openai_server()
    try:
        yield base_url
    finally:
        stop()


@pytest.fixture
def url(server_url: str) -> str:
    reset_requests(server_url)
    return server_url


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


TOOLS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "add": lambda args: add(**args),
    "multiply": multiply.invoke,
    "shout": shout.invoke,
}


def _chat(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="test-model", base_url=url, api_key=SecretStr("x"), max_retries=0, stream_usage=True, **kwargs
    )


def _bound(url: str) -> Any:
    return _chat(url).bind_tools([add, multiply, shout])


def _streamed(runnable: Any, messages: Any) -> AIMessageChunk:
    chunks = list(runnable.stream(messages))
    assert len(chunks) > 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    return total


def _ask(runnable: Any, messages: list[BaseMessage], streamed: bool) -> AIMessage | AIMessageChunk:
    if streamed:
        return _streamed(runnable, messages)
    reply = runnable.invoke(messages)
    assert isinstance(reply, AIMessage)
    return reply


def _run_tools(reply: AIMessage | AIMessageChunk) -> list[ToolMessage]:
    return [
        ToolMessage(content=str(TOOLS[call["name"]](call["args"])), tool_call_id=call["id"])
        for call in reply.tool_calls
    ]


def _words(text: str) -> int:
    return len(text.split())


# ---- tool calls -------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_one_tool_call(url: str, streamed: bool) -> None:
    reply = _ask(_bound(url), [HumanMessage('please __CALL:add:{"a": 2, "b": 3}__')], streamed)
    assert reply.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]
    assert reply.content == ""
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == _words('please __CALL:add:{"a": 2, "b": 3}__') == 5
    assert reply.usage_metadata["output_tokens"] == _words(json.dumps({"a": 2, "b": 3})) == 4
    assert reply.usage_metadata["total_tokens"] == 9
    [body] = recorded_requests(url)
    assert [t["function"]["name"] for t in body["tools"]] == ["add", "multiply", "shout"]
    assert body["tools"][0]["function"]["parameters"]["properties"].keys() == {"a", "b"}
    assert bool(body.get("stream")) is streamed
    if streamed:
        assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_several_tool_calls_in_order(url: str, streamed: bool) -> None:
    prompt = (
        '__CALL:multiply:{"a":4,"b":5}__ and then\n'
        '__CALL:shout:{ "text" : "odd }__ here, {nested: 1}" }__ then __CALL:add:{"a": -1, "b": 1}__ done'
    )
    reply = _ask(_bound(url), [HumanMessage(prompt)], streamed)
    assert [(c["id"], c["name"], c["args"]) for c in reply.tool_calls] == [
        ("call_1", "multiply", {"a": 4, "b": 5}),
        ("call_2", "shout", {"text": "odd }__ here, {nested: 1}"}),
        ("call_3", "add", {"a": -1, "b": 1}),
    ]
    assert not reply.invalid_tool_calls
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    arguments = [{"a": 4, "b": 5}, {"text": "odd }__ here, {nested: 1}"}, {"a": -1, "b": 1}]
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == sum(_words(json.dumps(a)) for a in arguments)


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_tool_results_come_back_as_text(url: str, streamed: bool) -> None:
    bound = _bound(url)
    messages: list[BaseMessage] = [HumanMessage('__CALL:add:{"a": 2, "b": 3}__ __CALL:shout:{"text": "hi there"}__')]
    first = _ask(bound, messages, streamed)
    messages += [first, *_run_tools(first)]
    second = _ask(bound, messages, streamed)
    assert second.content == "TOOLS: add=5; shout=HI THERE"
    assert not second.tool_calls
    assert second.response_metadata["finish_reason"] == "stop"
    assert second.usage_metadata is not None
    assert second.usage_metadata["output_tokens"] == 4
    # the prompt: the user message's 7 words, the assistant's null content, the tool results' 1 + 2 words
    assert second.usage_metadata["input_tokens"] == 7 + 0 + 1 + 2
    last = recorded_requests(url)[-1]
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in last["messages"][2:]] == ["call_1", "call_2"]


def test_tool_result_names_follow_tool_call_ids(url: str) -> None:
    call = AIMessage(
        content="",
        tool_calls=[
            {"name": "add", "args": {"a": 1, "b": 1}, "id": "call_1", "type": "tool_call"},
            {"name": "multiply", "args": {"a": 2, "b": 2}, "id": "call_2", "type": "tool_call"},
        ],
    )
    messages = [
        HumanMessage("go"),
        call,
        ToolMessage(content="4", tool_call_id="call_2"),
        ToolMessage(content="2", tool_call_id="call_1"),
        ToolMessage(content="x", tool_call_id="call_9"),
    ]
    assert _chat(url).invoke(messages).content == "TOOLS: multiply=4; add=2; ?=x"


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_then_call_makes_a_second_round(url: str, streamed: bool) -> None:
    bound = _bound(url)
    messages: list[BaseMessage] = [
        HumanMessage('__CALL:add:{"a": 2, "b": 3}__ __THEN_CALL:multiply:{"a": 5, "b": 4}__'),
    ]
    first = _ask(bound, messages, streamed)
    assert [(c["id"], c["name"], c["args"]) for c in first.tool_calls] == [("call_1", "add", {"a": 2, "b": 3})]
    messages += [first, *_run_tools(first)]
    second = _ask(bound, messages, streamed)
    assert [(c["id"], c["name"], c["args"]) for c in second.tool_calls] == [("call_1", "multiply", {"a": 5, "b": 4})]
    assert second.response_metadata["finish_reason"] == "tool_calls"
    messages += [second, *_run_tools(second)]
    third = _ask(bound, messages, streamed)
    assert third.content == "TOOLS: multiply=20"
    assert not third.tool_calls
    assert len(recorded_requests(url)) == 3


def test_then_call_of_the_same_tool_with_other_arguments(url: str) -> None:
    bound = _bound(url)
    messages: list[BaseMessage] = [HumanMessage('__CALL:add:{"a": 1, "b": 1}__ __THEN_CALL:add:{"a": 2, "b": 2}__')]
    rounds = []
    while True:
        reply = bound.invoke(messages)
        if not reply.tool_calls:
            break
        rounds.append([c["args"] for c in reply.tool_calls])
        messages += [reply, *_run_tools(reply)]
        assert len(rounds) < 5
    assert rounds == [[{"a": 1, "b": 1}], [{"a": 2, "b": 2}]]
    assert reply.content == "TOOLS: add=4"


def test_markers_without_tools_are_plain_text(url: str) -> None:
    prompt = '__CALL:add:{"a": 1, "b": 2}__'
    reply = _chat(url).invoke(prompt)
    assert reply.content == "ECHO: " + prompt
    assert not reply.tool_calls
    assert "tools" not in recorded_requests(url)[0]


@pytest.mark.parametrize(
    "prompt",
    ['__CALL:add:{"a": 1, "b": __', "__CALL:add:[1, 2]__", '__CALL:add:{"a": 1} __', "__CALL:add:__"],
    ids=["broken-json", "not-an-object", "no-closing-marker", "no-json"],
)
def test_malformed_call_markers_are_plain_text(url: str, prompt: str) -> None:
    reply = _bound(url).invoke(prompt)
    assert reply.content == "ECHO: " + prompt
    assert not reply.tool_calls


def test_wire_format_without_client(url: str) -> None:
    """What an OpenAI client receives for a tool call, unstreamed and streamed."""
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    body = {"model": "m", "tools": tools, "messages": [{"role": "user", "content": '__CALL:add:{"a": 1}__'}]}

    def post(payload: dict[str, Any]) -> bytes:
        request = urllib.request.Request(
            url + "/chat/completions", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data: bytes = response.read()
        return data

    [choice] = json.loads(post(body))["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}],
    }

    events = post({**body, "stream": True}).decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert "usage" not in chunks[-1]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[1] == {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": ""}}]
    }
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]) == '{"a": 1}'
    assert deltas[-1] == {}
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * (len(chunks) - 1) + ["tool_calls"]


# ---- __REPLY=...__ ------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_reply_marker(url: str, streamed: bool) -> None:
    reply = _ask(_chat(url), [HumanMessage("say it __REPLY=The answer is 42.__ please")], streamed)
    assert reply.content == "The answer is 42."
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 4


def test_reply_marker_gives_the_answer_after_a_tool_round(url: str) -> None:
    bound = _bound(url)
    messages: list[BaseMessage] = [HumanMessage('__CALL:add:{"a": 1, "b": 2}__ __REPLY=It is 3.__')]
    first = bound.invoke(messages)
    assert [c["name"] for c in first.tool_calls] == ["add"]
    messages += [first, *_run_tools(first)]
    assert bound.invoke(messages).content == "It is 3."


# ---- unchanged behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_plain_echo_still_works_with_tools_bound(url: str, streamed: bool) -> None:
    for runnable in (_chat(url), _bound(url)):
        reply = _ask(runnable, [HumanMessage("hello there")], streamed)
        assert reply.content == "ECHO: hello there"
        assert not reply.tool_calls
        assert reply.response_metadata["finish_reason"] == "stop"
        assert reply.usage_metadata is not None
        assert (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]) == (2, 3)


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_http500_still_fails(url: str, streamed: bool) -> None:
    with pytest.raises(openai.InternalServerError):
        _ask(_bound(url), [HumanMessage('__HTTP500__ __CALL:add:{"a": 1, "b": 2}__')], streamed)


def test_messages_marker_still_dumps_the_messages(url: str) -> None:
    reply = _chat(url).invoke("show __MESSAGES__")
    assert json.loads(str(reply.content)) == [{"role": "user", "content": "show __MESSAGES__"}]


# ---- through LangGraph, which streams when a streaming callback is present --------------------


class State(TypedDict):
    messages: Annotated[list[BaseMessage], operator.add]


def test_tool_loop_in_a_langgraph_graph(url: str) -> None:
    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import ToolNode

    bound = _bound(url)

    def agent(state: State) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    def route(state: State) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add, multiply, shout]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    graph = builder.compile()

    prompt = '__CALL:add:{"a": 2, "b": 3}__ __CALL:shout:{"text": "ok"}__ __THEN_CALL:multiply:{"a": 6, "b": 7}__'
    tokens: list[Any] = []
    final: Any = {}
    for mode, payload in graph.stream({"messages": [HumanMessage(prompt)]}, stream_mode=["messages", "values"]):
        if mode == "messages":
            tokens.append(payload[0])
        else:
            final = payload
    messages = final["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert [c["name"] for c in messages[1].tool_calls] == ["add", "shout"]
    assert [m.content for m in messages[2:4]] == ["5", "OK"]
    assert messages[4].tool_calls[0]["args"] == {"a": 6, "b": 7}
    assert messages[-1].content == "TOOLS: multiply=42"
    assert all(m.usage_metadata for m in messages if isinstance(m, AIMessage))
    # the model was streamed: tool-call chunks reached the "messages" stream
    requests = recorded_requests(url)
    assert len(requests) == 3
    assert all(body.get("stream") for body in requests)
    assert any(isinstance(t, AIMessageChunk) and t.tool_call_chunks for t in tokens)
