"""Composite templates (genie_graph._composite): list, dict, MapTaskTemplate, callables.

Through ``GenieFlow`` end to end, and through ``CompositeRunner`` directly where that is clearer.
Concurrency is proven with barriers (a sequential run cannot pass them), progress with gates the
test releases; nothing waits on the clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from genie_graph import (
    POLL,
    AIResponse,
    EventInput,
    GenieFlow,
    GenieModel,
    GenieStateMachine,
    MapTaskTemplate,
    State,
)
from genie_graph._composite import CompositeRunner
from genie_graph._invokers import InvokerRegistry
from genie_graph._templates import TemplateLibrary
from genie_graph.errors import TemplateError
from tests.flows_port import probes, sync
from tests.helpers import send, write_tree

KEY = "composite"

FILES = {
    "ui/meta.yaml": "renderer: {}\n",
    "ui/intro.jinja2": "Hello",
    "ui/show.jinja2": "{{ actor_input }}",
    "ui/oops.jinja2": "OOPS {{ actor_input }}",
    # echo: the rendered template is the output
    "echo/meta.yaml": "invoker:\n  type: echo\n",
    "echo/first.jinja2": '{"step": 1, "input": {{ actor_input | tojson }}}',
    "echo/plain.jinja2": "plain {{ actor_input }}",
    "echo/probe.jinja2": (
        "{{ {'previous_result': previous_result, 'parsed_previous_result': parsed_previous_result,"
        " 'actor_input': actor_input, 'parsed_actor_input': parsed_actor_input} | tojson }}"
    ),
    "echo/prev.jinja2": "{{ previous_result }}",
    "echo/item.jinja2": "{{ {'i': map_index, 'v': map_value} | tojson }}",
    "echo/custom_item.jinja2": "{{ {'i': idx, 'v': val} | tojson }}",
    "echo/plain_item.jinja2": "item {{ map_value }}",
    "echo/json_a.jinja2": '{"n": 1}',
    "echo/text_b.jinja2": "hello b",
    # python invoker, sync callable waiting on a threading.Barrier in a worker thread
    "sync/meta.yaml": "invoker:\n  type: python\n  callable: tests.flows_port.sync:barrier_echo\n",
    "sync/a.jinja2": "A",
    "sync/b.jinja2": "B",
    "sync/c.jinja2": "C",
    "sync/item.jinja2": "{{ map_value }}",
    # python invoker, async callable waiting on an asyncio.Barrier
    "async/meta.yaml": "invoker:\n  type: python\n  callable: tests.flows_port.sync:abarrier_echo\n",
    "async/a.jinja2": "A",
    "async/b.jinja2": "B",
    "async/c.jinja2": "C",
    # map items finishing in the reverse order of the list
    "order/meta.yaml": "invoker:\n  type: python\n  callable: tests.flows_port.sync:finish_in_reverse\n",
    "order/item.jinja2": "{{ map_value }}",
    # gate: content starting with "hold" blocks until the test releases it
    "gate/meta.yaml": "invoker:\n  type: python\n  callable: tests.flows_port.sync:gated\n",
    "gate/input.jinja2": "{{ actor_input }}",
    "gate/fast.jinja2": "go {{ actor_input }}",
    "gate/hold.jinja2": "hold {{ actor_input }}",
    "gate/item.jinja2": "{{ map_value }}",
    # turnstile: content starting with "step" waits until the test admits it, one call at a time
    "turn/meta.yaml": "invoker:\n  type: python\n  callable: tests.flows_port.sync:turnstiled\n",
    "turn/a.jinja2": "step a {{ actor_input }}",
    "turn/b.jinja2": "step b",
    # failing invokers
    "broken/meta.yaml": (
        'invoker:\n  type: tests.flows_port.probes.Broken\n  on_error: "fallback for {{ actor_input }} ({{ error }})"\n'
    ),
    "broken/t.jinja2": "{{ actor_input }}",
    "broken_event/meta.yaml": (
        "invoker:\n  type: tests.flows_port.probes.Broken\n"
        "  on_error:\n    event: failed\n    content: 'went wrong: {{ error }}'\n"
    ),
    "broken_event/t.jinja2": "{{ actor_input }}",
    "broken_plain/meta.yaml": "invoker:\n  type: tests.flows_port.probes.Broken\n",
    "broken_plain/t.jinja2": "{{ actor_input }}",
}

CATALOG = {"shelves": [{"books": ["a", "b"]}, {"books": ["c"]}]}


def make_model(ai_template: Any, name: str = "CompositeModel") -> type[GenieModel]:
    """intro (user) -user_input-> ai (invoker: ``ai_template``) -ai_extraction-> show (user)."""

    class CompositeMachine(GenieStateMachine):
        intro = State(initial=True, value=100)
        ai = State(value=200)
        show = State(value=300)
        oops = State(value=400)

        user_input = intro.to(ai) | show.to(ai) | oops.to(ai)
        ai_extraction = ai.to(show)
        failed = ai.to(oops)

        templates = dict(intro="ui/intro.jinja2", ai=ai_template, show="ui/show.jinja2", oops="ui/oops.jinja2")

    class CompositeModel(GenieModel):
        catalog: dict[str, Any] = Field(default_factory=lambda: json.loads(json.dumps(CATALOG)))

        @classmethod
        def get_state_machine_class(cls) -> type[GenieStateMachine]:
            return CompositeMachine

    CompositeModel.__name__ = CompositeModel.__qualname__ = name
    return CompositeModel


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "templates", FILES)


@pytest.fixture
def genie(tree: Path) -> Iterator[GenieFlow]:
    sync.GATE = sync.Gate()
    sync.TURNSTILE = sync.Turnstile()
    flow = GenieFlow(template_root=tree, store="memory://")
    try:
        yield flow
    finally:
        sync.GATE.release.set()  # never leave a run blocked behind a failed assertion
        if sync.BARRIER is not None:
            sync.BARRIER.abort()
        flow.close()
        sync.BARRIER = None
        sync.ABARRIER = None


def start(flow: GenieFlow, ai_template: Any) -> str:
    flow.register_model(KEY, make_model(ai_template))
    return flow.create_new_session(KEY).session_id


def run_turn(flow: GenieFlow, ai_template: Any, text: str) -> AIResponse:
    """Register a flow with ``ai_template``, start a session and send one user_input to the end."""
    session_id = start(flow, ai_template)
    return send(flow, KEY, session_id, "user_input", text)


def output_of(flow: GenieFlow, ai_template: Any, text: str = "hello") -> Any:
    """The composite's output (shown verbatim by the ``show`` state), JSON-parsed."""
    answer = run_turn(flow, ai_template, text)
    assert answer.error is None, answer.error
    assert answer.next_actions == ["user_input"]
    return json.loads(answer.response or "")


def poll(flow: GenieFlow, session_id: str) -> AIResponse:
    return flow.process_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""))


def poll_until(flow: GenieFlow, session_id: str, predicate: Callable[[AIResponse], bool]) -> AIResponse:
    """Poll (as a client does) until ``predicate`` holds for an answer; fail after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        answer = poll(flow, session_id)
        if predicate(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"condition never held; last poll answer: {answer.model_dump()}")
        time.sleep(0.002)


# ---------------------------------------------------------------------------------------------
# list: a chain


def test_list_hands_the_previous_output_to_the_next_step(genie: GenieFlow) -> None:
    got = output_of(genie, ["echo/first.jinja2", "echo/probe.jinja2"])
    first = '{"step": 1, "input": "hello"}'
    assert got == {
        "previous_result": first,
        "parsed_previous_result": {"step": 1, "input": "hello"},
        "actor_input": first,
        "parsed_actor_input": {"step": 1, "input": "hello"},
    }


def test_list_runs_steps_in_order(genie: GenieFlow) -> None:
    answer = run_turn(genie, ["echo/plain.jinja2", "echo/plain.jinja2", "echo/plain.jinja2"], "hello")
    assert answer.error is None
    assert answer.response == "plain plain plain hello"


def test_list_non_json_previous_result_parses_to_none(genie: GenieFlow) -> None:
    """Genie Flow's chained_template: ``parsed_previous_result`` is None when the text is not JSON.

    ``parsed_actor_input`` follows the model's own rule (None when not JSON) as well.
    """
    got = output_of(genie, ["echo/plain.jinja2", "echo/probe.jinja2"])
    assert got["previous_result"] == "plain hello"
    assert got["actor_input"] == "plain hello"
    assert got["parsed_previous_result"] is None
    assert got["parsed_actor_input"] is None


def test_first_step_of_a_list_sees_no_previous_result(tree: Path) -> None:
    runner = CompositeRunner(TemplateLibrary(tree), InvokerRegistry())
    data = {"actor_input": "x", "parsed_actor_input": None}
    with pytest.raises(TemplateError, match="previous_result"):
        asyncio.run(runner.run(["echo/prev.jinja2", "echo/prev.jinja2"], lambda names=None: dict(data)))
    chain = ["echo/plain.jinja2", "echo/prev.jinja2"]
    assert asyncio.run(runner.run(chain, lambda names=None: dict(data))) == "plain x"


def test_dict_inside_a_list_gives_every_branch_the_previous_result(genie: GenieFlow) -> None:
    got = output_of(genie, ["echo/plain.jinja2", {"x": "echo/probe.jinja2", "y": "echo/probe.jinja2"}])
    assert list(got) == ["x", "y"]
    for branch in got.values():
        assert branch["previous_result"] == "plain hello"
        assert branch["actor_input"] == "plain hello"


# ---------------------------------------------------------------------------------------------
# dict: parallel parts


def test_dict_yields_a_json_object_keyed_like_the_dict(genie: GenieFlow) -> None:
    answer = run_turn(genie, {"b": "echo/text_b.jinja2", "a": "echo/json_a.jinja2"}, "hello")
    assert answer.error is None
    got = json.loads(answer.response or "")
    assert got == {"b": "hello b", "a": {"n": 1}}  # JSON values parsed, text kept as text
    assert list(got) == ["b", "a"]  # the dict's key order


def test_dict_branches_truly_run_concurrently(genie: GenieFlow) -> None:
    sync.BARRIER = threading.Barrier(parties=3, timeout=10)
    got = output_of(genie, {"a": "sync/a.jinja2", "b": "sync/b.jinja2", "c": "sync/c.jinja2"})
    assert got == {"a": "A", "b": "B", "c": "C"}
    assert not sync.BARRIER.broken


def test_dict_branches_with_async_invokers_run_concurrently(genie: GenieFlow) -> None:
    sync.ABARRIER = asyncio.Barrier(3)
    got = output_of(genie, {"a": "async/a.jinja2", "b": "async/b.jinja2", "c": "async/c.jinja2"})
    assert got == {"a": "A", "b": "B", "c": "C"}


def test_dict_of_callable_steps_runs_concurrently(genie: GenieFlow) -> None:
    sync.BARRIER = threading.Barrier(parties=2, timeout=10)
    got = output_of(genie, {"one": sync.barrier_step, "two": sync.barrier_step})
    assert got == {"one": "step saw ai", "two": "step saw ai"}


# ---------------------------------------------------------------------------------------------
# MapTaskTemplate


def test_map_runs_once_per_item_with_index_and_value(genie: GenieFlow) -> None:
    got = output_of(genie, MapTaskTemplate("echo/item.jinja2", "parsed_actor_input"), '["a", "b", "c"]')
    assert got == [{"i": 0, "v": "a"}, {"i": 1, "v": "b"}, {"i": 2, "v": "c"}]


def test_map_follows_a_nested_jmespath(genie: GenieFlow) -> None:
    got = output_of(
        genie,
        MapTaskTemplate("echo/item.jinja2", "parsed_actor_input.rows[*].name"),
        '{"rows": [{"name": "x"}, {"name": "y"}]}',
    )
    assert got == [{"i": 0, "v": "x"}, {"i": 1, "v": "y"}]


def test_map_over_a_model_field(genie: GenieFlow) -> None:
    got = output_of(genie, MapTaskTemplate("echo/plain_item.jinja2", "catalog.shelves[*].books[]"))
    assert got == ["item a", "item b", "item c"]


def test_map_with_custom_field_names(genie: GenieFlow) -> None:
    template = MapTaskTemplate("echo/custom_item.jinja2", "parsed_actor_input", "idx", "val")
    assert output_of(genie, template, '["p", "q"]') == [{"i": 0, "v": "p"}, {"i": 1, "v": "q"}]


def test_map_wraps_a_non_list_value(genie: GenieFlow) -> None:
    got = output_of(genie, MapTaskTemplate("echo/item.jinja2", "parsed_actor_input.single"), '{"single": "only"}')
    assert got == [{"i": 0, "v": "only"}]


def test_map_results_keep_list_order_whatever_the_finishing_order(genie: GenieFlow) -> None:
    sync.reset_order()
    got = output_of(genie, MapTaskTemplate("order/item.jinja2", "parsed_actor_input"), '["first", "second"]')
    assert got == [{"item": "first"}, {"item": "second"}]


def test_map_items_truly_run_concurrently(genie: GenieFlow) -> None:
    sync.BARRIER = threading.Barrier(parties=3, timeout=10)
    got = output_of(genie, MapTaskTemplate("sync/item.jinja2", "parsed_actor_input"), '["x", "y", "z"]')
    assert got == ["x", "y", "z"]
    assert not sync.BARRIER.broken


# ---------------------------------------------------------------------------------------------
# callables: custom steps


def custom_step(data: dict[str, Any]) -> str:
    return f"{data['state_id']}|{data['actor_input']}|{data['session_id']}|{sorted(data['catalog'])}"


async def async_custom_step(data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"async": True, "input": data["actor_input"], "state_name": data["state_name"]}


def previous_step(data: dict[str, Any]) -> str:
    return f"after [{data['previous_result']}]"


def test_callable_step_is_called_with_the_render_data(genie: GenieFlow) -> None:
    session_id = start(genie, custom_step)
    answer = send(genie, KEY, session_id, "user_input", "hi there")
    assert answer.error is None
    assert answer.response == f"ai|hi there|{session_id}|['shelves']"


def test_async_callable_step_result_becomes_json(genie: GenieFlow) -> None:
    assert output_of(genie, async_custom_step, "hey") == {"async": True, "input": "hey", "state_name": "Ai"}


def test_callable_step_in_a_list_sees_the_previous_result(genie: GenieFlow) -> None:
    answer = run_turn(genie, ["echo/plain.jinja2", previous_step], "hello")
    assert answer.response == "after [plain hello]"


# ---------------------------------------------------------------------------------------------
# progress, while a run is held open


def _in_flight(answer: AIResponse) -> tuple[int, int]:
    assert answer.next_actions == [POLL]
    assert answer.error is None and answer.response is None
    assert answer.progress is not None
    return answer.progress.total_number_of_subtasks, answer.progress.number_of_subtasks_executed


def _release_and_finish(flow: GenieFlow, session_id: str) -> AIResponse:
    sync.GATE.release.set()
    answer = poll_until(flow, session_id, lambda a: a.next_actions != [POLL] or a.error is not None)
    assert answer.error is None, answer.error
    return answer


def test_progress_of_a_single_template(genie: GenieFlow) -> None:
    session_id = start(genie, "gate/input.jinja2")
    first = genie.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="hold it"))
    assert first.next_actions == [POLL] and first.response is None
    assert sync.GATE.entered.wait(10)
    assert _in_flight(poll(genie, session_id)) == (2, 0)  # 1 invocation + 1 final transition
    assert _release_and_finish(genie, session_id).response == "done:hold it"


def test_progress_total_is_known_from_the_first_poll(genie: GenieFlow) -> None:
    """Genie Flow calls progress_start(nr_tasks) before the chain starts: no poll sees 0 of 0.

    Sampled over several runs, each polled at once after the event (while the gate holds it).
    """
    genie.register_model(KEY, make_model("gate/input.jinja2"))
    seen = []
    for _ in range(10):
        sync.GATE = sync.Gate()
        session_id = genie.create_new_session(KEY).session_id
        genie.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="hold"))
        seen.append(_in_flight(poll(genie, session_id)))
        assert sync.GATE.entered.wait(10)
        _release_and_finish(genie, session_id)
    assert seen == [(2, 0)] * 10


def test_progress_of_a_list_counts_hand_overs(genie: GenieFlow) -> None:
    session_id = start(genie, ["gate/fast.jinja2", "gate/hold.jinja2"])
    genie.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="x"))
    assert sync.GATE.entered.wait(10)
    # a | chained_template | b | trigger: 4 tasks, a and the hand-over done
    assert _in_flight(poll(genie, session_id)) == (4, 2)
    assert _release_and_finish(genie, session_id).response == "done:hold done:go x"


def test_progress_of_a_dict(genie: GenieFlow) -> None:
    session_id = start(genie, {"fast": "gate/fast.jinja2", "held": "gate/hold.jinja2"})
    genie.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="x"))
    assert sync.GATE.entered.wait(10)
    # two branches + combine + final transition; the fast branch finishes while the other is held
    answer = poll_until(
        genie, session_id, lambda a: a.progress is not None and a.progress.number_of_subtasks_executed >= 1
    )
    assert _in_flight(answer) == (4, 1)
    final = _release_and_finish(genie, session_id)
    assert json.loads(final.response or "") == {"fast": "done:go x", "held": "done:hold x"}


def test_progress_of_a_map_grows_with_the_list(genie: GenieFlow) -> None:
    session_id = start(genie, MapTaskTemplate("gate/item.jinja2", "parsed_actor_input"))
    genie.process_event(
        KEY, EventInput(session_id=session_id, event="user_input", event_input='["go-1", "hold", "go-2"]')
    )
    assert sync.GATE.entered.wait(10)
    # map (1) + its 3 items + final transition; two items finish while one is held
    answer = poll_until(
        genie, session_id, lambda a: a.progress is not None and a.progress.number_of_subtasks_executed >= 2
    )
    assert _in_flight(answer) == (5, 2)
    final = _release_and_finish(genie, session_id)
    assert json.loads(final.response or "") == ["done:go-1", "done:hold", "done:go-2"]


class _Sink:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def add_total(self, count: int) -> None:
        self.total += count

    def add_done(self, count: int = 1) -> None:
        self.done += count


@pytest.mark.parametrize(
    ("template", "count"),
    [
        ("echo/plain.jinja2", 1),
        (["echo/plain.jinja2", "echo/plain.jinja2", "echo/plain.jinja2"], 5),
        ({"a": "echo/plain.jinja2", "b": "echo/plain.jinja2"}, 3),
        (MapTaskTemplate("echo/plain_item.jinja2", "items"), 1),
        (["echo/plain.jinja2", {"a": "echo/plain.jinja2", "b": "echo/plain.jinja2"}], 5),
        (custom_step, 1),
    ],
    ids=["str", "list", "dict", "map", "list-of-dict", "callable"],
)
def test_runner_counts_like_genie_flow_and_finishes_every_subtask(tree: Path, template: Any, count: int) -> None:
    runner = CompositeRunner(TemplateLibrary(tree), InvokerRegistry())
    assert runner.count(template) == count
    sink = _Sink()
    data: dict[str, Any] = {
        "actor_input": "in",
        "parsed_actor_input": None,
        "items": ["a", "b", "c"],
        "state_id": "ai",
        "session_id": "s",
        "catalog": {},
    }
    asyncio.run(runner.run(template, lambda names=None: dict(data), sink))
    expanded = 3 if isinstance(template, MapTaskTemplate) else 0
    assert sink.total == expanded
    assert sink.done == count + expanded


# ---------------------------------------------------------------------------------------------
# on_error and retry


def test_on_error_string_template_gives_the_output(genie: GenieFlow) -> None:
    answer = run_turn(genie, "broken/t.jinja2", "hello")
    assert answer.error is None
    assert answer.response is not None
    assert answer.response.startswith("fallback for hello (")
    assert "boom" in answer.response
    assert genie.get_model(KEY, answer.session_id).state == 300  # ai_extraction took it to show


def test_on_error_mapping_sends_its_event_with_its_content(genie: GenieFlow) -> None:
    answer = run_turn(genie, "broken_event/t.jinja2", "hello")
    assert answer.error is None
    assert answer.response is not None and answer.response.startswith("OOPS went wrong: ")
    assert "boom" in answer.response
    model = genie.get_model(KEY, answer.session_id)
    assert model.state == 400  # the `failed` event, not ai_extraction
    assert model.actor_input == answer.response


def test_on_error_inside_a_dict_branch(genie: GenieFlow) -> None:
    got = output_of(genie, {"ok": "echo/text_b.jinja2", "bad": "broken/t.jinja2"})
    assert got["ok"] == "hello b"
    assert got["bad"].startswith("fallback for hello")


def test_failure_without_on_error_is_reported_on_the_session(genie: GenieFlow) -> None:
    answer = run_turn(genie, "broken_plain/t.jinja2", "hello")
    assert answer.error is not None
    assert "boom" in answer.error


@pytest.mark.parametrize("retry", ["3", "{retries: 3, backoff_seconds: 0}", "{attempts: 4}"])
def test_retry_until_a_flaky_invoker_succeeds(
    genie: GenieFlow, tree: Path, retry: str, request: pytest.FixtureRequest
) -> None:
    key = f"flaky-{request.node.name}"
    write_tree(
        tree,
        {
            "flaky/meta.yaml": (
                f"invoker:\n  type: tests.flows_port.probes.Flaky\n  key: {key!r}\n  fail_times: 3\n  retry: {retry}\n"
            ),
            "flaky/t.jinja2": "{{ actor_input }}",
        },
    )
    answer = run_turn(genie, "flaky/t.jinja2", "hello")
    assert answer.error is None, answer.error
    assert answer.response == "ok after 4 attempts: hello"
    assert probes.Flaky.attempts[key] == 4


def test_retries_exhausted_report_the_last_failure(
    genie: GenieFlow, tree: Path, request: pytest.FixtureRequest
) -> None:
    key = f"flaky-{request.node.name}"
    write_tree(
        tree,
        {
            "flaky/meta.yaml": (
                f"invoker:\n  type: tests.flows_port.probes.Flaky\n  key: {key!r}\n  fail_times: 5\n  retry: 2\n"
            ),
            "flaky/t.jinja2": "{{ actor_input }}",
        },
    )
    answer = run_turn(genie, "flaky/t.jinja2", "hello")
    assert probes.Flaky.attempts[key] == 3  # the first try and two retries
    assert answer.error is not None
    assert "flaky failure 3" in answer.error


# ---------------------------------------------------------------------------------------------
# a poll that waits for news


def _admit_once_a_poll_waits(flow: GenieFlow, session_id: str) -> threading.Thread:
    """Admit one turnstile call as soon as a poll of the session waits for news (it has subscribed)."""

    def admit() -> None:
        deadline = time.monotonic() + 10
        while session_id not in flow._store._feeds and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.001)
        sync.TURNSTILE.admitted.release()

    admitter = threading.Thread(target=admit)
    admitter.start()
    return admitter


def test_a_waiting_poll_answers_once_the_progress_changes_then_once_the_run_settles(genie: GenieFlow) -> None:
    session_id = start(genie, ["turn/a.jinja2", "turn/b.jinja2"])
    genie.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="x"))
    assert _in_flight(poll(genie, session_id)) == (4, 0)  # a | hand-over | b | trigger; a waits
    wait = EventInput(session_id=session_id, event=POLL, event_input="")

    admitter = _admit_once_a_poll_waits(genie, session_id)
    moved = genie.process_event(KEY, wait, wait=30)
    admitter.join()
    assert _in_flight(moved)[1] >= 1  # a is done, b waits: the poll answered the new counts, not the end

    admitter = _admit_once_a_poll_waits(genie, session_id)
    answers = [genie.process_event(KEY, wait, wait=30)]
    admitter.join()
    while answers[-1].next_actions == [POLL] and len(answers) < 5:  # b's count, then the end
        answers.append(genie.process_event(KEY, wait, wait=30))
    assert [_in_flight(answer)[1] for answer in answers[:-1]] == sorted({_in_flight(a)[1] for a in answers[:-1]})
    final = answers[-1]
    assert final.error is None and final.next_actions == ["user_input"]
    assert final.response == "done:step b"


def test_a_waiting_poll_of_a_settled_session_answers_at_once(genie: GenieFlow) -> None:
    session_id = start(genie, "gate/input.jinja2")
    assert send(genie, KEY, session_id, "user_input", "now").response == "done:now"
    answer = genie.process_event(KEY, EventInput(session_id=session_id, event=POLL, event_input=""), wait=30)
    assert answer.response == "done:now" and answer.next_actions == ["user_input"]
