"""Each user's preferences reach the templates of the runs made for them (issue 10), up to the prompt the
real langchain-openai client sends to the OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State, User
from tests.helpers import send, write_tree
from tests.openai_server import recorded_requests, reset_requests

KEY = "prefs"
ADA = User(email="ada@example.com", firstname="Ada", lastname="Lovelace")
BOB = User(email="bob@example.com", firstname="Bob", lastname="Builder")
PREFERENCES = {"ada@example.com": {"tone": "formal", "language": "en"}, "bob@example.com": {"tone": "casual"}}


class PrefsMachine(GenieStateMachine):
    ask = State(initial=True)
    think = State()

    user_input = ask.to(think)
    ai_extraction = think.to(ask)

    templates = dict(ask="prefs/ask.jinja2", think="prefs/llm/think.jinja2")


class PrefsModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PrefsMachine


@pytest.fixture
def server_url(openai_server_url: str) -> str:
    return openai_server_url


@pytest.fixture
def root(tmp_path: Path, server_url: str) -> Path:
    invoker = {"invoker": {"type": "openai", "model": "prefs-model", "base_url": server_url}}
    return write_tree(
        tmp_path / "templates",
        {
            "prefs/meta.yaml": "renderer: {}\n",
            "prefs/ask.jinja2": "{% if actor_input %}{{ actor_input }}{% else %}"
            "Hello {{ sender or 'stranger' }} (tone: {{ preferences.tone | default('none') }}){% endif %}",
            "prefs/llm/meta.yaml": json.dumps(invoker),
            "prefs/llm/think.jinja2": "Answer in a {{ preferences.tone | default('neutral') }} tone: {{ actor_input }}",
        },
    )


def _flow(root: Path, preferences: Any) -> GenieFlow:
    flow = GenieFlow(template_root=root, store="memory://", preferences=preferences)
    flow.register_model(KEY, PrefsModel)
    return flow


async def _async_source(user: str) -> dict[str, Any] | None:
    await asyncio.sleep(0)
    return PREFERENCES.get(user)


@pytest.mark.parametrize("source", [PREFERENCES, PREFERENCES.get, _async_source], ids=["mapping", "function", "async"])
def test_each_users_preferences_reach_the_templates_and_the_prompt(
    root: Path, server_url: str, source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GENIE_GRAPH_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_requests(server_url)
    with _flow(root, source) as flow:
        ada = flow.create_new_session(KEY, ADA)
        bob = flow.create_new_session(KEY, BOB)
        assert ada.response == "Hello ada@example.com (tone: formal)"
        assert bob.response == "Hello bob@example.com (tone: casual)"
        answer = send(flow, KEY, ada.session_id, "user_input", "What is a graph?")
        assert answer.response == "ECHO: Answer in a formal tone: What is a graph?"
        send(flow, KEY, bob.session_id, "user_input", "hi")
    prompts = [request["messages"][-1]["content"] for request in recorded_requests(server_url)]
    assert prompts == ["Answer in a formal tone: What is a graph?", "Answer in a casual tone: hi"]


def test_without_a_user_source_or_answer_templates_see_no_preferences(root: Path) -> None:
    with _flow(root, PREFERENCES) as flow:
        assert flow.create_new_session(KEY).response == "Hello stranger (tone: none)"
        carol = User(email="carol@example.com", firstname="Carol", lastname="C")
        assert flow.create_new_session(KEY, carol).response == "Hello carol@example.com (tone: none)"
    with _flow(root, None) as flow:
        assert flow.create_new_session(KEY, ADA).response == "Hello ada@example.com (tone: none)"


def test_a_failing_source_does_not_stop_the_dialogue(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(user: str) -> dict[str, Any]:
        raise ConnectionError("preference store away")

    with _flow(root, broken) as flow:
        assert flow.create_new_session(KEY, ADA).response == "Hello ada@example.com (tone: none)"
    assert "preference store away" in caplog.text


def test_a_source_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="preferences must be a mapping"):
        GenieFlow(store="memory://", preferences=42)  # type: ignore[arg-type]
