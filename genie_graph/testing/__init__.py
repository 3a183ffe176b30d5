"""A testing kit for flow authors: scripted conversations, fake invokers, transition coverage.

A script is a conversation with one model key of a flow: the events to send and what each turn
must show (state, response, model fields, errors, next actions). It runs on a private,
in-memory copy of the flow where everything is real but the invoker calls, which fakes answer
by template name. A failure names the turn and shows expected against actual, with the dialogue.

    from genie_graph.testing import FakeInvokers, TransitionCoverage, run_script

    coverage = TransitionCoverage()
    run_script(
        graphs.create_flow,
        "q_and_a_capture",
        [
            {"say": "no idea", "state": "need_to_retry"},
            {"say": "I am Ada", "state": "welcome_message", "fields": {"user_name": "Ada"}},
        ],
        fakes={"ai_extracts_name": ["UNDEFINED", "Ada"]},
        coverage=coverage,
    )
    print(coverage.report())

Scripts also live in ``*.genie.yaml`` files beside the flow: ``genie-graph test --coverage`` runs
them, and ``pytest -p genie_graph.testing.pytest_plugin`` collects them as tests.
"""

from genie_graph._versions import (
    ResumedSession,
    SessionsDidNotResume,
    check_sessions_resume,
    export_sessions,
    load_sessions,
)

from ._coverage import DeclaredTransition, TransitionCoverage, TransitionRun, declared_transitions
from ._fakes import FakeAnswer, FakeFailure, FakeInvokers, FakeRecordingError, Invocation, Render, save_recording
from ._runner import (
    FlowSource,
    Mismatch,
    ScriptFailure,
    ScriptResult,
    ScriptRunner,
    TurnResult,
    UnfakedInvoker,
    run_script,
)
from ._script import SCRIPT_SUFFIXES, Expect, Script, ScriptError, Turn, find_scripts, load_scripts

__all__ = [
    "SCRIPT_SUFFIXES",
    "DeclaredTransition",
    "Expect",
    "FakeAnswer",
    "FakeFailure",
    "FakeInvokers",
    "FakeRecordingError",
    "FlowSource",
    "Invocation",
    "Mismatch",
    "Render",
    "ResumedSession",
    "Script",
    "ScriptError",
    "ScriptFailure",
    "ScriptResult",
    "ScriptRunner",
    "SessionsDidNotResume",
    "TransitionCoverage",
    "TransitionRun",
    "Turn",
    "TurnResult",
    "UnfakedInvoker",
    "check_sessions_resume",
    "declared_transitions",
    "export_sessions",
    "find_scripts",
    "load_scripts",
    "load_sessions",
    "run_script",
    "save_recording",
]
