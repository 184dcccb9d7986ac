// SPDX-License-Identifier: MIT
/*
 * check_attn.c - decode attention, CPU reference, against attention
 * computed in double precision straight from the dequantized tokens (read
 * back through kvq_page_get(), a separate path), over random pools of many
 * tier pairs, head_dims and GQA ratios; the score update: with one query
 * head per group each head's scores gain exactly 1 in total; and the CUDA
 * kernel's split count and scratch layout.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_common.h"
#include "kvmm_base.h"
#include "kvq.h"
#include "kvtest.h"

static const struct kva_tier pairs[][2] = {
	{ { 16, 16, 1, 1 }, { 16, 16, 1, 1 } },	/* fp16 baseline */
	{ { 8, 4, 1, 2 }, { 4, 2, 2, 4 } },	/* DiffKV K8V4 / K4V2 */
	{ { 8, 4, 1, 1 }, { 4, 2, 1, 1 } },
	{ { 8, 8, 1, 1 }, { 2, 1, 4, 4 } },
	{ { 16, 16, 1, 1 }, { 4, 4, 2, 2 } },
};

static void expect(const struct attn_case *c, float *want, float *score_add,
		   int mode)
{
	const struct kvk_attn_args *a = &c->a;
	uint32_t hd = a->head_dim, G = a->group;
	const float *q = c->q;

	for (size_t li = 0; li < c->nr_lists; li++) {
		uint32_t n = c->ntokens[2 * li] + c->ntokens[2 * li + 1];

		for (uint32_t g = 0; g < G; g++) {
			const float *qq = q + (li * G + g) * hd;
			float *o = want + (li * G + g) * hd;
			double *lg = malloc((n + 1) * sizeof(double)), mx = -INFINITY,
			       sum = 0;

			for (uint32_t i = 0; i < n; i++) {
				const float *k = c->k_ref +
						 (li * c->max_tokens + i) * hd;
				double d = 0;

				for (uint32_t e = 0; e < hd; e++)
					d += (double)qq[e] * k[e];
				lg[i] = d * a->scale;
				mx = fmax(mx, lg[i]);
			}
			for (uint32_t i = 0; i < n; i++)
				sum += exp(lg[i] - mx);
			for (uint32_t e = 0; e < hd; e++) {
				double acc = 0;

				for (uint32_t i = 0; i < n; i++)
					acc += exp(lg[i] - mx) / sum *
					       c->v_ref[(li * c->max_tokens + i) * hd + e];
				o[e] = (float)acc;
			}
			for (uint32_t i = 0; score_add && i < n; i++) {
				float p = (float)(exp(lg[i] - mx) / sum);
				float *s = &score_add[li * c->max_tokens + i];

				/* max of p (DiffKV) or sum of p^2 (KV-Compress) */
				if (mode == KVK_ATTN_SCORE_SUMSQ)
					*s = (g ? *s : 0.0f) + p * p;
				else
					*s = g ? fmaxf(*s, p) : p;
			}
			free(lg);
		}
	}
}

START_TEST(test_attn_cpu_vs_direct)
{
	static const uint32_t hds[] = { 64, 128, 256 }, groups[] = { 1, 4, 8 };
	uint64_t seed = kvtest_seed("attn_cpu_vs_direct");
	int cases = 0;

	for (size_t p = 0; p < ARRAY_SIZE(pairs); p++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++) {
			struct attn_case c;
			uint32_t G = groups[(p + h) % 3];
			size_t n;
			float *want, *got, *add, *before, *after;
			double err;

			attn_case_make(&c, &seed, 3, 2, G, hds[h], pairs[p], 300,
				       KVK_F32);
			n = c.nr_lists * G * hds[h];
			want = malloc(n * 4);
			add = calloc(c.nr_lists * c.max_tokens, 4);
			before = calloc(c.nr_lists * c.max_tokens, 4);
			after = calloc(c.nr_lists * c.max_tokens, 4);
			/* both score modes, alternately */
			c.a.update_scores = cases % 2 ? KVK_ATTN_SCORE_SUMSQ
						      : KVK_ATTN_SCORE_MAX;
			expect(&c, want, add, c.a.update_scores);
			attn_read_scores(&c, c.pool, before);
			ck_assert_int_eq(kvk_attn_decode_cpu(&c.a, NULL), 0);
			got = c.out;
			err = attn_rel_l2(got, want, n);
			ck_assert_msg(err < 1e-5, "pair %zu hd %u G %u: rel L2 %g",
				      p, hds[h], G, err);
			attn_read_scores(&c, c.pool, after);
			for (size_t i = 0; i < c.nr_lists * c.max_tokens; i++)
				ck_assert_msg(fabsf(after[i] - before[i] - add[i]) <
						      1e-6f + 1e-5f * add[i],
					      "score %zu: +%g, want +%g", i,
					      after[i] - before[i], add[i]);
			free(want), free(add), free(before), free(after);
			attn_case_free(&c);
			cases++;
		}
	ck_assert_int_eq(cases, 15);
}
END_TEST

/*
 * the host caches' path (kvk_attn_decode_host(): fp32 vectors for fp16
 * tiers, the reference for others) against the same double-precision
 * attention, scores included, and against the reference on the same call;
 * every tier pair, head_dim and GQA ratio 1..8 on the fp16 pair
 */
START_TEST(test_attn_host_vs_direct)
{
	static const uint32_t hds[] = { 64, 128, 256 };
	static const uint32_t groups[] = { 1, 2, 3, 4, 5, 8 };
	uint64_t seed = kvtest_seed("attn_host_vs_direct");
	int cases = 0;

	for (size_t p = 0; p < ARRAY_SIZE(pairs); p++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++)
			for (size_t gi = 0; gi < ARRAY_SIZE(groups); gi++) {
				struct attn_case c;
				uint32_t G = groups[gi];
				size_t n, ns;
				float *want, *host, *add, *before, *after;
				double err;

				if (p && gi != (p + h) % ARRAY_SIZE(groups))
					continue; /* others: one ratio each */
				attn_case_make(&c, &seed, 3, 2, G, hds[h],
					       pairs[p], 300, KVK_F32);
				n = c.nr_lists * G * hds[h];
				ns = c.nr_lists * c.max_tokens;
				want = malloc(n * 4);
				host = malloc(n * 4);
				add = calloc(ns, 4);
				before = calloc(ns, 4);
				after = calloc(ns, 4);
				c.a.update_scores = cases % 2 ?
					KVK_ATTN_SCORE_SUMSQ : KVK_ATTN_SCORE_MAX;
				expect(&c, want, add, c.a.update_scores);
				attn_read_scores(&c, c.pool, before);
				ck_assert_int_eq(kvk_attn_decode_host(&c.a, NULL),
						 0);
				memcpy(host, c.out, n * 4);
				err = attn_rel_l2(host, want, n);
				ck_assert_msg(err < 1e-5,
					      "pair %zu hd %u G %u: rel L2 %g",
					      p, hds[h], G, err);
				attn_read_scores(&c, c.pool, after);
				for (size_t i = 0; i < ns; i++)
					ck_assert_msg(fabsf(after[i] - before[i] -
							    add[i]) <
						      1e-6f + 1e-5f * add[i],
						      "score %zu: +%g, want +%g",
						      i, after[i] - before[i],
						      add[i]);
				/* the reference on the same call */
				ck_assert_int_eq(kvk_attn_decode_cpu(&c.a, NULL),
						 0);
				err = attn_rel_l2(host, c.out, n);
				ck_assert_msg(err < 1e-5, "pair %zu hd %u G %u: "
					      "rel L2 %g from the reference",
					      p, hds[h], G, err);
				free(want), free(host), free(add);
				free(before), free(after);
				attn_case_free(&c);
				cases++;
			}
	ck_assert_int_eq(cases, 3 * 6 + 4 * 3);
}
END_TEST

/* with one query head per kv-head, a head's probabilities sum to one */
START_TEST(test_scores_sum_to_one)
{
	uint64_t seed = kvtest_seed("scores_sum_to_one");
	struct attn_case c;
	float *before, *after;

	attn_case_make(&c, &seed, 4, 2, 1, 128, pairs[1], 500, KVK_F32);
	before = calloc(c.nr_lists * c.max_tokens, 4);
	after = calloc(c.nr_lists * c.max_tokens, 4);
	attn_read_scores(&c, c.pool, before);
	c.a.update_scores = 1;
	ck_assert_int_eq(kvk_attn_decode_cpu(&c.a, NULL), 0);
	attn_read_scores(&c, c.pool, after);
	for (size_t li = 0; li < c.nr_lists; li++) {
		uint32_t n = c.ntokens[2 * li] + c.ntokens[2 * li + 1];
		double sum = 0;

		for (uint32_t i = 0; i < n; i++)
			sum += after[li * c.max_tokens + i] -
			       before[li * c.max_tokens + i];
		if (n)
			ck_assert_msg(fabs(sum - 1.0) < 1e-4, "list %zu: %g",
				      li, sum);
	}
	free(before), free(after);
	attn_case_free(&c);
}
END_TEST

START_TEST(test_attn_bad_args)
{
	uint64_t seed = kvtest_seed("attn_bad_args");
	struct attn_case c;
	struct kvk_attn_args a;

	attn_case_make(&c, &seed, 2, 2, 2, 128, pairs[1], 100, KVK_F32);
	a = c.a;
	a.head_dim = 96;
	ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.group = KVK_ATTN_MAX_GROUP + 1;
	ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.tier[1].kbits = 3;
	ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.tier[0].tokens = 1000; /* segments past the page */
	ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.width = 1; /* counts need more pages than the row holds */
	c.ntokens[0] = 100, c.ntokens[1] = 100;
	ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), -EINVAL);
	attn_case_free(&c);
}
END_TEST

/*
 * The CUDA kernel's split count and scratch layout (host functions): splits
 * within bounds and filling about KVK_ATTN_TARGET_BLOCKS blocks, the parts
 * of the scratch disjoint, in order and sized for their contents; no
 * scratch when unsplit without scores.
 */
START_TEST(test_attn_work_layout)
{
	uint64_t seed = kvtest_seed("attn_work_layout");
	struct attn_case c;
	struct kvk_attn_work w;
	static const uint32_t seqs[] = { 1, 3, 64, 500 };

	attn_case_make(&c, &seed, 2, 2, 4, 128, pairs[1], 400, KVK_F32);
	for (size_t i = 0; i < ARRAY_SIZE(seqs); i++) {
		struct kvk_attn_args a = c.a;
		uint32_t n, pairs_n;
		size_t heads;

		a.nr_seqs = seqs[i];
		a.nr_kv_heads = 8;
		a.width = 1 + kvtest_rand(&seed) % 2000;
		pairs_n = a.nr_seqs * a.nr_kv_heads;
		heads = (size_t)pairs_n * a.group;
		n = kvk_attn_splits(&a);
		ck_assert_uint_ge(n, 1);
		ck_assert_uint_le(n, KVK_ATTN_MAX_SPLIT);
		ck_assert_uint_le(n, (a.width + 7) / 8 > 1 ? (a.width + 7) / 8 : 1);
		if (n < KVK_ATTN_MAX_SPLIT && n < (a.width + 7) / 8)
			ck_assert_uint_ge((uint64_t)n * pairs_n,
					  KVK_ATTN_TARGET_BLOCKS);
		for (int sc = 0; sc < 2; sc++) {
			a.update_scores = sc;
			kvk_attn_work_layout(&a, n, &w);
			ck_assert_uint_eq(w.splits, n);
			ck_assert_uint_eq(w.tstride % 16, 0);
			ck_assert_uint_ge(w.tstride, a.tier[0].tokens);
			ck_assert_uint_ge(w.tstride, a.tier[1].tokens);
			ck_assert_uint_ge(w.ml_off - w.acc_off,
					  n > 1 ? heads * n * 128 * 4 : 0);
			ck_assert_uint_ge(w.lse_off - w.ml_off,
					  n > 1 ? heads * n * 8 : 0);
			ck_assert_uint_ge(w.logit_off - w.lse_off,
					  sc ? heads * 4 : 0);
			ck_assert_uint_eq(w.bytes - w.logit_off,
					  sc ? heads * a.width * w.tstride * 4 : 0);
			ck_assert_uint_eq(kvk_attn_work_bytes(&a), w.bytes);
			kvk_attn_work_layout(&a, 1, &w);
			if (!sc)
				ck_assert_uint_eq(w.bytes, 0);
		}
	}
	attn_case_free(&c);
}
END_TEST

Suite *suite_attn(void)
{
	Suite *s = suite_create("attn");
	TCase *tc = tcase_create("decode");

	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_attn_cpu_vs_direct);
	KV_ADD(tc, test_attn_host_vs_direct);
	KV_ADD(tc, test_scores_sum_to_one);
	KV_ADD(tc, test_attn_bad_args);
	KV_ADD(tc, test_attn_work_layout);
	suite_add_tcase(s, tc);
	return s;
}
