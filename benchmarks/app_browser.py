"""The demo in a real browser (Debian chromium + Playwright): upload a recording, classify, screenshot.

    python benchmarks/app_browser.py [--model checkpoints/] [--recording FILE] [--out docs/screenshot.png]

Serves ``python app.py`` on a free loopback port, opens the page in headless chromium, uploads
the recording through the page's file input, presses Classify, waits for the label and both plots, and
saves a full-page screenshot (this is how the README's ``docs/screenshot.png`` is made). Prints how long
the page took to load and to show the result. ``playwright install`` cannot download browsers here, so
the system chromium is used (``apt-get install chromium``; path overridable with ``RESPSTF_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
# A real 15.4 s recording with wheezes (record label CAS), with its annotation beside it.
DEFAULT_RECORDING = DATA_DIR / "sprsound" / "example_original_wav" / "65101170_0.4_0_p2_3246.wav"
CHROMIUM = os.environ.get("RESPSTF_CHROMIUM", "/usr/bin/chromium")
# Headless, no sandbox (containers run as root), and nothing that reaches for the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class BrowserRun:
    top_label: str
    load_s: float  # page open until interactive
    result_s: float  # Classify pressed until label and both plots are shown


def classify_in_browser(url: str, recording: Path, screenshot: Path, timeout_s: float = 120.0) -> BrowserRun:
    """Upload ``recording`` on the page at ``url``, classify it, save a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    timeout_ms = timeout_s * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            started = time.perf_counter()
            page.goto(url, wait_until="networkidle", timeout=timeout_ms)
            load_s = time.perf_counter() - started
            page.locator("input[type=file]").first.set_input_files(str(recording))
            page.get_by_test_id("waveform-Recording").first.wait_for(timeout=timeout_ms)  # the upload has arrived
            started = time.perf_counter()
            page.get_by_role("button", name="Classify").click()
            label = page.get_by_test_id("label-output-value")
            label.wait_for(timeout=timeout_ms)
            for plot in ("#timeline img", "#scalogram img"):
                page.locator(plot).wait_for(timeout=timeout_ms)
            result_s = time.perf_counter() - started
            page.wait_for_load_state("networkidle")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return BrowserRun(label.inner_text().strip(), load_s, result_s)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="as app.py --model (default: app.py's default)")
    parser.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshot.png")
    args = parser.parse_args(argv)
    if not args.recording.is_file():
        print(f"recording {args.recording} not found; pass --recording or set RESPSTF_DATA_DIR.")
        return 1
    from app_load import serve_app  # this script's folder, on the path when it runs

    with serve_app(args.model) as url:
        run = classify_in_browser(url, args.recording, args.out)
    print(f"top label {run.top_label!r}; page loaded in {run.load_s:.1f} s, result shown {run.result_s:.1f} s after "
          f"Classify; screenshot {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
