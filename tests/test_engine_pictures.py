"""Images cross to the engine's process as their raw bytes (`Picture`), made once: the prompt the
engine builds from them is the one it builds from the PIL images they were made of."""

from __future__ import annotations

import asyncio
import pickle

import pytest
import torch
from PIL import Image

from flashsight.engine.types import ChatRequest, Picture, SamplingParams
from flashsight.ops.child import with_pictures
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
