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
# Standalone: B=build OUT=/tmp/x TEXT=valid.txt bash tools/gpu-suite.d/policy.sh
# TEXT: the text file (default ../shared/data/wikitext-2/valid.txt, then
# $B/valid.txt); POLICY_INIT: the model's initializer range (0.05; at
# 0.1 the random model is chaotic, see Documentation/policies/index.rst);
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
POLICY_INIT=${POLICY_INIT:-0.05}
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
	# both at once: the CPU run takes the cores, the CUDA run the GPU
	for dev in cpu cuda; do
		(
			t0=$SECONDS
			timeout "${POLICY_TIMEOUT:-480}" "$B/kvmm" eval ppl --device $dev \
				${POLICY_THREADS:+--threads $POLICY_THREADS} \
				--model "$pold/smollm2" --text "$TEXT" \
				--context "$POLICY_CTX" --prefix $((POLICY_CTX / 2)) \
				"${pols[@]}" --json >"$OUT/policy-$dev.jsonl" \
				2>"$OUT/policy-$dev.err"
			echo "eval ppl --device $dev: rc $? in $((SECONDS - t0)) s" \
				>>"$OUT/policy-$dev.err"
		) &
	done
	wait
	for dev in cpu cuda; do
		tail -3 "$OUT/policy-$dev.err" | tee -a "${log:-/dev/null}"
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
fi
rm -rf "$pold"
