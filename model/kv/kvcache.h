/* SPDX-License-Identifier: MIT */
/*
 * kvcache.h - the executor's view of a KV cache: a step of a batch of
 * sequences, one call per layer for all of them.
 *
 * The forward pass reaches the cache only through struct llm_kv_ops. A step
 * is either a prefill (every sequence of the batch brings its whole prompt
 * from position 0, or, in a cache that takes chunks (llm_kv_set_prompt()),
 * the next chunk of a prompt declared beforehand) or a decode step (every
 * sequence brings one token at position llm_kv_len());
 * llm_kv_prefilling() tells them apart, and an executor splits a mixed
 * batch into the two.
 * The executor calls begin() once, layer() for layers 0 .. n_layers - 1 in
 * order, then end(), and commits the tokens with llm_kv_commit(). The cache
 * decides what it keeps (policies: tiers, pruning, eviction) and computes
 * the attention of the step's queries over what it holds.
 *
 * The one cache of the product is the policy cache (kvpolicy.h): its pages
 * live in a kvmm space reached through the uapi, on the host for the CPU
 * executor and on a CUDA device for the CUDA executor. tests/ keeps a
 * contiguous fp32 cache with the same operations as an exact reference.
 */
#ifndef LLM_KVCACHE_H
#define LLM_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kvk.h"

struct llm_kv;

/**
 * struct llm_batch - the new tokens of one step, for several sequences
 * @n_seq: sequences in the step; >= 1
 * @seq: [n_seq] their slots in the KV cache, all different
 * @n_tok: [n_seq] new tokens of each: the prompt at prefill, 1 at decode
 * @tok: sum(n_tok) token ids, sequence after sequence
 *
 * The new tokens of sequence i take positions llm_kv_len(kv, seq[i]) on.
 */
struct llm_batch {
	int n_seq;
	const int *seq;
	const int *n_tok;
	const int32_t *tok;
};

/**
 * struct llm_kv_stats - memory a cache holds
 * @paged: the cache lives in allocator pages
 * @page_size: bytes per page (0 when not paged)
 * @tokens_per_page: tokens of one (layer, kv-head) per page, high tier
 * @pages_total: pages in the granules mapped
 * @pages_used: pages owned by sequences, per tier (high, low)
 * @bytes: bytes held for keys and values (pages used x page size)
 * @budget: bytes the cache's pages may take at most (0: no bound)
 * @tokens: tokens held, per tier (summed over every list)
 * @token_slots: tokens the pages used can hold (pages x tokens per page,
 *	per tier, summed): what @tokens leaves unused is the pages' slack
 */
struct llm_kv_stats {
	bool paged;
	uint64_t page_size;
	uint64_t tokens_per_page;
	uint64_t pages_total;
	uint64_t pages_used[2];
	uint64_t bytes;
	uint64_t budget;
	uint64_t tokens[2];
	uint64_t token_slots;
};

/**
 * struct llm_kv_io - one layer's activations of a step, for the cache
 * @q: the step's queries, RoPE applied: a row of n_heads * head_dim fp32
 *	per token, @ldq floats apart, sequence after sequence
 * @ldq: floats between two rows of @q
 * @k: the new keys, RoPE applied: rows of n_kv_heads * head_dim fp32
 * @v: the new values, same shape
 * @ldkv: floats between two rows of @k (and of @v)
 * @out: the attention output: rows of n_heads * head_dim in @odt
 * @ldo: elements between two rows of @out
 * @odt: KVK_F32 for a host cache; KVK_F16 or KVK_BF16 for a device cache
 *
 * Host memory for a host cache, device memory for a device cache (whose
 * rows must be packed: ldq = n_heads * head_dim, ldkv = n_kv_heads *
 * head_dim, ldo = n_heads * head_dim). @q, @k and @v are the executor's
 * scratch of this layer: a device cache under a policy's hadamard knob
 * rotates them in place.
 */
struct llm_kv_io {
	const float *q;
	long ldq;
	const float *k;
	const float *v;
	long ldkv;
	void *out;
	long ldo;
	enum kvk_dtype odt;
};

/**
 * struct llm_kv_ops - what a KV cache implements
 * @begin: before layer 0 of a step: the pages the step needs (a prompt's
 *	admission, a decode token's new pages) and the step's bookkeeping.
 *	Return 0, -EINVAL (a bad or mixed batch), -EOPNOTSUPP (a prompt that
 *	does not start at position 0), -ENOSPC (no room within the cache's
 *	budget: nothing changed), -ENOMEM.
 * @layer: one layer of the step for every sequence of the batch: store the
 *	keys and values @io brings, and write the causal attention of the
 *	step's queries over what the cache holds (token t of a sequence sees
 *	its positions 0 .. its own) to @io->out. On a device cache only
 *	enqueues work on @stream, with the same device addresses at every
 *	step of the same batch size, so that the executor can capture it in
 *	a CUDA graph.
 * @end: after the last layer: the prompt's surplus pages back, evictions
 *	when due. On a device cache only enqueues.
 * @status: the first error the device reported for the cache's work
 *	since the last call (read after the caller synchronised @stream);
 *	NULL for a host cache, whose ops return their errors.
 * @stats: optional: memory held (see struct llm_kv_stats).
 * @destroy: free the cache.
 *
 * @stream is a cudaStream_t (NULL for a host cache).
 */
struct llm_kv_ops {
	int (*begin)(struct llm_kv *kv, const struct llm_batch *b,
		     void *stream);
	int (*layer)(struct llm_kv *kv, const struct llm_batch *b, int layer,
		     const struct llm_kv_io *io, void *stream);
	int (*end)(struct llm_kv *kv, const struct llm_batch *b, void *stream);
	int (*status)(struct llm_kv *kv);
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
	int n_heads;	/* query heads */
	int n_kv_heads;
	int head_dim;	/* floats per head per token */
	int max_tok;	/* capacity of each sequence, tokens */
	bool device;	/* pages and io on a CUDA device */
	uint64_t id;	/* unique in the process: executors key graphs on it */
	int *len;	/* [n_seq] tokens committed */
	int *prompt;	/* [n_seq] a prompt's tokens while it arrives in
			 * chunks (llm_kv_set_prompt()), else 0; NULL: the
			 * cache takes whole prompts only */
	uint64_t bytes; /* memory held for keys and values */
};

int llm_kv_stats(struct llm_kv *kv, struct llm_kv_stats *st);
int llm_kv_batch_kind(const struct llm_kv *kv, const struct llm_batch *b);
int llm_kv_set_prompt(struct llm_kv *kv, int seq, int ntok);

/* llm_kv_batch_kind() */
#define LLM_KV_PREFILL 1
#define LLM_KV_DECODE 2

/* tokens of @seq whose keys and values every layer holds */
static inline int llm_kv_len(const struct llm_kv *kv, int seq)
{
	return kv->len[seq];
}

/* whether the cache takes a prompt in chunks (llm_kv_set_prompt()) */
static inline bool llm_kv_chunks(const struct llm_kv *kv)
{
	return kv->prompt != NULL;
}

/*
 * whether the next tokens of @seq are (part of) its prompt: it holds none,
 * or fewer than the prompt llm_kv_set_prompt() declared
 */
static inline bool llm_kv_prefilling(const struct llm_kv *kv, int seq)
{
	return kv->len[seq] == 0 ||
	       (kv->prompt && kv->len[seq] < kv->prompt[seq]);
}

/* after the step's end(): @ntok tokens of @seq are held */
static inline void llm_kv_commit(struct llm_kv *kv, int seq, int ntok)
{
	kv->len[seq] += ntok;
}

/*
 * forget every token of @seq: its next step is a prompt from position 0,
 * and the cache gives its pages back at that step's begin() (or with
 * llm_kv_policy_release())
 */
static inline void llm_kv_reset(struct llm_kv *kv, int seq)
{
	kv->len[seq] = 0;
	if (kv->prompt)
		kv->prompt[seq] = 0;
}

static inline void llm_kv_destroy(struct llm_kv *kv)
{
	if (kv)
		kv->ops->destroy(kv);
}

#endif /* LLM_KVCACHE_H */
