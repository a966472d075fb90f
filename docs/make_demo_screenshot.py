"""Regenerate the README's screenshot of the web demo: `.venv/bin/python docs/make_demo_screenshot.py`.

Starts `gradcam serve` in this process on a free port, opens the page in headless Debian chromium
(`make browser` installs it) through Playwright, uploads the bundled photo, chooses
"Egyptian cat" in the class list, runs the layer sweep, and saves docs/demo_page.jpg; then opens
the Captioning tab, picks the first generated scene, clicks its caption's third word (the first
object's shape) and saves docs/demo_captioning.jpg.
"""

import socket
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from gradcam.demo.app import serve

HERE = Path(__file__).parent
PHOTO = HERE.parent / "src" / "gradcam" / "data" / "cat_and_coffee.jpg"

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
app = serve(port=port, block=False, quiet=True)
try:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#photo input[type=file]").set_input_files(PHOTO)
        summary = page.locator("#summary")
        expect(summary).to_contain_text("(class", timeout=120_000)
        search = page.locator("#class input")
        search.click()
        search.fill("")
        search.press_sequentially("Egyptian", delay=20)
        page.locator("[role=option][aria-label='Egyptian cat']").click()
        expect(summary).to_contain_text("Egyptian cat (class", timeout=120_000)
        expect(page.locator("#figure")).to_contain_text(".png", timeout=60_000)
        page.get_by_text("Layer sweep (appendix B, Fig. 13)").click()
        page.locator("#sweep-button").click()
        expect(page.locator("#sweep-note")).to_contain_text("Egyptian cat", timeout=120_000)
        page.wait_for_timeout(500)  # let the new pictures paint
        page.screenshot(path=HERE / "demo_page.jpg", full_page=True, type="jpeg", quality=80)
        page.get_by_role("tab", name="Captioning").click()
        page.get_by_text("scene_0.png", exact=True).click()
        told = page.locator("#caption-summary")
        expect(told).to_contain_text("Caption (the model's own)", timeout=120_000)
        word = page.locator("#caption textarea").input_value().split()[2]
        page.locator("#caption-words").get_by_text(word, exact=True).click()
        expect(told).to_contain_text(f"Maps of {word}", timeout=120_000)
        page.wait_for_timeout(500)
        page.screenshot(path=HERE / "demo_captioning.jpg", full_page=True, type="jpeg", quality=80)
        browser.close()
finally:
    app.close()
print(f"wrote {HERE / 'demo_page.jpg'} and {HERE / 'demo_captioning.jpg'}")
