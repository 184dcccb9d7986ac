#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ncu_sum.py - sum an Nsight Compute CSV (--csv --metrics
gpu__time_duration.sum[,dram__bytes_read.sum]) by kernel name: calls,
total and share of the time, largest first, and the DRAM read rate where
the bytes were asked for. Used by tools/gpu-suite.d/decode.sh to say where a
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
    tot, calls, rd = {}, {}, {}
    for r in csv.DictReader(io.StringIO("\n".join(text[start:]))):
        if r.get("Metric Name") == "dram__bytes_read.sum":
            name = r["Kernel Name"].split("(")[0].split("<")[0][:48]
            v = float(r["Metric Value"].replace(",", ""))
            v *= {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9,
                  "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(r.get("Metric Unit"), 1)
            rd[name] = rd.get(name, 0) + v
            continue
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
    print("%-48s %6s %10s %6s %8s" % ("kernel", "calls", "us", "share",
                                      "GB/s" if rd else ""))
    for k in sorted(tot, key=tot.get, reverse=True):
        gbs = "%8.0f" % (rd[k] / (tot[k] * 1e3)) if k in rd else ""
        print("%-48s %6d %10.1f %5.1f%% %s" % (k, calls[k], tot[k],
                                             100 * tot[k] / all_us, gbs))
    print("%-48s %6d %10.1f" % ("total", sum(calls.values()), all_us))


if __name__ == "__main__":
    main()
