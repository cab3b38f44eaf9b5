"""The server's messages to the engine process, with a request's pictures beside the pickle.

`Connection.send` pickles a message into one buffer: a W1 photo's 3 MB of pixels are copied into
it on the server's sending thread, and copied out again by `pickle.loads` on the engine's, each
copy holding that process's GIL. Here the pickle (protocol 5) leaves large buffers out of band:
the message goes as one small frame, then each buffer as a frame of its own, written from the
picture's own bytes and handed to the unpickler as read. Only one thread may send on a
connection this way, and only one receive.
"""

from __future__ import annotations

import pickle
import struct
from multiprocessing.connection import Connection
from typing import Any

_COUNT = struct.Struct("!I")  # how many buffer frames follow the message's frame


def send(conn: Connection, message: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(_COUNT.pack(len(buffers)) + payload)
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def receive(conn: Connection) -> Any:
    frame = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(frame)
    buffers = [conn.recv_bytes() for _ in range(count)]
    return pickle.loads(memoryview(frame)[_COUNT.size :], buffers=buffers)
