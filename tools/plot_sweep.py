#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""plot_sweep.py - quality against physical compression, one curve per policy.

Reads the JSON lines of `kvmm eval sweep --out FILE.jsonl` (one object per
policy, see Documentation/policies/index.rst) and draws perplexity change
against full (percent) over the physical compression ratio, one curve per
policy kind, into a PNG.

    python3 tools/plot_sweep.py sweep.jsonl sweep.png
"""
import json
import sys


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            for key in ("kind", "policy", "physical_ratio", "delta_pct"):
                if key not in r:
                    sys.exit(f"{path}:{n}: no '{key}'")
            rows.append(r)
    if not rows:
        sys.exit(f"{path}: no results")
    return rows


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: plot_sweep.py SWEEP.jsonl OUT.png")
    rows = load(argv[1])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in ("full", "uniform", "diffkv", "kvcompress"):
        pts = sorted((r["physical_ratio"], r["delta_pct"], r["policy"])
                     for r in rows if r["kind"] == kind)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=kind)
    ax.axhline(2.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("physical compression (full's pages / policy's pages)")
    ax.set_ylabel("perplexity change against full (%)")
    first = rows[0]
    ax.set_title("%s, context %s (prefix %s), %s chunk(s)" % (
        first.get("model", "?").split("/")[-1], first.get("context", "?"),
        first.get("prefix", "?"), first.get("chunks", "?")))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    print(f"{argv[2]}: {len(rows)} points")


if __name__ == "__main__":
    main(sys.argv)
