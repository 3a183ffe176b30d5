"""Invoker configuration is checked when a flow is registered, and errors say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State
from genie_graph.errors import FlowDefinitionError, InvokerConfigError, TemplateError

from .helpers import RENDERER_META, write_tree


class CfgMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    think = State(value=1)
    reply = State(value=2)
    user_input = ask.to(think) | reply.to(think)
    ai_extraction = think.to(reply)
    templates = dict(ask="c/ask.jinja2", think="c/llm/think.jinja2", reply="c/reply.jinja2")


class CfgModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CfgMachine


def _register(tmp_path: Path, llm_meta: str, top_meta: str = RENDERER_META) -> None:
    root = write_tree(
        tmp_path,
        {
            "c/meta.yaml": top_meta,
            "c/ask.jinja2": "Ask.",
            "c/reply.jinja2": "{{ actor_input }}",
            "c/llm/meta.yaml": llm_meta,
            "c/llm/think.jinja2": "{{ actor_input }}",
        },
    )
    GenieFlow(root, store="memory://").register_model("c", CfgModel)


@pytest.mark.parametrize(
    ("llm_meta", "expected"),
    [
        ("invoker:\n  type: ecko\n", r"unknown invoker type 'ecko'; use one of echo, openai, python"),
        ("invoker:\n  type: echo\n  prefx: x\n", r"takes no key\(s\) prefx"),
        ('invoker:\n  type: python\n  callable: "tests.test_config_errors:nope"\n', r"has no attribute"),
        ("invoker:\n  type: echo\n  retry: {attempts: many}\n", r"'retry:' must be"),
        ("invoekr:\n  type: echo\n", r"unknown key\(s\) invoekr"),
        ("invoker:\n  type: no.such.module.Invoker\n", r"cannot import module"),
    ],
    ids=["unknown_type", "unknown_key", "python_callable_typo", "bad_retry", "meta_key_typo", "missing_module"],
)
def test_wrong_invoker_config_fails_at_registration_naming_the_place(
    tmp_path: Path, llm_meta: str, expected: str
) -> None:
    with pytest.raises(InvokerConfigError, match=expected) as caught:
        _register(tmp_path, llm_meta)
    assert "llm" in str(caught.value) or "meta.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("reasoner", "expected"),
    [
        (42, r"group_reasoner must be an invoker template name or a function, got 42"),
        ("c/ask.jinja2", r"group_reasoner 'c/ask.jinja2' declares no invoker.*IGNORE or DELEGATE"),
        ("c/llm/nope.jinja2", r"nope.jinja2"),
    ],
    ids=["not_a_template_or_function", "template_without_invoker", "missing_template"],
)
def test_a_wrong_group_reasoner_fails_at_registration(tmp_path: Path, reasoner: object, expected: str) -> None:
    machine = type("ReasonedMachine", (CfgMachine,), {"group_reasoner": reasoner})

    class ReasonedModel(GenieModel):
        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return machine

    root = write_tree(
        tmp_path,
        {
            "c/meta.yaml": RENDERER_META,
            "c/ask.jinja2": "Ask.",
            "c/reply.jinja2": "{{ actor_input }}",
            "c/llm/meta.yaml": "invoker:\n  type: echo\n",
            "c/llm/think.jinja2": "{{ actor_input }}",
        },
    )
    with pytest.raises((FlowDefinitionError, TemplateError), match=expected):
        GenieFlow(root, store="memory://").register_model("c", ReasonedModel)
