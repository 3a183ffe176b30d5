"""The app each process of ``genie-graph serve --workers N`` builds from the environment."""

from __future__ import annotations

import os

from fastapi import FastAPI

from genie_graph._cli import DEFAULT_FLOW, FLOW_ENV, STORE_ENV, freeze_loaded_objects, load_flow

from ._app import create_app, settings_from_env


def app_from_env() -> FastAPI:
    """``create_app`` for ``$GENIE_GRAPH_FLOW`` on ``$GENIE_GRAPH_STORE`` with ``$GENIE_GRAPH_RUNNER``."""
    flow = load_flow(
        os.environ.get(FLOW_ENV) or DEFAULT_FLOW, os.environ.get(STORE_ENV), os.environ.get("GENIE_GRAPH_RUNNER")
    )
    app = create_app(flow, close_flow=True, **settings_from_env())
    freeze_loaded_objects()
    return app
