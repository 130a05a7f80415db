"""Snapshot and restore of a store this process holds: one tar file with the store's own files and, beside
them, what the vectors mean.

A snapshot is taken while nothing writes (the store's lock, or ``serve``'s shared store's), after a flush, so
its files are a consistent store: ``serve --ingest`` takes one while it ingests through ``POST
/store/snapshot``. ``embedstream-snapshot.json``, the archive's first member, records the collection, the
spaces (models, named vectors, a migration under way), the point count, and the sha256 of every model whose
vectors it holds. ``restore`` reads it first and refuses a snapshot whose models are not built here with those
exact weights — restored vectors next to queries embedded by other weights would answer wrongly, silently —
and refuses to write over an existing store.

Backends: the embedded store (its shard folder) and qdrant-client's local mode (its folder). A Qdrant server
has its own snapshot API (``POST /collections/{name}/snapshots``), and embedstream's record of the spaces lives
in the collection's metadata, so it travels inside such a snapshot: ``snapshot`` says so instead of copying.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedstream.onnx_models.bm25 import BM25_REF
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest
from embedstream.pipelines.stores.base import SpaceSpec, VectorStore, record_of, spaces_of
from embedstream.pipelines.stores.snapshot_files import check_local_points, recorded_spaces
from embedstream.schemas.errors import EmbedstreamError, UsageError
from embedstream.schemas.settings import Settings

META = "embedstream-snapshot.json"
MODEL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?")
FORMAT = 1


class SnapshotError(EmbedstreamError):
    """A snapshot that cannot be taken or restored here; the message says why and what to do."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``embedstream-snapshot.json`` records."""

    collection: str
    backend: str
    taken_at: str
    points: int
    spaces: dict[str, SpaceSpec]
    models: dict[str, str]  # model ref → the sha256 of its ONNX file

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "collection": self.collection,
            "backend": self.backend,
            "taken_at": self.taken_at,
            "points": self.points,
            "spaces": record_of(list(self.spaces.values())),
            "models": self.models,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotInfo:
        if data.get("format") != FORMAT:
            raise SnapshotError(f"snapshot format {data.get('format')!r} is not one this version reads ({FORMAT})")
        spaces = spaces_of(data["spaces"])
        return cls(data["collection"], data["backend"], data["taken_at"], data["points"], spaces, data["models"])


def models_of(spaces: dict[str, SpaceSpec]) -> list[str]:
    """The built models whose vectors the spaces hold (primary and migration shadow; not BM25, which is no
    model file, nor the fused space, whose parts are spaces of their own)."""
    refs: list[str] = []
    for spec in spaces.values():
        for ref in spec.written().values():
            if ref and ref != BM25_REF and not ref.startswith("fused(") and ref not in refs:
                refs.append(ref)
    return refs


def describe(settings: Settings, spaces: dict[str, SpaceSpec], points: int) -> SnapshotInfo:
    """The record of a snapshot of these spaces, with each model's sha256 as built here."""
    models: dict[str, str] = {}
    for ref in models_of(spaces):
        try:
            models[ref] = load_manifest(settings.model.cache_dir, ref, verify=False)[0].sha256
        except ModelNotBuiltError:
            models[ref] = ""  # not built here: recorded, and a restore anywhere says it cannot check it
    taken_at = datetime.now(UTC).isoformat()
    return SnapshotInfo(settings.qdrant.collection, settings.qdrant.backend, taken_at, points, spaces, models)


def take(store: VectorStore, settings: Settings, target: Path) -> SnapshotInfo:
    """Snapshot ``store`` into the tar ``target``: flushed, described and copied while nothing else uses it (a
    ``SharedStore``'s lock is held throughout: ``serve --ingest``'s pipeline waits, then carries on)."""
    with store.holding():
        store.flush()
        folder = store.files()
        info = describe(settings, store.spaces(), store.count())
        write_archive(folder, target, info)
    return info


def write_archive(folder: Path, target: Path, info: SnapshotInfo) -> None:
    """``folder``'s files under ``store/`` in the tar ``target`` (written beside and renamed: never half a
    snapshot under its name), after ``embedstream-snapshot.json``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    draft = target.with_name(target.name + ".partial")
    with tarfile.open(draft, "w") as archive:
        meta = json.dumps(info.as_json(), indent=2).encode()
        entry = tarfile.TarInfo(META)
        entry.size = len(meta)
        archive.addfile(entry, io.BytesIO(meta))
        archive.add(folder, arcname="store")
    draft.replace(target)


def read_info(archive_path: Path) -> SnapshotInfo:
    try:
        with tarfile.open(archive_path) as archive:
            member = archive.extractfile(META)
            if member is None:
                raise KeyError(META)
            return SnapshotInfo.from_json(json.loads(member.read()))
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise SnapshotError(f"{archive_path} is not an embedstream snapshot ({exc})") from exc


def check_models(settings: Settings, info: SnapshotInfo, held: dict[str, SpaceSpec] | None = None) -> None:
    """Every model the snapshot's vectors come from must be built here, with the same weights. ``held``: the
    spaces the restored store itself records; a model they name is checked even when the snapshot's description
    leaves it out (an edited ``models`` list must not let an unchecked model through)."""
    held = held or {}
    models = dict(info.models)
    for ref in models_of(held):
        models.setdefault(ref, "")
    problems = [f"the store records no model for its space {name!r}" for name, spec in held.items() if not spec.model]
    for ref, sha256 in models.items():
        if not MODEL_REF.fullmatch(ref):  # it becomes a path under the model cache: "../../x" must not
            problems.append(f"{ref!r} is not a model name")
            continue
        try:
            built = load_manifest(settings.model.cache_dir, ref, verify=False)[0]
        except ModelNotBuiltError:
            problems.append(f"{ref} is not built here (embedstream models build {ref.split('@')[0]})")
            continue
        if not sha256:
            problems.append(f"{ref} was not built where the snapshot was taken: its weights cannot be compared")
        elif built.sha256 != sha256:
            problems.append(f"{ref} here has other weights (sha256 {built.sha256[:12]}…, snapshot {sha256[:12]}…)")
    if problems:
        raise SnapshotError("the snapshot's vectors need models this machine does not have: " + "; ".join(problems))


def safe_members(archive: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """The archive's ``store/`` members as plain files and folders under ``target``, or ``SnapshotError`` before
    anything is written. A store has no links, devices or absolute or ``..`` paths, so any of them is refused
    (a chain of symlinks longer than PATH_MAX gets past ``extractall(filter="data")`` on Pythons before 3.11.13,
    3.12.11 and 3.13.4: the check here does not depend on the Python version), and each final path must stay
    inside ``target``."""
    root = target.resolve()
    chosen: list[tarfile.TarInfo] = []
    for member in archive.getmembers():  # every member is checked, extracted or not
        name = member.name
        if not (member.isfile() or member.isdir()):
            raise SnapshotError(f"the snapshot holds {name!r}, which is not a plain file or folder: refused")
        if name.startswith("/") or ".." in Path(name).parts:
            raise SnapshotError(f"the snapshot holds a path outside its store ({name!r}): refused")
        if not (name == "store" or name.startswith("store/")):
            continue
        relative = Path(name.removeprefix("store").lstrip("/"))
        final = (root / relative).resolve()
        if final != root and root not in final.parents:
            raise SnapshotError(f"the snapshot's {name!r} would be written outside {target}: refused")
        if str(relative) not in ("", "."):
            member.name = str(relative)
            chosen.append(member)
    return chosen


def restore(settings: Settings, archive_path: Path) -> SnapshotInfo:
    """Unpack ``archive_path`` as the store the settings name (embedded or local), after ``check_models``;
    an existing store there is never overwritten. The files are unpacked beside the target first, the spaces the
    store itself records are checked too, and only then is the folder moved into place."""
    info = read_info(archive_path)
    qdrant = settings.qdrant
    if qdrant.backend != info.backend:
        raise SnapshotError(f"the snapshot is of a {info.backend} store; these settings name a {qdrant.backend} one")
    if qdrant.backend == "server" or qdrant.path == ":memory:":
        raise UsageError("restore writes files: point qdrant.path at a folder (a server restores its own snapshots)")
    if qdrant.backend == "local" and qdrant.collection != info.collection:
        raise SnapshotError(
            f"a local-mode snapshot keeps its collection's name: set qdrant.collection to {info.collection!r}"
        )
    check_models(settings, info)
    target = Path(qdrant.path) / qdrant.collection if qdrant.backend == "edge" else Path(qdrant.path)
    if target.exists() and any(target.iterdir()):
        raise SnapshotError(f"{target} already holds a store: restore into another path or collection")
    staging = target.with_name(f".{target.name}.restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive_path) as archive:
            members = safe_members(archive, staging)
            _check_room(members, staging)
            archive.extractall(staging, members=members, filter="data")
        if qdrant.backend == "local":
            check_local_points(staging)
        check_models(settings, info, recorded_spaces(staging, qdrant.backend, qdrant.collection))
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _check_room(members: list[tarfile.TarInfo], staging: Path) -> None:
    """A compressed archive can unpack to far more than its size: what it holds must fit the free space."""
    needed = sum(m.size for m in members if m.isfile())
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise SnapshotError(f"the snapshot unpacks to {needed} bytes; the disk has {free} free: refused")
