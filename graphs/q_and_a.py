"""Q and A: the plain question-and-answer flow of the Genie Flow README."""

from statemachine import State

from genie_graph import GenieModel, GenieStateMachine


class QandAMachine(GenieStateMachine):
    """intro -> ai_creates_response -> user_enters_query -> ai_creates_response -> ..."""

    # STATES
    intro = State(initial=True, value=0)
    user_enters_query = State(value=100)
    ai_creates_response = State(value=200)

    # EVENTS AND TRANSITIONS
    user_input = intro.to(ai_creates_response) | user_enters_query.to(ai_creates_response)
    ai_extraction = ai_creates_response.to(user_enters_query)

    # TEMPLATES
    templates = dict(
        intro="q_and_a/intro.jinja2",
        user_enters_query="q_and_a/user_enters_query.jinja2",
        ai_creates_response="q_and_a/llm/ai_creates_response.jinja2",
    )


class QandAModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return QandAMachine
