"""The chat page in Debian's headless Chromium against a live `flashsight serve` (tiny checkpoint)."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from browser import WATCH_SCRIPT, browser, screenshot  # noqa: F401 (browser: a fixture)
from PIL import Image
from server_process import flashsight_server

XSS = '<img src=x onerror="window.__xss=1;alert(1)">'
ANSWER_WITH_PAYLOADS = f"""Here is **bold**, a list and a table:

- one
- two

| part | state |
|------|-------|
| gear | worn  |

```python
print("hi")
```

{XSS}
<script>window.__xss = 2</script>
<svg onload="window.__xss=3"></svg>
<iframe srcdoc="<script>parent.__xss=4</script>"></iframe>
[a link](javascript:window.__xss=5) <a href="javascript:alert(1)" onclick="window.__xss=6">click</a>
<p style="color:red" onmouseover="window.__xss=7">styled</p>
"""


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> str:
    with flashsight_server(tiny_model_dir, [], {}) as base_url:
        yield base_url


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 800})
    context.add_init_script(WATCH_SCRIPT)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def open_page(page, fragment: str = "") -> None:
    page.goto(f"/{fragment}")
    page.wait_for_selector("body[data-ready=true]")


def image_bytes(size: tuple[int, int], image_format: str, color=(30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def set_max_tokens(page, count: int) -> None:
    page.get_by_role("button", name="Chat settings").click()
    page.get_by_label("Max tokens").fill(str(count))
    page.get_by_label("Max tokens").dispatch_event("change")


def wait_for_answer(page):
    """The last answer once it has finished (its Copy button appears then)."""
    answer = page.locator("article.message.assistant").last
    answer.get_by_role("button", name="Copy the answer").wait_for()
    return answer


def current_conversation(page, api) -> dict:
    conversation_id = page.evaluate("location.hash.slice(1)")
    return api.get(f"/api/conversations/{conversation_id}").json()


def assert_nothing_ran(page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []


def test_send_text_and_get_a_streamed_answer(page, api):
    open_page(page)
    set_max_tokens(page, 12)
    prompt = page.get_by_label("Message text")
    prompt.fill("Hello there")
    prompt.press("Shift+Enter")
    prompt.press_sequentially("second line")
    assert prompt.input_value() == "Hello there\nsecond line"
    prompt.press("Enter")
    answer = wait_for_answer(page)
    assert page.locator("article.message.user .text").last.inner_text() == "Hello there\nsecond line"
    assert answer.locator(".content").inner_text().strip()
    assert "first token" in page.locator("#status").inner_text()
    conversation = current_conversation(page, api)
    assert conversation["title"] == "Hello there"
    assert conversation["settings"]["max_tokens"] == 12
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][1]["content"]
    assert page.evaluate("window.__cspViolations") == []
    screenshot(page, "answer")


def test_regenerate_replaces_the_answer_and_copy_copies_it(page, api):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_page(page)
    set_max_tokens(page, 6)
    page.get_by_label("Message text").fill("Say something")
    page.get_by_role("button", name="Send").click()
    first = current_answer_id(page, api)
    page.get_by_role("button", name="Regenerate the answer").click()
    page.wait_for_function(f"() => Number(document.querySelector('article.message.assistant')?.dataset.messageId) > {first}")
    messages = current_conversation(page, api)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["id"] != first
    page.get_by_role("button", name="Copy the answer").click()
    page.get_by_role("button", name="Copy the answer").filter(has_text="Copied").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == messages[1]["content"]


def current_answer_id(page, api) -> int:
    wait_for_answer(page)
    page.wait_for_selector("article.message.assistant[data-message-id]")
    return int(page.locator("article.message.assistant").last.get_attribute("data-message-id"))


def test_images_by_file_chooser_drop_and_paste(page, api):
    open_page(page)
    set_max_tokens(page, 4)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach images").click()
    big = {"name": "wide.png", "mimeType": "image/png", "buffer": image_bytes((3000, 1000), "PNG")}
    chooser.value.set_files([big])
    page.get_by_role("button", name="Remove wide.png").wait_for()
    assert "downscaled to 1536\u00d7512" in page.locator("#image-note").inner_text()

    drop_file(page, "#prompt", "drop", "dropped.jpg", "image/jpeg", image_bytes((64, 48), "JPEG"))
    page.get_by_role("button", name="Remove dropped.jpg").wait_for()
    drop_file(page, "#prompt", "paste", "pasted.webp", "image/webp", image_bytes((50, 50), "WEBP"))
    page.get_by_role("button", name="Remove pasted.webp").wait_for()
    assert page.locator("#attachments li").count() == 3
    assert "downscaled to 1536\u00d7512" in page.locator("#image-note").inner_text()  # still shown
    screenshot(page, "attachments")

    page.get_by_label("Message text").fill("What are these?")
    page.get_by_role("button", name="Send").click()
    wait_for_answer(page)
    assert page.locator("article.message.user .images img").count() == 3
    stored = current_conversation(page, api)["messages"][0]
    sizes = [Image.open(io.BytesIO(api.get(url).content)).size for url in stored["images"]]
    assert sizes == [(1536, 512), (64, 48), (50, 50)]
    assert page.evaluate("window.__cspViolations") == []


def drop_file(page, selector: str, kind: str, name: str, media_type: str, data: bytes) -> None:
    """A drop or paste event carrying one file, as the browser builds them."""
    page.evaluate(
        """([selector, kind, name, type, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            const target = document.querySelector(selector);
            const event = kind === 'paste'
              ? new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true })
              : new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true });
            target.dispatchEvent(event);
        }""",
        [selector, kind, name, media_type, base64.b64encode(data).decode()],
    )


def test_stop_mid_stream_keeps_the_partial_answer(page, api):
    open_page(page)
    set_max_tokens(page, 6000)
    page.get_by_label("Message text").fill("Go on and on.")
    page.get_by_label("Message text").press("Enter")
    stop = page.get_by_role("button", name="Stop")
    stop.wait_for()
    page.wait_for_function("() => document.querySelector('article.message.assistant .content')?.textContent.length > 0")
    assert stop.is_visible()  # the answer is on screen while it is still being generated
    stop.click()
    answer = wait_for_answer(page)
    assert answer.locator(".notice").inner_text() == "Stopped."
    assert page.get_by_role("button", name="Send").is_visible()
    wait_until_idle(api)
    messages = current_conversation(page, api)["messages"]
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"]
    screenshot(page, "stopped")


def wait_until_idle(api, deadline_s: float = 60) -> None:
    """The server cancels a generation whose client went away: the engine empties."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        engine = api.get("/v1/status").json()["engine"]
        if engine["running_requests"] == 0 and engine["waiting_requests"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the engine still runs the stopped request")


def test_history_reload_rename_delete(page, api):
    created = api.post("/api/conversations", json={"title": "Gearbox inspection"}).json()
    api.post(f"/api/conversations/{created['id']}/messages", json={"role": "user", "content": "Is it worn?"})
    open_page(page)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("button", name="Open conversation Gearbox inspection").click()
    page.locator("article.message.user", has_text="Is it worn?").wait_for()
    assert page.locator("#chat-title").inner_text() == "Gearbox inspection"

    page.get_by_label("Search conversations by title").fill("gearbox")
    page.wait_for_function("() => document.querySelectorAll('#conversation-list li').length === 1")
    page.get_by_role("button", name="Rename Gearbox inspection").click()
    page.get_by_label("New title").fill("Gearbox, worn teeth")
    page.get_by_label("New title").press("Enter")
    page.get_by_role("button", name="Open conversation Gearbox, worn teeth").wait_for()
    assert api.get(f"/api/conversations/{created['id']}").json()["title"] == "Gearbox, worn teeth"
    assert page.locator("#chat-title").inner_text() == "Gearbox, worn teeth"
    screenshot(page, "sidebar")

    page.get_by_role("button", name="Delete Gearbox, worn teeth").click()
    page.get_by_role("button", name="Confirm: delete Gearbox, worn teeth").click()
    page.get_by_role("button", name="Open conversation Gearbox, worn teeth").wait_for(state="detached")
    assert api.get(f"/api/conversations/{created['id']}").status_code == 404
    assert page.locator("#chat-title").inner_text() == "New chat"


def test_markdown_thinking_and_boxes_render_and_payloads_stay_inert(page, api):
    conversation = api.post("/api/conversations", json={"title": XSS}).json()
    path = f"/api/conversations/{conversation['id']}"
    photo = "data:image/png;base64," + base64.b64encode(image_bytes((400, 300), "PNG", (90, 160, 90))).decode()
    api.post(f"{path}/messages", json={"role": "user", "content": XSS, "images": [photo]})
    box = {"label": XSS, "box_1000": [100, 200, 600, 900], "image_index": 0, "box_pixels": [40, 60, 240, 270]}
    api.post(f"{path}/messages", json={"role": "assistant", "content": ANSWER_WITH_PAYLOADS,
                                       "reasoning": f"Thinking about it {XSS}", "boxes": [box]})  # fmt: skip
    open_page(page, f"#{conversation['id']}")
    answer = page.locator("article.message.assistant").last
    answer.locator(".content table").wait_for()
    assert answer.locator(".content pre code").inner_text().strip() == 'print("hi")'
    assert answer.locator(".content li").count() == 2
    assert answer.locator(".content script, .content iframe, .content svg, .content [onerror]").count() == 0
    assert answer.locator(".content a[href^='javascript']").count() == 0
    assert answer.locator(".content [style]").count() == 0
    thinking = answer.locator("details.thinking")
    assert thinking.get_attribute("open") is None and thinking.locator("summary").inner_text() == "Thinking"
    assert page.locator("article.message.user .text").inner_text() == XSS  # shown as text
    assert page.get_by_role("button", name=f"Open conversation {XSS}").inner_text() == XSS
    label = answer.locator(".boxed-image .box .box-label")
    assert label.inner_text() == XSS
    frame = answer.locator(".boxed-image .box").evaluate("(box) => [box.style.left, box.style.top, box.style.width]")
    assert frame == ["10%", "20%", "50%"]
    thinking.locator("summary").click()
    answer.locator("a", has_text="click").click()
    page.locator("article.message.user .text").hover()
    assert_nothing_ran(page)
    screenshot(page, "markdown-boxes")


def test_a_file_name_with_markup_stays_text(page, api):
    open_page(page)
    set_max_tokens(page, 2)
    name = '<img src=x onerror="window.__xss=8;alert(8)">.png'
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach images").click()
    chooser.value.set_files([{"name": name, "mimeType": "image/png", "buffer": image_bytes((32, 32), "PNG")}])
    assert page.locator("#attachments .name").inner_text() == name
    page.get_by_role("button", name="Send").click()
    wait_for_answer(page)
    title = f"Image: {name}"[:60]
    assert current_conversation(page, api)["title"] == title
    assert page.locator("#chat-title").inner_text() == title
    assert_nothing_ran(page)


def test_phone_sized_screen(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 390, "height": 844}, has_touch=True)
    page = context.new_page()
    try:
        open_page(page)
        send = page.get_by_role("button", name="Send")
        box = send.bounding_box()
        assert box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844
        new_chat = page.get_by_role("button", name="New chat")
        assert not in_viewport(new_chat)  # the sidebar is tucked away...
        page.get_by_role("button", name="Show conversations").click()
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
        assert in_viewport(new_chat)  # ...until asked for
        screenshot(page, "phone-sidebar")
        page.get_by_role("button", name="Hide conversations").click()
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
        screenshot(page, "phone")
    finally:
        context.close()


def in_viewport(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
