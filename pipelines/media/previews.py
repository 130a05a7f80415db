"""Small previews kept in a point's payload, so applications can show a result without fetching its source.

A picture (or video frame) keeps a 160-px JPEG thumbnail (~5 kB), a sound its first 6 seconds as 8 kHz mono
OGG Vorbis at the smallest size (~11 kB), both as ``data:`` URLs a browser shows and plays directly.
``media.previews = false`` turns them off. Cost, measured: the thumbnail ~1 ms a picture; the sound ~7 ms a
clip (at 16 kHz and default quality it was 22 ms and 44 kB — as much CPU as the voice encoder itself).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

THUMBNAIL_SIDE = 160
PREVIEW_SECONDS = 6.0
PREVIEW_RATE = 8_000


def thumbnail(image: Image.Image) -> str:
    from embedstream.onnx_models.image_encoder import to_rgb

    small = to_rgb(image)
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sound_preview(wave: np.ndarray, rate: int) -> str:
    import soundfile
    import soxr

    clip = wave[: int(PREVIEW_SECONDS * rate)]
    if rate != PREVIEW_RATE:
        clip = soxr.resample(clip, rate, PREVIEW_RATE)
    buffer = io.BytesIO()
    soundfile.write(buffer, clip, PREVIEW_RATE, format="OGG", subtype="VORBIS", compression_level=1.0)
    return "data:audio/ogg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
