/* SPDX-License-Identifier: MIT */
/*
 * kva.h - the kvmm allocator: a unified pool of fixed-size KV pages carved
 * from 2 MiB runtime granules, per (sequence slot, layer, kv-head) page
 * tables with two tiers, a free ring of page ids, batched operations over
 * thousands of lists (count -> exclusive scan -> scatter) and physical
 * compaction that hands whole granules back to the runtime.
 *
 * Every function returns 0 or a negative errno; a call that fails changes
 * nothing. See Documentation/allocator/index.rst.
 */
#ifndef KVA_H
#define KVA_H

#include <stddef.h>
#include <stdint.h>

#include "kvmm_base.h"
#include "kvrt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tier indices inside one page table. */
#define KVA_HI 0		/* high precision: grows from the left */
#define KVA_LO 1		/* low precision: grows from the right */
#define KVA_NR_TIERS 2

/* Most tier configurations one page size is computed over. */
#define KVA_TIERS_MAX 8

/* kbits/vbits value that means fp16 without quantization metadata. */
#define KVA_BITS_FP16 16

/* DiffKV's page-size search window and step (bytes). */
#define KVA_PAGE_MIN 800
#define KVA_PAGE_MAX 8000
#define KVA_PAGE_STEP 32

/* Alignment of every page segment and of the K part and page (bytes). */
#define KVA_SEG_ALIGN 32
#define KVA_PAGE_ALIGN 128

/* Values are stored in token pairs: the V token count is padded to this. */
#define KVA_V_TOKEN_PAD 2

/* Table entry of a page that is not there; rmap value of a free page. */
#define KVA_PAGE_NONE UINT32_MAX
#define KVA_OWNER_FREE (UINT32_MAX - 1)
#define KVA_OWNER_UNMAPPED UINT32_MAX
/*
 * rmap value of a page migration moved away from while readers may still
 * read it: neither free nor owned until kva_migrate_reclaim() finds their
 * fences complete (allocator/migrate.c).
 */
#define KVA_OWNER_HELD (UINT32_MAX - 2)
/*
 * rmap value of a host page that holds a clean copy of an HBM page (its
 * @page_pos is that page's id): migration keeps it when it promotes a
 * full page, or makes it (kva_migrate_copy_out()), so that the page can
 * later be demoted without a copy (allocator/migrate.c).
 */
#define KVA_OWNER_SHADOW (UINT32_MAX - 3)

/* an rmap value that names a list */
static inline int kva_owned(uint32_t owner)
{
	return owner < KVA_OWNER_SHADOW;
}

/*
 * Memory tiers: where a page's granule lives. Every page has one, that of
 * its granule; the values are the runtime's locations.
 */
#define KVA_MEM_HBM KVRT_LOC_DEVICE	/* device memory */
#define KVA_MEM_HOST KVRT_LOC_HOST_NUMA	/* host memory, over PCIe */
#define KVA_NR_MEM 2

/**
 * struct kva_tier - one precision configuration of a page
 * @kbits: key bits per element: 16 (fp16, no metadata), 8, 4, 2 or 1
 * @vbits: value bits per element, same choices
 * @kgroups: key quantization groups per head (1, 2 or 4), each with an fp16
 *	scale and zero point
 * @vgroups: value quantization groups per head (1, 2 or 4)
 *
 * Plain value, copied by whoever uses it.
 */
struct kva_tier {
	uint8_t kbits;
	uint8_t vbits;
	uint8_t kgroups;
	uint8_t vgroups;
};

/**
 * struct kva_layout - where each segment of one page lives, for one tier
 *
 * Computed by kva_page_layout() only. Offsets are from the start of the
 * page, every one a multiple of KVA_SEG_ALIGN (so 16-byte loads are
 * aligned). Plain value, owned by its holder.
 */
struct kva_layout {
	uint32_t page_size;	/* bytes */
	uint32_t tokens;	/* tokens per page */
	uint32_t k_off;		/* K data, [tokens][head_dim*kbits/8] bytes */
	uint32_t km_off;	/* K metadata, fp16 scale+zero per group */
	uint32_t v_off;		/* V data, token count padded to 2 */
	uint32_t vm_off;	/* V metadata */
	uint32_t score_off;	/* fp32 per token */
	uint32_t pos_off;	/* int32 per token */
	uint32_t used;		/* bytes up to the end of the last segment */
};

int kva_tier_valid(const struct kva_tier *tier);
uint32_t kva_tier_token_bytes(uint32_t head_dim, const struct kva_tier *tier);
int kva_page_size(uint32_t head_dim, const struct kva_tier *tiers,
		  uint32_t n);
int kva_page_layout(uint32_t head_dim, uint32_t page_size,
		    const struct kva_tier *tier, struct kva_layout *out);

/* the kernels' view of one tier (kernels/kvattn.h); callers include it */
struct kvk_attn_tier;
struct kvk_attn_tier kva_attn_tier(const struct kva_tier *t,
				   const struct kva_layout *l);

/* Granule slot states. */
enum kva_gran_state {
	KVA_GRAN_UNMAPPED = 0,	/* no memory, pages nowhere */
	KVA_GRAN_MAPPED = 1,	/* pages free or owned */
	KVA_GRAN_RETIRED = 2,	/* emptied by compaction, awaiting shrink */
};

/* Sequence slot states. */
enum kva_slot_state {
	KVA_SLOT_FREE = 0,	/* no pages */
	KVA_SLOT_PREFILL = 1,	/* admitted: pages reserved, not trimmed */
	KVA_SLOT_DECODE = 2,	/* trimmed: both tiers in place */
};

/**
 * struct kva_pool_params - how to build a pool
 * @ctx: runtime context the pool's space is created in
 * @va_bytes: size of the VA reservation (multiple of 2 MiB)
 * @budget_bytes: most physical memory the pool may map (multiple of 2 MiB)
 * @head_dim: 64, 80, 96, 128 or 256
 * @tiers: the configurations the page size must serve; tiers[0] is the high
 *	tier, tiers[1] (or tiers[0] when @nr_tiers is 1) the low tier
 * @nr_tiers: 1..KVA_TIERS_MAX
 * @nr_slots: sequence slots
 * @nr_layers: layers
 * @nr_heads: kv-heads per layer
 * @max_tokens: most tokens one sequence may hold (bounds the table width,
 *	with the budget: see struct kva_pool @width)
 * @wmark_low: free pages below which kva_pool_balance() grows
 * @wmark_high: free pages kva_pool_balance() grows up to
 * @flags: KVA_POOL_* (0: a host pool, whatever the context)
 */
struct kva_pool_params {
	struct kvrt_ctx *ctx;
	uint64_t va_bytes;
	uint64_t budget_bytes;
	uint32_t head_dim;
	struct kva_tier tiers[KVA_TIERS_MAX];
	uint32_t nr_tiers;
	uint32_t nr_slots;
	uint32_t nr_layers;
	uint32_t nr_heads;
	uint32_t max_tokens;
	uint32_t wmark_low;
	uint32_t wmark_high;
	uint32_t flags;
};

/*
 * kva_pool_params.flags: KVA_POOL_DEVICE makes the pool device-resident
 * (a CUDA context only). Opt-in: callers that read the pool's arrays
 * directly (model/exec/forward_cuda.c, ioctl-shim) must kva_pool_sync() first.
 */
#define KVA_POOL_DEVICE BIT(0)
#define KVA_POOL_FLAGS KVA_POOL_DEVICE

struct kva_dev;

/**
 * struct kva_pool - one KV page pool
 *
 * Owned by its creator. Nothing inside locks: the caller serialises every
 * call on one pool (the control plane holds one mutex; the data plane runs
 * the batched ops in stream order). The arrays below are the state a device
 * port keeps in device memory; they are plain arrays indexed by page id,
 * list id or slot, so that each batched phase is a loop that becomes a
 * kernel. A list is one (slot, layer, kv-head):
 * list = (slot * nr_layers + layer) * nr_heads + head.
 *
 * Page ids: page p lives in granule slot p / pages_per_granule of the space,
 * at byte (p % pages_per_granule) * page_size; pages never straddle
 * granules.
 *
 * Free ring: ring[head % ring_cap .. tail % ring_cap) holds exactly the free
 * page ids, one contiguous interval; allocation takes from head, freeing
 * puts at tail. head and tail only grow.
 *
 * Capacity: memory follows the budget, not the reservation. The per-page
 * arrays cover the granule slots of the largest budget so far
 * (@nr_gslots, grown by kva_pool_set_budget(), never shrunk): the runtime
 * maps the lowest free slots and never more granules than the budget, so
 * no mapped slot is at or past it. A list holds at most every page of the
 * budget, so a row is @width = min(@max_width, @nr_page_ids + 3) entries,
 * also grown with the budget (which moves the tables: see
 * kva_pool_set_budget()). What a pool costs is kva_pool_cost().
 */
struct kva_pool {
	/* geometry, fixed at create */
	uint32_t head_dim;
	uint32_t page_size;		/* bytes */
	uint32_t pages_per_granule;
	uint32_t nr_tiers;
	struct kva_tier tiers[KVA_TIERS_MAX];
	struct kva_layout layout[KVA_NR_TIERS]; /* [KVA_HI], [KVA_LO] */
	uint32_t nr_slots;
	uint32_t nr_layers;
	uint32_t nr_heads;
	uint32_t lists_per_slot;	/* nr_layers * nr_heads */
	uint32_t nr_lists;		/* nr_slots * lists_per_slot */
	uint32_t width;			/* table entries per list: min of
					 * max_width and nr_page_ids + 3 */
	uint32_t max_width;		/* entries max_tokens needs */
	uint32_t max_tokens;		/* per sequence */

	/* physical memory */
	struct kvrt_ctx *ctx;
	struct kvrt_space *space;
	uint64_t base;			/* address of granule slot 0 */
	uint32_t va_gslots;		/* granule slots in the reservation */
	uint32_t nr_gslots;		/* granule slots the arrays cover:
					 * the largest budget so far, at
					 * most va_gslots */
	uint32_t nr_granules;		/* granules in use (KVA_GRAN_MAPPED) */
	uint32_t nr_retired;		/* retired, waiting to be shrunk */
	uint32_t nr_page_ids;		/* nr_gslots * pages_per_granule: the
					 * per-page arrays' length */
	uint8_t *gran_mapped;		/* [nr_gslots] enum kva_gran_state */
	uint8_t *gran_mem;		/* [nr_gslots] KVA_MEM_* of a mapped
					 * or retired granule */
	uint32_t nr_gran_mem[KVA_NR_MEM]; /* KVA_GRAN_MAPPED granules per
					 * memory tier */

	/* free ring */
	uint32_t *ring;			/* [nr_page_ids] page ids */
	uint64_t head;			/* first free entry (monotonic) */
	uint64_t tail;			/* one past the last (monotonic) */

	/* reverse map */
	uint32_t *page_list;		/* [nr_page_ids] owner list, or
					 * KVA_OWNER_FREE / _UNMAPPED */
	uint32_t *page_pos;		/* [nr_page_ids] table index */

	/* page tables */
	uint32_t *table;		/* [nr_lists][width] page ids */
	uint32_t *npages;		/* [nr_lists][2] pages per tier */
	uint32_t *ntokens;		/* [nr_lists][2] tokens per tier */
	uint8_t *slot_state;		/* [nr_slots] enum kva_slot_state */

	/* scratch of the batched ops, no state between calls */
	uint32_t *cnt;			/* [nr_lists] per-list counts */
	uint64_t *off;			/* [nr_lists + 1] exclusive scan */
	uint32_t *mark;			/* [nr_slots] duplicate detection */
	uint32_t mark_gen;
	uint32_t *scratch;		/* [nr_page_ids] */

	int32_t err;			/* result of the last view op */

	/* accounting (pages) */
	uint64_t nr_used;		/* owned by some list */
	uint32_t wmark_low;
	uint32_t wmark_high;

	/*
	 * Device residency (see "Device pool" in the allocator doc). NULL
	 * @dev: a host pool, the arrays above are the state. Otherwise the
	 * state lives in device memory and the arrays above are a snapshot,
	 * exact after kva_pool_sync(); slot_state, gran_mapped and the
	 * control counters stay host state.
	 */
	struct kva_dev *dev;
	uint64_t free_lb;		/* free pages, never over the truth */
	uint32_t *resv;			/* [nr_slots] admitted pages */
	uint64_t fence_last;		/* last kva_pool_fence() seqno */

	/*
	 * Migration's held pages (migrate.c): moved away from, kept out of
	 * the ring until the fences recorded on the reader streams at the
	 * move complete. @held has @held_cap entries.
	 */
	uint32_t *held;
	uint32_t nr_held;
	uint32_t held_cap;
	struct kvrt_stream *held_stream[KVRT_MAX_STREAMS];
	struct kvrt_fence *held_fence[KVRT_MAX_STREAMS];

	/*
	 * Clean host copies (migrate.c): @shadow[p] is the host page holding
	 * an exact copy of HBM page p, or KVA_PAGE_NONE; @nr_shadow of them.
	 * Made by migration only, for full high-tier pages; every other
	 * operation that could write or free a page drops the copies it
	 * concerns first (kva_shadow_drop*()). @shadow covers @shadow_ids page ids (0: not
	 * allocated; resized while none is held).
	 */
	uint32_t *shadow;
	uint32_t shadow_ids;
	uint32_t nr_shadow;
};

/**
 * struct kva_fence_state - what kva_pool_fence_state() reports
 * @completed: the latest fence seqno whose work has completed
 * @pages_free: free pages as of @completed
 * @pages_used: pages owned by lists as of @completed
 * @error: the first refusal the device made since the last report, or 0
 */
struct kva_fence_state {
	uint64_t completed;
	uint64_t pages_free;
	uint64_t pages_used;
	int32_t error;
};

/**
 * struct kva_stats - a snapshot of one pool
 */
struct kva_stats {
	uint64_t page_size;	/* bytes */
	uint64_t nr_granules;	/* mapped */
	uint64_t nr_pages;	/* pages in mapped granules */
	uint64_t nr_free;	/* pages in the free ring */
	uint64_t nr_used;	/* pages owned by lists */
	uint64_t tail_bytes;	/* bytes per granule no page can use */
	uint64_t partial_granules; /* granules with free and used pages */
	uint64_t empty_granules; /* mapped granules with no used page */
	/* per memory tier (KVA_MEM_*) */
	uint64_t granules_mem[KVA_NR_MEM];
	uint64_t free_mem[KVA_NR_MEM];	/* pages in the free ring */
	uint64_t used_mem[KVA_NR_MEM];	/* pages owned by lists */
	uint64_t nr_held;		/* pages held by migration */
	uint64_t nr_shadow;		/* host pages holding clean copies */
};

#ifdef __CUDACC__
#define KVA_HOST_DEVICE __host__ __device__
#else
#define KVA_HOST_DEVICE
#endif

/*
 * kva_worst_pages() - most pages a list of @prompt tokens can need when the
 * prompt splits into h high tokens (@a per page) and l low ones (@b per
 * page): the max over h + l = prompt of ceil(h / a) + ceil(l / b). With
 * b >= a the max has l <= b (moving b tokens from low to high adds at least
 * one high page and removes one low page); the function is symmetric, so
 * the larger of a and b bounds the loop. Shared by the host and the device.
 */
static inline KVA_HOST_DEVICE uint32_t kva_worst_pages(uint32_t a, uint32_t b,
						       uint32_t prompt)
{
	uint32_t big = a > b ? a : b, best = 0;
	uint32_t lmax = prompt < big ? prompt : big;

	for (uint32_t l = 0; l <= lmax; l++) {
		uint32_t h = prompt - l, p;

		if (big == b)
			p = (h + a - 1) / a + (l + b - 1) / b;
		else
			p = (l + a - 1) / a + (h + b - 1) / b;
		if (p > best)
			best = p;
	}
	return best;
}

static inline uint64_t kva_page_addr(const struct kva_pool *pool, uint32_t p)
{
	return pool->base +
	       (uint64_t)(p / pool->pages_per_granule) * KVRT_GRANULE_SIZE +
	       (uint64_t)(p % pool->pages_per_granule) * pool->page_size;
}

/* the memory tier of page @p (of a mapped or retired granule) */
static inline uint32_t kva_page_mem(const struct kva_pool *pool, uint32_t p)
{
	return pool->gran_mem[p / pool->pages_per_granule];
}

static inline uint32_t kva_list(const struct kva_pool *pool, uint32_t slot,
				uint32_t layer, uint32_t head)
{
	return (slot * pool->nr_layers + layer) * pool->nr_heads + head;
}

/* Free pages: exact on a host pool, a lower bound on a device pool (exact
 * right after kva_pool_sync()). */
static inline uint64_t kva_nr_free(const struct kva_pool *pool)
{
	return pool->dev ? pool->free_lb : pool->tail - pool->head;
}

/**
 * struct kva_pool_cost - the memory a pool holds apart from its granules
 * @host_bytes: host memory: the pool's arrays and the runtime's per-slot
 *	state (a device pool's pinned staging buffers included)
 * @dev_bytes: device memory of a device-resident pool's arrays (0 for a
 *	host pool)
 * @gslots: granule slots the per-page arrays cover
 * @width: table entries per list
 *
 * Computed by kva_pool_cost(); Documentation/allocator/index.rst gives the
 * formula.
 */
struct kva_pool_cost {
	uint64_t host_bytes;
	uint64_t dev_bytes;
	uint32_t gslots;
	uint32_t width;
};

/* pool lifecycle and accounting (pool.c) */
int kva_pool_cost(const struct kva_pool_params *params,
		  struct kva_pool_cost *out);
int kva_pool_budget_cost(const struct kva_pool *pool, uint64_t budget_bytes,
			 struct kva_pool_cost *out);
int kva_pool_create(const struct kva_pool_params *params,
		    struct kva_pool **out);
int kva_pool_destroy(struct kva_pool *pool);
int kva_pool_grow(struct kva_pool *pool, uint32_t n);
int kva_pool_grow_mem(struct kva_pool *pool, uint32_t n, uint32_t mem);
int kva_pool_grow_auto(struct kva_pool *pool, uint32_t n);
int kva_pool_ungrow(struct kva_pool *pool, const uint8_t *was);
uint32_t kva_pool_room(const struct kva_pool *pool);
int kva_pool_set_mem_budget(struct kva_pool *pool, uint32_t mem,
			    uint64_t bytes);
void kva_pool_ring_prefer(struct kva_pool *pool, uint32_t mem);
int kva_pool_balance(struct kva_pool *pool);
int kva_pool_need_compact(const struct kva_pool *pool);
int kva_pool_set_budget(struct kva_pool *pool, uint64_t budget_bytes);
void kva_pool_stats(const struct kva_pool *pool, struct kva_stats *out);
uint32_t kva_admit_pages(const struct kva_pool *pool, uint32_t prompt);
int kva_can_admit(const struct kva_pool *pool, const uint32_t *prompt,
		  uint32_t n);

/* device pool (device.c) */
int kva_pool_is_device(const struct kva_pool *pool);
int kva_pool_sync(struct kva_pool *pool);
int kva_pool_snapshot(struct kva_pool *pool);
void *kva_pool_stream(const struct kva_pool *pool);
int kva_pool_bind_stream(struct kva_pool *pool, void *stream);
int kva_pool_fence(struct kva_pool *pool, uint64_t seqno);
int kva_pool_fence_state(struct kva_pool *pool, uint64_t seqno, int wait,
			 struct kva_fence_state *out);
struct kva_view;
int kva_pool_device_view(const struct kva_pool *pool, struct kva_view *v);

/**
 * struct kva_view - the arrays one batched data-plane op reads and writes
 *
 * Points either into a struct kva_pool (host memory, CPU reference) or at a
 * device mirror of the same arrays; every pointer of one view is on the
 * same side. Built by the owner of the memory; the op it is passed to owns
 * it for the duration of the call (CPU) or until the stream reaches the end
 * of the op (CUDA). The ops here do no slot-state validation: the control
 * plane validates slot lists before it enqueues them.
 */
struct kva_view {
	uint32_t width;			/* table entries per list */
	uint32_t lists_per_slot;
	uint32_t ring_cap;		/* ring entries */
	uint32_t tpp[KVA_NR_TIERS];	/* tokens per page, per tier */
	uint32_t lo_grows;		/* 0 for a one-tier pool */
	uint32_t *ring;			/* [ring_cap] */
	uint64_t *head;			/* ring head (monotonic) */
	uint64_t *tail;			/* ring tail (monotonic) */
	uint32_t *page_list;		/* [pages] reverse map: list */
	uint32_t *page_pos;		/* [pages] reverse map: entry */
	uint32_t *table;		/* [lists][width] */
	uint32_t *npages;		/* [lists][2] */
	uint32_t *ntokens;		/* [lists][2] */
	uint32_t *cnt;			/* [batch lists] scratch */
	uint64_t *off;			/* [batch lists + 1] scratch */
	int32_t *err;			/* result: 0 or -errno */
};

void kva_pool_view(struct kva_pool *pool, struct kva_view *v);
int kva_admit_cpu(const struct kva_view *v, const uint32_t *slots,
		  const uint32_t *prompt, uint32_t n, void *stream);
int kva_trim_cpu(const struct kva_view *v, const uint32_t *slots, uint32_t n,
		 const uint32_t *hi_tokens, const uint32_t *lo_tokens,
		 void *stream);
int kva_append_cpu(const struct kva_view *v, const uint32_t *slots,
		   uint32_t n, void *stream);
int kva_free_cpu(const struct kva_view *v, const uint32_t *slots,
		 uint32_t n, void *stream);
int kva_copy_pages_cpu(uint64_t base, uint32_t page_size, uint32_t ppg,
		       const uint32_t *src, const uint32_t *dst, uint32_t n,
		       void *stream);
int kva_rewrite_cpu(const struct kva_view *v, const uint32_t *src,
		    const uint32_t *dst, uint32_t n, void *stream);
int kva_err_latch_cpu(const int32_t *err, int32_t *sticky, void *stream);
int kva_gather_tokens_cpu(const struct kva_view *v, const uint32_t *slots,
			  uint32_t n, uint32_t *hi, uint32_t *lo, void *stream);
int kva_grow_cpu(const struct kva_view *v, const uint32_t *gran, uint32_t n,
		 uint32_t ppg, void *stream);
int kva_evict_quota_cpu(const struct kva_view *v, const uint32_t *slots,
			const uint32_t *keep, uint32_t n, uint32_t *quota,
			uint32_t *list_base, void *stream);
#ifdef KVMM_HAVE_CUDA
int kva_gather_tokens_cuda(const struct kva_view *v, const uint32_t *slots,
			   uint32_t n, uint32_t *hi, uint32_t *lo,
			   void *stream);
int kva_grow_cuda(const struct kva_view *v, const uint32_t *gran, uint32_t n,
		  uint32_t ppg, void *stream);
int kva_evict_quota_cuda(const struct kva_view *v, const uint32_t *slots,
			 const uint32_t *keep, uint32_t n, uint32_t *quota,
			 uint32_t *list_base, void *stream);
int kva_shrink_cuda(const struct kva_view *v, const uint32_t *slots,
		    uint32_t n, void *stream);
int kva_err_latch_cuda(const int32_t *err, int32_t *sticky, void *stream);
int kva_copy_pages_cuda(uint64_t base, uint32_t page_size, uint32_t ppg,
			const uint32_t *src, const uint32_t *dst, uint32_t n,
			void *stream);
int kva_rewrite_cuda(const struct kva_view *v, const uint32_t *src,
		     const uint32_t *dst, uint32_t n, void *stream);
int kva_admit_cuda(const struct kva_view *v, const uint32_t *slots,
		   const uint32_t *prompt, uint32_t n, void *stream);
int kva_trim_cuda(const struct kva_view *v, const uint32_t *slots, uint32_t n,
		  const uint32_t *hi_tokens, const uint32_t *lo_tokens,
		  void *stream);
int kva_append_cuda(const struct kva_view *v, const uint32_t *slots,
		    uint32_t n, void *stream);
int kva_free_cuda(const struct kva_view *v, const uint32_t *slots,
		  uint32_t n, void *stream);
#endif

/* batched operations (ops.c) */
int kva_admit(struct kva_pool *pool, const uint32_t *slots,
	      const uint32_t *prompt, uint32_t n);
int kva_trim(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
	     const uint32_t *hi_tokens, const uint32_t *lo_tokens);
int kva_append(struct kva_pool *pool, const uint32_t *slots, uint32_t n);
int kva_free(struct kva_pool *pool, const uint32_t *slots, uint32_t n);
int kva_set_tokens(struct kva_pool *pool, uint32_t list, uint32_t hi,
		   uint32_t lo);
int kva_shrink_cpu(const struct kva_view *v, const uint32_t *slots,
		   uint32_t n, void *stream);
int kva_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n);

/* eviction (evict.c) */
struct kvk_evict_args;
int kva_evict_args(const struct kva_pool *pool, struct kvk_evict_args *a);
int kva_evict(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
	      const uint32_t *keep, const int32_t *protect_from,
	      uint32_t sinks);
uint64_t kva_scan(const uint32_t *cnt, uint64_t *off, uint32_t n);

/* invariants (check.c) */
int kva_check(const struct kva_pool *pool, char *why, size_t len);

/* physical compaction (compact.c) */

/* Why kva_compact() stopped; see the comment above kva_compact_control. */
enum kva_compact_result {
	KVA_COMPACT_CONTINUE = 0,	/* not finished */
	KVA_COMPACT_COMPLETE,		/* no granule can be emptied */
	KVA_COMPACT_CURSORS_MET,	/* migrate and free cursors met */
	KVA_COMPACT_NO_ROOM,		/* free side cannot take next granule */
	KVA_COMPACT_BUDGET,		/* byte budget of this call spent */
};

/**
 * struct kva_compact_control - one physical compaction pass
 *
 * Owned by the caller of kva_compact(), used by one pool under the pool's
 * serialisation; nothing in it survives between calls except the counters
 * (the order is recomputed every call, so sequences may allocate and free
 * between two increments).
 *
 * Mapped granules are sorted by used pages, ascending. The migrate cursor
 * walks from the least occupied end and empties granules; the free cursor
 * walks from the fullest end and fills their holes. A granule is migrated
 * only when the holes strictly on the free side of it can take all its
 * used pages, so every granule the migrate cursor passes ends empty. Empty
 * granules sort first and need no free side: they are released whatever
 * the free cursor's position.
 *
 * Termination: each migrated page goes from a granule at migrate position
 * m to one at a position > m, and the free cursor only moves towards the
 * migrate cursor. The pass stops when the cursors meet (no granule is on
 * both sides), when the holes beyond the migrate cursor are fewer than the
 * used pages of the granule under it (every granule further on holds at
 * least as many used pages and has fewer holes beyond it, so none of them
 * can be emptied either), or when the byte budget is spent (a granule left
 * half migrated is the least occupied one next call). Each page moves at
 * most once per call, so a call does at most nr_used moves and always
 * ends.
 */
struct kva_compact_control {
	/* in */
	uint64_t budget_bytes;		/* most bytes copied in this call */
	struct kvrt_stream **streams;	/* streams that read the tables */
	uint32_t nr_streams;

	/* cursors, positions in order[] */
	uint32_t *order;		/* [nr_gslots] granules by use */
	uint32_t nr_order;		/* mapped granules */
	uint32_t migrate_pos;		/* next granule to empty */
	uint32_t free_pos;		/* fullest granule with holes */
	uint32_t *used;			/* [nr_gslots] used pages */

	/* isolated pages of this call: src[i] moves to dst[i] */
	uint32_t *src;			/* [nr_page_ids] */
	uint32_t *dst;			/* [nr_page_ids] */
	uint32_t nr_moves;
	uint32_t *release;		/* [nr_gslots] granules to give back */
	uint32_t nr_release;
	uint64_t avail;			/* holes beyond migrate_pos (pages) */
	uint64_t call_bytes;		/* bytes planned in this call */
	uint32_t *flag;			/* [nr_page_ids] ring filter flags */
	uint64_t *roff;			/* [nr_page_ids + 1] ring filter scan */
	uint32_t nr_ids;		/* page ids the arrays above cover */

	/* out, accumulated over calls */
	uint64_t bytes_moved;		/* bytes */
	uint64_t pages_moved;
	uint64_t granules_released;
	enum kva_compact_result result;	/* of the last call */
	double copy_us;			/* page copy of the last call; on a
					 * device pool set by
					 * kva_compact_timing() */
};

int kva_compact_init(struct kva_compact_control *cc,
		     const struct kva_pool *pool, uint64_t budget_bytes);
void kva_compact_fini(struct kva_compact_control *cc);
int kva_compact(struct kva_pool *pool, struct kva_compact_control *cc);
enum kva_compact_result
kva_compact_finished(const struct kva_pool *pool,
		     const struct kva_compact_control *cc);
const char *kva_compact_reason(enum kva_compact_result r);
int kva_compact_release(struct kva_pool *pool, unsigned int flags);
int kva_compact_timing(struct kva_pool *pool, struct kva_compact_control *cc);

/* migration between memory tiers (migrate.c) */

/* Why kva_migrate() stopped. */
enum kva_migrate_result {
	KVA_MIGRATE_DONE = 0,		/* every request served */
	KVA_MIGRATE_BUDGET,		/* byte budget of this call spent */
	KVA_MIGRATE_NO_ROOM,		/* no HBM page to take, or no host
					 * page for a victim */
};

/**
 * struct kva_migrate_control - batched page moves between memory tiers
 *
 * Owned by the caller of kva_migrate(), used by one pool under the pool's
 * serialisation, like struct kva_compact_control (its model). The plan
 * arrays hold one call's moves; the counters accumulate over calls.
 *
 * A call serves promotions (host pages wanted in HBM, most wanted first)
 * with free HBM pages while there are any, then by demoting victims (HBM
 * pages, coldest first) to free host pages and giving their HBM page to
 * the promoted one; then it demotes further victims while fewer than
 * @hbm_reserve HBM pages are free. It stops when the byte budget would be
 * passed (each copy counts a page), or when HBM or host room runs out.
 * Each page moves at most once per call; demotions are copied before the
 * promotions that take their pages, and every table and reverse-map entry
 * of the batch is rewritten in one pass (kvk_migrate_rewrite_cpu()).
 */
struct kva_migrate_control {
	/* in */
	uint64_t budget_bytes;		/* most page bytes copied per call */
	uint32_t hbm_reserve;		/* free HBM pages to keep (pages) */
	bool keep_copies;		/* a promoted full page keeps its host
					 * page as a clean copy; a page with
					 * one is demoted without a copy */
	struct kvrt_stream **streams;	/* streams whose queued work may read
					 * the old tables: the pages moved
					 * from are held until it completes */
	uint32_t nr_streams;
	/*
	 * The page copy. NULL: page by page through the runtime
	 * (kvrt_memcpy_from() then kvrt_memcpy_to(), synchronous). Otherwise
	 * called once for the demotions, then once for the promotions (each
	 * a batch of independent moves: no destination is a source of its
	 * batch, and a promotion may land on a page the demotions left), in
	 * that order, with the pool's page ids; it may only queue the copies
	 * (a side stream: kva_copy_pages_cuda()), and then the caller orders
	 * the readers of the new tables after them. It returns 0 or a
	 * -errno, which fails the call as a copy fault does: if the
	 * promotions' call fails, the demotions' copies only wrote free host
	 * pages, so nothing changed. Only a failure to queue is seen here;
	 * one in the queued copies shows at the caller's next wait.
	 */
	int (*copy)(void *arg, const uint32_t *src, const uint32_t *dst,
		    uint32_t n);
	void *copy_arg;

	/* plan of one call: demotions [0, nr_demote), then promotions */
	uint32_t *src;			/* [nr_ids] */
	uint32_t *dst;			/* [nr_ids] */
	uint32_t *list;			/* [nr_ids] owner before the call */
	uint32_t *pos;			/* [nr_ids] */
	uint8_t *leaves;		/* [nr_ids] src is no destination */
	uint8_t *nocopy;		/* [nr_ids] demotion to its clean copy */
	uint32_t *csrc;			/* [nr_ids] the copies, for the hook */
	uint32_t *cdst;			/* [nr_ids] */
	uint32_t *free_mem[KVA_NR_MEM];	/* [nr_ids] free pages per tier */
	uint32_t *psrc;			/* [nr_ids] promotions' scratch */
	uint32_t *pdst;			/* [nr_ids] */
	uint8_t *mark;			/* [nr_ids] requests seen */
	uint32_t nr_moves;
	uint32_t nr_demote;
	uint32_t nr_ids;		/* page ids the arrays cover */
	uint64_t call_bytes;		/* bytes copied in this call */

	/* out, accumulated over calls */
	uint64_t pages_promoted;
	uint64_t pages_demoted;
	uint64_t bytes_moved;		/* bytes */
	uint64_t clean_demoted;		/* of pages_demoted, without a copy */
	uint64_t bytes_copied_out;	/* by kva_migrate_copy_out() */
	enum kva_migrate_result result;	/* of the last call */
	double copy_us;			/* page copy of the last call */
};

int kva_migrate_init(struct kva_migrate_control *mc,
		     const struct kva_pool *pool, uint64_t budget_bytes);
void kva_migrate_fini(struct kva_migrate_control *mc);
int kva_migrate(struct kva_pool *pool, struct kva_migrate_control *mc,
		const uint32_t *promote, uint32_t np, const uint32_t *demote,
		uint32_t nd);
int kva_migrate_reclaim(struct kva_pool *pool, int wait);
int kva_migrate_copy_out(struct kva_pool *pool, struct kva_migrate_control *mc,
			 const uint32_t *pages, uint32_t n);
bool kva_page_sealed(const struct kva_pool *pool, uint32_t p);
void kva_shadow_drop(struct kva_pool *pool);
void kva_shadow_drop_list(struct kva_pool *pool, uint32_t list, uint32_t from);
void kva_shadow_drop_slots(struct kva_pool *pool, const uint32_t *slots,
			   uint32_t n);
int kva_migrate_room(struct kva_pool *pool, uint64_t pages);
const char *kva_migrate_reason(enum kva_migrate_result r);

/* placement policies (place.c) */

enum kva_place_policy {
	KVA_PLACE_STATIC = 0,	/* newest pages in HBM, oldest to the host */
	KVA_PLACE_TIER,		/* DiffKV: the prefill's low tier to the host */
	KVA_PLACE_IMPORTANCE,	/* recent attention mass and selection
				 * frequency: hot pages in HBM */
	KVA_PLACE_ORACLE,	/* greedy over the future trace's mass */
	KVA_PLACE_NR,
};

/**
 * struct kva_place - a placement policy's state over one pool's high-tier
 * table entries
 *
 * Owned by its creator, used under the pool's serialisation. Entries are
 * named by (list, table index), which migration and compaction keep (they
 * rewrite the page id of an entry, not its index), so scores follow a
 * token range wherever its page moves. Each step the caller reports the
 * attention mass each entry received (kva_place_observe()); the policy
 * then ranks every owned high-tier entry by its value and
 * kva_place_plan() turns the ranking into kva_migrate() requests: the top
 * entries that fit HBM are wanted there, the rest on the host. Values:
 * static, the entry index (newest first); tier, the mean mass over the
 * first @prefill_steps steps (DiffKV's prompt window), entries under
 * @alpha / pages of their list labelled low (fixed afterwards; later
 * entries low once out of the window); importance, an exponential average
 * of the mass (@decay) plus @freq_weight times the average selection
 * frequency, plus @now_credit for an entry the step about to run selected
 * (kva_place_select(), when the plan runs between the selection and the
 * attention: its read is certain, the oracle counts it the same way);
 * oracle, the discounted (@gamma) number of reads in the next
 * @horizon steps of the recorded trace, plus their mass
 * (kva_place_future()): a greedy lookahead, not the exact optimum. A
 * promotion is kept only when it gains @margin over the victim it
 * displaces (over nothing when HBM has a free page): moves cost copies.
 * The last @window
 * tokens' pages of each list rank first for every policy but static's
 * (newest first anyway): they are read every step.
 */
struct kva_place {
	enum kva_place_policy policy;
	uint32_t nr_lists;
	uint32_t width;
	uint32_t window;		/* tokens: recent pages kept in HBM */
	uint32_t prefill_steps;		/* tier: steps of the prompt window */
	float alpha;			/* tier: low when mean < alpha / pages */
	float decay;			/* importance: EMA factor */
	float freq_weight;		/* importance: weight of frequency */
	float gamma;			/* oracle: discount per step */
	uint32_t horizon;		/* oracle: steps looked ahead */
	float margin;			/* a move must gain this much value
					 * (a victim's counted against it) */
	uint32_t steps;			/* observed so far */
	bool selected;			/* kva_place_select() this step */
	float now_credit;		/* importance: value of a read now */
	uint8_t *now;			/* [lists][width] selected this step */
	float *ema;			/* [lists][width] mass average */
	float *freq;			/* [lists][width] selection average */
	float *prefill;			/* [lists][width] tier: prompt mass */
	uint8_t *low;			/* [lists][width] tier: low label */
	const float *future;		/* oracle: [horizon][lists][width] */
	uint32_t nr_future;		/* steps at @future */
	/* scratch of kva_place_plan() */
	float *val;			/* [lists * width] */
	uint32_t *key;			/* [lists * width] the owned entries'
					 * values as keys, list by list */
	uint64_t *mv;			/* [2][lists * width] movers, sorting */
};

int kva_place_init(struct kva_place *pl, const struct kva_pool *pool,
		   enum kva_place_policy policy);
void kva_place_fini(struct kva_place *pl);
const char *kva_place_name(enum kva_place_policy policy);
int kva_place_observe(struct kva_place *pl, const float *mass);
int kva_place_select(struct kva_place *pl, const float *sel);
void kva_place_future(struct kva_place *pl, const float *future,
		      uint32_t nr_steps);
int kva_place_plan(struct kva_place *pl, const struct kva_pool *pool,
		   uint32_t *promote, uint32_t *np, uint32_t *demote,
		   uint32_t *nd);

/* swap to file (swap.c) */

/**
 * struct kva_swap_rec - where one sequence's pages went
 *
 * Owned by the caller (the scheduler keeps one per swapped sequence); made
 * by kva_swap_out(), consumed by kva_swap_in(). The file holds, list by
 * list, the high-tier pages in table order then the low-tier pages,
 * page_size bytes each, from @off.
 */
struct kva_swap_rec {
	uint64_t off;			/* file offset, KVRT_SWAP_ALIGN */
	uint64_t bytes;			/* written, rounded up to the align */
	uint32_t lists;			/* lists_per_slot when written */
	uint32_t *npages;		/* [lists][2] pages per tier */
	uint32_t *ntokens;		/* [lists][2] tokens per tier */
};

uint64_t kva_swap_bytes(const struct kva_pool *pool, uint32_t slot);
int kva_swap_out(struct kva_pool *pool, struct kvrt_swapfile *sf,
		 uint32_t slot, uint64_t off, struct kva_swap_rec *rec);
int kva_swap_in(struct kva_pool *pool, struct kvrt_swapfile *sf,
		uint32_t slot, struct kva_swap_rec *rec);
void kva_swap_rec_fini(struct kva_swap_rec *rec);

#ifdef __cplusplus
}
#endif

#endif /* KVA_H */
