// SPDX-License-Identifier: MIT
/*
 * space.c - KV address spaces: one reservation, 2 MiB granules mapped into it
 * on demand, fences that keep a granule mapped while work may read it.
 */
#include <stdlib.h>
#include <string.h>

#include "kvrt_internal.h"

/**
 * DOC: fences
 *
 * Kernels reach granules through page tables, so the runtime cannot know
 * which granule a kernel reads. It assumes the worst: kvrt_space_fence()
 * records an event on a stream and that event covers every granule mapped
 * at that moment. A granule may be unmapped only when every fence recorded
 * after it was mapped has completed.
 *
 * Later fences would keep covering a granule that no table points to any
 * more, so a caller that has removed a granule from its tables retires it
 * (kvrt_space_retire()): the granule then snapshots the fences current at
 * that moment and waits for exactly those. The compactor's order is: rewrite
 * the tables, fence, retire, shrink once the fences complete.
 *
 * Only the latest fence per stream is kept: events on one stream complete in
 * order, so the latest one complete means all earlier ones are.
 */

static uint64_t slot_va(const struct kvrt_space *space, uint32_t idx)
{
	return space->base + (uint64_t)idx * KVRT_GRANULE_SIZE;
}

static void fence_put(struct kvrt_ctx *ctx, struct kvrt_fence *f)
{
	if (!f || --f->refs)
		return;
	if (!KVRT_PUT(ctx, event_destroy, f->event))
		kvrt_count(ctx, &ctx->counts.events, -1);
	free(f);
}

static int check_budget(struct kvrt_ctx *ctx, uint64_t budget, uint64_t va)
{
	if (!budget || !kvmm_is_aligned(budget, KVRT_GRANULE_SIZE))
		return kvrt_err(ctx, -EINVAL,
				"budget %llu is zero or not a multiple of the "
				"2 MiB granule",
				(unsigned long long)budget);
	if (budget > ctx->mem_total + ctx->host_total)
		return kvrt_err(ctx, -E2BIG,
				"budget %llu bytes is over the %s memory of "
				"%llu bytes (plus a host tier of %llu)",
				(unsigned long long)budget, ctx->ops->name,
				(unsigned long long)ctx->mem_total,
				(unsigned long long)ctx->host_total);
	if (budget > va)
		return kvrt_err(ctx, -EINVAL,
				"budget %llu is over the reservation of %llu "
				"bytes",
				(unsigned long long)budget,
				(unsigned long long)va);
	return 0;
}

/**
 * kvrt_space_create() - reserve a KV address space
 * @ctx: context
 * @va_bytes: size of the reservation, a non-zero multiple of 2 MiB
 * @budget_bytes: most physical memory the space may map, a non-zero
 *	multiple of 2 MiB, at most @va_bytes and the device's memory
 * @out: the new space, with no granule mapped
 *
 * Return: 0; -EINVAL for a zero or unaligned size; -E2BIG for a budget over
 * the device's memory; -ENOMEM or the backend's error.
 */
int kvrt_space_create(struct kvrt_ctx *ctx, uint64_t va_bytes,
		      uint64_t budget_bytes, struct kvrt_space **out)
{
	struct kvrt_space *space;
	int ret;

	if (!ctx || !out)
		return -EINVAL;
	if (!va_bytes || !kvmm_is_aligned(va_bytes, KVRT_GRANULE_SIZE))
		return kvrt_err(ctx, -EINVAL,
				"reservation of %llu bytes is zero or not a "
				"multiple of the 2 MiB granule",
				(unsigned long long)va_bytes);
	if (va_bytes / KVRT_GRANULE_SIZE > INT32_MAX)
		return kvrt_err(ctx, -E2BIG, "reservation of %llu bytes has "
				"too many granules",
				(unsigned long long)va_bytes);
	ret = check_budget(ctx, budget_bytes, va_bytes);
	if (ret)
		return ret;

	space = calloc(1, sizeof(*space));
	if (!space)
		return kvrt_err(ctx, -ENOMEM, "space: out of memory");
	/* state for the slots the budget can reach, not for all the VA */
	space->nr_slots = va_bytes / KVRT_GRANULE_SIZE;
	space->cap_slots = budget_bytes / KVRT_GRANULE_SIZE;
	space->slots = calloc(space->cap_slots, sizeof(*space->slots));
	if (!space->slots) {
		ret = kvrt_err(ctx, -ENOMEM, "space: out of memory");
		goto out_free;
	}
	ret = KVRT_CALL(ctx, va_reserve, va_bytes, &space->base);
	if (ret) {
		kvrt_err(ctx, ret, "reserving %llu bytes of address space "
			 "failed (%s)",
			 (unsigned long long)va_bytes, strerror(-ret));
		goto out_free_slots;
	}
	kvrt_count(ctx, &ctx->counts.va_ranges, 1);
	space->ctx = ctx;
	space->va_bytes = va_bytes;
	space->budget = budget_bytes;
	for (int l = 0; l < KVRT_LOC_NR; l++)
		space->loc_budget[l] = KVRT_LOC_UNCAPPED;
	pthread_mutex_init(&space->lock, NULL);
	*out = space;
	return 0;

out_free_slots:
	free(space->slots);
out_free:
	free(space);
	return ret;
}

/* Undo mappings of @n slots listed in @idx (unwind path: no injection). */
static void unmap_slots(struct kvrt_space *space, const uint32_t *idx,
			uint32_t n)
{
	struct kvrt_ctx *ctx = space->ctx;

	for (uint32_t i = 0; i < n; i++)
		if (!KVRT_PUT(ctx, mem_unmap, slot_va(space, idx[i]),
			      KVRT_GRANULE_SIZE))
			kvrt_count(ctx, &ctx->counts.mapped, -1);
}

static void release_handles(struct kvrt_ctx *ctx, const uint64_t *h,
			    uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (!KVRT_PUT(ctx, mem_release, h[i]))
			kvrt_count(ctx, &ctx->counts.handles, -1);
}

/*
 * Grant access to the slots in @idx (sorted ascending), one call per run of
 * adjacent slots: the batched form the driver accepts over several mappings.
 */
static int set_access_runs(struct kvrt_space *space, const uint32_t *idx,
			   uint32_t n)
{
	uint32_t i = 0;

	while (i < n) {
		uint32_t j = i + 1;
		int ret;

		while (j < n && idx[j] == idx[j - 1] + 1)
			j++;
		ret = KVRT_CALL(space->ctx, set_access, slot_va(space, idx[i]),
				(uint64_t)(j - i) * KVRT_GRANULE_SIZE);
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}

/**
 * kvrt_space_grow() - back @n more slots of @space with new granules
 * @space: space
 * @n: granules to add, at least 1
 * @loc: KVRT_LOC_DEVICE or KVRT_LOC_HOST_NUMA
 * @node: NUMA node for host granules; ignored for device granules
 * @idx_out: if not NULL, receives the @n slot indices (ascending)
 *
 * The lowest free slots are taken. Granules are created, mapped one by one,
 * then made accessible with one call per run of adjacent slots. A failure at
 * any step undoes the earlier steps.
 *
 * Return: 0; -EINVAL for n == 0, an unknown location or node; -ENOSPC when
 * the budget or the reservation has no room; the backend's error (-ENOMEM
 * when the device is out of memory).
 */
int kvrt_space_grow(struct kvrt_space *space, uint32_t n, enum kvrt_loc loc,
		    int node, uint32_t *idx_out)
{
	struct kvrt_ctx *ctx = space->ctx;
	uint64_t *handles = NULL;
	uint32_t *idx = NULL;
	uint32_t created = 0, mapped = 0, k = 0;
	int ret;

	if (!n)
		return kvrt_err(ctx, -EINVAL, "grow: zero granules");
	if (loc >= KVRT_LOC_NR || loc < 0)
		return kvrt_err(ctx, -EINVAL, "grow: unknown location %d", loc);
	if (loc == KVRT_LOC_HOST_NUMA &&
	    (node < 0 || node >= ctx->numa_nodes))
		return kvrt_err(ctx, -EINVAL,
				"grow: NUMA node %d is not one of the %d "
				"host nodes",
				node, ctx->numa_nodes);
	if (loc == KVRT_LOC_DEVICE)
		node = -1;

	pthread_mutex_lock(&space->lock);
	if ((uint64_t)(space->nr_mapped + (uint64_t)n) * KVRT_GRANULE_SIZE >
	    space->budget) {
		ret = kvrt_err(ctx, -ENOSPC,
			       "grow: %u granules over the budget (%u of %llu "
			       "mapped)",
			       n, space->nr_mapped,
			       (unsigned long long)(space->budget /
						    KVRT_GRANULE_SIZE));
		goto out_unlock;
	}
	if (n > space->nr_slots - space->nr_mapped) {
		ret = kvrt_err(ctx, -ENOSPC, "grow: reservation full");
		goto out_unlock;
	}
	if (space->loc_budget[loc] != KVRT_LOC_UNCAPPED &&
	    (uint64_t)(space->nr_loc[loc] + (uint64_t)n) * KVRT_GRANULE_SIZE >
		    space->loc_budget[loc]) {
		ret = kvrt_err(ctx, -ENOSPC,
			       "grow: %u granules over the %s budget (%u of "
			       "%llu mapped)",
			       n, loc == KVRT_LOC_DEVICE ? "device" : "host",
			       space->nr_loc[loc],
			       (unsigned long long)(space->loc_budget[loc] /
						    KVRT_GRANULE_SIZE));
		goto out_unlock;
	}
	handles = calloc(n, sizeof(*handles));
	idx = calloc(n, sizeof(*idx));
	if (!handles || !idx) {
		ret = kvrt_err(ctx, -ENOMEM, "grow: out of memory");
		goto out_free;
	}
	/* below cap_slots: nr_mapped + n fit the budget, cap_slots' bound */
	for (uint32_t s = 0; s < space->cap_slots && k < n; s++)
		if (!space->slots[s].mapped)
			idx[k++] = s;

	for (; created < n; created++) {
		ret = KVRT_CALL(ctx, mem_create, KVRT_GRANULE_SIZE, loc, node,
				&handles[created]);
		if (ret) {
			kvrt_err(ctx, ret, "grow: creating granule %u of %u "
				 "failed (%s)", created + 1, n, strerror(-ret));
			goto out_release;
		}
		kvrt_count(ctx, &ctx->counts.handles, 1);
	}
	for (; mapped < n; mapped++) {
		ret = KVRT_CALL(ctx, mem_map, slot_va(space, idx[mapped]),
				KVRT_GRANULE_SIZE, handles[mapped]);
		if (ret) {
			kvrt_err(ctx, ret, "grow: mapping slot %u failed (%s)",
				 idx[mapped], strerror(-ret));
			goto out_unmap;
		}
		kvrt_count(ctx, &ctx->counts.mapped, 1);
	}
	ret = set_access_runs(space, idx, n);
	if (ret) {
		kvrt_err(ctx, ret, "grow: granting access failed (%s)",
			 strerror(-ret));
		goto out_unmap;
	}

	for (uint32_t i = 0; i < n; i++) {
		struct kvrt_granule *g = &space->slots[idx[i]];

		memset(g, 0, sizeof(*g));
		g->handle = handles[i];
		g->mapped = 1;
		g->loc = loc;
		g->node = node;
		g->map_seq = ++space->seq;
	}
	space->nr_mapped += n;
	space->nr_loc[loc] += n;
	if (idx_out)
		memcpy(idx_out, idx, n * sizeof(*idx));
	ret = 0;
	goto out_free;

out_unmap:
	unmap_slots(space, idx, mapped);
out_release:
	release_handles(ctx, handles, created);
out_free:
	free(handles);
	free(idx);
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/* Fence @f must complete before granule @g may be unmapped. */
static bool fence_covers(const struct kvrt_granule *g,
			 const struct kvrt_fence *f)
{
	return f && f->seq > g->map_seq;
}

/* 1 if any fence covering @g is pending, 0 if none, -errno */
static int granule_busy(struct kvrt_space *space, struct kvrt_granule *g,
			bool wait)
{
	struct kvrt_ctx *ctx = space->ctx;

	for (int s = 0; s < KVRT_MAX_STREAMS; s++) {
		struct kvrt_fence *f = g->retired ? g->wait[s] : space->fence[s];
		int ret;

		if (!g->retired && !fence_covers(g, f))
			continue;
		if (!f)
			continue;
		ret = wait ? KVRT_CALL(ctx, event_sync, f->event)
			   : KVRT_CALL(ctx, event_query, f->event);
		if (ret == -EBUSY && !wait)
			return 1;
		if (ret)
			return ret;
	}
	return 0;
}

static int check_slots(struct kvrt_space *space, const char *what,
		       const uint32_t *idx, uint32_t n, bool want_unretired)
{
	struct kvrt_ctx *ctx = space->ctx;
	uint32_t i;
	int ret = 0;

	if (!n || !idx)
		return kvrt_err(ctx, -EINVAL, "%s: no granules given", what);
	for (i = 0; i < n; i++) {
		struct kvrt_granule *g;

		if (idx[i] >= space->nr_slots) {
			ret = kvrt_err(ctx, -EINVAL,
				       "%s: slot %u is outside the space (%u "
				       "slots)", what, idx[i], space->nr_slots);
			break;
		}
		if (idx[i] >= space->cap_slots) {
			ret = kvrt_err(ctx, -ENOENT,
				       "%s: slot %u is not mapped", what,
				       idx[i]);
			break;
		}
		g = &space->slots[idx[i]];
		if (!g->mapped) {
			ret = kvrt_err(ctx, -ENOENT,
				       "%s: slot %u is not mapped", what,
				       idx[i]);
			break;
		}
		if (want_unretired && g->retired) {
			ret = kvrt_err(ctx, -EALREADY,
				       "%s: slot %u is already retired", what,
				       idx[i]);
			break;
		}
		if (g->seen) {
			ret = kvrt_err(ctx, -EINVAL,
				       "%s: slot %u is listed twice", what,
				       idx[i]);
			break;
		}
		g->seen = 1;
	}
	while (i--)
		space->slots[idx[i]].seen = 0;
	return ret;
}

/**
 * kvrt_space_shrink() - unmap granules and hand them back
 * @space: space
 * @idx: slots to give back; each mapped, none listed twice
 * @n: number of slots
 * @flags: KVRT_SHRINK_WAIT to wait for pending fences instead of failing
 *
 * Either every listed granule is unmapped and released, or none is.
 *
 * Return: 0; -EINVAL for bad flags, an index outside the space or listed
 * twice; -ENOENT for a slot that is not mapped (a double unmap); -EBUSY when
 * a fence covering a granule is still pending and KVRT_SHRINK_WAIT is not
 * set; the backend's error.
 */
int kvrt_space_shrink(struct kvrt_space *space, const uint32_t *idx,
		      uint32_t n, unsigned int flags)
{
	struct kvrt_ctx *ctx = space->ctx;
	uint32_t done = 0;
	int ret;

	if (flags & ~KVRT_SHRINK_FLAGS)
		return kvrt_err(ctx, -EINVAL, "shrink: unknown flags %#x",
				flags & ~KVRT_SHRINK_FLAGS);
	pthread_mutex_lock(&space->lock);
	ret = check_slots(space, "shrink", idx, n, false);
	if (ret)
		goto out_unlock;
	for (uint32_t i = 0; i < n; i++) {
		ret = granule_busy(space, &space->slots[idx[i]],
				   flags & KVRT_SHRINK_WAIT);
		if (ret == 1) {
			ret = kvrt_err(ctx, -EBUSY,
				       "shrink: slot %u is still fenced by "
				       "work in flight",
				       idx[i]);
			goto out_unlock;
		}
		if (ret) {
			kvrt_err(ctx, ret, "shrink: waiting on a fence failed "
				 "(%s)", strerror(-ret));
			goto out_unlock;
		}
	}
	for (; done < n; done++) {
		ret = KVRT_CALL(ctx, mem_unmap, slot_va(space, idx[done]),
				KVRT_GRANULE_SIZE);
		if (ret) {
			kvrt_err(ctx, ret, "shrink: unmapping slot %u failed "
				 "(%s)", idx[done], strerror(-ret));
			goto out_remap;
		}
		kvrt_count(ctx, &ctx->counts.mapped, -1);
	}
	for (uint32_t i = 0; i < n; i++) {
		struct kvrt_granule *g = &space->slots[idx[i]];

		release_handles(ctx, &g->handle, 1);
		for (int s = 0; s < KVRT_MAX_STREAMS; s++)
			fence_put(ctx, g->wait[s]);
		space->nr_loc[g->loc]--;
		memset(g, 0, sizeof(*g));
	}
	space->nr_mapped -= n;
	ret = 0;
	goto out_unlock;

out_remap:
	/* put back what was unmapped: same handles, same addresses */
	for (uint32_t i = 0; i < done; i++) {
		struct kvrt_granule *g = &space->slots[idx[i]];
		int r = KVRT_CALL(ctx, mem_map, slot_va(space, idx[i]),
				  KVRT_GRANULE_SIZE, g->handle);

		if (!r)
			r = KVRT_CALL(ctx, set_access, slot_va(space, idx[i]),
				      KVRT_GRANULE_SIZE);
		if (!r)
			kvrt_count(ctx, &ctx->counts.mapped, 1);
		else
			kvrt_put_failed(ctx, "remap", r);
	}
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_fence() - record that work queued on @stream may read @space
 * @space: space
 * @stream: stream whose queued work reads the space's granules
 *
 * Every granule mapped now stays mapped until the work queued on @stream so
 * far has completed (see DOC: fences).
 *
 * Return: 0; -ENOSPC when KVRT_MAX_STREAMS other streams already fence the
 * space; -EINVAL for a stream of another context; the backend's error.
 */
int kvrt_space_fence(struct kvrt_space *space, struct kvrt_stream *stream)
{
	struct kvrt_ctx *ctx = space->ctx;
	struct kvrt_fence *f;
	int slot = -1, ret;

	if (!stream || stream->ctx != ctx)
		return kvrt_err(ctx, -EINVAL,
				"fence: stream of another context");
	pthread_mutex_lock(&space->lock);
	for (int s = 0; s < KVRT_MAX_STREAMS; s++) {
		if (space->fence_stream[s] == stream) {
			slot = s;
			break;
		}
		if (slot < 0 && !space->fence_stream[s])
			slot = s;
	}
	if (slot < 0) {
		ret = kvrt_err(ctx, -ENOSPC, "fence: more than %d streams",
			       KVRT_MAX_STREAMS);
		goto out_unlock;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		ret = kvrt_err(ctx, -ENOMEM, "fence: out of memory");
		goto out_unlock;
	}
	ret = KVRT_CALL(ctx, event_create, &f->event);
	if (ret) {
		kvrt_err(ctx, ret, "fence: creating an event failed (%s)",
			 strerror(-ret));
		goto out_free;
	}
	kvrt_count(ctx, &ctx->counts.events, 1);
	ret = KVRT_CALL(ctx, event_record, f->event, stream->handle);
	if (ret) {
		kvrt_err(ctx, ret, "fence: recording the event failed (%s)",
			 strerror(-ret));
		goto out_destroy;
	}
	f->refs = 1;
	f->seq = ++space->seq;
	fence_put(ctx, space->fence[slot]);
	space->fence[slot] = f;
	space->fence_stream[slot] = stream;
	goto out_unlock;

out_destroy:
	if (!KVRT_PUT(ctx, event_destroy, f->event))
		kvrt_count(ctx, &ctx->counts.events, -1);
out_free:
	free(f);
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_retire() - mark granules as no longer reachable by new work
 * @space: space
 * @idx: slots; each mapped and not yet retired, none listed twice
 * @n: number of slots
 *
 * The caller has removed the granules from every table kernels read and has
 * fenced the streams that used the old tables. From now on only the fences
 * current at this call keep the granules mapped.
 *
 * Return: 0; -EINVAL, -ENOENT or -EALREADY for a bad slot list.
 */
int kvrt_space_retire(struct kvrt_space *space, const uint32_t *idx,
		      uint32_t n)
{
	int ret;

	pthread_mutex_lock(&space->lock);
	ret = check_slots(space, "retire", idx, n, true);
	if (ret)
		goto out_unlock;
	for (uint32_t i = 0; i < n; i++) {
		struct kvrt_granule *g = &space->slots[idx[i]];

		for (int s = 0; s < KVRT_MAX_STREAMS; s++) {
			struct kvrt_fence *f = space->fence[s];

			if (fence_covers(g, f)) {
				f->refs++;
				g->wait[s] = f;
			}
		}
		g->retired = 1;
	}
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_busy() - whether a granule is still held by a pending fence
 * @space: space
 * @idx: a mapped slot
 *
 * Return: 1 if busy, 0 if it may be unmapped now, -errno.
 */
int kvrt_space_busy(struct kvrt_space *space, uint32_t idx)
{
	int ret;

	pthread_mutex_lock(&space->lock);
	ret = check_slots(space, "busy", &idx, 1, false);
	if (!ret)
		ret = granule_busy(space, &space->slots[idx], false);
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_slot_bytes() - host bytes the runtime keeps per granule slot
 *
 * A space keeps this much for each granule of the largest budget it has
 * had (not for each granule of its reservation).
 *
 * Return: bytes per slot.
 */
size_t kvrt_space_slot_bytes(void)
{
	return sizeof(struct kvrt_granule);
}

/**
 * kvrt_space_set_budget() - change how much physical memory @space may map
 * @space: space
 * @budget_bytes: new budget, a non-zero multiple of 2 MiB, at most the
 *	reservation and the device's memory, at least what is mapped now
 *
 * The runtime keeps state for as many slots as the largest budget so far
 * has granules (struct kvrt_space @cap_slots); a larger budget grows it.
 *
 * Return: 0; -EINVAL for a zero or unaligned budget; -E2BIG for one over the
 * device's memory; -EBUSY for one below what is mapped; -ENOMEM when the
 * slots' state cannot grow (nothing changed).
 */
int kvrt_space_set_budget(struct kvrt_space *space, uint64_t budget_bytes)
{
	struct kvrt_ctx *ctx = space->ctx;
	struct kvrt_granule *slots;
	uint32_t cap;
	int ret;

	pthread_mutex_lock(&space->lock);
	ret = check_budget(ctx, budget_bytes, space->va_bytes);
	if (!ret && budget_bytes < (uint64_t)space->nr_mapped *
					   KVRT_GRANULE_SIZE)
		ret = kvrt_err(ctx, -EBUSY,
			       "budget %llu bytes is below the %u granules "
			       "mapped",
			       (unsigned long long)budget_bytes,
			       space->nr_mapped);
	cap = budget_bytes / KVRT_GRANULE_SIZE;
	if (!ret && cap > space->cap_slots) {
		slots = realloc(space->slots, cap * sizeof(*slots));
		if (!slots) {
			ret = kvrt_err(ctx, -ENOMEM, "budget: out of memory");
		} else {
			memset(slots + space->cap_slots, 0,
			       (cap - space->cap_slots) * sizeof(*slots));
			space->slots = slots;
			space->cap_slots = cap;
		}
	}
	if (!ret)
		space->budget = budget_bytes;
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_set_loc_budget() - cap the memory one location may map
 * @space: space
 * @loc: KVRT_LOC_DEVICE (HBM) or KVRT_LOC_HOST_NUMA (the host tier)
 * @bytes: a multiple of 2 MiB (0: none of this location), at most the
 *	location's memory (kvrt_ctx_loc_total()) and not below what is
 *	mapped there now; or KVRT_LOC_UNCAPPED, the default, for no cap of
 *	its own
 *
 * The space budget (kvrt_space_set_budget()) still bounds both locations
 * together; kvrt_space_grow() refuses a granule that would pass either.
 *
 * Return: 0; -EINVAL for an unknown location or an unaligned size; -E2BIG
 * for one over the location's memory; -EBUSY for one below what is
 * mapped there. Nothing changed on error.
 */
int kvrt_space_set_loc_budget(struct kvrt_space *space, enum kvrt_loc loc,
			      uint64_t bytes)
{
	struct kvrt_ctx *ctx = space->ctx;
	int ret = 0;

	if (loc < 0 || loc >= KVRT_LOC_NR)
		return kvrt_err(ctx, -EINVAL, "tier budget: unknown location "
				"%d", loc);
	if (bytes == KVRT_LOC_UNCAPPED)
		goto set;
	if (bytes % KVRT_GRANULE_SIZE)
		return kvrt_err(ctx, -EINVAL, "tier budget %llu is not a "
				"multiple of the 2 MiB granule",
				(unsigned long long)bytes);
	if (bytes > kvrt_ctx_loc_total(ctx, loc))
		return kvrt_err(ctx, -E2BIG, "tier budget %llu bytes is over "
				"the %s memory of %llu bytes",
				(unsigned long long)bytes,
				loc == KVRT_LOC_DEVICE ? "device" : "host tier",
				(unsigned long long)kvrt_ctx_loc_total(ctx, loc));
set:
	pthread_mutex_lock(&space->lock);
	if (bytes < (uint64_t)space->nr_loc[loc] * KVRT_GRANULE_SIZE)
		ret = kvrt_err(ctx, -EBUSY, "tier budget %llu bytes is below "
			       "the %u granules mapped there",
			       (unsigned long long)bytes, space->nr_loc[loc]);
	else
		space->loc_budget[loc] = bytes;
	pthread_mutex_unlock(&space->lock);
	return ret;
}

/**
 * kvrt_space_loc_room() - granules one location may still map
 * @space: space
 * @loc: location
 *
 * Return: the granules kvrt_space_grow() would accept at @loc now, the
 * lesser of the space budget's room and the location's (0 for an unknown
 * location).
 */
uint32_t kvrt_space_loc_room(const struct kvrt_space *space,
			     enum kvrt_loc loc)
{
	uint64_t room, lr;

	if (loc < 0 || loc >= KVRT_LOC_NR)
		return 0;
	pthread_mutex_lock((pthread_mutex_t *)&space->lock);
	room = space->budget / KVRT_GRANULE_SIZE - space->nr_mapped;
	if (room > space->nr_slots - space->nr_mapped)
		room = space->nr_slots - space->nr_mapped;
	if (space->loc_budget[loc] != KVRT_LOC_UNCAPPED) {
		lr = space->loc_budget[loc] / KVRT_GRANULE_SIZE;
		lr = lr > space->nr_loc[loc] ? lr - space->nr_loc[loc] : 0;
		if (lr < room)
			room = lr;
	}
	pthread_mutex_unlock((pthread_mutex_t *)&space->lock);
	return (uint32_t)room;
}

/**
 * kvrt_fence_record() - a fence for the work queued on a stream so far
 * @stream: stream
 * @out: the fence; kvrt_fence_put() it
 *
 * Unlike kvrt_space_fence() it covers no granule: its holder decides what
 * waits for it (the allocator's migration keeps the pages it moved away
 * from out of the free ring until such fences complete).
 *
 * Return: 0; -EINVAL; -ENOMEM; the backend's error.
 */
int kvrt_fence_record(struct kvrt_stream *stream, struct kvrt_fence **out)
{
	struct kvrt_ctx *ctx;
	struct kvrt_fence *f;
	int ret;

	if (!stream || !out)
		return -EINVAL;
	ctx = stream->ctx;
	f = calloc(1, sizeof(*f));
	if (!f)
		return kvrt_err(ctx, -ENOMEM, "fence: out of memory");
	ret = KVRT_CALL(ctx, event_create, &f->event);
	if (ret) {
		free(f);
		return kvrt_err(ctx, ret, "fence: creating an event failed "
				"(%s)", strerror(-ret));
	}
	kvrt_count(ctx, &ctx->counts.events, 1);
	ret = KVRT_CALL(ctx, event_record, f->event, stream->handle);
	if (ret) {
		if (!KVRT_PUT(ctx, event_destroy, f->event))
			kvrt_count(ctx, &ctx->counts.events, -1);
		free(f);
		return kvrt_err(ctx, ret, "fence: recording the event failed "
				"(%s)", strerror(-ret));
	}
	f->ctx = ctx;
	f->refs = 1;
	*out = f;
	return 0;
}

/**
 * kvrt_fence_done() - whether a fence's work has completed
 * @fence: from kvrt_fence_record()
 * @wait: non-zero to block until it has
 *
 * Return: 1 when complete, 0 while pending (only without @wait), -errno.
 */
int kvrt_fence_done(struct kvrt_fence *fence, int wait)
{
	struct kvrt_ctx *ctx = fence->ctx;
	int ret;

	ret = wait ? KVRT_CALL(ctx, event_sync, fence->event)
		   : KVRT_CALL(ctx, event_query, fence->event);
	if (ret == -EBUSY && !wait)
		return 0;
	return ret ? ret : 1;
}

/**
 * kvrt_fence_put() - drop a fence from kvrt_fence_record()
 * @fence: fence, or NULL
 */
void kvrt_fence_put(struct kvrt_fence *fence)
{
	if (fence)
		fence_put(fence->ctx, fence);
}

/**
 * kvrt_space_destroy() - give back every granule and the reservation
 * @space: space
 *
 * Waits for every fence, unmaps and releases every granule, then frees the
 * reservation. If a step fails the space is left valid (with fewer granules
 * perhaps) and the call may be repeated.
 *
 * Return: 0 or the backend's error.
 */
int kvrt_space_destroy(struct kvrt_space *space)
{
	struct kvrt_ctx *ctx;
	uint32_t *idx, n = 0;
	int ret = 0;

	if (!space)
		return 0;
	ctx = space->ctx;
	if (space->nr_mapped) {
		idx = calloc(space->nr_mapped, sizeof(*idx));
		if (!idx)
			return kvrt_err(ctx, -ENOMEM, "destroy: out of memory");
		for (uint32_t s = 0; s < space->cap_slots; s++)
			if (space->slots[s].mapped)
				idx[n++] = s;
		ret = kvrt_space_shrink(space, idx, n, KVRT_SHRINK_WAIT);
		free(idx);
		if (ret)
			return ret;
	}
	for (int s = 0; s < KVRT_MAX_STREAMS; s++) {
		fence_put(ctx, space->fence[s]);
		space->fence[s] = NULL;
		space->fence_stream[s] = NULL;
	}
	if (!KVRT_PUT(ctx, va_free, space->base, space->va_bytes))
		kvrt_count(ctx, &ctx->counts.va_ranges, -1);
	pthread_mutex_destroy(&space->lock);
	free(space->slots);
	free(space);
	return 0;
}

/**
 * kvrt_space_base() - first address of the reservation
 * @space: space
 *
 * Return: the device-visible address of slot 0.
 */
uint64_t kvrt_space_base(const struct kvrt_space *space)
{
	return space->base;
}

/**
 * kvrt_space_ctx() - the context a space belongs to
 * @space: space
 *
 * Return: the context.
 */
struct kvrt_ctx *kvrt_space_ctx(const struct kvrt_space *space)
{
	return space->ctx;
}

/**
 * kvrt_space_granule() - describe one slot
 * @space: space
 * @idx: slot index
 * @info: filled in
 *
 * Return: 0, or -EINVAL for a slot outside the space.
 */
int kvrt_space_granule(const struct kvrt_space *space, uint32_t idx,
		       struct kvrt_granule_info *info)
{
	const struct kvrt_granule *g;

	if (idx >= space->nr_slots || !info)
		return -EINVAL;
	if (idx >= space->cap_slots) {	/* never mapped */
		memset(info, 0, sizeof(*info));
		info->addr = slot_va(space, idx);
		info->node = -1;
		return 0;
	}
	pthread_mutex_lock((pthread_mutex_t *)&space->lock);
	g = &space->slots[idx];
	info->addr = slot_va(space, idx);
	info->mapped = g->mapped;
	info->loc = g->loc;
	info->node = g->mapped ? g->node : -1;
	info->retired = g->retired;
	pthread_mutex_unlock((pthread_mutex_t *)&space->lock);
	return 0;
}

/**
 * kvrt_space_stats() - occupancy of a space
 * @space: space
 * @out: filled in
 */
void kvrt_space_stats(const struct kvrt_space *space,
		      struct kvrt_space_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock((pthread_mutex_t *)&space->lock);
	out->va_bytes = space->va_bytes;
	out->budget_bytes = space->budget;
	out->nr_slots = space->nr_slots;
	out->cap_slots = space->cap_slots;
	out->nr_mapped = space->nr_mapped;
	for (int l = 0; l < KVRT_LOC_NR; l++)
		out->loc_budget[l] = space->loc_budget[l];
	for (uint32_t s = 0; s < space->cap_slots; s++) {
		const struct kvrt_granule *g = &space->slots[s];

		if (!g->mapped)
			continue;
		out->nr_by_loc[g->loc]++;
		out->nr_retired += g->retired;
	}
	pthread_mutex_unlock((pthread_mutex_t *)&space->lock);
}
