"""Targets of the ``python`` invoker: a sync function, an async function and a Runnable."""

from __future__ import annotations

import asyncio

from langchain_core.runnables import RunnableLambda


def shout(content: str) -> str:
    return content.upper()


async def ashout(content: str) -> str:
    await asyncio.sleep(0)
    return f"async:{content.upper()}"


RUNNABLE = RunnableLambda(lambda content: f"runnable:{content[::-1]}")


def not_text(content: str) -> dict[str, str]:
    return {"got": content}
