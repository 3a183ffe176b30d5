"""Template directories: ``meta.yaml`` inheritance, sandboxed Jinja2, and which states invoke.

A template name is a path relative to the template root (``q_and_a/intro.jinja2``), or
``prefix/file`` where ``prefix`` was registered with a directory anywhere on disk (Genie Flow's
``register_template_directory``). Each directory may hold a ``meta.yaml`` declaring ``invoker:``
or ``renderer:``; the mappings merge shallowly from the top directory down, as in Genie Flow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta as jinja2_meta
from jinja2.sandbox import SandboxedEnvironment

from . import _tracing
from .errors import InvokerConfigError, TemplateError

META_FILE = "meta.yaml"


@dataclass(frozen=True)
class DirectoryConfig:
    """The merged ``meta.yaml`` of one template directory.

    Attributes:
        directory: the directory the configuration applies to.
        invoker: the ``invoker:`` mapping, or None for a renderer directory.
        renderer: the ``renderer:`` mapping (empty when none was declared).
    """

    directory: Path
    invoker: Mapping[str, Any] | None = None
    renderer: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_invoker(self) -> bool:
        return self.invoker is not None


class TemplateLibrary:
    """Finds, renders and classifies templates under a root and registered prefixes.

    Args:
        template_root: the directory template names are relative to.
        strict_undefined: a missing variable is an error (Genie Flow renders it as "").
    """

    def __init__(self, template_root: str | Path | None = None, *, strict_undefined: bool = True) -> None:
        self.template_root = Path(template_root).resolve() if template_root is not None else None
        self._prefixes: dict[str, Path] = {}
        self._configs: dict[Path, DirectoryConfig] = {}
        self._variables: dict[str, frozenset[str] | None] = {}
        self._lock = threading.Lock()
        self._env = SandboxedEnvironment(
            loader=jinja2.FunctionLoader(self._load_source),
            undefined=jinja2.StrictUndefined if strict_undefined else jinja2.Undefined,
            autoescape=False,
            auto_reload=False,
        )

    # ---- registration -------------------------------------------------------------------
    def register_template_directory(self, prefix: str, directory: str | Path) -> None:
        """Map template names ``prefix/...`` to ``directory``.

        Raises:
            TemplateError: the prefix is taken by another directory, or the directory is missing.
        """
        path = Path(directory).resolve()
        if not path.is_dir():
            raise TemplateError(prefix, f"directory {str(path)!r} does not exist; pass an existing directory")
        known = self._prefixes.get(prefix)
        if known is not None and known != path:
            raise TemplateError(prefix, f"prefix already registered for {str(known)!r}; choose another prefix")
        self._prefixes[prefix] = path

    @property
    def directories(self) -> dict[str, Path]:
        """The registered prefixes and their directories (a copy)."""
        return dict(self._prefixes)

    # ---- lookup -------------------------------------------------------------------------
    def path_of(self, name: str) -> Path:
        """The file a template name refers to.

        Raises:
            TemplateError: no registered prefix or root holds it.
        """
        head, _, rest = name.partition("/")
        candidates: list[Path] = []
        if rest and head in self._prefixes:
            candidates.append(self._prefixes[head] / rest)
        if self.template_root is not None:
            candidates.append(self.template_root / name)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        where = [str(c) for c in candidates] or ["(no template root and no matching prefix)"]
        raise TemplateError(
            name,
            f"not found; looked at {', '.join(where)}. Give a path relative to the template root "
            f"({self.template_root}) or register its directory with register_template_directory",
        )

    def config_of(self, name: str) -> DirectoryConfig:
        """The merged ``meta.yaml`` configuration of the directory holding template ``name``."""
        return self._directory_config(self.path_of(name).parent)

    def is_invoker(self, name: str) -> bool:
        """True when template ``name`` lies in a directory that declares an ``invoker:``."""
        return self.config_of(name).is_invoker

    def _top_directory(self, directory: Path) -> Path:
        if self.template_root is not None and directory.is_relative_to(self.template_root):
            return self.template_root
        for prefix_dir in self._prefixes.values():
            if directory.is_relative_to(prefix_dir):
                return prefix_dir
        return directory

    def _directory_config(self, directory: Path) -> DirectoryConfig:
        with self._lock:
            cached = self._configs.get(directory)
        if cached is not None:
            return cached
        top = self._top_directory(directory)
        levels = [top, *reversed([p for p in directory.parents if p.is_relative_to(top) and p != top])]
        if directory != top:
            levels.append(directory)
        merged: dict[str, Any] = {}
        for level in levels:
            meta_path = level / META_FILE
            if not meta_path.is_file():
                continue
            try:
                meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise InvokerConfigError(f"{meta_path}: not valid YAML ({exc}); fix the file") from exc
            if not isinstance(meta, dict):
                raise InvokerConfigError(f"{meta_path}: must be a mapping with 'invoker:' or 'renderer:'")
            unknown = sorted(set(meta) - {"invoker", "renderer"})
            if unknown:
                raise InvokerConfigError(
                    f"{meta_path}: unknown key(s) {', '.join(map(str, unknown))}; a meta.yaml declares "
                    "either 'invoker:' or 'renderer:'"
                )
            if "invoker" in meta and "renderer" in meta:
                raise InvokerConfigError(f"{meta_path}: declares both 'invoker:' and 'renderer:'; keep exactly one")
            # A level that names one kind replaces the other kind it inherited.
            if "invoker" in meta:
                merged.pop("renderer", None)
            if "renderer" in meta:
                merged.pop("invoker", None)
            merged.update(meta)
        invoker = merged.get("invoker")
        if invoker is not None and not isinstance(invoker, Mapping):
            raise InvokerConfigError(
                f"{directory / META_FILE}: 'invoker:' must be a mapping with at least 'type:', got {invoker!r}"
            )
        if invoker is not None and "type" not in invoker:
            raise InvokerConfigError(
                f"{directory}: the inherited 'invoker:' mapping has no 'type:'; "
                "use echo, openai, python or a dotted GenieInvoker class path"
            )
        renderer = merged.get("renderer") or {}
        config = DirectoryConfig(directory, dict(invoker) if invoker is not None else None, dict(renderer))
        with self._lock:
            self._configs[directory] = config
        return config

    # ---- rendering ----------------------------------------------------------------------
    def _load_source(self, name: str) -> tuple[str, str, Any]:
        path = self.path_of(name)
        return path.read_text(encoding="utf-8"), str(path), lambda: True

    def check(self, name: str) -> None:
        """Load and compile template ``name``, raising ``TemplateError`` if it cannot be used."""
        self._get(name)

    def _get(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except TemplateError:
            raise
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(name, f"syntax error at line {exc.lineno}: {exc.message}") from exc

    @_tracing.traced_render
    def render(self, name: str, render_data: Mapping[str, Any]) -> str:
        """Render template ``name`` with ``render_data``.

        Raises:
            TemplateError: the template is missing, or uses a variable the render data lacks.
        """
        template = self._get(name)
        try:
            return template.render(render_data)
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                name,
                f"{exc.message}; available variables: {', '.join(sorted(render_data))}",
            ) from exc
        except Exception as exc:  # a filter choking on an undefined value hides which one it was
            missing = self._missing_variables(name, render_data)
            hint = f"; undefined variables: {', '.join(missing)}" if missing else ""
            raise TemplateError(name, f"{type(exc).__name__}: {exc}{hint}") from exc

    def render_reading(self, name: str, render_data: Callable[[frozenset[str] | None], Mapping[str, Any]]) -> str:
        """Render template ``name`` with only the render data it reads (see :meth:`variables`).

        ``render_data(names)`` builds the entries ``names`` (None: all of them). A template that
        fails is rendered again with all of them, so its error names every variable there is.

        Raises:
            TemplateError: as :meth:`render`.
        """
        names = self.variables(name)
        try:
            return self.render(name, render_data(names))
        except TemplateError:
            if names is None:
                raise
            return self.render(name, render_data(None))

    def variables(self, name: str) -> frozenset[str] | None:
        """The names template ``name`` reads from its render data (with those of the templates it
        includes, imports or extends), or None when that cannot be known (a template named at run time).

        Rendering builds only these: a session's dialogue is not dumped for a template that never
        reads it. Templates are compiled once (no auto-reload), so the answer is kept.
        """
        with self._lock:
            if name in self._variables:
                return self._variables[name]
        found = self._variables_of(name, set())
        with self._lock:
            self._variables[name] = found
        return found

    def _variables_of(self, name: str, seen: set[str]) -> frozenset[str] | None:
        seen.add(name)
        tree = self._env.parse(self._load_source(name)[0])
        names = set(jinja2_meta.find_undeclared_variables(tree))
        for referenced in jinja2_meta.find_referenced_templates(tree):
            if referenced is None:
                return None
            if referenced not in seen:
                more = self._variables_of(referenced, seen)
                if more is None:
                    return None
                names |= more
        return frozenset(names)

    def _missing_variables(self, name: str, render_data: Mapping[str, Any]) -> list[str]:
        source = self._load_source(name)[0]
        return sorted(jinja2_meta.find_undeclared_variables(self._env.parse(source)) - set(render_data))

    def render_string(self, source: str, render_data: Mapping[str, Any]) -> str:
        """Render a template given as text (e.g. ``on_error:`` of a meta.yaml)."""
        try:
            return self._env.from_string(source).render(render_data)
        except jinja2.TemplateError as exc:
            raise TemplateError("<inline>", str(exc)) from exc
