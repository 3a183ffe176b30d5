"""An invoker that sends the rendered template to an OpenAI-compatible chat completions endpoint."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Self

import openai
import yaml
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from genie_graph._invokers._base import GenieInvoker
from genie_graph._tools import ToolSpec, parse_tools, run_tool_loop
from genie_graph._usage import current_template, report_usage
from genie_graph.errors import InvokerConfigError, InvokerError

ENV_BASE_URL = "GENIE_GRAPH_OPENAI_BASE_URL"
ENV_MODEL = "GENIE_GRAPH_OPENAI_MODEL"
ENV_TEMPERATURE = "GENIE_GRAPH_OPENAI_TEMPERATURE"

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
# Local OpenAI-compatible servers (vLLM, Ollama, llama.cpp, ...) ignore the key, but the SDK demands one.
PLACEHOLDER_API_KEY = "not-needed"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"

_ROLE_TO_MESSAGE: dict[str, type[BaseMessage]] = {
    "system": SystemMessage,
    "user": HumanMessage,
    "human": HumanMessage,
    "assistant": AIMessage,
    "ai": AIMessage,
}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise InvokerConfigError(f"openai invoker: {what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvokerConfigError(f"openai invoker: {what} must be a number, got {value!r}") from None


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvokerConfigError(f"openai invoker: {what} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvokerConfigError(f"openai invoker: {what} must be an integer, got {value!r}") from None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.APIStatusError) and str(exc.status_code) not in text:
        text = f"HTTP {exc.status_code}: {text}"
    if isinstance(exc, openai.APIConnectionError):
        # The SDK says only "Connection error."; the transport error underneath says why.
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        if root is not exc and not isinstance(root, openai.OpenAIError):
            text += f" ({type(root).__name__}: {root})"
    return text


def to_messages(content: str) -> list[BaseMessage]:
    """Turn a rendered template into chat messages.

    A template that renders to a YAML list of ``{role, content}`` mappings (role one of system, user,
    assistant, ai, human) becomes that conversation; anything else is one user message.

    Args:
        content: The rendered template text.

    Returns:
        The messages to send, in order.
    """
    try:
        parsed = yaml.safe_load(content)
    except yaml.YAMLError:
        return [HumanMessage(content=content)]
    if not isinstance(parsed, list) or not parsed:
        return [HumanMessage(content=content)]
    messages: list[BaseMessage] = []
    for item in parsed:
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            return [HumanMessage(content=content)]
        role, text = item["role"], item["content"]
        if not isinstance(role, str) or role.lower() not in _ROLE_TO_MESSAGE or not isinstance(text, str):
            return [HumanMessage(content=content)]
        messages.append(_ROLE_TO_MESSAGE[role.lower()](content=text))
    return messages


class OpenAIInvoker(GenieInvoker):
    """Answers with a chat completion from OpenAI or any OpenAI-compatible server.

    Built from the ``invoker:`` mapping of a ``meta.yaml``::

        invoker:
          type: openai
          model: gpt-4o-mini          # default
          base_url: http://localhost:8000/v1   # optional
          temperature: 0.2            # optional
          api_key_env: OPENAI_API_KEY # env var holding the key (default)
          timeout: 60                 # seconds per request
          max_retries: 2              # retries on timeouts, connection errors, 408/409/429, 5xx

    The environment wins over ``meta.yaml``: ``GENIE_GRAPH_OPENAI_BASE_URL``,
    ``GENIE_GRAPH_OPENAI_MODEL`` and ``GENIE_GRAPH_OPENAI_TEMPERATURE``. Without any base URL the
    client falls back to ``OPENAI_BASE_URL`` and then to OpenAI itself.

    Each call's token usage (langchain's ``usage_metadata``) is counted in the session's
    ``usage``, priced by the flow's price table under the model name the server answered with.

    If the rendered template is a YAML list of ``{role, content}`` mappings it is sent as that
    conversation, otherwise as a single user message. Failures of the call are raised as
    :class:`~genie_graph.errors.InvokerError`.

    Args:
        model: Model name sent to the server.
        base_url: Endpoint root such as ``http://host:port/v1``; ``None`` lets the client decide.
        api_key: The key to send.
        temperature: Sampling temperature, or ``None`` for the server's default.
        timeout: Seconds before one request is abandoned.
        max_retries: How often the client retries a failed request.
    """

    config_keys = frozenset({"model", "base_url", "temperature", "api_key_env", "timeout", "max_retries", "tools"})

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_key: str,
        temperature: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        tools: Mapping[str, ToolSpec] | None = None,
    ) -> None:
        self.model = model
        self.tools = dict(tools or {})
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max_retries
        self._base_url = base_url
        self._api_key = SecretStr(api_key)
        try:
            # Constructing the client does no network I/O; it only validates the settings.
            self._chat = self._build_chat()
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InvokerConfigError(f"openai invoker: invalid settings for model {model!r}: {exc}") from exc

    @property
    def base_url(self) -> str:
        """The endpoint the client actually talks to, after all fallbacks."""
        root_client = self._chat.root_client
        if root_client is not None:
            return str(root_client.base_url)
        return self._base_url or _env("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build an invoker from the ``invoker:`` mapping of a ``meta.yaml`` (minus ``type``).

        Args:
            config: Keys ``model``, ``base_url``, ``temperature``, ``api_key_env``, ``timeout``
                and ``max_retries``, all optional.

        Returns:
            The configured invoker.

        Raises:
            InvokerConfigError: A value is malformed, or no API key is available for OpenAI itself.
        """
        model = _env(ENV_MODEL) or config.get("model") or DEFAULT_MODEL
        if not isinstance(model, str):
            raise InvokerConfigError(f"openai invoker: model must be a string, got {model!r}")

        base_url = _env(ENV_BASE_URL) or config.get("base_url") or None
        if base_url is not None and not isinstance(base_url, str):
            raise InvokerConfigError(f"openai invoker: base_url must be a string, got {base_url!r}")

        env_temperature = _env(ENV_TEMPERATURE)
        temperature: float | None
        if env_temperature is not None:
            temperature = _as_float(env_temperature, ENV_TEMPERATURE)
        elif config.get("temperature") is not None:
            temperature = _as_float(config["temperature"], "temperature")
        else:
            temperature = None

        timeout = _as_float(config.get("timeout", DEFAULT_TIMEOUT), "timeout")
        if timeout <= 0:
            raise InvokerConfigError(f"openai invoker: timeout must be positive, got {timeout!r}")
        max_retries = _as_int(config.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries")
        if max_retries < 0:
            raise InvokerConfigError(f"openai invoker: max_retries must be >= 0, got {max_retries!r}")

        api_key_env = config.get("api_key_env") or DEFAULT_API_KEY_ENV
        if not isinstance(api_key_env, str):
            raise InvokerConfigError(f"openai invoker: api_key_env must be a string, got {api_key_env!r}")
        api_key = _env(api_key_env)
        if api_key is None:
            # The SDK itself reads these two when no base_url is passed, so they count as "a local server".
            if base_url or _env("OPENAI_BASE_URL") or _env("OPENAI_API_BASE"):
                api_key = PLACEHOLDER_API_KEY
            else:
                raise InvokerConfigError(
                    f"openai invoker: environment variable {api_key_env} is not set. Set {api_key_env} "
                    f"to your OpenAI API key, name another variable with `api_key_env:` in meta.yaml, or "
                    f"point `base_url:` (or {ENV_BASE_URL}) at an OpenAI-compatible server that needs no key."
                )

        return cls(
            model=model,
            base_url=base_url,
            api_key=api_key,
            temperature=temperature,
            timeout=timeout,
            max_retries=max_retries,
            tools=parse_tools(config.get("tools"), "openai invoker"),
        )

    def _build_chat(self, http_async_client: Any = None) -> ChatOpenAI:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "api_key": self._api_key,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
        }
        if self._base_url is not None:
            kwargs["base_url"] = self._base_url
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if http_async_client is not None:
            kwargs["http_async_client"] = http_async_client
        # Usage also when the reply is streamed (LangGraph streams tokens to SSE clients).
        return ChatOpenAI(stream_usage=True, **kwargs)

    def _report(self, reply: BaseMessage) -> None:
        usage = getattr(reply, "usage_metadata", None)
        if usage:
            model = (reply.response_metadata or {}).get("model_name") or self.model
            report_usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0), str(model))

    def _failure(self, exc: BaseException) -> InvokerError:
        return InvokerError(
            f"openai invoker: chat completion failed (model={self.model!r}, base_url={self.base_url!r}): "
            f"{_describe(exc)}"
        )

    def invoke(self, content: str) -> str:
        """Send ``content`` and return the reply's text.

        Args:
            content: The rendered template.

        Returns:
            The text of the model's reply.

        Raises:
            InvokerError: The request failed (HTTP error status, timeout, connection error, ...).
        """
        if self.tools:  # the tool loop is async; a sync caller waits for it
            return asyncio.run(self.ainvoke(content))
        messages = to_messages(content)
        try:
            reply = self._chat.invoke(messages)
        except Exception as exc:
            raise self._failure(exc) from exc
        self._report(reply)
        return str(reply.text)

    async def ainvoke(self, content: str) -> str:
        """Async twin of :meth:`invoke`, using the client's native async path.

        Args:
            content: The rendered template.

        Returns:
            The text of the model's reply.

        Raises:
            InvokerError: The request failed (HTTP error status, timeout, connection error, ...).
        """
        messages = to_messages(content)
        # ChatOpenAI's default async HTTP client is a process-wide cache whose pooled connections belong to
        # the event loop that opened them; reusing it from a later loop (a new asyncio.run, another
        # worker thread's loop) fails with "Event loop is closed". A client per call, closed inside this
        # loop, costs one connection set-up per LLM call and is always safe.
        async with openai.DefaultAsyncHttpxClient(timeout=self.timeout) as http_client:
            chat = self._build_chat(http_async_client=http_client)
            if not self.tools:
                try:
                    reply = await chat.ainvoke(messages)
                except Exception as exc:
                    raise self._failure(exc) from exc
                self._report(reply)
                return str(reply.text)
            bound = chat.bind_tools([spec.tool for spec in self.tools.values()])

            async def step(conversation: list[BaseMessage]) -> AIMessage:
                try:
                    answer = await bound.ainvoke(conversation)
                except Exception as exc:
                    raise self._failure(exc) from exc
                self._report(answer)
                assert isinstance(answer, AIMessage)
                return answer

            reply = await run_tool_loop(self.template_key(content), messages, step, self.tools)
        return str(reply.text)

    def template_key(self, content: str) -> str:
        """Which tool loop a resumed run goes on with: the template being run (see ``calling_template``)."""
        return current_template() or ""
