"""Fake invokers: answers for invoker templates, by template name, for scripted conversations.

Only the invoker call is replaced (through ``CompositeRunner.invoke_override``): templates still
render, composites still run in sequence, in parallel and per map item, ``on_error`` still
applies, and the flow's hooks and conditions see the answers as they would a model's.
"""

from __future__ import annotations

import difflib
import inspect
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .._imports import import_object
from .._invokers import InvokerRegistry
from .._templates import TemplateLibrary
from .._usage import report_usage
from ..errors import GenieGraphError, InvokerError

FAKE_MODEL = "fake"
"""The model name under which fake answers count their usage: one token per word of prompt and answer."""

FakeCallable = Callable[[str, Mapping[str, Any]], "str | Awaitable[str]"]
"""A fake called with the rendered prompt and the render data; returns the answer (may be async)."""


@dataclass(frozen=True)
class FakeFailure:
    """A faked invoker failure: the invoker raises ``InvokerError(message)`` (``on_error`` applies).

    Example:
        >>> FakeInvokers({"llm/answer.jinja2": ["fine", FakeFailure("rate limited")]})  # doctest: +SKIP
    """

    message: str = "faked invoker failure"


@dataclass(frozen=True)
class Render:
    """A fake answering a Jinja2 template rendered with the call's render data (and ``prompt``).

    Example:
        >>> Render("{{ map_value | capitalize }} matters.")  # one answer per map item
        Render(template='{{ map_value | capitalize }} matters.')
    """

    template: str


class _RealType:
    def __repr__(self) -> str:
        return "FakeInvokers.REAL"


REAL = _RealType()

FakeAnswer = str | FakeFailure | Render | FakeCallable | _RealType | Sequence[Any]
"""What a template name maps to: a text (every call), a list (one item per call, in order), a
:class:`FakeFailure`, a :class:`Render`, a callable ``(prompt, render_data) -> str``, or ``REAL``."""

_SPEC_KEYS = ("answer", "answers", "render", "error", "callable", "real")
_SPEC_SHAPE = (
    "a fake is a text, a list of answers, or a mapping with one of "
    "answer: <text>, answers: [<text>, ...], render: <Jinja2 text>, error: <message>, "
    'callable: "package.module:function", real: true'
)


class MissingFake(Exception):
    """An invoker template was called without a fake (raised inside the run; the script fails)."""


class FakeRecordingError(GenieGraphError, ValueError):
    """A file of recorded answers cannot be read."""


def check_fake_spec(key: str, spec: Any) -> None:
    """Check a fake as written in a script file.

    Raises:
        ValueError: the spec has no known shape (the message lists the shapes).
    """
    _from_yaml(key, spec, None)


def _from_yaml(key: str, spec: Any, base: Path | None) -> Any:
    if isinstance(spec, str | int | float) and not isinstance(spec, bool):
        return str(spec)
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"fake {key!r}: an empty list answers nothing; give at least one answer")
        items = [_from_yaml(key, item, base) for item in spec]
        if any(isinstance(item, list) for item in items):
            raise ValueError(f"fake {key!r}: a list of answers holds texts or mappings, not lists")
        return items
    if isinstance(spec, Mapping) and len(spec) == 1:
        [(kind, value)] = spec.items()
        if kind == "answer" and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if kind == "answers" and isinstance(value, list):
            return _from_yaml(key, value, base)
        if kind == "render" and isinstance(value, str):
            return Render(value)
        if kind == "error" and isinstance(value, str):
            return FakeFailure(value)
        if kind == "real" and value is True:
            return REAL
        if kind == "callable" and isinstance(value, str):
            return import_object(value) if base is not None else value
    if callable(spec) or isinstance(spec, FakeFailure | Render):
        raise ValueError(
            f"fake {key!r}: a script's fakes are written as in YAML; pass {type(spec).__name__} fakes with "
            "run_script(..., fakes=...) or FakeInvokers"
        )
    raise ValueError(f"fake {key!r}: {spec!r} is not a fake; {_SPEC_SHAPE}")


def fakes_from_yaml(specs: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Fakes as written in a script file (``fakes:``), as :class:`FakeInvokers` takes them."""
    return {key: _from_yaml(key, spec, base or Path.cwd()) for key, spec in specs.items()}


def template_matches(key: str, template: str) -> bool:
    """Whether fake ``key`` names ``template``: the whole name, or its trailing path parts,
    with or without the ``.jinja2`` extension (``ai_creates_response``, ``llm/ai_creates_response.jinja2``)."""
    key = key.strip("/")
    names = {template, template.removesuffix(".jinja2"), template.removesuffix(".j2")}
    return bool(key) and any(name == key or name.endswith("/" + key) for name in names)


@dataclass(frozen=True)
class Invocation:
    """One invoker call of a scripted run.

    Attributes:
        turn: the turn it happened in (0: the session's start).
        template: the invoker template's name.
        prompt: the rendered template.
        answer: the answer, or None when the call failed.
        source: what answered: ``fake 'key'``, ``recording``, ``real echo``, ... or ``missing``.
        error: the failure's message, when it failed.
    """

    turn: int
    template: str
    prompt: str
    answer: str | None
    source: str
    error: str | None = None


@dataclass
class _Recording:
    path: Path
    entries: list[dict[str, Any]]
    match_prompts: bool

    @classmethod
    def load(cls, path: Path, match_prompts: bool) -> _Recording:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise FakeRecordingError(f"{path}: cannot read the recorded answers ({exc})") from exc
        if isinstance(data, Mapping):
            data = data.get("invocations")
        shape = "a list of {template, answer} mappings (prompt optional), as save_recording writes"
        if not isinstance(data, list):
            raise FakeRecordingError(f"{path}: recorded answers must be {shape}")
        for number, entry in enumerate(data, start=1):
            valid = (
                isinstance(entry, Mapping)
                and isinstance(entry.get("template"), str)
                and (isinstance(entry.get("answer"), str) or isinstance(entry.get("error"), str))
            )
            if not valid:
                raise FakeRecordingError(
                    f"{path}: entry {number} is not {{template, answer}}; the file must be {shape}"
                )
        return cls(path, [dict(entry) for entry in data], match_prompts)

    def templates(self) -> set[str]:
        return {entry["template"] for entry in self.entries}


@dataclass
class _Layer:
    answers: dict[str, Any]
    recording: _Recording | None = None
    origin: str = "fakes"


class FakeInvokers:
    """Answers for invoker templates, by template name, in place of the invokers.

    A key names a template by its full name (``q_and_a/llm/ai_creates_response.jinja2``) or by
    its trailing path parts, with or without ``.jinja2`` (``ai_creates_response``); the longest
    matching key wins. A value is:

    * a text: the answer to every call;
    * a list: one item per call, in order (running out fails the script);
    * a callable ``(prompt, render_data) -> str``, sync or async (raise ``InvokerError`` to fake
      a failure; any other exception fails the script);
    * :class:`Render`: a Jinja2 text rendered with the call's render data and ``prompt``;
    * :class:`FakeFailure`: the invoker fails (``on_error`` applies);
    * ``FakeInvokers.REAL``: the template's real invoker answers.

    An invoker template with no fake fails the script, naming the template, unless its invoker
    type is in ``allow_real`` (``"echo"``, ``"python"``, ...; ``"*"`` for any).

    Args:
        answers: template name -> fake.
        allow_real: invoker types (``type:`` in meta.yaml) that answer for real when not faked.
        recorded: a file of recorded answers (see :func:`save_recording`), replayed in order per
            template after ``answers``.
        match_prompts: a recorded answer whose recorded prompt differs from the rendered one
            fails the script (the prompt changed since the recording).
        strict: a key that names no invoker template of the flow under test fails the script
            before it starts (catches typos).

    Example:
        >>> fakes = FakeInvokers(
        ...     {
        ...         "ai_extracts_name": ["UNDEFINED", "Ada"],
        ...         "ai_creates_response": lambda prompt, data: f"Hello {data['user_name']}",
        ...     },
        ...     allow_real=["echo"],
        ... )
    """

    REAL: ClassVar[_RealType] = REAL
    """Let the template's real invoker answer."""

    def __init__(
        self,
        answers: Mapping[str, FakeAnswer] | None = None,
        *,
        allow_real: Iterable[str] = (),
        recorded: str | Path | None = None,
        match_prompts: bool = True,
        strict: bool = True,
    ) -> None:
        recording = _Recording.load(Path(recorded), match_prompts) if recorded is not None else None
        self._layers: tuple[_Layer, ...] = (_Layer(_checked(answers or {}), recording),)
        self.allow_real = frozenset(allow_real)
        self.strict = strict

    @classmethod
    def from_recording(cls, path: str | Path, *, match_prompts: bool = True, **kwargs: Any) -> FakeInvokers:
        """Fakes replaying the answers recorded in ``path`` (YAML or JSON, as :func:`save_recording` writes)."""
        return cls(recorded=path, match_prompts=match_prompts, **kwargs)

    @classmethod
    def coerce(cls, fakes: FakeInvokers | Mapping[str, FakeAnswer] | None) -> FakeInvokers:
        """``fakes`` as a ``FakeInvokers`` (a mapping becomes its answers; None, no fakes)."""
        if isinstance(fakes, FakeInvokers):
            return fakes
        return cls(fakes)

    def over(self, base: FakeInvokers) -> FakeInvokers:
        """These fakes first, then ``base``'s: the answers of both, ``allow_real`` of both."""
        combined = FakeInvokers(strict=self.strict and base.strict)
        combined._layers = self._layers + base._layers
        combined.allow_real = self.allow_real | base.allow_real
        return combined

    @property
    def keys(self) -> list[str]:
        """Every template key of every layer, the first layer's first."""
        return [key for layer in self._layers for key in layer.answers]

    def __repr__(self) -> str:
        return f"FakeInvokers(keys={self.keys!r}, allow_real={sorted(self.allow_real)!r})"

    # ---- one scripted run ---------------------------------------------------------------
    def _start(self, library: TemplateLibrary, invokers: InvokerRegistry, templates: Mapping[str, str]) -> _FakeRun:
        return _FakeRun(self, library, invokers, dict(templates))


def _checked(answers: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in answers.items():
        if not isinstance(key, str) or not key.strip("/"):
            raise ValueError(f"fake keys are template names, got {key!r}")
        items = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, list | tuple) and not value:
            raise ValueError(f"fake {key!r}: an empty list answers nothing; give at least one answer")
        for item in items:
            if not (isinstance(item, str | FakeFailure | Render | _RealType) or callable(item)):
                raise ValueError(f"fake {key!r}: {item!r} is not a text, FakeFailure, Render, REAL or callable")
    return dict(answers)


@dataclass
class _FakeRun:
    """The fakes of one scripted run: list positions, the calls made, and what went wrong."""

    fakes: FakeInvokers
    library: TemplateLibrary
    invokers: InvokerRegistry
    templates: dict[str, str]
    """invoker template name -> its declared invoker type."""
    turn: int = 0
    turn_layer: _Layer | None = None
    invocations: list[Invocation] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)
    _positions: dict[int, int] = field(default_factory=dict)
    _recorded: dict[tuple[int, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _kept: list[_Layer] = field(default_factory=list)
    """Every turn's layer, alive for the run: list positions are kept by the lists' ids."""

    def begin_turn(self, number: int, answers: Mapping[str, Any] | None) -> None:
        self.turn = number
        self.turn_layer = _Layer(_checked(answers), origin=f"turn {number}") if answers else None
        if self.turn_layer is not None:
            self._kept.append(self.turn_layer)

    @property
    def layers(self) -> list[_Layer]:
        return ([self.turn_layer] if self.turn_layer is not None else []) + list(self.fakes._layers)

    def unknown_keys(self, layers: Iterable[_Layer] | None = None) -> list[str]:
        """Keys naming no invoker template of the flow under test."""
        keys = [key for layer in (layers if layers is not None else self.layers) for key in layer.answers]
        return [key for key in keys if not any(template_matches(key, t) for t in self.templates)]

    def problems_in(self, turn: int) -> list[str]:
        with self._lock:
            return [problem for number, problem in self.problems if number == turn]

    def missing_in(self, turn: int) -> list[str]:
        with self._lock:
            return [template for number, template in self.missing if number == turn]

    def _log(self, invocation: Invocation) -> None:
        with self._lock:
            self.invocations.append(invocation)

    def _problem(self, problem: str) -> None:
        with self._lock:
            self.problems.append((self.turn, problem))

    def _next_item(self, spec: Sequence[Any], key: str, template: str) -> Any:
        with self._lock:
            position = self._positions.get(id(spec), 0)
            self._positions[id(spec)] = position + 1
        if position >= len(spec):
            raise _Exhausted(
                f"fake {key!r} for template {template!r} has {len(spec)} answer(s), all used; the flow called "
                f"it again (call {position + 1}). Add answers to its list, or use a text to answer every call"
            )
        return spec[position]

    async def __call__(
        self, template: str, prompt: str, render_data: Mapping[str, Any], invoker: Mapping[str, Any]
    ) -> str | None:
        turn = self.turn
        for layer in self.layers:
            matching = [key for key in layer.answers if template_matches(key, template)]
            if matching:
                key = max(matching, key=len)
                return await self._answer(layer.answers[key], key, template, prompt, render_data, invoker, turn)
            if layer.recording is not None and template in layer.recording.templates():
                return self._replay(layer.recording, template, prompt, turn)
        invoker_type = str(invoker.get("type", "?"))
        if invoker_type in self.fakes.allow_real or "*" in self.fakes.allow_real:
            return await self._real(invoker, template, prompt, turn, f"real {invoker_type}")
        with self._lock:
            self.missing.append((turn, template))
        self._log(Invocation(turn, template, prompt, None, "missing", "no fake"))
        raise MissingFake(f"invoker template {template!r} has no fake")

    async def _real(self, invoker: Mapping[str, Any], template: str, prompt: str, turn: int, source: str) -> str:
        """The real invoker's answer, logged (so a run against real invokers can be recorded)."""
        try:
            answer = await self.invokers.pool_for(invoker).ainvoke(prompt)
        except Exception as exc:
            self._log(Invocation(turn, template, prompt, None, source, str(exc)))
            raise
        self._log(Invocation(turn, template, prompt, answer, source))
        return answer

    async def _answer(
        self,
        spec: Any,
        key: str,
        template: str,
        prompt: str,
        data: Mapping[str, Any],
        invoker: Mapping[str, Any],
        turn: int,
    ) -> str:
        source = f"fake {key!r}"
        try:
            item = self._next_item(spec, key, template) if isinstance(spec, list | tuple) else spec
        except _Exhausted as exhausted:
            self._problem(str(exhausted))
            self._log(Invocation(turn, template, prompt, None, source, str(exhausted)))
            raise
        if isinstance(item, _RealType):
            return await self._real(invoker, template, prompt, turn, f"real ({source})")
        try:
            if isinstance(item, FakeFailure):
                raise InvokerError(item.message)
            if isinstance(item, Render):
                answer = self.library.render_string(item.template, {**data, "prompt": prompt})
            elif isinstance(item, str):
                answer = item
            else:
                result = item(prompt, data)
                if inspect.isawaitable(result):
                    result = await result
                if not isinstance(result, str):
                    raise TypeError(f"returned {type(result).__name__}, not str")
                answer = result
        except InvokerError as failure:  # a faked failure: the flow handles it as a real one
            self._log(Invocation(turn, template, prompt, None, source, str(failure)))
            raise
        except Exception as exc:  # a broken fake fails the script, not the flow
            problem = f"fake {key!r} for template {template!r} raised {type(exc).__name__}: {exc}"
            self._problem(problem)
            self._log(Invocation(turn, template, prompt, None, source, problem))
            raise
        self._log(Invocation(turn, template, prompt, answer, source))
        report_usage(len(prompt.split()), len(answer.split()), FAKE_MODEL)
        return answer

    def _replay(self, recording: _Recording, template: str, prompt: str, turn: int) -> str:
        entries = [entry for entry in recording.entries if entry["template"] == template]
        with self._lock:
            position = self._recorded.get((id(recording), template), 0)
            self._recorded[(id(recording), template)] = position + 1
        source = f"recording {recording.path.name}"
        if position >= len(entries):
            problem = (
                f"the recording {recording.path} holds {len(entries)} answer(s) for template {template!r}, all used; "
                "record the conversation again, or fake the template"
            )
            self._problem(problem)
            self._log(Invocation(turn, template, prompt, None, source, problem))
            raise _Exhausted(problem)
        entry = entries[position]
        recorded_prompt = entry.get("prompt")
        if recording.match_prompts and isinstance(recorded_prompt, str) and recorded_prompt != prompt:
            diff = "\n".join(
                difflib.unified_diff(
                    recorded_prompt.splitlines(), prompt.splitlines(), "recorded prompt", "rendered prompt", lineterm=""
                )
            )
            self._problem(
                f"the prompt of template {template!r} (call {position + 1}) differs from the one recorded in "
                f"{recording.path}; record again, or pass match_prompts=False:\n{diff}"
            )
        if isinstance(entry.get("error"), str) and not isinstance(entry.get("answer"), str):
            self._log(Invocation(turn, template, prompt, None, source, entry["error"]))
            raise InvokerError(entry["error"])
        answer = str(entry["answer"])
        self._log(Invocation(turn, template, prompt, answer, source))
        report_usage(len(prompt.split()), len(answer.split()), FAKE_MODEL)
        return answer


class _Exhausted(Exception):
    """A list of fake answers (or a recording) ran out."""


def save_recording(path: str | Path, invocations: Iterable[Invocation]) -> Path:
    """Write invoker calls (e.g. ``ScriptResult.invocations`` of a run against real invokers) as a
    recording that :meth:`FakeInvokers.from_recording` replays; ``.json`` writes JSON, else YAML.

    Returns:
        The path written.
    """
    path = Path(path)
    entries: list[dict[str, Any]] = []
    for call in invocations:
        if call.answer is None and call.error is None:
            continue  # answered by a real invoker whose answer was not seen
        entry: dict[str, Any] = {"template": call.template, "prompt": call.prompt}
        if call.answer is not None:
            entry["answer"] = call.answer
        else:
            entry["error"] = call.error
        entries.append(entry)
    if path.suffix == ".json":
        text = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=120)
    path.write_text(text, encoding="utf-8")
    return path
