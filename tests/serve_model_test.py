#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tools/serve_model.py: it stays near the H100 walls it was checked
against (the figures Documentation/serve/index.rst quotes), its admission
keeps within the budget, and longest-first never loses to first-come."""
import contextlib
import io
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import serve_model as sm  # noqa: E402


class ServeModel(unittest.TestCase):
    def test_near_the_measured_walls(self):
        reqs = sm.workload(256, 1)
        for name, (compr, ratio) in sm.POLICIES.items():
            wall = sm.run(reqs, compr, ratio)[1]
            err = abs(wall - sm.MEASURED[name]) / sm.MEASURED[name]
            self.assertLess(err, 0.15, "%s: %.1f s modelled, %.1f measured"
                            % (name, wall, sm.MEASURED[name]))

    def test_budget_and_completion(self):
        reqs = sm.workload(64, 3)
        total = sum(o for _, o in reqs)
        for order in ("fcfs", "longest"):
            tps, wall, mean, peak, kv = sm.run(reqs, 1.0, 1.38, order, 1.0)
            self.assertAlmostEqual(tps * wall, total, delta=1e-6 * total)
            # with the whole output reserved, the KV stays in the budget
            self.assertLessEqual(kv, sm.BUDGET)
            self.assertGreater(peak, 20)
            self.assertGreater(mean, 1)
            # half the output reserved: more at once
            self.assertGreater(sm.run(reqs, 1.0, 1.38, order, 0.5)[3], peak)

    def test_longest_first_drains_sooner(self):
        reqs = sm.workload(256, 1)
        for compr, ratio in sm.POLICIES.values():
            fcfs = sm.run(reqs, compr, ratio, "fcfs")[1]
            lpt = sm.run(reqs, compr, ratio, "longest")[1]
            self.assertLessEqual(lpt, fcfs * 1.001)

    def test_cli(self):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(sm.main(["--requests", "16", "--order",
                                      "fcfs"]), 0)
            with self.assertRaises(SystemExit):
                sm.main(["--ratio", "nope=1"])
        self.assertIn("kvcompress  fcfs", out.getvalue())
        self.assertIn("no policy 'nope'", err.getvalue())


if __name__ == "__main__":
    unittest.main()
