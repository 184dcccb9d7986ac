// SPDX-License-Identifier: MIT
/*
 * pool.c - the page pool: creation, granules in and out, watermarks,
 * admission accounting, statistics.
 */
#include <stdlib.h>
#include <string.h>

#include "kva_dev.h"

static void pool_free_arrays(struct kva_pool *pool)
{
	free(pool->gran_mapped);
	free(pool->gran_mem);
	free(pool->held);
	free(pool->ring);
	free(pool->page_list);
	free(pool->page_pos);
	free(pool->shadow);
	free(pool->table);
	free(pool->npages);
	free(pool->ntokens);
	free(pool->slot_state);
	free(pool->cnt);
	free(pool->off);
	free(pool->mark);
	free(pool->scratch);
}

static int pool_alloc_arrays(struct kva_pool *pool)
{
	size_t ids = pool->nr_page_ids;
	size_t lists = pool->nr_lists;

	pool->gran_mapped = calloc(pool->nr_gslots, 1);
	pool->gran_mem = calloc(pool->nr_gslots, 1);
	pool->ring = calloc(ids, sizeof(uint32_t));
	pool->page_list = malloc(ids * sizeof(uint32_t));
	pool->page_pos = malloc(ids * sizeof(uint32_t));
	pool->table = malloc(lists * pool->width * sizeof(uint32_t));
	pool->npages = calloc(lists * KVA_NR_TIERS, sizeof(uint32_t));
	pool->ntokens = calloc(lists * KVA_NR_TIERS, sizeof(uint32_t));
	pool->slot_state = calloc(pool->nr_slots, 1);
	pool->cnt = calloc(lists, sizeof(uint32_t));
	pool->off = calloc(lists + 1, sizeof(uint64_t));
	pool->mark = calloc(pool->nr_slots, sizeof(uint32_t));
	pool->scratch = calloc(ids, sizeof(uint32_t));
	if (!pool->gran_mapped || !pool->gran_mem || !pool->ring || !pool->page_list ||
	    !pool->page_pos || !pool->table || !pool->npages ||
	    !pool->ntokens || !pool->slot_state || !pool->cnt || !pool->off ||
	    !pool->mark || !pool->scratch)
		return -ENOMEM;
	for (size_t i = 0; i < ids; i++) {
		pool->page_list[i] = KVA_OWNER_UNMAPPED;
		pool->page_pos[i] = KVA_PAGE_NONE;
	}
	for (size_t i = 0; i < lists * pool->width; i++)
		pool->table[i] = KVA_PAGE_NONE;
	return 0;
}

/* the table width for @gslots granule slots: a list holds at most every
 * page of the budget, and never more than max_tokens need */
static uint32_t pool_width(const struct kva_pool *pool, uint32_t gslots)
{
	uint64_t w = (uint64_t)gslots * pool->pages_per_granule + 3;

	return w < pool->max_width ? (uint32_t)w : pool->max_width;
}

/* granule slots the arrays cover for @budget_bytes (the runtime refuses a
 * budget over the reservation) */
static uint32_t pool_gslots(const struct kva_pool *pool, uint64_t budget_bytes)
{
	uint64_t g = budget_bytes / KVRT_GRANULE_SIZE;

	if (!g)		/* refused by the runtime; arrays of one slot */
		g = 1;
	return g < pool->va_gslots ? (uint32_t)g : pool->va_gslots;
}

/*
 * The host bytes of @pool's arrays, sized as its fields say (one list:
 * a row, two counts per tier, a count and a scan entry; one page id: ring,
 * reverse map (2), scratch; one slot: state, mark, admitted pages), plus
 * the runtime's state per granule slot and a device pool's device arrays.
 */
static void pool_cost(const struct kva_pool *pool, int dev,
		      struct kva_pool_cost *out)
{
	uint64_t lists = pool->nr_lists, ids = pool->nr_page_ids;
	uint64_t pinned = 0;

	out->gslots = pool->nr_gslots;
	out->width = pool->width;
	out->host_bytes = sizeof(*pool) + lists * (4ULL * pool->width + 28) +
			  8 + ids * 16 +
			  (uint64_t)pool->nr_gslots *
				  (1 + kvrt_space_slot_bytes()) +
			  (uint64_t)pool->nr_slots * 9;
	out->dev_bytes = dev ? kva_dev_bytes(pool, &pinned) : 0;
	out->host_bytes += pinned;
}

/* the geometry of a pool for @p, no memory: 0 or -errno */
static int pool_geometry(const struct kva_pool_params *p,
			 struct kva_pool *pool)
{
	uint32_t min_tok;
	uint64_t w;
	int size, ret;

	size = kva_page_size(p->head_dim, p->tiers, p->nr_tiers);
	if (size < 0)
		return size;
	pool->head_dim = p->head_dim;
	pool->page_size = size;
	pool->pages_per_granule = KVRT_GRANULE_SIZE / size;
	pool->nr_tiers = p->nr_tiers;
	memcpy(pool->tiers, p->tiers, sizeof(pool->tiers));
	ret = kva_page_layout(pool->head_dim, size, &p->tiers[0],
			      &pool->layout[KVA_HI]);
	if (!ret)
		ret = kva_page_layout(pool->head_dim, size,
				      &p->tiers[p->nr_tiers > 1],
				      &pool->layout[KVA_LO]);
	if (ret)
		return ret;
	pool->nr_slots = p->nr_slots;
	pool->nr_layers = p->nr_layers;
	pool->nr_heads = p->nr_heads;
	pool->lists_per_slot = p->nr_layers * p->nr_heads;
	pool->nr_lists = p->nr_slots * pool->lists_per_slot;
	pool->max_tokens = p->max_tokens;
	min_tok = pool->layout[KVA_HI].tokens;
	if (pool->layout[KVA_LO].tokens < min_tok)
		min_tok = pool->layout[KVA_LO].tokens;
	w = kvmm_div_round_up((uint64_t)p->max_tokens, min_tok) + 3;
	pool->max_width = w < UINT32_MAX ? (uint32_t)w : UINT32_MAX;
	pool->va_gslots = p->va_bytes / KVRT_GRANULE_SIZE;
	pool->nr_gslots = pool_gslots(pool, p->budget_bytes);
	pool->nr_page_ids = pool->nr_gslots * pool->pages_per_granule;
	pool->width = pool_width(pool, pool->nr_gslots);
	return 0;
}

/* the parameters without their context (what kva_pool_cost() takes) */
static int params_shape_valid(const struct kva_pool_params *p)
{
	if (!p || !p->nr_tiers || p->nr_tiers > KVA_TIERS_MAX ||
	    !p->nr_slots || !p->nr_layers || !p->nr_heads || !p->max_tokens)
		return 0;
	if (!p->va_bytes || p->va_bytes % KVRT_GRANULE_SIZE ||
	    p->va_bytes / KVRT_GRANULE_SIZE > UINT32_MAX / 1024)
		return 0;
	if (p->wmark_high < p->wmark_low || (p->flags & ~KVA_POOL_FLAGS))
		return 0;
	if ((uint64_t)p->nr_slots * p->nr_layers * p->nr_heads > UINT32_MAX / 2)
		return 0;
	return 1;
}

static int params_valid(const struct kva_pool_params *p)
{
	if (!params_shape_valid(p) || !p->ctx)
		return 0;
	return !(p->flags & KVA_POOL_DEVICE) ||
	       kvrt_ctx_backend(p->ctx) == KVRT_BACKEND_CUDA;
}

/**
 * kva_pool_cost() - what a pool for @params would hold, without making it
 * @params: as for kva_pool_create(); @params->ctx is not used
 * @out: filled in
 *
 * Return: 0; -EINVAL for bad parameters; -ENOSPC when no page size fits.
 */
int kva_pool_cost(const struct kva_pool_params *params,
		  struct kva_pool_cost *out)
{
	struct kva_pool geom = { 0 };
	int ret;

	if (!out || !params_shape_valid(params))
		return -EINVAL;
	ret = pool_geometry(params, &geom);
	if (ret)
		return ret;
	pool_cost(&geom, !!(params->flags & KVA_POOL_DEVICE), out);
	return 0;
}

/**
 * kva_pool_budget_cost() - what @pool would hold under @budget_bytes
 * @pool: pool
 * @budget_bytes: a budget kva_pool_set_budget() would be given
 * @out: filled in: never less than what @pool holds now, since a lower
 *	budget shrinks nothing
 *
 * Return: 0.
 */
int kva_pool_budget_cost(const struct kva_pool *pool, uint64_t budget_bytes,
			 struct kva_pool_cost *out)
{
	struct kva_pool geom = *pool;
	uint32_t g = pool_gslots(pool, budget_bytes);

	if (g > geom.nr_gslots) {
		geom.nr_gslots = g;
		geom.nr_page_ids = g * pool->pages_per_granule;
		geom.width = pool_width(pool, g);
	}
	pool_cost(&geom, pool->dev != NULL, out);
	return 0;
}

/**
 * kva_pool_create() - build a pool and its VA reservation
 * @params: geometry, sizes and watermarks
 * @out: the new pool, with no granule mapped
 *
 * The page size comes from kva_page_size() over @params->tiers. The table
 * width is what the longest sequence needs at the tier with fewest tokens
 * per page, plus three (one for a split between tiers and one per tier for
 * the empty page kva_append() adds when a tier's last page is full), but
 * no more than the budget's pages plus three. The per-page arrays cover
 * the budget's granules, not the reservation's (struct kva_pool,
 * "Capacity"); kva_pool_set_budget() grows both.
 *
 * With KVA_POOL_DEVICE in @params->flags (a CUDA context only) the pool
 * is device-resident: see DOC: device pool in device.c.
 *
 * Return: 0; -EINVAL for bad parameters; -ENOSPC when no page size fits;
 * -ENODEV for KVA_POOL_DEVICE in a build without CUDA; -ENOMEM; the
 * runtime's or CUDA's error.
 */
int kva_pool_create(const struct kva_pool_params *params, struct kva_pool **out)
{
	struct kva_pool *pool;
	int ret;

	if (!out || !params_valid(params))
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	ret = pool_geometry(params, pool);
	if (ret)
		goto out_free_pool;
	pool->wmark_low = params->wmark_low;
	pool->wmark_high = params->wmark_high;
	pool->ctx = params->ctx;

	ret = pool_alloc_arrays(pool);
	if (ret)
		goto out_free_arrays;
	ret = kvrt_space_create(params->ctx, params->va_bytes,
				params->budget_bytes, &pool->space);
	if (ret)
		goto out_free_arrays;
	pool->base = kvrt_space_base(pool->space);
	if (params->flags & KVA_POOL_DEVICE) {
		ret = kva_dev_create(pool);
		if (ret)
			goto out_destroy_space;
	}
	*out = pool;
	return 0;

out_destroy_space:
	kvrt_space_destroy(pool->space);
out_free_arrays:
	pool_free_arrays(pool);
out_free_pool:
	free(pool);
	return ret;
}

/**
 * kva_pool_destroy() - give back every granule, the reservation and memory
 * @pool: pool; sequences still admitted lose their pages
 *
 * Return: 0, or the runtime's error (the pool is then left as it was and
 * the call may be repeated).
 */
int kva_pool_destroy(struct kva_pool *pool)
{
	int ret;

	if (!pool)
		return 0;
	if (pool->dev) {
		ret = kva_dev_wait(pool);
		if (ret)
			return ret;
	}
	ret = kvrt_space_destroy(pool->space);
	if (ret)
		return ret;
	for (int i = 0; i < KVRT_MAX_STREAMS; i++)
		kvrt_fence_put(pool->held_fence[i]);
	kva_dev_destroy(pool);
	pool_free_arrays(pool);
	free(pool);
	return 0;
}

/**
 * kva_pool_grow() - map @n more HBM granules and put their pages in the ring
 * @pool: pool
 * @n: granules, at least 1
 *
 * kva_pool_grow_mem(@pool, @n, KVA_MEM_HBM).
 *
 * Return: as kva_pool_grow_mem().
 */
int kva_pool_grow(struct kva_pool *pool, uint32_t n)
{
	return kva_pool_grow_mem(pool, n, KVA_MEM_HBM);
}

/**
 * kva_pool_room() - granules the pool may still map, both tiers together
 * @pool: pool
 *
 * Return: the HBM room plus the host room (kvrt_space_loc_room()), at most
 * the space budget's room.
 */
uint32_t kva_pool_room(const struct kva_pool *pool)
{
	struct kvrt_space_stats st;
	uint64_t r = (uint64_t)kvrt_space_loc_room(pool->space, KVA_MEM_HBM) +
		     kvrt_space_loc_room(pool->space, KVA_MEM_HOST);
	uint64_t all;

	kvrt_space_stats(pool->space, &st);
	all = st.budget_bytes / KVRT_GRANULE_SIZE - st.nr_mapped;
	return (uint32_t)(r < all ? r : all);
}

/**
 * kva_pool_grow_auto() - map @n granules, HBM first, the rest on the host
 * @pool: pool
 * @n: granules, at least 1, at most kva_pool_room()
 *
 * As many as the HBM budget allows come from HBM, the others from the host
 * tier (NUMA node 0). Without a host tier or tier budgets this is
 * kva_pool_grow(). All or nothing: if the host part fails, the HBM part is
 * given back (shrunk, its pages taken out of the ring).
 *
 * Return: 0; -EINVAL for n == 0; -ENOSPC when the budgets cannot take @n;
 * the runtime's error.
 */
int kva_pool_grow_auto(struct kva_pool *pool, uint32_t n)
{
	uint32_t h = kvrt_space_loc_room(pool->space, KVA_MEM_HBM);
	uint8_t *was;
	int ret;

	if (!n)
		return -EINVAL;
	if (n > kva_pool_room(pool))
		return -ENOSPC;
	if (h >= n)
		return kva_pool_grow_mem(pool, n, KVA_MEM_HBM);
	if (!h)
		return kva_pool_grow_mem(pool, n, KVA_MEM_HOST);
	if (pool->dev)		/* the device ring cannot be cut back */
		return -EOPNOTSUPP;
	was = malloc(pool->nr_gslots);
	if (!was)
		return -ENOMEM;
	memcpy(was, pool->gran_mapped, pool->nr_gslots);
	ret = kva_pool_grow_mem(pool, h, KVA_MEM_HBM);
	if (!ret) {
		ret = kva_pool_grow_mem(pool, n - h, KVA_MEM_HOST);
		if (ret)
			kva_pool_ungrow(pool, was);
	}
	free(was);
	return ret;
}

/**
 * kva_pool_ungrow() - give back the granules mapped since @was
 * @pool: host pool
 * @was: gran_mapped as it was before the grows to undo
 *
 * The granules mapped since then hold only free pages (nothing was
 * allocated in between): they are shrunk and their pages taken out of the
 * ring, wherever they sit (a grow with host granules reorders the ring
 * HBM-first, so they need not be at its tail). Retried once (an injected
 * fault fires once).
 *
 * Return: 0 or the runtime's error (then they stay mapped and free, a
 * state kva_check() accepts).
 */
int kva_pool_ungrow(struct kva_pool *pool, const uint8_t *was)
{
	uint32_t ppg = pool->pages_per_granule, n = 0, *idx;
	uint32_t cap = pool->nr_page_ids;
	uint64_t k = 0;
	int ret;

	idx = malloc(pool->nr_gslots * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	for (uint32_t g = 0; g < pool->nr_gslots; g++)
		if (was[g] == KVA_GRAN_UNMAPPED &&
		    pool->gran_mapped[g] == KVA_GRAN_MAPPED)
			idx[n++] = g;
	/* a clean copy made in those granules since (none in a rollback) */
	for (uint32_t i = 0; i < n && pool->nr_shadow; i++)
		for (uint32_t j = 0; j < ppg; j++)
			if (pool->page_list[idx[i] * ppg + j] ==
			    KVA_OWNER_SHADOW) {
				kva_shadow_drop(pool);
				break;
			}
	ret = n ? kvrt_space_shrink(pool->space, idx, n, 0) : 0;
	if (ret)
		ret = kvrt_space_shrink(pool->space, idx, n, 0);
	if (ret)
		goto out_free;
	for (uint32_t i = 0; i < n; i++) {
		pool->gran_mapped[idx[i]] = KVA_GRAN_UNMAPPED;
		pool->nr_gran_mem[pool->gran_mem[idx[i]]]--;
		for (uint32_t j = 0; j < ppg; j++)
			pool->page_list[idx[i] * ppg + j] =
				KVA_OWNER_UNMAPPED;
	}
	pool->nr_granules -= n;
	/* the ring keeps, in order, the pages still mapped */
	for (uint64_t i = pool->head; i < pool->tail; i++) {
		uint32_t p = pool->ring[i % cap];

		if (pool->page_list[p] != KVA_OWNER_UNMAPPED)
			pool->ring[(pool->head + k++) % cap] = p;
	}
	pool->tail = pool->head + k;
out_free:
	free(idx);
	return ret;
}

/**
 * kva_pool_set_mem_budget() - cap one memory tier of the pool
 * @pool: pool
 * @mem: KVA_MEM_HBM or KVA_MEM_HOST
 * @bytes: a multiple of 2 MiB, or KVRT_LOC_UNCAPPED (the default: only
 *	the pool's budget bounds the tier)
 *
 * kvrt_space_set_loc_budget() on the pool's space: the HBM cap is the
 * "HBM capacity" of placement; the host tier is where the rest goes
 * (kva_pool_grow_auto(), kva_pool_balance()).
 *
 * Return: 0; -EINVAL; -E2BIG over the tier's memory; -EBUSY below what is
 * mapped there. Nothing changed on error.
 */
int kva_pool_set_mem_budget(struct kva_pool *pool, uint32_t mem,
			    uint64_t bytes)
{
	if (mem >= KVA_NR_MEM)
		return -EINVAL;
	return kvrt_space_set_loc_budget(pool->space, mem, bytes);
}

/**
 * kva_pool_ring_prefer() - put the free pages of one tier first in the ring
 * @pool: host pool (a device pool's ring is on the device: no-op)
 * @mem: the tier whose pages allocation should take first
 *
 * A stable partition of ring[head, tail): flag, scan, scatter through the
 * scratch array, as the batched ops do. Allocation takes from the head, so
 * new pages come from @mem while it has free pages.
 */
void kva_pool_ring_prefer(struct kva_pool *pool, uint32_t mem)
{
	uint64_t n = pool->tail - pool->head, k = 0;
	uint32_t cap = pool->nr_page_ids;

	if (pool->dev || !n)
		return;
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t i = 0; i < n; i++) {
			uint32_t p = pool->ring[(pool->head + i) % cap];

			if ((kva_page_mem(pool, p) == mem) == !pass)
				pool->scratch[k++] = p;
		}
	for (uint64_t i = 0; i < n; i++)
		pool->ring[(pool->head + i) % cap] = pool->scratch[i];
}

/**
 * kva_pool_grow_mem() - map @n more granules of one tier, pages to the ring
 * @pool: pool
 * @n: granules, at least 1
 * @mem: KVA_MEM_HBM or KVA_MEM_HOST (NUMA node 0)
 *
 * Control plane only (driver calls); kva_pool_balance() calls it ahead of
 * need. The new granules' pages go to the ring's tail, granule by granule
 * (kva_grow_cpu()); a device pool does that on the device in stream order
 * (kva_grow_cuda()), without waiting for it.
 *
 * Return: 0; -EINVAL for n == 0; -ENOSPC over the budget or reservation;
 * the runtime's error.
 */
int kva_pool_grow_mem(struct kva_pool *pool, uint32_t n, uint32_t mem)
{
	uint32_t *idx;
	uint32_t ppg = pool->pages_per_granule;
	int ret;

	struct kva_view v;

	if (!n || mem >= KVA_NR_MEM)
		return -EINVAL;
	idx = malloc(n * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	ret = kvrt_space_grow(pool->space, n, mem,
			      mem == KVA_MEM_HOST ? 0 : -1, idx);
	if (ret)
		goto out_free_idx;
	/* the lowest free slots, within the budget: inside the arrays */
	if (idx[n - 1] >= pool->nr_gslots) {
		kvrt_space_shrink(pool->space, idx, n, 0);
		ret = -EUCLEAN;
		goto out_free_idx;
	}
	for (uint32_t i = 0; i < n; i++) {
		pool->gran_mapped[idx[i]] = KVA_GRAN_MAPPED;
		pool->gran_mem[idx[i]] = mem;
	}
	pool->nr_granules += n;
	pool->nr_gran_mem[mem] += n;
	if (pool->dev) {
		/* the device appends the pages; the free count knows them */
		ret = kva_dev_grow(pool, idx, n);
		if (!ret)
			pool->free_lb += (uint64_t)n * ppg;
		goto out_free_idx;
	}
	kva_pool_view(pool, &v);
	kva_grow_cpu(&v, idx, n, ppg, NULL);
	/* HBM pages first, so appends land in HBM while it has room */
	if (pool->nr_gran_mem[KVA_MEM_HOST])
		kva_pool_ring_prefer(pool, KVA_MEM_HBM);
out_free_idx:
	free(idx);
	return ret;
}

/**
 * kva_grow_cpu() - CPU reference of the device grow
 * @v: view of the arrays
 * @gran: [n] granule slots just mapped
 * @n: number of granules
 * @ppg: pages per granule
 * @stream: unused (the CUDA version's stream)
 *
 * Page j of granule gran[i] goes to ring entry tail + i * ppg + j and is
 * marked free in the reverse map; the tail then advances by n * ppg.
 *
 * Return: 0.
 */
int kva_grow_cpu(const struct kva_view *v, const uint32_t *gran, uint32_t n,
		 uint32_t ppg, void *stream)
{
	(void)stream;
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < ppg; j++) {
			uint32_t p = gran[i] * ppg + j;

			v->page_list[p] = KVA_OWNER_FREE;
			v->ring[(*v->tail + (uint64_t)i * ppg + j) %
				v->ring_cap] = p;
		}
	}
	*v->tail += (uint64_t)n * ppg;
	return 0;
}

/**
 * kva_pool_balance() - grow ahead of need when free pages run low
 * @pool: pool
 *
 * When fewer than wmark_low pages are free, grows enough granules to reach
 * wmark_high, or as many as the budget allows. Meant for a background
 * worker: it is the only driver call of the allocation path. A device
 * pool whose free lower bound is under the watermark syncs first, so it
 * grows on exact figures.
 *
 * Return: granules grown (>= 0); the runtime's error when none could be.
 */
int kva_pool_balance(struct kva_pool *pool)
{
	uint64_t want, room;
	int ret;

	if (kva_nr_free(pool) >= pool->wmark_low)
		return 0;
	if (pool->dev) {
		ret = kva_dev_pull(pool);
		if (ret)
			return ret;
		if (kva_nr_free(pool) >= pool->wmark_low)
			return 0;
	}
	want = kvmm_div_round_up(pool->wmark_high - kva_nr_free(pool),
				 pool->pages_per_granule);
	if (!want)
		want = 1;
	room = kva_pool_room(pool);
	if (want > room)
		want = room;
	if (!want)
		return -ENOSPC;
	ret = kva_pool_grow_auto(pool, want);
	return ret ? ret : (int)want;
}

/**
 * kva_pool_need_compact() - whether free memory is worth compacting
 * @pool: pool
 *
 * The compaction watermark: at least a granule's worth of pages free above
 * wmark_high. Those pages are scattered over partly used granules (else
 * they would be whole granules), and compaction can hand some back.
 *
 * Return: 1 when kva_compact() should run, else 0.
 */
int kva_pool_need_compact(const struct kva_pool *pool)
{
	return kva_nr_free(pool) >=
	       (uint64_t)pool->wmark_high + pool->pages_per_granule;
}

static void resize_free(struct kva_resize *r)
{
	free(r->gran_mapped);
	free(r->gran_mem);
	free(r->ring);
	free(r->page_list);
	free(r->page_pos);
	free(r->scratch);
	free(r->table);
	memset(r, 0, sizeof(*r));
}

/*
 * The pool's arrays for @gslots granule slots, filled from the pool's
 * (exact: a device pool has waited and pulled): the free ring at the same
 * positions head..tail modulo the new capacity, the reverse map with the
 * new pages unmapped, and, when the width grows, each row's high pages at
 * its left and low pages at its new right end, their reverse map moved
 * with them. The pool is not touched.
 */
static int resize_prepare(struct kva_pool *pool, uint32_t gslots,
			  struct kva_resize *r)
{
	size_t ids = (size_t)gslots * pool->pages_per_granule;
	size_t old = pool->nr_page_ids, lists = pool->nr_lists;
	uint32_t w = pool_width(pool, gslots), ow = pool->width;
	int ret;

	memset(r, 0, sizeof(*r));
	r->gslots = gslots;
	r->width = w;
	if (pool->dev) {
		ret = kva_dev_pull(pool);
		if (!ret)
			ret = kva_dev_wait(pool);
		if (ret)
			return ret;
	}
	r->gran_mapped = calloc(gslots, 1);
	r->gran_mem = calloc(gslots, 1);
	r->ring = calloc(ids, sizeof(uint32_t));
	r->page_list = malloc(ids * sizeof(uint32_t));
	r->page_pos = malloc(ids * sizeof(uint32_t));
	r->scratch = calloc(ids, sizeof(uint32_t));
	if (w != ow)
		r->table = malloc(lists * w * sizeof(uint32_t));
	if (!r->gran_mapped || !r->gran_mem || !r->ring || !r->page_list || !r->page_pos ||
	    !r->scratch || (w != ow && !r->table)) {
		resize_free(r);
		return -ENOMEM;
	}
	memcpy(r->gran_mapped, pool->gran_mapped, pool->nr_gslots);
	memcpy(r->gran_mem, pool->gran_mem, pool->nr_gslots);
	for (uint64_t i = pool->head; i < pool->tail; i++)
		r->ring[i % ids] = pool->ring[i % old];
	memcpy(r->page_list, pool->page_list, old * sizeof(uint32_t));
	memcpy(r->page_pos, pool->page_pos, old * sizeof(uint32_t));
	for (size_t i = old; i < ids; i++) {
		r->page_list[i] = KVA_OWNER_UNMAPPED;
		r->page_pos[i] = KVA_PAGE_NONE;
	}
	if (r->table) {
		memset(r->table, 0xff, lists * w * sizeof(uint32_t));
		for (size_t l = 0; l < lists; l++) {
			const uint32_t *src = &pool->table[l * ow];
			uint32_t *dst = &r->table[l * w];
			uint32_t nh = pool->npages[2 * l + KVA_HI];
			uint32_t nl = pool->npages[2 * l + KVA_LO];

			memcpy(dst, src, nh * sizeof(uint32_t));
			memcpy(dst + w - nl, src + ow - nl,
			       nl * sizeof(uint32_t));
			for (uint32_t e = w - nl; e < w; e++)
				r->page_pos[dst[e]] = e;
		}
	}
	if (pool->dev) {
		ret = kva_dev_resize_prepare(pool, r);
		if (ret) {
			resize_free(r);
			return ret;
		}
	}
	return 0;
}

/* swap @r's arrays in (cannot fail) and free the pool's old ones */
static void resize_commit(struct kva_pool *pool, struct kva_resize *r)
{
	if (pool->dev)
		kva_dev_resize_commit(pool, r);
	free(pool->gran_mapped);
	free(pool->gran_mem);
	free(pool->ring);
	free(pool->page_list);
	free(pool->page_pos);
	free(pool->scratch);
	pool->gran_mapped = r->gran_mapped;
	pool->gran_mem = r->gran_mem;
	pool->ring = r->ring;
	pool->page_list = r->page_list;
	pool->page_pos = r->page_pos;
	pool->scratch = r->scratch;
	if (r->table) {
		free(pool->table);
		pool->table = r->table;
	}
	pool->nr_gslots = r->gslots;
	pool->nr_page_ids = r->gslots * pool->pages_per_granule;
	pool->width = r->width;
	memset(r, 0, sizeof(*r));
}

/**
 * kva_pool_set_budget() - change the physical memory the pool may map
 * @pool: pool
 * @budget_bytes: a multiple of 2 MiB, at most the reservation
 *
 * A budget over the largest so far first grows the per-page arrays to its
 * granules and, while the budget's pages bound it below max_tokens' need,
 * the table width (struct kva_pool, "Capacity"): the new arrays are made
 * and filled before anything changes, then swapped in. A wider table is a
 * new one, so the addresses kva_pool_view() and kva_pool_device_view()
 * gave, and the width, are stale after such a call; a device pool waits
 * for its streams first (control plane). A lower budget shrinks nothing.
 *
 * Return: 0; -EINVAL for a zero or unaligned budget or one over the
 * reservation; -E2BIG for one over the backend's memory; -EBUSY for a
 * budget below the granules mapped now (compact first); -ENOMEM when the
 * larger arrays cannot be had; a CUDA error. Nothing changed on error.
 */
int kva_pool_set_budget(struct kva_pool *pool, uint64_t budget_bytes)
{
	struct kva_resize r = { 0 };
	uint32_t g;
	int ret;

	if (!budget_bytes || budget_bytes % KVRT_GRANULE_SIZE ||
	    budget_bytes > (uint64_t)pool->va_gslots * KVRT_GRANULE_SIZE)
		return -EINVAL;
	if (budget_bytes > kvrt_ctx_mem_total(pool->ctx) +
				   kvrt_ctx_loc_total(pool->ctx, KVA_MEM_HOST))
		return -E2BIG;
	if (budget_bytes < (uint64_t)(pool->nr_granules + pool->nr_retired) *
				   KVRT_GRANULE_SIZE)
		return -EBUSY;
	kva_shadow_drop(pool);	/* the per-page arrays may be rebuilt */
	g = pool_gslots(pool, budget_bytes);
	if (g > pool->nr_gslots) {
		ret = resize_prepare(pool, g, &r);
		if (ret)
			return ret;
	}
	ret = kvrt_space_set_budget(pool->space, budget_bytes);
	if (ret) {
		if (pool->dev)
			kva_dev_resize_abort(&r);
		resize_free(&r);
		return ret;
	}
	if (r.gslots)
		resize_commit(pool, &r);
	return 0;
}

/**
 * kva_pool_stats() - occupancy of a pool
 * @pool: pool
 * @out: filled in
 *
 * A device pool syncs its snapshot first (kva_dev_pull(): the host arrays
 * are a cache of the device state, so this is not a change of the pool); a
 * refusal found there stays for kva_pool_sync() to report.
 */
void kva_pool_stats(const struct kva_pool *pool, struct kva_stats *out)
{
	uint32_t ppg = pool->pages_per_granule;

	if (pool->dev)
		kva_dev_pull((struct kva_pool *)pool);
	memset(out, 0, sizeof(*out));
	out->page_size = pool->page_size;
	out->nr_granules = pool->nr_granules;
	out->nr_pages = (uint64_t)pool->nr_granules * ppg;
	out->nr_free = pool->tail - pool->head;
	out->nr_used = pool->nr_used;
	out->tail_bytes = KVRT_GRANULE_SIZE - (uint64_t)ppg * pool->page_size;
	out->nr_held = pool->nr_held;
	out->nr_shadow = pool->nr_shadow;
	for (uint32_t g = 0; g < pool->nr_gslots; g++) {
		uint32_t used = 0, m = pool->gran_mem[g], o;

		if (pool->gran_mapped[g] != KVA_GRAN_MAPPED)
			continue;
		out->granules_mem[m]++;
		for (uint32_t j = 0; j < ppg; j++) {
			o = pool->page_list[g * ppg + j];
			used += o < KVA_OWNER_FREE;
			out->used_mem[m] += kva_owned(o);
			out->free_mem[m] += o == KVA_OWNER_FREE;
		}
		if (!used)
			out->empty_granules++;
		else if (used < ppg)
			out->partial_granules++;
	}
}

/**
 * kva_admit_pages() - pages one list must reserve for a prompt
 * @pool: pool
 * @prompt: prompt tokens
 *
 * The exact worst case over every split of the prompt between the tiers
 * (kva_worst_pages()). DiffKV reserves ceil(prompt / tpp_hi) + 1, which is
 * more whenever that bound is not reached.
 *
 * Return: pages per list.
 */
uint32_t kva_admit_pages(const struct kva_pool *pool, uint32_t prompt)
{
	return kva_worst_pages(pool->layout[KVA_HI].tokens,
			       pool->layout[KVA_LO].tokens, prompt);
}

/**
 * kva_can_admit() - whether free pages cover admitting @n prompts now
 * @pool: pool
 * @prompt: prompt lengths, in tokens
 * @n: number of prompts
 *
 * On a device pool the free count is the lower bound (kva_nr_free()): a
 * "no" may turn "yes" after kva_pool_sync(), never the reverse.
 *
 * Return: 0 when they fit; -ENOSPC when the pool must grow or compact
 * first; -E2BIG when a prompt is over max_tokens.
 */
int kva_can_admit(const struct kva_pool *pool, const uint32_t *prompt,
		  uint32_t n)
{
	uint64_t need = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (prompt[i] > pool->max_tokens)
			return -E2BIG;
		need += (uint64_t)kva_admit_pages(pool, prompt[i]) *
			pool->lists_per_slot;
	}
	return need <= kva_nr_free(pool) ? 0 : -ENOSPC;
}
