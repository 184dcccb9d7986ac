// SPDX-License-Identifier: MIT
/*
 * attn_common.c - random paged KV pools for the decode-attention tests.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_common.h"
#include "kvq.h"
#include "kvtest.h"

#define GRAN (2ULL << 20)

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

double attn_rel_l2(const float *x, const float *ref, size_t n)
{
	double num = 0, den = 0;

	for (size_t i = 0; i < n; i++) {
		double d = (double)x[i] - ref[i];

		if (isnan(x[i]))
			return INFINITY;
		num += d * d;
		den += (double)ref[i] * ref[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/*
 * Draws token counts per (sequence, head) and tier, gives every list pages
 * at random page ids (high tier from the left of its row, low from the
 * right), and fills every token with random K and V (some heads with a
 * strong key, so that attention is not flat).
 */
void attn_case_make(struct attn_case *c, uint64_t *seed, uint32_t nr_seqs,
		    uint32_t nr_kv_heads, uint32_t group, uint32_t head_dim,
		    const struct kva_tier tiers[2], uint32_t max_tokens,
		    enum kvk_dtype dt)
{
	struct kva_layout l[2];
	struct kvk_attn_tier at[2];
	uint32_t ppg, width, total_pages = 0, *perm, next = 0;
	size_t nq;
	int ps;
	float *qf;

	memset(c, 0, sizeof(*c));
	memcpy(c->tiers, tiers, sizeof(c->tiers));
	ps = kva_page_size(head_dim, tiers, 2);
	ck_assert_int_gt(ps, 0);
	for (int t = 0; t < 2; t++) {
		ck_assert_int_eq(kva_page_layout(head_dim, ps, &tiers[t], &l[t]),
				 0);
		at[t] = kva_attn_tier(&tiers[t], &l[t]);
	}
	ppg = GRAN / ps;
	width = max_tokens / l[0].tokens + max_tokens / l[1].tokens + 4;
	c->nr_lists = (size_t)nr_seqs * nr_kv_heads;
	c->max_tokens = max_tokens;
	c->tables = calloc(c->nr_lists * width, 4);
	c->ntokens = calloc(c->nr_lists * 2, 4);
	c->list_base = calloc(nr_seqs, 4);
	for (uint32_t s = 0; s < nr_seqs; s++)
		c->list_base[s] = s * nr_kv_heads;
	for (size_t i = 0; i < c->nr_lists; i++) {
		uint32_t n = kvtest_rand(seed) % (max_tokens + 1);
		uint32_t hi = (uint32_t)(kvtest_rand(seed) % (n + 1));

		if (kvtest_rand(seed) % 4 == 0)
			hi = n; /* some heads high tier only */
		c->ntokens[2 * i] = hi;
		c->ntokens[2 * i + 1] = n - hi;
		total_pages += (hi + l[0].tokens - 1) / l[0].tokens +
			       (n - hi + l[1].tokens - 1) / l[1].tokens;
	}
	c->pool_bytes = ((total_pages + ppg) / ppg + 1) * GRAN;
	c->pool = aligned_alloc(GRAN, c->pool_bytes);
	ck_assert_ptr_nonnull(c->pool);
	memset(c->pool, 0, c->pool_bytes);
	/* page ids in random order, so lists are scattered over the pool */
	perm = malloc(((c->pool_bytes / GRAN) * ppg) * 4);
	for (uint32_t i = 0; i < (c->pool_bytes / GRAN) * ppg; i++)
		perm[i] = i;
	for (uint32_t i = (c->pool_bytes / GRAN) * ppg - 1; i > 0; i--) {
		uint32_t j = kvtest_rand(seed) % (i + 1), t = perm[i];

		perm[i] = perm[j], perm[j] = t;
	}
	c->k_ref = malloc((size_t)c->nr_lists * max_tokens * head_dim * 4);
	c->v_ref = malloc((size_t)c->nr_lists * max_tokens * head_dim * 4);
	for (size_t li = 0; li < c->nr_lists; li++) {
		uint32_t n_hi = c->ntokens[2 * li], n = n_hi + c->ntokens[2 * li + 1];
		float boost = (float)(kvtest_rand(seed) % 3) * 4.0f;

		for (uint32_t i = 0; i < n; i++) {
			int t = i < n_hi ? 0 : 1;
			uint32_t j = t ? i - n_hi : i;
			uint32_t pi = j / l[t].tokens, slot = j % l[t].tokens;
			uint32_t *e = &c->tables[li * width +
						 (t ? width - 1 - pi : pi)];
			float k[256], v[256], sc;
			int32_t pos;
			uint8_t *page;

			if (slot == 0)
				*e = perm[next++];
			page = c->pool + (*e / ppg) * GRAN +
			       (size_t)(*e % ppg) * ps;
			for (uint32_t d = 0; d < head_dim; d++) {
				k[d] = frand(seed);
				v[d] = frand(seed);
			}
			if (i % 17 == 0)
				for (uint32_t d = 0; d < head_dim; d++)
					k[d] *= 1.0f + boost;
			ck_assert_int_eq(kvq_page_put(page, &at[t], head_dim,
						      slot, k, v,
						      0.25f, (int32_t)i),
					 0);
			ck_assert_int_eq(kvq_page_get(page, &at[t], head_dim,
						      slot,
						      c->k_ref + (li * max_tokens + i) *
								 head_dim,
						      c->v_ref + (li * max_tokens + i) *
								 head_dim,
						      &sc, &pos),
					 0);
		}
	}
	free(perm);
	nq = c->nr_lists * group * head_dim;
	qf = malloc(nq * 4);
	for (size_t i = 0; i < nq; i++)
		qf[i] = frand(seed);
	c->q = malloc(nq * 4);
	c->out = malloc(nq * 4);
	kvk_convert_from_f32(c->q, qf, nq, dt);
	free(qf);
	memset(c->out, 0xff, nq * 4); /* poison */

	c->a.nr_seqs = nr_seqs;
	c->a.nr_kv_heads = nr_kv_heads;
	c->a.group = group;
	c->a.head_dim = head_dim;
	c->a.scale = 1.0f / sqrtf((float)head_dim);
	c->a.dtype = dt;
	c->a.q = c->q;
	c->a.out = c->out;
	c->a.pool = (uint64_t)(uintptr_t)c->pool;
	c->a.page_size = ps;
	c->a.pages_per_granule = ppg;
	c->a.tables = c->tables;
	c->a.width = width;
	c->a.ntokens = c->ntokens;
	c->a.list_base = c->list_base;
	for (int t = 0; t < 2; t++)
		c->a.tier[t] = kva_attn_tier(&tiers[t], &l[t]);
}

/* each token's score, read back through the page layout */
void attn_read_scores(const struct attn_case *c, const uint8_t *pool,
		      float *out)
{
	struct kva_layout l[2];
	uint32_t ps = c->a.page_size, ppg = c->a.pages_per_granule;

	for (int t = 0; t < 2; t++)
		kva_page_layout(c->a.head_dim, ps, &c->tiers[t], &l[t]);
	for (size_t li = 0; li < c->nr_lists; li++) {
		uint32_t n_hi = c->ntokens[2 * li], n = n_hi + c->ntokens[2 * li + 1];

		for (uint32_t i = 0; i < n; i++) {
			int t = i >= n_hi;
			uint32_t j = t ? i - n_hi : i, pi = j / l[t].tokens;
			uint32_t p = c->tables[li * c->a.width +
					       (t ? c->a.width - 1 - pi : pi)];
			const uint8_t *pg = pool + (size_t)(p / ppg) * (2 << 20) +
					    (size_t)(p % ppg) * ps;

			memcpy(&out[li * c->max_tokens + i],
			       pg + l[t].score_off + 4 * (j % l[t].tokens), 4);
		}
	}
}

void attn_case_free(struct attn_case *c)
{
	free(c->pool);
	free(c->tables);
	free(c->ntokens);
	free(c->list_base);
	free(c->q);
	free(c->out);
	free(c->k_ref);
	free(c->v_ref);
}
