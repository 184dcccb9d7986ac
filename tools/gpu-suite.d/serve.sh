# SPDX-License-Identifier: MIT
#
# gpu-suite.d/serve.sh - sourced by tools/gpu-suite.sh (uses its say and
# row helpers, $B and $OUT): `kvmm bench serve` on the CUDA executor with a
# random Llama-3-8B-shaped bf16 model (made once into $DECODE_MODEL, as
# decode.sh does), one policy per run, JSON lines into $OUT/serve-*.jsonl.
# By default a short run (64 requests, 4 GiB of KV budget); SERVE_FULL=1
# runs the issue's experiment (256 requests, prompts 512-1K, outputs 1K-3K,
# 16 GiB). SERVE_ARGS replaces the workload, SERVE_POLICIES the policies,
# SERVE_RATES adds an online run per policy at those rates; SERVE_TIMEOUT
# bounds each policy's run (590 s); SERVE_ORDER=longest queues new
# requests longest output first (bench serve --order). The requests
# are one trace (tools/hf_serve_peer.py --make-trace) that every policy
# and, with SERVE_PEER=1, Hugging Face transformers run (the peer;
# SERVE_PEER_LIMIT=S starts no static batch after S seconds, a sample of
# the trace where the whole would not fit a device call).
# Standalone: B=build OUT=/tmp/x bash tools/gpu-suite.d/serve.sh

if ! declare -F say >/dev/null; then
	say() { echo "$@"; }
	row() { printf '%-28s %s\n' "$1" "$2"; }
	B=${B:-build}
	OUT=${OUT:-/tmp/kvmm-serve}
	mkdir -p "$OUT"
fi
DECODE_MODEL=${DECODE_MODEL:-/tmp/kvmm-llama3-8b}
sm=$DECODE_MODEL/llama3-8b
if [ "${SERVE_FULL:-0}" = 1 ]; then
	SERVE_WORK=${SERVE_WORK:---requests 256 --prompt-len 512-1024 --output-len 1024-3072}
	SERVE_BUDGET=${SERVE_BUDGET:-16GiB}
	SERVE_ARGS=${SERVE_ARGS:---kv-budget $SERVE_BUDGET --max-seqs 512}
else
	SERVE_WORK=${SERVE_WORK:---requests 64 --prompt-len 512-1024 --output-len 128-256}
	SERVE_BUDGET=${SERVE_BUDGET:-4GiB}
	SERVE_ARGS=${SERVE_ARGS:---kv-budget $SERVE_BUDGET --max-seqs 256}
fi
serve_trace=$OUT/serve-trace.jsonl
# shellcheck disable=SC2086
python3 tools/hf_serve_peer.py --make-trace "$serve_trace" $SERVE_WORK ||
	say "serve: no trace"
SERVE_POLICIES=${SERVE_POLICIES:-full diffkv kvcompress:rate=4}

if [ ! -d "$sm" ]; then
	say "== serve: making $sm (random bf16 Llama-3-8B shape)"
	PYTHONUNBUFFERED=1 timeout 900 python3 tests/ref/random_llama.py \
		--out "$sm" --shape llama3-8b \
		>"$OUT/serve-model.log" 2>&1 ||
		{ tail -5 "$OUT/serve-model.log"; }
fi
if [ -d "$sm" ]; then
	for pol in $SERVE_POLICIES; do
		f=$OUT/serve-${pol//[:=,]/_}${SERVE_ORDER:+-$SERVE_ORDER}.jsonl
		say "== kvmm bench serve --policy $pol $SERVE_ARGS${SERVE_ORDER:+ --order $SERVE_ORDER}"
		# shellcheck disable=SC2086
		timeout "${SERVE_TIMEOUT:-590}" "$B/kvmm" bench serve --model "$sm" --device cuda \
			--policy "$pol" --trace "$serve_trace" $SERVE_ARGS \
			${SERVE_ORDER:+--order "$SERVE_ORDER"} \
			--json >"$f" 2>"$f.err"
		rc=$?
		row "serve $pol" "$(grep -o '"gen_tok_s": [0-9.]*\|"peak_concurrency": [0-9]*\|"compression": [0-9.]*\|"completed": [0-9]*' "$f" | tr '\n' ' ')(rc $rc)"
		if [ -n "${SERVE_RATES:-}" ]; then
			# shellcheck disable=SC2086
			timeout 590 "$B/kvmm" bench serve --model "$sm" \
				--device cuda --policy "$pol" \
				--trace "$serve_trace" $SERVE_ARGS \
				--rate "$SERVE_RATES" --json >>"$f" 2>>"$f.err"
		fi
	done
	if [ "${SERVE_PEER:-0}" = 1 ]; then
		say "== hf_serve_peer.py (transformers, static batches within $SERVE_BUDGET)"
		timeout 590 python3 tools/hf_serve_peer.py --model "$sm" \
			--trace "$serve_trace" --kv-budget "$SERVE_BUDGET" \
			--time-limit "${SERVE_PEER_LIMIT:-0}" \
			>"$OUT/serve-hf.jsonl" 2>"$OUT/serve-hf.err"
		rc=$?
		row "serve hf-transformers" "$(grep -o '"gen_tok_s": [0-9.]*\|"peak_concurrency": [0-9]*' "$OUT/serve-hf.jsonl" | tr '\n' ' ')(rc $rc)"
	fi
else
	row "serve" "no model (see serve-model.log)"
fi

# kvmm serve on the GPU with the default model: per-request policies mixed
# in the running steps (several device caches, one CUDA executor), each
# text against `kvmm generate --device cuda --policy`
# (the default model when it is there; else a random SmolLM2-shaped one with
# a ChatML template, made in seconds: the GGUF is too big to carry to a
# device machine)
small=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ "${SERVE_HTTP:-1}" = 0 ]; then
	small=	# SERVE_HTTP=0: the throughput runs only
	row "serve http gpu" "not run (SERVE_HTTP=0)"
elif [ ! -f "$small" ]; then
	small=$(mktemp -d /tmp/kvmm-smollm2.XXXXXX)
	python3 tests/ref/random_llama.py --out "$small" --chat >/dev/null 2>&1 ||
		{ rm -rf "$small"; small=; }
fi
if [ -n "$small" ]; then
	say "== serve_test.py --device cuda (kvmm serve, policies per request)"
	timeout 300 python3 tests/serve_test.py --kvmm "$B/kvmm" --model "$small" \
		--device cuda --quick >"$OUT/serve-http-gpu.log" 2>&1
	rc=$?
	row "serve http gpu" "$(tail -1 "$OUT/serve-http-gpu.log") (rc $rc)"
elif [ "${SERVE_HTTP:-1}" != 0 ]; then
	row "serve http gpu" "no model (random_llama.py failed)"
fi
