"""Many sessions on one GenieFlow: pools, polls racing events, and close() with runs in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from genie_graph import POLL, EventInput, GenieFlow, GenieModel, GenieStateMachine, MapTaskTemplate, State

from .helpers import RENDERER_META, send, write_tree

CALLS: Counter[str] = Counter()
_LOCK = threading.Lock()


def slow(prompt: str) -> str:
    """A blocking invoker, as ported Genie Flow invokers are."""
    with _LOCK:
        CALLS[prompt] += 1
    time.sleep(0.05)
    return "A:" + prompt


def fail_first(prompt: str) -> str:
    if prompt.endswith("0"):
        raise RuntimeError("item 0 fails")
    time.sleep(0.2)
    return "ok"


class PoolMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    think = State(value=1)
    reply = State(value=2)
    user_input = ask.to(think) | reply.to(think)
    ai_extraction = think.to(reply)
    templates = dict(ask="u/ask.jinja2", think="slow/q.jinja2", reply="u/reply.jinja2")


class PoolModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PoolMachine


class MapMachine(PoolMachine):
    templates = dict(PoolMachine.templates, think=MapTaskTemplate("fail/item.jinja2", "items"))


class MapModel(GenieModel):
    items: list[int] = [0, 1, 2]

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return MapMachine


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path,
        {
            "u/meta.yaml": RENDERER_META,
            "u/ask.jinja2": "Ask.",
            "u/reply.jinja2": "{{ actor_input }}",
            "slow/meta.yaml": 'invoker:\n  type: python\n  pool_size: 1\n  callable: "tests.test_concurrency:slow"\n',
            "slow/q.jinja2": "{{ actor_input }}",
            "fail/meta.yaml": (
                'invoker:\n  type: python\n  pool_size: 1\n  callable: "tests.test_concurrency:fail_first"\n'
            ),
            "fail/item.jinja2": "item {{ map_value }}",
        },
    )


def test_a_small_pool_serves_many_sessions_without_deadlock(root: Path, store_url: str) -> None:
    with GenieFlow(root, store=store_url) as flow:
        flow.register_model("p", PoolModel)
        sessions = [flow.create_new_session("p").session_id for _ in range(12)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda sid: send(flow, "p", sid, "user_input", f"pool {sid}"), sessions))
        assert [a.response for a in answers] == [f"A:pool {sid}" for sid in sessions]


def test_a_failed_map_item_gives_its_pool_slot_back(root: Path) -> None:
    with GenieFlow(root, store="memory://") as flow:
        flow.register_model("m", MapModel)
        for _ in range(2):  # the second run needs the slot the cancelled sibling waited for
            sid = flow.create_new_session("m").session_id
            answer = send(flow, "m", sid, "user_input", "go")
            assert answer.error is not None and "item 0 fails" in answer.error


def test_a_poll_right_after_an_event_never_runs_the_invoker_twice(root: Path, store_url: str) -> None:
    with GenieFlow(root, store=store_url) as flow:
        flow.register_model("p", PoolModel)
        for trial in range(15):
            sid = flow.create_new_session("p").session_id
            text = f"race {trial} {sid}"
            poller = threading.Thread(
                target=flow.process_event, args=("p", EventInput(session_id=sid, event=POLL, event_input=""))
            )
            poller.start()
            flow.process_event("p", EventInput(session_id=sid, event="user_input", event_input=text))
            poller.join()
            answer = send(flow, "p", sid, POLL)
            assert answer.response == f"A:{text}"
            assert CALLS[text] == 1


def test_close_with_a_run_in_flight_releases_waiters_and_the_flow_stays_usable(root: Path) -> None:
    flow = GenieFlow(root, store="memory://")
    flow.register_model("p", PoolModel)
    sid = flow.create_new_session("p").session_id
    flow.process_event("p", EventInput(session_id=sid, event="user_input", event_input="closing"))
    flow.close(timeout=0)  # cancels the run
    fresh = flow.create_new_session("p").session_id  # a closed flow starts again on demand
    assert send(flow, "p", fresh, "user_input", "after").response == "A:after"
    flow.close()


class SlowHookMachine(GenieStateMachine):
    ask = State(initial=True, value=0)
    reply = State(value=1)
    user_input = ask.to(reply) | reply.to(reply)
    templates = dict(ask="u/ask.jinja2", reply="u/reply.jinja2")

    def on_user_input(self, event_data: object) -> None:
        if getattr(event_data, "args", ("",))[0] == "slow":
            HOOK_STARTED.set()
            HOOK_RELEASE.wait(10)  # a hook doing blocking I/O


class SlowHookModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SlowHookMachine


HOOK_STARTED = threading.Event()
HOOK_RELEASE = threading.Event()


def test_a_blocking_sync_hook_does_not_hold_up_other_sessions(root: Path) -> None:
    with GenieFlow(root, store="memory://") as flow:
        flow.register_model("h", SlowHookModel)
        busy, idle = (flow.create_new_session("h").session_id for _ in range(2))
        worker = threading.Thread(
            target=flow.process_event, args=("h", EventInput(session_id=busy, event="user_input", event_input="slow"))
        )
        worker.start()
        try:
            assert HOOK_STARTED.wait(10)
            # While the hook blocks, another session still gets its answer (the hook runs off the loop).
            answer = flow.process_event("h", EventInput(session_id=idle, event="user_input", event_input="quick"))
            assert answer.response == "quick" and not HOOK_RELEASE.is_set()
        finally:
            HOOK_RELEASE.set()
            worker.join(10)
        assert flow.get_model("h", busy).dialogue[-1].actor_text == "slow"
