"""Remakes docs/screenshot.png, the README's picture of the page: `python tests/web_screenshot.py`.

The tiny checkpoint answers gibberish, so the conversation shown is stored through the page's own
API (a drawn photo, an answer with a table and two grounding boxes) and rendered by the page.
"""

from __future__ import annotations

import base64
import io
import math
import tempfile

import httpx
from browser import chromium
from PIL import Image, ImageDraw
from server_process import REPO_ROOT, flashsight_server

from flashsight.engine.testmodel import write_test_model

ANSWER = """Two parts are on the bench:

| part | condition | action |
|------|-----------|--------|
| spur gear | one tooth chipped, a crack near the hub | replace |
| brass bolt | intact, light wear on the thread | keep |

The crack runs from the hub towards the rim, so the gear should not go back into service."""
BOXES = [
    {"label": "spur gear (cracked)", "box_1000": [120, 230, 440, 710], "image_index": 0, "box_pixels": None},
    {"label": "brass bolt", "box_1000": [560, 480, 900, 630], "image_index": 0, "box_pixels": None},
]


def bench_photo() -> str:
    image = Image.new("RGB", (960, 640), (214, 208, 196))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 470, 960, 640], fill=(120, 96, 72))
    draw.ellipse([120, 150, 420, 450], fill=(150, 150, 160), outline=(80, 80, 90), width=8)
    for tooth in range(16):
        x, y = 270 + 165 * math.cos(tooth * math.pi / 8), 300 + 165 * math.sin(tooth * math.pi / 8)
        draw.ellipse([x - 18, y - 18, x + 18, y + 18], fill=(150, 150, 160))
    draw.ellipse([230, 260, 310, 340], fill=(214, 208, 196))
    draw.rectangle([560, 330, 860, 380], fill=(185, 140, 60))
    draw.rectangle([540, 310, 580, 400], fill=(160, 120, 50))
    draw.line([(330, 200), (370, 240)], fill=(60, 40, 30), width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def store_conversation(api: httpx.Client) -> str:
    for title in ["Label on the crate", "Invoice scan, totals"]:
        api.post("/api/conversations", json={"title": title})
    conversation = api.post("/api/conversations", json={"title": "Gearbox parts: what is damaged?"}).json()
    path = f"/api/conversations/{conversation['id']}/messages"
    api.post(path, json={"role": "user", "content": "Which of these parts are damaged?", "images": [bench_photo()]})
    api.post(path, json={"role": "assistant", "content": ANSWER, "reasoning": "The gear shows a crack.", "boxes": BOXES})
    return conversation["id"]


def main() -> None:
    with tempfile.TemporaryDirectory() as model_dir:
        write_test_model(model_dir, size="tiny")
        with flashsight_server(model_dir, [], {}, ("--served-model-name", "tiny-test-model")) as base_url:
            with httpx.Client(base_url=base_url) as api:
                conversation_id = store_conversation(api)
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 1060})
                page.goto(f"{base_url}/#{conversation_id}")
                page.wait_for_selector("body[data-ready=true]")
                page.wait_for_selector(".boxed-image .box")
                page.locator(".messages").evaluate("(messages) => { messages.scrollTop = messages.scrollHeight; }")
                page.screenshot(path=str(REPO_ROOT / "docs" / "screenshot.png"))


if __name__ == "__main__":
    main()
