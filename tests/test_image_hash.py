"""The image content hash that keys the vision cache and the prefix cache: the same pixels hash
the same whatever file carried them, one changed pixel changes it, and hashing its pieces on a
pool (as the engine does, beside the image processor) gives the serial digest."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from flashsight.engine.prompt import HASH_PIECE, _PiecewiseHash, image_hash


def photo(seed: int = 0, size: int = 700) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_the_same_pixels_from_another_file_hash_the_same():
    image = photo()
    assert len(image.tobytes()) > 2 * HASH_PIECE  # several pieces
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


def test_pieces_hashed_on_a_pool_give_the_serial_digest():
    with ThreadPoolExecutor(max_workers=4) as pool:
        for image in (photo(1), photo(2, size=3), Image.new("L", (1, 1))):
            assert _PiecewiseHash(image, image.tobytes(), pool).result() == image_hash(image)
