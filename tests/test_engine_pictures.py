"""Images cross to the engine's process as their file (`ImageFile`) when it decodes to them as they
stand, or else as their raw bytes (`Picture`), made once: the prompt the engine builds from either
is the one it builds from the PIL images the server decoded."""

from __future__ import annotations

import asyncio
import io
import pickle

import pytest
import torch
from PIL import Image

from flashsight.bench.images import photo_jpeg
from flashsight.engine.types import ChatRequest, ImageFile, Picture, SamplingParams
from flashsight.ops.child import with_pictures
from flashsight.server.images import ImageLimits, decode_image
from test_batching_fidelity import make_engine
from test_fidelity import CONVERSATIONS


def _images(request: ChatRequest) -> list:
    return [part["image"] for message in request.messages if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image"]  # fmt: skip


def test_rgb_images_become_pictures_and_the_servers_request_keeps_its_own():
    grey = Image.new("L", (8, 6), 90)
    rgb = Image.new("RGB", (8, 6), (10, 200, 30))
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Both?"}, {"type": "image", "image": rgb},
                                             {"type": "image", "image": grey}]}]  # fmt: skip
    request = ChatRequest("r", messages, SamplingParams())
    crossed = with_pictures(request)
    picture, kept = _images(crossed)
    assert isinstance(picture, Picture) and (picture.size, picture.mode) == ((8, 6), "RGB")
    assert picture.data == rgb.tobytes() and picture.to_image().tobytes() == rgb.tobytes()
    assert kept is grey  # not RGB: it crosses as it is
    assert crossed.messages[0] is messages[0] and crossed.messages[1]["content"][0] == messages[1]["content"][0]
    assert _images(request) == [rgb, grey]  # the audit record reads these


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = make_engine(tiny_model_dir)
    yield engine
    asyncio.run(engine.shutdown())


@pytest.mark.parametrize("name", [name for name, messages in CONVERSATIONS.items()
                                  if _images(ChatRequest(name, messages, SamplingParams()))])  # fmt: skip
def test_a_picture_is_prepared_exactly_as_its_image(engine, name):
    request = ChatRequest(name, CONVERSATIONS[name], SamplingParams())
    crossed = pickle.loads(pickle.dumps(with_pictures(request)))  # as the pipe carries it
    assert all(isinstance(image, Picture) for image in _images(crossed))
    want, _ = engine.prepare(request)
    got, _ = engine.prepare(crossed)
    assert got.token_ids == want.token_ids and got.image_grids == want.image_grids
    assert got.image_hashes == want.image_hashes  # the image cache and prefix keys see one picture
    assert torch.equal(got.pixel_values, want.pixel_values) and torch.equal(got.positions, want.positions)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _turned_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees to stand upright
    return _encoded(Image.new("RGB", (12, 8), (200, 40, 40)), "JPEG", exif=exif.tobytes())


def _crossed(image: Image.Image):
    request = ChatRequest("r", [{"role": "user", "content": [{"type": "image", "image": image}]}], SamplingParams())
    (crossed,) = _images(with_pictures(request))
    return crossed


def test_a_file_that_decodes_to_its_image_as_it_stands_crosses_as_the_file():
    limits = ImageLimits()
    photo, png = photo_jpeg(64, 48, seed=3, index=0), _encoded(Image.new("RGB", (9, 7), (1, 2, 3)), "PNG")
    for data, fmt in ((photo, "JPEG"), (png, "PNG")):
        image = decode_image(data, limits)
        crossed = _crossed(image)
        assert isinstance(crossed, ImageFile)
        assert (crossed.format, crossed.data, crossed.size) == (fmt, data, image.size)
        assert crossed.to_picture().data == image.tobytes()
    # Turned, converted or flattened on the server: the pixels cross, as the server made them.
    alpha = _encoded(Image.new("RGBA", (5, 5), (9, 9, 9, 100)), "PNG")
    grey_jpeg = _encoded(Image.new("L", (6, 6), 80), "JPEG")
    for data in (_turned_jpeg(), alpha, grey_jpeg):
        image = decode_image(data, limits)
        crossed = _crossed(image)
        assert isinstance(crossed, Picture) and crossed.data == image.tobytes()


def test_an_image_file_is_prepared_exactly_as_the_servers_image(engine):
    image = decode_image(photo_jpeg(96, 80, seed=5, index=1), ImageLimits())
    content = [{"type": "image", "image": image}, {"type": "text", "text": "What is this?"}]
    request = ChatRequest("file", [{"role": "user", "content": content}], SamplingParams())
    crossed = pickle.loads(pickle.dumps(with_pictures(request)))  # as the pipe carries it
    assert all(isinstance(each, ImageFile) for each in _images(crossed))
    want, _ = engine.prepare(request)
    got, _ = engine.prepare(crossed)
    assert got.token_ids == want.token_ids and got.image_grids == want.image_grids
    assert got.image_hashes == want.image_hashes
    assert torch.equal(got.pixel_values, want.pixel_values) and torch.equal(got.positions, want.positions)
