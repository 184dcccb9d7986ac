/* SPDX-License-Identifier: MIT */
/*
 * evict_common.h - a random single-tier paged KV pool for the eviction
 * tests: built on the host, used as is by the CPU suite and copied to the
 * device by the GPU suite.
 */
#ifndef EVICT_COMMON_H
#define EVICT_COMMON_H

#include "kva.h"
#include "kvevict.h"

/* struct evict_case - one randomly drawn call and the memory behind it */
struct evict_case {
	struct kvk_evict_args a; /* host addresses */
	uint8_t *pool;		/* [granules][2 MiB] */
	size_t pool_bytes;
	uint32_t *tables, *ntokens, *list_base, *quota, *evicted;
	int32_t *protect_from;
	size_t nr_rows;		/* rows of the tables */
};

void evict_case_make(struct evict_case *c, uint64_t *seed, uint32_t nr_seqs,
		     uint32_t lists, uint32_t head_dim,
		     const struct kva_tier *tier, uint32_t max_pages);
void evict_case_free(struct evict_case *c);
void evict_case_copy(struct evict_case *dst, const struct evict_case *src);

#endif /* EVICT_COMMON_H */
