// SPDX-License-Identifier: MIT
/*
 * check_attn_gpu.c - decode attention on the GPU against the CPU reference
 * on the same random pools: every tier pair of the CPU suite (mixed tiers
 * included), head_dim 64, 128 and 256, GQA ratios 1..8, fp32, fp16 and bf16
 * activations; the context split over many blocks (long lists, lists
 * shorter than their split), unsplit without scratch, and the first version
 * (scores without scratch). Outputs and scratch are poisoned first; scores
 * are compared after one update.
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
	/* the uniform baselines (instances with the formats fixed) */
	{ { 8, 8, 1, 1 }, { 8, 8, 1, 1 } },
	{ { 4, 4, 1, 1 }, { 4, 4, 1, 1 } },
};

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

/* how a run is given scratch */
enum run_mode {
	RUN_SPLIT,	/* kvk_attn_work_bytes(): split context, scores pass */
	RUN_NOWORK,	/* no scratch: one block per (sequence, head) */
	RUN_NOWORK_SCORES, /* no scratch but scores: the first version */
};

/* errors of one run against the reference, worst over the suite */
struct errs {
	double out, scores;
};

/*
 * Runs case @c on the device (output poisoned) and on the CPU, compares the
 * outputs and, when updated, the scores (read back through the pages).
 */
static void run_case(struct attn_case *c, enum run_mode mode, double tol,
		     double stol, const char *what, struct errs *worst)
{
	enum kvk_dtype dt = c->a.dtype;
	uint32_t G = c->a.group, hd = c->a.head_dim;
	size_t nq = c->nr_lists * G * hd, nt = c->nr_lists * c->max_tokens;
	size_t es = kvk_dtype_size(dt);
	struct kvk_attn_args d = c->a;
	float *ref, *got;
	void *dout, *work = NULL;
	double err;

	static unsigned runs;

	/* the two score modes in turn */
	c->a.update_scores = d.update_scores =
		mode == RUN_NOWORK ? 0 : runs++ % 2 ? KVK_ATTN_SCORE_SUMSQ
						   : KVK_ATTN_SCORE_MAX;
	if (mode == RUN_SPLIT) {
		d.work_bytes = kvk_attn_work_bytes(&d);
		CK_CUDA(cudaMalloc(&work, d.work_bytes ? d.work_bytes : 1));
		/* poison the scratch too: nothing may read what was not written */
		CK_CUDA(cudaMemset(work, 0xff, d.work_bytes));
		d.work = work;
	}
	d.pool = (uint64_t)(uintptr_t)to_dev(c->pool, c->pool_bytes);
	d.tables = to_dev(c->tables, c->nr_lists * c->a.width * 4);
	d.ntokens = to_dev(c->ntokens, c->nr_lists * 8);
	d.list_base = to_dev(c->list_base, c->a.nr_seqs * 4);
	d.q = to_dev(c->q, nq * es);
	CK_CUDA(cudaMalloc(&dout, nq * es));
	CK_CUDA(cudaMemset(dout, 0xff, nq * es));
	d.out = dout;

	ck_assert_int_eq(kvk_attn_decode_cuda(&d, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	ck_assert_int_eq(kvk_attn_decode_cpu(&c->a, NULL), 0);

	ref = malloc(nq * 4), got = malloc(nq * 4);
	kvk_convert_to_f32(ref, c->out, nq, dt);
	CK_CUDA(cudaMemcpy(c->out, dout, nq * es, cudaMemcpyDeviceToHost));
	kvk_convert_to_f32(got, c->out, nq, dt);
	err = attn_rel_l2(got, ref, nq);
	worst->out = fmax(worst->out, err);
	ck_assert_msg(err < tol, "%s: rel L2 %g", what, err);

	if (c->a.update_scores) {
		uint8_t *pool_back = malloc(c->pool_bytes);
		float *sc_cpu = calloc(nt, 4), *sc_gpu = calloc(nt, 4);

		CK_CUDA(cudaMemcpy(pool_back, (void *)(uintptr_t)d.pool,
				   c->pool_bytes, cudaMemcpyDeviceToHost));
		attn_read_scores(c, c->pool, sc_cpu);
		attn_read_scores(c, pool_back, sc_gpu);
		err = attn_rel_l2(sc_gpu, sc_cpu, nt);
		worst->scores = fmax(worst->scores, err);
		ck_assert_msg(err < stol, "%s: scores rel L2 %g", what, err);
		free(pool_back), free(sc_cpu), free(sc_gpu);
	}
	cudaFree((void *)(uintptr_t)d.pool);
	cudaFree((void *)d.tables);
	cudaFree((void *)d.ntokens);
	cudaFree((void *)d.list_base);
	cudaFree((void *)d.q);
	cudaFree(dout);
	cudaFree(work);
	free(ref), free(got);
}

/*
 * Tolerances by activation type. fp32 runs the first version (fp32
 * arithmetic throughout); fp16 and bf16 run the tensor-core version, whose
 * operands (q, dequantized K and V, probabilities) are rounded to the
 * activation type, so logits and scores carry that rounding too.
 */
static const double tol[] = { 2e-5, 2e-3, 1.5e-2 };
static const double stol[] = { 1e-4, 1e-3, 5e-3 };

START_TEST(test_attn_cuda_vs_cpu)
{
	static const uint32_t hds[] = { 64, 128, 256 }, groups[] = { 1, 4, 8 };
	static const enum kvk_dtype dts[] = { KVK_F32, KVK_F16, KVK_BF16 };
	uint64_t seed = kvtest_seed("attn_cuda_vs_cpu");
	struct errs worst[3] = { { 0 } };
	int cases = 0;

	for (size_t p = 0; p < ARRAY_SIZE(pairs); p++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++)
			for (size_t gi = 0; gi < ARRAY_SIZE(groups); gi++) {
				enum kvk_dtype dt = dts[(p + h + gi) % 3];
				struct attn_case c;
				char what[96];

				attn_case_make(&c, &seed, 5, 3, groups[gi],
					       hds[h], pairs[p], 1500, dt);
				snprintf(what, sizeof(what),
					 "pair %zu hd %u G %u dtype %d", p,
					 hds[h], groups[gi], dt);
				run_case(&c, RUN_SPLIT, tol[dt], stol[dt], what,
					 &worst[dt]);
				attn_case_free(&c);
				cases++;
			}
	for (int i = 0; i < 3; i++)
		printf("attn_cuda_vs_cpu: dtype %d worst rel L2 out %.3g "
		       "scores %.3g\n", i, worst[i].out, worst[i].scores);
	ck_assert_int_eq(cases, (int)ARRAY_SIZE(pairs) * 9);
}
END_TEST

/*
 * Every GQA ratio 1..8 at every head_dim, fp16 and bf16, through the three
 * scratch modes: split with the scores pass, unsplit without scratch, and
 * the first version (scores asked for, no scratch).
 */
START_TEST(test_attn_cuda_groups_modes)
{
	static const uint32_t hds[] = { 64, 128, 256 };
	uint64_t seed = kvtest_seed("attn_cuda_groups_modes");
	struct errs worst[3] = { { 0 } };
	int cases = 0;

	for (uint32_t G = 1; G <= KVK_ATTN_MAX_GROUP; G++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++) {
			enum kvk_dtype dt = (G + h) % 2 ? KVK_F16 : KVK_BF16;
			enum run_mode mode = (enum run_mode)((G + h) % 3);
			size_t p = 1 + (G + 2 * h) % (ARRAY_SIZE(pairs) - 1);
			struct attn_case c;
			char what[96];

			attn_case_make(&c, &seed, 3, 2, G, hds[h], pairs[p],
				       700, dt);
			snprintf(what, sizeof(what),
				 "pair %zu hd %u G %u dtype %d mode %d", p,
				 hds[h], G, dt, mode);
			run_case(&c, mode, tol[dt], stol[dt], what, &worst[dt]);
			attn_case_free(&c);
			cases++;
		}
	for (int i = 1; i < 3; i++)
		printf("attn_cuda_groups_modes: dtype %d worst rel L2 out %.3g "
		       "scores %.3g\n", i, worst[i].out, worst[i].scores);
	ck_assert_int_eq(cases, 24);
}
END_TEST

/*
 * One sequence with long contexts: the context is split over many blocks
 * (up to KVK_ATTN_MAX_SPLIT), some of them with no page at all.
 */
START_TEST(test_attn_cuda_long_split)
{
	uint64_t seed = kvtest_seed("attn_cuda_long_split");
	struct errs worst = { 0 };

	for (int i = 0; i < 4; i++) {
		enum kvk_dtype dt = i % 2 ? KVK_BF16 : KVK_F16;
		struct attn_case c;
		char what[96];

		attn_case_make(&c, &seed, 1, 2, 4, 128, pairs[i % 2 ? 1 : 4],
			       12000, dt);
		ck_assert_uint_gt(kvk_attn_splits(&c.a), 8);
		snprintf(what, sizeof(what), "long %d splits %u", i,
			 kvk_attn_splits(&c.a));
		run_case(&c, RUN_SPLIT, tol[dt], stol[dt], what, &worst);
		attn_case_free(&c);
	}
	printf("attn_cuda_long_split: worst rel L2 out %.3g scores %.3g\n",
	       worst.out, worst.scores);
}
END_TEST
#else
START_TEST(test_attn_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_attn_cuda_groups_modes)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_attn_cuda_long_split)
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
	KV_ADD(tc, test_attn_cuda_groups_modes);
	KV_ADD(tc, test_attn_cuda_long_split);
	suite_add_tcase(s, tc);
	return s;
}
