"""The one error media handling raises: it carries the dead-letter reason, so callers never guess."""

from __future__ import annotations

from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.errors import EmbedstreamError


class MediaError(EmbedstreamError, ValueError):
    """Content that cannot become model input; ``reason`` is the dead-letter code, the message says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
