"""Beam pipelines and transforms, with their IO connectors (Kafka read/commit/dead letters, Qdrant stores)."""
