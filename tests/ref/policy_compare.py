#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""policy_compare.py - the CUDA policy caches against the host ones.

Reads two files of `kvmm eval ppl --json` lines, one run with --device cpu
and one with --device cuda on the same model, text and policies, and checks
what issue 7 asks of them: for every policy, physical compression within
1% and perplexity within 0.5% of the CPU path's. Prints one row per policy
and exits non-zero when a policy misses or is absent from either file.

    policy_compare.py cpu.jsonl cuda.jsonl [--ratio-tol 0.01] [--ppl-tol 0.005]
"""
import argparse
import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                rows[d["policy"]] = d
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cpu")
    ap.add_argument("cuda")
    ap.add_argument("--ratio-tol", type=float, default=0.01)
    ap.add_argument("--ppl-tol", type=float, default=0.005)
    a = ap.parse_args()
    cpu, gpu = load(a.cpu), load(a.cuda)
    if not cpu or set(cpu) != set(gpu):
        print("policies differ: cpu %s, cuda %s" % (sorted(cpu), sorted(gpu)))
        return 1
    bad = 0
    print("%-44s %10s %10s %7s %8s %8s %7s  %s" % (
        "policy", "ppl cpu", "ppl cuda", "d%", "phys cpu", "phys gpu",
        "d%", "top1 cpu/cuda"))
    for p in sorted(cpu):
        c, g = cpu[p], gpu[p]
        dp = abs(g["ppl"] / c["ppl"] - 1)
        dr = abs(g["physical_ratio"] / c["physical_ratio"] - 1)
        ok = dp <= a.ppl_tol and dr <= a.ratio_tol
        bad += not ok
        print("%-44s %10.4f %10.4f %7.3f %7.3fx %7.3fx %7.3f  %.3f/%.3f %s" % (
            p[:44], c["ppl"], g["ppl"], 100 * dp, c["physical_ratio"],
            g["physical_ratio"], 100 * dr, c["top1"], g["top1"],
            "ok" if ok else "MISS"))
    print("policy cuda vs cpu: %d of %d within ppl %.1f%% and physical "
          "%.0f%%" % (len(cpu) - bad, len(cpu), 100 * a.ppl_tol,
                      100 * a.ratio_tol))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
