// SPDX-License-Identifier: MIT
/*
 * evict.c - CPU reference of per-head page eviction (kvevict.h).
 */
#include <errno.h>
#include <string.h>

#include "kvevict.h"
#include "kvq.h"

#define EVICT_GRANULE (2ULL << 20)

/**
 * kvk_evict_check() - validate eviction arguments
 * @a: arguments
 *
 * Return: 0 or -EINVAL (a bad geometry, a missing array, or lists too long
 * for 32-bit token identities).
 */
int kvk_evict_check(const struct kvk_evict_args *a)
{
	const struct kvk_attn_tier *t;
	uint32_t hd;

	if (!a || !a->tables || !a->ntokens || !a->list_base || !a->quota ||
	    !a->protect_from || !a->evicted || !a->pool || !a->lists ||
	    !a->width || !a->page_size || !a->pages_per_granule ||
	    (uint64_t)a->page_size * a->pages_per_granule > EVICT_GRANULE)
		return -EINVAL;
	hd = a->head_dim;
	t = &a->tier;
	if ((hd != 64 && hd != 128 && hd != 256) ||
	    kvq_format_valid(hd, t->kbits, t->kgroups) ||
	    kvq_format_valid(hd, t->vbits, t->vgroups) || !t->tokens)
		return -EINVAL;
	if (t->k_off + t->tokens * kvq_row_bytes(hd, t->kbits) > a->page_size ||
	    t->km_off + t->tokens * kvq_meta_bytes(t->kbits, t->kgroups) >
		    a->page_size ||
	    t->v_off + t->tokens * kvq_row_bytes(hd, t->vbits) > a->page_size ||
	    t->vm_off + t->tokens * kvq_meta_bytes(t->vbits, t->vgroups) >
		    a->page_size ||
	    t->score_off + 4 * t->tokens > a->page_size ||
	    t->pos_off + 4 * t->tokens > a->page_size)
		return -EINVAL;
	if ((uint64_t)a->lists * a->width * t->tokens > UINT32_MAX)
		return -EINVAL;
	return 0;
}

/* page holding token @i of row @row */
static uint8_t *tok_page(const struct kvk_evict_args *a, uint32_t row,
			 uint32_t i)
{
	uint32_t p = a->tables[(size_t)row * a->width + i / a->tier.tokens];

	return (uint8_t *)(uintptr_t)(a->pool +
				      (uint64_t)(p / a->pages_per_granule) *
					      EVICT_GRANULE +
				      (uint64_t)(p % a->pages_per_granule) *
					      a->page_size);
}

static float tok_metric(const struct kvk_evict_args *a, uint32_t row,
			uint32_t i)
{
	float m;

	memcpy(&m, tok_page(a, row, i) + a->tier.score_off +
			   4 * (i % a->tier.tokens), 4);
	return m;
}

static int32_t tok_pos(const struct kvk_evict_args *a, uint32_t row,
		       uint32_t i)
{
	int32_t p;

	memcpy(&p, tok_page(a, row, i) + a->tier.pos_off +
			   4 * (i % a->tier.tokens), 4);
	return p;
}

/* the token's key, or UINT64_MAX when it is protected */
static uint64_t tok_key(const struct kvk_evict_args *a, uint32_t s,
			uint32_t l, uint32_t i)
{
	uint32_t row = a->list_base[s] + l;
	int32_t pos = tok_pos(a, row, i);

	if (pos < (int64_t)a->sinks || pos >= a->protect_from[s])
		return UINT64_MAX;
	return kvk_evict_key(tok_metric(a, row, i),
			     kvk_evict_id(l, a->width * a->tier.tokens, i));
}

/* eligible tokens of list @l of @s with key <= @t */
static uint32_t count_le(const struct kvk_evict_args *a, uint32_t s,
			 uint32_t l, uint64_t t)
{
	uint32_t row = a->list_base[s] + l, n = a->ntokens[2 * row], c = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t k = tok_key(a, s, l, i);

		c += k != UINT64_MAX && k <= t;
	}
	return c;
}

/* whole pages sequence @s frees when every eligible key <= @t goes */
static uint64_t pages_le(const struct kvk_evict_args *a, uint32_t s,
			 uint64_t t)
{
	uint64_t pages = 0;

	for (uint32_t l = 0; l < a->lists; l++)
		pages += count_le(a, s, l, t) / a->tier.tokens;
	return pages;
}

/* copy every segment of token @from of @row onto token @to of @row */
static void tok_move(const struct kvk_evict_args *a, uint32_t row,
		     uint32_t from, uint32_t to)
{
	const struct kvk_attn_tier *t = &a->tier;
	uint8_t *src = tok_page(a, row, from), *dst = tok_page(a, row, to);
	uint32_t fs = from % t->tokens, ts = to % t->tokens, hd = a->head_dim;
	uint32_t kr = kvq_row_bytes(hd, t->kbits);
	uint32_t km = kvq_meta_bytes(t->kbits, t->kgroups);
	uint32_t vr = kvq_row_bytes(hd, t->vbits);
	uint32_t vm = kvq_meta_bytes(t->vbits, t->vgroups);

	memcpy(dst + t->k_off + ts * kr, src + t->k_off + fs * kr, kr);
	memcpy(dst + t->km_off + ts * km, src + t->km_off + fs * km, km);
	memcpy(dst + t->v_off + ts * vr, src + t->v_off + fs * vr, vr);
	memcpy(dst + t->vm_off + ts * vm, src + t->vm_off + fs * vm, vm);
	memcpy(dst + t->score_off + 4 * ts, src + t->score_off + 4 * fs, 4);
	memcpy(dst + t->pos_off + 4 * ts, src + t->pos_off + 4 * fs, 4);
}

/*
 * evict_list() - drop the @e tokens of smallest key (all <= @t) from list
 * @l of @s and fill the holes below the new length from above it.
 */
static void evict_list(const struct kvk_evict_args *a, uint32_t s,
		       uint32_t l, uint64_t t, uint32_t e)
{
	uint32_t row = a->list_base[s] + l, n = a->ntokens[2 * row];
	uint32_t m = n - e, hole = 0, from = m;
	uint64_t lo = 0, hi = t;

	a->evicted[(size_t)s * a->lists + l] = e;
	if (!e)
		return;
	/* the smallest key th of this list with e keys <= th */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (count_le(a, s, l, mid) >= e)
			hi = mid;
		else
			lo = mid + 1;
	}
	/* pair the k-th hole below m with the k-th survivor at or past m */
	for (;;) {
		uint64_t k;

		while (hole < m && ((k = tok_key(a, s, l, hole)) == UINT64_MAX ||
				    k > lo))
			hole++;
		if (hole == m)
			break;
		while ((k = tok_key(a, s, l, from)) != UINT64_MAX && k <= lo)
			from++;
		tok_move(a, row, from, hole);
		hole++;
		from++;
	}
	a->ntokens[2 * row] = m;
}

/**
 * kvk_evict_cpu() - free each sequence's quota of whole pages (CPU)
 * @a: arguments (kvk_evict_check())
 * @stream: unused, NULL
 *
 * Frees min(quota, what the eligible tokens allow) pages of each sequence.
 *
 * Return: 0 or -EINVAL (nothing changed).
 */
int kvk_evict_cpu(const struct kvk_evict_args *a, void *stream)
{
	int ret = kvk_evict_check(a);

	(void)stream;
	if (ret)
		return ret;
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		uint64_t lo = 0, hi = UINT64_MAX - 1;

		/* the smallest threshold that frees the quota, or all */
		if (!a->quota[s] || pages_le(a, s, hi) < a->quota[s]) {
			lo = a->quota[s] ? hi : 0;
		} else {
			while (lo < hi) {
				uint64_t mid = lo + (hi - lo) / 2;

				if (pages_le(a, s, mid) >= a->quota[s])
					hi = mid;
				else
					lo = mid + 1;
			}
		}
		for (uint32_t l = 0; l < a->lists; l++) {
			uint32_t c = a->quota[s] ? count_le(a, s, l, lo) : 0;

			evict_list(a, s, l, lo,
				   c / a->tier.tokens * a->tier.tokens);
		}
	}
	return 0;
}
