"""Transition coverage: which declared transitions and condition outcomes scripted runs exercised.

Two things are counted for each model key:

* every declared transition, taken at least once;
* every transition with conditions that a later transition of the same event can follow: its
  conditions failing at least once, so that the later one was considered (a condition *failing*
  on the last transition of an event means the event is refused; that is counted, not required).

A transition with conditions that was taken is a condition that passed; one never taken, a
condition that never passed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .._flow import CompiledFlow, _label

if TYPE_CHECKING:
    from .._runtime import GenieFlow
    from ._runner import ScriptResult


@dataclass(frozen=True)
class DeclaredTransition:
    """A transition as declared on the machine.

    Attributes:
        source: the source state's id.
        index: its position among the source state's transitions (the order conditions are tried in).
        events: the events that take it.
        target: the target state's id.
        label: ``event [conditions]``, as diagrams label the edge.
        conditional: it has ``cond`` or ``unless`` conditions.
        can_fall_through: it is conditional and a later transition takes one of its events, so its
            conditions failing is a branch of its own.
    """

    source: str
    index: int
    events: tuple[str, ...]
    target: str
    label: str
    conditional: bool
    can_fall_through: bool

    def __str__(self) -> str:
        return f"{self.source} --{self.label}--> {self.target}"


@dataclass(frozen=True)
class TransitionRun:
    """A transition a scripted run took (or, with ``index`` None, an event refused because the
    conditions of all its transitions failed).

    Attributes:
        turn: the script's turn (0: the session's start).
        source: the source state's id.
        event: the event.
        index: the transition's position among the source state's transitions, or None.
        target: the target state's id, or None for a refusal.
    """

    turn: int
    source: str
    event: str
    index: int | None
    target: str | None


def declared_transitions(flow: CompiledFlow) -> tuple[DeclaredTransition, ...]:
    """The transitions of a compiled flow, in declaration order per state; then those of the flows it
    runs (sub-flows, interruptions), their states named by node (``address/asking_city``)."""
    found: list[DeclaredTransition] = []
    for owner in [flow, *flow.children.values()]:
        prefix = f"{owner.label}/" if owner is not flow else ""
        for state in owner.machine_class.states:
            transitions = list(state.transitions)
            for index, transition in enumerate(transitions):
                events = tuple(str(event) for event in transition.events)
                conditional = bool(list(transition.cond))
                later = {str(event) for t in transitions[index + 1 :] for event in t.events}
                found.append(
                    DeclaredTransition(
                        source=prefix + state.id,
                        index=index,
                        events=events,
                        target=prefix + transition.target.id,
                        label=_label(transition),
                        conditional=conditional,
                        can_fall_through=conditional and bool(later & set(events)),
                    )
                )
    return tuple(found)


@dataclass
class _FlowCoverage:
    machine: str
    transitions: tuple[DeclaredTransition, ...]
    taken: Counter[tuple[str, int]] = field(default_factory=Counter)
    fell_through: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Times a transition's conditions failed (for the last transition of an event: it was refused)."""
    scripts: int = 0

    def record(self, source: str, event: str, index: int | None) -> None:
        if index is not None:
            self.taken[(source, index)] += 1
        for declared in self.transitions:
            tried_before = index is None or declared.index < index
            if declared.source == source and declared.conditional and event in declared.events and tried_before:
                self.fell_through[(source, declared.index)] += 1

    def counts(self) -> tuple[int, int, int, int]:
        """(transitions taken, transitions, fall-throughs seen, fall-throughs possible)."""
        taken = sum(1 for t in self.transitions if self.taken[(t.source, t.index)])
        possible = [t for t in self.transitions if t.can_fall_through]
        fell = sum(1 for t in possible if self.fell_through[(t.source, t.index)])
        return taken, len(self.transitions), fell, len(possible)


def _percent(covered: int, total: int) -> float:
    return 100.0 if total == 0 else 100.0 * covered / total


class TransitionCoverage:
    """Which declared transitions and condition outcomes a set of scripted runs exercised.

    Pass one to :func:`~genie_graph.testing.run_script` (``coverage=``) or a ``ScriptRunner``, or
    :meth:`add` results; then read :attr:`percent`, :meth:`never_run`, or print :meth:`report`.
    Safe to share between threads.

    Example:
        >>> coverage = TransitionCoverage()
        >>> for script in load_scripts("graphs/q_and_a_cond.genie.yaml"):  # doctest: +SKIP
        ...     run_script(graphs.create_flow, None, script, coverage=coverage)
        >>> print(coverage.report())  # doctest: +SKIP
        >>> assert coverage.percent == 100  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._flows: dict[str, _FlowCoverage] = {}
        self._lock = threading.Lock()

    # ---- collecting ---------------------------------------------------------------------
    def declare(self, model_key: str, flow: CompiledFlow) -> None:
        """Count ``model_key``'s transitions from now on (0 runs until scripts take them).

        Raises:
            ValueError: another machine was declared under the same key.
        """
        self._declare(model_key, flow.name, declared_transitions(flow))

    def declare_flow(self, flow: GenieFlow, model_keys: Iterable[str] | None = None) -> None:
        """Declare every model key of a ``GenieFlow`` (or those given), so flows without scripts show up."""
        for key in model_keys if model_keys is not None else flow.model_keys:
            self.declare(key, flow.flow_of(key))

    def _declare(self, model_key: str, machine: str, transitions: tuple[DeclaredTransition, ...]) -> _FlowCoverage:
        with self._lock:
            known = self._flows.get(model_key)
            if known is None:
                known = self._flows[model_key] = _FlowCoverage(machine, transitions)
            elif known.machine != machine or known.transitions != transitions:
                raise ValueError(
                    f"model key {model_key!r} was counted for {known.machine}, not {machine}; "
                    "use one TransitionCoverage per flow"
                )
            return known

    def add(self, result: ScriptResult) -> None:
        """Count the transitions a scripted run took."""
        flow = self._declare(result.model_key, result.machine, result.declared)
        with self._lock:
            flow.scripts += 1
            for run in result.transitions:
                flow.record(run.source, run.event, run.index)

    def merge(self, other: TransitionCoverage) -> None:
        """Add another coverage's counts (e.g. from a pytest-xdist worker)."""
        self.merge_dict(other.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON data (:meth:`merge_dict` reads them back)."""
        with self._lock:
            return {
                key: {
                    "machine": flow.machine,
                    "scripts": flow.scripts,
                    "transitions": [asdict(t) | {"events": list(t.events)} for t in flow.transitions],
                    "taken": [[s, i, n] for (s, i), n in flow.taken.items()],
                    "fell_through": [[s, i, n] for (s, i), n in flow.fell_through.items()],
                }
                for key, flow in self._flows.items()
            }

    def merge_dict(self, data: Mapping[str, Any]) -> None:
        """Add counts written by :meth:`to_dict`."""
        for key, counts in data.items():
            transitions = tuple(
                DeclaredTransition(**{**t, "events": tuple(t["events"])}) for t in counts["transitions"]
            )
            flow = self._declare(key, counts["machine"], transitions)
            with self._lock:
                flow.scripts += int(counts["scripts"])
                for source, index, n in counts["taken"]:
                    flow.taken[(source, int(index))] += int(n)
                for source, index, n in counts["fell_through"]:
                    flow.fell_through[(source, int(index))] += int(n)

    # ---- reading ------------------------------------------------------------------------
    @property
    def model_keys(self) -> list[str]:
        """The model keys counted, in the order they were first seen."""
        return list(self._flows)

    @property
    def scripts(self) -> int:
        """How many scripted runs were added."""
        return sum(flow.scripts for flow in self._flows.values())

    def _flow(self, model_key: str) -> _FlowCoverage:
        try:
            return self._flows[model_key]
        except KeyError:
            raise KeyError(f"no transitions counted for model key {model_key!r}; counted: {self.model_keys}") from None

    def _totals(self, model_key: str | None) -> tuple[int, int, int, int]:
        flows = [self._flow(model_key)] if model_key is not None else list(self._flows.values())
        totals = [flow.counts() for flow in flows]
        return (
            sum(t[0] for t in totals),
            sum(t[1] for t in totals),
            sum(t[2] for t in totals),
            sum(t[3] for t in totals),
        )

    def percent(self, model_key: str | None = None) -> float:
        """Transitions taken and conditions failed, over those declared (all keys, or one); 100 when none."""
        taken, transitions, fell, possible = self._totals(model_key)
        return _percent(taken + fell, transitions + possible)

    def transition_percent(self, model_key: str | None = None) -> float:
        """Transitions taken over transitions declared (all keys, or one); 100 when none."""
        taken, transitions, _, _ = self._totals(model_key)
        return _percent(taken, transitions)

    def runs(self, model_key: str, transition: DeclaredTransition) -> int:
        """How many times ``transition`` of ``model_key`` was taken."""
        return self._flow(model_key).taken[(transition.source, transition.index)]

    def transitions(self, model_key: str) -> tuple[DeclaredTransition, ...]:
        """The declared transitions of ``model_key``."""
        return self._flow(model_key).transitions

    def exercised(self) -> list[tuple[str, DeclaredTransition]]:
        """``(model_key, transition)`` of every transition taken at least once."""
        return [
            (key, t) for key, flow in self._flows.items() for t in flow.transitions if flow.taken[(t.source, t.index)]
        ]

    def never_run(self) -> list[tuple[str, DeclaredTransition]]:
        """``(model_key, transition)`` of every transition never taken."""
        return [
            (key, t)
            for key, flow in self._flows.items()
            for t in flow.transitions
            if not flow.taken[(t.source, t.index)]
        ]

    def conditions_never_passed(self) -> list[tuple[str, DeclaredTransition]]:
        """Transitions with conditions that were never taken (their conditions never all passed)."""
        return [(key, t) for key, t in self.never_run() if t.conditional]

    def conditions_never_failed(self) -> list[tuple[str, DeclaredTransition]]:
        """Transitions whose conditions never failed although a later transition could take their event."""
        return [
            (key, t)
            for key, flow in self._flows.items()
            for t in flow.transitions
            if t.can_fall_through and not flow.fell_through[(t.source, t.index)]
        ]

    def report(self, *, show_exercised: bool = True) -> str:
        """The coverage as text: a line per flow, its transitions with their counts, then what never ran.

        Args:
            show_exercised: list the transitions that ran too, not only the gaps.
        """
        taken, transitions, fell, possible = self._totals(None)
        lines = [
            f"Transition coverage: {self.percent():.1f}% "
            f"({taken}/{transitions} transitions, {fell}/{possible} condition outcomes; {self.scripts} script(s))"
        ]
        for key, flow in self._flows.items():
            f_taken, f_transitions, f_fell, f_possible = flow.counts()
            lines.append("")
            lines.append(
                f"{key} ({flow.machine}): {self.percent(key):.1f}% "
                f"({f_taken}/{f_transitions} transitions, {f_fell}/{f_possible} condition outcomes; "
                f"{flow.scripts} script(s))"
            )
            for t in flow.transitions:
                runs = flow.taken[(t.source, t.index)]
                if runs and not show_exercised:
                    continue
                notes = []
                failed = flow.fell_through[(t.source, t.index)]
                if t.can_fall_through:
                    notes.append(f"conditions failed {failed}x")
                elif failed:
                    notes.append(f"conditions failed {failed}x: the event was refused")
                mark = f"{runs:>5}x" if runs else "NEVER "
                lines.append(f"  {mark}  {t}" + (f"  ({', '.join(notes)})" if notes else ""))
        gaps = [
            ("never run", self.never_run()),
            ("conditions never passed", self.conditions_never_passed()),
            ("conditions never failed (the next transition of the event never tried)", self.conditions_never_failed()),
        ]
        for title, items in gaps:
            if items:
                lines.append("")
                lines.append(f"{title}:")
                lines.extend(f"  {key}: {t}" for key, t in items)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"TransitionCoverage({self.percent():.1f}%, {len(self._flows)} flow(s), {self.scripts} script(s))"
