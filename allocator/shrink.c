// SPDX-License-Identifier: MIT
/*
 * shrink.c - kva_shrink(): the pages beyond what each list's tokens need go
 * back to the ring. Count -> scan -> scatter, as the other batched ops.
 */
#include <errno.h>
#include <stdlib.h>

#include "kva_shrink.h"

static uint32_t need(uint32_t tokens, uint32_t tpp)
{
	return (tokens + tpp - 1) / tpp;
}

/**
 * kva_shrink_cpu() - CPU reference of the shrink op over a view
 * @v: the pool's arrays
 * @slots: decoding slots, each once (validated by the caller)
 * @n: number of slots
 * @stream: unused
 *
 * List k keeps ceil(ntokens / tokens per page) pages of each tier; the high
 * pages beyond (right of the kept ones) and the low pages beyond (left of
 * the kept ones) go to the ring's tail, in that order.
 *
 * Return: 0.
 */
int kva_shrink_cpu(const struct kva_view *v, const uint32_t *slots,
		   uint32_t n, void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps, w = v->width;
	uint64_t total;

	(void)stream;
	*v->err = 0;
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t kh = need(v->ntokens[2 * list + KVA_HI],
				   v->tpp[KVA_HI]);
		uint32_t kl = need(v->ntokens[2 * list + KVA_LO],
				   v->tpp[KVA_LO]);
		uint32_t nh = v->npages[2 * list + KVA_HI];
		uint32_t nl = v->npages[2 * list + KVA_LO];

		v->cnt[k] = (nh > kh ? nh - kh : 0) + (nl > kl ? nl - kl : 0);
	}
	total = kva_scan(v->cnt, v->off, nk);
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * w];
		uint32_t *np = &v->npages[2 * list];
		uint32_t kh = need(v->ntokens[2 * list + KVA_HI],
				   v->tpp[KVA_HI]);
		uint32_t kl = need(v->ntokens[2 * list + KVA_LO],
				   v->tpp[KVA_LO]);
		uint64_t pos = *v->tail + v->off[k];

		for (uint32_t e = kh; e < np[KVA_HI]; e++, pos++) {
			uint32_t p = t[e];

			v->ring[pos % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[e] = KVA_PAGE_NONE;
		}
		for (uint32_t i = kl; i < np[KVA_LO]; i++, pos++) {
			uint32_t e = w - 1 - i, p = t[e];

			v->ring[pos % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[e] = KVA_PAGE_NONE;
		}
		if (np[KVA_HI] > kh)
			np[KVA_HI] = kh;
		if (np[KVA_LO] > kl)
			np[KVA_LO] = kl;
	}
	*v->tail += total;
	return 0;
}

/**
 * kva_shrink() - give back the pages the slots' token counts no longer need
 * @pool: a host pool
 * @slots: decoding slots, each once
 * @n: number of slots
 *
 * Run after an op that lowered token counts (kvk_evict_*()). A list keeps
 * ceil(tokens / tokens per page) pages per tier; a page that kva_append()
 * added ahead of the next token goes back too.
 *
 * Return: the number of pages given back; -EINVAL for a bad or repeated
 * slot; -ENOENT for a free slot; -EBUSY for a slot in prefill; -EOPNOTSUPP
 * on a device pool (not yet). Nothing changes on failure.
 */
int kva_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_view v;
	uint8_t *seen;
	int ret = 0;

	if (pool->dev)
		return -EOPNOTSUPP;
	if ((n && !slots) || n > pool->nr_slots)
		return -EINVAL;
	seen = calloc(pool->nr_slots, 1);
	if (!seen)
		return -ENOMEM;
	for (uint32_t i = 0; !ret && i < n; i++) {
		uint32_t s = slots[i];

		if (s >= pool->nr_slots || seen[s])
			ret = -EINVAL;
		else if (pool->slot_state[s] == KVA_SLOT_FREE)
			ret = -ENOENT;
		else if (pool->slot_state[s] != KVA_SLOT_DECODE)
			ret = -EBUSY;
		else
			seen[s] = 1;
	}
	free(seen);
	if (ret)
		return ret;
	kva_pool_view(pool, &v);
	kva_shrink_cpu(&v, slots, n, NULL);
	pool->nr_used -= pool->off[n * pool->lists_per_slot];
	return (int)pool->off[n * pool->lists_per_slot];
}
