// SPDX-License-Identifier: MIT
/*
 * chnorm.c - per-channel key normalization, CPU reference of
 * kvk_chnorm_cuda() (chnorm.cu); see chnorm.h.
 *
 * DOC: per-channel key normalization
 *
 * Keys of a head have outlier channels that stay large, or far from zero,
 * in every token (KIVI, arXiv 2402.02750, quantizes keys per channel for
 * that reason). A per-token quantizer spends its whole range on them. Here
 * each (sequence, kv-head) gets, from its prompt's keys, a mean m_c and a
 * scale s_c per channel; keys are stored as (k - m) / s, queries attend
 * as q * s. Then (q * s) . ((k - m) / s) = q . k - q . m, and q . m is
 * the same for every token of the head, which softmax ignores: attention
 * is unchanged but for quantization, while every channel of the stored
 * keys spans about the same range. Values are quantized per token as they
 * are (KIVI does the same).
 */
#include <errno.h>
#include <math.h>

#include "chnorm.h"

/**
 * kvk_chnorm_check() - validate arguments
 * @a: arguments (pointers not dereferenced)
 *
 * Return: 0 or -EINVAL.
 */
int kvk_chnorm_check(const struct kvk_chn_args *a)
{
	if (!a || !a->x || !a->list_base || !a->param || !a->heads ||
	    !a->group || a->heads % a->group || a->head_dim < 2 ||
	    a->head_dim > 256 || a->op < 0 || a->op >= KVK_CHN_NR ||
	    !a->nr_seqs)
		return -EINVAL;
	if (a->op == KVK_CHN_STATS && a->group != 1)
		return -EINVAL;
	if (!a->seq_start && a->ntok != a->nr_seqs)
		return -EINVAL;
	return 0;
}

/* the sequence of token @t: the last s with seq_start[s] <= t */
static uint32_t seq_of(const struct kvk_chn_args *a, uint32_t t)
{
	uint32_t lo = 0, hi = a->nr_seqs - 1;

	if (!a->seq_start)
		return t;
	while (lo < hi) {
		uint32_t mid = (lo + hi + 1) / 2;

		if (a->seq_start[mid] <= t)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static void stats(const struct kvk_chn_args *a, uint32_t s, uint32_t h)
{
	uint32_t d = a->head_dim, b = a->seq_start ? a->seq_start[s] : s;
	uint32_t e = a->seq_start ? a->seq_start[s + 1] : s + 1;
	float *m = a->param + (size_t)(a->list_base[s] + h) * 2 * d;
	float *sc = m + d, g = 0.0f;

	if (e <= b)
		return;
	for (uint32_t c = 0; c < d; c++) {
		float sum = 0.0f, dev = 0.0f;

		for (uint32_t t = b; t < e; t++)
			sum += a->x[((size_t)t * a->heads + h) * d + c];
		m[c] = sum / (float)(e - b);
		for (uint32_t t = b; t < e; t++) {
			float v = fabsf(a->x[((size_t)t * a->heads + h) * d +
					     c] - m[c]);

			dev = v > dev ? v : dev;
		}
		sc[c] = dev;
	}
	for (uint32_t c = 0; c < d; c++)
		g += sc[c];
	g /= (float)d;
	for (uint32_t c = 0; c < d; c++) {
		float r = g > 0.0f ? sc[c] / g : 1.0f;

		sc[c] = r > KVK_CHN_MIN_SCALE ? r : KVK_CHN_MIN_SCALE;
	}
}

/**
 * kvk_chnorm_cpu() - per-channel key normalization (reference)
 * @a: arguments, host memory (struct kvk_chn_args)
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int kvk_chnorm_cpu(const struct kvk_chn_args *a, void *stream)
{
	uint32_t d;

	(void)stream;
	if (kvk_chnorm_check(a))
		return -EINVAL;
	d = a->head_dim;
	if (a->op == KVK_CHN_STATS) {
		for (uint32_t s = 0; s < a->nr_seqs; s++)
			for (uint32_t h = 0; h < a->heads; h++)
				stats(a, s, h);
		return 0;
	}
	for (uint32_t t = 0; t < a->ntok; t++) {
		uint32_t s = seq_of(a, t);

		for (uint32_t h = 0; h < a->heads; h++) {
			const float *m = a->param +
					 (size_t)(a->list_base[s] + h / a->group) *
						 2 * d;
			float *x = a->x + ((size_t)t * a->heads + h) * d;

			for (uint32_t c = 0; c < d; c++)
				x[c] = a->op == KVK_CHN_KEYS
					       ? (x[c] - m[c]) / m[d + c]
					       : x[c] * m[d + c];
		}
	}
	return 0;
}
