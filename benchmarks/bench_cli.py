"""CLI latency: the real `mistudio` command in subprocesses, against a private embedded Redis.

    python benchmarks/bench_cli.py [--rounds 7]

Goals (issue 12): a refused `mistudio train` answers in under 1 s, an accepted one prints its id in
under 1.5 s. Each figure is the median wall time of `rounds` runs, printed next to `python -c pass`
(the interpreter's own start) measured in the same run, and as a ratio to it. No worker runs:
accepted jobs stay queued, and the private Redis is thrown away at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import private_redis

CLI = [sys.executable, "-m", "mistudio.cli"]


def timed(argv: list[str], expect_rc: int, expect: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    elapsed = time.perf_counter() - start
    out = done.stdout + done.stderr
    if done.returncode != expect_rc or expect not in out:
        raise SystemExit(f"{' '.join(argv[2:])}: rc {done.returncode}, expected {expect_rc} and {expect!r}:\n{out}")
    return elapsed, done.stdout.strip()


def median_of(rounds: int, argv: list[str], expect_rc: int = 0, expect: str = "") -> tuple[float, float, str]:
    runs = [timed(argv, expect_rc, expect) for _ in range(rounds)]
    walls = [wall for wall, _ in runs]
    return statistics.median(walls), min(walls), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    with private_redis("cli", rate_limits=False):
        median_of(1, CLI + ["train", "--k", "100000"], 1, "error: k:")  # warm the disk cache once
        base, base_min, _ = median_of(rounds, [sys.executable, "-c", "pass"])
        rows = [("python -c pass", base, base_min, None)]
        refused = median_of(rounds, CLI + ["train", "--k", "100000"], 1, "error: k:")
        rows.append(("mistudio train --k 100000 (refused)", *refused[:2], 1.0))
        accepted = median_of(rounds, CLI + ["train", "--steps", "10"], 0, "tr_")
        rows.append(("mistudio train --steps 10 (prints its id)", *accepted[:2], 1.5))
        job_id = accepted[2].splitlines()[-1]
        rows.append((f"mistudio job {job_id}", *median_of(rounds, CLI + ["job", job_id], 0, "state")[:2], None))
        rows.append(("mistudio jobs", *median_of(rounds, CLI + ["jobs"], 0, job_id)[:2], None))
    print(f"CLI latency, median of {rounds} runs (min in brackets), ratio to `python -c pass` in this run:")
    for what, median, low, goal in rows:
        ratio = "" if what.startswith("python") else f"{median / base:6.1f}x"
        verdict = "" if goal is None else f"  goal < {goal:.1f} s: {'met' if median < goal else 'NOT met'}"
        print(f"  {what:<44} {median * 1000:7.0f} ms ({low * 1000:5.0f}) {ratio}{verdict}")


if __name__ == "__main__":
    main()
