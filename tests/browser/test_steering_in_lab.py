"""The SteeringPanel in JupyterLab in a real browser, on a run of the tiny random-init GPT-2 (trained
and analysed here): press Steer, watch tokens appear in the default and steered columns, save,
reopen with the kernel gone and find the comparison there as plain HTML.

With MISTUDIO_SCREENSHOTS naming a folder it writes steering-panel.png there (`make docs-screenshots`);
MISTUDIO_SCREENSHOT_MODEL names a causal LM to use instead (e.g. the reference LM's folder: a random
model's log-probs barely move, so its shading shows little)."""

from __future__ import annotations

import json
import os

from pathlib import Path

import nbformat
import pytest
from ml_helpers import analysed_gpt2_run

from labdriver import WIDGET_ERROR, Notebook, wait_until
from mistudio.views.display import WIDGET_MIME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOTS = Path(os.environ["MISTUDIO_SCREENSHOTS"]) if os.environ.get("MISTUDIO_SCREENSHOTS") else None
TRAINING_ID = "tr_steerlab"
PROMPT = "The function returns"


@pytest.fixture(scope="module")
def steer_run(mistudio_home, tmp_path_factory):
    """A trained, analysed run on the tiny GPT-2; the feature with the highest max activation."""
    from mistudio.features import load_feature_table

    run_dir = analysed_gpt2_run(TRAINING_ID, tmp_path_factory.mktemp("lab-gpt2"),
                                model=os.environ.get("MISTUDIO_SCREENSHOT_MODEL"))
    table = load_feature_table(run_dir)
    return int(table["max"].idxmax())


def _notebook(root: Path, feature: int) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from mistudio import lifecycle\nfrom mistudio.widgets import SteeringPanel\n\nlifecycle.up()\n"
        f"panel = SteeringPanel({TRAINING_ID!r}, features={{{feature}: 4.0}}, prompt={PROMPT!r},\n"
        "                      max_new_tokens=16, seed=3, sweep=[0, 4, 8])\ndisplay(panel)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = root / "steering.ipynb"
    nbformat.write(nb, path)
    return path


def test_steer_in_lab_streams_both_columns_and_the_saved_notebook_keeps_the_comparison(steer_run, lab, page):
    path = _notebook(lab.root, steer_run)
    nb = Notebook(page, lab, path.name).open()
    nb.run_all()
    wait_until(nb.all_ran, 240, message="the panel's cell to run")
    cell = nb.cell_with("display(panel)")
    cell.locator(".widget-button", has_text="Steer").first.click()

    comparison = cell.locator(".mistudio-steering")
    comparison.wait_for(timeout=120_000)
    rows = comparison.locator("tr.steered-row")

    def tokens_in_both_columns() -> bool:
        if rows.count() != 3:
            return False
        first = rows.first.locator("td")
        return first.nth(1).locator("span").count() > 0 and first.nth(2).locator("span").count() > 0
    wait_until(tokens_in_both_columns, 180, message="tokens in the default and steered columns")
    wait_until(lambda: "succeeded" in cell.inner_text(), 180, 0.5, message="the steer job to succeed")
    assert WIDGET_ERROR not in nb.text() and "Traceback" not in nb.text()
    text = cell.inner_text()
    assert all(f"at {s}" in text for s in (0, 4, 8)), "one row per strength of the sweep"
    default_text = rows.first.locator("td").nth(1).inner_text()
    assert rows.first.locator("td").nth(2).inner_text() == default_text  # strength 0: the default itself
    if SHOTS is not None:
        cell.evaluate("e => e.scrollIntoView({block: 'start'})")
        SHOTS.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=str(SHOTS / "steering-panel.png"))

    nb.save()
    wait_until(lambda: "mistudio-steering" in path.read_text(), 30, message="the notebook to be saved")
    saved = nbformat.read(path, as_version=4)
    outputs = saved.cells[0].outputs
    static = [o for o in outputs if "mistudio-steering" in o.get("data", {}).get("text/html", "")]
    assert len(static) == 1 and WIDGET_MIME not in static[0]["data"]  # the comparison is plain HTML
    assert "succeeded" in static[0]["data"]["text/html"]

    lab.shutdown_kernels()
    nb = Notebook(page, lab, path.name).open()
    cell = nb.cell_with("display(panel)")
    reopened = cell.locator(".mistudio-steering")
    reopened.wait_for(timeout=60_000)
    assert reopened.locator("tr.steered-row").count() == 3
    assert reopened.locator("tr.steered-row").first.locator("td").nth(1).inner_text() == default_text
    assert "log-prob minus the default" in reopened.inner_text()
    print(f"saved notebook {path.stat().st_size:,} bytes; outputs {json.dumps([sorted(o.get('data', {})) for o in outputs])}")

