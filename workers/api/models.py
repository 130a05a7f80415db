"""Request and response bodies of the HTTP API (they are its OpenAPI schema)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from embedstream.schemas.defaults import MAX_QUERY_CHARS
from embedstream.workers.search import FILTER_KEY

# Integers a JSON client and the store agree on exactly (2^53: JSON numbers are doubles to many clients)
SafeInt = Annotated[int, Field(ge=-(2**53), le=2**53)]
Filter = dict[Annotated[str, StringConstraints(pattern=FILTER_KEY)], str | SafeInt | bool]
ONLY_PAYLOAD_PATHS: dict[str, Any] = {"additionalProperties": False}  # keys must match the pattern (not just may)


class SearchOptions(BaseModel):
    """What every search may say besides its query."""

    model_config = ConfigDict(extra="forbid")

    space: str | None = Field(default=None, description="named vector; default: the query's own space")
    k: int = Field(default=10, ge=1, le=200)
    where: Filter = Field(
        default_factory=dict,
        description="payload equality filters, e.g. {'metadata.topic': 'music'}",
        json_schema_extra=ONLY_PAYLOAD_PATHS,
    )
    modality: str | None = Field(default=None, description="only points of this modality")


class TextSearch(SearchOptions):
    """A text query, embedded into the space searched."""

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    mode: Literal["auto", "dense", "sparse", "hybrid"] | None = Field(
        default=None,
        description="dense: by meaning; sparse: BM25 keywords (names, codes, rare words); hybrid: both, fused as "
        "the server's api.hybrid_fusion says; auto: hybrid where the collection has keyword vectors, else dense; "
        "null or absent: the server's api.search_mode (auto unless configured)",
    )
    diversity: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        strict=True,  # a number, as the schema says: not a boolean read as 0 or 1
        description="every mode (by the dense vectors): maximal marginal relevance; 0 ranks by relevance alone, "
        "towards 1 each next hit is chosen more for being unlike those before it (near-duplicates give way)",
    )


class PointSearch(SearchOptions):
    """ "More like this": an existing point's own vector as the query."""

    point_id: uuid.UUID = Field(description="a point id, as search results give them")


SearchRequest = TextSearch | PointSearch
"""A JSON search: a text or a point id, never both (the schema says so: each form forbids the other's field).
Pictures and sounds go to ``POST /search/file`` as ``multipart/form-data``."""


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positive: list[uuid.UUID] = Field(min_length=1, max_length=64)
    negative: list[uuid.UUID] = Field(default_factory=list, max_length=64)
    space: str
    k: int = Field(default=10, ge=1, le=200)
    where: Filter = Field(default_factory=dict, json_schema_extra=ONLY_PAYLOAD_PATHS)
    modality: str | None = None


class PassageOf(BaseModel):
    """Where a chunk hit lies: its document, and its characters ``[start, end)`` there."""

    id: str = Field(description="the document's event id")
    point_id: uuid.UUID = Field(description="the document's own point")
    start: int | None
    end: int | None
    level: Literal["passage", "sentence"] = Field(description="a ~256-token passage, or one sentence")


class HitOut(BaseModel):
    id: uuid.UUID
    score: float = Field(description="cosine similarity (dense), BM25 (sparse), or the fused score (hybrid)")
    document: PassageOf | None = Field(
        default=None, description="for a chunk of a long text: its document and where in it; null otherwise"
    )
    payload: dict[str, Any]


class SearchResponse(BaseModel):
    space: str
    query: Literal["text", "image", "audio", "point", "recommend"]
    hits: list[HitOut]


class DocumentSearch(TextSearch):
    """A text query whose hits are grouped by document (a long text's chunks under it; a video's members)."""

    per_document: int = Field(default=3, ge=1, le=20, description="best passages (chunks) shown per document")


class PassageOut(BaseModel):
    """A hit inside a document: a chunk, with ``payload.start``/``payload.end`` its characters in the document."""

    id: uuid.UUID
    score: float
    payload: dict[str, Any]


class DocumentOut(BaseModel):
    kind: str = Field(description="document, video, or the modality of a point that is its own group")
    id: str = Field(description="the document's (video's, point's) event id")
    score: float = Field(description="its best hit's score")
    point_id: uuid.UUID = Field(description="the document's own point")
    payload: dict[str, Any] | None = Field(description="the document's point's payload (its full text); null if gone")
    passages: list[PassageOut]


class DocumentsResponse(BaseModel):
    space: str
    documents: list[DocumentOut]


class PointOut(BaseModel):
    id: uuid.UUID
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None


class BackfillOut(BaseModel):
    """A migration's backfill running on the server: points filled so far, and how it ended (``error``)."""

    to: str
    filled: int
    running: bool
    error: str | None = None


class SpaceOut(BaseModel):
    """A space: the model fenced to it and its points; while it migrates (``state`` migrating or switched), the
    new model, how many points hold its vectors, which model searches use, and the server's backfill if any."""

    name: str
    dim: int
    model: str
    points: int
    state: Literal["steady", "migrating", "switched"] = "steady"
    searched_model: str = ""
    to_model: str | None = None
    backfilled: int | None = None
    backfill: BackfillOut | None = None


LabelName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ClassifyRequest(BaseModel):
    """A new text to label: by ``labels`` (label → what it means: zero-shot), by the labelled points near it
    (``examples``: the payload field holding their label; kNN over the ``k`` nearest), or both (prototypes).
    ``margin``: a best label not ahead of the second by this much answers ``none``. One of ``labels`` and
    ``examples`` at least (the schema says so too)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["labels"], "properties": {"labels": {"type": "object", "minProperties": 1}}},
                {"required": ["examples"], "properties": {"examples": {"type": "string"}}},
            ]
        },
    )

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    space: str | None = None
    labels: dict[LabelName, Annotated[str, StringConstraints(min_length=1, max_length=2000)]] | None = Field(
        default=None, min_length=1, max_length=200
    )
    examples: Annotated[str, StringConstraints(pattern=FILTER_KEY)] | None = None
    k: int = Field(default=5, ge=1, le=50)
    margin: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _labels_or_examples(self) -> ClassifyRequest:
        if not self.labels and not self.examples:
            raise ValueError(
                "give labels (label → description), examples (the payload field of labelled points), or both"
            )
        return self


class ClassifyOut(BaseModel):
    space: str
    method: Literal["zero-shot", "knn", "prototypes"]
    label: str
    score: float
    margin: float


class SnapshotRequest(BaseModel):
    """A snapshot's file name, without the ``.tar`` (letters, digits, ``.``, ``_``, ``-``; no path)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SnapshotOut(BaseModel):
    """A snapshot written: where, of what, and the sha256 of each model its vectors come from."""

    path: str
    collection: str
    points: int
    models: dict[str, str]
    taken_at: str


class MigrateRequest(BaseModel):
    """Move a space to ``to`` (NAME or NAME@VERSION, built where the server runs)."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=200)


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
