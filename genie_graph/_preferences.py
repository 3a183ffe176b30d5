"""Each user's preferences, for the templates of the runs made for them.

``GenieFlow(preferences=...)`` takes a *preferences source*: a mapping ``{user: {name: value}}``, or
a function of the user (sync or async) answering that user's preferences (or None). Before a node
runs, its session's current sender (the session's user, by email) is looked up once; templates see
the answer as ``preferences`` (``{}`` when there is none) and the sender as ``sender``.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PreferencesSource"]

logger = logging.getLogger("genie_graph")

PreferencesSource = Mapping[str, Mapping[str, Any]] | Callable[[str], Any]
"""``{user: preferences}``, or ``source(user) -> preferences | None`` (may be async)."""

current_preferences: contextvars.ContextVar[tuple[str | None, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "genie_graph_preferences", default=None
)
"""Set around a node's run: (the sender, their preferences)."""


async def preferences_of(source: PreferencesSource | None, user: str | None) -> dict[str, Any]:
    """``user``'s preferences from ``source``; ``{}`` without a user, a source, or an answer.

    A source that fails is logged and answers ``{}``: a preference store being away does not stop
    the dialogue.
    """
    if source is None or user is None:
        return {}
    try:
        if isinstance(source, Mapping):
            found: Any = source.get(user)
        else:
            found = source(user)
            if inspect.isawaitable(found):
                found = await found
    except Exception as exc:
        logger.warning("the preferences of %s could not be read: %s", user, exc)
        return {}
    if found is None:
        return {}
    if not isinstance(found, Mapping):
        logger.warning("the preferences source answered %r for %s, not a mapping; using none", found, user)
        return {}
    return dict(found)


def check_source(source: Any) -> PreferencesSource | None:
    """``source`` if it is a mapping or a callable (or None).

    Raises:
        TypeError: it is neither, naming what is allowed.
    """
    if source is None or isinstance(source, Mapping) or callable(source):
        return source  # type: ignore[no-any-return]
    raise TypeError(
        f"preferences must be a mapping {{user: {{name: value}}}} or a function of the user, got {source!r}"
    )
