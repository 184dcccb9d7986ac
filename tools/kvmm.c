// SPDX-License-Identifier: MIT
/*
 * kvmm.c - the one kvmm tool, perf style: `kvmm <command> [args]`.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#include "kvk_mem.h"
#endif

static const struct kvmm_cmd bench_cmds[] = {
	{ "vmm", cmd_bench_vmm,
	  "time reserve/create/map/set-access/unmap/release per granule" },
	{ "mem", cmd_bench_mem,
	  "memory ceilings: device read and copy, host-NUMA read" },
	{ "attn", cmd_bench_attn,
	  "paged mixed-precision decode attention, GB/s beside the ceiling" },
	{ "alloc", cmd_bench_alloc,
	  "batched append/free latency over 1K..64K lists, GPU and CPU" },
	{ "compact", cmd_bench_compact,
	  "compaction after a random half free: copy GB/s, granules released" },
	{ "prefill", cmd_bench_prefill,
	  "prefill attention TFLOP/s beside the cuBLAS GEMM rate" },
	{ "evict", cmd_bench_evict,
	  "per-head page eviction (KV-Compress) over Llama-3-8B lists" },
	{ "gemv", cmd_bench_gemv,
	  "CPU quantised GEMV/GEMM per GGUF format beside the read ceiling" },
	{ "decode", cmd_bench_decode,
	  "decode step per policy x batch x context beside its floor (GPU)" },
	{ "place", cmd_bench_place,
	  "KV across HBM and host: placement policies and the oracle" },
	{ "swap", cmd_bench_swap,
	  "swap a sequence's pages to a file: write/read GB/s vs raw" },
	{ "serve", cmd_bench_serve,
	  "serving throughput and latency per policy under a KV budget" },
};

static const struct kvmm_cmd top_cmds[] = {
	{ "bench", cmd_bench, "microbenchmarks (kvmm bench help)" },
	{ "eval", cmd_eval,
	  "quality of KV policies: ppl, needle, sweep, calibrate "
	  "(kvmm eval help)" },
	{ "generate", cmd_generate,
	  "generate text from a GGUF file or a Hugging Face directory "
	  "(kvmm generate --help)" },
	{ "serve", cmd_serve,
	  "OpenAI-compatible HTTP server (kvmm serve --help)" },
};

/**
 * kvmm_dispatch() - run the subcommand named by argv[1]
 * @prog: name printed in usage, e.g. "kvmm bench"
 * @cmds: table
 * @n: entries in @cmds
 * @argc: argument count, argv[0] being @prog's own name
 * @argv: arguments
 *
 * Return: the subcommand's exit status; 2 for a missing or unknown one.
 */
int kvmm_dispatch(const char *prog, const struct kvmm_cmd *cmds, int n,
		  int argc, char **argv)
{
	FILE *f = stderr;
	int ret = 2;

	if (argc >= 2) {
		for (int i = 0; i < n; i++)
			if (!strcmp(argv[1], cmds[i].name))
				return cmds[i].run(argc - 1, argv + 1);
		if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
		    !strcmp(argv[1], "-h")) {
			f = stdout;
			ret = 0;
		} else {
			fprintf(stderr, "%s: unknown command '%s'\n", prog,
				argv[1]);
		}
	}
	fprintf(f, "usage: %s <command> [options]\n\ncommands:\n", prog);
	for (int i = 0; i < n; i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	return ret;
}

/**
 * kvmm_parse_u64() - parse a whole unsigned number within [@lo, @hi]
 * @opt: option name, for the error message
 * @s: text
 * @lo: smallest value allowed
 * @hi: largest value allowed
 * @out: the value
 *
 * Return: 0, or -EINVAL after printing what was wrong.
 */
int kvmm_parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi,
		   uint64_t *out)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi) {
		fprintf(stderr,
			"kvmm: %s: '%s' is not a number in [%" PRIu64
			", %" PRIu64 "]\n",
			opt, s, lo, hi);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/**
 * kvmm_parse_backend() - "auto", "host" or "cuda"
 * @s: text
 * @out: the backend
 *
 * Return: 0, or -EINVAL after printing what was wrong.
 */
int kvmm_parse_backend(const char *s, enum kvrt_backend_kind *out)
{
	if (!strcmp(s, "auto"))
		*out = KVRT_BACKEND_AUTO;
	else if (!strcmp(s, "host") || !strcmp(s, "cpu"))
		*out = KVRT_BACKEND_HOST;
	else if (!strcmp(s, "cuda"))
		*out = KVRT_BACKEND_CUDA;
	else {
		fprintf(stderr, "kvmm: --backend: '%s' is not auto, host or "
				"cuda\n", s);
		return -EINVAL;
	}
	return 0;
}

/**
 * kvmm_open_regular() - open a file the user named for reading, refusing
 * anything but a regular file without blocking (a FIFO would block open()
 * until a writer came)
 * @who: prefix of the message, e.g. "kvmm eval ppl: --text"
 * @path: the file
 * @f: the stream
 *
 * Return: 0, or the -errno after printing why (-EINVAL for a FIFO,
 * directory or device).
 */
int kvmm_open_regular(const char *who, const char *path, FILE **f)
{
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		fprintf(stderr, "%s: %s: %s\n", who, path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "%s: %s: %s, not a regular file\n", who, path,
			S_ISDIR(st.st_mode) ? "a directory" :
			S_ISFIFO(st.st_mode) ? "a FIFO" : "a special file");
		close(fd);
		return -EINVAL;
	}
	/* back to blocking reads (a regular file ignores it anyway) */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*f = fdopen(fd, "rb");
	if (!*f) {
		ret = -errno;
		close(fd);
		fprintf(stderr, "%s: %s: %s\n", who, path, strerror(-ret));
		return ret;
	}
	return 0;
}

/**
 * kvmm_now_us() - monotonic clock
 *
 * Return: microseconds.
 */
double kvmm_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/**
 * kvmm_cmp_double() - qsort comparator for doubles, ascending
 * @a: first
 * @b: second
 *
 * Return: <0, 0, >0.
 */
int kvmm_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/**
 * kvmm_median() - median of @n samples
 * @v: samples; sorted in place
 * @n: how many, at least 1
 *
 * Return: the median (the mean of the middle two for an even @n).
 */
double kvmm_median(double *v, int n)
{
	qsort(v, n, sizeof(*v), kvmm_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/**
 * kvmm_rand() - xorshift64* step, for benchmark inputs that replay
 * @s: state, not zero
 *
 * Return: the next 64 random bits.
 */
uint64_t kvmm_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/**
 * kvmm_ctx_open() - open a runtime context, or say why not
 * @who: prefix of the message, e.g. "kvmm bench mem"
 * @opts: backend and device
 * @ctx: the context
 *
 * When no context can be had, prints one line with the errno and, for a
 * CUDA or automatic backend, the driver's reason.
 *
 * Return: 0 or the -errno of kvrt_ctx_create().
 */
int kvmm_ctx_open(const char *who, const struct kvrt_ctx_opts *opts,
		  struct kvrt_ctx **ctx)
{
	char why[256] = "";
	int ret = kvrt_ctx_create(opts, ctx);

	if (!ret)
		return 0;
	if (opts->backend != KVRT_BACKEND_HOST)
		kvrt_cuda_probe(why, sizeof(why));
	fprintf(stderr, "%s: no context: %s%s%s\n", who, strerror(-ret),
		*why ? ": " : "", why);
	return ret;
}

/**
 * cmd_bench() - `kvmm bench <what>`
 * @argc: argument count
 * @argv: arguments, argv[0] = "bench"
 *
 * Return: exit status.
 */
int cmd_bench(int argc, char **argv)
{
	return kvmm_dispatch("kvmm bench", bench_cmds, ARRAY_SIZE(bench_cmds),
			     argc, argv);
}

int main(int argc, char **argv)
{
	return kvmm_dispatch("kvmm", top_cmds, ARRAY_SIZE(top_cmds), argc,
			     argv);
}

#ifdef KVMM_HAVE_CUDA
#define CEIL_REPS 15

/**
 * kvmm_read_ceiling() - the device's read ceiling the benchmarks print
 * their GB/s beside: kvk_read_sum_cuda() over 4 GiB, median of 15 runs
 * after 3 warm-ups
 * @gbs: out, GB/s (1e9 bytes/s)
 *
 * Return: 0, or -EIO with the CUDA error on stderr.
 */
int kvmm_read_ceiling(double *gbs)
{
	size_t len = 4ULL << 30;
	double t[CEIL_REPS];
	cudaEvent_t a = NULL, b = NULL;
	uint64_t *sum = NULL;
	void *p = NULL;
	cudaError_t e;
	float ms;

	e = cudaMalloc(&p, len);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&sum, 8);
	if (e == cudaSuccess)
		e = cudaMemset(p, 0x3c, len);
	if (e == cudaSuccess)
		e = cudaEventCreate(&a);
	if (e == cudaSuccess)
		e = cudaEventCreate(&b);
	for (int r = -3; e == cudaSuccess && r < CEIL_REPS; r++) {
		cudaEventRecord(a, 0);
		kvk_read_sum_cuda(p, len, sum, NULL);
		cudaEventRecord(b, 0);
		e = cudaEventSynchronize(b);
		if (e == cudaSuccess)
			e = cudaEventElapsedTime(&ms, a, b);
		if (r >= 0)
			t[r] = ms;
	}
	if (e == cudaSuccess)
		*gbs = len / (kvmm_median(t, CEIL_REPS) * 1e-3) / 1e9;
	else
		fprintf(stderr, "kvmm: read ceiling: %s\n",
			cudaGetErrorString(e));
	if (a)
		cudaEventDestroy(a);
	if (b)
		cudaEventDestroy(b);
	cudaFree(p);
	cudaFree(sum);
	return e == cudaSuccess ? 0 : -EIO;
}
#endif
