"""Where built models live on disk and how a manifest is found and checked.

Layout: ``<cache_dir>/<name>/<version>/{manifest.json, model.onnx, tokenizer.json}``. The cache is filled by
``embedstream models build NAME`` (export needs the ``export`` extra); running needs only what is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import TypeVar

from embedstream.onnx_models.manifest import (
    MANIFEST_FILE,
    ManifestBase,
    ModelKindError,
    ModelManifest,
    as_kind,
    parse_manifest,
)
from embedstream.schemas.errors import EmbedstreamError

Kind = TypeVar("Kind", bound=ManifestBase)
__all__ = [
    "ModelKindError",
    "ModelNotBuiltError",
    "built_versions",
    "load_manifest",
    "load_manifest_of",
    "model_dir",
    "publish",
    "sha256_of",
]


class ModelNotBuiltError(EmbedstreamError):
    """The requested model is not in the cache (or is damaged); the message says how to build it."""


def model_dir(cache_dir: Path, name: str, version: str) -> Path:
    return Path(cache_dir) / name / version


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


VERIFIED_SUFFIX = ".verified.json"


def matches_sha256(path: Path, expected: str) -> bool:
    """Does the file hash to ``expected``? A match is remembered beside it (``*.verified.json``), so the next
    start reads the file once — for ONNX Runtime — instead of twice. The stamp is keyed on the file's device,
    inode, size, mtime and ctime (nanoseconds): a write with the mtime put back still moves the ctime, which no
    unprivileged call can set, so such a file is hashed again. What it does not protect against: whoever can write
    the model folder can write the stamp as well (or, as root, move the clock); keep the cache read-only to the
    service (an image layer is)."""
    stamp_path = path.with_name(path.name + VERIFIED_SUFFIX)
    stat = path.stat()
    stamp = {
        "device": stat.st_dev,
        "inode": stat.st_ino,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "sha256": expected,
    }
    try:
        if json.loads(stamp_path.read_text()) == stamp:
            return True
    except (OSError, ValueError):
        pass
    if sha256_of(path) != expected:
        return False
    with contextlib.suppress(OSError):  # a read-only cache (an image layer): hashed on every start instead
        stamp_path.write_text(json.dumps(stamp))
    return True


def _build_hint(name: str, cache_dir: Path) -> str:
    base, _, version = name.partition("@")
    build = f"embedstream models build {base}" + (" --quantize" if "int8" in version else "")
    return (
        f"run `{build}` (needs `pip install 'embedstream[export]'`), "
        f"or point EMBEDSTREAM_MODEL__CACHE_DIR at a cache that has it (now {cache_dir})"
    )


def load_manifest(cache_dir: Path, name: str, verify: bool = True) -> tuple[ModelManifest, Path]:
    """Find a built model: ``name@version`` exactly, or plain ``name`` = the catalog's base version (or, for a
    model outside the catalog, the newest build). ``verify`` checks the ONNX file against its sha256.

    A plain name never silently picks a quantized variant: variants are other versions, and a named vector
    holds one version only."""
    from embedstream.onnx_models.catalog import CATALOG

    base, _, version = name.partition("@")
    root = Path(cache_dir) / base
    if not version and base in CATALOG:
        version = CATALOG[base].version
    if version:
        candidates = [root / version / MANIFEST_FILE]
    else:
        candidates = sorted(root.glob(f"*/{MANIFEST_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise ModelNotBuiltError(f"model {name!r} is not built: {_build_hint(name, Path(cache_dir))}")
    manifest_path = existing[0]
    manifest = parse_manifest(manifest_path.read_text())
    folder = manifest_path.parent
    onnx_path = folder / manifest.onnx_file
    if not onnx_path.is_file():
        raise ModelNotBuiltError(f"model {name!r} lacks {onnx_path}: {_build_hint(name, Path(cache_dir))}")
    if verify and not matches_sha256(onnx_path, manifest.sha256):
        raise ModelNotBuiltError(
            f"model {name!r} at {onnx_path} does not match its manifest's sha256; rebuild it with "
            f"`embedstream models build {base} --force`"
        )
    return manifest, folder


def load_manifest_of(kind: type[Kind], cache_dir: Path, name: str) -> tuple[Kind, Path]:
    """``load_manifest``, and the model must be of ``kind`` (``TextManifest``…): the typed way in for encoders."""
    manifest, folder = load_manifest(cache_dir, name)
    return as_kind(manifest, kind), folder


def publish(staging: Path, manifest: ModelManifest, cache_dir: Path) -> Path:
    """Write the manifest into a finished build folder and move it to its cache place, replacing an old build.

    Builds happen in a staging folder so that a failed export or parity check never leaves a half-written model
    where ``load_manifest`` would find it."""
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    target = model_dir(cache_dir, manifest.name, manifest.version)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))
    return target


def retarget(cache_dir: Path, manifest: ModelManifest, space: str) -> ModelManifest:
    """The built model made to write ``space`` instead of the space it was built for: how a new model (a
    fine-tune, another architecture) is made to take over an existing space (``spaces migrate``). Only the
    manifest changes, written whole and then moved into place; the graph and its sha256 stay."""
    moved = manifest.model_copy(update={"space": space})
    folder = model_dir(cache_dir, manifest.name, manifest.version)
    staged = folder / f"{MANIFEST_FILE}.tmp"
    staged.write_text(moved.model_dump_json(indent=2))
    staged.replace(folder / MANIFEST_FILE)
    return moved


def built_versions(cache_dir: Path, name: str) -> list[ModelManifest]:
    """Every built version of ``name`` (base and variants), oldest first."""
    paths = sorted((Path(cache_dir) / name).glob(f"*/{MANIFEST_FILE}"), key=lambda p: p.stat().st_mtime)
    return [parse_manifest(p.read_text()) for p in paths]
