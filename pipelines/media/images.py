"""Safe picture decoding with Pillow: bounded, oriented, one frame, 8-bit RGB-ready.

- The pixel count is read from the header and checked *before* any pixel is decoded (no decompression bombs);
  Pillow's own bomb guard is raised to our limit so it never fires first with a less useful message.
- JPEGs decode at the smallest DCT scale that still covers the model's resize (``Image.draft``): a 1920-px
  photo decodes ~4x faster (docs/measurements.md: decoding, not the encoder, dominates).
- EXIF orientation is applied; animated GIF/WebP/APNG use their first frame; 16-bit and 32-bit grayscale are
  scaled to 8 bits (a plain ``convert`` would clip them to white); palette, CMYK and alpha are left to
  ``to_rgb`` (alpha composited on white).
- Truncated files and bytes that are no picture raise ``MediaError(UNDECODABLE)``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedstream.pipelines.media.errors import MediaError
from embedstream.schemas.dead_letter import Reason

ORIGINAL_SIZE = "embedstream_original_size"
EXIF_ORIENTATION = 0x0112


def decode_image(data: bytes, max_pixels: int, min_short_side: int | None = None) -> Image.Image:
    """Bytes → a loaded single-frame picture in an 8-bit mode. ``min_short_side`` lets JPEGs decode reduced."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    Reason.OVERSIZED, f"picture of {width}x{height} pixels is over the limit of {max_pixels} pixels"
                )
            if min_short_side and image.format == "JPEG":
                scale = min_short_side / min(width, height)
                image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
            image.seek(0)  # animated formats: the first frame
            image.load()
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(Reason.OVERSIZED, f"picture over the limit of {max_pixels} pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(Reason.UNDECODABLE, f"not a picture Pillow can read: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise MediaError(Reason.UNDECODABLE, f"damaged picture: {exc}") from exc
    quarter_turn = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    oriented: Image.Image = _eight_bit(ImageOps.exif_transpose(image) or image)
    # the picture's own size as viewed, even when the JPEG was decoded reduced (``draft``)
    oriented.info[ORIGINAL_SIZE] = (height, width) if quarter_turn else (width, height)
    return oriented


def _eight_bit(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        span = float(values.max() - values.min()) or 1.0
        return Image.fromarray(((values - values.min()) / span * 255.0).astype(np.uint8), mode="L")
    return image
