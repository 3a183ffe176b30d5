"""Shared fixtures: every runtime test runs on each embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

STORES = ["memory", "sqlite"]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each kind."""
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Examples answer with their offline stand-ins unless a test configures an endpoint."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "GENIE_GRAPH_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GENIE_GRAPH_OFFLINE", raising=False)
    yield
