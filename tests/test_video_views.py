"""Video views on hand-made members: order-free means, missing halves, never a NaN vector; updated by delta
across bundles in a real embedded store, and rebuilt when a delta cannot be applied."""

from __future__ import annotations

import numpy as np
import pytest

from embedstream.pipelines.io.point_writer import PointWriter
from embedstream.pipelines.plan import FUSED_SPACE
from embedstream.pipelines.stores import StoredPoint
from embedstream.pipelines.video_views import video_point
from embedstream.schemas.errors import SettingsError
from embedstream.schemas.point import point_id
from embedstream.schemas.settings import Settings
from tests.video_members import fusion, member


def frame(i: int, vector: list[float]) -> StoredPoint:
    return StoredPoint(
        f"id-{i}", {"modality": "video_frame", "video": {"index": i, "t": i, "duration": 1}}, {"img": vector}
    )


@pytest.mark.unit
def test_frames_only_give_a_visual_mean_and_a_fused_vector_with_a_zero_audio_half():
    members = [frame(0, [1, 0, 0]), frame(1, [0, 1, 0])]
    view = video_point("v", members, fusion(), ended=False)
    assert view is not None
    np.testing.assert_allclose(view.vectors["img"], [2**-0.5, 2**-0.5, 0])
    assert view is not None
    np.testing.assert_allclose(view.vectors[FUSED_SPACE], [2**-0.5, 2**-0.5, 0, 0, 0])
    assert "aud" not in view.vectors and view.payload["frames"] == 2 and view.payload["seconds"] == 2
    again = video_point("v", list(reversed(members)), fusion(), False)
    assert again is not None and again.vectors == view.vectors


@pytest.mark.unit
def test_a_zero_weight_on_the_only_half_present_leaves_no_fused_vector():
    view = video_point("v", [frame(0, [1, 0, 0])], fusion((0.0, 1.0)), ended=True)
    assert view is not None and FUSED_SPACE not in view.vectors
    assert all(np.isfinite(v).all() for v in view.vectors.values())


@pytest.mark.unit
def test_weights_that_make_no_vector_are_refused():
    with pytest.raises(SettingsError, match="fused_weights"):
        Settings.load(media={"fused_weights": (0.0, 0.0)})
    with pytest.raises(SettingsError, match="fused_weights"):
        Settings.load(media={"fused_weights": (-1.0, 2.0)})


def stored_view(store, video: str):
    (view,) = store.retrieve([point_id("video", video)], with_vectors=True)
    return view


def rebuilt(store, video: str):
    members = [
        m for m in store.scroll(with_vectors=True, where={"video_id": video}) if m.payload["modality"] != "video"
    ]
    return video_point(video, members, fusion(), False)


@pytest.mark.integration
def test_views_update_by_delta_across_bundles_and_equal_a_rebuild(edge_store):
    rng = np.random.default_rng(3)
    events = [member("v", "video_frame", i, rng.normal(size=3).tolist()) for i in range(8)]
    events += [member("v", "video_audio", i, rng.normal(size=2).tolist()) for i in range(3)]
    events += [events[2], events[9]]  # duplicates
    events.append(member("v", "video_frame", 4, rng.normal(size=3).tolist(), version="b"))  # frame 4 changed
    rng.shuffle(events)
    writer = PointWriter(edge_store, 3, fusion(), lambda n: None)
    for bundle in range(0, len(events), 4):  # many bundles: every view after the first is a delta
        writer.start()
        for event in events[bundle : bundle + 4]:
            writer.add(event)
        writer.flush()

    view = stored_view(edge_store, "v")
    expected = rebuilt(edge_store, "v")
    assert view.payload["frames"] == 8 and view.payload["segments"] == 3
    assert len(view.payload["state"]["members"]) == 11
    for space, vector in expected.vectors.items():
        np.testing.assert_allclose(view.vectors[space], vector, atol=1e-9)


@pytest.mark.integration
def test_a_view_that_missed_a_change_is_rebuilt_from_its_members(edge_store):
    writer = PointWriter(edge_store, 10, fusion(), lambda n: None)
    writer.add(member("w", "video_frame", 0, [1.0, 0.0, 0.0]))
    writer.add(member("w", "video_frame", 1, [0.0, 1.0, 0.0]))
    writer.flush()
    changed = member("w", "video_frame", 1, [0.0, 0.0, 1.0], version="b")
    edge_store.upsert([changed])  # written, then killed before the view was updated
    writer.start()
    writer.add(changed)  # read again after the restart: its previous version is already overwritten
    writer.flush()
    view, expected = stored_view(edge_store, "w"), rebuilt(edge_store, "w")
    np.testing.assert_allclose(view.vectors["img"], expected.vectors["img"], atol=1e-9)
    np.testing.assert_allclose(view.vectors["img"], np.array([1.0, 0.0, 1.0]) / np.sqrt(2), atol=1e-9)
