"""A tiny, deterministic OpenAI-compatible chat server for tests.

Run it as its own process (``python tests/openai_server.py --port 0``); it prints the port it
bound on its first stdout line. :func:`start_openai_server` does that and hands back the base URL.

``POST /v1/chat/completions`` answers ``"ECHO: " + <last user message>`` (plain JSON, or SSE chunks
ending in ``data: [DONE]`` when ``stream`` is true). Markers in the last user message change that:

* ``__HTTP500__``: a 500 with an OpenAI-style error body.
* ``__SLOW__``: sleep 5 s first, so a client with a short timeout gives up.
* ``__MESSAGES__``: the reply is a JSON dump of the received ``[{role, content}, ...]``.
* ``__DRIP__``: a streamed reply waits ``DRIP_SECONDS`` before each chunk, so a client sees
  tokens arrive while the call is still going.
* ``__REPLY=<text>__``: the reply is exactly ``<text>`` (no ``ECHO: `` prefix; ``<text>`` cannot hold
  ``__``). It wins over ``__MESSAGES__`` and over the ``TOOLS: ...`` text below, not over a tool call.

Tool calling (the request carries ``tools``; a tool call's ``id`` is ``call_1``, ``call_2``, ... in
that reply, its ``arguments`` the marker's JSON re-dumped; its reply has ``content`` null, or none in a
stream, which sends each call's ``id`` and name in one chunk and its arguments in pieces after, and
``finish_reason`` ``"tool_calls"``):

* ``__CALL:<tool name>:<JSON object of arguments>__`` (the JSON may hold spaces, even ``}__`` inside
  a string): while no ``tool`` message follows the last user message, the reply calls that tool with
  those arguments; several markers make several calls in one reply, in order. Without ``tools`` in
  the request, or with JSON that is not an object, the marker is plain text.
* When the conversation ends with ``tool`` messages (the results of the previous assistant message's
  ``tool_calls``), the reply is the text ``TOOLS: <name>=<content>; <name>=<content>`` in the order of
  those messages, each name resolved through its ``tool_call_id`` (``?`` when it does not resolve),
  ``finish_reason`` ``"stop"``. This holds with or without ``tools`` in the request.
* ``__THEN_CALL:<tool name>:<JSON object of arguments>__`` (same syntax) changes that: if the request
  carries ``tools`` and no assistant message after the last user message has called that tool with
  those arguments yet, the reply calls it instead (``call_1``), so a test can run a 2-round tool loop;
  with several such markers, the first one not called yet, one per round.

Usage counts one token per whitespace-separated word (prompt: the content of all messages;
completion: the reply, or the ``arguments`` strings of its tool calls); a stream sends it in a last
chunk when ``stream_options.include_usage`` is set.

``GET /_requests`` lists every chat request body received so far; ``POST /_reset`` clears it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_SECONDS = 5.0
DRIP_SECONDS = 0.1

_requests: list[dict[str, Any]] = []
_requests_lock = threading.Lock()


def _last_user_content(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _as_text(message.get("content"))
    return ""


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    """The index of the last ``user`` message, or -1 when there is none."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return -1


_CALL_MARKER = re.compile(r"__(THEN_)?CALL:([A-Za-z0-9_.-]+):")
_REPLY_MARKER = re.compile(r"__REPLY=(.*?)__", re.DOTALL)
_JSON = json.JSONDecoder()


def _call_markers(text: str, then: bool) -> list[tuple[str, dict[str, Any]]]:
    """The ``(name, arguments)`` of the ``__CALL:...__`` (or, with ``then``, ``__THEN_CALL:...__``)
    markers in ``text``, in order; a marker whose JSON is not an object followed by ``__`` is skipped."""
    found: list[tuple[str, dict[str, Any]]] = []
    position = 0
    while match := _CALL_MARKER.search(text, position):
        position = match.end()
        try:
            arguments, end = _JSON.raw_decode(text, match.end())
        except json.JSONDecodeError:
            continue
        if isinstance(arguments, dict) and text.startswith("__", end):
            position = end + 2
            if bool(match.group(1)) == then:
                found.append((match.group(2), arguments))
    return found


def _tool_calls(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` for ``(name, arguments)`` pairs, with ids ``call_1``, ``call_2``, ..."""
    return [
        {"id": f"call_{number}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        for number, (name, arguments) in enumerate(calls, start=1)
    ]


def _parsed_arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _plan_tools(body: dict[str, Any], messages: list[dict[str, Any]], last: str) -> tuple[list[Any] | None, str | None]:
    """What tool calling makes of this request: ``(tool_calls, None)`` to call tools,
    ``(None, "TOOLS: ...")`` to report tool results, or ``(None, None)`` when it has no say."""
    offered = bool(body.get("tools"))
    user_index = _last_user_index(messages)
    after_user = messages[user_index + 1 :]
    if not any(m.get("role") == "tool" for m in after_user):
        calls = _call_markers(last, then=False) if offered else []
        return (_tool_calls(calls) if calls else None), None
    if offered:
        made = [
            (call.get("function") or {})
            for m in after_user
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        ]
        done = [(f.get("name"), _parsed_arguments(f.get("arguments"))) for f in made]
        for name, arguments in _call_markers(last, then=True):
            if (name, arguments) not in done:
                return _tool_calls([(name, arguments)]), None
    if messages and messages[-1].get("role") == "tool":
        start = len(messages)
        while start > 0 and messages[start - 1].get("role") == "tool":
            start -= 1
        names: dict[str, str] = {}
        if start > 0 and messages[start - 1].get("role") == "assistant":
            for call in messages[start - 1].get("tool_calls") or []:
                names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
        results = [
            f"{names.get(str(m.get('tool_call_id')), '?')}={_as_text(m.get('content'))}" for m in messages[start:]
        ]
        return None, "TOOLS: " + "; ".join(results)
    return None, None


def _as_text(content: Any) -> str:
    # The client may send content as a list of typed parts instead of a plain string.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Keep the test output clean; stdout carries only the port line.
        pass

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/_requests":
            with _requests_lock:
                snapshot = list(_requests)
            self._send_json(200, snapshot)
        elif self.path == "/_health":
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, _error("not found", "invalid_request_error"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_json()
        except json.JSONDecodeError:
            self._send_json(400, _error("body is not JSON", "invalid_request_error"))
            return
        if self.path == "/_reset":
            with _requests_lock:
                _requests.clear()
            self._send_json(200, {"ok": True})
        elif self.path.rstrip("/").endswith("/chat/completions"):
            with _requests_lock:
                _requests.append(body)
            try:
                self._chat(body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (timeout test); nobody is left to answer.
                pass
        else:
            self._send_json(404, _error(f"no route {self.path}", "invalid_request_error"))

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        last = _last_user_content(messages)
        if "__HTTP500__" in last:
            self._send_json(500, _error("The server had an error (__HTTP500__).", "server_error"))
            return
        if "__SLOW__" in last:
            time.sleep(SLOW_SECONDS)
        tool_calls, tools_reply = _plan_tools(body, messages, last)
        reply_marker = _REPLY_MARKER.search(last)
        if tool_calls:
            reply = ""
        elif reply_marker:
            reply = reply_marker.group(1)
        elif tools_reply is not None:
            reply = tools_reply
        elif "__MESSAGES__" in last:
            reply = json.dumps([{"role": m.get("role"), "content": _as_text(m.get("content"))} for m in messages])
        else:
            reply = "ECHO: " + last
        model = str(body.get("model") or "fake-model")
        usage = _usage(messages, reply, tool_calls)
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            drip = DRIP_SECONDS if "__DRIP__" in last else 0.0
            self._stream(model, reply, drip, usage if with_usage else None, tool_calls)
        else:
            self._send_json(200, _completion(model, reply, usage, tool_calls))

    def _stream(
        self,
        model: str,
        reply: str,
        drip: float = 0.0,
        usage: dict[str, int] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # No Content-Length: the body ends when the connection closes.
        self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())
        deltas: list[dict[str, Any]]
        if tool_calls:
            deltas = [{"role": "assistant", "content": None}]
            for index, call in enumerate(tool_calls):
                head = {"index": index, "id": call["id"], "type": "function"}
                deltas.append(
                    {"tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]}
                )
                arguments = call["function"]["arguments"]
                deltas += [
                    {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 8]}}]}
                    for i in range(0, len(arguments), 8)
                ]
        else:
            pieces = [reply[i : i + 8] for i in range(0, len(reply), 8)] or [""]
            deltas = [{"role": "assistant", "content": ""}]
            deltas += [{"content": piece} for piece in pieces]
        for delta in deltas:
            time.sleep(drip)
            self._sse(_chunk(model, created, delta, None))
        self._sse(_chunk(model, created, {}, "tool_calls" if tool_calls else "stop"))
        if usage is not None:  # as OpenAI does with stream_options.include_usage: a last chunk, no choices
            self._sse({**_chunk(model, created, {}, None), "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _sse(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(
    messages: list[dict[str, Any]], reply: str, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, int]:
    """Deterministic token counts: one token per whitespace-separated word (of the tool calls'
    ``arguments`` too)."""
    prompt = sum(len(_as_text(m.get("content")).split()) for m in messages)
    completion = len(reply.split()) + sum(len(call["function"]["arguments"].split()) for call in tool_calls or [])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(
    model: str, reply: str, usage: dict[str, int], tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply}
    if tool_calls:
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def _chunk(model: str, created: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def serve(host: str, port: int) -> None:
    """Serve until killed, announcing the bound port on stdout's first line."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start_openai_server(startup_timeout: float = 10.0) -> tuple[str, Callable[[], None]]:
    """Launch the server as a child process on a free port of 127.0.0.1.

    Args:
        startup_timeout: Seconds to wait for the child to announce its port and answer.

    Returns:
        ``(base_url, stop)``: the ``http://127.0.0.1:PORT/v1`` URL for an OpenAI client, and a
        function that terminates the child and releases its pipe.
    """
    proc = subprocess.Popen(
        [sys.executable, __file__, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"openai test server did not announce a port (got {line!r})")
        root = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(root + "/_health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("openai test server did not start answering") from None
                time.sleep(0.05)
    except BaseException:
        stop()
        raise
    return root + "/v1", stop


def _root(base_url: str) -> str:
    return base_url.removesuffix("/").removesuffix("/v1")


def recorded_requests(base_url: str) -> list[dict[str, Any]]:
    """Return the chat request bodies the server at ``base_url`` has received, oldest first."""
    with urllib.request.urlopen(_root(base_url) + "/_requests", timeout=5) as response:
        payload: list[dict[str, Any]] = json.load(response)
    return payload


def reset_requests(base_url: str) -> None:
    """Forget the chat requests recorded by the server at ``base_url``."""
    request = urllib.request.Request(_root(base_url) + "/_reset", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python openai_server.py [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
