"""The data a dialogue runs on: ``GenieModel`` and the pieces it is made of.

This mirrors Genie Flow 0.12's ``genie_flow.model`` (``versioned.py``, ``dialogue.py``,
``secondary_store.py``, ``genie.py``) so that a Genie Flow model ports by changing imports:

* :class:`VersionedModel`: pydantic model with a schema version and a byte serialization
  ``b"{version}:{0|1}:{json}"``.
* :class:`DialogueElement` and :class:`DialogueFormat`: one utterance, and the ways a whole
  dialogue is rendered into a prompt.
* :class:`SecondaryStore`: write-once ``str -> VersionedModel`` mapping kept next to the model.
* :class:`GenieModel`: the session state python-statemachine drives.
"""

from __future__ import annotations

import enum
import functools
import importlib
import json
import typing
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PrivateAttr,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema, to_json

from genie_graph import _packing
from genie_graph._assignments import CountsAssignments
from genie_graph._history import HistoryEntry, HistoryKind
from genie_graph._stack import FlowStack, flow_label
from genie_graph._tools import ApprovalRequest
from genie_graph._usage import SessionUsage
from genie_graph.errors import SchemaUpgradeError, SecondaryStorageError, SerializationError

if TYPE_CHECKING:
    from pydantic.main import IncEx
    from statemachine import StateMachine

__all__ = [
    "Actor",
    "DialogueElement",
    "DialogueFormat",
    "DialoguePersistence",
    "GenieModel",
    "SecondaryStore",
    "StateKind",
    "VersionedModel",
]


class Actor(StrEnum):
    """Who produced a dialogue element."""

    SYSTEM = "system"
    ASSISTANT = "assistant"
    USER = "user"


class StateKind(IntEnum):
    """What a state does: wait for the user, or call an invoker (Genie's ``source_type``/``target_type``)."""

    USER = 0
    INVOKER = 1
    SUBFLOW = 2
    """The state runs another flow (a :class:`~genie_graph.SubFlow`) and goes on when it returns."""


class DialoguePersistence(StrEnum):
    """What a transition records in the dialogue once it is done.

    Attributes:
        NONE: nothing is recorded.
        RAW: ``actor_input`` is recorded as it is.
        RENDERED: the target state's template is rendered, stored in ``actor_input`` and recorded.
    """

    NONE = "none"
    RAW = "raw"
    RENDERED = "rendered"


def _is_none(value: object) -> bool:
    return value is None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DialogueElement(CountsAssignments):
    """One utterance in a dialogue.

    Attributes:
        actor: who said it; the plain strings ``"system"``, ``"assistant"`` and ``"user"`` are accepted.
        actor_text: what was said.
        timestamp: when it was recorded; timezone-aware UTC by default.
        sender: who said it, for a user's utterance in a group session (a message's sender);
            None otherwise, and then left out of the JSON.

    Example:
        >>> DialogueElement(actor="user", actor_text="hello").text
        'hello'
    """

    actor: Actor = Field(description="the originator of the dialogue element")
    actor_text: str = Field(description="the text that was produced by the actor")
    timestamp: datetime = Field(default_factory=_utc_now, description="when this dialogue element was created (UTC)")
    sender: str | None = Field(
        default=None, exclude_if=_is_none, description="who said it, in a group session (a message's sender)"
    )

    @property
    def text(self) -> str:
        """The text of the utterance (same as ``actor_text``)."""
        return self.actor_text


def _as_yaml(element: DialogueElement) -> str:
    lines = element.actor_text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    # A first content line that starts with blanks would make YAML guess a deeper indentation and
    # then fail on the next line; an explicit indentation indicator keeps it parseable.
    indicator = "2" if first[:1].isspace() else ""
    body = "".join(f"    {line}\n" for line in lines)
    name = "" if element.sender is None else f"  name: {json.dumps(element.sender)}\n"
    return f"- role: {element.actor}\n{name}  content: >{indicator}\n{body}"


def _speaker(element: DialogueElement) -> str:
    """``USER``, or ``USER alice`` for a group message's sender."""
    actor = element.actor.upper()
    return actor if element.sender is None else f"{actor} {element.sender}"


def _as_question_answer(dialogue: Iterable[DialogueElement]) -> str:
    blocks: list[str] = []
    question: str | None = None
    for element in dialogue:
        if element.actor is Actor.USER:
            if question is not None:
                blocks.append(f"Q: {question}\n")
            question = element.actor_text if element.sender is None else f"({element.sender}) {element.actor_text}"
        elif element.actor is Actor.ASSISTANT:
            prefix = f"Q: {question}\n" if question is not None else ""
            blocks.append(f"{prefix}A: {element.actor_text}\n")
            question = None
    if question is not None:
        blocks.append(f"Q: {question}\n")
    return "\n".join(blocks)


class DialogueFormat(StrEnum):
    """The ways a dialogue can be rendered into text, e.g. for a prompt.

    Example:
        >>> d = [DialogueElement(actor="user", actor_text="hi"),
        ...      DialogueElement(actor="assistant", actor_text="hello")]
        >>> DialogueFormat.CHAT.format(d)
        '[USER]: hi\\n\\n[ASSISTANT]: hello\\n'
        >>> DialogueFormat.QUESTION_ANSWER.format(d)
        'Q: hi\\nA: hello\\n'
    """

    PYTHON_REPR = "python_repr"
    JSON = "json"
    YAML = "yaml"
    CHAT = "chat"
    QUESTION_ANSWER = "question_answer"

    def format(self, dialogue: Iterable[DialogueElement]) -> str:  # type: ignore[override]
        """Render a dialogue in this format.

        ``PYTHON_REPR`` is ``repr`` of the list; ``JSON`` a JSON list of the elements (timestamps
        as ISO strings); ``YAML`` a list of ``{role, content}`` mappings, content as a folded
        block scalar; ``CHAT`` ``[ACTOR]: text`` lines; ``QUESTION_ANSWER`` ``Q:``/``A:`` pairs,
        each user turn paired with the assistant turn that follows it (a turn without a partner
        stands alone, system turns are left out). A group message's sender is named: ``name:``
        in YAML, ``[USER alice]`` in CHAT, ``Q: (alice) ...`` in QUESTION_ANSWER.

        Args:
            dialogue: the elements, oldest first.

        Returns:
            The rendered text, or ``""`` for an empty dialogue.
        """
        elements = list(dialogue)
        if not elements:
            return ""
        match self:
            case DialogueFormat.PYTHON_REPR:
                return repr(elements)
            case DialogueFormat.JSON:
                return json.dumps([element.model_dump(mode="json") for element in elements])
            case DialogueFormat.YAML:
                return "\n".join(_as_yaml(element) for element in elements)
            case DialogueFormat.CHAT:
                return "\n".join(f"[{_speaker(element)}]: {element.actor_text}\n" for element in elements)
            case DialogueFormat.QUESTION_ANSWER:
                return _as_question_answer(elements)
        raise AssertionError(f"unhandled dialogue format {self!r}")  # pragma: no cover


def _split_payload(payload: bytes) -> tuple[int, bytes]:
    parts = bytes(payload).split(b":", 2)
    if len(parts) != 3:
        raise SerializationError(
            "serialized model must look like b'{version}:{0|1}:{json}'; got "
            f"{bytes(payload)[:40]!r}. Pass bytes produced by VersionedModel.serialize()."
        )
    raw_version, flag, body = parts
    try:
        version = int(raw_version.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SerializationError(
            f"serialized model has schema version {raw_version[:20]!r}, not an integer. "
            "Pass bytes produced by VersionedModel.serialize()."
        ) from exc
    if flag == b"0":
        return version, body
    if flag == b"1":
        try:
            return version, zlib.decompress(body)
        except zlib.error as exc:
            raise SerializationError(
                f"serialized model is flagged as compressed but is not zlib data ({exc}). "
                "Pass bytes produced by VersionedModel.serialize(compression=True)."
            ) from exc
    raise SerializationError(
        f"serialized model has compression flag {flag[:10]!r}; expected b'0' or b'1'. "
        "Pass bytes produced by VersionedModel.serialize()."
    )


class VersionedModel(BaseModel):
    """A pydantic model with a schema version and a compact byte serialization.

    Set the version with ``model_config = ConfigDict(json_schema_extra={"schema_version": 2})``
    and override :meth:`upgrade_schema` to read data stored by older versions.

    Example:
        >>> class Note(VersionedModel):
        ...     text: str
        >>> Note.deserialize(Note(text="hi").serialize(compression=True))
        Note(text='hi')
    """

    model_config = ConfigDict(json_schema_extra={"schema_version": 0})

    @classmethod
    def schema_version(cls) -> int:
        """The schema version of this class.

        Returns:
            ``model_config["json_schema_extra"]["schema_version"]``, or 0 when it is not set.
        """
        extra = cls.model_config.get("json_schema_extra")
        if isinstance(extra, Mapping):
            version = extra.get("schema_version", 0)
            return int(version) if isinstance(version, int | str | float) else 0
        return 0

    def serialize(
        self,
        compression: bool = False,
        include: IncEx | None = None,
        exclude: IncEx | None = None,
    ) -> bytes:
        """Serialize to ``b"{schema_version}:{0|1}:{payload}"``.

        Args:
            compression: zlib-compress the JSON payload (flag ``1``).
            include: fields to include, as for ``model_dump_json``.
            exclude: fields to exclude, as for ``model_dump_json``.

        Returns:
            The serialized model.
        """
        body = self.model_dump_json(include=include, exclude=exclude).encode("utf-8")
        if compression:
            body = zlib.compress(body)
        return b"%d:%s:%s" % (self.schema_version(), b"1" if compression else b"0", body)

    @classmethod
    def deserialize(cls, payload: bytes) -> Self:
        """Rebuild a model from the output of :meth:`serialize`.

        Data stored under another schema version goes through :meth:`upgrade_schema` first.

        Args:
            payload: bytes produced by :meth:`serialize`.

        Returns:
            The model.

        Raises:
            SerializationError: the payload is not ``version:flag:json``, cannot be decompressed,
                or (when upgrading) is not a JSON object.
            SchemaUpgradeError: the stored version differs and the class cannot upgrade it.
            pydantic.ValidationError: the data does not fit the model.
        """
        stored_version, body = _split_payload(payload)
        if stored_version == cls.schema_version():
            return cls.model_validate_json(body, by_alias=True, by_name=True)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise SerializationError(
                f"serialized {cls.__name__} payload is not valid JSON ({exc}). "
                "Pass bytes produced by VersionedModel.serialize()."
            ) from exc
        if not isinstance(data, dict):
            raise SerializationError(
                f"serialized {cls.__name__} payload is a JSON {type(data).__name__}, not an object. "
                "Pass bytes produced by VersionedModel.serialize()."
            )
        return cls.model_validate(cls.upgrade_schema(stored_version, data), by_alias=True, by_name=True)

    @classmethod
    def upgrade_schema(cls, from_version: int, model_data: dict[str, Any]) -> dict[str, Any]:
        """Turn data stored under an older (or newer) schema version into data for this version.

        Override it in a subclass whose schema version was raised; the base cannot upgrade.

        Args:
            from_version: the schema version the data was stored with.
            model_data: the stored data, as parsed from JSON.

        Returns:
            Data that validates against the current schema.

        Raises:
            SchemaUpgradeError: always, in the base implementation.
        """
        raise SchemaUpgradeError(
            f"cannot read {cls.__qualname__} data stored with schema version {from_version}: the "
            f"current schema version is {cls.schema_version()}. Override {cls.__qualname__}.upgrade_schema"
            "(from_version, model_data) to convert the stored data."
        )


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _loaded_versioned_class(name: str) -> type[VersionedModel] | None:
    found: type[VersionedModel] | None = None
    pending: list[type[VersionedModel]] = [VersionedModel]
    while pending:
        cls = pending.pop()
        if _qualified_name(cls) == name:
            found = cls
        pending.extend(cls.__subclasses__())
    return found


def _import_versioned_class(name: str) -> type[VersionedModel]:
    # Classes already loaded are found without importing anything; this also covers classes
    # defined inside functions, whose qualified name cannot be imported.
    cls: Any = _loaded_versioned_class(name)
    if cls is None:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            try:
                cls = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name or module_name.startswith(f"{exc.name}."):
                    continue
                raise
            for attribute in parts[cut:]:
                cls = getattr(cls, attribute, None)
            break
    if not (isinstance(cls, type) and issubclass(cls, VersionedModel)):
        raise ValueError(
            f"secondary storage type {name!r} is not an importable VersionedModel subclass; "
            "import the module that defines it, or store only VersionedModel subclasses."
        )
    return cls


def _revive(key: str, entry: Any) -> VersionedModel:
    if not (isinstance(entry, Mapping) and {"type", "schema_version", "data"} <= entry.keys()):
        raise ValueError(
            f"secondary storage entry {key!r} must be a VersionedModel or a mapping with 'type', "
            f"'schema_version' and 'data'; got {type(entry).__name__}"
        )
    cls = _import_versioned_class(str(entry["type"]))
    data = entry["data"]
    if not isinstance(data, Mapping):
        raise ValueError(f"secondary storage entry {key!r} has 'data' of type {type(data).__name__}, not a mapping")
    stored_version = entry["schema_version"]
    if not isinstance(stored_version, int) or isinstance(stored_version, bool):
        raise ValueError(f"secondary storage entry {key!r} has schema_version {stored_version!r}, not an integer")
    if stored_version != cls.schema_version():
        return cls.model_validate(cls.upgrade_schema(stored_version, dict(data)))
    # Computed fields are in the dump but are not inputs; a class with extra="forbid" would refuse them.
    inputs = {name: value for name, value in data.items() if name not in cls.model_computed_fields}
    # The data is a JSON-mode dump, so it is validated in JSON mode (strict fields, bytes, ...).
    return cls.model_validate_json(to_json(inputs), by_alias=True, by_name=True)


class SecondaryStore(Mapping[str, VersionedModel]):
    """A write-once mapping of keys to :class:`VersionedModel` values, kept next to a model.

    A key can be set once; to replace its value, delete the key first. Values are copied in and
    copied out, so changing an object read from the store does not change the store: set it
    again (after ``del``) to keep a change.

    Used as a pydantic field type, it dumps (python and JSON mode alike) as
    ``{key: {"type": "package.module.Class", "schema_version": n, "data": {...}}}`` and validates
    from that form, from a mapping of ``VersionedModel`` instances, or from another store; values
    keep their classes. Stored data with another schema version goes through the class's
    ``upgrade_schema``.

    Example:
        >>> class Note(VersionedModel):
        ...     text: str
        >>> store = SecondaryStore()
        >>> store["note"] = Note(text="hi")
        >>> store["note"].text
        'hi'
    """

    def __init__(self, values: Mapping[str, VersionedModel] | None = None) -> None:
        """Create a store, optionally filled from ``values``.

        Args:
            values: initial keys and values.
        """
        self._values: dict[str, VersionedModel] = {}
        for key, value in (values or {}).items():
            self[key] = value

    def __getitem__(self, key: str) -> VersionedModel:
        return self._values[key].model_copy(deep=True)

    def __setitem__(self, key: str, value: VersionedModel) -> None:
        """Store a copy of ``value`` under a new key.

        Raises:
            SecondaryStorageError: the key already holds a value.
            TypeError: the key is not a string or the value is not a ``VersionedModel``.
        """
        if not isinstance(key, str):
            raise TypeError(f"secondary storage keys are strings; got {type(key).__name__}")
        if not isinstance(value, VersionedModel):
            raise TypeError(
                f"secondary storage values are VersionedModel instances; got {type(value).__name__} "
                f"for key {key!r}. Subclass VersionedModel."
            )
        if key in self._values:
            raise SecondaryStorageError(
                f"secondary storage key {key!r} is write-once and already holds a value. "
                f"Delete it first (del store[{key!r}]) to store a new value."
            )
        self._values[key] = value.model_copy(deep=True)

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecondaryStore):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"

    def model_dump(self, **_options: Any) -> dict[str, dict[str, Any]]:
        """The serialized form, as pydantic models answer it (so checkpointers can store a store)."""
        return self._dump()

    def _dump(self) -> dict[str, dict[str, Any]]:
        return {
            key: {
                "type": _qualified_name(type(value)),
                "schema_version": value.schema_version(),
                "data": value.model_dump(mode="json"),
            }
            for key, value in self._values.items()
        }

    @classmethod
    def _validate(cls, value: Any) -> SecondaryStore:
        store = cls()
        if isinstance(value, SecondaryStore):
            # Share the (never exposed) value objects but not the key set, like a dict field would.
            store._values = dict(value._values)
            return store
        if not isinstance(value, Mapping):
            raise ValueError(
                f"secondary storage must be a mapping of keys to VersionedModel values; got {type(value).__name__}"
            )
        for key, entry in value.items():
            if not isinstance(key, str):
                raise ValueError(f"secondary storage keys are strings; got {type(key).__name__}")
            if isinstance(entry, VersionedModel):
                store[key] = entry
            else:
                store._values[key] = _revive(key, entry)
        return store

    @classmethod
    def _serialize(cls, value: Any) -> dict[str, dict[str, Any]]:
        store = value if isinstance(value, SecondaryStore) else cls._validate(value)
        return store._dump()

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(cls._serialize, when_used="always"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "object",
            "title": "SecondaryStore",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "description": "fully qualified class name"},
                    "schema_version": {"type": "integer"},
                    "data": {"type": "object"},
                },
                "required": ["type", "schema_version", "data"],
            },
        }


@functools.cache
def _state_table(model_cls: type[GenieModel]) -> tuple[tuple[Any, str, str], ...] | None:
    try:
        machine_cls = model_cls.get_state_machine_class()
    except NotImplementedError:
        return None
    return tuple((state.value, state.id, state.name) for state in machine_cls.states)


class GenieModel(VersionedModel):
    """The state of one dialogue session, driven by a Genie state machine.

    Subclass it to add the fields your flow needs, and override :meth:`get_state_machine_class`.
    python-statemachine keeps the current state's **value** in ``state``.

    Example:
        >>> class Chat(GenieModel):
        ...     topic: str = ""
        >>> chat = Chat(session_id="s1")
        >>> _ = chat.add_dialogue_element("user", "hello")
        >>> chat.current_response.text
        'hello'
    """

    session_id: str = Field(default="", description="the id of the session this model belongs to")
    state: int | str | None = Field(default=None, description="the value of the current state")
    dialogue: list[DialogueElement] = Field(default_factory=list, description="the dialogue so far")
    actor: Actor | None = Field(default=None, description="who produced actor_input")
    actor_input: str | None = Field(default=None, description="the latest input, from the user or an invoker")
    source_type: StateKind | None = Field(default=None, description="kind of the source state of the last transition")
    target_type: StateKind | None = Field(default=None, description="kind of the target state of the last transition")
    dialogue_persistence: DialoguePersistence | None = Field(
        default=None, description="what the running transition records in the dialogue"
    )
    task_error: str | None = Field(default=None, description="the error of the last failed invoker run")
    seed_data: str | None = Field(default=None, description="data for seed_model(); None once the model is seeded")
    secondary_storage: SecondaryStore = Field(
        default_factory=SecondaryStore, description="write-once storage of VersionedModel values"
    )
    flow_version: str | None = Field(default=None, description="the version of the flow the session started with")
    usage: SessionUsage = Field(default_factory=SessionUsage, description="tokens and cost of the invoker calls")
    history: list[HistoryEntry] = Field(default_factory=list, description="what happened, oldest first (bounded)")
    flows: FlowStack = Field(default_factory=FlowStack, description="the sub-flows and interruptions running now")
    approvals: list[ApprovalRequest] = Field(
        default_factory=list, description="tool calls waiting for, or given, a person's decision"
    )

    history_limit: ClassVar[int] = 200
    """How many history entries a session keeps; the oldest are dropped beyond it."""

    _active_flows: list[str] | None = PrivateAttr(default=None)
    """Set on the model a node works on: the flows on the session's stack, for ``active_flows``."""
    _history_bound: int | None = PrivateAttr(default=None)
    """Set on a sub-flow's model: the session's ``history_limit``, which its shared history keeps."""

    @field_validator(*_packing.PACKED_FIELDS, mode="before")
    @classmethod
    def _unpack(cls, value: Any) -> Any:
        return _packing.unpack(value)

    @classmethod
    def get_state_machine_class(cls) -> type[StateMachine]:
        """The state machine class that drives this model.

        Returns:
            The ``GenieStateMachine`` subclass for this model.

        Raises:
            NotImplementedError: always, in the base class.
        """
        raise NotImplementedError(
            f"{cls.__qualname__} does not name its state machine. Override the classmethod "
            f"{cls.__qualname__}.get_state_machine_class() to return the GenieStateMachine subclass."
        )

    def model_post_init(self, context: Any, /) -> None:
        """Seed the model from ``seed_data`` (if set) and clear it.

        A subclass that overrides this must call ``super().model_post_init(context)``.
        """
        super().model_post_init(context)
        if self.seed_data is not None:
            self.seed_model()
            self.seed_data = None

    def seed_model(self) -> None:
        """Fill the model from ``self.seed_data``; called once at creation when it is set.

        The base does nothing. Override it to parse the seed, e.g. ``json.loads(self.seed_data)``.
        """

    def add_dialogue_element(self, actor: Actor | str, text: str) -> DialogueElement:
        """Append an utterance to the dialogue.

        Args:
            actor: who said it.
            text: what was said.

        Returns:
            The new element.
        """
        element = DialogueElement(actor=Actor(actor), actor_text=text)
        self.dialogue.append(element)
        return element

    def record_dialogue_element(self) -> DialogueElement:
        """Append ``actor_input`` (``""`` when None) to the dialogue under ``actor``.

        Returns:
            The new element.

        Raises:
            ValueError: ``actor`` is not set.
        """
        if self.actor is None:
            raise ValueError("cannot record a dialogue element: model.actor is None. Set model.actor before recording.")
        return self.add_dialogue_element(self.actor, self.actor_input or "")

    def record_history(self, kind: HistoryKind | str, **fields: Any) -> HistoryEntry:
        """Append an entry to :attr:`history`, dropping the oldest beyond :attr:`history_limit`.

        Args:
            kind: what happened (a :class:`HistoryKind` or its value).
            fields: the entry's other fields (``state``, ``event``, ``error``, ...).

        Returns:
            The new entry.
        """
        entry = HistoryEntry(kind=HistoryKind(kind), **fields)
        self.history.append(entry)
        limit = self.history_limit if self._history_bound is None else self._history_bound
        excess = len(self.history) - max(0, limit)
        if excess > 0:
            del self.history[:excess]
        return entry

    @property
    def current_response(self) -> DialogueElement | None:
        """The latest dialogue element, or None for an empty dialogue."""
        return self.dialogue[-1] if self.dialogue else None

    def format_dialogue(self, fmt: DialogueFormat | str = DialogueFormat.CHAT) -> str:
        """Render the dialogue.

        Args:
            fmt: the format (a :class:`DialogueFormat` or its value).

        Returns:
            The rendered dialogue, ``""`` when it is empty.
        """
        return DialogueFormat(fmt).format(self.dialogue)

    @property
    def parsed_actor_input(self) -> Any:
        """``actor_input`` parsed as JSON, or None when it is None or not JSON."""
        if self.actor_input is None:
            return None
        try:
            return json.loads(self.actor_input)
        except ValueError:
            return None

    @property
    def render_data(self) -> dict[str, Any]:
        """Everything a template can use.

        All fields but ``history`` (full dumps, also of subclass values), with ``secondary_storage`` as
        ``{key: full dump of the value}``, plus:

        * ``parsed_actor_input``: see :attr:`parsed_actor_input`;
        * ``current_datetime``: the UTC time, ISO format;
        * ``chat_history``: the dialogue in :attr:`DialogueFormat.YAML`;
        * ``state_value``: ``state``;
        * ``state_id`` and ``state_name``: the id and name of the state whose value is ``state``,
          or None when there is no state or :meth:`get_state_machine_class` is not implemented.
        * ``last_user_message`` and ``last_bot_message``: the latest utterance of the user and of
          the assistant in the dialogue (Colang's context variables), or None.
        * ``active_flows``: the names of the flows running now, the session's own first and the one
          this template belongs to last (sub-flows and interruptions in between).

        Returns:
            A fresh dict.
        """
        return self._render_data(None)

    def _render_data(self, names: Collection[str] | None) -> dict[str, Any]:
        """:attr:`render_data`, or only its entries named in ``names`` (None: all of them)."""

        def wanted(key: str) -> bool:
            return names is None or key in names

        # The history is left out: templates see what they need of it as last_user_message and the like,
        # and dumping up to history_limit entries for every render would cost every turn.
        fields = set(type(self).model_fields) - {"secondary_storage", "history", "flows", "approvals"}
        data = self.model_dump(serialize_as_any=True, include=fields if names is None else fields & set(names))
        if wanted("secondary_storage"):
            data["secondary_storage"] = {
                key: value.model_dump(serialize_as_any=True) for key, value in self.secondary_storage._values.items()
            }
        if wanted("parsed_actor_input"):
            data["parsed_actor_input"] = self.parsed_actor_input
        if wanted("current_datetime"):
            data["current_datetime"] = datetime.now(UTC).isoformat()
        if wanted("chat_history"):
            data["chat_history"] = self.format_dialogue(DialogueFormat.YAML)
        if wanted("state_value"):
            data["state_value"] = self.state
        if wanted("state_id") or wanted("state_name"):
            data["state_id"], data["state_name"] = self._state_id_and_name()
        if wanted("last_user_message"):
            data["last_user_message"] = self._last_text(Actor.USER)
        if wanted("last_bot_message"):
            data["last_bot_message"] = self._last_text(Actor.ASSISTANT)
        if wanted("active_flows"):
            data["active_flows"] = list(self._active_flows or [flow_label(type(self))])
        return data

    def _last_text(self, actor: Actor) -> str | None:
        for element in reversed(self.dialogue):
            if element.actor == actor:
                return element.actor_text
        return None

    def _state_id_and_name(self) -> tuple[str | None, str | None]:
        if self.state is None:
            return None, None
        table = _state_table(type(self))
        for value, state_id, name in table or ():
            if value == self.state:
                return state_id, name
        return None, None


def reachable_types(model_classes: Iterable[type[BaseModel]]) -> set[tuple[str, str]]:
    """``(module, ClassName)`` of every pydantic model and enum reachable from the classes' fields.

    A store that revives objects from JSON (Redis) may rebuild exactly these: the allow-list is
    a security boundary, so it is derived from the registered models instead of allowing all.
    """
    found: set[tuple[str, str]] = set()
    seen: set[int] = set()

    def visit(annotation: Any) -> None:
        if id(annotation) in seen:
            return
        seen.add(id(annotation))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.add((annotation.__module__, annotation.__name__))
            for field in annotation.model_fields.values():
                visit(field.annotation)
            return
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            found.add((annotation.__module__, annotation.__name__))
            return
        for argument in typing.get_args(annotation):
            visit(argument)

    for model_class in model_classes:
        visit(model_class)
    return found
