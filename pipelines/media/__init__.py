"""Turning event content into model input: fetch (inline bytes or URI), decode safely, bound, normalize."""

from embedstream.pipelines.media.errors import MediaError

__all__ = ["MediaError"]
