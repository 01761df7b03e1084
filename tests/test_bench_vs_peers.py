"""benchmarks/bench_vs_peers.py cannot rot: its data, miStudio's runner and its table, at tiny sizes.

The peers' own runners need their venvs (`make bench-peers` builds them), so here they show up as
rows that say why they did not run; miStudio's runner runs for real, in its own process, on the real
activations of the bundled model (the `ci` profile's small corpus).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "benchmarks" / "peers"))

import bench_vs_peers as bench  # noqa: E402
import common  # noqa: E402

TINY_BUDGET = {"tiny": 6 * bench.BATCH}


@pytest.fixture(scope="module")
def activations(mistudio_home):
    return bench.prepare_activations()


def test_the_activations_are_the_default_runs_cached_once_with_the_heldout_tokens_apart(activations):
    train, heldout = np.load(activations["train"], mmap_mode="r"), np.load(activations["heldout"], mmap_mode="r")
    assert activations["hook_point"] == "blocks.3.hook_resid_post" and activations["model"] == "all-MiniLM-L6-v2"
    assert train.shape[1] == heldout.shape[1] == activations["d_in"] == 384
    assert train.dtype == heldout.dtype == np.float32 and np.isfinite(train).all() and np.isfinite(heldout).all()
    # the held-out contexts are the tail that `mistudio train` keeps for feature analysis: never trained on
    train_ctx = Path(activations["train"]).parent.name.rsplit("-ctx", 1)[1].split("-")
    held_ctx = Path(activations["heldout"]).parent.name.rsplit("-ctx", 1)[1].split("-")
    assert train_ctx[0] == "0" and train_ctx[1] == held_ctx[0] and int(held_ctx[1]) > int(held_ctx[0])
    mtime = Path(activations["train"]).stat().st_mtime_ns
    again = bench.prepare_activations()
    assert again == activations and Path(again["train"]).stat().st_mtime_ns == mtime  # saved once, reused


def test_every_library_gets_the_same_stream_each_row_once_per_epoch():
    order = common.row_order(1000, 2500, seed=42)
    assert len(order) == 2500
    assert sorted(order[:1000]) == list(range(1000)) and sorted(order[1000:2000]) == list(range(1000))
    assert not np.array_equal(order[:1000], order[1000:2000])  # a fresh permutation each epoch
    assert np.array_equal(order, common.row_order(1000, 2500, seed=42))
    assert not np.array_equal(order, common.row_order(1000, 2500, seed=43))


def test_mistudio_trains_in_its_own_process_and_peers_that_cannot_run_say_why(activations, tmp_path):
    peers = tmp_path / "peers"
    (peers / "saelens").mkdir(parents=True)
    (peers / "saelens" / "FAILED").write_text("sae-lens pins torch<2 (conflict)")
    results = bench.run_benchmark(activations, budgets=TINY_BUDGET, archs=["topk", "relu"],
                                  libraries=["mistudio", "sparsify", "saelens"], peers_dir=peers,
                                  workdir=tmp_path / "work", d_sae=768, k=16, echo=lambda line: None)
    by = {(r["architecture"], r["library"]): r for r in results}
    ours = by["topk", "mistudio"]
    assert "skipped" not in ours, ours
    assert ours["tokens"] == TINY_BUDGET["tiny"] and ours["steps"] == 6 and ours["d_sae"] == 768
    held = ours["heldout"]
    assert held["tokens"] == np.load(activations["heldout"], mmap_mode="r").shape[0]
    assert 0 < held["explained_variance"] < 1 and math.isclose(held["fvu"], 1 - held["explained_variance"])
    assert held["l0"] == pytest.approx(16)  # TopK: exactly k per token
    assert 0 <= held["dead_fraction"] < 1
    assert ours["tokens_per_s"] > 0 and ours["peak_rss_bytes"] > 50 * 2**20
    assert ours["recipe"]["lr"] > 0  # what miStudio's defaults chose is reported
    run = tmp_path / "work" / "tiny" / "topk" / "mistudio" / "run"
    assert (run / "sae" / "cfg.json").is_file()  # trained as `mistudio train` trains: a run folder, an export
    assert "skipped" not in by["relu", "mistudio"]
    assert "make bench-peers" in by["topk", "sparsify"]["skipped"]
    assert by["relu", "sparsify"]["skipped"] == "sparsify has no relu SAE"
    assert by["topk", "saelens"]["skipped"] == "not installable: sae-lens pins torch<2 (conflict)"
    table = bench.render(results)
    assert "not installable: sae-lens pins torch<2 (conflict)" in table
    assert f"{held['fvu']:.4f}" in table


def test_the_table_gives_each_figure_as_a_ratio_to_the_best_peer(tmp_path):
    def result(library, fvu, speed, dead, rss):
        return {"library": library, "version": "1", "architecture": "topk", "budget": "short", "tokens": 614_400,
                "tokens_per_s": speed, "peak_rss_bytes": rss,
                "heldout": {"fvu": fvu, "explained_variance": 1 - fvu, "l0": 32.0, "dead_fraction": dead}}

    results = [result("mistudio", 0.10, 40_000, 0.0, 600 * 2**20), result("sparsify", 0.125, 10_000, 0.02, 500 * 2**20),
               result("saelens", 0.20, 8_000, 0.01, 1000 * 2**20)]
    rows = {line.split("|")[3].strip().split()[0]: [c.strip() for c in line.split("|")[4:-1]]
            for line in bench.render(results).splitlines()[2:]}
    fvu, ev, l0, dead, speed, rss = rows["mistudio"]
    assert fvu == "0.1000 (0.80x)"  # against sparsify's 0.125, the best peer's (lowest) FVU
    assert ev == "0.9000 (1.03x)"  # against 0.875
    assert l0 == "32.0"  # no ratio: L0 is where the comparison is made, not a score
    assert speed == "40,000 (4.00x)" and rss == "600 MiB (1.20x)" and dead == "0.0% (0.00x)"
    assert rows["sparsify"][0] == "0.1250 (1.00x)" and rows["saelens"][0] == "0.2000 (1.60x)"
    lone = bench.render([copy.deepcopy(results[0])])
    assert "0.1000 |" in lone and "x)" not in lone  # no peer ran: plain values


def test_the_runners_exchange_only_json_and_npy():
    """No pickle across the venv boundary: jobs and results are JSON, data is .npy (allow_pickle off)."""
    for runner in (REPO / "benchmarks" / "peers").glob("run_*.py"):
        text = runner.read_text()
        assert "pickle" not in text and "allow_pickle=True" not in text, runner
    assert common.steps_of({"tokens": 10, "batch_size": 4}) == 3  # a partial last batch is a whole step


def test_a_peers_earlier_result_for_the_same_job_is_reused_and_marked_and_tables_read_back(tmp_path, capsys):
    """--reuse takes a peer's result of the very same job from the workdir (nothing runs: this peer's
    venv has no python at all); --table-from prints the table of a workdir's results."""
    peers, work = tmp_path / "peers", tmp_path / "work"
    (peers / "sparsify").mkdir(parents=True)
    (peers / "sparsify" / "OK").write_text("eai-sparsify torch 2.13.0")
    job = {"train": "t.npy", "heldout": "h.npy", "hook_point": "blocks.3.hook_resid_post", "architecture": "topk",
           "d_sae": 64, "k": 4, "tokens": 4096, "batch_size": 4096, "seed": 42}
    folder = work / "short" / "topk" / "sparsify"
    folder.mkdir(parents=True)
    saved = {"library": "sparsify", "version": "1.3.3", "architecture": "topk", "tokens": 4096, "tokens_per_s": 900.0,
             "peak_rss_bytes": 2**30, "heldout": {"fvu": 0.25, "explained_variance": 0.75, "l0": 4.0, "dead_fraction": 0.0}}
    (folder / "job.json").write_text(json.dumps({**job, "workdir": str(folder), "out": str(folder / "result.json")}))
    (folder / "result.json").write_text(json.dumps(saved))
    reused = bench.run_library("sparsify", job, peers, folder, timeout=60, reuse=True)
    assert reused["heldout"] == saved["heldout"] and reused["reused"].endswith("UTC")
    (folder / "run").mkdir()  # what the runner wrote for that job (miStudio refuses a run folder of another config)
    changed = bench.run_library("sparsify", {**job, "seed": 7}, peers, folder, timeout=60, reuse=True)
    assert changed["skipped"].startswith("failed to start") and not (folder / "result.json").exists()  # a new job runs anew
    assert not (folder / "run").exists()  # in a clean folder
    (folder / "result.json").write_text(json.dumps(saved))
    bench.main(["--table-from", str(work)])
    table = capsys.readouterr().out
    assert "| short (0.00M) | topk | sparsify 1.3.3 (measured " in table and "0.2500 (1.00x)" in table
