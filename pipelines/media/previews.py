"""Small previews kept in a point's payload, so applications can show a result without fetching its source.

A picture (or video frame) keeps a 160-px JPEG thumbnail (~5 kB), a sound its first 8 seconds as 16 kHz mono
OGG Vorbis (~15 kB), both as ``data:`` URLs a browser shows directly. ``media.previews = false`` turns them off.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

THUMBNAIL_SIDE = 160
PREVIEW_SECONDS = 8.0


def thumbnail(image: Image.Image) -> str:
    from onnx_models.image_encoder import to_rgb

    small = to_rgb(image)
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sound_preview(wave: np.ndarray, rate: int) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave[: int(PREVIEW_SECONDS * rate)], rate, format="OGG", subtype="VORBIS")
    return "data:audio/ogg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
