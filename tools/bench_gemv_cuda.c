// SPDX-License-Identifier: MIT
/*
 * bench_gemv_cuda.c - `kvmm bench gemv --device cuda`: the CUDA executor's
 * decode GEMVs on Llama-3-8B's matrices (QKV and gate/up with the fused
 * RMSNorm, O and down without), per weight format (bf16, Q8, Q4) and rows
 * per warp, in GB/s of weight bytes beside the device's read ceiling
 * measured in the same run (kvk_read_sum_cuda()). Random weights: speed
 * does not depend on them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#include "forward_cuda.h"
#include "kvk_mem.h"
#include "qweight.h"

struct gc_mat {
	const char *name;
	int n, k;
	bool norm, glu;
};

static const struct gc_mat gc_mats[] = {
	{ "qkv", 6144, 4096, true, false },
	{ "o", 4096, 4096, false, false },
	{ "gate_up", 28672, 4096, true, true },
	{ "down", 4096, 14336, false, false },
};

static int gc_err(const char *what)
{
	fprintf(stderr, "kvmm bench gemv: %s: %s\n", what,
		cudaGetErrorString(cudaGetLastError()));
	return 1;
}

/* the mean of @reps launches after 3 warm ones, in us; -1 on error */
static double gc_time(int fmt, int rows, const struct gc_mat *mt,
		      const void *w, const struct llm_qw *qw, const float *x,
		      const float *nw, float *y, int reps)
{
	struct llm_gemv_out o = { 1, { mt->glu ? mt->n / 2 : mt->n }, { y },
				  { mt->glu ? mt->n / 2 : mt->n }, mt->glu };
	cudaEvent_t a, b;
	float ms = 0.0f;
	char r[8];
	int ret = 0;

	snprintf(r, sizeof(r), "%d", rows);
	setenv(fmt ? "KVMM_QGEMV_ROWS" : "KVMM_GEMV_ROWS", r, 1);
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	for (int i = 0; i < reps + 3 && !ret; i++) {
		if (i == 3)
			cudaEventRecord(a, NULL);
		ret = fmt ? llm_qgemv_cuda(qw, x, KVK_F32, mt->k, 1, mt->n,
					   mt->k, mt->norm ? nw : NULL, 1e-5f,
					   &o, 0.0f, NULL) :
			    llm_gemv_cuda(w, KVK_BF16, x, KVK_F32, mt->k, 1,
					  mt->n, mt->k, mt->norm ? nw : NULL,
					  1e-5f, &o, 0.0f, NULL);
	}
	cudaEventRecord(b, NULL);
	cudaEventSynchronize(b);
	cudaEventElapsedTime(&ms, a, b);
	cudaEventDestroy(a);
	cudaEventDestroy(b);
	unsetenv(fmt ? "KVMM_QGEMV_ROWS" : "KVMM_GEMV_ROWS");
	return ret ? -1.0 : ms * 1e3 / reps;
}

int cmd_bench_gemv_cuda(int json, int reps)
{
	static const int fmts[] = { 0, LLM_QW8, LLM_QW4 };
	size_t maxe = 28672ULL * 4096, ceil_bytes = 2ULL << 30;
	void *w, *q, *meta, *buf;
	float *x, *nw, *y;
	uint64_t *sum;
	double ceil_gbs;
	cudaEvent_t a, b;
	float ms;

	if (cudaMalloc(&w, maxe * 2) || cudaMalloc(&q, maxe) ||
	    cudaMalloc(&meta, maxe / 8) || cudaMalloc((void **)&x, 14336 * 4) ||
	    cudaMalloc((void **)&nw, 14336 * 4) ||
	    cudaMalloc((void **)&y, 28672 * 4) || cudaMalloc(&buf, ceil_bytes) ||
	    cudaMalloc((void **)&sum, 64))
		return gc_err("cudaMalloc");
	/* bytes that are valid bf16, int8, nibbles and fp16 scales alike */
	cudaMemset(w, 0x3c, maxe * 2);
	cudaMemset(q, 0x3c, maxe);
	cudaMemset(meta, 0x1c, maxe / 8);
	cudaMemset(x, 0x3c, 14336 * 4);
	cudaMemset(nw, 0x3c, 14336 * 4);
	cudaMemset(buf, 1, ceil_bytes);
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	kvk_read_sum_cuda(buf, ceil_bytes, sum, NULL);
	cudaEventRecord(a, NULL);
	for (int i = 0; i < 5; i++)
		kvk_read_sum_cuda(buf, ceil_bytes, sum, NULL);
	cudaEventRecord(b, NULL);
	cudaEventSynchronize(b);
	cudaEventElapsedTime(&ms, a, b);
	ceil_gbs = 5.0 * ceil_bytes / (ms * 1e-3) / 1e9;
	if (!json)
		printf("# decode GEMV (1 token), Llama-3-8B matrices; read "
		       "ceiling %.0f GB/s\n%-6s %-8s %5s %9s %8s %6s\n",
		       ceil_gbs, "format", "matrix", "rows", "us", "GB/s",
		       "ceil");
	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
		for (size_t m = 0; m < ARRAY_SIZE(gc_mats); m++)
			for (int rows = 1; rows <= 8; rows *= 2) {
				const struct gc_mat *mt = &gc_mats[m];
				struct llm_qw qw = { (enum llm_qw_fmt)fmts[f],
						     q, meta };
				double bytes, us;

				bytes = fmts[f] ? (double)mt->n *
					(llm_qw_row_bytes(qw.fmt, mt->k) +
					 llm_qw_meta_bytes(qw.fmt, mt->k)) :
					(double)mt->n * mt->k * 2;
				us = gc_time(fmts[f], rows, mt, w, &qw, x, nw, y,
					     reps);
				if (us < 0)
					return gc_err("gemv");
				if (json)
					printf("{\"format\": \"%s\", \"matrix\": "
					       "\"%s\", \"rows\": %d, \"us\": %.2f, "
					       "\"gbs\": %.1f, \"ceiling_gbs\": "
					       "%.1f}\n", fmts[f] == 8 ? "q8" :
					       fmts[f] == 4 ? "q4" : "bf16",
					       mt->name, rows, us,
					       bytes / us / 1e3, ceil_gbs);
				else
					printf("%-6s %-8s %5d %9.2f %8.1f %5.0f%%\n",
					       fmts[f] == 8 ? "q8" :
					       fmts[f] == 4 ? "q4" : "bf16",
					       mt->name, rows, us, bytes / us / 1e3,
					       100.0 * bytes / us / 1e3 / ceil_gbs);
			}
	cudaFree(w), cudaFree(q), cudaFree(meta), cudaFree(x), cudaFree(nw);
	cudaFree(y), cudaFree(buf), cudaFree(sum);
	return 0;
}
#else
int cmd_bench_gemv_cuda(int json, int reps)
{
	(void)json, (void)reps;
	fprintf(stderr, "kvmm bench gemv: --device cuda: built without "
		"CUDA\n");
	return 1;
}
#endif
