"""The shop flow of the approval tests, servable by ``genie-graph serve --flow tests.approval_flows:flow``.

Its templates are written by the test into the directory ``$GENIE_GRAPH_TEST_SHOP_TEMPLATES``.
"""

from __future__ import annotations

import os

from genie_graph import GenieFlow, GenieModel, GenieStateMachine, State

KEY = "shop"


class ShopMachine(GenieStateMachine):
    ask = State(initial=True)
    think = State()

    user_input = ask.to(think)
    ai_extraction = think.to(ask)

    templates = dict(ask="shop/ask.jinja2", think="shop/llm/think.jinja2")


class ShopModel(GenieModel):
    @classmethod
    def get_state_machine_class(cls) -> type[GenieStateMachine]:
        return ShopMachine


def build() -> GenieFlow:
    flow = GenieFlow(template_root=os.environ["GENIE_GRAPH_TEST_SHOP_TEMPLATES"])
    flow.register_model(KEY, ShopModel)
    return flow


flow = build() if "GENIE_GRAPH_TEST_SHOP_TEMPLATES" in os.environ else None
