#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""plot_sweep.py - quality against physical compression, one line per policy
and tier pair.

Reads the JSON lines of `kvmm eval sweep --out FILE.jsonl` (one object per
policy, see Documentation/policies/index.rst) and draws the perplexity change
against full (percent) over the physical compression ratio into a PNG:

- one line per policy kind and tier pair (uniform; diffkv per hi/lo pair;
  kvcompress), each point labelled with its knobs (k8v4, p0.02 q1, r2);
- each point at the mean change over the chunks ("delta_mean_pct"; the
  pooled "delta_pct" in files older than it), error bars its 95% interval
  ("delta_ci95_pct"; in older files the standard error from
  "chunk_delta_pct"; none with one chunk);
- the y range clipped at --ymax (percent, 20 by default): a point above it
  is drawn on the top edge as a triangle with its value, or --log for a
  symmetric-log axis instead;
- the target line (--target, +2% by default) labelled.

    python3 tools/plot_sweep.py sweep.jsonl sweep.png [--ymax 20] [--log]

The data side (load, series, labels, error bars, clipping) needs only the
standard library and is tested by tests/plot_sweep_test.py; drawing needs
matplotlib (tools/deps.sh installs it).
"""
import argparse
import json
import math
import sys

KINDS = ("full", "uniform", "diffkv", "kvcompress")


def load(path):
    """The rows of a sweep file; exits with the line at fault."""
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
            if not isinstance(r, dict):
                sys.exit(f"{path}:{n}: not a JSON object")
            for key in ("kind", "policy", "physical_ratio", "delta_pct"):
                if key not in r:
                    sys.exit(f"{path}:{n}: no '{key}'")
            rows.append(r)
    if not rows:
        sys.exit(f"{path}: no results")
    return rows


def knobs(policy):
    """'diffkv:hi=k8v4,prune=0.02' -> {'hi': 'k8v4', 'prune': '0.02'}"""
    _, _, rest = policy.partition(":")
    out = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        out[k] = v
    return out


def label(row):
    """The knobs that tell a point from the others of its line."""
    k = knobs(row["policy"])
    kind = row["kind"]
    if kind == "uniform":
        return k.get("tier", "?")
    if kind == "diffkv":
        return "p%s q%s" % (k.get("prune", "?"), k.get("quant", "?"))
    if kind == "kvcompress":
        return "r%s" % k.get("rate", "?")
    return kind


def series_key(row):
    """Which line a point is on: its kind, and for diffkv its tier pair."""
    if row["kind"] == "diffkv":
        k = knobs(row["policy"])
        return "diffkv %s/%s" % (k.get("hi", "?"), k.get("lo", "?"))
    return row["kind"]


def series(rows):
    """{line name: rows sorted by compression}, in a stable order."""
    out = {}
    for r in rows:
        out.setdefault(series_key(r), []).append(r)
    for pts in out.values():
        pts.sort(key=lambda r: r["physical_ratio"])
    order = {k: i for i, k in enumerate(KINDS)}
    return dict(sorted(out.items(),
                       key=lambda kv: (order.get(kv[0].split()[0], 9),
                                       kv[0])))


def stderr_of(row):
    """Standard error of the change over the chunks; 0 with fewer than 2."""
    c = row.get("chunk_delta_pct") or []
    if len(c) < 2:
        return 0.0
    m = sum(c) / len(c)
    var = sum((x - m) ** 2 for x in c) / (len(c) - 1)
    return math.sqrt(var / len(c))


def y_of(row):
    """The change a point is drawn at: the mean over chunks if given."""
    y = row.get("delta_mean_pct")
    return row["delta_pct"] if y is None else y


def bar_of(row):
    """Half width of a point's error bar: its 95% interval, else the
    standard error over chunks (older files); 0 without either."""
    ci = row.get("delta_ci95_pct")
    if ci is not None and len(ci) == 2:
        return (ci[1] - ci[0]) / 2.0
    return stderr_of(row)


def clip(y, ymax):
    """(y drawn, whether it is an outlier drawn on the top edge)"""
    if ymax is not None and y > ymax:
        return ymax, True
    return y, False


def draw(rows, out, ymax=20.0, log=False, target=2.0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    top = None if log else ymax
    for name, pts in series(rows).items():
        xs = [r["physical_ratio"] for r in pts]
        ys = [clip(y_of(r), top) for r in pts]
        errs = [bar_of(r) for r in pts]
        line = ax.errorbar(xs, [y for y, _ in ys], yerr=errs, marker="o",
                           capsize=3, label=name)
        color = line[0].get_color()
        for x, (y, out_), r in zip(xs, ys, pts):
            if out_:
                ax.plot([x], [y], marker="^", markersize=10, color=color)
                ax.annotate("%s: %+.1f%%" % (label(r), y_of(r)),
                            (x, y), textcoords="offset points",
                            xytext=(4, -12), fontsize=7, color=color)
            else:
                ax.annotate(label(r), (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=color)
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.annotate("target: %+g%% perplexity" % target, (0.01, target),
                xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", fontsize=8, color="grey")
    if log:
        ax.set_yscale("symlog", linthresh=1.0)
    else:
        lo = min(0.0, min(y_of(r) for r in rows)) - 0.5
        ax.set_ylim(lo, ymax * 1.05)
    ax.set_xlabel("physical compression (full's pages / policy's pages)")
    ax.set_ylabel("perplexity change against full (%)")
    first = rows[0]
    ax.set_title("%s, context %s (prefix %s), %s chunk(s); bars: s.e. "
                 "over chunks" % (
                     str(first.get("model", "?")).split("/")[-1],
                     first.get("context", "?"), first.get("prefix", "?"),
                     first.get("chunks", "?")), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="JSON lines of kvmm eval sweep --out")
    ap.add_argument("png", help="the plot")
    ap.add_argument("--ymax", type=float, default=20.0,
                    help="clip the perplexity change here, percent (20)")
    ap.add_argument("--log", action="store_true",
                    help="symmetric-log y axis instead of clipping")
    ap.add_argument("--target", type=float, default=2.0,
                    help="the target line, percent (2)")
    a = ap.parse_args(argv[1:])
    rows = load(a.sweep)
    try:
        draw(rows, a.png, a.ymax, a.log, a.target)
    except ImportError:
        sys.exit("plot_sweep.py: needs matplotlib (tools/deps.sh installs "
                 "it)")
    print(f"{a.png}: {len(rows)} points")


if __name__ == "__main__":
    main(sys.argv)
