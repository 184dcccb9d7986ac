#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gguf_quants_test.py - the CPU dequantisation of every GGUF format
kvmm reads (kernels/qdot.c) against the gguf Python package's, on fresh
random blocks: tests/ref/gguf_quants.py writes them with the package's
values, and `kvmm-check qdot` (test_dequant_gguf) reads them through
KVMM_GGUF_QREF. Run by `make check`; skipped, with the reason, when numpy
or gguf is not importable (pip install gguf).

    python3 tests/gguf_quants_test.py [--check build-cpu/kvmm-check]
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", default=os.environ.get(
        "KVMM_CHECK", os.path.join(HERE, "..", "build-cpu", "kvmm-check")))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "qref.bin")
        r = subprocess.run([sys.executable,
                            os.path.join(HERE, "ref", "gguf_quants.py"),
                            "--bin", path], capture_output=True, text=True)
        if r.returncode == 77:
            print("gguf_quants: 0 passed, 0 failed, 1 skipped "
                  f"({r.stderr.strip()})")
            return 0
        if r.returncode:
            sys.stderr.write(r.stderr)
            print("gguf_quants: 0 passed, 1 failed, 0 skipped")
            return 1
        env = dict(os.environ, KVMM_GGUF_QREF=path)
        r = subprocess.run([a.check, "qdot"], env=env, capture_output=True,
                           text=True)
        ok = r.returncode == 0 and "Failures: 0" in r.stdout and \
            f"formats as gguf gives them ({path})" in r.stdout
        if not ok:
            sys.stderr.write(r.stdout + r.stderr)
        print(f"gguf_quants: {int(ok)} passed, {int(not ok)} failed, "
              "0 skipped (fresh random blocks of 8 formats against the "
              "gguf package)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
