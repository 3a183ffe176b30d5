"""Q and A with data capture: an LLM extracts the user's name; UNDEFINED asks again."""

from pydantic import Field
from statemachine import State

from genie_graph import EventData, GenieModel, GenieStateMachine


class QandACaptureMachine(GenieStateMachine):
    # STATES
    intro = State(initial=True, value=0)
    ai_extracts_name = State(value=100)
    need_to_retry = State(value=200)
    welcome_message = State(value=300)
    ai_creates_response = State(value=400)
    user_enters_query = State(value=500)

    # EVENTS AND TRANSITIONS
    user_input = (
        intro.to(ai_extracts_name)
        | need_to_retry.to(ai_extracts_name)
        | welcome_message.to(ai_creates_response)
        | user_enters_query.to(ai_creates_response)
    )
    ai_extraction = (
        ai_extracts_name.to(welcome_message, cond="name_is_defined")
        | ai_extracts_name.to(need_to_retry, unless="name_is_defined")
        | ai_creates_response.to(user_enters_query)
    )

    # TEMPLATES
    templates = dict(
        intro="q_and_a_capture/intro.jinja2",
        ai_extracts_name="q_and_a_capture/llm/ai_extracts_name.jinja2",
        need_to_retry="q_and_a_capture/need_to_retry.jinja2",
        welcome_message="q_and_a_capture/welcome_message.jinja2",
        ai_creates_response="q_and_a_capture/llm/ai_creates_response.jinja2",
        user_enters_query="q_and_a_capture/user_enters_query.jinja2",
    )

    # CONDITIONS
    def name_is_defined(self, event_data: EventData) -> bool:
        return event_data.args is not None and len(event_data.args) != 0 and event_data.args[0] != "UNDEFINED"

    # ACTIONS
    def on_exit_ai_extracts_name(self) -> None:
        self.model.user_name = self.model.actor_input


class QandACaptureModel(GenieModel):
    user_name: str | None = Field(None, description="The name of the user")

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return QandACaptureMachine
