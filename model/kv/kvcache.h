/* SPDX-License-Identifier: MIT */
/*
 * kvcache.h - the executor's view of a KV cache: append the keys and values
 * of new tokens for one layer, read a (layer, kv-head) back for attention.
 *
 * The forward pass reaches the cache only through struct llm_kv_ops, so the
 * contiguous fp32 cache here and the allocator's paged cache (a later issue)
 * are interchangeable. Positions of a sequence are 0 .. len - 1, stored in
 * order; the forward pass appends every layer of a step and then commits the
 * step's tokens with llm_kv_commit().
 */
#ifndef LLM_KVCACHE_H
#define LLM_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kvk.h"

struct llm_kv;

/**
 * struct llm_kv_stats - memory a cache holds
 * @paged: the cache lives in allocator pages
 * @page_size: bytes per page (0 when not paged)
 * @tokens_per_page: tokens of one (layer, kv-head) per page
 * @pages_total: pages in the granules mapped
 * @pages_used: pages owned by sequences, per tier (high, low)
 * @bytes: bytes held for keys and values (pages used x page size)
 */
struct llm_kv_stats {
	bool paged;
	uint64_t page_size;
	uint64_t tokens_per_page;
	uint64_t pages_total;
	uint64_t pages_used[2];
	uint64_t bytes;
};

/**
 * struct llm_kv_ops - what a KV cache implements
 * @append: store keys and values of tokens @pos .. @pos + @ntok - 1 of
 *	sequence @seq at @layer: @k and @v hold @ntok rows of
 *	n_kv_heads * head_dim floats, @ld floats apart. Return 0, -ENOSPC
 *	when the sequence would exceed its capacity, -EINVAL.
 * @view: where positions 0 .. @n - 1 of (@seq, @layer, @kv_head) lie:
 *	*@k and *@v point at [n][head_dim] floats each, valid until the
 *	next append, reset or destroy. A cache that keeps them contiguously
 *	returns pointers into itself (no copy on the decode path); one that
 *	does not gathers them into scratch it owns. Return 0 or -EINVAL.
 * @attend: optional: the attention of one query head @q (head_dim
 *	floats) over positions 0 .. @n - 1 of (@seq, @layer, @kv_head):
 *	@out = softmax(q . k * @scale) v, read where the cache keeps them;
 *	@s is @n floats of scratch the caller owns. Safe to call from many
 *	threads at once (between appends). Return 0 or -EINVAL.
 * @step: optional: a whole layer of a step in one call, for caches that
 *	decide themselves what they keep (policies: tiers, pruning,
 *	eviction): store the keys and values of tokens @pos .. @pos + @ntok
 *	- 1 of @seq at @layer (@k, @v: rows of n_kv_heads * head_dim floats,
 *	@ldkv apart) and write the causal attention of their queries (@q:
 *	rows of n_heads * head_dim floats, @ldq apart; token t attends to
 *	what the cache holds of positions 0 .. @pos + t) to @out (rows of
 *	n_heads * head_dim, @ldo apart). When set, the forward pass calls it
 *	instead of append and view/attend. Return 0, -ENOSPC, -EINVAL,
 *	-ENOMEM.
 * @step_cuda: optional, CUDA builds: @step for a cache on the device, the
 *	CUDA executor's way in: @q, @k and @v are device fp32 rows packed
 *	(n_heads * head_dim, n_kv_heads * head_dim floats per token), @out
 *	device rows of n_heads * head_dim in @odt (KVK_F16 or KVK_BF16),
 *	every kernel on @stream (a cudaStream_t). Return as @step.
 * @stats: optional: memory held (see struct llm_kv_stats).
 * @destroy: free the cache.
 */
struct llm_kv_ops {
	int (*append)(struct llm_kv *kv, int seq, int layer, int pos,
		      int ntok, const float *k, const float *v, long ld);
	int (*view)(struct llm_kv *kv, int seq, int layer, int kv_head,
		    int n, const float **k, const float **v);
	int (*attend)(struct llm_kv *kv, int seq, int layer, int kv_head,
		      int n, const float *q, float scale, float *out,
		      float *s);
	int (*step)(struct llm_kv *kv, int seq, int layer, int pos, int ntok,
		    const float *q, long ldq, const float *k, const float *v,
		    long ldkv, float *out, long ldo);
	int (*step_cuda)(struct llm_kv *kv, int seq, int layer, int pos,
			 int ntok, const float *q, const float *k,
			 const float *v, void *out, enum kvk_dtype odt,
			 void *stream);
	int (*stats)(struct llm_kv *kv, struct llm_kv_stats *st);
	void (*destroy)(struct llm_kv *kv);
};

/*
 * struct llm_kv - common part of every KV cache. Owned by its creator; not
 * locked: one forward pass at a time.
 */
struct llm_kv {
	const struct llm_kv_ops *ops;
	int n_seq;	/* sequence slots */
	int n_layers;
	int n_kv_heads;
	int head_dim;	/* floats per head per token */
	int max_tok;	/* capacity of each sequence, tokens */
	int *len;	/* [n_seq] tokens committed */
	uint64_t bytes; /* memory held for keys and values */
};

int llm_kv_contig_create(const struct llm_config *c, int n_seq, int max_tok,
			 struct llm_kv **out);
int llm_kv_paged_create(const struct llm_config *c, int n_seq, int max_tok,
			struct llm_kv **out);
int llm_kv_stats(struct llm_kv *kv, struct llm_kv_stats *st);

/* tokens of @seq whose keys and values every layer holds */
static inline int llm_kv_len(const struct llm_kv *kv, int seq)
{
	return kv->len[seq];
}

/* after every layer appended @ntok tokens of @seq */
static inline void llm_kv_commit(struct llm_kv *kv, int seq, int ntok)
{
	kv->len[seq] += ntok;
}

/* forget every token of @seq (the slot can be reused) */
static inline void llm_kv_reset(struct llm_kv *kv, int seq)
{
	kv->len[seq] = 0;
}

static inline void llm_kv_destroy(struct llm_kv *kv)
{
	if (kv)
		kv->ops->destroy(kv);
}

#endif /* LLM_KVCACHE_H */
