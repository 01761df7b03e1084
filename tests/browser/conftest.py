"""Browser tests: JupyterLab driven by Playwright in Debian's Chromium (`apt-get install chromium`;
Playwright's own browser download is not used). Where either is missing they are skipped, saying
why, unless MISTUDIO_REQUIRE_BROWSER=1 (CI sets it): then they fail."""

from __future__ import annotations

import importlib.util
import os

import pytest

from labdriver import CHROMIUM, CHROMIUM_ARGS, LabServer


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")  # not longer: Playwright's sync API holds an event loop while it runs,
def chromium():  # and later tests call asyncio.run()
    why = _missing()
    if why:
        if os.environ.get("MISTUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (MISTUDIO_REQUIRE_BROWSER=1) but {why}")
        pytest.skip(f"browser test skipped: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def lab(chromium, redis_db, tmp_path):
    """A JupyterLab server on this session's Redis and MISTUDIO_HOME, serving tmp_path/notebooks."""
    from mistudio.queue import supervisor

    root = tmp_path / "notebooks"
    root.mkdir()
    state = tmp_path / "lab"
    state.mkdir()
    server = LabServer(root, state).start()
    try:
        yield server
    finally:
        server.stop()
        supervisor.stop_workers()  # the notebook's lifecycle.up() started them


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.failed_call = outcome.get_result().failed


@pytest.fixture
def page(chromium, request, tmp_path):
    """A browser page; when the test fails, a screenshot of it is kept and its path printed."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    try:
        yield page
    finally:
        if getattr(request.node, "failed_call", False):
            shot = tmp_path / "failure.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failed page: {shot}")
        context.close()
