// SPDX-License-Identifier: MIT
/*
 * prefill.c - CPU reference of causal prefill attention and its token
 * scores (see prefill.h): fp32 arithmetic, one query row at a time.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "prefill.h"

/**
 * kvk_prefill_check() - validate prefill-attention arguments
 * @a: arguments (host struct; pointers not dereferenced)
 *
 * Return: 0 or -EINVAL.
 */
int kvk_prefill_check(const struct kvk_prefill_args *a)
{
	if (!a || !a->q || !a->k || !a->v || !a->out || !a->seq_start)
		return -EINVAL;
	if ((a->head_dim != 64 && a->head_dim != 128) || !a->nr_kv_heads ||
	    !a->nr_q_heads || a->nr_q_heads % a->nr_kv_heads ||
	    (a->dtype != KVK_F16 && a->dtype != KVK_BF16) ||
	    !(a->scale > 0.0f) || !isfinite(a->scale) ||
	    a->max_len > KVK_PREFILL_MAX_LEN)
		return -EINVAL;
	if (a->scores && (!a->lse || !a->score_window))
		return -EINVAL;
	if (a->score_mode < 0 || a->score_mode > KVK_ATTN_SCORE_SUMSQ)
		return -EINVAL;
	return 0;
}

static float *widen(const void *src, size_t n, enum kvk_dtype dt)
{
	float *f = malloc(n * sizeof(*f));

	if (f)
		kvk_convert_to_f32(f, src, n, dt);
	return f;
}

/**
 * kvk_prefill_cpu() - causal prefill attention (reference)
 * @a: arguments, host memory
 * @stream: ignored
 *
 * For each sequence, query head and row i: logits s_j = scale * q_i . k_j
 * over j <= i (fp32), softmax with the row max subtracted, out = sum p_j
 * v_j rounded once to @a->dtype; lse = max + log(sum). Scores: for each
 * kv-head and token t, the max over its query heads of the sum of p_i(t)
 * over the last W rows i >= t.
 *
 * Return: 0, -EINVAL (also for a sequence longer than @a->max_len), or
 * -ENOMEM.
 */
int kvk_prefill_cpu(const struct kvk_prefill_args *a, void *stream)
{
	uint32_t hd = a ? a->head_dim : 0, nq, nkv, group;
	size_t total;
	float *q = NULL, *k = NULL, *v = NULL, *s = NULL, *o = NULL;
	float *acc = NULL;
	int ret = -ENOMEM;
	bool sumsq;

	(void)stream;
	if (kvk_prefill_check(a))
		return -EINVAL;
	sumsq = a->score_mode == KVK_ATTN_SCORE_SUMSQ;
	nq = a->nr_q_heads;
	nkv = a->nr_kv_heads;
	group = nq / nkv;
	for (uint32_t sq = 0; sq < a->nr_seqs; sq++)
		if (a->seq_start[sq + 1] < a->seq_start[sq] ||
		    a->seq_start[sq + 1] - a->seq_start[sq] > a->max_len)
			return -EINVAL;
	total = a->seq_start[a->nr_seqs];
	if (!total)
		return 0;
	q = widen(a->q, total * nq * hd, a->dtype);
	k = widen(a->k, total * nkv * hd, a->dtype);
	v = widen(a->v, total * nkv * hd, a->dtype);
	s = malloc((size_t)a->max_len * sizeof(*s));
	o = malloc(hd * sizeof(*o));
	acc = malloc((size_t)a->max_len * sizeof(*acc));
	if (!q || !k || !v || !s || !o || !acc)
		goto out_free;
	if (a->scores)
		for (size_t i = 0; i < total * nkv; i++)
			a->scores[i] = 0.0f;
	for (uint32_t sq = 0; sq < a->nr_seqs; sq++) {
		uint32_t b = a->seq_start[sq], len = a->seq_start[sq + 1] - b;
		uint32_t w0 = len > a->score_window ? len - a->score_window : 0;

		for (uint32_t h = 0; h < nq; h++) {
			uint32_t kvh = h / group;

			if (a->scores)
				memset(acc, 0, len * sizeof(*acc));
			for (uint32_t i = 0; i < len; i++) {
				const float *qi =
					q + ((size_t)(b + i) * nq + h) * hd;
				float mx = -INFINITY, sum = 0.0f;

				for (uint32_t j = 0; j <= i; j++) {
					const float *kj =
						k + ((size_t)(b + j) * nkv +
						     kvh) * hd;
					float d = 0.0f;

					for (uint32_t e = 0; e < hd; e++)
						d += qi[e] * kj[e];
					s[j] = d * a->scale;
					mx = s[j] > mx ? s[j] : mx;
				}
				for (uint32_t j = 0; j <= i; j++) {
					s[j] = expf(s[j] - mx);
					sum += s[j];
				}
				memset(o, 0, hd * sizeof(*o));
				for (uint32_t j = 0; j <= i; j++) {
					const float *vj =
						v + ((size_t)(b + j) * nkv +
						     kvh) * hd;

					for (uint32_t e = 0; e < hd; e++)
						o[e] += s[j] * vj[e];
				}
				for (uint32_t e = 0; e < hd; e++)
					o[e] /= sum;
				kvk_convert_from_f32(
					(uint8_t *)a->out +
						((size_t)(b + i) * nq + h) *
							hd * 2,
					o, hd, a->dtype);
				if (a->lse)
					a->lse[(size_t)(b + i) * nq + h] =
						mx + logf(sum);
				if (a->scores && a->score_window && i >= w0)
					for (uint32_t j = 0; j <= i; j++)
						acc[j] += sumsq ? (s[j] / sum) *
								       (s[j] / sum)
							     : s[j] / sum;
			}
			if (!a->scores)
				continue;
			for (uint32_t t = 0; t < len; t++) {
				float *d =
					&a->scores[(size_t)(b + t) * nkv + kvh];

				*d = sumsq ? *d + acc[t]
					: acc[t] > *d ? acc[t] : *d;
			}
		}
	}
	ret = 0;
out_free:
	free(acc);
	free(o);
	free(s);
	free(v);
	free(k);
	free(q);
	return ret;
}
