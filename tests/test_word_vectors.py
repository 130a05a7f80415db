"""Static word vectors: a tiny Word2Vec trained with gensim on the shipped corpus, served by ONNX Runtime."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from embedstream.onnx_models.export.word_vectors import import_word_vectors
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.transforms.quality import vector_problem
from embedstream.schemas.dead_letter import Reason
from embedstream.workers.demo import sample_corpus

TEXTS = ["The cat sat on the warm mat.", "Trains and stations", "qwzx vbnm", "Stars, planets and comets!"]


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text.lower())


@pytest.fixture(scope="module")
def word2vec(tmp_path_factory):
    from gensim.models import Word2Vec

    sentences = [words_of(json.loads(line)["text"]) for line in sample_corpus().read_text().splitlines()]
    model = Word2Vec(sentences, vector_size=24, min_count=1, epochs=5, seed=3, workers=1)
    folder = tmp_path_factory.mktemp("w2v")
    model.wv.save_word2vec_format(str(folder / "vectors.txt"))
    model.wv.save_word2vec_format(str(folder / "vectors.bin"), binary=True)
    glove = folder / "glove.txt"  # GloVe: the same lines without the header
    glove.write_text("".join((folder / "vectors.txt").read_text().splitlines(keepends=True)[1:]))
    return model.wv, folder


def gensim_means(wv, texts):
    rows = []
    for text in texts:
        known = [w for w in words_of(text) if w in wv.key_to_index]
        mean = np.mean([wv[w] for w in known], axis=0) if known else np.zeros(wv.vector_size)
        norm = np.linalg.norm(mean)
        rows.append(mean / norm if norm > 0 else mean)
    return np.array(rows)


@pytest.mark.unit
@pytest.mark.parametrize("filename", ["vectors.txt", "vectors.bin", "glove.txt"])
def test_onnx_mean_equals_gensim_vectors(word2vec, filename, tmp_path):
    wv, folder = word2vec
    manifest = import_word_vectors(folder / filename, "tinyw2v", tmp_path)
    assert manifest.dim == 24 and manifest.ref == "tinyw2v@1"
    assert manifest.parity is not None and manifest.parity.min_cosine > 0.9999
    encoder = TextEncoder.load(tmp_path, "tinyw2v")

    vectors = encoder.embed(TEXTS)

    np.testing.assert_allclose(vectors, gensim_means(wv, TEXTS), atol=1e-5)


@pytest.mark.unit
def test_all_unknown_words_give_a_zero_vector_the_gate_rejects(word2vec, tmp_path):
    _, folder = word2vec
    import_word_vectors(folder / "vectors.txt", "tinyw2v", tmp_path)
    vector = TextEncoder.load(tmp_path, "tinyw2v").embed(["qwzx vbnm"])[0]
    assert not vector.any()
    problem = vector_problem(vector, 24)
    assert problem is not None and problem[0] is Reason.VECTOR_ZERO_NORM


@pytest.mark.integration
@pytest.mark.parametrize(
    ("content", "binary", "says"),
    [
        (b"100000000000 300\nthe 0.1 0.2\n", False, "cannot hold"),  # would allocate 120 GB first
        (b"2 3\nthe 0.1 0.2 0.3\ncat 0.4\n", False, "not a word2vec or GloVe file"),  # a short row
        (b"2 3\nthe 0.1 0.2 0.3\ncat 0.4 x 0.6\n", False, "not a word2vec or GloVe file"),  # not a number
        (b"5 3\n" + b"the " + b"\x00" * 12, True, "cannot hold"),
        (b"\xff\xfe\x00garbage", False, "not a word2vec or GloVe file"),
    ],
)
def test_a_hostile_vector_file_is_a_one_line_usage_error(tmp_path, content, binary, says):
    import subprocess
    import sys

    path = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    path.write_bytes(content)
    command = [
        sys.executable,
        "-m",
        "embedstream.workers.cli",
        "models",
        "import-vectors",
        "hostile",
        "--file",
        str(path),
    ]
    env = {"EMBEDSTREAM_MODEL__CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*command, *(["--binary"] if binary else [])], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("embedstream: error:")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in done.stderr, done.stderr
