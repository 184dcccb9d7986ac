// SPDX-License-Identifier: MIT
/*
 * bench_gemv.c - `kvmm bench gemv`: the CPU executor's quantised matrix
 * products (kernels/qdot.h) per GGUF format, in GB/s of weight bytes read,
 * beside the memory read bandwidth measured in the same run with the same
 * threads. Decode is a GEMV (--tokens 1): memory-bound, so its ceiling is
 * the read bandwidth; --tokens N > 1 times the prefill GEMM and prints its
 * GOP/s as well. Beside the wall-clock figures it prints the same on CPU
 * time (per thread): on a machine shared with other work those show what
 * the kernels do when they run.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kvk.h"
#include "kvmm.h"
#include "pool.h"
#include "qdot.h"

#define GEMV_MAX_REPS 101
#define GEMV_QROWS 16 /* rows per chunk at T > 1, as forward_cpu.c */

static const uint32_t gemv_fmts[] = {
	KVK_QT_Q4_0, KVK_QT_Q4_1, KVK_QT_Q5_0, KVK_QT_Q5_1,
	KVK_QT_Q8_0, KVK_QT_Q4_K, KVK_QT_Q5_K, KVK_QT_Q6_K,
};

/* one timed job: a matrix product or a read of a buffer, split by rows */
struct gemv_job {
	int isa;
	uint32_t type;
	const uint8_t *w; /* [n][ldw] weights, or the buffer to read */
	size_t ldw;
	int n, t;
	size_t k;
	const uint8_t *qa; /* [t][lda] */
	size_t lda;
	float *y;	   /* [t][n] */
	uint64_t sum[64];  /* read: per thread, kept so it is not elided */
};

static void gemv_task(void *arg, int tid, int nth)
{
	struct gemv_job *j = arg;
	long lo, hi;

	llm_pool_range(j->n, tid, nth, 4, &lo, &hi);
	for (long r = lo; r < hi; r += j->t > 1 ? GEMV_QROWS : hi - lo) {
		long n = j->t > 1 && hi - r > GEMV_QROWS ? GEMV_QROWS : hi - r;

		/* as the executor: its prefill steps' path for t > 1 */
		(j->t > 1 ? kvk_qdot_gemm_prefill : kvk_qdot_gemm)(
			j->isa, j->type, j->w + r * j->ldw, j->ldw, n, j->qa,
			j->lda, j->t, j->y + r, j->n, j->k);
	}
}

#if defined(__x86_64__)
static __attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t *p,
							   size_t len)
{
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	uint64_t s[4];

	for (size_t i = 0; i + 128 <= len; i += 128) {
		a0 = _mm256_add_epi64(a0, _mm256_load_si256((const void *)(p + i)));
		a1 = _mm256_add_epi64(a1, _mm256_load_si256((const void *)(p + i + 32)));
		a2 = _mm256_add_epi64(a2, _mm256_load_si256((const void *)(p + i + 64)));
		a3 = _mm256_add_epi64(a3, _mm256_load_si256((const void *)(p + i + 96)));
	}
	a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1),
			      _mm256_add_epi64(a2, a3));
	_mm256_storeu_si256((void *)s, a0);
	return s[0] + s[1] + s[2] + s[3];
}
#endif

/* the read ceiling: every thread sums its share of the buffer */
static void read_task(void *arg, int tid, int nth)
{
	struct gemv_job *j = arg;
	long lo, hi;
	uint64_t s = 0;

	/* rows of 4 KiB: 128-byte aligned shares */
	llm_pool_range(j->n, tid, nth, 1, &lo, &hi);
#if defined(__x86_64__)
	if (kvk_qdot_isa_ok(KVK_ISA_AVX2)) {
		j->sum[tid % 64] = read_avx2(j->w + lo * j->ldw,
					     (hi - lo) * j->ldw);
		return;
	}
#endif
	for (const uint64_t *p = (const void *)(j->w + lo * j->ldw);
	     p < (const uint64_t *)(j->w + hi * j->ldw); p++)
		s += *p;
	j->sum[tid % 64] = s;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * median seconds of @reps runs of @fn on the pool, after one warm-up; the
 * median CPU seconds of all threads per thread in *@cpu: on a shared
 * machine wall time counts the time other processes ran, CPU time not
 */
static double gemv_time(struct llm_pool *pool, llm_pool_fn fn,
			struct gemv_job *j, int reps, double *cpu)
{
	double t[GEMV_MAX_REPS], c[GEMV_MAX_REPS];

	for (int r = -1; r < reps; r++) {
		double t0 = kvmm_now_us(), c0 = cpu_s();

		llm_pool_run(pool, fn, j);
		if (r >= 0) {
			t[r] = (kvmm_now_us() - t0) * 1e-6;
			c[r] = (cpu_s() - c0) / llm_pool_threads(pool);
		}
	}
	*cpu = kvmm_median(c, reps);
	return kvmm_median(t, reps);
}

static float gemv_frand(uint64_t *s)
{
	return (float)((kvmm_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* random blocks with finite fp16 scales (as tests/check_qdot.c makes) */
static void gemv_fill(uint32_t type, uint8_t *p, size_t bytes, uint64_t *s)
{
	uint32_t blck, bsz;
	int off[2] = { 0, 2 }, nf = 1;

	kvk_qtype_layout(type, &blck, &bsz);
	if (type == KVK_QT_Q4_1 || type == KVK_QT_Q5_1 ||
	    type == KVK_QT_Q4_K || type == KVK_QT_Q5_K)
		nf = 2;
	if (type == KVK_QT_Q6_K)
		off[0] = 208;
	for (size_t i = 0; i < bytes; i += 8) {
		uint64_t v = kvmm_rand(s);

		memcpy(p + i, &v, bytes - i < 8 ? bytes - i : 8);
	}
	for (size_t b = 0; b + bsz <= bytes; b += bsz)
		for (int f = 0; f < nf; f++) {
			uint16_t h = kvk_f32_to_f16(0.01f * gemv_frand(s));

			memcpy(p + b + off[f], &h, 2);
		}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvmm bench gemv [options]\n"
		"  --rows N      weight rows (16384)\n"
		"  --k K         elements per row, a multiple of 256 (4096)\n"
		"  --tokens T    activation rows: 1 is decode's GEMV, more a\n"
		"                prefill GEMM (1)\n"
		"  --threads N   threads (all available)\n"
		"  --formats L   comma-separated: q4_0,q4_1,q5_0,q5_1,q8_0,\n"
		"                q4_k,q5_k,q6_k (all)\n"
		"  --isa I       c, avx2 or avx512 (the best the CPU runs)\n"
		"  --reps R      timed runs per figure, median (9)\n"
		"  --ceiling-mib N  bytes the read ceiling reads (256: past\n"
		"                any cache)\n"
		"  --json        one JSON object a line\n"
		"  --device D    cpu (default) or cuda: the CUDA executor's\n"
		"                decode GEMVs on Llama-3-8B's matrices, bf16, Q8\n"
		"                and Q4 at 1-8 rows per warp, beside the\n"
		"                device's read ceiling (--reps and --json apply)\n");
}

static int parse_fmts(const char *s, bool *on)
{
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(gemv_fmts); i++)
			if (!strcasecmp(tok, kvk_qtype_name(gemv_fmts[i])))
				break;
		if (i == ARRAY_SIZE(gemv_fmts)) {
			fprintf(stderr, "kvmm bench gemv: --formats: unknown "
				"format '%s'\n", tok);
			return -EINVAL;
		}
		on[i] = true;
	}
	return 0;
}

/**
 * cmd_bench_gemv() - `kvmm bench gemv`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status.
 */
int cmd_bench_gemv(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "rows", required_argument, NULL, 'n' },
		{ "k", required_argument, NULL, 'k' },
		{ "tokens", required_argument, NULL, 't' },
		{ "threads", required_argument, NULL, 'p' },
		{ "formats", required_argument, NULL, 'f' },
		{ "isa", required_argument, NULL, 'i' },
		{ "reps", required_argument, NULL, 'r' },
		{ "ceiling-mib", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "device", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	bool on[ARRAY_SIZE(gemv_fmts)] = { false }, any = false;
	long rows = 16384, k = 4096, tokens = 1, reps = 9, cmib = 256;
	long nth = sysconf(_SC_NPROCESSORS_ONLN);
	int isa = kvk_qdot_isa_best(), json = 0, c, ret, cuda = 0;
	struct gemv_job rd = { 0 };
	struct llm_pool *pool;
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	double ceil_s, ceil_gbs, ceil_cpu;
	size_t rdlen;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long *dst = NULL;

		switch (c) {
		case 'n': dst = &rows; break;
		case 'k': dst = &k; break;
		case 't': dst = &tokens; break;
		case 'p': dst = &nth; break;
		case 'r': dst = &reps; break;
		case 'c': dst = &cmib; break;
		case 'd':
			if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
				fprintf(stderr, "kvmm bench gemv: --device: cpu "
					"or cuda, not '%s'\n", optarg);
				return 2;
			}
			cuda = !strcmp(optarg, "cuda");
			break;
		case 'f':
			if (parse_fmts(optarg, on))
				return 2;
			break;
		case 'i':
			for (isa = 0; isa < KVK_ISA_NR; isa++)
				if (!strcmp(optarg, kvk_qdot_isa_name(isa)))
					break;
			if (isa == KVK_ISA_NR || !kvk_qdot_isa_ok(isa)) {
				fprintf(stderr, "kvmm bench gemv: --isa %s: "
					"unknown or not on this CPU\n", optarg);
				return 2;
			}
			break;
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (dst) {
			errno = 0;
			*dst = strtol(optarg, &end, 10);
			if (errno || *end || *dst < 1) {
				fprintf(stderr, "kvmm bench gemv: --%s %s: "
					"not a positive number\n",
					opts[c == 'n' ? 0 : c == 'k' ? 1 :
					     c == 't' ? 2 : c == 'p' ? 3 :
					     c == 'r' ? 6 : 7].name, optarg);
				return 2;
			}
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench gemv: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	if (cuda)
		return cmd_bench_gemv_cuda(json, reps > GEMV_MAX_REPS ?
					   GEMV_MAX_REPS : (int)reps);
	if (k % KVK_QK_K || rows > (1L << 24) || k > (1L << 20) ||
	    tokens > 4096 || nth > 1024 || reps > GEMV_MAX_REPS ||
	    cmib > 65536) {
		fprintf(stderr, "kvmm bench gemv: --k must be a multiple of "
			"256 (up to 2^20), --rows up to 2^24, --tokens up to "
			"4096, --threads up to 1024, --reps up to %d, "
			"--ceiling-mib up to 65536\n", GEMV_MAX_REPS);
		return 2;
	}
	for (size_t i = 0; i < ARRAY_SIZE(on); i++)
		any |= on[i];
	if (!any)
		for (size_t i = 0; i < ARRAY_SIZE(on); i++)
			on[i] = true;
	ret = llm_pool_create((int)nth, &pool);
	if (ret) {
		fprintf(stderr, "kvmm bench gemv: %ld threads: %s\n", nth,
			strerror(-ret));
		return 1;
	}

	/* the ceiling: a read of 256 MiB, past any cache */
	rdlen = (size_t)cmib << 20;
	rd.ldw = 4096;
	rd.n = (int)(rdlen / rd.ldw);
	rd.w = aligned_alloc(4096, rdlen);
	if (!rd.w) {
		llm_pool_destroy(pool);
		fprintf(stderr, "kvmm bench gemv: out of memory\n");
		return 1;
	}
	memset((void *)rd.w, 0x5a, rdlen);
	ceil_s = gemv_time(pool, read_task, &rd, (int)reps, &ceil_cpu);
	ceil_gbs = rdlen / ceil_s / 1e9;
	if (json)
		printf("{\"bench\":\"gemv\",\"what\":\"read_ceiling\","
		       "\"threads\":%ld,\"bytes\":%zu,\"gbs\":%.2f,"
		       "\"cpu_gbs\":%.2f}\n", nth, rdlen, ceil_gbs,
		       rdlen / ceil_cpu / 1e9);
	else
		printf("kvmm bench gemv: %ld x %ld weights, %ld token%s, %ld "
		       "thread%s, isa %s, median of %ld\n"
		       "memory read ceiling (%zu MiB, same threads): %.1f "
		       "GB/s (%.1f on CPU time)\n\n"
		       "%-6s %8s %9s %8s %8s %9s %8s%s\n", rows, k, tokens,
		       tokens > 1 ? "s" : "", nth, nth > 1 ? "s" : "",
		       kvk_qdot_isa_name(isa), reps, rdlen >> 20, ceil_gbs,
		       rdlen / ceil_cpu / 1e9,
		       "format", "MB", "ms", "GB/s", "ceiling", "cpu ms",
		       "cpu GB/s", tokens > 1 ? "  GOP/s cpu GOP/s" : "");
	free((void *)rd.w);

	for (size_t f = 0; f < ARRAY_SIZE(gemv_fmts); f++) {
		struct gemv_job j = { .isa = isa, .type = gemv_fmts[f],
				      .n = (int)rows, .t = (int)tokens,
				      .k = (size_t)k };
		uint32_t blck, bsz;
		float *x;
		double s, gbs, cs;

		if (!on[f])
			continue;
		kvk_qtype_layout(j.type, &blck, &bsz);
		j.ldw = j.k / blck * bsz;
		j.lda = kvk_qdot_act_bytes(j.type, j.k);
		j.w = malloc(j.ldw * rows);
		j.qa = malloc(j.lda * tokens);
		j.y = malloc(sizeof(float) * rows * tokens);
		x = malloc(sizeof(float) * j.k);
		if (!j.w || !j.qa || !j.y || !x) {
			fprintf(stderr, "kvmm bench gemv: out of memory\n");
			ret = -ENOMEM;
		}
		if (!ret) {
			gemv_fill(j.type, (uint8_t *)j.w, j.ldw * rows, &seed);
			for (long t = 0; t < tokens; t++) {
				for (long i = 0; i < k; i++)
					x[i] = gemv_frand(&seed);
				kvk_qdot_quantize(j.type, x,
						  (uint8_t *)j.qa + t * j.lda,
						  j.k);
			}
			s = gemv_time(pool, gemv_task, &j, (int)reps, &cs);
			gbs = j.ldw * rows / s / 1e9;
			if (json)
				printf("{\"bench\":\"gemv\",\"format\":\"%s\","
				       "\"isa\":\"%s\",\"threads\":%ld,"
				       "\"rows\":%ld,\"k\":%ld,\"tokens\":%ld,"
				       "\"bytes\":%zu,\"ms\":%.4f,"
				       "\"gbs\":%.2f,\"ceiling_gbs\":%.2f,"
				       "\"of_ceiling\":%.3f,\"gops\":%.2f,"
				       "\"cpu_ms\":%.4f,\"cpu_gbs\":%.2f,"
				       "\"cpu_gops\":%.2f}\n",
				       kvk_qtype_name(j.type),
				       kvk_qdot_isa_name(isa), nth, rows, k,
				       tokens, j.ldw * rows, s * 1e3, gbs,
				       ceil_gbs, gbs / ceil_gbs,
				       2.0 * rows * k * tokens / s / 1e9,
				       cs * 1e3, j.ldw * rows / cs / 1e9,
				       2.0 * rows * k * tokens / cs / 1e9);
			else
				printf("%-6s %8.1f %9.3f %8.1f %7.0f%% %9.3f "
				       "%8.1f", kvk_qtype_name(j.type),
				       j.ldw * rows / 1e6, s * 1e3, gbs,
				       100 * gbs / ceil_gbs, cs * 1e3,
				       j.ldw * rows / cs / 1e9);
			if (!json && tokens > 1)
				printf(" %7.1f %9.1f", 2.0 * rows * k *
				       tokens / s / 1e9, 2.0 * rows * k *
				       tokens / cs / 1e9);
			if (!json)
				printf("\n");
		}
		free((void *)j.w);
		free((void *)j.qa);
		free(j.y);
		free(x);
		if (ret)
			break;
	}
	llm_pool_destroy(pool);
	return ret ? 1 : 0;
}
