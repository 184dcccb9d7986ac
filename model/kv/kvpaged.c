// SPDX-License-Identifier: MIT
/*
 * kvpaged.c - a KV cache in the allocator's pages, reached through the kvmm
 * uapi (kvshim_ioctl()), host backend, fp16 tier.
 *
 * DOC: paged KV cache
 *
 * Creation opens a kvshim handle, creates a space (KVMM_BACKEND_HOST, one
 * tier of fp16 keys and values) sized for @n_seq sequences of @max_tok
 * tokens, admits every sequence slot at once with @max_tok tokens (the
 * worst-case pages of every (layer, kv-head) list are reserved up front:
 * there is no uapi call yet to grow a sequence at decode), and asks
 * KVMM_IOC_PAGE_TABLE_INFO where the pool and the page tables are.
 *
 * Position p of a list is token p % T of page table[list][p / T], T tokens
 * per page; within the page, the fp16 key row is at k_off + slot * 2 hd
 * bytes and the value row at v_off + slot * 2 hd (kva_page_layout()), the
 * position at pos_off + 4 slot. The tables are read at every access, so a
 * page moved by compaction is followed.
 *
 * view() gathers one (layer, kv-head) into fp32 scratch per kv-head;
 * attend() computes the attention of a step's queries straight from the
 * pages (fp16 keys and values, fp32 accumulation), which the CPU forward
 * pass uses when present.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kva.h"
#include "kvcache.h"
#include "kvk.h"
#include "kvrt.h"
#include "kvshim.h"

struct kv_paged {
	struct llm_kv kv;
	int fd;
	uint32_t space;
	struct kvmm_page_table_info pti;
	struct kva_layout lay;
	uint32_t *slot;	  /* [n_seq] allocator slot of each sequence */
	float *scratch;	  /* [n_kv_heads][2][max_tok][head_dim] */
	float *score;	  /* [max_tok] attend() scores */
	float (*dot)(const float *q, const uint16_t *k, int n);
	void (*axpy)(float *y, float w, const uint16_t *v, int n);
};

/* ---- fp16 rows: q . k and out += w v ---- */

static float dot_f16_gen(const float *q, const uint16_t *k, int n)
{
	float d = 0.0f;

	for (int i = 0; i < n; i++)
		d += q[i] * kvk_f16_to_f32(k[i]);
	return d;
}

static void axpy_f16_gen(float *y, float w, const uint16_t *v, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += w * kvk_f16_to_f32(v[i]);
}

#if defined(__x86_64__)
#define F16C __attribute__((target("avx2,fma,f16c")))

/* n a multiple of 8 (every head_dim the uapi serves is) */
static F16C float dot_f16_x86(const float *q, const uint16_t *k, int n)
{
	__m256 acc = _mm256_setzero_ps();
	__m128 lo, hi;

	for (int i = 0; i < n; i += 8) {
		__m256 kv = _mm256_cvtph_ps(
			_mm_loadu_si128((const __m128i *)(k + i)));

		acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kv, acc);
	}
	lo = _mm256_castps256_ps128(acc);
	hi = _mm256_extractf128_ps(acc, 1);
	lo = _mm_add_ps(lo, hi);
	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
	return _mm_cvtss_f32(lo);
}

static F16C void axpy_f16_x86(float *y, float w, const uint16_t *v, int n)
{
	__m256 wv = _mm256_set1_ps(w);

	for (int i = 0; i < n; i += 8) {
		__m256 x = _mm256_cvtph_ps(
			_mm_loadu_si128((const __m128i *)(v + i)));

		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, x,
						_mm256_loadu_ps(y + i)));
	}
}

static bool have_f16c(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") &&
	       __builtin_cpu_supports("fma") &&
	       __builtin_cpu_supports("f16c");
}
#endif

static inline struct kv_paged *to_kp(struct llm_kv *kv)
{
	return (struct kv_paged *)kv;
}

/* the page holding position @pos of list (@seq, @layer, @h) */
static uint8_t *kp_page(const struct kv_paged *kp, int seq, int layer,
			int h, int pos, uint32_t *slot)
{
	const uint32_t *tab = (const uint32_t *)(uintptr_t)kp->pti.tables;
	uint32_t tpp = kp->lay.tokens;
	uint64_t list = ((uint64_t)kp->slot[seq] * kp->kv.n_layers + layer) *
			kp->kv.n_kv_heads + h;
	uint32_t p = tab[list * kp->pti.table_width + pos / tpp];

	*slot = pos % tpp;
	return (uint8_t *)(uintptr_t)(kp->pti.pool_base +
		(uint64_t)(p / kp->pti.pages_per_granule) * KVRT_GRANULE_SIZE +
		(uint64_t)(p % kp->pti.pages_per_granule) * kp->pti.page_size);
}

static int kp_append(struct llm_kv *kv, int seq, int layer, int pos,
		     int ntok, const float *k, const float *v, long ld)
{
	struct kv_paged *kp = to_kp(kv);
	int hd = kv->head_dim;

	if (seq < 0 || seq >= kv->n_seq || layer < 0 ||
	    layer >= kv->n_layers || pos < 0 || ntok < 0)
		return -EINVAL;
	if (pos + ntok > kv->max_tok)
		return -ENOSPC;
	for (int t = 0; t < ntok; t++) {
		for (int h = 0; h < kv->n_kv_heads; h++) {
			const float *kr = k + t * ld + (size_t)h * hd;
			const float *vr = v + t * ld + (size_t)h * hd;
			uint32_t s;
			uint8_t *pg = kp_page(kp, seq, layer, h, pos + t, &s);
			uint16_t *kd = (uint16_t *)(pg + kp->lay.k_off +
						    (size_t)s * 2 * hd);
			uint16_t *vd = (uint16_t *)(pg + kp->lay.v_off +
						    (size_t)s * 2 * hd);
			int32_t p32 = pos + t;

			for (int i = 0; i < hd; i++) {
				kd[i] = kvk_f32_to_f16(kr[i]);
				vd[i] = kvk_f32_to_f16(vr[i]);
			}
			memcpy(pg + kp->lay.pos_off + 4 * s, &p32, 4);
		}
	}
	return 0;
}

static int kp_view(struct llm_kv *kv, int seq, int layer, int h, int n,
		   const float **k, const float **v)
{
	struct kv_paged *kp = to_kp(kv);
	int hd = kv->head_dim;
	float *ks, *vs;

	if (seq < 0 || seq >= kv->n_seq || layer < 0 ||
	    layer >= kv->n_layers || h < 0 || h >= kv->n_kv_heads || n < 0 ||
	    n > kv->max_tok)
		return -EINVAL;
	ks = kp->scratch + (size_t)h * 2 * kv->max_tok * hd;
	vs = ks + (size_t)kv->max_tok * hd;
	for (int p = 0; p < n; p++) {
		uint32_t s;
		const uint8_t *pg = kp_page(kp, seq, layer, h, p, &s);
		const uint16_t *kd = (const uint16_t *)(pg + kp->lay.k_off +
							(size_t)s * 2 * hd);
		const uint16_t *vd = (const uint16_t *)(pg + kp->lay.v_off +
							(size_t)s * 2 * hd);

		for (int i = 0; i < hd; i++) {
			ks[(size_t)p * hd + i] = kvk_f16_to_f32(kd[i]);
			vs[(size_t)p * hd + i] = kvk_f16_to_f32(vd[i]);
		}
	}
	*k = ks;
	*v = vs;
	return 0;
}

/*
 * attend() - out = softmax(q K^T * scale) V for one query head over
 * positions 0 .. @n - 1 of (@seq, @layer, @h), read from the pages
 */
static int kp_attend(struct llm_kv *kv, int seq, int layer, int h, int n,
		     const float *q, float scale, float *out, float *s)
{
	struct kv_paged *kp = to_kp(kv);
	int hd = kv->head_dim;
	float mx = -INFINITY, sum = 0.0f;

	if (seq < 0 || seq >= kv->n_seq || layer < 0 ||
	    layer >= kv->n_layers || h < 0 || h >= kv->n_kv_heads || n < 1 ||
	    n > kv->max_tok)
		return -EINVAL;
	for (int p = 0; p < n; p++) {
		uint32_t sl;
		const uint8_t *pg = kp_page(kp, seq, layer, h, p, &sl);
		const uint16_t *kd = (const uint16_t *)(pg + kp->lay.k_off +
							(size_t)sl * 2 * hd);
		s[p] = kp->dot(q, kd, hd) * scale;
		mx = s[p] > mx ? s[p] : mx;
	}
	for (int p = 0; p < n; p++) {
		s[p] = expf(s[p] - mx);
		sum += s[p];
	}
	memset(out, 0, hd * sizeof(float));
	for (int p = 0; p < n; p++) {
		uint32_t sl;
		const uint8_t *pg = kp_page(kp, seq, layer, h, p, &sl);
		const uint16_t *vd = (const uint16_t *)(pg + kp->lay.v_off +
							(size_t)sl * 2 * hd);
		kp->axpy(out, s[p] / sum, vd, hd);
	}
	return 0;
}

static int kp_stats(struct llm_kv *kv, struct llm_kv_stats *st)
{
	struct kv_paged *kp = to_kp(kv);
	struct kvmm_stats s = { .space = kp->space };
	int ret;

	memset(st, 0, sizeof(*st));
	ret = kvshim_ioctl(kp->fd, KVMM_IOC_STATS, &s);
	if (ret)
		return ret;
	st->paged = true;
	st->page_size = s.page_size;
	st->tokens_per_page = kp->lay.tokens;
	st->pages_total = s.pages_total;
	st->pages_used[0] = s.pages_used[0];
	st->pages_used[1] = s.pages_used[1];
	st->bytes = (s.pages_used[0] + s.pages_used[1]) * s.page_size;
	return 0;
}

static void kp_destroy(struct llm_kv *kv)
{
	struct kv_paged *kp = to_kp(kv);
	struct kvmm_space_destroy d = { .space = kp->space };

	if (kp->fd >= 0) {
		if (kp->space)
			kvshim_ioctl(kp->fd, KVMM_IOC_SPACE_DESTROY, &d);
		kvshim_close(kp->fd);
	}
	free(kp->slot);
	free(kp->scratch);
	free(kp->score);
	free(kv->len);
	free(kp);
}

static const struct llm_kv_ops kp_ops = {
	.append = kp_append,
	.view = kp_view,
	.attend = kp_attend,
	.stats = kp_stats,
	.destroy = kp_destroy,
};

/* bytes of granules that hold every list's pages, plus one spare granule */
static int kp_budget(uint32_t hd, uint64_t lists, uint32_t max_tok,
		     uint64_t *bytes)
{
	struct kva_tier t = { 16, 16, 1, 1 };
	struct kva_layout l;
	uint64_t pages, ppg;
	int ps, ret;

	ps = kva_page_size(hd, &t, 1);
	if (ps < 0)
		return ps;
	ret = kva_page_layout(hd, (uint32_t)ps, &t, &l);
	if (ret)
		return ret;
	ppg = KVRT_GRANULE_SIZE / (uint32_t)ps;
	pages = lists * kva_worst_pages(l.tokens, l.tokens, max_tok);
	*bytes = ((pages + ppg - 1) / ppg + 1) * KVRT_GRANULE_SIZE;
	return 0;
}

/**
 * llm_kv_paged_create() - a KV cache in allocator pages through the uapi
 * @c: model configuration (head_dim 64, 80, 96, 128 or 256)
 * @n_seq: sequence slots; each is admitted for @max_tok tokens at once
 * @max_tok: capacity of each sequence, tokens; 1 .. c->n_ctx
 * @out: the cache, released with llm_kv_destroy()
 *
 * Return: 0, -EINVAL for a bad count or a shape the uapi refuses,
 * -ENOSPC/-ENOMEM when the pages cannot be had, or the error of the uapi
 * call.
 */
int llm_kv_paged_create(const struct llm_config *c, int n_seq, int max_tok,
			struct llm_kv **out)
{
	struct kvmm_space_create sc = { 0 };
	struct kvmm_seq_admit adm = { 0 };
	struct kvmm_seq *seqs = NULL;
	struct kva_tier tier = { 16, 16, 1, 1 };
	struct kv_paged *kp;
	uint64_t lists, bytes;
	int ret;

	if (n_seq < 1 || n_seq > 4096 || max_tok < 1 ||
	    (uint32_t)max_tok > c->n_ctx || !c->n_layers || !c->n_kv_heads)
		return -EINVAL;
	lists = (uint64_t)n_seq * c->n_layers * c->n_kv_heads;
	ret = kp_budget(c->head_dim, lists, (uint32_t)max_tok, &bytes);
	if (ret)
		return ret;
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		return -ENOMEM;
	kp->fd = -1;
	kp->kv.ops = &kp_ops;
	kp->dot = dot_f16_gen;
	kp->axpy = axpy_f16_gen;
#if defined(__x86_64__)
	if (have_f16c() && c->head_dim % 8 == 0) {
		kp->dot = dot_f16_x86;
		kp->axpy = axpy_f16_x86;
	}
#endif
	kp->kv.n_seq = n_seq;
	kp->kv.n_layers = (int)c->n_layers;
	kp->kv.n_kv_heads = (int)c->n_kv_heads;
	kp->kv.head_dim = (int)c->head_dim;
	kp->kv.max_tok = max_tok;
	kp->kv.len = calloc(n_seq, sizeof(int));
	kp->slot = calloc(n_seq, sizeof(uint32_t));
	kp->scratch = malloc((size_t)c->n_kv_heads * 2 * max_tok *
			     c->head_dim * sizeof(float));
	kp->score = malloc((size_t)max_tok * sizeof(float));
	seqs = calloc(n_seq, sizeof(*seqs));
	ret = -ENOMEM;
	if (!kp->kv.len || !kp->slot || !kp->scratch || !kp->score || !seqs)
		goto fail;
	kp->fd = kvshim_open();
	if (kp->fd < 0) {
		ret = kp->fd;
		goto fail;
	}
	sc.backend = KVMM_BACKEND_HOST;
	sc.nr_layers = c->n_layers;
	sc.nr_kv_heads = c->n_kv_heads;
	sc.head_dim = c->head_dim;
	sc.nr_tiers = 1;
	sc.tiers[0] = (struct kvmm_tier){ tier.kbits, tier.vbits,
					  tier.kgroups, tier.vgroups };
	sc.max_seqs = (uint32_t)n_seq;
	sc.max_tokens = (uint32_t)max_tok;
	sc.va_bytes = bytes;
	sc.budget_bytes = bytes;
	ret = kvshim_ioctl(kp->fd, KVMM_IOC_SPACE_CREATE, &sc);
	if (ret)
		goto fail;
	kp->space = sc.space;
	for (int i = 0; i < n_seq; i++)
		seqs[i].tokens = (uint32_t)max_tok;
	adm.space = kp->space;
	adm.count = (uint32_t)n_seq;
	adm.seqs = (uint64_t)(uintptr_t)seqs;
	ret = kvshim_ioctl(kp->fd, KVMM_IOC_SEQ_ADMIT, &adm);
	if (ret)
		goto fail;
	for (int i = 0; i < n_seq; i++)
		kp->slot[i] = seqs[i].slot;
	kp->pti.space = kp->space;
	ret = kvshim_ioctl(kp->fd, KVMM_IOC_PAGE_TABLE_INFO, &kp->pti);
	if (!ret)
		ret = kva_page_layout(c->head_dim, kp->pti.page_size, &tier,
				      &kp->lay);
	if (!ret && (kp->lay.tokens != kp->pti.tokens_per_page[0] ||
		     !kp->pti.tables || !kp->pti.pool_base))
		ret = -EPROTO;
	if (ret)
		goto fail;
	{
		struct llm_kv_stats st;

		ret = kp_stats(&kp->kv, &st);
		if (ret)
			goto fail;
		kp->kv.bytes = st.bytes;
	}
	free(seqs);
	*out = &kp->kv;
	return 0;
fail:
	free(seqs);
	kp_destroy(&kp->kv);
	return ret;
}
