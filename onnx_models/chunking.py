"""Token-aware chunking: a text longer than the encoder sees, cut into pieces it sees whole.

A text model reads at most its tokenizer's ``max_length`` tokens; a longer text used to be truncated, so its
vector said nothing about the rest. ``Chunker`` cuts a long text with the encoder's own tokenizer (so a chunk's
budget is exact) into chunks of at most ``max_tokens`` tokens (special tokens included), cut at sentence ends
where it can; a sentence longer than a chunk is cut by tokens. Consecutive chunks share up to ``overlap``
tokens of whole sentences (of tokens inside a long sentence), so a passage that straddles a cut is whole in one
of them. Every chunk knows its character offsets in the text, which search uses to highlight it.

With ``sentences`` on, a text cut into several passages also gets one chunk per sentence (level ``sentence``,
after the passages): a passage's vector is the mean of its ~15 sentences, so one sentence unlike the rest
barely moves it, and a question about a single fact deep inside a long document found the right document first
for none of 36 questions by passages alone and 34 with sentences beside them (``bench/reports/retrieval.md``).

Sentence ends: ``.``, ``!``, ``?`` (with closing quotes or brackets) before white space, and line breaks.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tokenizers import Tokenizer

if TYPE_CHECKING:  # only for annotations: the text encoder is not needed to cut texts
    from embedstream.onnx_models.text_encoder import TextEncoder
    from embedstream.schemas.settings import ModelSettings

MIN_SENTENCE_TOKENS = 4  # a shorter "sentence" (a heading, "Yes.") says too little to be a point of its own
Level = Literal["passage", "sentence"]
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|\n")


@dataclass(frozen=True)
class Chunk:
    """A piece of a text: its position among the pieces, its characters ``[start, end)``, their text, and whether
    it is a passage (the chunks that cover the text, which a document's vector is the mean of) or one sentence."""

    index: int
    start: int
    end: int
    text: str
    level: Level = "passage"


@dataclass(frozen=True)
class _Unit:
    """A sentence (or a piece of a long one): its first and last token + 1, and its characters."""

    first: int
    last: int
    start: int
    end: int

    @property
    def tokens(self) -> int:
        return self.last - self.first


def sentence_starts(text: str) -> list[int]:
    """Where each sentence starts (the first is 0)."""
    starts = [0]
    for match in _SENTENCE_END.finditer(text):
        if match.end() < len(text):
            starts.append(match.end())
    return starts


class Chunker:
    """Cuts texts for one tokenizer. ``max_tokens``: a chunk's tokens including the special ones the tokenizer
    adds (so a chunk fits the model exactly); ``overlap``: tokens two neighbouring chunks may share."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, overlap: int = 0, sentences: bool = False) -> None:
        specials = tokenizer.num_special_tokens_to_add(False)
        if max_tokens - specials < 8:
            raise ValueError(f"chunks of {max_tokens} tokens leave too little room beside {specials} special ones")
        if not 0 <= overlap < (max_tokens - specials) // 2:
            raise ValueError(f"chunk overlap {overlap} must be at least 0 and under half a chunk")
        self._tokenizer = tokenizer
        self.budget = max_tokens - specials
        self.overlap = overlap
        self.sentences = sentences

    @classmethod
    def from_file(cls, tokenizer_file: Path, max_tokens: int, overlap: int = 0, sentences: bool = False) -> Chunker:
        """A chunker on a ``tokenizer.json`` (truncation and padding off: the chunker sees every token)."""
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer, max_tokens, overlap, sentences)

    def chunks(self, text: str) -> list[Chunk]:
        """The chunks of ``text``: its passages in order, one (the whole text, stripped) when it fits, none when
        it has no tokens; with ``sentences`` and more than one passage, then its sentences of at least
        ``MIN_SENTENCE_TOKENS`` tokens in order (a sentence that is a whole passage is not repeated)."""
        offsets = [(s, e) for s, e in self._tokenizer.encode(text, add_special_tokens=False).offsets if e > s]
        if not offsets:
            return []
        units = self._units(text, offsets)
        spans = self._pack(units)
        out = []
        for index, (a, b) in enumerate(spans):
            start, end = units[a].start, units[b - 1].end
            out.append(Chunk(index, start, end, text[start:end]))
        if self.sentences and len(out) > 1:
            passages = {(c.start, c.end) for c in out}
            for unit in units:
                if unit.tokens >= MIN_SENTENCE_TOKENS and (unit.start, unit.end) not in passages:
                    out.append(Chunk(len(out), unit.start, unit.end, text[unit.start : unit.end], "sentence"))
        return out

    def _units(self, text: str, offsets: list[tuple[int, int]]) -> list[_Unit]:
        """Sentences as token ranges; a sentence over the budget cut into budget-sized pieces."""
        starts = sentence_starts(text)
        units: list[_Unit] = []
        first = 0
        for i in range(1, len(offsets) + 1):
            ends_sentence = i == len(offsets) or bisect_right(starts, offsets[i][0]) != bisect_right(
                starts, offsets[first][0]
            )
            if not ends_sentence:
                continue
            step = self.budget - self.overlap if i - first > self.budget else self.budget
            for a in range(first, i, step):
                b = min(a + self.budget, i)
                units.append(_Unit(a, b, offsets[a][0], offsets[b - 1][1]))
                if b == i:
                    break
            first = i
        return units

    def _pack(self, units: list[_Unit]) -> list[tuple[int, int]]:
        """Consecutive units as [a, b) ranges of at most ``budget`` tokens; the next range starts with the last
        units of the previous one that fit in ``overlap`` tokens (always moving forward)."""
        spans: list[tuple[int, int]] = []
        a = 0
        while a < len(units):
            b = a
            while b < len(units) and (b == a or units[b].last - units[a].first <= self.budget):
                b += 1
            spans.append((a, b))
            if b == len(units):
                break
            back = b
            while back - 1 > a and units[b - 1].last - units[back - 1].first <= self.overlap:
                back -= 1
            a = back
        return spans


def chunker_for(encoder: TextEncoder, model: ModelSettings) -> Chunker | None:
    """The chunker an ingest with these settings cuts ``encoder``'s long texts with (None: ``chunking`` off):
    chunks of ``chunk_tokens`` (0 = the model's limit, never more), neighbours sharing ``chunk_overlap``, and
    sentence chunks beside them with ``sentence_points``."""
    if model.chunking == "off":
        return None
    limit = encoder.max_tokens
    size = min(model.chunk_tokens or limit, limit)
    return Chunker.from_file(encoder.tokenizer_file, size, model.chunk_overlap, model.sentence_points)
