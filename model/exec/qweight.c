// SPDX-License-Identifier: MIT
/*
 * qweight.c - 8- and 4-bit weight matrices: the host quantizer and the CPU
 * references of qweight.cu's kernels (see qweight.h for the layouts).
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "qweight.h"

/**
 * llm_qw_quantize_rows() - quantize @n rows of @k fp32 weights
 * @f: LLM_QW8 (scale by the group's absolute maximum, values -127..127) or
 *	LLM_QW4 (Q4_1: d = (max - min) / 15, m = min, values 0..15)
 * @src: [n][k] fp32
 * @n: rows
 * @k: columns, a multiple of LLM_QW_GROUP
 * @q: [n] rows of llm_qw_row_bytes() bytes
 * @meta: [n] rows of llm_qw_meta_bytes() bytes
 *
 * Scales are rounded to fp16 first and the values quantized against the
 * rounded scale, so that d * q (+ m) is the nearest the format holds.
 *
 * Return: 0, or -EINVAL for a bad format, shape or a non-finite weight.
 */
int llm_qw_quantize_rows(enum llm_qw_fmt f, const float *src, size_t n,
			 size_t k, void *q, void *meta)
{
	if ((f != LLM_QW8 && f != LLM_QW4) || !src || !q || !meta || !k ||
	    k % LLM_QW_GROUP)
		return -EINVAL;
	for (size_t r = 0; r < n; r++) {
		uint8_t *qr = (uint8_t *)q + r * llm_qw_row_bytes(f, k);
		uint16_t *mr = (uint16_t *)((uint8_t *)meta +
					    r * llm_qw_meta_bytes(f, k));

		for (size_t g = 0; g < k / LLM_QW_GROUP; g++) {
			const float *x = src + r * k + g * LLM_QW_GROUP;
			float lo = x[0], hi = x[0], amax = 0.0f, d, m, id;

			for (int i = 0; i < LLM_QW_GROUP; i++) {
				if (!isfinite(x[i]))
					return -EINVAL;
				lo = x[i] < lo ? x[i] : lo;
				hi = x[i] > hi ? x[i] : hi;
				amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
			}
			if (f == LLM_QW8) {
				mr[g] = kvk_f32_to_f16(amax / 127.0f);
				d = kvk_f16_to_f32(mr[g]);
				id = d > 0.0f ? 1.0f / d : 0.0f;
				for (int i = 0; i < LLM_QW_GROUP; i++) {
					float v = roundf(x[i] * id);

					v = v > 127.0f ? 127.0f :
					    v < -127.0f ? -127.0f : v;
					qr[g * LLM_QW_GROUP + i] =
						(uint8_t)(int8_t)v;
				}
				continue;
			}
			mr[2 * g] = kvk_f32_to_f16((hi - lo) / 15.0f);
			mr[2 * g + 1] = kvk_f32_to_f16(lo);
			d = kvk_f16_to_f32(mr[2 * g]);
			m = kvk_f16_to_f32(mr[2 * g + 1]);
			id = d > 0.0f ? 1.0f / d : 0.0f;
			for (int j = 0; j < LLM_QW_GROUP / 2; j++) {
				float a = roundf((x[j] - m) * id);
				float b = roundf((x[j + 16] - m) * id);

				a = a < 0.0f ? 0.0f : a > 15.0f ? 15.0f : a;
				b = b < 0.0f ? 0.0f : b > 15.0f ? 15.0f : b;
				qr[g * 16 + j] = (uint8_t)((int)a |
							   (int)b << 4);
			}
		}
	}
	return 0;
}

/* weight @c of row @r, as the kernels compute it: fma(d, q, m) in fp32 */
static float qw_at(const struct llm_qw *w, int k, int r, int c)
{
	const uint8_t *q = (const uint8_t *)w->q +
			   (size_t)r * llm_qw_row_bytes(w->fmt, k);
	const uint16_t *m = (const uint16_t *)((const uint8_t *)w->meta +
				(size_t)r * llm_qw_meta_bytes(w->fmt, k));
	int g = c / LLM_QW_GROUP, j = c % LLM_QW_GROUP;

	if (w->fmt == LLM_QW8)
		return kvk_f16_to_f32(m[g]) * (float)(int8_t)q[c];
	return fmaf(kvk_f16_to_f32(m[2 * g]),
		    (float)(j < 16 ? q[g * 16 + j] & 15 : q[g * 16 + j - 16] >> 4),
		    kvk_f16_to_f32(m[2 * g + 1]));
}

static bool qw_ok(const struct llm_qw *w, int n, int k)
{
	return w && (w->fmt == LLM_QW8 || w->fmt == LLM_QW4) && w->q &&
	       w->meta && n >= 1 && k >= LLM_QW_GROUP && k % LLM_QW_GROUP == 0;
}

/**
 * llm_qw_dequant_cpu() - reference of llm_qw_dequant_cuda(): @w expanded
 * to @dt, d * q (Q8) or fma(d, q, m) (Q4) in fp32, rounded once
 * @dst: [n][k] of @dt (KVK_F32, KVK_F16 or KVK_BF16)
 * @dt: destination type
 * @w: the matrix
 * @n: rows
 * @k: columns, a multiple of LLM_QW_GROUP
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_qw_dequant_cpu(void *dst, enum kvk_dtype dt, const struct llm_qw *w,
		       int n, int k, void *stream)
{
	(void)stream;
	if (!dst || !qw_ok(w, n, k) ||
	    (dt != KVK_F32 && dt != KVK_F16 && dt != KVK_BF16))
		return -EINVAL;
	for (int r = 0; r < n; r++)
		for (int c = 0; c < k; c++) {
			float v = qw_at(w, k, r, c);
			size_t i = (size_t)r * k + c;

			if (dt == KVK_F32)
				((float *)dst)[i] = v;
			else if (dt == KVK_F16)
				((uint16_t *)dst)[i] = kvk_f32_to_f16(v);
			else
				((uint16_t *)dst)[i] = kvk_f32_to_bf16(v);
		}
	return 0;
}

static float x_at(const void *x, enum kvk_dtype xdt, size_t i)
{
	return xdt == KVK_F32 ? ((const float *)x)[i] :
				kvk_f16_to_f32(((const uint16_t *)x)[i]);
}

/*
 * One group of 32 activations from @x (times @nw where given; the raw
 * squares into @ss) quantized as llm_qgemv_cuda() does: d = amax / 127,
 * each value rounded to nearest-even by adding 1.5 * 2^23 in one fma.
 */
static void qgemv_quant_x(const void *x, enum kvk_dtype xdt, size_t off,
			  const float *nw, int8_t *xq, float *dx, int *xs,
			  double *ss)
{
	float a[LLM_QW_GROUP], amax = 0.0f, inv;

	for (int i = 0; i < LLM_QW_GROUP; i++) {
		a[i] = x_at(x, xdt, off + i);
		*ss += (double)a[i] * a[i];
		if (nw)
			a[i] = a[i] * nw[i];
		amax = fabsf(a[i]) > amax ? fabsf(a[i]) : amax;
	}
	inv = amax > 0.0f ? 127.0f / amax : 0.0f;
	*dx = amax / 127.0f;
	*xs = 0;
	for (int i = 0; i < LLM_QW_GROUP; i++) {
		xq[i] = (int8_t)(fmaf(a[i], inv, 12582912.0f) - 12582912.0f);
		*xs += xq[i];
	}
}

/*
 * row @r on token @t: per group, the integer dot product of the weights'
 * values with the quantized activations (qgemv_quant_x()), d_w * (d_x *
 * sum) (+ m_w * (d_x * sum of x) for Q4) in fp32, summed in double
 */
static float qgemv_row(const struct llm_qw *w, int k, int r, const void *x,
		       enum kvk_dtype xdt, size_t off, const float *nw,
		       float eps)
{
	const uint8_t *q = (const uint8_t *)w->q +
			   (size_t)r * llm_qw_row_bytes(w->fmt, k);
	const uint16_t *m = (const uint16_t *)((const uint8_t *)w->meta +
				(size_t)r * llm_qw_meta_bytes(w->fmt, k));
	double acc = 0.0, ss = 0.0;

	for (int g = 0; g < k / LLM_QW_GROUP; g++) {
		int8_t xq[LLM_QW_GROUP];
		int xs, is = 0;
		float dx;

		qgemv_quant_x(x, xdt, off + (size_t)g * LLM_QW_GROUP,
			      nw ? nw + g * LLM_QW_GROUP : NULL, xq, &dx, &xs,
			      &ss);
		for (int j = 0; j < LLM_QW_GROUP; j++) {
			int v;

			if (w->fmt == LLM_QW8)
				v = (int8_t)q[g * LLM_QW_GROUP + j];
			else
				v = j < 16 ? q[g * 16 + j] & 15 :
					     q[g * 16 + j - 16] >> 4;
			is += v * xq[j];
		}
		if (w->fmt == LLM_QW8) {
			acc += kvk_f16_to_f32(m[g]) * (dx * (float)is);
		} else {
			acc += kvk_f16_to_f32(m[2 * g]) * (dx * (float)is);
			acc += kvk_f16_to_f32(m[2 * g + 1]) * (dx * (float)xs);
		}
	}
	return nw ? (float)(acc / sqrt(ss / k + eps)) : (float)acc;
}

/**
 * llm_qgemv_cpu() - reference of llm_qgemv_cuda(): y = beta y + W x for a
 * few tokens, W quantized and x quantized per group of 32 to int8 (as
 * GGUF's Q8_1 activations: the dot products run in integers); the
 * arguments and outputs of llm_gemv_cpu() (forward_cuda.h), sums in double
 * (the kernel's fp32 sums agree to about 1e-6 relative)
 * @w: the matrix, [n][k] (host)
 * @x: [ntok][k] activations of @xdt (KVK_F32 or KVK_F16), @ldx apart
 * @xdt: activation type
 * @ldx: elements between tokens, >= @k
 * @ntok: 0..LLM_GEMV_MAX_TOK
 * @n: rows
 * @k: columns, a multiple of LLM_QW_GROUP
 * @nw: NULL or [k] RMSNorm weights applied to x first
 * @eps: RMSNorm epsilon
 * @o: outputs per row segment; with @o->glu, silu(row i) * row (n/2 + i)
 * @beta: 0 or the factor of the old outputs
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_qgemv_cpu(const struct llm_qw *w, const void *x, enum kvk_dtype xdt,
		  long ldx, int ntok, int n, int k, const float *nw, float eps,
		  const struct llm_gemv_out *o, float beta, void *stream)
{
	int rows;

	(void)stream;
	if (!qw_ok(w, n, k) ||
	    llm_gemv_args_check(x, xdt, ldx, ntok, n, k, LLM_QW_GROUP, o))
		return -EINVAL;
	rows = o->glu ? n / 2 : n;
	for (int r = 0, s = 0, r0 = 0; r < rows; r++) {
		while (r >= o->end[s])
			r0 = o->end[s++];
		for (int t = 0; t < ntok; t++) {
			float *y = o->y[s] + (r - r0) + t * o->ld[s];
			float v = qgemv_row(w, k, r, x, xdt, (size_t)t * ldx,
					    nw, eps);

			if (o->glu) {
				float up = qgemv_row(w, k, r + rows, x, xdt,
						     (size_t)t * ldx, nw, eps);

				v = v / (1.0f + expf(-v)) * up;
			}
			*y = beta == 0.0f ? v : v + beta * *y;
		}
	}
	return 0;
}
