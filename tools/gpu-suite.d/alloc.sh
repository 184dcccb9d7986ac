# SPDX-License-Identifier: MIT
#
# gpu-suite.d/alloc.sh - sourced by tools/gpu-suite.sh near its end (uses its
# bench and row helpers, $OUT): the allocator benchmarks, kvmm bench alloc
# and kvmm bench compact, and their summary rows beside the goals.

bench alloc --backend cuda
if [ -s "$OUT/bench-alloc.json" ]; then
	row "alloc append 64K lists" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); a=d["us"]["append"]; i=d["lists"].index(65536); f=lambda k: ("%.1f" % a[k][i]) if k in a else "-"; print("%s us gpu, %s us graph, %s us cpu (goal < 50 us)" % (f("gpu"), f("gpu_graph"), f("cpu")))' "$OUT/bench-alloc.json")"
	row "alloc free 64K lists" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); a=d["us"]["free"]; i=d["lists"].index(65536); f=lambda k: ("%.1f" % a[k][i]) if k in a else "-"; print("%s us gpu, %s us graph, %s us cpu" % (f("gpu"), f("gpu_graph"), f("cpu")))' "$OUT/bench-alloc.json")"
else
	row "alloc append 64K lists" "no result (see bench-alloc.txt)"
fi
bench compact --backend cuda
if [ -s "$OUT/bench-compact.json" ]; then
	row "compact page copy (pass)" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f GB/s, %.1f%% of copy %.0f GB/s (goal >= 75%%), device pool %d" % (d.get("pass_copy_gbs", 0), d.get("pass_copy_pct", 0), d["device_copy_gbs"], d.get("device_pool", 0)))' "$OUT/bench-compact.json")"
	row "compact page copy (replay)" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f GB/s, %.1f%% of copy %.0f GB/s (goal >= 75%%)" % (d["copy_gbs"], d["copy_pct"], d["device_copy_gbs"]))' "$OUT/bench-compact.json")"
	row "compact granules released" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d of %d, %.1f%% (goal >= 45%%); frag %.1f%% -> %.1f%%" % (d["granules_released"], d["granules"], d["released_pct"], 100*d["before"]["fragmentation"], 100*d["after"]["fragmentation"]))' "$OUT/bench-compact.json")"
else
	row "compact" "no result (see bench-compact.txt)"
fi
