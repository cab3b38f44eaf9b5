"""Constrained decoding: whatever the sampler draws, the output follows the grammar."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.errors import InvalidRequestError
from flashsight.engine.types import ChatRequest, GuidedDecoding, SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["scratch", "dent", "crack", "none"]},
        "severity": {"type": "integer", "minimum": 0, "maximum": 5},
        "box": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000}, "minItems": 4, "maxItems": 4},
        "checks": {
            "type": "object",
            "properties": {"paint_ok": {"type": "boolean"}, "side": {"enum": ["left", "right"]}},
            "required": ["paint_ok", "side"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["urgent", "cosmetic"]}, "maxItems": 2},
    },
    "required": ["label", "severity", "box", "checks", "tags"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Inspect the part and answer in JSON."}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(EngineConfig(model=tiny_model_dir, device="cpu"))
    yield engine
    asyncio.run(engine.shutdown())


async def run(engine: Engine, params: SamplingParams, request_id: str = "g"):
    text, finish = "", None
    async for event in engine.generate(ChatRequest(request_id, MESSAGES, params)):
        text += event.text
        finish = event.finish_reason
    return text, finish


def test_json_schema_holds_for_many_seeds(engine):
    """Twenty here, on a larger schema; tests/test_api_structured.py asks a hundred through the API."""
    guided = GuidedDecoding("json_schema", json.dumps(SCHEMA))

    async def all_seeds():
        params = [SamplingParams(max_tokens=200, temperature=1.0, seed=seed, guided=guided) for seed in range(20)]
        return await asyncio.gather(*(run(engine, p, f"s{i}") for i, p in enumerate(params)))

    for text, finish in asyncio.run(all_seeds()):
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_mode_output_is_an_object_or_a_cut_prefix(engine):
    guided = GuidedDecoding("json_object")
    for seed in range(5):
        text, finish = asyncio.run(run(engine, SamplingParams(max_tokens=40, temperature=1.0, seed=seed, guided=guided)))
        assert text.startswith("{")
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert finish == "length"


def test_a_schema_xgrammar_cannot_enforce_is_a_request_error(engine):
    bad = GuidedDecoding("json_schema", "{not json")
    with pytest.raises(InvalidRequestError, match="cannot be enforced"):
        asyncio.run(run(engine, SamplingParams(max_tokens=5, guided=bad)))


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
                           "units": {"enum": ["metric", "imperial"]}},
            "required": ["city", "days", "units"],
            "additionalProperties": False,
        },
    },
}  # fmt: skip
CALL = re.compile(r"^<tool_call>(\w+)\s?((?:<arg_key>.*?</arg_key>\s?<arg_value>.*?</arg_value>\s?)*)</tool_call>", re.S)
ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s?<arg_value>(.*?)</arg_value>", re.S)


def parse_first_call(text: str) -> tuple[str, dict]:
    match = CALL.match(text)
    assert match, text
    args = {}
    for key, value in ARG.findall(match.group(2)):
        key, value = key.strip(), value.strip()  # the grammar allows one whitespace character around values
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return match.group(1), args


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_is_well_formed_with_valid_arguments(engine, choice):
    spec = json.dumps({"tools": [WEATHER_TOOL], "tool_choice": choice, "parallel_tool_calls": False})
    guided = GuidedDecoding("tool_calls", spec)
    for seed in range(10):
        text, finish = asyncio.run(run(engine, SamplingParams(max_tokens=400, temperature=1.0, seed=seed, guided=guided)))
        name, args = parse_first_call(text)
        assert name == "get_weather" and finish == "stop"
        if isinstance(args.get("city"), (int, float)):  # a raw string value that happens to parse as JSON
            args["city"] = str(args["city"])
        jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])
