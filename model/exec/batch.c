// SPDX-License-Identifier: MIT
/*
 * batch.c - the checks every executor runs on a step's batch (forward.h).
 */
#include <errno.h>

#include "forward.h"

/**
 * llm_batch_check() - validate a step's batch against a model and a cache
 * @c: the model's configuration
 * @kv: the cache the step runs on
 * @b: the batch
 * @ntok: out: the step's new tokens, all sequences
 * @ctx: out: the longest sequence after the step
 *
 * Return: 0; -EINVAL for a missing array, a cache of another shape, a
 * sequence out of range or listed twice, a token count below 1 or over the
 * cache, a token id out of the vocabulary; -E2BIG for more than 2^24 new
 * tokens; -ENOSPC when a sequence would outgrow the cache.
 */
int llm_batch_check(const struct llm_config *c, const struct llm_kv *kv,
		    const struct llm_batch *b, int *ntok, int *ctx)
{
	*ntok = 0;
	*ctx = 0;
	if (!b || b->n_seq < 1 || b->n_seq > kv->n_seq || !b->seq ||
	    !b->n_tok || !b->tok)
		return -EINVAL;
	if (kv->n_layers != (int)c->n_layers ||
	    kv->n_kv_heads != (int)c->n_kv_heads ||
	    kv->head_dim != (int)c->head_dim)
		return -EINVAL;
	for (int i = 0; i < b->n_seq; i++) {
		int s = b->seq[i];

		if (s < 0 || s >= kv->n_seq || b->n_tok[i] < 1 ||
		    b->n_tok[i] > kv->max_tok)
			return -EINVAL;
		for (int k = 0; k < i; k++)
			if (b->seq[k] == s)
				return -EINVAL;
		if (*ntok > (1 << 24) - b->n_tok[i])
			return -E2BIG;
		*ntok += b->n_tok[i];
	}
	for (int t = 0; t < *ntok; t++)
		if (b->tok[t] < 0 || (uint32_t)b->tok[t] >= c->n_vocab)
			return -EINVAL;
	for (int i = 0; i < b->n_seq; i++) {
		int end = llm_kv_len(kv, b->seq[i]) + b->n_tok[i];

		if (end > kv->max_tok)
			return -ENOSPC;
		*ctx = end > *ctx ? end : *ctx;
	}
	return 0;
}
