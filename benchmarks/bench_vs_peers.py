"""SAE quality and speed against the peer libraries, side by side, on the same real activations.

    make bench-peers                       # builds the peers' venvs (benchmarks/peers/setup_venvs.sh), then this
    .venv/bin/python benchmarks/bench_vs_peers.py [--budgets short,default] [--archs topk,batchtopk,relu,jumprelu]
        [--libraries mistudio,sparsify,saelens,dictionary_learning] [--peers-dir .peers] [--json FILE]

The data: the residual stream of the default run (`mistudio train`: the bundled MiniLM, its middle
layer, the offline corpus), cached once under MISTUDIO_HOME by the same code and split as
`mistudio train` (the tail contexts are held out; they never train). Every library trains on the
very same token stream (benchmarks/peers/common.py: a seeded permutation per epoch, batch 4096)
at the same width and k, each with its OWN default recipe (optimizer, learning rate, schedule,
init, auxiliary losses, normalisation): miStudio's public API with its defaults, sparsify's
Trainer, SAELens' SAETrainer, dictionary_learning's trainers. Each runs in a subprocess under its
own virtual environment (.peers/<name>/venv, all with the same CPU torch), exchanging only .npy
and JSON. Every SAE is judged by one function on the held-out tokens: FVU (explained variance is
1 - FVU), L0, the fraction of latents that never fire; plus training tokens/s and the runner's
peak RSS. Each figure is printed as a ratio to the best peer in the same run.
Budgets: short = 150 steps of 4096 tokens (614k), default = 4M tokens (the `mistudio train` default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = Path(__file__).resolve().parent / "peers"
BATCH = 4096
BUDGETS = {"short": 150 * BATCH, "default": 4_000_000}
ARCHS = ("topk", "batchtopk", "relu", "jumprelu")
# library -> (its runner, the architectures it has, its venv folder under --peers-dir; None: ours)
LIBRARIES = {
    "mistudio": ("run_mistudio.py", ARCHS, None),
    "sparsify": ("run_sparsify.py", ("topk",), "sparsify"),
    "saelens": ("run_saelens.py", ARCHS, "saelens"),
    "dictionary_learning": ("run_dictionary_learning.py", ARCHS, "dictionary_learning"),
}
# (key, header, higher is better, format)
METRICS = (
    ("fvu", "held-out FVU", False, "{:.4f}"),
    ("explained_variance", "EV", True, "{:.4f}"),
    ("l0", "L0", None, "{:.1f}"),
    ("dead_fraction", "dead", False, "{:.1%}"),
    ("tokens_per_s", "tokens/s", True, "{:,.0f}"),
    ("peak_rss_bytes", "peak RSS", False, None),
)


# --- the shared activation cache ------------------------------------------------------------------
def prepare_activations() -> dict:
    """The default run's activations, train and held-out split as `mistudio train` splits them,
    cached under MISTUDIO_HOME (built once; a later run reuses them). Returns their .npy paths."""
    # why: torch and the model only when the benchmark runs (the test imports this module cheaply)
    from mistudio.data.activations import build_activation_cache
    from mistudio.data.processed import process_dataset
    from mistudio.models.loading import load_model
    from mistudio.runs import activation_cache
    from mistudio.settings import get_settings
    from mistudio.training import _holdout_split, _subset, prepare_config

    config = prepare_config({})
    settings = get_settings()
    loaded = load_model(config.model)
    dataset = process_dataset(config.dataset, loaded, None, None, None)
    tokens = dataset.tokens
    split = _holdout_split(tokens.n_contexts, tokens.context_length)
    paths = {}
    for name, (start, stop) in {"train": (0, split), "heldout": (split, tokens.n_contexts)}.items():
        folder = activation_cache(settings.data_dir, dataset.dataset_id, config.hook_point, (start, stop))
        cache = build_activation_cache(loaded, config.hook_point, _subset(tokens, start, stop), folder)
        paths[name] = str(cache.path / "activations.npy")
    return {**paths, "hook_point": config.hook_point, "model": loaded.name, "dataset": dataset.dataset_id,
            "d_in": config.d_in, "d_sae": config.d_sae, "k": config.k,
            "train_tokens": int(np.load(paths["train"], mmap_mode="r").shape[0]),
            "heldout_tokens": int(np.load(paths["heldout"], mmap_mode="r").shape[0])}


# --- running one library --------------------------------------------------------------------------
def python_of(library: str, peers_dir: Path) -> tuple[str | None, str | None]:
    """(the interpreter that runs library's runner, None) or (None, why it cannot run)."""
    venv = LIBRARIES[library][2]
    if venv is None:
        return sys.executable, None
    # Absolute, as the runner's cwd is its workdir (make passes .peers); not resolve(), which would
    # follow the venv's python symlink out of the venv.
    folder = (peers_dir / venv).absolute()
    if (folder / "FAILED").is_file():
        return None, "not installable: " + (folder / "FAILED").read_text().strip()
    if not (folder / "OK").is_file():
        return None, f"not built: run `make bench-peers` (or benchmarks/peers/setup_venvs.sh) to build {folder}"
    return str(folder / "venv" / "bin" / "python"), None


def run_library(library: str, job: dict, peers_dir: Path, workdir: Path, timeout: float, reuse: bool = False) -> dict:
    """Train and judge one SAE with `library`'s runner in its own process; its result, or why not.

    reuse: a peer's result already in workdir for the very same job is taken as it is (marked
    "reused", with when it was measured); miStudio always runs again (its code is what changes)."""
    runner, archs, _ = LIBRARIES[library]
    base = {"library": library, "architecture": job["architecture"], "tokens": job["tokens"]}
    if job["architecture"] not in archs:
        return {**base, "skipped": f"{library} has no {job['architecture']} SAE"}
    python, why = python_of(library, peers_dir)
    if python is None:
        return {**base, "skipped": why}
    workdir = workdir.resolve()  # the runner works in it, so every path it gets is absolute
    workdir.mkdir(parents=True, exist_ok=True)
    job = {**job, "workdir": str(workdir), "out": str(workdir / "result.json")}
    previous = workdir / "job.json"
    if (reuse and library != "mistudio" and previous.is_file() and json.loads(previous.read_text()) == job
            and Path(job["out"]).is_file()):
        result = json.loads(Path(job["out"]).read_text())
        measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(Path(job["out"]).stat().st_mtime))
        return {**result, "reused": measured}
    # A fresh run in a clean folder: a runner's outputs of an earlier job (miStudio refuses a run
    # folder that holds another config's run) must not meet this one's.
    shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    previous.write_text(json.dumps(job, indent=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT) if library == "mistudio" else "", "PYTHONHASHSEED": "0"}
    log = workdir / "runner.log"
    with log.open("w") as out:
        try:
            proc = subprocess.run([python, str(RUNNERS / runner), str(workdir / "job.json")], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=workdir)
        except subprocess.TimeoutExpired:
            return {**base, "skipped": f"timed out after {timeout:.0f} s (log: {log})"}
        except OSError as e:  # the venv's python is gone: rebuild it
            return {**base, "skipped": f"failed to start {python}: {e.strerror}; rebuild with `make bench-peers`"}
    if proc.returncode != 0 or not Path(job["out"]).is_file():
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        return {**base, "skipped": f"failed (exit {proc.returncode}): {tail[0][:200]} (log: {log})"}
    return json.loads(Path(job["out"]).read_text())


def run_benchmark(data: dict, *, budgets: dict, archs, libraries, peers_dir: Path, workdir: Path,
                  d_sae: int, k: int, seed: int = 42, timeout: float = 4 * 3600, reuse: bool = False,
                  echo=print) -> list[dict]:
    """Every (budget, architecture, library) result, in that order."""
    results = []
    for budget, tokens in budgets.items():
        for arch in archs:
            for library in libraries:
                job = {"train": data["train"], "heldout": data["heldout"], "hook_point": data["hook_point"],
                       "architecture": arch, "d_sae": d_sae, "k": k, "tokens": tokens, "batch_size": BATCH,
                       "seed": seed}
                started = time.perf_counter()
                result = run_library(library, job, peers_dir, workdir / budget / arch / library, timeout, reuse)
                result["budget"] = budget
                results.append(result)
                echo(f"  {budget:7s} {arch:9s} {library:19s} "
                     + (f"FVU {result['heldout']['fvu']:.4f}  L0 {result['heldout']['l0']:.1f}  "
                        f"{result['tokens_per_s']:,.0f} tokens/s" if "skipped" not in result else result["skipped"])
                     + (f"  (reused: measured {result['reused']})" if "reused" in result
                        else f"  ({time.perf_counter() - started:.0f} s)"))
    return results


# --- the table ------------------------------------------------------------------------------------
def value_of(result: dict, key: str):
    if "skipped" in result:
        return None
    return result["heldout"][key] if key in result["heldout"] else result[key]


def best_peer(results: list[dict], key: str, higher: bool):
    """The best value of `key` among the peers (every library but miStudio) in these results."""
    values = [value_of(r, key) for r in results if r["library"] != "mistudio" and value_of(r, key) is not None]
    if not values:
        return None
    return max(values) if higher else min(values)


def cell(value, best, fmt) -> str:
    text = _bytes(value) if fmt is None else fmt.format(value)
    if best is None:
        return text
    if best == 0:
        return text + (" (=)" if value == 0 else " (best peer 0)")
    return f"{text} ({value / best:.2f}x)"


def render(results: list[dict]) -> str:
    """A markdown table: one row per (budget, architecture, library); each figure with its ratio
    to the best peer's in the same group (ratios need a peer: a lone miStudio row shows values)."""
    header = ["budget", "SAE", "library"] + [m[1] for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["budget"], r["architecture"]), []).append(r)
    for (budget, arch), group in groups.items():
        tokens = next((r["tokens"] for r in group if "skipped" not in r), group[0]["tokens"])
        for r in group:
            name = r["library"] + (f" {r['version']}" if "version" in r else "")
            if "reused" in r:
                name += f" (measured {r['reused']})"
            first = [f"{budget} ({tokens / 1e6:.2f}M)", arch, name]
            if "skipped" in r:
                lines.append("| " + " | ".join(first + [r["skipped"]] + [""] * (len(METRICS) - 1)) + " |")
                continue
            cells = []
            for key, _, higher, fmt in METRICS:
                best = None if higher is None else best_peer(group, key, higher)
                cells.append(cell(value_of(r, key), best, fmt))
            lines.append("| " + " | ".join(first + cells) + " |")
    return "\n".join(lines)


def saved_results(path: Path) -> list[dict]:
    """The results of an earlier run: its --json file, or every result.json in its --workdir
    (WORKDIR/budget/architecture/library/result.json, kept as each run finishes)."""
    if path.is_file():
        return json.loads(path.read_text())["results"]
    found = []
    for out in sorted(path.glob("*/*/*/result.json")):
        result = json.loads(out.read_text())
        result["budget"], result["library"] = out.parents[2].name, out.parent.name  # the layout names them
        measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(out.stat().st_mtime))
        found.append({**result, "reused": measured})
    return found


def _table_order(result: dict) -> tuple:
    """Budgets, then architectures, then libraries, each in the order this module lists them."""
    return (list(BUDGETS).index(result["budget"]) if result["budget"] in BUDGETS else len(BUDGETS),
            ARCHS.index(result["architecture"]), list(LIBRARIES).index(result["library"]))


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="short,default", help=f"of {', '.join(BUDGETS)}")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--peers-dir", default=str(ROOT / ".peers"))
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temp folder, removed after)")
    parser.add_argument("--json", default=None, help="also write every result to this file")
    parser.add_argument("--table-from", nargs="+", default=None, metavar="PATH",
                        help="print the table of earlier runs' results (--json files or --workdir folders), run nothing")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workdir: take a peer's result of an earlier run of the same job (marked as reused)")
    args = parser.parse_args(argv)
    if args.table_from:
        print(render(sorted((r for name in args.table_from for r in saved_results(Path(name))), key=_table_order)))
        return
    budgets = {name: BUDGETS[name] for name in args.budgets.split(",")}
    libraries = args.libraries.split(",")
    for name in libraries:
        if name not in LIBRARIES:
            raise SystemExit(f"--libraries: unknown {name!r}; known: {', '.join(LIBRARIES)}")
    print("preparing the activations (cached after the first run) ...")
    data = prepare_activations()
    print(f"{data['model']} {data['hook_point']} on {data['dataset']}: {data['train_tokens']:,} training tokens, "
          f"{data['heldout_tokens']:,} held-out; SAE {data['d_in']} x {data['d_sae']}, k={data['k']}, batch {BATCH}")
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory(prefix="bench-vs-peers-") as tmp:
        results = run_benchmark(data, budgets=budgets, archs=args.archs.split(","), libraries=libraries,
                                peers_dir=Path(args.peers_dir), workdir=Path(args.workdir or tmp),
                                d_sae=data["d_sae"], k=data["k"], reuse=args.reuse)
    print()
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"data": data, "machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
