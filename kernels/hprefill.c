// SPDX-License-Identifier: MIT
/*
 * hprefill.c - causal prefill attention of one query head over host fp32
 * rows (see hprefill.h): the C reference and the AVX2 + FMA path.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu.h"
#include "hprefill.h"

/**
 * kvk_hprefill_check() - validate host prefill-attention arguments
 * @a: arguments
 *
 * Return: 0, or -EINVAL for a missing pointer, a head dimension that is
 * not a multiple of 8 in 8 .. 256, rows closer than a head, a scale that
 * is not positive and finite, or positions that overflow.
 */
int kvk_hprefill_check(const struct kvk_hprefill_args *a)
{
	if (!a)
		return -EINVAL;
	if (!a->n)
		return 0;
	if (!a->q || !a->k || !a->v || !a->o || !a->acc || !a->p)
		return -EINVAL;
	if (!a->hd || a->hd % 8 || a->hd > 256 || a->ldq < a->hd ||
	    a->ldk < a->hd || a->ldo < a->hd)
		return -EINVAL;
	if (!(a->scale > 0.0f) || !isfinite(a->scale) ||
	    a->off > UINT32_MAX - a->n)
		return -EINVAL;
	return 0;
}

/* eight floats; GCC lowers it to whatever vector unit the target has */
typedef float hp_v8 __attribute__((vector_size(32)));

/* a . b over @n floats, @n % 8 == 0 */
static float dot8(const float *a, const float *b, uint32_t n)
{
	hp_v8 s = { 0 }, x, y;

	for (uint32_t e = 0; e < n; e += 8) {
		memcpy(&x, a + e, sizeof(x));
		memcpy(&y, b + e, sizeof(y));
		s += x * y;
	}
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* y += a x over @n floats, @n % 8 == 0 */
static void axpy8(float *restrict y, float a, const float *restrict x,
		  uint32_t n)
{
	hp_v8 u, v;

	for (uint32_t e = 0; e < n; e += 8) {
		memcpy(&u, y + e, sizeof(u));
		memcpy(&v, x + e, sizeof(v));
		u += a * v;
		memcpy(y + e, &u, sizeof(u));
	}
}

/**
 * kvk_hprefill_ref() - host prefill attention, reference
 * @a: arguments (only the first @off + @n floats of @a->p are used)
 *
 * One query row at a time: every logit, the row max, exp and the sum, then
 * o = sum (p_j / sum) v_j in key order.
 *
 * Return: 0 or -EINVAL (kvk_hprefill_check()).
 */
int kvk_hprefill_ref(const struct kvk_hprefill_args *a)
{
	int ret = kvk_hprefill_check(a);
	uint32_t hd;
	float *p;

	if (ret || !a->n)
		return ret;
	hd = a->hd;
	p = a->p;
	for (uint32_t t = 0; t < a->n; t++) {
		const float *qi = a->q + (size_t)t * a->ldq;
		float *o = a->o + (size_t)t * a->ldo;
		uint32_t pos = a->off + t;
		float m = -INFINITY, sum = 0, inv;

		for (uint32_t j = 0; j <= pos; j++) {
			p[j] = dot8(qi, a->k + (size_t)j * a->ldk, hd) *
			       a->scale;
			m = p[j] > m ? p[j] : m;
		}
		for (uint32_t j = 0; j <= pos; j++) {
			p[j] = expf(p[j] - m);
			sum += p[j];
		}
		inv = 1.0f / sum;
		memset(o, 0, hd * sizeof(float));
		for (uint32_t j = 0; j <= pos; j++) {
			float pj = p[j] * inv;

			axpy8(o, pj, a->v + (size_t)j * a->ldk, hd);
			if (pos >= a->first)
				a->acc[j] += a->sumsq ? pj * pj : pj;
		}
	}
	return 0;
}

#if defined(__x86_64__)
#define HP_T __attribute__((target("avx2,fma")))
#define HP_AI inline __attribute__((always_inline))

/* keys per block of the weighted sum of V: 64 rows of 256 floats, 64 KiB,
 * at most; 16 KiB at the 64 columns of SmolLM2 and Llama's 128 halves */
#define HP_JB 64

/* the eight sums of @a0 .. @a7, in that order */
static HP_AI HP_T __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3,
			       __m256 a4, __m256 a5, __m256 a6, __m256 a7)
{
	__m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1),
				   _mm256_hadd_ps(a2, a3));
	__m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5),
				   _mm256_hadd_ps(a6, a7));

	return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
			     _mm256_permute2f128_ps(u0, u1, 0x31));
}

/*
 * exp(x) for x <= 0 (the logits less their max), Cephes' expf: x = n ln2
 * + r, |r| <= ln2 / 2, a degree-6 polynomial, times 2^n; below -87.3 the
 * result is clamped at about 1e-38 (the reference's is as small or 0;
 * the sum is at least 1)
 */
static HP_AI HP_T __m256 exp_le0(__m256 x)
{
	const __m256 l2e = _mm256_set1_ps(1.44269504088896341f);
	const __m256 c1 = _mm256_set1_ps(0.693359375f);
	const __m256 c2 = _mm256_set1_ps(-2.12194440e-4f);
	__m256 n, r, y, r2;
	__m256i e;

	x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
	n = _mm256_round_ps(_mm256_mul_ps(x, l2e),
			    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	r = _mm256_fnmadd_ps(n, c1, x);
	r = _mm256_fnmadd_ps(n, c2, r);
	r2 = _mm256_mul_ps(r, r);
	y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
					       _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/*
 * the logits of 4 query rows @q[0..3] against keys @k0, @k1: out[2r + i]
 * = q_r . k_i (unscaled)
 */
static HP_AI HP_T __m256 qk_4x2(const float *const *q, const float *k0,
				const float *k1, uint32_t hd)
{
	__m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
	__m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;

	for (uint32_t e = 0; e < hd; e += 8) {
		__m256 x0 = _mm256_loadu_ps(k0 + e);
		__m256 x1 = _mm256_loadu_ps(k1 + e);
		__m256 y;

		y = _mm256_loadu_ps(q[0] + e);
		a00 = _mm256_fmadd_ps(y, x0, a00);
		a01 = _mm256_fmadd_ps(y, x1, a01);
		y = _mm256_loadu_ps(q[1] + e);
		a10 = _mm256_fmadd_ps(y, x0, a10);
		a11 = _mm256_fmadd_ps(y, x1, a11);
		y = _mm256_loadu_ps(q[2] + e);
		a20 = _mm256_fmadd_ps(y, x0, a20);
		a21 = _mm256_fmadd_ps(y, x1, a21);
		y = _mm256_loadu_ps(q[3] + e);
		a30 = _mm256_fmadd_ps(y, x0, a30);
		a31 = _mm256_fmadd_ps(y, x1, a31);
	}
	return hsum8(a00, a01, a10, a11, a20, a21, a30, a31);
}

/*
 * o[r][c .. c + 16) += sum over keys j0 <= j < j1 of p[r][j] v_j[c ..],
 * for the 4 rows @o[0..3] with probabilities @p[0..3]
 */
static HP_AI HP_T void pv_4x16(float *const *o, const float *const *p,
			       const float *v, size_t ldk, uint32_t c,
			       uint32_t j0, uint32_t j1)
{
	__m256 a00 = _mm256_loadu_ps(o[0] + c), a01 = _mm256_loadu_ps(o[0] + c + 8);
	__m256 a10 = _mm256_loadu_ps(o[1] + c), a11 = _mm256_loadu_ps(o[1] + c + 8);
	__m256 a20 = _mm256_loadu_ps(o[2] + c), a21 = _mm256_loadu_ps(o[2] + c + 8);
	__m256 a30 = _mm256_loadu_ps(o[3] + c), a31 = _mm256_loadu_ps(o[3] + c + 8);

	for (uint32_t j = j0; j < j1; j++) {
		const float *vj = v + (size_t)j * ldk + c;
		__m256 x0 = _mm256_loadu_ps(vj), x1 = _mm256_loadu_ps(vj + 8);
		__m256 b;

		b = _mm256_broadcast_ss(p[0] + j);
		a00 = _mm256_fmadd_ps(b, x0, a00);
		a01 = _mm256_fmadd_ps(b, x1, a01);
		b = _mm256_broadcast_ss(p[1] + j);
		a10 = _mm256_fmadd_ps(b, x0, a10);
		a11 = _mm256_fmadd_ps(b, x1, a11);
		b = _mm256_broadcast_ss(p[2] + j);
		a20 = _mm256_fmadd_ps(b, x0, a20);
		a21 = _mm256_fmadd_ps(b, x1, a21);
		b = _mm256_broadcast_ss(p[3] + j);
		a30 = _mm256_fmadd_ps(b, x0, a30);
		a31 = _mm256_fmadd_ps(b, x1, a31);
	}
	_mm256_storeu_ps(o[0] + c, a00);
	_mm256_storeu_ps(o[0] + c + 8, a01);
	_mm256_storeu_ps(o[1] + c, a10);
	_mm256_storeu_ps(o[1] + c + 8, a11);
	_mm256_storeu_ps(o[2] + c, a20);
	_mm256_storeu_ps(o[2] + c + 8, a21);
	_mm256_storeu_ps(o[3] + c, a30);
	_mm256_storeu_ps(o[3] + c + 8, a31);
}

/* o[r][c .. c + 8) over keys [j0, j1): the 8-column tail of pv_4x16() */
static HP_AI HP_T void pv_4x8(float *const *o, const float *const *p,
			      const float *v, size_t ldk, uint32_t c,
			      uint32_t j0, uint32_t j1)
{
	__m256 a0 = _mm256_loadu_ps(o[0] + c), a1 = _mm256_loadu_ps(o[1] + c);
	__m256 a2 = _mm256_loadu_ps(o[2] + c), a3 = _mm256_loadu_ps(o[3] + c);

	for (uint32_t j = j0; j < j1; j++) {
		__m256 x = _mm256_loadu_ps(v + (size_t)j * ldk + c);

		a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[0] + j), x, a0);
		a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[1] + j), x, a1);
		a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[2] + j), x, a2);
		a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p[3] + j), x, a3);
	}
	_mm256_storeu_ps(o[0] + c, a0);
	_mm256_storeu_ps(o[1] + c, a1);
	_mm256_storeu_ps(o[2] + c, a2);
	_mm256_storeu_ps(o[3] + c, a3);
}

/*
 * row @r of a block: its @len logits in @p (the block's @L columns)
 * become probabilities, the columns from @len on 0; added into @acc when
 * @score
 */
static HP_T void softmax_row(float *p, uint32_t len, uint32_t L, bool score,
			     int sumsq, float *acc)
{
	__m256 mv = _mm256_set1_ps(-INFINITY), sv = _mm256_setzero_ps();
	float m, sum, inv, tail = 0.0f;
	uint32_t j;

	for (j = 0; j + 8 <= len; j += 8)
		mv = _mm256_max_ps(mv, _mm256_loadu_ps(p + j));
	{
		__m128 h = _mm_max_ps(_mm256_castps256_ps128(mv),
				      _mm256_extractf128_ps(mv, 1));

		h = _mm_max_ps(h, _mm_movehl_ps(h, h));
		h = _mm_max_ss(h, _mm_movehdup_ps(h));
		m = _mm_cvtss_f32(h);
	}
	for (; j < len; j++)
		m = p[j] > m ? p[j] : m;
	for (j = 0; j + 8 <= len; j += 8) {
		__m256 x = exp_le0(_mm256_sub_ps(_mm256_loadu_ps(p + j),
						 _mm256_set1_ps(m)));

		_mm256_storeu_ps(p + j, x);
		sv = _mm256_add_ps(sv, x);
	}
	if (j < len) {
		float t[8] = { 0 };
		__m256 x;

		for (uint32_t i = 0; j + i < len; i++)
			t[i] = p[j + i] - m;
		/* lanes past @len: exp(0) = 1, dropped below */
		x = exp_le0(_mm256_loadu_ps(t));
		_mm256_storeu_ps(t, x);
		for (uint32_t i = 0; j + i < len; i++) {
			p[j + i] = t[i];
			tail += t[i];
		}
	}
	{
		__m128 h = _mm_add_ps(_mm256_castps256_ps128(sv),
				      _mm256_extractf128_ps(sv, 1));

		h = _mm_add_ps(h, _mm_movehl_ps(h, h));
		h = _mm_add_ss(h, _mm_movehdup_ps(h));
		sum = _mm_cvtss_f32(h) + tail;
	}
	inv = 1.0f / sum;
	for (j = 0; j + 8 <= len; j += 8) {
		__m256 x = _mm256_mul_ps(_mm256_loadu_ps(p + j),
					 _mm256_set1_ps(inv));

		_mm256_storeu_ps(p + j, x);
		if (score) {
			__m256 s = sumsq ? _mm256_mul_ps(x, x) : x;

			_mm256_storeu_ps(acc + j, _mm256_add_ps(
						_mm256_loadu_ps(acc + j), s));
		}
	}
	for (; j < len; j++) {
		p[j] *= inv;
		if (score)
			acc[j] += sumsq ? p[j] * p[j] : p[j];
	}
	for (; j < L; j++)
		p[j] = 0.0f;
}

/* the AVX2 + FMA path of kvk_hprefill(): valid arguments, @a->n > 0 */
static HP_T void hprefill_avx2(const struct kvk_hprefill_args *a)
{
	const uint32_t R = KVK_HPREFILL_ROWS, hd = a->hd;

	for (uint32_t t0 = 0; t0 < a->n; t0 += R) {
		uint32_t rows = a->n - t0 < R ? a->n - t0 : R;
		uint32_t P0 = a->off + t0, L = P0 + rows;
		const float *q[KVK_HPREFILL_ROWS];
		float *o[KVK_HPREFILL_ROWS];
		const float *p[KVK_HPREFILL_ROWS];
		uint32_t quads = (rows + 3) / 4;
		uint32_t j;

		/*
		 * rows past the block's last repeat it: their logits are its
		 * own, and every tile that holds them loads the same output
		 * and stores the same sum, so the last store is right
		 */
		for (uint32_t r = 0; r < R; r++) {
			uint32_t rr = r < rows ? r : rows - 1;

			q[r] = a->q + (size_t)(t0 + rr) * a->ldq;
			o[r] = a->o + (size_t)(t0 + rr) * a->ldo;
			p[r] = a->p + (size_t)rr * L;
		}
		/* logits: each pair of keys read once for the block's rows */
		for (j = 0; j + 2 <= L; j += 2) {
			const float *k0 = a->k + (size_t)j * a->ldk;

			for (uint32_t g = 0; g < quads; g++) {
				float s[8];

				_mm256_storeu_ps(s, _mm256_mul_ps(
					qk_4x2(q + 4 * g, k0, k0 + a->ldk, hd),
					_mm256_set1_ps(a->scale)));
				for (uint32_t r = 0; r < 4; r++) {
					float *pr = (float *)p[4 * g + r];

					pr[j] = s[2 * r];
					pr[j + 1] = s[2 * r + 1];
				}
			}
		}
		if (j < L) {
			const float *k0 = a->k + (size_t)j * a->ldk;

			for (uint32_t g = 0; g < quads; g++) {
				float s[8];

				_mm256_storeu_ps(s, _mm256_mul_ps(
					qk_4x2(q + 4 * g, k0, k0, hd),
					_mm256_set1_ps(a->scale)));
				for (uint32_t r = 0; r < 4; r++)
					((float *)p[4 * g + r])[j] = s[2 * r];
			}
		}
		/* softmax per row over its own keys, in row order (as the
		 * reference adds the scores) */
		for (uint32_t r = 0; r < rows; r++)
			softmax_row((float *)p[r], P0 + r + 1, L,
				    P0 + r >= a->first, a->sumsq, a->acc);
		/* o = sum p v over blocks of keys that stay in L1 */
		for (uint32_t r = 0; r < rows; r++)
			memset(o[r], 0, hd * sizeof(float));
		for (uint32_t j0 = 0; j0 < L; j0 += HP_JB) {
			uint32_t j1 = L - j0 < HP_JB ? L : j0 + HP_JB;

			for (uint32_t g = 0; g < quads; g++) {
				uint32_t c = 0;

				for (; c + 16 <= hd; c += 16)
					pv_4x16(o + 4 * g, p + 4 * g, a->v,
						a->ldk, c, j0, j1);
				if (c < hd)
					pv_4x8(o + 4 * g, p + 4 * g, a->v,
					       a->ldk, c, j0, j1);
			}
		}
	}
}

#endif

/**
 * kvk_hprefill_isa() - the instruction set kvk_hprefill() uses
 *
 * AVX2 when the CPU and OS have AVX2 and FMA, else C;
 * KVMM_HPREFILL_ISA=c (environment, read on every call) forces C, to
 * compare the paths end to end.
 *
 * Return: an enum kvk_hprefill_isa value.
 */
int kvk_hprefill_isa(void)
{
	const char *e = getenv("KVMM_HPREFILL_ISA");

	if (e && !strcmp(e, "c"))
		return KVK_HPREFILL_C;
#if defined(__x86_64__)
	if (kvk_cpu_avx2_fma())
		return KVK_HPREFILL_AVX2;
#endif
	return KVK_HPREFILL_C;
}

/**
 * kvk_hprefill_run() - host prefill attention on a given instruction set
 * @a: arguments
 * @isa: KVK_HPREFILL_C, or KVK_HPREFILL_AVX2 where kvk_hprefill_isa()
 *	returns it
 *
 * Return: 0, or -EINVAL for bad arguments or an instruction set this CPU
 * lacks.
 */
int kvk_hprefill_run(const struct kvk_hprefill_args *a, int isa)
{
	int ret;

	if (isa == KVK_HPREFILL_C)
		return kvk_hprefill_ref(a);
	if (isa != KVK_HPREFILL_AVX2)
		return -EINVAL;
#if defined(__x86_64__)
	if (!kvk_cpu_avx2_fma())
		return -EINVAL;
	ret = kvk_hprefill_check(a);
	if (!ret && a->n)
		hprefill_avx2(a);
	return ret;
#else
	(void)ret;
	return -EINVAL;
#endif
}

/**
 * kvk_hprefill() - host prefill attention, fastest path
 * @a: arguments
 *
 * Return: 0 or -EINVAL (kvk_hprefill_check()).
 */
int kvk_hprefill(const struct kvk_hprefill_args *a)
{
	return kvk_hprefill_run(a, kvk_hprefill_isa());
}
