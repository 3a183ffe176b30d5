"""Tool approvals in the playground: Debian's chromium, driven by Playwright, against ``genie-graph serve``.

The shop flow of ``tests/approval_flows.py`` is served with its LLM state on the local OpenAI-compatible
test server, whose ``__CALL:<tool>:<json>__`` markers make the model call a tool. ``place_order`` needs the
sender's approval: the page shows a card (the call, who asked, who may approve, a countdown), posts the
decision as the session's user, follows the run to its answer and marks the card decided; the history
panel lists the request and the decision. A refused decision (403, 409) is shown inside the card, and a
request left undecided expires on its own. The waiting card is saved as
``tests/artifacts/playground-approval.png``, the decided ones as ``playground-approval-decided.png`` and
``playground-approval-denied.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests import test_playground as _shared
from tests.approval_flows import KEY
from tests.approval_tools import CALLS_FILE
from tests.helpers import write_tree
from tests.openai_server import start_openai_server
from tests.services import ApiServer
from tests.test_playground import (
    ARTIFACTS,
    PREFIX,
    Playground,
    Served,
)

browser = _shared.browser  # the fixtures: one browser per module, pages that record every problem
playground = _shared.playground

ADA = {"email": "ada@example.com", "firstname": "Ada", "lastname": "Lovelace"}
ASK = "What would you like?"


def _order(item: str, total: int) -> str:
    return f"please __CALL:place_order:{json.dumps({'item': item, 'total': total})}__"


def _placed(item: str, total: int) -> str:
    return f"TOOLS: place_order=order placed: {item} for {total} EUR"


# ---- servers and the browser -------------------------------------------------------------
def _serve(place: Path, expires_seconds: float) -> tuple[Served, Path, Any]:
    """The shop flow served, its LLM on a fresh OpenAI-compatible test server; answers (served, calls file, stop)."""
    base_url, stop_llm = start_openai_server()
    policy = {"approvers": "sender", "expires_seconds": expires_seconds, "auto_approve": "total < `20`"}
    tools = {
        "lookup_price": "tests.approval_tools:lookup_price",
        "place_order": {"function": "tests.approval_tools:place_order", "approval": policy},
    }
    meta = {"invoker": {"type": "openai", "model": "shop-model", "base_url": base_url, "tools": tools}}
    root = write_tree(
        place / "templates",
        {
            "shop/meta.yaml": "renderer: {}\n",
            "shop/ask.jinja2": "{% if actor_input %}{{ actor_input }}{% else %}" + ASK + "{% endif %}",
            "shop/llm/meta.yaml": json.dumps(meta),  # JSON is YAML
            "shop/llm/think.jinja2": "{{ actor_input }}",
        },
    )
    calls = place / "calls.jsonl"
    env = {"GENIE_GRAPH_TEST_SHOP_TEMPLATES": str(root), CALLS_FILE: str(calls)}
    store = f"sqlite:///{place / 'sessions.sqlite'}"
    try:
        api = ApiServer(place / "serve.log", store, env=env, flow="tests.approval_flows:flow").start()
    except BaseException:
        stop_llm()
        raise

    def stop() -> None:
        api.stop()
        stop_llm()

    return Served(api, "shop"), calls, stop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    """Orders of 20 EUR or more wait for the sender's approval, for ten minutes."""
    served, calls, stop = _serve(tmp_path_factory.mktemp("playground-approvals"), expires_seconds=600)
    yield served, calls
    stop()


@pytest.fixture(scope="module")
def hasty_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    """The same shop, whose approvals expire after four seconds."""
    served, calls, stop = _serve(tmp_path_factory.mktemp("playground-approvals-hasty"), expires_seconds=4)
    yield served, calls
    stop()


# ---- helpers -----------------------------------------------------------------------------
def _calls(path: Path, item: str) -> list[dict[str, Any]]:
    """The tool calls the served flow made for orders of ``item``."""
    if not path.exists():
        return []
    logged = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [call for call in logged if call.get("item") == item]


def _history(served: Served, session_id: str) -> list[dict[str, Any]]:
    with served.client() as client:
        answer = client.get(f"/{KEY}/history/{session_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]  # type: ignore[no-any-return]


def _said(pg: Playground, which: str = "last") -> Any:
    """The text of the flow's first or last message."""
    messages = pg.messages("assistant")
    return (messages.first if which == "first" else messages.last).locator(".message-text")


def _card(pg: Playground) -> Any:
    return pg.page.get_by_test_id("approval")


def order_and_wait(pg: Playground, item: str, total: int) -> Any:
    """Send an order the flow may not place on its own; answers its approval card, once shown."""
    pg.say(_order(item, total))
    pg.wait_idle()
    card = _card(pg)
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "pending")
    return card


def expect_waiting(pg: Playground, item: str, total: int) -> None:
    """The card shows the call, who asked and may approve, a countdown; the composer says the session waits."""
    page, card = pg.page, _card(pg)
    expect(card.get_by_test_id("approval-tool")).to_have_text("place_order")
    arguments = card.get_by_test_id("approval-arguments")
    expect(arguments).to_have_text(json.dumps({"item": item, "total": total}, indent=2))  # pretty JSON
    expect(card.get_by_test_id("approval-asked-by")).to_have_text(ADA["email"])
    expect(card.get_by_test_id("approval-approvers")).to_have_text(f"only the sender, {ADA['email']}")
    expiry = card.get_by_test_id("approval-expiry")
    expect(expiry).to_contain_text(re.compile(r"in (9:5\d|10:00)"))
    expect(card.get_by_test_id("approval-as")).to_have_text(
        f"You decide as {ADA['email']} (the email under “New session”)."
    )
    # the model does not echo the user's words as the flow's answer while it waits
    expect(pg.messages("assistant")).to_have_count(1)
    expect(pg.messages("user").last.locator(".message-text")).to_have_text(_order(item, total))
    box = page.get_by_test_id("user-input")
    expect(box).to_be_disabled()
    expect(box).to_have_attribute("placeholder", "The session waits for an approval of place_order…")
    expect(page.get_by_test_id("actions")).to_have_attribute("data-waiting", "approval")
    expect(page.get_by_test_id("actions-note")).to_contain_text("Approve or deny the call of place_order above")
    expect(page.get_by_test_id("state-badge")).to_contain_text("waiting for approval")
    requested = page.locator('[data-testid="history-entry"][data-kind="approval_requested"]')
    expect(requested).to_have_count(1)
    expect(requested.get_by_test_id("history-tool")).to_have_text(f'place_order(item="{item}", total={total})')
    expect(requested.get_by_test_id("history-asked-by")).to_have_text(ADA["email"])
    expect(requested).to_contain_text("approvers: sender")


def expect_decided(pg: Playground, served: Served, session_id: str, status: str, reason: str | None) -> None:
    """The history panel shows the decision (tool, status, by, reason) as the history route has it."""
    decided = pg.page.locator('[data-testid="history-entry"][data-kind="approval_decided"]')
    expect(decided).to_have_count(1)
    expect(decided).to_have_attribute("data-status", status)
    expect(decided.get_by_test_id("history-kind")).to_have_text(status)
    expect(decided.get_by_test_id("history-tool")).to_contain_text("place_order(")
    [entry] = [e for e in _history(served, session_id) if e["kind"] == "approval_decided"]
    assert (entry["detail"]["status"], entry["detail"]["reason"]) == (status, reason)
    if entry["detail"]["by"] != "expiry":
        expect(decided.get_by_test_id("history-decided-by")).to_have_text(entry["detail"]["by"])
    if reason:
        expect(decided.get_by_test_id("history-reason")).to_have_text(reason)
    listed = pg.page.get_by_test_id("history-entry")
    expect(listed).to_have_count(len(_history(served, session_id)))


# ---- in the browser ----------------------------------------------------------------------
def test_an_order_waits_for_the_senders_approval_then_is_placed(shop: tuple[Served, Path], playground: Any) -> None:
    served, calls = shop
    pg: Playground = playground(served)
    session_id = pg.start(KEY, ADA)
    expect(_said(pg, "first")).to_have_text(ASK)
    order_and_wait(pg, "tea", 30)
    expect_waiting(pg, "tea", 30)
    left = int(_card(pg).get_by_test_id("approval-expiry").get_attribute("data-left") or "0")
    expect(_card(pg).get_by_test_id("approval-expiry")).not_to_have_attribute("data-left", str(left))  # it counts
    assert _calls(calls, "tea") == []
    ARTIFACTS.mkdir(exist_ok=True)
    pg.page.screenshot(path=str(ARTIFACTS / "playground-approval.png"))

    # someone else (by the form's email) may not decide: the API's 403 shows in the card, nothing changes
    page, card = pg.page, _card(pg)
    page.get_by_test_id("user-email").fill("mallory@example.com")
    expect(card.get_by_test_id("approval-as")).to_contain_text("You decide as mallory@example.com")
    card.get_by_test_id("approval-approve").click()
    error = card.get_by_test_id("approval-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-error", "approval_forbidden")
    expect(error).to_contain_text("approval_forbidden (HTTP 403)")
    expect(error).to_contain_text("mallory@example.com may not decide it; approvers: sender")
    pg.wait_idle()
    expect(card).to_have_attribute("data-status", "pending")
    expect(card.get_by_test_id("approval-approve")).to_be_enabled()
    assert _calls(calls, "tea") == []

    # the sender approves: the run goes on, the order is placed, the card says who approved
    page.get_by_test_id("user-email").fill(ADA["email"])
    card.get_by_test_id("approval-approve").click()
    expect(_said(pg)).to_have_text(_placed("tea", 30))
    pg.wait_idle()
    expect(card).to_have_attribute("data-status", "approved")
    expect(card.get_by_test_id("approval-status")).to_have_text("approved")
    expect(card.get_by_test_id("approval-decided-by")).to_have_text(ADA["email"])
    expect(card.get_by_test_id("approval-approve")).to_be_hidden()
    expect(error).to_be_hidden()
    expect(pg.messages("assistant")).to_have_count(2)
    box = page.get_by_test_id("user-input")
    expect(box).to_be_enabled()
    expect(page.get_by_test_id("actions")).to_have_attribute("data-waiting", "")
    expect(page.get_by_test_id("actions-note")).to_be_empty()
    expect(page.get_by_test_id("state-badge")).not_to_contain_text("approval")
    pg.expect_state("ask")
    expect_decided(pg, served, session_id, "approved", None)
    assert _calls(calls, "tea") == [{"tool": "place_order", "item": "tea", "total": 30}]
    page.get_by_test_id("history").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "playground-approval-decided.png"))

    # the session goes on as before
    pg.say("thanks")
    pg.wait_idle()
    expect(pg.messages("assistant").last).to_contain_text("thanks")
    expect(_card(pg)).to_have_count(1)
    pg.check()


def test_a_denied_order_is_not_placed_and_the_reason_is_kept(shop: tuple[Served, Path], playground: Any) -> None:
    served, calls = shop
    pg: Playground = playground(served)
    session_id = pg.start(KEY, ADA)
    card = order_and_wait(pg, "cake", 45)
    expect_waiting(pg, "cake", 45)
    card.get_by_test_id("approval-reason").fill("too dear")
    card.get_by_test_id("approval-deny").click()
    answer = _said(pg)
    expect(answer).to_contain_text("TOOLS: place_order=The call of place_order was not run")
    expect(answer).to_contain_text("a person denied it (too dear)")
    pg.wait_idle()
    expect(card).to_have_attribute("data-status", "denied")
    expect(card.get_by_test_id("approval-outcome")).to_contain_text(f"Denied by {ADA['email']}: the tool was not run.")
    expect(card.get_by_test_id("approval-decided-reason")).to_have_text("too dear")
    expect(card.get_by_test_id("approval-error")).to_be_hidden()
    expect(pg.page.get_by_test_id("user-input")).to_be_enabled()
    expect_decided(pg, served, session_id, "denied", "too dear")
    assert _calls(calls, "cake") == []
    ARTIFACTS.mkdir(exist_ok=True)
    pg.page.get_by_test_id("history").scroll_into_view_if_needed()
    pg.page.screenshot(path=str(ARTIFACTS / "playground-approval-denied.png"))
    pg.check()


def test_a_resumed_session_shows_its_request_and_a_decision_made_elsewhere(
    shop: tuple[Served, Path], playground: Any
) -> None:
    """A second tab resumes the waiting session and approves; the first tab's late Deny answers 409."""
    served, calls = shop
    first: Playground = playground(served)
    session_id = first.start(KEY, ADA)
    order_and_wait(first, "jam", 25)

    second: Playground = playground(served, f"/#flow={KEY}&session={session_id}")
    expect(second.page.get_by_test_id("session-id")).to_have_text(session_id)
    card = _card(second)
    expect(card).to_have_count(1)  # from the session's model
    expect(card).to_have_attribute("data-status", "pending")
    second.page.get_by_test_id("user-email").fill(ADA["email"])
    expect_waiting(second, "jam", 25)
    card.get_by_test_id("approval-reason").fill("fine")
    card.get_by_test_id("approval-approve").click()
    expect(_said(second)).to_have_text(_placed("jam", 25))
    expect(card).to_have_attribute("data-status", "approved")

    late = _card(first)
    expect(late).to_have_attribute("data-status", "pending")  # this tab has not heard yet
    late.get_by_test_id("approval-deny").click()
    error = late.get_by_test_id("approval-error")
    expect(error).to_contain_text("approval_closed (HTTP 409)")
    expect(error).to_contain_text(f"it was approved by {ADA['email']}")
    expect(late).to_have_attribute("data-status", "approved")  # then it shows what was decided
    expect(late.get_by_test_id("approval-decided-reason")).to_have_text("fine")
    expect(_said(first)).to_have_text(_placed("jam", 25))
    first.wait_idle()
    expect(first.page.get_by_test_id("user-input")).to_be_enabled()
    expect_decided(first, served, session_id, "approved", "fine")
    assert _calls(calls, "jam") == [{"tool": "place_order", "item": "jam", "total": 25}]
    first.check()
    second.check()


def test_a_request_left_undecided_expires(hasty_shop: tuple[Served, Path], playground: Any) -> None:
    served, calls = hasty_shop
    pg: Playground = playground(served)
    session_id = pg.start(KEY, ADA)
    card = order_and_wait(pg, "tea", 30)
    expiry = card.get_by_test_id("approval-expiry")
    expect(expiry).to_have_attribute("data-expires-at", re.compile(r"^\d{4}-\d\d-\d\dT"))
    # the countdown runs out: the page polls, the server closes the request as expired and the run goes on
    answer = _said(pg)
    expect(answer).to_contain_text("it was not approved in time")
    pg.wait_idle()
    expect(card).to_have_attribute("data-status", "expired")
    expect(card.get_by_test_id("approval-outcome")).to_contain_text("Expired: not decided in time")
    expect(card.get_by_test_id("approval-approve")).to_be_hidden()
    decided = pg.page.locator('[data-testid="history-entry"][data-kind="approval_decided"]')
    expect(decided).to_contain_text("(not decided in time)")
    expect_decided(pg, served, session_id, "expired", None)
    assert _calls(calls, "tea") == []
    with httpx.Client(base_url=served.url + PREFIX, timeout=30) as client:
        [request] = client.get(f"/{KEY}/approvals/{session_id}").json()["approvals"]
    assert (request["status"], request["decided_by"]) == ("expired", "expiry")
    pg.check()
