"""The GPU smoke script is safe to run anywhere: without a CUDA provider it says so and succeeds."""

from __future__ import annotations

import subprocess
import sys

import onnxruntime as ort
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a GPU runs the real check")
def test_without_cuda_it_says_so_and_exits_zero():
    done = subprocess.run([sys.executable, "-m", "bench.gpu_smoke"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA execution provider" in done.stdout


@pytest.mark.parametrize("model", ["minilm", "effnet", "effnet-conse", "voice"])
def test_the_comparison_path_on_the_cpu_provider(model, model_cache):
    """The same code the GPU run uses, pointed at the CPU provider: it must report a perfect match."""
    from bench.gpu_smoke import check
    from embedstream.onnx_models.export import build
    from embedstream.schemas.settings import Settings

    build(model, model_cache)
    result = check(model, "CPUExecutionProvider", Settings.load(model={"cache_dir": str(model_cache)}))
    assert result["ok"] and result["used"] == "CPUExecutionProvider" and result["min_cosine"] > 0.99999
