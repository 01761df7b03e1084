"""The SteeringPanel: what it draws from a real steering result (the tiny random-init GPT-2 and a tiny
SAE through mistudio.features.steering), its controls, its refusals, and a real `steer` job on real
gpu workers streaming into it through Redis."""

from __future__ import annotations

import html
import re

import pytest
import torch
from ml_helpers import tiny_gpt2, tiny_gpt2_dir  # noqa: F401  (fixtures)

from mistudio.redis import keys
from mistudio.steering_request import check_request
from mistudio.features.steering import steer
from mistudio.sae import ReluSAE
from mistudio.widgets.steering import SteeringPanel, shade, tokens_html

pytestmark = pytest.mark.timeout(300)

HOOK = "blocks.1.hook_resid_post"
PROMPT = "The function <b>returns</b> a list of"


@pytest.fixture(scope="module")
def sweep_result(tiny_gpt2):
    sae = ReluSAE(64, 32, generator=torch.Generator().manual_seed(1)).eval().requires_grad_(False)
    request = check_request({"training_id": "tr_x", "prompts": [PROMPT], "features": [{"index": 3, "strength": 1.0}],
                             "strength_unit": "raw", "max_new_tokens": 10, "temperature": 1.0, "top_p": 0.9,
                             "seed": 7, "sweep": [0.0, 20.0, 40.0]})
    return steer(tiny_gpt2, sae, HOOK, request)


def _steered_cells(markup: str) -> list[str]:
    return re.findall(r"<tr class='steered-row'>(.*?)</tr>", markup)


def test_a_sweep_is_one_row_per_strength_beside_the_default_with_the_result_text(sweep_result):
    panel = SteeringPanel("tr_x", features={3: 1.0})
    panel._reset({"prompts": [PROMPT], "features": [{"index": 3, "strength": 1.0}], "sweep": [0.0, 20.0, 40.0]})
    panel.load_result(sweep_result)
    only = sweep_result["prompts"][0]
    assert panel.text(0, "default") == "".join(only["default"]["tokens"])
    assert [panel.text(0, "steered", s) for s in range(3)] == ["".join(s["tokens"]) for s in only["steered"]]
    assert panel.labels == ["#3 at 0", "#3 at 20", "#3 at 40"]
    markup = panel.comparison_html()
    rows = _steered_cells(markup)
    assert len(rows) == 3 and "rowspan='3'" in rows[0]  # the default once, beside every strength
    assert "log-prob minus the default's at the same position" in markup  # the legend
    # strength 0 is the default token for token: nothing shaded; a real push shades something
    assert "rgba" not in re.sub(r"rgba\([^)]*,0\.00\)", "", rows[0].split("</td>", 2)[2])
    assert re.search(r"rgba\([^)]*,0\.(?!00)\d\d\)", rows[2])


def test_user_text_is_escaped_and_the_prompt_shown(sweep_result):
    panel = SteeringPanel("tr_<i>x</i>")
    panel._reset({"prompts": [PROMPT], "features": [{"index": 3, "strength": 1.0}], "sweep": [0.0, 20.0, 40.0]})
    panel.load_result(sweep_result)
    markup = panel.comparison_html() + panel.title.value
    assert "<b>returns</b>" not in markup and html.escape(PROMPT) in markup
    assert "<i>x</i>" not in markup
    assert "<script" not in tokens_html(["<script>alert(1)</script>"], [-1.0], [-2.0])


def test_shading_says_which_way_and_how_far_the_logprob_moved():
    assert shade(None) == "transparent" and shade(float("nan")) == "transparent"
    up, down, far = shade(1.0), shade(-1.0), shade(100.0)
    assert up.startswith("rgba(214,39,40") and down.startswith("rgba(31,119,180")
    assert float(up.rsplit(",", 1)[1][:-1]) < float(far.rsplit(",", 1)[1][:-1]) == 0.6


def test_feature_rows_add_update_and_remove():
    panel = SteeringPanel("tr_x", features={5: 2.0}, n_features=10)
    panel.add_feature(7, -1.5)
    panel.add_feature(5, 3.0)  # already there: its strength changes, no second row
    assert panel.features() == [{"index": 5, "strength": 3.0}, {"index": 7, "strength": -1.5}]
    assert panel.feature_rows.children[0].children[0].max == 9
    panel.feature_rows.children[0].children[2].click()  # its trash button
    assert panel.features() == [{"index": 7, "strength": -1.5}]
    panel.add_button.click()
    assert len(panel.features()) == 2


def test_a_refused_request_is_shown_in_the_panel_and_nothing_is_queued(redis_db):
    panel = SteeringPanel("tr_nosuchrun", features={1: 1.0}, prompt="hello")
    panel.sweep.value = "1, two"
    panel.steer_button.click()
    assert panel.job is None and panel.state == "refused" and "sweep" in panel.status.value
    panel.sweep.value = ""
    panel.steer_button.click()
    assert panel.job is None and "tr_nosuchrun" in html.unescape(panel.status.value)
    assert redis_db("results").zcard(keys.jobs_index()) == 0


# --- a real steer job on real gpu workers ---------------------------------------------------

JOB_RUN = "tr_panelsteer"


@pytest.fixture(scope="module")
def steer_run(mistudio_home, tmp_path_factory):
    """A run of the tiny GPT-2 trained for a few steps, with its feature analysis; its strongest feature."""
    from ml_helpers import analysed_gpt2_run

    from mistudio.features import load_feature_table

    run_dir = analysed_gpt2_run(JOB_RUN, tmp_path_factory.mktemp("panel-gpt2"))
    return int(load_feature_table(run_dir)["max"].idxmax())


def test_the_steer_button_streams_tokens_that_equal_the_jobs_result(workers, steer_run):
    workers.start("gpu")
    panel = SteeringPanel(JOB_RUN, features={steer_run: 4.0}, prompt="The function returns", max_new_tokens=12,
                          seed=5, sweep=[0, 4])
    panel.steer_button.click()
    assert panel.job is not None, panel.status.value
    panel.follow(timeout=240)
    assert panel.state == "succeeded", panel.status_text()
    result = panel.job.result()["prompts"][0]
    assert panel.text(0, "default", streamed=True) == result["default"]["text"] == panel.text(0, "default")
    for s, steered in enumerate(result["steered"]):
        assert panel.text(0, "steered", s, streamed=True) == steered["text"]
    assert panel.text(0, "steered", 0) == panel.text(0, "default")  # strength 0
    assert panel.labels == [f"#{steer_run} at 0", f"#{steer_run} at 4"]
    assert panel.events_seen >= 3 * len(result["default"]["tokens"])
    assert not panel.steer_button.disabled  # steer again


def test_in_a_kernel_the_comparison_is_left_as_plain_html_for_the_saved_notebook(workers, steer_run, tmp_path):
    from test_widgets import LabLikeKernel

    import nbformat

    from mistudio.views.display import WIDGET_MIME

    workers.start("gpu")
    kernel = LabLikeKernel(tmp_path)
    try:
        shown, _ = kernel.run(f"from mistudio.widgets import SteeringPanel\npanel = SteeringPanel({JOB_RUN!r}, "
                              f"features={{{steer_run}: 4.0}}, prompt='The <b>function</b>', max_new_tokens=8)\n"
                              "display(panel)\njob = panel.steer()")
        assert [WIDGET_MIME in o["data"] for o in shown.outputs] == [True, True]  # controls, live comparison
        done, _ = kernel.run("await panel.wait()", timeout=240)
        assert done.outputs[0]["data"]["text/plain"] == "'succeeded'"
        controls, comparison = shown.outputs
        assert set(comparison["data"]) == {"text/html", "text/plain"}
        page = comparison["data"]["text/html"]
        assert "mistudio-steering" in page and "succeeded" in page and "&lt;b&gt;function&lt;/b&gt;" in page
        assert "default:" in comparison["data"]["text/plain"]
        saved = nbformat.writes(kernel.notebook())
        assert "widgets" not in kernel.notebook().metadata and len(saved) < 100_000
    finally:
        kernel.close()


def test_the_browsers_steer_button_feeds_a_panel_with_the_shown_feature(redis_db, steer_run):
    from mistudio.widgets import FeatureBrowser

    browser = FeatureBrowser(JOB_RUN, feature=steer_run)
    assert browser.steering is None
    browser.steer_button.click()
    panel = browser.steering
    assert panel.features() == [{"index": steer_run, "strength": 4.0}]
    assert browser.steer_box.children == (panel.widget,)  # under the card
    other = (steer_run + 1) % browser.n_features
    browser.show(other)
    browser.steer_button.click()  # the same panel, one more feature
    assert browser.steering is panel and [f["index"] for f in panel.features()] == [steer_run, other]
    assert panel.feature_rows.children[0].children[0].max == browser.n_features - 1

    mine = SteeringPanel(JOB_RUN)
    given = FeatureBrowser(JOB_RUN, feature=other, steering=mine)
    given.steer_button.click()
    assert mine.features() == [{"index": other, "strength": 4.0}] and given.steer_box.children == ()


def test_stop_cancels_the_steer_and_the_panel_says_so_and_can_steer_again(redis_db, steer_run):
    panel = SteeringPanel(JOB_RUN, features={steer_run: 4.0}, prompt="The function returns", max_new_tokens=8)
    panel.steer_button.click()  # no worker: it stays queued
    assert panel.job is not None and panel.job.status() == "queued"
    assert panel.steer_button.disabled and not panel.stop_button.disabled
    panel.stop_button.click()
    panel.follow(timeout=60)  # no events come: the job record says how it ended
    assert panel.done and panel.state == "cancelled" and panel.job.status() == "cancelled"
    assert not panel.steer_button.disabled and panel.stop_button.disabled
