"""Scripts: a conversation to hold with a flow, and what each turn must show.

A script is a pydantic model, built in Python or loaded from a ``*.genie.yaml`` file. Loading
checks the shape (unknown keys, bad regexes, bad JMESPath) and names the file, the script and the
turn (with its line) at fault; :func:`~genie_graph.testing.run_script` checks the rest against the
flow (state and event names, fake keys) before sending anything.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jmespath
import yaml
from jmespath.exceptions import JMESPathError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..errors import GenieGraphError
from ._fakes import check_fake_spec

SCRIPT_SUFFIXES = (".genie.yaml", ".genie.yml")
"""A file with one of these suffixes is a script file (found beside a flow, collected by pytest)."""

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.(?:[A-Za-z_]\w*|-?\d+))*$")


class ScriptError(GenieGraphError, ValueError):
    """A script file cannot be read, or a script does not fit its flow.

    Attributes:
        source: the script file, when the script came from one.
    """

    def __init__(self, message: str, source: Path | None = None) -> None:
        self.source = source
        super().__init__(message)


def field_expression(path: str) -> Any:
    """The compiled JMESPath of a ``fields:`` key; a dotted path (``analyses.0``) works too.

    Raises:
        ValueError: the path is neither.
    """
    expression = path
    if _DOTTED.match(path):  # ``a.b.0`` -> ``a.b[0]``; plain names are JMESPath already
        expression = re.sub(r"\.(-?\d+)", r"[\1]", path)
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"{path!r} is neither a dotted path nor JMESPath ({exc})") from None


def _text(value: Any) -> Any:
    """YAML reads ``say: 42`` as a number; a script means the text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _texts(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [_text(value)]
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


class Expect(BaseModel):
    """What a turn (or the session's start) must show; an expectation left unset is not checked.

    Attributes:
        state: the id of the state the session is in once the turn has settled.
        response: the response, exactly (leading and trailing whitespace ignored).
        response_contains: text(s) the response contains.
        response_matches: a regular expression the response matches (``re.search``).
        fields: model fields by dotted path or JMESPath (``user_name``, ``analyses[-1]``,
            ``length(aspects)``), each with the value it must equal.
        error: the turn's answer has an error (a refused event, an invoker failure): ``true``, or
            a text the error contains. Unset or ``false``: an error fails the turn.
        next_actions: the events the answer offers, in order.
        prompt_contains: texts the rendered prompt of an invoker template (keyed as fakes are)
            contains, for its calls in this turn.

    Example:
        >>> Expect(state="user_enters_query", response_contains="You said", fields={"user_name": "Ada"})
        Expect(state='user_enters_query', response_contains=['You said'], fields={'user_name': 'Ada'})
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    state: str | None = None
    response: str | None = None
    response_contains: list[str] = Field(default_factory=list)
    response_matches: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    error: bool | str | None = None
    next_actions: list[str] | None = None
    prompt_contains: dict[str, list[str]] = Field(default_factory=dict)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        return [(name, value) for name, value in super().__repr_args__() if name in self.model_fields_set]

    @field_validator("response", mode="before")
    @classmethod
    def _response_text(cls, value: Any) -> Any:
        return _text(value)

    @field_validator("response_contains", "next_actions", mode="before")
    @classmethod
    def _text_list(cls, value: Any) -> Any:
        return _texts(value)

    @field_validator("prompt_contains", mode="before")
    @classmethod
    def _prompt_texts(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: _texts(texts) for key, texts in value.items()}
        return value

    @field_validator("response_matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            field_expression(path)
        return value


class Turn(Expect):
    """One event sent to the session (``user_input`` by default), then what it must show.

    The turn waits through invoker states (polling) until the session settles, so its
    expectations are about where the flow stops next.

    Attributes:
        say: the event's input text (``input`` is accepted too).
        event: the event to send; ``poll`` polls.
        fakes: invoker answers for this turn only, over the script's (see ``FakeInvokers``).

    Example:
        >>> Turn(say="My name is Ada", state="welcome_message", fields={"user_name": "Ada"})
        Turn(state='welcome_message', fields={'user_name': 'Ada'}, say='My name is Ada')
    """

    say: str = Field("", validation_alias=AliasChoices("say", "input"))
    event: str = "user_input"
    fakes: dict[str, Any] = Field(default_factory=dict)
    _line: int | None = PrivateAttr(None)

    @field_validator("say", mode="before")
    @classmethod
    def _say_text(cls, value: Any) -> Any:
        return "" if value is None else _text(value)

    @field_validator("fakes")
    @classmethod
    def _fakes(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_fakes(value)

    @property
    def line(self) -> int | None:
        """The line of the turn in its script file (1-based), when it came from one."""
        return self._line


def _checked_fakes(fakes: dict[str, Any]) -> dict[str, Any]:
    for key, spec in fakes.items():
        check_fake_spec(key, spec)
    return fakes


class Script(BaseModel):
    """A conversation with one model key of a flow: the start, then the turns in order.

    Attributes:
        name: what the script shows (reports name it).
        model_key: the flow's model key; in a file, default the file's name before ``.genie.yaml``.
        description: free text.
        seed_data: passed to ``create_new_session`` (the model's ``seed_model``).
        user_info: a ``User`` mapping for ``create_new_session``.
        start: what the new session must show (its intro).
        fakes: invoker answers by template name (see ``FakeInvokers``).
        allow_real: invoker types (``echo``, ``python``, ...) that answer for real when not faked.
        recorded: a file of recorded invoker answers (relative to the script's file).
        turns: the turns, in order.

    Example:
        >>> script = Script(
        ...     name="one question",
        ...     model_key="q_and_a",
        ...     fakes={"ai_creates_response.jinja2": "Hello!"},
        ...     turns=[Turn(say="Hi", state="user_enters_query", response="Hello!")],
        ... )
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "script"
    model_key: str | None = None
    description: str | None = None
    seed_data: str | None = None
    user_info: dict[str, Any] | None = None
    start: Expect | None = None
    fakes: dict[str, Any] = Field(default_factory=dict)
    allow_real: list[str] = Field(default_factory=list)
    recorded: str | None = None
    turns: list[Turn] = Field(default_factory=list)
    _source: Path | None = PrivateAttr(None)
    _line: int | None = PrivateAttr(None)

    @field_validator("allow_real", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        return _texts(value)

    @field_validator("fakes")
    @classmethod
    def _fakes(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_fakes(value)

    @property
    def source(self) -> Path | None:
        """The file the script came from."""
        return self._source

    @property
    def line(self) -> int | None:
        """The line where the script starts in its file (1-based)."""
        return self._line

    @property
    def location(self) -> str:
        """``file:line: script 'name'``, or ``script 'name'`` for a script built in Python."""
        where = f"script {self.name!r}"
        if self._source is None:
            return where
        return f"{_display_path(self._source)}:{self._line or 1}: {where}"

    def turn_location(self, number: int) -> str:
        """Where turn ``number`` (1-based; 0 is the start) is: its number and, from a file, its line."""
        if number == 0:
            return "the start"
        turn = self.turns[number - 1]
        line = f" (line {turn.line})" if turn.line is not None else ""
        return f"turn {number} of {len(self.turns)}{line}"


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- files ------------------------------------------------------------------------------------
_FILE_KEYS = frozenset({"model_key", "description", "seed_data", "user_info", "fakes", "allow_real", "recorded"})


def script_stem(path: Path) -> str:
    """A script file's name without ``.genie.yaml`` (or ``.yaml``): the default model key."""
    name = path.name
    for suffix in (*SCRIPT_SUFFIXES, ".yaml", ".yml", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_script_file(path: Path) -> bool:
    """Whether ``path`` is named like a script file (``*.genie.yaml`` or ``*.genie.yml``)."""
    return path.name.endswith(SCRIPT_SUFFIXES)


def find_scripts(*paths: str | Path, recursive: bool = True) -> list[Path]:
    """Script files under ``paths``: a file is taken as it is, a directory is searched for
    ``*.genie.yaml`` / ``*.genie.yml`` (hidden and ``__pycache__`` directories skipped).

    Raises:
        ScriptError: a path does not exist.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            for candidate in sorted(candidates):
                relative = candidate.relative_to(path).parts[:-1]
                if any(part.startswith(".") or part == "__pycache__" for part in relative):
                    continue
                if candidate.is_file() and is_script_file(candidate):
                    found.append(candidate)
        else:
            raise ScriptError(
                f"{path}: no such file or directory; give script files or directories holding *.genie.yaml"
            )
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def load_scripts(path: str | Path) -> list[Script]:
    """The scripts of a YAML (or JSON) script file.

    A file holds one script (a mapping with ``turns:``) or several (``scripts:``, a list, beside
    file-wide defaults for ``model_key``, ``fakes``, ``allow_real``, ``recorded``, ``seed_data``,
    ``user_info``). ``model_key`` defaults to the file's name before ``.genie.yaml``.

    Raises:
        ScriptError: the file cannot be read, is not valid YAML, or a script is malformed; the
            message names the file, the script, the turn and its line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read the script file ({exc})", path) from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{_display_path(path)}: not valid YAML: {exc}", path) from exc
    return parse_scripts(data, source=path, root=root)


def parse_scripts(data: Any, *, source: Path | None = None, root: yaml.Node | None = None) -> list[Script]:
    """The scripts of already parsed YAML data (see :func:`load_scripts`).

    Raises:
        ScriptError: the data is not a script or a list of scripts.
    """
    where = _display_path(source) if source is not None else "<script>"
    stem = script_stem(source) if source is not None else "script"
    if not isinstance(data, Mapping):
        raise ScriptError(
            f"{where}: a script file is a mapping with 'turns:' (one script) or 'scripts:' (a list of them), "
            f"got {type(data).__name__}",
            source,
        )
    if "scripts" in data:
        unknown = sorted(set(data) - _FILE_KEYS - {"scripts"})
        if unknown:
            raise ScriptError(
                f"{where}: unknown key(s) {', '.join(map(str, unknown))} beside 'scripts:'; file-wide keys are "
                f"{', '.join(sorted(_FILE_KEYS))} (put turns in each script)",
                source,
            )
        items = data["scripts"]
        if not isinstance(items, list) or not items:
            raise ScriptError(f"{where}: 'scripts:' must be a non-empty list of scripts", source)
        defaults = {key: value for key, value in data.items() if key != "scripts"}
        raw: list[tuple[Any, tuple[str | int, ...], str]] = [
            (item, ("scripts", index), f"{stem} #{index + 1}") for index, item in enumerate(items)
        ]
    else:
        defaults = {}
        raw = [(data, (), stem)]
    scripts: list[Script] = []
    for item, path, default_name in raw:
        if not isinstance(item, Mapping):
            raise ScriptError(f"{where}: {_path_text(path)} must be a mapping with 'turns:'", source)
        merged = {**defaults, **item}
        if "fakes" in defaults and "fakes" in item and isinstance(defaults["fakes"], Mapping):
            merged["fakes"] = {**defaults["fakes"], **(item["fakes"] or {})}
        merged.setdefault("name", default_name)
        merged.setdefault("model_key", stem if source is not None else None)
        try:
            script = Script.model_validate(merged)
        except ValidationError as exc:
            raise ScriptError(_validation_message(exc, where, merged, path, root), source) from None
        script._source = source
        script._line = _line_of(root, path)
        for index, turn in enumerate(script.turns):
            turn._line = _line_of(root, (*path, "turns", index))
        scripts.append(script)
    names = [script.name for script in scripts]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ScriptError(f"{where}: script names must differ within a file; repeated: {', '.join(repeated)}", source)
    return scripts


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".") or "the file"


def _line_of(root: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node.start_mark.line + 1 if node is not None else None


_TURN_KEYS = sorted({*Turn.model_fields, "input"})
_SCRIPT_KEYS = sorted(Script.model_fields)
_EXPECT_KEYS = sorted(Expect.model_fields)


def _validation_message(
    exc: ValidationError, where: str, data: Mapping[str, Any], path: Sequence[str | int], root: yaml.Node | None
) -> str:
    name = data.get("name")
    head = f"{where}: script {name!r}" if isinstance(name, str) else f"{where}: {_path_text(path)}"
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        if loc[:1] == ["turns"] and len(loc) >= 2 and isinstance(loc[1], int):
            number = loc[1] + 1
            line = _line_of(root, (*path, "turns", loc[1]))
            turns = data.get("turns")
            count = f" of {len(turns)}" if isinstance(turns, list) else ""
            place = f"turn {number}{count}" + (f" (line {line})" if line else "")
            rest, known = loc[2:], _TURN_KEYS
        elif loc[:1] == ["start"]:
            line = _line_of(root, (*path, "start"))
            place = "start" + (f" (line {line})" if line else "")
            rest, known = loc[1:], _EXPECT_KEYS
        else:
            place, rest, known = "", loc, _SCRIPT_KEYS
        key = ".".join(str(part) for part in rest)
        if error["type"] == "extra_forbidden":
            unknown = str(rest[-1]) if rest else key
            close = difflib.get_close_matches(unknown, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the keys here are {', '.join(known)}"
            problem = f"unknown key {unknown!r}{hint}"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problem = f"{key}: {message}" if key else message
        lines.append(f"{head}, {place}: {problem}" if place else f"{head}: {problem}")
    return "\n".join(lines)
