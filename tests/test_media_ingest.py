"""Pictures, sounds and videos through the real pipeline (tansu, ONNX Runtime, qdrant-edge) with real media:
the right points in the right spaces, a dead letter with its reason for each bad event, real semantics, and
video points that do not depend on event order, duplicates or lateness."""

from __future__ import annotations

import base64
import io
import random
from collections import Counter

import numpy as np
import pytest
import soundfile
from PIL import Image

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.plan import FUSED_SPACE
from embedstream.pipelines.stores import open_store
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.point import point_id
from embedstream.workers.produce import produce_files, read_events
from embedstream.workers.sample_media import make_sample_video, sample_photos, sample_voices
from embedstream.workers.search import Query, Searcher
from tests.helpers import binary_message, read_topic, send_raw, shared_settings, watermarks

pytestmark = pytest.mark.integration


def binary(modality: str, event_id: str, data: bytes | None = None, **headers: str) -> tuple[bytes, bytes, list]:
    fields = [("es-id", event_id.encode()), ("es-modality", modality.encode())]
    fields += [(f"es-{k}", v.encode()) for k, v in headers.items()]
    return event_id.encode(), data or b"", fields


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def photo_bytes(name: str) -> bytes:
    return sample_photos()[name].read_bytes()


def dead_reasons(settings) -> Counter:
    return Counter(
        DeadLetter.context_of(r.headers)["reason"] for r in read_topic(settings, settings.kafka.dead_letter_topic)
    )


@pytest.fixture
def media_settings(make_settings, media_models, tmp_path):
    roots = tmp_path / "media"
    roots.mkdir()
    return make_settings(media={"roots": [str(roots)]}), roots


def test_pictures_and_sounds_land_and_bad_ones_dead_letter(media_settings):
    settings, root = media_settings
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    produce_files(settings, [sample_photos()["chelsea"].parent, sample_voices()["us-m3-1"].parent], progress=False)
    coffee = sample_photos()["coffee"].read_bytes()
    (root / "coffee-by-uri.jpg").write_bytes(coffee)
    silence = io.BytesIO()
    soundfile.write(silence, np.zeros(8_000, np.float32), 16_000, format="WAV")
    send_raw(
        settings,
        [
            binary("image", "by-uri", uri=(root / "coffee-by-uri.jpg").as_uri()),
            binary("image", "truncated", coffee[: len(coffee) // 3]),
            binary("image", "not-a-picture", b"GIF89a but nothing else"),
            binary("image", "outside-roots", uri="file:///etc/hostname"),
            binary("image", "remote-off", uri="https://example.com/cat.jpg"),
            binary("audio", "silent", silence.getvalue()),
            binary("audio", "garbage", b"\x00\x01\x02" * 500),
        ],
    )
    result = run_ingest(settings)

    assert result.points_upserted == 6 + 12 + 1
    assert dead_reasons(settings) == Counter({"undecodable": 3, "uri_not_allowed": 2, "silent": 1})
    assert committed_offsets(settings.kafka) == watermarks(settings)
    store = open_store(settings.qdrant)
    try:
        (cat,) = store.retrieve([point_id("image", "chelsea.jpg")], with_vectors=True)
        assert set(cat.vectors) == {"effnet", "minilm"} and len(cat.vectors["effnet"]) == 1280
        assert {k: cat.payload["media"][k] for k in ("width", "height")} == {
            "width": 451,
            "height": 300,
        } and cat.payload["models"]["minilm"] == "effnet-conse@1"
        (voice,) = store.retrieve([point_id("audio", "us-m3-1.flac")], with_vectors=True)
        assert set(voice.vectors) == {"voice"} and voice.payload["media"]["seconds"] > 1.0
        assert cat.payload["media"]["thumbnail"].startswith("data:image/jpeg;base64,")
        # the pipeline computes the minilm vector with the ConSE head on effnet's features: the same vector
        whole_graph = Searcher(settings, store=store).vector(Query.of_image(photo_bytes("chelsea")), "minilm")[1]
        np.testing.assert_allclose(cat.vectors["minilm"], whole_graph, atol=1e-5)
        preview = base64.b64decode(voice.payload["media"]["preview"].split(",", 1)[1])
        assert soundfile.info(io.BytesIO(preview)).format == "OGG"  # a playable sound, not just a string
        (by_uri,) = store.retrieve([point_id("image", "by-uri")], with_vectors=True)
        np.testing.assert_allclose(
            by_uri.vectors["effnet"],
            store.retrieve([point_id("image", "coffee.jpg")], True)[0].vectors["effnet"],
            atol=1e-6,
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def media_store(tansu_broker, media_models, tmp_path_factory):
    """One ingest of the sample photos and voices' first two sentences, plus a crop and two videos."""
    tmp = tmp_path_factory.mktemp("media")
    settings = shared_settings(tansu_broker, media_models, tmp, "media")
    photos, voices = sample_photos(), sample_voices()
    known_voices = [p for name, p in voices.items() if not name.endswith("-3")]
    cat_video = make_sample_video(tmp / "cat.mp4", [photos["chelsea"]], [voices["us-m3-1"]], 3.0)
    space_video = make_sample_video(
        tmp / "space.webm", [photos["rocket"], photos["hubble_deep_field"]], [voices["en-f2-1"]], 2.0
    )
    produce_files(settings, [*photos.values(), *known_voices, cat_video, space_video], progress=False)
    result = run_ingest(settings)
    assert result.video_views >= 2 and result.dead_letters == 0
    return settings, tmp


def test_a_text_query_ranks_the_cat_photo_first(media_store):
    settings, _ = media_store
    searcher = Searcher(settings)
    try:
        hits = searcher.search(Query.of_text("a photo of a cat"), limit=3, modality="image")
        assert hits[0].payload["id"] == "chelsea.jpg"
        videos = searcher.search(Query.of_text("a photo of a cat"), limit=2, modality="video")
        assert [h.payload["id"] for h in videos] == ["cat", "space"]
    finally:
        searcher.close()


def test_a_crop_finds_its_source_photo_first(media_store):
    settings, _ = media_store
    rocket = Image.open(sample_photos()["rocket"])
    crop = rocket.crop((rocket.width // 6, rocket.height // 8, rocket.width * 5 // 6, rocket.height * 7 // 8))
    searcher = Searcher(settings)
    try:
        hits = searcher.search(Query.of_image(jpeg(crop)), limit=1, modality="image")
        assert hits[0].payload["id"] == "rocket.jpg" and hits[0].score > 0.7
    finally:
        searcher.close()


@pytest.mark.parametrize("voice", ["us-m3", "en-f2", "scotland-m7", "caribbean-f4"])
def test_a_new_utterance_finds_its_voice_first(media_store, voice):
    settings, _ = media_store
    searcher = Searcher(settings)
    try:
        query = Query.of_audio(sample_voices()[f"{voice}-3"].read_bytes())
        hits = searcher.search(query, limit=2, modality="audio")
        assert [h.payload["id"].rsplit("-", 1)[0] for h in hits] == [voice, voice]
    finally:
        searcher.close()


def test_video_point_is_the_view_of_its_members(media_store):
    settings, _ = media_store
    store = open_store(settings.qdrant)
    try:
        (video,) = store.retrieve([point_id("video", "cat")], with_vectors=True)
        members = [
            p for p in store.scroll(with_vectors=True, where={"video_id": "cat"}) if p.payload["modality"] != "video"
        ]
    finally:
        store.close()
    frames = [m for m in members if m.payload["modality"] == "video_frame"]
    segments = [m for m in members if m.payload["modality"] == "video_audio"]
    assert len(frames) == 3 and segments and video.payload["ended"] is True
    visual = np.mean([f.vectors["effnet"] for f in frames], axis=0)
    visual /= np.linalg.norm(visual)
    audio = np.mean([s.vectors["voice"] for s in segments], axis=0)
    audio /= np.linalg.norm(audio)
    np.testing.assert_allclose(video.vectors["effnet"], visual, atol=1e-6)
    fused = np.concatenate([visual, audio])
    np.testing.assert_allclose(video.vectors[FUSED_SPACE], fused / np.linalg.norm(fused), atol=1e-6)
    assert set(video.vectors) == {"effnet", "voice", FUSED_SPACE, "minilm"}


def test_shuffled_duplicated_and_late_events_give_the_same_video(make_settings, media_models, tmp_path):
    photos, voices = sample_photos(), sample_voices()
    path = make_sample_video(tmp_path / "v.mkv", [photos["coffee"], photos["camera"]], [voices["caribbean-f4-1"]], 2.0)
    events = [e for e in read_events([path]) if not isinstance(e, str)]
    end = [e for e in events if e.modality.value == "video_end"]
    body = [e for e in events if e.modality.value != "video_end"]

    def ingest(order):
        settings = make_settings()
        ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
        send_raw(settings, [binary_message(b"v", e) for e in order])
        run_ingest(settings)
        store = open_store(settings.qdrant)
        try:
            return store.retrieve([point_id("video", "v")], with_vectors=True)[0]
        finally:
            store.close()

    in_order = ingest(body + end)
    shuffled = body + body[:3]  # duplicates…
    random.Random(5).shuffle(shuffled)
    late = shuffled[:2] + end + shuffled[2:]  # …and most frames after video_end
    scrambled = ingest(late)
    assert scrambled.payload["ended"] and scrambled.payload["frames"] == in_order.payload["frames"]
    for space in in_order.vectors:
        np.testing.assert_allclose(scrambled.vectors[space], in_order.vectors[space], atol=1e-6)


def test_cli_produces_a_folder_and_searches_by_picture_and_sound(make_settings, media_models, tmp_path):
    import json

    from tests.helpers import embedstream, settings_env

    settings = make_settings()
    env = settings_env(settings)
    photos, voices = sample_photos(), sample_voices()
    produced = embedstream("produce", "-q", str(photos["chelsea"].parent), str(voices["en-f2-1"]), env=env)
    assert produced.returncode == 0 and "sent 7 events" in produced.stdout, produced.stderr
    assert embedstream("ingest", env=env).returncode == 0
    by_image = embedstream("search", "--image", str(photos["coffee"]), "-k", "1", "--json", env=env)
    assert json.loads(by_image.stdout)[0]["payload"]["id"] == "coffee.jpg", by_image.stderr
    by_sound = embedstream("search", "--audio", str(voices["en-f2-2"]), "--json", "-k", "1", env=env)
    assert json.loads(by_sound.stdout)[0]["payload"]["id"] == "en-f2-1.flac"
    by_text = embedstream("search", "a cup of coffee", "--modality", "image", "-k", "1", env=env)
    assert "coffee.jpg" in by_text.stdout
    wrong = embedstream("search", "--audio", str(voices["en-f2-2"]), "--space", "effnet", env=env)
    assert wrong.returncode == 2 and "cannot search space 'effnet'" in wrong.stderr


def test_a_video_end_before_any_member_is_remembered(make_settings, media_models, tmp_path):
    """video_end first, in a bundle of its own: the members that come in a later run still find the video ended."""
    photos, voices = sample_photos(), sample_voices()
    path = make_sample_video(tmp_path / "v.mkv", [photos["coffee"], photos["camera"]], [voices["caribbean-f4-1"]], 2.0)
    events = [e for e in read_events([path]) if not isinstance(e, str)]
    end = [e for e in events if e.modality.value == "video_end"]
    body = [e for e in events if e.modality.value != "video_end"]
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [binary_message(b"v", e) for e in end])
    run_ingest(settings)
    send_raw(settings, [binary_message(b"v", e) for e in body])
    run_ingest(settings)
    store = open_store(settings.qdrant)
    try:
        (view,) = store.retrieve([point_id("video", "v")], with_vectors=True)
    finally:
        store.close()
    frames = sum(e.modality.value == "video_frame" for e in body)
    assert view.payload["ended"] and view.payload["frames"] == frames and view.payload["segments"] == len(body) - frames
