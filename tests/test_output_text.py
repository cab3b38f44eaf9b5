"""Text deltas: whole UTF-8 characters only, stop strings cut the text, nothing lost. Each runs
through both decoders: from each token's bytes (byte-level tokenizers, GLM's) and through the
tokenizer's own decode (any other)."""

from __future__ import annotations

import pytest

from flashsight.engine.detokenizer import OutputText, TokenBytes, byte_alphabet, decoder_for


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module", params=["token bytes", "tokenizer decode"])
def pieces(request, tokenizer):
    if request.param == "tokenizer decode":
        return None
    pieces = TokenBytes.of(tokenizer)
    assert pieces is not None, "the synthetic tokenizer is byte-level, as GLM's"
    return pieces


def _byte_ids(tokenizer, text: str | bytes) -> list[int]:
    """One token per byte: a multi-byte character is split across tokens."""
    alphabet = byte_alphabet()
    data = text.encode() if isinstance(text, str) else text
    return [tokenizer.convert_tokens_to_ids(alphabet[b]) for b in data]


def test_multibyte_characters_are_never_split(tokenizer, pieces):
    text = "café 图片 😀!"
    decoder = decoder_for(tokenizer, pieces)
    deltas = [decoder.push(t) for t in _byte_ids(tokenizer, text)] + [decoder.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert len([d for d in deltas if d]) == len(text)  # one delta per character


def test_stop_string_cuts_text_and_is_not_shown(tokenizer, pieces):
    out = OutputText(tokenizer, ("STOP",), pieces)
    shown = ""
    for token in _byte_ids(tokenizer, "hello STOP world"):
        shown += out.append(token)
        if out.stopped:
            break
    shown += out.finish()
    assert out.stopped and shown == "hello "


def test_partial_stop_string_is_held_back_then_released(tokenizer, pieces):
    out = OutputText(tokenizer, ("END!",), pieces)
    shown = [out.append(t) for t in _byte_ids(tokenizer, "abcEN")]
    assert "".join(shown) == "ab"  # "cEN" could start "END!"
    assert out.finish() == "cEN" and not out.stopped


def test_stop_string_spanning_tokens(tokenizer, pieces):
    out = OutputText(tokenizer, ("图片",), pieces)
    shown = "".join(out.append(t) for t in _byte_ids(tokenizer, "看图片吧"))
    assert out.stopped and shown + out.finish() == "看"


def test_token_bytes_give_the_tokenizers_own_text_for_any_ids(tokenizer):
    """Random ids (multi-byte pieces, stray bytes, added tokens, ids past the vocabulary): the
    deltas add up to what the tokenizer decodes from the whole sequence."""
    import random

    backend, pieces = tokenizer._tokenizer, TokenBytes.of(tokenizer)
    rng = random.Random(7)
    added = list(backend.get_added_tokens_decoder())
    for _ in range(300):
        ids = [rng.choice(added) if rng.random() < 0.05 else rng.randrange(151552) for _ in range(rng.randrange(1, 40))]
        decoder = decoder_for(tokenizer, pieces)
        text = "".join(decoder.push(i) for i in ids) + decoder.flush()
        assert text == backend.decode(ids, skip_special_tokens=False), ids


def test_stray_bytes_are_shown_once_they_cannot_complete_a_character(tokenizer, pieces):
    """A lead byte followed by bytes that cannot continue it: its replacement character is shown
    then, not held to the end of the answer."""
    decoder = decoder_for(tokenizer, pieces)
    deltas = [decoder.push(t) for t in _byte_ids(tokenizer, b"\xe4" * 5 + b"ok")] + [decoder.flush()]
    assert "".join(deltas) == "\ufffd" * 5 + "ok"
    if pieces is not None:  # the tokenizer's decode cannot tell a stray byte from a partial character
        assert deltas[1] == "\ufffd", deltas


def test_without_stop_strings_each_character_is_shown_as_it_completes(tokenizer, pieces):
    out = OutputText(tokenizer, (), pieces)
    shown = [out.append(t) for t in _byte_ids(tokenizer, "a图😀")]
    assert shown == ["a", "", "", "图", "", "", "", "😀"]
    assert out.finish() == "" and not out.stopped
