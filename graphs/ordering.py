"""Ordering in a web shop: sub-flows three deep, and interruptions the user can trigger at any time.

* ``OrderModel`` takes items one at a time until the user says "done", then runs the address
  flow as a sub-flow (``SubFlow``), which itself runs a yes/no confirmation flow: three flows deep.
* While ordering, the user can interrupt: "cancel" (an event) asks whether to cancel the whole
  order and aborts it on "yes"; "what did I order so far?" (a condition on the text) has an LLM
  sum up the order; a request for help (an intent, classified by an LLM) explains the shop. When
  the interrupting flow completes, the interrupted one resumes and asks its question again.
* ``confirming`` may not be interrupted: there, "cancel" is refused and "no" goes back to ordering.
  Cancelling while the address is asked aborts the address flow, and with it the order (its
  ``SubFlow`` declares no ``on_abort``); "skip" completes the address flow without an address.
"""

from __future__ import annotations

from statemachine import State

from genie_graph import EventData, GenieModel, GenieStateMachine, Interruption, SubFlow


def _said(event_data: EventData, *words: str) -> bool:
    text = str(event_data.args[0]) if event_data.args else ""
    return text.strip().strip(".!").lower() in words


# ---- a yes/no question, reusable by any flow -------------------------------------------------
class ConfirmMachine(GenieStateMachine):
    asking = State(initial=True)
    answered = State(final=True)

    user_input = asking.to(answered)

    templates = dict(asking="ordering/confirm_asking.jinja2", answered="ordering/confirm_answered.jinja2")

    def on_exit_asking(self, event_data: EventData) -> None:
        self.model.yes = _said(event_data, "yes", "y", "yes please", "correct", "right")


class ConfirmModel(GenieModel):
    question: str = ""
    yes: bool = False

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ConfirmMachine


# ---- the delivery address: a sub-flow that runs the confirmation as its own sub-flow -----------
class AddressMachine(GenieStateMachine):
    asking_street = State(initial=True)
    asking_city = State()
    checking = State()
    delivered = State(final=True)
    skipped = State(final=True)

    user_input = (
        asking_street.to(skipped, cond="wants_to_skip") | asking_street.to(asking_city) | asking_city.to(checking)
    )
    checked = checking.to(delivered, cond="confirmed") | checking.to(asking_street)

    templates = dict(
        asking_street="ordering/asking_street.jinja2",
        asking_city="ordering/asking_city.jinja2",
        checking=SubFlow(ConfirmModel, inputs={"question": "address"}, outputs={"confirmed": "yes"}),
        delivered="ordering/delivered.jinja2",
        skipped="ordering/skipped.jinja2",
    )

    def wants_to_skip(self, event_data: EventData) -> bool:
        return _said(event_data, "skip")

    def confirmed(self) -> bool:
        return self.model.confirmed

    def on_exit_asking_street(self, event_data: EventData) -> None:
        self.model.street = str(event_data.args[0]).strip()

    def on_exit_asking_city(self, event_data: EventData) -> None:
        self.model.city = str(event_data.args[0]).strip()
        self.model.address = f"{self.model.street}, {self.model.city}"


class AddressModel(GenieModel):
    customer: str = ""
    street: str = ""
    city: str = ""
    address: str = ""
    confirmed: bool = False

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return AddressMachine


# ---- the interrupting flows ---------------------------------------------------------------------
class CancelOrderMachine(GenieStateMachine):
    asking = State(initial=True)
    cancelled = State(final=True)
    kept = State(final=True)

    user_input = asking.to(cancelled, cond="agrees") | asking.to(kept)

    abort_states = {"cancelled"}  # aborting this flow aborts the order it interrupted
    interruptible = False
    templates = dict(
        asking="ordering/cancel_asking.jinja2",
        cancelled="ordering/cancelled.jinja2",
        kept="ordering/kept.jinja2",
    )

    def agrees(self, event_data: EventData) -> bool:
        return _said(event_data, "yes", "y", "yes please")


class CancelOrderModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return CancelOrderMachine


class OrderSummaryMachine(GenieStateMachine):
    summarising = State(initial=True)  # an LLM answers the user's question about the order
    told = State(final=True)

    ai_extraction = summarising.to(told)

    templates = dict(summarising="ordering/llm/summarising.jinja2", told="ordering/summary_told.jinja2")


class OrderSummaryModel(GenieModel):
    items: list[str] = []

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return OrderSummaryMachine


class ShopHelpMachine(GenieStateMachine):
    helping = State(initial=True)
    helped = State(final=True)

    user_input = helping.to(helped)

    templates = dict(helping="ordering/helping.jinja2", helped="ordering/helped.jinja2")


class ShopHelpModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ShopHelpMachine


def asks_what_so_far(text: str) -> bool:
    """Whether the user asks what they ordered so far."""
    lowered = text.lower()
    return "so far" in lowered or "my order" in lowered


# ---- the order ----------------------------------------------------------------------------------
class OrderMachine(GenieStateMachine):
    taking_order = State(initial=True)
    getting_address = State()
    confirming = State()
    placed = State(final=True)

    user_input = (
        taking_order.to(getting_address, cond="is_done")
        | taking_order.to.itself()
        | confirming.to(placed, cond="agrees")
        | confirming.to(taking_order)
    )
    address_done = getting_address.to(confirming, cond="has_address") | getting_address.to(taking_order)

    templates = dict(
        taking_order="ordering/taking_order.jinja2",
        getting_address=SubFlow(AddressModel, inputs=["customer"], outputs=["address"], on_complete="address_done"),
        confirming="ordering/confirming.jinja2",
        placed="ordering/placed.jinja2",
    )

    interruptions = [
        Interruption(CancelOrderModel, event="cancel", priority=3, inputs=["items"]),
        Interruption(OrderSummaryModel, when=asks_what_so_far, priority=2, inputs=["items"]),
        Interruption(ShopHelpModel, intent="help", priority=1),
    ]
    intent_classifier = "ordering/llm/classify_intent.jinja2"
    interruptible = {"taking_order"}  # the final question is answered, not interrupted

    def is_done(self, event_data: EventData) -> bool:
        return _said(event_data, "done", "that's all", "that is all") and bool(self.model.items)

    def agrees(self, event_data: EventData) -> bool:
        return _said(event_data, "yes", "y", "yes please")

    def has_address(self) -> bool:
        return bool(self.model.address)

    def on_user_input(self, event_data: EventData, source: State, target: State) -> None:
        if source.id == "taking_order" and target.id == "taking_order":
            self.model.items.append(str(event_data.args[0]).strip())


class OrderModel(GenieModel):
    customer: str = ""
    items: list[str] = []
    address: str = ""

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return OrderMachine
