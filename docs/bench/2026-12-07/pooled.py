#!/usr/bin/env python3
"""The overlay against kernel VXLAN over every round of the runs of the
encapsulating fast path: each round's overlay sample over its kernel VXLAN
sample (the same-round ratio of `shoal bench`), pooled, with the median's
95 % bootstrap interval and how many rounds were above 1.

    pooled.py   (from docs/bench/)
"""
import json, random, statistics

RUNS = [
    "2026-12-06/overlay-lean",
    "2026-12-06/overlay-lean2",
    "2026-12-07/overlay-reads",
    "2026-12-07/overlay-mtu",
]
METRICS = ["throughput", "throughput N streams", "rr rate", "cpu per round trip"]


def samples(run, scenario, metric):
    s = next(x for x in run["scenarios"] if x["name"] == scenario)
    return next(x for x in s["metrics"] if x["name"] == metric)["samples"]


runs = [json.load(open(f"{r}/result.json")) for r in RUNS]
print(f"{len(RUNS)} runs: " + ", ".join(RUNS))
for m in METRICS:
    ratios, per_run = [], []
    for run in runs:
        r = [a / b for a, b in zip(samples(run, "overlay", m), samples(run, "kernel-vxlan", m))]
        ratios += r
        per_run.append(statistics.median(r))
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(5000))
    above = sum(1 for x in ratios if x > 1)
    print(
        f"{m}: {len(ratios)} rounds, median {statistics.median(ratios):.3f} "
        f"(95 % interval {boots[124]:.3f}-{boots[4874]:.3f}), above 1 in {above}; "
        f"per run " + ", ".join(f"{x:.3f}" for x in per_run)
    )
