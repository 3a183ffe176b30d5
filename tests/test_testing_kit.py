"""genie_graph.testing: scripted conversations, fake invokers, transition coverage, the CLI and the pytest plugin.

The flows run for real (machine, hooks, conditions, templates, runtime, in-memory store); only the
invoker calls are faked, which is what the kit itself does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import graphs
from genie_graph import EventData, GenieFlow, GenieModel, GenieStateMachine, State
from genie_graph.errors import InvokerError
from genie_graph.testing import (
    FakeFailure,
    FakeInvokers,
    Render,
    Script,
    ScriptError,
    ScriptFailure,
    ScriptRunner,
    TransitionCoverage,
    Turn,
    UnfakedInvoker,
    load_scripts,
    run_script,
    save_recording,
)
from tests.helpers import write_tree

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---- a small flow with a condition, a python invoker with on_error, and an echo flow -------------
def real_llm(text: str) -> str:
    """The kit flow's real invoker: only reached when a test lets it answer."""
    return f"REAL: {text}"


def shout(prompt: str, data: Mapping[str, Any]) -> str:
    """A fake named in YAML by ``callable: tests.test_testing_kit:shout``."""
    return f"{data['actor_input'].upper()}!"


TEMPLATES = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! Ask me anything.",
    "user/answer.jinja2": "{{ actor_input }}",
    "user/bye.jinja2": "Bye after {{ asked }} question(s).",
    "llm/meta.yaml": (
        "invoker:\n"
        "  type: python\n"
        '  callable: "tests.test_testing_kit:real_llm"\n'
        '  on_error: "Sorry, the model failed: {{ error }}"\n'
    ),
    "llm/think.jinja2": "Question {{ asked + 1 }}: {{ actor_input }}",
    "echo/meta.yaml": 'invoker: {type: echo, prefix: "Echo: "}\n',
    "echo/say.jinja2": "{{ actor_input }}",
}


class KitMachine(GenieStateMachine):
    """intro -> thinking (LLM) -> answer; "bye" ends; "reset" goes back to the intro when told "yes"."""

    intro = State(initial=True, value=0)
    thinking = State(value=1)
    answer = State(value=2)
    done = State(final=True, value=3)

    user_input = intro.to(thinking) | answer.to(done, cond="says_bye") | answer.to(thinking)
    ai_extraction = thinking.to(answer)
    reset = answer.to(intro, cond="confirmed")

    templates = dict(
        intro="user/intro.jinja2",
        thinking="llm/think.jinja2",
        answer="user/answer.jinja2",
        done="user/bye.jinja2",
    )

    def says_bye(self, event_data: EventData) -> bool:
        return bool(event_data.args) and event_data.args[0].strip().lower() == "bye"

    def confirmed(self, event_data: EventData) -> bool:
        return bool(event_data.args) and event_data.args[0] == "yes"

    def on_exit_thinking(self) -> None:
        self.model.asked += 1


class KitModel(GenieModel):
    asked: int = Field(0, description="questions answered")
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return KitMachine


class EchoMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    echoing = State(value=1)
    shown = State(value=2)

    user_input = intro.to(echoing) | shown.to(echoing)
    ai_extraction = echoing.to(shown)

    templates = dict(intro="user/intro.jinja2", echoing="echo/say.jinja2", shown="user/answer.jinja2")


class EchoModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return EchoMachine


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("kit-templates"), TEMPLATES)


@pytest.fixture
def kit_flow(templates: Path) -> Iterator[GenieFlow]:
    """The kit flows on a SQLite store: the kit copies them onto memory, and must leave this one alone."""
    flow = GenieFlow(template_root=templates, store=f"sqlite:///{templates / 'untouched.db'}")
    flow.register_model("kit", KitModel)
    flow.register_model("echo", EchoModel)
    yield flow
    flow.close()


def _failure(flow: GenieFlow, script: Any, fakes: Any = None, model_key: str | None = "kit") -> str:
    with pytest.raises(ScriptFailure) as caught:
        run_script(flow, model_key, script, fakes=fakes)
    return str(caught.value)


# ---- a passing script ---------------------------------------------------------------------------
def test_a_passing_script_runs_the_real_flow_with_fakes(kit_flow: GenieFlow) -> None:
    script = Script(
        name="two questions then bye",
        start=Turn(state="intro", response="Hello! Ask me anything.", next_actions=["user_input"]),
        turns=[
            Turn(say="What is 2 + 2?", state="answer", response="4", fields={"asked": 1}),
            Turn(
                say="And 3 + 3?",
                state="answer",
                response_contains=["6"],
                response_matches=r"^\d$",
                next_actions=["user_input", "reset"],
                prompt_contains={"think": "Question 2: And 3 + 3?"},
            ),
            Turn(say="bye", state="done", response="Bye after 2 question(s).", next_actions=[]),
        ],
    )

    result = run_script(kit_flow, "kit", script, fakes={"think": ["4", "6"]})

    assert result.passed and result.failure is None
    assert [turn.state for turn in result.turns] == ["answer", "answer", "done"]
    assert result.model.asked == 2  # type: ignore[attr-defined]
    assert [(call.template, call.prompt, call.answer) for call in result.invocations] == [
        ("llm/think.jinja2", "Question 1: What is 2 + 2?", "4"),
        ("llm/think.jinja2", "Question 2: And 3 + 3?", "6"),
    ]
    assert [(run.turn, run.source, run.event, run.target) for run in result.transitions] == [
        (1, "intro", "user_input", "thinking"),
        (1, "thinking", "ai_extraction", "answer"),
        (2, "answer", "user_input", "thinking"),
        (2, "thinking", "ai_extraction", "answer"),
        (3, "answer", "user_input", "done"),
    ]


def test_the_flow_given_is_left_alone(kit_flow: GenieFlow) -> None:
    run_script(kit_flow, "kit", [{"say": "hi", "state": "answer"}], fakes={"think": "hello"})

    compiled = kit_flow.flow_of("kit")
    assert compiled.runner.invoke_override is None
    assert compiled.observers == []
    assert kit_flow.store_url.startswith("sqlite:///")
    assert not (Path(kit_flow.store_url.removeprefix("sqlite:///"))).exists()  # never opened


def test_a_factory_is_called_with_an_in_memory_store(templates: Path) -> None:
    stores: list[str] = []

    def factory(store: str | None = None) -> GenieFlow:
        stores.append(str(store))
        flow = GenieFlow(template_root=templates, store=store)
        flow.register_model("echo", EchoModel)
        return flow

    fakes = FakeInvokers(allow_real=["echo"])
    result = run_script(factory, None, [Turn(say="ping", state="shown", response="Echo: ping")], fakes=fakes)

    assert result.passed
    assert result.model_key == "echo"  # the flow's only key
    assert stores == ["memory://"]
    assert result.invocations[0].source == "real echo"


def test_a_turn_can_send_any_event_and_expect_a_refusal(kit_flow: GenieFlow) -> None:
    result = run_script(
        kit_flow,
        "kit",
        [
            Turn(say="hi", state="answer"),
            Turn(event="reset", say="no", error="conditions of all its transitions failed", state="answer"),
            Turn(event="reset", say="yes", state="intro", response="Hello! Ask me anything.", fields={"asked": 1}),
            Turn(event="poll", state="intro", next_actions=["user_input"]),
        ],
        fakes={"think": "hello"},
    )
    assert result.passed
    assert [(run.event, run.index, run.target) for run in result.turns[1].transitions] == [("reset", None, None)]


# ---- each expectation failing, with a readable message naming the turn -----------------------------
def test_state_mismatch_names_the_script_turn_event_and_shows_the_dialogue(kit_flow: GenieFlow) -> None:
    message = _failure(
        kit_flow,
        Script(name="ends too early", turns=[Turn(say="hi", state="answer"), Turn(say="more", state="done")]),
        fakes={"think": ["first answer", "second answer"]},
    )
    assert message.splitlines()[:2] == [
        "script 'ends too early', turn 2 of 2: sent user_input \"more\"",
        '  state: expected "done", got "answer"',
    ]
    assert "  transitions: answer --user_input--> thinking --ai_extraction--> answer" in message
    assert "  invoker call: llm/think.jinja2 (fake 'think') -> \"second answer\"" in message
    assert message.endswith(
        "dialogue so far (5 utterance(s)):\n"
        "  assistant: Hello! Ask me anything.\n"
        "  user: hi\n"
        "  assistant: first answer\n"
        "  user: more\n"
        "  assistant: second answer"
    )


def test_exact_response_mismatch_shows_a_diff_for_long_texts(kit_flow: GenieFlow) -> None:
    short = _failure(kit_flow, [{"say": "hi", "response": "hello"}], fakes={"think": "goodbye"})
    assert 'turn 1 of 1: sent user_input "hi"\n  response: expected "hello", got "goodbye"' in short

    long = _failure(
        kit_flow,
        [{"say": "hi", "response": "line one\nline two\nline three"}],
        fakes={"think": "line one\nline 2\nline three"},
    )
    assert "  response:\n    --- expected\n    +++ actual\n" in long
    assert "    -line two\n    +line 2\n" in long


def test_response_contains_and_matches_mismatches(kit_flow: GenieFlow) -> None:
    message = _failure(
        kit_flow,
        [{"say": "hi"}, {"say": "again", "response_contains": ["answer", "42"], "response_matches": r"^\d+$"}],
        fakes={"think": "the answer"},
    )
    assert "turn 2 of 2" in message
    assert '  response contains: expected "42", got "the answer"' in message
    assert '  response matches: expected "^\\\\d+$", got "the answer"' in message
    assert 'expected "answer"' not in message  # met expectations are not listed


def test_field_mismatch_with_jmespath_and_dotted_paths(kit_flow: GenieFlow) -> None:
    message = _failure(
        kit_flow,
        [
            {
                "say": "hi",
                "fields": {
                    "asked": 2,
                    "dialogue.0.actor": "assistant",
                    "length(dialogue)": 3,
                    "dialogue[-1].actor_text": "nope",
                },
            }
        ],
        fakes={"think": "hello"},
    )
    assert "  field asked: expected 2, got 1" in message
    assert '  field dialogue[-1].actor_text: expected "nope", got "hello"' in message
    assert "dialogue.0.actor" not in message and "length(dialogue)" not in message


def test_error_expectations(kit_flow: GenieFlow) -> None:
    unexpected = _failure(kit_flow, [{"event": "reset", "say": "yes"}])
    assert "the start, turn 1 of 1" not in unexpected
    assert 'turn 1 of 1: sent reset "yes"' in unexpected
    assert (
        "  error: expected no error, got "
        "\"refused: event 'reset' is not allowed in state 'intro'; allowed: user_input\"" in unexpected
    )
    assert unexpected.count("refused:") == 1  # not repeated below the mismatch

    missing = _failure(kit_flow, [{"say": "hi", "error": True}], fakes={"think": "fine"})
    assert "  error: expected an error, got none" in missing

    other = _failure(kit_flow, [{"event": "reset", "say": "yes", "error": "session busy"}])
    assert '  error contains: expected "session busy", got "refused: event \'reset\' is not allowed' in other


def test_next_actions_and_prompt_mismatches(kit_flow: GenieFlow) -> None:
    message = _failure(
        kit_flow,
        [{"say": "hi", "next_actions": ["user_input"], "prompt_contains": {"think": ["Question 1", "Question 7"]}}],
        fakes={"think": "hello"},
    )
    assert '  next_actions: expected ["user_input"], got ["user_input", "reset"]' in message
    assert '  prompt of think contains: expected "Question 7", got "Question 1: hi"' in message

    no_call = _failure(
        kit_flow,
        [{"say": "hi"}, {"event": "reset", "say": "yes", "prompt_contains": {"think": "x"}}],
        {"think": "hello"},
    )
    assert "turn 2 of 2" in no_call
    assert '  prompt of think: expected ["x"], got no call of that template in this turn' in no_call


def test_start_expectations_fail_at_the_start(kit_flow: GenieFlow) -> None:
    message = _failure(kit_flow, Script(name="intro", start=Turn(response_contains="Welcome")))
    assert message.startswith("script 'intro', the start: create_new_session('kit')\n")
    assert '  response contains: expected "Welcome", got "Hello! Ask me anything."' in message


def test_without_raising_the_result_carries_the_failure(kit_flow: GenieFlow) -> None:
    result = run_script(
        kit_flow,
        "kit",
        [{"say": "hi", "state": "done"}, {"say": "never sent"}],
        fakes={"think": "hello"},
        raise_on_failure=False,
    )
    assert not result.passed and result.failure is not None
    assert result.failure.turn == 1 and result.failure.event == "user_input" and result.failure.say == "hi"
    assert [(m.what, m.expected, m.actual) for m in result.failure.mismatches] == [("state", "done", "answer")]
    assert len(result.turns) == 1  # stopped at the failing turn
    assert isinstance(result.failure, AssertionError)


# ---- fakes ----------------------------------------------------------------------------------------
def test_a_list_of_answers_is_consumed_in_order_and_running_out_fails(kit_flow: GenieFlow) -> None:
    message = _failure(kit_flow, [{"say": "a"}, {"say": "b"}, {"say": "c"}], fakes={"think": ["one", "two"]})
    assert "turn 3 of 3" in message
    assert (
        "  fake: fake 'think' for template 'llm/think.jinja2' has 2 answer(s), all used; the flow called it again "
        "(call 3)." in message
    )


def test_callable_fakes_get_the_prompt_and_the_render_data(kit_flow: GenieFlow) -> None:
    seen: list[tuple[str, int]] = []

    def think(prompt: str, data: Mapping[str, Any]) -> str:
        seen.append((prompt, data["asked"]))
        return f"answer {data['asked'] + 1} to {data['actor_input']}"

    async def athink(prompt: str, data: Mapping[str, Any]) -> str:
        return prompt.upper()

    result = run_script(
        kit_flow,
        "kit",
        [
            {"say": "hi", "response": "answer 1 to hi"},
            {"say": "ho", "response": "answer 2 to ho"},
            Turn(say="turn", response="TURN!", fakes={"think": {"render": "{{ actor_input | upper }}!"}}),
        ],
        fakes={"llm/think": think},
    )
    assert seen == [("Question 1: hi", 0), ("Question 2: ho", 1)]
    assert result.turns[2].invocations[0].source == "fake 'think'"  # the turn's own fake came first

    async_result = run_script(kit_flow, "kit", [{"say": "hi", "response": "QUESTION 1: HI"}], fakes={"think": athink})
    assert async_result.passed


def test_render_fakes_and_the_longest_key_wins(kit_flow: GenieFlow) -> None:
    result = run_script(
        kit_flow,
        "kit",
        [{"say": "hi", "response": "hi? (Question 1: hi)"}],
        fakes={"think": "not me", "llm/think.jinja2": Render("{{ actor_input }}? ({{ prompt }})")},
    )
    assert result.passed


def test_a_fake_failure_is_an_invoker_failure_on_error_applies(kit_flow: GenieFlow) -> None:
    def refuse(prompt: str, data: Mapping[str, Any]) -> str:
        raise InvokerError("quota exceeded")

    for fake in (FakeFailure("rate limited"), refuse):
        result = run_script(kit_flow, "kit", [{"say": "hi", "state": "answer"}], fakes={"think": fake})
        [call] = result.invocations
        assert call.answer is None and call.error in ("rate limited", "quota exceeded")
        assert result.turns[0].response == f"Sorry, the model failed: {call.error}"


def test_a_broken_fake_fails_the_script_not_the_flow(kit_flow: GenieFlow) -> None:
    def broken(prompt: str, data: Mapping[str, Any]) -> str:
        raise KeyError("oops")

    message = _failure(kit_flow, [{"say": "hi"}], fakes={"think": broken})
    assert "  fake: fake 'think' for template 'llm/think.jinja2' raised KeyError: 'oops'" in message


def test_an_unfaked_invoker_template_fails_loudly_saying_how_to_fake_it(kit_flow: GenieFlow) -> None:
    with pytest.raises(UnfakedInvoker) as caught:
        run_script(kit_flow, "kit", [{"say": "hi", "state": "answer"}])
    message = str(caught.value)
    assert message.startswith("script 'script', turn 1 of 1: sent user_input \"hi\"\n")
    assert (
        "  invoker template 'llm/think.jinja2' (state thinking, invoker type python) has no fake.\n"
        "  Fake it by its name, or the end of it, in the script:\n"
        "    fakes:\n"
        '      think: "an answer"'
    ) in message
    assert 'FakeInvokers({"llm/think.jinja2": "an answer"})' in message
    assert 'allow_real=["python"]' in message


def test_real_invokers_answer_only_when_allowed(kit_flow: GenieFlow) -> None:
    python = run_script(
        kit_flow, "kit", [{"say": "hi", "response": "REAL: Question 1: hi"}], fakes=FakeInvokers(allow_real=["python"])
    )
    assert python.invocations[0].source == "real python"
    echo = run_script(
        kit_flow, "echo", [{"say": "hi", "response": "Echo: hi"}], fakes=FakeInvokers(allow_real=["echo"])
    )
    assert echo.passed
    one = run_script(
        kit_flow, "kit", [{"say": "hi", "response": "REAL: Question 1: hi"}], fakes={"think": FakeInvokers.REAL}
    )
    assert one.invocations[0].source == "real (fake 'think')"
    with pytest.raises(UnfakedInvoker):
        run_script(kit_flow, "echo", [{"say": "hi"}])


def test_recorded_answers_replay_in_order_and_catch_a_changed_prompt(kit_flow: GenieFlow, tmp_path: Path) -> None:
    turns = [{"say": "hi"}, {"say": "ho", "response": "REAL: Question 2: ho"}]
    recorded = run_script(kit_flow, "kit", turns, fakes=FakeInvokers(allow_real=["python"]))
    path = save_recording(tmp_path / "answers.yaml", recorded.invocations)
    assert load_scripts  # the file is plain YAML: a list of {template, prompt, answer}
    assert path.read_text(encoding="utf-8").startswith("- template: llm/think.jinja2\n  prompt: 'Question 1: hi'\n")

    replayed = run_script(kit_flow, "kit", turns, fakes=FakeInvokers.from_recording(path))
    assert [call.source for call in replayed.invocations] == ["recording answers.yaml"] * 2

    message = _failure(kit_flow, [{"say": "HI"}], fakes=FakeInvokers.from_recording(path))
    assert "  fake: the prompt of template 'llm/think.jinja2' (call 1) differs from the one recorded in" in message
    assert "    -Question 1: hi\n    +Question 1: HI" in message
    assert run_script(kit_flow, "kit", [{"say": "HI"}], fakes=FakeInvokers.from_recording(path, match_prompts=False))

    json_path = recorded.save_recording(tmp_path / "answers.json")
    assert run_script(kit_flow, "kit", turns, fakes=FakeInvokers.from_recording(json_path)).passed


def test_fake_keys_that_name_no_invoker_template_are_refused_before_running(kit_flow: GenieFlow) -> None:
    with pytest.raises(ScriptError) as caught:
        run_script(kit_flow, "kit", [{"say": "hi"}], fakes={"thinks": "x", "think": "y"})
    assert str(caught.value) == (
        "script 'script', fakes: fake 'thinks' names no invoker template of kit; they are: llm/think.jinja2"
    )
    assert run_script(kit_flow, "kit", [{"say": "hi"}], fakes=FakeInvokers({"think": "y", "other": "z"}, strict=False))


# ---- the script against the flow -------------------------------------------------------------------
def test_unknown_states_events_and_model_keys_are_named_before_running(kit_flow: GenieFlow) -> None:
    with pytest.raises(ScriptError) as caught:
        run_script(
            kit_flow,
            "kit",
            [
                {"say": "hi", "state": "anwser"},
                {"event": "user_inptu", "say": "x"},
                {"event": "nonsense", "error": True},
            ],
            fakes={"think": "y"},
        )
    assert str(caught.value).splitlines() == [
        "script 'script', turn 1 of 3: state 'anwser' is no state of kit (did you mean 'answer'?); "
        "its states: intro, thinking, answer, done",
        "script 'script', turn 2 of 3: event 'user_inptu' is no event of kit (did you mean 'user_input'?); "
        "its events: ai_extraction, reset, user_input (to test a refusal, add error: true)",
    ]
    with pytest.raises(ScriptError, match=r"unknown model key 'kitt' \(did you mean 'kit'\?\); the flow has kit, echo"):
        run_script(kit_flow, "kitt", [{"say": "hi"}])


# ---- coverage -------------------------------------------------------------------------------------
def test_coverage_counts_transitions_and_condition_outcomes(kit_flow: GenieFlow) -> None:
    coverage = TransitionCoverage()
    coverage.declare_flow(kit_flow, ["kit"])
    assert coverage.percent() == 0.0

    run_script(
        kit_flow,
        "kit",
        [{"say": "hi"}, {"say": "more"}, {"event": "reset", "say": "no", "error": True}],
        fakes={"think": "ok"},
        coverage=coverage,
    )

    # 4 transitions + 1 condition that can fail onto a later transition (answer --user_input [says_bye]).
    # Taken: intro->thinking, thinking->answer, answer->thinking (so says_bye failed once); never: ->done, reset.
    assert coverage.transition_percent("kit") == 60.0
    assert coverage.percent("kit") == pytest.approx(100 * 4 / 6)
    assert [str(t) for _, t in coverage.never_run()] == [
        "answer --user_input [says_bye]--> done",
        "answer --reset [confirmed]--> intro",
    ]
    assert [str(t) for _, t in coverage.conditions_never_passed()] == [
        "answer --user_input [says_bye]--> done",
        "answer --reset [confirmed]--> intro",
    ]
    assert coverage.conditions_never_failed() == []
    report = coverage.report()
    assert report.splitlines()[0] == (
        "Transition coverage: 66.7% (3/5 transitions, 1/1 condition outcomes; 1 script(s))"
    )
    assert "      1x  intro --user_input--> thinking" in report
    assert "  NEVER   answer --user_input [says_bye]--> done  (conditions failed 1x)" in report
    assert "  NEVER   answer --reset [confirmed]--> intro  (conditions failed 1x: the event was refused)" in report
    assert "never run:\n  kit: answer --user_input [says_bye]--> done\n  kit: answer --reset [confirmed]--> intro" in (
        report
    )

    run_script(kit_flow, "kit", [{"say": "hi"}, {"say": "bye"}], fakes={"think": "ok"}, coverage=coverage)
    run_script(
        kit_flow, "kit", [{"say": "hi"}, {"event": "reset", "say": "yes"}], fakes={"think": "ok"}, coverage=coverage
    )
    assert coverage.percent() == 100.0
    assert coverage.scripts == 3
    assert coverage.never_run() == []


def test_coverage_merges_and_survives_json(kit_flow: GenieFlow) -> None:
    first, second = TransitionCoverage(), TransitionCoverage()
    run_script(kit_flow, "kit", [{"say": "hi"}, {"say": "bye"}], fakes={"think": "ok"}, coverage=first)
    run_script(kit_flow, "kit", [{"say": "hi"}, {"say": "more"}], fakes={"think": "ok"}, coverage=second)
    merged = TransitionCoverage()
    merged.merge_dict(first.to_dict())
    merged.merge(second)
    assert merged.scripts == 2
    assert merged.transition_percent("kit") == 80.0 and merged.percent("kit") == pytest.approx(100 * 5 / 6)
    with pytest.raises(ValueError, match="use one TransitionCoverage per flow"):
        merged.declare("kit", kit_flow.flow_of("echo"))


# ---- YAML scripts ---------------------------------------------------------------------------------
def test_a_yaml_file_holds_scripts_with_file_wide_defaults(kit_flow: GenieFlow, tmp_path: Path) -> None:
    path = tmp_path / "kit.genie.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            fakes:
              think: {render: "about {{ actor_input }}"}
            scripts:
              - name: one
                turns:
                  - say: cats
                    response: about cats
              - turns:
                  - say: dogs
                    fakes: {think: woof}
                    response: woof
                  - say: bye
                    state: done
            """
        ),
        encoding="utf-8",
    )
    first, second = load_scripts(path)
    assert (first.name, first.model_key, first.source, first.line) == ("one", "kit", path, 4)
    assert (second.name, second.line, [turn.line for turn in second.turns]) == ("kit #2", 8, [9, 12])
    with ScriptRunner(kit_flow) as runner:
        assert [result.passed for result in runner.run_file(path)] == [True, True]

    path.write_text(path.read_text(encoding="utf-8").replace("state: done", "state: answer"), encoding="utf-8")
    message = _failure(kit_flow, load_scripts(path)[1], model_key=None)
    assert message.startswith(f"{_shown(path)}:8: script 'kit #2', turn 2 of 2 (line 12): sent user_input \"bye\"\n")


def test_yaml_fakes_name_a_callable_and_a_recording_beside_the_script(kit_flow: GenieFlow, tmp_path: Path) -> None:
    recorded = run_script(kit_flow, "kit", [{"say": "hi"}], fakes={"think": "from the recording"})
    recorded.save_recording(tmp_path / "answers.yaml")
    path = tmp_path / "kit.genie.yaml"
    path.write_text(
        "scripts:\n"
        "  - name: callable\n"
        "    fakes: {think: {callable: 'tests.test_testing_kit:shout'}}\n"
        "    turns: [{say: hi, response: HI!}]\n"
        "  - name: recorded\n"
        "    recorded: answers.yaml\n"
        "    turns: [{say: hi, response: from the recording}]\n"
        "  - name: missing callable\n"
        "    fakes: {think: {callable: 'tests.test_testing_kit:nothing_here'}}\n"
        "    turns: [{say: hi}]\n",
        encoding="utf-8",
    )
    callable_script, recorded_script, missing = load_scripts(path)
    with ScriptRunner(kit_flow) as runner:
        assert runner.run(callable_script).passed
        assert runner.run(recorded_script).invocations[0].source == "recording answers.yaml"
        with pytest.raises(
            ScriptError,
            match=r":8: script 'missing callable': fakes: module 'tests.test_testing_kit' has no attribute 'nothing_",
        ):
            runner.run(missing)


def test_scripts_built_in_python_get_the_same_messages(kit_flow: GenieFlow) -> None:
    with pytest.raises(
        ScriptError, match=r"^<script>: script 'script', turn 2 of 2: unknown key 'stat' \(did you mean"
    ):
        run_script(kit_flow, "kit", [{"say": "hi"}, {"stat": "answer"}])
    with pytest.raises(ScriptError, match="pass function fakes with run_script"):
        run_script(kit_flow, "kit", {"fakes": {"think": shout}, "turns": []})


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("turns: [say: 'unclosed\n", "not valid YAML"),
        (
            "- say: hi\n",
            "a script file is a mapping with 'turns:' (one script) or 'scripts:' (a list of them), got list",
        ),
        (
            "turns:\n  - say: hi\n    respnse: hello\n",
            "script 'bad', turn 1 of 1 (line 2): unknown key 'respnse' (did you mean 'response'?)",
        ),
        (
            "turns:\n  - say: hi\n  - say: ho\n    response_matches: '(unclosed'\n",
            "script 'bad', turn 2 of 2 (line 3): response_matches: not a regular expression: missing ), "
            "unterminated subpattern at position 0",
        ),
        (
            "turns:\n  - fields: {'dialogue[': 1}\n",
            "script 'bad', turn 1 of 1 (line 2): fields: 'dialogue[' is neither a dotted path nor JMESPath",
        ),
        (
            "fakes:\n  think: {answr: x}\nturns: []\n",
            "script 'bad': fakes: fake 'think': {'answr': 'x'} is not a fake; a fake is a text, a list of answers, "
            "or a mapping with one of answer: <text>",
        ),
        ("nme: x\nturns: []\n", "script 'bad': unknown key 'nme' (did you mean 'name'?)"),
        ("start: {stat: intro}\n", "script 'bad', start (line 1): unknown key 'stat' (did you mean 'state'?)"),
        (
            "turns: []\nscripts: [{turns: []}]\n",
            "unknown key(s) turns beside 'scripts:'; file-wide keys are",
        ),
        ("scripts: [{name: a}, {name: a}]\n", "script names must differ within a file; repeated: a"),
    ],
)
def test_yaml_errors_name_the_file_the_script_and_the_turn(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.genie.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScriptError) as caught:
        load_scripts(path)
    message = str(caught.value)
    assert message.startswith(_shown(path) + ":")
    assert problem in message
    assert caught.value.source == path


# ---- the bundled examples (CI runs them also in tests/test_example_scripts.py) ---------------------
def test_scripts_beside_the_examples_use_a_shared_runner() -> None:
    coverage = TransitionCoverage()
    with ScriptRunner(graphs.create_flow, coverage=coverage) as runner:
        results = runner.run_file(REPO_ROOT / "graphs" / "q_and_a_cond.genie.yaml")
    assert [r.passed for r in results] == [True, True]
    assert coverage.percent("q_and_a_cond") == 100.0


def test_the_public_surface_is_exported_and_documented() -> None:
    import genie_graph.testing as kit

    namespace: dict[str, object] = {}
    exec("from genie_graph.testing import *", namespace)  # noqa: S102 - the import statement itself
    assert set(namespace) - {"__builtins__"} == set(kit.__all__)
    assert [name for name in kit.__all__ if name.startswith("_")] == []
    for name in kit.__all__:
        value = getattr(kit, name)
        if callable(value) and getattr(value, "__module__", "").startswith("genie_graph"):
            assert (value.__doc__ or "").strip(), f"genie_graph.testing.{name} has no docstring"


# ---- the CLI --------------------------------------------------------------------------------------
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GENIE_GRAPH_FLOW", "GENIE_GRAPH_STORE")}
    environment.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        GENIE_GRAPH_DATA_DIR=str(tmp_path / "data"),
        PYTHONIOENCODING="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "genie_graph._cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=environment,
        timeout=120,
    )


def test_cli_runs_the_scripts_beside_the_flow_with_coverage(tmp_path: Path) -> None:
    result = _cli("--flow", "graphs:flow", "test", "--coverage", "--fail-under", "100", tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "PASS  graphs/q_and_a_cond.genie.yaml::the user types *STOP* (3 turn(s))" in lines
    assert sum(line.startswith("PASS  graphs/") for line in lines) == 13
    assert "13 script(s): 13 passed" in lines
    # the ordering example's sub-flows and interruptions count too, their states named by node
    assert "Transition coverage: 100.0% (37/37 transitions, 10/10 condition outcomes; 13 script(s))" in lines
    assert "NEVER" not in result.stdout
    assert not (tmp_path / "data").exists()  # the scripts ran on an in-memory store


def test_cli_fails_with_the_diff_and_under_the_coverage_threshold(tmp_path: Path) -> None:
    script = tmp_path / "q_and_a.genie.yaml"
    script.write_text(
        "fakes: {ai_creates_response: fine}\n"
        "scripts:\n"
        "  - name: passes\n"
        "    turns: [{say: hi, response: fine}]\n"
        "  - name: fails\n"
        "    turns:\n"
        "      - say: hi\n"
        "        response: great\n",
        encoding="utf-8",
    )
    broken = tmp_path / "broken.genie.yaml"
    broken.write_text("turns: [{sy: hi}]\n", encoding="utf-8")

    result = _cli("test", str(tmp_path), "--fail-under", "50", tmp_path=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert (
        f"ERROR {_shown(broken)}\n      {_shown(broken)}: script 'broken', turn 1 of 1 (line 1): unknown key 'sy'"
        in out
    )
    assert f"PASS  {_shown(script)}::passes (1 turn(s))" in out
    assert f"FAIL  {_shown(script)}::fails\n      {_shown(script)}:5: script 'fails', turn 1 of 1 (line 7)" in out
    assert '        response: expected "great", got "fine"' in out
    assert "3 script(s): 1 passed, 1 failed, 1 error(s)" in out
    # 2 of q_and_a's 3 transitions ran; the examples have 37 transitions and 10 condition outcomes
    assert "transition coverage 4.3% is under --fail-under 50%" in out

    selected = _cli("test", str(script), "-k", "PASSES", tmp_path=tmp_path)
    assert selected.returncode == 0, selected.stdout + selected.stderr
    assert "1 script(s): 1 passed" in selected.stdout

    nothing = _cli("test", str(tmp_path / "data"), tmp_path=tmp_path)
    assert nothing.returncode == 2
    assert "genie-graph: error:" in nothing.stderr and "no such file or directory" in nothing.stderr


# ---- the pytest plugin ----------------------------------------------------------------------------
PLUGIN = "genie_graph.testing.pytest_plugin"


def test_pytest_plugin_collects_script_files_and_reports_coverage(pytester: pytest.Pytester) -> None:
    (pytester.path / "q_and_a_cond.genie.yaml").write_text(
        "fakes: {ai_creates_response: '**STOP**'}\n"
        "scripts:\n"
        "  - name: the LLM stops it\n"
        "    turns: [{say: hi, state: outro}]\n"
        "  - name: a wrong state\n"
        "    turns: [{say: hi, state: user_enters_query}]\n",
        encoding="utf-8",
    )
    (pytester.path / "broken.genie.yaml").write_text("turns: [{sy: hi}]\n", encoding="utf-8")

    result = pytester.runpytest(
        "-p",
        PLUGIN,
        "--genie-flow",
        "graphs:create_flow",
        "--genie-coverage",
        "--genie-fail-under",
        "90",
        "--continue-on-collection-errors",
    )

    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting broken.genie.yaml*",
            "*broken.genie.yaml: script 'broken', turn 1 of 1 (line 1): unknown key 'sy'*",
            "*genie script: a wrong state*",
            "q_and_a_cond.genie.yaml:5: script 'a wrong state', turn 1 of 1 (line 6): sent user_input \"hi\"",
            '  state: expected "user_enters_query", got "outro"',
            "*genie-graph transition coverage*",
            "Transition coverage: 42.9% (2/5 transitions, 1/2 condition outcomes; 2 script(s))",
            "  NEVER   user_enters_query --user_input ?user_says_stop?--> outro",  # (fnmatch: [ ] is a class)
            "*FAIL: genie-graph transition coverage 42.9% is under --genie-fail-under 90*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        import graphs

        @pytest.fixture(scope="session")
        def genie_flow():
            return graphs.create_flow
        """
    )
    pytester.makepyfile(
        """
        from genie_graph.testing import ScriptRunner, TransitionCoverage

        def test_runner(genie_script_runner, transition_coverage):
            assert isinstance(genie_script_runner, ScriptRunner)
            result = genie_script_runner.run(
                [{"say": "hi", "state": "outro"}], "q_and_a_cond", fakes={"ai_creates_response": "**STOP**"}
            )
            assert result.passed
            assert transition_coverage.scripts == 1

        def test_failure_message(genie_script_runner):
            fakes = {"ai_creates_response": "yes"}
            genie_script_runner.run([{"say": "hi", "response": "nope"}], "q_and_a", fakes=fakes)
        """
    )
    result = pytester.runpytest("-p", PLUGIN, "--genie-fail-under", "10")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            ">       genie_script_runner.run(*",  # the test's own line
            "E       genie_graph.testing.ScriptFailure: script 'script', turn 1 of 1: sent user_input \"hi\"",
            'E         response: expected "nope", got "yes"',
            "*genie-graph transition coverage 50.0% (--genie-fail-under 10)*",
        ]
    )
    assert "def run(" not in result.stdout.str()  # the kit's own frames are hidden


def test_pytest_plugin_is_inert_without_opt_in_and_says_what_is_missing(pytester: pytest.Pytester) -> None:
    (pytester.path / "q_and_a.genie.yaml").write_text("turns: [{say: hi}]\n", encoding="utf-8")
    pytester.makepyfile("def test_nothing():\n    pass\n")

    assert pytester.runpytest().parseoutcomes() == {"passed": 1}  # no plugin: YAML files are not tests

    result = pytester.runpytest("-p", PLUGIN)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no flow to run the scripts against: pass --genie-flow package.module:attribute*"])
