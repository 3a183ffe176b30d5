"""The long lists (dialogue, history) are validated and dumped only where they changed.

Whatever a hook does to them (append, edit an old element in place, change a history entry's
detail in place, trim, reorder), what the store keeps is what the model held: checked against a
full dump on every store, through real runs. Templates get only what they read, and still see
everything they read.
"""

from __future__ import annotations

import base64
import copy
import operator
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, field_validator

from genie_graph import EventData, GenieFlow, GenieModel, GenieStateMachine, State
from genie_graph._channels import as_json, changed_fields, expect, recall, remembering, validate
from genie_graph._history import HistoryEntry, HistoryKind
from genie_graph._model import DialogueElement, DialogueFormat
from genie_graph._packing import pack, packing_channels, unpack
from genie_graph._stores import CompressingSerializer
from genie_graph._templates import TemplateLibrary
from tests.helpers import ECHO_META, RENDERER_META, send, write_tree


class EditMachine(GenieStateMachine):
    """talk --user_input--> think (echo) --ai_extraction--> talk; edit, note, trim and flip loop on talk."""

    talk = State(initial=True, value=0)
    think = State(value=1)

    user_input = talk.to(think)
    ai_extraction = think.to(talk)
    edit = talk.to.itself()
    note = talk.to.itself()
    trim = talk.to.itself()
    flip = talk.to.itself()

    templates = dict(talk="r/talk.jinja2", think="i/think.jinja2")

    def on_edit(self, event_data: EventData) -> None:
        self.model.dialogue[0].actor_text = f"edited: {event_data.args[0] if event_data.args else ''}"

    def on_note(self) -> None:
        entry = next(e for e in self.model.history if e.kind == HistoryKind.EVENT)
        entry.detail = entry.detail or {}
        entry.detail.setdefault("notes", []).append("noted in place")

    def on_trim(self) -> None:
        del self.model.dialogue[:2]

    def on_flip(self) -> None:
        self.model.dialogue.reverse()


class EditModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return EditMachine


class SortedMachine(EditMachine):
    pass


class SortedModel(GenieModel):
    """Validates its dialogue itself: it is never taken from memory."""

    @field_validator("dialogue")
    @classmethod
    def _newest_first_never(cls, value: list[DialogueElement]) -> list[DialogueElement]:
        return sorted(value, key=lambda element: element.timestamp)

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SortedMachine


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(
        tmp_path_factory.mktemp("channels") / "templates",
        {
            "r/meta.yaml": RENDERER_META,
            "r/talk.jinja2": "{% include 'r/part.jinja2' %} ({{ dialogue | length }} so far)",
            "r/part.jinja2": "{{ chat_history | length }} characters of history",
            "i/meta.yaml": ECHO_META,
            "i/think.jinja2": "{{ actor_input }}",
        },
    )


def _full(model: GenieModel) -> dict[str, Any]:
    return model.model_dump(mode="json", include={"dialogue", "history"})


@pytest.mark.parametrize("model_class", [EditModel, SortedModel])
def test_what_the_store_keeps_is_what_the_model_held(root: Path, store_url: str, model_class: type[GenieModel]) -> None:
    with GenieFlow(template_root=root, store=store_url) as flow:
        flow.register_model("edit", model_class)
        session = flow.create_new_session("edit").session_id
        script = ["user_input", "user_input", "trim", "edit", "user_input", "note", "user_input", "flip", "note"]
        seen: dict[str, GenieModel] = {}
        for number, event in enumerate(script):
            seen[f"before {event}"] = flow.get_model("edit", session)
            answer = send(flow, "edit", session, event, f"turn {number}")
            assert answer.error is None, answer.error
            seen[f"after {event}"] = flow.get_model("edit", session)
        model = flow.get_model("edit", session)

    texts = [element.actor_text for element in model.dialogue]
    assert "edited: turn 3" in texts  # the in-place edit of the (then) first element survived
    assert len(texts) == 1 + 2 * len(script) - 2  # the intro, two per event, two trimmed
    noted = [e for e in model.history if e.detail and e.detail.get("notes")]
    assert noted and noted[0].detail is not None and noted[0].detail["notes"] == ["noted in place"] * 2
    # the stored lists are exactly a full dump of the model read back (nothing stale was reused)
    fresh = type(model).model_validate(_full(model) | {"session_id": model.session_id})
    assert _full(fresh) == _full(model)
    before, after = seen["before flip"].dialogue, seen["after flip"].dialogue
    kept = [element for element in after if element in before]
    if model_class is EditModel:  # the flip turned the dialogue so far around
        assert kept == before[::-1]
    else:  # its validator sorts it again on every read
        assert kept == before


def _model(count: int) -> EditModel:
    model = EditModel(session_id="s")
    for n in range(count):
        model.add_dialogue_element("user", f"line {n}")
        model.record_history(HistoryKind.EVENT, event="user_input", detail={"n": n})
    return model


@pytest.mark.parametrize("packed", [False, True])
def test_a_node_dumps_what_changed_and_reuses_the_rest(packed: bool) -> None:
    with remembering(), packing_channels(packed):
        channels = as_json(_model(5))
        model = validate(EditModel, channels)
        assert model.dialogue[0] is validate(EditModel, channels).dialogue[0]  # taken from memory
        model.add_dialogue_element("assistant", "new")
        model.dialogue[1].actor_text = "changed"
        assert model.history[2].detail is not None
        model.history[2].detail["n"] = 99
        del model.history[0]
        update = changed_fields(channels, model)
        expected = as_json(model.model_copy(deep=True))  # a copy: dumped in full
        assert update["dialogue"] == expected["dialogue"]
        assert update["history"] == expected["history"]
        assert "state" not in update

        unchanged = validate(EditModel, channels | update)
        assert changed_fields(channels | update, unchanged) == {}


def test_outside_a_scope_nothing_is_remembered() -> None:
    channels = as_json(_model(3))
    first, second = validate(EditModel, channels), validate(EditModel, channels)
    assert first.dialogue[0] is not second.dialogue[0]
    assert first.dialogue == second.dialogue


def test_an_element_changed_after_it_was_remembered_is_validated_again() -> None:
    with remembering():
        channels = as_json(_model(3))
        model = validate(EditModel, channels)
        model.dialogue[0].actor_text = "changed behind the channel's back"
        again = validate(EditModel, channels)
        assert again.dialogue[0].actor_text == "line 0"
        assert again.dialogue[0] is not model.dialogue[0]


@pytest.mark.parametrize("packed", [False, True])
def test_a_list_read_back_equal_reuses_the_objects_the_scope_expects(packed: bool) -> None:
    """A session kept as its run left it is read back by the next run as new, equal lists: their objects
    are reused (no validation that grows with the session), unless the read differs or they changed."""
    with remembering(), packing_channels(packed):
        channels = as_json(_model(4))
        model = validate(EditModel, channels)
        recalled = recall(channels)
    with remembering():
        expect(recalled)
        again = validate(EditModel, copy.deepcopy(channels))  # as a store's read gives it
        assert all(map(operator.is_, again.dialogue, model.dialogue))
        assert all(map(operator.is_, again.history, model.history))
    with remembering():
        expect(recalled)
        differs = copy.deepcopy(channels)
        differs["dialogue"] = as_json(_model(3))["dialogue"]
        fresh = validate(EditModel, differs)
        assert len(fresh.dialogue) == 3 and fresh.dialogue[0] is not model.dialogue[0]
        assert fresh.history[0] is model.history[0]  # the equal one is still reused
    model.dialogue[0].actor_text = "changed after it was recalled"
    with remembering():
        expect(recalled)
        validated = validate(EditModel, copy.deepcopy(channels))
        assert validated.dialogue[0].actor_text == "line 0" and validated.dialogue[1] is not model.dialogue[1]


class PlainUtterance(BaseModel):
    """A dialogue element of the author's own, which counts no assignments."""

    actor: str
    actor_text: str


class PlainDialogueModel(GenieModel):
    dialogue: list[PlainUtterance] = []  # type: ignore[assignment]

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return EditMachine


def test_elements_that_count_no_assignments_are_compared_field_by_field() -> None:
    with remembering():
        lines = [PlainUtterance(actor="user", actor_text=f"line {n}") for n in range(3)]
        channels = as_json(PlainDialogueModel(session_id="s", dialogue=lines))
        model = validate(PlainDialogueModel, channels)
        assert model.dialogue[0] is validate(PlainDialogueModel, channels).dialogue[0]  # taken from memory
        model.dialogue[0].actor_text = "changed behind the channel's back"
        again = validate(PlainDialogueModel, channels)
        assert again.dialogue[0].actor_text == "line 0" and again.dialogue[0] is not model.dialogue[0]
        model.dialogue[1].actor_text = "changed, then dumped"
        assert changed_fields(channels, model)["dialogue"][1]["actor_text"] == "changed, then dumped"


def test_a_change_anywhere_then_a_change_here_is_still_seen() -> None:
    """Once the count of assignments moved, fields are compared, and the count is noted again: a later
    change to a remembered element still shows."""
    with remembering():
        channels = as_json(_model(3))
        elsewhere = DialogueElement(actor="user", actor_text="another session's")
        elsewhere.actor_text = "moves the count"
        assert validate(EditModel, channels).dialogue[0].actor_text == "line 0"  # compared, then noted
        model = validate(EditModel, channels)
        model.dialogue[2].actor_text = "changed"
        assert validate(EditModel, channels).dialogue[2].actor_text == "line 2"


def test_history_details_holding_other_than_json_are_dumped_every_time() -> None:
    with remembering():
        model = _model(1)
        model.history.append(HistoryEntry(kind=HistoryKind.EVENT, detail={"pair": (1, 2)}))
        channels = as_json(model)
        again = validate(EditModel, channels)
        assert changed_fields(channels, again) == {}  # a tuple dumps as a list: equal JSON, no update


def test_template_variables_follow_includes(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "a.jinja2": "{% include 'b.jinja2' %}{{ actor_input }}{% set local = 1 %}{{ local }}",
            "b.jinja2": "{% import 'c.jinja2' as c %}{{ chat_history }}{{ c.m() }}",
            "c.jinja2": "{% macro m() %}{{ state_name }}{% endmacro %}",
            "dynamic.jinja2": "{% include which %}",
        },
    )
    library = TemplateLibrary(tmp_path)
    assert library.variables("a.jinja2") == {"actor_input", "chat_history", "state_name"}
    assert library.variables("dynamic.jinja2") is None


def test_a_template_sees_every_variable_it_reads(root: Path) -> None:
    with GenieFlow(template_root=root, store="memory://") as flow:
        flow.register_model("edit", EditModel)
        session = flow.create_new_session("edit").session_id
        answer = send(flow, "edit", session, "user_input", "hello")
        model = flow.get_model("edit", session)
    rendered_with = DialogueFormat.YAML.format(model.dialogue[:2])  # the intro and the user's words
    assert answer.response == f"{len(rendered_with)} characters of history (2 so far)"


class OwnDataModel(EditModel):
    """Builds its own render data: it gets its full render data, whatever the template reads."""

    @property
    def render_data(self) -> dict[str, Any]:
        data = super().render_data
        data["extra"] = "from the subclass"
        return data


def _talk_once(tmp_path: Path, model_class: type[GenieModel], talk: str) -> str | None:
    """The response to one user_input, the talk state's template being ``talk``."""
    root = write_tree(
        tmp_path,
        {
            "r/meta.yaml": RENDERER_META,
            "r/talk.jinja2": talk,
            "i/meta.yaml": ECHO_META,
            "i/think.jinja2": "{{ actor_input }}",
        },
    )
    with GenieFlow(template_root=root, store="memory://") as flow:
        flow.register_model("talk", model_class)
        session = flow.create_new_session("talk").session_id
        return send(flow, "talk", session, "user_input", "hi").response


def test_a_model_that_builds_its_own_render_data_gets_it_whole(tmp_path: Path) -> None:
    assert _talk_once(tmp_path, OwnDataModel, "{{ extra }} / {{ last_user_message }}") == "from the subclass / hi"


def test_a_missing_variable_is_named_among_all_the_variables(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no_such_thing") as caught:
        _talk_once(tmp_path, EditModel, "{{ no_such_thing }}")
    assert "chat_history" in str(caught.value)  # the whole render data is listed, not the part asked for


def _chunks(packed: str) -> list[str]:
    return packed.partition(":")[2].split(".")


def test_a_packed_list_keeps_its_whole_chunks_as_it_grows_and_loses_its_oldest() -> None:
    """A long dialogue that grows, and a history that drops its oldest entries (as a bounded one does),
    keep their compressed chunks: a turn compresses what is new, not the whole list again."""
    with remembering(), packing_channels(True):
        channels = as_json(_model(150))  # chunks of 64, 64 and 22 items
        model = validate(EditModel, channels)
        model.add_dialogue_element("assistant", "new")
        del model.history[:3]
        model.record_history(HistoryKind.EVENT, event="user_input")
        update = changed_fields(channels, model)
    full = model.model_dump(mode="json")
    assert unpack(update["dialogue"]) == full["dialogue"]
    assert unpack(update["history"]) == full["history"]
    dialogue, history = _chunks(update["dialogue"]), _chunks(update["history"])
    assert dialogue[:2] == _chunks(channels["dialogue"])[:2] and len(dialogue) == 3
    assert history[1] == _chunks(channels["history"])[1]  # the first lost 3 items; the last took the new one
    assert [chunk.partition("_")[0] for chunk in history] == ["61", "64", "23"]


def test_the_sqlite_serializer_keeps_packed_lists_as_their_compressed_bytes() -> None:
    with packing_channels(True):
        channels = as_json(_model(100))
    checkpoint = {"v": 4, "id": "1", "channel_values": channels, "channel_versions": {"state": 1}, "versions_seen": {}}
    serializer = CompressingSerializer()
    stored = serializer.dumps_typed(checkpoint)
    assert serializer.loads_typed(stored) == checkpoint
    for name in ("dialogue", "history"):  # kept as bytes, not as base64 text (nor compressed again)
        text = channels[name].rpartition("_")[2]
        assert text[:40].encode() not in stored[1] and base64.b64decode(text) in stored[1]
    assert serializer.loads_typed(serializer.dumps_typed(channels["dialogue"])) == channels["dialogue"]


def test_a_list_packed_in_one_piece_is_read_and_packed_anew_when_it_grows() -> None:
    """Lists packed before chunks (``zlib+json:``, one piece) read as they did."""
    items = [{"actor": "user", "actor_text": f"line {n}"} for n in range(100)]
    one_piece = "zlib+json:" + base64.b64encode(zlib.compress(orjson.dumps(items))).decode("ascii")
    assert unpack(one_piece) == items
    grown = pack([*items, {"actor": "assistant", "actor_text": "new"}], one_piece, 0, 100)
    assert unpack(grown) == [*items, {"actor": "assistant", "actor_text": "new"}]
    serializer = CompressingSerializer()
    assert serializer.loads_typed(serializer.dumps_typed(one_piece)) == one_piece
