// SPDX-License-Identifier: MIT
/*
 * compact.c - physical compaction: move live pages out of the least
 * occupied granules into holes of the fullest, then hand the emptied
 * granules back to the runtime. After mm/compaction.c; the rules are in the
 * comment above struct kva_compact_control.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kva_dev.h"

/**
 * kva_compact_init() - prepare a compaction control for @pool
 * @cc: control, zeroed here
 * @pool: pool it will compact
 * @budget_bytes: most page bytes one kva_compact() call copies (0: no
 *	limit)
 *
 * The caller may then set @cc->streams / @cc->nr_streams: the streams
 * whose queued work reads the tables, fenced before granules are retired.
 *
 * Return: 0 or -ENOMEM.
 */
int kva_compact_init(struct kva_compact_control *cc,
		     const struct kva_pool *pool, uint64_t budget_bytes)
{
	size_t ids = pool->nr_page_ids, gs = pool->nr_gslots;

	memset(cc, 0, sizeof(*cc));
	cc->budget_bytes = budget_bytes ? budget_bytes : UINT64_MAX;
	cc->nr_ids = ids;
	cc->order = calloc(gs, sizeof(uint32_t));
	cc->used = calloc(gs, sizeof(uint32_t));
	cc->release = calloc(gs, sizeof(uint32_t));
	cc->src = calloc(ids, sizeof(uint32_t));
	cc->dst = calloc(ids, sizeof(uint32_t));
	cc->flag = calloc(ids, sizeof(uint32_t));
	cc->roff = calloc(ids + 1, sizeof(uint64_t));
	if (!cc->order || !cc->used || !cc->release || !cc->src || !cc->dst ||
	    !cc->flag || !cc->roff) {
		kva_compact_fini(cc);
		return -ENOMEM;
	}
	return 0;
}

/**
 * kva_compact_fini() - free what kva_compact_init() allocated
 * @cc: control
 */
void kva_compact_fini(struct kva_compact_control *cc)
{
	free(cc->order);
	free(cc->used);
	free(cc->release);
	free(cc->src);
	free(cc->dst);
	free(cc->flag);
	free(cc->roff);
	cc->order = cc->used = cc->release = cc->src = cc->dst = NULL;
	cc->flag = NULL;
	cc->roff = NULL;
}

/**
 * kva_compact_reason() - a compaction result in words
 * @r: result
 *
 * Return: a static string.
 */
const char *kva_compact_reason(enum kva_compact_result r)
{
	switch (r) {
	case KVA_COMPACT_CONTINUE:
		return "continue";
	case KVA_COMPACT_COMPLETE:
		return "complete";
	case KVA_COMPACT_CURSORS_MET:
		return "cursors met";
	case KVA_COMPACT_NO_ROOM:
		return "no room on the free side";
	case KVA_COMPACT_BUDGET:
		return "byte budget spent";
	}
	return "?";
}

static uint32_t holes(const struct kva_pool *pool,
		      const struct kva_compact_control *cc, uint32_t pos)
{
	return pool->pages_per_granule - cc->used[cc->order[pos]];
}

/*
 * Sort the granules in use by used pages, ascending, ties by index: a
 * counting sort (histogram, exclusive scan, stable scatter), the same three
 * phases as the batched ops.
 */
static int order_granules(const struct kva_pool *pool,
			  struct kva_compact_control *cc, uint32_t mem)
{
	uint32_t ppg = pool->pages_per_granule;
	uint32_t *hist = calloc(ppg + 1, sizeof(uint32_t));
	uint64_t *off = calloc(ppg + 2, sizeof(uint64_t));

	if (!hist || !off) {
		free(hist);
		free(off);
		return -ENOMEM;
	}
	cc->nr_order = 0;
	for (uint32_t g = 0; g < pool->nr_gslots; g++) {
		uint32_t u = 0;

		if (pool->gran_mapped[g] != KVA_GRAN_MAPPED ||
		    pool->gran_mem[g] != mem)
			continue;
		for (uint32_t j = 0; j < ppg; j++)
			u += pool->page_list[g * ppg + j] < KVA_OWNER_FREE;
		cc->used[g] = u;
		hist[u]++;
		cc->nr_order++;
	}
	kva_scan(hist, off, ppg + 1);
	for (uint32_t g = 0; g < pool->nr_gslots; g++)
		if (pool->gran_mapped[g] == KVA_GRAN_MAPPED &&
		    pool->gran_mem[g] == mem)
			cc->order[off[cc->used[g]]++] = g;
	free(hist);
	free(off);
	return 0;
}

/**
 * kva_compact_finished() - whether the pass can go on, and if not why
 * @pool: pool
 * @cc: control, in the middle of or after a kva_compact() call
 *
 * Return: KVA_COMPACT_CONTINUE while the granule under the migrate cursor
 * is empty, or can be emptied into holes beyond it and the budget allows
 * one more page; otherwise the reason to stop.
 */
enum kva_compact_result
kva_compact_finished(const struct kva_pool *pool,
		     const struct kva_compact_control *cc)
{
	uint32_t u;

	if (cc->migrate_pos >= cc->nr_order)
		return KVA_COMPACT_CURSORS_MET;
	u = cc->used[cc->order[cc->migrate_pos]];
	if (!u)
		return KVA_COMPACT_CONTINUE; /* empty: no free side needed */
	if (cc->migrate_pos >= cc->free_pos)
		return KVA_COMPACT_CURSORS_MET;
	if (u > cc->avail)
		return KVA_COMPACT_NO_ROOM;
	if (cc->call_bytes + pool->page_size > cc->budget_bytes)
		return KVA_COMPACT_BUDGET;
	return KVA_COMPACT_CONTINUE;
}

/* Next hole at the free cursor; scan is the page index inside it. */
static uint32_t next_hole(const struct kva_pool *pool,
			  struct kva_compact_control *cc, uint32_t *scan)
{
	uint32_t ppg = pool->pages_per_granule;

	for (;;) {
		uint32_t g = cc->order[cc->free_pos];

		while (*scan < ppg) {
			uint32_t p = g * ppg + (*scan)++;

			if (pool->page_list[p] == KVA_OWNER_FREE)
				return p;
		}
		cc->free_pos--;
		*scan = 0;
	}
}

/*
 * Plan: walk the migrate cursor up and the free cursor down, pairing each
 * used page of a migrate granule with a hole of a free granule. Holes are
 * taken in page order inside a granule and each only once (the scan index
 * only grows), so no page is a destination twice.
 */
static void plan(struct kva_pool *pool, struct kva_compact_control *cc)
{
	uint32_t ppg = pool->pages_per_granule;
	uint32_t scan = 0;

	cc->migrate_pos = 0;
	cc->free_pos = cc->nr_order ? cc->nr_order - 1 : 0;
	cc->avail = 0;
	for (uint32_t pos = 1; pos < cc->nr_order; pos++)
		cc->avail += holes(pool, cc, pos);

	while (kva_compact_finished(pool, cc) == KVA_COMPACT_CONTINUE) {
		uint32_t g = cc->order[cc->migrate_pos];
		uint32_t j, d;

		for (j = 0; j < ppg && cc->used[g]; j++) {
			uint32_t p = g * ppg + j;

			if (pool->page_list[p] >= KVA_OWNER_FREE)
				continue;
			if (cc->call_bytes + pool->page_size > cc->budget_bytes)
				return;
			d = next_hole(pool, cc, &scan);
			cc->src[cc->nr_moves] = p;
			cc->dst[cc->nr_moves++] = d;
			cc->used[d / ppg]++;
			cc->used[g]--;
			cc->avail--;
			cc->call_bytes += pool->page_size;
		}
		if (cc->used[g])
			return; /* budget spent inside this granule */
		cc->release[cc->nr_release++] = g;
		cc->migrate_pos++;
		if (cc->migrate_pos < cc->free_pos)
			cc->avail -= holes(pool, cc, cc->migrate_pos);
	}
}

/**
 * kva_copy_pages_cpu() - copy page src[i] over page dst[i], for every i
 * @base: address of granule slot 0, readable and writable by the host
 * @page_size: bytes, a multiple of 16
 * @ppg: pages per granule
 * @src: source page ids
 * @dst: destination page ids, none of them also a source
 * @n: number of moves
 * @stream: unused (the CUDA version's stream)
 *
 * CPU reference of the device page copy; host backend only (the pool's
 * own path copies through the runtime, see copy_pages()).
 *
 * Return: 0.
 */
int kva_copy_pages_cpu(uint64_t base, uint32_t page_size, uint32_t ppg,
		       const uint32_t *src, const uint32_t *dst, uint32_t n,
		       void *stream)
{
	(void)stream;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t s = base +
			     (uint64_t)(src[i] / ppg) * KVRT_GRANULE_SIZE +
			     (uint64_t)(src[i] % ppg) * page_size;
		uint64_t d = base +
			     (uint64_t)(dst[i] / ppg) * KVRT_GRANULE_SIZE +
			     (uint64_t)(dst[i] % ppg) * page_size;

		memcpy((void *)(uintptr_t)d, (const void *)(uintptr_t)s,
		       page_size);
	}
	return 0;
}

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/*
 * Copy page contents. A device pool copies on the device, on its side
 * stream, and rewrites the device tables after it (kva_dev_compact_copy());
 * a host pool copies through the runtime, which works on every backend.
 */
static int copy_pages(struct kva_pool *pool, struct kva_compact_control *cc)
{
	void *buf;
	double t0 = now_us();
	int ret = 0;

	if (pool->dev)
		return kva_dev_compact_copy(pool, cc);
	buf = malloc(pool->page_size);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < cc->nr_moves && !ret; i++) {
		ret = kvrt_memcpy_from(pool->ctx, buf,
				       kva_page_addr(pool, cc->src[i]),
				       pool->page_size);
		if (!ret)
			ret = kvrt_memcpy_to(pool->ctx,
					     kva_page_addr(pool, cc->dst[i]),
					     buf, pool->page_size);
	}
	free(buf);
	cc->copy_us = now_us() - t0;
	return ret;
}

/**
 * kva_rewrite_cpu() - point the tables at the moved pages
 * @v: view of the arrays (host memory)
 * @src: source page ids, each owned
 * @dst: destination page ids, each free, none also a source
 * @n: number of moves
 * @stream: unused (the CUDA version's stream)
 *
 * One move per iteration, no two touching the same entry: the table entry
 * the reverse map names for src[i] becomes dst[i], dst[i] takes over the
 * reverse map, src[i] becomes free. The ring is the caller's business.
 *
 * Return: 0.
 */
int kva_rewrite_cpu(const struct kva_view *v, const uint32_t *src,
		    const uint32_t *dst, uint32_t n, void *stream)
{
	(void)stream;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t s = src[i], d = dst[i];
		uint32_t list = v->page_list[s], pos = v->page_pos[s];

		v->table[(size_t)list * v->width + pos] = d;
		v->page_list[d] = list;
		v->page_pos[d] = pos;
		v->page_list[s] = KVA_OWNER_FREE;
		v->page_pos[s] = KVA_PAGE_NONE;
	}
	return 0;
}

/* Rewrite the table entries and the reverse map. */
static void rewrite_tables(struct kva_pool *pool,
			   const struct kva_compact_control *cc)
{
	struct kva_view v;

	kva_pool_view(pool, &v);
	kva_rewrite_cpu(&v, cc->src, cc->dst, cc->nr_moves, NULL);
}

/*
 * Rebuild the free ring from head: keep the entries still free (the moves'
 * destinations are not), then append the moves' sources, leaving out every
 * page of a granule being released. flag -> scan -> scatter through
 * pool->scratch.
 */
static void rebuild_ring(struct kva_pool *pool, struct kva_compact_control *cc)
{
	uint32_t ppg = pool->pages_per_granule;
	uint64_t n = pool->tail - pool->head, total;
	uint32_t m = (uint32_t)n + cc->nr_moves;

	for (uint32_t k = 0; k < m; k++) {
		uint32_t p =
			k < n ? pool->ring[(pool->head + k) % pool->nr_page_ids]
			      : cc->src[k - n];

		cc->flag[k] = pool->page_list[p] == KVA_OWNER_FREE &&
			      pool->gran_mapped[p / ppg] == KVA_GRAN_MAPPED;
		pool->scratch[k] = p;
	}
	total = kva_scan(cc->flag, cc->roff, m);
	for (uint32_t k = 0; k < m; k++)
		if (cc->flag[k])
			pool->ring[(pool->head + cc->roff[k]) %
				   pool->nr_page_ids] = pool->scratch[k];
	pool->tail = pool->head + total;
}

/**
 * kva_compact_release() - shrink the granules compaction has retired
 * @pool: pool
 * @flags: 0 to give up with -EBUSY while a fence is pending, or
 *	KVRT_SHRINK_WAIT to wait
 *
 * Return: granules released (>= 0); -EBUSY; the runtime's error.
 */
int kva_compact_release(struct kva_pool *pool, unsigned int flags)
{
	uint32_t *idx, n = 0;
	int ret;

	if (!pool->nr_retired)
		return 0;
	idx = calloc(pool->nr_retired, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	for (uint32_t g = 0; g < pool->nr_gslots; g++)
		if (pool->gran_mapped[g] == KVA_GRAN_RETIRED)
			idx[n++] = g;
	ret = kvrt_space_shrink(pool->space, idx, n, flags);
	if (!ret) {
		for (uint32_t i = 0; i < n; i++)
			pool->gran_mapped[idx[i]] = KVA_GRAN_UNMAPPED;
		pool->nr_retired = 0;
		ret = n;
	}
	free(idx);
	return ret;
}

/*
 * Hand the emptied granules to the runtime: take their pages out of the
 * ring, fence every stream that may still read the old tables, retire,
 * then shrink if the fences have completed (else later, from
 * kva_compact_release()).
 */
static int retire_granules(struct kva_pool *pool,
			   struct kva_compact_control *cc)
{
	uint32_t ppg = pool->pages_per_granule;
	int ret;

	for (uint32_t i = 0; i < cc->nr_streams; i++) {
		ret = kvrt_space_fence(pool->space, cc->streams[i]);
		if (ret)
			return ret;
	}
	if (pool->dev) {
		ret = kva_dev_fence(pool);
		if (ret)
			return ret;
	}
	ret = kvrt_space_retire(pool->space, cc->release, cc->nr_release);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < cc->nr_release; i++) {
		uint32_t g = cc->release[i];

		pool->gran_mapped[g] = KVA_GRAN_RETIRED;
		pool->nr_gran_mem[pool->gran_mem[g]]--;
		for (uint32_t j = 0; j < ppg; j++)
			pool->page_list[g * ppg + j] = KVA_OWNER_UNMAPPED;
	}
	pool->nr_granules -= cc->nr_release;
	pool->nr_retired += cc->nr_release;
	rebuild_ring(pool, cc);
	cc->granules_released += cc->nr_release;
	/*
	 * The increment is complete here: ring rebuilt, granules retired. A
	 * shrink refused now (pending fence or runtime error) leaves them
	 * retired for a later kva_compact_release(); failing the call would
	 * make the caller rebuild the ring a second time.
	 */
	kva_compact_release(pool, 0);
	return 0;
}

static int compact_once(struct kva_pool *pool,
			struct kva_compact_control *cc);

/**
 * kva_compact() - one increment of physical compaction
 * @pool: pool
 * @cc: control from kva_compact_init()
 *
 * Orders the granules by use, plans moves until kva_compact_finished()
 * says stop, copies the pages, rewrites the tables and the reverse map,
 * rebuilds the free ring as one interval, then retires and (when the
 * fences allow) shrinks the emptied granules. Call again to go on: the
 * next call starts from the pool as it is then.
 *
 * On a device pool: syncs, plans on the snapshot, copies the pages on the
 * pool's side stream with kva_copy_pages_cuda() and rewrites the device
 * tables with kva_rewrite_cuda() after it (no host bounce), applies the
 * same rewrite and ring rebuild to the snapshot, sends the rebuilt ring
 * and page owners to the device in stream order, and fences both of the
 * pool's streams before retiring. The host waits for none of it.
 *
 * Return: 0 with @cc->result set (emptied granules the runtime would not
 * unmap yet stay retired for kva_compact_release()); -EINVAL for a @cc
 * made before the pool's budget grew its arrays; -ENOMEM; the
 * runtime's error from a page copy (nothing changed), from reclaiming
 * migration's held pages, or from fencing or retiring (pages moved, every
 * invariant holds, no granule released); -EBUSY while migration holds
 * pages whose readers' fences are pending.
 */
int kva_compact(struct kva_pool *pool, struct kva_compact_control *cc)
{
	int ret;

	if (cc->nr_ids != pool->nr_page_ids)
		return -EINVAL;
	/* pages held by migration are neither free nor movable */
	if (pool->nr_held) {
		ret = kva_migrate_reclaim(pool, 0);
		if (ret < 0)
			return ret;
		if (pool->nr_held)
			return -EBUSY;
	}
	kva_shadow_drop(pool);	/* copies are neither free nor movable */
	ret = kva_compact_release(pool, 0);
	if (ret < 0 && ret != -EBUSY)
		return ret;
	if (pool->dev) {
		ret = kva_dev_pull(pool);
		if (ret)
			return ret;
		ret = compact_once(pool, cc);
		if (cc->nr_moves || cc->nr_release) {
			int r = kva_dev_push(pool, 0);

			ret = ret ? ret : r;
		}
		return ret;
	}
	return compact_once(pool, cc);
}

/**
 * kva_compact_timing() - how long the last increment's page copy took
 * @pool: pool
 * @cc: control; @cc->copy_us is set
 *
 * A host pool measured the copy as it ran. A device pool recorded events
 * around kva_copy_pages_cuda() on its side stream: this waits for the
 * second one.
 *
 * Return: 0 or the CUDA error as an errno.
 */
int kva_compact_timing(struct kva_pool *pool, struct kva_compact_control *cc)
{
	return pool->dev ? kva_dev_copy_time(pool, &cc->copy_us) : 0;
}

static int compact_once(struct kva_pool *pool, struct kva_compact_control *cc)
{
	int ret;

	cc->nr_moves = 0;
	cc->nr_release = 0;
	cc->call_bytes = 0;
	/*
	 * Each memory tier on its own: a page never changes tier here
	 * (that is migration's business, migrate.c). A pool of one tier
	 * makes one pass, as before tiers.
	 */
	for (uint32_t mem = 0, passes = 0; mem < KVA_NR_MEM; mem++) {
		enum kva_compact_result r;

		if (!pool->nr_gran_mem[mem] && (passes || mem + 1 < KVA_NR_MEM))
			continue;
		ret = order_granules(pool, cc, mem);
		if (ret)
			return ret;
		plan(pool, cc);
		r = kva_compact_finished(pool, cc);
		if (!passes++ || cc->result != KVA_COMPACT_BUDGET)
			cc->result = r;
	}
	if (!cc->nr_moves && !cc->nr_release) {
		if (cc->result != KVA_COMPACT_BUDGET)
			cc->result = KVA_COMPACT_COMPLETE;
		return 0;
	}
	ret = copy_pages(pool, cc);
	if (ret)
		return ret;
	rewrite_tables(pool, cc);
	cc->bytes_moved += cc->call_bytes;
	cc->pages_moved += cc->nr_moves;
	if (!cc->nr_release) {
		rebuild_ring(pool, cc);
		return 0;
	}
	ret = retire_granules(pool, cc);
	if (ret) {
		cc->nr_release = 0;
		rebuild_ring(pool, cc);
	}
	return ret;
}
