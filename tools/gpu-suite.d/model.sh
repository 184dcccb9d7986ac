# SPDX-License-Identifier: MIT
#
# gpu-suite.d/model.sh - sourced by tools/gpu-suite.sh near its end (uses
# its say and row helpers, $B and $OUT): the CUDA executor against Hugging
# Face transformers on randomly initialised SmolLM2-135M, Qwen2, Qwen3 and
# Llama-3-8B shaped models (greedy tokens for 32 steps, logits), then the
# decode speed of a Llama-3-8B-shaped random bf16 model against the time
# to read its weights once. Standalone: B=build OUT=/tmp/x bash tools/gpu-suite.d/model.sh
# (HF_ARCHS and BENCH_ARCH override the model lists; empty skips).

if ! declare -F say >/dev/null; then
	say() { echo "$@"; }
	row() { printf '%-28s %s\n' "$1" "$2"; }
	B=${B:-build}
	OUT=${OUT:-/tmp/kvmm-model}
	mkdir -p "$OUT"
fi
HF_ARCHS=${HF_ARCHS-smollm2,qwen2,qwen3,llama3-8b}
BENCH_ARCH=${BENCH_ARCH-llama3-8b}
hfd=$(mktemp -d /tmp/kvmm-hf.XXXXXX)

if [ -n "$HF_ARCHS" ]; then
	say "== model: transformers reference ($HF_ARCHS)"
	PYTHONUNBUFFERED=1 timeout 900 python3 tests/ref/hf_compare.py \
		--out "$hfd" --archs "$HF_ARCHS" --noise >"$OUT/hf-ref.log" 2>&1
	grep -E 'rope check|noise|gaps per step|^torch|Error|error' \
		"$OUT/hf-ref.log" | tee -a "${log:-/dev/null}"
	dirs=$(sed -n 's/^dirs: //p' "$OUT/hf-ref.log")
	if [ -n "$dirs" ]; then
		# a reference check: the split prefill (off by default)
		KVMM_PREFILL_SPLIT=1 KVMM_HF_DIRS=$dirs CK_RUN_CASE=hf \
			"$B/kvmm-check" --gpu \
			forward_gpu >"$OUT/forward-hf.log" 2>&1
		rc=$?
		grep -E 'greedy|step|diverged|decided|rel L2|Checks' "$OUT/forward-hf.log" |
			tee -a "${log:-/dev/null}"
		row "HF greedy 32 steps" "$(tail -1 "$OUT/forward-hf.log") (rc $rc)"
	else
		row "HF greedy 32 steps" "no reference (see hf-ref.log)"
	fi
	# the bench model, when the reference just wrote it, is kept
	for d in "$hfd"/*; do
		[ "${d##*/}" = "$BENCH_ARCH" ] || rm -rf "${d:?}"
	done
fi

if [ -n "$BENCH_ARCH" ]; then
	say "== model: decode speed ($BENCH_ARCH, random bf16)"
	# decode.sh's model, when it made one
	[ "$BENCH_ARCH" = llama3-8b ] && [ -d "${DECODE_MODEL:-/tmp/kvmm-llama3-8b}/llama3-8b" ] &&
		[ ! -d "$hfd/$BENCH_ARCH" ] &&
		ln -s "${DECODE_MODEL:-/tmp/kvmm-llama3-8b}/llama3-8b" "$hfd/$BENCH_ARCH"
	[ -d "$hfd/$BENCH_ARCH" ] ||
		PYTHONUNBUFFERED=1 timeout 900 python3 tests/ref/hf_compare.py \
			--out "$hfd" --archs "$BENCH_ARCH" --no-ref \
			>"$OUT/bench-ref.log" 2>&1
	if [ -d "$hfd/$BENCH_ARCH" ]; then
		KVMM_BENCH_DIR=$hfd/$BENCH_ARCH CK_RUN_CASE=bench \
			"$B/kvmm-check" --gpu forward_gpu >"$OUT/forward-bench.log" 2>&1
		rc=$?
		grep -E "decode|loaded|gemv|graphs|prefill|with KVMM|Checks" "$OUT/forward-bench.log" |
			tee -a "${log:-/dev/null}"
		row "decode $BENCH_ARCH" "$(grep -o 'ratio [0-9.]*' "$OUT/forward-bench.log") (rc $rc)"
	else
		row "decode $BENCH_ARCH" "no model (see bench-ref.log)"
	fi
fi
rm -rf "$hfd"
