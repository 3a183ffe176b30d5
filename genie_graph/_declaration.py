"""Authoring syntax: ``GenieStateMachine``, ``State`` and ``EventData``, on python-statemachine 2.x.

A Genie Flow machine ports by changing imports: ``State`` is python-statemachine's own class
(``from statemachine import State`` keeps working), events are ``a.to(b, cond=..., unless=...)``
joined with ``|``, hooks are found by name, and ``templates`` maps state ids to templates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

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
    "Interruption",
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "State",
    "SubFlow",
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


FieldMap = Mapping[str, str] | Sequence[str]
"""``{destination field: source field}``, or a list of names the two models share."""


@dataclass(frozen=True)
class SubFlow:
    """A state that runs another flow and goes on when it returns (a ``templates`` entry).

    The child flow starts in its initial state with a fresh model whose ``inputs`` fields are copied
    from this flow's model. Its user states wait for events through the session as usual. When it
    reaches a final state it *completes*: its ``outputs`` fields are copied back and this state sends
    ``on_complete``. When it reaches one of its machine's ``abort_states`` it *aborts*: this state
    sends ``on_abort`` if given, else this flow aborts too.

    Attributes:
        flow: the child flow's ``GenieModel`` subclass (any flow, also one registered on its own).
        inputs: ``{child field: field of this model}`` copied in at the start, or a list of field
            names both models have.
        outputs: ``{field of this model: child field}`` copied back on completion, or a list of names.
        on_complete: the event this state sends when the child completes (default: the first event
            declared out of the state).
        on_abort: the event this state sends when the child aborts (default: this flow aborts too).
        name: the flow's name in node names (``<name>/<state>``), the history and ``active_flows``
            (default: the model class's name in snake case, without ``Model``).

    Example:
        >>> templates = dict(
        ...     taking_order="order/taking.jinja2",
        ...     getting_address=SubFlow(AddressModel, inputs=["customer"], outputs={"address": "full_address"}),
        ... )  # doctest: +SKIP
    """

    flow: type[GenieModel]
    inputs: FieldMap = ()
    outputs: FieldMap = ()
    on_complete: str | None = None
    on_abort: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Interruption:
    """A flow that may interrupt this one (an entry of a machine's ``interruptions``).

    Exactly one trigger: ``event`` (an event the user sends that the current state does not take
    itself), ``when`` (a condition on the user's input: ``when(text, model)``, sync or async,
    checked before the state's own transitions) or ``intent`` (the label the machine's
    ``intent_classifier`` template answers for the user's input).

    A trigger fires only in a user state that is ``interruptible`` (a machine attribute: ``True``,
    ``False``, or the ids of the states that are). Interruptions declared by every flow running are
    candidates; the highest ``priority`` wins, ties go to declaration order (the session's flow's
    first). The interrupting flow starts with ``inputs`` copied from the interrupted flow's model
    and the user's text as ``actor_input``; the text is recorded as the user's utterance.

    Attributes:
        flow: the interrupting flow's ``GenieModel`` subclass.
        event: an event name that triggers it.
        when: a condition on the user's input that triggers it.
        intent: an intent label that triggers it (compared without case or surrounding space).
        priority: higher wins when several fire.
        on_abort: ``"abort"`` (default): if the interrupting flow aborts, the interrupted flow aborts
            too; ``"resume"``: it resumes as after a completion (``outputs`` are not copied).
        inputs: ``{interrupting flow's field: interrupted flow's field}``, or shared names.
        outputs: ``{interrupted flow's field: interrupting flow's field}`` copied back on completion.
        name: the flow's name (see :class:`SubFlow`).
    """

    flow: type[GenieModel]
    event: str | None = None
    when: Callable[..., bool | Awaitable[bool]] | None = None
    intent: str | None = None
    priority: int = 0
    on_abort: Literal["abort", "resume"] = "abort"
    inputs: FieldMap = ()
    outputs: FieldMap = ()
    name: str | None = None

    @property
    def trigger(self) -> str:
        """The trigger, as the history and errors name it."""
        if self.event is not None:
            return f"event {self.event!r}"
        if self.intent is not None:
            return f"intent {self.intent!r}"
        return f"condition {getattr(self.when, '__name__', 'when')}"


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
    | SubFlow
)
"""What a state's entry in ``templates`` may be: a template name, a Python callable (a custom step),
a list (run in sequence), a dict (run in parallel), a ``MapTaskTemplate``, a
``NamedQueueTaskTemplate``, or a ``SubFlow`` (the state runs another flow)."""


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
        interruptions: optional :class:`~genie_graph.Interruption` list: flows that may suspend this one
            (and any flow it runs) when their trigger fires in a user state, then let it resume.
        interruptible: whether this flow's user states may be interrupted: ``True`` (default),
            ``False``, or the ids of the user states that may.
        abort_states: final states that end this flow as *aborted* rather than completed (a
            :class:`~genie_graph.SubFlow`'s ``on_abort`` event follows, or the caller aborts too).
        intent_classifier: optional invoker template answering the intent label of the user's input
            (``{{ user_input }}``, ``{{ intents }}``), for interruptions declared with ``intent=``.
        group_reasoner: optional judge of a group session's messages (see
            :meth:`~genie_graph.GenieFlow.send_message`): an invoker template, rendered with
            ``{{ message }}``, ``{{ sender }}`` and ``{{ messages }}`` (the latest of the log: seq,
            sender, content), answering IGNORE or DELEGATE (and a reason after it); or a function
            ``(message, model)`` (may be async) answering a ``Decision``, a bool or such text. Without
            one every message is delegated to the flow.

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
    interruptions: ClassVar[Sequence[Interruption]] = ()
    interruptible: ClassVar[bool | Collection[str]] = True
    abort_states: ClassVar[Collection[str]] = ()
    intent_classifier: ClassVar[str | None] = None
    group_reasoner: ClassVar[str | Callable[..., Any] | None] = None

    def __init__(self, model: GenieModel, **kwargs: Any) -> None:
        kwargs.setdefault("state_field", "state")
        super().__init__(model=model, **kwargs)
