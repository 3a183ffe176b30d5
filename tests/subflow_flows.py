"""Test-only flows for ``tests/test_subflows.py``: sub-flows (``SubFlow``) and interruptions (``Interruption``).

Every hook of the nesting flows bumps ``CALLS["<flow>.<hook>"]``, a module-level counter that also
sees calls made on model copies that are thrown away and calls repeated when LangGraph re-executes
a node. ``classify`` is the intent classifier's python invoker; it records every text it is asked
about in ``CLASSIFIED``.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from statemachine import State

from genie_graph import EventData, GenieModel, GenieStateMachine, Interruption, SubFlow
from tests.helpers import ECHO_META, RENDERER_META

CALLS: Counter[str] = Counter()
"""``<flow>.<hook>`` -> how often it ran, across model copies and node re-executions."""

CLASSIFIED: list[str] = []
"""The user texts the intent classifier was called with, in order."""

TEMPLATES: dict[str, str] = {
    "ui/meta.yaml": RENDERER_META,
    "ui/plain.jinja2": "Plain.",
    "ui/empty.jinja2": "",
    # mapping
    "ui/child_asking.jinja2": "Hello {{ who }}, n={{ n }} [{{ active_flows | join('>') }}]",
    "ui/child_done.jinja2": "Child got {{ answer }}.",
    "ui/map_start.jinja2": "Who are you?",
    "ui/map_accepted.jinja2": "Accepted {{ result }} for {{ customer }}.",
    "ui/map_rejected.jinja2": "Rejected {{ result }}.",
    "ui/map_finished.jinja2": "Bye.",
    "ui/list_start.jinja2": "List start.",
    "ui/list_after.jinja2": "After: {{ answer }} {{ accepted }}",
    # three levels
    "ui/r_ask.jinja2": "R: ask",
    "ui/r_after.jinja2": "R: after ({{ r_result }})",
    "ui/r_end.jinja2": "R: end",
    "ui/a_ask.jinja2": "A: ask (got {{ a_in }})",
    "ui/a_after.jinja2": "A: after ({{ a_result }})",
    "ui/a_end.jinja2": "A: end",
    "ui/b_one.jinja2": "B: one (got {{ b_in }})",
    "ui/b_two.jinja2": "B: two ({{ b_echo }})",
    "ui/b_end.jinja2": "B: end",
    # interrupting flows
    "ui/helping.jinja2": "Help: how can I help? [{{ active_flows | join('>') }}]",
    "ui/helped.jinja2": "Help: glad to help.",
    "ui/acking.jinja2": "Ack {{ active_flows[-1] }}: say anything",
    "ui/acked.jinja2": "Ack {{ active_flows[-1] }} done.",
    "ui/told.jinja2": "Sum: {{ summary }}",
    "ui/quiet.jinja2": "Quiet: say anything",
    "ui/noting.jinja2": "Note about {{ topic }}:",
    "ui/noted.jinja2": "Noted.",
    "ui/main.jinja2": "Main: items={{ items | join(',') or '-' }}",
    "ui/main_bye.jinja2": "Main: bye",
    "ui/listening.jinja2": "Listening.",
    "ui/echoing.jinja2": "You said: {{ actor_input }}",
    # aborts
    "ui/c_ask.jinja2": "Cancel? (yes/no)",
    "ui/c_yes.jinja2": "Cancelled.",
    "ui/c_no.jinja2": "Kept.",
    "ui/l_ask.jinja2": "L: ask",
    "ui/l_end.jinja2": "L: end",
    "ui/m_start.jinja2": "M: start",
    "ui/m_end.jinja2": "M: end",
    "ui/m_quit.jinja2": "M: quitting",
    "ui/ab_start.jinja2": "R: start",
    "ui/ab_ok.jinja2": "R: mid completed",
    "ui/ab_aborted.jinja2": "R: mid aborted",
    "ui/s_start.jinja2": "S: start",
    "ui/s_ok.jinja2": "S: ok",
    # priorities, guards, declaring flows, loops, intents
    "ui/prio_main.jinja2": "Prio: main",
    "ui/i_ask.jinja2": "Inner: ask",
    "ui/i_done.jinja2": "Inner: done",
    "ui/opened.jinja2": "Guard: open",
    "ui/closed.jinja2": "Guard: closed",
    "ui/locked.jinja2": "Locked: asking",
    "ui/released.jinja2": "Released.",
    "ui/d_start.jinja2": "D: start",
    "ui/d_after.jinja2": "D: after",
    "ui/da_start.jinja2": "A: start",
    "ui/da_after.jinja2": "A after: note={{ a_note }}",
    "ui/da_end.jinja2": "A: end",
    "ui/db_ask.jinja2": "B ask",
    "ui/db_end.jinja2": "B: end",
    "ui/loop_start.jinja2": "Loop root.",
    "ui/looping.jinja2": "Loop {{ rounds }}",
    "ui/stopped.jinja2": "Stopped.",
    "ui/intent_main.jinja2": "Intent: {{ said | join(',') or '-' }}",
    "ui/shown.jinja2": "Shown: {{ summary }}",
    "ui/counted.jinja2": "Counted: {{ summary }}",
    "ui/chain_start.jinja2": "Chain start.",
    "ui/chain_shown.jinja2": "Chain: {{ customer }} then {{ final }}",
    "ui/detour_ask.jinja2": "Detour: ask",
    "ui/detour_end.jinja2": "Detour: end",
    # invokers
    "llm/meta.yaml": ECHO_META,
    "llm/echo.jinja2": "{{ actor_input }}",
    "llm/sum.jinja2": "{{ actor_input }} -> {{ items | join(',') }}",
    "llm/count.jinja2": "{{ items | length }} items",
    "classify/meta.yaml": "invoker:\n  type: python\n  callable: tests.subflow_flows:classify\n",
    "classify/intent.jinja2": "{{ intents | join(',') }}|{{ user_input }}",
}
"""The template tree the flows below use (written under a test's ``tmp_path``)."""


def _text(event_data: EventData) -> str:
    return str(event_data.args[0]) if event_data.args else ""


def _words(text: str) -> list[str]:
    return text.lower().replace("?", " ").replace(".", " ").replace(",", " ").split()


def _log(tag: str, name: str) -> None:
    CALLS[f"{tag}.{name}"] += 1


def has_x(text: str) -> bool:
    return "x" in _words(text)


def has_y(text: str) -> bool:
    return "y" in _words(text)


def has_z(text: str) -> bool:
    return "z" in _words(text)


def asks_so_far(text: str) -> bool:
    """A condition on the text only: ``when(text)``."""
    return "so far" in text.lower()


def asks_total(text: str, model: GenieModel) -> bool:
    """A condition on the text and the declaring flow's model: ``when(text, model)``."""
    return "total" in _words(text) and len(getattr(model, "items", [])) >= 2


async def mentions_async(text: str) -> bool:
    """An async condition."""
    return "async" in _words(text)


def classify(content: str) -> str:
    """The intent classifier's invoker: ``<intents>|<user input>`` -> an intent label."""
    _intents, _, text = content.partition("|")
    text = text.strip()
    CLASSIFIED.append(text)
    words = _words(text)
    if "help" in words:
        return " Help. "  # compared without case, dots or surrounding space
    if "bill" in words or "billing" in words:
        return "billing"
    return "none"


# ---- call and return: field maps ------------------------------------------------------------
class ChildMachine(GenieStateMachine):
    asking = State(initial=True)
    done = State(final=True)

    user_input = asking.to(done)

    templates = dict(asking="ui/child_asking.jinja2", done="ui/child_done.jinja2")

    def on_exit_asking(self, event_data: EventData) -> None:
        self.model.answer = _text(event_data)
        self.model.accepted = _text(event_data) == "yes"


class ChildModel(GenieModel):
    who: str = ""
    n: float = 0.0
    answer: str = ""
    accepted: bool = False

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ChildMachine


class MapParentMachine(GenieStateMachine):
    start = State(initial=True)
    calling = State()
    accepted = State()
    rejected = State()
    finished = State(final=True)

    user_input = start.to(calling) | accepted.to(finished) | rejected.to(finished)
    skip = calling.to(finished)  # declared first: the child's return must not fall back on it
    child_returned = calling.to(accepted, cond="was_accepted") | calling.to(rejected)

    templates = dict(
        start="ui/map_start.jinja2",
        calling=SubFlow(
            ChildModel,
            inputs={"who": "customer", "n": "count"},  # int into float is accepted
            outputs={"result": "answer", "ok": "accepted"},  # str into str | None is accepted
            on_complete="child_returned",
        ),
        accepted="ui/map_accepted.jinja2",
        rejected="ui/map_rejected.jinja2",
        finished="ui/map_finished.jinja2",
    )

    def on_exit_start(self, event_data: EventData) -> None:
        self.model.customer = _text(event_data)

    def was_accepted(self) -> bool:
        return bool(self.model.ok)


class MapParentModel(GenieModel):
    customer: str = ""
    count: int = 3
    result: str | None = None
    ok: bool = False

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return MapParentMachine


class ListParentMachine(GenieStateMachine):
    start = State(initial=True)
    calling = State()
    after = State(final=True)

    user_input = start.to(calling)
    returned = calling.to(after)  # the first (only) event out: the default on_complete

    templates = dict(
        start="ui/list_start.jinja2",
        calling=SubFlow(ChildModel, inputs=["who", "n"], outputs=["answer", "accepted"], name="helper_child"),
        after="ui/list_after.jinja2",
    )


class ListParentModel(GenieModel):
    who: str = "Bob"
    n: float = 2.5
    answer: str = ""
    accepted: bool = False

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ListParentMachine


# ---- interrupting flows ----------------------------------------------------------------------
class HelpMachine(GenieStateMachine):
    helping = State(initial=True)
    helped = State(final=True)

    user_input = helping.to(helped, cond="c_help")

    templates = dict(helping="ui/helping.jinja2", helped="ui/helped.jinja2")

    def c_help(self) -> bool:
        _log("help", "c_help")
        return True

    def on_enter_helping(self) -> None:
        _log("help", "on_enter_helping")

    def on_exit_helping(self) -> None:
        _log("help", "on_exit_helping")

    def on_user_input(self) -> None:
        _log("help", "on_user_input")

    def on_enter_helped(self) -> None:
        _log("help", "on_enter_helped")


class HelpModel(GenieModel):
    topic: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return HelpMachine


class AckMachine(GenieStateMachine):
    """One question, any answer completes it; its templates name the flow they run in."""

    acking = State(initial=True)
    acked = State(final=True)

    user_input = acking.to(acked)

    templates = dict(acking="ui/acking.jinja2", acked="ui/acked.jinja2")


class AckModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return AckMachine


# the same machine under different flow names (a flow's default name comes from its model class)
class AlphaModel(AckModel): ...


class BetaModel(AckModel): ...


class GammaModel(AckModel): ...


class DeltaModel(AckModel): ...


class EpsilonModel(AckModel): ...


class ZetaModel(AckModel): ...


class EtaModel(AckModel): ...


class ThetaModel(AckModel): ...


class TotalModel(AckModel): ...


class AsyncAckModel(AckModel): ...


class HelpIntentModel(AckModel): ...


class BillingModel(AckModel): ...


class UrgentModel(AckModel): ...


class SumMachine(GenieStateMachine):
    summing = State(initial=True)  # an invoker state: the interruption's first node runs an invoker
    told = State(final=True)

    ai_extraction = summing.to(told)

    templates = dict(summing="llm/sum.jinja2", told="ui/told.jinja2")

    def on_exit_summing(self, event_data: EventData) -> None:
        self.model.summary = _text(event_data)


class SumModel(GenieModel):
    items: list[str] = []
    summary: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SumMachine


class QuietMachine(GenieStateMachine):
    waiting = State(initial=True)
    gone = State(final=True)  # renders nothing: the resumed flow's response stands alone

    user_input = waiting.to(gone)

    templates = dict(waiting="ui/quiet.jinja2", gone="ui/empty.jinja2")


class QuietModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return QuietMachine


class NoteMachine(GenieStateMachine):
    noting = State(initial=True)
    noted = State(final=True)

    user_input = noting.to(noted)

    templates = dict(noting="ui/noting.jinja2", noted="ui/noted.jinja2")

    def on_exit_noting(self, event_data: EventData) -> None:
        self.model.text = _text(event_data)


class NoteModel(GenieModel):
    topic: str = ""
    text: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NoteMachine


# ---- three levels: root -> a -> b, every hook counted ------------------------------------------
class NestBMachine(GenieStateMachine):
    b_one = State(initial=True)
    b_think = State()
    b_two = State()
    b_end = State(final=True)

    user_input = b_one.to(b_think, cond="c_b") | b_two.to(b_end, cond="c_b")
    ai_extraction = b_think.to(b_two, cond="c_b")

    templates = dict(
        b_one="ui/b_one.jinja2", b_think="llm/echo.jinja2", b_two="ui/b_two.jinja2", b_end="ui/b_end.jinja2"
    )

    def c_b(self) -> bool:
        _log("b", "c_b")
        return True

    def on_enter_b_one(self) -> None:
        _log("b", "on_enter_b_one")

    def on_exit_b_one(self) -> None:
        _log("b", "on_exit_b_one")

    def on_enter_b_think(self) -> None:
        _log("b", "on_enter_b_think")

    def on_exit_b_think(self, event_data: EventData) -> None:
        _log("b", "on_exit_b_think")
        self.model.b_echo = _text(event_data)

    def on_enter_b_two(self) -> None:
        _log("b", "on_enter_b_two")

    def on_exit_b_two(self, event_data: EventData) -> None:
        _log("b", "on_exit_b_two")
        self.model.b_result = _text(event_data)

    def on_enter_b_end(self) -> None:
        _log("b", "on_enter_b_end")

    def on_user_input(self) -> None:
        _log("b", "on_user_input")

    def on_ai_extraction(self) -> None:
        _log("b", "on_ai_extraction")


class NestBModel(GenieModel):
    b_in: str = ""
    b_echo: str = ""
    b_result: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NestBMachine


class NestAMachine(GenieStateMachine):
    a_ask = State(initial=True)
    a_call = State()
    a_after = State()
    a_end = State(final=True)

    user_input = a_ask.to(a_call, cond="c_a") | a_after.to(a_end, cond="c_a")
    b_done = a_call.to(a_after, cond="c_a")

    templates = dict(
        a_ask="ui/a_ask.jinja2",
        a_call=SubFlow(NestBModel, name="b", inputs={"b_in": "a_text"}, outputs={"a_result": "b_result"}),
        a_after="ui/a_after.jinja2",
        a_end="ui/a_end.jinja2",
    )

    def c_a(self) -> bool:
        _log("a", "c_a")
        return True

    def on_enter_a_ask(self) -> None:
        _log("a", "on_enter_a_ask")

    def on_exit_a_ask(self, event_data: EventData) -> None:
        _log("a", "on_exit_a_ask")
        self.model.a_text = _text(event_data)

    def on_enter_a_call(self) -> None:
        _log("a", "on_enter_a_call")

    def on_exit_a_call(self) -> None:
        _log("a", "on_exit_a_call")

    def on_enter_a_after(self) -> None:
        _log("a", "on_enter_a_after")

    def on_exit_a_after(self) -> None:
        _log("a", "on_exit_a_after")

    def on_enter_a_end(self) -> None:
        _log("a", "on_enter_a_end")

    def on_user_input(self) -> None:
        _log("a", "on_user_input")

    def on_b_done(self) -> None:
        _log("a", "on_b_done")


class NestAModel(GenieModel):
    a_in: str = ""
    a_text: str = ""
    a_result: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NestAMachine


class NestRootMachine(GenieStateMachine):
    r_ask = State(initial=True)
    r_call = State()
    r_after = State()
    r_end = State(final=True)

    user_input = r_ask.to(r_call, cond="c_root") | r_after.to(r_end, cond="c_root")
    a_done = r_call.to(r_after, cond="c_root")

    templates = dict(
        r_ask="ui/r_ask.jinja2",
        r_call=SubFlow(NestAModel, name="a", inputs={"a_in": "r_text"}, outputs={"r_result": "a_result"}),
        r_after="ui/r_after.jinja2",
        r_end="ui/r_end.jinja2",
    )
    interruptions = [Interruption(HelpModel, event="help")]

    def c_root(self) -> bool:
        _log("root", "c_root")
        return True

    def on_enter_r_ask(self) -> None:
        _log("root", "on_enter_r_ask")

    def on_exit_r_ask(self, event_data: EventData) -> None:
        _log("root", "on_exit_r_ask")
        self.model.r_text = _text(event_data)

    def on_enter_r_call(self) -> None:
        _log("root", "on_enter_r_call")

    def on_exit_r_call(self) -> None:
        _log("root", "on_exit_r_call")

    def on_enter_r_after(self) -> None:
        _log("root", "on_enter_r_after")

    def on_exit_r_after(self) -> None:
        _log("root", "on_exit_r_after")

    def on_enter_r_end(self) -> None:
        _log("root", "on_enter_r_end")

    def on_user_input(self) -> None:
        _log("root", "on_user_input")

    def on_a_done(self) -> None:
        _log("root", "on_a_done")


class NestRootModel(GenieModel):
    r_text: str = ""
    r_result: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return NestRootMachine


# ---- interruptions of the session's own flow --------------------------------------------------
class IntRootMachine(GenieStateMachine):
    main = State(initial=True)
    finished = State(final=True)

    user_input = main.to(finished, cond="says_bye") | main.to.itself()

    templates = dict(main="ui/main.jinja2", finished="ui/main_bye.jinja2")
    interruptions = [
        Interruption(HelpModel, event="help"),
        Interruption(SumModel, when=asks_so_far, inputs=["items"]),
        Interruption(TotalModel, when=asks_total, inputs=["items"]),
        Interruption(AsyncAckModel, when=mentions_async),
        Interruption(QuietModel, event="quiet"),
        Interruption(NoteModel, event="note", inputs={"topic": "topic"}, outputs={"note": "text"}),
    ]

    def says_bye(self, event_data: EventData) -> bool:
        return _text(event_data) == "bye"

    def on_user_input(self, event_data: EventData, source: State, target: State) -> None:
        if source.id == "main" and target.id == "main":
            self.model.items.append(_text(event_data))


class IntRootModel(GenieModel):
    items: list[str] = []
    topic: str = "general"
    note: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return IntRootMachine


class EchoRootMachine(GenieStateMachine):
    """A Genie Flow-style state whose template shows ``actor_input``, interrupted and resumed."""

    listening = State(initial=True)
    echoing = State()

    user_input = listening.to(echoing) | echoing.to.itself()

    templates = dict(listening="ui/listening.jinja2", echoing="ui/echoing.jinja2")
    interruptions = [Interruption(HelpModel, event="help")]


class EchoRootModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return EchoRootMachine


# ---- aborts -------------------------------------------------------------------------------------
class CancelMachine(GenieStateMachine):
    c_ask = State(initial=True)
    c_yes = State(final=True)
    c_no = State(final=True)

    user_input = c_ask.to(c_yes, cond="agrees") | c_ask.to(c_no)

    abort_states = {"c_yes"}
    interruptible = False
    templates = dict(c_ask="ui/c_ask.jinja2", c_yes="ui/c_yes.jinja2", c_no="ui/c_no.jinja2")

    def agrees(self, event_data: EventData) -> bool:
        return _text(event_data) == "yes"

    def on_exit_c_ask(self, event_data: EventData) -> None:
        self.model.flag = _text(event_data)


class CancelModel(GenieModel):
    flag: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CancelMachine


class SoftCancelModel(CancelModel): ...


class LeafMachine(GenieStateMachine):
    l_ask = State(initial=True)
    l_end = State(final=True)

    user_input = l_ask.to(l_end)

    templates = dict(l_ask="ui/l_ask.jinja2", l_end="ui/l_end.jinja2")


class LeafModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return LeafMachine


class MidMachine(GenieStateMachine):
    m_start = State(initial=True)
    m_call = State()
    m_end = State(final=True)
    m_quit = State(final=True)

    user_input = m_start.to(m_quit, cond="says_quit") | m_start.to(m_call)
    leaf_done = m_call.to(m_end)

    abort_states = {"m_quit"}
    templates = dict(
        m_start="ui/m_start.jinja2",
        m_call=SubFlow(LeafModel),  # no on_abort: when the leaf aborts, this flow aborts too
        m_end="ui/m_end.jinja2",
        m_quit="ui/m_quit.jinja2",
    )

    def says_quit(self, event_data: EventData) -> bool:
        return _text(event_data) == "quit"


class MidModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return MidMachine


class AbortRootMachine(GenieStateMachine):
    r_start = State(initial=True)
    r_call = State()
    r_ok = State()
    r_aborted = State()

    user_input = r_start.to(r_call) | r_ok.to(r_start) | r_aborted.to(r_start)
    mid_done = r_call.to(r_ok)
    mid_aborted = r_call.to(r_aborted)

    templates = dict(
        r_start="ui/ab_start.jinja2",
        r_call=SubFlow(MidModel, on_complete="mid_done", on_abort="mid_aborted"),
        r_ok="ui/ab_ok.jinja2",
        r_aborted="ui/ab_aborted.jinja2",
    )
    interruptions = [
        Interruption(CancelModel, event="cancel"),
        Interruption(SoftCancelModel, event="soft", on_abort="resume", outputs={"r_flag": "flag"}),
    ]


class AbortRootModel(GenieModel):
    r_flag: str = "unset"

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return AbortRootMachine


class AbortStrictMachine(GenieStateMachine):
    s_start = State(initial=True)
    s_call = State()
    s_ok = State()

    user_input = s_start.to(s_call) | s_ok.to(s_start)
    mid_done = s_call.to(s_ok)

    templates = dict(s_start="ui/s_start.jinja2", s_call=SubFlow(MidModel), s_ok="ui/s_ok.jinja2")
    interruptions = [Interruption(CancelModel, event="cancel")]


class AbortStrictModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return AbortStrictMachine


# ---- priorities -----------------------------------------------------------------------------------
class InnerMachine(GenieStateMachine):
    i_ask = State(initial=True)
    i_done = State(final=True)

    user_input = i_ask.to(i_done, cond="says_leave") | i_ask.to.itself()

    templates = dict(i_ask="ui/i_ask.jinja2", i_done="ui/i_done.jinja2")
    interruptions = [
        Interruption(EtaModel, when=has_y),  # ties with the session's own gamma and delta: those come first
        Interruption(ThetaModel, when=has_x, priority=5),  # beats the session's alpha and beta
    ]

    def says_leave(self, event_data: EventData) -> bool:
        return _text(event_data) == "leave"


class InnerModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return InnerMachine


class PrioRootMachine(GenieStateMachine):
    main = State(initial=True)
    calling = State()

    user_input = main.to(calling, cond="says_inner") | main.to.itself()
    inner_done = calling.to(main)

    templates = dict(main="ui/prio_main.jinja2", calling=SubFlow(InnerModel))
    interruptions = [
        Interruption(AlphaModel, when=has_x, priority=1),
        Interruption(BetaModel, when=has_x, priority=2),  # declared later, higher priority: wins on "x"
        Interruption(GammaModel, when=has_y),  # equal priority: declared first, wins on "y"
        Interruption(DeltaModel, when=has_y),
        Interruption(EpsilonModel, event="ping"),
        Interruption(ZetaModel, when=has_z, priority=3),  # beats the "ping" event when the text has "z"
        Interruption(HelpModel, event="help"),
    ]

    def says_inner(self, event_data: EventData) -> bool:
        return _text(event_data) == "inner"


class PrioRootModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PrioRootMachine


# ---- where interruptions may not fire ------------------------------------------------------------
class LockedMachine(GenieStateMachine):
    asking = State(initial=True)
    released = State(final=True)

    user_input = asking.to(released, cond="says_release")

    interruptible = False
    templates = dict(asking="ui/locked.jinja2", released="ui/released.jinja2")

    def says_release(self, event_data: EventData) -> bool:
        return _text(event_data) == "release"


class LockedModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return LockedMachine


class GuardRootMachine(GenieStateMachine):
    opened = State(initial=True)
    closed = State()
    calling = State()

    user_input = (
        opened.to(closed, cond="says_close")
        | opened.to(calling, cond="says_lock")
        | opened.to.itself()
        | closed.to(opened, cond="says_open")
        | closed.to.itself()
    )
    locked_done = calling.to(opened)

    interruptible = {"opened"}
    templates = dict(opened="ui/opened.jinja2", closed="ui/closed.jinja2", calling=SubFlow(LockedModel))
    interruptions = [Interruption(HelpModel, event="help"), Interruption(AlphaModel, when=has_x)]

    def says_close(self, event_data: EventData) -> bool:
        return _text(event_data) == "close"

    def says_open(self, event_data: EventData) -> bool:
        return _text(event_data) == "open"

    def says_lock(self, event_data: EventData) -> bool:
        return _text(event_data) == "lock"


class GuardRootModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return GuardRootMachine


# ---- an interruption declared below the flow it interrupts -----------------------------------------
class DeclBMachine(GenieStateMachine):
    db_ask = State(initial=True)
    db_end = State(final=True)

    user_input = db_ask.to(db_end)

    templates = dict(db_ask="ui/db_ask.jinja2", db_end="ui/db_end.jinja2")


class DeclBModel(GenieModel):
    a_topic: str = "b's own topic"  # same names as the declaring flow's fields: must stay untouched
    a_note: str = "untouched"

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DeclBMachine


class DeclAMachine(GenieStateMachine):
    da_start = State(initial=True)
    da_call = State()
    da_after = State()
    da_end = State(final=True)

    user_input = da_start.to(da_call) | da_after.to(da_end)
    b_done = da_call.to(da_after)

    templates = dict(
        da_start="ui/da_start.jinja2",
        da_call=SubFlow(DeclBModel, name="decl_b"),
        da_after="ui/da_after.jinja2",
        da_end="ui/da_end.jinja2",
    )
    interruptions = [Interruption(NoteModel, event="note", inputs={"topic": "a_topic"}, outputs={"a_note": "text"})]


class DeclAModel(GenieModel):
    a_topic: str = "shipping"
    a_note: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DeclAMachine


class DeclRootMachine(GenieStateMachine):
    d_start = State(initial=True)
    d_call = State()
    d_after = State(final=True)

    user_input = d_start.to(d_call)
    a_done = d_call.to(d_after)

    templates = dict(
        d_start="ui/d_start.jinja2", d_call=SubFlow(DeclAModel, name="decl_a"), d_after="ui/d_after.jinja2"
    )


class DeclRootModel(GenieModel):
    a_note: str = "root's own"  # not the declaring flow either

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DeclRootMachine


# ---- a sub-flow looping many times (the history's bound) ----------------------------------------------
class LoopChildMachine(GenieStateMachine):
    looping = State(initial=True)
    stopped = State(final=True)

    user_input = looping.to(stopped, cond="says_stop") | looping.to.itself()

    templates = dict(looping="ui/looping.jinja2", stopped="ui/stopped.jinja2")

    def says_stop(self, event_data: EventData) -> bool:
        return _text(event_data) == "stop"

    def on_user_input(self) -> None:
        self.model.rounds += 1


class LoopChildModel(GenieModel):
    rounds: int = 0

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return LoopChildMachine


class LoopRootMachine(GenieStateMachine):
    start = State(initial=True)
    calling = State()

    user_input = start.to(calling)
    loop_done = calling.to(start)

    templates = dict(start="ui/loop_start.jinja2", calling=SubFlow(LoopChildModel))
    interruptions = [Interruption(HelpModel, event="help")]


class LoopRootModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return LoopRootMachine


class BoundedLoopRootModel(LoopRootModel):
    history_limit: ClassVar[int] = 10


# ---- intents ------------------------------------------------------------------------------------------
class IntentRootMachine(GenieStateMachine):
    main = State(initial=True)

    user_input = main.to.itself()

    templates = dict(main="ui/intent_main.jinja2")
    intent_classifier = "classify/intent.jinja2"
    interruptions = [
        Interruption(HelpIntentModel, intent="help"),
        Interruption(BillingModel, intent="Billing"),
        Interruption(UrgentModel, event="urgent", priority=5),
        Interruption(AlphaModel, when=has_x, priority=5),
    ]

    def on_user_input(self, event_data: EventData) -> None:
        self.model.said.append(_text(event_data))


class IntentRootModel(GenieModel):
    said: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return IntentRootMachine


# ---- a sub-flow whose first state is an invoker state; two sub-flows in a row ------------------------
class CountMachine(GenieStateMachine):
    counting = State(initial=True)
    counted = State(final=True)

    ai_extraction = counting.to(counted)

    templates = dict(counting="llm/count.jinja2", counted="ui/counted.jinja2")

    def on_exit_counting(self, event_data: EventData) -> None:
        self.model.summary = _text(event_data)


class CountModel(GenieModel):
    items: list[str] = []
    summary: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CountMachine


class CountCallerMachine(GenieStateMachine):
    start = State(initial=True)
    calling = State()
    shown = State()

    user_input = start.to(calling) | shown.to(start)
    summed = calling.to(shown)

    templates = dict(
        start="ui/plain.jinja2",
        calling=SubFlow(CountModel, inputs=["items"], outputs=["summary"]),
        shown="ui/shown.jinja2",
    )

    def on_exit_start(self, event_data: EventData) -> None:
        self.model.items = _text(event_data).split(",")


class CountCallerModel(GenieModel):
    items: list[str] = []
    summary: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CountCallerMachine


class ChainMachine(GenieStateMachine):
    start = State(initial=True)
    first = State()
    second = State()
    shown = State()

    user_input = start.to(first) | shown.to(start)
    first_done = first.to(second)
    second_done = second.to(shown)

    templates = dict(
        start="ui/chain_start.jinja2",
        # the same flow twice, under two names; the second gets what the first gave back
        first=SubFlow(ChildModel, inputs={"who": "customer"}, outputs={"customer": "answer"}, name="first"),
        second=SubFlow(ChildModel, inputs={"who": "customer"}, outputs={"final": "answer"}, name="second"),
        shown="ui/chain_shown.jinja2",
    )

    def on_exit_start(self, event_data: EventData) -> None:
        self.model.customer = _text(event_data)


class ChainModel(GenieModel):
    customer: str = ""
    final: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ChainMachine


# ---- an interrupting flow that calls a sub-flow of its own ---------------------------------------------
class DetourMachine(GenieStateMachine):
    detour_ask = State(initial=True)
    detour_call = State()
    detour_end = State(final=True)

    user_input = detour_ask.to(detour_call)
    leaf_done = detour_call.to(detour_end)

    templates = dict(
        detour_ask="ui/detour_ask.jinja2", detour_call=SubFlow(LeafModel), detour_end="ui/detour_end.jinja2"
    )

    def on_exit_detour_ask(self, event_data: EventData) -> None:
        self.model.items.append(_text(event_data))


class DetourModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DetourMachine


class DetourRootMachine(GenieStateMachine):
    main = State(initial=True)

    user_input = main.to.itself()

    templates = dict(main="ui/main.jinja2")
    interruptions = [Interruption(DetourModel, event="detour", inputs=["items"], outputs=["items"])]

    def on_user_input(self, event_data: EventData) -> None:
        self.model.items.append(_text(event_data))


class DetourRootModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return DetourRootMachine


# ---- one flow declared twice as an interruption, with different options --------------------------------
class TwinRootMachine(GenieStateMachine):
    main = State(initial=True)

    user_input = main.to.itself()

    templates = dict(main="ui/main.jinja2")
    interruptions = [
        Interruption(CancelModel, event="cancel"),  # aborting it aborts the session's flow
        Interruption(CancelModel, event="soft", on_abort="resume", outputs=["flag"]),  # the same flow, resumable
    ]


class TwinRootModel(GenieModel):
    items: list[str] = []
    flag: str = "unset"

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return TwinRootMachine


def explodes(text: str) -> bool:
    if text == "boom":
        raise ValueError("condition exploded")
    return False


class BoomRootMachine(GenieStateMachine):
    main = State(initial=True)

    user_input = main.to.itself()

    templates = dict(main="ui/main.jinja2")
    interruptions = [Interruption(HelpModel, when=explodes)]

    def on_user_input(self, event_data: EventData) -> None:
        self.model.items.append(_text(event_data))


class BoomRootModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return BoomRootMachine


class ShortMemoryChildModel(LoopChildModel):
    history_limit: ClassVar[int] = 3  # the sub-flow's own model class: not the session's bound


class ShortMemoryRootMachine(GenieStateMachine):
    start = State(initial=True)
    calling = State()

    user_input = start.to(calling)
    loop_done = calling.to(start)

    templates = dict(start="ui/loop_start.jinja2", calling=SubFlow(ShortMemoryChildModel, name="loop_child"))


class ShortMemoryRootModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ShortMemoryRootMachine
