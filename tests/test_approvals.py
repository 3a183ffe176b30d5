"""Tool calls and durable approvals (issue 10): the real langchain-openai client calls tools through the
OpenAI-compatible test server; a tool that needs approval suspends the run until a person decides."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genie_graph import EventInput, GenieFlow, HistoryKind, User
from genie_graph.errors import ApprovalError, InvokerConfigError, SessionBusy
from tests import approval_tools
from tests.approval_flows import KEY, ShopModel
from tests.helpers import send, write_tree
from tests.openai_server import reset_requests
from tests.services import ApiServer, Worker

USER = User(email="ada@example.com", firstname="Ada", lastname="Lovelace")


def _meta(server_url: str, approval: dict[str, Any] | None = None) -> str:
    policy = approval or {"approvers": "sender", "auto_approve": "total < `20`"}
    tools = {
        "lookup_price": "tests.approval_tools:lookup_price",
        "place_order": {"function": "tests.approval_tools:place_order", "approval": policy},
    }
    invoker = {"type": "openai", "model": "shop-model", "base_url": server_url, "tools": tools}
    return json.dumps({"invoker": invoker})  # JSON is YAML


@pytest.fixture
def server_url(openai_server_url: str) -> str:
    return openai_server_url


@pytest.fixture
def calls_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv(approval_tools.CALLS_FILE, str(path))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GENIE_GRAPH_OPENAI_BASE_URL", "GENIE_GRAPH_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return path


def _root(tmp_path: Path, server_url: str, approval: dict[str, Any] | None = None) -> Path:
    return write_tree(
        tmp_path / "templates",
        {
            "shop/meta.yaml": "renderer: {}\n",
            "shop/ask.jinja2": "{% if actor_input %}{{ actor_input }}{% else %}What would you like?{% endif %}",
            "shop/llm/meta.yaml": _meta(server_url, approval),
            "shop/llm/think.jinja2": "{{ actor_input }}",
        },
    )


@pytest.fixture
def shop(tmp_path: Path, server_url: str, store_url: str, calls_file: Path) -> Iterator[GenieFlow]:
    reset_requests(server_url)
    with GenieFlow(template_root=_root(tmp_path, server_url), store=store_url) as flow:
        flow.register_model(KEY, ShopModel)
        yield flow


def _order(item: str, total: float) -> str:
    return f"please __CALL:place_order:{json.dumps({'item': item, 'total': total})}__"


def _start(flow: GenieFlow) -> str:
    return flow.create_new_session(KEY, USER).session_id


def test_a_tool_that_needs_approval_waits_then_runs_once_approved(shop: GenieFlow) -> None:
    session_id = _start(shop)
    waiting = send(shop, KEY, session_id, "user_input", _order("tea", 30))
    assert waiting.next_actions == [] and waiting.error is None
    [request] = waiting.approvals or []
    assert (request["tool"], request["arguments"], request["asked_by"]) == (
        "place_order",
        {"item": "tea", "total": 30},
        "ada@example.com",
    )
    assert request["status"] == "pending" and "transcript" not in request
    assert approval_tools.calls() == []  # nothing ran yet
    refused = shop.process_event(KEY, EventInput(session_id=session_id, event="user_input", event_input="hello?"))
    assert refused.error is not None and refused.next_actions == []

    assert shop.decide_approval(KEY, session_id, request["id"], True, by="ada@example.com").next_actions == ["poll"]
    answer = send(shop, KEY, session_id, "poll")
    assert answer.response == "TOOLS: place_order=order placed: tea for 30 EUR"
    assert answer.next_actions == ["user_input"] and answer.approvals is None
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]
    model = shop.get_model(KEY, session_id)
    [decided] = model.approvals
    assert (decided.status, decided.decided_by, decided.transcript) == ("approved", "ada@example.com", [])
    audit = [(e.kind, (e.detail or {}).get("status")) for e in model.history if e.kind.startswith("approval")]
    assert audit == [(HistoryKind.APPROVAL_REQUESTED, None), (HistoryKind.APPROVAL_DECIDED, "approved")]
    with pytest.raises(ApprovalError, match="approved by ada"):
        shop.decide_approval(KEY, session_id, request["id"], True, by="ada@example.com")


def test_a_denied_call_is_not_run_and_the_model_hears_why(shop: GenieFlow) -> None:
    session_id = _start(shop)
    [request] = send(shop, KEY, session_id, "user_input", _order("cake", 45)).approvals or []
    shop.decide_approval(KEY, session_id, request["id"], False, by="ada@example.com", reason="too dear")
    answer = send(shop, KEY, session_id, "poll")
    assert answer.response is not None and answer.response.startswith("TOOLS: place_order=The call of place_order")
    assert "a person denied it (too dear)" in answer.response
    assert approval_tools.calls() == []
    decision = [e.detail for e in shop.get_model(KEY, session_id).history if e.kind == HistoryKind.APPROVAL_DECIDED]
    assert decision == [
        {
            "id": request["id"],
            "tool": "place_order",
            "arguments": {"item": "cake", "total": 45},
            "status": "denied",
            "by": "ada@example.com",
            "reason": "too dear",
        }
    ]


def test_only_an_allowed_person_decides(shop: GenieFlow) -> None:
    session_id = _start(shop)
    [request] = send(shop, KEY, session_id, "user_input", _order("jam", 25)).approvals or []
    with pytest.raises(ApprovalError) as refused:
        shop.decide_approval(KEY, session_id, request["id"], True, by="mallory@example.com")
    assert refused.value.code == "approval_forbidden" and "approvers: sender" in str(refused.value)
    with pytest.raises(ApprovalError) as unknown:
        shop.decide_approval(KEY, session_id, "nope", True, by="ada@example.com")
    assert unknown.value.code == "unknown_approval"
    assert shop.get_model(KEY, session_id).approvals[0].status == "pending"  # nothing changed


def test_an_auto_approve_rule_lets_small_orders_through_and_audits_them(shop: GenieFlow) -> None:
    session_id = _start(shop)
    answer = send(shop, KEY, session_id, "user_input", _order("gum", 3))
    assert answer.response == "TOOLS: place_order=order placed: gum for 3 EUR" and answer.approvals is None
    [audit] = [e.detail for e in shop.get_model(KEY, session_id).history if e.kind == HistoryKind.APPROVAL_DECIDED]
    assert audit is not None and (audit["status"], audit["by"]) == ("approved", "auto")


def test_tools_without_approval_run_in_the_loop(shop: GenieFlow) -> None:
    session_id = _start(shop)
    answer = send(shop, KEY, session_id, "user_input", 'price? __CALL:lookup_price:{"item": "tea"}__')
    assert answer.response == "TOOLS: lookup_price=tea costs 12 EUR"
    assert approval_tools.calls() == [{"tool": "lookup_price", "item": "tea"}]


def test_an_expired_request_counts_as_denied(tmp_path: Path, server_url: str, calls_file: Path) -> None:
    root = _root(tmp_path, server_url, {"approvers": "sender", "expires_seconds": 0.5})
    with GenieFlow(template_root=root, store="memory://") as flow:
        flow.register_model(KEY, ShopModel)
        session_id = _start(flow)
        [request] = send(flow, KEY, session_id, "user_input", _order("tea", 30)).approvals or []
        time.sleep(0.6)
        [listed] = flow.approvals(KEY, session_id)  # listing closes it, as a poll would
        assert (listed.status, listed.decided_by) == ("expired", "expiry")
        answer = send(flow, KEY, session_id, "poll")
        assert answer.response is not None and "it was not approved in time" in answer.response
        with pytest.raises(ApprovalError, match="expired"):
            flow.decide_approval(KEY, session_id, request["id"], True, by="ada@example.com")
    assert approval_tools.calls() == []


def test_a_pending_approval_survives_a_restart(tmp_path: Path, server_url: str, calls_file: Path) -> None:
    store = f"sqlite:///{tmp_path / 'sessions.sqlite'}"
    root = _root(tmp_path, server_url)
    with GenieFlow(template_root=root, store=store) as first:
        first.register_model(KEY, ShopModel)
        session_id = _start(first)
        [request] = send(first, KEY, session_id, "user_input", _order("tea", 30)).approvals or []
    with GenieFlow(template_root=root, store=store) as second:
        second.register_model(KEY, ShopModel)
        assert [r.id for r in second.approvals(KEY, session_id)] == [request["id"]]
        second.decide_approval(KEY, session_id, request["id"], True, by="ada@example.com")
        answer = send(second, KEY, session_id, "poll")
    assert answer.response == "TOOLS: place_order=order placed: tea for 30 EUR"
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]


def test_a_wrong_tools_mapping_is_refused_at_registration(tmp_path: Path, server_url: str) -> None:
    root = _root(tmp_path, server_url, {"approvers": "boss"})
    with GenieFlow(template_root=root, store="memory://") as flow, pytest.raises(InvokerConfigError, match="approvers"):
        flow.register_model(KEY, ShopModel)


def test_over_http_only_the_approvers_decide_and_the_run_goes_on(
    tmp_path: Path, server_url: str, calls_file: Path
) -> None:
    root = _root(tmp_path, server_url, {"approvers": "role:manager", "expires_seconds": 600})
    env = {
        "GENIE_GRAPH_TEST_SHOP_TEMPLATES": str(root),
        "GENIE_GRAPH_API_KEYS": "alice:key-a,carol:key-c",
        "GENIE_GRAPH_API_ROLES": "carol:manager",
        approval_tools.CALLS_FILE: str(calls_file),
    }
    store = f"sqlite:///{tmp_path / 'sessions.sqlite'}"
    api = ApiServer(tmp_path / "serve.log", store, env=env, flow="tests.approval_flows:flow").start()
    alice = {"Authorization": "Bearer key-a"}
    carol = {"Authorization": "Bearer key-c"}
    try:
        with httpx.Client(base_url=f"{api.url}/v1/ai", timeout=30) as client:
            session_id = client.post(f"/{KEY}/start_session", headers=alice).json()["session_id"]
            event = {"session_id": session_id, "event": "user_input", "event_input": _order("tea", 30)}
            answer = client.post(f"/{KEY}/event", json=event, headers=alice).json()
            while answer["next_actions"] == ["poll"]:
                time.sleep(0.02)
                poll = {"session_id": session_id, "event": "poll", "event_input": ""}
                answer = client.post(f"/{KEY}/event", json=poll, headers=alice).json()
            [request] = answer["approvals"]
            assert answer["next_actions"] == [] and request["approvers"] == "role:manager"
            listed = client.get(f"/{KEY}/approvals/{session_id}", headers=alice).json()
            assert [r["id"] for r in listed["approvals"]] == [request["id"]]

            path = f"/{KEY}/approvals/{session_id}/{request['id']}"
            forbidden = client.post(path, json={"approve": True}, headers=alice)
            assert forbidden.status_code == 403 and forbidden.json()["error"] == "approval_forbidden"
            missing = client.post(f"/{KEY}/approvals/{session_id}/nope", json={"approve": True}, headers=carol)
            assert missing.status_code == 404 and missing.json()["error"] == "unknown_approval"
            assert approval_tools.calls() == []

            decided = client.post(path, json={"approve": True, "reason": "fine"}, headers=carol)
            assert decided.status_code == 200 and decided.json()["next_actions"] == ["poll"]
            answer = decided.json()
            while answer["next_actions"] == ["poll"]:
                time.sleep(0.02)
                poll = {"session_id": session_id, "event": "poll", "event_input": ""}
                answer = client.post(f"/{KEY}/event", json=poll, headers=alice).json()
            assert answer["response"] == "TOOLS: place_order=order placed: tea for 30 EUR"
            assert "approvals" not in answer
            again = client.post(path, json={"approve": False}, headers=carol)
            assert again.status_code == 409 and again.json()["error"] == "approval_closed"
            audit = client.get(f"/{KEY}/history/{session_id}", params={"kind": "approval_decided"}, headers=alice)
            [entry] = audit.json()["entries"]
            assert (entry["detail"]["status"], entry["detail"]["by"], entry["detail"]["reason"]) == (
                "approved",
                "carol",
                "fine",
            )
    finally:
        api.stop()
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]


def test_with_celery_workers_the_request_and_the_approved_call_run_on_workers(
    tmp_path: Path, server_url: str, calls_file: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _root(tmp_path, server_url)
    env = {"GENIE_GRAPH_TEST_SHOP_TEMPLATES": str(root), approval_tools.CALLS_FILE: str(calls_file)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = Worker("tests.approval_flows:flow", redis_url, tmp_path / "worker.log", env=env).start()
    try:
        with GenieFlow(template_root=root, store=redis_url, runner="celery") as flow:
            flow.register_model(KEY, ShopModel)
            session_id = _start(flow)
            [request] = send(flow, KEY, session_id, "user_input", _order("tea", 30)).approvals or []
            deadline = time.monotonic() + 10
            while True:  # the worker may still be handing its run back: a client retries a busy session
                try:
                    decided = flow.decide_approval(KEY, session_id, request["id"], True, by="ada@example.com")
                    break
                except SessionBusy:
                    assert time.monotonic() < deadline, "the session stayed busy"
                    time.sleep(0.05)
            assert decided.next_actions == ["poll"]
            answer = send(flow, KEY, session_id, "poll")
            assert answer.response == "TOOLS: place_order=order placed: tea for 30 EUR"
            assert send(flow, KEY, session_id, "user_input", "thanks").response == "ECHO: thanks"
    finally:
        worker.stop()
    assert approval_tools.calls() == [{"tool": "place_order", "item": "tea", "total": 30}]
