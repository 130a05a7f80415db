"""The video view function on hand-made members: order-free means, missing halves, never a NaN vector."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from embedstream.pipelines.plan import FUSED_SPACE, VideoFusion
from embedstream.pipelines.stores import StoredPoint
from embedstream.pipelines.transforms.video_views import video_point
from embedstream.schemas.settings import Settings


def fusion(weights=(1.0, 1.0)) -> VideoFusion:
    return VideoFusion("img", "aud", None, weights, (3, 2), {"img": "i@1", "aud": "a@1", FUSED_SPACE: "f"})


def frame(i: int, vector: list[float]) -> StoredPoint:
    return StoredPoint(
        f"id-{i}", {"modality": "video_frame", "video": {"index": i, "t": i, "duration": 1}}, {"img": vector}
    )


def test_frames_only_give_a_visual_mean_and_a_fused_vector_with_a_zero_audio_half():
    members = [frame(0, [1, 0, 0]), frame(1, [0, 1, 0])]
    view = video_point("v", members, fusion(), ended=False)
    assert view is not None
    np.testing.assert_allclose(view.vectors["img"], [2**-0.5, 2**-0.5, 0])
    np.testing.assert_allclose(view.vectors[FUSED_SPACE], [2**-0.5, 2**-0.5, 0, 0, 0])
    assert "aud" not in view.vectors and view.payload["frames"] == 2 and view.payload["seconds"] == 2
    assert video_point("v", list(reversed(members)), fusion(), False).vectors == view.vectors


def test_a_zero_weight_on_the_only_half_present_leaves_no_fused_vector():
    view = video_point("v", [frame(0, [1, 0, 0])], fusion((0.0, 1.0)), ended=True)
    assert view is not None and FUSED_SPACE not in view.vectors
    assert all(np.isfinite(v).all() for v in view.vectors.values())


def test_weights_that_make_no_vector_are_refused():
    with pytest.raises(ValidationError, match="fused_weights"):
        Settings.load(media={"fused_weights": (0.0, 0.0)})
    with pytest.raises(ValidationError, match="fused_weights"):
        Settings.load(media={"fused_weights": (-1.0, 2.0)})
