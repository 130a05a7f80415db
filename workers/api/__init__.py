"""The HTTP API and web page over the configured store (``embedstream serve``)."""

from embedstream.workers.api.app import create_app

__all__ = ["create_app"]
