/* SPDX-License-Identifier: MIT */
/*
 * kva_dev.h - internal: the device half of a device-resident pool
 * (device.c), called by pool.c, ops.c and compact.c after they validate.
 */
#ifndef KVA_DEV_H
#define KVA_DEV_H

#include "kva.h"

/*
 * struct kva_resize - a pool's arrays for a larger budget, made before the
 * pool changes (pool.c's pool_resize_prepare()), then swapped in whole or
 * dropped. Owned by the caller of kva_pool_set_budget(), under the pool's
 * serialisation.
 */
struct kva_resize {
	uint32_t gslots;		/* granule slots the arrays cover */
	uint32_t width;			/* table entries per list */
	uint8_t *gran_mapped;		/* [gslots] */
	uint8_t *gran_mem;		/* [gslots] */
	uint32_t *ring;			/* [gslots * ppg] */
	uint32_t *page_list;		/* [gslots * ppg] */
	uint32_t *page_pos;		/* [gslots * ppg] */
	uint32_t *scratch;		/* [gslots * ppg] */
	uint32_t *table;		/* [lists][width]; NULL: same width */
	void *dpages;			/* device pool: the per-page arrays */
	void *dtable;			/* device pool: the tables, or NULL */
};

int kva_dev_resize_prepare(struct kva_pool *pool, struct kva_resize *r);
void kva_dev_resize_commit(struct kva_pool *pool, struct kva_resize *r);
void kva_dev_resize_abort(struct kva_resize *r);
uint64_t kva_dev_bytes(const struct kva_pool *pool, uint64_t *pinned);
int kva_dev_create(struct kva_pool *pool);
void kva_dev_destroy(struct kva_pool *pool);
int kva_dev_pull(struct kva_pool *pool);
int kva_dev_wait(struct kva_pool *pool);
int kva_dev_push(struct kva_pool *pool, int all);
int kva_dev_admit(struct kva_pool *pool, const uint32_t *slots,
		  const uint32_t *prompt, uint32_t n);
int kva_dev_trim(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		 const uint32_t *hi_tokens, const uint32_t *lo_tokens);
int kva_dev_append(struct kva_pool *pool, const uint32_t *slots, uint32_t n);
int kva_dev_append_sync(struct kva_pool *pool, const uint32_t *slots,
			uint32_t n, int32_t *result);
int kva_dev_free(struct kva_pool *pool, const uint32_t *slots, uint32_t n);
int kva_dev_trim_held(struct kva_pool *pool, const uint32_t *slots,
		      uint32_t n);
int kva_dev_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n);
struct kvk_evict_args;
int kva_dev_evict(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		  const uint32_t *keep, const int32_t *protect_from,
		  uint32_t sinks, const struct kvk_evict_args *tmpl);
int kva_dev_grow(struct kva_pool *pool, const uint32_t *gran, uint32_t n);
int kva_validate_slots(struct kva_pool *pool, const uint32_t *slots,
		       uint32_t n, unsigned int ok_states);
int kva_dev_set_tokens(struct kva_pool *pool, uint32_t list);
int kva_dev_compact_copy(struct kva_pool *pool,
			 const struct kva_compact_control *cc);
int kva_dev_fence(struct kva_pool *pool);
int kva_dev_copy_time(struct kva_pool *pool, double *us);

#endif /* KVA_DEV_H */
