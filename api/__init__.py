"""genie-graph's HTTP API: Genie Flow's poll/event routes on FastAPI, with status codes and streaming.

app = api.create_app(flow)          # serve with uvicorn, or run `genie-graph serve`

The app also serves the playground, a web page to chat with the flows and watch their state
machines, at ``/`` (``create_app(flow, playground=False)`` leaves it out).
"""

from ._app import (
    DEFAULT_MAX_EVENT_INPUT_BYTES,
    DEFAULT_PREFIX,
    MAX_POLL_WAIT_SECONDS,
    create_app,
    parse_api_keys,
    settings_from_env,
)
from ._errors import ErrorBody

__all__ = [
    "DEFAULT_MAX_EVENT_INPUT_BYTES",
    "DEFAULT_PREFIX",
    "MAX_POLL_WAIT_SECONDS",
    "ErrorBody",
    "create_app",
    "parse_api_keys",
    "settings_from_env",
]
