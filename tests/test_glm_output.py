"""GLM-4.6V's output text → OpenAI fields, on hand-written outputs: reasoning, content, tool calls
and boxes; and the streaming parser, fed one character at a time, agrees with the one-shot one."""

from __future__ import annotations

import json

import pytest

from flashsight.engine.types import ChatRequest, GuidedDecoding, SamplingParams
from flashsight.server.glm_output import EARLY_REASONING_CHARS, OutputReader, StreamParser, find_boxes, parse_output

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "query": {"type": "string"}},
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, SEARCH]


def call(name: str, **args: str) -> str:
    pairs = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in args.items())
    return f"<tool_call>{name}\n{pairs}</tool_call>"


def calls_of(parsed) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls]


# Each case: the output text, how the request was made, and the (reasoning, content, calls) expected.
CASES = {
    "plain_text": ("Hello there.", {}, ("", "Hello there.", [])),
    "thinking_and_answer": ("<think>\nLet me look.\n</think>\nA red square.", {}, ("Let me look.", "A red square.", [])),
    "thinking_off": ("A red square.", {"thinking": False}, ("", "A red square.", [])),
    "thinking_off_with_think_block": ("<think>x</think>\nSure.", {"thinking": False}, ("x", "Sure.", [])),
    "end_tag_without_start_tag": ("I should answer.</think>\nYes.", {}, ("I should answer.", "Yes.", [])),
    "end_tag_without_start_tag_thinking_off": ("I should.</think>\nYes.", {"thinking": False}, ("", "I should.\nYes.", [])),
    "end_tag_without_start_tag_after_a_box": (
        "<|begin_of_box|>a<|end_of_box|> b</think>c",
        {},
        ("<|begin_of_box|>a<|end_of_box|> b", "c", []),
    ),
    "end_tag_too_late_to_end_reasoning": (
        "x" * EARLY_REASONING_CHARS + "y</think>z",
        {},
        ("", "x" * EARLY_REASONING_CHARS + "yz", []),
    ),
    "think_block_after_an_answer": ("Sure. <think>hm</think> Done.", {}, ("hm", "Sure.  Done.", [])),
    "thinking_cut_short": ("<think>\nStill thinking", {}, ("Still thinking", "", [])),
    "zero_argument_call": ("<tool_call>search\n</tool_call>", {}, ("", "", [("search", {})])),
    "zero_argument_call_no_newline": ("<tool_call>search</tool_call>", {}, ("", "", [("search", {})])),
    "nested_json_values": (
        call("lookup", obj='{"a": {"b": [1, 2]}}', arr="[1, \"x\"]", num="3.5", flag="true"),
        {},
        ("", "", [("lookup", {"obj": {"a": {"b": [1, 2]}}, "arr": [1, "x"], "num": 3.5, "flag": True})]),
    ),
    "string_parameter_that_looks_like_json": (
        call("get_weather", city="Paris", query="[1, 2]", days="3"),
        {},
        ("", "", [("get_weather", {"city": "Paris", "query": "[1, 2]", "days": 3})]),
    ),
    "two_calls_in_one_turn": (
        call("get_weather", city="Oslo") + "\n" + call("get_weather", city="Rome"),
        {},
        ("", "", [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]),
    ),
    "content_before_a_call": (
        "I will check.\n" + call("search", q="cats"),
        {},
        ("", "I will check.", [("search", {"q": "cats"})]),
    ),
    "unclosed_call": ("Hi <tool_call>search\n<arg_key>q", {}, ("", "Hi <tool_call>search\n<arg_key>q", [])),
    "key_without_value": (
        "<tool_call>search\n<arg_key>q</arg_key>\n</tool_call>",
        {},
        ("", "<tool_call>search\n<arg_key>q</arg_key>\n</tool_call>", []),
    ),
    "call_without_name": ("<tool_call>\n</tool_call>ok", {}, ("", "<tool_call>\n</tool_call>ok", [])),
    "thinking_call_and_box": (
        "<think>The cup is left.</think>\n<|begin_of_box|>cup [10,20,30,40]<|end_of_box|>\n" + call("search", q="cup"),
        {},
        ("The cup is left.", "cup [10,20,30,40]", [("search", {"q": "cup"})]),
    ),
    "second_call_dropped_without_parallel_calls": (
        call("get_weather", city="Oslo") + "\n" + call("get_weather", city="Rome") + " done",
        {"parallel_calls": False},
        ("", "done", [("get_weather", {"city": "Oslo"})]),
    ),
    "broken_second_call_stays_text_without_parallel_calls": (
        call("search", q="a") + "<tool_call>\n</tool_call>",
        {"parallel_calls": False},
        ("", "<tool_call>\n</tool_call>", [("search", {"q": "a"})]),
    ),
    "markup_off_keeps_tags_verbatim": (
        '{"note": "</think><|begin_of_box|><tool_call>x</tool_call>"}',
        {"markup": False},
        ("", '{"note": "</think><|begin_of_box|><tool_call>x</tool_call>"}', []),
    ),
    "calls_not_parsed_when_tools_off": (
        call("search", q="x"),
        {"parse_tools": False},
        ("", call("search", q="x"), []),
    ),
    "almost_a_tag": ("a <thin> b <tool_ca", {}, ("", "a <thin> b <tool_ca", [])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_shot(name):
    text, options, (reasoning, content, calls) = CASES[name]
    parsed = parse_output(text, TOOLS, **options)
    assert parsed.reasoning_content == reasoning
    assert parsed.content == content
    assert calls_of(parsed) == calls
    for made in parsed.tool_calls:
        assert made["type"] == "function" and made["id"].startswith("call_") and len(made["id"]) > 10


@pytest.mark.parametrize("name", list(CASES))
def test_streaming_one_character_at_a_time_matches(name):
    text, options, _ = CASES[name]
    parser = StreamParser(TOOLS, **options)
    deltas = [delta for char in text for delta in parser.feed(char)] + parser.finish()
    expected = parse_output(text, TOOLS, **options)
    assert "".join(d.reasoning_content for d in deltas if d.reasoning_content) == expected.reasoning_content
    assert "".join(d.content for d in deltas if d.content) == expected.content
    assert streamed_calls(deltas) == calls_of(expected)


def streamed_calls(deltas) -> list[tuple[str, dict]]:
    """Reassemble tool calls the way OpenAI clients do: by index, concatenating argument pieces."""
    calls: dict[int, dict] = {}
    for delta in (d.tool_call for d in deltas if d.tool_call):
        if "id" in delta:
            assert delta["type"] == "function" and delta["function"]["arguments"] == ""
            calls[delta["index"]] = {"name": delta["function"]["name"], "arguments": ""}
        calls[delta["index"]]["arguments"] += delta["function"]["arguments"]
    return [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]


@pytest.mark.parametrize("name", ["end_tag_without_start_tag", "end_tag_too_late_to_end_reasoning", "thinking_call_and_box"])
def test_streaming_in_uneven_pieces_matches(name):
    text, options, _ = CASES[name]
    parser = StreamParser(TOOLS, **options)
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    deltas = [delta for piece in pieces for delta in parser.feed(piece)] + parser.finish()
    expected = parse_output(text, TOOLS, **options)
    assert "".join(d.reasoning_content for d in deltas if d.reasoning_content) == expected.reasoning_content
    assert "".join(d.content for d in deltas if d.content) == expected.content
    assert streamed_calls(deltas) == calls_of(expected)


def test_a_thinking_output_without_tags_is_held_back_only_until_it_cannot_be_reasoning():
    parser = StreamParser(TOOLS)
    assert parser.feed("x" * EARLY_REASONING_CHARS) == []  # a </think> may still come
    assert [d.content for d in parser.feed("12345678")] == ["x" * EARLY_REASONING_CHARS + "12345678"]
    assert [d.content for d in parser.feed("go on")] == ["go on"]


def test_a_thinking_output_streams_at_once_after_its_think_tag():
    parser = StreamParser(TOOLS)
    assert [d.reasoning_content for d in parser.feed("<think>Look")] == ["Look"]


def test_tag_prefixes_are_held_back_until_known():
    parser = StreamParser(TOOLS, thinking=False)
    assert [d.content for d in parser.feed("Hi <tool")] == ["Hi"]
    assert parser.feed("_c") == []
    assert [d.content for d in parser.feed("x")] == [" <tool_cx"]  # not a tag after all
    assert parser.finish() == []


def test_box_markers_are_removed_and_boxes_scaled_to_pixels():
    parsed = parse_output("<|begin_of_box|>the dog [100,250,500,1000]<|end_of_box|>", thinking=False)
    assert parsed.content == "the dog [100,250,500,1000]"
    boxes = find_boxes(parsed.content, image_index=1, image_size=(640, 480))
    assert boxes == [{"label": "the dog", "box_1000": [100, 250, 500, 1000], "image_index": 1, "box_pixels": [64, 120, 320, 480]}]


def test_boxes_without_an_image_and_labels_from_json():
    content = '[{"label": "cat", "bbox_2d": [0,0,10,10]}, {"label": "hat", "bbox_2d": [5,5,6,6]}] and [1,2,3]'
    boxes = find_boxes(content)
    assert [b["label"] for b in boxes] == ["cat", "hat"]
    assert all(b["image_index"] is None and b["box_pixels"] is None for b in boxes)


def test_out_of_range_or_inverted_boxes_are_not_boxes():
    assert find_boxes("[0,0,1001,5] [10,10,5,20] [1,2,3,4]") == [
        {"label": None, "box_1000": [1, 2, 3, 4], "image_index": None, "box_pixels": None}
    ]


def reader_for(guided: GuidedDecoding | None, template_kwargs: dict | None = None, **options) -> OutputReader:
    request = ChatRequest("r", [{"role": "user", "content": "hi"}], SamplingParams(guided=guided), template_kwargs or {}, TOOLS)
    return OutputReader(request, **options)


def test_a_request_with_thinking_off_reads_a_bare_end_tag_as_stray():
    text = "Plan.</think>Answer."
    assert reader_for(None).parse(text).reasoning_content == "Plan."
    off = reader_for(None, {"enable_thinking": False})
    assert (off.parse(text).reasoning_content, off.parse(text).content) == ("", "Plan.Answer.")
    assert [d.content for d in off.stream().feed(text)] == ["Plan.", "Answer."]  # nothing held back


def test_json_under_a_grammar_is_read_verbatim():
    text = '{"a": "<think>x</think> [1,2,3,4]"}'
    reader = reader_for(GuidedDecoding("json_object"))
    assert reader.parse(text).content == text
    assert reader.boxes(text) == []


def test_forced_calls_are_parsed_and_parallel_calls_off_keeps_the_first():
    text = call("search", q="a") + call("search", q="b")
    assert calls_of(reader_for(GuidedDecoding("tool_calls", "{}")).parse(text)) == [("search", {"q": "a"}), ("search", {"q": "b"})]
    assert calls_of(reader_for(None, parallel_tool_calls=False).parse(text)) == [("search", {"q": "a"})]
