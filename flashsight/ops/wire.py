"""The server's messages to the engine process, with a request's pictures beside the pickle.

`Connection.send` pickles a message into one buffer: a W1 photo's 3 MB of pixels are copied into
it on the server's sending thread, and copied out again by `pickle.loads` on the engine's, each
copy holding that process's GIL. Here the pickle (protocol 5) leaves large buffers out of band:
the message goes as one small frame, then each buffer as a frame of its own, written from the
picture's own bytes and handed to the unpickler as read. Only one thread may send on a
connection this way, and only one receive.

The buffers' frames are Connection's own (a length, then the bytes), but where the connection is
a socket (a duplex Pipe on Unix) they are written and read on it directly, a frame in one
`recv(size, MSG_WAITALL)` into the bytes object the picture keeps. `Connection.recv_bytes` gathers
a large frame a read at a time into a growing buffer, then copies it out: a 3 MB picture's round
trip took 0.9-4.7 ms that way on the development machine against 0.7-1.0 ms here
(benchmarks/wire_roundtrip.py). Reading into a bytearray made first was slower still (5-11 ms)
whenever the picture before had just been freed (likely its memory mapped, zeroed and faulted in
afresh each time).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

_COUNT = struct.Struct("!I")  # how many buffer frames follow the message's frame
_SHORT = struct.Struct("!i")  # Connection's frame header: the length, or -1 and then ...
_LONG = struct.Struct("!Q")  # ... the length of a frame of 2 GiB or more


def send(conn: Connection, message: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(_COUNT.pack(len(buffers)) + payload)
    if not buffers:
        return
    sock = _socket_of(conn)
    if sock is None:
        for buffer in buffers:
            conn.send_bytes(buffer.raw())
        return
    with sock:
        for buffer in buffers:
            raw = buffer.raw()
            size = raw.nbytes
            sock.sendall(_SHORT.pack(size) if size < 2**31 else _SHORT.pack(-1) + _LONG.pack(size))
            sock.sendall(raw)


def receive(conn: Connection) -> Any:
    frame = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(frame)
    buffers: list[bytes] = []
    if count:
        sock = _socket_of(conn)
        if sock is None:
            buffers = [conn.recv_bytes() for _ in range(count)]
        else:
            with sock:
                buffers = [_read_frame(sock) for _ in range(count)]
    return pickle.loads(memoryview(frame)[_COUNT.size :], buffers=buffers)


def _socket_of(conn: Connection) -> socket.socket | None:
    """A socket object on a duplicate of the connection's descriptor; None when it is a pipe.
    Closing it leaves the connection open."""
    descriptor = os.dup(conn.fileno())
    try:
        return socket.socket(fileno=descriptor)
    except OSError:  # not a socket
        os.close(descriptor)
        return None


def _read_frame(sock: socket.socket) -> bytes:
    (size,) = _SHORT.unpack(_read_exactly(sock, _SHORT.size))
    if size == -1:
        (size,) = _LONG.unpack(_read_exactly(sock, _LONG.size))
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes, read straight into the bytes object returned (one read, when no signal
    interrupts it)."""
    data = sock.recv(size, socket.MSG_WAITALL)
    if len(data) == size:
        return data
    parts, done = [data], len(data)
    while done < size:
        part = sock.recv(size - done, socket.MSG_WAITALL)
        if not part:
            raise EOFError("the connection closed inside a frame")
        parts.append(part)
        done += len(part)
    return b"".join(parts)
