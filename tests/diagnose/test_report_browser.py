"""The failures report opens from disk in Debian's chromium: every picture loads, and no
request leaves the file (pictures are data: URIs). Set GRADCAM_SKIP_BROWSER=1 to skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gradcam.diagnose.failures import diagnose_failures
from gradcam.evaluate.datasets import read_photos
from gradcam.models import LoadedModel

CHROMIUM = os.environ.get("GRADCAM_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]


def test_failures_report_in_a_real_browser(lite0: LoadedModel, tmp_path: Path) -> None:
    if os.environ.get("GRADCAM_SKIP_BROWSER"):
        pytest.skip("GRADCAM_SKIP_BROWSER is set")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser`"
    from playwright.sync_api import sync_playwright

    result = diagnose_failures(lite0, read_photos(annotated=True), tmp_path, progress=False)
    assert result.summary[0]["misclassified"] >= 1
    report = tmp_path / "report.html"
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            pictures = page.locator("img")
            assert pictures.count() == 5 * result.summary[0]["misclassified"]
            loaded = pictures.evaluate_all(
                "imgs => imgs.map(img => img.complete && img.naturalWidth > 0)"
            )
            assert all(loaded)
            assert "Looked at" in page.content()
        finally:
            browser.close()
    leaving = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert not leaving, leaving
