"""Search the store with a text query: embed it with the space's model, return the nearest points."""

from __future__ import annotations

from collections.abc import Mapping

from onnx_models.text_encoder import TextEncoder
from pipelines.stores import Hit, open_store
from schemas.settings import Settings


def parse_where(pairs: list[str]) -> dict[str, str | int | bool]:
    """``key=value`` filters on payload fields (``metadata.topic=space``); ints and booleans are typed."""
    where: dict[str, str | int | bool] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"filter {pair!r} is not key=value")
        value: str | int | bool = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
        where[key] = value
    return where


class TextSearcher:
    """Holds the encoder and the store open for many queries (the CLI opens one per call)."""

    def __init__(self, settings: Settings) -> None:
        self.encoder = TextEncoder.from_settings(settings.model)
        self.store = open_store(settings.qdrant)

    def search(self, query: str, limit: int = 5, where: Mapping[str, str | int | bool] | None = None) -> list[Hit]:
        vector = self.encoder.embed([query])[0]
        return self.store.search(self.encoder.space, vector.tolist(), limit, where)

    def close(self) -> None:
        self.store.close()


def search_text(
    settings: Settings, query: str, limit: int = 5, where: Mapping[str, str | int | bool] | None = None
) -> list[Hit]:
    searcher = TextSearcher(settings)
    try:
        return searcher.search(query, limit, where)
    finally:
        searcher.close()
