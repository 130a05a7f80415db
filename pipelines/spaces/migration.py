"""Move a space to another model while it is searched and written: migrate, switch, roll back, drop the old.

A space's vectors belong to one model (the fence, ``stores.check_spaces``). Changing the model used to mean a
new collection, filled by hand, with search down meanwhile. Here the space moves in place, in steps a user can
watch, stop and undo:

1. ``start`` adds a *shadow* named vector for the new model beside the space's own, and records it. From then
   on every point any ingest writes gets both models' vectors (``dual_write``), whichever model it runs.
2. ``backfill`` fills the shadow of the points already stored, from what the store keeps (``reembed``: a text
   from its payload, a document cut into its chunks again, a picture or sound from its ``uri`` or from its event
   read again from the topic), a page at a time, with progress. It writes a vector
   only where the point still lacks it (``VectorStore.update_vectors``): a point written meanwhile keeps the
   ingest's newer vector, and a backfill killed at any moment resumes where it stopped, doing nothing twice.
3. ``switch`` makes searches use the shadow (the searcher follows the record, no restart); ``rollback`` returns
   them to the old vectors, which were kept up to date all along.
4. ``drop_old`` removes the old vectors: the space now holds the new model only (in the shadow's named vector).
   ``cancel`` instead removes the shadow, before a switch.

A space moves only if every point in it can be made again by the new model: a text space of texts and chunks,
a picture space of pictures and video frames, a sound space of sounds. A text space holding pictures (ConSE maps
them into it) or a space holding video views is refused at ``start``, with the count. A picture whose bytes
cannot be had again (its topic no longer retains its event, its URI is gone) stops the backfill with its id:
cancel, or bring the bytes back (the topic, the files) and resume.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from embedstream.onnx_models.manifest import TextManifest, as_kind
from embedstream.onnx_models.registry import load_manifest
from embedstream.pipelines.spaces.reembed import REMADE, RemakeFrom, reembedder
from embedstream.pipelines.stores import Shadow, SpaceSpec, VectorStore
from embedstream.schemas.errors import ConflictError, NotFoundError, UsageError
from embedstream.schemas.point import CHUNK_MODALITY
from embedstream.schemas.settings import ModelSettings

BACKFILL_PAGE = 128
State = Literal["steady", "migrating", "switched"]
Step = Literal["switch", "rollback", "drop-old", "cancel"]


class MigrationError(UsageError, ConflictError):
    """A migration step that cannot be taken with the space as it is now (the API answers 409: a state conflict;
    the CLI, a usage error); the message says why and what to do instead."""


@dataclass(frozen=True)
class SpaceState:
    """A space as ``spaces list`` and ``GET /spaces`` show it."""

    name: str
    dim: int
    model: str
    sparse: bool
    points: int  # with a vector in the space (the searched one)
    state: State
    searched_model: str
    to_model: str | None = None  # migrating or switched: the new model
    backfilled: int | None = None  # points holding the new model's vector


def space_states(store: VectorStore) -> list[SpaceState]:
    states = []
    for spec in store.spaces().values():
        shadow = spec.shadow
        state: State = "steady" if shadow is None else "switched" if shadow.searched else "migrating"
        states.append(
            SpaceState(
                spec.name,
                spec.dim,
                spec.model,
                spec.sparse,
                store.count_vectors(spec.name),
                state,
                spec.searched[1],
                shadow.model if shadow else None,
                _holding(store, spec, shadow.vector) if shadow else None,
            )
        )
    return states


def _holding(store: VectorStore, spec: SpaceSpec, vector: str) -> int:
    """Points of the space holding the named vector ``vector``: all of them less those lacking it."""
    return store.count(having=spec.engine_name) - store.count(having=spec.engine_name, lacking=vector)


def _space(store: VectorStore, name: str) -> SpaceSpec:
    spaces = store.spaces()
    if name not in spaces:
        raise NotFoundError(f"the collection has no space {name!r}; it has {sorted(spaces)}")
    spec = spaces[name]
    if spec.sparse:
        raise MigrationError(f"space {name!r} is sparse (keywords): it has no model to migrate")
    return spec


def _record(store: VectorStore, changed: SpaceSpec) -> None:
    spaces = store.spaces()
    spaces[changed.name] = changed
    store.record_spaces(list(spaces.values()))


def start(store: VectorStore, remake: RemakeFrom, space: str, to: str) -> SpaceSpec:
    """Add the shadow for model ``to`` (``name`` or ``name@version``, built here) and record it; a migration to
    the same model already under way is returned as it is (``backfill`` then resumes it)."""
    model = remake.model
    spec = _space(store, space)
    target = load_manifest(model.cache_dir, to)[0]
    if spec.shadow is not None:
        if spec.shadow.model == target.ref:
            return spec
        raise MigrationError(
            f"space {space!r} is already migrating to {spec.shadow.model}: finish it (switch, drop-old) or cancel "
            "it first"
        )
    if target.ref == spec.model:
        raise MigrationError(f"space {space!r} already holds {target.ref}")
    if target.space != space:
        raise MigrationError(
            f"{target.ref} writes space {target.space!r}, not {space!r}: a migration keeps the space's name, so a "
            f"model built for another space cannot take it over (export it with --space {space}, or ingest into a "
            "new collection)"
        )
    current = load_manifest(model.cache_dir, spec.model)[0]  # dual writes need it too
    if current.modality != target.modality:
        raise MigrationError(f"{target.ref} embeds {target.modality}, the space holds {current.modality} vectors")
    remade = REMADE[target.modality]
    others = store.count_vectors(space) - sum(store.count({"modality": m}) for m in remade)
    if others > 0:
        raise MigrationError(
            f"space {space!r} holds {others} points that {target.ref} cannot make again (it makes "
            f"{', '.join(sorted(remade))}; e.g. pictures in a text space, video views): this space cannot migrate "
            "in place; ingest into a new collection with the new model"
        )
    chunked = target.modality == "text" and store.count({"modality": CHUNK_MODALITY})
    if chunked and _cutting(model, as_kind(current, TextManifest)) != _cutting(model, as_kind(target, TextManifest)):
        raise MigrationError(
            f"{target.ref} cuts long texts differently from {current.ref} (tokenizer or length), so the stored "
            "documents' chunks would not match it: ingest into a new collection with the new model"
        )
    vector = f"{space}~{_generation(spec) + 1}"
    try:
        store.add_vector(vector, target.dim)
    except Exception:  # left over from a cancel that died between its record and its drop: it is ours
        store.drop_vector(vector)
        store.add_vector(vector, target.dim)
    migrating = replace(spec, shadow=Shadow(vector, target.ref, target.dim))
    _record(store, migrating)
    return migrating


def _generation(spec: SpaceSpec) -> int:
    """The space's named vectors are ``<space>`` (generation 1), then ``<space>~2``, ``<space>~3``…"""
    found = re.fullmatch(rf"{re.escape(spec.name)}~(\d+)", spec.engine_name)
    return int(found.group(1)) if found else 1


def _cutting(model: ModelSettings, manifest: TextManifest) -> tuple[str, int]:
    folder = load_manifest(model.cache_dir, manifest.ref, verify=False)[1]
    tokenizer = (folder / manifest.tokenizer.file).read_bytes()
    return hashlib.sha256(tokenizer).hexdigest(), manifest.tokenizer.max_length


def backfill(
    store: VectorStore,
    remake: RemakeFrom,
    space: str,
    progress: Callable[[int], None] | None = None,
    page: int = BACKFILL_PAGE,
) -> int:
    """Give every stored point of the space the new model's vector (module docstring, step 2); how many were
    filled. ``progress`` is called with each page's count."""
    spec = _space(store, space)
    if spec.shadow is None:
        raise MigrationError(f"space {space!r} is not migrating (embedstream spaces migrate {space} --to MODEL)")
    shadow = spec.shadow
    remaker = reembedder(remake, shadow.model)
    try:
        filled = 0
        while True:
            points = list(store.scroll(having=spec.engine_name, lacking=shadow.vector, limit=page))
            if not points:
                break
            vectors = remaker.vectors([p.payload for p in points])
            updates = {p.id: {shadow.vector: v.tolist()} for p, v in zip(points, vectors, strict=True) if v is not None}
            if not updates:
                raise MigrationError(
                    f"{len(points)} points of space {space!r} cannot be embedded again from what the store keeps "
                    f"(e.g. {points[0].id}, modality {points[0].payload.get('modality')!r}: a text that no longer "
                    "cuts into its chunks, a picture or sound whose URI or event is gone; the log says which): "
                    "cancel the migration, or bring the bytes back and resume"
                )
            store.update_vectors(updates, lacking=shadow.vector)
            filled += len(updates)
            if progress is not None:
                progress(len(updates))
        store.flush()
        return filled
    finally:
        remaker.close()  # its Kafka reader, when it read inline events again


def take_step(store: VectorStore, remake: RemakeFrom, space: str, step: Step) -> SpaceSpec:
    """One of the steps after ``start`` and ``backfill``, by name (the CLI's and the API's)."""
    if step == "switch":
        return switch(store, remake, space)
    if step == "rollback":
        return rollback(store, space)
    return drop_old(store, space) if step == "drop-old" else cancel(store, space)


def switch(store: VectorStore, remake: RemakeFrom, space: str) -> SpaceSpec:
    """Searches use the new vectors. A last backfill pass first catches points written by an ingest that read
    the layout just before the migration began; then every point of the space must hold the new vector."""
    backfill(store, remake, space)
    spec = _space(store, space)
    assert spec.shadow is not None  # backfill refused otherwise
    if store.count(having=spec.engine_name, lacking=spec.shadow.vector):
        raise MigrationError(f"space {space!r} still has points without the new vector; run the switch again")
    switched = replace(spec, shadow=replace(spec.shadow, searched=True))
    _record(store, switched)
    return switched


def rollback(store: VectorStore, space: str) -> SpaceSpec:
    """Searches use the old vectors again (kept up to date all along); the migration stays, to switch again."""
    spec = _space(store, space)
    if spec.shadow is None or not spec.shadow.searched:
        raise MigrationError(f"space {space!r} is not switched: nothing to roll back")
    back = replace(spec, shadow=replace(spec.shadow, searched=False))
    _record(store, back)
    return back


def drop_old(store: VectorStore, space: str) -> SpaceSpec:
    """The space holds the new model only. Recorded first, then the old vectors dropped: a crash in between
    leaves an unused named vector, never a record pointing at a missing one."""
    spec = _space(store, space)
    shadow = spec.shadow
    if shadow is None or not shadow.searched:
        raise MigrationError(f"space {space!r} is not switched: switch (and check the answers) before dropping the old")
    moved = SpaceSpec(space, shadow.dim, shadow.model, vector=shadow.vector)
    _record(store, moved)
    store.drop_vector(spec.engine_name)
    return moved


def cancel(store: VectorStore, space: str) -> SpaceSpec:
    """Abandon a migration before its switch: the shadow and its vectors are removed."""
    spec = _space(store, space)
    shadow = spec.shadow
    if shadow is None:
        raise MigrationError(f"space {space!r} is not migrating")
    if shadow.searched:
        raise MigrationError(f"space {space!r} is switched to {shadow.model}: roll back first, then cancel")
    kept = replace(spec, shadow=None)
    _record(store, kept)
    store.drop_vector(shadow.vector)
    return kept
