"""Tools for the approval tests: each call is logged, so a test sees what ran (and how often)."""

from __future__ import annotations

import json
import os
from pathlib import Path

CALLS_FILE = "GENIE_GRAPH_TEST_TOOL_CALLS"
"""An environment variable naming a file each call is appended to (calls across processes)."""


def _log(name: str, **arguments: object) -> None:
    path = os.environ.get(CALLS_FILE)
    if path:
        with Path(path).open("a", encoding="utf-8") as log:
            log.write(json.dumps({"tool": name, **arguments}) + "\n")


def lookup_price(item: str) -> str:
    """The price of an item in the shop, in euros."""
    _log("lookup_price", item=item)
    return f"{item} costs 12 EUR"


def place_order(item: str, total: int) -> str:
    """Place an order of an item for a total in euros."""
    _log("place_order", item=item, total=total)
    return f"order placed: {item} for {total} EUR"


def calls() -> list[dict[str, object]]:
    """The calls logged so far."""
    path = os.environ.get(CALLS_FILE)
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
