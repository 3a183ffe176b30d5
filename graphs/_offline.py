"""A deterministic stand-in for the LLM, so every example runs offline.

The example prompts mark their inputs (``*** MOST RECENT HUMAN STATEMENT ***``, ``*** TOPIC ***``,
``*** ASPECT ***``); this reads them back and answers as a tiny rule-based model would. It is
used when no OpenAI-compatible endpoint is configured (see the ``offline:`` key in meta.yaml).
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"\*\*\* (?P<name>[A-Z ]+) \*\*\*\n(?P<body>.*?)\n---", re.DOTALL)
_NAME_PATTERNS = [
    re.compile(r"\bmy name is ([A-Za-z][\w'-]*)", re.IGNORECASE),
    re.compile(r"\bi am ([A-Z][\w'-]*)"),
    re.compile(r"\bi'm ([A-Z][\w'-]*)"),
    re.compile(r"\bcall me ([A-Za-z][\w'-]*)", re.IGNORECASE),
    re.compile(r"^\s*([A-Z][a-z'-]+)\s*[.!]?\s*$"),
]
_STOP_WORDS = ("stop", "bye", "quit", "exit")


def _section(prompt: str, name: str) -> str | None:
    for match in _SECTION.finditer(prompt):
        if match["name"].strip() == name:
            return match["body"].strip()
    return None


def extract_name(statement: str) -> str:
    """The name in a reply to "what is your name?", or ``UNDEFINED``."""
    for pattern in _NAME_PATTERNS:
        match = pattern.search(statement)
        if match:
            return match.group(1).capitalize()
    return "UNDEFINED"


_INTENT_WORDS = {"help": ("help", "how does", "how do", "what can")}


def classify_intent(statement: str, intents: list[str]) -> str:
    """The first intent whose cue words the statement contains, or ``none``."""
    lowered = statement.lower()
    for intent in intents:
        if any(cue in lowered for cue in _INTENT_WORDS.get(intent, (intent,))):
            return intent
    return "none"


def judge_group_message(message: str) -> str:
    """The group reasoner's answer: DELEGATE what names Genie or asks a question, IGNORE the rest."""
    _sender, _, text = message.partition(": ")
    if "genie" in text.lower() or text.rstrip().endswith("?"):
        return "DELEGATE it is meant for Genie"
    return "IGNORE the team is talking among themselves"


def answer(prompt: str) -> str:
    """Answer one of the example prompts deterministically."""
    group_message = _section(prompt, "GROUP MESSAGE")
    if group_message is not None:
        return judge_group_message(group_message)
    sender = _section(prompt, "SENDER")
    if sender:
        statement = _section(prompt, "MOST RECENT HUMAN STATEMENT") or ""
        return f"{sender}, you said: {statement!r}. (Offline answer: configure an OpenAI-compatible endpoint.)"
    topic = _section(prompt, "TOPIC")
    if topic is not None:
        return f"{topic} is a broad subject; this offline overview only names it."
    aspect = _section(prompt, "ASPECT")
    if aspect is not None:
        return f"{aspect.capitalize()} matters; an online model would say how much."
    statement = _section(prompt, "MOST RECENT HUMAN STATEMENT") or prompt.strip()
    intents = _section(prompt, "INTENTS")
    if intents is not None:
        return classify_intent(statement, [intent.strip() for intent in intents.split(",")])
    items = _section(prompt, "ITEMS ORDERED")
    if items is not None:
        return "You have not ordered anything yet." if items.startswith("(") else f"So far you ordered: {items}."
    if "extract the name" in prompt:
        return extract_name(statement)
    if any(word in statement.lower().split() for word in _STOP_WORDS):
        return "**STOP**"
    return f"You said: {statement!r}. (Offline answer: configure an OpenAI-compatible endpoint for real ones.)"
