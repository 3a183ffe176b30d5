"""Team chat: a group session. Several people talk; the assistant answers what is meant for it.

Send the session's messages with ``GenieFlow.send_message(key, session, text, sender=...)`` (or
``POST /v1/ai/team_chat/group/{session}/messages``). The group reasoner
(``team_chat/llm/reasoner.jinja2``) lets through what is addressed to the assistant (it names
"genie" or asks a question) and ignores what people say to each other; the answer's prompt shows
who said what.
"""

from statemachine import State

from genie_graph import GenieModel, GenieStateMachine


class TeamChatMachine(GenieStateMachine):
    """listening -> answering -> listening -> ..."""

    # STATES
    listening = State(initial=True, value=0)
    answering = State(value=100)

    # EVENTS AND TRANSITIONS
    user_input = listening.to(answering)
    ai_extraction = answering.to(listening)

    # TEMPLATES
    templates = dict(
        listening="team_chat/listening.jinja2",
        answering="team_chat/llm/answer.jinja2",
    )
    group_reasoner = "team_chat/llm/reasoner.jinja2"


class TeamChatModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return TeamChatMachine
