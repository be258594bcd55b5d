"""A real headless browser for page tests: Playwright for Python driving Debian's chromium
(Playwright's own browser download cannot work offline). Screenshots go to ARTEFACTS."""
import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-quic", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("DEEPLENS_TEST_ARTEFACTS",
                                Path(__file__).resolve().parent.parent / "build" / "test-artefacts"))


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


def screenshot(page, name):
    """Keep a screenshot of `page` as a test artefact: build/test-artefacts/<name>.png."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
