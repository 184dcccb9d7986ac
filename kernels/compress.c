// SPDX-License-Identifier: MIT
/*
 * compress.c - CPU reference of compress-and-append, prompt and decode
 * phases (see compress.h).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "kvq.h"

#define KVC_GRANULE (2ULL << 20)

/**
 * DOC: compress-and-append
 *
 * Prompt phase, per (sequence, kv-head), for a prompt of len tokens: token
 * t's mean score is its score sum divided by the queries that summed into
 * it, min(W, len - t); the last @window tokens are high; otherwise a mean
 * below alpha_prune / len prunes the token, below alpha_quant / len makes
 * it low, else high (DiffKV). High tokens fill the row's pages from the
 * left in position order, low tokens the pages right after them, in
 * position order. A first pass counts (and checks the reservation), a
 * second writes, only when every list of the call fits.
 *
 * Decode phase, per (sequence, kv-head), at position p: every stored token
 * whose score sums at least max(window, 1) queries (p - field) is a
 * candidate; its mean is score / (p - field). The high and low candidates
 * of least mean (ties: the lower tier index) are the victims. With
 * thresholds alpha / p, kvk_decode_choose() picks one of DiffKV's four
 * actions (enum kvk_compress_op): at most one demotion and one prune per
 * head per step. A pruned or demoted high token's slot is reused at once
 * by the new token, a pruned low token's slot by the demoted one, so no
 * token moves but the victim and the tiers never hold holes. Only
 * KVK_OP_APPEND and KVK_OP_DEMOTE grow a tier; each needs a free slot in
 * its tier's last page (kva_append() provides one), else the head reports
 * KVK_OP_NO_ROOM and the call fails with -ENOSPC before writing anything.
 */

static int fmt_ok(const struct kvk_attn_tier *t, uint32_t hd,
		  uint32_t page_size)
{
	if (kvq_format_valid(hd, t->kbits, t->kgroups) ||
	    kvq_format_valid(hd, t->vbits, t->vgroups) || !t->tokens)
		return 0;
	return t->k_off + t->tokens * kvq_row_bytes(hd, t->kbits) <=
		       page_size &&
	       t->km_off + t->tokens * kvq_meta_bytes(t->kbits, t->kgroups) <=
		       page_size &&
	       t->v_off + t->tokens * kvq_row_bytes(hd, t->vbits) <=
		       page_size &&
	       t->vm_off + t->tokens * kvq_meta_bytes(t->vbits, t->vgroups) <=
		       page_size &&
	       t->score_off + 4 * t->tokens <= page_size &&
	       t->pos_off + 4 * t->tokens <= page_size;
}

static int pages_ok(const struct kvk_compress_pages *pg, uint32_t hd)
{
	return pg->pool && pg->tables && pg->list_base && pg->width &&
	       pg->page_size && pg->pages_per_granule &&
	       (uint64_t)pg->page_size * pg->pages_per_granule <= KVC_GRANULE &&
	       fmt_ok(&pg->tier[0], hd, pg->page_size) &&
	       fmt_ok(&pg->tier[1], hd, pg->page_size);
}

static int alpha_ok(float ap, float aq)
{
	return ap >= 0.0f && aq >= ap && isfinite(aq);
}

/**
 * kvk_compress_prompt_check() - validate prompt-phase arguments
 * @a: arguments (host struct; pointers not dereferenced)
 *
 * Return: 0 or -EINVAL.
 */
int kvk_compress_prompt_check(const struct kvk_compress_prompt *a)
{
	if (!a || !a->k || !a->v || !a->seq_start || !a->scores || !a->counts ||
	    !a->err || !a->nr_kv_heads)
		return -EINVAL;
	if (a->dtype >= KVK_DTYPE_NR || !a->score_window ||
	    !alpha_ok(a->alpha_prune, a->alpha_quant) ||
	    !pages_ok(&a->pg, a->head_dim))
		return -EINVAL;
	return 0;
}

/**
 * kvk_compress_decode_check() - validate decode-phase arguments
 * @a: arguments (host struct; pointers not dereferenced)
 *
 * Return: 0 or -EINVAL.
 */
int kvk_compress_decode_check(const struct kvk_compress_decode *a)
{
	if (!a || !a->k || !a->v || !a->pos || !a->npages || !a->ntokens ||
	    !a->actions || !a->err || !a->nr_kv_heads)
		return -EINVAL;
	if (a->dtype >= KVK_DTYPE_NR ||
	    !alpha_ok(a->alpha_prune, a->alpha_quant) ||
	    !pages_ok(&a->pg, a->head_dim))
		return -EINVAL;
	return 0;
}

static uint8_t *page_addr(const struct kvk_compress_pages *pg, uint32_t p)
{
	return (uint8_t *)(uintptr_t)(pg->pool +
				      (p / pg->pages_per_granule) *
					      KVC_GRANULE +
				      (uint64_t)(p % pg->pages_per_granule) *
					      pg->page_size);
}

/* token @slot of @page in tier @t: quantize and store k, v, score, pos */
static void put_token(uint8_t *page, const struct kvk_attn_tier *t, uint32_t hd,
		      uint32_t slot, const float *k, const float *v,
		      float score, int32_t pos)
{
	kvq_quantize_row(
		k, hd, t->kbits, t->kgroups,
		page + t->k_off + slot * kvq_row_bytes(hd, t->kbits),
		(uint16_t *)(page + t->km_off +
			     slot * kvq_meta_bytes(t->kbits, t->kgroups)));
	kvq_quantize_row(
		v, hd, t->vbits, t->vgroups,
		page + t->v_off + slot * kvq_row_bytes(hd, t->vbits),
		(uint16_t *)(page + t->vm_off +
			     slot * kvq_meta_bytes(t->vbits, t->vgroups)));
	memcpy(page + t->score_off + 4 * slot, &score, 4);
	memcpy(page + t->pos_off + 4 * slot, &pos, 4);
}

static void get_token(const uint8_t *page, const struct kvk_attn_tier *t,
		      uint32_t hd, uint32_t slot, float *k, float *v,
		      float *score, int32_t *pos)
{
	kvq_dequantize_row(
		page + t->k_off + slot * kvq_row_bytes(hd, t->kbits),
		(const uint16_t *)(page + t->km_off +
				   slot * kvq_meta_bytes(t->kbits, t->kgroups)),
		hd, t->kbits, t->kgroups, k);
	kvq_dequantize_row(
		page + t->v_off + slot * kvq_row_bytes(hd, t->vbits),
		(const uint16_t *)(page + t->vm_off +
				   slot * kvq_meta_bytes(t->vbits, t->vgroups)),
		hd, t->vbits, t->vgroups, v);
	memcpy(score, page + t->score_off + 4 * slot, 4);
	memcpy(pos, page + t->pos_off + 4 * slot, 4);
}

static void load_vec(float *dst, const void *src, size_t at, uint32_t n,
		     enum kvk_dtype dt)
{
	kvk_convert_to_f32(dst, (const uint8_t *)src + at * kvk_dtype_size(dt),
			   n, dt);
}

static void seq_alphas(const float *seq_alpha, float ap, float aq, uint32_t s,
		       float *p, float *q)
{
	*p = seq_alpha ? seq_alpha[2 * s] : ap;
	*q = seq_alpha ? seq_alpha[2 * s + 1] : aq;
}

/**
 * kvk_compress_prompt_cpu() - prompt-phase compress-and-append (reference)
 * @a: arguments, host memory
 * @stream: ignored
 *
 * See struct kvk_compress_prompt and DOC: compress-and-append.
 *
 * Return: 0 (the outcome is in *@a->err), or -EINVAL for bad arguments
 * (also a prompt longer than @a->max_len).
 */
int kvk_compress_prompt_cpu(const struct kvk_compress_prompt *a, void *stream)
{
	const struct kvk_compress_pages *pg = &a->pg;
	uint32_t hd = a->head_dim, nkv = a->nr_kv_heads;
	uint32_t tpp0 = pg->tier[0].tokens, tpp1 = pg->tier[1].tokens;
	float *k, *v;
	int32_t err = 0;

	(void)stream;
	if (kvk_compress_prompt_check(a))
		return -EINVAL;
	for (uint32_t s = 0; s < a->nr_seqs; s++)
		if (a->seq_start[s + 1] < a->seq_start[s] ||
		    a->seq_start[s + 1] - a->seq_start[s] > a->max_len)
			return -EINVAL;
	/* pass 1: count and check */
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		uint32_t b = a->seq_start[s], len = a->seq_start[s + 1] - b;
		float ap, aq;

		seq_alphas(a->seq_alpha, a->alpha_prune, a->alpha_quant, s, &ap,
			   &aq);
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t c[KVK_TOK_NR] = {0}, list, need;

			for (uint32_t t = 0; t < len; t++)
				c[kvk_tok_classify(
					a->scores[(size_t)(b + t) * nkv + h], t,
					len, a->score_window, a->window,
					a->sinks, ap, aq)]++;
			memcpy(&a->counts[((size_t)s * nkv + h) * KVK_TOK_NR],
			       c, sizeof(c));
			list = pg->list_base[s] + h;
			need = (c[0] + tpp0 - 1) / tpp0 +
			       (c[1] + tpp1 - 1) / tpp1;
			/* the smaller code wins, as atomicMin() on the GPU */
			if (need > pg->width)
				err = err < -E2BIG ? err : -E2BIG;
			else if (a->npages && need > a->npages[2 * list])
				err = -ENOSPC;
		}
	}
	*a->err = err;
	if (err)
		return 0;
	if (a->ntokens)
		for (uint32_t s = 0; s < a->nr_seqs; s++)
			for (uint32_t h = 0; h < nkv; h++) {
				const uint32_t *c =
					&a->counts[((size_t)s * nkv + h) *
						   KVK_TOK_NR];
				uint32_t list = pg->list_base[s] + h;

				a->ntokens[2 * list] = c[0];
				a->ntokens[2 * list + 1] = c[1];
			}
	/* pass 2: write, in position order within each tier */
	k = malloc(2 * hd * sizeof(*k));
	if (!k)
		return -ENOMEM;
	v = k + hd;
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		uint32_t b = a->seq_start[s], len = a->seq_start[s + 1] - b;
		float ap, aq;

		seq_alphas(a->seq_alpha, a->alpha_prune, a->alpha_quant, s, &ap,
			   &aq);
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t n_hi =
				a->counts[((size_t)s * nkv + h) * KVK_TOK_NR];
			uint32_t kh = (n_hi + tpp0 - 1) / tpp0, r[2] = {0, 0};
			const uint32_t *row =
				&pg->tables[(size_t)(pg->list_base[s] + h) *
					    pg->width];

			for (uint32_t t = 0; t < len; t++) {
				size_t at = (size_t)(b + t) * nkv + h;
				float sc = a->scores[at];
				int c = kvk_tok_classify(sc, t, len,
							 a->score_window,
							 a->window, a->sinks,
							 ap, aq);
				uint32_t i, p;

				if (c == KVK_TOK_PRUNED)
					continue;
				i = r[c]++;
				p = c == KVK_TOK_HIGH ? row[i / tpp0]
						      : row[kh + i / tpp1];
				load_vec(k, a->k, at * hd, hd, a->dtype);
				load_vec(v, a->v, at * hd, hd, a->dtype);
				put_token(page_addr(pg, p), &pg->tier[c], hd,
					  i % pg->tier[c].tokens, k, v, sc,
					  kvk_tok_field(t, len,
							a->score_window,
							a->real_pos));
			}
		}
	}
	free(k);
	return 0;
}

/* page and slot of index @i of tier @tier in decode layout */
static uint8_t *decode_slot(const struct kvk_compress_pages *pg, uint32_t list,
			    int tier, uint32_t i, uint32_t *slot)
{
	const uint32_t *row = &pg->tables[(size_t)list * pg->width];
	uint32_t tpp = pg->tier[tier].tokens;

	*slot = i % tpp;
	return page_addr(pg,
			 tier ? row[pg->width - 1 - i / tpp] : row[i / tpp]);
}

/*
 * the candidate of least mean in one tier among indices @first .. @n - 1:
 * (mean, index); +inf, -1 none
 */
static void victim(const struct kvk_compress_pages *pg, uint32_t list, int tier,
		   uint32_t first, uint32_t n, int32_t p, uint32_t minq,
		   float *best, uint32_t *bi)
{
	*best = INFINITY;
	*bi = UINT32_MAX;
	for (uint32_t i = first; i < n; i++) {
		uint32_t slot;
		const uint8_t *pp = decode_slot(pg, list, tier, i, &slot);
		float sc, m;
		int32_t q0;
		int64_t nq;

		memcpy(&sc, pp + pg->tier[tier].score_off + 4 * slot, 4);
		memcpy(&q0, pp + pg->tier[tier].pos_off + 4 * slot, 4);
		nq = (int64_t)p - q0;
		if (nq < minq)
			continue;
		m = sc / (float)nq;
		if (m < *best || (m == *best && i < *bi)) {
			*best = m;
			*bi = i;
		}
	}
}

/**
 * kvk_compress_decode_cpu() - decode-phase compress-and-append (reference)
 * @a: arguments, host memory
 * @stream: ignored
 *
 * See struct kvk_compress_decode and DOC: compress-and-append.
 *
 * Return: 0 (the outcome is in *@a->err), or -EINVAL for bad arguments.
 */
int kvk_compress_decode_cpu(const struct kvk_compress_decode *a, void *stream)
{
	const struct kvk_compress_pages *pg = &a->pg;
	uint32_t hd = a->head_dim, nkv = a->nr_kv_heads;
	uint32_t minq = a->window ? a->window : 1;
	float *buf;
	int32_t err = 0;

	(void)stream;
	if (kvk_compress_decode_check(a))
		return -EINVAL;
	/* pass 1: decide */
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		int32_t p = a->pos[s];
		float ap, aq;

		seq_alphas(a->seq_alpha, a->alpha_prune, a->alpha_quant, s, &ap,
			   &aq);
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = pg->list_base[s] + h;
			uint32_t n_hi = a->ntokens[2 * list];
			uint32_t n_lo = a->ntokens[2 * list + 1];
			struct kvk_compress_action *ac =
				&a->actions[(size_t)s * nkv + h];
			float hm, lm, pthr, qthr;
			uint32_t hi, lo;

			hm = lm = INFINITY;
			hi = lo = UINT32_MAX;
			if (kvk_decode_may_move(ap, aq)) {
				victim(pg, list, 0, a->sinks, n_hi, p, minq,
				       &hm, &hi);
				victim(pg, list, 1, 0, n_lo, p, minq, &lm,
				       &lo);
			}
			pthr = ap / (float)p;
			qthr = aq / (float)p;
			ac->op = kvk_decode_choose(hm, lm, pthr, qthr);
			ac->need = 0;
			ac->lo = UINT32_MAX;
			ac->hi = hi;
			if (ac->op == KVK_OP_APPEND) {
				ac->hi = n_hi;
				if (n_hi >=
				    a->npages[2 * list] * pg->tier[0].tokens) {
					ac->op = KVK_OP_NO_ROOM;
					err = -ENOSPC;
				}
			} else if (ac->op == KVK_OP_DEMOTE_SWAP) {
				ac->lo = lo;
			} else if (ac->op == KVK_OP_DEMOTE) {
				ac->lo = n_lo;
				if (n_lo >= a->npages[2 * list + 1] *
						    pg->tier[1].tokens) {
					ac->op = KVK_OP_NO_ROOM;
					ac->need = 1;
					err = -ENOSPC;
				}
			}
		}
	}
	*a->err = err;
	if (err)
		return 0;
	/* pass 2: apply */
	buf = malloc(4 * hd * sizeof(*buf));
	if (!buf)
		return -ENOMEM;
	for (uint32_t s = 0; s < a->nr_seqs; s++)
		for (uint32_t h = 0; h < nkv; h++) {
			const struct kvk_compress_action *ac =
				&a->actions[(size_t)s * nkv + h];
			uint32_t list = pg->list_base[s] + h, slot, lslot;
			size_t at = ((size_t)s * nkv + h) * hd;
			uint8_t *hp = decode_slot(pg, list, 0, ac->hi, &slot);

			if (ac->op == KVK_OP_DEMOTE ||
			    ac->op == KVK_OP_DEMOTE_SWAP) {
				uint8_t *lp = decode_slot(pg, list, 1, ac->lo,
							  &lslot);
				float sc;
				int32_t q0;

				get_token(hp, &pg->tier[0], hd, slot, buf,
					  buf + hd, &sc, &q0);
				put_token(lp, &pg->tier[1], hd, lslot, buf,
					  buf + hd, sc, q0);
				if (ac->op == KVK_OP_DEMOTE)
					a->ntokens[2 * list + 1]++;
			}
			load_vec(buf + 2 * hd, a->k, at, hd, a->dtype);
			load_vec(buf + 3 * hd, a->v, at, hd, a->dtype);
			put_token(hp, &pg->tier[0], hd, slot, buf + 2 * hd,
				  buf + 3 * hd, 0.0f, a->pos[s]);
			if (ac->op == KVK_OP_APPEND)
				a->ntokens[2 * list]++;
		}
	free(buf);
	return 0;
}
