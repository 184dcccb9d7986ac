#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""plot_serve.py - serving throughput and p99 TPOT against the request rate,
one line per KV policy.

Reads the JSON lines of `kvmm bench serve --rate R1,R2,... --json`
(Documentation/serve/index.rst): the "online" lines, one per policy and
rate; other lines are skipped. Draws generated tok/s (left) and p99 time
per output token (right) against the offered rate into a PNG; a hollow
marker flags a rate the policy did not keep up with.

    kvmm bench serve --model M --rate 1,2,4,8 --json > serve.jsonl
    python3 tools/plot_serve.py serve.jsonl serve.png
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
            if r.get("mode") != "online":
                continue
            for key in ("policy", "rate", "gen_tok_s", "tpot_ms"):
                if key not in r:
                    sys.exit(f"{path}:{n}: no '{key}'")
            rows.append(r)
    if not rows:
        sys.exit(f"{path}: no online lines (run bench serve with --rate "
                 "and --json)")
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_serve.py SERVE.jsonl OUT.png")
    rows = load(sys.argv[1])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for pol in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r for r in rows if r["policy"] == pol),
                     key=lambda r: r["rate"])
        x = [r["rate"] for r in pts]
        line, = ax1.plot(x, [r["gen_tok_s"] for r in pts], "-o", label=pol)
        ax2.plot(x, [r["tpot_ms"][2] for r in pts], "-o",
                 color=line.get_color(), label=pol)
        sat = [r for r in pts if r.get("saturated")]
        for ax, key in ((ax1, "gen_tok_s"), (ax2, None)):
            ax.plot([r["rate"] for r in sat],
                    [r[key] if key else r["tpot_ms"][2] for r in sat],
                    "o", mfc="white", color=line.get_color())
    dev = rows[0].get("device", "?")
    ax1.set_xlabel("offered rate (requests/s)")
    ax1.set_ylabel("generated tok/s")
    ax1.set_title(f"throughput ({dev})")
    ax2.set_xlabel("offered rate (requests/s)")
    ax2.set_ylabel("p99 TPOT (ms)")
    ax2.set_title("p99 time per output token; hollow: saturated")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print(f"wrote {sys.argv[2]} ({len(rows)} points)")


if __name__ == "__main__":
    main()
