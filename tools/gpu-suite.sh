#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# gpu-suite.sh - the one GPU run: every GPU suite and every GPU benchmark,
# full logs under $OUT, a short table last.
#
# Build here (where liburing and Check are installed; both are linked
# statically) and carry the build folder to the GPU machine, with the
# WikiText-2 text the policy check reads when ../shared is not there:
#   make -j2 && mkdir -p build-carry &&
#   cp build/kvmm build/kvmm-check ../shared/data/wikitext-2/valid.txt build-carry/
# (and, for a GPU machine without GnuTLS, its libraries into build-carry/lib:
#   mkdir -p build-carry/lib && ldd build/kvmm | awk '/gnutls|p11|idn2|
#   unistring|tasn1|nettle|hogweed|gmp|ffi/ {print $3}' |
#   xargs -I{} cp -L {} build-carry/lib/)
#   <device run, carry build-carry/>: B=build-carry bash tools/gpu-suite.sh
# Where build/ is absent the script builds it (needs liburing and Check).
# A device call lasts 10 minutes at most: GPU_SKIP="serve" leaves the
# serving experiment for its own call (SERVE_FULL=1 SERVE_PEER=1
# bash tools/gpu-suite.d/serve.sh); each part's seconds are logged.
set -u
# Logs are written to a work folder and handed back as two files under
# $RES: gpu-suite.log and gpu-logs.tgz (the device returns few files).
RES=${OUT:-/tmp/kvmm-gpu}
OUT=$(mktemp -d /tmp/kvmm-gpu-run.XXXXXX)
B=${B:-build}
mkdir -p "$RES"
# the log goes straight to $RES, so a run cut short still hands it back
log=$RES/gpu-suite.log
: >"$log"
say() { echo "$@" | tee -a "$log"; }

# the server links GnuTLS (through libmicrohttpd) dynamically: where the
# GPU machine lacks it, copies carried in $B/lib are used
if [ -x "$B/kvmm" ] && ldd "$B/kvmm" 2>/dev/null | grep -q "not found" &&
	[ -d "$B/lib" ]; then
	export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if [ ! -x "$B/kvmm-check" ] || [ ! -x "$B/kvmm" ]; then
	say "== building ($B absent)"
	make -j"$(nproc)" CUDA=1 >>"$log" 2>&1 || { say "build failed"; tail -20 "$log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
	--format=csv,noheader >"$OUT/gpu.txt" 2>&1
say "== device: $(cat "$OUT/gpu.txt")"

rows=()
row() { rows+=("$(printf '%-28s %s' "$1" "$2")"); }

# 0. the policy check runs beside everything else: its CPU half (the host
# caches' eval on 8 threads) takes minutes; its log and rows are merged last
if [ -e tools/gpu-suite.d/policy.sh ]; then
	(
		log=$OUT/policy.say
		say() { echo "$@" >>"$log"; }
		row() { printf '%-28s %s\n' "$1" "$2" >>"$OUT/policy.rows"; }
		POLICY_THREADS=${POLICY_THREADS:-8}
		# shellcheck source=/dev/null
		. tools/gpu-suite.d/policy.sh
	) &
	policy_pid=$!
fi

# 1. GPU test suites (the CPU suites too: the same binaries, this machine)
say "== kvmm-check --gpu"
"$B/kvmm-check" --gpu --tap "$OUT/check-gpu.tap" >"$OUT/check-gpu.log" 2>&1
rc=$?
cat "$OUT/check-gpu.log" >>"$log"
row "GPU suites" "$(tail -1 "$OUT/check-gpu.log") (rc $rc)"
say "== kvmm-check --cpu"
"$B/kvmm-check" --cpu >"$OUT/check-cpu.log" 2>&1
rc=$?
cat "$OUT/check-cpu.log" >>"$log"
row "CPU suites on GPU host" "$(tail -1 "$OUT/check-cpu.log") (rc $rc)"

# 2. benchmarks
bench() {	# bench [-t TAG] NAME ARGS...: text and JSON, both logged
	local tag=""
	[ "$1" = -t ] && { tag="-$2"; shift 2; }
	local name=$1
	shift
	say "== kvmm bench $name $*"
	"$B/kvmm" bench "$name" "$@" 2>&1 | tee -a "$log" >"$OUT/bench-$name$tag.txt"
	"$B/kvmm" bench "$name" "$@" --json >"$OUT/bench-$name$tag.json" 2>>"$log"
}
bench vmm --backend cuda --granules 256 --reps 7
if [ -s "$OUT/bench-vmm.json" ]; then
	row "vmm grow 1-by-1 kvrt/raw" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); u=d["us_per_granule"]; print("%.1f us/granule, ratio %.2f" % (u["kvrt_grow_1"], d["ratio_kvrt_to_raw"]["grow_1"]))' "$OUT/bench-vmm.json")"
	row "vmm grow batched kvrt/raw" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); u=d["us_per_granule"]; print("%.1f us/granule, ratio %.2f" % (u["kvrt_grow_n"], d["ratio_kvrt_to_raw"]["grow_n"]))' "$OUT/bench-vmm.json")"
	row "vmm shrink kvrt/raw" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); u=d["us_per_granule"]; print("%.1f us/granule, ratio %.2f" % (u["kvrt_shrink_1"], d["ratio_kvrt_to_raw"]["shrink_1"]))' "$OUT/bench-vmm.json")"
fi
bench mem --backend cuda --device-mib 4096 --host-mib 512 --reps 20
if [ -s "$OUT/bench-mem.json" ]; then
	row "device read / copy / host" "$(python3 -c 'import json,sys; g=json.load(open(sys.argv[1]))["gbs"]; print("%.0f / %.0f / %.1f GB/s" % (g["device_read"], g["device_copy"], g.get("host_numa_read", 0)))' "$OUT/bench-mem.json")"
fi
bench attn
bench -t scores attn --scores
if [ -s "$OUT/bench-attn.txt" ]; then
	while read -r tiers batch ctx _us _mb gbs pct; do
		row "attn $tiers b$batch ctx$ctx" "$gbs GB/s ($pct of read)"
	done < <(grep -E '^(fp16|k8v4|k8v8|k4v4)' "$OUT/bench-attn.txt" | awk '$2==64 && $3==8192')
fi
for extra in tools/gpu-suite.d/*.sh; do
	[ -e "$extra" ] || continue
	[ "$extra" = tools/gpu-suite.d/policy.sh ] && continue
	# GPU_SKIP="serve model": parts left for another call (a device call
	# lasts 10 minutes at most)
	case " ${GPU_SKIP:-} " in
	*" $(basename "$extra" .sh) "*) say "== skipped: $extra"; continue ;;
	esac
	t_part=$SECONDS
	# shellcheck source=/dev/null
	. "$extra"
	say "== $extra: $((SECONDS - t_part)) s"
done

if [ -n "${policy_pid:-}" ]; then
	wait "$policy_pid"
	cat "$OUT/policy.say" >>"$log" 2>/dev/null
	[ -e "$OUT/policy.rows" ] &&
		while IFS= read -r line; do rows+=("$line"); done <"$OUT/policy.rows"
fi

say ""
say "== summary ($(cat "$OUT/gpu.txt" | cut -d, -f1))"
for r in "${rows[@]}"; do say "$r"; done
tar czf "$RES/gpu-logs.tgz" -C "$OUT" .
