/* SPDX-License-Identifier: MIT */
/*
 * kvattn.h - decode attention over per-head paged, mixed-precision KV.
 *
 * One query token per sequence attends to the tokens of each of its kv-heads,
 * held in pages of up to two tiers (high from the left of the head's table,
 * low from the right), each tier with its own K and V formats (kvq.h). The
 * kernel and its CPU reference share one signature: a struct of arguments
 * and a stream. Usable from C and CUDA.
 */
#ifndef KVATTN_H
#define KVATTN_H

#include <stddef.h>
#include <stdint.h>

#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVK_ATTN_MAX_GROUP 8	/* query heads per kv-head */

/* kvk_attn_args.update_scores */
#define KVK_ATTN_SCORE_MAX 1	/* max over the group of p (DiffKV) */
#define KVK_ATTN_SCORE_SUMSQ 2	/* sum over the group of p^2 (KV-Compress) */

/* one query head's probability @p folded into a token's running @acc */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline float kvk_attn_score_fold(int mode, float acc, float p)
{
	return mode == KVK_ATTN_SCORE_SUMSQ ? acc + p * p
					    : (p > acc ? p : acc);
}

/*
 * struct kvk_attn_tier - how one tier's tokens sit in a page: the formats
 * and the segment offsets of one tier (the allocator's kva_attn_tier()
 * builds it from its page layout; kernels/ includes nothing of allocator/).
 */
struct kvk_attn_tier {
	uint8_t kbits, vbits, kgroups, vgroups;
	uint32_t tokens;	/* tokens per page */
	uint32_t k_off, km_off, v_off, vm_off, score_off, pos_off; /* bytes */
};

/*
 * struct kvk_attn_args - one decode-attention call (one layer).
 * Owner: the caller; read-only for the call. On CUDA every pointer and
 * address is a device address.
 *
 * Page p lives at pool + (p / pages_per_granule) * 2 MiB
 * + (p % pages_per_granule) * page_size. The pages of (sequence s, kv-head
 * h) are row list = list_base[s] + h of @tables: high-tier pages at
 * [0, ceil(n_hi / tokens_hi)), low-tier pages from the right end, at
 * width - 1, width - 2, ...; ntokens[2 * list] and [2 * list + 1] count each
 * tier's tokens.
 */
struct kvk_attn_args {
	uint32_t nr_seqs;
	uint32_t nr_kv_heads;
	uint32_t group;		/* query heads per kv-head, 1..8 */
	uint32_t head_dim;	/* 64, 128 or 256 */
	float scale;		/* softmax scale, usually 1/sqrt(head_dim) */
	enum kvk_dtype dtype;	/* of q and out */
	const void *q;		/* [nr_seqs][nr_kv_heads * group][head_dim] */
	void *out;		/* same shape */
	uint64_t pool;
	uint32_t page_size;	/* bytes */
	uint32_t pages_per_granule;
	const uint32_t *tables;	/* [lists][width] page ids */
	uint32_t width;
	const uint32_t *ntokens; /* [lists][2] */
	const uint32_t *list_base; /* [nr_seqs] */
	struct kvk_attn_tier tier[2]; /* [0] high, [1] low */
	/*
	 * KVK_ATTN_SCORE_MAX (1, or any non-zero value but the next): each
	 * token's score field gains the largest attention probability any
	 * query head of its group gave it in this call (DiffKV).
	 * KVK_ATTN_SCORE_SUMSQ: it gains the sum over the group's query heads
	 * of the squared probability (KV-Compress's L2 metric). 0: untouched.
	 */
	int update_scores;
	/*
	 * Device scratch for the CUDA kernel (ignored by the CPU reference):
	 * kvk_attn_work_bytes() bytes let it split long contexts over several
	 * blocks and update the scores in a second, light pass. With less (or
	 * NULL), it runs unsplit, or falls back to the first version.
	 */
	void *work;
	size_t work_bytes;
};

int kvk_attn_check(const struct kvk_attn_args *a);
int kvk_attn_decode_cpu(const struct kvk_attn_args *a, void *stream);
int kvk_attn_decode_host(const struct kvk_attn_args *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_attn_decode_cuda(const struct kvk_attn_args *a, void *stream);
#endif

#define KVK_ATTN_MAX_SPLIT 64	/* blocks per (sequence, kv-head) */
#define KVK_ATTN_TARGET_BLOCKS 1024

/*
 * struct kvk_attn_work - where each part of the scratch lives (byte offsets
 * from @work): per split block, the unnormalised output and (max, sum) per
 * query head; per query head its log-sum-exp; per token and query head its
 * logit (base-2 units), [pair][g][page * tstride + slot].
 */
struct kvk_attn_work {
	uint32_t splits;
	uint32_t tstride;	/* logit slots per page, multiple of 16 */
	size_t acc_off, ml_off, lse_off, logit_off;
	size_t bytes;		/* total */
};

uint32_t kvk_attn_splits(const struct kvk_attn_args *a);
void kvk_attn_work_layout(const struct kvk_attn_args *a, uint32_t splits,
			  struct kvk_attn_work *w);
size_t kvk_attn_work_bytes(const struct kvk_attn_args *a);

/* bytes one call reads: K, V, metadata, scores (if updated), tables */
uint64_t kvk_attn_bytes(const struct kvk_attn_args *a, const uint32_t *ntok);

#ifdef __cplusplus
}
#endif

#endif /* KVATTN_H */
