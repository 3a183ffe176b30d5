"""Running a state's template: one invocation, or a composite of them.

Composites behave as in Genie Flow: a list runs in sequence (each step sees the previous
output as ``previous_result``, ``parsed_previous_result`` and ``actor_input``), a dict runs its
values concurrently and yields a JSON object keyed like the dict, a ``MapTaskTemplate`` runs
one template per list item concurrently and yields a JSON list in order, and a callable is a
custom step called with the render data.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jmespath

from . import _tracing
from ._declaration import CompositeTemplate, MapTaskTemplate, NamedQueueTaskTemplate, SubFlow
from ._failures import OnError, apply_on_error, note_failure, state_override
from ._invokers import InvokerRegistry
from ._invokers._base import run_blocking
from ._preferences import PreferencesSource
from ._templates import TemplateLibrary
from ._usage import PriceTable, calling_template
from .errors import FlowDefinitionError, InvokerConfigError, InvokerError


class ProgressSink(Protocol):
    """Where a run reports its sub-tasks: how many there are, and how many are done."""

    def begin(self, key: str, total: int) -> None:
        """Start counting for invoker state ``key`` (counts reset per state, as in Genie Flow)."""

    def add_total(self, count: int) -> None: ...

    def add_done(self, count: int = 1) -> None: ...


class _NoProgress:
    def begin(self, key: str, total: int) -> None:
        pass

    def add_total(self, count: int) -> None:
        pass

    def add_done(self, count: int = 1) -> None:
        pass


NO_PROGRESS: ProgressSink = _NoProgress()


class RenderData(Protocol):
    """Builds fresh render data of the session's model: only the entries ``names`` (what a template
    reads), or all of them for None."""

    def __call__(self, names: Collection[str] | None = None, /) -> dict[str, Any]: ...


class InvokeOverride(Protocol):
    """Answers invoker templates in place of their invokers: ``genie_graph.testing``'s fakes.

    Called with the template's name, its rendered prompt, the render data it was rendered with
    and its directory's ``invoker:`` mapping. Returns the answer, or None to call the real
    invoker. Raising ``InvokerError`` is an invoker failure (``on_error`` applies).
    """

    async def __call__(
        self, template: str, prompt: str, render_data: Mapping[str, Any], invoker: Mapping[str, Any]
    ) -> str | None: ...


def parse_if_json(value: Any) -> Any:
    """``json.loads(value)`` for a JSON string, anything else unchanged (Genie Flow's rule)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _all_or_none(coroutines: Iterable[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run concurrently; on the first failure cancel the others (no orphan LLM calls) and re-raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _json_or_none(text: str) -> Any:
    """``json.loads(text)``, or None when it is not JSON (Genie Flow's ``parsed_previous_result``)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass
class CompositeRunner:
    """Renders and invokes composite templates for one compiled flow."""

    library: TemplateLibrary
    invokers: InvokerRegistry
    invoke_override: InvokeOverride | None = None
    """When set, asked first for each invoker template's answer (tests fake invokers with it)."""
    prices: PriceTable = field(default_factory=PriceTable)
    """Prices of the LLM calls, by model name (see ``GenieModel.usage``)."""
    preferences: PreferencesSource | None = None
    """Each user's preferences, for the templates of the runs made for them."""

    # ---- build time ---------------------------------------------------------------------
    def check(self, template: CompositeTemplate, flow: str, state_id: str) -> None:
        """Validate ``template`` (recursively) at build time, naming the state at fault."""
        if isinstance(template, NamedQueueTaskTemplate):
            self.check(template.template, flow, state_id)
        elif isinstance(template, MapTaskTemplate):
            if not isinstance(template.template_name, str):
                raise FlowDefinitionError(flow, "a MapTaskTemplate maps a single template name", [state_id])
            self.check(template.template_name, flow, state_id)
        elif isinstance(template, str):
            self.library.check(template)
            config = self.library.config_of(template)
            if config.invoker is not None:
                try:
                    self.invokers.check(config.invoker)
                except InvokerConfigError as exc:
                    raise InvokerConfigError(
                        f"state {state_id!r}, template {template!r}: the invoker: of {config.directory} "
                        f"(or its parents' meta.yaml) is wrong: {exc}"
                    ) from exc
        elif isinstance(template, list):
            if not template:
                raise FlowDefinitionError(flow, "an empty list is not a template", [state_id])
            for step in template:
                self.check(step, flow, state_id)
        elif isinstance(template, dict):
            if not template:
                raise FlowDefinitionError(flow, "an empty dict is not a template", [state_id])
            for part in template.values():
                self.check(part, flow, state_id)
        elif isinstance(template, SubFlow):
            raise FlowDefinitionError(
                flow, "a SubFlow is a state's whole template; it cannot be part of a composite template", [state_id]
            )
        elif not callable(template):
            raise FlowDefinitionError(
                flow,
                f"template {template!r} is not a name, list, dict, MapTaskTemplate, NamedQueueTaskTemplate or callable",
                [state_id],
            )

    def invokes(self, template: CompositeTemplate) -> bool:
        """Whether a state with this template is an invoker state (every composite is)."""
        if isinstance(template, str):
            return self.library.is_invoker(template)
        return True

    def count(self, template: CompositeTemplate) -> int:
        """Sub-tasks a run of ``template`` reports before maps expand (Genie Flow's counting)."""
        if isinstance(template, NamedQueueTaskTemplate):
            return self.count(template.template)
        if isinstance(template, list):
            return sum(self.count(t) for t in template) + len(template) - 1
        if isinstance(template, dict):
            return sum(self.count(t) for t in template.values()) + 1
        return 1

    # ---- run time -----------------------------------------------------------------------
    async def run(
        self,
        template: CompositeTemplate,
        render_data: RenderData,
        progress: ProgressSink = NO_PROGRESS,
        drag_net: Mapping[str, Any] | None = None,
    ) -> str:
        """Run ``template`` and return its output text.

        Args:
            template: the state's template.
            render_data: builds fresh render data of the session's model (called per step).
            progress: receives sub-task counts.
            drag_net: values laid over the render data (``previous_result``, ``map_value``, ...).

        Raises:
            InvokerError: an invoker failed and its directory declares no ``on_error``.
            OnErrorEvent: an invoker failed and ``on_error`` names an event to send.
        """
        if isinstance(template, NamedQueueTaskTemplate):
            return await self.run(template.template, render_data, progress, drag_net)
        if isinstance(template, str):
            result = await self._run_leaf(template, render_data, drag_net)
        elif isinstance(template, list):
            result = await self._run_chain(template, render_data, progress, drag_net)
        elif isinstance(template, dict):
            keys = list(template)
            parts = await _all_or_none(self.run(template[k], render_data, progress, drag_net) for k in keys)
            result = json.dumps({k: parse_if_json(r) for k, r in zip(keys, parts, strict=True)})
        elif isinstance(template, MapTaskTemplate):
            result = await self._run_map(template, render_data, progress, drag_net)
        elif isinstance(template, SubFlow):  # refused by check(): a sub-flow state runs no template
            raise TypeError("a SubFlow is run by its state's node, not as a template")
        else:
            result = await self._run_callable(template, render_data, drag_net)
        if not isinstance(template, list):  # a chain counts its hand-overs instead
            progress.add_done()
        return result

    async def _run_chain(
        self,
        steps: list[CompositeTemplate],
        render_data: RenderData,
        progress: ProgressSink,
        drag_net: Mapping[str, Any] | None,
    ) -> str:
        result = ""
        for index, step in enumerate(steps):
            if index > 0:
                progress.add_done()  # Genie Flow counts the hand-over between steps as a task
                parsed = _json_or_none(result)
                drag_net = {
                    "previous_result": result,
                    "parsed_previous_result": parsed,
                    "actor_input": result,
                    "parsed_actor_input": parsed,
                }
            result = await self.run(step, render_data, progress, drag_net)
        return result

    async def _run_map(
        self,
        template: MapTaskTemplate,
        render_data: RenderData,
        progress: ProgressSink,
        drag_net: Mapping[str, Any] | None,
    ) -> str:
        data = {**render_data(None), **(drag_net or {})}
        values = jmespath.search(template.list_attribute, data)
        if values is None:
            values = []
        elif not isinstance(values, list):
            values = [values]
        progress.add_total(len(values))

        async def one(index: int, value: Any) -> Any:
            overlay = {**(drag_net or {}), template.map_index_field: index, template.map_value_field: value}
            text = await self._run_leaf(template.template_name, render_data, overlay)
            progress.add_done()
            return parse_if_json(text)

        results = await _all_or_none(one(i, v) for i, v in enumerate(values))
        return json.dumps(list(results))

    async def _run_callable(
        self,
        step: Callable[..., Any],
        render_data: RenderData,
        drag_net: Mapping[str, Any] | None,
    ) -> str:
        data = {**render_data(None), **(drag_net or {})}
        if inspect.iscoroutinefunction(step):
            return _as_text(await step(data))
        result = await run_blocking(step, data)
        if inspect.isawaitable(result):
            result = await result
        return _as_text(result)

    async def _run_leaf(
        self,
        name: str,
        render_data: RenderData,
        drag_net: Mapping[str, Any] | None,
    ) -> str:
        def data_for(names: Collection[str] | None) -> dict[str, Any]:
            return {**render_data(names), **(drag_net or {})}

        # Only what the template reads is built; a test's fake invoker is shown everything.
        data = None if self.invoke_override is None else data_for(None)
        prompt = self.library.render_reading(name, data_for) if data is None else self.library.render(name, data)
        config = self.library.config_of(name)
        if config.invoker is None:
            return prompt  # a renderer template inside a composite contributes its text
        override = state_override()  # the running state's own on_failure, over the meta.yaml
        try:
            with calling_template(name), _tracing.invoking(name, config.invoker):
                if self.invoke_override is not None and data is not None:
                    try:
                        answer = await self.invoke_override(name, prompt, data, config.invoker)
                    except InvokerError as exc:
                        note_failure(name, 1, exc, 0.0)
                        raise
                    if answer is not None:
                        return answer
                return await self.invokers.pool_for(config.invoker).ainvoke(
                    prompt,
                    override.retry if override is not None else None,
                    lambda attempt, error, seconds: note_failure(name, attempt, error, seconds),
                )
        except InvokerError as exc:
            on_error = override.on_error if override is not None and override.on_error is not None else None
            on_error = on_error or OnError.parse(config.invoker.get("on_error"))
            if on_error is None:
                raise InvokerError(f"template {name!r}: {exc}") from exc
            return apply_on_error(on_error, self.library, data or data_for(None), exc)  # (its template reads others)
