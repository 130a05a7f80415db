"""ONNX encoders: manifests, the built-in catalog, export + parity, sessions and the runtime encoders.

Runtime code here needs only onnxruntime, tokenizers and numpy; export code imports torch/optimum lazily.
"""

from embedstream.onnx_models.manifest import ModelManifest, ParityReport, TokenizerSpec
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest, model_dir
from embedstream.onnx_models.text_encoder import TextEncoder

__all__ = [
    "ModelManifest",
    "ModelNotBuiltError",
    "ParityReport",
    "TextEncoder",
    "TokenizerSpec",
    "load_manifest",
    "model_dir",
]
