"""Beam transforms of the ingest pipeline: parse → embed (+ quality gate) → deliver, one chain."""
