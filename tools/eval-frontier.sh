#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# eval-frontier.sh - the policies page's measured results, the way issue 18
# asks: diffkv's thresholds calibrated on the first half of WikiText-2's
# validation text, every policy evaluated on 8 chunks of the second half
# (unseen by the calibration), each change with its 95% interval, the
# techniques against low-bit KV beside it (hadamard=1, sinks=, knorm=1);
# pass-key retrieval at 2K, 4K and 8K tokens, 5 trials a cell. Hours on 2
# CPU cores, minutes with DEVICE=cuda: not part of `make check` (`make
# eval-frontier` runs it).
#
#   tools/eval-frontier.sh [calibrate|ppl|needle|all]    (default all)
#
# Environment: KVMM (build-cpu/kvmm or build/kvmm), MODEL, TEXT, OUTDIR
# (Documentation/policies), THREADS (all), DEVICE (cpu), CONTEXT (2048),
# PREFIX (1792), CHUNKS (8), CAL_CHUNKS (2), TRIALS (5). The page's
# tables were made with these defaults, the sweep in three runs.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
KVMM=${KVMM:-$( [ -x build/kvmm ] && echo build/kvmm || echo build-cpu/kvmm )}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
TEXT=${TEXT:-../shared/data/wikitext-2/valid.txt}
OUTDIR=${OUTDIR:-Documentation/policies}
DEVICE=${DEVICE:-cpu}
CONTEXT=${CONTEXT:-2048}
PREFIX=${PREFIX:-1792}
CHUNKS=${CHUNKS:-8}
CAL_CHUNKS=${CAL_CHUNKS:-2}
TRIALS=${TRIALS:-5}
SPLIT=50
thr=()
[ -n "${THREADS:-}" ] && thr=(--threads "$THREADS")
what=${1:-all}
prof=$OUTDIR/diffkv-smollm2.json

step() { echo "== $*" >&2; }

if [ "$what" = calibrate ] || [ "$what" = all ]; then
	step "calibrate on the calibration part (--split $SPLIT)"
	"$KVMM" eval calibrate --model "$MODEL" --text "$TEXT" --split $SPLIT \
		--context "$CONTEXT" --prefix "$PREFIX" --chunks "$CAL_CHUNKS" \
		--criterion mean --rounds 1 --policy diffkv:hadamard=1 \
		--target 2 --out "$prof" --device "$DEVICE" "${thr[@]}" |
		tee "$OUTDIR/calibrate-smollm2.txt"
fi
if [ "$what" = ppl ] || [ "$what" = all ]; then
	step "sweep on the evaluation part (--split $SPLIT)"
	"$KVMM" eval sweep --model "$MODEL" --text "$TEXT" --split $SPLIT \
		--context "$CONTEXT" --prefix "$PREFIX" --chunks "$CHUNKS" \
		--device "$DEVICE" "${thr[@]}" \
		--out "$OUTDIR/unseen-smollm2-2k.jsonl" \
		--policy "diffkv:profile=$prof" \
		--policy diffkv:prune=0,quant=1,hadamard=1 \
		--policy uniform:tier=k4v4 \
		--policy uniform:tier=k4v4,hadamard=1 \
		--policy uniform:tier=k4v4,knorm=1 \
		--policy diffkv:prune=0,quant=1,hadamard=1,sinks=4 \
		--policy diffkv:prune=0,quant=1,hadamard=1,knorm=1 \
		--policy diffkv:prune=0,quant=1,knorm=1 \
		--policy diffkv:prune=0,quant=4,hadamard=1,sinks=4 \
		--policy kvcompress:rate=3 \
		--policy kvcompress:rate=3.4 |
		tee "$OUTDIR/unseen-smollm2-2k.txt"
fi
if [ "$what" = needle ] || [ "$what" = all ]; then
	step "pass-key retrieval at 2K, 4K and 8K"
	"$KVMM" eval needle --model "$MODEL" --lengths 2048,4096,8000 \
		--depths 0,50,100 --trials "$TRIALS" --device "$DEVICE" \
		"${thr[@]}" --policy diffkv:prune=0,quant=1,hadamard=1 \
		--policy "diffkv:profile=$prof" |
		tee "$OUTDIR/needle-smollm2-8k.txt"
fi
