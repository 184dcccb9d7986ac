// SPDX-License-Identifier: MIT
/*
 * qdot.c - GGUF block formats on the CPU: dequantisation, activation
 * quantisation, the portable (reference) dot products and the run-time
 * choice of instruction set. See qdot.h.
 *
 * DOC: the reference path
 *
 * Every SIMD kernel (qdot_avx2.c, qdot_avx512.c) computes what the C path
 * below computes: per block, the exact integer sum of products, then one
 * fp32 multiply-add by the block's scales. The results differ only by the
 * order of the fp32 additions, so the tests compare them with a relative
 * bound of a few ulps of the row's sum of |terms|.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "kvk.h"
#include "qdot.h"
#include "qdot_int.h"

/**
 * kvk_qtype_name() - printable name of a GGUF tensor type
 * @type: ggml/GGUF type number
 *
 * Every type GGUF defines is named, supported or not, so that an error can
 * say which one a file holds.
 *
 * Return: "Q4_1", "IQ2_XXS", ..., or "unknown".
 */
const char *kvk_qtype_name(uint32_t type)
{
	static const char *const names[] = {
		[0] = "F32",	 [1] = "F16",	   [2] = "Q4_0",
		[3] = "Q4_1",	 [6] = "Q5_0",	   [7] = "Q5_1",
		[8] = "Q8_0",	 [9] = "Q8_1",	   [10] = "Q2_K",
		[11] = "Q3_K",	 [12] = "Q4_K",	   [13] = "Q5_K",
		[14] = "Q6_K",	 [15] = "Q8_K",	   [16] = "IQ2_XXS",
		[17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S",
		[20] = "IQ4_NL", [21] = "IQ3_S",   [22] = "IQ2_S",
		[23] = "IQ4_XS", [24] = "I8",	   [25] = "I16",
		[26] = "I32",	 [27] = "I64",	   [28] = "F64",
		[29] = "IQ1_M",	 [30] = "BF16",	   [34] = "TQ1_0",
		[35] = "TQ2_0",	 [39] = "MXFP4",
	};

	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return "unknown";
}

/**
 * kvk_qtype_layout() - block layout of a weight format
 * @type: enum kvk_qtype value (a weight format, or Q8_K)
 * @blck: elements per block (1 for the float types)
 * @bytes: bytes per block
 *
 * Return: 0, or -EOPNOTSUPP for a type this module does not handle.
 */
int kvk_qtype_layout(uint32_t type, uint32_t *blck, uint32_t *bytes)
{
	uint32_t b = KVK_QK, s;

	switch (type) {
	case KVK_QT_F32: b = 1; s = 4; break;
	case KVK_QT_F16: b = 1; s = 2; break;
	case KVK_QT_BF16: b = 1; s = 2; break;
	case KVK_QT_Q4_0: s = sizeof(struct qd_q4_0); break;
	case KVK_QT_Q4_1: s = sizeof(struct qd_q4_1); break;
	case KVK_QT_Q5_0: s = sizeof(struct qd_q5_0); break;
	case KVK_QT_Q5_1: s = sizeof(struct qd_q5_1); break;
	case KVK_QT_Q8_0: s = sizeof(struct qd_q8_0); break;
	case KVK_QT_Q4_K: b = KVK_QK_K; s = sizeof(struct qd_q4_k); break;
	case KVK_QT_Q5_K: b = KVK_QK_K; s = sizeof(struct qd_q5_k); break;
	case KVK_QT_Q6_K: b = KVK_QK_K; s = sizeof(struct qd_q6_k); break;
	case KVK_QT_Q8_K: b = KVK_QK_K; s = sizeof(struct kvk_q8k); break;
	default: return -EOPNOTSUPP;
	}
	*blck = b;
	*bytes = s;
	return 0;
}

/**
 * kvk_qdot_supported() - whether @type has dot products here
 * @type: a weight format
 *
 * Return: true for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K.
 */
bool kvk_qdot_supported(uint32_t type)
{
	return qdot_tab_c(type) != NULL;
}

static int kvk_qdot_isa_cached(void);

static inline float h2f(uint16_t h)
{
	return kvk_f16_to_f32(h);
}

static void deq_q4_0(const struct qd_q4_0 *b, float *y)
{
	float d = h2f(b->d);

	for (int j = 0; j < 16; j++) {
		y[j] = (float)((b->qs[j] & 0xf) - 8) * d;
		y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
	}
}

static void deq_q4_1(const struct qd_q4_1 *b, float *y)
{
	float d = h2f(b->d), m = h2f(b->m);

	for (int j = 0; j < 16; j++) {
		y[j] = (float)(b->qs[j] & 0xf) * d + m;
		y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
	}
}

/* the 32 five-bit values of a Q5_0/Q5_1 block */
static void q5_values(const uint8_t *qh4, const uint8_t *qs, int *q)
{
	uint32_t qh;

	memcpy(&qh, qh4, 4);
	for (int j = 0; j < 16; j++) {
		q[j] = (qs[j] & 0xf) | ((qh >> j) & 1) << 4;
		q[j + 16] = (qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
	}
}

static void deq_q5_0(const struct qd_q5_0 *b, float *y)
{
	float d = h2f(b->d);
	int q[KVK_QK];

	q5_values(b->qh, b->qs, q);
	for (int j = 0; j < KVK_QK; j++)
		y[j] = (float)(q[j] - 16) * d;
}

static void deq_q5_1(const struct qd_q5_1 *b, float *y)
{
	float d = h2f(b->d), m = h2f(b->m);
	int q[KVK_QK];

	q5_values(b->qh, b->qs, q);
	for (int j = 0; j < KVK_QK; j++)
		y[j] = (float)q[j] * d + m;
}

static void deq_q8_0(const struct qd_q8_0 *b, float *y)
{
	float d = h2f(b->d);

	for (int j = 0; j < KVK_QK; j++)
		y[j] = (float)b->qs[j] * d;
}

/* the 256 values (0..15 or 0..31) of a Q4_K or Q5_K super-block */
static void k45_values(const uint8_t *qs, const uint8_t *qh, int *q)
{
	for (int g = 0; g < 4; g++)
		for (int l = 0; l < 32; l++) {
			int lo = qs[32 * g + l] & 0xf, hi = qs[32 * g + l] >> 4;

			if (qh) {
				lo |= ((qh[l] >> (2 * g)) & 1) << 4;
				hi |= ((qh[l] >> (2 * g + 1)) & 1) << 4;
			}
			q[64 * g + l] = lo;
			q[64 * g + 32 + l] = hi;
		}
}

static void deq_k45(uint16_t dh, uint16_t mh, const uint8_t *s12,
		    const uint8_t *qs, const uint8_t *qh, float *y)
{
	float d = h2f(dh), dmin = h2f(mh);
	uint8_t sm[16];
	int q[KVK_QK_K];

	qdot_k4_scales(s12, sm);
	k45_values(qs, qh, q);
	for (int i = 0; i < KVK_QK_K; i++)
		y[i] = d * sm[i / 32] * q[i] - dmin * sm[8 + i / 32];
}

/* the 256 values (0..63) of a Q6_K super-block */
static void k6_values(const struct qd_q6_k *b, int *q)
{
	for (int h = 0; h < 2; h++)
		for (int c = 0; c < 4; c++)
			for (int l = 0; l < 32; l++) {
				uint8_t lo = b->ql[64 * h + 32 * (c & 1) + l];

				lo = c < 2 ? lo & 0xf : lo >> 4;
				q[128 * h + 32 * c + l] =
					lo | ((b->qh[32 * h + l] >> (2 * c)) & 3)
						     << 4;
			}
}

static void deq_q6_k(const struct qd_q6_k *b, float *y)
{
	float d = h2f(b->d);
	int q[KVK_QK_K];

	k6_values(b, q);
	for (int i = 0; i < KVK_QK_K; i++)
		y[i] = d * b->scales[i / 16] * (q[i] - 32);
}

/**
 * kvk_qdot_dequant() - convert @n elements of a weight format to fp32
 * @type: any type kvk_qtype_layout() knows (float types too, but Q8_K)
 * @src: the raw blocks (any alignment)
 * @dst: @n floats
 * @n: elements, a whole number of blocks
 *
 * The values are those of ggml's dequantize_row_*() (checked against the
 * gguf Python package by tests/ref/gguf_quants.py).
 *
 * Return: 0, -EOPNOTSUPP for an unknown type, -EINVAL if @n is not a whole
 * number of blocks.
 */
int kvk_qdot_dequant(uint32_t type, const void *src, float *dst, size_t n)
{
	const uint8_t *p = src;
	uint32_t blck, bsz;
	uint16_t h;
	int ret = kvk_qtype_layout(type, &blck, &bsz);

	if (ret || type == KVK_QT_Q8_K)
		return ret ? ret : -EOPNOTSUPP;
	if (n % blck)
		return -EINVAL;
	for (size_t i = 0; i < n / blck; i++, p += bsz, dst += blck) {
		union {
			struct qd_q4_0 q4_0;
			struct qd_q4_1 q4_1;
			struct qd_q5_0 q5_0;
			struct qd_q5_1 q5_1;
			struct qd_q8_0 q8_0;
			struct qd_q4_k q4_k;
			struct qd_q5_k q5_k;
			struct qd_q6_k q6_k;
		} b;

		memcpy(&b, p, bsz);
		switch (type) {
		case KVK_QT_F32: memcpy(dst, p, 4); break;
		case KVK_QT_F16:
			memcpy(&h, p, 2);
			dst[0] = h2f(h);
			break;
		case KVK_QT_BF16:
			memcpy(&h, p, 2);
			dst[0] = kvk_bf16_to_f32(h);
			break;
		case KVK_QT_Q4_0: deq_q4_0(&b.q4_0, dst); break;
		case KVK_QT_Q4_1: deq_q4_1(&b.q4_1, dst); break;
		case KVK_QT_Q5_0: deq_q5_0(&b.q5_0, dst); break;
		case KVK_QT_Q5_1: deq_q5_1(&b.q5_1, dst); break;
		case KVK_QT_Q8_0: deq_q8_0(&b.q8_0, dst); break;
		case KVK_QT_Q4_K:
			deq_k45(b.q4_k.d, b.q4_k.dmin, b.q4_k.scales,
				b.q4_k.qs, NULL, dst);
			break;
		case KVK_QT_Q5_K:
			deq_k45(b.q5_k.d, b.q5_k.dmin, b.q5_k.scales,
				b.q5_k.qs, b.q5_k.qh, dst);
			break;
		case KVK_QT_Q6_K: deq_q6_k(&b.q6_k, dst); break;
		}
	}
	return 0;
}

/**
 * kvk_qdot_act_type() - the activation format a weight format's dot takes
 * @wtype: a weight format
 *
 * Return: KVK_QT_Q8_K for the K-quants, KVK_QT_Q8_0 (struct kvk_qa8) for
 * the 32-element formats, 0 (F32) for a type without dot products.
 */
uint32_t kvk_qdot_act_type(uint32_t wtype)
{
	switch (wtype) {
	case KVK_QT_Q4_K:
	case KVK_QT_Q5_K:
	case KVK_QT_Q6_K:
		return KVK_QT_Q8_K;
	case KVK_QT_Q4_0:
	case KVK_QT_Q4_1:
	case KVK_QT_Q5_0:
	case KVK_QT_Q5_1:
	case KVK_QT_Q8_0:
		return KVK_QT_Q8_0;
	}
	return KVK_QT_F32;
}

/**
 * kvk_qdot_act_bytes() - bytes of one activation row of @k elements
 * @wtype: the weight format the row will meet
 * @k: elements (a multiple of the format's block)
 *
 * Return: the bytes, or 0 for an unsupported format or a partial block.
 */
size_t kvk_qdot_act_bytes(uint32_t wtype, size_t k)
{
	switch (kvk_qdot_act_type(wtype)) {
	case KVK_QT_Q8_K:
		return k % KVK_QK_K ? 0 : k / KVK_QK_K * sizeof(struct kvk_q8k);
	case KVK_QT_Q8_0:
		return k % KVK_QK ? 0 : k / KVK_QK * sizeof(struct kvk_qa8);
	}
	return 0;
}

/* the scale of @n values: max |x| / 127 and its inverse (0 for zeros) */
static float act_scale(const float *x, int n, float *inv)
{
	float amax = 0.0f;

	for (int i = 0; i < n; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	*inv = amax > 0.0f ? 127.0f / amax : 0.0f;
	return amax / 127.0f;
}

/**
 * kvk_qdot_quantize() - quantise one activation row for @wtype's dot
 * @wtype: the weight format the row will meet
 * @x: @k floats (finite)
 * @qa: kvk_qdot_act_bytes(@wtype, @k) bytes: struct kvk_qa8 or
 *	struct kvk_q8k blocks
 * @k: elements
 *
 * Each block gets d = max|x| / 127 and q = round(x / d), as ggml's
 * quantize_row_q8_1 and q8_K do (with an fp32 d).
 *
 * Return: 0, -EOPNOTSUPP, or -EINVAL for a partial block or NULL pointer.
 */
int kvk_qdot_quantize(uint32_t wtype, const float *x, void *qa, size_t k)
{
	if (kvk_qdot_act_type(wtype) == KVK_QT_F32)
		return -EOPNOTSUPP;
	if (!x || !qa || !kvk_qdot_act_bytes(wtype, k))
		return -EINVAL;
	return kvk_qdot_quantize_isa(kvk_qdot_isa_cached(), wtype, x, qa, k);
}

/**
 * kvk_qdot_quantize_isa() - kvk_qdot_quantize() on a given instruction set
 * @isa: enum kvk_isa value; every one gives the same bytes (the SIMD paths
 *	round with the same mode as lrintf())
 * @wtype: the weight format the row will meet
 * @x: @k floats (finite)
 * @qa: kvk_qdot_act_bytes(@wtype, @k) bytes
 * @k: elements
 *
 * Return: 0, -EOPNOTSUPP for a format or ISA not available, -EINVAL.
 */
int kvk_qdot_quantize_isa(int isa, uint32_t wtype, const float *x, void *qa,
			  size_t k)
{
	uint32_t at = kvk_qdot_act_type(wtype);
	float inv;

	if (at == KVK_QT_F32 || !kvk_qdot_isa_ok(isa))
		return -EOPNOTSUPP;
	if (!x || !qa || !kvk_qdot_act_bytes(wtype, k))
		return -EINVAL;
#if defined(__x86_64__)
	if (isa == KVK_ISA_AVX2 || isa == KVK_ISA_AVX512) {
		(isa == KVK_ISA_AVX2 ? qdot_quant_avx2 : qdot_quant_avx512)(
			x, qa, k, at == KVK_QT_Q8_K);
		return 0;
	}
#endif
	if (at == KVK_QT_Q8_0) {
		struct kvk_qa8 *b = qa;

		for (size_t i = 0; i < k / KVK_QK; i++, x += KVK_QK, b++) {
			int sum = 0;

			b->d = act_scale(x, KVK_QK, &inv);
			for (int j = 0; j < KVK_QK; j++) {
				b->q[j] = (int8_t)lrintf(x[j] * inv);
				sum += b->q[j];
			}
			b->s = b->d * (float)sum;
		}
		return 0;
	}
	for (struct kvk_q8k *b = qa; k; k -= KVK_QK_K, x += KVK_QK_K, b++) {
		b->d = act_scale(x, KVK_QK_K, &inv);
		for (int g = 0; g < KVK_QK_K / 16; g++) {
			int sum = 0;

			for (int j = 16 * g; j < 16 * g + 16; j++) {
				b->q[j] = (int8_t)lrintf(x[j] * inv);
				sum += b->q[j];
			}
			b->bsums[g] = (int16_t)sum;
		}
	}
	return 0;
}

/* ---- the reference dot products: one weight row, one activation row ---- */

static float dot_q4_0(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q4_0 *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_qa8 *x = (const void *)(a + i * sizeof(*x));
		int s = 0;

		for (int j = 0; j < 16; j++)
			s += (b->qs[j] & 0xf) * x->q[j] +
			     (b->qs[j] >> 4) * x->q[j + 16];
		r += h2f(b->d) * (x->d * (float)s - 8.0f * x->s);
	}
	return r;
}

static float dot_q4_1(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q4_1 *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_qa8 *x = (const void *)(a + i * sizeof(*x));
		int s = 0;

		for (int j = 0; j < 16; j++)
			s += (b->qs[j] & 0xf) * x->q[j] +
			     (b->qs[j] >> 4) * x->q[j + 16];
		r += h2f(b->d) * x->d * (float)s + h2f(b->m) * x->s;
	}
	return r;
}

static float dot_q5_0(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;
	int q[KVK_QK];

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q5_0 *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_qa8 *x = (const void *)(a + i * sizeof(*x));
		int s = 0;

		q5_values(b->qh, b->qs, q);
		for (int j = 0; j < KVK_QK; j++)
			s += q[j] * x->q[j];
		r += h2f(b->d) * (x->d * (float)s - 16.0f * x->s);
	}
	return r;
}

static float dot_q5_1(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;
	int q[KVK_QK];

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q5_1 *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_qa8 *x = (const void *)(a + i * sizeof(*x));
		int s = 0;

		q5_values(b->qh, b->qs, q);
		for (int j = 0; j < KVK_QK; j++)
			s += q[j] * x->q[j];
		r += h2f(b->d) * x->d * (float)s + h2f(b->m) * x->s;
	}
	return r;
}

static float dot_q8_0(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q8_0 *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_qa8 *x = (const void *)(a + i * sizeof(*x));
		int s = 0;

		for (int j = 0; j < KVK_QK; j++)
			s += b->qs[j] * x->q[j];
		r += h2f(b->d) * x->d * (float)s;
	}
	return r;
}

/* Q4_K and Q5_K: sum_s d sc_s (q . a)_s - dmin m_s sum(a)_s, times a.d */
static float dot_k45(uint16_t dh, uint16_t mh, const uint8_t *s12,
		     const uint8_t *qs, const uint8_t *qh,
		     const struct kvk_q8k *x)
{
	int q[KVK_QK_K], sumi = 0, summ = 0;
	uint8_t sm[16];

	qdot_k4_scales(s12, sm);
	k45_values(qs, qh, q);
	for (int s = 0; s < 8; s++) {
		int si = 0;

		for (int j = 32 * s; j < 32 * s + 32; j++)
			si += q[j] * x->q[j];
		sumi += sm[s] * si;
		summ += sm[8 + s] * (x->bsums[2 * s] + x->bsums[2 * s + 1]);
	}
	return x->d * (h2f(dh) * (float)sumi - h2f(mh) * (float)summ);
}

static float dot_q4_k(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q4_k *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_q8k *x = (const void *)(a + i * sizeof(*x));

		r += dot_k45(b->d, b->dmin, b->scales, b->qs, NULL, x);
	}
	return r;
}

static float dot_q5_k(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q5_k *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_q8k *x = (const void *)(a + i * sizeof(*x));

		r += dot_k45(b->d, b->dmin, b->scales, b->qs, b->qh, x);
	}
	return r;
}

static float dot_q6_k(const uint8_t *w, const uint8_t *a, size_t nb)
{
	float r = 0.0f;
	int q[KVK_QK_K];

	for (size_t i = 0; i < nb; i++) {
		const struct qd_q6_k *b = (const void *)(w + i * sizeof(*b));
		const struct kvk_q8k *x = (const void *)(a + i * sizeof(*x));
		int sumi = 0;

		k6_values(b, q);
		for (int s = 0; s < 16; s++) {
			int si = 0;

			for (int j = 16 * s; j < 16 * s + 16; j++)
				si += q[j] * x->q[j];
			sumi += b->scales[s] * (si - 32 * x->bsums[s]);
		}
		r += x->d * h2f(b->d) * (float)sumi;
	}
	return r;
}

#define QDOT_C_GEMM(fmt)                                                     \
	static void gemm_c_##fmt(const uint8_t *w, size_t ldw, int n,        \
				 const uint8_t *qa, size_t lda, int nt,      \
				 float *y, size_t ldy, size_t nb)            \
	{                                                                    \
		for (int t = 0; t < nt; t++)                                 \
			for (int r = 0; r < n; r++)                          \
				y[t * ldy + r] = dot_##fmt(w + r * ldw,      \
							   qa + t * lda, nb);\
	}

QDOT_C_GEMM(q4_0)
QDOT_C_GEMM(q4_1)
QDOT_C_GEMM(q5_0)
QDOT_C_GEMM(q5_1)
QDOT_C_GEMM(q8_0)
QDOT_C_GEMM(q4_k)
QDOT_C_GEMM(q5_k)
QDOT_C_GEMM(q6_k)

qdot_gemm_fn qdot_tab_c(uint32_t wtype)
{
	switch (wtype) {
	case KVK_QT_Q4_0: return gemm_c_q4_0;
	case KVK_QT_Q4_1: return gemm_c_q4_1;
	case KVK_QT_Q5_0: return gemm_c_q5_0;
	case KVK_QT_Q5_1: return gemm_c_q5_1;
	case KVK_QT_Q8_0: return gemm_c_q8_0;
	case KVK_QT_Q4_K: return gemm_c_q4_k;
	case KVK_QT_Q5_K: return gemm_c_q5_k;
	case KVK_QT_Q6_K: return gemm_c_q6_k;
	}
	return NULL;
}

/* ---- dispatch ---- */

/**
 * kvk_qdot_isa_ok() - whether this CPU (and this build) runs @isa
 * @isa: enum kvk_isa value
 *
 * The CPU's features are read once; every matrix product asks (the decode
 * hot path), so later calls are a load.
 *
 * Return: true when kernels for @isa were built and the CPU has every
 * feature they use.
 */
bool kvk_qdot_isa_ok(int isa)
{
	static int best = -1;	/* the highest enum kvk_isa this CPU runs */

	if (best < 0) {
		int b = KVK_ISA_C;

#if defined(__x86_64__)
		__builtin_cpu_init();
		if (__builtin_cpu_supports("avx2") &&
		    __builtin_cpu_supports("fma")) {
			b = KVK_ISA_AVX2;
			if (__builtin_cpu_supports("avx512f") &&
			    __builtin_cpu_supports("avx512bw") &&
			    __builtin_cpu_supports("avx512vl") &&
			    __builtin_cpu_supports("avx512vnni"))
				b = KVK_ISA_AVX512;
		}
#endif
		__atomic_store_n(&best, b, __ATOMIC_RELAXED);
	}
	return isa >= KVK_ISA_C && isa <= best;
}

/**
 * kvk_qdot_isa_best() - the fastest instruction set this CPU runs
 *
 * KVMM_QDOT_ISA=c|avx2|avx512 (environment, read on every call) caps it,
 * for measurements and to compare paths end to end.
 *
 * Return: an enum kvk_isa value.
 */
int kvk_qdot_isa_best(void)
{
	const char *e = getenv("KVMM_QDOT_ISA");
	int cap = KVK_ISA_NR - 1, isa;

	if (e && !strcmp(e, "c"))
		cap = KVK_ISA_C;
	else if (e && !strcmp(e, "avx2"))
		cap = KVK_ISA_AVX2;
	for (isa = cap; isa > KVK_ISA_C; isa--)
		if (kvk_qdot_isa_ok(isa))
			break;
	return isa;
}

/* kvk_qdot_isa_best() at the first call: the ISA of kvk_qdot_quantize() */
static int kvk_qdot_isa_cached(void)
{
	static int isa = -1;

	if (isa < 0)
		__atomic_store_n(&isa, kvk_qdot_isa_best(), __ATOMIC_RELAXED);
	return isa;
}

/**
 * kvk_qdot_isa_name() - printable name of an instruction set
 * @isa: enum kvk_isa value
 *
 * Return: "c", "avx2", "avx512" or "unknown".
 */
const char *kvk_qdot_isa_name(int isa)
{
	switch (isa) {
	case KVK_ISA_C: return "c";
	case KVK_ISA_AVX2: return "avx2";
	case KVK_ISA_AVX512: return "avx512";
	}
	return "unknown";
}

static int qdot_gemm(int isa, uint32_t wtype, const void *w, size_t ldw,
		     int n, const void *qa, size_t lda, int t, float *y,
		     size_t ldy, size_t k, bool prefill);

/**
 * kvk_qdot_gemm() - y[t][r] = dot(weight row r, activation row t)
 * @isa: instruction set (kvk_qdot_isa_best(), or any with
 *	kvk_qdot_isa_ok())
 * @wtype: weight format (kvk_qdot_supported())
 * @w: row 0 of the weights
 * @ldw: bytes from one weight row to the next
 * @n: weight rows
 * @qa: activation row 0, from kvk_qdot_quantize(@wtype)
 * @lda: bytes from one activation row to the next
 * @t: activation rows
 * @y: outputs; row t of the result at y + t * @ldy
 * @ldy: floats from one output row to the next (>= @n)
 * @k: elements per row, a whole number of blocks
 *
 * Single-threaded: a caller splits @n (rows) among its threads. The SIMD
 * paths take up to four activation rows at a time against each weight
 * row, so a prefill reads a tile of weights once per four tokens. A
 * token's results do not depend on the other tokens of the call (nor on
 * @n): a decode step's batch gives what each token gives alone.
 *
 * Return: 0, -EOPNOTSUPP for a format or ISA not available, -EINVAL for a
 * bad size or pointer.
 */
int kvk_qdot_gemm(int isa, uint32_t wtype, const void *w, size_t ldw,
		  int n, const void *qa, size_t lda, int t, float *y,
		  size_t ldy, size_t k)
{
	return qdot_gemm(isa, wtype, w, ldw, n, qa, lda, t, y, ldy, k, false);
}

/**
 * kvk_qdot_gemm_prefill() - kvk_qdot_gemm() for a prefill step
 * @isa: as kvk_qdot_gemm()
 * @wtype: weight format
 * @w: row 0 of the weights
 * @ldw: bytes from one weight row to the next
 * @n: weight rows
 * @qa: activation row 0
 * @lda: bytes from one activation row to the next
 * @t: activation rows
 * @y: outputs
 * @ldy: floats from one output row to the next (>= @n)
 * @k: elements per row
 *
 * The same products, on the path that suits many tokens: on the AVX-512
 * path the 32-element formats unpack 16 weight rows at a time into an L1
 * panel and run it against every token (qdot_x86.h, "prefill panels"),
 * 3x the tiles' rate at 128 tokens; other formats and ISAs run
 * kvk_qdot_gemm(). A token's results depend neither on the call's other
 * tokens nor on @n, as kvk_qdot_gemm()'s do not, but they are not those
 * of kvk_qdot_gemm() (fp32 sums in another order): a caller keeps one
 * path for a kind of step (the CPU executor: this one for its prefill
 * steps, kvk_qdot_gemm() for its decode steps), so that a token's result
 * does not depend on the batch it came in.
 *
 * Return: as kvk_qdot_gemm().
 */
int kvk_qdot_gemm_prefill(int isa, uint32_t wtype, const void *w,
			  size_t ldw, int n, const void *qa, size_t lda, int t,
			  float *y, size_t ldy, size_t k)
{
	return qdot_gemm(isa, wtype, w, ldw, n, qa, lda, t, y, ldy, k, true);
}

static int qdot_gemm(int isa, uint32_t wtype, const void *w, size_t ldw,
		     int n, const void *qa, size_t lda, int t, float *y,
		     size_t ldy, size_t k, bool prefill)
{
	qdot_gemm_fn fn = NULL;
	uint32_t blck, bsz;

	if (kvk_qtype_layout(wtype, &blck, &bsz) || !kvk_qdot_supported(wtype))
		return -EOPNOTSUPP;
	if (n < 0 || t < 0 || k % blck || ldy < (size_t)n)
		return -EINVAL;
	if (!n || !t || !k)
		return 0;
	if (!w || !qa || !y || ldw < k / blck * bsz ||
	    lda < kvk_qdot_act_bytes(wtype, k))
		return -EINVAL;
	if (!kvk_qdot_isa_ok(isa))
		return -EOPNOTSUPP;
	switch (isa) {
	case KVK_ISA_C: fn = qdot_tab_c(wtype); break;
#if defined(__x86_64__)
	case KVK_ISA_AVX2: fn = qdot_tab_avx2(wtype); break;
	case KVK_ISA_AVX512:
		fn = prefill ? qdot_ptab_avx512(wtype) : NULL;
		if (!fn)
			fn = qdot_tab_avx512(wtype);
		break;
#endif
	}
	if (!fn)
		return -EOPNOTSUPP;
	fn(w, ldw, n, qa, lda, t, y, ldy, k / blck);
	return 0;
}
