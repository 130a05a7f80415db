"""The embeddings topic's records: what a written point or an applied delete looks like on the output topic.

One record per point id and bundle, keyed by the point id (UTF-8), so a compacted topic keeps each point's last
state. Two value forms, chosen by ``pipeline.output_format``:

* ``qdrant``: the JSON message Qdrant's own Kafka Connect sink reads —
  ``{"collection_name", "id", "vector": {name: [floats] | {"indices", "values"}}, "payload"}`` — so that sink loads
  the topic into another Qdrant unchanged. Dense vectors are written with 9 significant digits, the fewest that
  bring every float32 back bit for bit (a third as long as a double's repr, and three times faster to write).
* ``binary``: ``ESV1``, a 4-byte little-endian header length, a JSON header (``collection_name``, ``id``,
  ``payload``, ``dense``: ``[[name, dim], …]``, ``sparse``: ``[[name, nnz], …]``), then each dense vector as
  float32 little-endian and each sparse one as nnz uint32 indices and nnz float32 values, in the header's order:
  about a third of the JSON's bytes, decoded without parsing numbers.

A delete is a Kafka tombstone: the point's key with a null value. Every record carries the version it was written
at in the headers ``es-ver`` and ``es-ver-tie`` (decimal ASCII; absent for an unversioned point: a video's view),
and its form in ``es-format``, so a consumer can apply the store's own rule — newest version wins — and a
duplicate (a bundle retried after a crash) carries the same key and version as the first copy.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from embedstream.schemas.version import Version

OutputFormat = Literal["qdrant", "binary"]
FORMAT_HEADER = "es-format"
MAJOR_HEADER = "es-ver"
TIE_HEADER = "es-ver-tie"
MAGIC = b"ESV1"
_LENGTH = struct.Struct("<I")


class WireFormatError(ValueError):
    """A record that is neither form (another producer's record on the topic, or a truncated one)."""


@dataclass(frozen=True)
class EmbeddingRecord:
    """One record of the embeddings topic, decoded: a point's state, or (``deleted``) its removal."""

    id: str
    collection: str | None = None
    vectors: dict[str, list[float]] = field(default_factory=dict)  # dense, by the store's named vector
    sparse: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)  # name → (indices, values)
    payload: dict[str, Any] = field(default_factory=dict)
    version: Version | None = None
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready form (what ``tail-embeddings`` prints)."""
        return {
            "id": self.id,
            "deleted": self.deleted,
            "version": list(self.version) if self.version is not None else None,
            "collection_name": self.collection,
            "vectors": self.vectors,
            "sparse": {name: {"indices": i, "values": v} for name, (i, v) in self.sparse.items()},
            "payload": self.payload,
        }


def headers_of(version: Version | None, fmt: OutputFormat) -> list[tuple[str, bytes]]:
    """The record's headers: its form and (when it has one) its version."""
    headers = [(FORMAT_HEADER, fmt.encode())]
    if version is not None:
        headers += [(MAJOR_HEADER, str(version.major).encode()), (TIE_HEADER, str(version.tie).encode())]
    return headers


def encode(record: EmbeddingRecord, fmt: OutputFormat) -> bytes:
    """A point's value in ``fmt`` (a delete has none: send ``None``)."""
    if record.deleted:
        raise ValueError("a delete is a tombstone: its value is null")
    if fmt == "qdrant":
        named = [f"{_json(name)}:[{_floats(vector)}]" for name, vector in record.vectors.items()]
        named += [
            f"{_json(name)}:{_json({'indices': indices, 'values': values})}"
            for name, (indices, values) in record.sparse.items()
        ]
        return (
            f'{{"collection_name":{_json(record.collection)},"id":{_json(record.id)},'
            f'"vector":{{{",".join(named)}}},"payload":{_json(record.payload)}}}'
        ).encode()
    header = {
        "collection_name": record.collection,
        "id": record.id,
        "payload": record.payload,
        "dense": [[name, len(v)] for name, v in record.vectors.items()],
        "sparse": [[name, len(i)] for name, (i, _) in record.sparse.items()],
    }
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    parts = [MAGIC, _LENGTH.pack(len(head)), head]
    parts += [struct.pack(f"<{len(v)}f", *v) for v in record.vectors.values()]
    for indices, values in record.sparse.values():
        parts += [struct.pack(f"<{len(indices)}I", *indices), struct.pack(f"<{len(values)}f", *values)]
    return b"".join(parts)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@functools.cache
def _float_format(length: int) -> str:
    return ",".join(["%.9g"] * length)


def _floats(vector: Sequence[float]) -> str:
    """A float32 vector as JSON numbers: 9 significant digits round-trip every float32 exactly."""
    if not math.isfinite(sum(vector)):  # JSON has no NaN or infinity (one makes the sum NaN or infinite)
        raise ValueError("a vector holds NaN or infinity")
    return _float_format(len(vector)) % tuple(vector)


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    return next((value for key, value in headers or () if key == name), None)


def version_of(headers: Sequence[tuple[str, bytes]] | None) -> Version | None:
    major, tie = _header(headers, MAJOR_HEADER), _header(headers, TIE_HEADER)
    return Version(int(major), int(tie or b"0")) if major is not None else None


def decode(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
) -> EmbeddingRecord:
    """A record of the topic back as an ``EmbeddingRecord``; the form is told by the value's first bytes (the
    ``es-format`` header says it too, for consumers that route on headers)."""
    if key is None:
        raise WireFormatError("an embeddings record is keyed by its point id; this one has no key")
    version = version_of(headers)
    point = key.decode()
    if value is None:
        return EmbeddingRecord(id=point, version=version, deleted=True)
    try:
        if value.startswith(MAGIC):
            return _decode_binary(value, version)
        return _decode_json(json.loads(value), version)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise WireFormatError(f"record {point!r} is not an embeddings record: {exc}") from exc


def _decode_json(body: Mapping[str, Any], version: Version | None) -> EmbeddingRecord:
    vectors: dict[str, list[float]] = {}
    sparse: dict[str, tuple[list[int], list[float]]] = {}
    named = body["vector"]
    for name, vector in named.items() if isinstance(named, Mapping) else [("", named)]:
        if isinstance(vector, Mapping):
            sparse[name] = (list(vector["indices"]), _float32(vector["values"]))
        else:
            vectors[name] = _float32(vector)
    payload = dict(body.get("payload") or {})
    return EmbeddingRecord(str(body["id"]), body.get("collection_name"), vectors, sparse, payload, version)


def _float32(values: Sequence[float]) -> list[float]:
    """Numbers read from JSON as the float32 values they were written from."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def _decode_binary(value: bytes, version: Version | None) -> EmbeddingRecord:
    (length,) = _LENGTH.unpack_from(value, len(MAGIC))
    at = len(MAGIC) + _LENGTH.size
    header = json.loads(value[at : at + length])
    at += length
    vectors: dict[str, list[float]] = {}
    for name, dim in header["dense"]:
        vectors[name] = list(struct.unpack_from(f"<{dim}f", value, at))
        at += 4 * dim
    sparse: dict[str, tuple[list[int], list[float]]] = {}
    for name, nnz in header["sparse"]:
        indices = list(struct.unpack_from(f"<{nnz}I", value, at))
        values = list(struct.unpack_from(f"<{nnz}f", value, at + 4 * nnz))
        sparse[name] = (indices, values)
        at += 8 * nnz
    if at != len(value):
        raise WireFormatError(f"{len(value) - at} bytes after the last vector")
    return EmbeddingRecord(
        str(header["id"]), header.get("collection_name"), vectors, sparse, dict(header["payload"]), version
    )
