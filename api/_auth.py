"""Optional API-key authentication: who is calling, so sessions can be bound to their caller.

``create_app(api_keys={key: name})`` turns it on; the keys live in ``app.state.api_keys``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ._errors import ApiError


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: the name its API key was given, or None when API keys are off."""

    name: str | None = None


_bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


async def current_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Caller:
    """The caller named by the request's API key; anyone when the app has no keys.

    Raises:
        ApiError: 401, keys are on and the request carries none that is valid.
    """
    keys: dict[str, str] = request.app.state.api_keys
    if not keys:
        return Caller()
    given = header or (bearer.credentials if bearer is not None else None)
    if given:
        for key, name in keys.items():  # compare with every key in constant time: no timing hints
            if hmac.compare_digest(given.encode(), key.encode()):
                return Caller(name)
    raise ApiError(
        401,
        "unauthorized",
        "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


CallerDep = Annotated[Caller, Depends(current_caller)]
