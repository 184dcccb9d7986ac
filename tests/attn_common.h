/* SPDX-License-Identifier: MIT */
/*
 * attn_common.h - a random paged KV pool for the decode-attention tests:
 * built on the host, used as is by the CPU suite and copied to the device
 * by the GPU suite.
 */
#ifndef ATTN_COMMON_H
#define ATTN_COMMON_H

#include "kva.h"
#include "kvattn.h"

/* struct attn_case - one randomly drawn call and the memory behind it */
struct attn_case {
	struct kvk_attn_args a;	/* host addresses */
	struct kva_tier tiers[2];
	uint8_t *pool;		/* [granules][2 MiB] */
	size_t pool_bytes;
	uint32_t *tables, *ntokens, *list_base;
	size_t nr_lists;
	void *q, *out;
	float *k_ref, *v_ref;	/* [list][token][hd] dequantized, batch order */
	uint32_t max_tokens;
};

void attn_case_make(struct attn_case *c, uint64_t *seed, uint32_t nr_seqs,
		    uint32_t nr_kv_heads, uint32_t group, uint32_t head_dim,
		    const struct kva_tier tiers[2], uint32_t max_tokens,
		    enum kvk_dtype dt);
void attn_case_free(struct attn_case *c);
void attn_read_scores(const struct attn_case *c, const uint8_t *pool,
		      float *out);
double attn_rel_l2(const float *x, const float *ref, size_t n);

#endif /* ATTN_COMMON_H */
