/* SPDX-License-Identifier: MIT */
/*
 * kvpolicy.h - a KV cache that applies a memory policy (policy.h): the
 * executor's llm_kv with the policy's tiers, pruning and eviction, and the
 * accounting every run reports.
 */
#ifndef LLM_KVPOLICY_H
#define LLM_KVPOLICY_H

#include "config.h"
#include "kvcache.h"
#include "policy.h"

int llm_kv_policy_create(const struct llm_config *c,
			 const struct llm_policy *p, int n_seq, int max_tok,
			 int n_threads, struct llm_kv **out, char *err,
			 size_t errlen);
#ifdef KVMM_HAVE_CUDA
int llm_kv_policy_create_cuda(const struct llm_config *c,
			      const struct llm_policy *p, int n_seq,
			      int max_tok, int device, struct llm_kv **out,
			      char *err, size_t errlen);
#endif
int llm_kv_policy_seq_alpha(struct llm_kv *kv, int seq, float prune,
			    float quant);
int llm_kv_policy_usage(const struct llm_kv *kv, int seq,
			struct llm_kv_usage *u);
int llm_kv_policy_step(struct llm_kv *kv, int seq, int layer, int pos,
		       int ntok, const float *q, long ldq, const float *k,
		       const float *v, long ldkv, float *out, long ldo);
int llm_kv_policy_check(const struct llm_kv *kv, char *why, size_t len);

#endif /* LLM_KVPOLICY_H */
