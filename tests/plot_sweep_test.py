#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""plot_sweep_test.py - the data side of tools/plot_sweep.py: one line per
kind and tier pair, points labelled with their knobs, error bars from the
chunk spread, outliers clipped to the top edge. Run by `make check`; needs
only the standard library (the drawing itself is tried when matplotlib is
there)."""
import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "plot_sweep", os.path.join(HERE, "..", "tools", "plot_sweep.py"))
ps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)


def row(policy, kind, x, y, chunks=None):
    r = {"policy": policy, "kind": kind, "physical_ratio": x,
         "delta_pct": y, "model": "m.gguf", "context": 64, "prefix": 32,
         "chunks": len(chunks or [0])}
    if chunks is not None:
        r["chunk_delta_pct"] = chunks
    return r


ROWS = [
    row("full", "full", 1.0, 0.0, [0, 0]),
    row("uniform:tier=k8v4", "uniform", 2.4, 0.4, [0.2, 0.6]),
    row("uniform:tier=k4v2", "uniform", 3.0, 35.0, [30, 40]),
    row("diffkv:hi=k8v4,lo=k4v2,prune=0.02,quant=1,window=64,score=64",
        "diffkv", 3.4, 2.5, [2.0, 3.0]),
    row("diffkv:hi=k8v4,lo=k4v2,prune=0.1,quant=2,window=64,score=64",
        "diffkv", 3.9, 4.0, [4.0, 4.0]),
    row("diffkv:hi=k8v4g2,lo=k4g2v2g4,prune=0.02,quant=1,window=64,"
        "score=64", "diffkv", 3.1, 2.7, [2.7]),
    row("kvcompress:rate=2,window=64,score=32,interval=16,sinks=0",
        "kvcompress", 2.0, 5.8),
]


class PlotSweep(unittest.TestCase):
    def test_one_line_per_tier_pair(self):
        s = ps.series(ROWS)
        self.assertEqual(list(s), ["full", "uniform", "diffkv k8v4/k4v2",
                                   "diffkv k8v4g2/k4g2v2g4", "kvcompress"])
        self.assertEqual([r["physical_ratio"] for r in s["uniform"]],
                         [2.4, 3.0])

    def test_labels_are_knobs(self):
        self.assertEqual([ps.label(r) for r in ROWS],
                         ["full", "k8v4", "k4v2", "p0.02 q1", "p0.1 q2",
                          "p0.02 q1", "r2"])

    def test_error_bars_from_chunks(self):
        self.assertAlmostEqual(ps.stderr_of(ROWS[1]), 0.2)
        self.assertEqual(ps.stderr_of(ROWS[4]), 0.0)
        self.assertEqual(ps.stderr_of(ROWS[5]), 0.0)  # one chunk
        self.assertEqual(ps.stderr_of(ROWS[6]), 0.0)  # no field

    def test_interval_bars(self):
        r = dict(ROWS[3], delta_mean_pct=2.4, delta_ci95_pct=[1.0, 3.8])
        self.assertAlmostEqual(ps.bar_of(r), 1.4)
        self.assertEqual(ps.y_of(r), 2.4)
        self.assertEqual(ps.y_of(ROWS[3]), 2.5)  # older file: pooled
        self.assertAlmostEqual(ps.bar_of(ROWS[1]), 0.2)  # stderr
        r = dict(ROWS[5], delta_ci95_pct=None)  # one chunk
        self.assertEqual(ps.bar_of(r), 0.0)

    def test_outliers_clipped(self):
        self.assertEqual(ps.clip(35.0, 20.0), (20.0, True))
        self.assertEqual(ps.clip(4.0, 20.0), (4.0, False))
        self.assertEqual(ps.clip(35.0, None), (35.0, False))

    def test_load_refuses(self):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl",
                                         delete=False) as f:
            f.write(json.dumps(ROWS[0]) + "\n[1]\n")
        with self.assertRaises(SystemExit) as e:
            ps.load(f.name)
        self.assertIn(":2: not a JSON object", str(e.exception))
        os.unlink(f.name)

    def test_draw(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib absent")
        with tempfile.TemporaryDirectory() as d:
            ps.draw(ROWS, os.path.join(d, "p.png"))
            self.assertGreater(os.path.getsize(os.path.join(d, "p.png")), 0)


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=0).result
    skipped = len(r.skipped)
    failed = len(r.failures) + len(r.errors)
    print("plot_sweep: %d passed, %d failed, %d skipped" %
          (r.testsRun - failed - skipped, failed, skipped))
    sys.exit(1 if failed else 0)
