"""``genie-graph``: list, draw, chat with and serve the flows of a ``GenieFlow``, or work their invoker states.

    genie-graph [--flow package.module:attribute] [--store URL] list
    genie-graph [...] draw <model_key> [--format mermaid]
    genie-graph [...] chat <model_key>
    genie-graph [...] serve [--host H] [--port P] [--workers N] [--runner R] [--prefix /v1/ai] [--no-playground]
    genie-graph [...] worker [--queues a,b] [--concurrency N]
    genie-graph [...] test [PATHS...] [--coverage] [--fail-under N] [-k TEXT]

``--flow`` names a ``GenieFlow`` object, or a function returning one (called with
``store=URL`` when ``--store`` is given); default ``$GENIE_GRAPH_FLOW`` or ``graphs:flow``.
The current directory is importable, so ``graphs`` resolves from the repository root.

Exit codes: 0 success, 1 a runtime error, 2 a usage error (bad ``--flow``, unknown model key).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ._api_models import AIResponse, EventInput
from ._flow import POLL
from ._model import StateKind
from ._runtime import DEFAULT_QUEUE, RUNNERS, GenieFlow
from ._stores import STORE_URL_FORMS
from .errors import GenieGraphError, describe_error, without_credentials

DEFAULT_FLOW = "graphs:flow"
FLOW_ENV = "GENIE_GRAPH_FLOW"
STORE_ENV = "GENIE_GRAPH_STORE"
POLL_INTERVAL = 0.05
KEEP_ALIVE_SECONDS = 30
"""An idle HTTP connection stays open this long (uvicorn's 5 s default races with polling clients)."""
ASSISTANT = "genie> "
USER = "you> "
DEFAULT_EVENT = "user_input"

_CHAT_HELP = """\
commands:
  <text>               send text with the state's event (user_input if allowed, else the first)
  /event <name> <text> send text with a named event
  /state               the current state and the events it accepts
  /model               the session's model as JSON
  /help                this help
  /quit                end the chat (so does end of input)"""


class UsageError(Exception):
    """A command-line mistake: reported on stderr, exit code 2."""


# ---- loading the flow ---------------------------------------------------------------------
def _ensure_cwd_importable() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_flow(spec: str, store: str | None = None, runner: str | None = None) -> GenieFlow:
    """The ``GenieFlow`` that ``package.module:attribute`` names, on ``store`` (and ``runner``) when given.

    Raises:
        UsageError: the spec is malformed, the module or attribute does not exist, importing it
            failed, or the attribute is neither a ``GenieFlow`` nor a function returning one.
    """
    allowed = (
        "--flow takes package.module:attribute naming a GenieFlow object, or a function returning one "
        f"(default {DEFAULT_FLOW}, or ${FLOW_ENV})"
    )
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name.strip() or not attribute.strip() or ":" in attribute:
        raise UsageError(f"bad --flow {spec!r}: {allowed}")
    _ensure_cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise UsageError(
                f"bad --flow {spec!r}: no module named {module_name!r} (searched the current directory "
                f"{os.getcwd()} and sys.path); {allowed}"
            ) from exc
        raise UsageError(f"bad --flow {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"bad --flow {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            flows = sorted(name for name, value in vars(module).items() if isinstance(value, GenieFlow))
            found = f"GenieFlow objects in it: {', '.join(flows)}" if flows else "it holds no GenieFlow object"
            raise UsageError(
                f"bad --flow {spec!r}: module {module_name!r} has no attribute {attribute!r} ({found}); {allowed}"
            )
        target = getattr(target, part)
    if isinstance(target, GenieFlow):
        return _configured(target, store, runner)
    if callable(target) and not isinstance(target, type):
        try:
            built = target(store=store) if store is not None else target()
        except Exception as exc:
            raise UsageError(f"bad --flow {spec!r}: calling it failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(built, GenieFlow):
            return _configured(built, None, runner)
        raise UsageError(f"bad --flow {spec!r}: calling it returned {type(built).__name__}, not a GenieFlow")
    raise UsageError(f"bad --flow {spec!r}: it is of type {type(target).__name__}, not a GenieFlow; {allowed}")


def _configured(flow: GenieFlow, store: str | None, runner: str | None) -> GenieFlow:
    try:
        if store is not None:
            flow.store_url = store
        if runner is not None:
            flow.runner = runner
    except (GenieGraphError, ValueError) as exc:
        raise UsageError(f"{exc}; or name a function that builds the flow") from exc
    return flow


def _check_key(flow: GenieFlow, model_key: str) -> None:
    if model_key not in flow.model_keys:
        raise UsageError(
            f"unknown model key {model_key!r}; known keys: {', '.join(flow.model_keys) or '(none registered)'}"
        )


# ---- list and draw ------------------------------------------------------------------------
def cmd_list(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    rows = []
    for key in flow.model_keys:
        compiled = flow.flow_of(key)
        invokers = [sid for sid, kind in compiled.kinds.items() if kind is StateKind.INVOKER]
        rows.append(
            (
                key,
                compiled.name,
                f"initial={compiled.initial}",
                f"states={len(compiled.kinds)}",
                f"invokers={','.join(invokers) or '-'}",
            )
        )
    if not rows:
        print("(no model keys registered)", file=sys.stderr)
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]),
            file=out,
        )
    return 0


def cmd_draw(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    """Print the diagram as Mermaid or DOT text, or write it as a PNG or SVG image (offline, Graphviz)."""
    from ._diagram import Diagram, GraphvizMissing

    _check_key(flow, args.model_key)
    # Without --session, drawing never opens (or creates) the session store; no web service is contacted.
    diagram = flow.draw(args.model_key, args.session) if args.session else Diagram(flow.flow_of(args.model_key))
    images = [(path, kind) for path, kind in ((args.png, "png"), (args.svg, "svg")) if path]
    for path, kind in images:
        try:
            data = diagram.render(kind, args.engine)  # type: ignore[arg-type]
        except GraphvizMissing as exc:
            raise UsageError(str(exc)) from exc
        with open(path, "wb") as image:
            image.write(data)
        print(f"genie-graph: wrote {path} ({len(data)} bytes)", file=sys.stderr)
    if not images:
        print(diagram.dot if args.format == "dot" else diagram.mermaid, file=out, end="")
    return 0


# ---- chat ---------------------------------------------------------------------------------
class _Progress:
    """One line on stderr, rewritten with ``\\r`` while a run is in flight."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0
        self.shown = ""

    def show(self, answer: AIResponse) -> None:
        text = "thinking…"
        if answer.progress is not None and answer.progress.total_number_of_subtasks > 0:
            progress = answer.progress
            text += f" {progress.number_of_subtasks_executed}/{progress.total_number_of_subtasks}"
        if text == self.shown:
            return
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.shown = text
        self.width = max(self.width, len(text))

    def done(self) -> None:
        """Clear the line on a terminal; elsewhere end it, so logs stay readable."""
        if not self.width:
            return
        if self.stream.isatty():
            self.stream.write("\r" + " " * self.width + "\r")
        else:
            self.stream.write("\n")
        self.stream.flush()
        self.width = 0
        self.shown = ""


class _Chat:
    def __init__(
        self, flow: GenieFlow, model_key: str, stdin: TextIO, out: TextIO, err: TextIO, session_id: str | None = None
    ) -> None:
        self.flow = flow
        self.key = model_key
        self.stdin = stdin
        self.out = out
        self.err = err
        self.resume = session_id
        self.session_id = session_id or ""
        self.actions: list[str] = []
        self.interactive = stdin.isatty()

    def say(self, text: str | None) -> None:
        for line in (text or "").splitlines() or [""]:
            print(f"{ASSISTANT}{line}", file=self.out)
        self.out.flush()

    def settle(self, answer: AIResponse) -> AIResponse:
        if answer.next_actions != [POLL]:
            return answer
        progress = _Progress(self.err)
        try:
            progress.show(answer)
            while answer.next_actions == [POLL]:
                time.sleep(POLL_INTERVAL)
                answer = self.flow.process_event(
                    self.key, EventInput(session_id=self.session_id, event=POLL, event_input="")
                )
                if answer.next_actions == [POLL]:
                    progress.show(answer)
        finally:
            progress.done()
        return answer

    def report(self, answer: AIResponse) -> bool:
        """Print an answer; True when the session has ended."""
        answer = self.settle(answer)
        if answer.error:
            print(f"[error] {describe_error(answer.error)}", file=self.out)
            if answer.response:
                self.say(answer.response)
        else:
            self.say(answer.response)
        actions, self.actions = self.actions, list(answer.next_actions)
        if not self.actions:
            print("[session ended]", file=self.out)
            self.out.flush()
            return True
        if len(self.actions) > 1 and self.actions != actions:
            print(
                f"[events: {', '.join(self.actions)}; text goes with {self.default_event()}, "
                "/event <name> <text> sends another]",
                file=self.err,
            )
        self.out.flush()
        return False

    def read(self) -> str | None:
        if self.interactive:
            try:
                return input(USER)
            except EOFError:
                print(file=self.out)
                return None
        self.out.write(USER)
        self.out.flush()
        line = self.stdin.readline()
        if not line:
            print(file=self.out)
            return None
        line = line.rstrip("\r\n")
        print(line, file=self.out)  # piped input: echo it, so stdout reads as a transcript
        return line

    def send(self, event: str, text: str) -> bool:
        try:
            answer = self.flow.process_event(
                self.key, EventInput(session_id=self.session_id, event=event, event_input=text)
            )
            return self.report(answer)
        except GenieGraphError as exc:  # e.g. a template failing to render: the session stays where it was
            print(f"[error] {exc}", file=self.out)
            self.out.flush()
            return False

    def default_event(self) -> str:
        if len(self.actions) == 1:
            return self.actions[0]
        return DEFAULT_EVENT if DEFAULT_EVENT in self.actions else self.actions[0]

    def show_state(self) -> None:
        model = self.flow.get_model(self.key, self.session_id)
        compiled = self.flow.flow_of(self.key)
        state_id = compiled.node_of(model)
        kind = compiled.node_kind(state_id).name.lower()  # type: ignore[union-attr]
        print(
            f"state: {state_id} ({compiled.node_name(state_id)}, {kind}); "
            f"events: {', '.join(self.actions) or '(none)'}",
            file=self.out,
        )

    def command(self, line: str) -> bool | None:
        """Run a /command; True ends the chat, None means "not handled, read on"."""
        name, _, rest = line.partition(" ")
        if name == "/quit":
            return True
        if name == "/help":
            print(_CHAT_HELP, file=self.out)
        elif name == "/state":
            self.show_state()
        elif name == "/model":
            print(self.flow.get_model(self.key, self.session_id).model_dump_json(indent=2), file=self.out)
        elif name == "/event":
            event, _, text = rest.strip().partition(" ")
            if not event:
                print(f"usage: /event <name> <text>; events here: {', '.join(self.actions)}", file=self.out)
            else:
                return self.send(event, text)
        else:
            print(f"unknown command {name!r}; /help lists the commands", file=self.out)
        return None

    def run(self) -> int:
        if self.resume:  # the latest response of a session kept in the store
            start = self.flow.process_event(self.key, EventInput(session_id=self.resume, event=POLL, event_input=""))
            print(f"resumed session {self.session_id} ({self.key})", file=self.err)
        else:
            start = self.flow.create_new_session(self.key)
            self.session_id = start.session_id
            print(
                f"session {self.session_id} ({self.key}); continue it later with --session {self.session_id}",
                file=self.err,
            )
        self.err.flush()
        if self.report(start):
            return 0
        while True:
            line = self.read()
            if line is None:
                return 0
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("/"):
                if self.command(stripped):
                    return 0
                continue
            if self.send(self.default_event(), line):
                return 0


def cmd_chat(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    _check_key(flow, args.model_key)
    if sys.stdin.isatty():
        try:  # line editing and history for input()
            import readline  # noqa: F401
        except ImportError:  # pragma: no cover - not on every platform
            pass
    try:
        return _Chat(flow, args.model_key, sys.stdin, out, sys.stderr, args.session).run()
    except KeyboardInterrupt:
        print(file=out)
        return 130


# ---- entry point --------------------------------------------------------------------------
def _add_common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """``--flow``, ``--store`` and ``-v``: before the command, or after it (``genie-graph serve --flow x``)."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS  # after the command, only what is given counts

    parser.add_argument(
        "--flow",
        default=default(os.environ.get(FLOW_ENV) or DEFAULT_FLOW),
        metavar="MODULE:ATTR",
        help=f"the GenieFlow (or a function returning one) to use; default ${FLOW_ENV} or {DEFAULT_FLOW}",
    )
    parser.add_argument(
        "--store",
        default=default(os.environ.get(STORE_ENV) or None),
        metavar="URL",
        help=f"session store: {STORE_URL_FORMS}; default ${STORE_ENV} or the flow's own",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log genie-graph's warnings and info"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genie-graph",
        description="List, draw, chat with, serve and work Genie Flow dialogue flows compiled to LangGraph.",
    )
    _add_common_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="one line per model key: machine, initial state, states, invokers")
    _add_common_options(listing, defaults=False)
    listing.set_defaults(handler=cmd_list)

    draw = commands.add_parser(
        "draw", help="print a model key's graph as Mermaid (or DOT) text, or write it as PNG/SVG"
    )
    draw.add_argument("model_key")
    draw.add_argument("--format", choices=["mermaid", "dot"], default="mermaid", help="text to print (mermaid)")
    draw.add_argument("--png", metavar="PATH", help="write a PNG image instead (needs Graphviz's dot)")
    draw.add_argument("--svg", metavar="PATH", help="write an SVG image instead (needs Graphviz's dot)")
    draw.add_argument("--session", metavar="ID", help="highlight this session's current state")
    draw.add_argument(
        "--engine",
        choices=["auto", "dot", "wasm"],
        default="auto",
        help="image renderer: Graphviz's dot program, its WebAssembly build shipped with genie-graph, "
        "or auto (dot when installed)",
    )
    _add_common_options(draw, defaults=False)
    draw.set_defaults(handler=cmd_draw)

    chat = commands.add_parser("chat", help="talk to a model key in the terminal (/help inside for commands)")
    chat.add_argument("model_key")
    chat.add_argument("--session", metavar="ID", help="continue a session kept in the store instead of starting one")
    _add_common_options(chat, defaults=False)
    chat.set_defaults(handler=cmd_chat)

    worker = commands.add_parser(
        "worker", help="run a Celery worker for the flow's invoker states (needs a Redis --store)"
    )
    worker.add_argument(
        "--queues",
        default=os.environ.get("GENIE_GRAPH_QUEUES") or DEFAULT_QUEUE,
        metavar="NAMES",
        help=f"comma-separated queues to work: {DEFAULT_QUEUE} (the default) and/or NamedQueueTaskTemplate names",
    )
    worker.add_argument("--concurrency", type=int, default=8, metavar="N", help="invoker states worked at once (8)")
    worker.add_argument("--loglevel", default="INFO", help="Celery's log level (INFO)")
    _add_common_options(worker, defaults=False)
    worker.set_defaults(handler=cmd_worker, runner="celery")

    test = commands.add_parser(
        "test",
        help="run scripted conversations (*.genie.yaml) against the flow, with fake invokers",
        description="Run script files against the flow on an in-memory store, invokers answered by the scripts' "
        "fakes (genie_graph.testing). Exit code 1 when a script fails or coverage is under --fail-under.",
    )
    test.add_argument(
        "paths", nargs="*", metavar="PATHS", help="script files or directories (default: *.genie.yaml beside the flow)"
    )
    test.add_argument("--coverage", action="store_true", help="report which transitions and conditions the scripts ran")
    test.add_argument("--fail-under", type=float, metavar="N", help="fail when transition coverage is under N percent")
    test.add_argument("-k", dest="select", metavar="TEXT", help="only the scripts whose file::name contains TEXT")
    _add_common_options(test, defaults=False)
    test.set_defaults(handler=cmd_test)

    serve = commands.add_parser(
        "serve",
        help="serve the flow's HTTP API (Genie Flow's routes, with streaming) with uvicorn",
        description="Serve the flow over HTTP. API keys come from $GENIE_GRAPH_API_KEYS (name:key,name2:key2), "
        "callers' roles for tool approvals from $GENIE_GRAPH_API_ROLES (name:role+role2,name2:role); "
        "with them, every route but /health needs a key and sessions are bound to their caller.",
    )
    serve.add_argument("--host", default=os.environ.get("GENIE_GRAPH_HOST", "127.0.0.1"), help="(127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("GENIE_GRAPH_PORT", "8000")), help="(8000)")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="server processes (1); more need a Redis --store"
    )
    serve.add_argument(
        "--runner",
        choices=RUNNERS,
        default=os.environ.get("GENIE_GRAPH_RUNNER") or None,
        help="where invoker states run: inline (in the server) or celery (on workers); default the flow's own",
    )
    serve.add_argument("--prefix", default=os.environ.get("GENIE_GRAPH_API_PREFIX", "/v1/ai"), help="(/v1/ai)")
    serve.add_argument(
        "--cors-origins",
        default=os.environ.get("GENIE_GRAPH_CORS_ORIGINS", ""),
        metavar="ORIGINS",
        help="comma-separated origins browsers may call from (* for any); default none",
    )
    serve.add_argument(
        "--max-event-input",
        type=int,
        default=os.environ.get("GENIE_GRAPH_MAX_EVENT_INPUT", str(64 * 1024)),
        metavar="BYTES",
        help="the largest event_input accepted (65536)",
    )
    serve.add_argument(
        "--poll-wait",
        type=float,
        default=os.environ.get("GENIE_GRAPH_POLL_WAIT", "1"),  # (a string: argparse checks it as --poll-wait)
        metavar="SECONDS",
        help="how long a poll of a run in flight waits for the run to settle or report progress before "
        'answering ["poll"] (1); 0 answers at once, as Genie Flow does',
    )
    serve.add_argument(
        "--event-wait",
        type=float,
        default=os.environ.get("GENIE_GRAPH_EVENT_WAIT", "0.25"),
        metavar="SECONDS",
        help="how long an event into an invoker state waits for the run's answer, answered at once if it "
        'comes in time, before answering ["poll"] (0.25); 0 answers ["poll"] at once, as Genie Flow does',
    )
    serve.add_argument(
        "--genie-flow-status-codes",
        action="store_true",
        help="answer refused events with 500 as Genie Flow does, instead of 409/422",
    )
    serve.add_argument(
        "--no-playground",
        dest="playground",
        action="store_false",
        default=os.environ.get("GENIE_GRAPH_PLAYGROUND", "").strip().lower() not in ("0", "false", "no", "off"),
        help="serve the API only, without the web playground at /",
    )
    serve.add_argument("--log-level", default="warning", help="uvicorn's log level (warning)")
    _add_common_options(serve, defaults=False)
    serve.set_defaults(handler=cmd_serve)
    return parser


def freeze_loaded_objects() -> None:
    """Keep what is loaded by now (libraries, the flow) out of the garbage collector's way.

    A full collection walks every object the process holds. Loading the libraries makes about
    150,000 that live as long as the process; walking them took about 150 ms per collection, a
    stall for every request in flight. Called by the processes genie-graph starts itself (server
    and worker), once everything is loaded.
    """
    gc.collect()
    gc.freeze()


def cmd_serve(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    """Serve the flow's HTTP API until stopped."""
    import uvicorn

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_event_input < 1:
        raise UsageError(f"--max-event-input must be at least 1, got {args.max_event_input}")
    from api import MAX_POLL_WAIT_SECONDS  # (the app's own bound)

    if not 0 <= args.poll_wait <= MAX_POLL_WAIT_SECONDS:
        raise UsageError(f"--poll-wait must be between 0 and {MAX_POLL_WAIT_SECONDS:g} seconds, got {args.poll_wait}")
    if not 0 <= args.event_wait <= MAX_POLL_WAIT_SECONDS:
        raise UsageError(f"--event-wait must be between 0 and {MAX_POLL_WAIT_SECONDS:g} seconds, got {args.event_wait}")
    if args.workers > 1 and not flow.store_url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(
            f"--workers {args.workers} needs a store shared by processes: pass --store redis://host:port/0 "
            f"(the store is {flow.store_url})"
        )
    env = {
        "GENIE_GRAPH_API_PREFIX": args.prefix,
        "GENIE_GRAPH_CORS_ORIGINS": args.cors_origins,
        "GENIE_GRAPH_MAX_EVENT_INPUT": str(args.max_event_input),
        "GENIE_GRAPH_POLL_WAIT": str(args.poll_wait),
        "GENIE_GRAPH_EVENT_WAIT": str(args.event_wait),
        "GENIE_GRAPH_GENIE_FLOW_STATUS_CODES": "1" if args.genie_flow_status_codes else "",
        "GENIE_GRAPH_PLAYGROUND": "1" if args.playground else "0",
    }
    os.environ.update(env)
    from api import settings_from_env

    try:
        settings = settings_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(
        f"genie-graph: serving {', '.join(flow.model_keys)} on http://{args.host}:{args.port}{settings['prefix']} "
        f"(store {without_credentials(flow.store_url)}, runner {flow.runner}, {args.workers} worker(s); docs at /docs)",
        file=out,
        flush=True,
    )
    if args.playground:
        page = "/" if settings["prefix"].strip("/") else "/playground/"
        print(f"genie-graph: playground at http://{args.host}:{args.port}{page}", file=out, flush=True)
    if args.workers == 1:
        from api import create_app

        app = create_app(flow, **settings)
        freeze_loaded_objects()
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        return 0
    os.environ.update({FLOW_ENV: args.flow, STORE_ENV: flow.store_url, "GENIE_GRAPH_RUNNER": flow.runner})
    flow.close()
    uvicorn.run(
        "api._serve:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return 0


def cmd_worker(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    """Work the flow's invoker states from its Redis queues until stopped."""
    from ._celery import run_worker

    queues = [name.strip() for name in args.queues.split(",") if name.strip()]
    if not queues:
        raise UsageError(f"--queues names no queue: give comma-separated names, such as {DEFAULT_QUEUE}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    freeze_loaded_objects()
    run_worker(flow, queues, args.concurrency, args.loglevel)
    return 0


def cmd_test(flow: GenieFlow, args: argparse.Namespace, out: TextIO) -> int:
    """Run the scripted conversations and print each outcome (and the transition coverage)."""
    from .testing._command import NoScriptsFound, run_test_command

    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        raise UsageError(f"--fail-under must be a percentage between 0 and 100, got {args.fail_under:g}")
    try:
        return run_test_command(
            flow,
            args.flow,
            args.paths,
            coverage=args.coverage,
            fail_under=args.fail_under,
            select=args.select,
            out=out,
        )
    except NoScriptsFound as exc:
        raise UsageError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """Run the ``genie-graph`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="genie-graph: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        flow = load_flow(args.flow, args.store, getattr(args, "runner", None))
    except UsageError as exc:
        print(f"genie-graph: error: {exc}", file=sys.stderr)
        return 2
    handler: Callable[[GenieFlow, argparse.Namespace, TextIO], int] = args.handler
    try:
        return handler(flow, args, sys.stdout)
    except UsageError as exc:
        print(f"genie-graph: error: {exc}", file=sys.stderr)
        return 2
    except GenieGraphError as exc:
        print(f"genie-graph: error: {exc}", file=sys.stderr)
        return 1
    finally:
        flow.close()


if __name__ == "__main__":
    raise SystemExit(main())
