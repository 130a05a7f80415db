"""The API's middlewares — the key gate, the body limit and the request metrics — as plain ASGI callables.

Why not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` wraps every request in a task group, a
memory stream and a streaming response, and with two of them that was a measurable share of a search's server
time under load (``bench/reports/serve_load.md``). These see the same scope and answer the same way, with none
of that per-request machinery.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from starlette.datastructures import Headers

from embedstream.workers.api.errors import problem

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from embedstream.workers.api.app import ApiMetrics
    from embedstream.workers.api.auth import Gate


class GateMiddleware:
    """Answers 401/403/429 (a ``Problem``) before the body is read when ``gate`` denies the request."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        denial = self.gate.check(scope["path"], Headers(scope=scope), client[0] if client else "unknown")
        if denial is None:
            await self.app(scope, receive, send)
            return
        headers = {}
        if denial.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if denial.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(denial.retry_after_s)))
        await problem(denial.status, denial.detail, headers=headers)(scope, receive, send)


class MetricsMiddleware:
    """Counts each HTTP request by route and status and observes its latency (until the response is sent)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # an exception before the response starts reaches the client as a 500

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


class BodyTooLarge(Exception):
    """A request body passed the limit while it was being received."""


class BodyLimitMiddleware:
    """Refuses a request body over ``limit`` bytes with 413: at once when its ``Content-Length`` says so (nothing
    of it is read), and a chunked or understated body as soon as what arrived passes the limit (nothing past it
    is read or spooled to disk). Without it an 80 MB upload was written to a temporary file before the route
    could refuse it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        state = {"over": False, "started": False, "refused": False}

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    state["over"] = True
                    raise BodyTooLarge  # whatever the route makes of it (FastAPI: a 400), 413 goes out instead
            return message

        async def sending(message: Message) -> None:
            if state["over"] and not state["started"]:
                if not state["refused"]:
                    state["refused"] = True
                    await self._refuse(scope, receive, send)
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if state["started"]:
                raise
            if not state["refused"]:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is over the limit of {self.limit} bytes"
        await problem(413, detail, headers={"Connection": "close"})(scope, receive, send)
