# SPDX-License-Identifier: MIT
#
# gpu-suite.d/policy.sh - sourced by tools/gpu-suite.sh (uses its say and
# row helpers, $B and $OUT): the policy caches on the device against the
# host ones. A randomly initialised model of the default model's shape
# (SmolLM2-135M, written by tests/ref/random_llama.py in fp16, the CUDA
# executor's type for the default model's Q4_1 GGUF; the same bytes as the
# model of the noise floor in Documentation/policies/index.rst), `kvmm eval ppl`
# over one chunk of WikiText-2 with every policy, --device cpu and
# --device cuda, compared by tests/ref/policy_compare.py (physical
# compression within 1%, perplexity within 0.5%).
# A third run, KVMM_CPU_ACT_ROUND=f16 on the CPU, is compared with the CUDA
# one as a diagnostic (the CUDA path's own error against the random
# model's sensitivity to fp16 rounding).
# Standalone: B=build OUT=/tmp/x TEXT=valid.txt bash tools/gpu-suite.d/policy.sh
# TEXT: the text file (default ../shared/data/wikitext-2/valid.txt, then
# $B/valid.txt); POLICY_INIT: the model's initializer range (SmolLM2's
# own, 1/24; at 0.1 the random model is chaotic, see
# Documentation/policies/index.rst);
# POLICY_CTX: tokens of the chunk, half prefilled (1024; the CPU run of
# 2048 takes over 7 minutes on 16 cores); POLICY_THREADS: CPU threads of
# the host run (all; gpu-suite.sh runs this file in the background with 8);
# POLICY_TIMEOUT: seconds each eval may take (480, so that the suite stays
# within one 10-minute device call).

if ! declare -F say >/dev/null; then
	say() { echo "$@"; }
	row() { printf '%-28s %s\n' "$1" "$2"; }
	B=${B:-build}
	OUT=${OUT:-/tmp/kvmm-policy}
	mkdir -p "$OUT"
fi
TEXT=${TEXT:-../shared/data/wikitext-2/valid.txt}
[ -r "$TEXT" ] || TEXT=$B/valid.txt
POLICY_INIT=${POLICY_INIT:-0.041666666666666664}
POLICY_CTX=${POLICY_CTX:-1024}
pold=$(mktemp -d /tmp/kvmm-pol.XXXXXX)

say "== policy: cuda vs cpu (random smollm2 shape, init $POLICY_INIT)"
if [ ! -r "$TEXT" ]; then
	row "policy cuda vs cpu" "no text ($TEXT)"
elif ! python3 tests/ref/random_llama.py --out "$pold/smollm2" \
	--init "$POLICY_INIT" >"$OUT/policy-model.log" 2>&1; then
	row "policy cuda vs cpu" "no model (see policy-model.log)"
else
	pols=(--policy diffkv --policy "diffkv:prune=0,quant=2"
	      --policy uniform:tier=k4v4 --policy kvcompress:rate=3)
	# all at once: the CPU runs take the cores, the CUDA run the GPU.
	# cpuf16 (a diagnostic, not the criterion): the CPU executor with its
	# GEMM inputs rounded to fp16 as the CUDA GEMMs see them, to tell the
	# CUDA path's own error from the random model's sensitivity.
	for run in cpu cpuf16 cuda; do
		(
			t0=$SECONDS
			dev=${run%f16}
			[ "$run" = cpuf16 ] && export KVMM_CPU_ACT_ROUND=f16
			timeout "${POLICY_TIMEOUT:-480}" "$B/kvmm" eval ppl --device $dev \
				${POLICY_THREADS:+--threads $POLICY_THREADS} \
				--model "$pold/smollm2" --text "$TEXT" \
				--context "$POLICY_CTX" --prefix $((POLICY_CTX / 2)) \
				"${pols[@]}" --json >"$OUT/policy-$run.jsonl" \
				2>"$OUT/policy-$run.err"
			echo "eval ppl --device $dev${KVMM_CPU_ACT_ROUND:+ (KVMM_CPU_ACT_ROUND=f16)}: rc $? in $((SECONDS - t0)) s" \
				>>"$OUT/policy-$run.err"
		) &
	done
	wait
	for run in cpu cpuf16 cuda; do
		tail -3 "$OUT/policy-$run.err" | tee -a "${log:-/dev/null}"
	done
	# generation through a policy cache on the GPU, batched
	printf '{"prompt": "%s"}\n' "The cache" "A much longer prompt, so that the two sequences differ" \
		>"$pold/batch.jsonl"
	for pol in diffkv kvcompress:rate=2,interval=4; do
		"$B/kvmm" generate --device cuda --model "$pold/smollm2" \
			--batch-file "$pold/batch.jsonl" --max-tokens 300 \
			--policy "$pol" >"$OUT/policy-gen.txt" 2>&1
		say "generate --device cuda --policy $pol: rc $?, $(grep -E 'KV cache' "$OUT/policy-gen.txt" | head -1 | sed 's/^ *//')"
	done
	python3 tests/ref/policy_compare.py "$OUT/policy-cpu.jsonl" \
		"$OUT/policy-cuda.jsonl" >"$OUT/policy-compare.txt" 2>&1
	rc=$?
	tee -a "${log:-/dev/null}" <"$OUT/policy-compare.txt"
	row "policy cuda vs cpu" "$(tail -1 "$OUT/policy-compare.txt") (rc $rc)"
	say "-- diagnostic: cuda against the cpu with fp16-rounded GEMM inputs"
	python3 tests/ref/policy_compare.py "$OUT/policy-cpuf16.jsonl" \
		"$OUT/policy-cuda.jsonl" >"$OUT/policy-compare-f16.txt" 2>&1
	tee -a "${log:-/dev/null}" <"$OUT/policy-compare-f16.txt"
	row "policy cuda vs cpu-f16" "$(tail -1 "$OUT/policy-compare-f16.txt") (diagnostic)"
fi
rm -rf "$pold"
