"""Q and A with conditions: the user's ``*STOP*`` or the LLM's STOP ends the dialogue."""

from statemachine import State

from genie_graph import EventData, GenieModel, GenieStateMachine


class QandACondMachine(GenieStateMachine):
    # STATES
    intro = State(initial=True, value=0)
    user_enters_query = State(value=100)
    ai_creates_response = State(value=200)
    outro = State(final=True, value=300)

    # EVENTS AND TRANSITIONS
    user_input = (
        intro.to(ai_creates_response)
        | user_enters_query.to(ai_creates_response, unless="user_says_stop")
        | user_enters_query.to(outro, cond="user_says_stop")
    )
    ai_extraction = ai_creates_response.to(user_enters_query, unless="user_wants_to_quit") | ai_creates_response.to(
        outro, cond="user_wants_to_quit"
    )

    # TEMPLATES
    templates = dict(
        intro="q_and_a_cond/intro.jinja2",
        user_enters_query="q_and_a_cond/user_enters_query.jinja2",
        ai_creates_response="q_and_a_cond/llm/ai_creates_response.jinja2",
        outro="q_and_a_cond/outro.jinja2",
    )

    # CONDITIONS
    def user_says_stop(self, event_data: EventData) -> bool:
        return event_data.args is not None and len(event_data.args) != 0 and event_data.args[0] == "*STOP*"

    def user_wants_to_quit(self, event_data: EventData) -> bool:
        return event_data.args is not None and len(event_data.args) != 0 and "STOP" in event_data.args[0]


class QandACondModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return QandACondMachine
