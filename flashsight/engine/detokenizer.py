"""Turning generated token ids into text deltas.

Byte-level tokens can split a UTF-8 character; a delta is released only once the characters it
holds are complete. Stop strings end the text where they begin, and while generating, the last
few characters are held back when they could be the start of a stop string.
"""

from __future__ import annotations

import codecs

from tokenizers import Tokenizer, decoders


class TokenBytes:
    """Each token's bytes, for a byte-level BPE tokenizer (GLM's): its text is then an
    incremental UTF-8 decode of their concatenation, exactly what the tokenizer's own decoder
    gives for the whole sequence, at ~1 us a token against ~5 us for two tokenizer calls (the
    development machine; ~0.4 ms of the engine thread a 100-row step). A stray byte shows as
    U+FFFD once the next byte shows it can start no character, where the tokenizer's text ends
    in U+FFFD either way and had to be held to the end. Looked up as tokens are first seen;
    one per engine."""

    def __init__(self, backend: Tokenizer):
        self._backend = backend
        self._byte_of = {char: byte for byte, char in byte_alphabet().items()}
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def of(cls, tokenizer) -> TokenBytes | None:
        """For a fast tokenizer whose decoder is ByteLevel; None for any other."""
        backend = getattr(tokenizer, "_tokenizer", None)
        if isinstance(backend, Tokenizer) and isinstance(backend.decoder, decoders.ByteLevel):
            return cls(backend)
        return None

    def __getitem__(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._bytes_of(self._backend.id_to_token(token_id))
        return piece

    def _bytes_of(self, token: str | None) -> bytes:
        """As the ByteLevel decoder reads a token: each character is a byte of the alphabet, and
        a token with any other character (an added token's text) stands for its own UTF-8. An id
        with no token (past the tokenizer's vocabulary) is no text."""
        if token is None:
            return b""
        try:
            return bytes(self._byte_of[char] for char in token)
        except KeyError:
            return token.encode()


class ByteLevelDecoder:
    """Decodes token ids from their bytes (`TokenBytes`), returning only complete new characters:
    a character's text as its last byte arrives."""

    def __init__(self, pieces: TokenBytes):
        self.pieces = pieces
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.pieces[token_id])

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class IncrementalDecoder:
    """Decodes a growing id list through the tokenizer, returning only complete new characters
    (any tokenizer; byte-level ones take `ByteLevelDecoder`)."""

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


def decoder_for(tokenizer, pieces: TokenBytes | None) -> ByteLevelDecoder | IncrementalDecoder:
    """From each token's bytes when the tokenizer is byte-level (`pieces`), else through it."""
    return ByteLevelDecoder(pieces) if pieces is not None else IncrementalDecoder(tokenizer)


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel expects)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


class OutputText:
    """The visible text of one request: decoded, cut at stop strings, released in safe deltas."""

    def __init__(self, tokenizer, stop: tuple[str, ...], pieces: TokenBytes | None = None):
        self.decoder = decoder_for(tokenizer, pieces)
        self.stop = tuple(s for s in stop if s)
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.released = 0
        self.stopped = False

    def append(self, token_id: int) -> str:
        """Add a token; return the text now safe to show. Sets `stopped` when a stop string appears."""
        new = self.decoder.push(token_id)
        if not self.stop:  # nothing to hold back or cut: every complete character is safe
            return new
        self._extend(new)
        return self._release(final=self.stopped)

    def finish(self) -> str:
        """The rest of the text, once generation has ended."""
        if not self.stop:
            return self.decoder.flush()
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
