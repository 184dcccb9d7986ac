// SPDX-License-Identifier: MIT
/*
 * forward_ref_cuda.c - CPU references of the CUDA executor's own kernels
 * (forward_cuda.cu), same signatures, host pointers. Built with CUDA only,
 * for the GPU suite that compares the two.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "forward_cuda.h"

/**
 * llm_split_cpu() - reference of llm_split_cuda()
 * @hi: @n elements of @dt
 * @lo: @n elements of @dt
 * @dt: KVK_F16 or KVK_BF16
 * @src: @n fp32
 * @n: elements
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_split_cpu(void *hi, void *lo, enum kvk_dtype dt, const float *src,
		  size_t n, void *stream)
{
	(void)stream;
	if (!hi || !lo || !src || (dt != KVK_F16 && dt != KVK_BF16))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		float h, r;

		kvk_convert_from_f32((uint8_t *)hi + 2 * i, &src[i], 1, dt);
		kvk_convert_to_f32(&h, (uint8_t *)hi + 2 * i, 1, dt);
		r = src[i] - h;
		kvk_convert_from_f32((uint8_t *)lo + 2 * i, &r, 1, dt);
	}
	return 0;
}

/**
 * llm_bias_add_cpu() - reference of llm_bias_add_cuda()
 * @y: [rows][n]
 * @b: [n]
 * @rows: rows
 * @n: row length; > 0
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_bias_add_cpu(float *y, const float *b, int rows, int n, void *stream)
{
	(void)stream;
	if (!y || !b || rows < 0 || n < 1)
		return -EINVAL;
	for (size_t r = 0; r < (size_t)rows; r++)
		for (int i = 0; i < n; i++)
			y[r * n + i] += b[i];
	return 0;
}

/* row @r of the GEMV for token @t: the lane sums, then the butterfly */
static float gemv_row(const uint8_t *wr, enum kvk_dtype wdt, const void *x,
		      enum kvk_dtype xdt, long off, int k, const float *nw,
		      float eps)
{
	float f[8], lane[32], ss[32], xe[8];

	for (int l = 0; l < 32; l++) {
		lane[l] = ss[l] = 0.0f;
		for (int c = l * 8; c < k; c += 256) {
			kvk_convert_to_f32(f, wr + c * 2, 8, wdt);
			kvk_convert_to_f32(xe, (const uint8_t *)x +
					       (off + c) * kvk_dtype_size(xdt),
					   8, xdt);
			for (int i = 0; i < 8; i++) {
				if (nw) {
					ss[l] += xe[i] * xe[i];
					xe[i] *= nw[c + i];
				}
			}
			lane[l] += f[0] * xe[0] + f[1] * xe[1] +
				   f[2] * xe[2] + f[3] * xe[3] +
				   f[4] * xe[4] + f[5] * xe[5] +
				   f[6] * xe[6] + f[7] * xe[7];
		}
	}
	for (int d = 16; d > 0; d /= 2) {
		float nl[32], ns[32];

		for (int l = 0; l < 32; l++) {
			nl[l] = lane[l] + lane[l ^ d];
			ns[l] = ss[l] + ss[l ^ d];
		}
		memcpy(lane, nl, sizeof(nl));
		memcpy(ss, ns, sizeof(ns));
	}
	return nw ? lane[0] * (1.0f / sqrtf(ss[0] / k + eps)) : lane[0];
}

/**
 * llm_gemv_cpu() - reference of llm_gemv_cuda(), host memory, the same
 * order of fp32 additions (lane slices, then a butterfly over 32 lanes)
 * @w: [n][k] weights of @wdt
 * @wdt: KVK_F16 or KVK_BF16
 * @x: [ntok][k] activations of @xdt, @ldx elements apart
 * @xdt: KVK_F32 or KVK_F16
 * @ldx: elements between tokens
 * @ntok: tokens, 0..LLM_GEMV_MAX_TOK
 * @n: rows
 * @k: columns, a multiple of 8
 * @nw: NULL or [k] RMSNorm weights applied to x first
 * @eps: RMSNorm epsilon
 * @o: outputs per row segment; with @o->glu, silu(row i) * row (n/2 + i)
 * @beta: 0 or the factor of the old outputs
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_gemv_cpu(const void *w, enum kvk_dtype wdt, const void *x,
		 enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		 const float *nw, float eps, const struct llm_gemv_out *o,
		 float beta, void *stream)
{
	int rows;

	(void)stream;
	if (!w || (wdt != KVK_F16 && wdt != KVK_BF16) ||
	    llm_gemv_args_check(x, xdt, ldx, ntok, n, k, 8, o))
		return -EINVAL;
	rows = o->glu ? n / 2 : n;
	for (int r = 0, s = 0, r0 = 0; r < rows; r++) {
		const uint8_t *wr = (const uint8_t *)w + (size_t)r * k * 2;

		while (r >= o->end[s])
			r0 = o->end[s++];
		for (int t = 0; t < ntok; t++) {
			float *y = o->y[s] + (r - r0) + t * o->ld[s];
			float v = gemv_row(wr, wdt, x, xdt, t * ldx, k, nw,
					   eps);

			if (o->glu) {
				float up = gemv_row(wr + (size_t)rows * k * 2,
						    wdt, x, xdt, t * ldx, k,
						    nw, eps);

				v = v / (1.0f + expf(-v)) * up;
			}
			*y = beta == 0.0f ? v : v + beta * *y;
		}
	}
	return 0;
}
