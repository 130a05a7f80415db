"""Read the embeddings topic back: every record as it came (``tail``), or each point's newest state (``latest``).

What ``embedstream tail-embeddings`` runs, and a Python helper for consumers that want the same rules without
writing them: records decode with ``schemas.embeddings_wire.decode`` (both forms), and ``latest`` keeps, per point
id, the record with the newest version — a delete (a null value) removes the point unless a newer write follows —
exactly the rule the store applies, so the result equals the store's points whatever order duplicates came in.
Output: JSON lines (stdout or a ``.jsonl`` file) or Parquet (``.parquet``: one row per record, vectors as lists).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from embedstream.pipelines.io.kafka_clients import (
    assign_readable,
    consumer,
    output_limit,
    records_until,
)
from embedstream.schemas.embeddings_wire import EmbeddingRecord, decode
from embedstream.schemas.errors import UsageError
from embedstream.schemas.settings import Settings

READ_TIMEOUT_S = 300.0
FOLLOW_POLL_MS = 1000


@dataclass(frozen=True)
class Tailed:
    """One record of the topic with where it sits."""

    partition: int
    offset: int
    record: EmbeddingRecord

    def as_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, **self.record.as_json()}


def output_topic(settings: Settings, topic: str | None) -> str:
    chosen = topic or settings.pipeline.output_topic
    if chosen is None:
        raise UsageError("no embeddings topic: pass --topic or set pipeline.output_topic")
    return chosen


def tail(settings: Settings, topic: str | None = None, follow: bool = False) -> Iterator[Tailed]:
    """The topic's records from its start, partition by partition, up to the end it had when called; with
    ``follow``, then every new record as it arrives (until interrupted)."""
    name = output_topic(settings, topic)
    reader = consumer(settings.kafka, output_limit(settings.pipeline.max_event_bytes), reset="earliest")
    try:
        marks = assign_readable(reader, settings.kafka, name)
        for message in records_until(reader, marks, READ_TIMEOUT_S):
            yield Tailed(message.partition, message.offset, decode(message.key, message.value, message.headers))
        while follow:
            for messages in reader.poll(timeout_ms=FOLLOW_POLL_MS).values():
                for message in messages:
                    record = decode(message.key, message.value, message.headers)
                    yield Tailed(message.partition, message.offset, record)
    finally:
        reader.close()


def _newer(candidate: EmbeddingRecord, held: EmbeddingRecord) -> bool:
    """The store's rule: a write applies unless it is older than what is held; one without a version (a video's
    view) applies as it comes, and so does any record after one."""
    if candidate.version is None or held.version is None:
        return True
    return candidate.version >= held.version


def latest(records: Iterable[EmbeddingRecord]) -> dict[str, EmbeddingRecord]:
    """Each point id's newest record (records in topic order; ties: the later one), deletes dropped: the points
    the store holds."""
    newest: dict[str, EmbeddingRecord] = {}
    for record in records:
        held = newest.get(record.id)
        if held is None or _newer(record, held):
            newest[record.id] = record
    return {pid: record for pid, record in newest.items() if not record.deleted}


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()  # --follow: each record as it comes
        count += 1
    return count


def write_parquet(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """One row per record; vectors and payload as JSON text columns beside list columns of each dense vector."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = [
        {
            "id": row["id"],
            "deleted": row["deleted"],
            "version": row["version"],
            "collection_name": row["collection_name"],
            "vectors": [{"name": name, "vector": vector} for name, vector in row["vectors"].items()],
            "sparse": json.dumps(row["sparse"]),
            "payload": json.dumps(row["payload"], ensure_ascii=False),
            **{k: row[k] for k in ("partition", "offset") if k in row},
        }
        for row in rows
    ]
    pq.write_table(pa.Table.from_pylist(table), path)
    return len(table)


def run(
    settings: Settings,
    topic: str | None,
    follow: bool,
    newest_only: bool,
    out: Path | None,
    limit: int | None,
    stream: IO[str] = sys.stdout,
) -> int:
    """``tail-embeddings``: the records (or with ``newest_only`` each point's newest state) to ``out`` or
    ``stream``; how many were written."""
    if newest_only and follow:
        raise UsageError("--latest reads to the topic's end once; it cannot --follow")
    if follow and out is not None and out.suffix == ".parquet":
        raise UsageError("a Parquet file is written once it is complete; --follow writes JSON lines")
    if out is not None and out.suffix not in (".jsonl", ".parquet"):
        raise UsageError(f"--out {out}: write .jsonl or .parquet")
    started = time.monotonic()
    tailed = tail(settings, topic, follow)
    rows: Iterable[dict[str, Any]]
    if newest_only:
        rows = (r.as_json() for r in latest(t.record for t in tailed).values())
    else:
        rows = (t.as_json() for t in tailed)
    if limit is not None:
        rows = itertools.islice(rows, limit)
    if out is not None and out.suffix == ".parquet":
        count = write_parquet(rows, out)
    elif out is not None:
        with out.open("w", encoding="utf-8") as file:
            count = write_jsonl(rows, file)
    else:
        count = write_jsonl(rows, stream)
    print(f"{count} records in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return count
