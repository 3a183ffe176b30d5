"""The benchmark flows of ../shared/peers/genie-flow/qa_flow.py, ported by changing one import.

QandAModel / QandAMachine: intro (user) --user_input--> ai_creates_response (invoker)
    --ai_extraction--> user_enters_query (user) --user_input--> ai_creates_response
PingPongModel / PingPongMachine: two user states only (a user-state -> user-state transition).
SlowQandAModel: the Q&A flow whose invoker sleeps 1.5 s.
"""

from statemachine import State

from genie_graph import GenieModel, GenieStateMachine  # was: from genie_flow.genie import ...


class QandAMachine(GenieStateMachine):
    # STATES
    intro = State(initial=True, value=100)
    ai_creates_response = State(value=200)
    user_enters_query = State(value=300)

    # EVENTS & TRANSITIONS
    user_input = intro.to(ai_creates_response) | user_enters_query.to(ai_creates_response)
    ai_extraction = ai_creates_response.to(user_enters_query)

    # TEMPLATES (prefix = template directory name registered below)
    templates = dict(
        intro="response/intro.jinja2",
        ai_creates_response="llm/ai_creates_response.jinja2",
        user_enters_query="response/user_enters_query.jinja2",
    )


class QandAModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return QandAMachine


class PingPongMachine(GenieStateMachine):
    intro = State(initial=True, value=100)
    page_a = State(value=200)
    page_b = State(value=300)

    user_input = intro.to(page_a) | page_a.to(page_b) | page_b.to(page_a)

    templates = dict(
        intro="response/intro.jinja2",
        page_a="response/page_a.jinja2",
        page_b="response/page_b.jinja2",
    )


class PingPongModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return PingPongMachine


class SlowQandAMachine(QandAMachine):
    """Same flow; the invoker state uses the 1.5 s SleepInvoker (invokers.py)."""

    templates = dict(
        QandAMachine.templates,
        ai_creates_response="slow/ai_creates_response.jinja2",
    )


class SlowQandAModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return SlowQandAMachine
