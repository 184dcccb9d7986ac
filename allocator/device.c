// SPDX-License-Identifier: MIT
/*
 * device.c - the device-resident pool: the data-plane arrays in one device
 * allocation, the batched ops enqueued on the pool's stream with their
 * arguments staged through pinned buffers, and the pull/push that keep the
 * pool's host arrays a snapshot of the device state.
 */
#include <stdlib.h>
#include <string.h>

#include "kva_dev.h"
#include "kvevict.h"

/**
 * DOC: device pool
 *
 * A pool created with KVA_POOL_DEVICE (on a CUDA context) keeps its
 * data plane - ring, head, tail, reverse map, tables, counts, scratch and
 * result word - in three device allocations: the per-page arrays (sized by
 * the largest budget so far), the tables (their width bounded by it too)
 * and the rest (sized by slots and lists), so that a budget that grows the
 * first two (kva_pool_set_budget(): wait, pull, new arrays filled from the
 * host's, swapped in) leaves the counts where they were. The control
 * plane (slot states, granule states, accounting) stays on the host: every
 * call validates there exactly as on a host pool, then enqueues the
 * kva_*_cuda() kernels on the pool's stream and returns without waiting.
 *
 * Sync rule: the pool's host arrays are a snapshot, exact after
 * kva_pool_sync() (which waits for the pool's stream and copies the device
 * state back). kva_check(), kva_pool_stats(), kva_pool_grow(),
 * kva_set_tokens() and kva_compact() sync themselves first.
 *
 * Refusals: admit and trim are decided entirely on the host (the pages a
 * prefill slot holds are known from its admission), so their kernels never
 * refuse. Append is decided on the host when the worst case (one page per
 * growing tier of every list) fits the free lower bound; otherwise the pool
 * syncs and counts exactly on the snapshot, so -ENOSPC and -E2BIG are
 * returned synchronously. A refusal only the device can see (a row that
 * overflows because device code raised the token counts in between) lands
 * in the result word; a latch kernel after each op keeps the first one in
 * a sticky word, and the next kva_pool_sync() returns it.
 *
 * Admission accounting: free_lb never exceeds the free pages the device
 * will have when the next op runs: admit subtracts exactly, trim adds
 * exactly, append subtracts its worst case (or its exact count after a
 * sync), grow adds its pages; free, shrink, evict and a trim "as held"
 * add nothing until the next sync makes it exact again.
 *
 * Bound stream: kva_pool_bind_stream() makes the ops run on a caller's
 * stream (the executor's), ordered after what the pool enqueued before on
 * its previous stream; the pool's own stream stays for when none is bound.
 *
 * Fences: kva_pool_fence() records, after the work enqueued so far, a
 * copy of the ring's head and tail and of the sticky refusal word into a
 * slot of a small pinned mirror, clears the sticky word, and records an
 * event. kva_pool_fence_state() finds the latest fence whose event has
 * completed with cudaEventQuery() (never blocking, unless asked to wait)
 * and reads the figures of that fence from the mirror.
 */

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#include "kvk_cudart.h"

#define KVA_STAGE_BUFS 4
#define KVA_FENCES 64		/* fence ring: events and mirror slots */

struct kva_dev {
	void *mem;			/* slots, lists, words: fixed */
	void *pmem;			/* per-page arrays: the budget's */
	void *tmem;			/* tables: lists x width */
	struct kva_view v;		/* the pool's arrays inside mem */
	int32_t *sticky;		/* first refusal since the last pull */
	uint32_t *dslots;		/* [nr_slots] staged slot list */
	uint32_t *dargs;		/* [nr_slots] staged prompts */
	uint32_t *dhi, *dlo;		/* [nr_lists] staged trim counts */
	uint32_t *dsrc, *ddst;		/* [nr_page_ids] moves */
	size_t o_args, o_hi, o_lo;	/* word offsets inside a stage buf */
	struct kvrt_stream *ks;		/* the ops' stream */
	struct kvrt_stream *kside;	/* compaction's copy stream */
	cudaStream_t st, side;
	uint32_t *pin;			/* [KVA_STAGE_BUFS][pin_words] */
	size_t pin_words;
	cudaEvent_t pin_done[KVA_STAGE_BUFS];
	uint32_t pin_next;
	cudaEvent_t mark;		/* ops stream, before a copy */
	cudaEvent_t c0, c1;		/* around the last page copy */
	int timed;
	/*
	 * append as one CUDA graph, captured for the last batch size: [1]
	 * latches a refusal (asynchronous append), [0] does not (the
	 * synchronous append reads the result itself)
	 */
	cudaGraphExec_t app_exec[2];
	uint32_t app_n[2];		/* slots of each captured batch */
	uint32_t *app_pin;		/* [nr_slots] staged slot list */
	uint64_t *app_ht;		/* [3] pinned: head, tail, result */
	cudaEvent_t app_done;		/* the graphs have read app_pin */
	int dirty;			/* device ahead of the host arrays */
	int32_t refused;		/* first refusal pulled, not reported */

	/* eviction (kva_dev_evict()) and grow (kva_dev_grow()) */
	uint32_t *dgran;		/* [nr_gslots] granules grown */
	uint32_t *dquota, *dbase;	/* [nr_slots] */
	uint32_t *devicted;		/* [nr_lists] */
	void *evscratch;		/* kvk_evict_scratch_bytes() */
	cudaStream_t own;		/* the pool's own stream (ks) */

	/* fences: slot i holds seqno fseq[i] */
	cudaEvent_t fev[KVA_FENCES];
	uint64_t fseq[KVA_FENCES];
	uint64_t *fmirror;		/* pinned [KVA_FENCES][4]: head,
					 * tail, sticky, pages mapped */
	uint64_t flb[KVA_FENCES];	/* free_lb when each was recorded */
	uint64_t fdone;			/* latest fence known complete */
	uint64_t freported;		/* refusals reported up to here */
	uint64_t fcredited;		/* free_lb corrected up to here */
};

#define CU(call)                                                               \
	do {                                                                   \
		ret = kvk_cuda_errno(call);                                          \
		if (ret)                                                       \
			goto out;                                              \
	} while (0)

/* next 16-byte aligned piece of @bytes at *@at (base 0 computes the size) */
static void *carve(uintptr_t base, size_t *at, size_t bytes)
{
	uintptr_t p = base + *at;

	*at += (bytes + 15) & ~(size_t)15;
	return (void *)p;
}

/* the per-page arrays of @ids page ids in @gslots granule slots */
static size_t layout_pages(struct kva_dev *d, uintptr_t base, size_t ids,
			   size_t gslots)
{
	size_t at = 0;

	d->v.ring = carve(base, &at, ids * 4);
	d->v.page_list = carve(base, &at, ids * 4);
	d->v.page_pos = carve(base, &at, ids * 4);
	d->dsrc = carve(base, &at, ids * 4);
	d->ddst = carve(base, &at, ids * 4);
	d->dgran = carve(base, &at, gslots * 4);
	return at;
}

static size_t layout_table(struct kva_dev *d, uintptr_t base, size_t lists,
			   size_t width)
{
	size_t at = 0;

	d->v.table = carve(base, &at, lists * width * 4);
	return at;
}

/* everything sized by slots and lists only */
static size_t layout(struct kva_pool *pool, struct kva_dev *d, uintptr_t base)
{
	size_t lists = pool->nr_lists, at = 0;
	uint64_t *ht;

	d->v.npages = carve(base, &at, lists * 2 * 4);
	d->v.ntokens = carve(base, &at, lists * 2 * 4);
	d->v.cnt = carve(base, &at, lists * 4);
	d->v.off = carve(base, &at, (lists + 1) * 8);
	ht = carve(base, &at, 3 * 8);
	d->v.head = &ht[0];
	d->v.tail = &ht[1];
	d->v.err = (int32_t *)&ht[2];
	d->sticky = d->v.err + 1;
	d->dslots = carve(base, &at, pool->nr_slots * 4);
	d->dargs = carve(base, &at, pool->nr_slots * 4);
	d->dhi = carve(base, &at, lists * 4);
	d->dlo = carve(base, &at, lists * 4);
	d->dquota = carve(base, &at, pool->nr_slots * 4);
	d->dbase = carve(base, &at, pool->nr_slots * 4);
	d->devicted = carve(base, &at, lists * 4);
	d->evscratch = carve(base, &at,
			     kvk_evict_scratch_bytes(pool->nr_slots,
						     pool->lists_per_slot));
	return at;
}

/* words of one pinned staging buffer */
static size_t pin_words(const struct kva_pool *pool, size_t *o_args,
			size_t *o_hi, size_t *o_lo)
{
	size_t lists = pool->nr_lists;

	*o_args = (pool->nr_slots + 3) & ~3u;
	*o_hi = 2 * *o_args;
	*o_lo = *o_hi + ((lists + 3) & ~(size_t)3);
	return *o_lo + lists;
}

/**
 * kva_dev_bytes() - device memory a device-resident @pool holds
 * @pool: a pool, or the geometry of one (kva_pool_cost())
 * @pinned: receives the pinned host bytes it holds
 *
 * Return: bytes of device memory of the pool's arrays, as its fields size
 * them.
 */
uint64_t kva_dev_bytes(const struct kva_pool *pool, uint64_t *pinned)
{
	struct kva_dev d;
	size_t a, h, l;

	*pinned = KVA_STAGE_BUFS * pin_words(pool, &a, &h, &l) * 4 +
		  (uint64_t)pool->nr_slots * 4 + 3 * sizeof(uint64_t) +
		  KVA_FENCES * 4 * sizeof(uint64_t);
	return layout((struct kva_pool *)pool, &d, 0) +
	       layout_pages(&d, 0, pool->nr_page_ids, pool->nr_gslots) +
	       layout_table(&d, 0, pool->nr_lists, pool->width);
}

/**
 * kva_dev_create() - make @pool device-resident
 * @pool: pool just created, no granule mapped, on a CUDA context
 *
 * Return: 0 or a negative errno (nothing is left allocated).
 */
int kva_dev_create(struct kva_pool *pool)
{
	struct kva_dev *d = calloc(1, sizeof(*d));
	size_t bytes, lists = pool->nr_lists;
	int ret = -ENOMEM;

	pool->resv = calloc(pool->nr_slots, sizeof(uint32_t));
	if (!d || !pool->resv)
		goto out;
	kva_pool_view(pool, &d->v);
	bytes = layout(pool, d, 0);
	CU(cudaMalloc(&d->mem, bytes));
	layout(pool, d, (uintptr_t)d->mem);
	CU(cudaMemset(d->mem, 0, bytes));
	bytes = layout_pages(d, 0, pool->nr_page_ids, pool->nr_gslots);
	CU(cudaMalloc(&d->pmem, bytes));
	layout_pages(d, (uintptr_t)d->pmem, pool->nr_page_ids,
		     pool->nr_gslots);
	CU(cudaMemset(d->pmem, 0, bytes));
	bytes = layout_table(d, 0, lists, pool->width);
	CU(cudaMalloc(&d->tmem, bytes));
	layout_table(d, (uintptr_t)d->tmem, lists, pool->width);
	d->pin_words = pin_words(pool, &d->o_args, &d->o_hi, &d->o_lo);
	CU(cudaMallocHost((void **)&d->pin,
			  KVA_STAGE_BUFS * d->pin_words * 4));
	CU(cudaMallocHost((void **)&d->app_pin, pool->nr_slots * 4));
	CU(cudaMallocHost((void **)&d->app_ht, 3 * sizeof(uint64_t)));
	CU(cudaEventCreateWithFlags(&d->app_done, cudaEventDisableTiming));
	for (int i = 0; i < KVA_STAGE_BUFS; i++)
		CU(cudaEventCreateWithFlags(&d->pin_done[i],
					    cudaEventDisableTiming));
	CU(cudaEventCreateWithFlags(&d->mark, cudaEventDisableTiming));
	CU(cudaEventCreate(&d->c0));
	CU(cudaEventCreate(&d->c1));
	CU(cudaMallocHost((void **)&d->fmirror,
			  KVA_FENCES * 4 * sizeof(uint64_t)));
	memset(d->fmirror, 0, KVA_FENCES * 4 * sizeof(uint64_t));
	for (int i = 0; i < KVA_FENCES; i++)
		CU(cudaEventCreateWithFlags(&d->fev[i],
					    cudaEventDisableTiming));
	ret = kvrt_stream_create(pool->ctx, &d->ks);
	if (ret)
		goto out;
	ret = kvrt_stream_create(pool->ctx, &d->kside);
	if (ret)
		goto out;
	d->st = (cudaStream_t)kvrt_stream_handle(d->ks);
	d->own = d->st;
	d->side = (cudaStream_t)kvrt_stream_handle(d->kside);
	pool->dev = d;
	ret = kva_dev_push(pool, 1);
	if (!ret)
		ret = kvk_cuda_drain(d->st);
	if (!ret)
		return 0;
out:
	if (d) {
		pool->dev = d;
		kva_dev_destroy(pool);
	} else {
		free(pool->resv);
		pool->resv = NULL;
	}
	return ret;
}

/**
 * kva_dev_destroy() - wait for the pool's streams and free its device half
 * @pool: device pool (its space is already destroyed, or never fenced)
 */
void kva_dev_destroy(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;

	if (!d)
		return;
	if (d->ks)
		kvrt_stream_destroy(d->ks);
	if (d->kside)
		kvrt_stream_destroy(d->kside);
	for (int i = 0; i < KVA_STAGE_BUFS; i++)
		if (d->pin_done[i])
			cudaEventDestroy(d->pin_done[i]);
	if (d->mark)
		cudaEventDestroy(d->mark);
	if (d->c0)
		cudaEventDestroy(d->c0);
	if (d->c1)
		cudaEventDestroy(d->c1);
	for (int i = 0; i < 2; i++)
		if (d->app_exec[i])
			cudaGraphExecDestroy(d->app_exec[i]);
	if (d->app_done)
		cudaEventDestroy(d->app_done);
	for (int i = 0; i < KVA_FENCES; i++)
		if (d->fev[i])
			cudaEventDestroy(d->fev[i]);
	cudaFreeHost(d->fmirror);
	cudaFreeHost(d->app_pin);
	cudaFreeHost(d->app_ht);
	cudaFreeHost(d->pin);
	cudaFree(d->mem);
	cudaFree(d->pmem);
	cudaFree(d->tmem);
	free(d);
	free(pool->resv);
	pool->resv = NULL;
	pool->dev = NULL;
}

/* copy @bytes of one array between the pool's host array and the device */
static int xfer(struct kva_dev *d, void *dev, void *host, size_t bytes,
		int to_dev)
{
	return kvk_cuda_errno(cudaMemcpyAsync(to_dev ? dev : host,
					to_dev ? host : dev, bytes,
					to_dev ? cudaMemcpyHostToDevice
					       : cudaMemcpyDeviceToHost,
					d->st));
}

/**
 * kva_dev_resize_prepare() - the device arrays for @r, filled
 * @pool: device pool, waited for and pulled
 * @r: the host arrays made for the larger budget (pool.c)
 *
 * Allocates the per-page arrays (and the tables, when @r has new ones)
 * and copies @r's into them; the pool still uses its own.
 *
 * Return: 0 or the CUDA error as an errno (nothing is left allocated).
 */
int kva_dev_resize_prepare(struct kva_pool *pool, struct kva_resize *r)
{
	struct kva_dev *d = pool->dev, t = *d;
	size_t ids = (size_t)r->gslots * pool->pages_per_granule;
	size_t lists = pool->nr_lists, bytes;
	int ret;

	bytes = layout_pages(&t, 0, ids, r->gslots);
	CU(cudaMalloc(&r->dpages, bytes));
	layout_pages(&t, (uintptr_t)r->dpages, ids, r->gslots);
	CU(cudaMemsetAsync(r->dpages, 0, bytes, d->st));
	ret = xfer(d, t.v.ring, r->ring, ids * 4, 1);
	if (!ret)
		ret = xfer(d, t.v.page_list, r->page_list, ids * 4, 1);
	if (!ret)
		ret = xfer(d, t.v.page_pos, r->page_pos, ids * 4, 1);
	if (!ret && r->table) {
		bytes = layout_table(&t, 0, lists, r->width);
		CU(cudaMalloc(&r->dtable, bytes));
		layout_table(&t, (uintptr_t)r->dtable, lists, r->width);
		ret = xfer(d, t.v.table, r->table, lists * r->width * 4, 1);
	}
	if (!ret)
		ret = kvk_cuda_drain(d->st);
out:
	if (ret)
		kva_dev_resize_abort(r);
	return ret;
}

/* drop what kva_dev_resize_prepare() allocated */
void kva_dev_resize_abort(struct kva_resize *r)
{
	cudaFree(r->dpages);
	cudaFree(r->dtable);
	r->dpages = NULL;
	r->dtable = NULL;
}

/**
 * kva_dev_resize_commit() - use @r's device arrays from now on
 * @pool: device pool, its streams idle since kva_dev_resize_prepare()
 * @r: prepared; its device arrays become the pool's
 *
 * The append graphs hold the old addresses: they are dropped and captured
 * again at the next append.
 */
void kva_dev_resize_commit(struct kva_pool *pool, struct kva_resize *r)
{
	struct kva_dev *d = pool->dev;
	size_t ids = (size_t)r->gslots * pool->pages_per_granule;

	cudaFree(d->pmem);
	d->pmem = r->dpages;
	layout_pages(d, (uintptr_t)d->pmem, ids, r->gslots);
	d->v.ring_cap = ids;
	if (r->dtable) {
		cudaFree(d->tmem);
		d->tmem = r->dtable;
		layout_table(d, (uintptr_t)d->tmem, pool->nr_lists, r->width);
		d->v.width = r->width;
	}
	for (int i = 0; i < 2; i++) {
		if (d->app_exec[i])
			cudaGraphExecDestroy(d->app_exec[i]);
		d->app_exec[i] = NULL;
		d->app_n[i] = 0;
	}
	r->dpages = NULL;
	r->dtable = NULL;
}

/**
 * kva_dev_pull() - make the host arrays an exact snapshot
 * @pool: device pool
 *
 * Waits for the pool's stream, copies ring, head, tail, reverse map,
 * tables and counts back, latches the device's first refusal into the
 * host (reported by kva_pool_sync()), and makes free_lb and nr_used exact.
 *
 * Return: 0 or the CUDA error as an errno.
 */
int kva_dev_pull(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;
	size_t ids = pool->nr_page_ids, lists = pool->nr_lists;
	uint64_t ht[3];
	int ret;

	if (!d->dirty)
		return 0;
	ret = xfer(d, d->v.ring, pool->ring, ids * 4, 0);
	if (!ret)
		ret = xfer(d, d->v.page_list, pool->page_list, ids * 4, 0);
	if (!ret)
		ret = xfer(d, d->v.page_pos, pool->page_pos, ids * 4, 0);
	if (!ret)
		ret = xfer(d, d->v.table, pool->table,
			   lists * pool->width * 4, 0);
	if (!ret)
		ret = xfer(d, d->v.npages, pool->npages, lists * 8, 0);
	if (!ret)
		ret = xfer(d, d->v.ntokens, pool->ntokens, lists * 8, 0);
	if (!ret)
		ret = xfer(d, d->v.head, ht, sizeof(ht), 0);
	if (!ret)
		ret = kvk_cuda_errno(cudaMemsetAsync(d->sticky, 0, 4, d->st));
	if (!ret)
		ret = kvk_cuda_drain(d->st);
	if (ret)
		return ret;
	pool->head = ht[0];
	pool->tail = ht[1];
	pool->err = (int32_t)ht[2];
	if ((int32_t)(ht[2] >> 32) && !d->refused)
		d->refused = (int32_t)(ht[2] >> 32);
	pool->free_lb = pool->tail - pool->head;
	pool->nr_used = (uint64_t)pool->nr_granules * pool->pages_per_granule -
			pool->free_lb;
	d->fcredited = pool->fence_last; /* exact: nothing left to credit */
	d->dirty = 0;
	return 0;
}

/* wait for both of the pool's streams (before its space goes) */
int kva_dev_wait(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;
	int ret = kvk_cuda_drain(d->st);

	if (!ret && d->st != d->own)
		ret = kvk_cuda_drain(d->own);
	return ret ? ret : kvk_cuda_drain(d->side);
}

/**
 * kva_dev_push() - copy the host arrays to the device, in stream order
 * @pool: device pool whose host arrays are exact (pulled, then changed by
 *	the control plane)
 * @all: 1 for every array; 0 for the ring, head, tail and page owners only
 *	(what growing and compaction's ring rebuild change)
 *
 * Copies from pageable memory: each is staged before the call returns, so
 * the host arrays may change right after.
 *
 * Return: 0 or the CUDA error as an errno.
 */
int kva_dev_push(struct kva_pool *pool, int all)
{
	struct kva_dev *d = pool->dev;
	size_t ids = pool->nr_page_ids, lists = pool->nr_lists;
	uint64_t ht[2] = { pool->head, pool->tail };
	int ret;

	ret = xfer(d, d->v.ring, pool->ring, ids * 4, 1);
	if (!ret)
		ret = xfer(d, d->v.page_list, pool->page_list, ids * 4, 1);
	if (!ret)
		ret = xfer(d, d->v.head, ht, sizeof(ht), 1);
	if (!ret && all)
		ret = xfer(d, d->v.page_pos, pool->page_pos, ids * 4, 1);
	if (!ret && all)
		ret = xfer(d, d->v.table, pool->table,
			   lists * pool->width * 4, 1);
	if (!ret && all)
		ret = xfer(d, d->v.npages, pool->npages, lists * 8, 1);
	if (!ret && all)
		ret = xfer(d, d->v.ntokens, pool->ntokens, lists * 8, 1);
	if (!ret)
		pool->free_lb = pool->tail - pool->head;
	return ret;
}

/*
 * Stage an op's arguments: fill the next pinned buffer (waiting only for
 * the copy made from it KVA_STAGE_BUFS ops ago), copy the parts used to
 * the device staging area on the pool's stream, then mark the buffer.
 */
static int stage_n(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		   const uint32_t *args, const uint32_t *hi,
		   const uint32_t *lo, size_t nk)
{
	struct kva_dev *d = pool->dev;
	uint32_t i = d->pin_next++ % KVA_STAGE_BUFS;
	uint32_t *b = d->pin + i * d->pin_words;
	int ret;

	CU(cudaEventSynchronize(d->pin_done[i]));
	memcpy(b, slots, n * 4);
	CU(cudaMemcpyAsync(d->dslots, b, n * 4, cudaMemcpyHostToDevice,
			   d->st));
	if (args) {
		memcpy(b + d->o_args, args, n * 4);
		CU(cudaMemcpyAsync(d->dargs, b + d->o_args, n * 4,
				   cudaMemcpyHostToDevice, d->st));
	}
	if (hi) {
		memcpy(b + d->o_hi, hi, nk * 4);
		CU(cudaMemcpyAsync(d->dhi, b + d->o_hi, nk * 4,
				   cudaMemcpyHostToDevice, d->st));
	}
	if (lo) {
		memcpy(b + d->o_lo, lo, nk * 4);
		CU(cudaMemcpyAsync(d->dlo, b + d->o_lo, nk * 4,
				   cudaMemcpyHostToDevice, d->st));
	}
	CU(cudaEventRecord(d->pin_done[i], d->st));
out:
	return ret;
}

/* the slots, and for trim the per-list counts of the batch */
static int stage(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		 const uint32_t *args, const uint32_t *hi, const uint32_t *lo)
{
	return stage_n(pool, slots, n, args, hi, lo,
		       (size_t)n * pool->lists_per_slot);
}

static int enqueued(struct kva_pool *pool, int ret, int latch)
{
	struct kva_dev *d = pool->dev;

	d->dirty = 1;
	if (!ret && latch)
		ret = kva_err_latch_cuda(d->v.err, d->sticky, d->st);
	return ret;
}

/* kva_admit() on a device pool, after validation: enqueue only */
int kva_dev_admit(struct kva_pool *pool, const uint32_t *slots,
		  const uint32_t *prompt, uint32_t n)
{
	struct kva_dev *d = pool->dev;
	int ret;

	if (!n)
		return 0;
	ret = stage(pool, slots, n, prompt, NULL, NULL);
	if (!ret)
		ret = kva_admit_cuda(&d->v, d->dslots, d->dargs, n, d->st);
	return enqueued(pool, ret, 1);
}

/* kva_trim() on a device pool, after validation: enqueue only */
int kva_dev_trim(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		 const uint32_t *hi_tokens, const uint32_t *lo_tokens)
{
	struct kva_dev *d = pool->dev;
	int ret;

	if (!n)
		return 0;
	ret = stage(pool, slots, n, NULL, hi_tokens, lo_tokens);
	if (!ret)
		ret = kva_trim_cuda(&d->v, d->dslots, n, d->dhi, d->dlo,
				    d->st);
	return enqueued(pool, ret, 1);
}

/*
 * capture the append of @n slots read from app_pin: the staging copy, the
 * op's memset and kernels and, when @latch, the latch, as one graph
 */
static int append_capture(struct kva_pool *pool, uint32_t n, int latch)
{
	struct kva_dev *d = pool->dev;
	cudaGraph_t g = NULL;
	cudaGraphExec_t exec = NULL;
	int ret, cap;

	CU(cudaStreamBeginCapture(d->st, cudaStreamCaptureModeThreadLocal));
	cap = kvk_cuda_errno(cudaMemcpyAsync(d->dslots, d->app_pin, n * 4,
				       cudaMemcpyHostToDevice, d->st));
	if (!cap)
		cap = kva_append_cuda(&d->v, d->dslots, n, d->st);
	if (!cap && latch)
		cap = kva_err_latch_cuda(d->v.err, d->sticky, d->st);
	ret = kvk_cuda_errno(cudaStreamEndCapture(d->st, &g));
	if (!ret)
		ret = cap;
	if (!ret)
		ret = kvk_cuda_errno(cudaGraphInstantiate(&exec, g, 0));
	if (g)
		cudaGraphDestroy(g);
	if (ret)
		goto out;
	if (d->app_exec[latch])
		cudaGraphExecDestroy(d->app_exec[latch]);
	d->app_exec[latch] = exec;
	d->app_n[latch] = n;
out:
	return ret;
}

/* the append of @n staged slots: its graph, or the plain launches */
static int append_launch(struct kva_pool *pool, const uint32_t *slots,
			 uint32_t n, int latch)
{
	struct kva_dev *d = pool->dev;
	int ret;

	CU(cudaEventSynchronize(d->app_done));
	memcpy(d->app_pin, slots, n * 4);
	if ((n != d->app_n[latch] || !d->app_exec[latch]) &&
	    append_capture(pool, n, latch)) {
		/* the plain path, if capture is not possible here */
		ret = stage(pool, slots, n, NULL, NULL, NULL);
		if (!ret)
			ret = kva_append_cuda(&d->v, d->dslots, n, d->st);
		if (!ret && latch)
			ret = kva_err_latch_cuda(d->v.err, d->sticky, d->st);
		goto out;
	}
	CU(cudaGraphLaunch(d->app_exec[latch], d->st));
	CU(cudaEventRecord(d->app_done, d->st));
out:
	d->dirty = 1;
	return ret;
}

/*
 * kva_append() on a device pool, after validation: enqueue only. Append
 * runs every decode step over the same batch, so it is one graph launch
 * (captured again when the batch size changes): about a fifth of the host
 * calls of the other ops.
 */
int kva_dev_append(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	return n ? append_launch(pool, slots, n, 1) : 0;
}

/*
 * kva_dev_append_sync() - append and wait for the device's answer
 * @pool: device pool, the slots validated
 * @slots: slots
 * @n: number of slots
 * @result: the op's result: 0, -ENOSPC or -E2BIG (then nothing changed)
 *
 * For when the host cannot prove the pages are there: instead of pulling
 * the pool's state to count on the host, the device decides (the op
 * refuses with nothing changed) and 24 bytes come back: head, tail and the
 * result. The free count is exact afterwards.
 *
 * Return: 0 (the answer is in @result) or a CUDA error as -errno.
 */
int kva_dev_append_sync(struct kva_pool *pool, const uint32_t *slots,
			uint32_t n, int32_t *result)
{
	struct kva_dev *d = pool->dev;
	int ret = append_launch(pool, slots, n, 0);

	if (ret)
		return ret;
	CU(cudaMemcpyAsync(d->app_ht, d->v.head, 3 * sizeof(uint64_t),
			   cudaMemcpyDeviceToHost, d->st));
	ret = kvk_cuda_drain(d->st);
	if (ret)
		goto out;
	*result = (int32_t)d->app_ht[2];
	pool->free_lb = d->app_ht[1] - d->app_ht[0];
	pool->nr_used = (uint64_t)pool->nr_granules *
			pool->pages_per_granule - pool->free_lb;
out:
	return ret;
}

/* kva_free() on a device pool, after validation: enqueue only */
int kva_dev_free(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_dev *d = pool->dev;
	int ret;

	if (!n)
		return 0;
	ret = stage(pool, slots, n, NULL, NULL, NULL);
	if (!ret)
		ret = kva_free_cuda(&d->v, d->dslots, n, d->st);
	return enqueued(pool, ret, 0);
}

/* kva_trim() with the counts the lists hold: gather them, then trim */
int kva_dev_trim_held(struct kva_pool *pool, const uint32_t *slots,
		      uint32_t n)
{
	struct kva_dev *d = pool->dev;
	int ret;

	if (!n)
		return 0;
	ret = stage(pool, slots, n, NULL, NULL, NULL);
	if (!ret)
		ret = kva_gather_tokens_cuda(&d->v, d->dslots, n, d->dhi,
					     d->dlo, d->st);
	if (!ret)
		ret = kva_trim_cuda(&d->v, d->dslots, n, d->dhi, d->dlo,
				    d->st);
	return enqueued(pool, ret, 1);
}

/* kva_shrink() on a device pool, after validation: enqueue only */
int kva_dev_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_dev *d = pool->dev;
	int ret;

	if (!n)
		return 0;
	ret = stage(pool, slots, n, NULL, NULL, NULL);
	if (!ret)
		ret = kva_shrink_cuda(&d->v, d->dslots, n, d->st);
	return enqueued(pool, ret, 0);
}

/*
 * kva_evict() on a device pool, after validation: the quota from the
 * device counts, the eviction kernels and the shrink, in stream order.
 * @tmpl holds the geometry (kva_evict_args()); its host arrays are
 * replaced by the device ones.
 */
int kva_dev_evict(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		  const uint32_t *keep, const int32_t *protect_from,
		  uint32_t sinks, const struct kvk_evict_args *tmpl)
{
	struct kva_dev *d = pool->dev;
	struct kvk_evict_args a = *tmpl;
	int ret;

	ret = stage_n(pool, slots, n, keep, (const uint32_t *)protect_from,
		      NULL, n);
	if (!ret)
		ret = kva_evict_quota_cuda(&d->v, d->dslots, d->dargs, n,
					   d->dquota, d->dbase, d->st);
	if (ret)
		return enqueued(pool, ret, 0);
	a.nr_seqs = n;
	a.tables = d->v.table;
	a.ntokens = d->v.ntokens;
	a.list_base = d->dbase;
	a.quota = d->dquota;
	a.protect_from = (const int32_t *)d->dhi;
	a.sinks = sinks;
	a.evicted = d->devicted;
	a.scratch = d->evscratch;
	ret = kvk_evict_cuda(&a, d->st);
	if (!ret)
		ret = kva_shrink_cuda(&d->v, d->dslots, n, d->st);
	return enqueued(pool, ret, 0);
}

/* kva_pool_grow() on a device pool: the new pages go to the ring's tail
 * on the device, in stream order, without a pull */
int kva_dev_grow(struct kva_pool *pool, const uint32_t *gran, uint32_t n)
{
	struct kva_dev *d = pool->dev;
	int ret;

	/* pageable source: staged before the call returns */
	ret = kvk_cuda_errno(cudaMemcpyAsync(d->dgran, gran, n * 4,
					     cudaMemcpyHostToDevice, d->st));
	if (!ret)
		ret = kva_grow_cuda(&d->v, d->dgran, n,
				    pool->pages_per_granule, d->st);
	d->dirty = 1;
	return ret;
}

/* kva_set_tokens() on a device pool: the host snapshot's two counts of
 * @list, already written, go to the device in stream order */
int kva_dev_set_tokens(struct kva_pool *pool, uint32_t list)
{
	struct kva_dev *d = pool->dev;

	return xfer(d, &d->v.ntokens[2 * (size_t)list],
		    &pool->ntokens[2 * (size_t)list], 8, 1);
}

/**
 * kva_dev_compact_copy() - the device half of one compaction increment
 * @pool: device pool, pulled, with the plan in @cc
 * @cc: control holding the moves
 *
 * The side stream waits for the ops stream, takes the moves and copies
 * the pages with kva_copy_pages_cuda() between two timing events; the ops
 * stream waits for the copy and rewrites the tables and reverse map with
 * kva_rewrite_cuda(). The host does not wait.
 *
 * Return: 0 or the CUDA error as an errno.
 */
int kva_dev_compact_copy(struct kva_pool *pool,
			 const struct kva_compact_control *cc)
{
	struct kva_dev *d = pool->dev;
	size_t bytes = (size_t)cc->nr_moves * 4;
	int ret;

	if (!cc->nr_moves)
		return 0;
	CU(cudaEventRecord(d->mark, d->st));
	CU(cudaStreamWaitEvent(d->side, d->mark, 0));
	CU(cudaMemcpyAsync(d->dsrc, cc->src, bytes, cudaMemcpyHostToDevice,
			   d->side));
	CU(cudaMemcpyAsync(d->ddst, cc->dst, bytes, cudaMemcpyHostToDevice,
			   d->side));
	CU(cudaEventRecord(d->c0, d->side));
	ret = kva_copy_pages_cuda(pool->base, pool->page_size,
				  pool->pages_per_granule, d->dsrc, d->ddst,
				  cc->nr_moves, d->side);
	if (ret)
		goto out;
	CU(cudaEventRecord(d->c1, d->side));
	d->timed = 1;
	CU(cudaStreamWaitEvent(d->st, d->c1, 0));
	ret = kva_rewrite_cuda(&d->v, d->dsrc, d->ddst, cc->nr_moves, d->st);
out:
	return ret;
}

/* fence the pool's own streams: granules retired now wait for them */
int kva_dev_fence(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;
	int ret = 0;

	if (d->st != d->own) {
		/* the own stream stands for the bound one */
		CU(cudaEventRecord(d->mark, d->st));
		CU(cudaStreamWaitEvent(d->own, d->mark, 0));
	}
	ret = kvrt_space_fence(pool->space, pool->dev->ks);
	if (!ret)
		ret = kvrt_space_fence(pool->space, pool->dev->kside);
out:
	return ret;
}

/* device time of the last page copy, waiting for it */
int kva_dev_copy_time(struct kva_pool *pool, double *us)
{
	struct kva_dev *d = pool->dev;
	float ms = 0;
	int ret = 0;

	if (!d->timed) {
		*us = 0;
		return 0;
	}
	CU(cudaEventSynchronize(d->c1));
	CU(cudaEventElapsedTime(&ms, d->c0, d->c1));
	*us = ms * 1e3;
out:
	return ret;
}

/**
 * kva_pool_sync() - wait for a pool's device work and refresh its snapshot
 * @pool: pool
 *
 * On a device pool: waits for the ops enqueued so far, copies the device
 * state into the pool's host arrays (then exact, as are kva_nr_free() and
 * nr_used) and reports the first refusal the device made since the last
 * kva_pool_sync(). On a host pool: nothing to do.
 *
 * Return: 0; the first device-side refusal since the last call (-E2BIG,
 * -ENOSPC; the op refused changed nothing); the CUDA error as an errno.
 */
int kva_pool_sync(struct kva_pool *pool)
{
	int ret;

	if (!pool->dev)
		return 0;
	pool->dev->dirty = 1; /* read back even what the host just sent */
	ret = kva_dev_pull(pool);
	if (ret)
		return ret;
	ret = pool->dev->refused;
	pool->dev->refused = 0;
	return ret;
}

/**
 * kva_pool_stream() - the stream a device pool's ops run on
 * @pool: pool
 *
 * Kernels that read the tables or write token counts order themselves
 * after it (events), and the pool fences it before releasing granules.
 *
 * Return: a cudaStream_t, or NULL for a host pool.
 */
void *kva_pool_stream(const struct kva_pool *pool)
{
	return pool->dev ? (void *)pool->dev->st : NULL;
}

/**
 * kva_pool_snapshot() - refresh a pool's host arrays from the device
 * @pool: pool
 *
 * As kva_pool_sync(), but a refusal found on the way stays for
 * kva_pool_sync() or kva_pool_fence_state() to report: for the control
 * plane's readers (statistics, checks, digests). On a host pool: nothing.
 *
 * Return: 0 or the CUDA error as an errno.
 */
int kva_pool_snapshot(struct kva_pool *pool)
{
	if (!pool->dev)
		return 0;
	pool->dev->dirty = 1;
	return kva_dev_pull(pool);
}

/**
 * kva_pool_bind_stream() - run a device pool's ops on a caller's stream
 * @pool: pool
 * @stream: a cudaStream_t, or NULL for the pool's own stream
 *
 * Every op enqueued from now on runs on @stream, after what the pool had
 * enqueued on its previous stream (an event orders them), so that it is
 * ordered with the caller's kernels without host synchronisation. The
 * stream must outlive the binding (bind NULL, or destroy the pool, first).
 *
 * Return: 0; -ENODEV for a non-NULL @stream on a host pool; the CUDA
 * error as an errno (the binding is then unchanged).
 */
int kva_pool_bind_stream(struct kva_pool *pool, void *stream)
{
	struct kva_dev *d = pool->dev;
	cudaStream_t ns;
	int ret;

	if (!d)
		return stream ? -ENODEV : 0;
	ns = stream ? (cudaStream_t)stream : d->own;
	if (ns == d->st)
		return 0;
	CU(cudaEventRecord(d->mark, d->st));
	CU(cudaStreamWaitEvent(ns, d->mark, 0));
	d->st = ns;
out:
	return ret;
}

static int fence_credit(struct kva_pool *pool);

/**
 * kva_pool_fence() - mark the end of a submission's work
 * @pool: pool
 * @seqno: the submission's sequence number, above every earlier one
 *
 * On a device pool: after the work enqueued so far, the ring's head and
 * tail and the sticky refusal word are copied into the fence's slot of the
 * pinned mirror, the sticky word is cleared and an event is recorded; the
 * host does not wait (unless the slot's fence of KVA_FENCES submissions
 * ago has not completed yet). On a host pool the work is done: the fence
 * is signalled at once.
 *
 * Return: 0; -EINVAL for a @seqno not above the last; the CUDA error as an
 * errno.
 */
int kva_pool_fence(struct kva_pool *pool, uint64_t seqno)
{
	struct kva_dev *d = pool->dev;
	uint32_t i = seqno % KVA_FENCES;
	uint64_t *m;
	int ret;

	if (seqno <= pool->fence_last)
		return -EINVAL;
	if (!d) {
		pool->fence_last = seqno;
		return 0;
	}
	ret = fence_credit(pool);	/* never blocks */
	if (ret)
		return ret;
	m = &d->fmirror[4 * i];
	if (d->fseq[i])
		CU(cudaEventSynchronize(d->fev[i]));
	d->flb[i] = pool->free_lb;
	m[2] = 0;
	m[3] = (uint64_t)pool->nr_granules * pool->pages_per_granule;
	CU(cudaMemcpyAsync(m, d->v.head, 2 * sizeof(uint64_t),
			   cudaMemcpyDeviceToHost, d->st));
	CU(cudaMemcpyAsync(&m[2], d->sticky, sizeof(int32_t),
			   cudaMemcpyDeviceToHost, d->st));
	CU(cudaMemsetAsync(d->sticky, 0, sizeof(int32_t), d->st));
	CU(cudaEventRecord(d->fev[i], d->st));
	d->fseq[i] = seqno;
	pool->fence_last = seqno;
out:
	return ret;
}

/* the latest fence whose event has completed, never blocking */
static int fence_scan(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;
	uint64_t last = pool->fence_last;
	uint64_t low = last > KVA_FENCES ? last - KVA_FENCES + 1 : 1;

	if (low <= d->fdone)
		low = d->fdone + 1;
	for (uint64_t s = last; s >= low && s; s--) {
		uint32_t i = s % KVA_FENCES;
		cudaError_t e;

		if (d->fseq[i] != s)
			continue;
		e = cudaEventQuery(d->fev[i]);
		if (e == cudaSuccess) {
			d->fdone = s;
			return 0;
		}
		if (e != cudaErrorNotReady)
			return kvk_cuda_errno(e);
		cudaGetLastError();	/* not-ready is no error */
	}
	return 0;
}

/*
 * Raise free_lb by what the latest completed fence proves: the device had
 * F free pages there when the host counted at least L, and everything
 * enqueued since moved both figures alike or the bound only down, so
 * free_lb + F - L is still a lower bound. The fences still pending had
 * their L counted before this credit: they get it too. Without this the
 * bound would fall by append's worst case every step until a sync.
 */
static int fence_credit(struct kva_pool *pool)
{
	struct kva_dev *d = pool->dev;
	uint32_t i;
	uint64_t f, c;
	int ret = fence_scan(pool);

	if (ret || d->fdone <= d->fcredited)
		return ret;
	i = d->fdone % KVA_FENCES;
	if (d->fseq[i] != d->fdone)
		return 0;
	f = d->fmirror[4 * i + 1] - d->fmirror[4 * i];
	d->fcredited = d->fdone;
	if (f <= d->flb[i])
		return 0;
	c = f - d->flb[i];
	pool->free_lb += c;
	pool->nr_used -= c < pool->nr_used ? c : pool->nr_used;
	for (uint32_t j = 0; j < KVA_FENCES; j++)
		if (d->fseq[j] > d->fdone)
			d->flb[j] += c;
	return 0;
}

/**
 * kva_pool_fence_state() - whether fences have completed, and the figures
 * @pool: pool
 * @seqno: a fence of kva_pool_fence(), at most the last; 0: the last
 * @wait: 1 to block until @seqno has completed; 0 never blocks
 * @out: the latest completed fence, the free and used pages as of it, and
 *	the first refusal the device made since the last call (which this
 *	call reports once: kva_pool_sync() semantics)
 *
 * Return: 0; -EINVAL for a @seqno above the last fence; the CUDA error as
 * an errno.
 */
int kva_pool_fence_state(struct kva_pool *pool, uint64_t seqno, int wait,
			 struct kva_fence_state *out)
{
	struct kva_dev *d = pool->dev;
	int32_t err = 0;
	int ret;

	if (seqno > pool->fence_last)
		return -EINVAL;
	if (!d) {
		out->completed = pool->fence_last;
		out->pages_free = pool->tail - pool->head;
		out->pages_used = pool->nr_used;
		out->error = 0;
		return 0;
	}
	if (!seqno)
		seqno = pool->fence_last;
	if (wait && seqno > d->fdone)
		/* this slot holds @seqno or a later fence */
		CU(cudaEventSynchronize(d->fev[seqno % KVA_FENCES]));
	ret = fence_credit(pool);
	if (ret)
		return ret;
	for (uint64_t s = d->freported + 1; s <= d->fdone; s++) {
		uint32_t i = s % KVA_FENCES;

		if (d->fseq[i] == s && (int32_t)d->fmirror[4 * i + 2] && !err)
			err = (int32_t)d->fmirror[4 * i + 2];
	}
	d->freported = d->fdone;
	if (d->refused) {
		if (!err)
			err = d->refused;
		d->refused = 0;
	}
	out->completed = d->fdone;
	out->error = err;
	if (d->fdone && d->fseq[d->fdone % KVA_FENCES] == d->fdone) {
		const uint64_t *m = &d->fmirror[4 * (d->fdone % KVA_FENCES)];

		out->pages_free = m[1] - m[0];
		out->pages_used = m[3] - out->pages_free;
	} else {
		out->pages_free = pool->free_lb;
		out->pages_used = pool->nr_used;
	}
out:
	return ret;
}

/**
 * kva_pool_device_view() - the view of a device pool's device arrays
 * @pool: pool
 * @v: filled in; valid until the pool is destroyed
 *
 * For kernels and benchmarks that run the kva_*_cuda() ops themselves, on
 * kva_pool_stream(). The pool's accounting does not see such calls: sync
 * and use them on pools the control plane does not also drive.
 *
 * Return: 0, or -ENODEV for a host pool.
 */
int kva_pool_device_view(const struct kva_pool *pool, struct kva_view *v)
{
	if (!pool->dev)
		return -ENODEV;
	*v = pool->dev->v;
	return 0;
}

#else /* !KVMM_HAVE_CUDA: every pool is a host pool, KVA_POOL_DEVICE fails */

uint64_t kva_dev_bytes(const struct kva_pool *pool, uint64_t *pinned)
{
	(void)pool;
	*pinned = 0;
	return 0;
}

int kva_dev_resize_prepare(struct kva_pool *pool, struct kva_resize *r)
{
	(void)pool;
	(void)r;
	return -ENODEV;
}

void kva_dev_resize_commit(struct kva_pool *pool, struct kva_resize *r)
{
	(void)pool;
	(void)r;
}

void kva_dev_resize_abort(struct kva_resize *r)
{
	(void)r;
}

int kva_dev_create(struct kva_pool *pool)
{
	(void)pool;
	return -ENODEV;
}

void kva_dev_destroy(struct kva_pool *pool)
{
	(void)pool;
}

int kva_dev_pull(struct kva_pool *pool)
{
	(void)pool;
	return 0;
}

int kva_dev_wait(struct kva_pool *pool)
{
	(void)pool;
	return 0;
}

int kva_dev_push(struct kva_pool *pool, int all)
{
	(void)pool;
	(void)all;
	return 0;
}

int kva_dev_admit(struct kva_pool *pool, const uint32_t *slots,
		  const uint32_t *prompt, uint32_t n)
{
	(void)pool, (void)slots, (void)prompt, (void)n;
	return -ENODEV;
}

int kva_dev_trim(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		 const uint32_t *hi_tokens, const uint32_t *lo_tokens)
{
	(void)pool, (void)slots, (void)n, (void)hi_tokens, (void)lo_tokens;
	return -ENODEV;
}

int kva_dev_append(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	(void)pool, (void)slots, (void)n;
	return -ENODEV;
}

int kva_dev_append_sync(struct kva_pool *pool, const uint32_t *slots,
			uint32_t n, int32_t *result)
{
	(void)pool, (void)slots, (void)n, (void)result;
	return -ENODEV;
}

int kva_dev_free(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	(void)pool, (void)slots, (void)n;
	return -ENODEV;
}

int kva_dev_set_tokens(struct kva_pool *pool, uint32_t list)
{
	(void)pool, (void)list;
	return -ENODEV;
}

int kva_dev_compact_copy(struct kva_pool *pool,
			 const struct kva_compact_control *cc)
{
	(void)pool, (void)cc;
	return -ENODEV;
}

int kva_dev_fence(struct kva_pool *pool)
{
	(void)pool;
	return -ENODEV;
}

int kva_dev_copy_time(struct kva_pool *pool, double *us)
{
	(void)pool;
	*us = 0;
	return -ENODEV;
}

int kva_pool_sync(struct kva_pool *pool)
{
	(void)pool;
	return 0;
}

void *kva_pool_stream(const struct kva_pool *pool)
{
	(void)pool;
	return NULL;
}

int kva_pool_device_view(const struct kva_pool *pool, struct kva_view *v)
{
	(void)pool, (void)v;
	return -ENODEV;
}

int kva_dev_trim_held(struct kva_pool *pool, const uint32_t *slots,
		      uint32_t n)
{
	(void)pool, (void)slots, (void)n;
	return -ENODEV;
}

int kva_dev_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	(void)pool, (void)slots, (void)n;
	return -ENODEV;
}

int kva_dev_evict(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		  const uint32_t *keep, const int32_t *protect_from,
		  uint32_t sinks, const struct kvk_evict_args *tmpl)
{
	(void)pool, (void)slots, (void)n, (void)keep, (void)protect_from;
	(void)sinks, (void)tmpl;
	return -ENODEV;
}

int kva_dev_grow(struct kva_pool *pool, const uint32_t *gran, uint32_t n)
{
	(void)pool, (void)gran, (void)n;
	return -ENODEV;
}

int kva_pool_snapshot(struct kva_pool *pool)
{
	(void)pool;
	return 0;
}

int kva_pool_bind_stream(struct kva_pool *pool, void *stream)
{
	(void)pool;
	return stream ? -ENODEV : 0;
}

int kva_pool_fence(struct kva_pool *pool, uint64_t seqno)
{
	if (seqno <= pool->fence_last)
		return -EINVAL;
	pool->fence_last = seqno;
	return 0;
}

int kva_pool_fence_state(struct kva_pool *pool, uint64_t seqno, int wait,
			 struct kva_fence_state *out)
{
	(void)wait;
	if (seqno > pool->fence_last)
		return -EINVAL;
	out->completed = pool->fence_last;
	out->pages_free = pool->tail - pool->head;
	out->pages_used = pool->nr_used;
	out->error = 0;
	return 0;
}
#endif

/**
 * kva_pool_is_device() - whether a pool's data plane is in device memory
 * @pool: pool
 *
 * Return: 1 for a device pool, 0 for a host pool.
 */
int kva_pool_is_device(const struct kva_pool *pool)
{
	return pool->dev != NULL;
}
