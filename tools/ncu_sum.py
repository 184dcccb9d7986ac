#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ncu_sum.py - sum an Nsight Compute CSV (--csv --metrics
gpu__time_duration.sum) by kernel name: calls, total and share of the
time, largest first. Used by tools/gpu-suite.d/decode.sh to say where a
decode step's time goes.

usage: ncu_sum.py FILE.csv
"""
import csv
import io
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    text = open(sys.argv[1], errors="replace").read().splitlines()
    # ncu prints the program's own output and ==PROF== lines first
    start = next((i for i, l in enumerate(text)
                  if l.startswith('"ID"')), None)
    if start is None:
        sys.exit("%s: no ncu CSV table in it" % sys.argv[1])
    tot, calls = {}, {}
    for r in csv.DictReader(io.StringIO("\n".join(text[start:]))):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = r["Kernel Name"].split("(")[0].split("<")[0][:48]
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        v *= {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3,
              "ms": 1e3, "nsecond": 1e-3}.get(unit, 1e-3)
        tot[name] = tot.get(name, 0) + v
        calls[name] = calls.get(name, 0) + 1
    all_us = sum(tot.values())
    print("%-48s %6s %10s %6s" % ("kernel", "calls", "us", "share"))
    for k in sorted(tot, key=tot.get, reverse=True):
        print("%-48s %6d %10.1f %5.1f%%" % (k, calls[k], tot[k],
                                          100 * tot[k] / all_us))
    print("%-48s %6d %10.1f" % ("total", sum(calls.values()), all_us))


if __name__ == "__main__":
    main()
