// SPDX-License-Identifier: MIT
/*
 * sample.c - CPU references of the samplers: greedy argmax and temperature
 * + top-k + top-p. The arithmetic is in kvk_internal.h ("deterministic
 * sampling arithmetic"); the reference finds the kept set by sorting, the
 * kernel by a radix search over the same keys, and both draw in index
 * order, so the two pick the same token for the same uniform number.
 */
#include <stdlib.h>

#include "kvk_internal.h"

static int row_argmax(const void *logits, size_t base, int vocab,
		      enum kvk_dtype dt)
{
	float best = -INFINITY;
	int bi = -1;

	for (int i = 0; i < vocab; i++) {
		float v = kvk_ld(logits, base + i, dt);

		if (v > best || (v == best && bi < 0)) {
			best = v;
			bi = i;
		}
	}
	return bi < 0 ? 0 : bi;
}

/**
 * kvk_argmax_cpu() - greedy decoding: the index of each row's largest logit
 * @ids: out: [rows] token ids
 * @logits: [rows][vocab] of @dt
 * @rows: number of rows; 0 is a no-op
 * @vocab: row length; > 0
 * @dt: dtype of @logits
 * @stream: ignored
 *
 * Ties go to the lowest index; NaN never wins; a row of NaN gives 0.
 *
 * Return: 0, or -EINVAL for a bad size, dtype or pointer.
 */
int kvk_argmax_cpu(int32_t *ids, const void *logits, int rows, int vocab,
		   enum kvk_dtype dt, void *stream)
{
	int ret = kvk_rows_check(ids, logits, rows, vocab, dt);

	(void)stream;
	if (ret)
		return ret;
	for (int r = 0; r < rows; r++)
		ids[r] = row_argmax(logits, (size_t)r * vocab, vocab, dt);
	return 0;
}

struct sample_tok {
	uint64_t key;
	uint64_t w;
};

static int key_desc(const void *a, const void *b)
{
	uint64_t ka = ((const struct sample_tok *)a)->key;
	uint64_t kb = ((const struct sample_tok *)b)->key;

	return ka < kb ? 1 : ka > kb ? -1 : 0;
}

/* one row: tok[] is scratch for vocab entries */
static int sample_row(const void *logits, size_t base, int vocab, float u,
		      const struct kvk_sample_cfg *cfg, enum kvk_dtype dt,
		      struct sample_tok *tok)
{
	float m = -INFINITY;
	uint64_t total = 0, cut, sum, r;
	int kept;

	for (int i = 0; i < vocab; i++)
		m = fmaxf(m, kvk_ld(logits, base + i, dt));
	for (int i = 0; i < vocab; i++) {
		float l = kvk_ld(logits, base + i, dt);

		tok[i].key = kvk_sample_key(l, i);
		tok[i].w = kvk_sample_weight(l, m, cfg->temperature);
		total += tok[i].w;
	}
	if (!total)
		return 0; /* every logit NaN: only they weigh nothing */
	total = 0;
	qsort(tok, vocab, sizeof(*tok), key_desc);
	kept = cfg->top_k > 0 && cfg->top_k < vocab ? cfg->top_k : vocab;
	for (int i = 0; i < kept; i++)
		total += tok[i].w;
	if (cfg->top_p < 1.0f) {
		uint64_t thr = kvk_sample_top_p_thr(total, cfg->top_p);
		int i;

		for (i = 0, sum = 0; i < kept; i++) {
			sum += tok[i].w;
			if (sum >= thr)
				break;
		}
		kept = i + 1;
	}
	/* the kept set is every key >= the last kept one's; draw by index */
	cut = tok[kept - 1].key;
	total = 0;
	for (int i = 0; i < kept; i++)
		total += tok[i].w;
	r = kvk_sample_target(total, u);
	sum = 0;
	for (int i = 0; i < vocab; i++) {
		float l = kvk_ld(logits, base + i, dt);

		if (kvk_sample_key(l, i) < cut)
			continue;
		sum += kvk_sample_weight(l, m, cfg->temperature);
		if (sum > r)
			return i;
	}
	return 0; /* not reached: the kept set holds the maximum */
}

/**
 * kvk_sample_cpu() - draw one token per row: temperature, top-k, top-p
 * @ids: out: [rows] token ids
 * @logits: [rows][vocab] of @dt
 * @u: [rows] uniform numbers in [0, 1), e.g. from kvk_rand_uniform()
 * @rows: number of rows; 0 is a no-op
 * @vocab: row length; > 0
 * @cfg: temperature, top_k, top_p (host memory)
 * @dt: dtype of @logits
 * @stream: ignored
 *
 * Tokens are ranked by logit, ties to the lower index. The kept set is the
 * top_k first (all when top_k is 0), then the smallest prefix of those whose
 * weight reaches top_p of theirs. Weights are exp((l - max) / T) in fixed
 * point (kvk_internal.h). The token drawn is the first, in index order, at
 * which the kept tokens' running weight exceeds floor(u * their total).
 * A temperature <= 0 is greedy: kvk_argmax_cpu().
 *
 * Return: 0, -EINVAL for a bad size, dtype, option or pointer, -ENOMEM.
 */
int kvk_sample_cpu(int32_t *ids, const void *logits, const float *u, int rows,
		   int vocab, const struct kvk_sample_cfg *cfg,
		   enum kvk_dtype dt, void *stream)
{
	struct sample_tok *tok;
	int ret;

	ret = kvk_rows_check(ids, logits, rows, vocab, dt);
	if (!ret)
		ret = kvk_sample_cfg_check(cfg);
	if (!ret && rows && !u)
		ret = -EINVAL;
	if (ret)
		return ret;
	if (cfg->temperature <= 0.0f)
		return kvk_argmax_cpu(ids, logits, rows, vocab, dt, stream);
	if (!rows)
		return 0;
	tok = malloc((size_t)vocab * sizeof(*tok));
	if (!tok)
		return -ENOMEM;
	for (int r = 0; r < rows; r++)
		ids[r] = sample_row(logits, (size_t)r * vocab, vocab, u[r], cfg,
				    dt, tok);
	free(tok);
	return 0;
}
