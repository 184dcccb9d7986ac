/* SPDX-License-Identifier: MIT */
/*
 * kvpolicy.h - the KV cache: a memory policy (policy.h) applied to the
 * pages of a kvmm space, on the host (CPU executor) or on a CUDA device
 * (CUDA executor), with the accounting every run reports.
 */
#ifndef LLM_KVPOLICY_H
#define LLM_KVPOLICY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kvcache.h"
#include "policy.h"

struct llm_pool;

/**
 * struct llm_kv_policy_opts - how to make a policy cache
 * @n_seq: sequences it serves at once (the space's slots)
 * @max_tok: tokens one sequence may reach
 * @n_threads: host cache: workers of its attention (0: one)
 * @pool: host cache: run the attention on this pool (a reference is
 *	taken, llm_pool_get()) instead of @n_threads workers of its own: the
 *	CPU executor's (llm_cpu_pool()), which calls the cache between its
 *	own jobs, so that a step's threads are never more than its cores;
 *	NULL: its own
 * @device: CUDA device ordinal of a device cache; -1 for a host cache
 * @budget: bytes of pages the space may map at most, rounded up to 2 MiB;
 *	0: enough for every sequence at @max_tok at the smaller tier
 *
 * Plain value, read by llm_kv_policy_open().
 */
struct llm_kv_policy_opts {
	int n_seq;
	int max_tok;
	int n_threads;
	int device;
	uint64_t budget;
	struct llm_pool *pool;
};

/**
 * struct llm_kv_geometry - the page geometry of a policy cache, for a
 * scheduler that plans admissions (model/sched/)
 * @lists: page lists of one sequence (layers x kv-heads)
 * @nr_tiers: 1, or 2 for diffkv
 * @tokens_per_page: [2] tokens of one list per page, per tier ([1] equals
 *	[0] in a one-tier cache)
 * @page_size: bytes of one page
 * @pages_per_granule: pages of one 2 MiB granule
 * @budget_pages: pages the space's budget can map
 * @alpha: the policy's diffkv thresholds (prune, quant), what a sequence
 *	classifies with unless llm_kv_policy_seq_alpha() set its own
 */
struct llm_kv_geometry {
	uint32_t lists;
	uint32_t nr_tiers;
	uint32_t tokens_per_page[2];
	uint32_t page_size;
	uint32_t pages_per_granule;
	uint64_t budget_pages;
	float alpha[2];
};

/**
 * struct llm_kv_swap - a sequence swapped out of a policy cache
 * (llm_kv_policy_swap_out()): what its swap-in needs. Owned by the caller
 * (the scheduler keeps one per swapped request); all zero when none.
 * @handle: the space's name for it (KVMM_IOC_SEQ_SWAP_OUT); 0: none
 * @bytes: bytes of the swap file it takes
 * @pages: pages it held
 * @len: positions it had seen
 * @steps: decode steps since its last eviction (kvcompress)
 * @alpha: its diffkv thresholds
 * @chn: knorm: [lists][2][head_dim] its lists' key means and scales;
 *	else NULL
 */
struct llm_kv_swap {
	uint64_t handle;
	uint64_t bytes;
	uint64_t pages;
	uint32_t len;
	uint32_t steps;
	float alpha[2];
	float *chn;
};

int llm_kv_policy_geometry(const struct llm_kv *kv,
			   struct llm_kv_geometry *g);
int llm_kv_policy_open(const struct llm_config *c, const struct llm_policy *p,
		       const struct llm_kv_policy_opts *o,
		       struct llm_kv **out, char *err, size_t errlen);
int llm_kv_policy_create(const struct llm_config *c,
			 const struct llm_policy *p, int n_seq, int max_tok,
			 int n_threads, struct llm_kv **out, char *err,
			 size_t errlen);
int llm_kv_policy_create_cuda(const struct llm_config *c,
			      const struct llm_policy *p, int n_seq,
			      int max_tok, int device, struct llm_kv **out,
			      char *err, size_t errlen);
int llm_kv_policy_seq_alpha(struct llm_kv *kv, int seq, float prune,
			    float quant);
int llm_kv_policy_usage(const struct llm_kv *kv, int seq,
			struct llm_kv_usage *u);
int llm_kv_policy_step(struct llm_kv *kv, int seq, int layer, int pos,
		       int ntok, const float *q, long ldq, const float *k,
		       const float *v, long ldkv, float *out, long ldo);
int llm_kv_policy_release(struct llm_kv *kv, int seq);
int llm_kv_policy_check(const struct llm_kv *kv, char *why, size_t len);
int llm_kv_policy_space(const struct llm_kv *kv, int *fd, uint32_t *space);
int llm_kv_policy_swap_setup(struct llm_kv *kv, const char *dir,
			     int *direct);
int llm_kv_policy_swap_out(struct llm_kv *kv, int seq,
			   struct llm_kv_swap *sw);
int llm_kv_policy_swap_in(struct llm_kv *kv, int seq,
			  struct llm_kv_swap *sw);
int llm_kv_policy_swap_drop(struct llm_kv *kv, struct llm_kv_swap *sw);

#endif /* LLM_KVPOLICY_H */
