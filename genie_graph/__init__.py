"""genie-graph: Genie Flow's dialogue state machines, compiled to LangGraph graphs."""

from ._api_models import AIProgressResponse, AIResponse, AIStatusResponse, EventInput, SessionStartRequest
from ._compiler import build_graph
from ._declaration import EventData, GenieStateMachine, MapTaskTemplate, NamedQueueTaskTemplate, State
from ._diagram import Diagram
from ._flow import POLL, GenieCompat
from ._history import HistoryEntry, HistoryKind
from ._invokers import GenieInvoker
from ._model import DialogueElement, DialogueFormat, GenieModel, SecondaryStore, VersionedModel
from ._runtime import GenieFlow
from ._usage import Budget, PriceTable, SessionUsage, UsageTotals, report_usage
from ._user import User

__all__ = [
    "POLL",
    "AIProgressResponse",
    "AIResponse",
    "AIStatusResponse",
    "Budget",
    "EventInput",
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
    "HistoryEntry",
    "HistoryKind",
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "PriceTable",
    "SecondaryStore",
    "SessionUsage",
    "State",
    "UsageTotals",
    "User",
    "VersionedModel",
    "build_graph",
    "report_usage",
]
