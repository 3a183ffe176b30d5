"""The Celery runner: invoker states run on Celery workers sharing the flow's Redis.

A runtime process runs a session's graph up to the next invoker state and queues it
(:func:`send_advance`); a worker (``genie-graph worker``) works that state and queues the next,
or lets the session wait for the user. Tasks carry ids only; the session itself lives in the
store. Tasks are acknowledged late and requeued when their worker is lost; a task delivered twice
changes nothing (see ``GenieFlow._advance``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celery import Celery  # type: ignore[import-untyped]

from . import _tracing

if TYPE_CHECKING:
    from ._runtime import GenieFlow

logger = logging.getLogger("genie_graph")

ADVANCE_TASK = "genie_graph.advance"
CELERY_SETTINGS = {
    "task_acks_late": True,  # a task whose worker dies is delivered again ...
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # ... and none waits behind a long one on a busy worker
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
}
"""How genie-graph's runner configures Celery, besides its queue and the broker's visibility timeout."""
_apps: weakref.WeakKeyDictionary[GenieFlow, Celery] = weakref.WeakKeyDictionary()


def celery_app(flow: GenieFlow) -> Celery:
    """The Celery app of a flow: broker = ``flow.broker_url``, no result backend (the store has the results)."""
    app = _apps.get(flow)
    if app is None:
        from ._runtime import DEFAULT_QUEUE

        app = Celery("genie_graph", broker=flow.broker_url, set_as_current=False)
        app.conf.update(
            task_default_queue=DEFAULT_QUEUE,
            broker_transport_options={"visibility_timeout": max(3600, int(flow.dispatch_timeout_seconds) * 2)},
            **CELERY_SETTINGS,
        )

        @app.task(name=ADVANCE_TASK, bind=False)  # type: ignore[untyped-decorator]
        def advance(model_key: str, session_id: str, run_id: str, checkpoint_id: str) -> str:
            with _tracing.continued_from(advance.request):  # the queuing run's trace, if it traces
                outcome = flow._sync(flow._advance(model_key, session_id, run_id, checkpoint_id))
            logger.info("session %s, run %s: %s", session_id, run_id, outcome)
            return outcome

        _apps[flow] = app
    return app


def send_advance(flow: GenieFlow, queue: str, model_key: str, session_id: str, run_id: str, checkpoint_id: str) -> None:
    """Queue the session's pending invoker state on ``queue`` (blocking: call it in a thread)."""
    args = [model_key, session_id, run_id, checkpoint_id]
    celery_app(flow).send_task(ADVANCE_TASK, args=args, queue=queue, headers=_tracing.task_headers())


def run_worker(
    flow: GenieFlow, queues: Sequence[str], concurrency: int, loglevel: str = "INFO", extra: Sequence[str] = ()
) -> None:
    """Run a Celery worker for ``flow`` in this process until it is stopped (blocks).

    The worker uses threads: each task hands its work to the flow's event loop, where invoker
    calls wait on the network side by side.
    """
    if flow.runner != "celery":
        raise ValueError(
            f"this GenieFlow runs invoker states {flow.runner!r}; a worker needs runner='celery' "
            "(pass it, or set GENIE_GRAPH_RUNNER=celery) and a Redis store"
        )
    argv: list[str] = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel]
    argv += ["--queues", ",".join(queues), "--without-gossip", "--without-mingle", "--hostname", _hostname(queues)]
    argv += list(extra)
    threading.Thread(target=_sweep_forever, args=(flow,), name="genie-graph-sweep", daemon=True).start()
    celery_app(flow).worker_main(argv)


def _sweep_forever(flow: GenieFlow) -> None:
    """Every third of a lease, queue again the work of runs whose process died (see ``sweep_orphaned_runs``)."""
    while True:
        time.sleep(flow.run_lease_seconds / 3)
        try:
            for session_id in flow.sweep_orphaned_runs():
                logger.warning("session %s: resumed a run whose process had died", session_id)
        except Exception as exc:  # Redis briefly away: sweep again next time
            logger.warning("could not sweep for orphaned runs: %s", exc)


def _hostname(queues: Sequence[str]) -> str:
    import os
    import socket

    return f"genie-graph-{'-'.join(queues)}-{os.getpid()}@{socket.gethostname()}"
