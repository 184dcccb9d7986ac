// SPDX-License-Identifier: MIT
/*
 * bench_prefill.c - `kvmm bench prefill`: causal prefill attention TFLOP/s
 * over prompt lengths 1K..32K beside the cuBLAS fp16 GEMM rate measured in
 * the same run, and the cost of the token scores and of the prompt-phase
 * compress-and-append. Llama-3-8B head shapes by default.
 *
 * `kvmm bench prefill --cpu`: the host caches' prefill attention
 * (hprefill.h), SmolLM2-135M's heads by default, its AVX2 path beside the
 * C reference and the FMA rate of this core, all measured in the same run
 * as thread CPU time.
 *
 * cuBLAS is opened at run time (dlopen), so the tool links without it and
 * runs where it is absent (the GEMM column then says so).
 */
#include <dlfcn.h>
#include <time.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "hprefill.h"
#include "kva.h"
#include "kvmm.h"
#include "prefill.h"

#ifdef KVMM_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#define REPS 9

#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench prefill: %s: %s\n", #x,    \
				cudaGetErrorString(__e));                      \
			return -EIO;                                           \
		}                                                              \
	} while (0)

/* cuBLAS GEMM, fp16 in and out, fp32 accumulate, m = n = k = @n */
static int gemm_rate(int n, double *tflops, char *why, size_t len)
{
	static const char *const names[] = {"libcublas.so.13",
					    "libcublas.so.12", "libcublas.so"};
	__typeof__(&cublasCreate_v2) create = NULL;
	__typeof__(&cublasDestroy_v2) destroy = NULL;
	__typeof__(&cublasGemmEx) gemm = NULL;
	cublasHandle_t h;
	void *lib = NULL, *a, *b, *c;
	float one = 1.0f, zero = 0.0f, ms, t[REPS];
	cudaEvent_t e0, e1;

	for (size_t i = 0; !lib && i < ARRAY_SIZE(names); i++)
		lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(why, len, "cuBLAS not found (%s)", dlerror());
		return -ENOENT;
	}
	*(void **)&create = dlsym(lib, "cublasCreate_v2");
	*(void **)&destroy = dlsym(lib, "cublasDestroy_v2");
	*(void **)&gemm = dlsym(lib, "cublasGemmEx");
	if (!create || !destroy || !gemm || create(&h)) {
		snprintf(why, len, "cuBLAS did not start");
		return -ENOENT;
	}
	CU(cudaMalloc(&a, (size_t)n * n * 2));
	CU(cudaMalloc(&b, (size_t)n * n * 2));
	CU(cudaMalloc(&c, (size_t)n * n * 2));
	CU(cudaMemset(a, 0x3c, (size_t)n * n * 2)); /* fp16 ~1.06 */
	CU(cudaMemset(b, 0x20, (size_t)n * n * 2));
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	for (int r = -3; r < REPS; r++) {
		CU(cudaEventRecord(e0, 0));
		if (gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a,
			 CUDA_R_16F, n, b, CUDA_R_16F, n, &zero, c, CUDA_R_16F,
			 n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)) {
			snprintf(why, len, "cublasGemmEx failed");
			return -EIO;
		}
		CU(cudaEventRecord(e1, 0));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&ms, e0, e1));
		if (r >= 0)
			t[r] = ms;
	}
	{
		double tt[REPS];

		for (int r = 0; r < REPS; r++)
			tt[r] = t[r];
		*tflops = 2.0 * n * (double)n * n /
			  (kvmm_median(tt, REPS) * 1e-3) / 1e12;
	}
	destroy(h);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(a);
	cudaFree(b);
	cudaFree(c);
	return 0;
}

struct point {
	double ms, tflops, ms_scores, ms_compress;
};

/* median milliseconds of @fn over REPS runs after 2 warm-ups */
#define TIME(out, call)                                                        \
	do {                                                                   \
		double __t[REPS];                                              \
		float __ms;                                                    \
		for (int __r = -2; __r < REPS; __r++) {                        \
			CU(cudaEventRecord(e0, 0));                            \
			if (call)                                              \
				return -EIO;                                   \
			CU(cudaEventRecord(e1, 0));                            \
			CU(cudaEventSynchronize(e1));                          \
			CU(cudaEventElapsedTime(&__ms, e0, e1));               \
			if (__r >= 0)                                          \
				__t[__r] = __ms;                               \
		}                                                              \
		(out) = kvmm_median(__t, REPS);                                \
	} while (0)

static int run_point(uint32_t len, uint32_t nq, uint32_t nkv, uint32_t hd,
		     enum kvk_dtype dt, struct point *pt)
{
	struct kva_tier tiers[2] = {{8, 4, 1, 2}, {4, 2, 2, 4}};
	struct kva_layout l[2];
	struct kvk_prefill_args a = {
		.nr_seqs = 1,
		.nr_q_heads = nq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd),
		.dtype = dt,
		.max_len = len,
		.score_window = 64,
	};
	struct kvk_compress_prompt cp;
	size_t nqe = (size_t)len * nq * hd, nke = (size_t)len * nkv * hd;
	uint32_t ss[2] = {0, len}, *seq, *tables, *npages, *counts;
	uint32_t *list_base, worst, *h_tab;
	int32_t *err;
	uint64_t pool_bytes;
	cudaEvent_t e0, e1;
	uint16_t *h;
	void *pool;
	int ps;

	/* random-ish inputs: a fixed xorshift stream */
	h = malloc(nqe * 2);
	if (!h)
		return -ENOMEM;
	{
		uint64_t s = 0x9e3779b97f4a7c15ULL;

		for (size_t i = 0; i < nqe; i++) {
			float f =
				(float)((kvmm_rand(&s) >> 40) * 0x1.0p-24) * 2 -
				1;

			h[i] = dt == KVK_F16 ? kvk_f32_to_f16(f)
					     : kvk_f32_to_bf16(f);
		}
	}
	CU(cudaMalloc((void **)&a.q, nqe * 2));
	CU(cudaMalloc((void **)&a.k, nke * 2));
	CU(cudaMalloc((void **)&a.v, nke * 2));
	CU(cudaMalloc(&a.out, nqe * 2));
	CU(cudaMalloc((void **)&a.lse, (size_t)len * nq * 4));
	CU(cudaMalloc((void **)&a.scores, (size_t)len * nkv * 4));
	CU(cudaMalloc((void **)&seq, 8));
	CU(cudaMemcpy((void *)a.q, h, nqe * 2, cudaMemcpyHostToDevice));
	CU(cudaMemcpy((void *)a.k, h, nke * 2, cudaMemcpyHostToDevice));
	CU(cudaMemcpy((void *)a.v, h + nke / 2, nke * 2,
		      cudaMemcpyHostToDevice));
	CU(cudaMemcpy(seq, ss, 8, cudaMemcpyHostToDevice));
	a.seq_start = seq;
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));

	a.scores = NULL;
	{
		float *lse = a.lse;

		a.lse = NULL;
		TIME(pt->ms, kvk_prefill_cuda(&a, NULL));
		a.lse = lse;
	}
	CU(cudaMalloc((void **)&a.scores, (size_t)len * nkv * 4));
	TIME(pt->ms_scores, kvk_prefill_cuda(&a, NULL));
	pt->tflops = kvk_prefill_flops(len, nq, hd) / (pt->ms * 1e-3) / 1e12;

	/* prompt-phase compress-and-append of the same scores */
	ps = kva_page_size(hd, tiers, 2);
	kva_page_layout(hd, ps, &tiers[0], &l[0]);
	kva_page_layout(hd, ps, &tiers[1], &l[1]);
	worst = kva_worst_pages(l[0].tokens, l[1].tokens, len);
	pool_bytes = (uint64_t)((worst * nkv + (2 << 20) / ps - 1) /
				((2 << 20) / ps)) *
		     (2 << 20);
	CU(cudaMalloc(&pool, pool_bytes));
	h_tab = malloc((size_t)worst * nkv * 4);
	for (uint32_t i = 0; i < worst * nkv; i++)
		h_tab[i] = i;
	CU(cudaMalloc((void **)&tables, (size_t)worst * nkv * 4));
	CU(cudaMemcpy(tables, h_tab, (size_t)worst * nkv * 4,
		      cudaMemcpyHostToDevice));
	for (uint32_t i = 0; i < nkv; i++)
		h_tab[i] = i;
	CU(cudaMalloc((void **)&list_base, 4));
	CU(cudaMemset(list_base, 0, 4));
	CU(cudaMalloc((void **)&npages, 8 * nkv));
	CU(cudaMalloc((void **)&counts, 12 * nkv));
	CU(cudaMalloc((void **)&err, 4));
	for (uint32_t i = 0; i < nkv; i++)
		h_tab[2 * i] = worst, h_tab[2 * i + 1] = 0;
	CU(cudaMemcpy(npages, h_tab, 8 * nkv, cudaMemcpyHostToDevice));
	cp = (struct kvk_compress_prompt){
		.nr_seqs = 1,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.dtype = dt,
		.k = a.k,
		.v = a.v,
		.seq_start = seq,
		.max_len = len,
		.scores = a.scores,
		.score_window = 64,
		.window = 64,
		.alpha_prune = 0.02f,
		.alpha_quant = 1.0f,
		.pg = {.pool = (uint64_t)(uintptr_t)pool,
		       .page_size = ps,
		       .pages_per_granule = (2 << 20) / ps,
		       .tables = tables,
		       .width = worst,
		       .list_base = list_base},
		.npages = npages,
		.counts = counts,
		.err = err,
	};
	/* one table row per kv-head: list h is row h, so rows are worst wide */
	for (int t = 0; t < 2; t++)
		cp.pg.tier[t] = kva_attn_tier(&tiers[t], &l[t]);
	TIME(pt->ms_compress, kvk_compress_prompt_cuda(&cp, NULL));

	cudaFree(pool);
	cudaFree(tables);
	cudaFree(list_base);
	cudaFree(npages);
	cudaFree(counts);
	cudaFree(err);
	cudaFree((void *)a.q);
	cudaFree((void *)a.k);
	cudaFree((void *)a.v);
	cudaFree(a.out);
	cudaFree(a.lse);
	cudaFree(a.scores);
	cudaFree(seq);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	free(h_tab);
	free(h);
	return 0;
}
#endif

/**
 * cmd_bench_prefill() - `kvmm bench prefill`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a run failed or there is no GPU, 2 for bad
 * arguments.
 */
/* ---- --cpu: the host caches' prefill attention ---- */

#define HP_REPS 3

/* this thread's CPU time in seconds (other processes do not enter) */
static double thread_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#if defined(__x86_64__)
#include <immintrin.h>

/*
 * the core's fp32 FMA rate: 10 independent 8-wide chains (more than
 * latency x FMA ports on current cores), GFLOP/s (2 per lane)
 */
__attribute__((target("avx2,fma"))) static double fma_peak(void)
{
	__m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
	__m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1);
	__m256 a2 = _mm256_set1_ps(2), a3 = _mm256_set1_ps(3);
	__m256 a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5);
	__m256 a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7);
	__m256 a8 = _mm256_set1_ps(8), a9 = _mm256_set1_ps(9);
	const long iters = 50000000;
	double t = thread_s();
	float out[8], sum = 0;

	for (long n = 0; n < iters; n++) {
		a0 = _mm256_fmadd_ps(a0, x, y);
		a1 = _mm256_fmadd_ps(a1, x, y);
		a2 = _mm256_fmadd_ps(a2, x, y);
		a3 = _mm256_fmadd_ps(a3, x, y);
		a4 = _mm256_fmadd_ps(a4, x, y);
		a5 = _mm256_fmadd_ps(a5, x, y);
		a6 = _mm256_fmadd_ps(a6, x, y);
		a7 = _mm256_fmadd_ps(a7, x, y);
		a8 = _mm256_fmadd_ps(a8, x, y);
		a9 = _mm256_fmadd_ps(a9, x, y);
	}
	t = thread_s() - t;
	a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1),
					 _mm256_add_ps(a2, a3)),
			   _mm256_add_ps(_mm256_add_ps(a4, a5),
					 _mm256_add_ps(a6, a7)));
	a0 = _mm256_add_ps(a0, _mm256_add_ps(a8, a9));
	_mm256_storeu_ps(out, a0);
	for (int i = 0; i < 8; i++)
		sum += out[i];
	/* the sum keeps the chains live; it is finite */
	return isfinite(sum) ? iters * 10.0 * 16 / t / 1e9 : 0.0;
}
#endif

/*
 * one layer's prompt attention, every query head in turn (as one thread
 * of a host cache runs its share), on @isa: median seconds of HP_REPS
 */
static int hp_time(uint32_t len, uint32_t nq, uint32_t nkv, uint32_t hd,
		   int isa, const float *q, const float *k, const float *v,
		   float *o, float *acc, float *p, double *sec)
{
	double t[HP_REPS];

	for (int r = 0; r < HP_REPS; r++) {
		double t0 = thread_s();

		for (uint32_t h = 0; h < nq; h++) {
			struct kvk_hprefill_args a = {
				.q = q + (size_t)h * hd,
				.k = k + (size_t)(h / (nq / nkv)) * hd,
				.v = v + (size_t)(h / (nq / nkv)) * hd,
				.o = o + (size_t)h * hd, .acc = acc, .p = p,
				.ldq = (size_t)nq * hd, .ldk = (size_t)nkv * hd,
				.ldo = (size_t)nq * hd, .hd = hd, .n = len,
				.first = len > 64 ? len - 64 : 0,
				.scale = 1.0f / sqrtf((float)hd),
			};
			int ret = kvk_hprefill_run(&a, isa);

			if (ret) {
				fprintf(stderr, "kvmm bench prefill: %s\n",
					strerror(-ret));
				return ret;
			}
		}
		t[r] = thread_s() - t0;
	}
	*sec = kvmm_median(t, HP_REPS);
	return 0;
}

static int bench_prefill_cpu(int json, uint32_t hd)
{
	static const uint32_t lens[] = {512, 1024, 2048, 4096};
	const uint32_t nq = 9, nkv = 3, maxl = 4096;
	int avx2 = kvk_hprefill_isa() == KVK_HPREFILL_AVX2;
	double peak = 0;
	float *q, *k, *v, *o, *acc, *p;
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	int ret = 0;

#if defined(__x86_64__)
	if (avx2)
		peak = fma_peak();
#endif
	q = malloc((size_t)maxl * nq * hd * sizeof(float));
	o = malloc((size_t)maxl * nq * hd * sizeof(float));
	k = malloc((size_t)maxl * nkv * hd * sizeof(float));
	v = malloc((size_t)maxl * nkv * hd * sizeof(float));
	acc = calloc(maxl, sizeof(float));
	p = malloc((size_t)KVK_HPREFILL_ROWS * maxl * sizeof(float));
	if (!q || !o || !k || !v || !acc || !p) {
		fprintf(stderr, "kvmm bench prefill: out of memory\n");
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < (size_t)maxl * nq * hd; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		q[i] = (float)((s >> 40) * 0x1p-24) * 2 - 1;
	}
	for (size_t i = 0; i < (size_t)maxl * nkv * hd; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		k[i] = (float)((s >> 40) * 0x1p-24) * 2 - 1;
		v[i] = (float)((s >> 16 & 0xffffff) * 0x1p-24) * 2 - 1;
	}
	if (json)
		printf("{\"bench\":\"prefill_cpu\",\"head_dim\":%u,"
		       "\"q_heads\":%u,\"kv_heads\":%u,\"isa\":\"%s\","
		       "\"fma_gflops\":%.1f,\"points\":[",
		       hd, nq, nkv, avx2 ? "avx2" : "c", peak);
	else
		printf("kvmm bench prefill --cpu: host prefill attention, "
		       "one layer, %u q-heads / %u kv-heads, head_dim %u, 1 "
		       "thread, CPU time (median of %d); path %s; FMA rate "
		       "of this core %.1f GFLOP/s%s\n\n%7s %10s %10s %8s "
		       "%9s %7s\n",
		       nq, nkv, hd, HP_REPS, avx2 ? "avx2" : "c", peak,
		       avx2 ? "" : " (no AVX2 + FMA)", "tokens", "C ms",
		       "fast ms", "speedup", "GFLOP/s", "fma%");
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		uint32_t L = lens[i];
		double flop = 4.0 * L * (L + 1) / 2 * nq * hd, tc, tf;

		ret = hp_time(L, nq, nkv, hd, KVK_HPREFILL_C, q, k, v, o, acc,
			      p, &tc);
		if (!ret)
			ret = hp_time(L, nq, nkv, hd, kvk_hprefill_isa(), q, k,
				      v, o, acc, p, &tf);
		if (ret)
			goto out;
		if (json)
			printf("%s{\"tokens\":%u,\"ms_c\":%.3f,\"ms\":%.3f,"
			       "\"gflops\":%.2f}",
			       i ? "," : "", L, tc * 1e3, tf * 1e3,
			       flop / tf / 1e9);
		else
			printf("%7u %10.2f %10.2f %7.2fx %9.2f %6.1f%%\n", L,
			       tc * 1e3, tf * 1e3, tc / tf, flop / tf / 1e9,
			       peak > 0 ? 100 * flop / tf / 1e9 / peak : 0.0);
		fflush(stdout);
	}
	if (json)
		printf("]}\n");
out:
	free(q);
	free(o);
	free(k);
	free(v);
	free(acc);
	free(p);
	return ret ? 1 : 0;
}

int cmd_bench_prefill(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"bf16", no_argument, NULL, 'b'},
		{"head-dim", required_argument, NULL, 'd'},
		{"cpu", no_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const char usage[] = "usage: kvmm bench prefill [--json] "
				    "[--bf16] [--head-dim 64|128] [--cpu]\n";
	int json = 0, cpu = 0, have_hd = 0, c;
	enum kvk_dtype dt = KVK_F16;
	uint64_t hd = 128;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'b':
			dt = KVK_BF16;
			break;
		case 'd':
			if (kvmm_parse_u64("--head-dim", optarg, 64, 128,
					   &hd) ||
			    (hd != 64 && hd != 128))
				return 2;
			have_hd = 1;
			break;
		case 'c':
			cpu = 1;
			break;
		case 'h':
			printf("%s  one prompt of 1K..32K tokens, 32 query "
			       "heads "
			       "over 8 kv-heads (GQA 4);\n  attention TFLOP/s "
			       "(causal: 4 * L(L+1)/2 * heads * head_dim) "
			       "beside "
			       "the cuBLAS\n  fp16 GEMM rate (8192^3); also "
			       "the "
			       "time with the token scores and of\n  the "
			       "prompt-phase compress-and-append (K8V4/K4V2)\n"
			       "  --cpu: the host caches' prefill attention "
			       "(fp32), 512..4K tokens,\n  9 q-heads over 3 "
			       "kv-heads (SmolLM2-135M; head_dim 64 unless "
			       "given),\n  the AVX2 path beside the C "
			       "reference and this core's FMA rate\n",
			       usage);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench prefill: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	if (cpu) {
		if (dt != KVK_F16) {
			fprintf(stderr, "kvmm bench prefill: --bf16 is for "
				"the GPU kernel (--cpu is fp32)\n");
			return 2;
		}
		return bench_prefill_cpu(json, have_hd ? (uint32_t)hd : 64);
	}
#ifdef KVMM_HAVE_CUDA
	{
		static const uint32_t lens[] = {1024, 2048,  4096,
						8192, 16384, 32768};
		char why[256] = "";
		double gemm = 0;
		int first = 1, have_gemm;

		if (kvrt_cuda_probe(why, sizeof(why))) {
			fprintf(stderr, "kvmm bench prefill: no GPU: %s\n",
				why);
			return 1;
		}
		have_gemm = !gemm_rate(8192, &gemm, why, sizeof(why));
		if (json)
			printf("{\"bench\":\"prefill\",\"dtype\":\"%s\","
			       "\"head_dim\":%" PRIu64 ",\"q_heads\":32,"
			       "\"kv_heads\":8,\"gemm_tflops\":%.1f,\"points\":"
			       "[",
			       kvk_dtype_name(dt), hd, have_gemm ? gemm : 0.0);
		else
			printf("kvmm bench prefill: %s, head_dim %" PRIu64
			       ", 32 q-heads / 8 kv-heads; cuBLAS fp16 GEMM "
			       "%s%.1f TFLOP/s%s\n\n%7s %10s %9s %7s %12s "
			       "%12s\n",
			       kvk_dtype_name(dt), hd, have_gemm ? "" : "(",
			       gemm, have_gemm ? "" : why, "tokens", "attn ms",
			       "TFLOP/s", "gemm%", "+scores ms", "compress ms");
		for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
			struct point p;

			if (run_point(lens[i], 32, 8, (uint32_t)hd, dt, &p))
				return 1;
			if (json)
				printf("%s{\"tokens\":%u,\"ms\":%.3f,"
				       "\"tflops\":%.1f,\"ms_with_scores\":%."
				       "3f,"
				       "\"ms_compress\":%.3f}",
				       first ? "" : ",", lens[i], p.ms,
				       p.tflops, p.ms_scores, p.ms_compress);
			else
				printf("%7u %10.3f %9.1f %6.1f%% %12.3f "
				       "%12.3f\n",
				       lens[i], p.ms, p.tflops,
				       have_gemm ? 100 * p.tflops / gemm : 0.0,
				       p.ms_scores, p.ms_compress);
			fflush(stdout);
			first = 0;
		}
		if (json)
			printf("]}\n");
		return 0;
	}
#else
	(void)json, (void)dt, (void)hd;
	fprintf(stderr, "kvmm bench prefill: built without CUDA\n");
	return 1;
#endif
}
