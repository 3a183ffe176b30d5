"""genie-graph's errors: one family, each carrying its facts as attributes.

    GenieGraphError
    ├── FlowDefinitionError        a flow declaration is wrong (raised at build time)
    ├── TemplateError              a template is missing or cannot render
    ├── InvokerConfigError         a meta.yaml ``invoker:`` mapping is wrong
    ├── InvokerError               an invoker failed while answering
    │   ├── InvokerTimeout         a call took longer than its timeout
    │   └── RunCutOff              a run's process ended too often; not resumed again
    ├── UnknownModelKey            no flow is registered under a model key
    ├── UnknownSession             no session with that id (or it expired)
    ├── EventNotAllowed            the event cannot be sent in the current state
    ├── SessionBusy                a background run is still in flight for the session
    ├── UnknownMessage             a group session's log has no message with that number
    ├── NotAMember                 a sender is not one of a group session's named members
    ├── FlowVersionUnsupported     a session's flow version is neither served nor migrated
    ├── EventFailed                a hook raised while an event was processed; the session is unchanged
    ├── SecondaryStorageError      a write-once secondary-storage key was written twice
    ├── SchemaUpgradeError         stored data has a schema version the class cannot read
    └── StoreUnavailable           the store (Redis) cannot be reached; nothing changed

Every message ends with what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


class GenieGraphError(Exception):
    """Root of every error genie-graph raises on purpose."""


class FlowDefinitionError(GenieGraphError):
    """A state machine, its templates or its model are declared wrongly.

    Attributes:
        flow: the qualified name of the state machine class.
        culprits: the state ids, event names or hook names at fault.
    """

    def __init__(self, flow: str, problem: str, culprits: Sequence[str] = (), fix: str = "") -> None:
        self.flow = flow
        self.culprits = list(culprits)
        message = f"{flow}: {problem}"
        if self.culprits:
            message += f" ({', '.join(self.culprits)})"
        if fix:
            message += f". {fix}"
        super().__init__(message)


class TemplateError(GenieGraphError, ValueError):
    """A template cannot be found, loaded or rendered.

    Attributes:
        template: the template name as given in the ``templates`` mapping.
    """

    def __init__(self, template: str, message: str) -> None:
        self.template = template
        super().__init__(f"template {template!r}: {message}")


class InvokerConfigError(GenieGraphError):
    """A ``meta.yaml`` declares an invoker that cannot be built."""


class InvokerError(GenieGraphError):
    """An invoker raised or timed out while answering a rendered template."""


class InvokerTimeout(InvokerError):
    """An invoker call took longer than its ``retry: {timeout_seconds}`` and was cancelled.

    Attributes:
        seconds: the limit it exceeded.
        attempt: which call it was (1 is the first).
    """

    def __init__(self, seconds: float, attempt: int) -> None:
        self.seconds = seconds
        self.attempt = attempt
        super().__init__(
            f"the call did not answer within {seconds:g} s (attempt {attempt}); raise retry: {{timeout_seconds}} "
            "in the meta.yaml if the model needs longer"
        )


class RunCutOff(InvokerError):
    """An invoker state's run was cut off with its process too often, and is not resumed again.

    Attributes:
        state: the invoker state.
        starts: how often its run was started.
    """

    def __init__(self, state: str, starts: int) -> None:
        self.state = state
        self.starts = starts
        super().__init__(
            f"the run of state {state!r} was started {starts} times and each time its process ended before it "
            "finished (a crash, a kill, running out of memory); it is not resumed again. Look for what ends the "
            "process in the logs, or allow more with retry: {resumes}"
        )


class BudgetExceeded(GenieGraphError):
    """A session has spent its budget: an invoker state was not run.

    Attributes:
        state: the invoker state that was not run.
        fallback_event: the machine's ``Budget.on_exceeded`` event, sent instead of the state's
            completion event (None: the completion event is sent, with this error as the output).
    """

    code = "budget_exceeded"

    def __init__(self, state: str, reason: str, fallback_event: str | None) -> None:
        self.state = state
        self.fallback_event = fallback_event
        super().__init__(f"state {state!r} was not run: {reason}. Raise the machine's Budget, or start a new session")


class UnknownModelKey(GenieGraphError, KeyError):
    """No flow is registered under the model key.

    Attributes:
        model_key: the key that was asked for.
        known: the registered keys.
    """

    def __init__(self, model_key: str, known: Sequence[str]) -> None:
        self.model_key = model_key
        self.known = list(known)
        super().__init__(
            f"unknown model key {model_key!r}; registered keys: {', '.join(self.known) or '(none)'}. "
            "Register the flow with GenieFlow.register_model(model_key, ModelClass) first."
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownSession(GenieGraphError, KeyError):
    """No session exists with this id for the model key (never created, or expired).

    Attributes:
        model_key: the model key of the request.
        session_id: the id that was asked for.
    """

    def __init__(self, model_key: str, session_id: str) -> None:
        self.model_key = model_key
        self.session_id = session_id
        super().__init__(
            f"unknown session {session_id!r} for model key {model_key!r}; start one with create_new_session(model_key)."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class EventNotAllowed(GenieGraphError):
    """The event cannot be sent in the session's current state; the session is unchanged.

    Attributes:
        session_id: the session the event was sent to.
        state: the id of the current state.
        state_name: the human name of the current state.
        allowed: the events the current state accepts (conditions not evaluated).
        received: the event that was sent.
        reason: why it was refused.
    """

    def __init__(
        self,
        session_id: str,
        state: str,
        state_name: str,
        allowed: Sequence[str],
        received: str,
        reason: str = "",
    ) -> None:
        self.session_id = session_id
        self.state = state
        self.state_name = state_name
        self.allowed = list(allowed)
        self.received = received
        self.reason = reason or (
            f"event {received!r} is not allowed in state {state!r}; allowed: {', '.join(self.allowed) or '(none)'}"
        )
        advice = "Send one of the allowed events." if self.allowed else "The session takes no event now."
        super().__init__(f"{self.reason}. {advice}")

    def to_json(self) -> str:
        """The body Genie Flow puts in ``AIResponse.error`` for a refused event."""
        return json.dumps(
            {
                "session_id": self.session_id,
                "current_state": {"id": self.state, "name": self.state_name},
                "possible_events": self.allowed,
                "received_event": self.received,
                "reason": self.reason,
            }
        )


class SessionBusy(GenieGraphError):
    """A background run is in flight for the session; only ``poll`` is accepted until it settles.

    Attributes:
        session_id: the busy session.
        received: the event that was refused.
    """

    def __init__(self, session_id: str, received: str) -> None:
        self.session_id = session_id
        self.received = received
        super().__init__(
            f"session {session_id!r} is busy with a run; event {received!r} refused. "
            "Send 'poll' until next_actions no longer is ['poll']."
        )


class FlowVersionUnsupported(GenieGraphError):
    """A session started on a flow version this process neither serves nor migrates; it is unchanged.

    Attributes:
        model_key: the session's model key.
        session_id: the session.
        version: the flow version the session started on.
        current: the version new sessions start on.
        previous: older versions still served on their own graphs (``register_model(previous=...)``).
        migrated: older versions migrated on load (the machine's ``migrations``).
        reason: why the session cannot go on (its version is unknown, or its migration failed).
    """

    code = "flow_version_unsupported"

    def __init__(
        self,
        model_key: str,
        session_id: str,
        version: str,
        *,
        current: str,
        previous: Sequence[str] = (),
        migrated: Sequence[str] = (),
        reason: str = "",
        fix: str = "",
        machine: str = "",
    ) -> None:
        self.model_key = model_key
        self.session_id = session_id
        self.version = version
        self.current = current
        self.previous = list(previous)
        self.migrated = list(migrated)
        self.reason = reason or "that version is neither served nor migrated"
        served = ", ".join(
            [f"{current!r} (current)"]
            + [f"{v!r} (served)" for v in self.previous]
            + [f"{v!r} (migrated)" for v in self.migrated]
        )
        fix = fix or (
            f"Declare migrations = {{{version!r}: Migration(states={{...}})}} on {machine or 'the machine'}, or "
            f"register_model({model_key!r}, Model, previous=[<the model of version {version!r}>])"
        )
        super().__init__(
            f"session {session_id!r} of model key {model_key!r} started on flow version {version!r}: "
            f"{self.reason}. Versions here: {served}. {fix}"
        )

    @property
    def served(self) -> list[str]:
        """Every version this process can load: current, served and migrated."""
        return [self.current, *self.previous, *self.migrated]


class EventFailed(GenieGraphError):
    """A hook, condition or template raised while the event was processed; the session was rolled back.

    Attributes:
        session_id: the session the event was sent to.
        received: the event.
        allowed: the events the (unchanged) current state accepts.
    """

    def __init__(self, session_id: str, received: str, cause: BaseException | str, allowed: Sequence[str] = ()) -> None:
        self.session_id = session_id
        self.received = received
        self.allowed = list(allowed)
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"event {received!r} failed in session {session_id!r}: {reason}. "
            "The session is unchanged; fix the hook or template, or send another event."
        )


class SecondaryStorageError(GenieGraphError, KeyError):
    """A write-once secondary-storage key was written while it already holds a value."""

    def __str__(self) -> str:
        return str(self.args[0])


class SchemaUpgradeError(GenieGraphError, ValueError):
    """Stored data has another schema version and the class does not upgrade it."""


class SerializationError(GenieGraphError, ValueError):
    """A serialized payload is not ``b"{version}:{0|1}:{json}"`` or cannot be decompressed or decoded."""


def without_credentials(url: str) -> str:
    """``url`` with any user name and password taken out, fit for messages and logs."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.hostname:
        parsed = parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else ""))
    return parsed.geturl()


class StoreUnavailable(GenieGraphError):
    """The store (Redis, say) cannot be reached; nothing was changed. Retry once it is back.

    Attributes:
        url: the store's URL, without credentials.
    """

    def __init__(self, url: str, cause: BaseException) -> None:
        self.url = without_credentials(url)
        super().__init__(
            f"the store at {self.url} is unavailable ({type(cause).__name__}: {cause}); the request changed "
            "nothing, retry once the store is back"
        )


def describe_error(error: str, refusal_prefix: str = "") -> str:
    """An ``AIResponse.error``, readable: refusals and invoker failures arrive as JSON bodies.

    Args:
        error: the error text.
        refusal_prefix: put before a refusal's reason (``"refused: "``, say).
    """
    try:
        body = json.loads(error)
    except ValueError:
        return error
    if not isinstance(body, dict):
        return error
    if "reason" in body:
        reason = str(body["reason"])
        events = body.get("possible_events") or []
        text = reason if "allowed:" in reason else f"{reason}; allowed: {', '.join(events) or '(none)'}"
        return refusal_prefix + text
    parts = [str(body[key]) for key in ("exception", "transition_error") if key in body]
    if parts:
        return f"{'; '.join(parts)} (in state {body.get('state', '?')})"
    return error


class ApprovalError(GenieGraphError):
    """A decision on a tool call's approval request cannot be taken.

    Attributes:
        code: ``unknown_approval`` (no such request), ``approval_closed`` (decided or expired
            already) or ``approval_forbidden`` (the caller may not decide it).
        session_id: the session.
        approval_id: the request.
    """

    def __init__(self, code: str, session_id: str, approval_id: str, reason: str) -> None:
        self.code = code
        self.session_id = session_id
        self.approval_id = approval_id
        super().__init__(f"approval {approval_id!r} of session {session_id!r}: {reason}")


class UnknownMessage(GenieGraphError, KeyError):
    """A group session's message log has no message with that number.

    Attributes:
        session_id: the session.
        seq: the number asked for.
        count: how many messages the log has.
    """

    code = "unknown_message"

    def __init__(self, session_id: str, seq: int, count: int) -> None:
        self.session_id = session_id
        self.seq = seq
        self.count = count
        known = f"messages 1 to {count}" if count else "no messages yet"
        super().__init__(f"session {session_id!r} has no message {seq}: its log has {known}. Ask for one of them.")

    def __str__(self) -> str:
        return str(self.args[0])


class NotAMember(GenieGraphError):
    """A group session names its members, and the sender is not one of them; nothing was logged.

    Attributes:
        session_id: the session.
        sender: who tried to write.
        members: the session's members.
    """

    code = "not_a_member"

    def __init__(self, session_id: str, sender: str, members: Sequence[str]) -> None:
        self.session_id = session_id
        self.sender = sender
        self.members = sorted(members)
        super().__init__(
            f"{sender!r} is not a member of group session {session_id!r} (members: {', '.join(self.members)}). "
            "Ask a member to add them with add_members."
        )
