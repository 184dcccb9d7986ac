// SPDX-License-Identifier: MIT
/*
 * check_attn_gpu.c - decode attention on the GPU against the CPU reference
 * on the same random pools: every tier pair of the CPU suite, head_dim 64,
 * 128 and 256, GQA ratios 1, 4 and 8, fp32, fp16 and bf16 activations.
 * Outputs are poisoned first; scores are compared after one update.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_common.h"
#include "kvmm_base.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static const struct kva_tier pairs[][2] = {
	{ { 16, 16, 1, 1 }, { 16, 16, 1, 1 } },
	{ { 8, 4, 1, 2 }, { 4, 2, 2, 4 } },
	{ { 8, 4, 1, 1 }, { 4, 2, 1, 1 } },
	{ { 8, 8, 1, 1 }, { 2, 1, 4, 4 } },
	{ { 16, 16, 1, 1 }, { 4, 4, 2, 2 } },
};

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

START_TEST(test_attn_cuda_vs_cpu)
{
	static const uint32_t hds[] = { 64, 128, 256 }, groups[] = { 1, 4, 8 };
	static const enum kvk_dtype dts[] = { KVK_F32, KVK_F16, KVK_BF16 };
	static const double tol[] = { 2e-5, 2e-3, 1.5e-2 };
	uint64_t seed = kvtest_seed("attn_cuda_vs_cpu");
	int cases = 0;

	for (size_t p = 0; p < ARRAY_SIZE(pairs); p++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++)
			for (size_t gi = 0; gi < ARRAY_SIZE(groups); gi++) {
				enum kvk_dtype dt = dts[(p + h + gi) % 3];
				uint32_t G = groups[gi], hd = hds[h];
				struct attn_case c;
				struct kvk_attn_args d;
				size_t nq, nt, es;
				float *ref, *got, *sc_cpu, *sc_gpu;
				uint8_t *pool_back;
				void *dout;
				double err;

				attn_case_make(&c, &seed, 5, 3, G, hd, pairs[p],
					       1500, dt);
				nq = c.nr_lists * G * hd;
				nt = c.nr_lists * c.max_tokens;
				es = kvk_dtype_size(dt);
				d = c.a;
				d.update_scores = c.a.update_scores = 1;
				d.pool = (uint64_t)(uintptr_t)to_dev(c.pool,
								     c.pool_bytes);
				d.tables = to_dev(c.tables, c.nr_lists * c.a.width * 4);
				d.ntokens = to_dev(c.ntokens, c.nr_lists * 8);
				d.list_base = to_dev(c.list_base, c.a.nr_seqs * 4);
				d.q = to_dev(c.q, nq * es);
				CK_CUDA(cudaMalloc(&dout, nq * es));
				CK_CUDA(cudaMemset(dout, 0xff, nq * es));
				d.out = dout;

				ck_assert_int_eq(kvk_attn_decode_cuda(&d, NULL), 0);
				CK_CUDA(cudaDeviceSynchronize());
				ck_assert_int_eq(kvk_attn_decode_cpu(&c.a, NULL), 0);

				ref = malloc(nq * 4), got = malloc(nq * 4);
				kvk_convert_to_f32(ref, c.out, nq, dt);
				CK_CUDA(cudaMemcpy(c.out, dout, nq * es,
						   cudaMemcpyDeviceToHost));
				kvk_convert_to_f32(got, c.out, nq, dt);
				err = attn_rel_l2(got, ref, nq);
				ck_assert_msg(err < tol[dt],
					      "pair %zu hd %u G %u dtype %d: rel L2 "
					      "%g",
					      p, hd, G, dt, err);

				pool_back = malloc(c.pool_bytes);
				CK_CUDA(cudaMemcpy(pool_back,
						   (void *)(uintptr_t)d.pool,
						   c.pool_bytes,
						   cudaMemcpyDeviceToHost));
				sc_cpu = calloc(nt, 4), sc_gpu = calloc(nt, 4);
				attn_read_scores(&c, c.pool, sc_cpu);
				attn_read_scores(&c, pool_back, sc_gpu);
				err = attn_rel_l2(sc_gpu, sc_cpu, nt);
				ck_assert_msg(err < 1e-4,
					      "pair %zu hd %u G %u: scores rel L2 %g",
					      p, hd, G, err);

				cudaFree((void *)(uintptr_t)d.pool);
				cudaFree((void *)d.tables);
				cudaFree((void *)d.ntokens);
				cudaFree((void *)d.list_base);
				cudaFree((void *)d.q);
				cudaFree(dout);
				free(ref), free(got), free(pool_back), free(sc_cpu),
					free(sc_gpu);
				attn_case_free(&c);
				cases++;
			}
	ck_assert_int_eq(cases, 45);
}
END_TEST
#else
START_TEST(test_attn_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_attn_gpu(void)
{
	Suite *s = suite_create("attn_gpu");
	TCase *tc = tcase_create("decode");

	tcase_set_timeout(tc, 300);
	KV_ADD(tc, test_attn_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
