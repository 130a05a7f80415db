"""Beam transforms of the ingest pipeline: parse → embed (+ quality gate) → deliver."""

DEAD_LETTER = "dead_letter"
