"""FastAPI dependencies the routers declare: the searcher and settings of this app, and the scope an
operation needs.

``requires(scope)`` declares the two ways to present a key (``Authorization: Bearer`` and Qdrant's
``api-key`` header) as OpenAPI security schemes, so the schema says which operations need which key, and
checks the presented key's scope once more. The ``Gate`` middleware (``app.py``) has already turned away
requests without a valid key before their body was read; this check makes sure that no operation needs more
than the gate granted, whatever path it is mounted at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from embedstream.schemas.settings import Settings
from embedstream.workers.api.auth import SCOPE_RANK, Gate
from embedstream.workers.api.errors import ApiError
from embedstream.workers.search import Searcher

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="Authorization: Bearer KEY")
API_KEY = APIKeyHeader(name="api-key", auto_error=False, scheme_name="apiKey", description="api-key: KEY (Qdrant's)")


# The dependencies are coroutines although they only read app state: FastAPI runs a plain ``def`` dependency on
# its thread pool, a thread hop per request for an attribute read (serve_load: most of the event loop's time).
async def _searcher(request: Request) -> Searcher:
    found: Searcher = request.app.state.searcher
    return found


async def _settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


SearcherDep = Annotated[Searcher, Depends(_searcher)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def requires(scope: Literal["read", "admin"]) -> Callable[..., Awaitable[None]]:
    """A dependency: the request's key has at least ``scope`` (always true when no keys are configured)."""

    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        api_key: Annotated[str | None, Security(API_KEY)],
    ) -> None:
        gate: Gate = request.app.state.gate
        if not gate.enabled:
            return
        key = bearer.credentials if bearer is not None else api_key
        entry = gate.identify(key) if key else None
        if entry is None:
            raise ApiError(401, "this API needs a key: 'Authorization: Bearer KEY' or 'api-key: KEY'")
        if SCOPE_RANK[entry.scope] < SCOPE_RANK[scope]:
            raise ApiError(403, f"the key {entry.name!r} has the {entry.scope} scope; this needs {scope}")

    return check
