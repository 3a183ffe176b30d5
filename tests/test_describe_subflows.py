"""The flow description route of a flow that runs other flows (``graphs/ordering.py``), over HTTP.

It lists every node of the session graph with its flow and kind, the flows the session can run with
their interruptions, and the sub-flow states; a plain flow's description keeps what it always said.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from api import create_app
from api._describe import Diagrams, FlowDescription, session_highlight
from genie_graph import EventInput, GenieFlow
from genie_graph._diagram import HIGHLIGHT, WAITING
from graphs import create_flow


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[GenieFlow, TestClient]]:
    flow = create_flow("memory://")
    try:
        yield flow, TestClient(create_app(flow))
    finally:
        flow.close()


def _described(client: TestClient, model_key: str) -> dict[str, Any]:
    answer = client.get(f"/v1/ai/{model_key}/flow")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_every_node_of_the_session_graph_is_described(served: tuple[GenieFlow, TestClient]) -> None:
    flow, client = served
    described = _described(client, "ordering")
    compiled = flow.flow_of("ordering")
    nodes = {node["id"]: node for node in described["nodes"]}
    assert list(nodes) == list(compiled.nodes)
    assert described["flow"] == "order" and described["initial"] == "taking_order"
    assert nodes["address/asking_city"] == {
        "id": "address/asking_city",
        "name": "Asking city",
        "value": "asking_city",
        "kind": "user",
        "initial": False,
        "final": False,
        "template": "ordering/asking_city.jinja2",
        "events": ["user_input"],
        "completion_event": None,
        "flow": "address",
        "state": "asking_city",
        "calls": None,
        "aborts": False,
    }
    getting_address = nodes["getting_address"]
    assert (getting_address["kind"], getting_address["calls"], getting_address["flow"]) == (
        "subflow",
        "address",
        "order",
    )
    assert getting_address["template"] == {"subflow": "address"}
    assert nodes["address/checking"]["calls"] == "confirm"
    assert nodes["order_summary/summarising"]["kind"] == "invoker"
    assert nodes["order_summary/summarising"]["completion_event"] == "ai_extraction"
    assert nodes["cancel_order/cancelled"]["aborts"] and nodes["cancel_order/cancelled"]["final"]
    assert nodes["confirm/asking"]["initial"] and not nodes["taking_order"]["final"]

    # the flow's own states, transitions and initial state are what they were, sub-flow states now "subflow"
    assert [state["id"] for state in described["states"]] == ["taking_order", "getting_address", "confirming", "placed"]
    assert described["states"][1]["kind"] == "subflow" and "flow" not in described["states"][1]
    assert all("/" not in item["source"] + item["target"] for item in described["transitions"])
    transitions = described["node_transitions"]
    assert {"source": "address/checking", "target": "address/delivered", "label": "checked [confirmed]"} in transitions
    assert len(transitions) == sum(
        len(labels)
        for owner in [compiled, *compiled.children.values()]
        for per in owner.targets.values()
        for labels in per.values()
    )
    assert "cancel" in described["events"] and "checked" in described["events"]  # triggers too: "send any event"


def test_the_flows_a_session_can_run_and_how_they_are_linked(served: tuple[GenieFlow, TestClient]) -> None:
    _, client = served
    described = _described(client, "ordering")
    children = {child["name"]: child for child in described["children"]}
    assert set(children) == {"address", "confirm", "cancel_order", "order_summary", "shop_help"}
    assert children["address"] == {
        "name": "address",
        "machine": "graphs.ordering.AddressMachine",
        "model": "graphs.ordering.AddressModel",
        "initial": "address/asking_street",
        "finals": ["address/delivered", "address/skipped"],
        "abort_states": [],
        "interruptible": True,
        "interruptions": [],
    }
    assert children["cancel_order"]["abort_states"] == ["cancel_order/cancelled"]
    assert children["cancel_order"]["interruptible"] is False
    assert [(item["flow"], item["trigger"], item["priority"]) for item in described["interruptions"]] == [
        ("cancel_order", "event 'cancel'", 3),
        ("order_summary", "condition asks_what_so_far", 2),
        ("shop_help", "intent 'help'", 1),
    ]
    cancel, summary, helping = described["interruptions"]
    assert (cancel["event"], cancel["intent"], cancel["condition"], cancel["on_abort"]) == (
        "cancel",
        None,
        None,
        "abort",
    )
    assert summary["condition"] == "asks_what_so_far" and helping["intent"] == "help"
    assert described["subflows"] == [
        {
            "node": "getting_address",
            "flow": "address",
            "on_complete": "address_done",
            "on_abort": None,
            "inputs": {"customer": "customer"},
            "outputs": {"address": "address"},
        },
        {
            "node": "address/checking",
            "flow": "confirm",
            "on_complete": "checked",
            "on_abort": None,
            "inputs": {"question": "address"},
            "outputs": {"confirmed": "yes"},
        },
    ]
    schema = FlowDescription.model_json_schema(mode="serialization")["$defs"]  # what /openapi.json documents
    assert {"NodeInfo", "ChildFlowInfo", "InterruptionInfo", "SubFlowInfo"} <= set(schema)


def test_a_plain_flow_is_described_as_before(served: tuple[GenieFlow, TestClient]) -> None:
    _, client = served
    described = _described(client, "q_and_a_capture")
    assert (described["children"], described["interruptions"], described["subflows"]) == ([], [], [])
    assert described["node_transitions"] == described["transitions"]
    own = {"id", "name", "value", "kind", "initial", "final", "template", "events", "completion_event"}
    assert [{key: node[key] for key in own} for node in described["nodes"]] == described["states"]
    assert {node["flow"] for node in described["nodes"]} == {described["flow"]}
    assert described["events"] == ["user_input", "ai_extraction"]


def test_a_diagram_marks_the_sessions_node_and_the_flows_it_waits_for(served: tuple[GenieFlow, TestClient]) -> None:
    flow, client = served
    session_id = client.post("/v1/ai/ordering/start_session").json()["session_id"]
    for text in ("tea", "done", "Main Street 1", "Springfield"):
        flow.process_event("ordering", EventInput(session_id=session_id, event="user_input", event_input=text))
        flow.wait_until_ready(session_id)
    compiled = flow.flow_of("ordering")
    model = flow.get_model("ordering", session_id)
    current, waiting = session_highlight(compiled, model)
    assert (current, waiting) == ("confirm/asking", ("getting_address", "address/checking"))
    diagrams = Diagrams()
    dot = anyio.run(diagrams.get, "ordering", compiled, current, "dot", waiting).decode()
    assert f'fillcolor="{HIGHLIGHT}"' in next(line for line in dot.splitlines() if '"confirm/asking" [' in line)
    assert dot.count(f'color="{WAITING}"') == 2
    plain = anyio.run(diagrams.get, "ordering", compiled, current, "dot").decode()  # kept apart from the above
    assert WAITING not in plain and HIGHLIGHT in plain

    model.state = "no_such_state"  # a session kept on an older version of the flow
    model.flows.frames.clear()
    assert session_highlight(compiled, model) == (None, ())
    described = json.loads(
        client.get(f"/v1/ai/ordering/model/{session_id}", params={"path": "flows"}).json()["response"]
    )
    assert [frame["caller"] for frame in described["frames"]] == list(waiting)  # what the playground reads
