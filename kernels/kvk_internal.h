/* SPDX-License-Identifier: MIT */
/*
 * kvk_internal.h - shared by the CPU (C11) and CUDA (nvcc) sides of
 * kernels/: argument checks, so that both launchers of an op refuse the same
 * calls, and the sampler's arithmetic, compiled from this one source for the
 * host and the device so that both pick the same token.
 */
#ifndef KVK_INTERNAL_H
#define KVK_INTERNAL_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kvk.h"

#ifdef __CUDACC__
#define KVK_HD __host__ __device__
#else
#define KVK_HD
#endif

/* threads per block of the row kernels (norms, argmax, sampling) */
#define KVK_ROW_THREADS 256
#define KVK_SAMPLE_THREADS 1024

static inline int kvk_dtype_ok(enum kvk_dtype dt)
{
	return dt == KVK_F32 || dt == KVK_F16 || dt == KVK_BF16;
}

static inline int kvk_rmsnorm_check(void *out, const void *x, const void *w,
				    int rows, int dim, float eps,
				    enum kvk_dtype dt)
{
	if (!kvk_dtype_ok(dt) || rows < 0 || dim <= 0 || !(eps >= 0.0f))
		return -EINVAL;
	if (rows && (!out || !x || !w))
		return -EINVAL;
	return 0;
}

static inline int kvk_ew_check(void *out, const void *a, const void *b,
			       size_t n, enum kvk_dtype dt)
{
	if (!kvk_dtype_ok(dt))
		return -EINVAL;
	if (n && (!out || !a || !b))
		return -EINVAL;
	return 0;
}

static inline int kvk_embed_check(void *out, const void *table,
				  const int32_t *ids, int ntok, int dim,
				  int vocab, enum kvk_dtype dt)
{
	if (!kvk_dtype_ok(dt) || ntok < 0 || dim <= 0 || vocab <= 0)
		return -EINVAL;
	if (ntok && (!out || !table || !ids))
		return -EINVAL;
	return 0;
}

static inline int kvk_rows_check(int32_t *ids, const void *logits, int rows,
				 int vocab, enum kvk_dtype dt)
{
	if (!kvk_dtype_ok(dt) || rows < 0 || vocab <= 0)
		return -EINVAL;
	if (rows && (!ids || !logits))
		return -EINVAL;
	return 0;
}

static inline int kvk_sample_cfg_check(const struct kvk_sample_cfg *cfg)
{
	if (!cfg || cfg->temperature != cfg->temperature || cfg->top_k < 0)
		return -EINVAL;
	if (!(cfg->top_p > 0.0f && cfg->top_p <= 1.0f))
		return -EINVAL;
	return 0;
}

static inline int kvk_rope_check(void *q, void *k, const int32_t *pos, int ntok,
				 int nq, int nkv, int head_dim,
				 const struct kvk_rope_cfg *cfg,
				 enum kvk_dtype dt)
{
	if (!kvk_dtype_ok(dt) || !cfg || ntok < 0 || nq < 0 || nkv < 0)
		return -EINVAL;
	if (head_dim <= 0 || head_dim % 2 || head_dim > KVK_ROPE_MAX_HEAD_DIM)
		return -EINVAL;
	if (ntok && (!pos || (nq && !q) || (nkv && !k)))
		return -EINVAL;
	return 0;
}

/*
 * DOC: deterministic sampling arithmetic
 *
 * The sampler must pick the same token on the CPU and on the GPU from the
 * same logits and the same uniform number. Floating-point sums depend on
 * their order and expf() differs between libm and CUDA in the last bit, so
 * the sampler avoids both: each token's weight exp((l - max) / T) is
 * computed by kvk_exp_neg() below from correctly rounded operations only
 * (fmaf, rintf, ldexpf, +, -, *, /: identical on any IEEE machine, with no
 * contraction possible), then turned into a fixed-point integer (scaled by
 * 2^32, truncated). Integer sums do not depend on their order. A token whose
 * weight is below 2^-32 of the most likely one's is never drawn.
 *
 * Tokens are ordered by a 64-bit key: the logit's bits made
 * order-preserving (-0 folded onto +0, NaN below everything), then the
 * complement of the index, so that equal logits rank the lower index first.
 * The order is total, so "the k first tokens" and "the smallest prefix that
 * reaches top_p" are each one set, whatever the algorithm that finds it.
 */

/* e^x for x <= 0, to ~1e-7 relative, bit-identical on host and device */
KVK_HD static inline float kvk_exp_neg(float x)
{
	float k, r, p;

	if (!(x > -24.0f)) /* weight would truncate to 0; -inf too */
		return 0.0f;
	k = rintf(x * 1.44269504f);
	r = fmaf(-k, 0.693359375f, x); /* Cody-Waite: ln 2 in two parts */
	r = fmaf(k, 2.12194440e-4f, r);
	p = 1.98412698e-4f; /* Taylor to degree 7, |r| <= 0.35 */
	p = fmaf(p, r, 1.38888889e-3f);
	p = fmaf(p, r, 8.33333333e-3f);
	p = fmaf(p, r, 4.16666667e-2f);
	p = fmaf(p, r, 1.66666667e-1f);
	p = fmaf(p, r, 0.5f);
	p = fmaf(p, r, 1.0f);
	p = fmaf(p, r, 1.0f);
	return ldexpf(p, (int)k);
}

/* the sampling order: larger key first; total over (logit, index) */
KVK_HD static inline uint64_t kvk_sample_key(float l, int i)
{
	uint32_t b, hi;

	if (l != l)
		return (uint64_t)(uint32_t) ~(uint32_t)i; /* NaN: lowest */
	if (l == 0.0f)
		l = 0.0f;
	memcpy(&b, &l, sizeof(b));
	hi = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
	return ((uint64_t)hi << 32) | (uint32_t) ~(uint32_t)i;
}

/* fixed-point weight of logit @l given the row maximum @m, in 2^-32 units */
KVK_HD static inline uint64_t kvk_sample_weight(float l, float m, float t)
{
	if (l != l)
		return 0;
	if (l == m)
		return 1ULL << 32;
	return (uint64_t)ldexpf(kvk_exp_neg((l - m) / t), 32);
}

/* the top-p cut: the kept prefix's weight must reach this */
KVK_HD static inline uint64_t kvk_sample_top_p_thr(uint64_t total, float p)
{
	uint64_t thr = (uint64_t)((double)p * (double)total);

	if (thr < 1)
		thr = 1;
	return thr > total ? total : thr;
}

/* the draw: the token whose cumulative weight first exceeds this */
KVK_HD static inline uint64_t kvk_sample_target(uint64_t total, float u)
{
	uint64_t r;

	if (!(u > 0.0f))
		return 0;
	r = (uint64_t)((double)u * (double)total);
	return r >= total ? total - 1 : r;
}

#ifndef __CUDACC__
/* element @i of a CPU array of @dt, widened to float */
static inline float kvk_ld(const void *p, size_t i, enum kvk_dtype dt)
{
	if (dt == KVK_F32)
		return ((const float *)p)[i];
	if (dt == KVK_F16)
		return kvk_f16_to_f32(((const uint16_t *)p)[i]);
	return kvk_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* store @v as element @i of a CPU array of @dt, to nearest even */
static inline void kvk_st(void *p, size_t i, float v, enum kvk_dtype dt)
{
	if (dt == KVK_F32)
		((float *)p)[i] = v;
	else if (dt == KVK_F16)
		((uint16_t *)p)[i] = kvk_f32_to_f16(v);
	else
		((uint16_t *)p)[i] = kvk_f32_to_bf16(v);
}
#endif

#endif /* KVK_INTERNAL_H */
