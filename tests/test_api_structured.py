"""JSON mode and JSON schemas through the official openai SDK, a hundred sampled seeds each: a
finished answer always parses and validates; one cut by `max_tokens` is a JSON prefix with
`finish_reason: "length"`, as OpenAI's is."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
import xgrammar
from openai import BadRequestError, OpenAI

SEEDS = range(100)
# Nested objects, arrays and enums, kept short: each answer costs a sampling step per token, and
# the random-weight model spells keys out a few characters per token.
INSPECTION = {
    "type": "object",
    "properties": {
        "part": {
            "type": "object",
            "properties": {
                "state": {"enum": ["ok", "bent"]},
                "marks": {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2},
            },
            "required": ["state", "marks"],
            "additionalProperties": False,
        },
    },
    "required": ["part"],
    "additionalProperties": False,
}
LONGEST = {"part": {"state": "bent", "marks": [1, 2]}}
# Every token is at least one character, plus the stop token: no valid answer is ever cut.
UNCUT_TOKENS = len(json.dumps(LONGEST)) + 1
# Temperature 1 over every token the grammar allows (not the checkpoint's top-k 2 and top-p 0.6).
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "extra_body": {"top_k": -1}}


def ask(client: OpenAI, model_id: str, seed: int, stream: bool, **options) -> tuple[str, str]:
    request = {
        "model": model_id, "messages": [{"role": "user", "content": "Describe the defect as JSON."}],
        "seed": seed, **SAMPLED, **options,
    }  # fmt: skip
    if not stream:
        choice = client.chat.completions.create(**request).choices[0]
        return choice.message.content, choice.finish_reason
    chunks = [chunk for chunk in client.chat.completions.create(**request, stream=True) if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    return text, chunks[-1].choices[0].finish_reason


def ask_every_seed(client: OpenAI, model_id: str, **options) -> list[tuple[str, str]]:
    """One request per seed, a few at a time (the engine batches them), every other one streamed."""
    with ThreadPoolExecutor(max_workers=20) as pool:
        return list(pool.map(lambda seed: ask(client, model_id, seed, seed % 2 == 1, **options), SEEDS))


def test_the_longest_answer_fits_the_schema():
    jsonschema.validate(LONGEST, INSPECTION)


def test_json_schema_answers_always_validate(client, model_id):
    fmt = {"type": "json_schema", "json_schema": {"name": "inspection", "schema": INSPECTION, "strict": True}}
    answers = ask_every_seed(client, model_id, response_format=fmt, max_tokens=UNCUT_TOKENS)
    for text, finish in answers:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), INSPECTION)
    assert len({text for text, _ in answers}) >= 4  # really sampled, seed by seed


def is_json_prefix(text: str) -> bool:
    """Whether some continuation of `text` is a JSON document (xgrammar's JSON grammar, read
    character by character: no tokenizer, no sampling)."""
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([]))
    return xgrammar.GrammarMatcher(compiler.compile_builtin_json_grammar()).accept_string(text)


def test_json_mode_answers_are_objects_or_cut_prefixes(client, model_id):
    answers = ask_every_seed(client, model_id, response_format={"type": "json_object"}, max_tokens=8)
    for text, finish in answers:
        assert text.startswith("{") and finish in ("stop", "length"), text
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert is_json_prefix(text), text
    assert {finish for _, finish in answers} == {"stop", "length"}  # both kinds of ending were seen


def test_unenforceable_schema_is_a_400(client, model_id):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(BadRequestError) as error:
        ask(client, model_id, seed=0, stream=False, response_format=fmt)
    assert "cannot be enforced" in error.value.message
