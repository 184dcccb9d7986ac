#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tests of tools/hf_serve_peer.py that need neither torch nor a GPU: the
trace it writes (which bench serve and the peer both read), its parsers
and the static batch it picks; and that `kvmm bench serve` reads the trace
(when build-cpu/kvmm or build/kvmm is there)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import hf_serve_peer as peer  # noqa: E402


class Trace(unittest.TestCase):
    def test_lengths_in_range_and_seeded(self):
        with tempfile.TemporaryDirectory() as d:
            a, b, c = (os.path.join(d, x) for x in "abc")
            peer.main(["--make-trace", a, "--requests", "200",
                       "--prompt-len", "5-9", "--output-len", "3-3",
                       "--seed", "4"])
            peer.main(["--make-trace", b, "--requests", "200",
                       "--prompt-len", "5-9", "--output-len", "3-3",
                       "--seed", "4"])
            peer.main(["--make-trace", c, "--requests", "200",
                       "--prompt-len", "5-9", "--output-len", "3-3",
                       "--seed", "5"])
            ra = peer.read_trace(a)
            self.assertEqual(len(ra), 200)
            self.assertTrue(all(5 <= p <= 9 and o == 3 for p, o in ra))
            self.assertEqual({p for p, _ in ra}, set(range(5, 10)))
            self.assertEqual(ra, peer.read_trace(b))
            self.assertNotEqual(ra, peer.read_trace(c))

    def test_bad_traces_refused(self):
        with tempfile.TemporaryDirectory() as d:
            for text in ['{"prompt_len": 3}\n', 'nonsense\n',
                         '{"prompt_len": 0, "output_len": 2}\n', '']:
                t = os.path.join(d, "t")
                with open(t, "w") as f:
                    f.write(text)
                with self.assertRaises(SystemExit):
                    peer.read_trace(t)

    def test_parsers(self):
        self.assertEqual(peer.parse_range("x", "7"), (7, 7))
        self.assertEqual(peer.parse_range("x", "2-9"), (2, 9))
        for bad in ["0", "9-2", "a-b", ""]:
            with self.assertRaises(SystemExit):
                peer.parse_range("x", bad)
        self.assertEqual(peer.parse_bytes("16GiB"), 16 << 30)
        self.assertEqual(peer.parse_bytes("512MiB"), 512 << 20)
        self.assertEqual(peer.parse_bytes("1G"), 10 ** 9)
        self.assertEqual(peer.parse_bytes("4096"), 4096)
        for bad in ["x", "-1G", "3Q"]:
            with self.assertRaises(SystemExit):
                peer.parse_bytes(bad)

    def test_fit_batch(self):
        reqs = [(10, 10)] * 8			# 20 tokens a sequence
        self.assertEqual(peer.fit_batch(reqs, 1, 20 * 8), 8)
        self.assertEqual(peer.fit_batch(reqs, 1, 20 * 3), 3)
        self.assertEqual(peer.fit_batch(reqs, 1, 5), 1)	# one at least
        # a long request makes its batch as long as it
        reqs = [(10, 10), (10, 90), (10, 10), (10, 10)]
        self.assertEqual(peer.fit_batch(reqs, 1, 200), 2)

    def test_bench_serve_reads_it(self):
        model = os.path.join(HERE, "..", "models",
                             "SmolLM2-135M-Instruct.Q4_1.gguf")
        kvmm = [os.environ.get("KVMM", "")] + [
            os.path.join(HERE, "..", b, "kvmm") for b in ("build-cpu",
                                                          "build")]
        kvmm = [k for k in kvmm if k and os.access(k, os.X_OK)]
        if not kvmm or not os.path.exists(model):
            self.skipTest("no kvmm build or no default model")
        with tempfile.TemporaryDirectory() as d:
            t = os.path.join(d, "t.jsonl")
            peer.main(["--make-trace", t, "--requests", "3",
                       "--prompt-len", "8-12", "--output-len", "2-4"])
            out = subprocess.run(
                [kvmm[0], "bench", "serve", "--model", model, "--trace", t,
                 "--threads", "1", "--json"], capture_output=True,
                text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            want = sum(o for _, o in peer.read_trace(t))
            self.assertEqual((r["requests"], r["completed"]), (3, 3))
            self.assertEqual(round(r["gen_tok_s"] * r["wall_s"]), want)
            # the queue empties once every request is admitted: the
            # tokens by then are some of the run's
            self.assertGreater(r["queued_s"], 0)
            self.assertLessEqual(r["queued_s"], r["wall_s"])
            self.assertLessEqual(
                round(r["queued_gen_tok_s"] * r["queued_s"]), want)


if __name__ == "__main__":
    unittest.main()
