# SPDX-License-Identifier: MIT
#
# gpu-suite.d/kernels.sh - sourced by tools/gpu-suite.sh (uses its bench and
# row helpers, $OUT): prefill attention against the cuBLAS GEMM rate, and
# the per-head page eviction against the read ceiling.

bench prefill
if [ -s "$OUT/bench-prefill.json" ]; then
	row "prefill attn 32K fp16" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=[x for x in d["points"] if x["tokens"]==max(y["tokens"] for y in d["points"])][0]; print("%.1f TFLOP/s, %.0f%% of cuBLAS GEMM %.0f TFLOP/s" % (p["tflops"], 100*p["tflops"]/d["gemm_tflops"] if d["gemm_tflops"] else 0, d["gemm_tflops"]))' "$OUT/bench-prefill.json")"
else
	row "prefill attn" "no result (see bench-prefill.txt)"
fi

bench evict
if [ -s "$OUT/bench-evict.json" ]; then
	row "evict 8 x 8K, half freed" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=[x for x in d["points"] if x["batch"]==8 and x["ctx"]==8192][0]; print("%.0f us, %.1f GB/s (%.1f%% of read %.0f)" % (p["us"], p["gbs"], 100*p["gbs"]/d["read_ceiling_gbs"], d["read_ceiling_gbs"]))' "$OUT/bench-evict.json")"
else
	row "evict" "no result (see bench-evict.txt)"
fi
