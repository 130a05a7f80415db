"""Fixed inputs every parity check feeds both the ONNX model and its reference: pictures and sounds made here.

Synthetic on purpose: no files to ship, the same bytes on every machine, and shapes that stress preprocessing
(odd sizes and aspect ratios, grayscale, transparency; short, long, quiet and loud clips).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def parity_images() -> list[Image.Image]:
    rng = np.random.default_rng(2026)
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    images = [
        Image.fromarray(
            np.stack([np.tile(ramp, (240, 1)), np.tile(ramp[::-1], (240, 1)), np.full((240, 320), 90.0)], -1).astype(
                np.uint8
            )
        ),
        Image.fromarray(((np.indices((300, 200)).sum(0) // 20) % 2 * 255).astype(np.uint8)),  # grayscale stripes
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (97, 411, 4), dtype=np.uint8), mode="RGBA"),
    ]
    return images


def parity_waves(rate: int = 16_000) -> list[np.ndarray]:
    """Synthetic voiced sounds: harmonics with vibrato and formant-like emphasis, breath noise, pauses."""
    rng = np.random.default_rng(7)
    waves = []
    for seconds, pitch, amplitude in ((0.4, 110.0, 0.3), (1.6, 220.0, 0.01), (2.5, 160.0, 0.5), (5.3, 95.0, 0.2)):
        t = np.arange(int(seconds * rate)) / rate
        phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / rate
        voiced = sum(np.sin(h * phase) / h * (1.5 if 3 <= h <= 5 else 1.0) for h in range(1, 12))
        syllables = 0.5 * (1 + np.sign(np.sin(2 * np.pi * 3.1 * t + 0.3)))
        wave = amplitude * (voiced * syllables / 4 + 0.02 * rng.standard_normal(len(t)))
        waves.append(wave.astype(np.float32))
    return waves
