"""Template directories and rendering (genie_graph._templates, through GenieFlow where it matters).

meta.yaml inheritance, ``register_template_directory``, StrictUndefined and its compat flag, the
sandbox, and the render data every template sees.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2.sandbox import SecurityError

from genie_graph import EventInput, GenieCompat, GenieFlow, GenieModel, GenieStateMachine, State
from genie_graph._composite import CompositeRunner
from genie_graph._invokers import InvokerRegistry
from genie_graph._model import StateKind
from genie_graph._templates import TemplateLibrary
from genie_graph.errors import GenieGraphError, InvokerConfigError, TemplateError
from tests.helpers import send, write_tree

KEY = "tpl"


def make_model(intro_template: str, ai_template: str, show_template: str) -> type[GenieModel]:
    """intro (initial) -user_input-> ai -ai_extraction-> show -user_input-> ai."""

    class TplMachine(GenieStateMachine):
        intro = State(initial=True, value=100)
        ai = State(value=200)
        show = State(value=300)

        user_input = intro.to(ai) | show.to(ai)
        ai_extraction = ai.to(show)

        templates = {"intro": intro_template, "ai": ai_template, "show": show_template}

    class TplModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return TplMachine

    return TplModel


@pytest.fixture
def flows() -> Iterator[list[GenieFlow]]:
    """GenieFlow instances made by a test; all closed afterwards."""
    made: list[GenieFlow] = []
    yield made
    for flow in made:
        flow.close()


def new_flow(flows: list[GenieFlow], root: Path | None, **kwargs: Any) -> GenieFlow:
    flow = GenieFlow(template_root=root, store="memory://", **kwargs)
    flows.append(flow)
    return flow


def run(library: TemplateLibrary, name: str, data: dict[str, Any] | None = None) -> str:
    """Render and invoke template ``name`` as an invoker state would."""
    runner = CompositeRunner(library, InvokerRegistry())
    return asyncio.run(runner.run(name, lambda names=None: dict(data or {"actor_input": "x"})))


# ---------------------------------------------------------------------------------------------
# meta.yaml inheritance


def test_meta_yaml_inherits_root_to_leaf_shallowly(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "meta.yaml": 'invoker:\n  type: echo\n  prefix: "R:"\n  suffix: "!"\n',
            "a/x.jinja2": "{{ actor_input }}",  # no meta.yaml: inherits the root's
            "a/b/meta.yaml": 'invoker:\n  type: echo\n  suffix: "?"\n',  # replaces the whole mapping
            "a/b/x.jinja2": "{{ actor_input }}",
            "a/b/c/meta.yaml": "",  # empty: inherits
            "a/b/c/x.jinja2": "{{ actor_input }}",
        },
    )
    library = TemplateLibrary(root)
    assert library.config_of("a/x.jinja2").invoker == {"type": "echo", "prefix": "R:", "suffix": "!"}
    assert library.config_of("a/b/x.jinja2").invoker == {"type": "echo", "suffix": "?"}
    assert library.config_of("a/b/c/x.jinja2").invoker == {"type": "echo", "suffix": "?"}
    assert run(library, "a/x.jinja2") == "R:x!"
    assert run(library, "a/b/x.jinja2") == "x?"
    assert run(library, "a/b/c/x.jinja2") == "x?"


def test_meta_yaml_other_top_level_keys_merge_shallowly(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "meta.yaml": "renderer:\n  style: plain\n  width: 80\n",
            "sub/meta.yaml": "renderer:\n  style: fancy\n",
            "sub/x.jinja2": "x",
        },
    )
    assert TemplateLibrary(root).config_of("sub/x.jinja2").renderer == {"style": "fancy"}


def test_child_directory_switches_between_renderer_and_invoker(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "meta.yaml": "renderer: {}\n",
            "intro.jinja2": "Hi",
            "llm/meta.yaml": 'invoker:\n  type: echo\n  prefix: "LLM "\n',
            "llm/ask.jinja2": "{{ actor_input }}",
            "llm/ui/meta.yaml": "renderer: {}\n",
            "llm/ui/show.jinja2": "shown: {{ actor_input }}",
        },
    )
    library = TemplateLibrary(root)
    assert not library.is_invoker("intro.jinja2")
    assert library.is_invoker("llm/ask.jinja2")
    assert not library.is_invoker("llm/ui/show.jinja2")
    assert library.config_of("llm/ui/show.jinja2").invoker is None

    flow = new_flow(flows, root)
    flow.register_model(KEY, make_model("intro.jinja2", "llm/ask.jinja2", "llm/ui/show.jinja2"))
    compiled = flow.flow_of(KEY)
    assert compiled.kinds == {"intro": StateKind.USER, "ai": StateKind.INVOKER, "show": StateKind.USER}
    session_id = flow.create_new_session(KEY).session_id
    assert send(flow, KEY, session_id, "user_input", "q").response == "shown: LLM q"


def test_both_invoker_and_renderer_in_one_meta_yaml_is_refused(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "{{ actor_input }}",
            "both/meta.yaml": "invoker:\n  type: echo\nrenderer: {}\n",
            "both/x.jinja2": "{{ actor_input }}",
        },
    )
    with pytest.raises(InvokerConfigError, match="both"):
        TemplateLibrary(root).config_of("both/x.jinja2")
    flow = new_flow(flows, root)
    with pytest.raises(InvokerConfigError):
        flow.register_model(KEY, make_model("ui/intro.jinja2", "both/x.jinja2", "ui/show.jinja2"))


@pytest.mark.parametrize("content", ["", "# only a comment\n", "\n\n"], ids=["empty", "comment", "blank"])
def test_empty_meta_yaml_is_allowed_and_inherits(tmp_path: Path, content: str) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "meta.yaml": 'invoker:\n  type: echo\n  prefix: "P "\n',
            "sub/meta.yaml": content,
            "sub/x.jinja2": "{{ actor_input }}",
            "plain/meta.yaml": content,
            "plain/x.jinja2": "y",
        },
    )
    library = TemplateLibrary(root)
    assert library.config_of("sub/x.jinja2").invoker == {"type": "echo", "prefix": "P "}
    assert run(library, "sub/x.jinja2") == "P x"


def test_empty_meta_yaml_alone_makes_a_renderer_directory(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"plain/meta.yaml": "", "plain/x.jinja2": "y"})
    assert not TemplateLibrary(root).is_invoker("plain/x.jinja2")


# ---------------------------------------------------------------------------------------------
# register_template_directory


def test_register_template_directory_outside_the_root(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(tmp_path / "root", {"ui/meta.yaml": "renderer: {}\n", "ui/intro.jinja2": "Hi from root"})
    outside = write_tree(
        tmp_path / "elsewhere" / "llm_prompts",
        {
            "meta.yaml": 'invoker:\n  type: echo\n  prefix: "ext "\n',
            "ask.jinja2": "{{ actor_input }}",
            "nested/deeper.jinja2": "deep {{ actor_input }}",  # inherits the prefix directory's meta.yaml
        },
    )
    pages = write_tree(tmp_path / "pages", {"show.jinja2": "page: {{ actor_input }}"})
    assert not outside.is_relative_to(root) and not pages.is_relative_to(root)

    flow = new_flow(flows, root)
    flow.register_template_directory("llm", outside)
    flow.register_template_directory("page", pages)
    flow.register_model(KEY, make_model("ui/intro.jinja2", "llm/ask.jinja2", "page/show.jinja2"))
    flow.register_model("nested", make_model("ui/intro.jinja2", "llm/nested/deeper.jinja2", "page/show.jinja2"))

    start = flow.create_new_session(KEY)
    assert start.response == "Hi from root"
    assert send(flow, KEY, start.session_id, "user_input", "q").response == "page: ext q"
    nested = flow.create_new_session("nested").session_id
    assert send(flow, "nested", nested, "user_input", "q").response == "page: ext deep q"


def test_genie_style_registration_without_a_template_root(tmp_path: Path, flows: list[GenieFlow]) -> None:
    response = write_tree(
        tmp_path / "a" / "response",
        {"meta.yaml": "renderer:\n  type: jinja2\n", "intro.jinja2": "Welcome", "show.jinja2": "{{ actor_input }}"},
    )
    llm = write_tree(
        tmp_path / "b" / "llm", {"meta.yaml": "invoker:\n  type: echo\n", "ai.jinja2": "E {{ actor_input }}"}
    )
    flow = new_flow(flows, None)
    flow.register_template_directory("response", response)
    flow.register_template_directory("llm", llm)
    flow.register_model(KEY, make_model("response/intro.jinja2", "llm/ai.jinja2", "response/show.jinja2"))
    start = flow.create_new_session(KEY)
    assert start.response == "Welcome"
    assert send(flow, KEY, start.session_id, "user_input", "yo").response == "E yo"


def test_duplicate_prefix_is_refused(tmp_path: Path) -> None:
    one = write_tree(tmp_path / "one", {"x.jinja2": "1"})
    two = write_tree(tmp_path / "two", {"x.jinja2": "2"})
    library = TemplateLibrary(None)
    library.register_template_directory("p", one)
    with pytest.raises(TemplateError, match="'p'"):
        library.register_template_directory("p", two)
    assert library.render("p/x.jinja2", {}) == "1"  # the first registration stands

    flow = GenieFlow(store="memory://")
    try:
        flow.register_template_directory("p", one)
        with pytest.raises(GenieGraphError):
            flow.register_template_directory("p", two)
    finally:
        flow.close()


def test_duplicate_prefix_error_is_a_value_error_as_in_genie_flow(tmp_path: Path) -> None:
    """Genie Flow raises ValueError; ported code catching it must keep working."""
    one = write_tree(tmp_path / "one", {"x.jinja2": "1"})
    two = write_tree(tmp_path / "two", {"x.jinja2": "2"})
    library = TemplateLibrary(None)
    library.register_template_directory("p", one)
    with pytest.raises(ValueError):
        library.register_template_directory("p", two)


def test_registering_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateLibrary(None).register_template_directory("p", tmp_path / "nope")


def test_unknown_template_is_reported_at_register_model(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {"ui/intro.jinja2": "Hi", "ui/show.jinja2": "x", "i/meta.yaml": "invoker:\n  type: echo\n", "i/ai.jinja2": "x"},
    )
    flow = new_flow(flows, root)
    with pytest.raises(TemplateError, match="ui/missing.jinja2"):
        flow.register_model(KEY, make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/missing.jinja2"))


# ---------------------------------------------------------------------------------------------
# StrictUndefined, and the lenient compat flag


def test_missing_variable_names_the_template_and_the_variable(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"ui/greet.jinja2": "Hello {{ nme }}!"})
    with pytest.raises(TemplateError) as caught:
        TemplateLibrary(root).render("ui/greet.jinja2", {"name": "Ann"})
    assert caught.value.template == "ui/greet.jinja2"
    assert "ui/greet.jinja2" in str(caught.value)
    assert "nme" in str(caught.value)


def test_missing_variable_inside_an_expression_names_the_variable(tmp_path: Path) -> None:
    """An undefined value that reaches a filter (here ``tojson``) is still a TemplateError naming it."""
    root = write_tree(tmp_path / "t", {"ui/j.jinja2": "{{ {'a': nme} | tojson }}"})
    with pytest.raises(TemplateError) as caught:
        TemplateLibrary(root).render("ui/j.jinja2", {"name": "Ann"})
    assert "ui/j.jinja2" in str(caught.value)
    assert "nme" in str(caught.value)


def test_missing_variable_in_the_intro_fails_the_session_start(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hello {{ nme }}!",
            "ui/show.jinja2": "x",
            "i/meta.yaml": "invoker:\n  type: echo\n",
            "i/ai.jinja2": "x",
        },
    )
    flow = new_flow(flows, root)
    flow.register_model(KEY, make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/show.jinja2"))
    with pytest.raises(TemplateError, match="nme"):
        flow.create_new_session(KEY)


def test_missing_variable_in_an_invoker_template_is_reported_on_the_session(
    tmp_path: Path, flows: list[GenieFlow]
) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "x",
            "i/meta.yaml": "invoker:\n  type: echo\n",
            "i/ai.jinja2": "{{ typo_var }}",
        },
    )
    flow = new_flow(flows, root)
    flow.register_model(KEY, make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/show.jinja2"))
    session_id = flow.create_new_session(KEY).session_id
    answer = send(flow, KEY, session_id, "user_input", "q")
    assert answer.error is not None
    assert "typo_var" in answer.error and "i/ai.jinja2" in answer.error


def test_lenient_undefined_renders_empty(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hello {{ nme }}!",
            "ui/show.jinja2": "[{{ nothing }}]{{ actor_input }}",
            "i/meta.yaml": "invoker:\n  type: echo\n",
            "i/ai.jinja2": "{{ typo }}{{ actor_input }}",
        },
    )
    assert TemplateLibrary(root, strict_undefined=False).render("ui/intro.jinja2", {}) == "Hello !"
    flow = new_flow(flows, root, compat=GenieCompat(lenient_undefined=True))
    flow.register_model(KEY, make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/show.jinja2"))
    start = flow.create_new_session(KEY)
    assert start.response == "Hello !"
    assert send(flow, KEY, start.session_id, "user_input", "q").response == "[]q"


# ---------------------------------------------------------------------------------------------
# sandbox: user text is data, templates cannot reach Python internals

TEMPLATE_LOOKING_INPUTS = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}loop{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{# comment #}{{ actor_input }}{% raw %}",
]


@pytest.mark.parametrize("text", TEMPLATE_LOOKING_INPUTS)
def test_user_text_that_looks_like_a_template_stays_literal(tmp_path: Path, flows: list[GenieFlow], text: str) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "You: {{ actor_input }}",
            "ui/history.jinja2": "{{ chat_history }}",
            "i/meta.yaml": 'invoker:\n  type: echo\n  prefix: "Echo: "\n',
            "i/ai.jinja2": "{{ actor_input }}",
        },
    )
    flow = new_flow(flows, root)
    flow.register_model(KEY, make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/show.jinja2"))
    session_id = flow.create_new_session(KEY).session_id
    answer = send(flow, KEY, session_id, "user_input", text)
    assert answer.error is None
    assert answer.response == f"You: Echo: {text}"
    assert "49" not in answer.response and "looploop" not in answer.response and "<class" not in answer.response
    model = flow.get_model(KEY, session_id)
    assert [(d.actor, d.actor_text) for d in model.dialogue] == [
        ("assistant", "Hi"),
        ("user", text),
        ("assistant", f"You: Echo: {text}"),
    ]
    # a second turn: chat_history (which holds the text) is rendered into a template as data
    flow.register_model("hist", make_model("ui/intro.jinja2", "i/ai.jinja2", "ui/history.jinja2"))
    hist = flow.create_new_session("hist").session_id
    send(flow, "hist", hist, "user_input", text)
    again = send(flow, "hist", hist, "user_input", "second")
    assert again.error is None and again.response is not None
    assert again.response.count(text.split("\n")[0]) >= 1
    assert "49" not in again.response and "<class" not in again.response


EVIL_TEMPLATES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ actor_input.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ (actor_input.upper).__self__.__class__ }}",
]


@pytest.mark.parametrize("source", EVIL_TEMPLATES)
def test_sandbox_blocks_python_internals(tmp_path: Path, source: str) -> None:
    root = write_tree(tmp_path / "t", {"evil/x.jinja2": source})
    with pytest.raises(TemplateError) as caught:
        TemplateLibrary(root).render("evil/x.jinja2", {"actor_input": "text"})
    assert isinstance(caught.value.__cause__, SecurityError)
    assert "unsafe" in str(caught.value)
    assert "evil/x.jinja2" in str(caught.value)


def test_sandbox_also_blocks_with_lenient_undefined(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"evil/x.jinja2": EVIL_TEMPLATES[0]})
    with pytest.raises(TemplateError) as caught:
        TemplateLibrary(root, strict_undefined=False).render("evil/x.jinja2", {})
    assert isinstance(caught.value.__cause__, SecurityError)


def test_sandbox_error_in_a_user_state_surfaces_and_leaves_the_session(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t", {"ui/meta.yaml": "renderer: {}\n", "ui/intro.jinja2": "Hi", "ui/evil.jinja2": EVIL_TEMPLATES[0]}
    )

    class EvilMachine(GenieStateMachine):
        intro = State(initial=True, value=1)
        evil = State(value=2)
        user_input = intro.to(evil) | evil.to(intro)
        templates = {"intro": "ui/intro.jinja2", "evil": "ui/evil.jinja2"}

    class EvilModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return EvilMachine

    flow = new_flow(flows, root)
    flow.register_model(KEY, EvilModel)
    session_id = flow.create_new_session(KEY).session_id
    try:
        answer = flow.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="go"))
    except TemplateError as exc:  # raised to the caller ...
        assert isinstance(exc.__cause__, SecurityError)
    else:  # ... or answered as an error
        assert answer.response is None
        assert answer.error is not None and "unsafe" in answer.error and "ui/evil.jinja2" in answer.error
    model = flow.get_model(KEY, session_id)
    assert model.state == 1
    assert all("<class" not in d.actor_text for d in model.dialogue)


def test_sandbox_error_in_an_invoker_state_is_reported_not_executed(tmp_path: Path, flows: list[GenieFlow]) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Hi",
            "ui/show.jinja2": "{{ actor_input }}",
            "i/meta.yaml": "invoker:\n  type: echo\n",
            "i/evil.jinja2": EVIL_TEMPLATES[0],
        },
    )
    flow = new_flow(flows, root)
    flow.register_model(KEY, make_model("ui/intro.jinja2", "i/evil.jinja2", "ui/show.jinja2"))
    session_id = flow.create_new_session(KEY).session_id
    answer = send(flow, KEY, session_id, "user_input", "go")
    assert answer.error is not None and "unsafe" in answer.error
    assert all("<class" not in d.actor_text for d in flow.get_model(KEY, session_id).dialogue)


def test_template_source_is_not_html_escaped(tmp_path: Path) -> None:
    """Genie Flow renders without autoescape: prompts keep their quotes and brackets."""
    root = write_tree(tmp_path / "t", {"x.jinja2": "{{ actor_input }}"})
    assert TemplateLibrary(root).render("x.jinja2", {"actor_input": "<b>'&'</b>"}) == "<b>'&'</b>"


def test_syntax_error_is_a_template_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"x.jinja2": "{% for %}"})
    with pytest.raises(TemplateError, match="x.jinja2"):
        TemplateLibrary(root).check("x.jinja2")


# ---------------------------------------------------------------------------------------------
# render data

DATA_TEMPLATE = (
    "{{ {'state_id': state_id, 'state_name': state_name, 'state_value': state_value,"
    " 'current_datetime': current_datetime, 'parsed_actor_input': parsed_actor_input,"
    " 'actor_input': actor_input, 'session_id': session_id,"
    " 'email': secondary_storage.user_info.email, 'chat_history': chat_history} | tojson }}"
)


class DataMachine(GenieStateMachine):
    intro = State(initial=True, value=100)
    show_data = State(value=200)

    user_input = intro.to(show_data) | show_data.to(show_data)

    templates = {
        "intro": "ui/intro.jinja2",
        "show_data": "ui/data.jinja2",
    }


class DataModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DataMachine


USER = {"email": "ann.lee@example.com", "firstname": "Ann", "lastname": "Lee"}


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "t",
        {
            "ui/meta.yaml": "renderer: {}\n",
            "ui/intro.jinja2": "Welcome {{ secondary_storage.user_info.email }} to {{ state_id }} ({{ state_name }})",
            "ui/data.jinja2": DATA_TEMPLATE,
        },
    )


def test_render_data_keys(data_root: Path, flows: list[GenieFlow]) -> None:
    flow = new_flow(flows, data_root)
    flow.register_model(KEY, DataModel)
    start = flow.create_new_session(KEY, user_info=USER)
    assert start.response == "Welcome ann.lee@example.com to intro (Intro)"

    answer = send(flow, KEY, start.session_id, "user_input", '{"q": [1, 2]}')
    assert answer.error is None
    got = json.loads(answer.response or "")
    assert got["state_id"] == "show_data"
    assert got["state_name"] == "Show data"
    assert got["state_value"] == 200
    assert got["session_id"] == start.session_id
    assert got["email"] == "ann.lee@example.com"
    assert got["actor_input"] == '{"q": [1, 2]}'
    assert got["parsed_actor_input"] == {"q": [1, 2]}
    when = datetime.fromisoformat(got["current_datetime"])
    assert when.utcoffset() == timedelta(0)  # aware, UTC
    history = yaml.safe_load(got["chat_history"])
    assert [entry["role"] for entry in history] == ["assistant", "user"]
    assert history[0]["content"].strip() == "Welcome ann.lee@example.com to intro (Intro)"
    assert history[1]["content"].strip() == '{"q": [1, 2]}'


def test_parsed_actor_input_is_none_for_plain_text(data_root: Path, flows: list[GenieFlow]) -> None:
    flow = new_flow(flows, data_root)
    flow.register_model(KEY, DataModel)
    start = flow.create_new_session(KEY, user_info=USER)
    got = json.loads(send(flow, KEY, start.session_id, "user_input", "just words").response or "")
    assert got["parsed_actor_input"] is None


def test_state_id_is_value_compat_flag(data_root: Path, flows: list[GenieFlow]) -> None:
    flow = new_flow(flows, data_root, compat=GenieCompat(state_id_is_value=True))
    flow.register_model(KEY, DataModel)
    start = flow.create_new_session(KEY, user_info=USER)
    assert start.response == "Welcome ann.lee@example.com to 100 (Intro)"
    got = json.loads(send(flow, KEY, start.session_id, "user_input", "x").response or "")
    assert got["state_id"] == 200
    assert got["state_name"] == "Show data"


def test_user_info_missing_is_a_strict_error(data_root: Path, flows: list[GenieFlow]) -> None:
    flow = new_flow(flows, data_root)
    flow.register_model(KEY, DataModel)
    with pytest.raises(TemplateError, match="user_info"):
        flow.create_new_session(KEY)


def test_standard_filters_work_in_the_sandbox(tmp_path: Path) -> None:
    """Standard filters and tests work inside the sandbox."""
    root = write_tree(
        tmp_path / "t", {"x.jinja2": "{{ items | map('upper') | join(',') }}|{{ n is even }}|{{ d | tojson }}"}
    )
    out = TemplateLibrary(root).render("x.jinja2", {"items": ["a", "b"], "n": 4, "d": {"k": 1}})
    assert out == 'A,B|True|{"k": 1}'
