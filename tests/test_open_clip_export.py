"""Native OpenCLIP checkpoints exported without open_clip (``onnx_models.export.open_clip``): a tiny random state
dict written here in open_clip's key layout with its config and a tokenizer, exported from the CLI through the
mapping onto Hugging Face CLIP, parity against the plain-torch open_clip forward recorded and re-verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.encoders import load_encoder
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.media.images import decode_image
from embedstream.workers.sample_media import sample_photos

pytestmark = pytest.mark.integration

WIDTH, LAYERS, EMBED, IMAGE, PATCH, CONTEXT = 32, 2, 16, 32, 8, 32


def tokenizer(folder: Path) -> int:
    """A byte-level BPE with CLIP's start/end tokens added last, so the end token has the highest id (as in
    open_clip's vocabulary, where pooling at the highest id finds it). Returns the vocabulary size."""
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus_texts(), vocab_size=300, min_frequency=1)
    bpe.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    sot, eot = bpe.token_to_id("<|startoftext|>"), bpe.token_to_id("<|endoftext|>")
    assert eot == bpe.get_vocab_size() - 1
    bpe._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)]
    )
    bpe.save(str(folder / "tokenizer.json"))
    return int(bpe.get_vocab_size())


def open_clip_state(vocab: int) -> dict[str, torch.Tensor]:
    """Random tensors under open_clip's parameter names and shapes (``open_clip.model.CLIP`` with a ViT tower)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def norm(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rand(WIDTH, scale=0.1), f"{prefix}.bias": rand(WIDTH, scale=0.1)}

    def blocks(prefix: str) -> dict[str, torch.Tensor]:
        state = {}
        for i in range(LAYERS):
            block = f"{prefix}.resblocks.{i}"
            state |= norm(f"{block}.ln_1") | norm(f"{block}.ln_2")
            state |= {
                f"{block}.attn.in_proj_weight": rand(3 * WIDTH, WIDTH),
                f"{block}.attn.in_proj_bias": rand(3 * WIDTH),
                f"{block}.attn.out_proj.weight": rand(WIDTH, WIDTH),
                f"{block}.attn.out_proj.bias": rand(WIDTH),
                f"{block}.mlp.c_fc.weight": rand(4 * WIDTH, WIDTH),
                f"{block}.mlp.c_fc.bias": rand(4 * WIDTH),
                f"{block}.mlp.c_proj.weight": rand(WIDTH, 4 * WIDTH),
                f"{block}.mlp.c_proj.bias": rand(WIDTH),
            }
        return state

    grid = IMAGE // PATCH
    return {
        "positional_embedding": rand(CONTEXT, WIDTH),
        "text_projection": rand(WIDTH, EMBED),
        "logit_scale": torch.tensor(4.6052),
        "token_embedding.weight": rand(vocab, WIDTH),
        **norm("ln_final"),
        **blocks("transformer"),
        "visual.class_embedding": rand(WIDTH),
        "visual.positional_embedding": rand(grid * grid + 1, WIDTH),
        "visual.proj": rand(WIDTH, EMBED),
        "visual.conv1.weight": rand(WIDTH, 3, PATCH, PATCH),
        **norm("visual.ln_pre"),
        **norm("visual.ln_post"),
        **blocks("visual.transformer"),
    }


def config(quick_gelu: bool, **vision_extra: object) -> dict[str, object]:
    return {
        "model_cfg": {
            "embed_dim": EMBED,
            "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": IMAGE, "layers": LAYERS, "width": WIDTH, "patch_size": PATCH, "head_width": 16}
            | vision_extra,
            "text_cfg": {"context_length": CONTEXT, "vocab_size": 0, "width": WIDTH, "heads": 2, "layers": LAYERS},
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def checkpoint(folder: Path, quick_gelu: bool, fmt: str = "bin", drop: str = "", **vision_extra: object) -> Path:
    folder.mkdir()
    vocab = tokenizer(folder)
    cfg = config(quick_gelu, **vision_extra)
    cfg["model_cfg"]["text_cfg"]["vocab_size"] = vocab  # type: ignore[index]
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    state = {k: v for k, v in open_clip_state(vocab).items() if k != drop}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / "open_clip_model.safetensors"))
    else:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    return folder


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBEDSTREAM_MODEL__CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "embedstream.workers.cli", "models", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("quick_gelu", "fmt"), [(False, "bin"), (True, "safetensors")])
def test_a_native_open_clip_checkpoint_exports_as_two_towers(tmp_path, quick_gelu, fmt):
    from embedstream.onnx_models.export.open_clip import load_reference

    source = checkpoint(tmp_path / "oc", quick_gelu, fmt)
    cache = tmp_path / "cache"
    done = cli(cache, "export", "oc", "--source", str(source))
    assert done.returncode == 0, done.stderr[-2000:]

    text, image = load_encoder(cache, "oc-text"), load_encoder(cache, "oc-image")
    assert isinstance(text, TextEncoder) and isinstance(image, ImageEncoder)
    for encoder in (text, image):
        manifest = encoder.manifest
        assert manifest.space == "oc" and manifest.space_ref == "oc-text@1" and manifest.dim == EMBED
        assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999, manifest.parity
        assert "open_clip" in manifest.parity.reference and "plain torch" in manifest.parity.reference
    assert image.spec.crop == IMAGE and image.spec.resample == "bicubic"

    # CLIP's own use: a text against pictures, as open_clip's forward scores them (texts padded to the context)
    _, reference = load_reference(source)
    texts = ["a photo of a cat", "trains and stations in the rain"]
    photos = [decode_image(p.read_bytes(), 40_000_000, IMAGE) for p in list(sample_photos().values())[:3]]
    from tokenizers import Tokenizer

    tokens = [Tokenizer.from_file(str(source / "tokenizer.json")).encode(t).ids for t in texts]
    ids = np.zeros((len(texts), CONTEXT), dtype=np.int64)  # open_clip pads with 0 to its context length
    for row, row_ids in enumerate(tokens):
        ids[row, : len(row_ids)] = row_ids
    pixels = torch.from_numpy(np.stack([preprocess(p, image.spec) for p in photos]))
    with torch.no_grad():
        t_ref = torch.nn.functional.normalize(reference.encode_text(torch.from_numpy(ids)), dim=-1)
        i_ref = torch.nn.functional.normalize(reference.visual(pixels), dim=-1)
    np.testing.assert_allclose(text.embed(texts) @ image.embed(photos).T, (t_ref @ i_ref.T).numpy(), atol=1e-4)

    verified = cli(cache, "verify", "oc-image")
    assert verified.returncode == 0 and "oc-image@1" in verified.stdout, verified.stdout + verified.stderr


def test_what_does_not_map_onto_clip_is_refused_by_name(tmp_path):
    cache = tmp_path / "cache"
    layer_scale = checkpoint(tmp_path / "ls", False, ls_init_value=1e-5)
    done = cli(cache, "export", "ls", "--source", str(layer_scale))
    assert done.returncode == 2 and "vision_cfg.ls_init_value=1e-05" in done.stderr, done.stderr[-800:]

    short = checkpoint(tmp_path / "short", False, drop="visual.ln_post.bias")
    done = cli(cache, "export", "short", "--source", str(short))
    assert done.returncode == 2 and "missing ['visual.ln_post.bias']" in done.stderr, done.stderr[-800:]

    untokenized = checkpoint(tmp_path / "untok", False)
    (untokenized / "tokenizer.json").unlink()
    done = cli(cache, "export", "untok", "--source", str(untokenized))
    assert done.returncode == 2 and "no tokenizer.json" in done.stderr, done.stderr[-800:]
    assert not cache.exists() or not any(cache.iterdir())
