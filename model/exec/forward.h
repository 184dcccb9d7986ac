/* SPDX-License-Identifier: MIT */
/*
 * forward.h - the LLaMA-family forward pass: prefill of prompts and decode
 * of single tokens, for a batch of sequences, over a KV cache reached
 * through struct llm_kv_ops (kvcache.h).
 *
 * CPU backend (forward_cpu.c): GGUF weights kept in their format and read
 * in place, integer dot products on quantised activations
 * (kernels/qdot.h), fp32 elsewhere, threaded GEMMs of our own, the kvk_*_cpu() kernels for
 * RMSNorm, RoPE, SiLU-mul, residual add and embedding gather. See
 * Documentation/model/index.rst, "Forward pass".
 */
#ifndef LLM_FORWARD_H
#define LLM_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kvcache.h"

int llm_batch_check(const struct llm_config *c, const struct llm_kv *kv,
		    const struct llm_batch *b, int *ntok, int *ctx);

/* an executor's step over a batch that is all prefill or all decode */
typedef int (*llm_batch_fn)(void *m, struct llm_kv *kv,
			    const struct llm_batch *b, void *out);
int llm_batch_split(struct llm_kv *kv, const struct llm_batch *b, void *out,
		    size_t row_bytes, llm_batch_fn fn, void *m);

struct llm_cpu;
struct llm_pool;

int llm_cpu_load(const struct llm_config *c, const struct llm_weights *w,
		 int n_threads, struct llm_cpu **out, char *err,
		 size_t errlen);
void llm_cpu_free(struct llm_cpu *m);
uint64_t llm_cpu_weight_bytes(const struct llm_cpu *m);
void llm_cpu_weight_info(const struct llm_cpu *m, char *buf, size_t len);
int llm_cpu_threads(const struct llm_cpu *m);
struct llm_pool *llm_cpu_pool(struct llm_cpu *m);
int llm_cpu_forward(struct llm_cpu *m, struct llm_kv *kv,
		    const struct llm_batch *b, float *logits);

#endif /* LLM_FORWARD_H */
