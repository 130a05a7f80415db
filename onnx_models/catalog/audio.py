"""Built-in audio encoders."""

from embedstream.onnx_models.catalog.entry import CatalogEntry

VOICE = CatalogEntry(
    name="voice",
    version="1",
    modality="audio",
    space="voice",
    dim=256,
    recipe="resemblyzer",
    weights_package="resemblyzer",
    source="resemblyzer 0.1.4 voice encoder (GE2E speaker embedding), weights from the pip package resemblyzer",
    license="Apache-2.0",
    pooling="mean",
    normalize=True,
    description="256-d speaker (voice) embeddings, the normalized mean over 1.6 s partial utterances",
)

AUDIO_MODELS = (VOICE,)
