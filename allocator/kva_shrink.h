/* SPDX-License-Identifier: MIT */
/*
 * kva_shrink.h - give back the pages a list no longer needs after its
 * token counts went down (eviction, pruning), between decode steps.
 */
#ifndef KVA_SHRINK_H
#define KVA_SHRINK_H

#include "kva.h"

int kva_shrink_cpu(const struct kva_view *v, const uint32_t *slots,
		   uint32_t n, void *stream);
int kva_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n);

#endif /* KVA_SHRINK_H */
