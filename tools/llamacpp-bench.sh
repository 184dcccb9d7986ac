#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# llamacpp-bench.sh - kvmm's CPU executor paired with llama.cpp on the same
# GGUF files and thread counts (issue 17). Not run by `make check`.
#
#   tools/llamacpp-bench.sh build
#       llama.cpp from the llama-cpp-python source distribution on PyPI
#       (pip download --no-binary :all: --no-deps llama-cpp-python; its
#       vendor/llama.cpp), CPU only, llama-bench and llama-quantize, into
#       $LLAMACPP_DIR (build-llamacpp/). The llama.cpp commit is the one
#       the package's CHANGELOG.md names last; it is written to
#       $LLAMACPP_DIR/commit.
#   tools/llamacpp-bench.sh quantize SRC TYPE OUT
#       requantise a GGUF file with llama-quantize --allow-requantize
#       (e.g. Q8_0, Q4_K_M)
#   tools/llamacpp-bench.sh run [MODEL...]
#       paired runs: for each model, thread count ($THREADS, "1 2") and
#       repetition ($REPS, 5), llama-bench then kvmm in turn (interleaved,
#       so both see the same machine load), decode tok/s over $NGEN tokens
#       and prefill tok/s over $NPROMPT tokens, and each one's peak RSS
#       (/usr/bin/time -v) for a run of $NPROMPT + $NGEN tokens. Prints the
#       medians, the spread (min-max) and the ratios; raw lines in
#       $OUT (build-llamacpp/pairs.tsv).
#
# kvmm's side runs `kvmm generate --ignore-eos` on a prompt of about
# $NPROMPT tokens (the start of tests/data/declaration.txt) and reads its
# prefill and decode figures; llama-bench runs -p with as many tokens as
# kvmm counted and -n $NGEN separately (-r 1 per pair), both with the
# model mmapped.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMACPP_DIR=${LLAMACPP_DIR:-build-llamacpp}
KVMM=${KVMM:-build-cpu/kvmm}
THREADS=${THREADS:-"1 2"}
REPS=${REPS:-5}
NPROMPT=${NPROMPT:-128}
NGEN=${NGEN:-64}
OUT=${OUT:-$LLAMACPP_DIR/pairs.tsv}

die() { echo "llamacpp-bench: $*" >&2; exit 1; }

build() {
	local src
	mkdir -p "$LLAMACPP_DIR/sdist"
	if ! ls "$LLAMACPP_DIR"/sdist/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
		python3 -m pip download --no-binary :all: --no-deps \
			llama-cpp-python -d "$LLAMACPP_DIR/sdist"
	fi
	src=$(ls -d "$LLAMACPP_DIR"/src/llama_cpp_python-* 2>/dev/null | tail -1 || true)
	if [ -z "$src" ]; then
		mkdir -p "$LLAMACPP_DIR/src"
		tar -xzf "$(ls "$LLAMACPP_DIR"/sdist/llama_cpp_python-*.tar.gz | tail -1)" \
			-C "$LLAMACPP_DIR/src"
		src=$(ls -d "$LLAMACPP_DIR"/src/llama_cpp_python-* | tail -1)
	fi
	{
		echo "llama-cpp-python $(basename "$src" | sed 's/llama_cpp_python-//')"
		grep -m1 -o 'ggml-org/llama.cpp@[0-9a-f]*' "$src/CHANGELOG.md" ||
			echo "llama.cpp commit: not in CHANGELOG.md"
	} > "$LLAMACPP_DIR/commit"
	cmake -S "$src/vendor/llama.cpp" -B "$LLAMACPP_DIR/build" -G Ninja \
		-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
		-DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
		-DBUILD_SHARED_LIBS=OFF >/dev/null
	cmake --build "$LLAMACPP_DIR/build" -j"$(nproc)" \
		--target llama-bench llama-quantize
	cat "$LLAMACPP_DIR/commit"
}

lbin() { echo "$LLAMACPP_DIR/build/bin/$1"; }

# kvmm's prompt: the first $NPROMPT tokens of the declaration, as text
prompt_file() {
	local f=$LLAMACPP_DIR/prompt-$NPROMPT.txt
	if [ ! -s "$f" ]; then
		python3 - "$NPROMPT" > "$f" <<'EOF'
import sys
n = int(sys.argv[1])
words = open("tests/data/declaration.txt").read().split()
# about 1.3 tokens a word: close to n tokens; llama-bench is given the
# count kvmm reports
print(" ".join(words[: int(n / 1.3)]))
EOF
	fi
	echo "$f"
}

peak_rss_kb() {	# peak_rss_kb CMD...: the command's maximum RSS in KiB
	/usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident/ { gsub(/ /, "", $2); print $2 }'
}

one_pair() {	# one_pair MODEL THREADS REP
	local m=$1 t=$2 r=$3 lp ld kp kd lr kr pf np
	pf=$(prompt_file)
	# the prompt's length in kvmm's tokens: llama-bench prefills as many
	np=$("$KVMM" generate --model "$m" --prompt "$(cat "$pf")" \
		--max-tokens 1 --threads 1 --json 2>/dev/null |
		python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if l.strip()][-1]["prompt_tokens"])')
	lp=$("$(lbin llama-bench)" -m "$m" -t "$t" -p "$np" -n 0 -r 1 -o csv 2>/dev/null |
		python3 -c 'import csv,sys; r=list(csv.DictReader(sys.stdin)); print(r[-1]["avg_ts"])')
	ld=$("$(lbin llama-bench)" -m "$m" -t "$t" -p 0 -n "$NGEN" -r 1 -o csv 2>/dev/null |
		python3 -c 'import csv,sys; r=list(csv.DictReader(sys.stdin)); print(r[-1]["avg_ts"])')
	read -r kp kd < <("$KVMM" generate --model "$m" --prompt "$(cat "$pf")" \
		--max-tokens "$NGEN" --ignore-eos \
		--threads "$t" --json 2>/dev/null |
		python3 -c '
import json, sys
s = [json.loads(l) for l in sys.stdin if l.strip()][-1]
print(s["prefill_tok_s"], s["decode_tok_s"])')
	lr=$(peak_rss_kb "$(lbin llama-bench)" -m "$m" -t "$t" -p "$np" -n "$NGEN" -r 1)
	kr=$(peak_rss_kb "$KVMM" generate --model "$m" --prompt "$(cat "$pf")" \
		--max-tokens "$NGEN" --ignore-eos --threads "$t")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(basename "$m")" "$t" "$r" \
		"$lp" "$kp" "$ld" "$kd" "$lr" "$kr" | tee -a "$OUT"
}

summary() {
	python3 - "$OUT" <<'EOF'
import statistics as st, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
g = collections.defaultdict(list)
for r in rows:
    g[(r[0], r[1])].append([float(x) for x in r[3:]])
def f(v):
    return f"{st.median(v):8.1f} [{min(v):.1f}-{max(v):.1f}]"
print(f"{'model':36} thr  {'llama.cpp':>22} {'kvmm':>22} ratio(median of pairs)")
for (m, t), v in sorted(g.items()):
    for i, what in ((0, "prefill tok/s"), (2, "decode tok/s"), (4, "peak RSS MiB")):
        a = [x[i] / (1024 if i == 4 else 1) for x in v]
        b = [x[i + 1] / (1024 if i == 4 else 1) for x in v]
        ratio = st.median([bb / aa for aa, bb in zip(a, b)])
        print(f"{m[:36]:36} {t:>3}  {what:14} {f(a)} {f(b)}  {ratio:.2f}x (n={len(v)})")
EOF
}

run() {
	local models=("$@")
	[ -x "$(lbin llama-bench)" ] || die "no llama-bench: run '$0 build' first"
	[ -x "$KVMM" ] || die "no $KVMM: make CUDA=0 first"
	[ ${#models[@]} -gt 0 ] || models=(models/SmolLM2-135M-Instruct.Q4_1.gguf)
	: > "$OUT"
	echo "# $(tr '\n' ' ' < "$LLAMACPP_DIR/commit")| $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# model threads rep llama_prefill kvmm_prefill llama_decode kvmm_decode llama_rss_kb kvmm_rss_kb"
	for r in $(seq 1 "$REPS"); do
		for m in "${models[@]}"; do
			for t in $THREADS; do
				one_pair "$m" "$t" "$r"
			done
		done
	done
	summary
}

case "${1:-}" in
build) build ;;
quantize)
	[ $# = 4 ] || die "usage: $0 quantize SRC TYPE OUT"
	"$(lbin llama-quantize)" --allow-requantize "$2" "$4" "$3" ;;
run) shift; run "$@" ;;
summary) summary ;;
*) sed -n '4,30p' "$0"; exit 2 ;;
esac
