"""Photo-like test images, deterministic per (seed, index), encoded as JPEG data URLs.

A benchmark image must cost the server what a photo costs: the JPEG decoder's work grows with the
file's entropy, so flat synthetic pictures would flatter it. Gradients, overlapping shapes, soft
blur and grain give JPEG sizes close to a camera photo's (ANCHORS.md: ~220 KB at 1024x1024,
~70 KB at 640x480, quality 90).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

JPEG_QUALITY = 90
SHAPES_PER_IMAGE = 24
GRAIN_SIGMA = 5.8  # pixel noise (out of 255) that gives the anchors' JPEG sizes at quality 90


def photo_jpeg(width: int, height: int, seed: int, index: int) -> bytes:
    """The JPEG bytes of image number `index` of the run seeded `seed`: the same pair, the same bytes."""
    rng = np.random.default_rng([seed, index])
    image = _shapes(_gradient(width, height, rng), rng).filter(ImageFilter.GaussianBlur(1.2))
    pixels = np.asarray(image, dtype=np.float32) + GRAIN_SIGMA * rng.standard_normal((height, width, 3), dtype=np.float32)
    grainy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    grainy.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def jpeg_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _gradient(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A sky-like background: two random colours blended along a random direction."""
    top, bottom = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs / width * np.cos(angle) + ys / height * np.sin(angle)
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    pixels = top + (bottom - top) * along[..., None]
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _shapes(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Ellipses, rectangles and lines of random colours and sizes: edges and objects to describe."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(SHAPES_PER_IMAGE):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, 2) * height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    return image
