"""OpenTelemetry tracing: the span tree of sessions, on every store, collected with the SDK's in-memory exporter.

Spans of events, runs, states, transitions, renders and invoker calls; LangGraph's ids as
attributes; errors on the spans they happened in; no user text on a span unless the deployer
turns content on; a caller's span as the parent; and a Celery worker's spans in the trace of
the run that queued its work (real worker process, real Redis).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from genie_graph import POLL, EventInput, GenieFlow, GenieModel, GenieStateMachine, State
from genie_graph.errors import EventNotAllowed
from tests import distributed_flows
from tests.helpers import write_tree
from tests.services import RedisServer, Worker

KEY = "traced"
SECRET = "my secret question"
TEMPLATES = {
    "user/meta.yaml": "renderer: {}\n",
    "user/intro.jinja2": "Hello! Ask away.",
    "user/answer.jinja2": "{{ actor_input }}",
    "llm/meta.yaml": 'invoker:\n  type: python\n  callable: "tests.test_tracing:answer"\n',
    "llm/think.jinja2": "Q: {{ actor_input }}",
}


def answer(prompt: str) -> str:
    if "fail" in prompt:
        raise RuntimeError(f"invoker exploded on {prompt}")
    return f"A: {prompt}"


class TracedMachine(GenieStateMachine):
    intro = State(initial=True, value=0)
    think = State(value=1)
    answer = State(value=2)
    done = State(final=True, value=3)

    user_input = intro.to(think) | answer.to(think)
    ai_extraction = think.to(answer)
    finish = answer.to(done, cond="says_bye")

    templates = dict(
        intro="user/intro.jinja2", think="llm/think.jinja2", answer="user/answer.jinja2", done="user/intro.jinja2"
    )

    def says_bye(self, event_data: Any) -> bool:
        return bool(event_data.args[0] == "bye")


class TracedModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return TracedMachine


# ---- helpers ---------------------------------------------------------------------------------
Tree = tuple[str, tuple["Tree", ...]]


def tree(spans: Sequence[ReadableSpan], root: ReadableSpan) -> Tree:
    """``(name, children)`` of ``root``, children in the order they started."""
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    return root.name, tuple(tree(spans, child) for child in children)


def roots(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    ids = {s.context.span_id for s in spans}
    return sorted(
        (s for s in spans if s.parent is None or s.parent.span_id not in ids), key=lambda s: s.start_time or 0
    )


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    found = (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id)
    return sorted(found, key=lambda s: s.start_time or 0)


def everything_said(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute and event attribute of every span, as one text."""
    parts: list[str] = []
    for span in spans:
        parts += [f"{key}={value!r}" for key, value in (span.attributes or {}).items()]
        for event in span.events:
            parts += [f"{key}={value!r}" for key, value in (event.attributes or {}).items()]
        parts.append(span.status.description or "")
    return "\n".join(parts)


def exceptions(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == "exception"]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "templates", TEMPLATES)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def make_flow(templates: Path, store: str, **options: Any) -> GenieFlow:
    flow = GenieFlow(template_root=templates, store=store, **options)
    flow.register_model(KEY, TracedModel)
    return flow


@pytest.fixture
def traced(templates: Path, store_url: str, provider: TracerProvider) -> Iterator[GenieFlow]:
    with make_flow(templates, store_url, tracing=provider) as flow:
        yield flow


def turn(flow: GenieFlow, session_id: str, text: str) -> None:
    """An event into the invoker state, then a poll once its run has settled."""
    assert flow.process_event(
        KEY, EventInput(session_id=session_id, event="user_input", event_input=text)
    ).next_actions == [POLL]
    flow.wait_until_ready(session_id)
    flow.process_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""))


THINKING = (
    "genie.state think",
    (
        ("genie.render llm/think.jinja2", ()),
        ("genie.invoke llm/think.jinja2", ()),
        ("genie.transition", (("genie.render user/answer.jinja2", ()),)),
    ),
)
FIRST_TURN = (
    "genie.event user_input",
    (
        (
            "genie.run",
            (
                ("genie.state intro", (("genie.transition", ()),)),
                THINKING,
                ("genie.state answer", ()),  # runs up to its interrupt: waits for the next event
            ),
        ),
    ),
)


# ---- the tree of a session -------------------------------------------------------------------
def test_a_session_makes_the_documented_span_tree(traced: GenieFlow, exporter: InMemorySpanExporter) -> None:
    session_id = traced.create_new_session(KEY).session_id
    turn(traced, session_id, SECRET)
    spans = exporter.get_finished_spans()

    assert [tree(spans, root) for root in roots(spans)] == [
        (
            "genie.session.start",
            (
                ("genie.state intro", (("genie.render user/intro.jinja2", ()),)),  # enters the initial state
                ("genie.state intro", ()),  # ... and waits in it
            ),
        ),
        FIRST_TURN,
        ("genie.event poll", ()),
    ]
    assert all(span.status.status_code is StatusCode.UNSET for span in spans)
    assert len({span.context.trace_id for span in spans}) == 3  # a trace per call: start, event, poll

    start, event, run = (
        named(spans, "genie.session.start")[0],
        named(spans, "genie.event user_input")[0],
        named(spans, "genie.run")[0],
    )
    session = {"genie.model_key": KEY, "genie.session_id": session_id, "langgraph.thread_id": session_id}
    assert start.attributes is not None and {
        **session,
        "genie.flow_version": next(iter(traced.flow_versions(KEY))),
    }.items() <= (start.attributes.items())
    assert event.attributes == {
        **session,
        "genie.event": "user_input",
        "genie.run_id": run.attributes["genie.run_id"],  # type: ignore[index]
    } | {"genie.next_actions": (POLL,)}
    assert run.attributes is not None and session.items() <= run.attributes.items()

    states = (
        named(spans, "genie.state intro")[2:] + named(spans, "genie.state think") + named(spans, "genie.state answer")
    )
    for state, kind in zip(states, ["user", "invoker", "user"], strict=True):
        attributes = dict(state.attributes or {})
        state_id = state.name.removeprefix("genie.state ")
        assert {**session, "genie.state": state_id, "genie.state.kind": kind, "langgraph.node": state_id}.items() <= (
            attributes.items()
        )
        for key in ("langgraph.checkpoint_id", "langgraph.run_id", "langgraph.task_id", "langgraph.step"):
            assert attributes[key], key
    assert [s.attributes.get("langgraph.step") for s in states] == [2, 3, 4]  # type: ignore[union-attr]
    assert len({s.attributes["langgraph.checkpoint_id"] for s in states}) == 3  # type: ignore[index]
    assert [s.attributes.get("genie.waiting") for s in states] == [None, None, True]  # type: ignore[union-attr]

    first, second = named(spans, "genie.transition")[:2]
    assert first.attributes == {
        "genie.event": "user_input",
        "genie.state": "intro",
        "genie.transition.source": "intro",
        "genie.transition.target": "think",
    }
    assert second.attributes == {
        "genie.event": "ai_extraction",
        "genie.state": "think",
        "genie.transition.source": "think",
        "genie.transition.target": "answer",
    }
    invoke = named(spans, "genie.invoke llm/think.jinja2")[0]
    assert invoke.kind is trace.SpanKind.CLIENT
    assert invoke.attributes == {"genie.template": "llm/think.jinja2", "genie.invoker.type": "python"}
    render = named(spans, "genie.render llm/think.jinja2")[0]
    assert render.attributes == {"genie.template": "llm/think.jinja2", "genie.render.length": len(f"Q: {SECRET}")}

    assert "secret" not in everything_said(spans)


def test_user_text_goes_on_spans_only_when_the_deployer_enables_it(
    templates: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with make_flow(templates, "memory://", tracing=provider, trace_content=True) as flow:
        session_id = flow.create_new_session(KEY).session_id
        turn(flow, session_id, SECRET)
        turn(flow, session_id, "fail now")
    spans = exporter.get_finished_spans()

    event = named(spans, "genie.event user_input")[0]
    assert event.attributes is not None and event.attributes["genie.event.input"] == SECRET
    assert named(spans, "genie.render llm/think.jinja2")[0].attributes["genie.render.output"] == f"Q: {SECRET}"  # type: ignore[index]
    to_think, to_answer = named(spans, "genie.transition")[:2]
    assert to_think.attributes["genie.event.input"] == SECRET  # type: ignore[index]
    assert to_answer.attributes["genie.event.input"] == f"A: Q: {SECRET}"  # type: ignore[index]  # the LLM's answer
    failed = named(spans, "genie.invoke llm/think.jinja2")[1]
    assert "invoker exploded on Q: fail now" in exceptions(failed)[0]["exception.message"]
    assert "invoker exploded on Q: fail now" in (failed.status.description or "")


# ---- errors --------------------------------------------------------------------------------
def test_an_invoker_failure_is_an_error_on_its_invoke_span(traced: GenieFlow, exporter: InMemorySpanExporter) -> None:
    session_id = traced.create_new_session(KEY).session_id
    turn(traced, session_id, "please fail, " + SECRET)
    spans = exporter.get_finished_spans()

    failed = named(spans, "genie.invoke llm/think.jinja2")[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "InvokerError"
    [exception] = exceptions(failed)
    assert exception["exception.type"] == "genie_graph.errors.InvokerError"
    assert "exception.message" not in exception  # it quotes the prompt: only with content on
    stacktrace = exception["exception.stacktrace"]  # where it failed, causes included: frames and types, no values
    assert 'test_tracing.py", line' in stacktrace and "in answer" in stacktrace
    assert "\nbuiltins.RuntimeError\n" in stacktrace and stacktrace.endswith("\ngenie_graph.errors.InvokerError")
    # The failure is kept on the session (as Genie Flow does): the state and the run go on.
    think = named(spans, "genie.state think")[0]
    assert failed.parent is not None and failed.parent.span_id == think.context.span_id
    assert think.status.status_code is StatusCode.UNSET
    poll = named(spans, "genie.event poll")[0]
    assert poll.attributes is not None and poll.attributes["genie.answer.error"] is True
    assert "secret" not in everything_said(spans) and "fail," not in everything_said(spans)


def test_refused_events_are_errors_on_their_spans(traced: GenieFlow, exporter: InMemorySpanExporter) -> None:
    session_id = traced.create_new_session(KEY).session_id
    turn(traced, session_id, "hello")
    exporter.clear()

    with pytest.raises(EventNotAllowed):  # undeclared: refused before any run
        traced.send_event(KEY, EventInput(session_id=session_id, event=SECRET, event_input=""))
    with pytest.raises(EventNotAllowed):  # declared, but its condition fails: refused by the transition
        traced.send_event(KEY, EventInput(session_id=session_id, event="finish", event_input=SECRET))
    spans = exporter.get_finished_spans()

    assert [tree(spans, root) for root in roots(spans)] == [
        ("genie.event <undeclared>", ()),
        (
            "genie.event finish",
            (
                (
                    "genie.run",
                    (
                        ("genie.state answer", (("genie.transition", ()),)),  # refused ...
                        ("genie.state answer", ()),  # ... it waits for an event again (then rolled back)
                    ),
                ),
            ),
        ),
    ]
    undeclared, finish = roots(spans)
    for span in (undeclared, finish, named(spans, "genie.transition")[0]):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "EventNotAllowed"
        assert [e["exception.type"] for e in exceptions(span)] == ["genie_graph.errors.EventNotAllowed"]
        assert span.attributes is not None and span.attributes["genie.refusal.allowed"] == ("user_input", "finish")
    assert undeclared.attributes is not None and undeclared.attributes["genie.event"] == "<undeclared>"
    transition = named(spans, "genie.transition")[0]
    assert transition.attributes is not None and "genie.transition.target" not in transition.attributes
    assert [s.status.status_code for s in named(spans, "genie.state answer")] == [StatusCode.UNSET] * 2
    assert "secret" not in everything_said(spans) and "secret" not in " ".join(s.name for s in spans)


# ---- switching it on and off --------------------------------------------------------------------
_GLOBAL = InMemorySpanExporter()


@pytest.fixture
def global_exporter() -> InMemorySpanExporter:
    """The SDK as the process's global TracerProvider (set once per test process)."""
    if not getattr(trace.get_tracer_provider(), "_genie_graph_test", False):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_GLOBAL))
        provider._genie_graph_test = True  # type: ignore[attr-defined]
        trace.set_tracer_provider(provider)
    _GLOBAL.clear()
    return _GLOBAL


def test_tracing_is_off_by_default(
    templates: Path, global_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENIE_GRAPH_TRACING", raising=False)
    with make_flow(templates, "memory://") as flow:
        session_id = flow.create_new_session(KEY).session_id
        turn(flow, session_id, "hello")
        assert flow._tracing_settings is None
    with make_flow(templates, "memory://", tracing=False) as flow:
        monkeypatch.setenv("GENIE_GRAPH_TRACING", "1")  # read when the flow is made, not after
        turn(flow, flow.create_new_session(KEY).session_id, "hello")
    assert global_exporter.get_finished_spans() == ()


@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_the_environment_turns_it_on_with_the_global_provider(
    templates: Path, global_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GENIE_GRAPH_TRACING", value)
    monkeypatch.setenv("GENIE_GRAPH_TRACE_CONTENT", "1")
    with make_flow(templates, "memory://") as flow:
        session_id = flow.create_new_session(KEY).session_id
        turn(flow, session_id, SECRET)
    spans = global_exporter.get_finished_spans()
    assert [tree(spans, root) for root in roots(spans)][1] == FIRST_TURN
    assert named(spans, "genie.event user_input")[0].attributes["genie.event.input"] == SECRET  # type: ignore[index]
    assert named(spans, "genie.event user_input")[0].instrumentation_scope.name == "genie_graph"  # type: ignore[union-attr]


def test_a_bad_switch_fails_when_the_flow_is_made(templates: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIE_GRAPH_TRACING", "maybe")
    with pytest.raises(ValueError, match=r"GENIE_GRAPH_TRACING must be 1 or 0"):
        GenieFlow(template_root=templates, store="memory://")


# ---- the caller's trace ----------------------------------------------------------------------
def test_the_callers_span_is_the_parent_from_any_thread_or_loop(
    templates: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("the app")
    with make_flow(templates, "memory://", tracing=provider) as flow:
        session_id = flow.create_new_session(KEY).session_id
        with tracer.start_as_current_span("POST /event"):  # a sync caller: the flow works on its own thread
            flow.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="hi"))
        flow.wait_until_ready(session_id)

        async def client() -> None:  # an async caller on another event loop
            with tracer.start_as_current_span("async caller"):
                await flow.aprocess_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""))

        asyncio.run(client())
    spans = exporter.get_finished_spans()
    assert [tree(spans, root) for root in roots(spans)][1:] == [
        ("POST /event", (FIRST_TURN,)),
        ("async caller", (("genie.event poll", ()),)),
    ]


# ---- Celery: a worker's spans join the trace --------------------------------------------------
@pytest.fixture
def traced_worker(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Path, Path]]:
    root = distributed_flows.write_templates(tmp_path / "templates")
    spans_file = tmp_path / "worker-spans.jsonl"
    spans_file.touch()
    env = {
        "GENIE_GRAPH_STORE": redis_server.url,
        "GENIE_GRAPH_TRACING": "1",
        "TRACING_SPANS_FILE": str(spans_file),
        "DISTRIBUTED_TEMPLATES": str(root),
        "DISTRIBUTED_MARKERS": str(tmp_path),
        "DISTRIBUTED_LEASE": "2",
    }
    worker = Worker("tests.tracing_worker:build", redis_server.url, tmp_path / "worker.log", env=env).start()
    try:
        yield root, spans_file
    finally:
        worker.stop()


def worker_spans(spans_file: Path, session_id: str, until: str) -> list[dict[str, Any]]:
    """The worker's spans of the session, once the span named ``until`` is written (spans are written as they end)."""
    deadline = time.monotonic() + 60
    while True:
        spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
        trace_ids = {s["context"]["trace_id"] for s in spans if s["attributes"].get("genie.session_id") == session_id}
        mine = [s for s in spans if s["context"]["trace_id"] in trace_ids]
        if any(s["name"] == until for s in mine):
            return mine
        assert time.monotonic() < deadline, f"the worker wrote no {until!r} span for session {session_id}"
        time.sleep(0.05)


def test_a_celery_workers_spans_join_the_trace_of_the_run_that_queued_its_work(
    traced_worker: tuple[Path, Path],
    redis_server: RedisServer,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    templates, spans_file = traced_worker
    flow = GenieFlow(template_root=templates, store=redis_server.url, runner="celery", tracing=provider)
    flow.register_model(distributed_flows.MODEL_KEY, distributed_flows.DistributedModel)
    with flow:
        session_id = flow.create_new_session(distributed_flows.MODEL_KEY).session_id
        event = EventInput(session_id=session_id, event="user_input", event_input=SECRET)
        assert flow.process_event(distributed_flows.MODEL_KEY, event).next_actions == [POLL]
        flow.wait_until_ready(session_id)
        answer = flow.process_event(
            distributed_flows.MODEL_KEY, EventInput(session_id=session_id, event=POLL, event_input="")
        )
        assert answer.response is not None and answer.response.startswith(f"Answer: {SECRET}")
    here = exporter.get_finished_spans()
    there = worker_spans(spans_file, session_id, "genie.advance")

    # Here: the event's run takes the transition and stops before the invoker state, which it queues.
    event_span = named(here, "genie.event user_input")[0]
    assert tree(here, event_span) == (
        "genie.event user_input",
        (("genie.run", (("genie.state intro", (("genie.transition", ()),)),)),),
    )
    run = named(here, "genie.run")[0]
    # There: the worker's task continues that run's trace, as its child.
    [advance] = [s for s in there if s["name"] == "genie.advance"]
    assert advance["kind"] == "SpanKind.CONSUMER"
    assert advance["context"]["trace_id"] == f"0x{run.context.trace_id:032x}"
    assert advance["parent_id"] == f"0x{run.context.span_id:016x}"
    assert advance["attributes"]["genie.run_id"] == run.attributes["genie.run_id"]  # type: ignore[index]
    assert advance["attributes"]["genie.outcome"] == "done"
    assert advance["attributes"]["genie.session_id"] == session_id

    def worker_tree(span: dict[str, Any]) -> Tree:
        kids = sorted((s for s in there if s["parent_id"] == span["context"]["span_id"]), key=lambda s: s["start_time"])
        return span["name"], tuple(worker_tree(kid) for kid in kids)

    assert worker_tree(advance) == (
        "genie.advance",
        (
            (
                "genie.run",
                (
                    (
                        "genie.state thinking",
                        (
                            ("genie.render llm/prompt.jinja2", ()),
                            ("genie.invoke llm/prompt.jinja2", ()),
                            ("genie.transition", (("genie.render user/answered.jinja2", ()),)),
                        ),
                    ),
                    ("genie.state answered", ()),
                ),
            ),
        ),
    )
    assert all(s["status"]["status_code"] == "UNSET" for s in there)
    assert "secret" not in json.dumps([s["attributes"] for s in there] + [s["events"] for s in there])
    assert "secret" not in everything_said(here)
