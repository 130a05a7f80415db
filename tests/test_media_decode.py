"""Safe decoding of real pictures and sounds, and URI rules — each failure with its dead-letter reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from PIL import Image

from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.fetch import fetch_uri
from embedstream.pipelines.media.images import ORIGINAL_SIZE, decode_image
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.settings import MediaSettings
from embedstream.workers.sample_media import sample_photos, sample_voices

pytestmark = pytest.mark.unit

LIMIT = 40_000_000


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(sample_photos()["chelsea"]).convert("RGB")


def test_truncated_and_non_pictures_are_undecodable(cat):
    jpeg = encoded(cat, "JPEG")
    for data in (jpeg[: len(jpeg) // 2], b"definitely not a picture", b""):
        with pytest.raises(MediaError) as caught:
            decode_image(data, LIMIT)
        assert caught.value.reason is Reason.UNDECODABLE


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = encoded(Image.new("1", (30_000, 30_000)), "PNG")  # 900 Mpx in a few hundred kB
    assert len(bomb) < 500_000
    with pytest.raises(MediaError) as caught:
        decode_image(bomb, LIMIT)
    assert caught.value.reason is Reason.OVERSIZED and "900000000 pixels" in str(caught.value)


def test_exif_orientation_is_applied(cat):
    turned = cat.transpose(Image.Transpose.ROTATE_90)  # stored sideways…
    exif = Image.Exif()
    exif[0x0112] = 6  # …with the tag that says "rotate 90° clockwise to view"
    decoded = decode_image(encoded(turned, "JPEG", exif=exif), LIMIT)
    assert decoded.size == cat.size
    difference = np.abs(np.asarray(decoded, np.float32) - np.asarray(cat, np.float32)).mean()
    assert difference < 6  # JPEG noise only


def test_sixteen_bit_grayscale_keeps_its_tones(cat):
    gray = np.asarray(cat.convert("L"), dtype=np.uint16)
    sixteen = Image.fromarray(gray * 257)  # the same picture at 16 bits
    decoded = decode_image(encoded(sixteen, "PNG"), LIMIT)
    assert decoded.mode == "L"
    assert np.abs(np.asarray(decoded, np.int32) - gray.astype(np.int32)).max() <= 1


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (64, 48), color) for color in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = np.asarray(decode_image(data, LIMIT).convert("RGB"), np.int32)
    assert first[..., 0].mean() > 200 and first[..., 1].mean() < 60


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA"])
def test_other_modes_decode(cat, mode):
    fmt = {"CMYK": "JPEG", "P": "PNG", "RGBA": "PNG", "LA": "PNG"}[mode]
    decoded = decode_image(encoded(cat.convert(mode), fmt), LIMIT)
    assert decoded.size == cat.size


def test_a_large_jpeg_decodes_reduced_to_what_the_model_needs(cat):
    big = cat.resize((cat.width * 4, cat.height * 4))
    decoded = decode_image(encoded(big, "JPEG"), LIMIT, min_short_side=256)
    assert min(decoded.size) >= 256 and decoded.width < big.width
    assert decoded.info[ORIGINAL_SIZE] == big.size  # the payload reports the picture's real size


def voice_wave() -> tuple[np.ndarray, int]:
    wave, rate = soundfile.read(sample_voices()["us-m3-1"], dtype="float32")
    return wave, rate


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"), [("WAV", 44_100, 2), ("FLAC", 16_000, 1), ("OGG", 48_000, 2), ("MP3", 22_050, 1)]
)
def test_every_format_rate_and_channel_count_becomes_mono_16k(fmt, rate, channels):
    import soxr

    wave, source_rate = voice_wave()
    resampled = soxr.resample(wave, source_rate, rate).astype(np.float32)
    samples = np.stack([resampled] * channels, axis=1) if channels > 1 else resampled
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt)
    decoded = decode_audio(buffer.getvalue(), 16_000, 600, -55)
    reference = decode_audio(sample_voices()["us-m3-1"].read_bytes(), 16_000, 600, -55)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(reference)) <= 0.07 * 16_000  # same speech, trimmed alike (±2 frames)


def test_silence_garbage_and_overlong_sounds_are_refused():
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(16_000, np.float32) + 1e-5, 16_000, format="WAV")
    with pytest.raises(MediaError) as silent:
        decode_audio(buffer.getvalue(), 16_000, 600, -55)
    assert silent.value.reason is Reason.SILENT
    with pytest.raises(MediaError) as garbage:
        decode_audio(b"RIFF....WAVEfmt but not really", 16_000, 600, -55)
    assert garbage.value.reason is Reason.UNDECODABLE
    wave, rate = voice_wave()
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="FLAC")
    with pytest.raises(MediaError) as long:
        decode_audio(buffer.getvalue(), 16_000, 1.0, -55)
    assert long.value.reason is Reason.OVERSIZED
    blip = io.BytesIO()
    soundfile.write(blip, wave[int(rate * 0.5) : int(rate * 0.6)], rate, format="WAV")  # 0.1 s of speech
    with pytest.raises(MediaError) as short:
        decode_audio(blip.getvalue(), 16_000, 600, -55, min_seconds=0.25)
    assert short.value.reason is Reason.TOO_SHORT


def test_file_uris_only_inside_roots_and_remote_only_when_enabled(tmp_path):
    inside = tmp_path / "media" / "a.jpg"
    inside.parent.mkdir()
    inside.write_bytes(b"bytes")
    (tmp_path / "secret").write_bytes(b"no")
    media = MediaSettings(roots=[tmp_path / "media"])
    assert fetch_uri(inside.as_uri(), media, 100) == b"bytes"
    for uri, reason in (
        ((tmp_path / "secret").as_uri(), Reason.URI_NOT_ALLOWED),
        (f"file://{tmp_path}/media/../secret", Reason.URI_NOT_ALLOWED),  # no escaping through ..
        ((tmp_path / "media" / "missing.jpg").as_uri(), Reason.FETCH_FAILED),
        ("s3://bucket/key.jpg", Reason.URI_NOT_ALLOWED),
        ("ftp://host/x.jpg", Reason.URI_NOT_ALLOWED),
    ):
        with pytest.raises(MediaError) as caught:
            fetch_uri(uri, media, 100)
        assert caught.value.reason is reason, uri
    with pytest.raises(MediaError) as big:
        fetch_uri(inside.as_uri(), media, 3)
    assert big.value.reason is Reason.OVERSIZED
