"""Bad input, fuzzed (hypothesis, bounded time): whatever the bytes, parsing gives an envelope or a rejection and
decoding gives model input or a ``MediaError`` — never an exception, a hang or an unbounded allocation.

Mutations start from real files (the shipped photos and voice clips, a sample video made here): bit flips,
truncations, bytes spliced in, wrong magic numbers, and declared sizes far beyond the data (a PNG whose
header claims 100 000 × 100 000 pixels, a WAV whose header claims hours).
"""

from __future__ import annotations

import base64
import io
import json
import resource
import struct
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from embedstream.onnx_models.image_encoder import preprocess
from embedstream.onnx_models.manifest import ImageSpec
from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.images import decode_image
from embedstream.schemas.envelope import Deletion, Envelope, Limits, Rejection, parse_event
from embedstream.schemas.records import KafkaRecord
from embedstream.workers.produce import read_events
from embedstream.workers.sample_media import make_sample_video, sample_photos, sample_voices

pytestmark = pytest.mark.unit

SPEC = ImageSpec(resize_short=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
MAX_PIXELS = 40_000_000
PER_ITEM_S = 10.0  # a decode that takes longer than this is a hang for our purposes
MAX_GROWTH_MB = 600  # peak RSS may grow by at most this over the whole run of a property
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_names = st.one_of(
    st.sampled_from(["es-id", "es-modality", "es-schema", "es-mime", "es-uri", "es-ts", "es-video", "es-metadata"]),
    st.text(max_size=16),
)
headers = st.lists(st.tuples(header_names, st.binary(max_size=64)), max_size=8).map(tuple)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.one_of(st.just(1), json_values),
        "id": st.one_of(st.text(max_size=20), json_values),
        "modality": st.one_of(st.sampled_from(["text", "image", "audio", "video_frame", "video_end"]), json_values),
        "text": st.one_of(st.text(max_size=60), json_values),
        "data": st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), json_values),
        "uri": json_values,
        "ts": json_values,
        "metadata": json_values,
        "video": json_values,
    },
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@given(
    value=st.one_of(st.none(), st.binary(max_size=512)), key=st.one_of(st.none(), st.binary(max_size=32)), hs=headers
)
@FUZZ
def test_any_bytes_and_headers_parse_to_an_envelope_or_a_rejection(value, key, hs) -> None:
    record = KafkaRecord(topic="t", partition=0, offset=1, key=key, value=value, headers=hs, timestamp_ms=1)
    assert isinstance(parse_event(record, Limits(max_event_bytes=4096)), Envelope | Deletion | Rejection)


@given(fields=envelope_like, hs=headers)
@FUZZ
def test_any_json_object_parses_to_an_envelope_or_a_rejection(fields, hs) -> None:
    value = json.dumps(fields, allow_nan=True).encode()
    record = KafkaRecord(topic="t", partition=0, offset=1, value=value, headers=hs, timestamp_ms=1)
    result = parse_event(record)
    assert isinstance(result, Envelope | Deletion | Rejection)
    if isinstance(result, Rejection):
        assert result.reason and result.message  # every refusal says why


def mutate(data: bytes, draw: Callable[..., Any]) -> bytes:
    """One of: bit flips, a truncation, bytes spliced in, a wrong magic number."""
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "magic"]))
    buffer = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 32))):
            position = draw(st.integers(0, len(buffer) - 1))
            buffer[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del buffer[draw(st.integers(0, len(buffer) - 1)) :]
    elif kind == "splice":
        position = draw(st.integers(0, len(buffer)))
        buffer[position:position] = draw(st.binary(min_size=1, max_size=256))
    else:
        buffer[:8] = draw(st.binary(min_size=8, max_size=8))
    return bytes(buffer)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` but whose data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def wav_claiming(frames: int) -> bytes:
    """A WAV whose header declares ``frames`` 16-bit mono frames at 16 kHz, followed by a second of silence."""
    data = b"\x00\x00" * 16_000
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + 2 * frames)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", 2 * frames)
        + data
    )


@pytest.fixture(scope="module")
def pictures() -> list[bytes]:
    out = []
    for path in list(sample_photos().values())[:3]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((480, 480))
        for fmt in ("JPEG", "PNG", "WEBP"):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def sounds() -> list[bytes]:
    return [path.read_bytes() for path in list(sample_voices().values())[:3]]


def decodes_or_refuses(work: Callable[[], object]) -> None:
    started = time.monotonic()
    try:
        work()
    except MediaError as exc:
        assert exc.reason and str(exc)
    assert time.monotonic() - started < PER_ITEM_S


def fuzz_decoder(originals: list[bytes], decode: Callable[[bytes], object], declared: list[bytes]) -> None:
    """``decode`` (which checks what it gets) on mutations of ``originals`` and on the ``declared``-size files:
    each gives its result or a ``MediaError`` in time, and the peak RSS grows by a bounded amount."""
    before = peak_rss_mb()

    @given(data=st.data())
    @FUZZ
    def check(data: st.DataObject) -> None:
        mutated = mutate(data.draw(st.sampled_from(originals)), data.draw)
        decodes_or_refuses(lambda: decode(mutated))

    check()
    for crafted in declared:
        decodes_or_refuses(partial(decode, crafted))
    assert peak_rss_mb() - before < MAX_GROWTH_MB


def test_mutated_pictures_give_model_input_or_a_media_error(pictures: list[bytes]) -> None:
    def decode(data: bytes) -> None:
        pixels = preprocess(decode_image(data, MAX_PIXELS, SPEC.resize_short), SPEC)
        assert pixels.shape == (3, 224, 224) and np.isfinite(pixels).all()

    fuzz_decoder(pictures, decode, [png_claiming(w, h) for w, h in ((100_000, 100_000), (1, 2**31 - 1), (70_000, 1))])


def test_mutated_sounds_give_a_wave_or_a_media_error(sounds: list[bytes]) -> None:
    def decode(data: bytes) -> None:
        wave = decode_audio(data, 16_000, 600.0, -55.0, 0.25)
        assert wave.ndim == 1 and len(wave) > 0 and np.isfinite(wave).all()

    # hours declared (up to what the header can say), one second present
    fuzz_decoder(sounds, decode, [wav_claiming(frames) for frames in (16_000 * 3600 * 10, 2**31 - 20)])


def test_mutated_videos_give_events_or_a_skip_line(tmp_path: Path) -> None:
    photos, voices = list(sample_photos().values())[:2], list(sample_voices().values())[:1]
    original = make_sample_video(tmp_path / "v.mp4", photos, voices, seconds_per_photo=1.0).read_bytes()
    counter = iter(range(10**6))

    @given(data=st.data())
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(data: st.DataObject) -> None:
        path = tmp_path / f"m{next(counter)}.mp4"
        path.write_bytes(mutate(original, data.draw))
        started = time.monotonic()
        for item in read_events([path]):
            assert isinstance(item, Envelope | str)
        assert time.monotonic() - started < 4 * PER_ITEM_S

    check()
