"""Flow versions: sessions stored by an older version of a flow are migrated, kept on their version, or refused.

The fixture ``tests/fixtures/versions/chat-v1.json`` holds three sessions stored by version "1" of
the chat flow below: Ada waits in ``answer``, Bob in ``survey`` (a state version "2" removed), and Cy's
invoker run in ``think`` was cut off. Version "2" renames ``think`` and ``answer``, drops ``survey``
and renames the model's ``name`` field to ``user_name`` (``upgrade_schema``). Regenerate the fixture
with ``python -m tests.test_versions``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.types import Command
from pydantic import ConfigDict

from genie_graph import (
    POLL,
    EventData,
    EventInput,
    GenieFlow,
    GenieModel,
    GenieStateMachine,
    HistoryKind,
    Migration,
    State,
    flow_version,
)
from genie_graph.errors import EventNotAllowed, FlowDefinitionError, FlowVersionUnsupported
from genie_graph.testing import SessionsDidNotResume, check_sessions_resume, export_sessions, load_sessions
from tests.services import ApiServer, Worker

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "fixtures" / "versions" / "templates"
FIXTURE = HERE / "fixtures" / "versions" / "chat-v1.json"
KEY = "chat"
PREFIX = "/v1/ai"


def think(prompt: str) -> str:
    """The ``python`` invoker of ``think`` / ``reflect``."""
    return f"Thought about {prompt}"


# ---- version 1 ------------------------------------------------------------------------------
class ChatMachineV1(GenieStateMachine):
    version = "1"

    intro = State(initial=True, value=0)
    think = State(value=1)
    answer = State(value=2)
    survey = State(value=3)

    user_input = intro.to(think) | answer.to(think) | survey.to(answer)
    ai_extraction = think.to(answer)
    advance = answer.to(survey)

    templates = dict(
        intro="user/intro.jinja2",
        think="llm/think.jinja2",
        answer="user/answer.jinja2",
        survey="user/survey.jinja2",
    )

    def on_exit_intro(self, event_data: EventData) -> None:
        self.model.name = event_data.args[0]  # type: ignore[attr-defined]


class ChatModelV1(GenieModel):
    name: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ChatMachineV1


# ---- version 2 ------------------------------------------------------------------------------
class ChatMachineV2(GenieStateMachine):
    version = "2"

    intro = State(initial=True, value=0)
    reflect = State(value=1)
    reply = State(value=20)

    user_input = intro.to(reflect) | reply.to(reflect, cond="has_text")
    ai_extraction = reflect.to(reply)

    templates = dict(intro="user/intro.jinja2", reflect="llm/think.jinja2", reply="user/reply.jinja2")
    migrations = {
        "1": Migration(states={"think": "reflect", "answer": "reply", "survey": "reply"}, schema_version=0),
    }

    def on_exit_intro(self, event_data: EventData) -> None:
        self.model.user_name = event_data.args[0]  # type: ignore[attr-defined]

    def has_text(self, event_data: EventData) -> bool:
        return bool(event_data.args[0].strip())


class ChatModelV2(GenieModel):
    model_config = ConfigDict(json_schema_extra={"schema_version": 1})

    user_name: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ChatMachineV2

    @classmethod
    def upgrade_schema(cls, from_version: int, model_data: dict[str, Any]) -> dict[str, Any]:
        if from_version == 0:
            model_data = dict(model_data)
            model_data["user_name"] = model_data.pop("name", "")
        return model_data


def served_flow(store: str | None = None) -> GenieFlow:
    """Version 2 of the chat flow, migrating version 1 (``--flow tests.test_versions:served_flow``)."""
    flow = GenieFlow(template_root=TEMPLATES, store=store or "memory://", session_ttl_seconds=None)
    flow.register_model(KEY, ChatModelV2)
    return flow


# ---- helpers --------------------------------------------------------------------------------
def _poll(flow: GenieFlow, session_id: str) -> Any:
    answer = flow.process_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""))
    while answer.next_actions == [POLL] and answer.error is None:
        flow.wait_until_ready(session_id)
        answer = flow.process_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""))
    return answer


def _send(flow: GenieFlow, session_id: str, event: str, text: str = "") -> Any:
    answer = flow.send_event(KEY, EventInput(session_id=session_id, event=event, event_input=text))
    return _poll(flow, session_id) if answer.next_actions == [POLL] else answer


def _fixture_ids() -> dict[str, str]:
    """Session id by the name stored in it (Ada, Bob, Cy)."""
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return {session["values"]["name"]: session["session_id"] for session in data["sessions"]}


def _stored_version(flow: GenieFlow, session_id: str) -> str:
    """The flow version of the session's latest checkpoint, as stored (not as loaded)."""
    values = flow.graph(KEY).get_state({"configurable": {"thread_id": session_id}}).values
    return str(values["flow_version"])


def write_fixture(path: Path = FIXTURE) -> Path:
    """Store three sessions with version 1 and export them (how ``chat-v1.json`` was made)."""
    with GenieFlow(template_root=TEMPLATES, store="memory://", session_ttl_seconds=None) as flow:
        flow.register_model(KEY, ChatModelV1)
        ids = []
        for name in ("Ada", "Bob", "Cy"):
            session_id = flow.create_new_session(KEY).session_id
            _send(flow, session_id, "user_input", name)
            ids.append(session_id)
        _send(flow, ids[1], "advance")
        # Cy's next event is accepted, and its run cut off before the invoker state ran
        config: Any = {"configurable": {"thread_id": ids[2]}, "metadata": {"genie_model_key": KEY}}
        command = Command(resume={"event": "user_input", "event_input": "why?"})
        flow.graph(KEY).invoke(command, config, interrupt_before=["think"])
        return export_sessions(flow, KEY, path, ids)


@pytest.fixture
def v2(store_url: str) -> Iterator[GenieFlow]:
    with served_flow(store_url) as flow:
        yield flow


# ---- versions recorded ----------------------------------------------------------------------
def test_a_new_session_records_the_declared_version(v2: GenieFlow) -> None:
    session_id = v2.create_new_session(KEY).session_id
    assert v2.get_model(KEY, session_id).flow_version == "2" == flow_version(ChatModelV2)
    assert v2.flow_versions(KEY) == {"2": "current", "1": "migrated"}


class PlainMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    answer = State(value=1)
    user_input = intro.to(answer) | answer.to(answer)
    templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2")


class PlainModel(GenieModel):
    name: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PlainMachine


class PlainMachineMore(GenieStateMachine):
    intro = State(initial=True, value=0)
    answer = State(value=1)
    bye = State(value=2, final=True)
    user_input = intro.to(answer) | answer.to(bye)
    templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2", bye="user/intro.jinja2")


class PlainModelMore(PlainModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PlainMachineMore


class PlainModelRenamed(GenieModel):
    user_name: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PlainMachine


def test_the_default_version_is_a_hash_stable_across_processes() -> None:
    version = flow_version(PlainModel)
    assert len(version) == 12 and int(version, 16) >= 0
    script = "import genie_graph, tests.test_versions as t; print(genie_graph.flow_version(t.PlainModel))"
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": ""}
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=HERE.parent)
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == version
    # what a stored session depends on changes it: states, transitions, the model's fields
    assert len({version, flow_version(PlainModelMore), flow_version(PlainModelRenamed)}) == 3


# ---- migrated on load -----------------------------------------------------------------------
def test_old_sessions_migrate_and_resume(v2: GenieFlow) -> None:
    resumed = {r.session_id: r for r in check_sessions_resume(v2, KEY, FIXTURE, event_input="and now?")}
    ids = _fixture_ids()
    assert {r.stored_version for r in resumed.values()} == {"1"}
    assert {r.version for r in resumed.values()} == {"2"}
    # Ada waited in answer (renamed reply), Bob in survey (removed: reply), Cy's run was in think (reflect)
    assert resumed[ids["Ada"]].state_before == "reply"
    assert resumed[ids["Bob"]].state_before == "reply"
    assert resumed[ids["Cy"]].state_before == "reflect"
    for name, session_id in ids.items():
        model = v2.get_model(KEY, session_id)
        assert isinstance(model, ChatModelV2)
        assert model.user_name == name  # the renamed field, through upgrade_schema
        assert v2.flow_of(KEY).state_of(model) == "reply"
        migrated = [entry for entry in model.history if entry.kind is HistoryKind.MIGRATED]
        assert len(migrated) == 1 and migrated[0].detail is not None
        assert migrated[0].detail["from"] == "1" and migrated[0].detail["to"] == "2"
        assert _stored_version(v2, session_id) == "2"
    assert resumed[ids["Ada"]].response == "v2 for Ada: Thought about and now?"
    cy = v2.get_model(KEY, ids["Cy"])
    # the cut-off run finished on version 2, then took the check's event
    assert [d.actor_text for d in cy.dialogue][-4:] == [
        "why?",
        "v2 for Cy: Thought about why?",
        "and now?",
        "v2 for Cy: Thought about and now?",
    ]


def test_a_migrated_session_waits_in_its_mapped_state_and_migrates_once(v2: GenieFlow) -> None:
    load_sessions(v2, FIXTURE)
    bob = _fixture_ids()["Bob"]
    assert v2.get_task_state(KEY, bob).next_actions == ["user_input"]
    model = v2.get_model(KEY, bob)
    assert model.flow_version == "2" and model.history[-1].kind is HistoryKind.MIGRATED
    assert _stored_version(v2, bob) == "1"  # loading alone writes nothing
    answer = _send(v2, bob, "user_input", "hello")
    assert answer.response == "v2 for Bob: Thought about hello"
    answer = _send(v2, bob, "user_input", "again")
    assert answer.response == "v2 for Bob: Thought about again"
    model = v2.get_model(KEY, bob)
    assert sum(entry.kind is HistoryKind.MIGRATED for entry in model.history) == 1
    assert model.dialogue[-4].actor_text == "hello"


def test_loading_a_session_again_replaces_what_its_last_run_left(v2: GenieFlow) -> None:
    """A run leaves its session kept in memory for the next poll and event; loading the session
    again (a checkpoint written outside a run) is what they see instead."""
    load_sessions(v2, FIXTURE)
    bob = _fixture_ids()["Bob"]
    assert _send(v2, bob, "user_input", "hello").response == "v2 for Bob: Thought about hello"
    load_sessions(v2, FIXTURE)  # back to the version-1 session, as exported
    assert _stored_version(v2, bob) == "1"
    assert _poll(v2, bob).response == "How did we do, Bob?"
    assert _send(v2, bob, "user_input", "again").response == "v2 for Bob: Thought about again"  # migrated again


def test_a_refused_event_leaves_an_old_session_as_stored(v2: GenieFlow) -> None:
    load_sessions(v2, FIXTURE)
    ada = _fixture_ids()["Ada"]
    before = v2.graph(KEY).get_state({"configurable": {"thread_id": ada}}).values
    with pytest.raises(EventNotAllowed):  # not an event of reply
        v2.send_event(KEY, EventInput(session_id=ada, event="advance", event_input=""))
    with pytest.raises(EventNotAllowed):  # refused by has_text, inside the run that writes the migration
        v2.send_event(KEY, EventInput(session_id=ada, event="user_input", event_input="  "))
    assert v2.graph(KEY).get_state({"configurable": {"thread_id": ada}}).values == before
    assert _stored_version(v2, ada) == "1"
    assert _send(v2, ada, "user_input", "fine").response == "v2 for Ada: Thought about fine"
    assert _stored_version(v2, ada) == "2"


def test_a_failing_migration_answers_a_clear_error(v2: GenieFlow) -> None:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data["sessions"] = [copy.deepcopy(data["sessions"][0])]
    data["sessions"][0]["values"]["name"] = ["not", "a", "name"]
    (session_id,) = load_sessions(v2, data)
    with pytest.raises(FlowVersionUnsupported) as raised:
        v2.get_model(KEY, session_id)
    assert raised.value.version == "1"
    assert "user_name" in str(raised.value) and "upgrade_schema" in str(raised.value)


# ---- kept on the old version ----------------------------------------------------------------
def test_old_sessions_finish_on_their_own_version(store_url: str) -> None:
    with GenieFlow(template_root=TEMPLATES, store=store_url, session_ttl_seconds=None) as flow:
        flow.register_model(KEY, ChatModelV2, previous=[ChatModelV1])
        assert flow.flow_versions(KEY) == {"2": "current", "1": "served"}
        ids = _fixture_ids()
        resumed = check_sessions_resume(flow, KEY, FIXTURE, event_input="still v1?")
        assert {r.version for r in resumed} == {"1"}
        ada = flow.get_model(KEY, ids["Ada"])
        assert isinstance(ada, ChatModelV1) and ada.flow_version == "1" and ada.name == "Ada"
        assert ada.dialogue[-1].actor_text == "v1 for Ada: Thought about still v1?"
        # Cy's cut-off run resumed in think, on version 1
        assert "v1 for Cy: Thought about why?" in [d.actor_text for d in flow.get_model(KEY, ids["Cy"]).dialogue]
        # survey still exists on version 1: the check's event took Bob from it back to answer
        bob = flow.get_model(KEY, ids["Bob"])
        assert isinstance(bob, ChatModelV1) and bob.state == ChatMachineV1.answer.value
        assert _send(flow, ids["Ada"], "advance").response == "How did we do, Ada?"
        new = flow.create_new_session(KEY).session_id
        assert _send(flow, new, "user_input", "Dee").response == "v2 for Dee: Thought about Dee"
        assert flow.get_model(KEY, new).flow_version == "2"
        assert _stored_version(flow, ids["Ada"]) == "1"


def test_a_cut_off_run_migrates_then_runs_on_a_celery_worker(redis_url: str, tmp_path: Path) -> None:
    worker = Worker("tests.test_versions:served_flow", redis_url, tmp_path / "worker.log").start()
    try:
        with GenieFlow(template_root=TEMPLATES, store=redis_url, runner="celery", session_ttl_seconds=None) as flow:
            flow.register_model(KEY, ChatModelV2)
            resumed = check_sessions_resume(flow, KEY, FIXTURE, event_input="queued")
            assert {r.version for r in resumed} == {"2"}
            cy = flow.get_model(KEY, _fixture_ids()["Cy"])
            assert [d.actor_text for d in cy.dialogue][-3:] == [
                "v2 for Cy: Thought about why?",
                "queued",
                "v2 for Cy: Thought about queued",
            ]
            assert sum(entry.kind is HistoryKind.MIGRATED for entry in cy.history) == 1
    finally:
        worker.stop()


# ---- neither served nor migrated ------------------------------------------------------------
def _legacy_fixture() -> dict[str, Any]:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for session in data["sessions"]:
        session["session_id"] = session["values"]["session_id"] = "legacy-" + session["session_id"]
        session["values"]["flow_version"] = "legacy"
    return data  # type: ignore[no-any-return]


def test_an_unsupported_version_raises_a_clear_error(v2: GenieFlow) -> None:
    ids = load_sessions(v2, _legacy_fixture())
    for session_id in ids:
        with pytest.raises(FlowVersionUnsupported) as raised:
            v2.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="hi"))
        error = raised.value
        assert (error.version, error.current, error.served) == ("legacy", "2", ["2", "1"])
        message = str(error)
        assert "'legacy'" in message and "Migration(" in message and "previous=" in message
        with pytest.raises(FlowVersionUnsupported):
            v2.get_model(KEY, session_id)
    with pytest.raises(SessionsDidNotResume) as failed:
        check_sessions_resume(v2, KEY, _legacy_fixture())  # type: ignore[arg-type]
    assert set(failed.value.problems) == set(ids)


@pytest.fixture(params=["sqlite", "redis"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'sessions.sqlite'}"


def test_an_unsupported_version_answers_409_over_http(server_store: str, tmp_path: Path) -> None:
    with served_flow(server_store) as flow:
        ids = load_sessions(flow, _legacy_fixture())
        migrated = load_sessions(flow, FIXTURE)
    api = ApiServer(tmp_path / "serve.log", server_store, flow="tests.test_versions:served_flow").start()
    try:
        with httpx.Client(base_url=api.url + PREFIX, timeout=30) as client:
            body = {"session_id": ids[0], "event": "user_input", "event_input": "hi"}
            answer = client.post(f"/{KEY}/event", json=body)
            assert answer.status_code == 409, answer.text
            error = answer.json()
            assert error["error"] == "flow_version_unsupported"
            assert (error["flow_version"], error["current_version"], error["served_versions"]) == (
                "legacy",
                "2",
                ["2", "1"],
            )
            assert "Migration(" in error["detail"]
            assert client.get(f"/{KEY}/model/{ids[1]}").status_code == 409
            for session_id in migrated:  # version 1 is migrated by the server
                model = client.get(f"/{KEY}/model/{session_id}")
                assert model.status_code == 200, model.text
    finally:
        api.stop()


# ---- declarations checked at registration -----------------------------------------------------
class BadMigrationMachine(GenieStateMachine):
    version = "3"
    intro = State(initial=True, value=0)
    answer = State(value=1)
    user_input = intro.to(answer) | answer.to(answer)
    templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2")
    migrations = {"1": Migration(states={"think": "nowhere"})}


class BadMigrationModel(GenieModel):
    name: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return BadMigrationMachine


def test_a_migration_to_an_unknown_state_fails_at_registration() -> None:
    flow = GenieFlow(template_root=TEMPLATES, store="memory://")
    with pytest.raises(FlowDefinitionError, match="nowhere"):
        flow.register_model(KEY, BadMigrationModel)
    with pytest.raises(FlowDefinitionError, match="version '1'"):
        flow.register_model(KEY, ChatModelV1, previous=[ChatModelV1])
    flow.close()


def test_exported_sessions_load_into_any_store(store_url: str, tmp_path: Path) -> None:
    exported = tmp_path / "again.json"
    with GenieFlow(template_root=TEMPLATES, store="memory://", session_ttl_seconds=None) as source:
        source.register_model(KEY, ChatModelV1)
        load_sessions(source, FIXTURE)
        export_sessions(source, KEY, exported, list(_fixture_ids().values()))
    with served_flow(store_url) as flow:
        assert len(check_sessions_resume(flow, KEY, exported)) == 3


if __name__ == "__main__":
    import tests.test_versions as this  # the classes under their importable names

    print(this.write_fixture())
