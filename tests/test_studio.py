"""LangGraph Studio's server (``langgraph dev``) loads every example flow from ``langgraph.json``.

A real ``langgraph dev`` process on a free loopback port, driven through its HTTP API: the
assistants, each graph's nodes and labelled edges, the state schema, and a thread run to its
first interrupt, resumed with a user input, up to the next user state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import graphs
from tests.services import free_port, offline_env, terminate

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("q_and_a", "q_and_a_cond", "q_and_a_capture", "topic_analysis", "ordering", "team_chat")


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    place = tmp_path_factory.mktemp("studio")  # langgraph dev keeps its files in the working directory
    port = free_port()
    env = {
        **os.environ,
        **offline_env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--config", str(REPO / "langgraph.json")]
    command += ["--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    with open(place / "langgraph-dev.log", "wb") as log:
        process = subprocess.Popen(command, cwd=place, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"langgraph dev exited: {(place / 'langgraph-dev.log').read_text()[-3000:]}")
            try:
                if client.get("/ok").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not start within 90 s"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        terminate(process)


@pytest.fixture(scope="module")
def assistants(studio: httpx.Client) -> dict[str, str]:
    """graph id -> the id of the assistant ``langgraph dev`` made for it."""
    found = studio.post("/assistants/search", json={"limit": 100}).json()
    return {assistant["graph_id"]: assistant["assistant_id"] for assistant in found}


def test_langgraph_json_lists_every_example(assistants: dict[str, str]) -> None:
    config = json.loads((REPO / "langgraph.json").read_text())
    assert set(config["graphs"]) == set(graphs.MODELS) == set(EXAMPLES)
    assert set(EXAMPLES) <= set(assistants)


@pytest.mark.parametrize("model_key", EXAMPLES)
def test_each_graph_shows_its_states_and_labelled_transitions(
    studio: httpx.Client, assistants: dict[str, str], model_key: str
) -> None:
    compiled = graphs.flow.flow_of(model_key)
    drawn = studio.get(f"/assistants/{assistants[model_key]}/graph").json()
    nodes = {node["id"] for node in drawn["nodes"]} - {"__start__", "__end__"}
    assert nodes == set(compiled.nodes)  # sub-flows' and interruptions' states too, as <flow>/<state>
    edges = {(edge["source"], edge["target"], edge.get("data")) for edge in drawn["edges"]}
    for source, per_target in compiled.targets.items():
        for target, labels in per_target.items():
            assert (source, target, " | ".join(labels)) in edges, (source, target, labels)
    schema = studio.get(f"/assistants/{assistants[model_key]}/schemas").json()["state_schema"]
    assert {"session_id", "state", "dialogue", "actor_input"} <= set(schema["properties"])


def test_a_thread_runs_to_the_intro_and_resumes_to_the_next_user_state(studio: httpx.Client) -> None:
    thread_id = studio.post("/threads", json={}).json()["thread_id"]
    first = studio.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "q_and_a", "input": {}}).json()
    waiting = first["__interrupt__"][0]["value"]
    assert waiting["state"] == "intro" and waiting["next_actions"] == ["user_input"]
    assert waiting["response"].startswith("Welcome") and waiting["session_id"] == thread_id
    resume = {"resume": {"event": "user_input", "event_input": "What is a state machine?"}}
    second = studio.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "q_and_a", "command": resume}).json()
    assert second["__interrupt__"][0]["value"]["state"] == "user_enters_query"
    state = studio.get(f"/threads/{thread_id}/state").json()
    assert state["next"] == ["user_enters_query"]
    dialogue = [(element["actor"], element["actor_text"]) for element in state["values"]["dialogue"]]
    assert [actor for actor, _text in dialogue] == ["assistant", "user", "assistant"]
    assert dialogue[1][1] == "What is a state machine?" and "What is a state machine?" in dialogue[2][1]
    again = {"resume": {"event": "user_input", "event_input": "And a graph?"}}
    third = studio.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "q_and_a", "command": again}).json()
    assert len(third["dialogue"]) == 5 and third["__interrupt__"][0]["value"]["state"] == "user_enters_query"


def test_a_thread_is_interrupted_and_resumes_and_runs_a_sub_flow(studio: httpx.Client) -> None:
    thread_id = studio.post("/threads", json={}).json()["thread_id"]

    def send(event: str, text: str = "") -> dict[str, Any]:
        command = {"resume": {"event": event, "event_input": text}}
        answer = studio.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "ordering", "command": command})
        return answer.json()["__interrupt__"][0]["value"]  # type: ignore[no-any-return]

    first = studio.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "ordering", "input": {}}).json()
    assert first["__interrupt__"][0]["value"]["next_actions"] == ["user_input", "cancel"]
    assert send("user_input", "tea")["state"] == "taking_order"
    asked = send("cancel")
    assert asked["state"] == "cancel_order/asking" and asked["next_actions"] == ["user_input"]
    resumed = send("user_input", "no")
    assert resumed["state"] == "taking_order" and "Good, your order stays." in resumed["response"]
    assert send("user_input", "done")["state"] == "address/asking_street"
    state = studio.get(f"/threads/{thread_id}/state").json()
    assert state["next"] == ["address/asking_street"]
    assert [frame["flow"] for frame in state["values"]["flows"]["frames"]] == ["address"]
