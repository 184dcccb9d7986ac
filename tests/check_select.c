// SPDX-License-Identifier: MIT
/*
 * check_select.c - page selection for sparse decode attention (Quest-style)
 * and the page-summary update, CPU references, on random pools
 * (attn_common.h): summaries are exact per-channel minima and maxima,
 * incremental updates equal a rebuild; the bound is a true upper bound of
 * every key's q . k of the page for every query head; top-k with k at
 * least the page count gives dense attention bit for bit; sink, window and
 * last pages are always kept, the rest are the best-bounded; the selected
 * table feeds kvk_attn_decode_cpu() and matches attention computed
 * directly over the kept tokens; bad arguments are refused.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "kvtest.h"
#include "select_common.h"

/* high tier fp16 keys (summaries need 16-bit keys); low tier fp16 or K4V4 */
static const struct kva_tier pairs[][2] = {
	{ { 16, 16, 1, 1 }, { 16, 16, 1, 1 } },
	{ { 16, 16, 1, 1 }, { 4, 4, 2, 2 } },
};

static float sum_get(const void *s, size_t i, enum kvk_dtype dt)
{
	return dt == KVK_F16 ? kvk_f16_to_f32(((const uint16_t *)s)[i])
			     : ((const float *)s)[i];
}

/* summaries of every high-tier page of @c, in @dt; caller frees */
static void *make_summaries(const struct attn_case *c, enum kvk_dtype dt)
{
	size_t bytes = sel_pool_pages(c) *
		       kvk_summary_row_bytes(c->a.head_dim, dt);
	void *s = malloc(bytes);
	uint32_t *upd, nr = sel_hi_updates(c, &upd);
	struct kvk_summary_args u = sel_summary_args(c, s, dt, upd, nr);

	memset(s, 0x7f, bytes); /* poison: rows not written are garbage */
	ck_assert_int_eq(kvk_page_summary_cpu(&u, NULL), 0);
	free(upd);
	return s;
}

static struct kvk_select_args sel_args(const struct attn_case *c,
				       const void *summary, enum kvk_dtype dt,
				       uint32_t topk, uint32_t window,
				       uint32_t sink, uint32_t *tab,
				       uint32_t *ntok)
{
	return (struct kvk_select_args){
		.attn = c->a, .summary = summary, .sum_dtype = dt,
		.topk = topk, .window = window, .sink = sink,
		.sel_tables = tab, .sel_ntokens = ntok,
	};
}

/* the bound of page row @p for query @q, in double */
static double bound_of(const void *s, enum kvk_dtype dt, uint32_t p,
		       const float *q, uint32_t hd)
{
	double b = 0;

	for (uint32_t e = 0; e < hd; e++) {
		double lo = (double)q[e] * sum_get(s, (size_t)p * 2 * hd + e, dt);
		double hi = (double)q[e] *
			    sum_get(s, (size_t)p * 2 * hd + hd + e, dt);

		b += fmax(lo, hi);
	}
	return b;
}

/*
 * Summaries: every channel's min and max over the page's keys, attained,
 * in both dtypes; token-by-token appends (first slot > 0) equal a rebuild.
 */
START_TEST(test_summary_exact)
{
	uint64_t seed = kvtest_seed("summary_exact");

	for (int dti = 0; dti < 2; dti++) {
		enum kvk_dtype dt = dti ? KVK_F16 : KVK_F32;
		struct attn_case c;
		uint32_t hd, T, *upd, nr;
		void *s, *s2;
		size_t rb;

		attn_case_make(&c, &seed, 3, 2, 2, dti ? 64 : 128,
			       pairs[dti], 400, KVK_F32);
		hd = c.a.head_dim, T = c.a.tier[0].tokens;
		rb = kvk_summary_row_bytes(hd, dt);
		s = make_summaries(&c, dt);
		for (size_t li = 0; li < c.nr_lists; li++) {
			uint32_t n = c.ntokens[2 * li];

			for (uint32_t i = 0; i * T < n; i++) {
				uint32_t p = c.tables[li * c.a.width + i];
				uint32_t end = n < (i + 1) * T ? n : (i + 1) * T;

				for (uint32_t e = 0; e < hd; e++) {
					float mn = INFINITY, mx = -INFINITY;

					for (uint32_t t = i * T; t < end; t++) {
						float k = c.k_ref[(li * c.max_tokens + t) * hd + e];

						mn = fminf(mn, k), mx = fmaxf(mx, k);
					}
					ck_assert_float_eq(sum_get(s, (size_t)p * 2 * hd + e, dt), mn);
					ck_assert_float_eq(sum_get(s, (size_t)p * 2 * hd + hd + e, dt), mx);
				}
			}
		}
		/* the same rows, one token at a time */
		s2 = malloc(sel_pool_pages(&c) * rb);
		memset(s2, 0x7f, sel_pool_pages(&c) * rb);
		nr = sel_hi_updates(&c, &upd);
		for (uint32_t i = 0; i < nr; i++) {
			uint32_t cnt = upd[3 * i + 2];

			for (uint32_t t = 0; t < cnt; t++) {
				uint32_t one[3] = { upd[3 * i], t, 1 };
				struct kvk_summary_args u =
					sel_summary_args(&c, s2, dt, one, 1);

				ck_assert_int_eq(kvk_page_summary_cpu(&u, NULL), 0);
			}
			ck_assert_mem_eq((uint8_t *)s2 + upd[3 * i] * rb,
					 (uint8_t *)s + upd[3 * i] * rb, rb);
		}
		free(upd), free(s), free(s2);
		attn_case_free(&c);
	}
}
END_TEST

/* every key of every page: q_g . k <= bound (max over the group) */
START_TEST(test_select_bound_upper)
{
	uint64_t seed = kvtest_seed("select_bound_upper");
	static const uint32_t hds[] = { 64, 128, 256 };
	uint64_t checked = 0;

	for (size_t h = 0; h < ARRAY_SIZE(hds); h++) {
		enum kvk_dtype dt = h % 2 ? KVK_F16 : KVK_F32;
		struct attn_case c;
		uint32_t hd = hds[h], G = 1 + h * 3, T;
		const float *q;
		void *s;

		attn_case_make(&c, &seed, 3, 2, G, hd, pairs[h % 2], 500,
			       KVK_F32);
		T = c.a.tier[0].tokens;
		s = make_summaries(&c, dt);
		q = c.q;
		for (size_t li = 0; li < c.nr_lists; li++) {
			uint32_t n = c.ntokens[2 * li];

			for (uint32_t t = 0; t < n; t++) {
				uint32_t p = c.tables[li * c.a.width + t / T];
				const float *k = c.k_ref + (li * c.max_tokens + t) * hd;
				double bmax = -INFINITY;

				for (uint32_t g = 0; g < G; g++) {
					const float *qq = q + (li * G + g) * hd;
					double d = 0, b = bound_of(s, dt, p, qq, hd);

					for (uint32_t e = 0; e < hd; e++)
						d += (double)qq[e] * k[e];
					ck_assert_msg(d <= b + 1e-9 * fabs(b),
						      "list %zu token %u head %u: "
						      "q.k %g > bound %g", li, t,
						      g, d, b);
					bmax = fmax(bmax, b);
					checked++;
				}
				(void)bmax;
			}
		}
		free(s);
		attn_case_free(&c);
	}
	ck_assert_uint_gt(checked, 0);
}
END_TEST

/* k >= pages: the selected table is the table, attention bit for bit */
START_TEST(test_select_all_is_dense)
{
	uint64_t seed = kvtest_seed("select_all_is_dense");

	for (int i = 0; i < 4; i++) {
		enum kvk_dtype sdt = i % 2 ? KVK_F16 : KVK_F32;
		enum kvk_dtype qdt = (enum kvk_dtype)(i % 3);
		struct attn_case c;
		struct kvk_select_args s;
		struct kvk_attn_args a;
		uint32_t *tab, *ntok, W;
		size_t nq;
		void *sum, *dense;

		attn_case_make(&c, &seed, 3, 2, 1 + i, 64 << (i % 2),
			       pairs[i % 2], 600, qdt);
		W = c.a.width;
		sum = make_summaries(&c, sdt);
		tab = calloc(c.nr_lists * W, 4);
		ntok = calloc(c.nr_lists * 2, 4);
		s = sel_args(&c, sum, sdt, W, (uint32_t)(kvtest_rand(&seed) % 64),
			     (uint32_t)(kvtest_rand(&seed) % 3), tab, ntok);
		ck_assert_int_eq(kvk_select_pages_cpu(&s, NULL), 0);
		ck_assert_mem_eq(ntok, c.ntokens, c.nr_lists * 8);
		for (size_t li = 0; li < c.nr_lists; li++) {
			uint32_t ph = (c.ntokens[2 * li] + c.a.tier[0].tokens - 1) /
				      c.a.tier[0].tokens;
			uint32_t pl = (c.ntokens[2 * li + 1] + c.a.tier[1].tokens - 1) /
				      c.a.tier[1].tokens;

			ck_assert_mem_eq(tab + li * W, c.tables + li * W, ph * 4);
			ck_assert_mem_eq(tab + li * W + W - pl,
					 c.tables + li * W + W - pl, pl * 4);
		}
		nq = c.nr_lists * c.a.group * c.a.head_dim * kvk_dtype_size(qdt);
		ck_assert_int_eq(kvk_attn_decode_cpu(&c.a, NULL), 0);
		dense = malloc(nq);
		memcpy(dense, c.out, nq);
		a = c.a;
		a.tables = tab, a.ntokens = ntok;
		memset(c.out, 0xff, nq);
		ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), 0);
		ck_assert_mem_eq(c.out, dense, nq);
		free(dense), free(sum), free(tab), free(ntok);
		attn_case_free(&c);
	}
}
END_TEST

/*
 * Small k: the first @sink pages, the window's pages and the last page are
 * kept; the others kept are the best-scored (any page left out scores no
 * more than any page kept, within fp32 rounding); the kept count is
 * max(k, forced) capped at the pages; ids keep their order, counts match;
 * and attention on the selection equals attention computed directly over
 * the kept tokens.
 */
START_TEST(test_select_forced_and_topk)
{
	uint64_t seed = kvtest_seed("select_forced_and_topk");
	int sparse = 0;

	for (int i = 0; i < 6; i++) {
		enum kvk_dtype sdt = i % 2 ? KVK_F16 : KVK_F32;
		struct attn_case c;
		struct kvk_select_args s;
		struct kvk_attn_args a;
		uint32_t *tab, *ntok, W, T, G = 1 + i % 4, hd = 128;
		uint32_t topk = 1 + kvtest_rand(&seed) % 12;
		uint32_t window = kvtest_rand(&seed) % 80;
		uint32_t sink = kvtest_rand(&seed) % 3;
		const float *q;
		float *want;
		void *sum;

		attn_case_make(&c, &seed, 2, 3, G, hd, pairs[i % 2], 1500,
			       KVK_F32);
		W = c.a.width, T = c.a.tier[0].tokens;
		q = c.q;
		sum = make_summaries(&c, sdt);
		tab = calloc(c.nr_lists * W, 4);
		ntok = calloc(c.nr_lists * 2, 4);
		s = sel_args(&c, sum, sdt, topk, window, sink, tab, ntok);
		ck_assert_int_eq(kvk_select_pages_cpu(&s, NULL), 0);
		want = calloc(c.nr_lists * G * hd, 4);
		for (size_t li = 0; li < c.nr_lists; li++) {
			uint32_t n = c.ntokens[2 * li], P = (n + T - 1) / T;
			uint32_t fw = n > window ? (n - window) / T : 0;
			uint32_t forced = 0, m = 0, kept = 0;
			uint8_t *keep = calloc(P + 1, 1);
			double minkept = INFINITY, maxleft = -INFINITY;
			const uint32_t *row = c.tables + li * W;

			/* which original pages appear, in order */
			for (uint32_t j = 0; j < P; j++) {
				int f = j < sink || j >= fw || j == P - 1;
				double b = -INFINITY;

				forced += f;
				if (m < P && tab[li * W + m] == row[j])
					keep[j] = 1, m++;
				if (f)
					ck_assert_msg(keep[j], "list %zu page %u forced", li, j);
				for (uint32_t g = 0; !f && g < G; g++)
					b = fmax(b, bound_of(sum, sdt, row[j],
							     q + (li * G + g) * hd, hd));
				if (!f && keep[j])
					minkept = fmin(minkept, b);
				else if (!f)
					maxleft = fmax(maxleft, b);
				kept += keep[j];
			}
			ck_assert_uint_eq(kept, P < (topk > forced ? topk : forced) ? P : (topk > forced ? topk : forced));
			ck_assert_msg(maxleft <= minkept + 1e-4 * (1 + fabs(minkept)),
				      "left %g > kept %g", maxleft, minkept);
			sparse += kept < P;
			ck_assert_uint_eq(ntok[2 * li],
					  P ? (kept - 1) * T + n - (P - 1) * T : 0);
			ck_assert_uint_eq(ntok[2 * li + 1], c.ntokens[2 * li + 1]);
			/* direct attention over the kept tokens, both tiers */
			for (uint32_t g = 0; g < G; g++) {
				uint32_t nt = n + c.ntokens[2 * li + 1];
				const float *qq = q + (li * G + g) * hd;
				double *lg = malloc((nt + 1) * 8), mx = -INFINITY, z = 0;

				for (uint32_t t = 0; t < nt; t++) {
					const float *k = c.k_ref + (li * c.max_tokens + t) * hd;
					double d = 0;

					lg[t] = -INFINITY;
					if (t < n && !keep[t / T])
						continue;
					for (uint32_t e = 0; e < hd; e++)
						d += (double)qq[e] * k[e];
					lg[t] = d * c.a.scale;
					mx = fmax(mx, lg[t]);
				}
				for (uint32_t t = 0; t < nt; t++)
					z += lg[t] == -INFINITY ? 0 : exp(lg[t] - mx);
				for (uint32_t t = 0; t < nt; t++) {
					double p = lg[t] == -INFINITY ? 0 : exp(lg[t] - mx) / z;

					for (uint32_t e = 0; e < hd; e++)
						want[(li * G + g) * hd + e] += (float)(p *
							c.v_ref[(li * c.max_tokens + t) * hd + e]);
				}
				free(lg);
			}
			free(keep);
		}
		a = c.a;
		a.tables = tab, a.ntokens = ntok;
		ck_assert_int_eq(kvk_attn_decode_cpu(&a, NULL), 0);
		ck_assert_msg(attn_rel_l2(c.out, want, c.nr_lists * G * hd) < 1e-5,
			      "sparse attention vs direct: %g",
			      attn_rel_l2(c.out, want, c.nr_lists * G * hd));
		free(want), free(sum), free(tab), free(ntok);
		attn_case_free(&c);
	}
	ck_assert_int_gt(sparse, 0);
}
END_TEST

START_TEST(test_select_bad_args)
{
	uint64_t seed = kvtest_seed("select_bad_args");
	struct attn_case c;
	struct kvk_select_args s, b;
	struct kvk_summary_args u, v;
	uint32_t *tab, *ntok, one[3];
	void *sum;

	attn_case_make(&c, &seed, 2, 2, 2, 128, pairs[1], 300, KVK_F32);
	sum = make_summaries(&c, KVK_F32);
	tab = calloc(c.nr_lists * c.a.width, 4);
	ntok = calloc(c.nr_lists * 2, 4);
	s = sel_args(&c, sum, KVK_F32, 4, 16, 1, tab, ntok);
	ck_assert_int_eq(kvk_select_pages_cpu(&s, NULL), 0);
	b = s, b.topk = 0;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.sum_dtype = KVK_BF16;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.summary = NULL;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.sel_tables = NULL;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.sel_ntokens = NULL;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.attn.head_dim = 96;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	b = s, b.attn.width = KVK_SELECT_MAX_PAGES + 1;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);
	ck_assert_int_eq(kvk_select_pages_cpu(NULL, NULL), -EINVAL);
	b = s, b.attn.width = 1; /* counts need more pages than the row holds */
	c.ntokens[0] = 100, c.ntokens[1] = 100;
	ck_assert_int_eq(kvk_select_pages_cpu(&b, NULL), -EINVAL);

	one[0] = c.tables[0], one[1] = 0, one[2] = 1;
	u = sel_summary_args(&c, sum, KVK_F32, one, 1);
	ck_assert_int_eq(kvk_page_summary_cpu(&u, NULL), 0);
	v = u, v.tier = c.a.tier[1]; /* 4-bit keys */
	ck_assert_int_eq(kvk_page_summary_cpu(&v, NULL), -EINVAL);
	v = u, v.sum_dtype = KVK_BF16;
	ck_assert_int_eq(kvk_page_summary_cpu(&v, NULL), -EINVAL);
	v = u, v.head_dim = 96;
	ck_assert_int_eq(kvk_page_summary_cpu(&v, NULL), -EINVAL);
	v = u, v.upd = NULL;
	ck_assert_int_eq(kvk_page_summary_cpu(&v, NULL), -EINVAL);
	v = u, v.tier.tokens = 1u << 20; /* keys past the page */
	ck_assert_int_eq(kvk_page_summary_cpu(&v, NULL), -EINVAL);
	one[1] = c.a.tier[0].tokens; /* slots past the page's tokens */
	ck_assert_int_eq(kvk_page_summary_cpu(&u, NULL), -EINVAL);
	free(sum), free(tab), free(ntok);
	attn_case_free(&c);
}
END_TEST

Suite *suite_select(void)
{
	Suite *s = suite_create("select");
	TCase *tc = tcase_create("pages");

	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_summary_exact);
	KV_ADD(tc, test_select_bound_upper);
	KV_ADD(tc, test_select_all_is_dense);
	KV_ADD(tc, test_select_forced_and_topk);
	KV_ADD(tc, test_select_bad_args);
	suite_add_tcase(s, tc);
	return s;
}
