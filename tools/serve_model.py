#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A model of the issue-14 serving experiment, to choose what to measure.

Not a measurement: it replays the scheduler's admission rule (pages in use
plus --reserve x each running request's remaining output, within the KV
budget; whole prompts on CUDA, a step's prompts within --max-step-tokens
beside its decode tokens) over a workload of the experiment's shape, and
prices each step with the figures the H100 run measured
(Documentation/serve/index.rst): a decode step costs its floor (weights
plus the KV it reads, over the read ceiling) times the policy's measured
step-to-floor ratio, a prefill token 1 / (25K tok/s). It printed walls
within 7-12% of the measured ones (full 158.6 s against 169.0, diffkv
99.4 against 108.0, kvcompress 70.8 against 80.3), so it ranks schedules;
the device measures them (tools/gpu-suite.d/serve.sh).

  tools/serve_model.py [--order fcfs,longest] [--reserve 1,0.5]
                       [--ratio POLICY=R ...] [--requests N] [--seed N]
"""
import argparse
import random
import sys

KV_TOKEN = 32 * 8 * 128 * 2 * 2		# Llama-3-8B, fp16 K and V, bytes
WEIGHTS = 15.01e9			# bytes a decode step reads
READ = 3.0e12				# read ceiling, bytes/s
PREFILL = 25000.0			# prefill tokens/s (24.8-26.4K measured)
BUDGET = 16 * 2**30
# policy: (compression reached, decode step / floor), as measured
POLICIES = {"full": (1.0, 1.38), "diffkv": (2.55, 1.94),
            "kvcompress": (4.0, 1.83)}
MEASURED = {"full": 169.0, "diffkv": 108.0, "kvcompress": 80.3}


def workload(n, seed):
    r = random.Random(seed)
    return [(r.randint(512, 1024), r.randint(1024, 3072)) for _ in range(n)]


def run(reqs, compr, ratio, order="fcfs", reserve=1.0, max_step=2048,
        max_seqs=512):
    """Modelled (gen tok/s, wall s, mean and peak sequences, peak KV
    bytes)."""
    if order == "longest":
        reqs = sorted(reqs, key=lambda x: -x[1])	# stable: ties by arrival
    per_tok = KV_TOKEN / compr
    queue = list(reqs)
    running = []			# [tokens held, tokens left to generate]
    t = gen = steps = conc = peak = peak_kv = 0
    while queue or running:
        used = sum((c + reserve * left) * per_tok for c, left in running)
        tokens = len(running)
        joined = 0
        while queue and len(running) < max_seqs:
            p, o = queue[0]
            need = (p + reserve * o) * per_tok
            if used + need > BUDGET and running:
                break
            if joined and tokens + p > max_step:
                break
            used += need
            tokens += p
            joined += p
            running.append([p, o])
            queue.pop(0)
        kv = sum(c for c, _ in running) * per_tok
        peak_kv = max(peak_kv, kv + len(running) * per_tok)
        t += (WEIGHTS + kv) / READ * ratio + joined / PREFILL
        for r in running:
            r[0] += 1
            r[1] -= 1
        gen += len(running)
        steps += 1
        conc += len(running)
        peak = max(peak, len(running))
        running = [r for r in running if r[1] > 0]
    return gen / t, t, conc / steps, peak, peak_kv


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--order", default="fcfs,longest")
    ap.add_argument("--reserve", default="1")
    ap.add_argument("--ratio", action="append", default=[],
                    help="POLICY=R: that policy's step / floor")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    pol = dict(POLICIES)
    for kv in a.ratio:
        name, _, val = kv.partition("=")
        if name not in pol:
            ap.error("--ratio: no policy '%s'" % name)
        pol[name] = (pol[name][0], float(val))
    reqs = workload(a.requests, a.seed)
    print("modelled, not measured: %d requests, prompts 512-1K, outputs "
          "1K-3K, 16 GiB KV" % a.requests)
    print("%-11s %-8s %7s %9s %7s %6s %5s %8s %10s" % (
        "policy", "order", "reserve", "gen tok/s", "wall s", "mean",
        "peak", "vs full", "measured s"))
    for order in a.order.split(","):
        for res in (float(x) for x in a.reserve.split(",")):
            base = None
            for name, (compr, ratio) in pol.items():
                tps, wall, mean, peak, _ = run(reqs, compr, ratio, order,
                                               res)
                base = base or tps
                meas = MEASURED[name] if (order, res) == ("fcfs", 1.0) \
                    and not a.ratio and a.requests == 256 and a.seed == 1 \
                    else None
                print("%-11s %-8s %7.2f %9.0f %7.1f %6.1f %5d %7.2fx %10s"
                      % (name, order, res, tps, wall, mean, peak,
                         tps / base, "%.1f" % meas if meas else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
