"""Server-sent events from a stream's raw bytes, as they arrive: the data of each event.

WHATWG's event-stream interpretation, for what a completion stream uses: lines end in CRLF, LF or
CR; a blank line ends an event; an event's `data` lines are joined with LF; comments (`:`) and
every other field (`event`, `id`, `retry`) are skipped, and an event with no data is not one.
"""

from __future__ import annotations

import codecs
import re

_LINE_END = re.compile(r"\r\n|\r|\n")


class EventData:
    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # the start of a line whose end has not come yet
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that `chunk` (the stream's next bytes) completes."""
        text = self._partial + self._text.decode(chunk)
        # A CR at the very end may be the first half of a CRLF: wait for the next byte to tell.
        held = text.endswith("\r")
        *lines, self._partial = _LINE_END.split(text[:-1] if held else text)
        if held:
            self._partial += "\r"
        events = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                self._data = []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                if field == "data":
                    self._data.append(value[1:] if value.startswith(" ") else value)
        return events
