"""Tools an LLM invoker may call, and the durable approvals some of them need.

An ``openai`` invoker's ``meta.yaml`` names its tools::

    invoker:
      type: openai
      tools:
        lookup_price: shop.tools:lookup_price          # a plain function or a LangChain tool
        place_order:
          function: shop.tools:place_order
          approval:
            approvers: sender            # sender (default) | member | anyone | role:<name>
            expires_seconds: 600         # then the request counts as denied
            auto_approve: "total < `20`" # JMESPath over the arguments, or module:function(arguments, model)

The invoker runs the tool loop: the model answers with tool calls, each is run and its result sent
back, until the model answers with text. A call of a tool that needs approval suspends the run: an
:class:`ApprovalRequest` (tool, arguments, who asked, the conversation so far) is stored on the
session's model and checkpointed with it, so it survives restarts and moves between processes. A
decision (``GenieFlow.decide_approval``, ``POST .../approvals/{session}/{id}``) resumes the run
where it stopped: the tool runs, or the model hears it was denied.
"""

from __future__ import annotations

import contextvars
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage, messages_from_dict, messages_to_dict
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID

from ._imports import import_object
from .errors import InvokerConfigError

__all__ = ["ApprovalRequest", "ApprovalStatus"]

MAX_TOOL_ROUNDS = 8
"""How many times one invoker call hands tool results back to the model before giving up."""


class ApprovalStatus(StrEnum):
    """Where an approval request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    """Not decided in time: it counts as denied."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ApprovalRequest(BaseModel):
    """A tool call waiting for (or given) a person's decision, kept on the session's model.

    Attributes:
        id: the request's id, used to decide it.
        tool: the tool's name.
        arguments: the arguments the model called it with.
        asked_by: who the run was for (the session's user, or the sender of a group message).
        state: the node of the invoker state that called it.
        template: the invoker template whose tool loop it belongs to.
        approvers: who may decide it (``sender``, ``member``, ``anyone`` or ``role:<name>``).
        requested_at: when it was made (UTC).
        expires_at: when it counts as denied, if it has a limit.
        status: pending, approved, denied or expired.
        decided_by: who decided it (``auto`` for an auto-approve rule, ``expiry`` for a timeout).
        decided_at: when.
        reason: the decider's reason, if given.
        call_id: the model's id of the tool call.
        transcript: the conversation with the model up to the call (dropped once decided).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: str(ULID()))
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    asked_by: str | None = None
    state: str = ""
    template: str = ""
    approvers: str = "sender"
    requested_at: datetime = Field(default_factory=_utc_now)
    expires_at: datetime | None = None
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    call_id: str = ""
    transcript: list[dict[str, Any]] = Field(default_factory=list)

    def expired(self, now: datetime | None = None) -> bool:
        """Whether a pending request is past its time."""
        return (
            self.status is ApprovalStatus.PENDING
            and self.expires_at is not None
            and (now or _utc_now()) >= self.expires_at
        )

    def public(self) -> dict[str, Any]:
        """What clients see of it (the transcript left out)."""
        return self.model_dump(mode="json", exclude={"transcript"})


# ---- declarations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalPolicy:
    """Who may approve a tool's calls, for how long, and which calls need no one."""

    approvers: str = "sender"
    expires_seconds: float | None = None
    auto_approve: str | Callable[..., bool] | None = None

    def auto_approves(self, arguments: Mapping[str, Any], model: Any) -> bool:
        """Whether the call needs no person (an auto-approve rule holds for its arguments)."""
        rule = self.auto_approve
        if rule is None:
            return False
        if callable(rule):
            return bool(rule(dict(arguments), model))
        return bool(jmespath.search(rule, dict(arguments)))

    def allows(self, request: ApprovalRequest, who: str | None, roles: Sequence[str], members: Sequence[str]) -> bool:
        """Whether ``who`` (with ``roles``; ``members`` of the session) may decide ``request``."""
        kind = self.approvers
        if kind == "anyone":
            return True
        if kind == "sender":
            return who is not None and who == request.asked_by
        if kind == "member":
            return who is not None and (who == request.asked_by or who in members)
        return kind.startswith("role:") and kind.removeprefix("role:") in roles


@dataclass(frozen=True)
class ToolSpec:
    """A tool of an invoker: what to run, and the approval its calls need (None: none)."""

    name: str
    tool: BaseTool
    approval: ApprovalPolicy | None = None


_APPROVERS = ("sender", "member", "anyone")


def _import(path: str, where: str) -> Any:
    try:
        return import_object(path)
    except InvokerConfigError as exc:
        raise InvokerConfigError(f"{where}: {exc}") from exc


def _as_tool(value: Any, name: str, where: str) -> BaseTool:
    if isinstance(value, BaseTool):
        return value
    if not callable(value):
        raise InvokerConfigError(f"{where}: {value!r} is neither a function nor a LangChain tool")
    if inspect.iscoroutinefunction(value):
        return StructuredTool.from_function(coroutine=value, name=name)
    return StructuredTool.from_function(func=value, name=name)


def parse_tools(config: Any, where: str = "invoker tools") -> dict[str, ToolSpec]:
    """The ``tools:`` mapping of an invoker, checked: names to functions or LangChain tools.

    Raises:
        InvokerConfigError: naming the entry at fault and what is allowed.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvokerConfigError(f"{where}: 'tools:' must map tool names to import paths or mappings")
    tools: dict[str, ToolSpec] = {}
    for name, entry in config.items():
        here = f"{where}, tool {name!r}"
        if isinstance(entry, str):
            tools[name] = ToolSpec(name, _as_tool(_import(entry, here), name, here))
            continue
        if not isinstance(entry, Mapping) or "function" not in entry:
            raise InvokerConfigError(f"{here}: give an import path, or a mapping with 'function:' (and 'approval:')")
        unknown = sorted(set(entry) - {"function", "approval"})
        if unknown:
            raise InvokerConfigError(f"{here}: unknown key(s) {', '.join(unknown)}; allowed: function, approval")
        tools[name] = ToolSpec(
            name, _as_tool(_import(entry["function"], here), name, here), _parse_approval(entry.get("approval"), here)
        )
    return tools


def _parse_approval(value: Any, where: str) -> ApprovalPolicy | None:
    if value is None or value is False:
        return None
    if value is True or value == "required":
        return ApprovalPolicy()
    if not isinstance(value, Mapping):
        raise InvokerConfigError(f"{where}: 'approval:' must be true, 'required' or a mapping")
    unknown = sorted(set(value) - {"approvers", "expires_seconds", "auto_approve"})
    if unknown:
        raise InvokerConfigError(
            f"{where}: unknown approval key(s) {', '.join(unknown)}; allowed: approvers, expires_seconds, auto_approve"
        )
    approvers = str(value.get("approvers", "sender"))
    if approvers not in _APPROVERS and not (approvers.startswith("role:") and len(approvers) > len("role:")):
        raise InvokerConfigError(f"{where}: approvers {approvers!r}: use sender, member, anyone or role:<name>")
    expires = value.get("expires_seconds")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0):
        raise InvokerConfigError(f"{where}: expires_seconds must be a positive number, got {expires!r}")
    rule = value.get("auto_approve")
    if isinstance(rule, str) and ":" in rule and " " not in rule and not rule.startswith("`"):
        rule = _import(rule, f"{where}, auto_approve")  # module:function
    elif isinstance(rule, str):
        try:
            jmespath.compile(rule)
        except JMESPathError as exc:
            raise InvokerConfigError(f"{where}: auto_approve {rule!r} is no JMESPath expression: {exc}") from exc
    elif rule is not None:
        raise InvokerConfigError(f"{where}: auto_approve must be a JMESPath expression or a module:function path")
    return ApprovalPolicy(approvers, None if expires is None else float(expires), rule)


# ---- run time ---------------------------------------------------------------------------------
@dataclass
class ToolRun:
    """What an invoker state's node tells the tool loops of its run (set around the run)."""

    asked_by: str | None = None
    state: str = ""
    model: Any = None
    resume: ApprovalRequest | None = None
    """A decided request to go on from (its template's loop resumes from its transcript)."""
    audit: list[ApprovalRequest] = field(default_factory=list)
    """Calls auto-approved during the run, for the history."""


current_tool_run: contextvars.ContextVar[ToolRun | None] = contextvars.ContextVar("genie_graph_tool_run", default=None)


class ApprovalRequired(Exception):  # noqa: N818 - it is a signal, not an error
    """A tool call needs a person's approval: the run stops here until it is decided."""

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(f"tool {request.tool!r} needs approval ({request.approvers})")
        self.request = request


ChatStep = Callable[[list[BaseMessage]], Awaitable[AIMessage]]
"""One call of the model with the conversation so far (the tools bound)."""


async def run_tool_loop(
    template: str, messages: list[BaseMessage], step: ChatStep, tools: Mapping[str, ToolSpec]
) -> AIMessage:
    """Call the model until it answers without tool calls, running the tools it calls.

    Raises:
        ApprovalRequired: a call needs approval; the request holds the conversation to go on from.
        InvokerError: the model kept calling tools past ``MAX_TOOL_ROUNDS``.
    """
    from .errors import InvokerError

    run = current_tool_run.get() or ToolRun()
    resume = run.resume if run.resume is not None and run.resume.template == template else None
    if resume is not None:  # go on where the approval stopped the loop
        messages = messages_from_dict(resume.transcript)
        run.resume = None
        await _finish_calls(messages, tools, run, template, decided=resume)
    for _ in range(MAX_TOOL_ROUNDS):
        reply = await step(messages)
        if not reply.tool_calls:
            return reply
        messages.append(reply)
        await _finish_calls(messages, tools, run, template)
    raise InvokerError(f"the model still called tools after {MAX_TOOL_ROUNDS} rounds of tool results")


async def _finish_calls(
    messages: list[BaseMessage],
    tools: Mapping[str, ToolSpec],
    run: ToolRun,
    template: str,
    decided: ApprovalRequest | None = None,
) -> None:
    """Answer each tool call of the last model message that has no result yet."""
    reply = next(m for m in reversed(messages) if isinstance(m, AIMessage))
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    for call in reply.tool_calls:
        call_id = call.get("id") or ""
        if call_id in answered:
            continue
        name, arguments = call["name"], dict(call.get("args") or {})
        spec = tools.get(name)
        if spec is None:
            content = f"error: there is no tool {name!r}; the tools are {', '.join(tools) or '(none)'}"
        elif decided is not None and decided.call_id == call_id:
            content = await _decided(spec, arguments, decided)
        elif spec.approval is not None and not spec.approval.auto_approves(arguments, run.model):
            seconds = spec.approval.expires_seconds
            raise ApprovalRequired(
                _request(
                    run,
                    template,
                    spec.approval,
                    call,
                    expires_at=None if seconds is None else _utc_now() + timedelta(seconds=seconds),
                    transcript=messages_to_dict(messages),
                )
            )
        else:
            if spec.approval is not None:  # an auto-approve rule held: in the audit trail too
                auto = {"status": ApprovalStatus.APPROVED, "decided_by": "auto", "decided_at": _utc_now()}
                run.audit.append(_request(run, template, spec.approval, call, **auto))
            content = await _run_tool(spec, arguments)
        messages.append(ToolMessage(content=content, tool_call_id=call_id, name=name))


def _request(run: ToolRun, template: str, policy: ApprovalPolicy, call: Any, **fields: Any) -> ApprovalRequest:
    return ApprovalRequest(
        tool=call["name"],
        arguments=dict(call.get("args") or {}),
        asked_by=run.asked_by,
        state=run.state,
        template=template,
        approvers=policy.approvers,
        call_id=call.get("id") or "",
        **fields,
    )


async def _decided(spec: ToolSpec, arguments: dict[str, Any], request: ApprovalRequest) -> str:
    if request.status is ApprovalStatus.APPROVED:
        return await _run_tool(spec, arguments)
    why = "it was not approved in time" if request.status is ApprovalStatus.EXPIRED else "a person denied it"
    reason = f" ({request.reason})" if request.reason else ""
    return f"The call of {spec.name} was not run: {why}{reason}. Tell the user; do not call it again now."


async def _run_tool(spec: ToolSpec, arguments: dict[str, Any]) -> str:
    try:
        result = await spec.tool.ainvoke(arguments)
    except Exception as exc:  # the model hears what went wrong, and may answer or try otherwise
        return f"error: {type(exc).__name__}: {exc}"
    return result if isinstance(result, str) else json.dumps(result, default=str)


# ---- on the session's model ---------------------------------------------------------------------
APPROVALS_KEPT = 50
"""Decided requests kept on the model (the history keeps every decision)."""

DECISIONS = (ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED)


def pending_approval(model: Any, state: str | None = None) -> ApprovalRequest | None:
    """The request the session waits for (in node ``state``, if given), or None."""
    requests: list[ApprovalRequest] = model.approvals
    for request in requests:
        if request.status is ApprovalStatus.PENDING and (state is None or request.state == state):
            return request
    return None


def asked_by(model: Any) -> str | None:
    """Who a run is for: the sender of the last group message it took, else the session's user (its email)."""
    for element in reversed(model.dialogue):
        if element.actor == "user":
            if element.sender is not None:
                return str(element.sender)
            break
    user = model.secondary_storage.get("user_info") if "user_info" in model.secondary_storage else None
    email = getattr(user, "email", None)
    return str(email) if email else None


def record_request(model: Any, request: ApprovalRequest, state_id: str, flow: str | None) -> None:
    """Keep a new request on the model and in the history."""
    model.approvals.append(request)
    model.record_history(
        "approval_requested",
        state=state_id,
        flow=flow,
        template=request.template,
        detail={
            "id": request.id,
            "tool": request.tool,
            "arguments": request.arguments,
            "asked_by": request.asked_by,
            "approvers": request.approvers,
            "expires_at": None if request.expires_at is None else request.expires_at.isoformat(),
        },
    )


def record_auto_approvals(model: Any, audit: Sequence[ApprovalRequest], state_id: str, flow: str | None) -> None:
    """Calls an auto-approve rule let through: in the audit trail as decided by ``auto``."""
    for request in audit:
        _record_decision(model, request, state_id, flow)


def _record_decision(model: Any, request: ApprovalRequest, state_id: str, flow: str | None) -> None:
    model.record_history(
        "approval_decided", state=state_id, flow=flow, template=request.template, detail=_decision(request)
    )


def _decision(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "tool": request.tool,
        "arguments": request.arguments,
        "status": str(request.status),
        "by": request.decided_by,
        "reason": request.reason,
    }


class BadDecision(ValueError):
    """A resume value that is no decision of the pending request."""


def apply_decision(
    model: Any, request: ApprovalRequest, resume: Any, state_id: str, flow: str | None
) -> ApprovalRequest:
    """Record the decision a waiting node was resumed with; returns the request to go on from.

    Raises:
        BadDecision: the value decides no pending request of this node.
    """
    if not isinstance(resume, Mapping) or resume.get("approval") != request.id:
        raise BadDecision(
            f"the session waits for a decision on approval {request.id!r} (tool {request.tool!r}); "
            f'resume with {{"approval": "{request.id}", "decision": "approved" | "denied"}}'
        )
    try:
        status = ApprovalStatus(str(resume.get("decision")))
    except ValueError:
        raise BadDecision(f"decision {resume.get('decision')!r}: use approved, denied or expired") from None
    if status not in DECISIONS:
        raise BadDecision(f"decision {status!r}: use approved, denied or expired")
    decided = request.model_copy(
        update={
            "status": status,
            "decided_by": resume.get("by"),
            "decided_at": _utc_now(),
            "reason": resume.get("reason"),
        }
    )
    index = model.approvals.index(request)
    model.approvals[index] = decided.model_copy(update={"transcript": []})  # the audit keeps the rest
    decided_earlier = [r for r in model.approvals if r.status is not ApprovalStatus.PENDING]
    for old in decided_earlier[: max(0, len(decided_earlier) - APPROVALS_KEPT)]:
        model.approvals.remove(old)
    _record_decision(model, decided, state_id, flow)
    return decided
