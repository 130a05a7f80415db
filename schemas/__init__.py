"""Pydantic records shared by every layer: the event envelope, dead letters, point payloads, settings.

This package imports nothing of ours, so every other layer may depend on it.
"""

from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Envelope, Limits, Modality, Rejection, VideoRef, parse_event
from embedstream.schemas.point import PointRecord, SourceRef, point_id
from embedstream.schemas.records import KafkaRecord
from embedstream.schemas.settings import KafkaSettings, ModelSettings, PipelineSettings, QdrantSettings, Settings

__all__ = [
    "DeadLetter",
    "Envelope",
    "KafkaRecord",
    "KafkaSettings",
    "Limits",
    "Modality",
    "ModelSettings",
    "PipelineSettings",
    "PointRecord",
    "QdrantSettings",
    "Reason",
    "Rejection",
    "Settings",
    "SourceRef",
    "VideoRef",
    "parse_event",
    "point_id",
]
