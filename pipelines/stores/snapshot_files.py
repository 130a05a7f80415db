"""What a restore reads from an unpacked snapshot before it trusts it, without opening it as a store.

Opening is not safe for a snapshot from elsewhere: qdrant-client's local mode keeps each point as a pickle and
unpickles every one when it opens (so a crafted point would run its code at ``store restore``, and again at every
``serve``). So the spaces are read from the store's own JSON (the embedded store's ``embedstream.json`` sidecar,
local mode's ``meta.json``), and every pickled point is first checked to hold nothing but qdrant-client's
pydantic models and plain data (``PlainPoints``): a pickle that names anything else is refused unread.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from embedstream.pipelines.stores.base import SpaceSpec, spaces_of
from embedstream.schemas.errors import EmbedstreamError

MODELS_MODULE = "qdrant_client.http.models.models"  # where local mode's PointStruct and SparseVector live
SPACES_SIDECAR = "embedstream.json"  # the embedded store's record (pipelines.stores.edge)
LOCAL_META = "meta.json"
LOCAL_METADATA_KEY = "embedstream_spaces"  # the collection metadata key (pipelines.stores.server)


class UnsafeSnapshotError(EmbedstreamError):
    """The snapshot holds data a restore must not load."""


class PlainPoints(pickle.Unpickler):
    """Unpickles qdrant-client's point records only: its pydantic models (their state is set as data, no code of
    the pickle's choosing runs) and plain values. Any other global — ``os.system``, ``builtins.eval`` — refuses."""

    def find_class(self, module: str, name: str) -> Any:
        if module == MODELS_MODULE:
            found = getattr(importlib.import_module(MODELS_MODULE), name, None)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
        raise UnsafeSnapshotError(f"a stored point names {module}.{name}, which is not a point's plain data")


def check_local_points(folder: Path) -> None:
    """Every pickled point of a local-mode store unpacked at ``folder`` is plain data, or ``UnsafeSnapshotError``."""
    for database in sorted(folder.rglob("storage.sqlite")):
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = connection.execute("SELECT point FROM points")
            for (value,) in rows:
                try:
                    PlainPoints(io.BytesIO(bytes(value))).load()
                except UnsafeSnapshotError:
                    raise
                except Exception as exc:  # truncated, or not a pickle at all
                    raise UnsafeSnapshotError(f"a stored point is not a readable record ({exc})") from exc
        except sqlite3.Error as exc:
            raise UnsafeSnapshotError(f"{database.name} is not a store's database ({exc})") from exc
        finally:
            connection.close()


def recorded_spaces(folder: Path, backend: str, collection: str) -> dict[str, SpaceSpec]:
    """The spaces the store unpacked at ``folder`` records, read as JSON (nothing is opened or unpickled)."""
    try:
        if backend == "edge":
            sidecar = folder / SPACES_SIDECAR
            return spaces_of(json.loads(sidecar.read_text())["spaces"]) if sidecar.exists() else {}
        meta = json.loads((folder / LOCAL_META).read_text())
        recorded = ((meta.get("collections") or {}).get(collection) or {}).get("metadata") or {}
        return spaces_of(recorded.get(LOCAL_METADATA_KEY) or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnsafeSnapshotError(f"the snapshot's store does not say what its spaces are ({exc})") from exc
