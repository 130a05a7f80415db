"""Static word vectors (word2vec / GloVe files) as an ONNX encoder: a lookup with masked mean pooling.

Input: a word2vec text file (``<count> <dim>`` header, then ``word v1 … vd``), a GloVe text file (no header),
or a word2vec binary file. Output: ``<cache>/<name>/1/`` with ``model.onnx`` (Gather → masked mean), a
``tokenizer.json`` (WordLevel vocabulary, lowercase, split on words and punctuation) and a manifest.

OOV rule: words not in the vocabulary are left out of the mean; a text with no known word gets a zero vector,
which the pipeline's quality gate dead-letters as ``vector_zero_norm`` instead of storing noise. Vectors are
L2-normalized after pooling (cosine search). Parity: ORT output against the plain numpy mean of the same
vectors over a fixed text set, recorded in the manifest.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedstream.onnx_models.export.graphs import staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.manifest import (
    ModelManifest,
    Origin,
    ParityReport,
    TextManifest,
    TokenizerSpec,
    as_kind,
    make_manifest,
)
from embedstream.onnx_models.registry import sha256_of
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.schemas.errors import UsageError

PAD, UNK = "[PAD]", "[UNK]"
MAX_WORDS = 512
MAX_DIM = 65_536  # values a word vector may have (the largest published ones have 300-1000)
PARITY_TEXTS = (
    "the cat sat on the mat",
    "Kafka topics carry raw events",
    "a sentence, with punctuation!",
    "unknownword anotherunknown",
    "trains and stations",
)


def read_vectors(path: Path, binary: bool | None = None) -> tuple[list[str], np.ndarray]:
    """Words and their vectors from a word2vec (text or binary) or GloVe (headerless text) file. A file is input
    from elsewhere: a header that claims more than the file can hold (gensim would allocate it first) and a
    malformed row are ``UsageError``s naming the file, not a ``MemoryError`` or a numpy traceback."""
    from gensim.models import KeyedVectors

    if binary is None:
        binary = path.suffix == ".bin"
    try:
        with path.open("rb") as handle:
            first = handle.readline(256).split()
        has_header = len(first) == 2 and all(part.isdigit() and len(part) <= 12 for part in first)
        if has_header:
            _check_header(path, int(first[0]), int(first[1]), 4 if binary else 2)
        elif binary:
            raise UsageError(f"{path}: a binary word2vec file starts with a '<count> <dim>' header line")
        if not binary:
            _check_rows(path, int(first[1]) if has_header else None, skip=1 if has_header else 0)
        kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=not has_header)
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, IndexError, UnicodeDecodeError, MemoryError) as exc:
        raise UsageError(f"{path}: not a word2vec or GloVe file this can read ({type(exc).__name__}: {exc})") from exc
    return list(kv.index_to_key), np.asarray(kv.vectors, dtype=np.float32)


def _check_rows(path: Path, dim: int | None, skip: int) -> None:
    """Every row is a word and ``dim`` numbers (GloVe: as many as the first row has). gensim would spread a short
    row's one number over the whole vector without a word."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            dim = dim if dim is not None else len(fields) - 1
            if len(fields) != dim + 1:
                raise UsageError(
                    f"{path}: not a word2vec or GloVe file this can read (line {number} has {len(fields) - 1} "
                    f"values, not {dim})"
                )


def _check_header(path: Path, count: int, dim: int, bytes_per_value: int) -> None:
    """``count`` vectors of ``dim`` values need at least ``bytes_per_value`` bytes each (a digit and a space; a
    float32): a header claiming more than the file holds is refused before anything is allocated."""
    size = path.stat().st_size
    if not (0 < dim <= MAX_DIM) or count <= 0 or count * dim * bytes_per_value > size:
        raise UsageError(
            f"{path}: its header claims {count} vectors of {dim} values, which a file of {size} bytes cannot hold "
            f"(at most {MAX_DIM} values a vector)"
        )


def lookup_graph(vectors: np.ndarray) -> bytes:
    """ONNX: ids [batch, words] + mask → mean of the known words' vectors [batch, dim] (ids 0/1 = pad/unk)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = vectors.shape[1]
    table = np.vstack([np.zeros((2, dim), dtype=np.float32), vectors])  # rows 0, 1: [PAD], [UNK]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["looked_up"]),
        helper.make_node("Greater", ["input_ids", "one"], ["known"]),  # ids > 1: real words only
        helper.make_node("Cast", ["known"], ["known_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["known_i", "attention_mask"], ["keep_i"]),
        helper.make_node("Cast", ["keep_i"], ["keep"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keep", "axis_last"], ["keep3"]),
        helper.make_node("Mul", ["looked_up", "keep3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_words"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["keep3", "axis_words"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "tiny"], ["safe_count"]),
        helper.make_node("Div", ["total", "safe_count"], ["sentence_embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "word_vector_mean",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "words"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "words"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_words"),
            numpy_helper.from_array(np.array([1e-9], dtype=np.float32), "tiny"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def word_tokenizer(words: list[str]) -> Tokenizer:
    """A ``tokenizers`` WordLevel tokenizer: lowercase, split on words and punctuation, unknown → [UNK]."""
    from tokenizers import normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {PAD: 0, UNK: 1}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))  # a cased duplicate keeps its first (most frequent) vector
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def numpy_reference(words: list[str], vectors: np.ndarray, texts: tuple[str, ...] | list[str]) -> np.ndarray:
    """The same rule in plain numpy: mean of the known lowercase words' vectors, L2-normalized (or zero)."""
    import re

    index: dict[str, int] = {}
    for i, word in enumerate(words):
        index.setdefault(word.lower(), i)
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
    for row, text in enumerate(texts):
        known = [index[w] for w in re.findall(r"\w+|[^\w\s]+", text.lower())[:MAX_WORDS] if w in index]
        if known:
            mean = vectors[known].astype(np.float64).mean(axis=0)
            out[row] = l2_normalize(mean)
    return out


def import_word_vectors(path: Path, name: str, cache_dir: Path, binary: bool | None = None) -> ModelManifest:
    """Build the encoder ``name@1`` from a vectors file into ``cache_dir`` and record its parity."""
    words, vectors = read_vectors(path, binary)
    if not words:
        raise UsageError(f"{path} holds no word vectors")
    with staging_dir(name) as staging:
        (staging / "model.onnx").write_bytes(lookup_graph(vectors))
        word_tokenizer(words).save(str(staging / "tokenizer.json"))
        draft = make_manifest(
            name=name,
            version="1",
            modality="text",
            space=name,
            sha256=sha256_of(staging / "model.onnx"),
            inputs=["input_ids", "attention_mask"],
            output="sentence_embedding",
            dim=int(vectors.shape[1]),
            pooling="mean",
            pooled_in_graph=True,
            normalize=True,
            normalized_in_graph=False,
            tokenizer=TokenizerSpec(max_length=MAX_WORDS, pad_id=0),
            origin=Origin(recipe="word_vectors", source=str(path.resolve()), binary=binary),
            source=f"word vectors from {path.name} ({len(words)} words; OOV words are left out of the mean)",
            license="as the vectors file's",
            built_with={"gensim": importlib.metadata.version("gensim")},
        )
        return install(draft, staging, cache_dir, word_vectors_parity)


def word_vectors_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    """The ONNX lookup against the numpy rule over the vectors file, on the texts with at least one known word."""
    from embedstream.onnx_models.text_encoder import TextEncoder

    manifest = as_kind(any_manifest, TextManifest)
    binary = manifest.origin.binary if manifest.origin is not None else None
    words, vectors = read_vectors(Path(manifest.source_folder), binary)
    actual = TextEncoder.from_folder(manifest, folder).embed(list(PARITY_TEXTS))
    expected = numpy_reference(words, vectors, PARITY_TEXTS)
    known = np.linalg.norm(expected, axis=1) > 0
    if not known.any():
        raise UsageError("no parity text has a known word; the vectors file shares no vocabulary with them")
    return compare(actual[known], expected[known], "numpy mean of the file's vectors")
