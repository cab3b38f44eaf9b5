"""A byte-level BPE tokenizer with GLM-4.6V's vocabulary size and special tokens at their real ids.

Only for synthetic checkpoints: the real model ships its own tokenizer. Every id below the
special tokens decodes to real bytes, multi-byte UTF-8 characters included, so detokenization
is exercised the way real output exercises it.
"""

from __future__ import annotations

import random

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from flashsight.engine.detokenizer import byte_alphabet

FIRST_SPECIAL_ID = 151329
SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|begin_of_audio|>", "<|end_of_audio|>", "<|begin_of_transcription|>", "<|end_of_transcription|>",
    "<|code_prefix|>", "<|code_middle|>", "<|code_suffix|>",
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink",
    "<|begin_of_box|>", "<|end_of_box|>", "<|image|>", "<|video|>",
)  # fmt: skip
# Markup the model writes into its answers: decoded as text, never skipped.
TEXT_MARKUP = frozenset(SPECIAL_TOKENS[SPECIAL_TOKENS.index("<think>") :]) - {"<|image|>", "<|video|>"}

# Seeds for merges, so common English and a few non-ASCII words become single tokens.
_WORDS = (
    "the a an and of to in is it that this with for on as are be was image photo picture "
    "describe what there color red blue green white black left right top bottom person text "
    "café naïve über 图片 颜色 描述 日本語 привет 😀 → … — ✓"
).split()


def build_tokenizer(regular_vocab: int = FIRST_SPECIAL_ID, seed: int = 0) -> Tokenizer:
    alphabet = byte_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []

    def add_merge(left: str, right: str) -> None:
        if left in vocab and right in vocab and left + right not in vocab and len(vocab) < regular_vocab:
            merges.append((left, right))
            vocab[left + right] = len(vocab)

    for word in _WORDS:
        symbols = [alphabet[b] for b in (" " + word).encode()]
        while len(symbols) > 1:  # merge left to right until the word is one token
            add_merge(symbols[0], symbols[1])
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
    rng = random.Random(seed)
    short = list(vocab)  # pieces of at most 4 characters: pairs of them stay short
    while len(vocab) < regular_vocab:  # random pairs of short pieces fill the rest
        left, right = rng.choice(short), rng.choice(short)
        before = len(vocab)
        add_merge(left, right)
        if len(vocab) > before and len(left + right) <= 4:
            short.append(left + right)

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=t not in TEXT_MARKUP, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tokenizer
