"""The image content hash that keys the vision cache and the prefix cache: the same pixels hash
the same whatever file carried them, and one changed pixel changes it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from flashsight.engine.prompt import image_hash


def photo(seed: int = 0, size: int = 700) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_the_same_pixels_from_another_file_hash_the_same():
    image = photo()
    png = io.BytesIO()
    image.save(png, format="PNG")
    assert image_hash(Image.open(io.BytesIO(png.getvalue())).convert("RGB")) == image_hash(image)


def test_one_changed_pixel_or_another_shape_changes_the_hash():
    image = photo()
    changed = image.copy()
    changed.putpixel((699, 699), tuple((v + 1) % 256 for v in image.getpixel((699, 699))))
    assert image_hash(changed) != image_hash(image)
    # The same bytes read as another size or mode are another picture.
    flat = Image.frombytes("RGB", (350, 1400), image.tobytes())
    assert image_hash(flat) != image_hash(image)

