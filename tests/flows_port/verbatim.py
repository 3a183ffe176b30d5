"""Stand-in for ``genie_flow_invoker.invoker.verbatim.VerbatimInvoker`` (not installed here).

It is written as a Genie Flow invoker would be, importing the base class from genie_graph
(the analogue of ``from genie_flow_invoker import GenieInvoker``).
"""

from genie_graph import GenieInvoker


class VerbatimInvoker(GenieInvoker):
    """Answers the rendered template unchanged."""

    @classmethod
    def from_config(cls, config: dict):
        return cls()

    def invoke(self, content: str) -> str:
        return content
