"""The model as the graph's channels hold it: plain JSON, with the long lists turned into objects once.

Channels hold plain JSON values, so any checkpointer stores them without a class allow-list, and
every node validates them back into a fresh model. A session's dialogue and history grow with every
turn, and validating and dumping them whole at every node cost time in proportion to the session's
length (4 validations and 2 dumps of every element per user event). So this module remembers, for
each long list it validated or dumped lately, the objects that list stands for:

* ``validate`` hands a node the remembered objects of a list it has seen, if they are still as they
  were when remembered, and validates only the rest. Elements that count assignments to their
  fields (``_assignments``: the dialogue's and history's do) are unchanged if no assignment was
  counted since; others are compared with a copy of each object's fields;
* ``as_json`` dumps only the elements that are new or changed since they were validated, reusing the
  JSON of the others.

What a node gets and writes is the same as without it; only the work is less. Models that validate
these lists with validators of their own are validated and dumped in full.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import operator
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from uuid import UUID

from pydantic import BaseModel, TypeAdapter

from ._assignments import CountsAssignments, assignments
from ._packing import PACKED_FIELDS, pack, packing, unpack

__all__ = ["as_json", "changed_fields", "expect", "recall", "remembering", "validate"]

LONG_FIELDS = PACKED_FIELDS
"""The lists that grow with the session (dialogue, history)."""

_REMEMBERED = 32
"""How many lists one scope remembers (the oldest go first): a run's nodes need the last few."""

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class _Known:
    """A channel value (a JSON list, or its packed string) and the objects it stands for."""

    value: Any
    items: list[Any]
    objects: list[BaseModel]
    fields: list[dict[str, Any]]
    """Each object's fields when it was remembered: an object whose fields differ has been changed."""
    nested: dict[int, tuple[str, ...]]
    """The objects with containers among their fields, which change in place: they are compared with
    their JSON item instead (a container holding other than JSON data then counts as changed)."""
    counted: bool
    """Whether every object counts assignments to its fields (see ``_assignments``)."""
    since: int
    """The count of assignments before ``fields`` were last known to be the objects' fields."""

    def intact(self, start: int = 0, stop: int | None = None) -> bool:
        """Whether the objects ``start:stop`` are as they were when remembered."""
        stop = len(self.objects) if stop is None else stop
        if not self.counted or assignments() != self.since:  # a field was assigned since: compare them all
            now = assignments()
            if [obj.__dict__ for obj in self.objects[start:stop]] != self.fields[start:stop]:
                return False
            if (start, stop) == (0, len(self.objects)):
                self.since = now
        return all(
            self.objects[index].__dict__.get(name) == self.items[index].get(name, _ABSENT)
            for index, names in self.nested.items()
            if start <= index < stop
            for name in names
        )


_ABSENT = object()


_IMMUTABLE = (str, int, float, bool, bytes, datetime, date, time, timedelta, Enum, UUID, Decimal, type(None))


def _immutable(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return all(_immutable(arg) for arg in get_args(annotation))
    if origin is Literal:
        return True
    if origin is Annotated:
        return _immutable(get_args(annotation)[0])
    return isinstance(annotation, type) and issubclass(annotation, _IMMUTABLE)


@functools.cache
def _containers(element_class: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``element_class`` whose values may change in place (dicts, lists, models)."""
    return tuple(name for name, info in element_class.model_fields.items() if not _immutable(info.annotation))


@dataclass(slots=True)
class _Scope:
    """What one scope remembers: lists by their value's id, and the lists a kept session ended with."""

    known: dict[int, _Known]
    expected: list[_Known]
    """Lists the next read of a session is expected to give again, equal but as new objects: those its
    last run in this process left, read back from the store."""


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("genie_graph_channel_objects", default=None)


@contextmanager
def remembering() -> Iterator[None]:
    """Remember the long lists validated and dumped inside the block (and the tasks it starts).

    The runtime opens one around an event (its decision, its run, its answer) and around each run, so
    what is remembered lives as long as the work that uses it, and no longer.
    """
    if _scope.get() is not None:
        yield
        return
    token = _scope.set(_Scope({}, []))
    try:
        yield
    finally:
        _scope.reset(token)


def _nested(objects: list[BaseModel], fields: list[dict[str, Any]], offset: int = 0) -> dict[int, tuple[str, ...]]:
    """The indexes (from ``offset``) of the objects holding containers, with those fields' names."""
    nested: dict[int, tuple[str, ...]] = {}
    containers = {element_class: _containers(element_class) for element_class in set(map(type, objects))}
    for index, obj in enumerate(objects):
        names = containers[type(obj)]
        if names and any(fields[index].get(name) is not None for name in names):
            nested[offset + index] = names
    return nested


def _counted(objects: list[BaseModel]) -> bool:
    return all(issubclass(element_class, CountsAssignments) for element_class in set(map(type, objects)))


def _remember(value: Any, items: list[Any], objects: list[BaseModel]) -> None:
    """Remember ``objects`` for ``value``, their fields as they are now."""
    scope = _scope.get()
    if scope is None:
        return
    since = assignments()
    fields = [dict(obj.__dict__) for obj in objects]
    _keep(scope, _Known(value, items, list(objects), fields, _nested(objects, fields), _counted(objects), since))


def _keep(scope: _Scope, known: _Known) -> None:
    scope.known.pop(id(known.value), None)
    scope.known[id(known.value)] = known
    while len(scope.known) > _REMEMBERED:
        del scope.known[next(iter(scope.known))]


def _lookup(value: Any) -> _Known | None:
    scope = _scope.get()
    if value is None or scope is None:
        return None
    known = scope.known.get(id(value))
    if known is not None and known.value is value:  # (an id is unique while its object lives)
        return known
    for index, expected in enumerate(scope.expected):  # read back: equal JSON stands for the same objects
        if type(value) is type(expected.value) and len(value) == len(expected.value) and value == expected.value:
            del scope.expected[index]
            known = dataclasses.replace(expected, value=value)
            _keep(scope, known)
            return known
    return None


def recall(channels: Mapping[str, Any]) -> tuple[_Known, ...]:
    """What this scope remembers of the long lists in ``channels``: for :func:`expect`, in a later scope."""
    return tuple(known for name in LONG_FIELDS if (known := _lookup(channels.get(name))) is not None)


def expect(recalled: tuple[_Known, ...]) -> None:
    """Tell this scope that a read is about to give lists equal to these again, as new objects: their
    objects are reused (if still intact) instead of validated anew. Equality is checked, so a read that
    gives something else is validated as usual."""
    scope = _scope.get()
    if scope is not None:
        scope.expected.extend(recalled)


@functools.cache
def _cached(model_class: type[BaseModel]) -> bool:
    """Whether the long lists of ``model_class`` can be taken from memory: nothing validates them but pydantic."""
    decorators = model_class.__pydantic_decorators__
    if decorators.model_validators or decorators.root_validators:
        return False
    for validator in decorators.field_validators.values():
        own = validator.cls_var_name == "_unpack"  # GenieModel's: a packed list is unpacked, nothing more
        if not own and any(name in LONG_FIELDS or name == "*" for name in validator.info.fields):
            return False
    return all(name in model_class.model_fields for name in LONG_FIELDS)


@functools.cache
def _adapter(model_class: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """Dumps a list of ``name``'s elements as the model's own dump would."""
    return TypeAdapter(model_class.model_fields[name].annotation)  # type: ignore[arg-type]


def validate(model_class: type[M], channels: Mapping[str, Any]) -> M:
    """``model_class`` validated from channel values, the long lists taken from memory where they can be."""
    if not _cached(model_class):
        return model_class.model_validate(channels)
    known = {name: _lookup(channels.get(name)) for name in LONG_FIELDS}
    usable = {name: entry for name, entry in known.items() if entry is not None and entry.intact()}
    read = {  # the others' JSON items, each packed list unpacked once (for the model and to remember)
        name: unpack(value)
        for name in LONG_FIELDS
        if name not in usable and isinstance(value := channels.get(name), list | str)
    }
    objects = {name: list(entry.objects) for name, entry in usable.items()}
    model = model_class.model_validate({**channels, **read, **objects} if read or objects else channels)
    for name, items in read.items():
        if isinstance(items, list):
            _remember(channels[name], items, getattr(model, name))
    return model


def as_json(model: BaseModel, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model's fields as JSON data: what the graph's channels hold.

    ``before``, the channels the model was validated from, lets the long lists be dumped from what
    changed only. With packing on (stores that keep channels as JSON documents), they are packed.
    """
    model_class = type(model)
    if not _cached(model_class):
        data = model.model_dump(mode="json", include=set(model_class.model_fields))
        if packing.get():
            for name in LONG_FIELDS:
                data[name] = pack(data[name])
        return data
    data = model.model_dump(mode="json", include=set(model_class.model_fields) - set(LONG_FIELDS))
    scope = _scope.get()
    for name in LONG_FIELDS:
        objects: list[BaseModel] = getattr(model, name)
        previous = _lookup(before.get(name)) if before is not None else None
        since = assignments()  # (read before the check that the kept objects are unchanged)
        kept = _kept(objects, previous) if previous is not None else None
        if previous is not None and kept is not None and kept == (0, len(previous.objects), len(objects)):
            data[name] = previous.value  # unchanged: the same value, which the update then leaves out
            continue
        if previous is None or kept is None:
            items = _adapter(model_class, name).dump_python(objects, mode="json")
            value: Any = pack(items) if packing.get() else items
            _remember(value, items, objects)
            data[name] = value
            continue
        start, stop, count = kept
        fresh = objects[count:]
        items = previous.items[start:stop] + _adapter(model_class, name).dump_python(fresh, mode="json")
        reuse = previous.value if isinstance(previous.value, str) else None  # (its chunks packed already)
        data[name] = value = pack(items, reuse, start, count) if packing.get() else items
        if scope is not None:
            fresh_fields = [dict(obj.__dict__) for obj in fresh]
            fields = previous.fields[start:stop] + fresh_fields
            nested = {index - start: names for index, names in previous.nested.items() if start <= index < stop}
            nested.update(_nested(fresh, fresh_fields, count))
            counted = previous.counted and _counted(fresh)
            _keep(scope, _Known(value, items, list(objects), fields, nested, counted, since))
    return data


def _kept(objects: list[BaseModel], previous: _Known) -> tuple[int, int, int] | None:
    """Where ``objects`` begins with an unchanged run of ``previous``'s objects: ``(start, stop, count)``.

    A list that grew at its end, or lost elements at its start (a bounded history), keeps the
    JSON of the elements it kept; any other change is dumped in full (None).
    """
    if not objects or not previous.objects:
        return (0, 0, 0)
    start = next((index for index, obj in enumerate(previous.objects) if obj is objects[0]), None)
    if start is None:
        return (0, 0, 0)
    stop = min(len(previous.objects), start + len(objects))
    count = stop - start
    if not all(map(operator.is_, objects[:count], previous.objects[start:stop])) or not previous.intact(start, stop):
        return None
    return (start, stop, count)


def changed_fields(before: Mapping[str, Any], after: BaseModel) -> dict[str, Any]:
    """The update a node returns: the fields whose JSON differs from ``before``."""
    return {name: value for name, value in as_json(after, before).items() if before.get(name) != value}
