"""Request and response bodies of the HTTP API (they are its OpenAPI schema)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedstream.schemas.defaults import MAX_TEXT_CHARS

Filter = dict[str, str | int | bool]


class SearchRequest(BaseModel):
    """A JSON search: a text, or an existing point's id ("more like this"). Pictures and sounds go to
    ``POST /search/file`` as ``multipart/form-data`` with a ``file`` part and ``kind`` = image | audio."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    point_id: uuid.UUID | None = Field(default=None, description="a point id, as search results give them")
    space: str | None = Field(default=None, description="named vector; default: the query's own space")
    k: int = Field(default=10, ge=1, le=200)
    where: Filter = Field(
        default_factory=dict, description="payload equality filters, e.g. {'metadata.topic': 'music'}"
    )
    modality: str | None = Field(default=None, description="only points of this modality")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positive: list[uuid.UUID] = Field(min_length=1, max_length=64)
    negative: list[uuid.UUID] = Field(default_factory=list, max_length=64)
    space: str
    k: int = Field(default=10, ge=1, le=200)
    where: Filter = Field(default_factory=dict)
    modality: str | None = None


class HitOut(BaseModel):
    id: uuid.UUID
    score: float
    payload: dict[str, Any]


class SearchResponse(BaseModel):
    space: str
    query: Literal["text", "image", "audio", "point", "recommend"]
    hits: list[HitOut]


class PointOut(BaseModel):
    id: uuid.UUID
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None


class SpaceOut(BaseModel):
    name: str
    dim: int
    model: str
    points: int


class SpacesResponse(BaseModel):
    collection: str
    points: int
    spaces: list[SpaceOut]


class Problem(BaseModel):
    """Every 4xx and 5xx body: what went wrong and, for media, the dead-letter reason code it would get."""

    detail: str
    reason: str | None = None


class Health(BaseModel):
    status: Literal["ok"]
    points: int
    backend: str
