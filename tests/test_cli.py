"""The ``genie-graph`` command line, run as a real subprocess against ``tests/cli_flows.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genie_graph import GenieFlow
from tests.cli_flows import flow as cli_flow

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOW = "tests.cli_flows:flow"
UUID = re.compile(r"session ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def run_cli(
    *args: str,
    stdin: str = "",
    tmp_path: Path,
    flow: str | None = FLOW,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GENIE_GRAPH_FLOW", "GENIE_GRAPH_STORE", "GENIE_GRAPH_DATA_DIR")
    }
    environment.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        GENIE_GRAPH_CLI_TEMPLATES=str(tmp_path / "templates"),
        GENIE_GRAPH_DATA_DIR=str(tmp_path / "data"),  # a default store never lands in the home directory
        GENIE_GRAPH_OFFLINE="1",
        PYTHONIOENCODING="utf-8",
    )
    environment.update(env or {})
    command = [sys.executable, "-m", "genie_graph._cli"]
    if flow is not None:
        command += ["--flow", flow]
    # Bytes, decoded here: text mode would turn the progress line's "\r" into newlines.
    result = subprocess.run(
        [*command, *args],
        input=stdin.encode("utf-8"),
        capture_output=True,
        cwd=REPO_ROOT,
        env=environment,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    )


def assistant_lines(stdout: str) -> list[str]:
    return [line.removeprefix("genie> ") for line in stdout.splitlines() if line.startswith("genie> ")]


# ---- list ---------------------------------------------------------------------------------
def test_list_one_line_per_model_key(tmp_path: Path) -> None:
    result = run_cli("list", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["echo", "once", "slow"]
    echo, once, slow = (line.split() for line in lines)
    assert echo == ["echo", "tests.cli_flows.EchoMachine", "initial=intro", "states=4", "invokers=ai_answers"]
    assert once == ["once", "tests.cli_flows.OnceMachine", "initial=intro", "states=3", "invokers=ai_answers"]
    assert slow == ["slow", "tests.cli_flows.SlowMachine", "initial=intro", "states=3", "invokers=ai_works"]


def test_flow_from_environment_variable(tmp_path: Path) -> None:
    result = run_cli("list", tmp_path=tmp_path, flow=None, env={"GENIE_GRAPH_FLOW": FLOW})
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["echo", "once", "slow"]


def test_default_flow_is_graphs_flow_from_the_repository_root(tmp_path: Path) -> None:
    result = run_cli("--store", "memory://", "list", tmp_path=tmp_path, flow=None)
    assert result.returncode == 0, result.stderr
    keys = [line.split()[0] for line in result.stdout.splitlines()]
    assert keys == ["q_and_a", "q_and_a_cond", "q_and_a_capture", "topic_analysis", "ordering", "team_chat"]


# ---- draw ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model_key", ["echo", "once"])
def test_draw_mermaid_shows_every_state_and_edge_label(tmp_path: Path, model_key: str) -> None:
    result = run_cli("draw", model_key, "--format", "mermaid", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "graph TD;" in text
    compiled = cli_flow.flow_of(model_key)
    for state_id in compiled.kinds:
        assert re.search(rf"^\s*{state_id}\({state_id}\)", text, re.MULTILINE), state_id
    for source, per_target in compiled.targets.items():
        for target, labels in per_target.items():
            for label in labels:
                assert re.search(rf"{source} -\. &nbsp;{re.escape(label)}&nbsp; \.-> {target};", text), label
    assert "__start__ --> intro;" in text
    assert "done -. &nbsp;done&nbsp; .-> __end__;" in text


def test_draw_shows_condition_labels(tmp_path: Path) -> None:
    result = run_cli("draw", "echo", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "user_enters_query -. &nbsp;stop [may_stop]&nbsp; .-> done;" in result.stdout


def test_draw_does_not_open_the_store(tmp_path: Path) -> None:
    database = tmp_path / "draw.sqlite"
    result = run_cli("--store", f"sqlite:///{database}", "draw", "echo", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not database.exists()


# ---- usage errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        ("tests.cli_flows", "package.module:attribute"),
        ("no_such_module_xyz:flow", "no module named 'no_such_module_xyz'"),
        ("tests.cli_flows:missing", "has no attribute 'missing' (GenieFlow objects in it: flow)"),
        ("tests.cli_flows:not_a_flow", "it is of type int, not a GenieFlow"),
    ],
)
def test_bad_flow_exits_2_and_says_what_is_allowed(tmp_path: Path, flow: str, expected: str) -> None:
    result = run_cli("list", tmp_path=tmp_path, flow=flow)
    assert result.returncode == 2
    assert result.stdout == ""
    assert expected in result.stderr
    assert f"bad --flow {flow!r}" in result.stderr
    assert "GenieFlow object, or a function returning one" in result.stderr or "not a GenieFlow" in result.stderr


@pytest.mark.parametrize("command", ["chat", "draw"])
def test_unknown_model_key_exits_2_with_known_keys(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "nope", stdin="hello\n", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "unknown model key 'nope'; known keys: echo, once, slow" in result.stderr
    assert "genie>" not in result.stdout


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(tmp_path=tmp_path)
    assert result.returncode == 2
    assert "usage: genie-graph" in result.stderr


# ---- chat ---------------------------------------------------------------------------------
def test_chat_echoes_and_ends_in_the_final_state(tmp_path: Path) -> None:
    result = run_cli("chat", "once", stdin="hello there\nnever read\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert assistant_lines(result.stdout) == [
        "Hello! I echo what you say.",
        "Ask me anything.",
        "Last words: Echo: hello there",
    ]
    assert result.stdout.rstrip().endswith("[session ended]")
    assert "never read" not in result.stdout
    assert UUID.search(result.stderr), result.stderr
    assert "you> hello there" in result.stdout


def test_chat_picks_events_and_shows_state_and_model(tmp_path: Path) -> None:
    conversation = "\n".join(
        [
            "first question",  # one event allowed: user_input
            "/state",
            "second question",  # user_input and stop allowed: plain text goes with user_input
            "/event nope whatever",
            "/model",
            "/event stop see you",
            "not read any more",
        ]
    )
    result = run_cli("chat", "echo", stdin=conversation + "\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert assistant_lines(out) == [
        "Hello! I echo what you say.",
        "Ask me anything.",
        "Echo: first question",
        "Echo: second question",
        "Bye!",
    ]
    assert "state: user_enters_query (User enters query, user); events: user_input, stop" in out
    assert "[error] unknown event 'nope'; this flow's events are" in out
    model = json.loads(out[out.index("\n{", out.index("you> /model")) : out.index("\n}\n") + 2])
    assert model["state"] == 300
    assert [element["actor_text"] for element in model["dialogue"]][-1] == "Echo: second question"
    assert UUID.search(result.stderr)[1] == model["session_id"]  # type: ignore[index]
    assert out.rstrip().endswith("[session ended]")
    assert "not read any more" not in out
    assert "[events: user_input, stop;" in result.stderr


def test_chat_ends_at_end_of_input_and_on_quit(tmp_path: Path) -> None:
    at_eof = run_cli("chat", "echo", stdin="just one\n", tmp_path=tmp_path)
    assert at_eof.returncode == 0, at_eof.stderr
    assert assistant_lines(at_eof.stdout)[-1] == "Echo: just one"
    assert "[session ended]" not in at_eof.stdout

    quit_ = run_cli("chat", "echo", stdin="/quit\nnot sent\n", tmp_path=tmp_path)
    assert quit_.returncode == 0, quit_.stderr
    assert assistant_lines(quit_.stdout) == ["Hello! I echo what you say.", "Ask me anything."]
    assert "[session ended]" not in quit_.stdout


def test_chat_shows_progress_on_one_stderr_line_then_the_answer_or_error(tmp_path: Path) -> None:
    result = run_cli("chat", "slow", stdin="hi\nboom\nafter\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert assistant_lines(result.stdout)[2:] == ["step2: step1: hi", "step2: step1: after"]
    assert (
        "[error] InvokerError: template 'slow/step.jinja2': PythonInvoker failed: RuntimeError: "
        "the step blew up (in state ai_works)"
    ) in result.stdout
    progress_lines = [line for line in result.stderr.split("\n") if "thinking…" in line]
    assert len(progress_lines) == 3  # one line per run, rewritten with \r
    for line in progress_lines:
        assert line.startswith("\rthinking…")
        assert re.search(r"\rthinking… \d/4", line), line


def test_store_option_sets_the_flows_store(tmp_path: Path) -> None:
    database = tmp_path / "sessions.sqlite"
    result = run_cli("--store", f"sqlite:///{database}", "chat", "once", stdin="hi\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert assistant_lines(result.stdout)[-1] == "Last words: Echo: hi"
    assert database.is_file()


def test_store_from_environment_and_a_factory_flow(tmp_path: Path) -> None:
    database = tmp_path / "factory.sqlite"
    result = run_cli(
        "chat",
        "echo",
        stdin="hi\n",
        tmp_path=tmp_path,
        flow="tests.cli_flows:create_flow",
        env={"GENIE_GRAPH_STORE": f"sqlite:///{database}"},
    )
    assert result.returncode == 0, result.stderr
    assert assistant_lines(result.stdout)[-1] == "Echo: hi"
    assert database.is_file()


def test_chat_continues_a_session_in_a_later_process(tmp_path: Path) -> None:
    """The default store keeps sessions: a second `chat --session ID` picks up where the first ended."""
    first = run_cli("chat", "q_and_a", stdin="first question\n/quit\n", tmp_path=tmp_path, flow=None)
    assert first.returncode == 0, first.stderr
    session_id = first.stderr.split("session ", 1)[1].split()[0]
    second = run_cli(
        "chat", "q_and_a", "--session", session_id, stdin="second question\n/quit\n", tmp_path=tmp_path, flow=None
    )
    assert second.returncode == 0, second.stderr
    assert f"resumed session {session_id}" in second.stderr
    assert "first question" in second.stdout  # the latest answer is shown again
    assert "second question" in second.stdout


def test_flow_and_store_may_follow_the_command() -> None:
    from genie_graph._cli import DEFAULT_FLOW, build_parser

    parser = build_parser()
    after = parser.parse_args(["serve", "--flow", "my_flows:flow", "--store", "memory://", "--port", "9000"])
    assert (after.flow, after.store, after.port) == ("my_flows:flow", "memory://", 9000)
    before = parser.parse_args(["--flow", "my_flows:flow", "worker", "--queues", "gpu"])
    assert (before.flow, before.queues) == ("my_flows:flow", "gpu")
    assert parser.parse_args(["list"]).flow == os.environ.get("GENIE_GRAPH_FLOW", DEFAULT_FLOW)


def test_serve_refuses_several_processes_on_an_embedded_store(tmp_path: Path) -> None:
    result = run_cli("--store", f"sqlite:///{tmp_path}/s.db", "serve", "--workers", "2", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "--workers 2 needs a store shared by processes" in result.stderr


@pytest.mark.parametrize("kind", ["poll", "event"])
def test_the_waits_are_checked_where_they_are_given(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api import create_app, settings_from_env
    from genie_graph._cli import build_parser

    flag, variable, option = f"--{kind}-wait", f"GENIE_GRAPH_{kind.upper()}_WAIT", f"{kind}_wait_seconds"
    assert getattr(build_parser().parse_args(["serve", flag, "0"]), f"{kind}_wait") == 0
    result = run_cli("--store", f"sqlite:///{tmp_path}/s.db", "serve", flag, "-1", tmp_path=tmp_path)
    assert result.returncode == 2 and f"{flag} must be between 0 and 30 seconds, got -1.0" in result.stderr
    monkeypatch.setenv(variable, "0.25")
    assert settings_from_env()[option] == 0.25
    monkeypatch.setenv(variable, "soon")
    with pytest.raises(ValueError, match=f"{variable}='soon' is not a number of seconds"):
        settings_from_env()
    flow = GenieFlow(store="memory://")
    try:
        with pytest.raises(ValueError, match=f"{option} must be between 0 and 30, got 60"):
            create_app(flow, **{option: 60})
    finally:
        flow.close()
