"""Events: publish->receive latency, and what publishing costs the training loop.

    python benchmarks/bench_events.py [--steps 150] [--rounds 3]

Starts a private embedded Redis. Then, in the same run:
- publish->receive latency on loopback (p50/p99) over 500 events, beside a raw PING;
- the real SAE trainer (384 x 1536 TopK, batch 1024, CPU) with progress reported every
  step (the worst case) through a `Publisher`, against the same trainer with no callback,
  alternating A/B rounds to even out the machine's noise. Goal (issue 6): overhead <= 1%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import pct, private_redis


def latency() -> None:
    from mistudio import events
    from mistudio.redis.connection import get_client

    client = get_client("pubsub")
    pings = []
    for _ in range(500):
        t0 = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - t0)
    lat = []
    with events.Subscription("training:bench") as sub:
        sub.get(timeout=0.2)
        for i in range(500):
            t0 = time.perf_counter()
            events.publish("training:bench", "training.progress", {"step": i, "total_steps": 500})
            sub.get(timeout=5)
            lat.append(time.perf_counter() - t0)
    ms = lambda v: f"{1000 * v:.3f} ms"  # noqa: E731
    print(f"raw PING              p50 {ms(statistics.median(pings))}  p99 {ms(pct(pings, 99))}")
    print(f"publish -> receive    p50 {ms(statistics.median(lat))}  p99 {ms(pct(lat, 99))}"
          f"  ({statistics.median(lat) / statistics.median(pings):.1f}x PING)")


def train_rate(steps: int, publish: bool) -> float:
    import torch

    from mistudio import events
    from mistudio.sae.config import TrainingConfig
    from mistudio.sae.trainer import Trainer

    torch.manual_seed(0)
    data = torch.randn(16, 1024, 384)
    config = TrainingConfig(hook_point="blocks.3.hook_resid_post", d_in=384, d_sae=1536, architecture="topk", k=32,
                            batch_size=1024, steps=steps, log_every=1, checkpoint_every=10**9)
    publisher = events.Publisher("training:bench-train", min_interval=0.25) if publish else None
    # Both runs compute the metrics every step (a callback is set): only the publishing differs.
    callback = (lambda m: publisher.emit("training.progress", {"step": m["step"], "total_steps": steps,
                                                               "metrics": m})) if publish else (lambda m: None)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, on_progress=callback)
        batches = (data[i % 16] for i in range(steps))
        t0 = time.perf_counter()
        trainer.train(batches)
        elapsed = time.perf_counter() - t0
    if publisher is not None:
        publisher.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with private_redis("events"):
        latency()
        train_rate(20, publish=False)  # warm up
        plain, with_events = [], []
        for _ in range(args.rounds):
            plain.append(train_rate(args.steps, publish=False))
            with_events.append(train_rate(args.steps, publish=True))
        a, b = statistics.median(plain), statistics.median(with_events)
        print(f"training steps/s without events {a:.2f} (rounds {min(plain):.2f}..{max(plain):.2f}),"
              f" with events every step {b:.2f} (rounds {min(with_events):.2f}..{max(with_events):.2f});"
              f" medians of {args.rounds} alternating rounds")
        print(f"ratio with/without = {b / a:.3f}; overhead {100 * (1 - b / a):+.2f}%  (goal <= 1%)")


if __name__ == "__main__":
    main()
