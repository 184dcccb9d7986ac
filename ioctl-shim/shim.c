// SPDX-License-Identifier: MIT
/*
 * shim.c - the userspace driver of the kvmm uapi.
 *
 * DOC: validate, then apply
 *
 * kvshim_ioctl() is the one entry point. It checks, in this order and
 * before it touches any state: the handle (-EBADF), the argument pointer
 * (-EFAULT), the command's magic, number and direction (-ENOTTY), the size
 * encoded in the command against the structure this build knows (-EINVAL),
 * then the command's own fields: pads, reserved words and flags zero, ranges,
 * user pointers non-NULL where a count asks for them (-EINVAL), and the
 * space handle belonging to this file (-ENOENT). Only then does it call the
 * allocator, whose calls either succeed or change nothing (kva.h), and only
 * on success does it write results back to the caller's memory.
 *
 * Space handles are drawn from one counter shared by every file and never
 * reused, so a handle of another file is simply not found (-ENOENT).
 */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kva.h"
#include "kvevict.h"
#include "kvrt.h"
#include "kvshim.h"

/**
 * struct kvshim_space - one KVMM space: a runtime context and its pool
 *
 * Owned by the struct kvshim_file that created it; protected by
 * kvshim_lock like everything else here.
 */
struct kvshim_space {
	uint32_t id;			/* handle seen by userspace */
	uint32_t backend;		/* KVMM_BACKEND_* */
	uint64_t va_bytes;		/* bytes */
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	uint64_t admit_fault;		/* tests: fail the nth admission */
	int admit_fault_err;
	uint64_t submitted;		/* last fence of STEP_SUBMIT */
	void *stream;			/* bound by SPACE_MAP, or NULL */
	uint64_t cost[2];		/* host, device bytes of its arrays */
	struct kvshim_swap *swap;	/* SWAP_SETUP's file, or NULL */
};

/*
 * struct kvshim_swapped - one sequence in a space's swap file: its handle
 * and where its pages went (the file range [rec.off, rec.off + rec.bytes))
 */
struct kvshim_swapped {
	uint64_t handle;		/* SEQ_SWAP_OUT's, never reused */
	struct kva_swap_rec rec;
};

/*
 * struct kvshim_swap - a space's swap file (SWAP_SETUP), owned by the
 * space, protected by kvshim_lock. The file was unlinked when made.
 */
struct kvshim_swap {
	struct kvrt_swapfile *sf;
	struct kvshim_swapped *seq;	/* [nr] in no order */
	uint32_t nr;
	uint64_t next_handle;		/* the last handle given, counting up */
	uint64_t fault_nth;		/* tests: the nth chunk write fails */
	int fault_mode;			/* KVRT_SWAP_FAULT_* */
};

/**
 * struct kvshim_file - one open handle
 *
 * Lives in kvshim_files[], protected by kvshim_lock.
 */
struct kvshim_file {
	int open;			/* 1 between open and close */
	struct kvshim_space *spaces[KVSHIM_MAX_SPACES];
};

/* One mutex for the file table and everything reachable from it. */
static pthread_mutex_t kvshim_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvshim_file kvshim_files[KVSHIM_MAX_FILES];
static uint32_t kvshim_next_id = 1;	/* never reused; 0 is never a space */
/* host, device bytes the arrays of every live space hold (their cost[]) */
static uint64_t kvshim_total[2];
static uint64_t kvshim_total_cap = KVSHIM_MAX_TOTAL_BYTES;

static int all_zero(const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i])
			return 0;
	return 1;
}

#define ZERO(field) all_zero(&(field), sizeof(field))

static void *user_ptr(uint64_t u)
{
	return (void *)(uintptr_t)u;
}

static struct kvshim_file *file_get(int fd)
{
	if (fd < 0 || fd >= KVSHIM_MAX_FILES || !kvshim_files[fd].open)
		return NULL;
	return &kvshim_files[fd];
}

static struct kvshim_space *space_find(struct kvshim_file *f, uint32_t id,
				       uint32_t *idx)
{
	for (uint32_t i = 0; i < KVSHIM_MAX_SPACES; i++) {
		if (f->spaces[i] && f->spaces[i]->id == id) {
			if (idx)
				*idx = i;
			return f->spaces[i];
		}
	}
	return NULL;
}

static void swap_close(struct kvshim_space *s)
{
	struct kvshim_swap *w = s->swap;

	if (!w)
		return;
	for (uint32_t i = 0; i < w->nr; i++)
		kva_swap_rec_fini(&w->seq[i].rec);
	free(w->seq);
	kvrt_swapfile_close(w->sf);
	free(w);
	s->swap = NULL;
}

static int space_destroy(struct kvshim_space *s)
{
	int ret = kva_pool_destroy(s->pool);

	if (ret)
		return ret;
	swap_close(s);
	kvshim_total[0] -= s->cost[0];
	kvshim_total[1] -= s->cost[1];
	kvrt_ctx_destroy(s->ctx);
	free(s);
	return 0;
}

/*
 * -ENOMEM when @host and @dev more bytes would take the spaces of all
 * handles together past KVSHIM_MAX_TOTAL_BYTES
 */
static int total_ok(uint64_t host, uint64_t dev)
{
	for (int i = 0; i < 2; i++)
		if ((i ? dev : host) > kvshim_total_cap ||
		    kvshim_total[i] > kvshim_total_cap - (i ? dev : host))
			return -ENOMEM;
	return 0;
}

/**
 * kvshim_test_total_cap() - lower the bound on all spaces together
 * @bytes: the new bound, at most KVSHIM_MAX_TOTAL_BYTES; 0 restores it
 *
 * Not part of the uapi: tests reach the bound with small spaces.
 *
 * Return: 0, or -EINVAL over KVSHIM_MAX_TOTAL_BYTES.
 */
int kvshim_test_total_cap(uint64_t bytes)
{
	if (bytes > KVSHIM_MAX_TOTAL_BYTES)
		return -EINVAL;
	pthread_mutex_lock(&kvshim_lock);
	kvshim_total_cap = bytes ? bytes : KVSHIM_MAX_TOTAL_BYTES;
	pthread_mutex_unlock(&kvshim_lock);
	return 0;
}

/**
 * kvshim_held() - what the arrays of every live space hold together
 * @host_bytes: receives the host bytes
 * @dev_bytes: receives the device bytes
 *
 * Not part of the uapi: tests compare it with KVSHIM_MAX_TOTAL_BYTES.
 */
void kvshim_held(uint64_t *host_bytes, uint64_t *dev_bytes)
{
	pthread_mutex_lock(&kvshim_lock);
	*host_bytes = kvshim_total[0];
	*dev_bytes = kvshim_total[1];
	pthread_mutex_unlock(&kvshim_lock);
}

/**
 * kvshim_open() - open a new handle
 *
 * Return: a handle (>= 0); -EMFILE when KVSHIM_MAX_FILES are open.
 */
int kvshim_open(void)
{
	int fd = -EMFILE;

	pthread_mutex_lock(&kvshim_lock);
	for (int i = 0; i < KVSHIM_MAX_FILES; i++) {
		if (!kvshim_files[i].open) {
			memset(&kvshim_files[i], 0, sizeof(kvshim_files[i]));
			kvshim_files[i].open = 1;
			fd = i;
			break;
		}
	}
	pthread_mutex_unlock(&kvshim_lock);
	return fd;
}

/**
 * kvshim_close() - close a handle and destroy every space it owns
 * @fd: handle from kvshim_open()
 *
 * Return: 0; -EBADF for a handle that is not open; the runtime's error
 * when a space cannot be destroyed (the handle then stays open with the
 * spaces not yet destroyed, and the call may be repeated).
 */
int kvshim_close(int fd)
{
	struct kvshim_file *f;
	int ret = 0;

	pthread_mutex_lock(&kvshim_lock);
	f = file_get(fd);
	if (!f) {
		ret = -EBADF;
		goto out_unlock;
	}
	for (uint32_t i = 0; i < KVSHIM_MAX_SPACES; i++) {
		if (!f->spaces[i])
			continue;
		ret = space_destroy(f->spaces[i]);
		if (ret)
			goto out_unlock;
		f->spaces[i] = NULL;
	}
	f->open = 0;
out_unlock:
	pthread_mutex_unlock(&kvshim_lock);
	return ret;
}

static int ioc_version(struct kvmm_version *a)
{
	if (!ZERO(a->pad) || !ZERO(a->reserved))
		return -EINVAL;
	a->api = KVMM_API_VERSION;
	a->features = KVMM_FEAT_HOST | KVMM_FEAT_COMPACT | KVMM_FEAT_TIERS |
		      KVMM_FEAT_STEP | KVMM_FEAT_PLACEMENT | KVMM_FEAT_SWAP;
	if (kvrt_cuda_probe(NULL, 0) == 0)
		a->features |= KVMM_FEAT_DEVICE;
	return 0;
}

static int head_dim_valid(uint32_t d)
{
	return d == 64 || d == 80 || d == 96 || d == 128 || d == 256;
}

static int space_create_valid(const struct kvmm_space_create *a)
{
	if (a->flags || !ZERO(a->reserved))
		return -EINVAL;
	if (a->backend != KVMM_BACKEND_DEVICE &&
	    a->backend != KVMM_BACKEND_HOST)
		return -EINVAL;
	if (!a->nr_layers || !a->nr_kv_heads || !a->max_seqs ||
	    !a->max_tokens || !head_dim_valid(a->head_dim))
		return -EINVAL;
	if (a->nr_tiers < 1 || a->nr_tiers > 2)
		return -EINVAL;
	for (uint32_t i = 0; i < 2; i++) {
		struct kva_tier t = { a->tiers[i].kbits, a->tiers[i].vbits,
				      a->tiers[i].kgroups,
				      a->tiers[i].vgroups };

		if (i < a->nr_tiers ? kva_tier_valid(&t) != 0
				    : !ZERO(a->tiers[i]))
			return -EINVAL;
	}
	if (!a->va_bytes || a->va_bytes % KVRT_GRANULE_SIZE)
		return -EINVAL;
	if (!a->budget_bytes || a->budget_bytes % KVRT_GRANULE_SIZE ||
	    a->budget_bytes > a->va_bytes)
		return -EINVAL;
	if ((uint64_t)a->max_seqs * a->nr_layers * a->nr_kv_heads >
	    UINT32_MAX / 2)
		return -EINVAL;
	/* in range; what the space costs is space_cost()'s */
	if (a->max_tokens > KVSHIM_MAX_TOKENS ||
	    a->va_bytes > KVSHIM_MAX_VA_BYTES)
		return -EINVAL;
	return 0;
}

/* the pool parameters of a valid @a (no context yet) */
static void create_params(const struct kvmm_space_create *a,
			  struct kva_pool_params *p)
{
	memset(p, 0, sizeof(*p));
	p->va_bytes = a->va_bytes;
	p->budget_bytes = a->budget_bytes;
	p->head_dim = a->head_dim;
	p->nr_tiers = a->nr_tiers;
	for (uint32_t i = 0; i < a->nr_tiers; i++) {
		p->tiers[i].kbits = a->tiers[i].kbits;
		p->tiers[i].vbits = a->tiers[i].vbits;
		p->tiers[i].kgroups = a->tiers[i].kgroups;
		p->tiers[i].vgroups = a->tiers[i].vgroups;
	}
	p->nr_slots = a->max_seqs;
	p->nr_layers = a->nr_layers;
	p->nr_heads = a->nr_kv_heads;
	p->max_tokens = a->max_tokens;
	/* a device space keeps its tables on the device (SPACE_MAP) */
	if (a->backend == KVMM_BACKEND_DEVICE)
		p->flags = KVA_POOL_DEVICE;
}

/* over KVSHIM_MAX_SPACE_BYTES of host or of device memory: -E2BIG */
static int cost_ok(const struct kva_pool_cost *c)
{
	return c->host_bytes <= KVSHIM_MAX_SPACE_BYTES &&
	       c->dev_bytes <= KVSHIM_MAX_SPACE_BYTES ? 0 : -E2BIG;
}

/**
 * kvshim_space_cost() - the memory SPACE_CREATE would give a space
 * @c: SPACE_CREATE's argument
 * @host_bytes: receives the host bytes (kva_pool_cost())
 * @dev_bytes: receives the device bytes (0 for a host space)
 *
 * Not part of the uapi: tests and the fuzzer find the arguments on either
 * side of KVSHIM_MAX_SPACE_BYTES with it.
 *
 * Return: 0; -EINVAL for an argument SPACE_CREATE refuses as such;
 * -ENOSPC when no page size fits the tiers.
 */
int kvshim_space_cost(const struct kvmm_space_create *c,
		      uint64_t *host_bytes, uint64_t *dev_bytes)
{
	struct kva_pool_params p;
	struct kva_pool_cost cost;
	int ret;

	if (!c || !host_bytes || !dev_bytes)
		return -EINVAL;
	ret = space_create_valid(c);
	if (ret)
		return ret;
	create_params(c, &p);
	ret = kva_pool_cost(&p, &cost);
	if (ret)
		return ret;
	*host_bytes = cost.host_bytes;
	*dev_bytes = cost.dev_bytes;
	return 0;
}

static int ioc_space_create(struct kvshim_file *f,
			    struct kvmm_space_create *a)
{
	struct kvrt_ctx_opts o = { 0 };
	struct kva_pool_params p;
	struct kva_pool_cost cost;
	struct kvshim_space *s;
	uint32_t slot = KVSHIM_MAX_SPACES;
	int ret;

	ret = space_create_valid(a);
	if (ret)
		return ret;
	create_params(a, &p);
	ret = kva_pool_cost(&p, &cost);
	if (!ret)
		ret = cost_ok(&cost);
	if (!ret)
		ret = total_ok(cost.host_bytes, cost.dev_bytes);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < KVSHIM_MAX_SPACES; i++) {
		if (!f->spaces[i]) {
			slot = i;
			break;
		}
	}
	if (slot == KVSHIM_MAX_SPACES)
		return -ENOSPC;
	if (kvshim_next_id == 0)	/* 2^32 - 1 spaces made: none left */
		return -ENOSPC;
	if (a->backend == KVMM_BACKEND_DEVICE && kvrt_cuda_probe(NULL, 0))
		return -ENODEV;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	o.backend = a->backend == KVMM_BACKEND_HOST ? KVRT_BACKEND_HOST
						    : KVRT_BACKEND_CUDA;
	ret = kvrt_ctx_create(&o, &s->ctx);
	if (ret)
		goto out_free;

	p.ctx = s->ctx;
	ret = kva_pool_create(&p, &s->pool);
	if (ret)
		goto out_ctx;

	s->id = kvshim_next_id++;
	s->backend = a->backend;
	s->va_bytes = a->va_bytes;
	s->cost[0] = cost.host_bytes;
	s->cost[1] = cost.dev_bytes;
	kvshim_total[0] += s->cost[0];
	kvshim_total[1] += s->cost[1];
	f->spaces[slot] = s;
	a->space = s->id;
	a->page_size = s->pool->page_size;
	return 0;

out_ctx:
	kvrt_ctx_destroy(s->ctx);
out_free:
	free(s);
	return ret;
}

static int ioc_space_destroy(struct kvshim_file *f,
			     const struct kvmm_space_destroy *a)
{
	struct kvshim_space *s;
	uint32_t idx;
	int ret;

	if (a->flags || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, &idx);
	if (!s)
		return -ENOENT;
	ret = space_destroy(s);
	if (ret)
		return ret;
	f->spaces[idx] = NULL;
	return 0;
}

/* kva_admit(), or the error a test injected with kvshim_fault_inject() */
static int admit_step(struct kvshim_space *s, const uint32_t *slots,
		      const uint32_t *prompt, uint32_t n)
{
	if (s->admit_fault && --s->admit_fault == 0)
		return -s->admit_fault_err;
	return kva_admit(s->pool, slots, prompt, n);
}

/*
 * The pool's arrays that kva_compact() may change, saved so that a failed
 * increment can be undone (and that SEQ_ADMIT and SEQ_SWAP_IN put back on
 * failure: a grow with host granules reorders the free ring). The page
 * tables are not copied (they may be large): compaction only redirects
 * the entries of the pages it moved, and the inverse moves put them back.
 */
struct compact_undo {
	uint32_t *ring;
	uint32_t *page_list;
	uint32_t *page_pos;
	uint8_t *gran_mapped;
	uint8_t *gran_mem;
	uint32_t nr_gran_mem[KVA_NR_MEM];
	uint8_t *seen;			/* ring_dedupe()'s scratch */
	uint64_t head, tail, nr_used;
	uint32_t nr_granules, nr_retired;
};

static void undo_fini(struct compact_undo *u)
{
	free(u->ring);
	free(u->page_list);
	free(u->page_pos);
	free(u->gran_mapped);
	free(u->gran_mem);
	free(u->seen);
	memset(u, 0, sizeof(*u));
}

static int undo_save(struct compact_undo *u, const struct kva_pool *pool)
{
	size_t ids = pool->nr_page_ids;

	u->ring = malloc(ids * sizeof(*u->ring));
	u->page_list = malloc(ids * sizeof(*u->page_list));
	u->page_pos = malloc(ids * sizeof(*u->page_pos));
	u->gran_mapped = malloc(pool->nr_gslots);
	u->gran_mem = malloc(pool->nr_gslots);
	u->seen = malloc(ids);
	if (!u->ring || !u->page_list || !u->page_pos || !u->gran_mapped ||
	    !u->gran_mem || !u->seen) {
		undo_fini(u);
		return -ENOMEM;
	}
	memcpy(u->ring, pool->ring, ids * sizeof(*u->ring));
	memcpy(u->page_list, pool->page_list, ids * sizeof(*u->page_list));
	memcpy(u->page_pos, pool->page_pos, ids * sizeof(*u->page_pos));
	memcpy(u->gran_mapped, pool->gran_mapped, pool->nr_gslots);
	memcpy(u->gran_mem, pool->gran_mem, pool->nr_gslots);
	memcpy(u->nr_gran_mem, pool->nr_gran_mem, sizeof(u->nr_gran_mem));
	u->head = pool->head;
	u->tail = pool->tail;
	u->nr_used = pool->nr_used;
	u->nr_granules = pool->nr_granules;
	u->nr_retired = pool->nr_retired;
	return 0;
}

static void undo_apply(const struct compact_undo *u, struct kva_pool *pool,
		       const struct kva_compact_control *cc)
{
	size_t ids = pool->nr_page_ids;

	/* the tables were rewritten once the moves were counted */
	if (cc->pages_moved) {
		struct kva_view v;

		kva_pool_view(pool, &v);
		kva_rewrite_cpu(&v, cc->dst, cc->src, cc->nr_moves, NULL);
	}
	memcpy(pool->ring, u->ring, ids * sizeof(*u->ring));
	memcpy(pool->page_list, u->page_list, ids * sizeof(*u->page_list));
	memcpy(pool->page_pos, u->page_pos, ids * sizeof(*u->page_pos));
	memcpy(pool->gran_mapped, u->gran_mapped, pool->nr_gslots);
	memcpy(pool->gran_mem, u->gran_mem, pool->nr_gslots);
	memcpy(pool->nr_gran_mem, u->nr_gran_mem, sizeof(u->nr_gran_mem));
	pool->head = u->head;
	pool->tail = u->tail;
	pool->nr_used = u->nr_used;
	pool->nr_granules = u->nr_granules;
	pool->nr_retired = u->nr_retired;
}

/*
 * Admission picks free slots, maps the granules the prompts need (the
 * uapi has no grow command: admission is what asks for memory), then runs
 * kva_admit(). Everything kva_admit() can refuse is checked first, so that
 * once granules are mapped it should not fail: slots are free and
 * distinct, prompts are at most max_tokens, and the ring holds the pages
 * kva_can_admit() counts. Should it fail all the same, the granules mapped
 * for the batch are given back (ungrow()), so that the failed call leaves
 * the space as it found it.
 */
static int ioc_seq_admit(struct kvshim_file *f, const struct kvmm_seq_admit *a)
{
	unsigned char *useqs = user_ptr(a->seqs);	/* struct kvmm_seq[] */
	struct kvshim_space *s;
	struct kva_pool *pool;
	uint32_t *slots = NULL, *prompt = NULL, n = a->count, found = 0;
	uint64_t need = 0, free_pages, grow = 0, room;
	struct kva_compact_control none = { 0 };
	struct compact_undo u = { 0 };
	uint8_t *was = NULL;
	int ret;

	if (a->flags || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	if (n && !useqs)
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (!n)
		return 0;
	if (n > pool->nr_slots)
		return -EINVAL;

	slots = malloc(n * sizeof(*slots));
	prompt = malloc(n * sizeof(*prompt));
	if (!slots || !prompt) {
		ret = -ENOMEM;
		goto out_free;
	}
	/* read each entry once: what is checked is what is used */
	for (uint32_t i = 0; i < n; i++) {
		struct kvmm_seq q;

		memcpy(&q, useqs + (size_t)i * sizeof(q), sizeof(q));

		ret = q.reserved ? -EINVAL :
		      q.tokens > pool->max_tokens ? -E2BIG : 0;
		if (ret)
			goto out_free;
		prompt[i] = q.tokens;
	}
	for (uint32_t sl = 0; sl < pool->nr_slots && found < n; sl++)
		if (pool->slot_state[sl] == KVA_SLOT_FREE)
			slots[found++] = sl;
	if (found < n) {
		ret = -EBUSY;	/* every slot in use */
		goto out_free;
	}
	for (uint32_t i = 0; i < n; i++) {
		need += (uint64_t)kva_admit_pages(pool, prompt[i]) *
			pool->lists_per_slot;
	}

	free_pages = kva_nr_free(pool);
	if (need > free_pages && kva_pool_is_device(pool)) {
		/* the free count is a lower bound: make it exact first */
		ret = kva_pool_snapshot(pool);
		if (ret)
			goto out_free;
		free_pages = kva_nr_free(pool);
	}
	if (need > free_pages) {
		grow = kvmm_div_round_up(need - free_pages,
					 pool->pages_per_granule);
		room = kva_pool_room(pool);
		if (grow > room) {
			ret = -ENOSPC;
			goto out_free;
		}
		was = malloc(pool->nr_gslots);
		if (!was) {
			ret = -ENOMEM;
			goto out_free;
		}
		memcpy(was, pool->gran_mapped, pool->nr_gslots);
		/* a grow with host granules reorders the ring: keep it */
		if (!kva_pool_is_device(pool)) {
			ret = undo_save(&u, pool);
			if (ret)
				goto out_free;
		}
		ret = kva_pool_grow_auto(pool, grow);
		if (ret) {
			/* grow_auto gave its granules back itself */
			if (u.ring)
				undo_apply(&u, pool, &none);
			goto out_free;
		}
	}
	ret = admit_step(s, slots, prompt, n);
	if (ret)
		goto out_ungrow;
	for (uint32_t i = 0; i < n; i++)
		memcpy(useqs + (size_t)i * sizeof(struct kvmm_seq) +
			       offsetof(struct kvmm_seq, slot),
		       &slots[i], sizeof(slots[i]));
	goto out_free;

out_ungrow:
	/* a device pool's ring is on the device: its granules stay, free;
	 * a host pool's arrays go back as they were, ring order included */
	if (grow && !kva_pool_is_device(pool) && !kva_pool_ungrow(pool, was) &&
	    u.ring)
		undo_apply(&u, pool, &none);
out_free:
	undo_fini(&u);
	free(was);
	free(prompt);
	free(slots);
	return ret;
}

static int ioc_seq_release(struct kvshim_file *f,
			   const struct kvmm_seq_release *a)
{
	const void *uslots = user_ptr(a->slots);
	struct kvshim_space *s;
	uint32_t *slots;
	int ret;

	if (a->flags || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	if (a->count && !uslots)
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	if (!a->count)
		return 0;
	if (a->count > s->pool->nr_slots)
		return -EINVAL;
	/* one copy, so that what kva_free() validates is what it frees */
	slots = malloc(a->count * sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	memcpy(slots, uslots, a->count * sizeof(*slots));
	/* validates every slot (range, repeats, state) before freeing any */
	ret = kva_free(s->pool, slots, a->count);
	free(slots);
	return ret;
}

static int ioc_set_budget(struct kvshim_file *f,
			  const struct kvmm_set_budget *a)
{
	struct kva_pool_cost cost;
	struct kvshim_space *s;
	int ret;

	if (a->flags || !ZERO(a->reserved))
		return -EINVAL;
	if (!a->budget_bytes || a->budget_bytes % KVRT_GRANULE_SIZE)
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	if (a->budget_bytes > s->va_bytes)
		return -EINVAL;
	/* a larger budget grows the arrays: within the same bounds */
	kva_pool_budget_cost(s->pool, a->budget_bytes, &cost);
	ret = cost_ok(&cost);
	if (!ret)
		ret = total_ok(cost.host_bytes > s->cost[0] ?
				       cost.host_bytes - s->cost[0] : 0,
			       cost.dev_bytes > s->cost[1] ?
				       cost.dev_bytes - s->cost[1] : 0);
	if (!ret)
		ret = kva_pool_set_budget(s->pool, a->budget_bytes);
	if (ret)
		return ret;
	/* the arrays never shrink: the space holds the most it has asked */
	for (int i = 0; i < 2; i++) {
		uint64_t c = i ? cost.dev_bytes : cost.host_bytes;

		if (c > s->cost[i]) {
			kvshim_total[i] += c - s->cost[i];
			s->cost[i] = c;
		}
	}
	return 0;
}

static uint32_t compact_reason(enum kva_compact_result r)
{
	switch (r) {
	case KVA_COMPACT_BUDGET:
		return KVMM_COMPACT_BUDGET;
	case KVA_COMPACT_NO_ROOM:
		return KVMM_COMPACT_NO_SPACE;
	default:
		return KVMM_COMPACT_DONE;
	}
}

/*
 * The free ring after kva_compact() failed in the unmapping of granules it
 * had retired: kva_compact() rebuilds the ring once more on that path,
 * appending the moves' sources a second time (those of a granule left
 * half migrated survive the filter). Keep the first copy of each page and
 * only pages that are free in mapped granules, in ring order; a ring
 * without the defect is left as it is.
 */
static void ring_dedupe(struct kva_pool *pool, uint8_t *seen)
{
	uint32_t ppg = pool->pages_per_granule, ids = pool->nr_page_ids;
	uint64_t n = pool->tail - pool->head, k = 0;

	memset(seen, 0, ids);
	for (uint64_t i = 0; i < n; i++) {
		uint32_t p = pool->ring[(pool->head + i) % ids];

		if (seen[p] || pool->page_list[p] != KVA_OWNER_FREE ||
		    pool->gran_mapped[p / ppg] != KVA_GRAN_MAPPED)
			continue;
		seen[p] = 1;
		pool->ring[(pool->head + k++) % ids] = p;
	}
	pool->tail = pool->head + k;
}

/*
 * One kva_compact() increment, all or nothing.
 *
 * kva_compact() can fail after it has moved pages: fencing or retiring
 * refused. The runtime is then unchanged, and the saved arrays plus the
 * inverse moves restore the pool exactly (the moved pages' old copies were
 * never written, so the data the restored tables point at is intact).
 *
 * It can also fail after the runtime has retired the emptied granules,
 * when only their unmapping is refused. Retiring cannot be undone; the
 * state is the one a successful increment leaves while a fence is pending
 * (pages moved, granules retired and counted in granules_released, their
 * memory given back by the next COMPACT), and the call succeeds.
 *
 * Granules left retired that way are unmapped first, before anything is
 * saved; if the runtime refuses, the call fails having changed nothing.
 * If they are unmapped and the increment then fails, the increment is
 * undone and the call succeeds with nothing moved (reason
 * KVMM_COMPACT_BUDGET: call again).
 */
static int ioc_compact(struct kvshim_file *f, struct kvmm_compact *a)
{
	struct kva_compact_control cc;
	struct kvrt_space_stats st0, st1;
	struct compact_undo u;
	struct kvshim_space *s;
	int ret, deferred = 0;

	if (a->flags || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	ret = kva_pool_snapshot(s->pool);	/* undo_save() reads the arrays */
	if (ret)
		return ret;
	ret = kva_compact_init(&cc, s->pool, a->byte_budget);
	if (ret)
		return ret;
	ret = undo_save(&u, s->pool);
	if (ret)
		goto out_fini;
	if (s->pool->nr_retired) {
		ret = kva_compact_release(s->pool, 0);
		if (ret < 0)
			goto out_undo;
		deferred = ret;
		undo_fini(&u);
		ret = undo_save(&u, s->pool);
		if (ret) {
			ret = 0;
			goto out_deferred;
		}
	}
	kvrt_space_stats(s->pool->space, &st0);
	ret = kva_compact(s->pool, &cc);
	if (ret) {
		kvrt_space_stats(s->pool->space, &st1);
		if (st1.nr_retired > st0.nr_retired &&
		    cc.granules_released) {
			/* retired, unmapping refused: later */
			ring_dedupe(s->pool, u.seen);
			ret = 0;
		} else {
			undo_apply(&u, s->pool, &cc);
			if (deferred) {
				ret = 0;
				goto out_deferred;
			}
		}
	}
	if (!ret) {
		a->pages_moved = cc.pages_moved;
		a->bytes_moved = cc.bytes_moved;
		a->granules_released = cc.granules_released;
		a->reason = compact_reason(cc.result);
	}
	goto out_undo;

out_deferred:
	a->pages_moved = 0;
	a->bytes_moved = 0;
	a->granules_released = 0;
	a->reason = KVMM_COMPACT_BUDGET;
out_undo:
	undo_fini(&u);
out_fini:
	kva_compact_fini(&cc);
	return ret;
}

/*
 * Per-(layer, head) figures: the sums over every slot of the lists of that
 * (layer, head), per tier.
 */
static void stats_heads(const struct kva_pool *pool,
			struct kvmm_head_stats *h)
{
	uint32_t lps = pool->lists_per_slot;

	for (uint32_t sl = 0; sl < pool->nr_slots; sl++) {
		if (pool->slot_state[sl] == KVA_SLOT_FREE)
			continue;
		for (uint32_t j = 0; j < lps; j++) {
			uint32_t l = sl * lps + j;

			for (int t = 0; t < KVA_NR_TIERS; t++) {
				h[j].tokens[t] += pool->ntokens[2 * l + t];
				h[j].pages[t] += pool->npages[2 * l + t];
			}
		}
	}
}

static int ioc_stats(struct kvshim_file *f, struct kvmm_stats *a)
{
	void *uheads = user_ptr(a->heads);
	struct kvmm_head_stats *h = NULL;
	struct kvrt_space_stats st;
	struct kvshim_space *s;
	struct kva_pool *pool;
	uint32_t ppg;

	if (a->flags || a->pad || a->pad2 || !ZERO(a->reserved))
		return -EINVAL;
	if (!a->nr_heads != !uheads)
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (a->nr_heads && a->nr_heads != pool->lists_per_slot)
		return -EINVAL;
	if (kva_pool_snapshot(pool))
		return -EIO;
	if (a->nr_heads) {
		h = calloc(a->nr_heads, sizeof(*h));
		if (!h)
			return -ENOMEM;
	}

	ppg = pool->pages_per_granule;
	a->page_size = pool->page_size;
	a->pages_total = (uint64_t)pool->nr_granules * ppg;
	a->pages_free = kva_nr_free(pool);
	a->pages_used[0] = a->pages_used[1] = 0;
	a->tokens[0] = a->tokens[1] = 0;
	for (uint32_t l = 0; l < pool->nr_lists; l++) {
		for (int t = 0; t < KVA_NR_TIERS; t++) {
			a->pages_used[t] += pool->npages[2 * l + t];
			a->tokens[t] += pool->ntokens[2 * l + t];
		}
	}
	kvrt_space_stats(pool->space, &st);
	a->granules_by_loc[0] = st.nr_by_loc[KVRT_LOC_DEVICE];
	a->granules_by_loc[1] = st.nr_by_loc[KVRT_LOC_HOST_NUMA];
	/* free pages in granules that also hold used pages */
	a->free_unusable_bytes = 0;
	for (uint32_t g = 0; g < pool->nr_gslots; g++) {
		uint32_t used = 0;

		if (pool->gran_mapped[g] != KVA_GRAN_MAPPED)
			continue;
		for (uint32_t j = 0; j < ppg; j++)
			used += pool->page_list[g * ppg + j] < KVA_OWNER_FREE;
		if (used && used < ppg)
			a->free_unusable_bytes +=
				(uint64_t)(ppg - used) * pool->page_size;
	}
	if (h) {
		stats_heads(pool, h);
		memcpy(uheads, h, a->nr_heads * sizeof(*h));
		free(h);
	}
	return 0;
}

/*
 * The pool's own arrays: the device ones on a device space, the host ones
 * on a host space (as KVMM_IOC_SPACE_MAP).
 */
static int ioc_page_table_info(struct kvshim_file *f,
			       struct kvmm_page_table_info *a)
{
	struct kvshim_space *s;
	struct kva_pool *pool;
	struct kva_view v;

	if (a->flags || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (kva_pool_device_view(pool, &v))
		kva_pool_view(pool, &v);
	a->pool_base = pool->base;
	a->tables = (uint64_t)(uintptr_t)v.table;
	a->counts = (uint64_t)(uintptr_t)v.ntokens;
	a->page_size = pool->page_size;
	a->pages_per_granule = pool->pages_per_granule;
	a->table_width = pool->width;
	a->tokens_per_page[0] = pool->layout[KVA_HI].tokens;
	a->tokens_per_page[1] = pool->layout[KVA_LO].tokens;
	return 0;
}

static void tier_layout(const struct kva_pool *pool, int t,
			struct kvmm_tier_layout *o)
{
	const struct kva_tier *k = &pool->tiers[t && pool->nr_tiers > 1];
	const struct kva_layout *l = &pool->layout[t];

	memset(o, 0, sizeof(*o));
	o->kbits = k->kbits;
	o->vbits = k->vbits;
	o->kgroups = k->kgroups;
	o->vgroups = k->vgroups;
	o->tokens = l->tokens;
	o->k_off = l->k_off;
	o->km_off = l->km_off;
	o->v_off = l->v_off;
	o->vm_off = l->vm_off;
	o->score_off = l->score_off;
	o->pos_off = l->pos_off;
}

/*
 * The arrays are the pool's own: on a device space the device arrays
 * (kva_pool_device_view()), on a host space the host ones. Binding a
 * stream orders it after the space's earlier work (kva_pool_bind_stream());
 * a failed binding changes nothing.
 */
static int ioc_space_map(struct kvshim_file *f, struct kvmm_space_map *a)
{
	struct kvshim_space *s;
	struct kva_pool *pool;
	struct kva_view v;
	void *stream = user_ptr(a->stream);
	int ret;

	if (a->flags || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (!kva_pool_is_device(pool)) {
		if (stream)
			return -EINVAL;
		kva_pool_view(pool, &v);
	} else {
		ret = kva_pool_device_view(pool, &v);
		if (ret)
			return ret;
		ret = kva_pool_bind_stream(pool, stream);
		if (ret)
			return ret;
		s->stream = stream;
	}
	a->pool_base = pool->base;
	a->tables = (uint64_t)(uintptr_t)v.table;
	a->npages = (uint64_t)(uintptr_t)v.npages;
	a->ntokens = (uint64_t)(uintptr_t)v.ntokens;
	a->page_size = pool->page_size;
	a->pages_per_granule = pool->pages_per_granule;
	a->table_width = pool->width;
	a->lists_per_slot = pool->lists_per_slot;
	a->nr_layers = pool->nr_layers;
	a->nr_kv_heads = pool->nr_heads;
	a->head_dim = pool->head_dim;
	a->nr_tiers = pool->nr_tiers;
	a->max_seqs = pool->nr_slots;
	a->max_tokens = pool->max_tokens;
	tier_layout(pool, KVA_HI, &a->tiers[0]);
	tier_layout(pool, KVA_LO, &a->tiers[1]);
	return 0;
}

/* one op of a submission, copied in */
struct step_op {
	uint32_t op;
	uint32_t n;
	uint32_t sinks;
	uint32_t *slots;		/* [n] */
	uint32_t *keep;			/* [n] EVICT: arg0 */
	int32_t *prot;			/* [n] EVICT: arg1 */
};

/*
 * What the submission's ops will do to the lists of the slots they name,
 * simulated on copies of their page and token counts (exact where the
 * counts are known: a host pool, or a device pool after a snapshot).
 */
struct step_plan {
	uint32_t *idx;			/* [nr_slots] slot -> sim index + 1 */
	uint32_t nsim;
	uint32_t *np, *nt;		/* [nsim][lists_per_slot][2] */
	uint8_t *unk;			/* [nsim] high count lowered by EVICT
					 * to an unknown value */
	uint8_t *state;			/* [nr_slots] slot states, simulated */
	uint64_t freed, taken, need;	/* pages; need: most taken - freed */
};

static void plan_fini(struct step_plan *pl)
{
	free(pl->idx);
	free(pl->np);
	free(pl->nt);
	free(pl->unk);
	free(pl->state);
}

static int plan_init(struct step_plan *pl, const struct kva_pool *pool,
		     uint32_t nslots)
{
	size_t w = (size_t)nslots * pool->lists_per_slot * 2;

	memset(pl, 0, sizeof(*pl));
	pl->idx = calloc(pool->nr_slots, sizeof(*pl->idx));
	pl->np = malloc((w ? w : 1) * sizeof(*pl->np));
	pl->nt = malloc((w ? w : 1) * sizeof(*pl->nt));
	pl->unk = calloc(nslots ? nslots : 1, 1);
	pl->state = malloc(pool->nr_slots);
	if (!pl->idx || !pl->np || !pl->nt || !pl->unk || !pl->state) {
		plan_fini(pl);
		return -ENOMEM;
	}
	memcpy(pl->state, pool->slot_state, pool->nr_slots);
	return 0;
}

/* the simulated counts of @slot, copied from the pool on first use */
static uint32_t plan_slot(struct step_plan *pl, const struct kva_pool *pool,
			  uint32_t slot)
{
	uint32_t lps = pool->lists_per_slot, i = pl->idx[slot];

	if (i)
		return i - 1;
	i = pl->nsim++;
	pl->idx[slot] = i + 1;
	memcpy(&pl->np[(size_t)i * lps * 2],
	       &pool->npages[(size_t)slot * lps * 2], lps * 2 * 4);
	memcpy(&pl->nt[(size_t)i * lps * 2],
	       &pool->ntokens[(size_t)slot * lps * 2], lps * 2 * 4);
	return i;
}

static uint32_t div_up(uint32_t x, uint32_t d)
{
	return (uint32_t)kvmm_div_round_up(x, d);
}

/*
 * Counts a kernel wrote through the mapping must fit the pages: tokens
 * beyond a list's pages, or a sequence over max_tokens, are refused
 * (-EINVAL) before anything runs.
 */
static int plan_counts_ok(const struct kva_pool *pool, const uint32_t *np,
			  const uint32_t *nt, int unk)
{
	if ((uint64_t)nt[0] + nt[1] > pool->max_tokens)
		return 0;
	if (!unk && (uint64_t)nt[0] > (uint64_t)np[0] * pool->layout[0].tokens)
		return 0;
	return (uint64_t)nt[1] <= (uint64_t)np[1] * pool->layout[1].tokens;
}

static int plan_op(struct step_plan *pl, const struct kva_pool *pool,
		   const struct step_op *o)
{
	uint32_t lps = pool->lists_per_slot, w = pool->width;
	uint32_t a = pool->layout[KVA_HI].tokens;
	uint32_t b = pool->layout[KVA_LO].tokens;
	int lo_grows = pool->nr_tiers > 1;

	for (uint32_t i = 0; i < o->n; i++) {
		uint32_t x = plan_slot(pl, pool, o->slots[i]);

		for (uint32_t j = 0; j < lps; j++) {
			uint32_t *np = &pl->np[((size_t)x * lps + j) * 2];
			uint32_t *nt = &pl->nt[((size_t)x * lps + j) * 2];
			uint32_t kh, kl, ch, cl;

			if (o->op == KVMM_OP_TRIM) {
				kh = div_up(nt[0], a);
				kl = div_up(nt[1], b);
				if ((uint64_t)nt[0] + nt[1] > pool->max_tokens ||
				    (uint64_t)kh + kl > np[0])
					return -EINVAL;
				pl->freed += np[0] - kh - kl;
				np[0] = kh;
				np[1] = kl;
				continue;
			}
			if (!plan_counts_ok(pool, np, nt, pl->unk[x]))
				return -EINVAL;
			kh = div_up(nt[0], a);
			kl = div_up(nt[1], b);
			switch (o->op) {
			case KVMM_OP_APPEND:
				ch = pl->unk[x] || nt[0] == np[0] * a;
				cl = lo_grows && nt[1] == np[1] * b;
				if ((uint64_t)np[0] + np[1] + ch + cl > w)
					return -E2BIG;
				np[0] += ch;
				np[1] += cl;
				pl->taken += ch + cl;
				break;
			case KVMM_OP_EVICT:
			case KVMM_OP_SHRINK:
				/* evict lowers nt[0] by an unknown amount:
				 * what a shrink at the old count frees is
				 * the least it frees */
				if (!pl->unk[x] && np[0] > kh) {
					pl->freed += np[0] - kh;
					np[0] = kh;
				}
				if (np[1] > kl) {
					pl->freed += np[1] - kl;
					np[1] = kl;
				}
				break;
			}
		}
		if (o->op == KVMM_OP_EVICT)
			pl->unk[x] = 1;
	}
	if (pl->taken > pl->freed && pl->taken - pl->freed > pl->need)
		pl->need = pl->taken - pl->freed;
	return 0;
}

/*
 * Copy in and check one op: the fields, each slot once, each in the state
 * the op needs when it runs (the ops before it in @pl->state).
 */
static int step_op_in(const struct kva_pool *pool, const void *uop,
		      struct step_op *o, uint8_t *state, uint32_t *mark,
		      uint32_t gen)
{
	const unsigned char *us;
	struct kvmm_step_op k;

	memcpy(&k, uop, sizeof(k));
	memset(o, 0, sizeof(*o));
	if (k.op < KVMM_OP_APPEND || k.op > KVMM_OP_MAX || k.flags ||
	    k.reserved || (k.sinks && k.op != KVMM_OP_EVICT))
		return -EINVAL;
	if (k.count > pool->nr_slots || (k.count && !k.slots))
		return -EINVAL;
	o->op = k.op;
	o->n = k.count;
	o->sinks = k.sinks;
	if (!k.count)
		return 0;
	o->slots = malloc(k.count * sizeof(*o->slots));
	o->keep = malloc(k.count * sizeof(*o->keep));
	o->prot = malloc(k.count * sizeof(*o->prot));
	if (!o->slots || !o->keep || !o->prot)
		return -ENOMEM;
	us = user_ptr(k.slots);
	for (uint32_t i = 0; i < k.count; i++) {
		struct kvmm_step_slot e;
		uint32_t want = k.op == KVMM_OP_TRIM ? KVA_SLOT_PREFILL
						     : KVA_SLOT_DECODE;

		memcpy(&e, us + (size_t)i * sizeof(e), sizeof(e));
		if (e.pad || e.slot >= pool->nr_slots ||
		    mark[e.slot] == gen)
			return -EINVAL;
		if (k.op != KVMM_OP_EVICT && (e.arg0 || e.arg1))
			return -EINVAL;
		if (e.arg1 > INT32_MAX)
			return -EINVAL;
		mark[e.slot] = gen;
		if (state[e.slot] != want)
			return state[e.slot] == KVA_SLOT_FREE ? -ENOENT
							      : -EBUSY;
		o->slots[i] = e.slot;
		o->keep[i] = e.arg0;
		o->prot[i] = (int32_t)e.arg1;
	}
	for (uint32_t i = 0; i < k.count; i++)
		if (k.op == KVMM_OP_TRIM)
			state[o->slots[i]] = KVA_SLOT_DECODE;
	return 0;
}

/* run one validated op; a host pool's ops cannot fail here */
static int step_run(struct kva_pool *pool, const struct step_op *o)
{
	int ret;

	if (!o->n)
		return 0;
	switch (o->op) {
	case KVMM_OP_APPEND:
		return kva_append(pool, o->slots, o->n);
	case KVMM_OP_TRIM:
		return kva_trim(pool, o->slots, o->n, NULL, NULL);
	case KVMM_OP_EVICT:
		ret = kva_evict(pool, o->slots, o->n, o->keep, o->prot,
				o->sinks);
		return ret < 0 ? ret : 0;
	default:
		ret = kva_shrink(pool, o->slots, o->n);
		return ret < 0 ? ret : 0;
	}
}

/* granules to map so that @need pages are free; -ENOSPC over the budget */
static int step_grow(struct kva_pool *pool, uint64_t need, int dry)
{
	uint64_t free_pages = kva_nr_free(pool), g;

	if (need <= free_pages)
		return 0;
	g = kvmm_div_round_up(need - free_pages, pool->pages_per_granule);
	if (g > kva_pool_room(pool))
		return -ENOSPC;
	return dry ? 0 : kva_pool_grow_auto(pool, (uint32_t)g);
}

/*
 * STEP_SUBMIT: copy in and validate every op (fields, slots, states as
 * the ops before leave them), then account the pages: the plan simulates
 * the ops on copies of the named lists' counts (a device space without a
 * snapshot uses append's worst case instead), grows the pool within its
 * budget when the pages taken at some point exceed the free ones, and
 * refuses with -ENOSPC when even the budget cannot cover them. Only then
 * does it run (host) or enqueue (device) the ops, in order, and emit the
 * fence.
 */
static int ioc_step_submit(struct kvshim_file *f, struct kvmm_step_submit *a)
{
	const unsigned char *uops = user_ptr(a->ops);
	struct step_op ops[KVMM_STEP_MAX_OPS];
	struct step_plan pl;
	struct kvshim_space *s;
	struct kva_pool *pool;
	uint32_t nr = a->nr_ops, nslots = 0, *mark = NULL;
	uint64_t worst = 0;
	int ret, dev;

	if (a->flags || a->pad || !ZERO(a->reserved) ||
	    nr > KVMM_STEP_MAX_OPS || (nr && !uops))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	dev = kva_pool_is_device(pool);
	memset(ops, 0, sizeof(ops));
	ret = plan_init(&pl, pool, 0);
	if (ret)
		return ret;
	mark = calloc(pool->nr_slots, sizeof(*mark));
	if (!mark) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < nr; i++) {
		ret = step_op_in(pool, uops + (size_t)i *
				 sizeof(struct kvmm_step_op), &ops[i],
				 pl.state, mark, i + 1);
		if (ret)
			goto out;
		nslots += ops[i].n;
		if (ops[i].op == KVMM_OP_APPEND)
			worst += (uint64_t)ops[i].n * pool->lists_per_slot *
				 (1 + (pool->nr_tiers > 1));
		if (ops[i].op == KVMM_OP_EVICT && ops[i].n) {
			struct kvk_evict_args ea;

			ret = kva_evict_args(pool, &ea);
			if (ret)
				goto out;
		}
	}
	if (nslots > pool->nr_slots)
		nslots = pool->nr_slots;

	/*
	 * A device space enqueues on the worst case when it fits (or the
	 * budget lets it fit). Else a lone APPEND (a decode step) lets the
	 * device decide at once (kva_dev_append_sync(): 24 bytes back, the
	 * op refused with nothing changed); if it is refused for pages, or
	 * the call has other ops, the space takes a snapshot so that the
	 * plan is exact, as a host space always is, and grows what it needs.
	 */
	if (dev && !step_grow(pool, worst, 1)) {
		ret = step_grow(pool, worst, 0);
		if (ret)
			goto out;
		goto run;
	}
	if (dev && nr == 1 && ops[0].op == KVMM_OP_APPEND) {
		ret = kva_append(pool, ops[0].slots, ops[0].n);
		if (!ret)
			goto out_fence;
		if (ret != -ENOSPC)	/* -E2BIG, or a CUDA error */
			goto out;
	}
	if (dev) {
		ret = kva_pool_snapshot(pool);
		if (ret)
			goto out;
	}
	plan_fini(&pl);
	ret = plan_init(&pl, pool, nslots);
	if (ret)
		goto out;
	for (uint32_t i = 0; i < nr && !ret; i++)
		ret = plan_op(&pl, pool, &ops[i]);
	if (!ret)
		ret = step_grow(pool, pl.need, 1);
	if (!ret)
		ret = step_grow(pool, pl.need, 0);
	if (ret)
		goto out;
run:
	for (uint32_t i = 0; i < nr; i++) {
		ret = step_run(pool, &ops[i]);
		if (ret)	/* validated above: a device or runtime error */
			goto out;
	}
out_fence:
	ret = kva_pool_fence(pool, s->submitted + 1);
	if (ret)
		goto out;
	a->fence = ++s->submitted;
out:
	for (uint32_t i = 0; i < nr; i++) {
		free(ops[i].slots);
		free(ops[i].keep);
		free(ops[i].prot);
	}
	free(mark);
	plan_fini(&pl);
	return ret;
}

static int ioc_fence(struct kvshim_file *f, struct kvmm_fence *a)
{
	struct kva_fence_state st;
	struct kvshim_space *s;
	uint64_t seqno;
	int ret;

	if ((a->flags & ~KVMM_FENCE_WAIT) || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	if (a->seqno > s->submitted)
		return -EINVAL;
	seqno = a->seqno ? a->seqno : s->submitted;
	ret = kva_pool_fence_state(s->pool, seqno,
				   !!(a->flags & KVMM_FENCE_WAIT), &st);
	if (ret)
		return ret;
	a->signalled = seqno <= st.completed;
	a->error = st.error;
	a->completed = st.completed;
	a->pages_free = st.pages_free;
	a->pages_used = st.pages_used;
	return 0;
}

static int ioc_seq_stats(struct kvshim_file *f, const struct kvmm_seq_stats *a)
{
	unsigned char *useqs = user_ptr(a->seqs);
	struct kvmm_seq_info *info;
	struct kvshim_space *s;
	struct kva_pool *pool;
	uint32_t lps;
	int ret;

	if (a->flags || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	if (a->count && !useqs)
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (!a->count)
		return 0;
	if (a->count > pool->nr_slots)
		return -EINVAL;
	info = malloc(a->count * sizeof(*info));
	if (!info)
		return -ENOMEM;
	memcpy(info, useqs, a->count * sizeof(*info));
	ret = 0;
	for (uint32_t i = 0; i < a->count; i++)
		if (info[i].slot >= pool->nr_slots)
			ret = -EINVAL;
	if (!ret)
		ret = kva_pool_snapshot(pool);
	if (ret)
		goto out_free;
	lps = pool->lists_per_slot;
	for (uint32_t i = 0; i < a->count; i++) {
		uint32_t sl = info[i].slot;

		info[i].state = pool->slot_state[sl];
		for (int t = 0; t < KVA_NR_TIERS; t++) {
			info[i].pages[t] = 0;
			info[i].tokens[t] = 0;
			for (uint32_t j = 0; j < lps; j++) {
				size_t l = (size_t)sl * lps + j;

				info[i].pages[t] += pool->npages[2 * l + t];
				info[i].tokens[t] += pool->ntokens[2 * l + t];
			}
		}
	}
	memcpy(useqs, info, a->count * sizeof(*info));
out_free:
	free(info);
	return ret;
}

/**
 * kvshim_check() - run the allocator's invariant checker on a space
 * @fd: handle from kvshim_open()
 * @space: a space handle owned by @fd
 * @why: filled with the first broken invariant, if any
 * @len: bytes at @why
 *
 * Not part of the uapi: for tests and the fuzzer, which check the pool
 * after every call.
 *
 * Return: 0 when every invariant holds; -EBADF; -ENOENT; kva_check()'s
 * error.
 */
int kvshim_check(int fd, uint32_t space, char *why, size_t len)
{
	struct kvshim_file *f;
	struct kvshim_space *s;
	int ret;

	pthread_mutex_lock(&kvshim_lock);
	f = file_get(fd);
	s = f ? space_find(f, space, NULL) : NULL;
	if (!f)
		ret = -EBADF;
	else if (!s)
		ret = -ENOENT;
	else if (!(ret = kva_pool_snapshot(s->pool)))
		ret = kva_check(s->pool, why, len);
	pthread_mutex_unlock(&kvshim_lock);
	return ret;
}

/* FNV-1a, 64 bits, over bytes and over 32-bit words */
static uint64_t fnv(uint64_t h, const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++) {
		h ^= c[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t fnv32(uint64_t h, const uint32_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= w[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

#define FNV(h, x) fnv((h), &(x), sizeof(x))

/*
 * Everything of a space that a later call can observe: the free ring in
 * order, the reverse map, the page tables and counts, the slot and granule
 * states, the counters, and the runtime's view of the space.
 */
static uint64_t space_digest(const struct kvshim_space *s)
{
	const struct kva_pool *pool = s->pool;
	struct kvrt_space_stats st;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (uint64_t i = pool->head; i < pool->tail; i++)
		h = fnv32(h, &pool->ring[i % pool->nr_page_ids], 1);
	h = FNV(h, pool->head);
	h = FNV(h, pool->tail);
	h = fnv32(h, pool->page_list, pool->nr_page_ids);
	/* the position of a free or unmapped page means nothing */
	for (uint32_t p = 0; p < pool->nr_page_ids; p++)
		if (pool->page_list[p] < KVA_OWNER_FREE)
			h = fnv32(h, &pool->page_pos[p], 1);
	for (uint32_t l = 0; l < pool->nr_lists; l++) {
		const uint32_t *t = pool->table + (size_t)l * pool->width;
		uint32_t hi = pool->npages[2 * l], lo = pool->npages[2 * l + 1];

		/* high pages from the left, low pages from the right */
		h = fnv32(h, t, hi);
		h = fnv32(h, t + pool->width - lo, lo);
	}
	h = fnv32(h, pool->npages, (size_t)pool->nr_lists * 2);
	h = fnv32(h, pool->ntokens, (size_t)pool->nr_lists * 2);
	h = fnv(h, pool->slot_state, pool->nr_slots);
	h = fnv(h, pool->gran_mapped, pool->nr_gslots);
	h = fnv(h, pool->gran_mem, pool->nr_gslots);
	h = FNV(h, pool->nr_held);
	h = FNV(h, pool->nr_gslots);	/* capacity: table_width shows it */
	h = FNV(h, pool->width);
	h = FNV(h, pool->nr_granules);
	h = FNV(h, pool->nr_retired);
	h = FNV(h, pool->nr_used);
	kvrt_space_stats(pool->space, &st);
	h = FNV(h, st);
	if (s->swap) {
		h = FNV(h, s->swap->nr);
		h = FNV(h, s->swap->next_handle);
		for (uint32_t i = 0; i < s->swap->nr; i++)
			h = FNV(h, s->swap->seq[i].handle);
	}
	return h;
}

/**
 * kvshim_digest() - a digest of everything observable of a space
 * @fd: handle from kvshim_open()
 * @space: a space handle owned by @fd
 * @out: the digest
 *
 * Not part of the uapi: tests and the fuzzer compare digests taken before
 * and after a failed call. Two equal states have equal digests.
 *
 * Return: 0; -EBADF; -ENOENT.
 */
int kvshim_digest(int fd, uint32_t space, uint64_t *out)
{
	struct kvshim_file *f;
	struct kvshim_space *s;
	int ret = 0;

	pthread_mutex_lock(&kvshim_lock);
	f = file_get(fd);
	s = f ? space_find(f, space, NULL) : NULL;
	if (!f)
		ret = -EBADF;
	else if (!s)
		ret = -ENOENT;
	else if (!(ret = kva_pool_snapshot(s->pool)))
		*out = space_digest(s);
	pthread_mutex_unlock(&kvshim_lock);
	return ret;
}

/**
 * kvshim_fault_inject() - make a later step of a space's calls fail
 * @fd: handle from kvshim_open()
 * @space: a space handle owned by @fd
 * @where: KVSHIM_FAULT_RUNTIME: the nth runtime (backend) call of the
 *	space's context (kvrt_fault_inject()); KVSHIM_FAULT_ADMIT: the nth
 *	allocator step of SEQ_ADMIT, after the granules are mapped;
 *	KVSHIM_FAULT_SWAP_EIO, KVSHIM_FAULT_SWAP_SHORT: the nth chunk write
 *	of the next SEQ_SWAP_OUT fails, or is cut short (@err unused)
 * @nth: 1 for the next one; 0 turns injection off
 * @err: positive errno the step fails with
 *
 * Not part of the uapi: for tests and the fuzzer, which check that a call
 * failing that way changes nothing.
 *
 * Return: 0; -EBADF; -ENOENT (also: a swap fault on a space without a
 * swap file); -EINVAL for an unknown @where.
 */
int kvshim_fault_inject(int fd, uint32_t space, unsigned int where,
			uint64_t nth, int err)
{
	struct kvshim_file *f;
	struct kvshim_space *s;
	int ret = 0;

	if (err <= 0)
		err = EIO;
	pthread_mutex_lock(&kvshim_lock);
	f = file_get(fd);
	s = f ? space_find(f, space, NULL) : NULL;
	if (!f) {
		ret = -EBADF;
	} else if (!s) {
		ret = -ENOENT;
	} else if (where == KVSHIM_FAULT_RUNTIME) {
		kvrt_fault_inject(s->ctx, nth, err);
	} else if (where == KVSHIM_FAULT_ADMIT) {
		s->admit_fault = nth;
		s->admit_fault_err = err;
	} else if (where == KVSHIM_FAULT_SWAP_EIO ||
		   where == KVSHIM_FAULT_SWAP_SHORT) {
		if (!s->swap) {
			ret = -ENOENT;
		} else {
			s->swap->fault_nth = nth;
			s->swap->fault_mode = where == KVSHIM_FAULT_SWAP_EIO ?
						      KVRT_SWAP_FAULT_EIO :
						      KVRT_SWAP_FAULT_SHORT;
		}
	} else {
		ret = -EINVAL;
	}
	pthread_mutex_unlock(&kvshim_lock);
	return ret;
}

/*
 * TIER_BUDGET: set the caps (both or neither: the first is put back if the
 * second is refused), then report the tiers as kva_pool_stats() sees them.
 */
static int ioc_tier_budget(struct kvshim_file *f, struct kvmm_tier_budget *a)
{
	const uint32_t known = KVMM_TIER_SET_HBM | KVMM_TIER_SET_HOST;
	struct kvrt_space_stats st;
	struct kvshim_space *s;
	struct kva_stats ks;
	struct kva_pool *pool;
	int ret = 0;

	if ((a->flags & ~known) || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	kvrt_space_stats(pool->space, &st);
	if (a->flags & KVMM_TIER_SET_HBM)
		ret = kva_pool_set_mem_budget(pool, KVA_MEM_HBM, a->hbm_bytes);
	if (!ret && (a->flags & KVMM_TIER_SET_HOST)) {
		ret = kva_pool_set_mem_budget(pool, KVA_MEM_HOST,
					      a->host_bytes);
		if (ret && (a->flags & KVMM_TIER_SET_HBM))
			kva_pool_set_mem_budget(pool, KVA_MEM_HBM,
						st.loc_budget[KVA_MEM_HBM]);
	}
	if (ret)
		return ret;
	if (kva_pool_snapshot(pool))
		return -EIO;
	kvrt_space_stats(pool->space, &st);
	kva_pool_stats(pool, &ks);
	a->hbm_bytes = st.loc_budget[KVA_MEM_HBM];
	a->host_bytes = st.loc_budget[KVA_MEM_HOST];
	for (int m = 0; m < KVA_NR_MEM; m++) {
		a->granules[m] = ks.granules_mem[m];
		a->pages_used[m] = ks.used_mem[m];
		a->pages_free[m] = ks.free_mem[m];
	}
	a->pages_held = ks.nr_held;
	a->pages_copies = ks.nr_shadow;
	return 0;
}

/*
 * MIGRATE with KVMM_MIGRATE_GROW_HOST: room on the host tier for every
 * demotion the call may make (a victim per promotion, and the demote list
 * for the HBM reserve: nr_promote + nr_demote, at most one a page of the
 * byte budget; kva_migrate_room()). @was and @u keep what is needed to
 * give the granules back if the call fails.
 */
static int migrate_room(struct kva_pool *pool, const struct kvmm_migrate *a,
			uint8_t **was, struct compact_undo *u)
{
	uint64_t want = (uint64_t)a->nr_promote + a->nr_demote;
	int ret;

	if (a->byte_budget && want > a->byte_budget / pool->page_size)
		want = a->byte_budget / pool->page_size;
	*was = malloc(pool->nr_gslots);
	if (!*was)
		return -ENOMEM;
	memcpy(*was, pool->gran_mapped, pool->nr_gslots);
	/* a grow with host granules reorders the ring: keep it */
	ret = undo_save(u, pool);
	if (!ret)
		ret = kva_migrate_room(pool, want);
	if (ret < 0) {
		free(*was);
		*was = NULL;
		if (u->ring) {
			struct kva_compact_control none = { 0 };

			undo_apply(u, pool, &none);
		}
		return ret;
	}
	return 0;
}

/* MIGRATE: the lists are copied in once, then kva_migrate() validates */
static int ioc_migrate(struct kvshim_file *f, struct kvmm_migrate *a)
{
	const void *up = user_ptr(a->promote), *ud = user_ptr(a->demote);
	struct kva_migrate_control mc;
	struct compact_undo u = { 0 };
	struct kvshim_space *s;
	struct kva_pool *pool;
	uint32_t *pro = NULL, *dem = NULL;
	uint8_t *was = NULL;
	int ret;

	if ((a->flags & ~(KVMM_MIGRATE_GROW_HOST | KVMM_MIGRATE_KEEP_COPIES)) ||
	    !ZERO(a->reserved))
		return -EINVAL;
	if ((a->nr_promote && !up) || (a->nr_demote && !ud))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	pool = s->pool;
	if (kva_pool_is_device(pool))
		return -EOPNOTSUPP;
	if (a->nr_promote > pool->nr_page_ids ||
	    a->nr_demote > pool->nr_page_ids)
		return -EINVAL;
	pro = malloc((a->nr_promote + 1) * sizeof(*pro));
	dem = malloc((a->nr_demote + 1) * sizeof(*dem));
	if (!pro || !dem) {
		ret = -ENOMEM;
		goto out_free;
	}
	if (a->flags & KVMM_MIGRATE_GROW_HOST) {
		ret = migrate_room(pool, a, &was, &u);
		if (ret)
			goto out_free;
	}
	/* sized after the growth: the new host pages are ids too */
	ret = kva_migrate_init(&mc, pool, a->byte_budget);
	if (ret)
		goto out_ungrow;
	if (a->nr_promote)
		memcpy(pro, up, a->nr_promote * sizeof(*pro));
	if (a->nr_demote)
		memcpy(dem, ud, a->nr_demote * sizeof(*dem));
	mc.hbm_reserve = a->hbm_reserve;
	mc.keep_copies = a->flags & KVMM_MIGRATE_KEEP_COPIES;
	ret = kva_migrate(pool, &mc, pro, a->nr_promote, dem, a->nr_demote);
	if (!ret) {
		a->reason = mc.result == KVA_MIGRATE_BUDGET ?
				    KVMM_MIGRATE_BUDGET :
			    mc.result == KVA_MIGRATE_NO_ROOM ?
				    KVMM_MIGRATE_NO_ROOM :
				    KVMM_MIGRATE_DONE;
		a->pages_promoted = mc.pages_promoted;
		a->pages_demoted = mc.pages_demoted;
		a->bytes_moved = mc.bytes_moved;
	}
	kva_migrate_fini(&mc);
out_ungrow:
	/* a refused call leaves the granules as it found them */
	if (ret && was && !kva_pool_ungrow(pool, was) && u.ring) {
		struct kva_compact_control none = { 0 };

		undo_apply(&u, pool, &none);
	}
out_free:
	undo_fini(&u);
	free(was);
	free(pro);
	free(dem);
	return ret;
}

/* ---- swap to file ---- */

/*
 * SWAP_SETUP: a file made in the caller's directory and unlinked at once,
 * or (dir 0) the space's file closed
 */
static int ioc_swap_setup(struct kvshim_file *f, struct kvmm_swap_setup *a)
{
	const char *udir = user_ptr(a->dir);
	struct kvshim_space *s;
	struct kvshim_swap *w;
	char path[KVMM_SWAP_PATH_MAX + 32];
	size_t len;
	int fd, ret;

	if (a->flags || a->pad || a->direct || !ZERO(a->reserved))
		return -EINVAL;
	if (a->chunk_bytes % KVRT_SWAP_ALIGN || a->chunk_bytes > (64U << 20) ||
	    a->depth > 64)
		return -EINVAL;
	if (udir) {
		len = strnlen(udir, KVMM_SWAP_PATH_MAX);
		if (!len || len == KVMM_SWAP_PATH_MAX)
			return -EINVAL;
	}
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	if (kva_pool_is_device(s->pool))
		return -EOPNOTSUPP;
	if (!udir) {
		if (!s->swap)
			return -ENOENT;
		if (s->swap->nr)
			return -EBUSY;
		swap_close(s);
		return 0;
	}
	if (s->swap)
		return -EBUSY;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/kvmm-swap-XXXXXX", udir);
	fd = mkstemp(path);
	if (fd < 0) {
		ret = -errno;
		free(w);
		return ret;
	}
	close(fd);
	ret = kvrt_swapfile_open(path, a->chunk_bytes, a->depth, &w->sf);
	unlink(path);	/* nothing stays behind: the file lives while open */
	if (ret) {
		free(w);
		return ret;
	}
	s->swap = w;
	a->direct = (uint32_t)kvrt_swapfile_direct(w->sf);
	return 0;
}

static int swapped_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* the lowest file offset with @bytes free between the swapped sequences */
static int swap_room(const struct kvshim_swap *w, uint64_t bytes,
		     uint64_t *off)
{
	uint64_t *r = malloc((w->nr + 1) * 2 * sizeof(*r)), at = 0;

	if (!r)
		return -ENOMEM;
	for (uint32_t i = 0; i < w->nr; i++) {
		r[2 * i] = w->seq[i].rec.off;
		r[2 * i + 1] = w->seq[i].rec.off + w->seq[i].rec.bytes;
	}
	qsort(r, w->nr, 2 * sizeof(*r), swapped_cmp);
	for (uint32_t i = 0; i < w->nr && r[2 * i] - at < bytes; i++)
		at = r[2 * i + 1] > at ? r[2 * i + 1] : at;
	free(r);
	*off = at;
	return 0;
}

static int swap_find(const struct kvshim_swap *w, uint64_t handle)
{
	for (uint32_t i = 0; i < w->nr; i++)
		if (w->seq[i].handle == handle)
			return (int)i;
	return -1;
}

static int swap_args(struct kvshim_file *f, const struct kvmm_seq_swap *a,
		     uint32_t flags, struct kvshim_space **out)
{
	struct kvshim_space *s;

	if ((a->flags & ~flags) || a->pad || !ZERO(a->reserved))
		return -EINVAL;
	s = space_find(f, a->space, NULL);
	if (!s)
		return -ENOENT;
	if (kva_pool_is_device(s->pool))
		return -EOPNOTSUPP;
	if (!s->swap)
		return -ENOENT;
	*out = s;
	return 0;
}

/* SEQ_SWAP_OUT: kva_swap_out() frees the pages only once written */
static int ioc_seq_swap_out(struct kvshim_file *f, struct kvmm_seq_swap *a)
{
	struct kvshim_space *s;
	struct kvshim_swap *w;
	struct kvshim_swapped *n;
	struct kva_swap_rec rec;
	uint64_t off, used;
	int ret;

	ret = swap_args(f, a, 0, &s);
	if (ret)
		return ret;
	w = s->swap;
	if (a->handle || a->bytes || a->pages)
		return -EINVAL;
	if (a->slot >= s->pool->nr_slots)
		return -EINVAL;
	if (w->nr == KVMM_SWAP_MAX_SEQS)
		return -ENOSPC;
	ret = swap_room(w, kva_swap_bytes(s->pool, a->slot), &off);
	if (ret)
		return ret;
	n = realloc(w->seq, (w->nr + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	w->seq = n;
	if (w->fault_nth)
		kvrt_swapfile_fault(w->sf, w->fault_nth, w->fault_mode);
	used = s->pool->nr_used;
	ret = kva_swap_out(s->pool, w->sf, a->slot, off, &rec);
	if (w->fault_nth) {
		kvrt_swapfile_fault(w->sf, 0, 0);
		w->fault_nth = 0;
	}
	if (ret)
		return ret;
	n[w->nr] = (struct kvshim_swapped){ .handle = ++w->next_handle,
					    .rec = rec };
	w->nr++;
	a->handle = w->next_handle;
	a->bytes = rec.bytes;
	a->pages = used - s->pool->nr_used;
	return 0;
}

/*
 * SEQ_SWAP_IN: the space grows for the admission kva_swap_in() makes; on
 * failure the pool's arrays and granules are put back as they were
 */
static int ioc_seq_swap_in(struct kvshim_file *f, struct kvmm_seq_swap *a)
{
	struct kvshim_space *s;
	struct kvshim_swap *w;
	struct kva_pool *pool;
	struct kva_compact_control none = { 0 };
	struct compact_undo u;
	uint64_t need = 0, free_pages, grow = 0, used, bytes;
	uint32_t slot, prompt = 0;
	uint8_t *was = NULL;
	int i, ret;

	ret = swap_args(f, a, KVMM_SWAP_DISCARD, &s);
	if (ret)
		return ret;
	w = s->swap;
	pool = s->pool;
	if (a->slot || a->bytes || a->pages)
		return -EINVAL;
	i = swap_find(w, a->handle);
	if (i < 0)
		return -ENOENT;
	if (a->flags & KVMM_SWAP_DISCARD)
		goto out_forget;
	for (slot = 0; slot < pool->nr_slots; slot++)
		if (pool->slot_state[slot] == KVA_SLOT_FREE)
			break;
	if (slot == pool->nr_slots)
		return -EBUSY;
	for (uint32_t j = 0; j < w->seq[i].rec.lists; j++) {
		uint32_t t = w->seq[i].rec.ntokens[2 * j] +
			     w->seq[i].rec.ntokens[2 * j + 1];

		prompt = t > prompt ? t : prompt;
	}
	need = (uint64_t)kva_admit_pages(pool, prompt) * pool->lists_per_slot;
	free_pages = kva_nr_free(pool);
	ret = undo_save(&u, pool);
	if (ret)
		return ret;
	if (need > free_pages) {
		grow = kvmm_div_round_up(need - free_pages,
					 pool->pages_per_granule);
		ret = grow > kva_pool_room(pool) ? -ENOSPC : 0;
		was = ret ? NULL : malloc(pool->nr_gslots);
		if (!ret && !was)
			ret = -ENOMEM;
		if (ret)
			goto out_undo;
		memcpy(was, pool->gran_mapped, pool->nr_gslots);
		ret = kva_pool_grow_auto(pool, grow);
		if (ret) {
			grow = 0;
			goto out_undo;
		}
	}
	used = pool->nr_used;
	bytes = w->seq[i].rec.bytes;
	ret = kva_swap_in(pool, w->sf, slot, &w->seq[i].rec);
	if (ret) {
		/* the slot is free again: the granules mapped for it go,
		 * then the arrays as they were before (ring order included) */
		if (!grow || !kva_pool_ungrow(pool, was))
			undo_apply(&u, pool, &none);
		goto out_undo;
	}
	undo_fini(&u);
	free(was);
	a->slot = slot;
	a->bytes = bytes;
	a->pages = pool->nr_used - used;
out_forget:
	kva_swap_rec_fini(&w->seq[i].rec);
	w->seq[i] = w->seq[--w->nr];
	return 0;

out_undo:
	undo_fini(&u);
	free(was);
	return ret;
}

/* The commands this build serves: number, whole command, structure size. */
static const struct {
	unsigned long cmd;
	size_t size;
} kvshim_cmds[] = {
	[0x00] = { KVMM_IOC_VERSION, sizeof(struct kvmm_version) },
	[0x01] = { KVMM_IOC_SPACE_CREATE, sizeof(struct kvmm_space_create) },
	[0x02] = { KVMM_IOC_SPACE_DESTROY, sizeof(struct kvmm_space_destroy) },
	[0x03] = { KVMM_IOC_SEQ_ADMIT, sizeof(struct kvmm_seq_admit) },
	[0x04] = { KVMM_IOC_SEQ_RELEASE, sizeof(struct kvmm_seq_release) },
	[0x05] = { KVMM_IOC_SET_BUDGET, sizeof(struct kvmm_set_budget) },
	[0x06] = { KVMM_IOC_COMPACT, sizeof(struct kvmm_compact) },
	[0x07] = { KVMM_IOC_STATS, sizeof(struct kvmm_stats) },
	[0x08] = { KVMM_IOC_PAGE_TABLE_INFO,
		   sizeof(struct kvmm_page_table_info) },
	[0x09] = { KVMM_IOC_SPACE_MAP, sizeof(struct kvmm_space_map) },
	[0x0a] = { KVMM_IOC_STEP_SUBMIT, sizeof(struct kvmm_step_submit) },
	[0x0b] = { KVMM_IOC_FENCE, sizeof(struct kvmm_fence) },
	[0x0c] = { KVMM_IOC_SEQ_STATS, sizeof(struct kvmm_seq_stats) },
	[0x10] = { KVMM_IOC_TIER_BUDGET, sizeof(struct kvmm_tier_budget) },
	[0x11] = { KVMM_IOC_MIGRATE, sizeof(struct kvmm_migrate) },
	[0x12] = { KVMM_IOC_SWAP_SETUP, sizeof(struct kvmm_swap_setup) },
	[0x13] = { KVMM_IOC_SEQ_SWAP_OUT, sizeof(struct kvmm_seq_swap) },
	[0x14] = { KVMM_IOC_SEQ_SWAP_IN, sizeof(struct kvmm_seq_swap) },
};

static int cmd_valid(unsigned long cmd)
{
	unsigned int nr = _IOC_NR(cmd);

	if (_IOC_TYPE(cmd) != KVMMIO || nr >= ARRAY_SIZE(kvshim_cmds) ||
	    !kvshim_cmds[nr].cmd)
		return -ENOTTY;
	if (_IOC_DIR(cmd) != _IOC_DIR(kvshim_cmds[nr].cmd))
		return -ENOTTY;
	if (_IOC_SIZE(cmd) != kvshim_cmds[nr].size)
		return -EINVAL;
	if (cmd != kvshim_cmds[nr].cmd)	/* bits beyond the four fields */
		return -ENOTTY;
	return 0;
}

/**
 * kvshim_ioctl() - the one entry point of the kvmm uapi
 * @fd: handle from kvshim_open()
 * @cmd: KVMM_IOC_*
 * @arg: the command's structure
 *
 * Validates the handle, the command and every field before it touches any
 * state; see Documentation/uapi/kvmm.rst for each command.
 *
 * Return: 0; -EBADF for a handle that is not open; -EFAULT for a NULL
 * @arg; -ENOTTY for a command with another magic, an unknown number or the
 * wrong direction; -EINVAL for a size this build does not know, a non-zero
 * pad, reserved word or flag, or a value out of range; -ENOENT for a space
 * this handle does not own; the command's own errors. Nothing changes on
 * failure.
 */
int kvshim_ioctl(int fd, unsigned long cmd, void *arg)
{
	union {
		struct kvmm_version version;
		struct kvmm_space_create space_create;
		struct kvmm_space_destroy space_destroy;
		struct kvmm_seq_admit seq_admit;
		struct kvmm_seq_release seq_release;
		struct kvmm_set_budget set_budget;
		struct kvmm_compact compact;
		struct kvmm_stats stats;
		struct kvmm_page_table_info page_table_info;
		struct kvmm_space_map space_map;
		struct kvmm_step_submit step_submit;
		struct kvmm_fence fence;
		struct kvmm_seq_stats seq_stats;
		struct kvmm_tier_budget tier_budget;
		struct kvmm_migrate migrate;
		struct kvmm_swap_setup swap_setup;
		struct kvmm_seq_swap seq_swap;
	} k;
	struct kvshim_file *f;
	size_t size = _IOC_SIZE(cmd);
	int ret;

	pthread_mutex_lock(&kvshim_lock);
	f = file_get(fd);
	if (!f) {
		ret = -EBADF;
		goto out_unlock;
	}
	ret = cmd_valid(cmd);
	if (ret)
		goto out_unlock;
	if (!arg) {
		ret = -EFAULT;
		goto out_unlock;
	}
	/*
	 * As a kernel driver would: copy the argument in (it may be
	 * unaligned, and is read once), work on the copy, copy results out
	 * only on success and only for commands that return any.
	 */
	memcpy(&k, arg, size);
	switch (cmd) {
	case KVMM_IOC_VERSION:
		ret = ioc_version(&k.version);
		break;
	case KVMM_IOC_SPACE_CREATE:
		ret = ioc_space_create(f, &k.space_create);
		break;
	case KVMM_IOC_SPACE_DESTROY:
		ret = ioc_space_destroy(f, &k.space_destroy);
		break;
	case KVMM_IOC_SEQ_ADMIT:
		ret = ioc_seq_admit(f, &k.seq_admit);
		break;
	case KVMM_IOC_SEQ_RELEASE:
		ret = ioc_seq_release(f, &k.seq_release);
		break;
	case KVMM_IOC_SET_BUDGET:
		ret = ioc_set_budget(f, &k.set_budget);
		break;
	case KVMM_IOC_COMPACT:
		ret = ioc_compact(f, &k.compact);
		break;
	case KVMM_IOC_STATS:
		ret = ioc_stats(f, &k.stats);
		break;
	case KVMM_IOC_PAGE_TABLE_INFO:
		ret = ioc_page_table_info(f, &k.page_table_info);
		break;
	case KVMM_IOC_SPACE_MAP:
		ret = ioc_space_map(f, &k.space_map);
		break;
	case KVMM_IOC_STEP_SUBMIT:
		ret = ioc_step_submit(f, &k.step_submit);
		break;
	case KVMM_IOC_FENCE:
		ret = ioc_fence(f, &k.fence);
		break;
	case KVMM_IOC_SEQ_STATS:
		ret = ioc_seq_stats(f, &k.seq_stats);
		break;
	case KVMM_IOC_TIER_BUDGET:
		ret = ioc_tier_budget(f, &k.tier_budget);
		break;
	case KVMM_IOC_MIGRATE:
		ret = ioc_migrate(f, &k.migrate);
		break;
	case KVMM_IOC_SWAP_SETUP:
		ret = ioc_swap_setup(f, &k.swap_setup);
		break;
	case KVMM_IOC_SEQ_SWAP_OUT:
		ret = ioc_seq_swap_out(f, &k.seq_swap);
		break;
	case KVMM_IOC_SEQ_SWAP_IN:
		ret = ioc_seq_swap_in(f, &k.seq_swap);
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	if (!ret && (_IOC_DIR(cmd) & _IOC_READ))
		memcpy(arg, &k, size);
out_unlock:
	pthread_mutex_unlock(&kvshim_lock);
	return ret;
}
