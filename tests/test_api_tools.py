"""Tools, tool results and thinking control through the official `openai` SDK against a live
server on the tiny checkpoint. Its output is random tokens, so real calls are not expected here:
tests/test_glm_output.py covers how output becomes calls; these cover what reaches the model and
that streamed and whole answers split alike."""

from __future__ import annotations

import base64
import json

import jsonschema
import openai
import pytest
from openai import OpenAI
from server_process import png_bytes
from test_guided_decoding import WEATHER_TOOL as FORCED_TOOL

GREEDY = {"temperature": 0, "max_tokens": 20}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def prompt_tokens(client: OpenAI, model_id: str, messages: list[dict], **options) -> int:
    completion = client.chat.completions.create(model=model_id, messages=messages, max_tokens=1, **options)
    return completion.usage.prompt_tokens


def test_tools_reach_the_prompt(client, model_id):
    plain = prompt_tokens(client, model_id, HELLO)
    assert prompt_tokens(client, model_id, HELLO, tools=[WEATHER]) > plain + 20
    assert prompt_tokens(client, model_id, HELLO, tools=[WEATHER], tool_choice="auto") > plain + 20
    assert prompt_tokens(client, model_id, HELLO, tools=[WEATHER], tool_choice="none") == plain


def test_a_full_tool_round_trip_is_answered(client, model_id):
    image = "data:image/png;base64," + base64.b64encode(png_bytes(size=(56, 56))).decode()
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    photo = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call, photo], "reasoning_content": "I should look."},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, cloudy"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "image_url", "image_url": {"url": image}}]},
    ]
    completion = client.chat.completions.create(model=model_id, messages=messages, tools=[WEATHER], **GREEDY)
    assert completion.choices[0].finish_reason in ("stop", "length", "tool_calls")
    without_image = prompt_tokens(client, model_id, messages[:-1], tools=[WEATHER])
    assert completion.usage.prompt_tokens > without_image  # the tool's image was rendered


def test_thinking_can_be_switched_off_both_ways(client, model_id):
    thinking = prompt_tokens(client, model_id, HELLO)
    off = prompt_tokens(client, model_id, HELLO, extra_body={"thinking": False})
    assert off == prompt_tokens(client, model_id, HELLO, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off > thinking  # "/nothink" and a pre-filled empty <think></think>


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_tool_choice_yields_a_schema_valid_call(client, model_id, choice):
    for seed in range(3):
        reply = client.chat.completions.create(
            model=model_id, messages=HELLO, tools=[FORCED_TOOL], tool_choice=choice, parallel_tool_calls=False,
            temperature=1.0, seed=seed, max_tokens=400,
        )  # fmt: skip
        choice0 = reply.choices[0]
        assert choice0.finish_reason == "tool_calls"
        (call,) = choice0.message.tool_calls
        assert call.function.name == "get_weather" and call.id
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, FORCED_TOOL["function"]["parameters"])


def test_forcing_an_unknown_tool_is_a_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model_id, messages=HELLO, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert "not among the tools" in caught.value.body["message"]


def test_streamed_answer_with_tools_splits_like_the_whole_one(client, model_id):
    request = {"model": model_id, "messages": HELLO, "tools": [WEATHER], **GREEDY}
    whole = client.chat.completions.create(**request).choices[0]
    chunks = [chunk for chunk in client.chat.completions.create(**request, stream=True) if chunk.choices]
    deltas = [chunk.choices[0].delta for chunk in chunks]
    content = "".join(delta.content or "" for delta in deltas)
    reasoning = "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas)
    assert content == (whole.message.content or "")
    assert reasoning == (getattr(whole.message, "reasoning_content", None) or "")
    streamed_calls = [call.function.name for delta in deltas for call in delta.tool_calls or [] if call.id]
    assert streamed_calls == [call.function.name for call in whole.message.tool_calls or []]
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def forced(client: OpenAI, model_id: str, tools: list[dict], choice, seed: int, **options):
    return client.chat.completions.create(
        model=model_id, messages=HELLO, tools=tools, tool_choice=choice, temperature=1.0, seed=seed,
        **{"max_tokens": 400, **options},
    )  # fmt: skip


def reassembled_calls(chunks) -> list[tuple[str, str, dict]]:
    """The streamed calls as OpenAI clients rebuild them: by index, argument pieces concatenated."""
    calls: dict[int, dict] = {}
    for delta in (chunk.choices[0].delta for chunk in chunks if chunk.choices):
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
    return [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]


REPORT = {
    "type": "function",
    "function": {
        "name": "report",
        "parameters": {
            "type": "object",
            "properties": {
                "defects": {
                    "type": "array", "maxItems": 2,
                    "items": {"type": "object", "properties": {"kind": {"enum": ["dent", "scratch"]},
                              "size": {"type": "integer", "minimum": 0, "maximum": 9}},
                              "required": ["kind", "size"], "additionalProperties": False},
                },
                "urgent": {"type": "boolean"},
            },
            "required": ["defects", "urgent"],
            "additionalProperties": False,
        },
    },
}  # fmt: skip


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_streamed_forced_call_reassembles_to_the_whole_answers_call(client, model_id, choice):
    # One call; then calls one after another until max_tokens cuts them (the cut one is text).
    for seed, options in [(0, {"parallel_tool_calls": False}), (1, {"max_tokens": 250})]:
        whole = forced(client, model_id, [FORCED_TOOL, REPORT], choice, seed, **options).choices[0]
        chunks = list(forced(client, model_id, [FORCED_TOOL, REPORT], choice, seed, stream=True, **options))
        streamed = reassembled_calls(chunks)
        expected = [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls]
        assert [(name, arguments) for _, name, arguments in streamed] == expected and expected
        assert all(call_id.startswith("call_") for call_id, _, _ in streamed)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (whole.message.content or "")
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason
        if "parallel_tool_calls" in options:
            assert len(expected) == 1 and whole.finish_reason == "tool_calls"


NO_PARAMETERS = {"type": "function", "function": {"name": "ping", "description": "Is the camera on?"}}
EMPTY_PARAMETERS = {"type": "function", "function": {"name": "snapshot", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("tool", [NO_PARAMETERS, EMPTY_PARAMETERS])
def test_forced_call_with_zero_arguments(client, model_id, tool):
    name = tool["function"]["name"]
    reply = forced(client, model_id, [tool], {"type": "function", "function": {"name": name}}, seed=0)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == name and json.loads(call.function.arguments) == {}


def test_forced_call_with_nested_values_validates(client, model_id):
    for seed in range(3):
        reply = forced(client, model_id, [REPORT], "required", seed, parallel_tool_calls=False)
        (call,) = reply.choices[0].message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), REPORT["function"]["parameters"])


def test_a_real_call_goes_round_the_loop(client, model_id):
    """The model's own call (forced), sent back with its result, is rendered and answered."""
    made = forced(client, model_id, [FORCED_TOOL], NAMED, seed=3).choices[0].message
    (call,) = made.tool_calls

    def answer(result: str):
        messages = [
            *HELLO,
            {"role": "assistant", "content": made.content, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        return client.chat.completions.create(model=model_id, messages=messages, tools=[FORCED_TOOL], **GREEDY)

    short, longer = answer("18 degrees"), answer("18 degrees, cloudy, with a cold wind from the north")
    assert short.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert longer.usage.prompt_tokens > short.usage.prompt_tokens  # the tool's result reached the model
    rendered_call = short.usage.prompt_tokens - prompt_tokens(client, model_id, HELLO, tools=[FORCED_TOOL])
    assert rendered_call > len(json.loads(call.function.arguments))  # so did the call, argument by argument


def test_tools_with_one_name_twice_are_a_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=HELLO, tools=[WEATHER, WEATHER])
    assert "unique" in caught.value.body["message"]
