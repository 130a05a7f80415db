"""BM25 sparse vectors for keyword search: Qdrant's own BM25 model, run in the pipeline and at query time.

The tokenizer, stemmer and stopwords are qdrant-edge's ``Bm25`` (English defaults), so the vectors are the same
whichever store holds them: the pipeline computes them and both backends only store them, in the sparse space
``bm25`` with Qdrant's IDF modifier (the store weighs each term by how rare it is across the collection at
query time, so documents need no corpus statistics when they are written). Not an ONNX model, but an encoder
all the same: text in, vector out, the same text always the same vector.
"""

from __future__ import annotations

import qdrant_edge as qe

from embedstream.schemas.point import SparseVector

BM25_SPACE = "bm25"
BM25_REF = "bm25@1"  # the tokenizer and weighting version its vectors were made with (a store fences on it)


class Bm25:
    """``document(text)`` for what is stored, ``query(text)`` for what is searched (terms weighted 1)."""

    def __init__(self) -> None:
        self._model = qe.Bm25(qe.Bm25Config())

    def document(self, text: str) -> SparseVector:
        vector = self._model.embed_document(text)
        return SparseVector(indices=list(vector.indices), values=[float(v) for v in vector.values])

    def query(self, text: str) -> SparseVector:
        vector = self._model.embed_query(text)
        return SparseVector(indices=list(vector.indices), values=[float(v) for v in vector.values])
