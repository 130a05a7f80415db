"""GPU smoke check: every built model encodes the same batch on CUDA (and TensorRT) as on the CPU.

    python -m bench.gpu_smoke            # on a machine with an NVIDIA GPU and onnxruntime-gpu

It exits 0 with a one-line notice where no CUDA execution provider exists (this onnxruntime is CPU-only or
there is no GPU), so it is safe to run anywhere. Where one exists it checks, per built model and per GPU
provider, that the provider really ran the session (no silent CPU fallback) and that the vectors match the
CPU's (cosine >= 0.999: GPU kernels reorder float sums, TF32/fp16 paths differ in the last bits); it prints
one JSON line per check and exits 1 if any failed. Install on the GPU machine with
``pip uninstall -y onnxruntime && pip install onnxruntime-gpu`` (the two packages share one module).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import onnxruntime as ort

from embedstream.schemas.settings import Settings

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
MIN_COSINE = 0.999
TEXTS = ["Kafka topics carry raw events.", "a", "Trains, stations and timetables run late on Sundays."] * 8


def encoders_for(name: str, providers: list[str], settings: Settings) -> Any:
    from embedstream.onnx_models.encoders import load_encoder

    return load_encoder(settings.model.cache_dir, name, settings.model.model_copy(update={"providers": providers}))


def sample_input(encoder: Any) -> list[Any]:
    from PIL import Image

    from embedstream.onnx_models.export.parity_inputs import parity_waves

    rng = np.random.default_rng(0)
    if encoder.manifest.modality == "image":
        return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(8)]
    if encoder.manifest.modality == "audio":
        return parity_waves(encoder.sample_rate)
    return TEXTS


def check(name: str, provider: str, settings: Settings) -> dict[str, Any]:
    cpu = encoders_for(name, ["CPUExecutionProvider"], settings)
    gpu = encoders_for(name, [provider, "CPUExecutionProvider"], settings)
    used = gpu._session.get_providers()[0]
    inputs = sample_input(cpu)
    expected = cpu.embed(inputs)
    gpu.embed(inputs)  # warm-up (kernel selection, TensorRT engine build)
    started = time.perf_counter()
    actual = gpu.embed(inputs)
    elapsed = time.perf_counter() - started
    cosine = (expected * actual).sum(1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    ok = used == provider and float(cosine.min()) >= MIN_COSINE
    return {
        "model": cpu.manifest.ref,
        "provider": provider,
        "used": used,
        "min_cosine": float(cosine.min()),
        "batch_seconds": elapsed,
        "ok": ok,
    }


def main() -> int:
    available = ort.get_available_providers()
    wanted = [p for p in GPU_PROVIDERS if p in available]
    if "CUDAExecutionProvider" not in available:
        print(f"no CUDA execution provider in this onnxruntime ({available}); nothing to check here")
        return 0
    settings = Settings.load()
    from embedstream.onnx_models.registry import built_versions

    cache = settings.model.cache_dir
    names = sorted(p.name for p in cache.glob("*") if p.is_dir()) if cache.is_dir() else []
    failed = 0
    for name in names:
        for manifest in built_versions(cache, name):
            for provider in wanted:
                result = check(manifest.ref, provider, settings)
                print(json.dumps(result), flush=True)
                failed += not result["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
