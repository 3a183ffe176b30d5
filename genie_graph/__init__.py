"""genie-graph: Genie Flow's dialogue state machines, compiled to LangGraph graphs."""

from ._api_models import AIProgressResponse, AIResponse, AIStatusResponse, EventInput, SessionStartRequest
from ._compiler import build_graph
from ._declaration import (
    EventData,
    GenieStateMachine,
    Interruption,
    MapTaskTemplate,
    NamedQueueTaskTemplate,
    State,
    SubFlow,
)
from ._diagram import Diagram
from ._failures import FailurePolicy
from ._flow import POLL, GenieCompat
from ._group import Decision, Execution, GroupMessage, MessageStatus
from ._history import HistoryEntry, HistoryKind
from ._invokers import GenieInvoker, RetryPolicy
from ._model import DialogueElement, DialogueFormat, GenieModel, SecondaryStore, VersionedModel
from ._preferences import PreferencesSource
from ._runtime import GenieFlow
from ._stack import FlowFrame, FlowStatus
from ._usage import Budget, PriceTable, SessionUsage, UsageTotals, report_usage
from ._user import User
from ._versions import Migration, flow_version

__all__ = [
    "POLL",
    "AIProgressResponse",
    "AIResponse",
    "AIStatusResponse",
    "Budget",
    "Decision",
    "EventInput",
    "Execution",
    "FailurePolicy",
    "FlowFrame",
    "FlowStatus",
    "GenieFlow",
    "SessionStartRequest",
    "Diagram",
    "DialogueElement",
    "DialogueFormat",
    "EventData",
    "GenieCompat",
    "GenieInvoker",
    "GenieModel",
    "GenieStateMachine",
    "GroupMessage",
    "HistoryEntry",
    "HistoryKind",
    "Interruption",
    "MapTaskTemplate",
    "MessageStatus",
    "Migration",
    "NamedQueueTaskTemplate",
    "PreferencesSource",
    "PriceTable",
    "RetryPolicy",
    "SecondaryStore",
    "SessionUsage",
    "State",
    "SubFlow",
    "UsageTotals",
    "User",
    "VersionedModel",
    "build_graph",
    "flow_version",
    "report_usage",
]
