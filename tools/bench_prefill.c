// SPDX-License-Identifier: MIT
/*
 * bench_prefill.c - `kvmm bench prefill`: causal prefill attention TFLOP/s
 * over prompt lengths 1K..32K beside the cuBLAS fp16 GEMM rate measured in
 * the same run, and the cost of the token scores and of the prompt-phase
 * compress-and-append. Llama-3-8B head shapes by default.
 *
 * cuBLAS is opened at run time (dlopen), so the tool links without it and
 * runs where it is absent (the GEMM column then says so).
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
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
int cmd_bench_prefill(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"bf16", no_argument, NULL, 'b'},
		{"head-dim", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const char usage[] = "usage: kvmm bench prefill [--json] "
				    "[--bf16] [--head-dim 64|128]\n";
	int json = 0, c;
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
			       "prompt-phase compress-and-append (K8V4/K4V2)\n",
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
