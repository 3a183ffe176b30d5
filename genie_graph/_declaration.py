"""Authoring syntax: ``GenieStateMachine``, ``State`` and ``EventData``, on python-statemachine 2.x.

A Genie Flow machine ports by changing imports: ``State`` is python-statemachine's own class
(``from statemachine import State`` keeps working), events are ``a.to(b, cond=..., unless=...)``
joined with ``|``, hooks are found by name, and ``templates`` maps state ids to templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from statemachine import State, StateMachine
from statemachine.event_data import EventData
from statemachine.exceptions import InvalidDefinition
from statemachine.factory import StateMachineMetaclass

from ._usage import Budget
from .errors import FlowDefinitionError

if TYPE_CHECKING:
    from ._failures import FailurePolicy
    from ._model import GenieModel
    from ._versions import Migration

__all__ = [
    "CompositeTemplate",
    "EventData",
    "GenieStateMachine",
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "State",
]


class MapTaskTemplate(NamedTuple):
    """Run ``template_name`` once per item of the list that ``list_attribute`` selects.

    ``list_attribute`` is a JMESPath into the render data. Each run sees the item as
    ``map_value`` and its position as ``map_index`` (names overridable); the results are
    combined into a JSON list, in list order.

    Example:
        >>> MapTaskTemplate("summarise/one.jinja2", "chapters")
        MapTaskTemplate(template_name='summarise/one.jinja2', list_attribute='chapters', \
map_index_field='map_index', map_value_field='map_value')
    """

    template_name: str
    list_attribute: str
    map_index_field: str = "map_index"
    map_value_field: str = "map_value"


class NamedQueueTaskTemplate(NamedTuple):
    """Run ``template`` on the worker queue ``queue_name`` (in process with the inline runner)."""

    template: CompositeTemplate
    queue_name: str


CompositeTemplate = (
    str
    | Callable[..., Any]
    | list["CompositeTemplate"]
    | dict[str, "CompositeTemplate"]
    | MapTaskTemplate
    | NamedQueueTaskTemplate
)
"""What a state's entry in ``templates`` may be: a template name, a Python callable (a custom step),
a list (run in sequence), a dict (run in parallel), a ``MapTaskTemplate`` or a
``NamedQueueTaskTemplate``."""


class _GenieMachineMeta(StateMachineMetaclass):
    """python-statemachine's class checks, reported as ``FlowDefinitionError``."""

    def __init__(cls, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kwargs: Any) -> None:
        try:
            super().__init__(name, bases, attrs, **kwargs)  # type: ignore[arg-type]
        except InvalidDefinition as exc:
            raise FlowDefinitionError(
                f"{attrs.get('__module__', '?')}.{name}",
                str(exc),
                fix="Fix the State/transition declarations of this class",
            ) from exc


class GenieStateMachine(StateMachine, metaclass=_GenieMachineMeta):
    """Base class of a flow's state machine, as in Genie Flow.

    Declare states, events and templates as class attributes; hooks and conditions are methods
    found by name. A machine is built on a :class:`GenieModel` and keeps the current state's
    *value* in ``model.state``.

    Class attributes:
        templates: state id -> template (see :data:`CompositeTemplate`); every state needs one.
        completion_events: optional invoker state id -> the event sent with the invoker's output.
            Without an entry, the first event declared out of that state is sent (Genie Flow's rule).
        budget: optional :class:`~genie_graph.Budget`: what one session may spend on invoker calls;
            or a ``staticmethod`` taking the session's model and returning its Budget (or None).
        on_failure: optional invoker state id -> :class:`~genie_graph.FailurePolicy` (or its mapping
            ``{"retry": ..., "on_error": ...}``), replacing those keys of its templates' ``meta.yaml``.
        version: optional version of the flow, recorded by each session it starts (default: a hash of
            the declaration, see :func:`~genie_graph.flow_version`).
        migrations: optional older version -> :class:`~genie_graph.Migration`: how sessions started
            on that version are carried over to this one when they are loaded.

    Example:
        >>> class QandAMachine(GenieStateMachine):
        ...     intro = State(initial=True, value=100)
        ...     ai_creates_response = State(value=200)
        ...     user_enters_query = State(value=300)
        ...     user_input = intro.to(ai_creates_response) | user_enters_query.to(ai_creates_response)
        ...     ai_extraction = ai_creates_response.to(user_enters_query)
        ...     templates = dict(
        ...         intro="q_and_a/intro.jinja2",
        ...         ai_creates_response="q_and_a/ai_creates_response.jinja2",
        ...         user_enters_query="q_and_a/user_enters_query.jinja2",
        ...     )
    """

    # Genie Flow's event placeholders: subclasses assign transitions to them.
    user_input = None
    ai_extraction = None
    advance = None

    templates: ClassVar[Mapping[str, CompositeTemplate]] = {}
    completion_events: ClassVar[Mapping[str, str]] = {}
    budget: ClassVar[Budget | Callable[[GenieModel], Budget | None] | None] = None
    on_failure: ClassVar[Mapping[str, FailurePolicy | Mapping[str, Any]]] = {}
    version: ClassVar[str | None] = None
    migrations: ClassVar[Mapping[str, Migration]] = {}

    def __init__(self, model: GenieModel, **kwargs: Any) -> None:
        kwargs.setdefault("state_field", "state")
        super().__init__(model=model, **kwargs)
