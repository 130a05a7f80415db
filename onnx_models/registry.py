"""Where built models live on disk and how a manifest is found and checked.

Layout: ``<cache_dir>/<name>/<version>/{manifest.json, model.onnx, tokenizer.json}``. The cache is filled by
``embedstream models build NAME`` (export needs the ``export`` extra); running needs only what is on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from onnx_models.manifest import MANIFEST_FILE, ModelManifest


class ModelNotBuiltError(RuntimeError):
    """The requested model is not in the cache (or is damaged); the message says how to build it."""


def model_dir(cache_dir: Path, name: str, version: str) -> Path:
    return Path(cache_dir) / name / version


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build_hint(name: str, cache_dir: Path) -> str:
    return (
        f"run `embedstream models build {name}` (needs `pip install 'embedstream[export]'`), "
        f"or point EMBEDSTREAM_MODEL__CACHE_DIR at a cache that has it (now {cache_dir})"
    )


def load_manifest(cache_dir: Path, name: str, verify: bool = True) -> tuple[ModelManifest, Path]:
    """The newest built version of ``name``: its manifest and folder. ``verify`` checks the file's sha256."""
    root = Path(cache_dir) / name
    versions = sorted((p for p in root.glob(f"*/{MANIFEST_FILE}")), key=lambda p: p.stat().st_mtime, reverse=True)
    if not versions:
        raise ModelNotBuiltError(f"model {name!r} is not built: {_build_hint(name, Path(cache_dir))}")
    manifest_path = versions[0]
    manifest = ModelManifest.model_validate_json(manifest_path.read_text())
    folder = manifest_path.parent
    onnx_path = folder / manifest.onnx_file
    if not onnx_path.is_file():
        raise ModelNotBuiltError(f"model {name!r} lacks {onnx_path}: {_build_hint(name, Path(cache_dir))}")
    if verify and sha256_of(onnx_path) != manifest.sha256:
        raise ModelNotBuiltError(
            f"model {name!r} at {onnx_path} does not match its manifest's sha256; rebuild it with "
            f"`embedstream models build {name} --force`"
        )
    return manifest, folder
