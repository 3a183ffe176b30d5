"""The playground in a real browser: Debian's chromium, driven by Playwright, against ``genie-graph serve``.

Each browser test clicks and types as a flow author would, on the embedded store (SQLite, inline
runner) and on Redis + two Celery workers, with the examples answering offline. A second server,
talking to a local OpenAI-compatible server, shows tokens streaming, a busy session and an invoker
failure; a third serves a flow with a token budget, whose usage and history panels must show what the
usage and history routes answer. The flow description and diagram routes are checked over plain HTTP
too. The whole ``q_and_a_capture`` conversation is saved as ``tests/artifacts/playground.png``, the
spent budget's session as ``tests/artifacts/playground-usage.png``.

Playwright downloads no browser here: it drives ``/usr/bin/chromium`` (``apt-get install chromium``;
``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from genie_graph import Budget, GenieFlow, GenieModel, GenieStateMachine, State
from tests.openai_server import start_openai_server
from tests.services import ApiServer, RedisServer, Worker

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PREFIX = "/v1/ai"
LIMIT = 2048
HIGHLIGHT_RGB = "rgb(255, 213, 79)"  # the diagram's highlight, #ffd54f
WAIT_MS = 60_000  # how long an expectation waits for the page (a dripping LLM answer takes about 10 s)


# ---- servers and the browser -------------------------------------------------------------
@dataclass
class Served:
    """A running ``genie-graph serve`` and what it runs on."""

    api: ApiServer
    kind: str

    @property
    def url(self) -> str:
        return self.api.url

    def client(self, prefix: str = PREFIX, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url + prefix, timeout=30, headers=headers)


@pytest.fixture(scope="module", params=["embedded", "redis+celery"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The examples served offline, on SQLite with the inline runner or on Redis with two Celery workers."""
    place = tmp_path_factory.mktemp(f"playground-{request.param.replace('+', '-')}")
    args = ["--max-event-input", str(LIMIT)]
    workers: list[Worker] = []
    if request.param == "embedded":
        api = ApiServer(place / "serve.log", f"sqlite:///{place}/sessions.sqlite", args=args)
    else:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        workers = [Worker("graphs:flow", redis_server.url, place / f"worker{n}.log") for n in range(2)]
        for worker in workers:
            worker.start()
        api = ApiServer(place / "serve.log", redis_server.url, runner="celery", args=args)
    api.start()
    yield Served(api, request.param)
    api.stop()
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The examples with their LLM states on a local OpenAI-compatible server: tokens stream."""
    base_url, stop = start_openai_server()
    place = tmp_path_factory.mktemp("playground-streaming")
    api = ApiServer(place / "serve.log", "memory://", env={"GENIE_GRAPH_OPENAI_BASE_URL": base_url}).start()
    yield Served(api, "streaming")
    api.stop()
    stop()


# A token budget the first question stays within and a long second one overshoots (one token per word).
BUDGET_TOKENS = 400
PRICES = {"currency": "USD", "models": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}}
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


class BudgetedMachine(GenieStateMachine):
    """``q_and_a`` with a budget: once spent, the LLM state sends ``over_budget`` to the final state ``spent``."""

    intro = State(initial=True, value=0)
    user_enters_query = State(value=100)
    ai_creates_response = State(value=200)
    spent = State(final=True, value=300)

    user_input = intro.to(ai_creates_response) | user_enters_query.to(ai_creates_response)
    ai_extraction = ai_creates_response.to(user_enters_query)
    over_budget = ai_creates_response.to(spent)

    templates = dict(
        intro="q_and_a/intro.jinja2",
        user_enters_query="q_and_a/user_enters_query.jinja2",
        ai_creates_response="q_and_a/llm/ai_creates_response.jinja2",
        spent="q_and_a/user_enters_query.jinja2",  # shows the refusal
    )
    budget = Budget(max_tokens=BUDGET_TOKENS, on_exceeded="over_budget")


class BudgetedModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return BudgetedMachine


def budgeted_flow(store: str | None = None) -> GenieFlow:
    """The ``budgeted`` flow, priced (``genie-graph --flow tests.test_playground:budgeted_flow serve``)."""
    flow = GenieFlow(template_root=PROMPTS, store=store or "memory://", prices=PRICES)
    flow.register_model("budgeted", BudgetedModel)
    return flow


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The ``budgeted`` flow with its LLM state on a local OpenAI-compatible server: usage is counted and priced."""
    base_url, stop = start_openai_server()
    place = tmp_path_factory.mktemp("playground-budgeted")
    api = ApiServer(
        place / "serve.log",
        "memory://",
        env={"GENIE_GRAPH_OPENAI_BASE_URL": base_url},
        flow="tests.test_playground:budgeted_flow",
    ).start()
    yield Served(api, "budgeted")
    api.stop()
    stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The CLI tests' flows (``echo`` ends on a ``stop`` button) with API keys on and the API under another prefix."""
    place = tmp_path_factory.mktemp("playground-secured")
    env = {"GENIE_GRAPH_API_KEYS": "alice:key-a", "GENIE_GRAPH_CLI_TEMPLATES": str(place / "templates")}
    api = ApiServer(
        place / "serve.log", "memory://", env=env, args=["--prefix", "/custom/api"], flow="tests.cli_flows:flow"
    ).start()
    yield Served(api, "secured")
    api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the playground tests drive Debian's chromium at {CHROMIUM}, which is not installed: run "
            "`apt-get install chromium` (.ci/run does so as root); Playwright's own browser download is not used"
        )
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        yield launched
        launched.close()


@dataclass
class Playground:
    """The playground open in a browser tab, with what a test clicks and reads."""

    page: Page
    url: str
    problems: list[str] = field(default_factory=list)

    def open(self, path: str = "/") -> Playground:
        self.page.goto(self.url + path)
        return self

    def pick_flow(self, model_key: str) -> None:
        expect(self.page.get_by_test_id("flow-select")).to_be_enabled()
        self.page.get_by_test_id("flow-select").select_option(model_key)
        expect(self.page.locator(f'#diagram svg[aria-label="State diagram of {model_key}"]')).to_be_visible()
        expect(self.page.get_by_test_id("start-session")).to_be_enabled()

    def start(self, model_key: str, user: dict[str, str] | None = None) -> str:
        """Start a session from the form; answers its id."""
        self.pick_flow(model_key)
        for name in ("email", "firstname", "lastname"):
            self.page.get_by_test_id(f"user-{name}").fill((user or {}).get(name, ""))
        self.page.get_by_test_id("start-session").click()
        expect(self.page.get_by_test_id("session-id")).not_to_be_empty()
        expect(self.messages("assistant")).to_have_count(1)
        self.wait_idle()
        return self.page.get_by_test_id("session-id").inner_text()

    def say(self, text: str) -> None:
        """Type ``text`` and press Enter (it is sent at once, then the run is followed)."""
        box = self.page.get_by_test_id("user-input")
        expect(box).to_be_enabled()
        box.fill(text)
        box.press("Enter")

    def wait_idle(self) -> None:
        expect(self.page.get_by_test_id("chat")).to_have_attribute("data-busy", "false")

    def messages(self, role: str) -> Any:
        return self.page.locator(f'#messages > li[data-role="{role}"]')

    def errors(self, code: str) -> Any:
        return self.page.locator(f'#messages > li[data-testid="error"][data-error="{code}"]')

    def expect_state(self, state_id: str) -> None:
        """The diagram highlights ``state_id``, and only it: in the DOM and in the SVG's own styling."""
        diagram = self.page.get_by_test_id("diagram")
        expect(diagram).to_have_attribute("data-current-state", state_id)
        current = diagram.locator("g.node.current")
        expect(current).to_have_count(1)
        expect(current.locator("> title")).to_have_text(state_id)  # Graphviz's own name for the node
        expect(self.page.get_by_test_id("state-badge")).to_have_attribute("data-state", state_id)
        fill = current.locator("path, polygon").first.evaluate("shape => getComputedStyle(shape).fill")
        assert fill == HIGHLIGHT_RGB, fill

    def model_field(self, name: str) -> Any:
        return self.page.locator(f'[data-testid="model-field"][data-field="{name}"]')

    def send_any_event(self, event: str, text: str = "") -> None:
        details = self.page.locator("#any-event")
        if details.get_attribute("open") is None:
            details.locator("summary").click()
        self.page.get_by_test_id("any-event-name").select_option(event)
        self.page.get_by_test_id("any-event-input").fill(text)
        self.page.get_by_test_id("any-event-send").click()

    def check(self) -> None:
        """No uncaught script error, no console error but refused requests, nothing fetched off this host."""
        assert not self.problems, self.problems


@pytest.fixture
def playground(browser: Browser) -> Iterator[Any]:
    contexts = []

    def open_on(served: Served, path: str = "/") -> Playground:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        opened = Playground(page, served.url)
        origin = served.url + "/"

        def on_request(request: Any) -> None:
            if not request.url.startswith((origin, "data:", "blob:")):
                opened.problems.append(f"request off this host: {request.url}")

        def on_console(message: Any) -> None:
            # a refused request (409, 413, ...) is logged by the browser itself; the page shows it
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                opened.problems.append(f"console error: {message.text}")

        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda error: opened.problems.append(f"uncaught: {error}"))
        return opened.open(path)

    yield open_on
    for context in contexts:
        context.close()


def _model(served: Served, model_key: str, session_id: str) -> dict[str, Any]:
    with served.client() as client:
        answer = client.get(f"/{model_key}/model/{session_id}")
        assert answer.status_code == 200, answer.text
        return json.loads(answer.json()["response"])  # type: ignore[no-any-return]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)  # a count as shown, without the locale's grouping


def expect_ledger(pg: Playground, served: Served, model_key: str, session_id: str) -> tuple[Any, Any]:
    """The usage and history panels show what the usage and history routes answer; answers those bodies."""
    with served.client() as client:
        usage_answer = client.get(f"/{model_key}/usage/{session_id}")
        history_answer = client.get(f"/{model_key}/history/{session_id}")
    assert usage_answer.status_code == 200, usage_answer.text
    assert history_answer.status_code == 200, history_answer.text
    usage, history = usage_answer.json(), history_answer.json()
    page = pg.page
    expect(page.get_by_test_id("usage")).to_have_attribute("data-session", session_id)
    total = usage["usage"]["total"]
    figures = page.get_by_test_id("usage-total")
    for name in ("calls", "input_tokens", "output_tokens"):  # waits for the refresh after the turn
        figure = figures.and_(page.locator(f'[data-figure="{name}"]'))
        expect(figure).to_have_attribute("data-value", str(total[name]))
        assert _digits(figure.locator(".usage-value").inner_text()) == str(total[name])
    cost = figures.and_(page.locator('[data-figure="cost"]'))
    assert float(cost.get_attribute("data-value") or "nan") == pytest.approx(total["cost"])
    if total["cost"]:
        assert _digits(cost.inner_text()).strip("0")  # a tiny cost shows its digits, not $0.00

    for group in ("by_state", "by_template", "by_model"):
        rows = page.locator(f'[data-testid="usage-row"][data-group="{group}"]')
        shown = {
            row.get_attribute("data-name"): {
                cell.get_attribute("data-figure"): float(cell.get_attribute("data-value") or "nan")
                for cell in row.locator("td").all()
            }
            for row in rows.all()
        }
        expected = {
            name: {key: float(value) for key, value in totals.items() if key != "total_tokens"}
            for name, totals in usage["usage"][group].items()
        }
        assert shown == expected, group

    budget = usage["budget"]
    box = page.get_by_test_id("budget")
    expect(box).to_have_attribute("data-exceeded", str(budget["exceeded"]).lower())
    meter = box.locator('[data-testid="budget-meter"][data-limit="tokens"]')
    expect(meter).to_have_attribute("data-used", str(total["total_tokens"]))
    expect(meter).to_have_attribute("data-max", str(budget["max_tokens"]))
    expect(meter).to_have_attribute("data-remaining", str(budget["remaining_tokens"]))
    assert _digits(meter.locator(".meter-left").inner_text()) == str(budget["remaining_tokens"])
    if budget["exceeded"]:
        expect(page.get_by_test_id("budget-status")).to_have_text("spent")
        expect(page.get_by_test_id("budget-reason")).to_contain_text(budget["reason"])
        expect(page.get_by_test_id("budget-reason")).to_contain_text(budget["on_exceeded"])
    else:
        expect(page.get_by_test_id("budget-reason")).to_have_count(0)

    entries = history["entries"]
    listed = page.get_by_test_id("history-entry")
    expect(listed).to_have_count(len(entries))
    assert [item.get_attribute("data-kind") for item in listed.all()] == [entry["kind"] for entry in entries]
    assert [item.get_attribute("data-state") for item in listed.all()] == [entry["state"] for entry in entries]
    for item, entry in zip(listed.all(), entries, strict=True):
        if entry["kind"] == "event":
            expect(item).to_contain_text(f"{entry['event']} {entry['state']} → {entry['target']}")
        if entry["kind"] == "invoker_run":
            expect(item.get_by_test_id("history-kind")).to_have_text(f"run {entry['outcome']}")
            expect(item.get_by_test_id("history-duration")).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        if entry["error"]:
            expect(item.get_by_test_id("history-error")).to_have_text(entry["error"])
    expect(page.get_by_test_id("history-count")).to_have_text(f"{len(entries)} of {history['limit']} kept")
    return usage, history


# ---- in the browser ----------------------------------------------------------------------
def test_a_whole_q_and_a_capture_conversation(server: Served, playground: Any) -> None:
    """Typing through the flow: the name is asked again, captured, then questions; the diagram follows."""
    pg: Playground = playground(server)
    user = {"email": f"ada.{server.kind.replace('+', '-')}@example.org", "firstname": "Ada", "lastname": "Lovelace"}
    session_id = pg.start("q_and_a_capture", user)
    expect(pg.messages("assistant").last).to_contain_text("What is your name?")
    pg.expect_state("intro")
    fields = pg.page.get_by_test_id("model-field")
    expect(fields.first).to_have_attribute("data-field", "user_name")  # the flow's own field comes first
    expect(fields.first).to_have_attribute("data-captured", "true")
    expect(pg.model_field("session_id")).to_have_attribute("data-captured", "false")

    turns = [
        ("hmm", "need_to_retry", "did not catch your name", "intro → ai_extracts_name → need_to_retry"),
        ("My name is Ada", "welcome_message", "Welcome Ada!", "need_to_retry → ai_extracts_name → welcome_message"),
        ("What is a state machine?", "user_enters_query", "You said: 'What is a state machine?'", None),
        ("And a graph?", "user_enters_query", "And a graph?", "user_enters_query → ai_creates_response"),
    ]
    for number, (text, state_id, answer, trace) in enumerate(turns, start=2):
        pg.say(text)
        pg.wait_idle()
        expect(pg.messages("assistant")).to_have_count(number)
        expect(pg.messages("assistant").last).to_contain_text(answer)
        expect(pg.messages("user").last).to_contain_text(text)
        pg.expect_state(state_id)
        if trace:
            expect(pg.page.get_by_test_id("trace").last).to_contain_text(trace)
        if state_id == "welcome_message":
            expect(pg.model_field("user_name")).to_contain_text('"Ada"')
            expect(pg.model_field("user_name")).to_have_attribute("data-changed", "true")
    # the last turn's transitions are marked on the diagram
    taken = pg.page.locator("#diagram g.edge.taken")
    expect(taken).to_have_count(2)
    expect(pg.page.locator('#diagram g.edge.taken[data-source="user_enters_query"]')).to_have_count(1)
    expect(pg.model_field("user_name")).to_have_attribute("data-changed", "false")

    # what the page shows is what the server keeps
    model = _model(server, "q_and_a_capture", session_id)
    assert model["state"] == 500 and model["user_name"] == "Ada"
    shown = [text.strip() for text in pg.page.locator("#messages > li .message-text").all_inner_texts()]
    assert shown == [element["actor_text"].strip() for element in model["dialogue"]]

    ARTIFACTS.mkdir(exist_ok=True)
    name = "playground.png" if server.kind == "embedded" else f"playground-{server.kind.replace('+', '-')}.png"
    pg.page.screenshot(path=str(ARTIFACTS / name))
    pg.check()


def test_refusals_are_shown_plainly_and_change_nothing(server: Served, playground: Any) -> None:
    pg: Playground = playground(server)
    pg.pick_flow("q_and_a_capture")
    pg.page.get_by_test_id("user-email").fill("half@example.org")  # a user needs first and last names too
    pg.page.get_by_test_id("start-session").click()
    malformed = pg.errors("invalid_request")
    expect(malformed).to_contain_text("HTTP 422")
    expect(malformed).to_contain_text("user_info.firstname: Field required")
    expect(pg.page.get_by_test_id("session-id")).to_be_empty()

    session_id = pg.start("q_and_a_capture")
    pg.expect_state("intro")

    pg.send_any_event("ai_extraction")  # intro takes user_input only
    refused = pg.errors("event_not_allowed")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("HTTP 409")
    expect(refused).to_contain_text("allowed now: user_input")
    expect(pg.page.locator('#messages > li[data-role="event"]').last).to_have_attribute("data-refused", "true")
    pg.wait_idle()
    pg.expect_state("intro")

    too_long = "x" * (LIMIT + 1)
    pg.say(too_long)
    expect(pg.errors("event_input_too_large")).to_contain_text("HTTP 413")
    pg.wait_idle()
    expect(pg.page.get_by_test_id("user-input")).to_have_value(too_long)  # given back to edit
    pg.expect_state("intro")
    assert _model(server, "q_and_a_capture", session_id)["state"] == 0

    # another client moves the session on; the page's next refusal brings it up to date
    with server.client() as other:
        moved = other.post(
            "/q_and_a_capture/event",
            json={"session_id": session_id, "event": "user_input", "event_input": "My name is Eve"},
        )
        assert moved.status_code == 200, moved.text
        answer = moved.json()
        while answer["next_actions"] == ["poll"]:
            answer = other.post(
                "/q_and_a_capture/event", json={"session_id": session_id, "event": "poll", "event_input": ""}
            ).json()
    pg.send_any_event("ai_extraction")
    expect(pg.errors("event_not_allowed")).to_have_count(2)
    pg.wait_idle()
    pg.expect_state("welcome_message")
    expect(pg.model_field("user_name")).to_contain_text('"Eve"')
    elsewhere = pg.page.locator('#messages > li[data-elsewhere="true"]')  # the other client's turn, caught up
    expect(elsewhere).to_have_count(2)
    expect(elsewhere.first).to_contain_text("My name is Eve")
    expect(elsewhere.last).to_contain_text("Welcome Eve!")

    pg.say("Hello again")
    pg.wait_idle()
    pg.expect_state("user_enters_query")
    expect(pg.messages("assistant").last).to_contain_text("Hello again")
    pg.check()


def test_resume_a_session_from_the_list(server: Served, playground: Any) -> None:
    pg: Playground = playground(server)
    user = {"email": f"grace.{server.kind.replace('+', '-')}@example.org", "firstname": "Grace", "lastname": "Hopper"}
    first = pg.start("q_and_a_capture", user)
    pg.say("My name is Grace")
    pg.wait_idle()
    pg.expect_state("welcome_message")

    second = pg.start("q_and_a_capture", user)
    assert second != first
    pg.expect_state("intro")
    items = pg.page.get_by_test_id("session-item")
    expect(items).to_have_count(2)
    expect(items.first).to_have_attribute("data-session-id", second)  # newest first
    expect(items.first).to_have_attribute("aria-current", "true")
    listed = pg.page.locator(f'[data-testid="session-item"][data-session-id="{first}"]')
    expect(listed).to_contain_text("Welcome message")

    listed.click()
    expect(pg.page.get_by_test_id("session-id")).to_have_text(first)
    expect(pg.messages("assistant")).to_have_count(2)
    expect(pg.messages("assistant").last).to_contain_text("Welcome Grace!")
    expect(pg.messages("user").locator(".message-text")).to_have_text(["My name is Grace"])
    pg.expect_state("welcome_message")
    expect(pg.model_field("user_name")).to_contain_text('"Grace"')
    expect(listed).to_have_attribute("aria-current", "true")

    pg.say("Where was I?")
    pg.wait_idle()
    pg.expect_state("user_enters_query")

    pg.page.reload()  # the address keeps the flow and the session
    expect(pg.page.get_by_test_id("session-id")).to_have_text(first)
    pg.expect_state("user_enters_query")
    expect(pg.messages("user").locator(".message-text")).to_have_text(["My name is Grace", "Where was I?"])
    pg.check()


def test_tokens_stream_progress_shows_busy_and_invoker_errors(streaming: Served, playground: Any) -> None:
    pg: Playground = playground(streaming)
    session_id = pg.start("q_and_a")
    pg.expect_state("intro")

    pg.say("__DRIP__ tell me a story")  # the LLM server sends a token every 0.1 s
    expect(pg.page.get_by_test_id("progress")).to_be_visible()
    streamed = pg.page.locator('#messages > li[data-role="llm"][data-streaming="true"]')
    expect(streamed).to_contain_text("ECHO: ")  # tokens show while the call still goes
    expect(pg.page.get_by_test_id("diagram")).to_have_attribute("data-running", "true")
    pg.wait_idle()
    expect(pg.page.get_by_test_id("progress")).to_be_hidden()
    final = pg.messages("assistant").last
    expect(final).to_contain_text("__DRIP__ tell me a story")
    expect(final).to_have_attribute("data-streaming", "false")
    assert int(final.get_attribute("data-tokens") or 0) > 1
    pg.expect_state("user_enters_query")

    # another client starts a slow run; the page's event is refused as busy, then it follows that run.
    # (A fresh session each time: the LLM server reads its markers in the whole prompt, history included.)
    session_id = pg.start("q_and_a")
    with streaming.client() as other:
        slow = other.post(
            "/q_and_a/event",
            json={"session_id": session_id, "event": "user_input", "event_input": "__SLOW__ from elsewhere"},
        )
        assert slow.json()["next_actions"] == ["poll"], slow.text
    pg.say("hello")
    busy = pg.errors("session_busy")
    expect(busy).to_contain_text("HTTP 409")
    expect(busy).to_contain_text("following the run in flight")
    expect(pg.page.get_by_test_id("progress")).to_be_visible()
    pg.wait_idle()
    expect(pg.messages("assistant").last).to_contain_text("__SLOW__ from elsewhere")
    expect(pg.page.get_by_test_id("user-input")).to_have_value("hello")
    pg.expect_state("user_enters_query")

    pg.start("q_and_a")
    pg.say("__HTTP500__")
    failed = pg.errors("invoker_error")
    expect(failed).to_contain_text("HTTP500")
    expect(failed).to_contain_text("the session goes on")
    pg.wait_idle()
    expect(pg.page.get_by_test_id("user-input")).to_be_enabled()  # the session goes on
    pg.expect_state("user_enters_query")
    pg.check()


def test_usage_and_history_follow_the_session(budgeted: Served, playground: Any) -> None:
    """After every turn the usage panel shows the usage route's figures and budget, the history panel its entries."""
    pg: Playground = playground(budgeted)
    session_id = pg.start("budgeted")
    usage, history = expect_ledger(pg, budgeted, "budgeted", session_id)
    assert usage["usage"]["total"]["calls"] == 0 and [entry["kind"] for entry in history["entries"]] == [
        "state_entered"
    ]
    expect(pg.page.get_by_test_id("usage")).to_contain_text("No invoker call yet.")

    pg.say("What is a state machine?")
    pg.wait_idle()
    pg.expect_state("user_enters_query")
    usage, history = expect_ledger(pg, budgeted, "budgeted", session_id)
    total = usage["usage"]["total"]
    assert total["calls"] == 1 and 0 < total["total_tokens"] < BUDGET_TOKENS and total["cost"] > 0
    assert not usage["budget"]["exceeded"]
    assert list(usage["usage"]["by_model"]) == ["gpt-4o-mini"]
    assert "invoker_run" in [entry["kind"] for entry in history["entries"]]

    pg.say(" ".join(["word"] * BUDGET_TOKENS))  # runs, as the budget is not spent yet, and overshoots it
    pg.wait_idle()
    usage, _ = expect_ledger(pg, budgeted, "budgeted", session_id)
    assert usage["budget"]["exceeded"] and usage["budget"]["remaining_tokens"] == 0

    pg.say("One more question?")  # refused: over_budget takes the session to its final state
    pg.wait_idle()
    pg.expect_state("spent")
    shown = pg.errors("budget_exceeded")  # the error's own code and message, not its JSON
    expect(shown).to_contain_text("BudgetExceeded: state 'ai_creates_response' was not run")
    expect(shown).to_contain_text("(in state ai_creates_response)")
    expect(shown).to_contain_text("the session has ended")
    expect(shown).not_to_contain_text('"session_id"')
    _, history = expect_ledger(pg, budgeted, "budgeted", session_id)
    kinds = [entry["kind"] for entry in history["entries"]]
    assert kinds[-3:] == ["event", "budget_refused", "event"], kinds  # a refused run did not run
    refused = pg.page.locator('[data-testid="history-entry"][data-kind="budget_refused"]')
    expect(refused.get_by_test_id("history-kind")).to_have_text("over budget")
    expect(pg.page.locator('[data-testid="history-entry"][data-outcome="failed"]')).to_have_count(0)

    ARTIFACTS.mkdir(exist_ok=True)
    pg.page.set_viewport_size({"width": 1440, "height": 1100})
    pg.page.get_by_test_id("usage").evaluate("panel => panel.closest('.card').scrollIntoView({block: 'start'})")
    pg.page.screenshot(path=str(ARTIFACTS / "playground-usage.png"))
    pg.check()


def test_a_refused_ledger_read_and_every_history_kind(budgeted: Served, playground: Any) -> None:
    """A usage read the server refuses shows in its panel as the conversation shows errors; each history kind reads."""
    pg: Playground = playground(budgeted)
    unavailable = {"error": "store_unavailable", "detail": "the store cannot be reached"}
    pg.page.route(
        re.compile(r".*/budgeted/usage/.*"),
        lambda route: route.fulfill(status=503, json=unavailable, headers={"Retry-After": "1"}),
    )
    at = "2026-01-02T03:04:05.678901Z"
    every_kind = [
        {"kind": "state_entered", "state": "intro"},
        {"kind": "event", "state": "intro", "event": "user_input", "target": "ai_creates_response"},
        {
            "kind": "invoker_failure",
            "state": "ai_creates_response",
            "template": "llm/a.jinja2",
            "attempt": 2,
            "error": "APIError: HTTP 500",
        },
        {
            "kind": "invoker_run",
            "state": "ai_creates_response",
            "outcome": "failed",
            "duration_ms": 1234.5,
            "error": "APIError: HTTP 500",
        },
        {"kind": "budget_refused", "state": "ai_creates_response", "error": "the session used 9 tokens of 5"},
        {"kind": "migrated", "detail": {"from": "1", "to": "2"}},
    ]
    fields = ("state", "event", "target", "template", "outcome", "duration_ms", "attempt", "error", "detail")
    entries = [{"at": at, **dict.fromkeys(fields), **entry} for entry in every_kind]
    pg.page.route(
        re.compile(r".*/budgeted/history/.*"),
        lambda route: route.fulfill(json={"session_id": "x", "entries": entries, "limit": 200}),
    )
    pg.start("budgeted")
    refused = pg.page.get_by_test_id("usage-error")
    expect(refused).to_have_attribute("data-error", "store_unavailable")
    expect(refused).to_contain_text("store_unavailable (HTTP 503)")
    expect(refused).to_contain_text("the store cannot be reached")
    expect(pg.page.get_by_test_id("history-kind")).to_have_text(
        ["entered", "event", "call failed", "run failed", "over budget", "migrated"]
    )
    listed = pg.page.get_by_test_id("history-entry")
    expect(listed.nth(2)).to_contain_text("llm/a.jinja2 · attempt 2")
    expect(listed.nth(2).get_by_test_id("history-error")).to_have_text("APIError: HTTP 500")
    expect(listed.nth(3).get_by_test_id("history-duration")).to_have_text("1.23 s")
    expect(listed.nth(5)).to_contain_text("from 1 to 2")
    pg.check()


def expect_flows(pg: Playground, *flows: str, waiting: str = "") -> None:
    """The breadcrumb lists ``flows`` (outermost first, the active one last), the diagram outlines ``waiting``."""
    crumbs = pg.page.get_by_test_id("active-flow")
    expect(crumbs).to_have_text(list(flows))
    expect(crumbs.last).to_have_attribute("aria-current", "step")
    diagram = pg.page.get_by_test_id("diagram")
    expect(diagram).to_have_attribute("data-waiting", waiting)
    expect(diagram.locator("g.node.waiting")).to_have_count(len(waiting.split()))
    for node in waiting.split():
        expect(diagram.locator(f'g.node.waiting[data-state="{node}"] > title')).to_have_text(node)


def test_an_interruption_of_the_ordering_flow_and_its_return(server: Served, playground: Any) -> None:
    """Cancelling an order midway: the cancel flow interrupts it, "no" resumes it; the page says so everywhere."""
    pg: Playground = playground(server)
    session_id = pg.start("ordering")
    pg.expect_state("taking_order")
    expect_flows(pg, "order")
    expect(pg.page.get_by_test_id("flow-notice")).to_be_hidden()
    cluster = pg.page.locator('#diagram g.cluster[data-flow="cancel_order"]')  # the other flows' states, grouped
    expect(cluster.locator("> title")).to_have_text("cluster_cancel_order")
    expect(pg.page.locator('#diagram g.node[data-state="cancel_order/asking"]')).to_have_attribute(
        "data-flow", "cancel_order"
    )

    pg.say("tea")
    pg.wait_idle()
    pg.expect_state("taking_order")
    cancel = pg.page.locator('[data-testid="event-button"][data-event="cancel"]')  # a trigger, offered as a button
    expect(cancel).to_be_visible()
    cancel.click()
    pg.wait_idle()
    pg.expect_state("cancel_order/asking")  # a node inside the interrupting flow
    expect(pg.messages("assistant").last).to_contain_text("Cancel your whole order (tea)? (yes/no)")
    notice = pg.page.get_by_test_id("flow-notice")
    expect(notice).to_have_attribute("data-interrupted-by", "cancel_order")
    expect(notice).to_have_text("interrupted by cancel_order")
    expect_flows(pg, "order", "cancel_order", waiting="taking_order")
    expect(pg.page.get_by_test_id("active-flow").first).to_have_attribute("data-status", "interrupted")
    expect(cluster).to_have_class(re.compile(r"\bactive-flow\b"))
    expect(pg.page.get_by_test_id("event-button")).to_have_count(0)  # the cancel question may not be interrupted
    expect(pg.page.get_by_test_id("state-details")).to_contain_text("flow cancel_order")

    pg.say("no")
    pg.wait_idle()
    pg.expect_state("taking_order")
    expect(pg.messages("assistant").last).to_contain_text("Good, your order stays.")
    expect(notice).to_have_attribute("data-resumed", "order")
    expect(notice).to_have_text("order resumed")
    expect_flows(pg, "order")
    expect(cluster).not_to_have_class(re.compile(r"\bactive-flow\b"))
    expect(cancel).to_be_visible()

    with server.client() as client:
        entries = client.get(f"/ordering/history/{session_id}").json()["entries"]
    listed = pg.page.get_by_test_id("history-entry")
    expect(listed).to_have_count(len(entries))
    assert [item.get_attribute("data-kind") for item in listed.all()] == [entry["kind"] for entry in entries]
    said = {
        "flow_interrupted": "order interrupted in taking_order by cancel_order on event 'cancel'",
        "flow_started": "cancel_order started in taking_order on event 'cancel'",
        "flow_completed": "cancel_order completed in kept",
        "flow_resumed": "order resumed in taking_order after cancel_order",
    }
    for kind, text in said.items():
        item = pg.page.locator(f'[data-testid="history-entry"][data-kind="{kind}"]')
        expect(item).to_have_count(1)
        expect(item).to_contain_text(text)
    expect(pg.page.locator('[data-testid="history-entry"][data-kind="flow_started"]')).to_have_attribute(
        "data-flow", "cancel_order"
    )
    expect(pg.page.get_by_test_id("history-kind").filter(has_text="interrupted")).to_have_count(1)
    answered = pg.page.locator('[data-testid="history-entry"][data-kind="event"][data-flow="cancel_order"]')
    expect(answered).to_contain_text("cancel_order user_input asking → kept")
    pg.check()


def test_sub_flows_three_deep_and_an_aborted_order(server: Served, playground: Any) -> None:
    """The address flow runs the confirmation flow; cancelling there and saying "yes" aborts all of them."""
    pg: Playground = playground(server)
    pg.start("ordering")
    for text, node in (
        ("jam", "taking_order"),
        ("done", "address/asking_street"),
        ("Main Street 1", "address/asking_city"),
    ):
        pg.say(text)
        pg.wait_idle()
        pg.expect_state(node)
    expect_flows(pg, "order", "address", waiting="getting_address")
    expect(pg.page.get_by_test_id("flow-notice")).to_be_hidden()
    expect(pg.page.locator('#diagram g.cluster[data-flow="address"]')).to_have_class(re.compile(r"\bactive-flow\b"))
    pg.page.locator('#diagram g.node[data-state="getting_address"]').click()
    details = pg.page.get_by_test_id("state-details")
    expect(details).to_contain_text("calls")
    expect(details).to_contain_text("address_done")
    expect(details).to_contain_text("waiting")

    pg.say("Springfield")
    pg.wait_idle()
    pg.expect_state("confirm/asking")
    expect_flows(pg, "order", "address", "confirm", waiting="getting_address address/checking")
    pg.page.locator('[data-testid="event-button"][data-event="cancel"]').click()
    pg.wait_idle()
    pg.expect_state("cancel_order/asking")
    expect_flows(
        pg, "order", "address", "confirm", "cancel_order", waiting="getting_address address/checking confirm/asking"
    )
    expect(pg.page.get_by_test_id("flow-notice")).to_have_attribute("data-interrupted-by", "cancel_order")
    if server.kind == "embedded":
        ARTIFACTS.mkdir(exist_ok=True)
        pg.page.screenshot(path=str(ARTIFACTS / "playground-ordering.png"))
    pg.page.get_by_test_id("diagram-zoom").click()  # full size, scrolled to the current state
    expect(pg.page.get_by_test_id("diagram")).to_have_class(re.compile(r"\bzoomed\b"))
    expect(pg.page.locator("#diagram g.node.current")).to_be_in_viewport()
    if server.kind == "embedded":
        pg.page.screenshot(path=str(ARTIFACTS / "playground-ordering-zoomed.png"))

    pg.say("yes")
    pg.wait_idle()
    pg.expect_state("getting_address")  # where the order was when it aborted
    expect(pg.messages("assistant").last).to_contain_text("Your order is cancelled. Goodbye!")
    notice = pg.page.get_by_test_id("flow-notice")
    expect(notice).to_have_attribute("data-aborted", "cancel_order confirm address order")
    expect(notice).to_have_text("aborted: cancel_order, confirm, address, order")
    expect_flows(pg, "order")
    expect(pg.page.get_by_test_id("active-flow")).to_have_attribute("data-status", "aborted")
    expect(pg.page.get_by_test_id("actions-note")).to_contain_text("aborted")
    expect(pg.page.get_by_test_id("user-input")).to_be_hidden()
    aborted = pg.page.locator('[data-testid="history-entry"][data-kind="flow_aborted"]')
    expect(aborted).to_have_count(4)
    expect(aborted.last).to_contain_text("order aborted in getting_address")
    expect(aborted.first).to_contain_text("cancel_order aborted in cancelled")
    pg.check()


def test_api_keys_another_prefix_event_buttons_and_a_final_state(secured: Served, playground: Any) -> None:
    pg: Playground = playground(secured)
    expect(pg.page.get_by_test_id("banner")).to_contain_text("needs an API key")
    expect(pg.page.get_by_test_id("flow-select")).to_be_disabled()
    pg.page.get_by_test_id("api-key").fill("key-a")
    pg.page.get_by_test_id("api-key-apply").click()
    expect(pg.page.get_by_test_id("banner")).to_be_hidden()
    session_id = pg.start("echo")
    expect(pg.page.get_by_test_id("event-button")).to_have_count(0)
    pg.say("Is this thing on?")
    pg.wait_idle()
    pg.expect_state("user_enters_query")
    expect(pg.messages("assistant").last).to_contain_text("Echo: Is this thing on?")

    stop = pg.page.locator('[data-testid="event-button"][data-event="stop"]')  # an event other than user_input
    expect(stop).to_be_visible()
    stop.click()
    pg.wait_idle()
    pg.expect_state("done")
    expect(pg.messages("assistant").last).to_contain_text("Bye!")
    expect(pg.page.get_by_test_id("actions-note")).to_contain_text("final state")
    expect(pg.page.get_by_test_id("user-input")).to_be_hidden()
    expect(pg.page.get_by_test_id("event-button")).to_have_count(0)
    with secured.client("/custom/api", headers={"Authorization": "Bearer key-a"}) as client:
        assert client.get(f"/echo/task_state/{session_id}").json() == {
            "session_id": session_id,
            "ready": True,
            "next_actions": [],
        }
    pg.check()


# ---- over plain HTTP ---------------------------------------------------------------------
def test_the_flow_description(server: Served) -> None:
    with server.client() as client:
        described = client.get("/q_and_a_capture/flow").json()
        cond = client.get("/q_and_a_cond/flow").json()
        composite = client.get("/topic_analysis/flow").json()
    states = {state["id"]: state for state in described["states"]}
    assert list(states) == [
        "intro",
        "ai_extracts_name",
        "need_to_retry",
        "welcome_message",
        "ai_creates_response",
        "user_enters_query",
    ]
    assert described["initial"] == "intro" and states["intro"]["initial"] and not states["intro"]["final"]
    assert states["ai_extracts_name"] == {
        "id": "ai_extracts_name",
        "name": "Ai extracts name",
        "value": 100,
        "kind": "invoker",
        "initial": False,
        "final": False,
        "template": "q_and_a_capture/llm/ai_extracts_name.jinja2",
        "events": ["ai_extraction"],
        "completion_event": "ai_extraction",
    }
    assert states["welcome_message"]["kind"] == "user" and states["welcome_message"]["completion_event"] is None
    assert described["events"] == ["user_input", "ai_extraction"]
    assert {"source": "ai_extracts_name", "target": "need_to_retry", "label": "ai_extraction [!name_is_defined]"} in (
        described["transitions"]
    )
    fields = described["fields"]
    assert fields[0] == {
        "name": "user_name",
        "captured": True,
        "type": "str | None",
        "description": "The name of the user",
    }
    assert [item["name"] for item in fields if not item["captured"]][:3] == ["session_id", "state", "dialogue"]
    assert described["model"] == "graphs.q_and_a_capture.QandACaptureModel"
    assert [state["id"] for state in cond["states"] if state["final"]] == ["outro"]
    analyse = next(state for state in composite["states"] if state["id"] == "analyse")
    assert analyse["template"] == [
        {
            "overview": "topic_analysis/llm/overview.jinja2",
            "aspects": {"map": "topic_analysis/llm/aspect.jinja2", "over": "aspects"},
        },
        "topic_analysis/compose/report.jinja2",
    ]


def test_the_diagram_highlights_the_sessions_state(server: Served) -> None:
    with server.client() as client:
        plain = client.get("/q_and_a_capture/diagram")
        assert plain.status_code == 200 and plain.headers["content-type"] == "image/svg+xml"
        assert "<svg" in plain.text and "<title>welcome_message</title>" in plain.text and "#ffd54f" not in plain.text
        session_id = client.post("/q_and_a_capture/start_session").json()["session_id"]
        svg = client.get("/q_and_a_capture/diagram", params={"session_id": session_id}).text
        intro_node = re.search(r"<title>intro</title>.*?</g>", svg, re.DOTALL)
        assert intro_node is not None and 'fill="#ffd54f"' in intro_node.group(0)
        mermaid = client.get("/q_and_a_capture/diagram", params={"session_id": session_id, "format": "mermaid"})
        assert mermaid.headers["content-type"].startswith("text/plain")
        assert "style intro fill:#ffd54f" in mermaid.text
        answer = client.post(
            "/q_and_a_capture/event",
            json={"session_id": session_id, "event": "user_input", "event_input": "My name is Ada"},
        ).json()
        while answer["next_actions"] == ["poll"]:
            answer = client.post(
                "/q_and_a_capture/event", json={"session_id": session_id, "event": "poll", "event_input": ""}
            ).json()
        dot = client.get("/q_and_a_capture/diagram", params={"session_id": session_id, "format": "dot"}).text
    highlighted = [line for line in dot.splitlines() if "#ffd54f" in line]
    assert len(highlighted) == 1 and highlighted[0].strip().startswith('"welcome_message"'), highlighted


def test_unknown_keys_and_sessions_and_bad_formats(server: Served) -> None:
    with server.client() as client:
        for response in (client.get("/nope/flow"), client.get("/nope/diagram")):
            assert response.status_code == 404 and response.json()["error"] == "unknown_model_key", response.text
        unknown = client.get("/q_and_a/diagram", params={"session_id": "not-a-session"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_session"
        assert client.get("/q_and_a/diagram", params={"format": "png"}).status_code == 422


def test_the_page_and_its_files_are_served(server: Served) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="genie-graph-api-prefix" content="/v1/ai">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(server.url + "/playground/").text == page.text
    assets = (("app.js", "text/javascript"), ("ledger.js", "text/javascript"), ("style.css", "text/css"))
    for name, media_type in (*assets, ("favicon.svg", "image/svg")):
        asset = httpx.get(f"{server.url}/playground/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type), name
    missing = httpx.get(server.url + "/playground/nope.js")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/ai/{model_key}/flow" in schema["paths"] and "/v1/ai/{model_key}/diagram" in schema["paths"]
    assert not [path for path in schema["paths"] if "playground" in path or path == "/"]


def test_the_secured_page_learns_its_prefix_and_needs_no_key(secured: Served) -> None:
    page = httpx.get(secured.url + "/")
    assert page.status_code == 200
    assert '<meta name="genie-graph-api-prefix" content="/custom/api">' in page.text
    assert httpx.get(secured.url + "/custom/api/echo/flow").status_code == 401
    assert httpx.get(secured.url + "/custom/api/echo/diagram").status_code == 401
    described = httpx.get(secured.url + "/custom/api/echo/flow", headers={"Authorization": "Bearer key-a"})
    assert described.status_code == 200 and described.json()["initial"] == "intro"
    assert [state["id"] for state in described.json()["states"] if state["final"]] == ["done"]


def test_the_playground_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from api import create_app, settings_from_env
    from genie_graph._cli import build_parser
    from graphs import create_flow

    assert build_parser().parse_args(["serve", "--no-playground"]).playground is False
    assert build_parser().parse_args(["serve"]).playground is True
    monkeypatch.setenv("GENIE_GRAPH_PLAYGROUND", "0")
    assert settings_from_env()["playground"] is False
    flow: GenieFlow = create_flow("memory://")
    try:
        without = TestClient(create_app(flow, playground=False))
        assert without.get("/").status_code == 404 and without.get("/playground/app.js").status_code == 404
        assert without.get("/v1/ai/").json()["model_keys"]
        at_root = TestClient(create_app(flow, prefix=""))  # the API keeps "/"; the page moves to /playground/
        assert at_root.get("/").json()["model_keys"]
        page = at_root.get("/playground/")
        assert page.status_code == 200 and '<meta name="genie-graph-api-prefix" content="">' in page.text
    finally:
        flow.close()
