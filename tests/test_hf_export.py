"""Generic optimum export of text encoders: tiny random BERT, RoBERTa and GPT-2 built from configs here;
the ONNX Runtime encoder must equal the PyTorch model with the same pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedstream.onnx_models.corpus import corpus_texts as sample_texts
from embedstream.onnx_models.export.hf_text import export_text_model, torch_reference
from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.text_encoder import TextEncoder

pytestmark = pytest.mark.integration

TEXTS = ["Kafka carries events.", "a", "Trains, stations and timetables run late on Sundays.", "Stars and planets"]


def corpus() -> list[str]:
    return sample_texts()


def tiny_bert(folder):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus(), vocab_size=400, min_frequency=1)
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return BertModel(config), tokenizer


def byte_level(folder):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    return bpe


def tiny_roberta(folder):
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    tokenizer = RobertaTokenizerFast(
        tokenizer_object=byte_level(folder)._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
    )
    return RobertaModel(config), tokenizer


def tiny_gpt2(folder):
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast(
        tokenizer_object=byte_level(folder)._tokenizer,
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    return GPT2Model(config), tokenizer


@pytest.mark.parametrize(
    ("family", "build", "pooling"),
    [
        ("bert", tiny_bert, "mean"),
        ("bert-cls", tiny_bert, "cls"),
        ("roberta", tiny_roberta, "mean"),
        ("gpt2", tiny_gpt2, "last_token"),
    ],
)
def test_exported_encoder_equals_pytorch(family, build, pooling, tmp_path):
    source = tmp_path / family
    source.mkdir()
    torch.manual_seed(0)
    model, tokenizer = build(source)
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)

    manifest = export_text_model(str(source), family, tmp_path / "cache", pooling=pooling)

    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999
    assert manifest.dim == 32 and manifest.pooling == pooling and not manifest.pooled_in_graph
    encoder = TextEncoder.load(tmp_path / "cache", family)
    _, folder = load_manifest(tmp_path / "cache", family)
    batched = encoder.embed(TEXTS)  # padded batches of mixed lengths
    expected = torch_reference(str(source), folder / "tokenizer.json", TEXTS, pooling, True, 128)
    np.testing.assert_allclose(batched, expected, atol=1e-4)


def test_cli_export(tmp_path):
    import os
    import subprocess
    import sys

    source = tmp_path / "bert"
    source.mkdir()
    torch.manual_seed(1)
    model, tokenizer = tiny_bert(source)
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    env = dict(os.environ, EMBEDSTREAM_MODEL__CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedstream.workers.cli",
            "models",
            "export",
            "mybert",
            "--source",
            str(source),
            "--pooling",
            "cls",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "mybert@1: 32-d text model" in done.stdout
    assert load_manifest(tmp_path / "cache", "mybert")[0].pooling == "cls"
