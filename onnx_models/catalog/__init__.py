"""The built-in catalog: data only, one module per modality (the fastembed ``model_description`` trait)."""

from embedstream.onnx_models.catalog.audio import AUDIO_MODELS
from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.catalog.image import IMAGE_MODELS
from embedstream.onnx_models.catalog.text import TEXT_MODELS

CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in (*TEXT_MODELS, *IMAGE_MODELS, *AUDIO_MODELS)}

__all__ = ["CATALOG", "CatalogEntry"]
