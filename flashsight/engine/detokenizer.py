"""Turning generated token ids into text deltas.

Byte-level tokens can split a UTF-8 character; a delta is released only once the characters it
holds are complete. Stop strings end the text where they begin, and while generating, the last
few characters are held back when they could be the start of a stop string.
"""

from __future__ import annotations

from tokenizers import Tokenizer


class IncrementalDecoder:
    """Decodes a growing id list, returning only complete new characters."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        # A fast tokenizer's own decoder, called directly, gives the same text without the
        # wrapper's ~4 us of Python per call: at a hundred streams that is ~1 ms of the engine
        # thread per decode step, twice (two decodes per token).
        backend = getattr(tokenizer, "_tokenizer", None)
        self._backend = backend if isinstance(backend, Tokenizer) else None
        self.ids: list[int] = []
        self.prefix = 0  # decoding restarts here: a few tokens of context for spacing rules
        self.read = 0  # ids before this are already in returned text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        done = self._decode(self.ids[self.prefix : self.read])
        full = self._decode(self.ids[self.prefix :])
        if len(full) <= len(done) or (full.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return full[len(done) :]

    def _decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


class OutputText:
    """The visible text of one request: decoded, cut at stop strings, released in safe deltas."""

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop = tuple(s for s in stop if s)
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.released = 0
        self.stopped = False

    def append(self, token_id: int) -> str:
        """Add a token; return the text now safe to show. Sets `stopped` when a stop string appears."""
        self._extend(self.decoder.push(token_id))
        return self._release(final=self.stopped)

    def finish(self) -> str:
        """The rest of the text, once generation has ended."""
        if not self.stopped:
            self._extend(self.decoder.flush())
        return self._release(final=True)

    def _extend(self, new: str) -> None:
        if not new or self.stopped:
            return
        search_from = max(0, len(self.text) - self.holdback)
        self.text += new
        cut = min((i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True

    def _release(self, final: bool) -> str:
        end = len(self.text) if final else max(self.released, len(self.text) - self.holdback)
        delta, self.released = self.text[self.released : end], end
        return delta
