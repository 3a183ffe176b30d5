"""Running scripts: a real ``GenieFlow`` on an in-memory store, with fake invokers, turn by turn.

The flow, its machine, hooks, conditions and templates, the session runtime and the store all run
for real. Only the invoker calls are answered by fakes, through the ``CompositeRunner`` of a
private copy of the flow, so the flow given (and any other) is never changed.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._api_models import AIResponse, EventInput
from .._declaration import CompositeTemplate, MapTaskTemplate, NamedQueueTaskTemplate
from .._flow import POLL, CompiledFlow
from .._model import GenieModel
from .._runtime import GenieFlow
from .._subflows import all_trigger_events
from ..errors import GenieGraphError, describe_error
from ._coverage import DeclaredTransition, TransitionCoverage, TransitionRun, declared_transitions
from ._fakes import FakeAnswer, FakeInvokers, Invocation, _FakeRun, fakes_from_yaml, save_recording, template_matches
from ._script import Expect, Script, ScriptError, Turn, field_expression, load_scripts, parse_scripts

FlowSource = GenieFlow | Callable[..., GenieFlow]
"""A ``GenieFlow`` (copied onto an in-memory store) or a function building one (called with
``store="memory://"`` when it takes a ``store`` argument), such as ``graphs.create_flow``."""

MEMORY_STORE = "memory://"
MAX_POLLS = 1000
_SHORT = 72
_DIALOGUE_SHOWN = 20
_TEXT_SHOWN = 600


# ---- failures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    """One expectation a turn did not meet.

    Attributes:
        what: the expectation (``state``, ``response contains``, ``field user_name``, ...).
        expected: what the script expects.
        actual: what the turn showed.
    """

    what: str
    expected: Any
    actual: Any


class ScriptFailure(AssertionError, GenieGraphError):
    """A scripted conversation went otherwise than its script says.

    The message is a readable report: the script and its file, the turn and its line, the event
    sent, each expectation missed (expected against actual, a diff for long texts), the
    transitions and invoker calls of the turn, and the dialogue so far.

    Attributes:
        script: the script's name.
        source: its file, if it came from one.
        turn: the turn's number (1-based; 0 is the session's start).
        event: the event sent (None at the start).
        say: the event's input text.
        mismatches: the expectations missed.
        result: the run up to and including the failing turn.
    """

    def __init__(
        self,
        message: str,
        *,
        script: Script,
        turn: int,
        mismatches: Sequence[Mismatch] = (),
        result: ScriptResult | None = None,
    ) -> None:
        self.script = script.name
        self.source = script.source
        self.turn = turn
        step = script.turns[turn - 1] if 0 < turn <= len(script.turns) else None
        self.event = step.event if step is not None else None
        self.say = step.say if step is not None else ""
        self.mismatches = list(mismatches)
        self.result = result
        super().__init__(message)


class UnfakedInvoker(ScriptFailure):
    """An invoker template was called without a fake; the message says how to fake it."""


ScriptFailure.__module__ = UnfakedInvoker.__module__ = "genie_graph.testing"  # as tracebacks name them


# ---- results --------------------------------------------------------------------------------
@dataclass
class TurnResult:
    """What one turn did.

    Attributes:
        number: the turn's number (0: the session's start).
        event: the event sent (None at the start).
        say: the event's input text.
        answer: the settled answer (after polling through invoker states).
        state: the id of the state the session is in.
        model: the session's model after the turn.
        transitions: the transitions taken during the turn.
        invocations: the invoker calls made during the turn.
    """

    number: int
    event: str | None
    say: str
    answer: AIResponse
    state: str
    model: GenieModel
    transitions: list[TransitionRun] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def response(self) -> str | None:
        """The answer's response text."""
        return self.answer.response


@dataclass
class ScriptResult:
    """A scripted run: every turn's result, the transitions taken, the invoker calls, any failure.

    Attributes:
        script: the script.
        model_key: the model key it ran against.
        machine: the qualified name of the flow's machine.
        session_id: the session's id (in the runner's in-memory store).
        start: the session's start (turn 0).
        turns: the turns run (up to the failing one).
        transitions: every transition taken.
        invocations: every invoker call.
        declared: the flow's declared transitions (what coverage counts against).
        failure: why the script failed, or None.
    """

    script: Script
    model_key: str
    machine: str
    session_id: str
    start: TurnResult
    turns: list[TurnResult]
    transitions: list[TransitionRun]
    invocations: list[Invocation]
    declared: tuple[DeclaredTransition, ...]
    failure: ScriptFailure | None = None

    @property
    def passed(self) -> bool:
        """Whether every turn met its expectations."""
        return self.failure is None

    @property
    def model(self) -> GenieModel:
        """The session's model after the last turn run."""
        return (self.turns[-1] if self.turns else self.start).model

    def save_recording(self, path: str | Path) -> Path:
        """Write this run's invoker answers as a recording (see :meth:`FakeInvokers.from_recording`)."""
        return save_recording(path, self.invocations)


# ---- the flow under test --------------------------------------------------------------------
def _call_factory(factory: Callable[..., GenieFlow]) -> Any:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        parameters = []  # type: ignore[assignment]
    takes_store = any(p.name == "store" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return factory(store=MEMORY_STORE) if takes_store else factory()


def _copy_flow(flow: GenieFlow) -> GenieFlow:
    """A new ``GenieFlow`` with the same templates and model keys, on an in-memory store, running inline."""
    keys = flow.model_keys
    if not keys:
        raise ScriptError("the flow has no model key registered; register_model() the flows to test")
    library = flow.flow_of(keys[0]).runner.library
    copy = GenieFlow(
        template_root=library.template_root,
        store=MEMORY_STORE,
        runner="inline",
        session_ttl_seconds=None,
        compat=flow.compat,
    )
    for prefix, directory in library.directories.items():
        copy.register_template_directory(prefix, directory)
    for key in keys:
        copy.register_model(key, flow.flow_of(key).model_class)
    return copy


def _private_flow(source: FlowSource) -> GenieFlow:
    if isinstance(source, GenieFlow):
        return _copy_flow(source)
    if not callable(source):
        raise TypeError(f"expected a GenieFlow or a function returning one, got {type(source).__name__}")
    built = _call_factory(source)
    if not isinstance(built, GenieFlow):
        raise TypeError(f"{source!r} returned {type(built).__name__}, not a GenieFlow")
    try:
        if built.store_url != MEMORY_STORE:
            built.store_url = MEMORY_STORE
        built.runner = "inline"
    except (GenieGraphError, ValueError):  # already in use elsewhere: leave it be, test a copy
        return _copy_flow(built)
    return built


def invoker_templates(flow: CompiledFlow) -> dict[str, tuple[str, list[str]]]:
    """The invoker templates of a compiled flow: name -> (declared invoker type, the states using it)."""
    library = flow.runner.library
    found: dict[str, tuple[str, list[str]]] = {}

    def visit(template: CompositeTemplate, state_id: str) -> None:
        if isinstance(template, NamedQueueTaskTemplate):
            visit(template.template, state_id)
        elif isinstance(template, MapTaskTemplate):
            visit(template.template_name, state_id)
        elif isinstance(template, str):
            config = library.config_of(template)
            if config.invoker is not None:
                kind, states = found.setdefault(template, (str(config.invoker.get("type", "?")), []))
                if state_id not in states:
                    states.append(state_id)
        elif isinstance(template, list):
            for step in template:
                visit(step, state_id)
        elif isinstance(template, dict):
            for part in template.values():
                visit(part, state_id)

    for node in flow.nodes or flow.templates:  # a session's every flow: its sub-flows' and interruptions' too
        owner, state_id = flow.nodes.get(node, (flow, node))
        visit(owner.templates[state_id], node)
    for owner in [flow, *flow.children.values()]:
        if owner.intent_classifier is not None:
            visit(owner.intent_classifier, f"{owner.label}:intent")
    return found


# ---- messages -------------------------------------------------------------------------------
class Plain(str):
    """Text shown as it is in a failure message, not quoted (``no error``, ``no call``)."""


def _quote(value: Any) -> str:
    if isinstance(value, Plain):
        return str(value)
    if isinstance(value, str):
        if len(value) > _TEXT_SHOWN:
            value = value[:_TEXT_SHOWN] + f"... ({len(value)} characters)"
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.strip()


def _value_lines(label: str, value: Any) -> list[str]:
    """``label: value`` on one line, or a ``|`` block for a text of several lines."""
    if not _is_multiline(value):
        return [f"    {label}: {_quote(value)}"]
    text = str(value)
    if len(text) > _TEXT_SHOWN:
        text = text[:_TEXT_SHOWN] + f"... ({len(value)} characters)"
    return [f"    {label}:"] + [f"      | {line}".rstrip() for line in text.splitlines()]


def _mismatch_lines(mismatch: Mismatch) -> list[str]:
    expected, actual = mismatch.expected, mismatch.actual
    short = not (_is_multiline(expected) or _is_multiline(actual))
    if short and len(_quote(expected)) + len(_quote(actual)) <= 2 * _SHORT:
        return [f"  {mismatch.what}: expected {_quote(expected)}, got {_quote(actual)}"]
    lines = [f"  {mismatch.what}:"]
    if mismatch.what == "response" and isinstance(expected, str) and isinstance(actual, str) and not short:
        diff = difflib.unified_diff(
            expected.strip().splitlines(), actual.strip().splitlines(), "expected", "actual", lineterm="", n=2
        )
        return lines + [f"    {line}".rstrip() for line in diff]
    return lines + _value_lines("expected", expected) + _value_lines("actual  ", actual)


def _shorten(text: str | None, limit: int = _SHORT) -> str:
    if text is None:
        return "(none)"
    flat = " ".join(text.split())
    return _quote(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _path_text(transitions: Sequence[TransitionRun], declared: Sequence[DeclaredTransition]) -> str:
    """``a --event [cond]--> b --event--> c``: the transitions of a turn, labelled as declared."""
    if not transitions:
        return "(none)"
    labels = {(t.source, t.index): t.label for t in declared}
    parts: list[str] = []
    at: str | None = None
    for run in transitions:
        if run.source != at:
            parts.append(run.source if at is None else f"/ {run.source}")
        if run.index is None:
            parts.append(f"--{run.event}--> (refused: the conditions of every transition failed)")
        else:
            parts.append(f"--{labels.get((run.source, run.index), run.event)}--> {run.target}")
        at = run.target
    return " ".join(parts)


def _describe_error(error: str) -> str:
    return describe_error(error, refusal_prefix="refused: ")


def _dialogue_lines(model: GenieModel) -> list[str]:
    elements = model.dialogue
    lines = [f"dialogue so far ({len(elements)} utterance(s)):"]
    if len(elements) > _DIALOGUE_SHOWN:
        lines.append(f"  ... {len(elements) - _DIALOGUE_SHOWN} earlier utterance(s)")
    for element in elements[-_DIALOGUE_SHOWN:]:
        text = element.actor_text
        if len(text) > _TEXT_SHOWN:
            text = text[:_TEXT_SHOWN] + f"... ({len(element.actor_text)} characters)"
        first, *rest = text.splitlines() or [""]
        actor = str(element.actor.value if hasattr(element.actor, "value") else element.actor)
        lines.append(f"  {actor}: {first}".rstrip())
        lines.extend(f"  {' ' * len(actor)}  {line}".rstrip() for line in rest)
    return lines


def _header(script: Script, number: int, model_key: str) -> str:
    where = f"{script.location}, {script.turn_location(number)}"
    if number == 0:
        return f"{where}: create_new_session({model_key!r})"
    turn = script.turns[number - 1]
    return f"{where}: sent {turn.event} {_quote(turn.say)}"


def _report(result: ScriptResult, turn: TurnResult, body: Sequence[str]) -> str:
    lines = [_header(result.script, turn.number, result.model_key), *body]
    lines.append(f"  transitions: {_path_text(turn.transitions, result.declared)}")
    if turn.answer.error and not any(line.startswith("  error") for line in body):
        lines.append(f"  error: {_describe_error(turn.answer.error)}")
    for call in turn.invocations:
        outcome = _shorten(call.answer, 60) if call.error is None else f"failed: {call.error.splitlines()[0]}"
        lines.append(f"  invoker call: {call.template} ({call.source}) -> {outcome}")
    lines.extend(_dialogue_lines(turn.model))
    return "\n".join(lines)


# ---- checking a turn ------------------------------------------------------------------------
def _prompts_of(key: str, turn: TurnResult) -> list[str]:
    return [call.prompt for call in turn.invocations if template_matches(key, call.template)]


def _compare(expect: Expect, turn: TurnResult) -> list[Mismatch]:
    found: list[Mismatch] = []
    answer, response = turn.answer, turn.answer.response
    if expect.state is not None and expect.state != turn.state:
        found.append(Mismatch("state", expect.state, turn.state))
    if expect.response is not None and (response or "").strip() != expect.response.strip():
        found.append(Mismatch("response", expect.response, response))
    for text in expect.response_contains:
        if text not in (response or ""):
            found.append(Mismatch("response contains", text, response))
    if expect.response_matches is not None and not re.search(expect.response_matches, response or ""):
        found.append(Mismatch("response matches", expect.response_matches, response))
    if expect.fields:
        data = turn.model.model_dump(mode="json")
        for path, value in expect.fields.items():
            actual = field_expression(path).search(data)
            if actual != value:
                found.append(Mismatch(f"field {path}", value, actual))
    error = answer.error
    if expect.error is None or expect.error is False:
        if error:
            found.append(Mismatch("error", Plain("no error"), _describe_error(error)))
    elif not error:
        found.append(Mismatch("error", Plain("an error") if expect.error is True else expect.error, Plain("none")))
    elif isinstance(expect.error, str) and expect.error not in error and expect.error not in _describe_error(error):
        found.append(Mismatch("error contains", expect.error, _describe_error(error)))
    if expect.next_actions is not None and expect.next_actions != answer.next_actions:
        found.append(Mismatch("next_actions", expect.next_actions, answer.next_actions))
    for key, texts in expect.prompt_contains.items():
        prompts = _prompts_of(key, turn)
        if not prompts:
            found.append(Mismatch(f"prompt of {key}", texts, Plain("no call of that template in this turn")))
            continue
        for text in texts:
            if not any(text in prompt for prompt in prompts):
                found.append(Mismatch(f"prompt of {key} contains", text, prompts[-1]))
    return found


# ---- the runner -----------------------------------------------------------------------------
@dataclass
class _Active:
    model_key: str
    declared: dict[tuple[str, int], DeclaredTransition]
    fakes: _FakeRun
    turn: int = 0
    transitions: list[TransitionRun] = field(default_factory=list)


def as_script(script: Script | str | Path | Mapping[str, Any] | Sequence[Turn | Mapping[str, Any]]) -> Script:
    """``script`` as a :class:`Script`: a script, a file holding exactly one, a mapping, or a list of turns.

    Raises:
        ScriptError: the file or data is not exactly one valid script.
    """
    if isinstance(script, Script):
        return script
    if isinstance(script, str | Path):
        scripts = load_scripts(script)
        if len(scripts) != 1:
            raise ScriptError(
                f"{script} holds {len(scripts)} scripts; run them with ScriptRunner.run_file() or one by one "
                "from load_scripts()",
                Path(script),
            )
        return scripts[0]
    if isinstance(script, Mapping):
        [parsed] = parse_scripts(script)
        return parsed
    [parsed] = parse_scripts({"turns": list(script)})
    return parsed


class ScriptRunner:
    """Runs scripts against a private, in-memory copy of a flow, with fake invokers.

    Everything but the invoker calls runs for real: the machine, hooks, conditions, templates,
    the session runtime and its store. Scripts run one at a time (a runner is not for threads).

    Args:
        flow: a ``GenieFlow`` (copied: it is never changed) or a function building one.
        fakes: fakes for every script (a script's own fakes come first).
        coverage: counts the transitions of every script run.
        max_polls: polls a turn may take through invoker states before it fails.

    Example:
        >>> with ScriptRunner(graphs.create_flow, coverage=TransitionCoverage()) as runner:  # doctest: +SKIP
        ...     result = runner.run(script, "q_and_a")
        ...     results = runner.run_file("graphs/q_and_a_cond.genie.yaml")
    """

    def __init__(
        self,
        flow: FlowSource,
        *,
        fakes: FakeInvokers | Mapping[str, FakeAnswer] | None = None,
        coverage: TransitionCoverage | None = None,
        max_polls: int = MAX_POLLS,
    ) -> None:
        self.fakes = FakeInvokers.coerce(fakes)
        self.coverage = coverage
        self.max_polls = max_polls
        self._flow = _private_flow(flow)
        self._active: _Active | None = None
        self._busy = threading.Lock()
        for key in self._flow.model_keys:
            compiled = self._flow.flow_of(key)
            compiled.runner.invoke_override = self._invoke
            compiled.observers.append(functools.partial(self._observe, key, ""))
            for child in compiled.children.values():  # a sub-flow's transitions, named by node
                child.observers.append(functools.partial(self._observe, key, f"{child.label}/"))

    @property
    def flow(self) -> GenieFlow:
        """The private ``GenieFlow`` the scripts run on (in-memory store, fakes attached)."""
        return self._flow

    def close(self) -> None:
        """Close the private flow."""
        self._flow.close()

    def __enter__(self) -> ScriptRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- hooks into the flow ------------------------------------------------------------
    async def _invoke(
        self, template: str, prompt: str, render_data: Mapping[str, Any], invoker: Mapping[str, Any]
    ) -> str | None:
        active = self._active
        if active is None:
            raise RuntimeError(f"invoker template {template!r} called outside a scripted run")
        return await active.fakes(template, prompt, render_data, invoker)

    def _observe(self, model_key: str, prefix: str, source: str, event: str, index: int | None) -> None:
        active = self._active
        if active is None or active.model_key != model_key:
            return
        source = prefix + source
        target = active.declared[(source, index)].target if index is not None else None
        active.transitions.append(TransitionRun(active.turn, source, event, index, target))

    # ---- running ------------------------------------------------------------------------
    def run(
        self,
        script: Script | str | Path | Mapping[str, Any] | Sequence[Turn | Mapping[str, Any]],
        model_key: str | None = None,
        *,
        fakes: FakeInvokers | Mapping[str, FakeAnswer] | None = None,
        raise_on_failure: bool = True,
    ) -> ScriptResult:
        """Run one script: start a session, send each turn's event, wait it out, check it.

        Args:
            script: a :class:`Script`, a file holding one, a mapping, or a list of turns.
            model_key: the model key; default the script's own (from a file: the file's name).
            fakes: fakes for this run, under the script's own and over the runner's.
            raise_on_failure: raise :class:`ScriptFailure` at the first turn that fails; else
                return the result with ``failure`` set.

        Returns:
            The run, turn by turn.

        Raises:
            ScriptFailure: a turn missed an expectation, or called an invoker without a fake.
            ScriptError: the script does not fit the flow (unknown model key, state, event or fake key).
        """
        __tracebackhide__ = True  # pytest shows the test's line, not the kit's
        script = as_script(script)
        key = self._model_key(script, model_key)
        compiled = self._flow.flow_of(key)
        templates = invoker_templates(compiled)
        base = script.source.parent if script.source is not None else Path.cwd()
        try:
            own = FakeInvokers(
                fakes_from_yaml(script.fakes, base),
                allow_real=script.allow_real,
                recorded=base / script.recorded if script.recorded is not None else None,
            )
            turn_fakes = [fakes_from_yaml(turn.fakes, base) for turn in script.turns]
        except GenieGraphError as exc:  # a callable: that does not import, a recording that does not read
            raise ScriptError(f"{script.location}: fakes: {exc}", script.source) from exc
        given = FakeInvokers.coerce(fakes)
        combined = own.over(given).over(self.fakes)
        self._check(script, key, compiled, templates, [own, *(f for f in (given, self.fakes) if f.strict)])
        fake_run = combined._start(
            compiled.runner.library, compiled.runner.invokers, {t: k for t, (k, _) in templates.items()}
        )
        declared = declared_transitions(compiled)
        active = _Active(key, {(t.source, t.index): t for t in declared}, fake_run)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this ScriptRunner is running another script; use one runner per thread")
        self._active = active
        try:
            result = self._converse(script, key, compiled, active, templates, declared, turn_fakes)
        finally:
            self._active = None
            self._busy.release()
        if self.coverage is not None:
            self.coverage.add(result)
        if result.failure is not None and raise_on_failure:
            raise result.failure
        return result

    def run_file(self, path: str | Path, *, raise_on_failure: bool = False) -> list[ScriptResult]:
        """Run every script of a script file, in order.

        Raises:
            ScriptError: the file is not a valid script file, or a script does not fit the flow.
            ScriptFailure: with ``raise_on_failure``, the first script that fails.
        """
        __tracebackhide__ = True
        return [self.run(script, raise_on_failure=raise_on_failure) for script in load_scripts(path)]

    def _model_key(self, script: Script, model_key: str | None) -> str:
        keys = self._flow.model_keys
        key = model_key or script.model_key or (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ScriptError(f"{script.location}: name the model key to run against; the flow has {', '.join(keys)}")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScriptError(
                f"{script.location}: unknown model key {key!r}{hint}; the flow has {', '.join(keys) or '(none)'}. "
                "Set model_key: in the script, or name the file <model_key>.genie.yaml",
                script.source,
            )
        return key

    def _check(
        self,
        script: Script,
        key: str,
        compiled: CompiledFlow,
        templates: Mapping[str, tuple[str, list[str]]],
        strict: Sequence[FakeInvokers],
    ) -> None:
        """The script's names against the flow's: states, events, fake and prompt keys."""
        states = list(compiled.nodes or compiled.kinds)
        flows = [compiled, *compiled.children.values()]
        events = sorted({e for f in flows for out in f.events_out.values() for e in out} | all_trigger_events(compiled))
        listed = ", ".join(templates) or "(none: the flow has no invoker template)"
        problems: list[str] = []

        def unknown(kind: str, name: str, known: Sequence[str]) -> str:
            close = difflib.get_close_matches(name, known, n=1)
            return f"{kind} {name!r} is no {kind} of {key}" + (f" (did you mean {close[0]!r}?)" if close else "")

        def fake_key(where: str, name: str, what: str = "fake") -> None:
            if not any(template_matches(name, template) for template in templates):
                problems.append(f"{where}: {what} {name!r} names no invoker template of {key}; they are: {listed}")

        steps: list[tuple[str, Expect]] = [("start", script.start)] if script.start is not None else []
        steps += [(script.turn_location(n), turn) for n, turn in enumerate(script.turns, start=1)]
        for where, step in steps:
            if step.state is not None and step.state not in states:
                problems.append(f"{where}: {unknown('state', step.state, states)}; its states: {', '.join(states)}")
            for name in step.prompt_contains:
                fake_key(where, name, "prompt_contains key")
            if isinstance(step, Turn):
                if step.event != POLL and step.event not in events and not step.error:
                    problems.append(
                        f"{where}: {unknown('event', step.event, events)}; its events: {', '.join(events)} "
                        "(to test a refusal, add error: true)"
                    )
                for name in step.fakes:
                    fake_key(where, name)
        for fakes in strict:
            for name in fakes.keys:
                fake_key("fakes", name)
        if problems:
            raise ScriptError(
                "\n".join(f"{script.location}, {problem}" for problem in dict.fromkeys(problems)), script.source
            )

    def _settle(self, key: str, session_id: str, answer: AIResponse) -> tuple[AIResponse, int]:
        polls = 0
        while answer.next_actions == [POLL] and polls < self.max_polls:
            self._flow.wait_until_ready(session_id)
            answer = self._flow.process_event(key, EventInput(session_id=session_id, event=POLL, event_input=""))
            polls += 1
        return answer, polls

    def _turn_result(
        self, key: str, compiled: CompiledFlow, active: _Active, number: int, turn: Turn | None, answer: AIResponse
    ) -> TurnResult:
        model = self._flow.get_model(key, answer.session_id)
        return TurnResult(
            number=number,
            event=turn.event if turn is not None else None,
            say=turn.say if turn is not None else "",
            answer=answer,
            state=compiled.node_of(model),
            model=model,
            transitions=[run for run in active.transitions if run.turn == number],
            invocations=[call for call in list(active.fakes.invocations) if call.turn == number],
        )

    def _converse(
        self,
        script: Script,
        key: str,
        compiled: CompiledFlow,
        active: _Active,
        templates: Mapping[str, tuple[str, list[str]]],
        declared: tuple[DeclaredTransition, ...],
        turn_fakes: Sequence[Mapping[str, Any]],
    ) -> ScriptResult:
        start_answer = self._flow.create_new_session(key, user_info=script.user_info, seed_data=script.seed_data)
        session_id = start_answer.session_id
        start_answer, _ = self._settle(key, session_id, start_answer)
        start = self._turn_result(key, compiled, active, 0, None, start_answer)
        result = ScriptResult(
            script=script,
            model_key=key,
            machine=compiled.name,
            session_id=session_id,
            start=start,
            turns=[],
            transitions=active.transitions,
            invocations=active.fakes.invocations,
            declared=declared,
        )
        result.failure = self._verdict(script, start, script.start, active, templates, result, 0)
        for number, turn in enumerate(script.turns, start=1):
            if result.failure is not None:
                break
            active.turn = number
            active.fakes.begin_turn(number, turn_fakes[number - 1])
            answer = self._flow.process_event(
                key, EventInput(session_id=session_id, event=turn.event, event_input=turn.say)
            )
            answer, polls = self._settle(key, session_id, answer)
            step = self._turn_result(key, compiled, active, number, turn, answer)
            result.turns.append(step)
            result.failure = self._verdict(script, step, turn, active, templates, result, polls)
        return result

    def _verdict(
        self,
        script: Script,
        turn: TurnResult,
        expect: Expect | None,
        active: _Active,
        templates: Mapping[str, tuple[str, list[str]]],
        result: ScriptResult,
        polls: int,
    ) -> ScriptFailure | None:
        missing = list(dict.fromkeys(active.fakes.missing_in(turn.number)))
        if missing:
            return UnfakedInvoker(
                _report(result, turn, _unfaked_lines(missing, templates)),
                script=script,
                turn=turn.number,
                result=result,
            )
        problems = active.fakes.problems_in(turn.number)
        if problems:
            body = [
                f"  fake: {line}" if i == 0 else f"    {line}"
                for p in problems
                for i, line in enumerate(p.splitlines())
            ]
            return ScriptFailure(_report(result, turn, body), script=script, turn=turn.number, result=result)
        if turn.answer.next_actions == [POLL] and polls >= self.max_polls:
            body = [f"  still running after {polls} polls: the flow loops through invoker states"]
            return ScriptFailure(_report(result, turn, body), script=script, turn=turn.number, result=result)
        mismatches = _compare(expect, turn) if expect is not None else []
        if not mismatches:
            return None
        body = [line for mismatch in mismatches for line in _mismatch_lines(mismatch)]
        return ScriptFailure(
            _report(result, turn, body), script=script, turn=turn.number, mismatches=mismatches, result=result
        )


def _unfaked_lines(missing: Iterable[str], templates: Mapping[str, tuple[str, list[str]]]) -> list[str]:
    lines = []
    for template in missing:
        kind, states = templates.get(template, ("?", []))
        short = template.rsplit("/", 1)[-1].removesuffix(".jinja2")
        lines += [
            f"  invoker template {template!r} (state {', '.join(states) or '?'}, invoker type {kind}) has no fake.",
            "  Fake it by its name, or the end of it, in the script:",
            "    fakes:",
            f'      {short}: "an answer"      # or [first, second], {{render: ...}}, {{error: ...}}, {{real: true}}',
            f'  or in Python: FakeInvokers({{"{template}": "an answer"}}),',
            f'  or allow_real=["{kind}"] to let the real invoker answer.',
        ]
    return lines


def run_script(
    flow: FlowSource,
    model_key: str | None,
    script: Script | str | Path | Mapping[str, Any] | Sequence[Turn | Mapping[str, Any]],
    *,
    fakes: FakeInvokers | Mapping[str, FakeAnswer] | None = None,
    coverage: TransitionCoverage | None = None,
    raise_on_failure: bool = True,
) -> ScriptResult:
    """Run one scripted conversation against a flow, on an in-memory store, with fake invokers.

    Args:
        flow: a ``GenieFlow`` (copied, never changed) or a function building one (``graphs.create_flow``).
        model_key: the model key; None for the script's own.
        script: a :class:`Script`, a script file holding one, a mapping, or a list of turns.
        fakes: invoker answers by template name (see :class:`FakeInvokers`); the script's own come first.
        coverage: counts the transitions the run takes.
        raise_on_failure: raise :class:`ScriptFailure`; else return the result with ``failure`` set.

    Returns:
        The run, turn by turn.

    Raises:
        ScriptFailure: a turn missed an expectation (the message names the turn and shows the diff).
        ScriptError: the script is malformed or does not fit the flow.

    Example:
        >>> run_script(
        ...     graphs.create_flow,
        ...     "q_and_a_capture",
        ...     [{"say": "I am Ada", "state": "welcome_message", "fields": {"user_name": "Ada"}}],
        ...     fakes={"ai_extracts_name": "Ada"},
        ... )  # doctest: +SKIP
    """
    __tracebackhide__ = True
    with ScriptRunner(flow, coverage=coverage) as runner:
        return runner.run(script, model_key, fakes=fakes, raise_on_failure=raise_on_failure)
