"""Bad declarations fail at build time naming the culprit; bad requests fail with clear exceptions."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from genie_graph import (
    POLL,
    EventData,
    EventInput,
    GenieFlow,
    GenieModel,
    GenieStateMachine,
    State,
    User,
    build_graph,
)
from genie_graph.errors import FlowDefinitionError, GenieGraphError, TemplateError, UnknownModelKey, UnknownSession
from tests import runtime_flows
from tests.helpers import ECHO_META, RENDERER_META, write_tree

Builder = Callable[[type[GenieModel]], object]


@pytest.fixture
def template_root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "user/meta.yaml": RENDERER_META,
            "user/intro.jinja2": "Hello",
            "user/answer.jinja2": "{{ actor_input }}",
            "user/island.jinja2": "nobody comes here",
            "ai/meta.yaml": ECHO_META,
            "ai/answer.jinja2": "{{ actor_input }}",
        },
    )


@pytest.fixture(params=["build_graph", "register_model"])
def build(request: pytest.FixtureRequest, template_root: Path) -> Iterator[Builder]:
    """Each way a flow is built: ``build_graph`` and ``GenieFlow.register_model``."""
    if request.param == "build_graph":
        yield lambda model: build_graph(model, template_root=template_root)
        return
    flow = GenieFlow(template_root=template_root, store="memory://")
    try:
        yield lambda model: flow.register_model("bad", model)
    finally:
        flow.close()


def model_of(machine: type[GenieStateMachine]) -> type[GenieModel]:
    class Model(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return machine

    Model.__qualname__ = f"ModelOf{machine.__name__}"
    return Model


def assert_names(error: BaseException, *culprits: str) -> None:
    message = str(error)
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not named in: {message}"


# ---- initial states: python-statemachine refuses the class itself ----------------------------


def test_no_initial_state_fails_when_the_class_is_declared() -> None:
    with pytest.raises(FlowDefinitionError) as caught:

        class NoInitialMachine(GenieStateMachine):
            first = State(value=1)
            second = State(value=2)
            user_input = first.to(second) | second.to(first)
            templates = dict(first="user/intro.jinja2", second="user/answer.jinja2")

    assert_names(caught.value, "NoInitialMachine", "initial")


def test_two_initial_states_fail_when_the_class_is_declared() -> None:
    with pytest.raises(FlowDefinitionError) as caught:

        class TwoInitialMachine(GenieStateMachine):
            first = State(initial=True, value=1)
            second = State(initial=True, value=2)
            user_input = first.to(second) | second.to(first)
            templates = dict(first="user/intro.jinja2", second="user/answer.jinja2")

    assert_names(caught.value, "TwoInitialMachine", "initial", "first", "second")


# ---- declarations checked at build time -------------------------------------------------------


def test_state_without_template(build: Builder) -> None:
    class MissingTemplateMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        answer = State(value=2)
        user_input = intro.to(answer) | answer.to(answer)
        templates = dict(intro="user/intro.jinja2")

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(MissingTemplateMachine))
    assert_names(caught.value, "answer", "MissingTemplateMachine")
    assert "answer" in caught.value.culprits


def test_template_for_an_unknown_state(build: Builder) -> None:
    class GhostTemplateMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        answer = State(value=2)
        user_input = intro.to(answer) | answer.to(answer)
        templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2", ghost="user/answer.jinja2")

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(GhostTemplateMachine))
    assert_names(caught.value, "ghost")


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"cond": "no_such_condition"}, "no_such_condition"),
        ({"unless": "no_such_guard"}, "no_such_guard"),
        ({"cond": ["is_fine", "missing_in_list"]}, "missing_in_list"),
        ({"cond": "is_fine and not missing_in_expression"}, "missing_in_expression"),
    ],
    ids=["cond", "unless", "list", "expression"],
)
def test_unknown_condition_name(build: Builder, kwargs: dict[str, Any], culprit: str) -> None:
    class UnknownConditionMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        answer = State(value=2)
        user_input = intro.to(answer, **kwargs) | answer.to(answer)
        templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2")

        def is_fine(self, event_data: EventData) -> bool:
            return True

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(UnknownConditionMachine))
    assert_names(caught.value, culprit)


@pytest.mark.parametrize(
    "hook", ["on_exit_nosuchstate", "on_enter_nosuchstate", "before_nosuchevent", "after_nosuchevent"]
)
def test_unknown_hook_name(build: Builder, hook: str) -> None:
    def method(self: GenieStateMachine) -> None:
        pass

    machine = type(
        "UnknownHookMachine",
        (GenieStateMachine,),
        {
            "__module__": __name__,
            "intro": (intro := State(initial=True, value=1)),
            "answer": (answer := State(value=2)),
            "user_input": intro.to(answer) | answer.to(answer),
            "templates": dict(intro="user/intro.jinja2", answer="user/answer.jinja2"),
            hook: method,
        },
    )

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(machine))
    assert_names(caught.value, hook)


def test_unreachable_state(build: Builder) -> None:
    """Refused when the class is declared or when it is built; either way naming the state."""
    with pytest.raises(FlowDefinitionError) as caught:

        class UnreachableMachine(GenieStateMachine):
            intro = State(initial=True, value=1)
            answer = State(value=2)
            island = State(value=3)
            user_input = intro.to(answer) | answer.to(answer) | island.to(answer)
            templates = dict(intro="user/intro.jinja2", answer="user/answer.jinja2", island="user/island.jinja2")

        build(model_of(UnreachableMachine))
    assert_names(caught.value, "island")


def test_invoker_state_without_outgoing_event(build: Builder) -> None:
    with warnings.catch_warnings():
        # python-statemachine only warns about a non-final state without transitions.
        warnings.simplefilter("ignore", UserWarning)

        class DeadEndMachine(GenieStateMachine):
            intro = State(initial=True, value=1)
            ai_thinks = State(value=2)
            user_input = intro.to(ai_thinks)
            templates = dict(intro="user/intro.jinja2", ai_thinks="ai/answer.jinja2")

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(DeadEndMachine))
    assert_names(caught.value, "ai_thinks")


def test_final_invoker_state_without_outgoing_event(build: Builder) -> None:
    class FinalInvokerMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        ai_last_words = State(final=True, value=2)
        user_input = intro.to(ai_last_words)
        templates = dict(intro="user/intro.jinja2", ai_last_words="ai/answer.jinja2")

    with pytest.raises(FlowDefinitionError) as caught:
        build(model_of(FinalInvokerMachine))
    assert_names(caught.value, "ai_last_words")


def test_missing_template_file(build: Builder) -> None:
    class MissingFileMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        answer = State(value=2)
        user_input = intro.to(answer) | answer.to(answer)
        templates = dict(intro="user/intro.jinja2", answer="user/no_such_file.jinja2")

    with pytest.raises(TemplateError) as caught:
        build(model_of(MissingFileMachine))
    assert_names(caught.value, "user/no_such_file.jinja2")
    assert caught.value.template == "user/no_such_file.jinja2"


def test_a_good_declaration_builds(build: Builder) -> None:
    """The fixtures above differ from a valid flow only in the fault under test."""

    class GoodMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        ai_thinks = State(value=2)
        answer = State(value=3)
        user_input = intro.to(ai_thinks) | answer.to(ai_thinks)
        ai_extraction = ai_thinks.to(answer)
        templates = dict(intro="user/intro.jinja2", ai_thinks="ai/answer.jinja2", answer="user/answer.jinja2")

    build(model_of(GoodMachine))


# ---- runtime lookups --------------------------------------------------------------------------


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[GenieFlow]:
    flow = runtime_flows.create_flow(runtime_flows.write_templates(tmp_path / "rt"), "memory://")
    try:
        yield flow
    finally:
        flow.close()


def _calls(flow: GenieFlow, key: str, session_id: str) -> dict[str, Callable[[], object]]:
    return {
        "create_new_session": lambda: flow.create_new_session(key),
        "start_ephemeral_session": lambda: flow.start_ephemeral_session(key, "user_input", "x"),
        "process_event": lambda: flow.process_event(
            key, EventInput(session_id=session_id, event="user_input", event_input="x")
        ),
        "poll": lambda: flow.process_event(key, EventInput(session_id=session_id, event=POLL, event_input="")),
        "get_model": lambda: flow.get_model(key, session_id),
        "get_task_state": lambda: flow.get_task_state(key, session_id),
    }


@pytest.mark.parametrize(
    "call", ["create_new_session", "start_ephemeral_session", "process_event", "poll", "get_model", "get_task_state"]
)
def test_unknown_model_key(flow: GenieFlow, call: str) -> None:
    sid = flow.create_new_session(runtime_flows.MODEL_KEY).session_id

    with pytest.raises(UnknownModelKey) as caught:
        _calls(flow, "no_such_flow", sid)[call]()

    error = caught.value
    assert isinstance(error, KeyError)  # the HTTP layer maps KeyError to 404, as Genie Flow does
    assert isinstance(error, GenieGraphError)
    assert error.model_key == "no_such_flow"
    assert error.known == flow.model_keys == [runtime_flows.MODEL_KEY, runtime_flows.PARALLEL_KEY]
    assert_names(error, "no_such_flow", runtime_flows.MODEL_KEY, runtime_flows.PARALLEL_KEY)


@pytest.mark.parametrize("call", ["process_event", "poll", "get_model", "get_task_state"])
def test_unknown_session(flow: GenieFlow, call: str) -> None:
    flow.create_new_session(runtime_flows.MODEL_KEY)
    missing = "01a206f5-0000-0000-0000-000000000000"

    with pytest.raises(UnknownSession) as caught:
        _calls(flow, runtime_flows.MODEL_KEY, missing)[call]()

    assert isinstance(caught.value, KeyError)
    assert caught.value.session_id == missing
    assert_names(caught.value, missing)


@pytest.mark.parametrize("call", ["process_event", "poll", "get_model", "get_task_state"])
def test_session_of_another_model_key_is_unknown(tmp_path: Path, call: str) -> None:
    with runtime_flows.create_flow(runtime_flows.write_templates(tmp_path / "rt"), "memory://") as flow:

        class OtherModel(runtime_flows.RuntimeModel):
            pass

        flow.register_model("other", OtherModel)
        sid = flow.create_new_session(runtime_flows.MODEL_KEY).session_id

        with pytest.raises(UnknownSession):
            _calls(flow, "other", sid)[call]()
        assert flow.get_model(runtime_flows.MODEL_KEY, sid).session_id == sid


# ---- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_info",
    [
        {"email": "not-an-email", "firstname": "Ada", "lastname": "Lovelace"},
        {"email": "ada@example.org", "firstname": "Ada\n", "lastname": "Lovelace"},
        {"email": "ada@example.org", "firstname": "Ada"},
        {"email": "ada@example.org", "firstname": "Ada", "lastname": "Lovelace", "custom_properties": {"k": "v\x00"}},
    ],
    ids=["email", "unprintable-name", "missing-lastname", "unprintable-property"],
)
def test_malformed_user_info_is_rejected(flow: GenieFlow, user_info: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        User.model_validate(user_info)
    with pytest.raises(pydantic.ValidationError):
        flow.create_new_session(runtime_flows.MODEL_KEY, user_info=user_info)
    with pytest.raises(pydantic.ValidationError):
        flow.start_ephemeral_session(runtime_flows.MODEL_KEY, "advance", "hi", user_info=user_info)


def test_event_input_none_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        EventInput(session_id="s", event="user_input", event_input=None)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        EventInput.model_validate({"session_id": "s", "event": "user_input"})
    with pytest.raises(pydantic.ValidationError):
        EventInput.model_validate_json('{"session_id": "s", "event": "user_input", "event_input": null}')
    assert EventInput(session_id="s", event="user_input", event_input="").event_input == ""
