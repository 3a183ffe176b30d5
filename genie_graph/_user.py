"""The user a session belongs to, as Genie Flow keeps it in secondary storage (``user_info``)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, computed_field

from genie_graph._model import VersionedModel

__all__ = ["User"]

_EMAIL = re.compile(r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$")


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError(f"{value!r} contains characters that are not printable (control characters, line breaks)")
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not a valid email address (expected name@domain.tld)")
    return value


def _printable_properties(value: dict[str, str] | None) -> dict[str, str] | None:
    for key, item in (value or {}).items():
        if not key.isprintable():
            raise ValueError(f"custom property name {key!r} contains characters that are not printable")
        if not item.isprintable():
            raise ValueError(f"custom property {key!r} has a value with characters that are not printable: {item!r}")
    return value


Printable = Annotated[str, AfterValidator(_printable)]


class User(VersionedModel):
    """The person a session is for.

    Attributes:
        email: the user's email address.
        firstname: the user's first name (printable characters only).
        lastname: the user's last name (printable characters only).
        custom_properties: extra printable ``name -> value`` facts about the user.

    Example:
        >>> User(email="ada@example.org", firstname="Ada", lastname="Lovelace").name
        'Ada Lovelace'
    """

    model_config = ConfigDict(json_schema_extra={"schema_version": 0})

    email: Annotated[str, AfterValidator(_email)] = Field(description="the email address of the user")
    firstname: Printable = Field(description="the first name of the user")
    lastname: Printable = Field(description="the last name of the user")
    custom_properties: Annotated[dict[str, str] | None, AfterValidator(_printable_properties)] = Field(
        default=None, description="extra facts about the user"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        """The full name: first name, a space, last name."""
        return f"{self.firstname} {self.lastname}"
