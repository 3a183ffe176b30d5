"""GenieModel, VersionedModel, SecondaryStore, dialogue formats and User (genie_graph._model, _user)."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import ConfigDict, ValidationError, computed_field
from statemachine import State, StateMachine

from genie_graph._model import (
    Actor,
    DialogueElement,
    DialogueFormat,
    DialoguePersistence,
    GenieModel,
    SecondaryStore,
    StateKind,
    VersionedModel,
)
from genie_graph._user import User
from genie_graph.errors import GenieGraphError, SchemaUpgradeError, SecondaryStorageError, SerializationError

# ---------------------------------------------------------------------------------------------
# fixtures and module-level classes (secondary storage resolves classes by qualified name)


class M(StateMachine):
    a = State(initial=True, value=100)
    b = State(value=200)
    go = a.to(b) | b.to(a)


class Note(VersionedModel):
    text: str
    tags: list[str] = []


class NoteV1(VersionedModel):
    model_config = ConfigDict(json_schema_extra={"schema_version": 1})
    title: str


class NoteV2(VersionedModel):
    """Version 2 renamed ``title`` to ``heading``."""

    model_config = ConfigDict(json_schema_extra={"schema_version": 2})
    heading: str

    @classmethod
    def upgrade_schema(cls, from_version: int, model_data: dict[str, Any]) -> dict[str, Any]:
        if from_version == 1:
            return {"heading": model_data["title"]}
        return super().upgrade_schema(from_version, model_data)


class Strict(VersionedModel):
    model_config = ConfigDict(extra="forbid")
    first: str
    when: datetime
    blob: bytes = b""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shout(self) -> str:
        return self.first.upper()


class Chat(GenieModel):
    topic: str = ""
    seeded_with: str | None = None

    @classmethod
    def get_state_machine_class(cls) -> type[StateMachine]:
        return M

    def seed_model(self) -> None:
        self.seeded_with = self.seed_data


def make_user(**overrides: Any) -> User:
    fields: dict[str, Any] = {"email": "ada@example.org", "firstname": "Ada", "lastname": "Lovelace"}
    fields.update(overrides)
    return User(**fields)


def dialogue() -> list[DialogueElement]:
    return [
        DialogueElement(actor="assistant", actor_text="Welcome!"),
        DialogueElement(actor="user", actor_text="What is 2+2?"),
        DialogueElement(actor="assistant", actor_text="It is 4.\nAnything else?"),
        DialogueElement(actor="system", actor_text="be brief"),
        DialogueElement(actor="user", actor_text="no"),
        DialogueElement(actor="user", actor_text="bye"),
    ]


# ---------------------------------------------------------------------------------------------
# enums and DialogueElement


def test_enum_values_match_genie_flow() -> None:
    assert [a.value for a in Actor] == ["system", "assistant", "user"]
    assert (StateKind.USER, StateKind.INVOKER) == (0, 1)
    assert [p.value for p in DialoguePersistence] == ["none", "raw", "rendered"]


def test_dialogue_element_accepts_plain_strings_and_stamps_utc() -> None:
    element = DialogueElement(actor="user", actor_text="hi")
    assert element.actor is Actor.USER
    assert element.text == "hi"
    assert element.timestamp.tzinfo is not None
    assert element.timestamp.utcoffset() == UTC.utcoffset(None)
    with pytest.raises(AttributeError):
        element.text = "other"  # type: ignore[misc]


def test_dialogue_element_rejects_unknown_actor() -> None:
    with pytest.raises(ValidationError, match="actor"):
        DialogueElement(actor="robot", actor_text="beep")


# ---------------------------------------------------------------------------------------------
# DialogueFormat


@pytest.mark.parametrize("fmt", list(DialogueFormat))
def test_every_format_of_an_empty_dialogue_is_empty(fmt: DialogueFormat) -> None:
    assert fmt.format([]) == ""


def test_python_repr_format() -> None:
    elements = dialogue()
    assert DialogueFormat.PYTHON_REPR.format(elements) == repr(elements)


def test_json_format_serializes_timestamps() -> None:
    elements = dialogue()
    parsed = json.loads(DialogueFormat.JSON.format(elements))
    assert [DialogueElement.model_validate(item) for item in parsed] == elements
    assert parsed[0]["actor"] == "assistant"
    assert isinstance(parsed[0]["timestamp"], str)


def test_chat_format() -> None:
    elements = [DialogueElement(actor="user", actor_text="hi"), DialogueElement(actor="assistant", actor_text="yo")]
    assert DialogueFormat.CHAT.format(elements) == "[USER]: hi\n\n[ASSISTANT]: yo\n"


def test_yaml_format_matches_genie_flow_layout() -> None:
    elements = [DialogueElement(actor="user", actor_text="line one\nline two")]
    assert DialogueFormat.YAML.format(elements) == "- role: user\n  content: >\n    line one\n    line two\n"


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("plain", "plain\n"),
        # ">" is a folded scalar: single line breaks become spaces, blank lines become breaks
        ("folded\nonto one line", "folded onto one line\n"),
        ("paragraphs\n\nstay apart", "paragraphs\nstay apart\n"),
        ("  starts indented\nthen not", "  starts indented\nthen not\n"),
        ("\n\n  blank lines then indent", "\n\n  blank lines then indent\n"),
        ("key: value # not a comment", "key: value # not a comment\n"),
        ("- looks like\n- a list", "- looks like - a list\n"),
        ("quotes ' and \" and [brackets] {braces} & *star", "quotes ' and \" and [brackets] {braces} & *star\n"),
        ("tab\tinside, ünïcode ✓", "tab\tinside, ünïcode ✓\n"),
        ("", ""),
    ],
)
def test_yaml_format_parses_back(text: str, content: str) -> None:
    elements = [DialogueElement(actor="user", actor_text=text), DialogueElement(actor="assistant", actor_text="ok")]
    parsed = yaml.safe_load(DialogueFormat.YAML.format(elements))
    assert parsed == [{"role": "user", "content": content}, {"role": "assistant", "content": "ok\n"}]


def test_question_answer_format_pairs_turns() -> None:
    assert DialogueFormat.QUESTION_ANSWER.format(dialogue()) == (
        "A: Welcome!\n\nQ: What is 2+2?\nA: It is 4.\nAnything else?\n\nQ: no\n\nQ: bye\n"
    )


def test_dialogue_format_is_a_string_enum() -> None:
    assert DialogueFormat("yaml") is DialogueFormat.YAML
    assert f"{DialogueFormat.CHAT}" == "chat"


# ---------------------------------------------------------------------------------------------
# VersionedModel


def test_schema_version_comes_from_model_config() -> None:
    assert VersionedModel.schema_version() == 0
    assert Note.schema_version() == 0
    assert NoteV2.schema_version() == 2
    assert NoteV2.model_json_schema()["schema_version"] == 2


@pytest.mark.parametrize("compression", [False, True])
def test_serialize_round_trip(compression: bool) -> None:
    note = Note(text="hello " * 50, tags=["a", "b"])
    payload = note.serialize(compression=compression)
    version, flag, body = payload.split(b":", 2)
    assert (version, flag) == (b"0", b"1" if compression else b"0")
    raw = zlib.decompress(body) if compression else body
    assert json.loads(raw) == {"text": note.text, "tags": ["a", "b"]}
    if compression:
        assert len(body) < len(raw)
    restored = Note.deserialize(payload)
    assert restored == note
    assert type(restored) is Note


def test_serialize_include_and_exclude() -> None:
    note = Note(text="x", tags=["t"])
    assert json.loads(note.serialize(exclude={"tags"}).split(b":", 2)[2]) == {"text": "x"}
    assert json.loads(note.serialize(include={"tags"}).split(b":", 2)[2]) == {"tags": ["t"]}


def test_deserialize_upgrades_older_schema() -> None:
    payload = NoteV1(title="old").serialize(compression=True)
    assert payload.startswith(b"1:1:")
    assert NoteV2.deserialize(payload) == NoteV2(heading="old")


def test_upgrade_schema_base_raises_with_names_and_versions() -> None:
    with pytest.raises(SchemaUpgradeError) as caught:
        Note.deserialize(NoteV1(title="t").serialize())
    message = str(caught.value)
    assert "Note" in message and "version 1" in message and "version is 0" in message
    assert "upgrade_schema" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, GenieGraphError)
    with pytest.raises(SchemaUpgradeError, match="NoteV2"):
        NoteV2.deserialize(b'7:0:{"heading": "x"}')


@pytest.mark.parametrize(
    "payload",
    [b"", b"0", b"0:0", b"x:0:{}", b"0:2:{}", b"0:1:not zlib", b"1:0:[1, 2]", b"1:0:{broken", b"\xff:0:{}"],
)
def test_malformed_payload_raises_serialization_error(payload: bytes) -> None:
    with pytest.raises(SerializationError) as caught:
        NoteV2.deserialize(payload)
    assert isinstance(caught.value, ValueError)
    assert "serialize" in str(caught.value)


def test_payload_that_does_not_fit_raises_validation_error() -> None:
    with pytest.raises(ValidationError):
        Note.deserialize(b'0:0:{"tags": []}')


# ---------------------------------------------------------------------------------------------
# SecondaryStore


def test_store_is_write_once() -> None:
    store = SecondaryStore()
    store["note"] = Note(text="one")
    with pytest.raises(SecondaryStorageError, match="write-once") as caught:
        store["note"] = Note(text="two")
    assert "del" in str(caught.value)
    assert store["note"].text == "one"


def test_store_delete_then_set() -> None:
    store = SecondaryStore({"note": Note(text="one")})
    del store["note"]
    assert "note" not in store
    store["note"] = Note(text="two")
    assert store["note"] == Note(text="two")
    with pytest.raises(KeyError):
        del store["missing"]


def test_store_copies_values_in_and_out() -> None:
    note = Note(text="one", tags=["a"])
    store = SecondaryStore()
    store["note"] = note
    note.tags.append("changed outside")
    read = store["note"]
    read.tags.append("changed after read")
    assert store["note"] == Note(text="one", tags=["a"])


def test_store_mapping_api() -> None:
    store = SecondaryStore({"a": Note(text="1"), "b": Note(text="2")})
    assert len(store) == 2
    assert list(store) == ["a", "b"]
    assert list(store.keys()) == ["a", "b"]
    assert list(store.values()) == [Note(text="1"), Note(text="2")]
    assert dict(store.items()) == {"a": Note(text="1"), "b": Note(text="2")}
    assert store.get("a") == Note(text="1")
    assert store.get("zzz") is None
    assert "a" in store and "zzz" not in store
    with pytest.raises(KeyError):
        store["zzz"]


def test_store_rejects_wrong_types() -> None:
    store = SecondaryStore()
    with pytest.raises(TypeError, match="VersionedModel"):
        store["x"] = {"text": "no"}  # type: ignore[assignment]
    with pytest.raises(TypeError):
        store[1] = Note(text="x")  # type: ignore[index]


def test_store_equality() -> None:
    assert SecondaryStore({"a": Note(text="1")}) == SecondaryStore({"a": Note(text="1")})
    assert SecondaryStore({"a": Note(text="1")}) != SecondaryStore({"a": Note(text="2")})
    assert SecondaryStore({"a": Note(text="1")}) != SecondaryStore()
    assert SecondaryStore({"a": Note(text="1")}) == {"a": Note(text="1")}
    assert SecondaryStore() != 3


def _chat_with_store() -> Chat:
    chat = Chat(session_id="s1", topic="maths", actor="user", actor_input='{"n": 1}')
    chat.secondary_storage["user_info"] = make_user(custom_properties={"team": "blue"})
    chat.secondary_storage["note"] = Note(text="remember", tags=["x"])
    chat.secondary_storage["strict"] = Strict(first="a", when=datetime(2024, 1, 2, tzinfo=UTC), blob=b"raw")
    chat.add_dialogue_element("user", "hello")
    return chat


def test_store_dump_form() -> None:
    chat = _chat_with_store()
    for dumped in (chat.model_dump()["secondary_storage"], chat.model_dump(mode="json")["secondary_storage"]):
        assert dumped["user_info"] == {
            "type": "genie_graph._user.User",
            "schema_version": 0,
            "data": {
                "email": "ada@example.org",
                "firstname": "Ada",
                "lastname": "Lovelace",
                "custom_properties": {"team": "blue"},
                "name": "Ada Lovelace",
            },
        }
        assert dumped["note"]["type"].endswith(".Note")
    assert json.loads(chat.model_dump_json())["secondary_storage"] == chat.model_dump(mode="json")["secondary_storage"]


def test_store_round_trips_in_python_mode_keeping_classes() -> None:
    chat = _chat_with_store()
    restored = Chat.model_validate(chat.model_dump())
    assert restored == chat
    assert type(restored.secondary_storage["user_info"]) is User
    assert type(restored.secondary_storage["strict"]) is Strict
    assert restored.secondary_storage["user_info"].email == "ada@example.org"  # type: ignore[attr-defined]


def test_store_round_trips_in_json_mode_keeping_classes() -> None:
    chat = _chat_with_store()
    restored = Chat.model_validate_json(chat.model_dump_json())
    assert restored == chat
    assert type(restored.secondary_storage["user_info"]) is User
    assert Chat.model_validate(chat.model_dump(mode="json")) == chat


def test_store_round_trips_through_serialize() -> None:
    chat = _chat_with_store()
    assert Chat.deserialize(chat.serialize(compression=True)) == chat
    without_store = Chat.deserialize(chat.serialize(exclude={"secondary_storage"}))
    assert len(without_store.secondary_storage) == 0


def test_store_validates_from_instances_and_other_stores() -> None:
    user = make_user()
    from_dict = Chat(secondary_storage={"user_info": user})  # type: ignore[arg-type]
    assert from_dict.secondary_storage["user_info"] == user
    original = SecondaryStore({"user_info": user})
    from_store = Chat(secondary_storage=original)
    assert from_store.secondary_storage == original
    original["later"] = Note(text="not shared")
    assert "later" not in from_store.secondary_storage


def test_store_upgrades_stored_entries() -> None:
    stored = {"n": {"type": f"{NoteV2.__module__}.NoteV2", "schema_version": 1, "data": {"title": "old"}}}
    chat = Chat.model_validate({"secondary_storage": stored})
    assert chat.secondary_storage["n"] == NoteV2(heading="old")
    stored["n"]["schema_version"] = 9
    with pytest.raises(ValidationError, match="upgrade_schema"):
        Chat.model_validate({"secondary_storage": stored})


def test_store_finds_classes_defined_in_functions() -> None:
    class Local(VersionedModel):
        value: int

    chat = Chat(secondary_storage=SecondaryStore({"l": Local(value=3)}))
    restored = Chat.model_validate_json(chat.model_dump_json())
    assert type(restored.secondary_storage["l"]) is Local


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "json.JSONDecoder", "schema_version": 0, "data": {}},
        {"type": "no_such_module_xyz.Thing", "schema_version": 0, "data": {}},
        {"type": "genie_graph._user.Nope", "schema_version": 0, "data": {}},
        {"type": "genie_graph._user.User", "schema_version": 0},
        {"type": "genie_graph._user.User", "schema_version": None, "data": {}},
        {"type": "genie_graph._nope_module.User", "schema_version": 0, "data": {}},
        {"type": "genie_graph._user.User", "schema_version": 0, "data": [1]},
        {"type": "genie_graph._user.User", "schema_version": 0, "data": {"email": "bad"}},
        "just a string",
    ],
)
def test_store_rejects_bad_entries(entry: Any) -> None:
    with pytest.raises(ValidationError):
        Chat.model_validate({"secondary_storage": {"k": entry}})


def test_store_has_a_json_schema() -> None:
    schema = Chat.model_json_schema()["properties"]["secondary_storage"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"]["required"] == ["type", "schema_version", "data"]


# ---------------------------------------------------------------------------------------------
# GenieModel


def test_base_model_requires_a_state_machine_class() -> None:
    with pytest.raises(NotImplementedError, match="get_state_machine_class"):
        GenieModel.get_state_machine_class()


def test_defaults() -> None:
    model = GenieModel()
    assert model.session_id == ""
    assert model.state is None and model.actor is None and model.actor_input is None
    assert model.dialogue == [] and len(model.secondary_storage) == 0
    assert model.current_response is None
    assert model.format_dialogue() == ""


def test_seed_model_is_called_with_seed_data() -> None:
    chat = Chat(seed_data="seed!")
    assert chat.seeded_with == "seed!"
    assert chat.seed_data is None
    assert Chat().seeded_with is None
    assert Chat.model_validate(chat.model_dump()).seeded_with == "seed!"


def test_dialogue_helpers() -> None:
    chat = Chat()
    element = chat.add_dialogue_element(Actor.ASSISTANT, "hi")
    assert chat.current_response is element
    chat.actor, chat.actor_input = Actor.USER, "hello"
    recorded = chat.record_dialogue_element()
    assert (recorded.actor, recorded.text) == (Actor.USER, "hello")
    chat.actor_input = None
    assert chat.record_dialogue_element().text == ""
    assert chat.current_response is chat.dialogue[-1]
    assert len(chat.dialogue) == 3
    assert chat.format_dialogue() == DialogueFormat.CHAT.format(chat.dialogue)
    assert chat.format_dialogue("yaml") == DialogueFormat.YAML.format(chat.dialogue)


def test_record_without_actor_is_refused() -> None:
    with pytest.raises(ValueError, match="actor"):
        Chat(actor_input="x").record_dialogue_element()


@pytest.mark.parametrize(
    ("actor_input", "parsed"),
    [(None, None), ("not json", None), ('{"a": [1, 2]}', {"a": [1, 2]}), ("42", 42), ('"s"', "s")],
)
def test_parsed_actor_input(actor_input: str | None, parsed: Any) -> None:
    assert Chat(actor_input=actor_input).parsed_actor_input == parsed


def test_render_data_keys() -> None:
    chat = _chat_with_store()
    data = chat.render_data
    assert data["secondary_storage"]["user_info"]["email"] == "ada@example.org"
    assert data["secondary_storage"]["user_info"]["name"] == "Ada Lovelace"
    assert data["secondary_storage"]["note"] == {"text": "remember", "tags": ["x"]}
    assert data["parsed_actor_input"] == {"n": 1}
    assert data["chat_history"] == chat.format_dialogue(DialogueFormat.YAML)
    assert yaml.safe_load(data["chat_history"]) == [{"role": "user", "content": "hello\n"}]
    assert datetime.fromisoformat(data["current_datetime"]).tzinfo is not None
    assert data["topic"] == "maths" and data["session_id"] == "s1" and data["seed_data"] is None
    assert data["dialogue"][0]["actor_text"] == "hello"
    for key in ("state", "actor", "actor_input", "source_type", "target_type", "dialogue_persistence", "task_error"):
        assert key in data
    assert (data["last_user_message"], data["last_bot_message"]) == ("hello", None)


def test_render_data_has_the_last_user_and_bot_messages() -> None:
    chat = Chat()
    for actor, text in (("assistant", "Hi"), ("user", "one"), ("assistant", "ok"), ("user", "two")):
        chat.add_dialogue_element(actor, text)
    assert (chat.render_data["last_user_message"], chat.render_data["last_bot_message"]) == ("two", "ok")
    assert (Chat().render_data["last_user_message"], Chat().render_data["last_bot_message"]) == (None, None)


def test_render_data_resolves_state_id_and_name() -> None:
    chat = Chat()
    machine = M(chat)
    assert chat.state == 100
    data = chat.render_data
    assert (data["state_value"], data["state_id"], data["state_name"]) == (100, "a", "A")
    machine.go()
    data = chat.render_data
    assert (data["state"], data["state_value"], data["state_id"], data["state_name"]) == (200, 200, "b", "B")
    chat.state = 999
    assert (chat.render_data["state_id"], chat.render_data["state_name"]) == (None, None)


def test_render_data_without_machine_or_state() -> None:
    assert (Chat().render_data["state_id"], Chat().render_data["state_name"]) == (None, None)
    data = GenieModel(state=100).render_data
    assert (data["state_value"], data["state_id"], data["state_name"]) == (100, None, None)


def test_state_lookup_is_cached_per_class() -> None:
    calls: list[int] = []

    class Counted(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[StateMachine]:
            calls.append(1)
            return M

    for state in (100, 200, 100):
        _ = Counted(state=state).render_data
    assert len(calls) == 1


def test_model_dump_round_trip_keeps_state_and_enums() -> None:
    chat = _chat_with_store()
    chat.state = 200
    chat.source_type, chat.target_type = StateKind.USER, StateKind.INVOKER
    chat.dialogue_persistence = DialoguePersistence.RAW
    restored = Chat.model_validate_json(chat.model_dump_json())
    assert restored == chat
    assert restored.target_type is StateKind.INVOKER
    assert restored.dialogue_persistence is DialoguePersistence.RAW
    assert Chat.model_validate({"state": "b_value"}).state == "b_value"


# ---------------------------------------------------------------------------------------------
# User


def test_user_name_and_dump() -> None:
    user = make_user(custom_properties={"role": "admin"})
    assert user.name == "Ada Lovelace"
    assert user.model_dump()["name"] == "Ada Lovelace"
    assert User.schema_version() == 0
    assert User.deserialize(user.serialize()) == user


@pytest.mark.parametrize("email", ["plain", "a@b", "a b@example.org", "@example.org", "a@example.c"])
def test_user_rejects_bad_email(email: str) -> None:
    with pytest.raises(ValidationError, match="not a valid email address"):
        make_user(email=email)


@pytest.mark.parametrize("field", ["firstname", "lastname"])
def test_user_rejects_unprintable_names(field: str) -> None:
    with pytest.raises(ValidationError, match="not printable") as caught:
        make_user(**{field: "Ada\nLovelace"})
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("properties", [{"bad\tkey": "v"}, {"k": "bad\x00value"}])
def test_user_rejects_unprintable_custom_properties(properties: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="not printable"):
        make_user(custom_properties=properties)


def test_user_accepts_unicode_names() -> None:
    assert make_user(firstname="Zoë", lastname="Ødegård").name == "Zoë Ødegård"
