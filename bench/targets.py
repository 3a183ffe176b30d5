"""What the benchmark measures: each target starts its own stack and stops it again.

* ``genie-graph``: ``genie-graph serve`` on embedded defaults (SQLite, inline runner); its storage
  is the bytes of the values in the database's tables (the file grows by whole pages);
* ``genie-graph-redis``: ``genie-graph serve --runner celery`` on Redis 8 with two Celery workers;
* ``langgraph-bare``: the flows hand-written in LangGraph behind a minimal FastAPI app
  (``bench.bare_server``), on the same SQLite saver: the floor genie-graph's embedded stack stands on;
* ``genie-flow``: Genie Flow 0.12 from ``../shared/peers/genie-flow`` (its own venv, made by its
  ``setup.sh``; skipped, and said so, when that venv is missing).

All of them serve the same model keys (``qa``, ``pingpong``, ``qa_slow``) over the same HTTP API.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from genie_graph._stores import InlineSqliteSaver
from tests.services import ApiServer, RedisServer, Worker, free_port, python_process, terminate, wait_for_http

REPO = Path(__file__).resolve().parent.parent
PEER = REPO.parent / "shared" / "peers" / "genie-flow"
PEER_VENV = Path(os.environ.get("GENIE_FLOW_VENV", "/tmp/gf-venv"))
FLOW = "bench.flows:flow"


def _process_tree(pid: int) -> list[int]:
    """A process and all its descendants (those alive now)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        tree.append(current)
        pending += [int(child) for child in children]
    return tree


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for member in _process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its descendants have taken so far."""
    total = 0.0
    for member in _process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def redis_bytes(url: str, databases: range = range(1)) -> int:
    """``MEMORY USAGE`` summed over every key of the given databases of a Redis server."""
    total = 0
    for db in databases:
        client = redis.Redis.from_url(url, db=db)
        try:
            keys = list(client.scan_iter(count=1000))
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in pipe.execute())
        finally:
            client.close()
    return total


def sqlite_bytes(database: Path) -> int:
    """Bytes of every value in every table (page slack aside, what the file holds for the sessions)."""
    with sqlite3.connect(database) as connection:
        total = 0
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
            lengths = " + ".join(f'COALESCE(LENGTH("{column}"), 0)' for column in columns) or "0"
            total += connection.execute(f'SELECT COALESCE(SUM({lengths}), 0) FROM "{table}"').fetchone()[0]
        return int(total)


@dataclass
class Target:
    """A running stack that serves the benchmark flows over HTTP."""

    name: str
    base_url: str = ""
    streams: bool = True
    place: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="genie-graph-bench-")))

    def start(self) -> Target:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def stored_bytes(self) -> int:
        """Bytes of everything the stack keeps for its sessions (all sessions so far)."""
        raise NotImplementedError

    def rss_bytes(self) -> int:
        """Resident memory of the stack's server and worker processes (Redis excluded)."""
        raise NotImplementedError


@dataclass
class GenieGraphEmbedded(Target):
    name: str = "genie-graph"
    server: ApiServer | None = None

    @property
    def database(self) -> Path:
        return self.place / "sessions.sqlite"

    def start(self) -> GenieGraphEmbedded:
        self.server = ApiServer(self.place / "serve.log", f"sqlite:///{self.database}", flow=FLOW).start()
        self.base_url = self.server.url + "/v1/ai"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def stored_bytes(self) -> int:
        return sqlite_bytes(self.database)

    def rss_bytes(self) -> int:
        assert self.server is not None and self.server.process is not None
        return _rss_bytes(self.server.process.pid)


@dataclass
class GenieGraphRedis(Target):
    name: str = "genie-graph-redis"
    redis_server: RedisServer | None = None
    workers: list[Worker] = field(default_factory=list)
    server: ApiServer | None = None

    def start(self) -> GenieGraphRedis:
        self.redis_server = RedisServer(self.place / "redis").start()
        url = self.redis_server.url
        self.workers = [Worker(FLOW, url, self.place / f"worker{n}.log").start() for n in range(2)]
        self.server = ApiServer(self.place / "serve.log", url, runner="celery", flow=FLOW).start()
        self.base_url = self.server.url + "/v1/ai"
        return self

    def stop(self) -> None:
        for part in [self.server, *self.workers, self.redis_server]:
            if part is not None:
                part.stop()

    def stored_bytes(self) -> int:
        assert self.redis_server is not None
        return redis_bytes(self.redis_server.url)

    def rss_bytes(self) -> int:
        processes = [self.server.process if self.server else None, *(w.process for w in self.workers)]
        return sum(_rss_bytes(process.pid) for process in processes if process is not None)


@dataclass
class LangGraphBare(Target):
    """The flows hand-written in LangGraph behind a minimal FastAPI app (``bench.bare_server``), on SQLite."""

    name: str = "langgraph-bare"
    streams: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def database(self) -> Path:
        return self.place / "bare.sqlite"

    def start(self) -> LangGraphBare:
        port = free_port()
        args = ["-m", "bench.bare_server", "--port", str(port), "--db", str(self.database)]
        self.process = python_process(args, log=self.place / "bare.log")
        wait_for_http(f"http://127.0.0.1:{port}/health", f"the bare LangGraph server (see {self.place})", self.process)
        self.base_url = f"http://127.0.0.1:{port}/v1/ai"
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def stored_bytes(self) -> int:
        # It answers before its writes are committed (the saver commits them within its commit delay,
        # where genie-graph commits before it answers): read the file once they are.
        time.sleep(10 * InlineSqliteSaver.commit_delay)
        return sqlite_bytes(self.database)

    def rss_bytes(self) -> int:
        assert self.process is not None
        return _rss_bytes(self.process.pid)


@dataclass
class GenieFlowPeer(Target):
    """Genie Flow 0.12's stack: its own Redis, uvicorn, one Celery worker (``serve.sh``)."""

    name: str = "genie-flow"
    streams: bool = False
    redis_port: int = 0
    api_port: int = 0

    @staticmethod
    def available() -> str | None:
        """None if the peer can run here, else why not."""
        if not (PEER / "serve.sh").exists():
            return f"no Genie Flow peer scripts at {PEER}"
        if not (PEER_VENV / "bin" / "uvicorn").exists():
            return f"no Genie Flow venv at {PEER_VENV}: run {PEER / 'setup.sh'} (or pass --setup-genie-flow)"
        return None

    def _env(self) -> dict[str, str]:
        from tests.services import _redis_binary

        return {
            **os.environ,
            "VENV": str(PEER_VENV),
            "RUN_DIR": str(self.place),
            "GF_REDIS_PORT": str(self.redis_port),
            "API_PORT": str(self.api_port),
            "LOGURU_LEVEL": "WARNING",
            "PATH": f"{_redis_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _serve(self, command: str) -> None:
        subprocess.run(["bash", str(PEER / "serve.sh"), command], env=self._env(), check=True, capture_output=True)

    def start(self) -> GenieFlowPeer:
        self.redis_port, self.api_port = free_port(), free_port()
        self._serve("start")
        self.base_url = f"http://127.0.0.1:{self.api_port}/v1/ai"
        wait_for_http(f"http://127.0.0.1:{self.api_port}/docs", f"Genie Flow (see {self.place})")
        return self

    def stop(self) -> None:
        self._serve("stop")

    def stored_bytes(self) -> int:
        return redis_bytes(f"redis://127.0.0.1:{self.redis_port}/0", range(4))  # its four databases

    def rss_bytes(self) -> int:
        total = 0
        for name in ("uvicorn", "celery"):
            pid_file = self.place / f"{name}.pid"
            if pid_file.exists():
                total += _rss_bytes(int(pid_file.read_text()))
        return total


def setup_genie_flow() -> None:
    """Make Genie Flow's venv with its own ``setup.sh`` (PyPI only)."""
    env = {**os.environ, "VENV": str(PEER_VENV)}
    subprocess.run(["bash", str(PEER / "setup.sh")], env=env, check=True)


__all__ = ["GenieFlowPeer", "GenieGraphEmbedded", "GenieGraphRedis", "LangGraphBare", "Target", "setup_genie_flow"]
