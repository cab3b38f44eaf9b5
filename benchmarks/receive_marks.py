"""Where the server's receive stage goes (the first of a request's time-to-first-token stages, up to
its handoff to the engine), marked in place in `flashsight serve`'s own process.

With benchmarks/trace_site on PYTHONPATH and FLASHSIGHT_RECEIVE_MARKS=FILE, the server appends one
JSON line a chat request to FILE: milliseconds from the request's arrival (the operations
middleware) to each mark: the route's start (the body read, parsed and validated), the image loads'
start, each decode's start and end on its worker thread, the loads' end, the request admitted
(converted, limits passed), and its handoff to the engine. Then

    python3 benchmarks/receive_marks.py FILE

prints the median of each gap between marks. Nothing here waits or changes what is served.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

MARKS = ("route", "load_start", "decode_start", "decode_end", "load_end", "admitted", "handed")


def install(path: str) -> None:
    """Wrap the chat route's steps in this process so that each request's marks reach `path`."""
    import contextvars

    import flashsight.server.images as images
    import flashsight.server.routes.chat as chat
    from flashsight.ops import audit_trace
    from flashsight.server import conversion

    marks: contextvars.ContextVar[dict | None] = contextvars.ContextVar("receive_marks", default=None)
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    def mark(name: str) -> None:
        found = marks.get()
        if found is not None:
            found.setdefault(name, time.monotonic())

    decode = images.decode_data_url

    def marked_decode(url, limits):  # runs on a worker thread, in a copy of the request's context
        mark("decode_start")
        try:
            return decode(url, limits)
        finally:
            mark("decode_end")

    admit = chat.admit_chat

    async def marked_admit(request, body, converter):
        trace = audit_trace.trace_of(request)
        found = {"route": time.monotonic()}
        marks.set(found)
        result = await admit(request, body, converter)
        found["admitted"] = time.monotonic()
        trace.receive_marks = found
        return result

    load = conversion.RequestConverter._load_images

    async def marked_load(self, messages):
        mark("load_start")
        try:
            return await load(self, messages)
        finally:
            mark("load_end")

    saw_event = audit_trace.RequestTrace._saw_event

    def marked_saw_event(self, event):
        saw_event(self, event)
        found = getattr(self, "receive_marks", None)
        if found is not None and self.handed_at is not None:
            found["handed"] = self.handed_at
            out.write(json.dumps({name: round((at - self.started) * 1e3, 2) for name, at in found.items()}) + "\n")
            self.receive_marks = None

    images.decode_data_url = marked_decode
    chat.admit_chat = marked_admit
    conversion.RequestConverter._load_images = marked_load
    audit_trace.RequestTrace._saw_event = marked_saw_event


def summary(path: str) -> str:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        return f"{path}: no requests marked"
    gaps = []
    for before, after in zip(("arrival", *MARKS), MARKS):
        seen = [row[after] - row.get(before, 0.0) for row in rows if after in row and (before == "arrival" or before in row)]
        if seen:
            gaps.append(f"{before}->{after} {statistics.median(seen):.2f}")
    return f"receive marks, {len(rows)} requests, median ms: " + ", ".join(gaps)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
