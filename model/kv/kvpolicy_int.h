/* SPDX-License-Identifier: MIT */
/*
 * kvpolicy_int.h - the policy cache's insides, shared by its host part
 * (kvpolicy.c: the allocator's bookkeeping and the CPU kernels) and its
 * device part (kvpolicy_cuda.c: the CUDA kernels). Not an interface.
 */
#ifndef LLM_KVPOLICY_INT_H
#define LLM_KVPOLICY_INT_H

#include <errno.h>
#include <stdint.h>

#include "compress.h"
#include "kva.h"
#include "kvattn.h"
#include "kvcache.h"
#include "kvevict.h"
#include "policy.h"

/* struct kvp_seq - one sequence slot of the cache */
struct kvp_seq {
	int live;		/* admitted in the pool */
	int decoding;		/* trimmed: decode steps may run */
	uint32_t len;		/* positions seen */
	uint32_t steps;		/* decode steps since the last eviction */
	int grew;		/* kva_append() added pages the device
				 * mirrors have not had yet */
};

struct kvp_dev;

/*
 * struct kvp - the policy cache. Owned by its creator; one forward pass at
 * a time (not locked). With @dev the pages are device memory and the
 * kernels run there; the pool's host arrays stay the allocator's truth,
 * mirrored to the device around each step (kvpolicy_cuda.c).
 */
struct kvp {
	struct llm_kv kv;
	struct llm_policy pol;
	uint32_t nh, nkv, hd, group;
	float scale;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct kvk_attn_tier at[2];
	uint32_t full_tpp, full_page_size;
	struct kvp_seq *seq;
	float (*alpha)[2];	/* [n_seq] (prune, quant) of each slot */
	struct kvp_dev *dev;	/* NULL: a host cache */
	struct llm_pool *threads; /* the prefill attention's workers */
	/* host scratch, sized for max_tok tokens (host caches only) */
	float *k, *v;		/* [max_tok][nkv][hd] */
	float *scores;		/* [max_tok][nkv] */
	float *p;		/* [threads][max_tok] probabilities */
	float *acc;		/* [n_heads][max_tok] score sums per head */
	uint32_t *counts;	/* [nkv][KVK_TOK_NR] */
	struct kvk_compress_action *act; /* [nkv] */
	uint32_t *hi, *lo;	/* [lists_per_slot] for kva_trim() */
};

/*
 * struct kvp_mem - where the kernels find the pool's tables, pages per tier
 * and tokens per tier: the pool's host arrays (kvp_host_mem()) or their
 * device mirrors (kvpolicy_cuda.c)
 */
struct kvp_mem {
	const uint32_t *tables;
	const uint32_t *npages;
	uint32_t *ntokens;
};

/*
 * The kernels' arguments as the policy sets them, for slot @s with list
 * base @lb (an address in @m's memory); the callers add the rest: the
 * activations and their type, the prompt bounds, scores, counts, actions,
 * error words, the decode position, the scratch, the eviction's quota.
 */
struct kvp_mem kvp_host_mem(const struct kvp *c);
struct kvk_compress_prompt kvp_prompt_args(const struct kvp *c, uint32_t s,
					   const struct kvp_mem *m,
					   const uint32_t *lb);
struct kvk_compress_decode kvp_decode_args(const struct kvp *c, uint32_t s,
					   const struct kvp_mem *m,
					   const uint32_t *lb);
struct kvk_attn_args kvp_attn_args(const struct kvp *c,
				   const struct kvp_mem *m,
				   const uint32_t *lb);
struct kvk_evict_args kvp_evict_args(const struct kvp *c,
				     const struct kvp_mem *m,
				     const uint32_t *lb);

float kvp_alpha(const struct kvp *c, uint32_t s, int quant);
int kvp_score_mode(const struct kvp *c);
int kvp_begin(struct kvp *c, uint32_t s, int layer, int pos, int ntok);
int kvp_append(struct kvp *c, uint32_t s);
int kvp_prompt_done(struct kvp *c, uint32_t s, uint32_t ntok);
int kvp_decode_done(struct kvp *c, uint32_t s);

#ifdef KVMM_HAVE_CUDA
int kvp_dev_init(struct kvp *c, int device, char *err, size_t errlen);
void kvp_dev_free(struct kvp *c);
int kvp_dev_upload(struct kvp *c, uint32_t s);
int kvp_dev_evict(struct kvp *c, uint32_t s, uint32_t quota);
int kvp_step_cuda(struct llm_kv *kv, int seq, int layer, int pos, int ntok,
		  const float *q, const float *k, const float *v, void *out,
		  enum kvk_dtype odt, void *stream);
#else
static inline int kvp_dev_upload(struct kvp *c, uint32_t s)
{
	(void)c, (void)s;
	return -EOPNOTSUPP;
}

static inline int kvp_dev_evict(struct kvp *c, uint32_t s, uint32_t quota)
{
	(void)c, (void)s, (void)quota;
	return -EOPNOTSUPP;
}

static inline void kvp_dev_free(struct kvp *c)
{
	(void)c;
}
#endif

#endif /* LLM_KVPOLICY_INT_H */
