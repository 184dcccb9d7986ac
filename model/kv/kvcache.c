// SPDX-License-Identifier: MIT
/*
 * kvcache.c - what every KV cache shares: the kind of a step's batch and
 * the memory figures.
 */
#include <errno.h>
#include <string.h>

#include "kvcache.h"

/**
 * llm_kv_stats() - memory a cache holds
 * @kv: the cache
 * @st: filled; a cache without a stats op reports kv->bytes, not paged
 *
 * Return: 0 or the error of the cache's stats op.
 */
int llm_kv_stats(struct llm_kv *kv, struct llm_kv_stats *st)
{
	if (kv->ops->stats)
		return kv->ops->stats(kv, st);
	memset(st, 0, sizeof(*st));
	st->bytes = kv->bytes;
	return 0;
}

/**
 * llm_kv_batch_kind() - whether a batch is a prefill or a decode step
 * @kv: the cache
 * @b: the batch (sequences in range and distinct: llm_batch_check())
 *
 * A prefill brings every sequence's whole prompt from position 0; a decode
 * step one token for each sequence, all past their prompt.
 *
 * Return: LLM_KV_PREFILL, LLM_KV_DECODE, or -EINVAL for a mixed batch.
 */
int llm_kv_batch_kind(const struct llm_kv *kv, const struct llm_batch *b)
{
	int pre = 0;

	for (int i = 0; i < b->n_seq; i++)
		pre += llm_kv_len(kv, b->seq[i]) == 0;
	if (pre == b->n_seq)
		return LLM_KV_PREFILL;
	if (pre)
		return -EINVAL;
	for (int i = 0; i < b->n_seq; i++)
		if (b->n_tok[i] != 1)
			return -EINVAL;
	return LLM_KV_DECODE;
}
