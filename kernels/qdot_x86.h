/* SPDX-License-Identifier: MIT */
/*
 * qdot_x86.h - the x86 SIMD dot products, written once and compiled twice:
 * by qdot_avx2.c (AVX2 + FMA + F16C) and by qdot_avx512.c (the same with
 * AVX512F/BW/VL and VNNI, which gives vpdpbusd, 32 vector registers and
 * byte masks). Before including it a file defines:
 *
 *   QD_T      the target attribute of every function
 *   QD_VNNI   1 to use vpdpbusd (u8 x s8 -> s32) instead of
 *             vpmaddubsw + vpmaddwd
 *   QD_TAB    the name of the table function (qdot_tab_avx2, ...)
 *   QD_PTAB   with QD_VNNI: the name of the prefill panels' table
 *
 * DOC: kernel shapes
 *
 * The 32-element formats run tiles of 2 weight rows x 4 activation rows
 * (prefill) or 1 x 1 (decode): a weight block is unpacked once and
 * multiplied by every activation row of the tile, and each output keeps its
 * own fp32 vector accumulator, so no chain of dependent multiply-adds is
 * longer than the row. The K-quants run 1 x 4 and 1 x 1: a super-block's
 * 256 values and 8 or 16 scales are unpacked once per tile.
 *
 * Integer ranges: vpmaddubsw adds two u8 x s8 products in s16; the largest
 * weight magnitude it meets is 63 (Q6_K) and |a| <= 127, so 2 x 63 x 127
 * fits. Q8_0 weights are signed: AVX2 moves the sign onto the activation
 * (|w| x sign(a, w)); VNNI adds 128 to the weight and takes 128 sum(a) back
 * out with the activation block's sum.
 */
#include <immintrin.h>

#define QD_AI inline __attribute__((always_inline))

static QD_AI QD_T float qd_hsum(__m256 a)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a),
			      _mm256_extractf128_ps(a, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static QD_AI QD_T float qd_h2f(uint16_t h)
{
	return _cvtsh_ss(h);
}

/* sums of 4 adjacent u8 x s8 products, as 8 x s32 */
static QD_AI QD_T __m256i qd_dot_us(__m256i u, __m256i s)
{
#if QD_VNNI
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s),
				 _mm256_set1_epi16(1));
#endif
}

/* 16 bytes of nibbles: low nibbles in bytes 0..15, high in 16..31 */
static QD_AI QD_T __m256i qd_nib(const uint8_t *p)
{
	__m128i t = _mm_loadu_si128((const __m128i *)p);
	__m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);

	return _mm256_and_si256(v, _mm256_set1_epi8(0xf));
}

/* byte j is 0x10 where bit j of the 32-bit @p is set */
static QD_AI QD_T __m256i qd_bit4(const uint8_t *p)
{
	uint32_t x;

	memcpy(&x, p, 4);
#if QD_VNNI
	return _mm256_maskz_mov_epi8(x, _mm256_set1_epi8(0x10));
#else
	{
		const __m256i shuf = _mm256_set_epi64x(
			0x0303030303030303, 0x0202020202020202,
			0x0101010101010101, 0x0000000000000000);
		__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x),
						shuf);

		b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
		b = _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
		return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
	}
#endif
}

/* ---- the 32-element formats ---- */

enum { QD_Q4_0, QD_Q4_1, QD_Q5_0, QD_Q5_1, QD_Q8_0 };

/*
 * Unpack one weight block: @q the 32 values as u8 (Q8_0 under AVX2: the
 * signed bytes as they are), @dw the scale, @mw the factor of the
 * activation sum (the minimum for Q4_1/Q5_1, the scale otherwise).
 */
static QD_AI QD_T void qd_load32(const int fmt, const uint8_t *p, __m256i *q,
				 float *dw, float *mw)
{
	uint16_t d, m;

	memcpy(&d, p, 2);
	*dw = qd_h2f(d);
	*mw = *dw;
	switch (fmt) {
	case QD_Q4_0:
		*q = qd_nib(p + 2);
		break;
	case QD_Q4_1:
		memcpy(&m, p + 2, 2);
		*mw = qd_h2f(m);
		*q = qd_nib(p + 4);
		break;
	case QD_Q5_0:
		*q = _mm256_or_si256(qd_nib(p + 6), qd_bit4(p + 2));
		break;
	case QD_Q5_1:
		memcpy(&m, p + 2, 2);
		*mw = qd_h2f(m);
		*q = _mm256_or_si256(qd_nib(p + 8), qd_bit4(p + 4));
		break;
	case QD_Q8_0:
		*q = _mm256_loadu_si256((const __m256i *)(p + 2));
#if QD_VNNI
		*q = _mm256_xor_si256(*q, _mm256_set1_epi8((char)0x80));
#endif
		break;
	}
}

/* what multiplies the accumulated mw * a.s of a row */
static QD_AI QD_T float qd_off32(const int fmt)
{
	switch (fmt) {
	case QD_Q4_0: return -8.0f;
	case QD_Q5_0: return -16.0f;
	case QD_Q4_1:
	case QD_Q5_1: return 1.0f;
	}
	return QD_VNNI ? -128.0f : 0.0f; /* Q8_0 */
}

static QD_AI QD_T __m256 qd_fdot32(const int fmt, __m256i q, __m256i a)
{
	(void)fmt;
#if !QD_VNNI
	if (fmt == QD_Q8_0)
		return _mm256_cvtepi32_ps(qd_dot_us(_mm256_sign_epi8(q, q),
						    _mm256_sign_epi8(a, q)));
#endif
	return _mm256_cvtepi32_ps(qd_dot_us(q, a));
}

/* @rb weight rows x @tb activation rows, @rb <= 4, @tb <= 4 */
static QD_AI QD_T void qd_tile32(const int fmt, const int bsz, const int rb,
				 const int tb, const uint8_t *w, size_t ldw,
				 const uint8_t *qa, size_t lda, float *y,
				 size_t ldy, size_t nb)
{
	__m256 acc[4][4];
	float corr[4][4];
	const float off = qd_off32(fmt);

#pragma GCC unroll 4
	for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++) {
			acc[r][t] = _mm256_setzero_ps();
			corr[r][t] = 0.0f;
		}
	for (size_t b = 0; b < nb; b++) {
		__m256i q[4];
		__m256 dv[4];
		float dw[4], mw[4];

#pragma GCC unroll 4
		for (int r = 0; r < rb; r++) {
			qd_load32(fmt, w + r * ldw + b * bsz, &q[r], &dw[r],
				  &mw[r]);
			dv[r] = _mm256_set1_ps(dw[r]);
		}
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++) {
			const struct kvk_qa8 *x = (const void *)(qa + t * lda +
						  b * sizeof(*x));
			__m256i a = _mm256_loadu_si256((const __m256i *)x->q);
			__m256 av = _mm256_broadcast_ss(&x->d);
			float as = x->s;

#pragma GCC unroll 4
			for (int r = 0; r < rb; r++) {
				acc[r][t] = _mm256_fmadd_ps(
					qd_fdot32(fmt, q[r], a),
					_mm256_mul_ps(dv[r], av), acc[r][t]);
				if (off != 0.0f)
					corr[r][t] += mw[r] * as;
			}
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++)
			y[t * ldy + r] = qd_hsum(acc[r][t]) + off * corr[r][t];
}

#if QD_VNNI
/*
 * DOC: prefill panels (VNNI)
 *
 * At prefill (kvk_qdot_gemm_prefill(), any number of tokens: a caller's
 * prefill steps take this path and its decode steps the tiles, so that a
 * token's result does not depend on how many others share its step) the
 * 32-element formats run on panels: QD_PR weight rows by up to QD_PB blocks, unpacked once per call
 * into a buffer on the stack (20 KiB, L1-resident) with the rows
 * interleaved by four bytes: chunk c of a block (elements 4c .. 4c+3) of
 * rows 0..15 is 64 contiguous bytes, the u8 values vpdpbusd takes (Q8_0
 * plus 128), followed per block by the rows' fp32 scales and the factors
 * of their activation sums. A tile is the panel's 16 rows by 4 tokens:
 * each lane of a vector is one row, each token's four bytes are one
 * broadcast, so a block of 16 x 4 outputs is 64 vpdpbusd into eight
 * integer accumulators and then, per token and 8 rows, one multiply and
 * two multiply-adds in fp32 (the offset terms in accumulators of their
 * own, added at the end, as the 2 x 4 tiles add theirs) (against 8 vpdpbusd, 8 conversions, 8
 * multiplies, 8 multiply-adds and 8 scalar ones on the 2 x 4 tiles), and
 * no horizontal sums: a lane's sum is its row's output.
 */
#define QD_PR 16	/* rows of a panel */
#define QD_PB 32	/* blocks of a panel (1024 elements) */

struct qd_panel {
	uint8_t q[QD_PB][8][QD_PR * 4]; /* [block][chunk][row][4 values] */
	float d[QD_PB][QD_PR];		 /* weight scale of each row */
	float m[QD_PB][QD_PR];		 /* factor of the activation's s */
};

/* 8 rows of 8 dwords transposed in place: v[i] lane j <-> v[j] lane i */
static QD_AI QD_T void qd_tr8(__m256i v[8])
{
	__m256i a[8], b[8];

#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		a[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
		a[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
	}
#pragma GCC unroll 2
	for (int i = 0; i < 2; i++) {
		b[4 * i] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
		b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
		b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1],
						     a[4 * i + 3]);
		b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1],
						     a[4 * i + 3]);
	}
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		v[i] = _mm256_permute2x128_si256(b[i], b[4 + i], 0x20);
		v[4 + i] = _mm256_permute2x128_si256(b[i], b[4 + i], 0x31);
	}
}

/*
 * blocks [b0, b0 + nb) of the @nr (<= QD_PR) rows at @w into @p; a panel
 * of fewer rows repeats its last one (the lanes are not stored)
 */
static QD_AI QD_T void qd_pack32(const int fmt, const int bsz,
				 const uint8_t *w, size_t ldw, int nr,
				 size_t b0, int nb, struct qd_panel *p)
{
	const float off = qd_off32(fmt);

	for (int b = 0; b < nb; b++) {
#pragma GCC unroll 2
		for (int h = 0; h < QD_PR / 8; h++) {
			__m256i v[8];

#pragma GCC unroll 8
			for (int r = 0; r < 8; r++) {
				int row = 8 * h + r;
				int src = row < nr ? row : nr - 1;
				float dw, mw;

				qd_load32(fmt, w + src * ldw + (b0 + b) * bsz,
					  &v[r], &dw, &mw);
				p->d[b][row] = dw;
				p->m[b][row] = off * mw;
			}
			qd_tr8(v);
			/* v[c] lane r: elements 4c..4c+3 of row 8h + r */
#pragma GCC unroll 8
			for (int c = 0; c < 8; c++)
				_mm256_storeu_si256((__m256i *)(p->q[b][c] +
							       32 * h), v[c]);
		}
	}
}

/*
 * the panel's QD_PR rows x @tb tokens (@tb <= 4), outputs of the rows in
 * @mask (bit h of half h's 8 rows); @add: y +=
 */
static QD_AI QD_T void qd_ptile(const int tb, const struct qd_panel *p,
				int nb, const uint8_t *qa, size_t lda,
				size_t b0, float *y, size_t ldy, bool add,
				const __mmask8 mask[2])
{
	__m256 acc[2][4], off[2][4]; /* the offset terms apart, as qd_tile32 */

#pragma GCC unroll 2
	for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++) {
			acc[h][t] = add ? _mm256_maskz_loadu_ps(mask[h],
					y + t * ldy + 8 * h) : _mm256_setzero_ps();
			off[h][t] = _mm256_setzero_ps();
		}
	for (int b = 0; b < nb; b++) {
		const struct kvk_qa8 *x[4];
		__m256i s[2][4];

#pragma GCC unroll 4
		for (int t = 0; t < tb; t++) {
			x[t] = (const void *)(qa + t * lda +
					      (b0 + b) * sizeof(*x[t]));
			s[0][t] = s[1][t] = _mm256_setzero_si256();
		}
#pragma GCC unroll 8
		for (int c = 0; c < 8; c++) {
			__m256i w0 = _mm256_loadu_si256(
				(const __m256i *)p->q[b][c]);
			__m256i w1 = _mm256_loadu_si256(
				(const __m256i *)(p->q[b][c] + 32));

#pragma GCC unroll 4
			for (int t = 0; t < tb; t++) {
				int32_t a4;
				__m256i a;

				memcpy(&a4, x[t]->q + 4 * c, 4);
				a = _mm256_set1_epi32(a4);
				s[0][t] = _mm256_dpbusd_epi32(s[0][t], w0, a);
				s[1][t] = _mm256_dpbusd_epi32(s[1][t], w1, a);
			}
		}
#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
			__m256 dv = _mm256_loadu_ps(p->d[b] + 8 * h);
			__m256 mv = _mm256_loadu_ps(p->m[b] + 8 * h);

#pragma GCC unroll 4
			for (int t = 0; t < tb; t++) {
				acc[h][t] = _mm256_fmadd_ps(
					_mm256_cvtepi32_ps(s[h][t]),
					_mm256_mul_ps(dv, _mm256_set1_ps(
						x[t]->d)), acc[h][t]);
				off[h][t] = _mm256_fmadd_ps(
					mv, _mm256_set1_ps(x[t]->s),
					off[h][t]);
			}
		}
	}
#pragma GCC unroll 2
	for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++)
			_mm256_mask_storeu_ps(y + t * ldy + 8 * h, mask[h],
					      _mm256_add_ps(acc[h][t],
							    off[h][t]));
}

/* every row on panels, the last one padded */
static QD_AI QD_T void qd_gemm32_panels(const int fmt, const int bsz,
					const uint8_t *w, size_t ldw, int n,
					const uint8_t *qa, size_t lda, int nt,
					float *y, size_t ldy, size_t nb)
{
	struct qd_panel p;

	for (int r = 0; r < n; r += QD_PR) {
		int nr = n - r < QD_PR ? n - r : QD_PR;
		__mmask8 mask[2] = {
			(__mmask8)(nr >= 8 ? 0xff : (1u << nr) - 1),
			(__mmask8)(nr >= 16 ? 0xff :
				   nr > 8 ? (1u << (nr - 8)) - 1 : 0),
		};

		for (size_t b0 = 0; b0 < nb; b0 += QD_PB) {
			int pb = nb - b0 < QD_PB ? (int)(nb - b0) : QD_PB;
			int t = 0;

			qd_pack32(fmt, bsz, w + r * ldw, ldw, nr, b0, pb, &p);
			for (; t + 4 <= nt; t += 4)
				qd_ptile(4, &p, pb, qa + t * lda, lda, b0,
					 y + t * ldy + r, ldy, b0 > 0, mask);
			switch (nt - t) {
			case 3:
				qd_ptile(3, &p, pb, qa + t * lda, lda, b0,
					 y + t * ldy + r, ldy, b0 > 0, mask);
				break;
			case 2:
				qd_ptile(2, &p, pb, qa + t * lda, lda, b0,
					 y + t * ldy + r, ldy, b0 > 0, mask);
				break;
			case 1:
				qd_ptile(1, &p, pb, qa + t * lda, lda, b0,
					 y + t * ldy + r, ldy, b0 > 0, mask);
				break;
			}
		}
	}
}

#define QD_PGEMM32(name, fmt, type)                                          \
	static QD_T void name(const uint8_t *w, size_t ldw, int n,           \
			      const uint8_t *qa, size_t lda, int nt,         \
			      float *y, size_t ldy, size_t nb)               \
	{                                                                    \
		qd_gemm32_panels(fmt, sizeof(type), w, ldw, n, qa, lda, nt,  \
				 y, ldy, nb);                                \
	}

QD_PGEMM32(qd_q4_0_pgemm, QD_Q4_0, struct qd_q4_0)
QD_PGEMM32(qd_q4_1_pgemm, QD_Q4_1, struct qd_q4_1)
QD_PGEMM32(qd_q5_0_pgemm, QD_Q5_0, struct qd_q5_0)
QD_PGEMM32(qd_q5_1_pgemm, QD_Q5_1, struct qd_q5_1)
QD_PGEMM32(qd_q8_0_pgemm, QD_Q8_0, struct qd_q8_0)

/* the prefill products this ISA runs on panels; NULL: the tiles */
qdot_gemm_fn QD_PTAB(uint32_t wtype)
{
	switch (wtype) {
	case KVK_QT_Q4_0: return qd_q4_0_pgemm;
	case KVK_QT_Q4_1: return qd_q4_1_pgemm;
	case KVK_QT_Q5_0: return qd_q5_0_pgemm;
	case KVK_QT_Q5_1: return qd_q5_1_pgemm;
	case KVK_QT_Q8_0: return qd_q8_0_pgemm;
	}
	return NULL;
}
#endif

static QD_AI QD_T void qd_gemm32(const int fmt, const int bsz,
				 const uint8_t *w, size_t ldw, int n,
				 const uint8_t *qa, size_t lda, int nt,
				 float *y, size_t ldy, size_t nb)
{
	int t = 0, r;


	for (; t + 4 <= nt; t += 4) {
		const uint8_t *a = qa + t * lda;
		float *yt = y + t * ldy;

		for (r = 0; r + 2 <= n; r += 2)
			qd_tile32(fmt, bsz, 2, 4, w + r * ldw, ldw, a, lda,
				  yt + r, ldy, nb);
		for (; r < n; r++)
			qd_tile32(fmt, bsz, 1, 4, w + r * ldw, ldw, a, lda,
				  yt + r, ldy, nb);
	}
	for (; t < nt; t++) {
		const uint8_t *a = qa + t * lda;
		float *yt = y + t * ldy;

		/*
		 * one row at a time: measured on Zen 4, tiles of 2 or 4
		 * rows read Q8_0 from DRAM at a third of the rate (6 against
		 * 19 GB/s) and the 4-bit formats no faster
		 */
		for (r = 0; r < n; r++)
			qd_tile32(fmt, bsz, 1, 1, w + r * ldw, ldw, a, lda,
				  yt + r, ldy, nb);
	}
}

#define QD_GEMM32(name, fmt, type)                                           \
	static QD_T void name(const uint8_t *w, size_t ldw, int n,           \
			      const uint8_t *qa, size_t lda, int nt,         \
			      float *y, size_t ldy, size_t nb)               \
	{                                                                    \
		qd_gemm32(fmt, sizeof(type), w, ldw, n, qa, lda, nt, y, ldy, \
			  nb);                                               \
	}

QD_GEMM32(qd_q4_0_gemm, QD_Q4_0, struct qd_q4_0)
QD_GEMM32(qd_q4_1_gemm, QD_Q4_1, struct qd_q4_1)
QD_GEMM32(qd_q5_0_gemm, QD_Q5_0, struct qd_q5_0)
QD_GEMM32(qd_q5_1_gemm, QD_Q5_1, struct qd_q5_1)
QD_GEMM32(qd_q8_0_gemm, QD_Q8_0, struct qd_q8_0)

/* ---- the K-quants ---- */

enum { QD_Q4_K, QD_Q5_K, QD_Q6_K };

/*
 * One super-block's values as u8 (8 vectors of 32: Q4_K/Q5_K's sub-blocks,
 * Q6_K's quarters), the s16 scale vector of each (@sc: for Q6_K the two
 * 16-element scales of a quarter, one per 128-bit half), the scales
 * multiplying the activation group sums (@mins: 16 x s16 in bsums order),
 * and the fp32 factors of the integer sums (@d) and of the group sums
 * (@dm).
 */
static QD_AI QD_T void qd_loadk(const int fmt, const uint8_t *p,
				__m256i q[8], __m256i sc[8], __m256i *mins,
				float *d, float *dm)
{
	const __m256i m4 = _mm256_set1_epi8(0xf);

	if (fmt == QD_Q6_K) {
		const struct qd_q6_k *x = (const void *)p;
		const __m256i m3 = _mm256_set1_epi8(0x30);

#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
			__m256i l0 = _mm256_loadu_si256(
				(const __m256i *)(x->ql + 64 * h));
			__m256i l1 = _mm256_loadu_si256(
				(const __m256i *)(x->ql + 64 * h + 32));
			__m256i hb = _mm256_loadu_si256(
				(const __m256i *)(x->qh + 32 * h));

			q[4 * h] = _mm256_or_si256(
				_mm256_and_si256(l0, m4),
				_mm256_and_si256(_mm256_slli_epi16(hb, 4), m3));
			q[4 * h + 1] = _mm256_or_si256(
				_mm256_and_si256(l1, m4),
				_mm256_and_si256(_mm256_slli_epi16(hb, 2), m3));
			q[4 * h + 2] = _mm256_or_si256(
				_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
				_mm256_and_si256(hb, m3));
			q[4 * h + 3] = _mm256_or_si256(
				_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
				_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3));
		}
#pragma GCC unroll 8
		for (int c = 0; c < 8; c++)
			sc[c] = _mm256_set_m128i(
				_mm_set1_epi16(x->scales[2 * c + 1]),
				_mm_set1_epi16(x->scales[2 * c]));
		/* 32 sum(a) of each group, taken out of the sums */
		*mins = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(
			(const __m128i *)x->scales)), 5);
		*d = qd_h2f(x->d);
		*dm = *d;
		return;
	}
	{
		const struct qd_q4_k *x4 = (const void *)p;
		const struct qd_q5_k *x5 = (const void *)p;
		const uint8_t *qs = fmt == QD_Q4_K ? x4->qs : x5->qs;
		uint8_t sm[16];
		__m128i m8;
		__m256i hb = _mm256_setzero_si256();

		qdot_k4_scales(x4->scales, sm);
		if (fmt == QD_Q5_K)
			hb = _mm256_loadu_si256((const __m256i *)x5->qh);
#pragma GCC unroll 4
		for (int g = 0; g < 4; g++) {
			__m256i raw = _mm256_loadu_si256(
				(const __m256i *)(qs + 32 * g));

			q[2 * g] = _mm256_and_si256(raw, m4);
			q[2 * g + 1] = _mm256_and_si256(
				_mm256_srli_epi16(raw, 4), m4);
		}
		if (fmt == QD_Q5_K) {
			const __m256i b4 = _mm256_set1_epi8(0x10);

			q[0] = _mm256_or_si256(q[0], _mm256_and_si256(
				_mm256_slli_epi16(hb, 4), b4));
			q[1] = _mm256_or_si256(q[1], _mm256_and_si256(
				_mm256_slli_epi16(hb, 3), b4));
			q[2] = _mm256_or_si256(q[2], _mm256_and_si256(
				_mm256_slli_epi16(hb, 2), b4));
			q[3] = _mm256_or_si256(q[3], _mm256_and_si256(
				_mm256_slli_epi16(hb, 1), b4));
			q[4] = _mm256_or_si256(q[4], _mm256_and_si256(hb, b4));
			q[5] = _mm256_or_si256(q[5], _mm256_and_si256(
				_mm256_srli_epi16(hb, 1), b4));
			q[6] = _mm256_or_si256(q[6], _mm256_and_si256(
				_mm256_srli_epi16(hb, 2), b4));
			q[7] = _mm256_or_si256(q[7], _mm256_and_si256(
				_mm256_srli_epi16(hb, 3), b4));
		}
#pragma GCC unroll 8
		for (int s = 0; s < 8; s++)
			sc[s] = _mm256_set1_epi16(sm[s]);
		/* each min twice: groups 2s and 2s + 1 share it */
		m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(sm + 8)));
		*mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8),
					 _mm_unpacklo_epi16(m8, m8));
		*d = qd_h2f(x4->d);
		*dm = -qd_h2f(x4->dmin);
	}
}

/* one weight row x @tb activation rows (@tb <= 4) */
static QD_AI QD_T void qd_tilek(const int fmt, const int bsz, const int tb,
				const uint8_t *w, const uint8_t *qa,
				size_t lda, float *y, size_t ldy, size_t nb)
{
	__m256 acc[4];

#pragma GCC unroll 4
	for (int t = 0; t < tb; t++)
		acc[t] = _mm256_setzero_ps();
	for (size_t b = 0; b < nb; b++) {
		__m256i q[8], sc[8], mins;
		float d, dm;

		qd_loadk(fmt, w + b * bsz, q, sc, &mins, &d, &dm);
#pragma GCC unroll 4
		for (int t = 0; t < tb; t++) {
			const struct kvk_q8k *x = (const void *)(qa + t * lda +
						  b * sizeof(*x));
			__m256i sumi = _mm256_setzero_si256(), ms;

#pragma GCC unroll 8
			for (int s = 0; s < 8; s++) {
				__m256i a = _mm256_loadu_si256(
					(const __m256i *)(x->q + 32 * s));

				sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(
					_mm256_maddubs_epi16(q[s], a), sc[s]));
			}
			ms = _mm256_madd_epi16(_mm256_loadu_si256(
				(const __m256i *)x->bsums), mins);
			if (fmt == QD_Q6_K) {
				sumi = _mm256_sub_epi32(sumi, ms);
			} else {
				acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms),
					_mm256_set1_ps(dm * x->d), acc[t]);
			}
			acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi),
						 _mm256_set1_ps(d * x->d),
						 acc[t]);
		}
	}
#pragma GCC unroll 4
	for (int t = 0; t < tb; t++)
		y[t * ldy] = qd_hsum(acc[t]);
}

static QD_AI QD_T void qd_gemmk(const int fmt, const int bsz,
				const uint8_t *w, size_t ldw, int n,
				const uint8_t *qa, size_t lda, int nt,
				float *y, size_t ldy, size_t nb)
{
	int t = 0, r;

	for (; t + 4 <= nt; t += 4)
		for (r = 0; r < n; r++)
			qd_tilek(fmt, bsz, 4, w + r * ldw, qa + t * lda, lda,
				 y + t * ldy + r, ldy, nb);
	for (; t < nt; t++)
		for (r = 0; r < n; r++)
			qd_tilek(fmt, bsz, 1, w + r * ldw, qa + t * lda, lda,
				 y + t * ldy + r, ldy, nb);
}

#define QD_GEMMK(name, fmt, type)                                            \
	static QD_T void name(const uint8_t *w, size_t ldw, int n,           \
			      const uint8_t *qa, size_t lda, int nt,         \
			      float *y, size_t ldy, size_t nb)               \
	{                                                                    \
		qd_gemmk(fmt, sizeof(type), w, ldw, n, qa, lda, nt, y, ldy,  \
			 nb);                                                \
	}

QD_GEMMK(qd_q4_k_gemm, QD_Q4_K, struct qd_q4_k)
QD_GEMMK(qd_q5_k_gemm, QD_Q5_K, struct qd_q5_k)
QD_GEMMK(qd_q6_k_gemm, QD_Q6_K, struct qd_q6_k)

qdot_gemm_fn QD_TAB(uint32_t wtype)
{
	switch (wtype) {
	case KVK_QT_Q4_0: return qd_q4_0_gemm;
	case KVK_QT_Q4_1: return qd_q4_1_gemm;
	case KVK_QT_Q5_0: return qd_q5_0_gemm;
	case KVK_QT_Q5_1: return qd_q5_1_gemm;
	case KVK_QT_Q8_0: return qd_q8_0_gemm;
	case KVK_QT_Q4_K: return qd_q4_k_gemm;
	case KVK_QT_Q5_K: return qd_q5_k_gemm;
	case KVK_QT_Q6_K: return qd_q6_k_gemm;
	}
	return NULL;
}

/* ---- activation quantisation, as kvk_qdot_quantize()'s C loop ---- */

static QD_AI QD_T float qd_hmax(__m256 a)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(a),
			      _mm256_extractf128_ps(a, 1));

	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

static QD_AI QD_T int qd_hsum_i32(__m256i a)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(a),
				  _mm256_extracti128_si256(a, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

/*
 * 32 values times @inv, rounded to nearest even (as lrintf()), to int8 at
 * @q; *@s16 gets the sums of the two halves of 16
 */
static QD_AI QD_T void qd_q32(const float *x, __m256 inv, int8_t *q,
			      int *s0, int *s1)
{
	__m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv));
	__m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8),
						     inv));
	__m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16),
						     inv));
	__m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24),
						     inv));
	__m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
	__m256i v = _mm256_packs_epi16(ab, cd);

	*s0 = qd_hsum_i32(_mm256_add_epi32(a, b));
	*s1 = qd_hsum_i32(_mm256_add_epi32(c, d));
	v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6,
							     3, 7));
	_mm256_storeu_si256((__m256i *)q, v);
}

static QD_AI QD_T __m256 qd_abs(__m256 v)
{
	return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

QD_T void QD_QUANT(const float *x, void *qa, size_t k, bool k8)
{
	if (!k8) {
		struct kvk_qa8 *b = qa;

		for (size_t i = 0; i < k / KVK_QK; i++, x += KVK_QK, b++) {
			__m256 m = _mm256_max_ps(
				_mm256_max_ps(qd_abs(_mm256_loadu_ps(x)),
					      qd_abs(_mm256_loadu_ps(x + 8))),
				_mm256_max_ps(qd_abs(_mm256_loadu_ps(x + 16)),
					      qd_abs(_mm256_loadu_ps(x + 24))));
			float amax = qd_hmax(m);
			float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
			int s0, s1;

			b->d = amax / 127.0f;
			qd_q32(x, _mm256_set1_ps(inv), b->q, &s0, &s1);
			b->s = b->d * (float)(s0 + s1);
		}
		return;
	}
	for (struct kvk_q8k *b = qa; k; k -= KVK_QK_K, x += KVK_QK_K, b++) {
		__m256 m = _mm256_setzero_ps();
		float amax, inv;

		for (int i = 0; i < KVK_QK_K; i += 8)
			m = _mm256_max_ps(m, qd_abs(_mm256_loadu_ps(x + i)));
		amax = qd_hmax(m);
		inv = amax > 0.0f ? 127.0f / amax : 0.0f;
		b->d = amax / 127.0f;
		for (int g = 0; g < KVK_QK_K / 32; g++) {
			int s0, s1;

			qd_q32(x + 32 * g, _mm256_set1_ps(inv), b->q + 32 * g,
			       &s0, &s1);
			b->bsums[2 * g] = (int16_t)s0;
			b->bsums[2 * g + 1] = (int16_t)s1;
		}
	}
}
