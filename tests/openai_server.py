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

Usage counts one token per whitespace-separated word (prompt: all messages; completion: the
reply); a stream sends it in a last chunk when ``stream_options.include_usage`` is set.

``GET /_requests`` lists every chat request body received so far; ``POST /_reset`` clears it.
"""

from __future__ import annotations

import argparse
import json
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
        if "__MESSAGES__" in last:
            reply = json.dumps([{"role": m.get("role"), "content": _as_text(m.get("content"))} for m in messages])
        else:
            reply = "ECHO: " + last
        model = str(body.get("model") or "fake-model")
        usage = _usage(messages, reply)
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, reply, DRIP_SECONDS if "__DRIP__" in last else 0.0, usage if with_usage else None)
        else:
            self._send_json(200, _completion(model, reply, usage))

    def _stream(self, model: str, reply: str, drip: float = 0.0, usage: dict[str, int] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # No Content-Length: the body ends when the connection closes.
        self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())
        pieces = [reply[i : i + 8] for i in range(0, len(reply), 8)] or [""]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in pieces]
        for delta in deltas:
            time.sleep(drip)
            self._sse(_chunk(model, created, delta, None))
        self._sse(_chunk(model, created, {}, "stop"))
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


def _usage(messages: list[dict[str, Any]], reply: str) -> dict[str, int]:
    """Deterministic token counts: one token per whitespace-separated word."""
    prompt = sum(len(_as_text(m.get("content")).split()) for m in messages)
    completion = len(reply.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(model: str, reply: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
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
