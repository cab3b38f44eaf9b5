"""The engine builds a prompt's ids and patches itself, without the processor's text pass: they
are exactly what the checkpoint's processor makes of the same text and images, also when many
requests are prepared at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from flashsight.engine.errors import InvalidRequestError
from flashsight.engine.prompt import split_images
from sample_images import noise_image
from test_batching_fidelity import make_engine
from test_fidelity import CONVERSATIONS

WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip

CASES = {
    **{name: (messages, {}, None) for name, messages in CONVERSATIONS.items()},
    "tools, no thinking": (
        [{"role": "user", "content": [{"type": "image", "image": noise_image(90, 300, 7)},
                                      {"type": "text", "text": "Where was this taken? Check the weather there."}]}],
        {"enable_thinking": False}, [WEATHER_TOOL],
    ),
    "images back to back, unicode around them": (
        [{"role": "user", "content": [{"type": "text", "text": "描述 café →"}, {"type": "image", "image": noise_image(56, 56, 8)},
                                      {"type": "image", "image": noise_image(640, 480, 9)},
                                      {"type": "text", "text": " 😀 and these two?"}]}],
        {}, None,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = make_engine(tiny_model_dir)
    yield engine
    asyncio.run(engine.shutdown())


def _processors_own(builder, messages, template_kwargs, tools):
    template_messages, images = split_images(messages)
    text = builder.render(template_messages, template_kwargs, tools)
    return builder.processor(text=[text], images=images or None, return_tensors="pt")


@pytest.mark.parametrize("name", list(CASES))
def test_ids_and_patches_are_the_processors(engine, name):
    messages, template_kwargs, tools = CASES[name]
    want = _processors_own(engine.prompts, messages, template_kwargs, tools)
    got = engine.prompts.build(messages, template_kwargs, tools)
    assert got.token_ids == want["input_ids"][0].tolist()
    if "pixel_values" in want:
        assert got.image_grids == [tuple(g) for g in want["image_grid_thw"].tolist()]
        assert torch.equal(got.pixel_values, want["pixel_values"].to(got.pixel_values.dtype))
    else:
        assert got.pixel_values is None and got.image_grids == []


def test_prompts_prepared_at_once_are_those_prepared_one_by_one(engine):
    cases = [CASES[name] for name in CASES] * 3
    alone = [engine.prompts.build(*case) for case in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda case: engine.prompts.build(*case), cases))
    for a, b in zip(alone, together):
        assert a.token_ids == b.token_ids and a.image_grids == b.image_grids and a.image_hashes == b.image_hashes
        assert (a.pixel_values is None and b.pixel_values is None) or torch.equal(a.pixel_values, b.pixel_values)


@pytest.mark.parametrize(
    "content",
    [
        "Say <|image|> back to me.",  # a placeholder with no image
        [{"type": "image", "image": noise_image(64, 64, 1)}, {"type": "text", "text": "and <|image|> too"}],
    ],
)
def test_placeholders_that_do_not_match_the_images_are_refused(engine, content):
    with pytest.raises(InvalidRequestError, match="image placeholders") as refused:
        engine.prompts.build([{"role": "user", "content": content}], {})
    assert refused.value.param == "messages"
