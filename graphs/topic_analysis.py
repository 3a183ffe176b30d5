"""Topic analysis: parallel and map templates in one invoker state.

The user names a topic and its aspects ("electric cars: range, price, charging"). The
``analyse`` state runs a chain: first, in parallel, an overview of the topic and one
assessment per aspect (a ``MapTaskTemplate`` over the ``aspects`` field); then a layout step
that turns that JSON into the report the user sees.
"""

from pydantic import Field
from statemachine import State

from genie_graph import EventData, GenieModel, GenieStateMachine, MapTaskTemplate

DEFAULT_ASPECTS = ["benefits", "drawbacks"]


class TopicAnalysisMachine(GenieStateMachine):
    intro = State(initial=True, value="intro")
    analyse = State(value="analyse")
    report = State(value="report")
    outro = State(final=True, value="outro")

    user_input = intro.to(analyse) | report.to(outro, cond="user_says_stop") | report.to(analyse)
    ai_extraction = analyse.to(report)

    templates = dict(
        intro="topic_analysis/intro.jinja2",
        analyse=[
            {
                "overview": "topic_analysis/llm/overview.jinja2",
                "aspects": MapTaskTemplate("topic_analysis/llm/aspect.jinja2", "aspects"),
            },
            "topic_analysis/compose/report.jinja2",
        ],
        report="topic_analysis/report.jinja2",
        outro="topic_analysis/outro.jinja2",
    )

    def user_says_stop(self, event_data: EventData) -> bool:
        return bool(event_data.args) and event_data.args[0].strip() == "*STOP*"

    def _capture_topic(self) -> None:
        text = (self.model.actor_input or "").strip()
        topic, _, aspects = text.partition(":")
        self.model.topic = topic.strip() or text
        self.model.aspects = [a.strip() for a in aspects.split(",") if a.strip()] or list(DEFAULT_ASPECTS)

    def on_exit_intro(self) -> None:
        self._capture_topic()

    def on_exit_report(self, event_data: EventData) -> None:
        if not self.user_says_stop(event_data):
            self._capture_topic()

    def on_exit_analyse(self) -> None:
        self.model.analyses.append(self.model.actor_input or "")


class TopicAnalysisModel(GenieModel):
    topic: str | None = Field(None, description="What the user asked to analyse")
    aspects: list[str] = Field(default_factory=list, description="The aspects to assess, one parallel task each")
    analyses: list[str] = Field(default_factory=list, description="The reports written so far")

    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return TopicAnalysisMachine
