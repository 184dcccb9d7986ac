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


def series(rows):
    """{policy: [(rate, gen tok/s, p99 TPOT ms, saturated), ...]}, the
    policies in file order, each by increasing rate"""
    out = {}
    for r in rows:
        out.setdefault(r["policy"], []).append(
            (r["rate"], r["gen_tok_s"], r["tpot_ms"][2],
             bool(r.get("saturated"))))
    for pts in out.values():
        pts.sort()
    return out


def draw(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for pol, pts in series(rows).items():
        x = [p[0] for p in pts]
        line, = ax1.plot(x, [p[1] for p in pts], "-o", label=pol)
        ax2.plot(x, [p[2] for p in pts], "-o", color=line.get_color(),
                 label=pol)
        sat = [p for p in pts if p[3]]
        ax1.plot([p[0] for p in sat], [p[1] for p in sat], "o",
                 mfc="white", color=line.get_color())
        ax2.plot([p[0] for p in sat], [p[2] for p in sat], "o",
                 mfc="white", color=line.get_color())
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_serve.py SERVE.jsonl OUT.png")
    rows = load(sys.argv[1])
    draw(rows, sys.argv[2])
    print(f"wrote {sys.argv[2]} ({len(rows)} points)")


if __name__ == "__main__":
    main()
