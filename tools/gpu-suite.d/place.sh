# SPDX-License-Identifier: MIT
#
# gpu-suite.d/place.sh - sourced by tools/gpu-suite.sh (uses its say and row
# helpers, $B, $OUT, $log): KV placement across HBM and host memory on the
# GPU (issue 16), `kvmm bench place --backend cuda` in the issue's
# configuration (Llama-3-8B attention, batch 16, HBM at 100 / 50 / 25% of
# the KV, every policy) at 16K and at 8K, with --check (the attention over
# the two-tier space against the CPU reference). One run, JSON; the table
# is rendered from it (bench-place.txt), and the issue's criterion at 16K,
# 50% HBM is the first row. PLACE_CTX overrides the contexts; PLACE_ARGS
# adds flags (e.g. "--plan-at end --host-copy off", the earlier mechanism).

PLACE_CTX=${PLACE_CTX:-16384,8192}
PLACE_THREADS=${PLACE_THREADS:-$(n=$(nproc); echo $((n > 64 ? 64 : n)))}
say "== kvmm bench place --backend cuda --batch 16 --ctx $PLACE_CTX --hbm 1,0.5,0.25 --threads $PLACE_THREADS --check --json ${PLACE_ARGS:-}"
# shellcheck disable=SC2086
"$B/kvmm" bench place --backend cuda --batch 16 --ctx "$PLACE_CTX" \
	--hbm 1,0.5,0.25 --threads "$PLACE_THREADS" --check --json \
	${PLACE_ARGS:-} >"$OUT/bench-place.json" 2>>"$log"
place_rc=$?
if [ -s "$OUT/bench-place.json" ]; then
	python3 - "$OUT/bench-place.json" >"$OUT/bench-place.txt" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
head = [l for l in lines if "rates" in l]
if head:
    r, m = head[0]["rates"], head[0]["model"]
    print("measured: HBM read %.0f GB/s, host-tier read over PCIe %.1f GB/s,"
          " page copy host->HBM %.1f, HBM->host %.1f GB/s (model %.0f / %.0f"
          " / %.0f)" % (r["hbm_read_gbs"], r["host_read_gbs"],
                        r["promote_gbs"], r["demote_gbs"], m["hbm_gbs"],
                        m["host_gbs"], m["pcie_gbs"]))
print("%6s %5s %-10s %7s %9s %9s %9s %9s %9s %9s %9s %8s %9s %10s" % (
    "ctx", "hbm", "policy", "hit", "host_MB", "mig_MB", "step_us", "sel_us",
    "attn_us", "mig_us", "model_us", "vs_dense", "vs_oracle", "gpu_vs_cpu"))
for l in lines:
    if "policy" not in l:
        continue
    print("%6d %5.2f %-10s %7.4f %9.2f %9.3f %9.2f %9.2f %9.2f %9.2f %9.2f"
          " %8.2f %9s %10s" % (
              l["ctx"], l["hbm_fraction"], l["policy"], l["hit_ratio"],
              l["host_bytes"] / 1e6, l["mig_bytes"] / 1e6, l["step_us"],
              l["select_us"], l["attn_us"], l["mig_us"], l["step_us_model"], l["vs_dense"],
              "%.2f" % l["vs_oracle"] if "vs_oracle" in l else "",
              "%.1e" % l["check_err"] if "check_err" in l else ""))
EOF
	cat "$OUT/bench-place.txt" >>"$log"
	while IFS= read -r line; do
		row "${line%%|*}" "${line#*|}"
	done < <(python3 - "$OUT/bench-place.json" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
head = [l for l in lines if "rates" in l]
if head:
    r = head[0]["rates"]
    print("place rates (model 3000/51/55)|HBM %.0f GB/s, host read %.1f GB/s,"
          " copy up %.1f / down %.1f GB/s" % (r["hbm_read_gbs"],
          r["host_read_gbs"], r["promote_gbs"], r["demote_gbs"]))
pts = {(l["ctx"], round(l["hbm_fraction"], 2), l["policy"]): l
       for l in lines if "policy" in l}
for ctx in sorted({k[0] for k in pts}, reverse=True):
    i = pts.get((ctx, 0.5, "importance"))
    s = pts.get((ctx, 0.5, "static"))
    d = pts.get((ctx, 1.0, "dense"))
    if not (i and s and d):
        continue
    print("place %dK b16 50%% importance|%.1f us (model %.1f): %.2fx dense"
          " %.1f us (goal <= 1.5), %.2fx oracle (<= 1.25), static %.2fx"
          " slower (>= 3)" % (ctx // 1024, i["step_us"], i["step_us_model"],
          i["vs_dense"], d["step_us"], i["vs_oracle"],
          s["step_us"] / i["step_us"]))
errs = [l["check_err"] for l in lines if "check_err" in l]
if errs:
    print("place gpu vs cpu (--check)|worst rel L2 %.1e over %d runs"
          " (tolerance 2e-3)" % (max(errs), len(errs)))
EOF
)
fi
[ "$place_rc" = 0 ] || row "place" "kvmm bench place failed (rc $place_rc, see gpu-suite.log)"
