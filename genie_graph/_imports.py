"""Import an object named by ``package.module:attribute`` or ``package.module.attribute``."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InvokerConfigError


def import_object(path: str) -> Any:
    """Import and return the object ``path`` names.

    Raises:
        InvokerConfigError: the module or attribute does not exist.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise InvokerConfigError(f"{path!r} is not 'package.module:attribute' or 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvokerConfigError(f"cannot import module {module_name!r} for {path!r}: {exc}") from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise InvokerConfigError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    return obj
