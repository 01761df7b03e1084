"""The miStudio panel in JupyterLab's left sidebar, in a real browser: a training submitted from a
terminal (`mistudio train` in a subprocess, outside any notebook) appears in the panel, its progress
advances on screen, its live curves open in the main area, and Cancel in the panel cancels it; a
reload restores the curves from the channel's history; Retry in the panel runs it again. The panel
does not poll while it is collapsed.

Lab runs with the mistudio_lab server extension enabled and the built labextension on its
JUPYTER_PATH (extensions/mistudio_lab/mistudio_lab/labextension: `make install` builds it), so the
test needs no install of the extension into the environment. Screenshot to docs/sidebar.png only
when MISTUDIO_SCREENSHOTS names a folder (`make docs-screenshots`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from helpers import run_cli
from labdriver import LabServer, wait_until
from mistudio import jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "extensions" / "mistudio_lab"
BUILT = EXTENSION / "mistudio_lab" / "labextension"
SHOTS = Path(os.environ["MISTUDIO_SCREENSHOTS"]) if os.environ.get("MISTUDIO_SCREENSHOTS") else None


@pytest.fixture
def lab_with_panel(chromium, workers, tmp_path):
    """Lab with the extension (server + frontend), on this session's Redis, and a gpu worker."""
    if not (BUILT / "package.json").is_file():
        why = f"the labextension is not built ({BUILT}): run `make install` (or `jlpm build` in {EXTENSION})"
        if os.environ.get("MISTUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    workers.start("gpu", lease=10)
    data = tmp_path / "jupyter-data"
    (data / "labextensions").mkdir(parents=True)
    (data / "labextensions" / "mistudio-lab").symlink_to(BUILT, target_is_directory=True)
    root, state = tmp_path / "notebooks", tmp_path / "lab"
    root.mkdir()
    state.mkdir()
    path = os.pathsep.join(p for p in (str(REPO), str(EXTENSION), os.environ.get("PYTHONPATH", "")) if p)
    server = LabServer(root, state, args=["--ServerApp.jpserver_extensions=mistudio_lab=True"],
                       env={"JUPYTER_PATH": str(data), "PYTHONPATH": path}).start()
    try:
        yield server
    finally:
        server.stop()


def open_panel(page, lab):
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mistudio-sidebar"]')
    tab.wait_for(timeout=120_000)
    tab.click()
    panel = page.locator("#mistudio-sidebar")
    panel.wait_for(state="visible", timeout=30_000)
    return panel


def progress_of(row) -> float:
    value = row.get_attribute("data-progress") or ""
    return float(value) if value else 0.0


def test_a_training_from_a_terminal_shows_in_the_panel_advances_and_is_cancelled_there(lab_with_panel, page):
    lab = lab_with_panel
    overview_requests = []
    page.on("request", lambda r: "/mistudio/api/overview" in r.url and overview_requests.append(time.monotonic()))
    panel = open_panel(page, lab)
    # The gpu worker, with its heartbeat age; no job yet.
    worker = panel.locator(".mistudio-worker").first
    worker.wait_for(timeout=30_000)
    assert "heartbeat" in worker.inner_text() and "gpu" in worker.inner_text()

    submitted = run_cli("train", "--steps", "3000", "--log-every", "5", "--checkpoint-every", "500")
    assert submitted.returncode == 0, submitted.stderr
    training_id = submitted.stdout.split()[0]
    assert training_id.startswith("tr_"), submitted.stdout

    # Collapsed, the panel asks nothing (its refreshes count against the API tier); shown, it asks again.
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mistudio-sidebar"]')
    tab.click()
    panel.wait_for(state="hidden", timeout=10_000)
    hidden_at = time.monotonic()
    # Two refresh intervals. Playwright's sync API delivers request events only while it is being
    # called, so the wait is Playwright's own (a time.sleep would hold every request back until later).
    page.wait_for_timeout(7_000)
    assert not [t for t in overview_requests if t > hidden_at + 0.5], "the hidden panel kept polling"
    # Shown again, it refreshes at once (onAfterShow); the time allowed is for a loaded CI machine.
    with page.expect_request(lambda r: "/mistudio/api/overview" in r.url, timeout=15_000):
        tab.click()

    row = panel.locator(f'.mistudio-job[data-job-id="{training_id}"]')
    row.wait_for(timeout=30_000)
    assert "train_sae" in row.inner_text()
    wait_until(lambda: row.get_attribute("data-state") == "running", 120, message="the row to say running")
    assert "attempt 1" in row.inner_text() and "worker " in row.inner_text()

    # Its progress advances on screen: once it trains (before, the bar is each preparation phase's),
    # the bar's width grows between two refreshes.
    summary = row.locator(".mistudio-job-summary")
    wait_until(lambda: summary.inner_text().startswith("step "), 240, 0.5, message="the training phase")
    first = wait_until(lambda: progress_of(row) > 0 and progress_of(row), 120, 0.5, message="some progress")
    wait_until(lambda: progress_of(row) > first, 120, 0.5, message=f"the progress to pass {first:.3f}")
    width = row.locator(".mistudio-progress-bar").evaluate("e => parseFloat(e.style.width)")
    assert width > first * 100 - 1e-6 and "%" in row.locator(".mistudio-progress-label").inner_text()

    # Its title opens the live curves in the main area (the same WebSocket the server fans out).
    row.locator(".mistudio-job-title").click()
    view = page.locator(f'.mistudio-training[data-training-id="{training_id}"]')
    view.wait_for(state="visible", timeout=30_000)
    loss = view.locator('.mistudio-chart[data-metric="loss"]')
    wait_until(lambda: int(loss.get_attribute("data-points") or 0) >= 2, 120, 0.5, message="two loss points")
    shown = int(loss.get_attribute("data-points"))
    wait_until(lambda: int(loss.get_attribute("data-points")) > shown, 120, 0.5, message="a live loss point")
    assert "step " in view.locator(".mistudio-training-state").inner_text()
    if SHOTS is not None:  # with some points on each curve
        wait_until(lambda: int(loss.get_attribute("data-points")) >= 16, 240, 0.5, message="16 loss points")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "sidebar.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 760})

    # Cancel in the panel: the job record says cancelled, the row too, and it offers Retry.
    row.locator(".mistudio-cancel").click()
    wait_until(lambda: jobs.get_job(training_id).record()["state"] == "cancelled", 60, 0.5,
               message="the job record to say cancelled")
    wait_until(lambda: row.get_attribute("data-state") == "cancelled", 30, message="the row to say cancelled")
    assert row.locator(".mistudio-retry").is_visible() and not row.locator(".mistudio-cancel").is_visible()
    wait_until(lambda: view.get_attribute("data-state") == "stopped", 60, message="the view to say stopped")
    drawn = int(loss.get_attribute("data-points"))

    # Reloaded, Lab restores the tab; it redraws the whole run from the channel's history.
    page.reload()
    view.wait_for(state="visible", timeout=120_000)
    wait_until(lambda: view.get_attribute("data-state") == "stopped", 60, message="the restored view to say stopped")
    assert int(loss.get_attribute("data-points")) >= drawn

    # Retry in the panel: the job runs again under the same id, and the open view follows it.
    row.locator(".mistudio-retry").click()
    wait_until(lambda: jobs.get_job(training_id).record()["state"] in ("queued", "running"), 30, 0.5,
               message="the job record to say queued or running")
    wait_until(lambda: row.get_attribute("data-state") in ("queued", "running"), 30, message="the row to follow")
    wait_until(lambda: view.get_attribute("data-state") == "running", 120, message="the view to follow the retry")
