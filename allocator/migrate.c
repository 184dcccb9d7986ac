// SPDX-License-Identifier: MIT
/*
 * migrate.c - batched page moves between memory tiers (HBM and host), with
 * a byte budget per call, the tables rewritten in one pass, and the pages
 * moved from held out of the free ring until the readers that may still
 * use the old tables are done. After compact.c; see the comment above
 * struct kva_migrate_control and Documentation/placement/index.rst.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kva_dev.h"
#include "migrate.h"

/**
 * kva_migrate_init() - prepare a migration control for @pool
 * @mc: control, zeroed here
 * @pool: pool it will migrate pages of
 * @budget_bytes: most page bytes one kva_migrate() call copies (0: no
 *	limit)
 *
 * The caller may then set @mc->hbm_reserve and @mc->streams /
 * @mc->nr_streams.
 *
 * Return: 0 or -ENOMEM.
 */
int kva_migrate_init(struct kva_migrate_control *mc,
		     const struct kva_pool *pool, uint64_t budget_bytes)
{
	size_t ids = pool->nr_page_ids;

	memset(mc, 0, sizeof(*mc));
	mc->budget_bytes = budget_bytes ? budget_bytes : UINT64_MAX;
	mc->nr_ids = ids;
	mc->src = calloc(ids, sizeof(uint32_t));
	mc->dst = calloc(ids, sizeof(uint32_t));
	mc->list = calloc(ids, sizeof(uint32_t));
	mc->pos = calloc(ids, sizeof(uint32_t));
	mc->leaves = calloc(ids, 1);
	mc->nocopy = calloc(ids, 1);
	mc->csrc = calloc(ids, sizeof(uint32_t));
	mc->cdst = calloc(ids, sizeof(uint32_t));
	mc->free_mem[0] = calloc(ids, sizeof(uint32_t));
	mc->free_mem[1] = calloc(ids, sizeof(uint32_t));
	mc->psrc = calloc(ids, sizeof(uint32_t));
	mc->pdst = calloc(ids, sizeof(uint32_t));
	mc->mark = calloc(ids, 1);
	if (!mc->src || !mc->dst || !mc->list || !mc->pos || !mc->leaves ||
	    !mc->nocopy || !mc->csrc || !mc->cdst ||
	    !mc->free_mem[0] || !mc->free_mem[1] || !mc->psrc || !mc->pdst ||
	    !mc->mark) {
		kva_migrate_fini(mc);
		return -ENOMEM;
	}
	return 0;
}

/**
 * kva_migrate_fini() - free what kva_migrate_init() allocated
 * @mc: control
 */
void kva_migrate_fini(struct kva_migrate_control *mc)
{
	free(mc->src);
	free(mc->dst);
	free(mc->list);
	free(mc->pos);
	free(mc->leaves);
	free(mc->nocopy);
	free(mc->csrc);
	free(mc->cdst);
	free(mc->free_mem[0]);
	free(mc->free_mem[1]);
	free(mc->psrc);
	free(mc->pdst);
	free(mc->mark);
	mc->src = mc->dst = mc->list = mc->pos = NULL;
	mc->free_mem[0] = mc->free_mem[1] = NULL;
	mc->psrc = mc->pdst = NULL;
	mc->leaves = mc->mark = mc->nocopy = NULL;
	mc->csrc = mc->cdst = NULL;
}

/**
 * kva_migrate_room() - host pages free for a migration's demotions
 * @pool: host pool
 * @pages: free host pages wanted
 *
 * A demotion needs a free host page, and the host pages that promotions
 * leave free serve only the next call; the pool maps host granules only
 * when a sequence needs pages, so it may hold few free ones and
 * kva_migrate() stop at KVA_MIGRATE_NO_ROOM far below its byte budget.
 * This maps host granules until @pages host pages are free, as far as the
 * host tier's and the space's budgets allow (what they leave out still
 * ends a call at NO_ROOM). Call it before kva_migrate_init(), which sizes
 * its arrays by the page ids.
 *
 * Return: the granules mapped (0: none needed or no room); -EOPNOTSUPP for
 * a device-resident pool; the runtime's error (nothing mapped).
 */
int kva_migrate_room(struct kva_pool *pool, uint64_t pages)
{
	uint32_t room = kvrt_space_loc_room(pool->space, KVA_MEM_HOST);
	struct kva_stats st;
	uint64_t g;
	int ret;

	if (pool->dev)
		return -EOPNOTSUPP;
	kva_pool_stats(pool, &st);
	if (pages <= st.free_mem[KVA_MEM_HOST] || !room)
		return 0;
	g = kvmm_div_round_up(pages - st.free_mem[KVA_MEM_HOST],
			      pool->pages_per_granule);
	if (g > room)
		g = room;
	ret = kva_pool_grow_mem(pool, (uint32_t)g, KVA_MEM_HOST);
	return ret ? ret : (int)g;
}

/**
 * kva_migrate_reason() - a migration result in words
 * @r: result
 *
 * Return: a static string.
 */
const char *kva_migrate_reason(enum kva_migrate_result r)
{
	switch (r) {
	case KVA_MIGRATE_DONE:
		return "done";
	case KVA_MIGRATE_BUDGET:
		return "byte budget spent";
	case KVA_MIGRATE_NO_ROOM:
		return "no room in the other tier";
	}
	return "?";
}

/*
 * Rebuild ring[head, tail) from its entries still free plus @extra pages,
 * HBM pages first (a stable partition through pool->scratch), so that
 * allocation takes HBM pages while there are any.
 */
static void ring_rebuild(struct kva_pool *pool, const uint32_t *extra,
			 uint32_t nx)
{
	uint64_t n = pool->tail - pool->head, k = 0;
	uint32_t cap = pool->nr_page_ids;

	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = 0; i < n + nx; i++) {
			uint32_t p = i < n ? pool->ring[(pool->head + i) % cap]
					   : extra[i - n];

			if (pool->page_list[p] != KVA_OWNER_FREE)
				continue;
			if ((kva_page_mem(pool, p) == KVA_MEM_HBM) == !pass)
				pool->scratch[k++] = p;
		}
	}
	for (uint64_t i = 0; i < k; i++)
		pool->ring[(pool->head + i) % cap] = pool->scratch[i];
	pool->tail = pool->head + k;
}

/**
 * kva_page_sealed() - may page @p have a clean copy
 * @pool: host pool
 * @p: page id
 *
 * A full high-tier page of its list: appends write only past a list's
 * tokens, so nothing writes it until an operation other than append or
 * migration touches its list (which drops its clean copy first).
 *
 * Return: true for an owned high-tier page whose tokens fill it.
 */
bool kva_page_sealed(const struct kva_pool *pool, uint32_t p)
{
	uint32_t l, e;

	if (p >= pool->nr_page_ids || !kva_owned(pool->page_list[p]))
		return false;
	l = pool->page_list[p];
	e = pool->page_pos[p];
	return e < pool->npages[2 * l + KVA_HI] &&
	       (uint64_t)(e + 1) * pool->layout[KVA_HI].tokens <=
		       pool->ntokens[2 * l + KVA_HI];
}

/* the shadow array covers the page ids (none held while it is resized) */
static int shadow_ready(struct kva_pool *pool)
{
	uint32_t *a;

	if (pool->shadow_ids == pool->nr_page_ids)
		return 0;
	if (pool->nr_shadow)
		return -EINVAL;	/* a resize did not drop them: a bug */
	a = malloc((size_t)pool->nr_page_ids * sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (uint32_t i = 0; i < pool->nr_page_ids; i++)
		a[i] = KVA_PAGE_NONE;
	free(pool->shadow);
	pool->shadow = a;
	pool->shadow_ids = pool->nr_page_ids;
	return 0;
}

/* the clean host copy of HBM page @p, or KVA_PAGE_NONE */
static uint32_t shadow_of(const struct kva_pool *pool, uint32_t p)
{
	return p < pool->shadow_ids ? pool->shadow[p] : KVA_PAGE_NONE;
}

/*
 * HBM page @p's clean copy, if it has one, back to the free ring at its
 * tail (after the HBM pages, as the ring keeps them)
 */
static void shadow_free(struct kva_pool *pool, uint32_t p)
{
	uint32_t h = shadow_of(pool, p);

	if (h == KVA_PAGE_NONE)
		return;
	pool->shadow[p] = KVA_PAGE_NONE;
	pool->page_list[h] = KVA_OWNER_FREE;
	pool->page_pos[h] = KVA_PAGE_NONE;
	pool->ring[pool->tail++ % pool->nr_page_ids] = h;
	pool->nr_shadow--;
}

/**
 * kva_shadow_drop() - give every clean host copy back to the free ring
 * @pool: pool
 *
 * Called before compaction and budget changes, which may move or free any
 * page (trim, free, shrink and eviction drop only their slots' copies,
 * kva_shadow_drop_slots(); token counts the list's, kva_shadow_drop_list()):
 * a copy must never outlive its page's contents. O(page ids) when there
 * are copies, nothing otherwise.
 */
void kva_shadow_drop(struct kva_pool *pool)
{
	if (!pool->nr_shadow)
		return;
	for (uint32_t p = 0; p < pool->shadow_ids; p++)
		shadow_free(pool, p);
	ring_rebuild(pool, NULL, 0);
}

/**
 * kva_shadow_drop_list() - drop the clean copies of part of a list
 * @pool: pool
 * @list: list
 * @from: first high-tier entry whose copy goes (its page is no longer
 *	full, or is about to change)
 *
 * The host pages go back to the free ring (shadow_free()).
 */
void kva_shadow_drop_list(struct kva_pool *pool, uint32_t list, uint32_t from)
{
	if (!pool->nr_shadow || list >= pool->nr_lists)
		return;
	for (uint32_t e = from; e < pool->npages[2 * list + KVA_HI]; e++)
		shadow_free(pool, pool->table[(size_t)list * pool->width + e]);
}

/**
 * kva_shadow_drop_slots() - drop the clean copies of some sequences' pages
 * @pool: pool
 * @slots: slots about to be freed, trimmed, shrunk or evicted (validated
 *	by the caller)
 * @n: entries at @slots
 *
 * What an operation on those slots may write or free has no copy left;
 * the other slots keep theirs.
 */
void kva_shadow_drop_slots(struct kva_pool *pool, const uint32_t *slots,
			   uint32_t n)
{
	uint32_t lps = pool->lists_per_slot;

	for (uint32_t i = 0; i < n && pool->nr_shadow; i++)
		for (uint32_t j = 0; j < lps; j++)
			kva_shadow_drop_list(pool, slots[i] * lps + j, 0);
}

/**
 * kva_migrate_reclaim() - give held pages back to the ring once safe
 * @pool: pool
 * @wait: non-zero to wait for the readers' fences
 *
 * Pages migration moved away from stay held (KVA_OWNER_HELD) until the
 * fences it recorded on the reader streams complete; then they all join
 * the ring (HBM pages first). kva_migrate() and kva_compact() call this
 * without waiting.
 *
 * Return: pages given back (0 when none is held or a fence is pending);
 * the runtime's error.
 */
int kva_migrate_reclaim(struct kva_pool *pool, int wait)
{
	uint32_t n = pool->nr_held;

	if (!n)
		return 0;
	for (int i = 0; i < KVRT_MAX_STREAMS; i++) {
		int r;

		if (!pool->held_fence[i])
			continue;
		r = kvrt_fence_done(pool->held_fence[i], wait);
		if (r <= 0)
			return r;
	}
	for (uint32_t i = 0; i < n; i++)
		pool->page_list[pool->held[i]] = KVA_OWNER_FREE;
	ring_rebuild(pool, pool->held, n);
	pool->nr_held = 0;
	for (int i = 0; i < KVRT_MAX_STREAMS; i++) {
		kvrt_fence_put(pool->held_fence[i]);
		pool->held_fence[i] = NULL;
		pool->held_stream[i] = NULL;
	}
	return (int)n;
}

/* requests: in range, owned, of the tier they leave, each once */
static int check_requests(struct kva_pool *pool,
			  struct kva_migrate_control *mc, const uint32_t *ids,
			  uint32_t n, uint32_t from)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = ids[i];

		if (p >= pool->nr_page_ids || !kva_owned(pool->page_list[p]) ||
		    kva_page_mem(pool, p) != from || mc->mark[p])
			return -EINVAL;
		mc->mark[p] = 1;
	}
	return 0;
}

static void unmark(struct kva_migrate_control *mc, const uint32_t *ids,
		   uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] < mc->nr_ids)
			mc->mark[ids[i]] = 0;
}

/* one demotion of @v (room checked): to its clean copy @h, else
 * (KVA_PAGE_NONE) to the next free host page; returns the bytes it copies */
static uint64_t plan_demote(struct kva_pool *pool,
			    struct kva_migrate_control *mc, uint32_t v,
			    uint32_t h, uint32_t *io, bool leaves)
{
	bool clean = h != KVA_PAGE_NONE;

	if (!clean)
		h = mc->free_mem[KVA_MEM_HOST][(*io)++];
	mc->src[mc->nr_moves] = v;
	mc->dst[mc->nr_moves] = h;
	mc->nocopy[mc->nr_moves] = clean;
	mc->leaves[mc->nr_moves++] = leaves;
	return clean ? 0 : pool->page_size;
}

/*
 * The plan: free pages per tier in ring order, then promotions served by
 * free HBM pages, then by victims; then reserve demotions. A victim with
 * a clean copy goes to it without a copy. Fills the move arrays,
 * demotions first.
 */
static void plan(struct kva_pool *pool, struct kva_migrate_control *mc,
		 const uint32_t *promote, uint32_t np, const uint32_t *demote,
		 uint32_t nd)
{
	uint64_t ps = pool->page_size;
	uint32_t nf[KVA_NR_MEM] = { 0 }, ih = 0, io = 0, iv = 0, npro = 0;
	uint32_t cap = pool->nr_page_ids, copy;
	bool clean;

	for (uint64_t i = pool->head; i < pool->tail; i++) {
		uint32_t p = pool->ring[i % cap], m = kva_page_mem(pool, p);

		mc->free_mem[m][nf[m]++] = p;
	}
	mc->result = KVA_MIGRATE_DONE;
	for (uint32_t k = 0; k < np; k++) {
		if (ih < nf[KVA_MEM_HBM]) {
			if (mc->call_bytes + ps > mc->budget_bytes) {
				mc->result = KVA_MIGRATE_BUDGET;
				break;
			}
			mc->psrc[npro] = promote[k];
			mc->pdst[npro++] = mc->free_mem[KVA_MEM_HBM][ih++];
			mc->call_bytes += ps;
			continue;
		}
		copy = iv < nd ? shadow_of(pool, demote[iv]) : KVA_PAGE_NONE;
		clean = copy != KVA_PAGE_NONE;
		if (iv >= nd || (!clean && io >= nf[KVA_MEM_HOST])) {
			mc->result = KVA_MIGRATE_NO_ROOM;
			break;
		}
		if (mc->call_bytes + (clean ? 1 : 2) * ps > mc->budget_bytes) {
			mc->result = KVA_MIGRATE_BUDGET;
			break;
		}
		/* the victim to the host, the promoted page into its place */
		mc->call_bytes += ps + plan_demote(pool, mc, demote[iv], copy,
						   &io, false);
		mc->psrc[npro] = promote[k];
		mc->pdst[npro++] = demote[iv++];
	}
	/* keep @hbm_reserve HBM pages free: demote more victims */
	while (mc->result == KVA_MIGRATE_DONE &&
	       nf[KVA_MEM_HBM] - ih < mc->hbm_reserve && iv < nd) {
		copy = shadow_of(pool, demote[iv]);
		clean = copy != KVA_PAGE_NONE;
		if (!clean && io >= nf[KVA_MEM_HOST]) {
			mc->result = KVA_MIGRATE_NO_ROOM;
			break;
		}
		if (!clean && mc->call_bytes + ps > mc->budget_bytes) {
			mc->result = KVA_MIGRATE_BUDGET;
			break;
		}
		mc->call_bytes += plan_demote(pool, mc, demote[iv++], copy,
					      &io, true);
		nf[KVA_MEM_HBM]++;	/* one more HBM page will be free */
	}
	mc->nr_demote = mc->nr_moves;
	for (uint32_t k = 0; k < npro; k++) {
		/* a full page keeps its host page as its clean copy */
		bool keep = mc->keep_copies && kva_page_sealed(pool,
							       mc->psrc[k]);

		mc->src[mc->nr_moves] = mc->psrc[k];
		mc->dst[mc->nr_moves] = mc->pdst[k];
		mc->nocopy[mc->nr_moves] = 0;
		mc->leaves[mc->nr_moves++] = !keep;
	}
	for (uint32_t i = 0; i < mc->nr_moves; i++) {
		mc->list[i] = pool->page_list[mc->src[i]];
		mc->pos[i] = pool->page_pos[mc->src[i]];
	}
}

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int copy_page(struct kva_pool *pool, void *buf, uint32_t src,
		     uint32_t dst)
{
	int ret = kvrt_memcpy_from(pool->ctx, buf, kva_page_addr(pool, src),
				   pool->page_size);

	return ret ? ret : kvrt_memcpy_to(pool->ctx, kva_page_addr(pool, dst),
					  buf, pool->page_size);
}

/*
 * Copy the pages, demotions first. A failed copy leaves the tables as they
 * were; a victim whose page a promotion had begun to overwrite is copied
 * back from its host copy, so nothing the tables point at has changed.
 */
static int copy_moves(struct kva_pool *pool, struct kva_migrate_control *mc)
{
	double t0 = now_us();
	void *buf;
	uint32_t i;
	int ret = 0;

	if (mc->copy) {
		/* the caller's copy: demotions, then the promotions, each
		 * without the demotions to a clean copy */
		uint32_t nd = 0, n = 0;

		for (i = 0; i < mc->nr_moves; i++) {
			if (mc->nocopy[i])
				continue;
			mc->csrc[n] = mc->src[i];
			mc->cdst[n++] = mc->dst[i];
			nd += i < mc->nr_demote;
		}
		if (nd)
			ret = mc->copy(mc->copy_arg, mc->csrc, mc->cdst, nd);
		if (!ret && n > nd)
			ret = mc->copy(mc->copy_arg, mc->csrc + nd,
				       mc->cdst + nd, n - nd);
		mc->copy_us = now_us() - t0;
		return ret;
	}
	buf = malloc(pool->page_size);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < mc->nr_moves && !ret; i++)
		if (!mc->nocopy[i])
			ret = copy_page(pool, buf, mc->src[i], mc->dst[i]);
	if (ret) {
		/* moves [nr_demote, i) wrote their destination */
		for (uint32_t k = 0; k < mc->nr_demote; k++) {
			if (mc->leaves[k])
				continue;
			for (uint32_t j = mc->nr_demote; j < i; j++)
				if (mc->dst[j] == mc->src[k])
					copy_page(pool, buf, mc->dst[k],
						  mc->src[k]);
		}
	}
	free(buf);
	mc->copy_us = now_us() - t0;
	return ret;
}

/* fences on the reader streams; all or none recorded */
static int record_fences(struct kva_migrate_control *mc,
			 struct kvrt_fence **f)
{
	for (uint32_t i = 0; i < mc->nr_streams; i++) {
		int ret = kvrt_fence_record(mc->streams[i], &f[i]);

		if (ret) {
			while (i--)
				kvrt_fence_put(f[i]);
			return ret;
		}
	}
	return 0;
}

/* keep the latest fence per stream (a stream's fences complete in order) */
static int hold_fences(struct kva_pool *pool, struct kva_migrate_control *mc,
		       struct kvrt_fence **f)
{
	for (uint32_t i = 0; i < mc->nr_streams; i++) {
		int slot = -1;

		for (int s = 0; s < KVRT_MAX_STREAMS; s++) {
			if (pool->held_stream[s] == mc->streams[i]) {
				slot = s;
				break;
			}
			if (slot < 0 && !pool->held_stream[s])
				slot = s;
		}
		if (slot < 0)
			return -ENOSPC;
		kvrt_fence_put(pool->held_fence[slot]);
		pool->held_fence[slot] = f[i];
		pool->held_stream[slot] = mc->streams[i];
		f[i] = NULL;
	}
	return 0;
}

static int held_room(struct kva_pool *pool, uint32_t more)
{
	uint32_t need = pool->nr_held + more, *h;

	if (need <= pool->held_cap)
		return 0;
	h = realloc(pool->held, need * sizeof(*h));
	if (!h)
		return -ENOMEM;
	pool->held = h;
	pool->held_cap = need;
	return 0;
}

/* distinct reader streams, at most KVRT_MAX_STREAMS in all with the held */
static int streams_ok(const struct kva_pool *pool,
		      const struct kva_migrate_control *mc)
{
	uint32_t fresh = 0;

	if (mc->nr_streams && !mc->streams)
		return -EINVAL;
	for (uint32_t i = 0; i < mc->nr_streams; i++) {
		int known = 0;

		if (!mc->streams[i])
			return -EINVAL;
		for (uint32_t j = 0; j < i; j++)
			if (mc->streams[j] == mc->streams[i])
				return -EINVAL;
		for (int s = 0; s < KVRT_MAX_STREAMS; s++)
			known |= pool->held_stream[s] == mc->streams[i];
		fresh += !known;
	}
	for (int s = 0; s < KVRT_MAX_STREAMS; s++)
		fresh += pool->held_stream[s] != NULL;
	return fresh > KVRT_MAX_STREAMS ? -ENOSPC : 0;
}

/**
 * kva_migrate() - one batch of page moves between the memory tiers
 * @pool: host pool (the pool's arrays are the state)
 * @mc: control from kva_migrate_init()
 * @promote: host-tier pages wanted in HBM, most wanted first; each owned
 * @np: entries at @promote
 * @demote: HBM pages that may go to the host, coldest first; each owned
 * @nd: entries at @demote
 *
 * Held pages whose fences are done go back first (kva_migrate_reclaim()).
 * Then plans within @mc->budget_bytes (the comment above struct
 * kva_migrate_control), records a fence on each reader stream, copies the
 * pages (demotions first) through the runtime or @mc->copy, rewrites every
 * table and reverse-map entry of the batch in one pass
 * (kvk_migrate_rewrite_cpu()),
 * and rebuilds the ring from the pages still free, HBM first. The pages
 * moved from are held (KVA_OWNER_HELD) until the fences complete, or go to
 * the ring at once when @mc->nr_streams is 0.
 *
 * Return: 0 with @mc->result set; -EINVAL for a request out of range, not
 * owned, of the wrong tier or listed twice, a bad stream list or a @mc
 * made before the pool's budget grew its arrays; -ENOSPC for more reader
 * streams than KVRT_MAX_STREAMS; -EOPNOTSUPP for a device-resident pool;
 * -ENOMEM; the runtime's error from a fence or a page copy. Nothing
 * changed on error (a held page given back first excepted).
 */
int kva_migrate(struct kva_pool *pool, struct kva_migrate_control *mc,
		const uint32_t *promote, uint32_t np, const uint32_t *demote,
		uint32_t nd)
{
	struct kvrt_fence *f[KVRT_MAX_STREAMS] = { NULL };
	struct kvk_migrate_args a;
	struct kva_view v;
	uint32_t nleave = 0;
	int ret;

	if (pool->dev)
		return -EOPNOTSUPP;
	if (mc->nr_ids != pool->nr_page_ids || (np && !promote) ||
	    (nd && !demote) || mc->nr_streams > KVRT_MAX_STREAMS)
		return -EINVAL;
	if (mc->keep_copies || pool->nr_shadow) {
		ret = shadow_ready(pool);
		if (ret)
			return ret;
	}
	ret = streams_ok(pool, mc);
	if (ret)
		return ret;
	ret = check_requests(pool, mc, promote, np, KVA_MEM_HOST);
	if (!ret)
		ret = check_requests(pool, mc, demote, nd, KVA_MEM_HBM);
	unmark(mc, promote, np);
	unmark(mc, demote, nd);
	if (ret)
		return ret;
	ret = kva_migrate_reclaim(pool, 0);
	if (ret < 0)
		return ret;

	mc->nr_moves = mc->nr_demote = 0;
	mc->call_bytes = 0;
	plan(pool, mc, promote, np, demote, nd);
	if (!mc->nr_moves)
		return 0;
	for (uint32_t i = 0; i < mc->nr_moves; i++)
		nleave += mc->leaves[i];
	ret = mc->nr_streams ? held_room(pool, nleave) : 0;
	if (!ret)
		ret = record_fences(mc, f);
	if (ret)
		return ret;
	ret = copy_moves(pool, mc);
	if (ret) {
		for (uint32_t i = 0; i < mc->nr_streams; i++)
			kvrt_fence_put(f[i]);
		return ret;
	}

	kva_pool_view(pool, &v);
	a = (struct kvk_migrate_args){
		.table = v.table,
		.width = v.width,
		.page_list = v.page_list,
		.page_pos = v.page_pos,
		.nr_lists = pool->nr_lists,
		.nr_pages = pool->nr_page_ids,
		.n = mc->nr_moves,
		.src = mc->src,
		.dst = mc->dst,
		.list = mc->list,
		.pos = mc->pos,
		.src_leaves = mc->leaves,
		.src_owner = mc->nr_streams ? KVA_OWNER_HELD : KVA_OWNER_FREE,
	};
	kvk_migrate_rewrite_cpu(&a, NULL);	/* planned ids: cannot fail */
	/* clean copies: used by the demotions, kept by the promotions */
	for (uint32_t i = 0; i < mc->nr_moves; i++) {
		uint32_t sp = mc->src[i], dp = mc->dst[i];

		if (i < mc->nr_demote && mc->nocopy[i]) {
			pool->shadow[sp] = KVA_PAGE_NONE;
			pool->nr_shadow--;
			mc->clean_demoted++;
		} else if (i >= mc->nr_demote && !mc->leaves[i]) {
			pool->page_list[sp] = KVA_OWNER_SHADOW;
			pool->page_pos[sp] = dp;
			pool->shadow[dp] = sp;
			pool->nr_shadow++;
		}
	}

	if (mc->nr_streams) {
		for (uint32_t i = 0; i < mc->nr_moves; i++)
			if (mc->leaves[i])
				pool->held[pool->nr_held++] = mc->src[i];
		hold_fences(pool, mc, f);	/* room checked above */
		ring_rebuild(pool, NULL, 0);
	} else {
		/* the sources that left are free: the scratch holds them */
		uint32_t k = 0;

		for (uint32_t i = 0; i < mc->nr_moves; i++)
			if (mc->leaves[i])
				mc->psrc[k++] = mc->src[i];
		ring_rebuild(pool, mc->psrc, k);
	}
	mc->pages_demoted += mc->nr_demote;
	mc->pages_promoted += mc->nr_moves - mc->nr_demote;
	mc->bytes_moved += mc->call_bytes;
	return 0;
}

/**
 * kva_migrate_copy_out() - clean host copies of HBM pages
 * @pool: host pool
 * @mc: control from kva_migrate_init(): its copy hook (one batch, HBM to
 *	host) and arrays; its byte budget does not apply
 * @pages: HBM pages to copy; a page that is not an owned full high-tier
 *	HBM page (kva_page_sealed()), already has a copy, or is listed twice
 *	is skipped
 * @n: entries at @pages
 *
 * A page with a clean copy is later demoted without a copy (kva_migrate()).
 * Takes free host pages in ring order and stops when there are none. The
 * copies read the pages while other readers may too; a caller with a copy
 * hook orders the demotions that use them after it (same stream).
 *
 * Return: the copies made, >= 0; -EOPNOTSUPP for a device-resident pool;
 * -EINVAL for a @mc of other page ids; -ENOMEM; the runtime's or the
 * hook's error (then nothing changed: the host pages written were free).
 */
int kva_migrate_copy_out(struct kva_pool *pool, struct kva_migrate_control *mc,
			 const uint32_t *pages, uint32_t n)
{
	uint32_t cap = pool->nr_page_ids, k = 0, j = 0;
	int ret;

	if (pool->dev)
		return -EOPNOTSUPP;
	if (mc->nr_ids != pool->nr_page_ids || (n && !pages))
		return -EINVAL;
	ret = shadow_ready(pool);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = pages[i];

		if (p >= cap || mc->mark[p] || !kva_page_sealed(pool, p) ||
		    kva_page_mem(pool, p) != KVA_MEM_HBM ||
		    pool->shadow[p] != KVA_PAGE_NONE)
			continue;
		mc->mark[p] = 1;
		mc->csrc[k++] = p;
	}
	unmark(mc, mc->csrc, k);
	/* as many free host pages, in ring order (HBM ones come first) */
	for (uint64_t i = pool->head; i < pool->tail && j < k; i++) {
		uint32_t h = pool->ring[i % cap];

		if (kva_page_mem(pool, h) == KVA_MEM_HOST)
			mc->cdst[j++] = h;
	}
	k = j;
	if (!k)
		return 0;
	if (mc->copy) {
		ret = mc->copy(mc->copy_arg, mc->csrc, mc->cdst, k);
	} else {
		void *buf = malloc(pool->page_size);

		if (!buf)
			return -ENOMEM;
		for (uint32_t i = 0; i < k && !ret; i++)
			ret = copy_page(pool, buf, mc->csrc[i], mc->cdst[i]);
		free(buf);
	}
	if (ret)
		return ret;
	for (uint32_t i = 0; i < k; i++) {
		uint32_t p = mc->csrc[i], h = mc->cdst[i];

		pool->page_list[h] = KVA_OWNER_SHADOW;
		pool->page_pos[h] = p;
		pool->shadow[p] = h;
	}
	pool->nr_shadow += k;
	ring_rebuild(pool, NULL, 0);	/* the copies leave the ring */
	mc->bytes_copied_out += (uint64_t)k * pool->page_size;
	return (int)k;
}
