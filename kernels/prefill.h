/* SPDX-License-Identifier: MIT */
/*
 * prefill.h - causal prefill attention over the prompt's own fp16/bf16 K and
 * V (flash-attention-2 style on the GPU: tiles, online softmax, tensor
 * cores, fp32 accumulation), with GQA, variable-length batches and, for
 * compress-and-append, each token's score: the attention probability summed
 * over the last W queries, max over the query heads of its kv-head.
 *
 * The kernel and its CPU reference (fp32) share one signature: a struct of
 * arguments and a stream. Usable from C and CUDA. See
 * Documentation/kernels/prefill.rst.
 */
#ifndef KVK_PREFILL_H
#define KVK_PREFILL_H

#include <stddef.h>
#include <stdint.h>

#include "kvattn.h"
#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVK_PREFILL_MAX_LEN (1U << 20) /* tokens per sequence */

/**
 * struct kvk_prefill_args - one prefill-attention call (one layer)
 * @nr_seqs: sequences in the batch
 * @nr_q_heads: query heads, a multiple of @nr_kv_heads
 * @nr_kv_heads: kv-heads
 * @head_dim: 64 or 128
 * @scale: softmax scale (> 0), usually 1 / sqrt(head_dim)
 * @dtype: KVK_F16 or KVK_BF16, of @q, @k, @v and @out
 * @q: [total][nr_q_heads][head_dim], RoPE applied
 * @k: [total][nr_kv_heads][head_dim], RoPE applied
 * @v: [total][nr_kv_heads][head_dim]
 * @seq_start: [nr_seqs + 1] first token of each sequence; token i of a
 *	sequence attends to its tokens 0..i
 * @max_len: host value, at least every sequence's length (sizes the grid)
 * @out: out, [total][nr_q_heads][head_dim]
 * @lse: NULL, or out [total][nr_q_heads] fp32: log of each row's softmax
 *	denominator (natural log, scaled logits); required with @scores
 * @scores: NULL, or out [total][nr_kv_heads] fp32: for token t, the max
 *	over the query heads of t's kv-head of the sum over the sequence's
 *	last @score_window queries i >= t of softmax_i(t); with
 *	@score_mode KVK_ATTN_SCORE_SUMSQ, the sum over those query heads of
 *	the sum of softmax_i(t)^2 (KV-Compress's metric)
 * @score_window: W (>= 1) when @scores is set
 * @score_mode: 0 or KVK_ATTN_SCORE_MAX (DiffKV), or KVK_ATTN_SCORE_SUMSQ
 *	(kvattn.h)
 *
 * On CUDA every pointer is a device address.
 */
struct kvk_prefill_args {
	uint32_t nr_seqs;
	uint32_t nr_q_heads;
	uint32_t nr_kv_heads;
	uint32_t head_dim;
	float scale;
	enum kvk_dtype dtype;
	const void *q;
	const void *k;
	const void *v;
	const uint32_t *seq_start;
	uint32_t max_len;
	void *out;
	float *lse;
	float *scores;
	uint32_t score_window;
	int score_mode;
};

int kvk_prefill_check(const struct kvk_prefill_args *a);
int kvk_prefill_cpu(const struct kvk_prefill_args *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_prefill_cuda(const struct kvk_prefill_args *a, void *stream);
#endif

/* multiply-adds of the causal attention of @len tokens, x4 = FLOPs */
static inline double kvk_prefill_flops(uint64_t len, uint32_t q_heads,
				       uint32_t head_dim)
{
	/* QK^T and PV over the causal half (len (len + 1) / 2 pairs) */
	return 4.0 * (double)len * (double)(len + 1) / 2.0 * q_heads * head_dim;
}

#ifdef __cplusplus
}
#endif

#endif /* KVK_PREFILL_H */
