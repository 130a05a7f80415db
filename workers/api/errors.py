"""Errors as the API answers them: a ``Problem`` body with a 4xx status for anything the caller can fix,
503 for what is not servable now, and 500 only for a fault of ours.

``blocking`` runs store and encoder work on the thread pool, ``answered`` awaits work that waits without a
thread (batched text searches); both map the project's own errors (``EmbedstreamError`` and kin) to their
status; any other exception is a bug and becomes a 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.stores import NoCollectionError
from embedstream.schemas.errors import ConflictError, EmbedstreamError, NotFoundError, UsageError
from embedstream.workers.api.models import Problem

log = logging.getLogger("embedstream.workers.api")
T = TypeVar("T")

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data",)


class ApiError(Exception):
    """An answer other than 2xx: its status, the detail the caller reads, and an optional reason code."""

    def __init__(self, status: int, detail: str, reason: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.reason, self.headers = status, detail, reason, headers


def problem(status: int, detail: str, reason: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(Problem(detail=detail, reason=reason).model_dump(), status_code=status, headers=headers)


def blocking(work: Callable[[], T]) -> Awaitable[T]:
    """``work`` on the thread pool, with every deliberate failure mapped to its status."""

    def guarded() -> T:
        with mapped_errors():
            return work()

    return run_in_threadpool(guarded)


async def answered(work: Awaitable[T]) -> T:
    """``work`` awaited (no thread of its own: ``Searcher.search_text``), its failures mapped as ``blocking``'s."""
    with mapped_errors():
        return await work


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """The project's deliberate failures as the statuses they answer with; anything else passes (a bug: 500)."""
    try:
        yield
    except MediaError as exc:
        raise ApiError(422, str(exc), exc.reason.value) from exc
    except NoCollectionError as exc:  # no collection yet (serve --ingest before its first write): not ready
        raise ApiError(503, str(exc), "no_collection") from exc
    except NotFoundError as exc:
        raise ApiError(404, str(exc)) from exc
    except ConflictError as exc:
        raise ApiError(409, str(exc)) from exc
    except UsageError as exc:
        raise ApiError(400, str(exc)) from exc
    except EmbedstreamError as exc:  # a model not built, a store locked or closed: not servable now
        raise ApiError(503, str(exc)) from exc


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid request')}"


def install_handlers(app: FastAPI) -> None:
    """Every error as a ``Problem``: ours (``ApiError``), an invalid request (422, or 415 when the body is not
    of the media type the operation declares), and anything unexpected (500, logged with its traceback)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, exc.reason, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        wrong_type = _wrong_media_type(request)
        if wrong_type is not None:
            return problem(415, wrong_type)
        return problem(422, validation_message(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}")


def _wrong_media_type(request: Request) -> str | None:
    """Why a request's body is of the wrong media type for its operation (None when it is of the right one)."""
    route = request.scope.get("route")
    accepted = getattr(route, "openapi_extra", None) or {}
    wanted: tuple[str, ...] = tuple(accepted.get("x-accepts", ()))
    if not wanted:
        return None
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given in wanted:
        return None
    hint = " (pictures and sounds go to POST /search/file as multipart/form-data)" if "json" in wanted[0] else ""
    return f"send {' or '.join(wanted)}, not {given or 'nothing'!r}{hint}"
