/* SPDX-License-Identifier: MIT */
/*
 * chnorm.h - per-channel key normalization: each (sequence, kv-head)'s key
 * channels centred on their mean over the prompt and divided by their
 * spread, queries multiplied by the same spread, so that a per-token
 * quantizer no longer spends its range on a few outlier channels (KIVI's
 * observation that key outliers live in fixed channels; SmoothQuant's
 * scaling). Attention is unchanged but for quantization. CUDA kernel
 * (chnorm.cu) and CPU reference (chnorm.c) with one signature. See
 * Documentation/kernels/formats.rst, "Per-channel key normalization".
 */
#ifndef KVK_CHNORM_H
#define KVK_CHNORM_H

#include <stddef.h>
#include <stdint.h>

#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* what kvk_chnorm_*() does */
enum kvk_chn_op {
	KVK_CHN_STATS = 0,	/* param of each (sequence, head) from its keys */
	KVK_CHN_KEYS = 1,	/* x = (x - mean) / scale */
	KVK_CHN_QUERIES = 2,	/* x = x * scale */
	KVK_CHN_NR,
};

/* the smallest scale, relative to the mean spread of the head's channels */
#define KVK_CHN_MIN_SCALE 0.125f

/**
 * struct kvk_chn_args - one call
 * @x: [ntok][heads][head_dim] fp32 rows, in place (read only for STATS)
 * @ntok: tokens (rows of heads)
 * @heads: heads per token in @x: kv-heads for keys, query heads for queries
 * @group: heads of @x per parameter head: 1 for keys, the query heads per
 *	kv-head for queries (head h of @x uses kv-head h / @group)
 * @head_dim: 2 .. 256
 * @nr_seqs: sequences in @x
 * @seq_start: [nr_seqs + 1]: tokens seq_start[s] .. seq_start[s + 1] - 1 of
 *	@x are sequence s's; NULL: token s is sequence s's (@ntok == @nr_seqs)
 * @list_base: [nr_seqs]: the parameters of (sequence s, kv-head h) are
 *	row list_base[s] + h of @param
 * @param: [lists][2][head_dim] fp32: each channel's mean, then its scale
 * @op: enum kvk_chn_op
 *
 * STATS writes, for each (sequence, kv-head) of the call, mean_c = the mean
 * of channel c over its tokens (summed in token order), d_c = the largest
 * |x - mean_c|, and scale_c = max(d_c / g, KVK_CHN_MIN_SCALE) with g the
 * mean of d over the channels (summed in channel order); scale 1 where g
 * is 0. On CUDA every pointer is a device address; both backends run the
 * same IEEE operations in the same order, so they agree to the bit.
 */
struct kvk_chn_args {
	float *x;
	uint32_t ntok;
	uint32_t heads;
	uint32_t group;
	uint32_t head_dim;
	uint32_t nr_seqs;
	const uint32_t *seq_start;
	const uint32_t *list_base;
	float *param;
	int op;
};

int kvk_chnorm_check(const struct kvk_chn_args *a);
int kvk_chnorm_cpu(const struct kvk_chn_args *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_chnorm_cuda(const struct kvk_chn_args *a, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVK_CHNORM_H */
