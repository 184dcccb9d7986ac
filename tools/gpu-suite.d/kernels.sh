# SPDX-License-Identifier: MIT
#
# gpu-suite.d/kernels.sh - sourced by tools/gpu-suite.sh (uses its bench and
# row helpers, $OUT): prefill attention against the cuBLAS GEMM rate.

bench prefill
if [ -s "$OUT/bench-prefill.json" ]; then
	row "prefill attn 32K fp16" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=[x for x in d["points"] if x["tokens"]==max(y["tokens"] for y in d["points"])][0]; print("%.1f TFLOP/s, %.0f%% of cuBLAS GEMM %.0f TFLOP/s" % (p["tflops"], 100*p["tflops"]/d["gemm_tflops"] if d["gemm_tflops"] else 0, d["gemm_tflops"]))' "$OUT/bench-prefill.json")"
else
	row "prefill attn" "no result (see bench-prefill.txt)"
fi
