// SPDX-License-Identifier: MIT
/*
 * batch.c - the checks every executor runs on a step's batch (forward.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

/**
 * llm_batch_split() - run a mixed batch as its prefill, then its decode part
 * @kv: the cache
 * @b: a checked batch with prompts and decode tokens
 * @out: [b->n_seq] rows of @row_bytes: each sequence's output
 * @row_bytes: bytes of one sequence's output (logits, or an id)
 * @fn: the executor's step over a batch the cache takes whole
 * @m: the executor, passed to @fn
 *
 * Caches take a step that is all prefill (whole prompts and chunks of
 * prompts, llm_kv_prefilling()) or all decode (llm_kv_batch_kind()); an
 * executor hands a mixed one here.
 *
 * Return: 0, -ENOMEM, or @fn's error (the prompts are then committed when
 * only the decode part failed).
 */
int llm_batch_split(struct llm_kv *kv, const struct llm_batch *b, void *out,
		    size_t row_bytes, llm_batch_fn fn, void *m)
{
	int n = b->n_seq, T = 0, ret = 0;
	int *idx = malloc(4 * n * sizeof(int));
	int32_t *tok = NULL;
	uint8_t *tmp = malloc(n * row_bytes);

	for (int i = 0; i < n; i++)
		T += b->n_tok[i];
	tok = malloc((size_t)T * sizeof(int32_t));
	if (!idx || !tok || !tmp) {
		ret = -ENOMEM;
		goto out;
	}
	/* decided before the prompts run: they are not prompts afterwards */
	for (int i = 0; i < n; i++)
		idx[3 * n + i] = llm_kv_prefilling(kv, b->seq[i]);
	for (int pass = 0; !ret && pass < 2; pass++) {
		int *seq = idx + n, *nt = idx + 2 * n, k = 0, t = 0, row = 0;
		struct llm_batch sub = { 0, seq, nt, tok };

		for (int i = 0; i < n; row += b->n_tok[i++]) {
			if (idx[3 * n + i] != (pass == 0))
				continue;
			idx[k] = i;
			seq[k] = b->seq[i];
			nt[k] = b->n_tok[i];
			memcpy(tok + t, b->tok + row,
			       b->n_tok[i] * sizeof(int32_t));
			t += b->n_tok[i];
			k++;
		}
		if (!k)
			continue;
		sub.n_seq = k;
		ret = fn(m, kv, &sub, tmp);
		for (int j = 0; !ret && j < k; j++)
			memcpy((uint8_t *)out + idx[j] * row_bytes,
			       tmp + j * row_bytes, row_bytes);
	}
out:
	free(idx);
	free(tok);
	free(tmp);
	return ret;
}
