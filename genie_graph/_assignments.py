"""The elements of a session's long lists (dialogue, history) count assignments to their fields.

Between the nodes of a run, ``_channels`` reuses the objects a long list was validated into, and it
must know whether any was changed in place meanwhile. Comparing every object's fields tells, at a
cost that grows with the session; a count of assignments that has not moved tells at once. Only
containers among the fields (a dict, changed without an assignment) are still compared.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_count = 0


def assignments() -> int:
    """How many field assignments (and deletions) elements have seen in this process so far.

    Read it before copying elements' fields: an assignment that lands after the read moves it.
    """
    return _count


class CountsAssignments(BaseModel):
    """A model whose field assignments move :func:`assignments` (after the field has changed)."""

    def __setattr__(self, name: str, value: Any) -> None:
        global _count
        super().__setattr__(name, value)
        _count += 1

    def __delattr__(self, name: str) -> None:
        global _count
        super().__delattr__(name)
        _count += 1
