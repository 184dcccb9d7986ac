// SPDX-License-Identifier: MIT
/*
 * evict.c - KV-Compress eviction as one allocator op: the per-slot quota
 * from the token counts, the kernels' per-head eviction (kernels/kvevict.h)
 * and the shrink that gives the emptied pages back.
 */
#include <stdlib.h>
#include <string.h>

#include "kva_dev.h"
#include "kvattn.h"
#include "kvevict.h"

/**
 * DOC: eviction
 *
 * kva_evict() is what KVMM_OP_EVICT runs. Slot i of the batch may keep
 * @keep[i] pages summed over its lists, counting ceil(tokens / tokens per
 * page) high-tier pages per list (KV-Compress evicts the high tier only);
 * its quota is max(0, have - keep[i]) pages. The quota is computed where the
 * counts are (kva_evict_quota_cpu(), or kva_evict_quota_cuda() in stream
 * order on a device pool, so the host never reads the counts), then
 * kvk_evict_cpu() / kvk_evict_cuda() move the surviving tokens down and
 * lower the counts, and kva_shrink() gives back the pages beyond them.
 */

/**
 * kva_evict_quota_cpu() - CPU reference of the device quota of an eviction
 * @v: view of the arrays
 * @slots: decoding slots, validated by the caller
 * @keep: [n] pages each slot may keep, summed over its lists
 * @n: number of slots
 * @quota: out: [n] pages to free, max(0, have - keep)
 * @list_base: out: [n] first list of each slot (slot * lists_per_slot)
 * @stream: unused (the CUDA version's stream)
 *
 * have = the sum over the slot's lists of ceil(high tokens / tpp_hi).
 *
 * Return: 0.
 */
int kva_evict_quota_cpu(const struct kva_view *v, const uint32_t *slots,
			const uint32_t *keep, uint32_t n, uint32_t *quota,
			uint32_t *list_base, void *stream)
{
	uint32_t lps = v->lists_per_slot, a = v->tpp[KVA_HI];

	(void)stream;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t have = 0;

		for (uint32_t j = 0; j < lps; j++) {
			uint32_t list = slots[i] * lps + j;

			have += (v->ntokens[2 * list + KVA_HI] + (uint64_t)a -
				 1) / a;
		}
		quota[i] = have > keep[i] ? (uint32_t)(have - keep[i]) : 0;
		list_base[i] = slots[i] * lps;
	}
	return 0;
}

/**
 * kva_evict_args() - the geometry of a pool's eviction calls
 * @pool: pool
 * @a: filled with everything but the per-call arrays (nr_seqs, ntokens,
 *	list_base, quota, protect_from, sinks, evicted, scratch); the
 *	addresses are the host arrays (a device pool's caller swaps in its
 *	device ones)
 *
 * Return: 0, or -EOPNOTSUPP when the kernels cannot evict in this pool
 * (a head_dim or tier format they do not serve).
 */
int kva_evict_args(const struct kva_pool *pool, struct kvk_evict_args *a)
{
	static const uint32_t dummy[1];
	struct kvk_evict_args t;

	memset(a, 0, sizeof(*a));
	a->lists = pool->lists_per_slot;
	a->head_dim = pool->head_dim;
	a->tier = kva_attn_tier(&pool->tiers[0], &pool->layout[KVA_HI]);
	a->pool = pool->base;
	a->page_size = pool->page_size;
	a->pages_per_granule = pool->pages_per_granule;
	a->tables = pool->table;
	a->width = pool->width;
	a->ntokens = pool->ntokens;
	/* the check wants every array: these stand for the call's */
	t = *a;
	t.list_base = dummy;
	t.quota = dummy;
	t.protect_from = (const int32_t *)dummy;
	t.evicted = (uint32_t *)dummy;
	return kvk_evict_check(&t) ? -EOPNOTSUPP : 0;
}

/**
 * kva_evict() - evict whole pages of the least important tokens of slots
 * @pool: pool
 * @slots: decoding slots, each once
 * @n: number of slots
 * @keep: [n] high-tier pages each slot may keep, summed over its lists
 * @protect_from: [n] first protected position of each slot (its recent
 *	window); tokens at or past it are never evicted
 * @sinks: positions below this are never evicted
 *
 * The quota, the eviction and the shrink of DOC: eviction. A device pool
 * enqueues the three on its stream and returns at once.
 *
 * Return: pages given back (0 on a device pool, where they reach the free
 * count at the next sync); -EINVAL for a bad or repeated slot or a missing
 * array; -ENOENT for a free slot; -EBUSY for one in prefill; -EOPNOTSUPP
 * when the kernels cannot evict in this pool (kva_evict_args()); -ENOMEM.
 * Nothing changes on failure.
 */
int kva_evict(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
	      const uint32_t *keep, const int32_t *protect_from,
	      uint32_t sinks)
{
	uint32_t lps = pool->lists_per_slot, *buf;
	struct kvk_evict_args a;
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n, BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	if (n && (!keep || !protect_from))
		return -EINVAL;
	/* no clean copy outlives a write: the slots' own */
	kva_shadow_drop_slots(pool, slots, n);
	ret = kva_evict_args(pool, &a);
	if (ret || !n)
		return ret;
	if (pool->dev)
		return kva_dev_evict(pool, slots, n, keep, protect_from, sinks,
				     &a);
	buf = malloc(((size_t)2 * n + (size_t)n * lps) * sizeof(*buf));
	if (!buf)
		return -ENOMEM;
	kva_pool_view(pool, &v);
	kva_evict_quota_cpu(&v, slots, keep, n, buf, buf + n, NULL);
	a.nr_seqs = n;
	a.quota = buf;
	a.list_base = buf + n;
	a.protect_from = protect_from;
	a.sinks = sinks;
	a.evicted = buf + 2 * n;
	ret = kvk_evict_cpu(&a, NULL);
	free(buf);
	if (ret)
		return ret;
	return kva_shrink(pool, slots, n);
}
