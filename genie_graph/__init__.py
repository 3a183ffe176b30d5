"""genie-graph: Genie Flow's dialogue state machines, compiled to LangGraph graphs."""

from ._api_models import AIProgressResponse, AIResponse, AIStatusResponse, EventInput, SessionStartRequest
from ._compiler import build_graph
from ._declaration import EventData, GenieStateMachine, MapTaskTemplate, NamedQueueTaskTemplate, State
from ._diagram import Diagram
from ._flow import POLL, GenieCompat
from ._invokers import GenieInvoker
from ._model import DialogueElement, DialogueFormat, GenieModel, SecondaryStore, VersionedModel
from ._runtime import GenieFlow
from ._user import User

__all__ = [
    "POLL",
    "AIProgressResponse",
    "AIResponse",
    "AIStatusResponse",
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
    "MapTaskTemplate",
    "NamedQueueTaskTemplate",
    "SecondaryStore",
    "State",
    "User",
    "VersionedModel",
    "build_graph",
]
