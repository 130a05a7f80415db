"""A catalog entry: what to build, from which pip-shipped weights, and what the result must look like."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class CatalogEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    modality: Literal["text", "image", "audio"]
    space: str
    dim: int
    recipe: str  # key into onnx_models.export.RECIPES
    weights_package: str  # the pip distribution that ships the weights
    source: str
    license: str
    pooling: Literal["mean", "cls", "last_token", "none"]
    normalize: bool
    max_length: int | None = None
    description: str = ""
    needs: tuple[str, ...] = ()  # catalog models built before this one (its recipe reads them from the cache)
