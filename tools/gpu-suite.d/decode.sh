# SPDX-License-Identifier: MIT
#
# gpu-suite.d/decode.sh - sourced by tools/gpu-suite.sh (uses its say and
# row helpers, $B and $OUT): the decode step through the one KV cache on a
# random Llama-3-8B-shaped bf16 model (kvmm bench decode: every policy
# beside its floor, host drains, graph kernels, whether the cache fits),
# then `kvmm generate --device cuda --batch-file` with 64 prompts under
# every policy (graphs on). The model is made once into $DECODE_MODEL
# (default /tmp/kvmm-llama3-8b) and left for model.sh's speed check.
# Standalone: B=build OUT=/tmp/x bash tools/gpu-suite.d/decode.sh
# (DECODE_ARGS replaces the bench's grid; DECODE_GEN=0 skips generate;
# DECODE_PROFILE="diffkv@32@8192 full@32@8192" times each kernel of one
# decode step at those points under Nsight Compute, summed by name;
# DECODE_WBITS="16 8 4" the weight formats of the batch-1 points).

if ! declare -F say >/dev/null; then
	say() { echo "$@"; }
	row() { printf '%-28s %s\n' "$1" "$2"; }
	B=${B:-build}
	OUT=${OUT:-/tmp/kvmm-decode}
	mkdir -p "$OUT"
fi
DECODE_MODEL=${DECODE_MODEL:-/tmp/kvmm-llama3-8b}
DECODE_ARGS=${DECODE_ARGS:---batch 1,32,64 --ctx 8192 --steps 16}
dm=$DECODE_MODEL/llama3-8b

if [ ! -d "$dm" ]; then
	say "== decode: making $dm (random bf16 Llama-3-8B shape)"
	PYTHONUNBUFFERED=1 timeout 900 python3 tests/ref/random_llama.py \
		--out "$dm" --shape llama3-8b \
		>"$OUT/decode-model.log" 2>&1 ||
		{ tail -5 "$OUT/decode-model.log"; }
fi
if [ -d "$dm" ]; then
	say "== kvmm bench decode $DECODE_ARGS"
	# shellcheck disable=SC2086
	"$B/kvmm" bench decode --model "$dm" $DECODE_ARGS 2>&1 |
		tee -a "${log:-/dev/null}" >"$OUT/bench-decode.txt"
	while read -r pol b ctx ms fl ratio _; do
		case "$ms" in
		[0-9]*) row "decode $pol b$b ctx$ctx" "$ms ms, floor $fl, ratio $ratio" ;;
		*) row "decode $pol b$b ctx$ctx" "$ms $fl $ratio" ;;
		esac
	done < <(grep -vE '^#|^policy' "$OUT/bench-decode.txt")
	# weights at 16, 8 and 4 bits: batch-1 decode against each one's own
	# weight-read floor (DECODE_WBITS="" skips)
	for wb in ${DECODE_WBITS-16 8 4}; do
		say "== kvmm bench decode --weight-bits $wb"
		"$B/kvmm" bench decode --model "$dm" --policy full --batch 1,16 \
			--ctx 2048 --steps 16 --weight-bits "$wb" 2>&1 |
			tee -a "${log:-/dev/null}" >"$OUT/bench-decode-w$wb.txt"
		while read -r pol b ctx ms fl ratio _; do
			case "$ms" in
			[0-9]*) row "decode w$wb $pol b$b ctx$ctx" "$ms ms, floor $fl, ratio $ratio" ;;
			esac
		done < <(grep -vE '^#|^policy' "$OUT/bench-decode-w$wb.txt")
	done
	for pt in ${DECODE_PROFILE:-}; do
		command -v ncu >/dev/null || { row "profile" "no ncu"; break; }
		IFS=@ read -r pp pb pc <<<"$pt"
		pf=$OUT/ncu-${pp//[:=]/_}-b$pb-c$pc.csv
		say "== ncu: one decode step, $pp b$pb ctx$pc"
		ncu --profile-from-start off --clock-control none --csv \
			--metrics gpu__time_duration.sum "$B/kvmm" bench decode \
			--model "$dm" --batch "$pb" --ctx "$pc" --policy "$pp" \
			--steps 1 ${DECODE_MIB:+--device-mib $DECODE_MIB} \
			>"$pf" 2>&1
		python3 tools/ncu_sum.py "$pf" | tee -a "${log:-/dev/null}"
	done
	if [ "${DECODE_GEN:-1}" != 0 ]; then
		bf=$OUT/decode-batch.jsonl
		python3 - "$bf" <<'PY'
import json, random, sys
random.seed(7)
words = ["alpha", "beta", "gamma", "delta", "kernel", "page", "token",
         "memory", "graph", "stream", "tier", "cache"]
with open(sys.argv[1], "w") as f:
    for i in range(64):
        n = 40 + 3 * i
        f.write(json.dumps({"prompt": " ".join(random.choice(words)
                                               for _ in range(n))}) + "\n")
PY
		for pol in full diffkv "diffkv:prune=0" "uniform:tier=k4v4" \
			   "kvcompress:rate=4"; do
			say "== generate --device cuda --batch-file (64) --policy $pol"
			"$B/kvmm" generate --model "$dm" --device cuda \
				--batch-file "$bf" --max-tokens 32 --policy "$pol" \
				--json >"$OUT/gen-$pol.jsonl" 2>"$OUT/gen-$pol.err"
			rc=$?
			tail -1 "$OUT/gen-$pol.jsonl" | tee -a "${log:-/dev/null}"
			tail -2 "$OUT/gen-$pol.err" | tee -a "${log:-/dev/null}"
			row "generate 64 $pol" "rc $rc"
		done
	fi
else
	row "bench decode" "no model (see decode-model.log)"
fi
