"""01_quickstart in JupyterLab in a real browser, as a new user runs it: Run All with small settings
(MISTUDIO_PROFILE=ci), watch, type a cell while it trains, save, reopen.

Screenshots for docs/ are written only when MISTUDIO_SCREENSHOTS names a folder
(`make docs-screenshots`); CI checks the behaviour, it does not rewrite the docs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from labdriver import WIDGET_ERROR, Notebook, copy_notebook, wait_until
from mistudio import jobs
from mistudio.views.display import PLOTLY_MIME, WIDGET_MIME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOTS = Path(os.environ["MISTUDIO_SCREENSHOTS"]) if os.environ.get("MISTUDIO_SCREENSHOTS") else None


def shot(locator, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(SHOTS / name))


def figures(cell) -> int:
    """Static figures in a cell: outputs of Lab's Plotly renderer (once reopened it shows the PNG it
    saved until the figure is drawn). The live chart is a widget, not one of these."""
    return cell.locator(".jp-RenderedPlotly").count()


def the_training() -> dict:
    (record,) = jobs.list_jobs(task="train_sae")
    return record


def test_quickstart_run_all_watch_type_save_reopen_then_explore_its_features(lab, page):
    path = copy_notebook("01_quickstart.ipynb", lab.root)
    nb = Notebook(page, lab, path.name).open()
    started = time.monotonic()
    nb.run_all()
    wait_until(nb.all_ran, 240, message="Run All to finish every cell")
    run_all_seconds = time.monotonic() - started
    monitor = nb.cell_with("display(monitor)")
    later = nb.cell_with("monitor.then(after_training)")

    # Live: the monitor renders (a progress bar, a chart), nothing shows a widget error.
    monitor.locator(".widget-hprogress").wait_for(timeout=60_000)
    monitor.locator(".js-plotly-plot").wait_for(timeout=60_000)
    assert WIDGET_ERROR not in nb.text()
    assert the_training()["state"] in ("queued", "running"), "Run All waited for the training"
    assert "When tr_" in later.inner_text() and "The kernel is free" in later.inner_text()

    # The kernel is free: a cell typed now answers within seconds, the training still running.
    typed_cell = nb.add_cell_at_end("1 + 1")
    typed = time.monotonic()
    nb.run_current_cell()
    answer = typed_cell.locator(".jp-OutputArea-output")
    wait_until(lambda: answer.count() and answer.first.inner_text().strip() == "2", 30, message="1 + 1")
    answered = time.monotonic() - typed
    assert answered < 5, f"1 + 1 took {answered:.1f} s"
    assert the_training()["state"] in ("queued", "running")

    def a_third_trained() -> bool:
        words = monitor.inner_text().split()
        step = next((w for w in words if "/" in w and w.replace("/", "").isdigit()), "0/1")
        done, total = map(int, step.split("/"))
        return "training" in words and done >= total / 3
    wait_until(a_third_trained, 300, message="the monitor to show a third of the training")
    shot(monitor, "monitor_live.png")

    # The end: one plain summary and one static figure per monitor, and then()'s output.
    wait_until(lambda: "Finished." in monitor.inner_text(), 600, 1.0, message="the monitor to say Finished")
    wait_until(lambda: "explained_variance" in later.inner_text(), 60, message="after_training's output")
    text = monitor.inner_text()
    assert "succeeded · step" in text and "(100 %)" in text
    # Lab's Plotly renderer draws the static figure a moment after the summary's text appears.
    wait_until(lambda: figures(monitor) >= 1, 60, message="the monitor's static figure")
    assert figures(monitor) == 1 and monitor.locator(".widget-hprogress").count() == 0
    assert monitor.locator(".jp-OutputArea-output").count() == 2
    assert "d_in 384" in later.inner_text() and WIDGET_ERROR not in nb.text()

    # Save: plain outputs only, a small file.
    nb.save()
    wait_until(lambda: "Finished." in path.read_text(), 30, message="the notebook to be saved")
    saved = nbformat.read(path, as_version=4)
    monitor_outputs = next(c for c in saved.cells if "display(monitor)" in c.source).outputs
    summary, figure = monitor_outputs  # Lab's Plotly renderer adds one PNG snapshot of the figure it drew
    assert set(summary["data"]) == {"text/html", "text/plain"}
    assert PLOTLY_MIME in figure["data"] and set(figure["data"]) <= {PLOTLY_MIME, "image/png", "text/plain"}
    assert WIDGET_MIME not in json.dumps([c.get("outputs", []) for c in saved.cells])
    assert path.stat().st_size < 300_000, f"{path.stat().st_size} bytes"

    # Reopen, with the kernel (and every widget model) gone: the final curves and summary are there.
    lab.shutdown_kernels()
    nb = Notebook(page, lab, path.name).open()
    monitor = nb.cell_with("display(monitor)")
    wait_until(lambda: figures(monitor), 60, message="the saved figure")
    assert "Finished." in monitor.inner_text() and "(100 %)" in monitor.inner_text()
    assert figures(monitor) == 1
    assert "explained_variance" in nb.cell_with("monitor.then(after_training)").inner_text()
    assert WIDGET_ERROR not in nb.text()
    print(f"Run All {run_all_seconds:.1f} s; 1 + 1 during training {answered:.2f} s; file {path.stat().st_size:,} bytes")
    lab.shutdown_kernels()
    explore_features(lab, page)


def explore_features(lab, page) -> None:
    """02_feature_explorer on the run 01 trained: the cards as Lab lays them out, the browser's links."""
    path = copy_notebook("02_feature_explorer.ipynb", lab.root)
    nb = Notebook(page, lab, path.name).open()
    nb.run_all()
    wait_until(nb.all_ran, 600, 1.0, message="02_feature_explorer to run")
    assert WIDGET_ERROR not in nb.text() and "Traceback" not in nb.text()

    cards = nb.cell_with("display(feature_card(")
    row = cards.locator("div[style*='display:flex']").first  # one top context: its value, then its tokens
    label, tokens = row.locator(":scope > div").nth(0), row.locator(":scope > div").nth(1)
    assert tokens.evaluate("e => getComputedStyle(e).textAlign") == "left"
    label_width, row_width = label.bounding_box()["width"], row.bounding_box()["width"]
    assert label_width < 0.15 * row_width, f"label column {label_width:.0f} px of {row_width:.0f}"
    ticks = cards.locator(".js-plotly-plot").first.locator(".xtick")
    assert ticks.count() >= 3, "the activation histogram's x-axis has several ticks"
    if SHOTS is not None:  # the first card: its header, histogram and contexts (three outputs)
        parts = cards.locator(".jp-OutputArea-child")
        parts.nth(0).evaluate("e => e.scrollIntoView({block: 'start'})")
        boxes = [parts.nth(i).bounding_box() for i in range(3)]
        top, bottom = boxes[0]["y"], boxes[2]["y"] + boxes[2]["height"]
        page.screenshot(path=str(SHOTS / "feature_card.png"), clip={
            "x": boxes[0]["x"], "y": top, "width": max(b["width"] for b in boxes), "height": bottom - top})

    browser = nb.cell_with("FeatureBrowser(training_id")
    header = browser.locator(".widget-html", has_text="density").first
    partner = browser.locator(".widget-button", has_text="phi").first
    target = partner.inner_text().split()[0]  # "#123"
    partner.click()
    wait_until(lambda: f"Feature {target[1:]}" in header.inner_text(), 30, message=f"the browser to open {target}")
    browser.evaluate("e => e.scrollIntoView({block: 'start'})")
    shot(browser, "feature_browser.png")

    browser.locator(".jupyter-widget-Collapse-header").first.click()  # the heatmap's accordion
    heatmap = browser.locator(".js-plotly-plot").last
    heatmap.locator(".nsewdrag").first.wait_for(timeout=60_000)
    labels = heatmap.locator(".xtick text").evaluate_all("els => els.map(e => e.textContent)")  # SVG text
    box = heatmap.locator(".nsewdrag").first.bounding_box()
    column, row_index = 2, 1
    page.mouse.click(box["x"] + (column + 0.5) * box["width"] / len(labels),
                     box["y"] + (row_index + 0.5) * box["height"] / len(labels))
    wait_until(lambda: f"Feature {labels[column][1:]}" in header.inner_text(), 30,
               message=f"a heatmap click to open {labels[column]}")
