"""Hand-made video members and the fusion settings the video-view tests use."""

from __future__ import annotations

from embedstream.pipelines.plan import FUSED_SPACE, VideoFusion
from embedstream.schemas.point import PointRecord, SourceRef, point_id


def fusion(weights=(1.0, 1.0)) -> VideoFusion:
    return VideoFusion("img", "aud", None, weights, (3, 2), {"img": "i@1", "aud": "a@1", FUSED_SPACE: "f"})


def member(video: str, modality: str, index: int, vector: list[float], version: str = "a") -> PointRecord:
    space = "img" if modality == "video_frame" else "aud"
    payload = {
        "modality": modality,
        "id": f"{video}-{index}",
        "video_id": video,
        "video": {"video_id": video, "index": index, "t": index, "duration": 1},
        "content_sha256": f"{modality}{index}{version}".ljust(16, "0"),
    }
    pid = point_id(modality, f"{video}-{index}", video, index)
    return PointRecord(
        id=pid, vectors={space: vector}, payload=payload, source=SourceRef(topic="t", partition=0, offset=index)
    )
