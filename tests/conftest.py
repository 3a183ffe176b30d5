"""Shared fixtures: every runtime test runs on each embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openai_server import start_openai_server
from tests.services import RedisServer

STORES = ["memory", "sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis 8 with the JSON and Search modules, started once per test process."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_server_url() -> Iterator[str]:
    """The OpenAI-compatible test server (``tests/openai_server.py``), started once per test module."""
    base_url, stop = start_openai_server()
    yield base_url
    stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each kind (sessions have unique ids, so Redis needs no flushing)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Examples answer with their offline stand-ins unless a test configures an endpoint."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "GENIE_GRAPH_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GENIE_GRAPH_OFFLINE", raising=False)
    yield
