"""Requests cross to the engine's process with their pictures beside the pickle, not inside it:
the same request arrives, the message's own frame stays small, and each picture's bytes travel
as they are. Pickled any other way, a picture still carries its bytes inline."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading

import numpy as np
import pytest
from PIL import Image

from flashsight.engine.types import ChatRequest, Picture, SamplingParams
from flashsight.ops import wire


def _request() -> tuple[ChatRequest, list[Picture]]:
    rng = np.random.default_rng(4)
    pictures = [Picture(w, h, rng.integers(0, 256, w * h * 3, dtype=np.uint8).tobytes()) for w, h in ((1024, 1024), (640, 480))]
    grey = Image.new("L", (16, 8), 77)  # not RGB: crosses as a PIL image, inside the pickle
    content = [{"type": "image", "image": pictures[0]}, {"type": "text", "text": "and"},
               {"type": "image", "image": grey}, {"type": "image", "image": pictures[1]}]  # fmt: skip
    return ChatRequest("wire", [{"role": "user", "content": content}], SamplingParams(max_tokens=3)), pictures


def _sent(message) -> multiprocessing.connection.Connection:
    """The receiving end of a pipe `message` was sent on (from a thread: a 3 MB write waits
    for its reader)."""
    ours, theirs = multiprocessing.Pipe()
    threading.Thread(target=wire.send, args=(ours, message), daemon=True).start()
    return theirs


def test_a_request_arrives_as_it_was_sent():
    request, pictures = _request()
    got = wire.receive(_sent(("generate", 7, request)))
    assert got[:2] == ("generate", 7) and got[2].request_id == "wire" and got[2].sampling == request.sampling
    images = [part["image"] for part in got[2].messages[0]["content"] if part["type"] == "image"]
    assert images[0] == pictures[0] and images[2] == pictures[1] and type(images[0].data) is bytes
    assert images[1].mode == "L" and images[1].tobytes() == Image.new("L", (16, 8), 77).tobytes()
    assert wire.receive(_sent(("stop",))) == ("stop",)


def test_pictures_travel_beside_a_small_message():
    request, pictures = _request()
    conn = _sent(("generate", 1, request))
    frame = conn.recv_bytes()
    assert int.from_bytes(frame[:4], "big") == 2 and len(frame) < 4096  # the 3.9 MB of pixels are not in it
    assert [conn.recv_bytes() for _ in pictures] == [p.data for p in pictures]


def test_pickled_any_other_way_a_picture_carries_its_bytes():
    _, pictures = _request()
    for protocol in (2, 4, 5):
        assert pickle.loads(pickle.dumps(pictures[1], protocol=protocol)) == pictures[1]


def test_over_a_one_way_pipe_pictures_cross_as_connection_frames():
    request, pictures = _request()
    theirs, ours = multiprocessing.Pipe(duplex=False)  # not a socket: the frames go through the Connection
    threading.Thread(target=wire.send, args=(ours, ("generate", 3, request)), daemon=True).start()
    got = wire.receive(theirs)
    images = [part["image"] for part in got[2].messages[0]["content"] if part["type"] == "image"]
    assert images[0] == pictures[0] and images[2] == pictures[1]


def test_a_connection_closed_inside_a_picture_frame_is_an_end_not_a_short_picture():
    request, _ = _request()
    ours, theirs = multiprocessing.Pipe()
    frame = pickle.dumps(("generate", 5, request), protocol=5, buffer_callback=lambda _: None)
    ours.send_bytes((1).to_bytes(4, "big") + frame)  # one picture frame to follow...
    os.write(ours.fileno(), (100).to_bytes(4, "big") + bytes(10))  # ...announced as 100 bytes; 10 come
    ours.close()
    with pytest.raises(EOFError):
        wire.receive(theirs)
