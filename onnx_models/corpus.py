"""The sample text corpus (``data/corpus.jsonl``, CC0): 520 sentences on ten distinct topics; and three long
articles on three of them (``data/documents.jsonl``), which chunking cuts into pieces.

Package data of the encoder layer, because both sides read it: the int8 quantizer measures a variant's
neighbours against its base on it, and the demo (and the tests) ingest it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def corpus_path() -> Path:
    """The corpus file: one ``{"id", "text", "metadata": {"topic"}}`` object a line."""
    return Path(str(resources.files("embedstream.onnx_models").joinpath("data", "corpus.jsonl")))


def documents_path() -> Path:
    """The long articles, in the corpus's format (``metadata``: ``topic``, ``title``, ``kind``)."""
    return Path(str(resources.files("embedstream.onnx_models").joinpath("data", "documents.jsonl")))


def corpus_records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in corpus_path().read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_texts() -> list[str]:
    return [str(record["text"]) for record in corpus_records()]
