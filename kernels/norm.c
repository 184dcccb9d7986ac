// SPDX-License-Identifier: MIT
/*
 * norm.c - CPU references: RMSNorm, SiLU-mul, residual add, embedding
 * gather. Each is the specification of the kernel of the same name in
 * norm.cu; sums are taken in double, values rounded once on store.
 */
#include <math.h>

#include "kvk_internal.h"

/**
 * kvk_rmsnorm_cpu() - RMSNorm of each row, scaled by a weight vector
 * @out: [rows][dim] of @dt; may be @x (in place)
 * @x: [rows][dim] of @dt
 * @w: [dim] of @dt
 * @rows: number of rows (tokens); 0 is a no-op
 * @dim: row length (hidden size); > 0
 * @eps: added to the mean square; >= 0
 * @dt: dtype of @out, @x and @w
 * @stream: ignored
 *
 * out = (x * (1 / sqrt(mean(x^2) + eps))) * w, the products in fp32, as HF
 * LlamaRMSNorm computes it (with one rounding to @dt at the end).
 *
 * Return: 0, or -EINVAL for a bad size, dtype, eps or pointer.
 */
int kvk_rmsnorm_cpu(void *out, const void *x, const void *w, int rows, int dim,
		    float eps, enum kvk_dtype dt, void *stream)
{
	int ret = kvk_rmsnorm_check(out, x, w, rows, dim, eps, dt);

	(void)stream;
	if (ret)
		return ret;
	for (int r = 0; r < rows; r++) {
		size_t base = (size_t)r * dim;
		double ss = 0.0;
		float inv;

		for (int j = 0; j < dim; j++) {
			double v = kvk_ld(x, base + j, dt);

			ss += v * v;
		}
		inv = (float)(1.0 / sqrt(ss / dim + eps));
		for (int j = 0; j < dim; j++) {
			float v = kvk_ld(x, base + j, dt) * inv;

			kvk_st(out, base + j, v * kvk_ld(w, j, dt), dt);
		}
	}
	return 0;
}

/**
 * kvk_silu_mul_cpu() - the SwiGLU gate: out = silu(gate) * up
 * @out: n elements of @dt; may be @gate or @up
 * @gate: n elements of @dt
 * @up: n elements of @dt
 * @n: element count; 0 is a no-op
 * @dt: dtype of all three
 * @stream: ignored
 *
 * silu(g) = g / (1 + e^-g), in fp32.
 *
 * Return: 0, or -EINVAL for a bad dtype or pointer.
 */
int kvk_silu_mul_cpu(void *out, const void *gate, const void *up, size_t n,
		     enum kvk_dtype dt, void *stream)
{
	int ret = kvk_ew_check(out, gate, up, n, dt);

	(void)stream;
	if (ret)
		return ret;
	for (size_t i = 0; i < n; i++) {
		float g = kvk_ld(gate, i, dt);
		float s = g / (1.0f + expf(-g));

		kvk_st(out, i, s * kvk_ld(up, i, dt), dt);
	}
	return 0;
}

/**
 * kvk_add_cpu() - residual add: out = a + b
 * @out: n elements of @dt; may be @a or @b
 * @a: n elements of @dt
 * @b: n elements of @dt
 * @n: element count; 0 is a no-op
 * @dt: dtype of all three
 * @stream: ignored
 *
 * Return: 0, or -EINVAL for a bad dtype or pointer.
 */
int kvk_add_cpu(void *out, const void *a, const void *b, size_t n,
		enum kvk_dtype dt, void *stream)
{
	int ret = kvk_ew_check(out, a, b, n, dt);

	(void)stream;
	if (ret)
		return ret;
	for (size_t i = 0; i < n; i++)
		kvk_st(out, i, kvk_ld(a, i, dt) + kvk_ld(b, i, dt), dt);
	return 0;
}

/**
 * kvk_embed_cpu() - embedding gather: out[t] = table[ids[t]]
 * @out: [ntok][dim] of @dt
 * @table: [vocab][dim] of @dt
 * @ids: [ntok] token ids
 * @ntok: number of tokens; 0 is a no-op
 * @dim: row length; > 0
 * @vocab: rows of @table; > 0
 * @dt: dtype of @out and @table
 * @stream: ignored
 *
 * An id outside [0, vocab) yields a row of zeros on both backends (the
 * kernel cannot fail once launched).
 *
 * Return: 0, or -EINVAL for a bad size, dtype or pointer.
 */
int kvk_embed_cpu(void *out, const void *table, const int32_t *ids, int ntok,
		  int dim, int vocab, enum kvk_dtype dt, void *stream)
{
	int ret = kvk_embed_check(out, table, ids, ntok, dim, vocab, dt);
	size_t es = kvk_dtype_size(dt), row = (size_t)dim * es;

	(void)stream;
	if (ret)
		return ret;
	for (int t = 0; t < ntok; t++) {
		char *dst = (char *)out + (size_t)t * row;

		if (ids[t] < 0 || ids[t] >= vocab)
			memset(dst, 0, row);
		else
			memcpy(dst, (const char *)table + (size_t)ids[t] * row,
			       row);
	}
	return 0;
}
