"""Flow versions: which version of a flow each session started on, and what happens when it changes.

Every session records the version of its flow in ``GenieModel.flow_version`` when it is created:
the machine's ``version`` class attribute, or else a hash of the declaration (:func:`flow_version`).
A session whose checkpoint names another version than the registered flow's is, when it is loaded:

* served by that version, if the deployer kept it (``register_model(key, Model, previous=[OldModel])``):
  the session runs on the old version's own graph until it ends;
* migrated, if the current machine declares ``migrations = {"<old version>": Migration(...)}``: the
  stored fields go through the model's ``upgrade_schema`` and renamed or removed states are mapped.
  The migration is computed in memory on every load until the session's next run, whose first step
  writes it (with a ``migrated`` history entry), so a refused event leaves the stored session as it was;
* refused with :class:`~genie_graph.errors.FlowVersionUnsupported` otherwise.

A session on the current version costs nothing extra: its version is compared, nothing is read twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple, empty_checkpoint
from langgraph.constants import START
from langgraph.types import Command, Interrupt, StateSnapshot
from pydantic import BaseModel, PydanticUserError, ValidationError
from statemachine import State

from ._api_models import AIResponse, EventInput
from ._declaration import GenieStateMachine, Interruption, MapTaskTemplate, NamedQueueTaskTemplate, SubFlow
from ._history import HistoryKind
from ._model import GenieModel, StateKind
from ._stores import SessionRecord
from .errors import FlowDefinitionError, FlowVersionUnsupported, GenieGraphError, UnknownSession

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ._flow import CompiledFlow
    from ._runtime import GenieFlow

__all__ = ["Migration", "flow_version"]

BRANCH = "branch:to:"
"""LangGraph's channel that triggers a node (``branch:to:<state id>``): a pending one names the state a
session waits in, or the invoker state a cut-off run was working."""
_MODEL_KEY = "genie_model_key"  # the runtime's checkpoint metadata key
POLL = "poll"
_PENDING = "genie_pending_migration"
_HASH_LENGTH = 12
_META_KEYS = frozenset({"title", "description", "default", "examples"})


@dataclass(frozen=True)
class Migration:
    """How sessions stored by an older version of a flow are carried over to the current one.

    Declared on the current machine, keyed by the old version:
    ``migrations = {"1": Migration(states={"ask_name": "ask_user_name", "survey": "ask_question"})}``.

    Attributes:
        states: old state id -> current state id, for states renamed or removed since that version.
            A state not listed keeps its id, which must still exist.
        schema_version: the model's ``schema_version`` when that version stored its sessions. When it
            differs from the model's current one, the stored fields go through
            ``Model.upgrade_schema(schema_version, data)`` first (rename or convert fields there).
            None: the fields are read as they are (fields the model no longer has are dropped, new
            ones take their defaults).

    Example:
        >>> Migration(states={"survey": "ask_question"}, schema_version=1).states
        {'survey': 'ask_question'}
    """

    states: Mapping[str, str] = field(default_factory=dict)
    schema_version: int | None = None


# ---- the version of a declaration -----------------------------------------------------------
def _template_shape(template: Any, seen: frozenset[type] = frozenset()) -> Any:
    if isinstance(template, str):
        return template
    if isinstance(template, SubFlow | Interruption):  # the flow it runs is part of what sessions store
        return [type(template).__name__, _linked_flow_shape(template, seen)]
    if isinstance(template, MapTaskTemplate | NamedQueueTaskTemplate):
        return [type(template).__name__, *(_template_shape(part) for part in template)]
    if isinstance(template, list):
        return [_template_shape(step) for step in template]
    if isinstance(template, Mapping):
        return {str(key): _template_shape(part) for key, part in template.items()}
    if callable(template):
        return f"{getattr(template, '__module__', '?')}.{getattr(template, '__qualname__', repr(template))}"
    return repr(template)


def _linked_flow_shape(spec: SubFlow | Interruption, seen: frozenset[type]) -> dict[str, Any]:
    shape = {
        field.name: _template_shape(value) if field.name != "flow" else None
        for field in dataclasses.fields(spec)
        if (value := getattr(spec, field.name)) is not None
    }
    child = spec.flow
    if isinstance(child, type) and issubclass(child, GenieModel) and child not in seen:
        shape["flow"] = _declaration(child, child.get_state_machine_class(), seen | {child})  # type: ignore[arg-type]
    else:
        shape["flow"] = getattr(child, "__qualname__", repr(child))
    return shape


def _without_meta(schema: Any, keep_keys: bool = False) -> Any:
    """The schema without what does not change how stored data reads (titles, descriptions, defaults)."""
    if isinstance(schema, dict):
        return {
            key: _without_meta(value, keep_keys=key in ("properties", "$defs") and not keep_keys)
            for key, value in schema.items()
            if keep_keys or key not in _META_KEYS
        }
    if isinstance(schema, list):
        return [_without_meta(item) for item in schema]
    return schema


def _own_schema(model_class: type[GenieModel]) -> Any:
    """The JSON schema of the fields the flow's model adds to ``GenieModel`` (not genie-graph's own)."""
    own = [name for name in model_class.model_fields if name not in GenieModel.model_fields]
    try:
        schema = model_class.model_json_schema()
    except PydanticUserError:  # a field type without a JSON schema: its annotation stands in
        return {name: repr(model_class.model_fields[name].annotation) for name in own}
    properties = {name: schema.get("properties", {}).get(name) for name in own}
    definitions = schema.get("$defs", {})
    used: dict[str, Any] = {}
    pending = [properties]
    while pending:
        text = json.dumps(pending.pop(), sort_keys=True, default=str)
        for name, definition in definitions.items():
            if name not in used and f'"#/$defs/{name}"' in text:
                used[name] = definition
                pending.append(definition)
    required = sorted(name for name in schema.get("required", []) if name in own)
    return _without_meta({"properties": properties, "$defs": used, "required": required})


def _transition_shape(state: State) -> list[Any]:
    return [
        [
            transition.target.id,
            " ".join(str(event) for event in transition.events),
            [
                str(getattr(spec.func, "__name__", spec.func)) + ("" if spec.expected_value else "!")
                for spec in transition.cond
            ],
        ]
        for transition in state.transitions  # type: ignore[attr-defined]
    ]


def declaration_hash(model_class: type[GenieModel], machine_class: type[GenieStateMachine]) -> str:
    """A hash of what a stored session depends on: states, values, transitions, templates, model schema.

    Template *contents* and invoker settings are left out: changing a prompt changes no stored session.
    """
    declaration = _declaration(model_class, machine_class, frozenset({model_class}))
    text = json.dumps(declaration, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LENGTH]


def _declaration(
    model_class: type[GenieModel], machine_class: type[GenieStateMachine], seen: frozenset[type]
) -> dict[str, Any]:
    declaration = {
        "states": [
            [state.id, repr(state.value), bool(state.initial), bool(state.final), _transition_shape(state)]
            for state in machine_class.states
        ],
        "templates": {str(key): _template_shape(value, seen) for key, value in dict(machine_class.templates).items()},
        "completion_events": dict(machine_class.completion_events),
        "model": _own_schema(model_class),
        "schema_version": model_class.schema_version(),
    }
    interruptions = list(getattr(machine_class, "interruptions", ()) or ())
    if interruptions:  # (only when declared: the versions of flows without any stay as they were)
        declaration["interruptions"] = [_template_shape(spec, seen) for spec in interruptions]
    return declaration


def flow_version(model_class: type[GenieModel]) -> str:
    """The version sessions of a flow record: the machine's ``version``, or a hash of its declaration.

    The hash is the same in every process and Python run, and changes when states, their values,
    transitions, template names or the model's fields change (not when a prompt's text does).

    Args:
        model_class: the flow's ``GenieModel`` subclass.

    Returns:
        The version string.

    Raises:
        FlowDefinitionError: the model names no ``GenieStateMachine``, or its ``version`` is not a string.

    Example:
        >>> flow_version(QandAModel)  # doctest: +SKIP
        '2'
    """
    try:
        machine_class = model_class.get_state_machine_class()
    except NotImplementedError as exc:
        raise FlowDefinitionError(
            model_class.__qualname__, "get_state_machine_class() is not implemented", fix="Implement it"
        ) from exc
    if not (isinstance(machine_class, type) and issubclass(machine_class, GenieStateMachine)):
        raise FlowDefinitionError(model_class.__qualname__, "its machine is no GenieStateMachine subclass")
    declared = getattr(machine_class, "version", None)
    if declared is None:
        return declaration_hash(model_class, machine_class)
    if not isinstance(declared, str) or not declared:
        raise FlowDefinitionError(
            machine_class.__qualname__, f"version must be a non-empty string, got {declared!r}", ["version"]
        )
    return declared


def check_migrations(flow: CompiledFlow, version: str) -> dict[str, Migration]:
    """The machine's ``migrations``, checked: each maps old states to states that exist now.

    Raises:
        FlowDefinitionError: a migration is no ``Migration``, is keyed by the current version, or maps
            to a state the machine does not have.
    """
    declared = getattr(flow.machine_class, "migrations", None) or {}
    if not isinstance(declared, Mapping):
        raise FlowDefinitionError(flow.name, f"migrations must be a dict of version -> Migration, got {declared!r}")
    checked: dict[str, Migration] = {}
    for old_version, migration in declared.items():
        if not isinstance(migration, Migration):
            raise FlowDefinitionError(
                flow.name, f"migrations[{old_version!r}] must be a genie_graph.Migration, got {migration!r}"
            )
        if str(old_version) == version:
            raise FlowDefinitionError(
                flow.name,
                f"migrations names the current version {version!r}",
                [str(old_version)],
                fix="Key migrations by the versions sessions are migrated from",
            )
        unknown = sorted(target for target in migration.states.values() if target not in flow.kinds)
        if unknown:
            raise FlowDefinitionError(
                flow.name,
                f"migrations[{old_version!r}] maps states to states this machine does not have",
                unknown,
                fix=f"Map them to one of {', '.join(flow.kinds)}",
            )
        checked[str(old_version)] = migration
    return checked


# ---- loading a session of another version ---------------------------------------------------
class RawSession(NamedTuple):
    """A session's latest checkpoint as stored, read without any version's graph."""

    values: dict[str, Any]
    """The model's fields as JSON data (whichever version wrote them)."""
    pending: tuple[str, ...]
    """The state ids whose nodes are due: the state a session waits in, or the invoker state a
    cut-off run was working; empty once the session ended."""
    checkpoint: CheckpointTuple


def _pending_nodes(checkpoint: Mapping[str, Any]) -> tuple[str, ...]:
    seen = checkpoint.get("versions_seen", {})
    values = checkpoint.get("channel_values", {})
    due: list[str] = []
    for channel, version in checkpoint.get("channel_versions", {}).items():
        if not channel.startswith(BRANCH) or channel not in values:  # a consumed trigger is emptied
            continue
        node = channel[len(BRANCH) :]
        if version is not None and (seen.get(node, {}).get(channel) is None or seen[node][channel] < version):
            due.append(node)
    return tuple(due)


async def read_raw(graph: CompiledStateGraph[Any], config: RunnableConfig) -> RawSession | None:
    """The session's latest checkpoint as stored: its fields and the states due, or None."""
    saver = graph.checkpointer
    assert saver is not None and not isinstance(saver, bool)
    stored = await saver.aget_tuple(config)
    if stored is None:
        return None
    values = {
        key: value for key, value in stored.checkpoint["channel_values"].items() if not key.startswith((BRANCH, "__"))
    }
    return RawSession(values, _pending_nodes(stored.checkpoint), stored)


class PendingMigration(NamedTuple):
    """A migration computed on load, written by the session's next run (its first step)."""

    update: dict[str, Any]
    goto: str | None
    from_version: str


def pending_migration(snapshot: StateSnapshot) -> PendingMigration | None:
    """The migration a snapshot loaded from an older version still has to write, if any."""
    found = (snapshot.metadata or {}).get(_PENDING)
    return found if isinstance(found, PendingMigration) else None


def migration_command(snapshot: StateSnapshot, resume: Any = None) -> Command[Any] | None:
    """The input of a session's next run: its pending migration (and the event), or just the event.

    Returns:
        ``Command(update=<migrated fields>, goto=<state>, resume=...)`` when the snapshot still has a
        migration to write; ``Command(resume=...)`` when it has none but ``resume`` is given; else None.
    """
    pending = pending_migration(snapshot)
    if pending is None:
        return None if resume is None else Command(resume=resume)
    if pending.goto is None:
        return Command(update=pending.update, resume=resume)
    return Command(update=pending.update, goto=pending.goto, resume=resume)


async def write_migration(
    graph: CompiledStateGraph[Any], config: RunnableConfig, snapshot: StateSnapshot
) -> StateSnapshot:
    """Write a snapshot's pending migration as a checkpoint of its own, and answer the session's new snapshot.

    For work queued to a worker: a run's first step cannot carry it there (a run that stops before
    an invoker state as its first step saves no checkpoint).
    """
    pending = pending_migration(snapshot)
    if pending is None:
        return snapshot
    goto = pending.goto or ()
    await graph.aupdate_state(config, Command(update=pending.update, goto=goto), as_node=pending.goto or START)
    return await graph.aget_state(config)


def _last_state(values: Mapping[str, Any]) -> str | None:
    """The state a session ended in, from its history (its checkpoint no longer names one)."""
    for entry in reversed(values.get("history") or []):
        if isinstance(entry, Mapping):
            found = entry.get("target") or (entry.get("state") if entry.get("kind") == "state_entered" else None)
            if found:
                return str(found)
    return None


def _retarget_waiting_error(task_error: Any, old: str, new: str) -> Any:
    """An invoker state waiting for an event by hand names its state in ``task_error``: follow a rename."""
    if not isinstance(task_error, str) or old == new:
        return task_error
    try:
        error = json.loads(task_error)
    except ValueError:
        return task_error
    if isinstance(error, dict) and error.get("state") == old:
        error["state"] = new
        return json.dumps(error)
    return task_error


def _field_errors(exc: ValidationError, limit: int = 4) -> str:
    shown = [f"{'.'.join(str(part) for part in error['loc']) or '(model)'}: {error['msg']}" for error in exc.errors()]
    more = f" (and {len(shown) - limit} more)" if len(shown) > limit else ""
    return "; ".join(shown[:limit]) + more


@dataclass
class VersionContext:
    """What the runtime knows about the versions of one model key."""

    model_key: str
    session_id: str
    current: CompiledFlow
    version: str
    previous: Mapping[str, CompiledFlow]
    migrations: Mapping[str, Migration]

    def unsupported(self, stored: str, reason: str = "", fix: str = "") -> FlowVersionUnsupported:
        return FlowVersionUnsupported(
            self.model_key,
            self.session_id,
            stored,
            current=self.version,
            previous=list(self.previous),
            migrated=list(self.migrations),
            reason=reason,
            fix=fix or self._fix(stored),
            machine=self.current.machine_class.__qualname__,
        )

    def _fix(self, stored: str) -> str:
        machine = self.current.machine_class.__qualname__
        return (
            f"Declare migrations = {{{stored!r}: Migration(states={{...}})}} on {machine} to migrate it, or keep "
            f"serving it with register_model({self.model_key!r}, Model, previous=[<the model of version {stored!r}>])"
        )


def migrate(context: VersionContext, stored: str, raw: RawSession) -> tuple[GenieModel, str, bool]:
    """The current model of a session stored by version ``stored``, per its declared ``Migration``.

    Returns:
        The migrated model (with a ``migrated`` history entry), its state id, and whether the session
        still has a state due (it waits in it, or a run was working it).

    Raises:
        FlowVersionUnsupported: the old state cannot be placed, ``upgrade_schema`` fails, or the data
            does not fit the model even so; the message says which.
    """
    flow, migration = context.current, context.migrations[stored]
    model_class = flow.model_class
    data = dict(raw.values)
    old_state = raw.pending[0] if raw.pending else _last_state(data)
    if migration.schema_version is not None and migration.schema_version != model_class.schema_version():
        try:
            data = model_class.upgrade_schema(migration.schema_version, data)
        except GenieGraphError as exc:
            raise context.unsupported(
                stored,
                f"{model_class.__qualname__}.upgrade_schema({migration.schema_version}, ...) failed: {exc}",
                f"Make {model_class.__qualname__}.upgrade_schema convert data of schema version "
                f"{migration.schema_version}",
            ) from exc
    if old_state is None:
        raise context.unsupported(stored, "its checkpoint names no state to continue from")
    target = migration.states.get(old_state, old_state)
    if target not in flow.kinds:
        raise context.unsupported(
            stored,
            f"its state {old_state!r} is no state of the current flow",
            f"Map it in migrations[{stored!r}] = Migration(states={{{old_state!r}: <a state of "
            f"{flow.machine_class.__qualname__}>}})",
        )
    value_by_id = {state_id: value for value, state_id in flow.id_by_value.items()}
    data["state"] = value_by_id[target]
    data["flow_version"] = context.version
    data["task_error"] = _retarget_waiting_error(data.get("task_error"), old_state, target)
    try:
        model = model_class.model_validate(data)
    except ValidationError as exc:
        raise context.unsupported(
            stored,
            f"its data does not fit {model_class.__qualname__}: {_field_errors(exc)}",
            f"Convert it in {model_class.__qualname__}.upgrade_schema and declare "
            f"Migration(schema_version=<the model's schema version in {stored!r}>)",
        ) from exc
    model.record_history(
        HistoryKind.MIGRATED,
        state=target,
        detail={"from": stored, "to": context.version, "from_state": old_state, "to_state": target},
    )
    return model, target, bool(raw.pending)


def as_json(model: BaseModel) -> dict[str, Any]:
    """The model's fields as the graph's channels hold them (as ``_nodes.as_json``)."""
    return model.model_dump(mode="json", include=set(type(model).model_fields))


def migrated_snapshot(context: VersionContext, stored: str, raw: RawSession) -> tuple[StateSnapshot, GenieModel]:
    """The snapshot the session will have once migrated, with the migration for its next run to write."""
    flow = context.current
    model, target, due = migrate(context, stored, raw)
    values = as_json(model)
    interrupts: tuple[Interrupt, ...] = ()
    if due and _waits_with(flow, model.task_error, target):
        last = model.dialogue[-1].actor_text if model.dialogue else None
        interrupts = (
            Interrupt(
                value={
                    "session_id": model.session_id,
                    "state": target,
                    "response": last,
                    "next_actions": flow.next_actions(target),
                    "error": model.task_error,
                }
            ),
        )
    stored_tuple = raw.checkpoint
    metadata: dict[str, Any] = {
        **(stored_tuple.metadata or {}),
        _PENDING: PendingMigration(values, target if due else None, stored),
    }
    snapshot = StateSnapshot(
        values=values,
        next=(target,) if due else (),
        config=stored_tuple.config,
        metadata=metadata,  # type: ignore[arg-type]
        created_at=stored_tuple.checkpoint.get("ts"),
        parent_config=stored_tuple.parent_config,
        tasks=(),
        interrupts=interrupts,
    )
    return snapshot, model


async def load_other_version(
    context: VersionContext,
    stored: str,
    graph_of_version: Callable[[str | None], Awaitable[CompiledStateGraph[Any]]],
    config: RunnableConfig,
) -> tuple[StateSnapshot, GenieModel]:
    """Load a session stored by version ``stored`` (not the current one): serve, migrate, or refuse it.

    Raises:
        FlowVersionUnsupported: the version is neither served nor migrated, or its migration fails.
    """
    if stored in context.previous:
        snapshot = await (await graph_of_version(stored)).aget_state(config)
        return snapshot, context.previous[stored].model_class.model_validate(snapshot.values)
    if stored in context.migrations:
        raw = await read_raw(await graph_of_version(None), config)
        if raw is None:
            raise context.unsupported(stored, "its checkpoint is gone")
        return migrated_snapshot(context, stored, raw)
    raise context.unsupported(stored)


def register_versions(
    flow: CompiledFlow, older: Sequence[CompiledFlow]
) -> tuple[str, dict[str, CompiledFlow], dict[str, Migration]]:
    """The versions a registration serves: the current one, older ones kept, older ones migrated.

    Raises:
        FlowDefinitionError: two of the flows share a version, or a migration is declared wrongly.
    """
    version = flow_version(flow.model_class)
    migrations = check_migrations(flow, version)
    kept: dict[str, CompiledFlow] = {}
    for old in older:
        old_version = flow_version(old.model_class)
        if old_version == version or old_version in kept:
            same = flow if old_version == version else kept[old_version]
            raise FlowDefinitionError(
                flow.name,
                f"previous model {old.model_class.__qualname__} has version {old_version!r}, as "
                f"{same.model_class.__qualname__} does",
                [old_version],
                fix="Declare a distinct version = '...' on each version's machine",
            )
        kept[old_version] = old
    return version, kept, migrations


# ---- fixtures: sessions of a flow version, exported and loaded into any store ---------------
FIXTURE_FORMAT = "genie-graph-sessions"
FIXTURE_FORMAT_VERSION = 1


async def _export(flow: GenieFlow, model_key: str, session_ids: Sequence[str] | None) -> dict[str, Any]:
    registered = flow._registered.get(model_key)
    if registered is None:
        flow.flow_of(model_key)  # raises UnknownModelKey
        raise AssertionError("unreachable")
    store = await flow._open_store()
    graph = await flow._graph(model_key)
    sessions: list[dict[str, Any]] = []
    for session_id in session_ids if session_ids is not None else await store.sessions(model_key):
        record = await store.session(session_id)
        raw = await read_raw(graph, flow._config(model_key, session_id))
        if record is None or record.model_key != model_key or raw is None:
            raise UnknownSession(model_key, session_id)
        sessions.append(
            {
                "session_id": session_id,
                "user": record.user,
                "owner": record.owner,
                "pending": list(raw.pending),
                "values": raw.values,
            }
        )
    return {
        "format": FIXTURE_FORMAT,
        "format_version": FIXTURE_FORMAT_VERSION,
        "model_key": model_key,
        "flow_version": registered.version,
        "machine": registered.flow.name,
        "sessions": sessions,
    }


def export_sessions(
    flow: GenieFlow, model_key: str, path: str | Path, session_ids: Sequence[str] | None = None
) -> Path:
    """Write sessions of ``model_key`` as stored (any version) to a JSON fixture, for :func:`load_sessions`.

    Each session keeps its fields as stored, the state it waits in (or the invoker state a run was
    working) and its user and owner; the file loads into any store (memory, SQLite, Redis).

    Args:
        flow: the flow whose store holds the sessions.
        model_key: their model key.
        path: the JSON file to write.
        session_ids: which sessions; default every live session of the model key.

    Returns:
        The path written.

    Raises:
        UnknownModelKey, UnknownSession: the key or a session does not exist.

    Example:
        >>> export_sessions(flow, "q_and_a", "tests/fixtures/versions/q_and_a-v1.json")  # doctest: +SKIP
    """
    data = flow._sync(_export(flow, model_key, session_ids))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return target


def _read_fixture(fixture: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    data = fixture if isinstance(fixture, Mapping) else json.loads(Path(fixture).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or data.get("format") != FIXTURE_FORMAT:
        raise GenieGraphError(f"{fixture!r} is no sessions fixture; write one with export_sessions(flow, key, path)")
    if data.get("format_version") != FIXTURE_FORMAT_VERSION:
        raise GenieGraphError(
            f"sessions fixture format {data.get('format_version')!r} is not supported (expected "
            f"{FIXTURE_FORMAT_VERSION}); export it again with this genie-graph"
        )
    return data


async def _load(flow: GenieFlow, data: Mapping[str, Any], model_key: str) -> list[str]:
    flow.flow_of(model_key)
    registered = flow._registered[model_key]
    store = await flow._open_store()
    saver = (await flow._graph(model_key)).checkpointer
    assert saver is not None and not isinstance(saver, bool)
    loaded: list[str] = []
    for session in data["sessions"]:
        session_id = str(session["session_id"])
        pending = [str(node) for node in session.get("pending", [])]
        values: dict[str, Any] = dict(session["values"])
        await store.add_session(
            SessionRecord(session_id, model_key, session.get("user"), flow.session_ttl_seconds, session.get("owner"))
        )
        channels = {**values, **{BRANCH + node: None for node in pending}}
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = channels
        checkpoint["channel_versions"] = {channel: saver.get_next_version(None, None) for channel in channels}
        config: RunnableConfig = {"configurable": {"thread_id": session_id, "checkpoint_ns": ""}}
        metadata: Any = {"source": "update", "step": 0, "parents": {}, _MODEL_KEY: model_key}
        await saver.aput(config, checkpoint, metadata, dict(checkpoint["channel_versions"]))
        version = values.get("flow_version")
        if version is None or version == registered.version or version in registered.previous:
            served = registered.serving(version).flow
            if pending and all(_waits_with(served, values.get("task_error"), node) for node in pending):
                # a version served here resumes a waiting state at its interrupt, as its own runs leave it
                graph = await flow._graph(model_key, version)
                await graph.ainvoke(None, flow._config(model_key, session_id), durability=store.durability)
        await flow._settle(session_id)
        loaded.append(session_id)
    return loaded


def load_sessions(flow: GenieFlow, fixture: str | Path | Mapping[str, Any], model_key: str | None = None) -> list[str]:
    """Put the sessions of a fixture written by :func:`export_sessions` into the flow's store.

    The sessions are stored exactly as their version left them; loading them (an event, a poll,
    ``get_model``) then serves, migrates or refuses them as the flow declares.

    Args:
        flow: the flow whose store receives them.
        fixture: the JSON file (or its parsed content).
        model_key: the key to store them under; default the fixture's.

    Returns:
        The ids of the sessions loaded (the fixture's own).

    Raises:
        GenieGraphError: the file is no sessions fixture.
        UnknownModelKey: the key is not registered.
    """
    data = _read_fixture(fixture)
    return flow._sync(_load(flow, data, model_key or str(data["model_key"])))


def _waits_with(flow: CompiledFlow, task_error: Any, state_id: str) -> bool:
    if state_id not in flow.kinds or state_id in flow.finals:
        return False
    if flow.kinds[state_id] is StateKind.USER:
        return True
    try:
        error = json.loads(task_error or "")
    except (TypeError, ValueError):
        return False
    return isinstance(error, dict) and error.get("waiting_for_event") is True and error.get("state") == state_id


@dataclass(frozen=True)
class ResumedSession:
    """A stored session that resumed (see :func:`check_sessions_resume`).

    Attributes:
        session_id: the session.
        stored_version: the flow version it was stored by.
        version: the version serving it now (the current one once migrated).
        state_before: the state it was loaded in (after any migration).
        state_after: the state it reached.
        response: the last answer it gave.
    """

    session_id: str
    stored_version: str | None
    version: str | None
    state_before: str
    state_after: str
    response: str | None


class SessionsDidNotResume(AssertionError):
    """Stored sessions of a fixture did not resume; ``problems`` maps each session id to what went wrong."""

    def __init__(self, fixture: str, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = "\n".join(f"  {session_id}: {problem}" for session_id, problem in problems.items())
        super().__init__(f"{len(problems)} stored session(s) of {fixture} did not resume:\n{lines}")


def _settled(flow: GenieFlow, model_key: str, session_id: str, answer: AIResponse) -> AIResponse:
    for _ in range(1000):  # each round waits for a run to end; a run that goes on forever is a failure
        if answer.next_actions != [POLL] or answer.error:
            return answer
        flow.wait_until_ready(session_id)
        answer = flow.process_event(model_key, EventInput(session_id=session_id, event=POLL, event_input=""))
    raise GenieGraphError(f"session {session_id} kept answering poll")


def check_sessions_resume(
    flow: GenieFlow,
    model_key: str,
    fixture: str | Path,
    *,
    event: str = "user_input",
    event_input: str = "Still there?",
) -> list[ResumedSession]:
    """Load the stored sessions of a fixture and check each resumes on this version of the flow.

    Each session is loaded into the flow's store (:func:`load_sessions`) and polled until it settles
    (an invoker run the old version was working resumes and ends); then, if its state takes ``event``,
    it is sent ``event_input`` and settles again. Any error (a version neither served nor migrated,
    a failed migration, an invoker failure, a refused event) fails the check.

    Args:
        flow: the flow under test, on the store to load into.
        model_key: the model key whose sessions the fixture holds.
        fixture: a JSON file written by :func:`export_sessions`.
        event: the event to send each waiting session (``None``-like: ``""`` sends none).
        event_input: its text.

    Returns:
        One :class:`ResumedSession` per session.

    Raises:
        SessionsDidNotResume: naming each session that failed and why.

    Example:
        >>> check_sessions_resume(flow, "q_and_a", "tests/fixtures/versions/q_and_a-v1.json")  # doctest: +SKIP
    """
    resumed: list[ResumedSession] = []
    problems: dict[str, str] = {}
    for session_id in load_sessions(flow, fixture, model_key):
        try:
            before = flow.get_model(model_key, session_id)
            served = flow._registered[model_key].serving(before.flow_version).flow
            state_before = served.state_of(before)
            poll = EventInput(session_id=session_id, event=POLL, event_input="")
            answer = _settled(flow, model_key, session_id, flow.process_event(model_key, poll))
            if answer.error is None and event and event in answer.next_actions:
                sent = EventInput(session_id=session_id, event=event, event_input=event_input)
                answer = _settled(flow, model_key, session_id, flow.process_event(model_key, sent))
            if answer.error is not None:
                problems[session_id] = f"answered an error: {answer.error}"
                continue
            after = flow.get_model(model_key, session_id)
            served = flow._registered[model_key].serving(after.flow_version).flow
        except GenieGraphError as exc:
            problems[session_id] = f"{type(exc).__name__}: {exc}"
            continue
        stored = (before.history[-1].detail or {}).get("from") if _migrated(before) else before.flow_version
        resumed.append(
            ResumedSession(
                session_id, stored, after.flow_version, state_before, served.state_of(after), answer.response
            )
        )
    if problems:
        raise SessionsDidNotResume(str(fixture), problems)
    return resumed


def _migrated(model: GenieModel) -> bool:
    return bool(model.history) and model.history[-1].kind is HistoryKind.MIGRATED
