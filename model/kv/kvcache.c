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
 * A prefill brings, for every sequence, its whole prompt from position 0
 * or the next chunk of a prompt declared with llm_kv_set_prompt()
 * (llm_kv_prefilling()); a decode step one token for each sequence, all
 * past their prompt.
 *
 * Return: LLM_KV_PREFILL, LLM_KV_DECODE, or -EINVAL for a mixed batch.
 */
int llm_kv_batch_kind(const struct llm_kv *kv, const struct llm_batch *b)
{
	int pre = 0;

	for (int i = 0; i < b->n_seq; i++)
		pre += llm_kv_prefilling(kv, b->seq[i]);
	if (pre == b->n_seq)
		return LLM_KV_PREFILL;
	if (pre)
		return -EINVAL;
	for (int i = 0; i < b->n_seq; i++)
		if (b->n_tok[i] != 1)
			return -EINVAL;
	return LLM_KV_DECODE;
}

/**
 * llm_kv_set_prompt() - declare that @seq's prompt of @ntok tokens comes
 * in chunks
 * @kv: a cache that takes chunks (llm_kv_chunks())
 * @seq: a sequence that holds no tokens (new, or llm_kv_reset())
 * @ntok: the prompt's tokens
 *
 * The sequence's next prefill steps may bring any number of its tokens,
 * in order, from position 0; its steps are prefill steps until the
 * @ntok-th token is held, then decode steps. The declaration ends with the
 * prompt, or with llm_kv_reset().
 *
 * Return: 0; -EOPNOTSUPP (the cache takes whole prompts only); -EINVAL
 * (a sequence out of range or holding tokens, @ntok below 1 or over the
 * cache's capacity; nothing changed).
 */
int llm_kv_set_prompt(struct llm_kv *kv, int seq, int ntok)
{
	if (!kv || seq < 0 || seq >= kv->n_seq)
		return -EINVAL;
	if (!kv->prompt)
		return -EOPNOTSUPP;
	if (kv->len[seq] || ntok < 1 || ntok > kv->max_tok)
		return -EINVAL;
	kv->prompt[seq] = ntok;
	return 0;
}
