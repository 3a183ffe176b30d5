"""The flow a traced Celery worker of ``tests/test_tracing.py`` loads (``--flow tests.tracing_worker:build``).

As a deployer would, it sets up the OpenTelemetry SDK before building the flow: every span the
worker ends is written at once, as one JSON line, to ``$TRACING_SPANS_FILE``. Tracing itself is
switched on by ``$GENIE_GRAPH_TRACING=1``, which the test sets for the worker process.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from genie_graph import GenieFlow
from tests import distributed_flows

SPANS_FILE_ENV = "TRACING_SPANS_FILE"


def _line(span: ReadableSpan) -> str:
    return json.dumps(json.loads(span.to_json())) + "\n"


def build(store: str | None = None) -> GenieFlow:
    spans = open(os.environ[SPANS_FILE_ENV], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=spans, formatter=_line)))
    trace.set_tracer_provider(provider)
    return distributed_flows.build(store)
