// SPDX-License-Identifier: MIT
/*
 * select.c - CPU references of the page selection for sparse decode
 * attention and of the page-summary update (select.h).
 *
 * Both backends compute a page's bound in the same order with the same
 * roundings (a product per channel, the larger of the two, added in
 * channel order, in fp32, no fused multiply-add), so their selections are
 * identical, not merely close.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvq.h"
#include "select.h"

#define KVK_GRANULE (2ULL << 20)

/**
 * kvk_select_check() - validate page-selection arguments
 * @s: arguments
 *
 * @s->attn must pass kvk_attn_check() (it is the dense call the selection
 * is made for), its width be at most KVK_SELECT_MAX_PAGES, the summaries
 * fp32 or fp16, @s->topk at least 1 and both outputs given.
 *
 * Return: 0 or -EINVAL.
 */
int kvk_select_check(const struct kvk_select_args *s)
{
	if (!s || kvk_attn_check(&s->attn))
		return -EINVAL;
	if (!s->summary || !s->sel_tables || !s->sel_ntokens || !s->topk ||
	    (s->sum_dtype != KVK_F32 && s->sum_dtype != KVK_F16) ||
	    s->attn.width > KVK_SELECT_MAX_PAGES)
		return -EINVAL;
	return 0;
}

static float sum_load(const void *p, size_t i, enum kvk_dtype dt)
{
	return dt == KVK_F16 ? kvk_f16_to_f32(((const uint16_t *)p)[i])
			     : ((const float *)p)[i];
}

/* page @page's score: the max over the group of the bound of q_g . k */
static float page_score(const struct kvk_select_args *s, const float *q,
			uint32_t page)
{
	uint32_t hd = s->attn.head_dim;
	size_t row = (size_t)page * 2 * hd;
	float best = -INFINITY;

	for (uint32_t g = 0; g < s->attn.group; g++) {
		const float *qq = q + (size_t)g * hd;
		float acc = 0.0f;

		for (uint32_t e = 0; e < hd; e++) {
			float lo = qq[e] * sum_load(s->summary, row + e,
						    s->sum_dtype);
			float hi = qq[e] * sum_load(s->summary, row + hd + e,
						    s->sum_dtype);

			acc += fmaxf(lo, hi);
		}
		best = fmaxf(best, acc);
	}
	return best;
}

struct ranked {
	float score;
	uint32_t idx;
};

/* higher score first, ties to the lower index (the CUDA kernel's order) */
static int ranked_cmp(const void *pa, const void *pb)
{
	const struct ranked *a = pa, *b = pb;

	if (a->score > b->score)
		return -1;
	if (b->score > a->score)
		return 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* one list: @keep[0..pages) filled, 1 for kept */
static void select_list(const struct kvk_select_args *s, const float *q,
			const uint32_t *row, uint32_t n_hi, uint32_t pages,
			uint8_t *keep, struct ranked *rk)
{
	uint32_t T = s->attn.tier[0].tokens, forced = 0, nr = 0, first_win;

	first_win = n_hi > s->window ? (n_hi - s->window) / T : 0;
	for (uint32_t i = 0; i < pages; i++) {
		keep[i] = i < s->sink || i >= first_win || i == pages - 1;
		if (keep[i])
			forced++;
		else
			rk[nr++] = (struct ranked){ page_score(s, q, row[i]), i };
	}
	if (s->topk <= forced)
		return;
	qsort(rk, nr, sizeof(*rk), ranked_cmp);
	for (uint32_t i = 0; i < nr && i < s->topk - forced; i++)
		keep[rk[i].idx] = 1;
}

/**
 * kvk_select_pages_cpu() - choose the pages each list attends, CPU reference
 * @s: arguments; every address is a host pointer
 * @stream: ignored
 *
 * For each sequence and kv-head: the high tier's pages are the forced ones
 * (the first @s->sink, those holding the last @s->window tokens, the last
 * page) and the best @s->topk - forced others by score (select.h); the kept
 * ids are written in their original order, so the last page, the only one
 * that may be partial, stays last and the token counts stay consistent
 * with the table. The low tier is copied through.
 *
 * Return: 0, -EINVAL for bad arguments or a list with more pages than its
 * row holds, -ENOMEM.
 */
int kvk_select_pages_cpu(const struct kvk_select_args *s, void *stream)
{
	const struct kvk_attn_args *a;
	uint32_t hd, nq, W;
	float *q = NULL;
	uint8_t *keep = NULL;
	struct ranked *rk = NULL;
	size_t qn;
	int ret;

	(void)stream;
	ret = kvk_select_check(s);
	if (ret)
		return ret;
	a = &s->attn;	/* not before the check: @s may be NULL */
	hd = a->head_dim;
	nq = a->nr_kv_heads * a->group;
	W = a->width;
	qn = (size_t)a->nr_seqs * nq * hd;
	q = malloc((qn + 1) * sizeof(float));
	keep = malloc(W);
	rk = malloc(W * sizeof(*rk));
	if (!q || !keep || !rk) {
		ret = -ENOMEM;
		goto out;
	}
	ret = kvk_convert_to_f32(q, a->q, qn, a->dtype);
	for (uint32_t sq = 0; !ret && sq < a->nr_seqs; sq++) {
		for (uint32_t h = 0; h < a->nr_kv_heads; h++) {
			uint32_t list = a->list_base[sq] + h;
			uint32_t n_hi = a->ntokens[2 * list];
			uint32_t n_lo = a->ntokens[2 * list + 1];
			uint32_t T = a->tier[0].tokens;
			uint32_t p_hi = (n_hi + T - 1) / T;
			uint32_t p_lo = (n_lo + a->tier[1].tokens - 1) /
					a->tier[1].tokens;
			const uint32_t *row = a->tables + (size_t)list * W;
			uint32_t *out = s->sel_tables + (size_t)list * W;
			uint32_t m = 0;

			if ((uint64_t)p_hi + p_lo > W) {
				ret = -EINVAL;
				break;
			}
			select_list(s, q + ((size_t)sq * nq + h * a->group) * hd,
				    row, n_hi, p_hi, keep, rk);
			for (uint32_t i = 0; i < p_hi; i++)
				if (keep[i])
					out[m++] = row[i];
			for (uint32_t j = 0; j < p_lo; j++)
				out[W - 1 - j] = row[W - 1 - j];
			s->sel_ntokens[2 * list] =
				p_hi ? (m - 1) * T + (n_hi - (p_hi - 1) * T) : 0;
			s->sel_ntokens[2 * list + 1] = n_lo;
		}
	}
out:
	free(q);
	free(keep);
	free(rk);
	return ret;
}

/**
 * kvk_summary_check() - validate page-summary arguments
 * @u: arguments
 *
 * Return: 0, or -EINVAL: keys not 16-bit, a key segment past the page, no
 * summaries or entries, summaries neither fp32 nor fp16.
 */
int kvk_summary_check(const struct kvk_summary_args *u)
{
	if (!u || !u->pool || !u->summary || (u->nr && !u->upd))
		return -EINVAL;
	if ((u->head_dim != 64 && u->head_dim != 128 && u->head_dim != 256) ||
	    !u->page_size || !u->pages_per_granule ||
	    (uint64_t)u->page_size * u->pages_per_granule > KVK_GRANULE ||
	    (u->sum_dtype != KVK_F32 && u->sum_dtype != KVK_F16))
		return -EINVAL;
	if (u->tier.kbits != 16 || !u->tier.tokens ||
	    u->tier.k_off + (uint64_t)u->tier.tokens * u->head_dim * 2 >
		    u->page_size)
		return -EINVAL;
	return 0;
}

static void sum_store(void *p, size_t i, float v, enum kvk_dtype dt)
{
	if (dt == KVK_F16)
		((uint16_t *)p)[i] = kvk_f32_to_f16(v); /* exact: v was fp16 */
	else
		((float *)p)[i] = v;
}

/**
 * kvk_page_summary_cpu() - fold appended keys into page summaries, CPU
 * reference
 * @u: arguments; every address is a host pointer
 * @stream: ignored
 *
 * For each entry (page, first, count): channel by channel, the min and max
 * of the keys in slots [first, first + count), with the row's current
 * values unless first is 0.
 *
 * Return: 0, or -EINVAL for bad arguments or slots past the page's tokens
 * (the CUDA kernel clips them instead).
 */
int kvk_page_summary_cpu(const struct kvk_summary_args *u, void *stream)
{
	uint32_t hd;
	int ret;

	(void)stream;
	ret = kvk_summary_check(u);
	if (ret)
		return ret;
	hd = u->head_dim;
	for (uint32_t i = 0; i < u->nr; i++) {
		uint32_t page = u->upd[3 * i], first = u->upd[3 * i + 1];
		uint32_t count = u->upd[3 * i + 2];
		const uint8_t *pg = (const uint8_t *)(uintptr_t)(
			u->pool + (page / u->pages_per_granule) * KVK_GRANULE +
			(uint64_t)(page % u->pages_per_granule) * u->page_size);
		const uint16_t *k = (const uint16_t *)(pg + u->tier.k_off);
		size_t row = (size_t)page * 2 * hd;

		if ((uint64_t)first + count > u->tier.tokens)
			return -EINVAL;
		for (uint32_t e = 0; e < hd; e++) {
			float mn = first ? sum_load(u->summary, row + e,
						    u->sum_dtype) : INFINITY;
			float mx = first ? sum_load(u->summary, row + hd + e,
						    u->sum_dtype) : -INFINITY;

			for (uint32_t t = first; t < first + count; t++) {
				float x = kvk_f16_to_f32(k[(size_t)t * hd + e]);

				mn = fminf(mn, x);
				mx = fmaxf(mx, x);
			}
			sum_store(u->summary, row + e, mn, u->sum_dtype);
			sum_store(u->summary, row + hd + e, mx, u->sum_dtype);
		}
	}
	return 0;
}
