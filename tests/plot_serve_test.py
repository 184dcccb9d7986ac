#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""plot_serve_test.py - the data side of tools/plot_serve.py: only the
online lines of `kvmm bench serve --json`, one series per policy in file
order and by rate, the p99 TPOT, saturated points flagged, refusals of
files without the keys. Run by `make check`; needs only the standard
library (the drawing itself is tried when matplotlib is there)."""
import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "plot_serve", os.path.join(HERE, "..", "tools", "plot_serve.py"))
ps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)


def online(policy, rate, tok_s, tpot99, sat=False):
    return {"mode": "online", "device": "cpu", "policy": policy,
            "rate": rate, "requests": 8, "completed": 8,
            "peak_concurrency": 3, "gen_tok_s": tok_s, "preemptions": 0,
            "tpot_ms": [tpot99 / 2, tpot99 * 0.8, tpot99],
            "saturated": sat}


LINES = [
    {"mode": "offline", "policy": "full", "requests": 8, "completed": 8,
     "peak_concurrency": 3, "gen_tok_s": 30.0, "preemptions": 0},
    online("full", 2.0, 40.0, 150.0, True),
    online("diffkv", 2.0, 36.0, 170.0, True),
    online("full", 0.5, 12.0, 80.0),
    online("diffkv", 0.5, 12.5, 90.0),
    {"mode": "saturation", "policy": "full", "saturation_rate": 2.0},
]


def write(lines):
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    for line in lines:
        f.write((line if isinstance(line, str) else json.dumps(line)) +
                "\n")
    f.close()
    return f.name


class PlotServe(unittest.TestCase):
    def test_online_lines_only(self):
        path = write(LINES)
        try:
            rows = ps.load(path)
        finally:
            os.unlink(path)
        self.assertEqual(len(rows), 4)

    def test_series_by_policy_and_rate(self):
        s = ps.series([r for r in LINES if r["mode"] == "online"])
        self.assertEqual(list(s), ["full", "diffkv"])
        self.assertEqual(s["full"], [(0.5, 12.0, 80.0, False),
                                     (2.0, 40.0, 150.0, True)])

    def test_refusals(self):
        for bad in (["not json"], [{"mode": "online", "policy": "full"}],
                    [LINES[0]]):
            path = write(bad)
            try:
                with self.assertRaises(SystemExit):
                    ps.load(path)
            finally:
                os.unlink(path)

    def test_draw(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("no matplotlib")
        out = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
        out.close()
        try:
            ps.draw([r for r in LINES if r["mode"] == "online"], out.name)
            self.assertGreater(os.path.getsize(out.name), 1000)
        finally:
            os.unlink(out.name)


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=0).result
    skipped = len(r.skipped)
    failed = len(r.failures) + len(r.errors)
    print("plot_serve: %d passed, %d failed, %d skipped" %
          (r.testsRun - failed - skipped, failed, skipped))
    sys.exit(1 if failed else 0)
