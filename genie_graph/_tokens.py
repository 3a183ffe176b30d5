"""LLM tokens onto the session's feed, as a LangChain chat model streams them.

Each node runs with a callback handler in the config that LangChain calls inherit
(``var_child_runnable_config``). A chat model called inside a node then streams its answer, and
each token goes to the run's token sink. A model that cannot stream gives its whole answer as one
token.

This replaces LangGraph's ``stream_mode="messages"``. That mode also hooks the start and end of
every node to look for chat messages in the state, which a GenieModel never holds. Its cost was
about a tenth of a turn.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, GenerationChunk, LLMResult
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langgraph.constants import TAG_NOSTREAM

TokenSink = Callable[[str, str], None]
"""Takes a node's name and a token's text."""

current_token_sink: contextvars.ContextVar[TokenSink | None] = contextvars.ContextVar(
    "genie_graph_token_sink", default=None
)
"""Set by the runtime around a run. A node run outside one (Studio, plain LangGraph) streams nothing."""


def loop_safe(sink: TokenSink) -> TokenSink:
    """``sink`` called on the current event loop, also when a sync model streams in a worker thread."""
    loop = asyncio.get_running_loop()

    def put(node: str, text: str) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            sink(node, text)
        else:
            loop.call_soon_threadsafe(sink, node, text)

    return put


class _TokenHandler(BaseCallbackHandler, _StreamingCallbackHandler[Any]):
    """Sends the text of each streamed chunk (or of a whole answer, if none streamed) to the sink.

    Being a ``_StreamingCallbackHandler`` makes a chat model stream even when it is ``ainvoke``d.
    """

    run_inline = True  # on the caller's thread, in order

    def __init__(self, sink: TokenSink, node: str) -> None:
        self._sink = sink
        self._node = node
        self._streamed: dict[UUID, bool] = {}

    def tap_output_aiter(self, run_id: UUID, output: Any) -> Any:
        return output

    def tap_output_iter(self, run_id: UUID, output: Any) -> Any:
        return output

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, tags: list[str] | None = None, **kwargs: Any
    ) -> None:
        if not tags or TAG_NOSTREAM not in tags:
            self._streamed[run_id] = False

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        if run_id in self._streamed and isinstance(chunk, ChatGenerationChunk):
            self._streamed[run_id] = True
            self._send(chunk.message.content)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        if self._streamed.pop(run_id, True) or not response.generations or not response.generations[0]:
            return
        answer = response.generations[0][0]
        if isinstance(answer, ChatGeneration):
            self._send(answer.message.content)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._streamed.pop(run_id, None)

    def _send(self, text: Any) -> None:
        if isinstance(text, str) and text:  # a tool call's chunks carry no text
            self._sink(self._node, text)


@contextmanager
def streaming_tokens(node: str) -> Iterator[None]:
    """Inside the block, LangChain chat models stream their tokens to the run's sink as ``node``'s."""
    sink = current_token_sink.get()
    if sink is None:
        yield
        return
    config = var_child_runnable_config.get() or {}
    handler = _TokenHandler(sink, node)
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.copy()
        callbacks.add_handler(handler, inherit=True)
    else:
        callbacks = [*(callbacks or ()), handler]
    token = var_child_runnable_config.set({**config, "callbacks": callbacks})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)
