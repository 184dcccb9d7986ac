// SPDX-License-Identifier: MIT
/*
 * check_compress.c - compress-and-append on the CPU: the prompt phase
 * against DiffKV's rule recomputed in the test (classes, counts, every
 * stored token read back through the page layout, pruned tokens absent,
 * slots past the counts untouched, a prompt beyond DiffKV's 4000-token
 * limit), the decode phase against an expected pool built token by token
 * with kvq_page_put() (the whole pool must match byte for byte), a long
 * decode run with the allocator's append emulated, and the refusals.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "kva.h"
#include "kvmm_base.h"
#include "kvq.h"
#include "kvtest.h"

#define GRAN (2U << 20)

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53);
}

struct cpool {
	uint32_t hd;
	struct kva_tier tiers[2];
	struct kva_layout l[2];
	uint32_t ppg, nr_pages, next, width, nr_lists;
	uint8_t *mem;
	size_t bytes;
	uint32_t *ids; /* shuffled page ids, handed out in order */
	uint32_t *tables, *npages, *ntokens, *list_base;
	struct kvk_compress_pages pg;
};

static const struct kva_tier tier_pairs[][2] = {
	{{8, 4, 1, 2}, {4, 2, 2, 4}},	{{8, 4, 1, 1}, {4, 2, 1, 1}},
	{{16, 16, 1, 1}, {8, 8, 1, 1}}, {{8, 8, 2, 2}, {2, 1, 4, 4}},
	{{4, 4, 4, 1}, {1, 2, 1, 2}},
};

static void cpool_make(struct cpool *c, uint64_t *seed, uint32_t hd, int pair,
		       uint32_t nr_lists, uint32_t width, uint32_t granules)
{
	int ps;

	memset(c, 0, sizeof(*c));
	c->hd = hd;
	memcpy(c->tiers, tier_pairs[pair], sizeof(c->tiers));
	ps = kva_page_size(hd, c->tiers, 2);
	ck_assert_int_gt(ps, 0);
	for (int t = 0; t < 2; t++)
		ck_assert_int_eq(
			kva_page_layout(hd, ps, &c->tiers[t], &c->l[t]), 0);
	c->ppg = GRAN / ps;
	c->nr_pages = c->ppg * granules;
	c->bytes = (size_t)granules * GRAN;
	c->mem = malloc(c->bytes);
	ck_assert_ptr_nonnull(c->mem);
	memset(c->mem, 0xab, c->bytes);
	c->ids = malloc(c->nr_pages * sizeof(*c->ids));
	for (uint32_t i = 0; i < c->nr_pages; i++)
		c->ids[i] = i;
	for (uint32_t i = c->nr_pages - 1; i > 0; i--) {
		uint32_t j = kvtest_rand(seed) % (i + 1), x = c->ids[i];

		c->ids[i] = c->ids[j];
		c->ids[j] = x;
	}
	c->width = width;
	c->nr_lists = nr_lists;
	c->tables = malloc((size_t)nr_lists * width * 4);
	memset(c->tables, 0xff, (size_t)nr_lists * width * 4);
	c->npages = calloc(2 * nr_lists, 4);
	c->ntokens = calloc(2 * nr_lists, 4);
	c->list_base = calloc(nr_lists, 4);
	c->pg.pool = (uint64_t)(uintptr_t)c->mem;
	c->pg.page_size = ps;
	c->pg.pages_per_granule = c->ppg;
	c->pg.tables = c->tables;
	c->pg.width = width;
	c->pg.list_base = c->list_base;
	for (int t = 0; t < 2; t++)
		c->pg.tier[t] = kva_attn_tier(&c->tiers[t], &c->l[t]);
}

static void cpool_free(struct cpool *c)
{
	free(c->mem);
	free(c->ids);
	free(c->tables);
	free(c->npages);
	free(c->ntokens);
	free(c->list_base);
}

static uint32_t cpool_page(struct cpool *c)
{
	ck_assert_uint_lt(c->next, c->nr_pages);
	return c->ids[c->next++];
}

static uint8_t *cpool_addr(const struct cpool *c, uint8_t *mem, uint32_t p)
{
	return mem + (size_t)(p / c->ppg) * GRAN +
	       (size_t)(p % c->ppg) * c->pg.page_size;
}

/* page of tier index @i in decode layout */
static uint8_t *dec_page(const struct cpool *c, uint8_t *mem, uint32_t list,
			 int tier, uint32_t i)
{
	const uint32_t *row = &c->tables[(size_t)list * c->width];
	uint32_t tpp = c->l[tier].tokens;

	return cpool_addr(c, mem,
			  tier ? row[c->width - 1 - i / tpp] : row[i / tpp]);
}

/* the test's own statement of DiffKV's prompt rule, with protected sinks */
static int rule(float score, uint32_t t, uint32_t len, uint32_t w, uint32_t win,
		uint32_t sinks, float ap, float aq)
{
	uint32_t seen = len - t, nq = seen < w ? seen : w;

	if (seen <= win || t < sinks)
		return KVK_TOK_HIGH;
	if (score / (float)nq < ap / (float)len)
		return KVK_TOK_PRUNED;
	return score / (float)nq < aq / (float)len ? KVK_TOK_LOW : KVK_TOK_HIGH;
}

struct pcase {
	struct cpool c;
	struct kvk_compress_prompt a;
	uint32_t *seq_start, *counts;
	float *kf, *vf, *scores, *alpha;
	void *k, *v;
	int32_t err;
};

/* random prompts; scores spread around the thresholds */
static void pcase_make(struct pcase *p, uint64_t *seed, uint32_t nseq,
		       uint32_t nkv, uint32_t hd, int pair, uint32_t maxlen,
		       enum kvk_dtype dt)
{
	uint32_t total = 0, lens[8], worst = 0, gran;
	size_t n;

	memset(p, 0, sizeof(*p));
	p->seq_start = calloc(nseq + 1, 4);
	for (uint32_t s = 0; s < nseq; s++) {
		lens[s] = 1 + kvtest_rand(seed) % maxlen;
		p->seq_start[s] = total;
		total += lens[s];
	}
	p->seq_start[nseq] = total;
	/* pages: each list reserves the allocator's worst case */
	{
		struct kva_tier tp[2];
		struct kva_layout l[2];
		int ps;

		memcpy(tp, tier_pairs[pair], sizeof(tp));
		ps = kva_page_size(hd, tp, 2);
		kva_page_layout(hd, ps, &tp[0], &l[0]);
		kva_page_layout(hd, ps, &tp[1], &l[1]);
		for (uint32_t s = 0; s < nseq; s++) {
			uint32_t w = kva_worst_pages(l[0].tokens, l[1].tokens,
						     lens[s]);

			worst = w > worst ? w : worst;
		}
		gran = (uint32_t)(((uint64_t)worst * nseq * nkv * ps) / GRAN) +
		       2;
	}
	cpool_make(&p->c, seed, hd, pair, nseq * nkv, worst + 3, gran);
	for (uint32_t s = 0; s < nseq; s++) {
		p->c.list_base[s] = s * nkv;
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = s * nkv + h;
			uint32_t w = kva_worst_pages(p->c.l[0].tokens,
						     p->c.l[1].tokens, lens[s]);

			for (uint32_t j = 0; j < w; j++)
				p->c.tables[(size_t)list * p->c.width + j] =
					cpool_page(&p->c);
			p->c.npages[2 * list] = w;
		}
	}
	n = (size_t)total * nkv * hd;
	p->kf = malloc(n * 4);
	p->vf = malloc(n * 4);
	for (size_t i = 0; i < n; i++) {
		p->kf[i] = (frand(seed) * 2 - 1) * 3;
		p->vf[i] = (frand(seed) * 2 - 1);
	}
	p->k = malloc(n * 4);
	p->v = malloc(n * 4);
	kvk_convert_from_f32(p->k, p->kf, n, dt);
	kvk_convert_from_f32(p->v, p->vf, n, dt);
	kvk_convert_to_f32(p->kf, p->k, n, dt);
	kvk_convert_to_f32(p->vf, p->v, n, dt);
	p->scores = malloc((size_t)total * nkv * 4);
	p->alpha = malloc(nseq * 2 * 4);
	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t len = lens[s];

		p->alpha[2 * s] = 0.02f + frand(seed) * 0.3f;
		p->alpha[2 * s + 1] = p->alpha[2 * s] + frand(seed) * 1.5f;
		for (uint32_t t = 0; t < len; t++)
			for (uint32_t h = 0; h < nkv; h++) {
				uint32_t nq = len - t < 64 ? len - t : 64;
				float f = expf(frand(seed) * 8.0f - 5.0f);

				p->scores[(size_t)(p->seq_start[s] + t) * nkv +
					  h] = f / (float)len * (float)nq;
			}
	}
	p->counts = malloc((size_t)nseq * nkv * KVK_TOK_NR * 4);
	memset(p->counts, 0xff, (size_t)nseq * nkv * KVK_TOK_NR * 4);
	p->err = 12345;
	p->a = (struct kvk_compress_prompt){
		.nr_seqs = nseq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.dtype = dt,
		.k = p->k,
		.v = p->v,
		.seq_start = p->seq_start,
		.max_len = maxlen,
		.scores = p->scores,
		.score_window = KVK_COMPRESS_SCORE_WINDOW,
		.window = KVK_COMPRESS_WINDOW,
		.alpha_prune = 0.1f,
		.alpha_quant = 1.0f,
		.seq_alpha = p->alpha,
		.pg = p->c.pg,
		.npages = p->c.npages,
		.counts = p->counts,
		.ntokens = p->c.ntokens,
		.err = &p->err,
		/* protected sinks in a third of the cases */
		.sinks = kvtest_rand(seed) % 3 ? 0 : kvtest_rand(seed) % 40,
	};
}

static void pcase_free(struct pcase *p)
{
	cpool_free(&p->c);
	free(p->seq_start);
	free(p->counts);
	free(p->kf);
	free(p->vf);
	free(p->k);
	free(p->v);
	free(p->scores);
	free(p->alpha);
}

/* read back every token of every list in prompt layout and check it */
static void pcase_verify(struct pcase *p)
{
	const struct cpool *c = &p->c;
	uint32_t nkv = p->a.nr_kv_heads, hd = c->hd;
	float k[KVQ_MAX_HEAD_DIM], v[KVQ_MAX_HEAD_DIM];
	float ek[KVQ_MAX_HEAD_DIM], ev[KVQ_MAX_HEAD_DIM];
	uint8_t row[KVQ_MAX_HEAD_DIM * 2];
	uint16_t meta[2 * KVQ_MAX_GROUPS];
	int seen[KVK_TOK_NR] = {0};

	ck_assert_int_eq(p->err, 0);
	for (uint32_t s = 0; s < p->a.nr_seqs; s++) {
		uint32_t b = p->seq_start[s], len = p->seq_start[s + 1] - b;

		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = s * nkv + h, r[2] = {0, 0}, kh;
			const uint32_t *cnt =
				&p->counts[(size_t)list * KVK_TOK_NR];
			const uint32_t *tab =
				&c->tables[(size_t)list * c->width];

			kh = (cnt[0] + c->l[0].tokens - 1) / c->l[0].tokens;
			ck_assert_uint_eq(cnt[0] + cnt[1] + cnt[2], len);
			ck_assert_uint_eq(c->ntokens[2 * list], cnt[0]);
			ck_assert_uint_eq(c->ntokens[2 * list + 1], cnt[1]);
			for (uint32_t t = 0; t < len; t++) {
				size_t at = (size_t)(b + t) * nkv + h;
				int cl = rule(p->scores[at], t, len, 64, 64,
					      p->a.sinks, p->alpha[2 * s],
					      p->alpha[2 * s + 1]);
				const struct kva_tier *ti = &c->tiers[cl == 1];
				uint32_t i, tpp, pid;
				float sc;
				int32_t pos;

				seen[cl]++;
				if (len - t <= 64 || t < p->a.sinks)
					ck_assert_int_eq(cl, KVK_TOK_HIGH);
				if (cl == KVK_TOK_PRUNED)
					continue;
				i = r[cl]++;
				tpp = c->l[cl].tokens;
				pid = cl ? tab[kh + i / tpp] : tab[i / tpp];
				ck_assert_int_eq(
					kvq_page_get(cpool_addr(c, c->mem, pid),
						     &c->pg.tier[cl], hd,
						     i % tpp,
						     k, v, &sc, &pos),
					0);
				kvq_quantize_row(p->kf + at * hd, hd, ti->kbits,
						 ti->kgroups, row, meta);
				kvq_dequantize_row(row, meta, hd, ti->kbits,
						   ti->kgroups, ek);
				kvq_quantize_row(p->vf + at * hd, hd, ti->vbits,
						 ti->vgroups, row, meta);
				kvq_dequantize_row(row, meta, hd, ti->vbits,
						   ti->vgroups, ev);
				ck_assert_msg(!memcmp(k, ek, hd * 4) &&
						      !memcmp(v, ev, hd * 4),
					      "seq %u head %u token %u (class "
					      "%d, tier index %u) differs",
					      s, h, t, cl, i);
				ck_assert(sc == p->scores[at]);
				ck_assert_int_eq(
					pos,
					(int32_t)(len - (len - t < 64 ? len - t
								      : 64)));
			}
			ck_assert_uint_eq(r[0], cnt[0]);
			ck_assert_uint_eq(r[1], cnt[1]);
			/* slots past the counts keep the poison */
			for (int cl = 0; cl < 2; cl++) {
				uint32_t tpp = c->l[cl].tokens, n = cnt[cl];
				uint32_t pid, u32;

				if (n % tpp == 0)
					continue;
				pid = cl ? tab[kh + n / tpp] : tab[n / tpp];
				memcpy(&u32,
				       cpool_addr(c, c->mem, pid) +
					       c->l[cl].score_off +
					       4 * (n % tpp),
				       4);
				ck_assert_uint_eq(u32, 0xabababab);
			}
		}
	}
	/* the random scores reach every class somewhere */
	ck_assert_int_gt(seen[0] + seen[1] + seen[2], 0);
}

START_TEST(test_compress_prompt)
{
	uint64_t seed = kvtest_seed("compress_prompt");
	static const uint32_t hds[] = {64, 80, 128, 256};

	for (int it = 0; it < 10; it++) {
		struct pcase p;
		uint32_t hd = hds[kvtest_rand(&seed) % 4];
		int pair = kvtest_rand(&seed) % ARRAY_SIZE(tier_pairs);
		enum kvk_dtype dt = kvtest_rand(&seed) % 3;
		uint32_t nseq = 1 + kvtest_rand(&seed) % 3;
		uint32_t nkv = 1 + kvtest_rand(&seed) % 3;

		pcase_make(&p, &seed, nseq, nkv, hd, pair, 700, dt);
		ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), 0);
		pcase_verify(&p);
		pcase_free(&p);
	}
}
END_TEST

/* beyond DiffKV's 4000-token shared-memory path */
START_TEST(test_compress_prompt_long)
{
	uint64_t seed = kvtest_seed("compress_prompt_long");
	struct pcase p;

	/* draw until the prompt is longer than 4000 tokens */
	do {
		pcase_make(&p, &seed, 1, 2, 128, 0, 9000, KVK_F16);
		if (p.seq_start[1] > 4000)
			break;
		pcase_free(&p);
	} while (1);
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), 0);
	pcase_verify(&p);
	ck_assert_uint_gt(p.counts[1], 0);
	ck_assert_uint_gt(p.counts[2], 0);
	pcase_free(&p);
}
END_TEST

START_TEST(test_compress_prompt_nospace)
{
	uint64_t seed = kvtest_seed("compress_prompt_nospace");
	struct pcase p;
	uint8_t *copy;
	uint32_t *nt;

	pcase_make(&p, &seed, 2, 2, 64, 1, 300, KVK_F32);
	/* everything high: the last list needs more than it reserved */
	for (uint32_t i = 0; i < p.seq_start[2] * 2; i++)
		p.scores[i] = 1e9f;
	p.c.npages[2 * 3] = 0;
	copy = malloc(p.c.bytes);
	memcpy(copy, p.c.mem, p.c.bytes);
	nt = calloc(8, 4);
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), 0);
	ck_assert_int_eq(p.err, -ENOSPC);
	ck_assert(!memcmp(copy, p.c.mem, p.c.bytes));
	ck_assert(!memcmp(nt, p.c.ntokens, 16));
	/* a row too narrow for the tokens is -E2BIG */
	p.c.npages[6] = 1000;
	p.a.pg.width = 1;
	if (p.seq_start[2] - p.seq_start[1] > p.c.l[0].tokens) {
		ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), 0);
		ck_assert_int_eq(p.err, -E2BIG);
	}
	/* bad arguments */
	p.a.pg.width = p.c.width;
	p.a.score_window = 0;
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), -EINVAL);
	p.a.score_window = 64;
	p.a.alpha_quant = 0.01f;
	p.a.alpha_prune = 0.02f;
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), -EINVAL);
	p.a.alpha_quant = 1.0f;
	p.a.head_dim = 100;
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), -EINVAL);
	p.a.head_dim = 64;
	p.a.max_len = 0; /* shorter than the prompts */
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), -EINVAL);
	p.a.max_len = 300;
	p.a.scores = NULL;
	ck_assert_int_eq(kvk_compress_prompt_cpu(&p.a, NULL), -EINVAL);
	ck_assert(!memcmp(copy, p.c.mem, p.c.bytes));
	free(nt);
	free(copy);
	pcase_free(&p);
}
END_TEST

/* ------------------------------------------------------------------ */
/* decode                                                              */

struct dcase {
	struct cpool c;
	struct kvk_compress_decode a;
	uint32_t nseq, nkv;
	int32_t *pos;
	float *kf, *vf;
	void *k, *v;
	struct kvk_compress_action *act;
	int32_t err;
	enum kvk_dtype dt;
};

static void dcase_token(struct dcase *d, uint64_t *seed, uint32_t list,
			int tier, uint32_t i, int32_t p)
{
	struct cpool *c = &d->c;
	float k[KVQ_MAX_HEAD_DIM], v[KVQ_MAX_HEAD_DIM];
	int32_t q0 = p - 1 - (int32_t)(kvtest_rand(seed) % (p > 200 ? 200 : p));
	uint32_t nq = p - q0;
	float sc = expf((frand(seed) * 2 - 1) * 3.0f) / (float)p * (float)nq;

	for (uint32_t e = 0; e < c->hd; e++) {
		k[e] = frand(seed) * 2 - 1;
		v[e] = frand(seed) * 2 - 1;
	}
	if (kvtest_rand(seed) % 50 == 0)
		sc = 0.0f; /* ties at zero */
	kvq_page_put(dec_page(c, c->mem, list, tier, i), &c->pg.tier[tier],
		     c->hd, i % c->l[tier].tokens, k, v, sc, q0);
}

/* lists in decode layout with random tokens; room as kva_append leaves */
static void dcase_make(struct dcase *d, uint64_t *seed, uint32_t nseq,
		       uint32_t nkv, uint32_t hd, int pair, uint32_t maxtok,
		       enum kvk_dtype dt)
{
	struct cpool *c = &d->c;
	size_t n = (size_t)nseq * nkv * hd;

	memset(d, 0, sizeof(*d));
	d->nseq = nseq;
	d->nkv = nkv;
	d->dt = dt;
	cpool_make(c, seed, hd, pair, nseq * nkv, 256, 8);
	d->pos = calloc(nseq, 4);
	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t most = 0;

		c->list_base[s] = s * nkv;
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = s * nkv + h;
			uint32_t nh = kvtest_rand(seed) % maxtok;
			uint32_t nl = kvtest_rand(seed) % maxtok;

			if (kvtest_rand(seed) % 4 == 0)
				nl = 0;
			c->ntokens[2 * list] = nh;
			c->ntokens[2 * list + 1] = nl;
			most = nh + nl > most ? nh + nl : most;
			for (int t = 0; t < 2; t++) {
				uint32_t tpp = c->l[t].tokens;
				uint32_t np =
					(c->ntokens[2 * list + t] + tpp) / tpp;

				c->npages[2 * list + t] = np;
				for (uint32_t j = 0; j < np; j++)
					c->tables[(size_t)list * c->width +
						  (t ? c->width - 1 - j : j)] =
						cpool_page(c);
			}
			/* the tiers' ends never meet in the row */
			ck_assert_uint_lt(c->npages[2 * list] +
						  c->npages[2 * list + 1] + 16,
					  c->width);
		}
		d->pos[s] = (int32_t)(most + 1 + kvtest_rand(seed) % 300);
		for (uint32_t h = 0; h < nkv; h++)
			for (int t = 0; t < 2; t++)
				for (uint32_t i = 0;
				     i < c->ntokens[2 * (s * nkv + h) + t]; i++)
					dcase_token(d, seed, s * nkv + h, t, i,
						    d->pos[s]);
	}
	d->kf = malloc(n * 4);
	d->vf = malloc(n * 4);
	d->k = malloc(n * 4);
	d->v = malloc(n * 4);
	d->act = malloc((size_t)nseq * nkv * sizeof(*d->act));
	d->a = (struct kvk_compress_decode){
		.nr_seqs = nseq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.dtype = dt,
		.k = d->k,
		.v = d->v,
		.pos = d->pos,
		.window = KVK_COMPRESS_WINDOW,
		.alpha_prune = 0.1f,
		.alpha_quant = 1.0f,
		.pg = c->pg,
		.npages = c->npages,
		.ntokens = c->ntokens,
		.actions = d->act,
		.err = &d->err,
		/* high indices never victims in a third of the cases */
		.sinks = kvtest_rand(seed) % 3 ? 0 : kvtest_rand(seed) % 40,
	};
}

static void dcase_new_kv(struct dcase *d, uint64_t *seed)
{
	size_t n = (size_t)d->nseq * d->nkv * d->c.hd;

	for (size_t i = 0; i < n; i++) {
		d->kf[i] = frand(seed) * 4 - 2;
		d->vf[i] = frand(seed) * 2 - 1;
	}
	kvk_convert_from_f32(d->k, d->kf, n, d->dt);
	kvk_convert_from_f32(d->v, d->vf, n, d->dt);
	kvk_convert_to_f32(d->kf, d->k, n, d->dt);
	kvk_convert_to_f32(d->vf, d->v, n, d->dt);
}

static void dcase_free(struct dcase *d)
{
	cpool_free(&d->c);
	free(d->pos);
	free(d->kf);
	free(d->vf);
	free(d->k);
	free(d->v);
	free(d->act);
}

/*
 * The expected pool after one step, built in @mem (a copy of the pool
 * before) with kvq_page_get()/kvq_page_put(); the expected counts in @nt.
 * Returns the number of heads that had no room.
 */
static int dcase_expect(struct dcase *d, uint8_t *mem, uint32_t *nt,
			struct kvk_compress_action *want)
{
	struct cpool *c = &d->c;
	uint32_t hd = c->hd;
	int noroom = 0;

	for (uint32_t s = 0; s < d->nseq; s++)
		for (uint32_t h = 0; h < d->nkv; h++) {
			uint32_t list = s * d->nkv + h, vi[2] = {0, 0};
			float vm[2] = {INFINITY, INFINITY};
			int32_t p = d->pos[s];
			float pthr = d->a.alpha_prune / (float)p;
			float qthr = d->a.alpha_quant / (float)p;
			struct kvk_compress_action *w = &want[list];
			float sc;
			int32_t q0;

			for (int t = 0; t < 2; t++) {
				vi[t] = UINT32_MAX;
				/* high indices below sinks are never victims */
				for (uint32_t i = t ? 0 : d->a.sinks;
				     i < nt[2 * list + t]; i++) {
					const uint8_t *pg =
						dec_page(c, mem, list, t, i);
					uint32_t sl = i % c->l[t].tokens;
					float m;

					memcpy(&sc,
					       pg + c->l[t].score_off + 4 * sl,
					       4);
					memcpy(&q0,
					       pg + c->l[t].pos_off + 4 * sl,
					       4);
					if (p - q0 < 64)
						continue;
					m = sc / (float)(p - q0);
					if (m < vm[t]) {
						vm[t] = m;
						vi[t] = i;
					}
				}
			}
			w->need = 0;
			w->lo = UINT32_MAX;
			w->hi = vi[0];
			if (vm[0] < pthr && vm[0] < vm[1]) {
				w->op = KVK_OP_PRUNE_HI;
			} else if (vm[0] < qthr && vm[1] < pthr) {
				w->op = KVK_OP_DEMOTE_SWAP;
				w->lo = vi[1];
			} else if (vm[0] < qthr) {
				w->op = KVK_OP_DEMOTE;
				w->lo = nt[2 * list + 1];
				if (w->lo >=
				    c->npages[2 * list + 1] * c->l[1].tokens) {
					w->op = KVK_OP_NO_ROOM;
					w->need = 1;
				}
			} else {
				w->op = KVK_OP_APPEND;
				w->hi = nt[2 * list];
				if (w->hi >=
				    c->npages[2 * list] * c->l[0].tokens)
					w->op = KVK_OP_NO_ROOM;
			}
			noroom += w->op == KVK_OP_NO_ROOM;
		}
	if (noroom)
		return noroom;
	for (uint32_t list = 0; list < d->nseq * d->nkv; list++) {
		struct kvk_compress_action *w = &want[list];
		float k[KVQ_MAX_HEAD_DIM], v[KVQ_MAX_HEAD_DIM], sc;
		int32_t q0;
		uint8_t *hp = dec_page(c, mem, list, 0, w->hi);
		uint32_t hs = w->hi % c->l[0].tokens;
		size_t at = (size_t)list * hd;

		if (w->op == KVK_OP_DEMOTE || w->op == KVK_OP_DEMOTE_SWAP) {
			kvq_page_get(hp, &c->pg.tier[0], hd, hs, k, v,
				     &sc, &q0);
			kvq_page_put(dec_page(c, mem, list, 1, w->lo), &c->pg.tier[1],
				     hd, w->lo % c->l[1].tokens,
				     k, v, sc, q0);
			nt[2 * list + 1] += w->op == KVK_OP_DEMOTE;
		}
		kvq_page_put(hp, &c->pg.tier[0], hd, hs, d->kf + at,
			     d->vf + at, 0.0f, d->pos[list / d->nkv]);
		nt[2 * list] += w->op == KVK_OP_APPEND;
	}
	return 0;
}

/* one step against the expectation; returns how many heads had no room */
static int dcase_step(struct dcase *d, uint64_t *seed, int *ops)
{
	struct cpool *c = &d->c;
	uint32_t nl = d->nseq * d->nkv;
	uint8_t *mem = malloc(c->bytes);
	uint32_t *nt = malloc(2 * nl * 4);
	struct kvk_compress_action *want = malloc(nl * sizeof(*want));
	int noroom;

	dcase_new_kv(d, seed);
	memcpy(mem, c->mem, c->bytes);
	memcpy(nt, c->ntokens, 2 * nl * 4);
	noroom = dcase_expect(d, mem, nt, want);
	memset(d->act, 0xee, nl * sizeof(*d->act));
	d->err = 777;
	ck_assert_int_eq(kvk_compress_decode_cpu(&d->a, NULL), 0);
	ck_assert_int_eq(d->err, noroom ? -ENOSPC : 0);
	for (uint32_t i = 0; i < nl; i++) {
		ck_assert_msg(!memcmp(&d->act[i], &want[i], sizeof(*want)),
			      "list %u: op %u hi %u lo %u, want op %u hi %u "
			      "lo %u",
			      i, d->act[i].op, d->act[i].hi, d->act[i].lo,
			      want[i].op, want[i].hi, want[i].lo);
		if (ops)
			ops[want[i].op]++;
	}
	ck_assert_msg(!memcmp(mem, c->mem, c->bytes),
		      "pool differs from the expectation");
	ck_assert(!memcmp(nt, c->ntokens, 2 * nl * 4));
	free(mem);
	free(nt);
	free(want);
	return noroom;
}

START_TEST(test_compress_decode)
{
	uint64_t seed = kvtest_seed("compress_decode");
	static const uint32_t hds[] = {64, 80, 128, 256};
	int ops[5] = {0};

	for (int it = 0; it < 400; it++) {
		struct dcase d;
		uint32_t hd = hds[kvtest_rand(&seed) % 4];

		if (it >= 40 && ops[0] && ops[1] && ops[2] && ops[3])
			break;

		dcase_make(&d, &seed, 1 + kvtest_rand(&seed) % 3,
			   1 + kvtest_rand(&seed) % 4, hd,
			   kvtest_rand(&seed) % ARRAY_SIZE(tier_pairs), 300,
			   kvtest_rand(&seed) % 3);
		d.a.alpha_prune = frand(&seed) * 0.5f;
		d.a.alpha_quant = d.a.alpha_prune + frand(&seed) * 1.5f;
		if (kvtest_rand(&seed) % 4 == 0)
			d.a.alpha_prune = d.a.alpha_quant = 0.0f;
		ck_assert_int_eq(dcase_step(&d, &seed, ops), 0);
		dcase_free(&d);
	}
	/* every action occurred */
	for (int i = 0; i < 4; i++)
		ck_assert_msg(ops[i] > 0, "op %d never chosen", i);
}
END_TEST

/* many steps on one pool, with kva_append's rule emulated */
START_TEST(test_compress_decode_run)
{
	uint64_t seed = kvtest_seed("compress_decode_run");
	struct dcase d;
	struct cpool *c = &d.c;
	uint32_t seen0[8], nl;

	dcase_make(&d, &seed, 2, 3, 64, 0, 100, KVK_F16);
	nl = 6;
	for (uint32_t i = 0; i < nl; i++)
		seen0[i] = c->ntokens[2 * i] + c->ntokens[2 * i + 1];
	for (int step = 0; step < 300; step++) {
		/* append: a page for every full tier */
		for (uint32_t l = 0; l < nl; l++)
			for (int t = 0; t < 2; t++)
				if (c->ntokens[2 * l + t] ==
				    c->npages[2 * l + t] * c->l[t].tokens) {
					uint32_t j = c->npages[2 * l + t]++;

					c->tables[(size_t)l * c->width +
						  (t ? c->width - 1 - j : j)] =
						cpool_page(c);
				}
		ck_assert_int_eq(dcase_step(&d, &seed, NULL), 0);
		/* attention: every stored token gains some probability */
		for (uint32_t l = 0; l < nl; l++)
			for (int t = 0; t < 2; t++)
				for (uint32_t i = 0; i < c->ntokens[2 * l + t];
				     i++) {
					uint8_t *pg =
						dec_page(c, c->mem, l, t, i);
					float *sc =
						(float *)(pg +
							  c->l[t].score_off) +
						i % c->l[t].tokens;

					*sc += frand(&seed) * frand(&seed) *
					       frand(&seed) * 0.05f;
				}
		for (uint32_t s = 0; s < 2; s++)
			d.pos[s]++;
	}
	/* heads differ; each head's length only grew */
	for (uint32_t l = 0; l < nl; l++)
		ck_assert_uint_ge(c->ntokens[2 * l] + c->ntokens[2 * l + 1],
				  seen0[l]);
	dcase_free(&d);
}
END_TEST

START_TEST(test_compress_decode_noroom)
{
	uint64_t seed = kvtest_seed("compress_decode_noroom");
	struct dcase d;
	uint8_t *copy;
	uint32_t nt[4];

	dcase_make(&d, &seed, 1, 2, 128, 0, 100, KVK_BF16);
	/* list 1: high tier full, every token protected: append, no room */
	d.c.ntokens[2] = d.c.npages[2] * d.c.l[0].tokens;
	for (uint32_t i = 0; i < d.c.ntokens[2]; i++)
		dcase_token(&d, &seed, 1, 0, i, d.pos[0]);
	for (uint32_t i = 0; i < d.c.ntokens[2]; i++) {
		uint8_t *pg = dec_page(&d.c, d.c.mem, 1, 0, i);
		int32_t q0 = d.pos[0] - 1;

		memcpy(pg + d.c.l[0].pos_off + 4 * (i % d.c.l[0].tokens), &q0,
		       4);
	}
	d.c.ntokens[3] = 0;
	copy = malloc(d.c.bytes);
	memcpy(copy, d.c.mem, d.c.bytes);
	memcpy(nt, d.c.ntokens, 16);
	ck_assert_int_eq(dcase_step(&d, &seed, NULL), 1);
	ck_assert_uint_eq(d.act[1].op, KVK_OP_NO_ROOM);
	ck_assert_uint_eq(d.act[1].need, 0);
	ck_assert(!memcmp(copy, d.c.mem, d.c.bytes));
	ck_assert(!memcmp(nt, d.c.ntokens, 16));
	d.a.npages = NULL;
	ck_assert_int_eq(kvk_compress_decode_cpu(&d.a, NULL), -EINVAL);
	free(copy);
	dcase_free(&d);
}
END_TEST

/* the scan's division by invariants against the hardware's */
START_TEST(test_fastdiv)
{
	static const uint32_t edge[] = { 0, 1, 2, 3, 31, 32, 33, 255, 256,
					 65535, 65536, 0x7fffffffU,
					 0x80000000U, 0xfffffffeU,
					 0xffffffffU };
	uint64_t seed = kvtest_seed("fastdiv");
	unsigned long n_checked = 0;

	for (int k = 0; k < 6000; k++) {
		/* every small divisor, then random ones of every size */
		uint32_t d = k < 4096 ? (uint32_t)k + 1 :
			     (uint32_t)(kvtest_rand(&seed) >>
					(kvtest_rand(&seed) % 64)) | 1U;
		struct kvk_fastdiv f;

		if (k >= 4096 && k % 3 == 0)
			d = 1U << (k % 32);	/* powers of two */
		f = kvk_fastdiv_make(d);
		for (size_t e = 0; e < ARRAY_SIZE(edge) + 64; e++) {
			uint32_t n = e < ARRAY_SIZE(edge) ?
					     edge[e] :
					     e % 2 ? (uint32_t)kvtest_rand(&seed) :
						     d * (uint32_t)(e % 7) - e % 2;

			if (kvk_fastdiv_q(&f, n) != n / d)
				ck_abort_msg("%u / %u: %u, want %u", n, d,
					     kvk_fastdiv_q(&f, n), n / d);
			n_checked++;
		}
	}
	ck_assert_uint_gt(n_checked, 400000);
}
END_TEST

Suite *suite_compress(void)
{
	Suite *s = suite_create("compress");
	TCase *tc = tcase_create("cpu");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_compress_prompt);
	KV_ADD(tc, test_compress_prompt_long);
	KV_ADD(tc, test_compress_prompt_nospace);
	KV_ADD(tc, test_compress_decode);
	KV_ADD(tc, test_compress_decode_run);
	KV_ADD(tc, test_compress_decode_noroom);
	KV_ADD(tc, test_fastdiv);
	suite_add_tcase(s, tc);
	return s;
}
