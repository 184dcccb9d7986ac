// SPDX-License-Identifier: MIT
/*
 * rope.c - rotary position embedding: the frequencies (with Llama-3
 * scaling), shared by both backends, and the CPU reference.
 */
#include <math.h>

#include "kvk_internal.h"

static int rope_cfg_ok(const struct kvk_rope_cfg *cfg)
{
	if (!cfg || !(cfg->theta > 0.0f) || isinf(cfg->theta))
		return 0;
	if (cfg->factor == 0.0f)
		return 1;
	return cfg->factor > 0.0f && cfg->orig_max_pos > 0 &&
	       cfg->low_freq_factor > 0.0f &&
	       cfg->high_freq_factor > cfg->low_freq_factor;
}

/**
 * kvk_rope_inv_freq() - the rotary frequencies of one head
 * @inv_freq: out: head_dim / 2 floats, in radians per position
 * @head_dim: even, at most KVK_ROPE_MAX_HEAD_DIM
 * @cfg: theta and the optional Llama-3 scaling
 *
 * inv_freq[i] = theta^(-2i / head_dim), then, when @cfg->factor is not 0,
 * rescaled as HF's _compute_llama3_parameters() does: wavelengths longer
 * than orig_max_pos / low_freq_factor are divided by factor, shorter than
 * orig_max_pos / high_freq_factor kept, and those between interpolated.
 * Computed in double, rounded to float once. Both kvk_rope_cpu() and
 * kvk_rope_cuda() use this table.
 *
 * Return: 0, or -EINVAL for a bad head_dim or configuration.
 */
int kvk_rope_inv_freq(float *inv_freq, int head_dim,
		      const struct kvk_rope_cfg *cfg)
{
	if (!inv_freq || !rope_cfg_ok(cfg) || head_dim <= 0 || head_dim % 2 ||
	    head_dim > KVK_ROPE_MAX_HEAD_DIM)
		return -EINVAL;
	for (int i = 0; i < head_dim / 2; i++) {
		double f = pow(cfg->theta, -2.0 * i / head_dim);

		if (cfg->factor != 0.0f) {
			double old = cfg->orig_max_pos;
			double lo = cfg->low_freq_factor;
			double hi = cfg->high_freq_factor;
			double wavelen = 2.0 * M_PI / f;

			if (wavelen > old / lo) {
				f /= cfg->factor;
			} else if (wavelen >= old / hi) {
				double s = (old / wavelen - lo) / (hi - lo);

				f = (1.0 - s) * f / cfg->factor + s * f;
			}
		}
		inv_freq[i] = (float)f;
	}
	return 0;
}

static void rope_heads(void *x, size_t base, int nh, int hd, const float *c,
		       const float *s, enum kvk_dtype dt)
{
	int half = hd / 2;

	for (int h = 0; h < nh; h++) {
		size_t o = base + (size_t)h * hd;

		for (int i = 0; i < half; i++) {
			float x0 = kvk_ld(x, o + i, dt);
			float x1 = kvk_ld(x, o + i + half, dt);

			kvk_st(x, o + i, x0 * c[i] - x1 * s[i], dt);
			kvk_st(x, o + i + half, x1 * c[i] + x0 * s[i], dt);
		}
	}
}

/**
 * kvk_rope_cpu() - rotate queries and keys in place (NeoX / HF Llama layout)
 * @q: [ntok][nq][head_dim] of @dt, rotated in place; NULL when @nq is 0
 * @k: [ntok][nkv][head_dim] of @dt, rotated in place; NULL when @nkv is 0
 * @pos: [ntok] position of each token
 * @ntok: number of tokens; 0 is a no-op
 * @nq: query heads
 * @nkv: key heads
 * @head_dim: even, at most KVK_ROPE_MAX_HEAD_DIM (64, 128, 256 in practice)
 * @cfg: theta and Llama-3 scaling, see kvk_rope_inv_freq()
 * @dt: dtype of @q and @k
 * @stream: ignored
 *
 * Rotate-half layout: element i pairs with i + head_dim/2, angle
 * pos * inv_freq[i] (the product in fp32, as HF computes it):
 * x'[i] = x[i] cos - x[i+h] sin, x'[i+h] = x[i+h] cos + x[i] sin.
 *
 * Return: 0, or -EINVAL for a bad size, dtype, configuration or pointer.
 */
int kvk_rope_cpu(void *q, void *k, const int32_t *pos, int ntok, int nq,
		 int nkv, int head_dim, const struct kvk_rope_cfg *cfg,
		 enum kvk_dtype dt, void *stream)
{
	float inv[KVK_ROPE_MAX_HEAD_DIM / 2];
	float c[KVK_ROPE_MAX_HEAD_DIM / 2], s[KVK_ROPE_MAX_HEAD_DIM / 2];
	int ret = kvk_rope_check(q, k, pos, ntok, nq, nkv, head_dim, cfg, dt);

	(void)stream;
	if (ret)
		return ret;
	ret = kvk_rope_inv_freq(inv, head_dim, cfg);
	if (ret)
		return ret;
	for (int t = 0; t < ntok; t++) {
		for (int i = 0; i < head_dim / 2; i++) {
			float a = (float)pos[t] * inv[i];

			c[i] = cosf(a);
			s[i] = sinf(a);
		}
		rope_heads(q, (size_t)t * nq * head_dim, nq, head_dim, c, s,
			   dt);
		rope_heads(k, (size_t)t * nkv * head_dim, nkv, head_dim, c, s,
			   dt);
	}
	return 0;
}
