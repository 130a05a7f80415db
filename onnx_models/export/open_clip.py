"""Native OpenCLIP checkpoints (``open_clip_config.json`` + ``open_clip_pytorch_model.bin`` or
``open_clip_model.safetensors``) → two towers in one space, without the open_clip library.

open_clip imports torchvision, whose wheels do not load beside the CPU torch pinned here, so the library cannot
be the route; its checkpoints still can. A ViT-based OpenCLIP model is the CLIP architecture with other parameter
names, so the state dict is **mapped onto Hugging Face CLIP's layout** (``in_proj_weight`` split into q/k/v,
``text_projection`` and ``visual.proj`` transposed into linear layers…) and exported by the CLIP exporter. Every
tensor of the checkpoint must be used and every tensor of the model filled, with the shapes the config implies:
anything else stops the export and is named. Configs the mapping does not cover are refused by name — timm or
Hugging Face towers, ResNet image towers, attention pooling, layer scale, other pooling or normalization.

The text tower pools at the highest token id (open_clip's ``argmax`` rule: its end-of-text token has the highest
id) and the tokenizer is the folder's ``tokenizer.json`` (Hugging Face format; OpenCLIP releases on the hub ship
one), padded with open_clip's pad id 0. Preprocessing comes from the config's ``preprocess_cfg`` (open_clip's
defaults: bicubic resize of the short side, center crop, OpenAI's mean and std).

Parity is measured against an independent forward: open_clip's model definition written in plain torch with its
own parameter names (``reference_model``), texts padded to the context length as open_clip's tokenizer does.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.export.checkpoints import load_strictly, read_state
from embedstream.onnx_models.export.drafts import versions
from embedstream.onnx_models.export.hf_text import PARITY_TEXTS
from embedstream.onnx_models.export.parity import compare
from embedstream.onnx_models.export.parity_inputs import parity_images
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import (
    ImageManifest,
    ImageSpec,
    ModelManifest,
    ParityReport,
    TextManifest,
    TokenizerSpec,
    as_kind,
)
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.schemas.errors import UsageError

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_ID = 0  # open_clip's tokenizer pads with 0

# config keys that only size the model, and the value each other key must have for the mapping to hold
VISION_SIZES = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"}
TEXT_SIZES = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
ANY_VALUE = {  # training-only, equivalent for the pooling mapped here, or naming the tokenizer (tokenizer.json is used)
    "patch_dropout",
    "final_ln_after_pool",
    "output_tokens",
    "hf_tokenizer_name",
    "tokenizer_kwargs",
}
REQUIRED: dict[str, object] = {"pos_embed_type": "learnable", "proj_type": "linear", "pad_id": 0}
POOLING = {"vision": "tok", "text": "argmax"}


def is_open_clip(source: str) -> bool:
    """A folder holding a native OpenCLIP checkpoint (and no Hugging Face ``config.json``, which takes precedence:
    LAION releases that ship both are exported from the Hugging Face weights)."""
    folder = Path(source)
    return (
        (folder / CONFIG_FILE).is_file()
        and not (folder / "config.json").is_file()
        and any((folder / f).is_file() for f in WEIGHT_FILES)
    )


@dataclass(frozen=True)
class OpenClipConfig:
    """The sizes of a ViT OpenCLIP model, read from its ``open_clip_config.json``."""

    embed_dim: int
    quick_gelu: bool
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    text_mlp: int
    image: ImageSpec

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _refused(tower: str, section: dict[str, Any], sizes: set[str]) -> list[str]:
    refused = []
    for key, value in section.items():
        if key in sizes or value in (None, False, {}, []):
            continue
        if key in ANY_VALUE or (key == "pool_type" and value == POOLING[tower]) or REQUIRED.get(key, ...) == value:
            continue
        refused.append(f"{tower}_cfg.{key}={value!r}")
    return refused


def read_config(folder: Path) -> OpenClipConfig:
    """The model's sizes and preprocessing; a config the CLIP mapping does not cover is refused by name."""
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder / CONFIG_FILE}: not a readable OpenCLIP config ({exc})") from exc
    model = raw.get("model_cfg", raw)
    vision, text = dict(model.get("vision_cfg") or {}), dict(model.get("text_cfg") or {})
    if not isinstance(vision.get("layers", 12), int):
        raise UsageError(f"{folder}: a ResNet image tower (vision_cfg.layers={vision['layers']}); only ViT towers map")
    refused = _refused("vision", vision, VISION_SIZES) + _refused("text", text, TEXT_SIZES)
    refused += [f"{k}={v!r}" for k, v in model.items() if k.startswith("init_logit_bias") and v is not None]
    if refused:
        raise UsageError(f"{folder}: this OpenCLIP config does not map onto CLIP's layout: {', '.join(refused)}")
    image_size, patch_size = vision.get("image_size", 224), vision.get("patch_size", 16)
    if not isinstance(image_size, int) or not isinstance(patch_size, int):
        raise UsageError(f"{folder}: non-square image_size {image_size!r} / patch_size {patch_size!r}")
    return OpenClipConfig(
        embed_dim=int(model["embed_dim"]),
        quick_gelu=bool(model.get("quick_gelu", False)),
        image_size=image_size,
        patch_size=patch_size,
        vision_width=int(vision.get("width", 768)),
        vision_layers=int(vision.get("layers", 12)),
        vision_heads=int(vision.get("width", 768)) // int(vision.get("head_width", 64)),
        vision_mlp=int(int(vision.get("width", 768)) * float(vision.get("mlp_ratio", 4.0))),
        context_length=int(text.get("context_length", 77)),
        vocab_size=int(text.get("vocab_size", 49408)),
        text_width=int(text.get("width", 512)),
        text_heads=int(text.get("heads", 8)),
        text_layers=int(text.get("layers", 12)),
        text_mlp=int(int(text.get("width", 512)) * float(text.get("mlp_ratio", 4.0))),
        image=image_spec_of(raw.get("preprocess_cfg") or {}, image_size, folder),
    )


def image_spec_of(preprocess_cfg: dict[str, Any], image_size: int, folder: Path) -> ImageSpec:
    """open_clip's eval transform (resize the short side, center crop, standardize) as our ``ImageSpec``."""
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    resize_mode = preprocess_cfg.get("resize_mode", "shortest")
    if interpolation not in ("bicubic", "bilinear") or resize_mode != "shortest":
        raise UsageError(
            f"{folder}: preprocessing {interpolation!r}/{resize_mode!r}; supported: bicubic or bilinear, shortest"
        )
    mean = tuple(float(x) for x in preprocess_cfg.get("mean") or OPENAI_MEAN)
    std = tuple(float(x) for x in preprocess_cfg.get("std") or OPENAI_STD)
    if len(mean) != 3 or len(std) != 3:
        raise UsageError(f"{folder}: preprocess_cfg mean and std must have 3 channels")
    return ImageSpec(
        resize_short=image_size,
        crop=image_size,
        resample=interpolation,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
    )


def reference_model(config: OpenClipConfig) -> Any:
    """open_clip's ViT CLIP in plain torch, with its parameter names: the parity reference, written from its model
    definition independently of the Hugging Face code the export goes through."""
    import torch
    from torch import nn

    class QuickGELU(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(1.702 * x)

    class Block(nn.Module):  # open_clip.transformer.ResidualAttentionBlock
        def __init__(self, width: int, heads: int, mlp: int) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.ln_2 = nn.LayerNorm(width)
            act = QuickGELU() if config.quick_gelu else nn.GELU()
            self.mlp = nn.Sequential(
                OrderedDict([("c_fc", nn.Linear(width, mlp)), ("gelu", act), ("c_proj", nn.Linear(mlp, width))])
            )

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
            out: torch.Tensor = x + self.mlp(self.ln_2(x))
            return out

    class Transformer(nn.Module):
        def __init__(self, width: int, layers: int, heads: int, mlp: int) -> None:
            super().__init__()
            self.resblocks = nn.ModuleList([Block(width, heads, mlp) for _ in range(layers)])

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            for block in self.resblocks:
                x = block(x, mask)
            return x

    class Visual(nn.Module):  # open_clip.transformer.VisionTransformer, class-token pooling
        def __init__(self) -> None:
            super().__init__()
            width = config.vision_width
            self.conv1 = nn.Conv2d(3, width, config.patch_size, config.patch_size, bias=False)
            self.class_embedding = nn.Parameter(torch.zeros(width))
            self.positional_embedding = nn.Parameter(torch.zeros(config.grid**2 + 1, width))
            self.ln_pre = nn.LayerNorm(width)
            self.transformer = Transformer(width, config.vision_layers, config.vision_heads, config.vision_mlp)
            self.ln_post = nn.LayerNorm(width)
            self.proj = nn.Parameter(torch.zeros(width, config.embed_dim))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = self.conv1(pixels).flatten(2).transpose(1, 2)
            x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
            x = self.transformer(self.ln_pre(x))
            pooled: torch.Tensor = self.ln_post(x[:, 0]) @ self.proj
            return pooled

    class OpenClip(nn.Module):  # open_clip.model.CLIP
        def __init__(self) -> None:
            super().__init__()
            self.visual = Visual()
            width = config.text_width
            self.token_embedding = nn.Embedding(config.vocab_size, width)
            self.positional_embedding = nn.Parameter(torch.zeros(config.context_length, width))
            self.transformer = Transformer(width, config.text_layers, config.text_heads, config.text_mlp)
            self.ln_final = nn.LayerNorm(width)
            self.text_projection = nn.Parameter(torch.zeros(width, config.embed_dim))
            self.logit_scale = nn.Parameter(torch.zeros([]))
            causal = torch.full((config.context_length, config.context_length), float("-inf")).triu(1)
            self.register_buffer("attn_mask", causal, persistent=False)

        def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
            """``ids`` padded to the context length, as open_clip's tokenizer returns them."""
            x = self.token_embedding(ids) + self.positional_embedding
            x = self.ln_final(self.transformer(x, self.attn_mask))
            pooled: torch.Tensor = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
            return pooled

    return OpenClip()


def weights_of(folder: Path) -> Path:
    return next(folder / f for f in WEIGHT_FILES if (folder / f).is_file())


def load_reference(folder: Path) -> tuple[OpenClipConfig, Any]:
    """The plain-torch reference with the checkpoint loaded strictly (the message names what differs)."""
    config = read_config(folder)
    refusal = f"{folder}: the checkpoint does not match its config as a ViT OpenCLIP model"
    return config, load_strictly(reference_model(config), read_state(weights_of(folder)), refusal)


def _blocks(state: dict[str, Any], source: str, target: str, layers: int) -> dict[str, Any]:
    mapped = {}
    for i in range(layers):
        s, t = f"{source}.{i}", f"{target}.{i}"
        for part, tensor in zip(("q", "k", "v"), state[f"{s}.attn.in_proj_weight"].chunk(3), strict=True):
            mapped[f"{t}.self_attn.{part}_proj.weight"] = tensor
        for part, tensor in zip(("q", "k", "v"), state[f"{s}.attn.in_proj_bias"].chunk(3), strict=True):
            mapped[f"{t}.self_attn.{part}_proj.bias"] = tensor
        for theirs, ours in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            mapped[f"{t}.{ours}.weight"] = state[f"{s}.{theirs}.weight"]
            mapped[f"{t}.{ours}.bias"] = state[f"{s}.{theirs}.bias"]
    return mapped


def to_hf(config: OpenClipConfig, state: dict[str, Any]) -> Any:
    """A transformers ``CLIPModel`` holding the checkpoint's tensors, loaded strictly."""
    from transformers import CLIPConfig, CLIPModel

    act = "quick_gelu" if config.quick_gelu else "gelu"
    hf_config = CLIPConfig(
        text_config={
            "vocab_size": config.vocab_size,
            "hidden_size": config.text_width,
            "intermediate_size": config.text_mlp,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "max_position_embeddings": config.context_length,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "eos_token_id": 2,  # transformers' marker for pooling at the highest token id, open_clip's argmax rule
            "pad_token_id": PAD_ID,
        },
        vision_config={
            "hidden_size": config.vision_width,
            "intermediate_size": config.vision_mlp,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
            "image_size": config.image_size,
            "patch_size": config.patch_size,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        },
        projection_dim=config.embed_dim,
    )
    mapped = {
        "logit_scale": state["logit_scale"],
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T.contiguous(),
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
        **_blocks(state, "transformer.resblocks", "text_model.encoder.layers", config.text_layers),
        **_blocks(state, "visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_layers),
    }
    model = CLIPModel(hf_config)
    buffers = {k for k, _ in model.named_buffers()}  # position ids: made by the model, not weights
    model.load_state_dict(mapped, strict=False)
    left = set(model.state_dict()) - set(mapped) - buffers
    if left:
        raise UsageError(f"mapping onto CLIP's layout left {sorted(left)[:5]} unfilled")
    return model.eval()


def export_open_clip(source: str, name: str, cache_dir: Path, normalize: bool = True) -> list[ModelManifest]:
    """The OpenCLIP checkpoint in folder ``source`` → ``[<name>-text@1, <name>-image@1]`` in space ``name``."""
    from embedstream.onnx_models.export.clip import Towers, export_towers

    folder = Path(source)
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        raise UsageError(
            f"{folder}: no tokenizer.json beside the checkpoint (the text tower's tokenizer, in "
            "Hugging Face format; OpenCLIP releases ship one)"
        )
    config, reference = load_reference(folder)  # strict: every tensor used, every shape as the config says
    return export_towers(
        to_hf(config, reference.state_dict()),  # the checkpoint's tensors, read once
        Towers(
            name=name,
            source=str(folder.resolve()),
            tokenizer=lambda path: shutil.copyfile(tokenizer, path),
            tokenizer_spec=TokenizerSpec(max_length=config.context_length, pad_id=PAD_ID),
            image=config.image,
            recipe="open_clip",
            described=f"OpenCLIP checkpoint from {source}",
            text_parity=text_parity,
            image_parity=image_parity,
        ),
        cache_dir,
        normalize,
    )


def text_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch
    from tokenizers import Tokenizer

    manifest = as_kind(any_manifest, TextManifest)
    config, reference = load_reference(Path(manifest.source_folder))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=config.context_length)
    ids = np.full((len(PARITY_TEXTS), config.context_length), PAD_ID, dtype=np.int64)
    for row, text in enumerate(PARITY_TEXTS):
        tokens = tokenizer.encode(text).ids
        ids[row, : len(tokens)] = tokens
    with torch.no_grad():
        rows = reference.encode_text(torch.from_numpy(ids)).numpy()
    expected = l2_normalize(rows) if manifest.normalize else rows
    actual = TextEncoder.from_folder(manifest, folder).embed(list(PARITY_TEXTS))
    return compare(actual, expected, f"open_clip's text tower in plain torch {versions('torch')['torch']}")


def image_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch

    manifest = as_kind(any_manifest, ImageManifest)
    _, reference = load_reference(Path(manifest.source_folder))
    pixels = [preprocess(image, manifest.image) for image in parity_images()]
    with torch.no_grad():
        rows = reference.visual(torch.from_numpy(np.stack(pixels))).numpy()
    expected = l2_normalize(rows) if manifest.normalize else rows
    actual = ImageEncoder.from_folder(manifest, folder).embed_batch(pixels)
    return compare(actual, expected, f"open_clip's image tower in plain torch {versions('torch')['torch']}")
