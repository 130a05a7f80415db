"""``embedstream models list | build | info | verify | export | import-vectors``: the model toolkit's CLI.

Each action prints one line per model it touched (ref, dim, modality, where, and the parity or quality figure
that says whether to trust it). Export tooling (torch, optimum) is imported only by the actions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from embedstream.onnx_models.manifest import ModelManifest
from embedstream.onnx_models.registry import retarget


def _figure(manifest: ModelManifest) -> str:
    if manifest.quality is not None:
        q = manifest.quality
        return (
            f"int8 {q.speedup:.2f}x fp32 speed, cos {q.mean_cosine:.4f}/{q.min_cosine:.4f}, "
            f"recall@10 {q.recall_at_10:.3f}"
        )
    if manifest.parity is not None:
        return f"fp32, parity min cosine {manifest.parity.min_cosine:.6f} vs {manifest.parity.reference}"
    return "fp32, no parity figure"


def _report(manifest: ModelManifest, cache: Path) -> None:
    shared = f" (space {manifest.space} of {manifest.space_ref})" if manifest.space_ref != manifest.ref else ""
    where = cache / manifest.name
    print(f"{manifest.ref}: {manifest.dim}-d {manifest.modality} model in {where}{shared}; {_figure(manifest)}")


def build(cache: Path, name: str, force: bool = False, quantize: bool = False, per_channel: bool = True) -> int:
    from embedstream.onnx_models.export import build as build_model

    manifest = build_model(name, cache, force=force)
    _report(manifest, cache)
    if quantize:
        from embedstream.onnx_models.export.quantize import build_int8

        variant = build_int8(cache, name, per_channel=per_channel)
        _report(variant, cache)
        print(f"use it with EMBEDSTREAM_MODEL__TEXT_MODEL={variant.ref} (in a new collection: its vectors differ)")
    return 0


def export(
    cache: Path,
    name: str,
    source: str,
    pooling: Literal["mean", "cls", "last_token"] = "mean",
    normalize: bool = True,
    space: str | None = None,
) -> int:
    from embedstream.onnx_models.export.hf import export_model

    for manifest in export_model(source, name, cache, pooling=pooling, normalize=normalize):
        _report(retarget(cache, manifest, space) if space else manifest, cache)
    return 0


def export_checkpoint(
    cache: Path, name: str, weights: Path, arch: str, normalize: bool = True, space: str | None = None
) -> int:
    from embedstream.onnx_models.export.torchvision_cnn import export_torchvision

    manifest = export_torchvision(weights, arch, name, cache, normalize=normalize)
    _report(retarget(cache, manifest, space) if space else manifest, cache)
    return 0


def import_vectors(cache: Path, name: str, path: Path, binary: bool | None = None) -> int:
    from embedstream.onnx_models.export.word_vectors import import_word_vectors

    _report(import_word_vectors(path, name, cache, binary=binary), cache)
    return 0


def info(cache: Path, name: str) -> int:
    from embedstream.onnx_models.registry import load_manifest

    manifest, _ = load_manifest(cache, name)
    print(manifest.model_dump_json(indent=2))
    return 0


def verify(cache: Path, name: str) -> int:
    """Exit 0 when the model still meets its bar, 1 when it does not (so scripts and CI can gate on it)."""
    from embedstream.onnx_models.export.verify import verify as verify_model

    verdict = verify_model(cache, name)
    ref = verdict.manifest.ref
    if verdict.parity is not None:
        p, recorded = verdict.parity, verdict.manifest.parity
        then = f" (recorded at build: {recorded.min_cosine:.6f})" if recorded else ""
        print(
            f"{ref}: sha256 ok; parity over {p.inputs} inputs vs {p.reference}: min cosine {p.min_cosine:.6f}, "
            f"mean {p.mean_cosine:.6f}, max |diff| {p.max_abs_diff:.2e}{then} — {'OK' if verdict.ok else 'FAILED'}"
        )
    elif verdict.quality is not None:
        q = verdict.quality
        print(
            f"{ref}: sha256 ok; against {verdict.manifest.variant_of} on {q.texts} texts: cosine mean "
            f"{q.mean_cosine:.4f} / min {q.min_cosine:.4f}, recall@10 {q.recall_at_10:.3f}, {q.speedup:.2f}x — "
            f"{'OK' if verdict.ok else 'FAILED'}"
        )
    return 0 if verdict.ok else 1


def list_models(cache: Path) -> int:
    """The catalog and everything built: modality, space, dim, size on disk, quantization and parity."""
    from embedstream.onnx_models.catalog import CATALOG
    from embedstream.onnx_models.registry import built_versions

    others = sorted(p.name for p in cache.glob("*") if p.is_dir() and p.name not in CATALOG) if cache.is_dir() else []
    print(f"{'model':<20} {'modality':<8} {'space':<12} {'dim':>5} {'size':>9}  quality")
    for name in [*CATALOG, *others]:
        versions = built_versions(cache, name)
        if not versions and name in CATALOG:
            entry = CATALOG[name]
            print(f"{name:<20} {entry.modality:<8} {entry.space:<12} {entry.dim:>5} {'-':>9}  not built")
        for manifest in versions:
            size_mb = (cache / name / manifest.version / manifest.onnx_file).stat().st_size / 1e6
            print(
                f"{manifest.ref:<20} {manifest.modality:<8} {manifest.space:<12} {manifest.dim:>5} "
                f"{size_mb:>6.1f} MB  {_figure(manifest)}"
            )
    return 0
