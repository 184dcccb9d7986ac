// SPDX-License-Identifier: MIT
/*
 * attn.c - CPU reference of paged mixed-precision decode attention.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kvattn.h"
#include "kvq.h"

#define KVK_GRANULE (2ULL << 20)

static int tier_valid(const struct kvk_attn_tier *t, uint32_t hd,
		      uint32_t page_size)
{
	if (kvq_format_valid(hd, t->kbits, t->kgroups) ||
	    kvq_format_valid(hd, t->vbits, t->vgroups) || !t->tokens)
		return 0;
	/* every segment of every token inside the page */
	return t->k_off + t->tokens * kvq_row_bytes(hd, t->kbits) <= page_size &&
	       t->km_off + t->tokens * kvq_meta_bytes(t->kbits, t->kgroups) <=
		       page_size &&
	       t->v_off + t->tokens * kvq_row_bytes(hd, t->vbits) <= page_size &&
	       t->vm_off + t->tokens * kvq_meta_bytes(t->vbits, t->vgroups) <=
		       page_size &&
	       t->score_off + 4 * t->tokens <= page_size &&
	       t->pos_off + 4 * t->tokens <= page_size;
}

/**
 * kvk_attn_check() - validate decode-attention arguments
 * @a: arguments
 *
 * Return: 0 or -EINVAL.
 */
int kvk_attn_check(const struct kvk_attn_args *a)
{
	if (!a || !a->q || !a->out || !a->tables || !a->ntokens ||
	    !a->list_base || !a->pool)
		return -EINVAL;
	if ((a->head_dim != 64 && a->head_dim != 128 && a->head_dim != 256) ||
	    !a->group || a->group > KVK_ATTN_MAX_GROUP || !a->nr_kv_heads ||
	    a->dtype >= KVK_DTYPE_NR || !a->width || !a->page_size ||
	    !a->pages_per_granule ||
	    (uint64_t)a->page_size * a->pages_per_granule > KVK_GRANULE ||
	    !(a->scale > 0.0f))
		return -EINVAL;
	if (!tier_valid(&a->tier[0], a->head_dim, a->page_size) ||
	    !tier_valid(&a->tier[1], a->head_dim, a->page_size))
		return -EINVAL;
	return 0;
}

/* address of token @i of (seq, head) list @list; tier in *@tier */
static uint8_t *token_page(const struct kvk_attn_args *a, uint32_t list,
			   uint32_t i, uint32_t n_hi, uint32_t *tier,
			   uint32_t *slot)
{
	uint32_t page;

	if (i < n_hi) {
		*tier = 0;
		page = a->tables[(size_t)list * a->width +
				 i / a->tier[0].tokens];
		*slot = i % a->tier[0].tokens;
	} else {
		i -= n_hi;
		*tier = 1;
		page = a->tables[(size_t)list * a->width + a->width - 1 -
				 i / a->tier[1].tokens];
		*slot = i % a->tier[1].tokens;
	}
	return (uint8_t *)(uintptr_t)(a->pool +
				      (page / a->pages_per_granule) *
					      KVK_GRANULE +
				      (uint64_t)(page % a->pages_per_granule) *
					      a->page_size);
}

static int decode_row(const uint8_t *page, const struct kvk_attn_tier *t,
		      uint32_t hd, uint32_t slot, int v, float *x)
{
	uint32_t bits = v ? t->vbits : t->kbits;
	uint32_t groups = v ? t->vgroups : t->kgroups;
	uint32_t off = v ? t->v_off : t->k_off;
	uint32_t moff = v ? t->vm_off : t->km_off;
	uint16_t meta[8];

	memcpy(meta, page + moff + slot * kvq_meta_bytes(bits, groups),
	       kvq_meta_bytes(bits, groups));
	return kvq_dequantize_row(page + off + slot * kvq_row_bytes(hd, bits),
				  meta, hd, bits, groups, x);
}

/*
 * q . k for the @G heads of a group, each a chain of double additions in
 * column order (the same sum as alone); @G a constant in each instance, so
 * that the chains stay in registers and overlap
 */
#define DEF_DOTS(G)							\
static void dots##G(const float *qs, const float *k, uint32_t hd,	\
		    double *out)					\
{									\
	double d[G] = { 0 };						\
									\
	for (uint32_t e = 0; e < hd; e++) {				\
		_Pragma("GCC unroll 8")					\
		for (uint32_t g = 0; g < G; g++)			\
			d[g] += (double)qs[g * hd + e] * k[e];		\
	}								\
	for (uint32_t g = 0; g < G; g++)				\
		out[g] = d[g];						\
}
DEF_DOTS(1)
DEF_DOTS(2)
DEF_DOTS(3)
DEF_DOTS(4)
DEF_DOTS(5)
DEF_DOTS(6)
DEF_DOTS(7)
DEF_DOTS(8)

static void group_dots(const float *qs, const float *k, uint32_t hd,
		       uint32_t group, double *out)
{
	static void (*const fn[])(const float *, const float *, uint32_t,
				  double *) = {
		dots1, dots2, dots3, dots4, dots5, dots6, dots7, dots8,
	};

	fn[group - 1](qs, k, hd, out);
}

/* @o += @p * @v over @hd columns (no aliasing: vectorised) */
static void axpy(float *restrict o, float p, const float *restrict v,
		 uint32_t hd)
{
	for (uint32_t e = 0; e < hd; e++)
		o[e] += p * v[e];
}

/**
 * kvk_attn_decode_cpu() - decode attention, CPU reference
 * @a: arguments; every address is a host pointer
 * @stream: ignored
 *
 * For each sequence and kv-head: dequantize every token's K and V to fp32,
 * softmax(q . k * scale) per query head, out = sum p v; with
 * @a->update_scores, add max over the group's heads of p to each token's
 * score field.
 *
 * Return: 0, -EINVAL for bad arguments or a list with more tokens than its
 * table holds, -ENOMEM.
 */
int kvk_attn_decode_cpu(const struct kvk_attn_args *a, void *stream)
{
	uint32_t hd, nq;
	float *q, *o, *k, *v, *logit;
	double *ex;
	size_t qn;
	int ret;

	(void)stream;
	ret = kvk_attn_check(a);
	if (ret)
		return ret;
	hd = a->head_dim;
	nq = a->nr_kv_heads * a->group;
	qn = (size_t)a->nr_seqs * nq * hd;
	q = malloc(qn * sizeof(float));
	o = calloc(qn, sizeof(float));
	k = malloc(hd * sizeof(float));
	v = malloc(hd * sizeof(float));
	logit = NULL;
	ex = NULL;
	if (!q || !o || !k || !v) {
		ret = -ENOMEM;
		goto out;
	}
	ret = kvk_convert_to_f32(q, a->q, qn, a->dtype);
	for (uint32_t s = 0; !ret && s < a->nr_seqs; s++) {
		for (uint32_t h = 0; !ret && h < a->nr_kv_heads; h++) {
			uint32_t list = a->list_base[s] + h;
			uint32_t n_hi = a->ntokens[2 * list];
			uint32_t n_lo = a->ntokens[2 * list + 1];
			uint32_t n = n_hi + n_lo;
			uint64_t pages = (n_hi + a->tier[0].tokens - 1) /
					 a->tier[0].tokens +
					 (n_lo + a->tier[1].tokens - 1) /
					 a->tier[1].tokens;

			if (pages > a->width) {
				ret = -EINVAL;
				break;
			}
			free(logit);
			free(ex);
			logit = malloc(((size_t)n * a->group + 1) * sizeof(float));
			ex = malloc(((size_t)n + 1) * sizeof(double));
			if (!logit || !ex) {
				ret = -ENOMEM;
				break;
			}
			/*
			 * logits: the group's heads side by side, each its own
			 * chain of double additions in column order (the
			 * chains overlap; each sum is the same as alone)
			 */
			for (uint32_t i = 0; i < n; i++) {
				const float *qs = q + ((size_t)s * nq +
						       h * a->group) * hd;
				double d[KVK_ATTN_MAX_GROUP] = { 0 };
				uint32_t tier, slot;
				uint8_t *pg = token_page(a, list, i, n_hi, &tier,
							 &slot);

				decode_row(pg, &a->tier[tier], hd, slot, 0, k);
				group_dots(qs, k, hd, a->group, d);
				for (uint32_t g = 0; g < a->group; g++)
					logit[(size_t)g * n + i] =
						(float)(d[g] * a->scale);
			}
			/* softmax per query head, each exp computed once */
			for (uint32_t g = 0; g < a->group; g++) {
				float *l = logit + (size_t)g * n, mx = -INFINITY;
				double sum = 0;

				for (uint32_t i = 0; i < n; i++)
					mx = fmaxf(mx, l[i]);
				for (uint32_t i = 0; i < n; i++) {
					ex[i] = exp((double)l[i] - mx);
					sum += ex[i];
				}
				for (uint32_t i = 0; i < n; i++)
					l[i] = (float)(ex[i] / sum);
			}
			/* out = sum p v; scores */
			for (uint32_t i = 0; i < n; i++) {
				uint32_t tier, slot;
				uint8_t *pg = token_page(a, list, i, n_hi, &tier,
							 &slot);
				float best = 0.0f;

				decode_row(pg, &a->tier[tier], hd, slot, 1, v);
				for (uint32_t g = 0; g < a->group; g++) {
					float p = logit[(size_t)g * n + i];
					float *oo = o + ((size_t)s * nq +
							 h * a->group + g) * hd;

					axpy(oo, p, v, hd);
					best = kvk_attn_score_fold(
						a->update_scores, best, p);
				}
				if (a->update_scores) {
					float *sc = (float *)(pg +
						a->tier[tier].score_off) + slot;

					*sc += best;
				}
			}
		}
	}
	if (!ret)
		ret = kvk_convert_from_f32(a->out, o, qn, a->dtype);
out:
	free(logit);
	free(ex);
	free(q);
	free(o);
	free(k);
	free(v);
	return ret;
}

/**
 * kvk_attn_splits() - blocks per (sequence, kv-head) the CUDA kernel uses
 * @a: valid arguments
 *
 * Enough splits that the grid holds about KVK_ATTN_TARGET_BLOCKS blocks,
 * at most KVK_ATTN_MAX_SPLIT, and at least 8 table entries per split.
 *
 * Return: 1..KVK_ATTN_MAX_SPLIT.
 */
uint32_t kvk_attn_splits(const struct kvk_attn_args *a)
{
	uint64_t pairs = (uint64_t)a->nr_seqs * a->nr_kv_heads;
	uint64_t n;

	if (!pairs)
		return 1;
	n = (KVK_ATTN_TARGET_BLOCKS + pairs - 1) / pairs;
	if (n > (a->width + 7) / 8)
		n = (a->width + 7) / 8;
	if (n > KVK_ATTN_MAX_SPLIT)
		n = KVK_ATTN_MAX_SPLIT;
	return n ? (uint32_t)n : 1;
}

/**
 * kvk_attn_work_layout() - scratch layout for a given split count
 * @a: valid arguments
 * @splits: blocks per (sequence, kv-head), 1..KVK_ATTN_MAX_SPLIT
 * @w: filled in; partial results only when @splits > 1, logits and
 *	log-sum-exps only with @a->update_scores
 */
void kvk_attn_work_layout(const struct kvk_attn_args *a, uint32_t splits,
			  struct kvk_attn_work *w)
{
	size_t heads = (size_t)a->nr_seqs * a->nr_kv_heads * a->group;
	uint32_t tmax = a->tier[0].tokens > a->tier[1].tokens ?
				a->tier[0].tokens : a->tier[1].tokens;
	size_t o = 0;

	w->splits = splits;
	w->tstride = (tmax + 15) / 16 * 16;
	w->acc_off = o;
	if (splits > 1)
		o += heads * splits * a->head_dim * 4;
	w->ml_off = o;
	if (splits > 1)
		o += heads * splits * 8;
	w->lse_off = o;
	if (a->update_scores)
		o += (heads * 4 + 15) / 16 * 16;
	w->logit_off = o;
	if (a->update_scores)
		o += heads * a->width * w->tstride * 4;
	w->bytes = o;
}

/**
 * kvk_attn_work_bytes() - scratch the CUDA kernel needs to run at full speed
 * @a: valid arguments
 *
 * Return: bytes for struct kvk_attn_args.work (0 when none is needed).
 */
size_t kvk_attn_work_bytes(const struct kvk_attn_args *a)
{
	struct kvk_attn_work w;

	kvk_attn_work_layout(a, kvk_attn_splits(a), &w);
	return w.bytes;
}

/**
 * kvk_attn_bytes() - bytes one decode-attention call reads from memory
 * @a: arguments
 * @ntok: host array [nr_seqs][nr_kv_heads][2]: each (sequence, head)'s
 *	token counts per tier, in batch order
 *
 * Counts every byte the kernel must read: K and V rows and their metadata
 * for every token, scores read and written when updated, the table entries
 * and counts, q and out. Bandwidth figures are computed from it.
 *
 * Return: bytes.
 */
uint64_t kvk_attn_bytes(const struct kvk_attn_args *a, const uint32_t *ntok)
{
	uint64_t b = 0, hd = a->head_dim;
	size_t pairs = (size_t)a->nr_seqs * a->nr_kv_heads;

	for (size_t i = 0; i < pairs; i++) {
		for (int t = 0; t < 2; t++) {
			const struct kvk_attn_tier *ti = &a->tier[t];
			uint64_t n = ntok[2 * i + t];

			b += n * (kvq_row_bytes(hd, ti->kbits) +
				  kvq_row_bytes(hd, ti->vbits) +
				  kvq_meta_bytes(ti->kbits, ti->kgroups) +
				  kvq_meta_bytes(ti->vbits, ti->vgroups));
			b += (n + ti->tokens - 1) / ti->tokens * 4;
			if (a->update_scores)
				b += n * 8;
		}
		b += 8 + 4;
	}
	return b + 2ULL * pairs * a->group * hd * kvk_dtype_size(a->dtype);
}

/* ---- the host caches' decode attention: fp16 tiers on AVX2 + F16C ---- */

#if defined(__x86_64__)
#include <immintrin.h>

#define HD_T __attribute__((target("avx2,fma,f16c")))

static HD_T float hd_hsum(__m256 a)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a),
			      _mm256_extractf128_ps(a, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* the fp16 key row of token @i of @list (tier and slot: token_page()) */
static const uint16_t *hd_key(const struct kvk_attn_args *a, uint32_t list,
			      uint32_t i, uint32_t n_hi)
{
	uint32_t tier, slot;
	const uint8_t *pg = token_page(a, list, i, n_hi, &tier, &slot);

	return (const uint16_t *)(pg + a->tier[tier].k_off +
				  (size_t)slot * kvq_row_bytes(a->head_dim, 16));
}

/* one (sequence, kv-head): @qs the group's query rows, @o their outputs */
static HD_T void hd_list(const struct kvk_attn_args *a, uint32_t list,
			 uint32_t n_hi, uint32_t n, const float *qs, float *o,
			 float *logit)
{
	uint32_t hd = a->head_dim, G = a->group;

	for (uint32_t i = 0; i < n; i++) {
		const uint16_t *k = hd_key(a, list, i, n_hi);

		for (uint32_t g = 0; g < G; g++) {
			const float *q = qs + (size_t)g * hd;
			__m256 s0 = _mm256_setzero_ps(), s1 = s0;

			for (uint32_t e = 0; e < hd; e += 16) {
				s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + e),
					_mm256_cvtph_ps(_mm_loadu_si128(
						(const __m128i *)(k + e))), s0);
				s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + e + 8),
					_mm256_cvtph_ps(_mm_loadu_si128(
						(const __m128i *)(k + e + 8))),
					s1);
			}
			logit[(size_t)g * n + i] =
				hd_hsum(_mm256_add_ps(s0, s1)) * a->scale;
		}
	}
	for (uint32_t g = 0; g < G; g++) {
		float *l = logit + (size_t)g * n, mx = -INFINITY;
		double sum = 0;
		float inv;

		for (uint32_t i = 0; i < n; i++)
			mx = fmaxf(mx, l[i]);
		for (uint32_t i = 0; i < n; i++) {
			l[i] = expf(l[i] - mx);
			sum += l[i];
		}
		inv = (float)(1.0 / sum);
		for (uint32_t i = 0; i < n; i++)
			l[i] *= inv;
	}
	memset(o, 0, (size_t)G * hd * sizeof(float));
	for (uint32_t i = 0; i < n; i++) {
		uint32_t tier, slot;
		uint8_t *pg = token_page(a, list, i, n_hi, &tier, &slot);
		const uint16_t *v = (const uint16_t *)(pg +
			a->tier[tier].v_off +
			(size_t)slot * kvq_row_bytes(hd, 16));
		float best = 0.0f;

		for (uint32_t e = 0; e < hd; e += 8) {
			__m256 vv = _mm256_cvtph_ps(_mm_loadu_si128(
				(const __m128i *)(v + e)));

			for (uint32_t g = 0; g < G; g++) {
				float *oo = o + (size_t)g * hd + e;

				_mm256_storeu_ps(oo, _mm256_fmadd_ps(
					_mm256_set1_ps(logit[(size_t)g * n + i]),
					vv, _mm256_loadu_ps(oo)));
			}
		}
		if (!a->update_scores)
			continue;
		for (uint32_t g = 0; g < G; g++)
			best = kvk_attn_score_fold(a->update_scores, best,
						   logit[(size_t)g * n + i]);
		((float *)(pg + a->tier[tier].score_off))[slot] += best;
	}
}
#endif

/* whether kvk_attn_decode_host() has a fast path for @a's formats */
static bool hd_fast(const struct kvk_attn_args *a)
{
#if defined(__x86_64__)
	for (int t = 0; t < 2; t++)
		if (a->tier[t].kbits != 16 || a->tier[t].vbits != 16)
			return false;
	return a->head_dim % 16 == 0 && kvk_cpu_avx2_fma() && kvk_cpu_f16c();
#else
	(void)a;
	return false;
#endif
}

/**
 * kvk_attn_decode_host() - decode attention as the host caches run it
 * @a: arguments, as kvk_attn_decode_cpu(); every address a host pointer
 * @stream: ignored
 *
 * What kvk_attn_decode_cpu() computes, in fp32 where it sums in double:
 * where both tiers hold fp16 keys and values (the full policy) and the CPU
 * has AVX2, FMA and F16C, each key row is converted 16 values at a time
 * and dotted with the group's queries in fp32 vectors, the softmax takes
 * expf() (its sum in double), and the values are added into the outputs
 * 8 columns at a time; the score update is the reference's. The results
 * differ from the reference's by rounding only (tests/check_attn.c bounds
 * both against double-precision attention). Other formats run the
 * reference.
 *
 * Return: as kvk_attn_decode_cpu().
 */
int kvk_attn_decode_host(const struct kvk_attn_args *a, void *stream)
{
#if defined(__x86_64__)
	uint32_t hd, nq, nmax = 0;
	float *q, *o, *logit;
	size_t qn;
	int ret;

	ret = kvk_attn_check(a);
	if (ret || !hd_fast(a))
		return ret ?: kvk_attn_decode_cpu(a, stream);
	hd = a->head_dim;
	nq = a->nr_kv_heads * a->group;
	qn = (size_t)a->nr_seqs * nq * hd;
	for (uint32_t s = 0; s < a->nr_seqs; s++)
		for (uint32_t h = 0; h < a->nr_kv_heads; h++) {
			uint32_t list = a->list_base[s] + h;
			uint32_t n_hi = a->ntokens[2 * list];
			uint32_t n_lo = a->ntokens[2 * list + 1];
			uint64_t pages = (n_hi + a->tier[0].tokens - 1) /
					 a->tier[0].tokens +
					 (n_lo + a->tier[1].tokens - 1) /
					 a->tier[1].tokens;

			if (pages > a->width)
				return -EINVAL;
			if (n_hi + n_lo > nmax)
				nmax = n_hi + n_lo;
		}
	q = malloc(qn * sizeof(float));
	o = malloc(qn * sizeof(float));
	logit = malloc(((size_t)nmax * a->group + 1) * sizeof(float));
	if (!q || !o || !logit) {
		ret = -ENOMEM;
		goto out;
	}
	ret = kvk_convert_to_f32(q, a->q, qn, a->dtype);
	for (uint32_t s = 0; !ret && s < a->nr_seqs; s++)
		for (uint32_t h = 0; h < a->nr_kv_heads; h++) {
			uint32_t list = a->list_base[s] + h;
			size_t at = ((size_t)s * nq + h * a->group) * hd;

			hd_list(a, list, a->ntokens[2 * list],
				a->ntokens[2 * list] + a->ntokens[2 * list + 1],
				q + at, o + at, logit);
		}
	if (!ret)
		ret = kvk_convert_from_f32(a->out, o, qn, a->dtype);
out:
	free(q);
	free(o);
	free(logit);
	return ret;
#else
	return kvk_attn_decode_cpu(a, stream);
#endif
}
