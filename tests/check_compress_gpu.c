// SPDX-License-Identifier: MIT
/*
 * check_compress_gpu.c - compress-and-append on the GPU against the CPU
 * reference, on fresh random pools: the whole pool, the counts, the
 * actions and the error must be identical to the byte. Outputs are
 * poisoned first. Prompt phase: every head_dim and several tier pairs and
 * dtypes, prompts up to 33000 tokens, a refused reservation. Decode phase:
 * a few hundred steps with the allocator's append emulated and the scores
 * growing between steps, and a head without room.
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

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define GRAN (2U << 20)

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53);
}

static const struct kva_tier pairs[][2] = {
	{{8, 4, 1, 2}, {4, 2, 2, 4}},	{{8, 4, 1, 1}, {4, 2, 1, 1}},
	{{16, 16, 1, 1}, {8, 8, 1, 1}}, {{8, 8, 2, 2}, {2, 1, 4, 4}},
	{{4, 4, 4, 1}, {1, 2, 1, 2}},
};

/* a host pool and its device twin */
struct gpool {
	uint32_t hd, ppg, nr_pages, next, width, nr_lists;
	struct kva_tier tiers[2];
	struct kva_layout l[2];
	size_t bytes;
	uint8_t *mem, *dmem, *back;
	uint32_t *ids, *tables, *npages, *ntokens, *list_base;
	uint32_t *d_tables, *d_npages, *d_ntokens, *d_list_base;
	struct kvk_compress_pages pg, dpg;
};

static void *dup_dev(const void *h, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 4));
	if (n)
		CK_CUDA(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
	return d;
}

static void gpool_make(struct gpool *c, uint64_t *seed, uint32_t hd, int pair,
		       uint32_t nr_lists, uint32_t width, uint32_t granules)
{
	int ps;

	memset(c, 0, sizeof(*c));
	c->hd = hd;
	memcpy(c->tiers, pairs[pair], sizeof(c->tiers));
	ps = kva_page_size(hd, c->tiers, 2);
	ck_assert_int_gt(ps, 0);
	for (int t = 0; t < 2; t++)
		ck_assert_int_eq(
			kva_page_layout(hd, ps, &c->tiers[t], &c->l[t]), 0);
	c->ppg = GRAN / ps;
	c->nr_pages = c->ppg * granules;
	c->bytes = (size_t)granules * GRAN;
	c->mem = malloc(c->bytes);
	c->back = malloc(c->bytes);
	ck_assert(c->mem && c->back);
	memset(c->mem, 0xab, c->bytes);
	CK_CUDA(cudaMalloc((void **)&c->dmem, c->bytes));
	c->ids = malloc(c->nr_pages * 4);
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

/* copy the host state to the device (tables, counts, pool) */
static void gpool_upload(struct gpool *c)
{
	size_t tb = (size_t)c->nr_lists * c->width * 4;

	cudaFree(c->d_tables);
	cudaFree(c->d_npages);
	cudaFree(c->d_ntokens);
	cudaFree(c->d_list_base);
	c->d_tables = dup_dev(c->tables, tb);
	c->d_npages = dup_dev(c->npages, 8 * c->nr_lists);
	c->d_ntokens = dup_dev(c->ntokens, 8 * c->nr_lists);
	c->d_list_base = dup_dev(c->list_base, 4 * c->nr_lists);
	CK_CUDA(cudaMemcpy(c->dmem, c->mem, c->bytes, cudaMemcpyHostToDevice));
	c->dpg = c->pg;
	c->dpg.pool = (uint64_t)(uintptr_t)c->dmem;
	c->dpg.tables = c->d_tables;
	c->dpg.list_base = c->d_list_base;
}

/* the device pool equals the host pool, byte for byte */
static void gpool_compare(struct gpool *c, const char *what)
{
	size_t at;

	CK_CUDA(cudaMemcpy(c->back, c->dmem, c->bytes, cudaMemcpyDeviceToHost));
	for (at = 0; at < c->bytes && c->back[at] == c->mem[at]; at++)
		;
	ck_assert_msg(at == c->bytes,
		      "%s: pool byte %zu (page %zu, offset %zu): cpu %#x cuda "
		      "%#x",
		      what, at,
		      at / GRAN * c->ppg + at % GRAN / c->pg.page_size,
		      at % GRAN % c->pg.page_size, c->mem[at], c->back[at]);
}

static void gpool_free(struct gpool *c)
{
	cudaFree(c->dmem);
	cudaFree(c->d_tables);
	cudaFree(c->d_npages);
	cudaFree(c->d_ntokens);
	cudaFree(c->d_list_base);
	free(c->mem);
	free(c->back);
	free(c->ids);
	free(c->tables);
	free(c->npages);
	free(c->ntokens);
	free(c->list_base);
}

static uint32_t gpool_page(struct gpool *c)
{
	ck_assert_uint_lt(c->next, c->nr_pages);
	return c->ids[c->next++];
}

static void rand_act(void *x, size_t n, enum kvk_dtype dt, uint64_t *seed,
		     float amp)
{
	float *f = malloc(n * 4);

	for (size_t i = 0; i < n; i++)
		f[i] = (frand(seed) * 2 - 1) * amp;
	kvk_convert_from_f32(x, f, n, dt);
	free(f);
}

/* one random prompt-phase call on both sides */
static void prompt_case(uint64_t *seed, uint32_t nseq, uint32_t nkv,
			uint32_t hd, int pair, uint32_t maxlen, uint32_t minlen,
			enum kvk_dtype dt, int starve)
{
	struct gpool c;
	struct kvk_compress_prompt a, da;
	uint32_t *ss = calloc(nseq + 1, 4), worst = 0, total = 0, gran;
	uint64_t pages = 0;
	size_t n, es = kvk_dtype_size(dt);
	void *k, *v;
	float *sc, *al;
	uint32_t *cnt, *dcnt_h, *dcnt, *dnt_h;
	int32_t err = 99, *derr, derr_h;
	int ps;

	{
		struct kva_tier tp[2];
		struct kva_layout l[2];

		memcpy(tp, pairs[pair], sizeof(tp));
		ps = kva_page_size(hd, tp, 2);
		kva_page_layout(hd, ps, &tp[0], &l[0]);
		kva_page_layout(hd, ps, &tp[1], &l[1]);
		for (uint32_t s = 0; s < nseq; s++) {
			uint32_t len = minlen + kvtest_rand(seed) %
							(maxlen - minlen + 1);
			uint32_t w =
				kva_worst_pages(l[0].tokens, l[1].tokens, len);

			ss[s] = total;
			total += len;
			worst = w > worst ? w : worst;
			pages += (uint64_t)w * nkv;
		}
		ss[nseq] = total;
	}
	gran = (uint32_t)(pages * ps / GRAN) + 2;
	gpool_make(&c, seed, hd, pair, nseq * nkv, worst + 2, gran);
	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t len = ss[s + 1] - ss[s];

		c.list_base[s] = s * nkv;
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = s * nkv + h;
			uint32_t w = kva_worst_pages(c.l[0].tokens,
						     c.l[1].tokens, len);

			for (uint32_t j = 0; j < w; j++)
				c.tables[(size_t)list * c.width + j] =
					gpool_page(&c);
			c.npages[2 * list] = w;
		}
	}
	if (starve)
		c.npages[2 * (nseq * nkv - 1)] = 0;
	memset(c.ntokens, 0xff, 8 * c.nr_lists);
	n = (size_t)total * nkv * hd;
	k = malloc(n * es);
	v = malloc(n * es);
	rand_act(k, n, dt, seed, 3.0f);
	rand_act(v, n, dt, seed, 1.0f);
	sc = malloc((size_t)total * nkv * 4);
	al = malloc(8 * nseq);
	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t len = ss[s + 1] - ss[s];

		al[2 * s] = frand(seed) * 0.3f;
		al[2 * s + 1] = al[2 * s] + frand(seed) * 1.5f;
		for (uint32_t t = 0; t < len; t++)
			for (uint32_t h = 0; h < nkv; h++) {
				uint32_t nq = len - t < 64 ? len - t : 64;

				sc[(size_t)(ss[s] + t) * nkv + h] =
					expf(frand(seed) * 8 - 5) / (float)len *
					(float)nq;
			}
	}
	cnt = malloc((size_t)nseq * nkv * 12);
	dcnt_h = malloc((size_t)nseq * nkv * 12);
	dnt_h = malloc(8 * c.nr_lists);
	memset(cnt, 0xff, (size_t)nseq * nkv * 12);
	gpool_upload(&c);
	a = (struct kvk_compress_prompt){
		.nr_seqs = nseq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.dtype = dt,
		.k = k,
		.v = v,
		.seq_start = ss,
		.max_len = maxlen,
		.scores = sc,
		.score_window = 64,
		.window = 64,
		.alpha_prune = 0.0f,
		.alpha_quant = 0.0f,
		.seq_alpha = al,
		.pg = c.pg,
		.npages = c.npages,
		.counts = cnt,
		.ntokens = c.ntokens,
		.err = &err,
		/* protected sinks in half the cases (diffkv:sinks=) */
		.sinks = kvtest_rand(seed) % 2 ? 0
					      : kvtest_rand(seed) % 40,
	};
	da = a;
	da.k = dup_dev(k, n * es);
	da.v = dup_dev(v, n * es);
	da.seq_start = dup_dev(ss, 4 * (nseq + 1));
	da.scores = dup_dev(sc, (size_t)total * nkv * 4);
	da.seq_alpha = dup_dev(al, 8 * nseq);
	da.pg = c.dpg;
	da.npages = c.d_npages;
	dcnt = dup_dev(cnt, (size_t)nseq * nkv * 12);
	da.counts = dcnt;
	da.ntokens = c.d_ntokens;
	derr = dup_dev(&err, 4);
	da.err = derr;

	ck_assert_int_eq(kvk_compress_prompt_cpu(&a, NULL), 0);
	ck_assert_int_eq(kvk_compress_prompt_cuda(&da, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	CK_CUDA(cudaMemcpy(&derr_h, derr, 4, cudaMemcpyDeviceToHost));
	CK_CUDA(cudaMemcpy(dcnt_h, dcnt, (size_t)nseq * nkv * 12,
			   cudaMemcpyDeviceToHost));
	CK_CUDA(cudaMemcpy(dnt_h, c.d_ntokens, 8 * c.nr_lists,
			   cudaMemcpyDeviceToHost));
	ck_assert_int_eq(err, starve ? -ENOSPC : 0);
	ck_assert_int_eq(derr_h, err);
	ck_assert(!memcmp(cnt, dcnt_h, (size_t)nseq * nkv * 12));
	ck_assert(!memcmp(c.ntokens, dnt_h, 8 * c.nr_lists));
	gpool_compare(&c, "prompt");
	if (!starve) {
		/* the draw reached the low and pruned classes */
		uint64_t lo = 0;

		for (uint32_t i = 0; i < nseq * nkv; i++)
			lo += cnt[3 * i + 1] + cnt[3 * i + 2];
		ck_assert_uint_gt(lo + (total <= 64 * nseq), 0);
	}
	cudaFree((void *)da.k);
	cudaFree((void *)da.v);
	cudaFree((void *)da.seq_start);
	cudaFree((void *)da.scores);
	cudaFree((void *)da.seq_alpha);
	cudaFree(dcnt);
	cudaFree(derr);
	gpool_free(&c);
	free(ss);
	free(k);
	free(v);
	free(sc);
	free(al);
	free(cnt);
	free(dcnt_h);
	free(dnt_h);
}

START_TEST(test_compress_prompt_cuda_vs_cpu)
{
	static const uint32_t hds[] = {64, 80, 96, 128, 256};
	uint64_t seed = kvtest_seed("compress_prompt_cuda_vs_cpu");

	for (int it = 0; it < 16; it++)
		prompt_case(&seed, 1 + kvtest_rand(&seed) % 4,
			    1 + kvtest_rand(&seed) % 8, hds[it % 5],
			    kvtest_rand(&seed) % ARRAY_SIZE(pairs), 3000, 1,
			    kvtest_rand(&seed) % 3, 0);
	/* long prompts: DiffKV's kernel stops at 4000 tokens */
	prompt_case(&seed, 2, 8, 128, 0, 33000, 20000, KVK_F16, 0);
	prompt_case(&seed, 1, 2, 64, 1, 9000, 5000, KVK_BF16, 0);
	/* a list short of pages: nothing written on either side */
	prompt_case(&seed, 3, 4, 128, 0, 2000, 100, KVK_F16, 1);
}
END_TEST

/* ------------------------------------------------------------------ */

static void put_rand_token(struct gpool *c, uint64_t *seed, uint32_t list,
			   int t, uint32_t i, int32_t p)
{
	const uint32_t *row = &c->tables[(size_t)list * c->width];
	uint32_t tpp = c->l[t].tokens;
	uint32_t pid = t ? row[c->width - 1 - i / tpp] : row[i / tpp];
	float k[KVQ_MAX_HEAD_DIM], v[KVQ_MAX_HEAD_DIM];
	int32_t q0 = p - 1 - (int32_t)(kvtest_rand(seed) % (p > 200 ? 200 : p));
	float sc = expf(frand(seed) * 6 - 3) / (float)p * (float)(p - q0);

	for (uint32_t e = 0; e < c->hd; e++) {
		k[e] = frand(seed) * 2 - 1;
		v[e] = frand(seed) * 2 - 1;
	}
	if (kvtest_rand(seed) % 50 == 0)
		sc = 0.0f;
	kvq_page_put(c->mem + (size_t)(pid / c->ppg) * GRAN +
			     (size_t)(pid % c->ppg) * c->pg.page_size,
		     &c->pg.tier[t], c->hd, i % tpp, k, v, sc, q0);
}

static void decode_run(uint64_t *seed, uint32_t nseq, uint32_t nkv, uint32_t hd,
		       int pair, enum kvk_dtype dt, int steps, int *ops,
		       int starve)
{
	struct gpool c;
	uint32_t nl = nseq * nkv;
	size_t n = (size_t)nl * hd, es = kvk_dtype_size(dt);
	int32_t *pos = calloc(nseq, 4), *dpos, err, *derr, derr_h;
	struct kvk_compress_action *act = malloc(nl * sizeof(*act));
	struct kvk_compress_action *dact_h = malloc(nl * sizeof(*act));
	struct kvk_compress_action *dact;
	uint32_t *nt_h = malloc(8 * nl);
	void *k = malloc(n * es), *v = malloc(n * es), *dk, *dv;
	float *al = malloc(8 * nseq), *dal;
	struct kvk_compress_decode a, da;

	gpool_make(&c, seed, hd, pair, nl, 256, 16);
	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t most = 0;

		c.list_base[s] = s * nkv;
		al[2 * s] = frand(seed) * 0.4f;
		al[2 * s + 1] = al[2 * s] + frand(seed) * 1.5f;
		for (uint32_t h = 0; h < nkv; h++) {
			uint32_t list = s * nkv + h;

			for (int t = 0; t < 2; t++) {
				uint32_t tpp = c.l[t].tokens;
				uint32_t nn = kvtest_rand(seed) %
					      (tpp * 30 < 400 ? tpp * 30 : 400);
				uint32_t np = (nn + tpp) / tpp;

				if (t && kvtest_rand(seed) % 4 == 0)
					nn = 0, np = 1;
				c.ntokens[2 * list + t] = nn;
				c.npages[2 * list + t] = np;
				for (uint32_t j = 0; j < np; j++)
					c.tables[(size_t)list * c.width +
						 (t ? c.width - 1 - j : j)] =
						gpool_page(&c);
			}
			ck_assert_uint_lt(c.npages[2 * list] +
						  c.npages[2 * list + 1] + 16,
					  c.width);
			most = c.ntokens[2 * list] + c.ntokens[2 * list + 1] >
					       most
				       ? c.ntokens[2 * list] +
						 c.ntokens[2 * list + 1]
				       : most;
		}
		pos[s] = (int32_t)(most + 1 + kvtest_rand(seed) % 300);
		for (uint32_t h = 0; h < nkv; h++)
			for (int t = 0; t < 2; t++)
				for (uint32_t i = 0;
				     i < c.ntokens[2 * (s * nkv + h) + t]; i++)
					put_rand_token(&c, seed, s * nkv + h, t,
						       i, pos[s]);
	}
	if (starve) {
		/* list 0: high tier full and every token protected */
		c.ntokens[0] = c.npages[0] * c.l[0].tokens;
		c.ntokens[1] = 0;
		for (uint32_t i = 0; i < c.ntokens[0]; i++)
			put_rand_token(&c, seed, 0, 0, i, pos[0]);
		pos[0] = 1 << 20;
		for (uint32_t i = 0; i < c.ntokens[0]; i++) {
			uint32_t pid = c.tables[i / c.l[0].tokens];
			int32_t q0 = pos[0] - 1;

			memcpy(c.mem + (size_t)(pid / c.ppg) * GRAN +
				       (size_t)(pid % c.ppg) * c.pg.page_size +
				       c.l[0].pos_off + 4 * (i % c.l[0].tokens),
			       &q0, 4);
		}
	}
	dk = dup_dev(k, n * es);
	dv = dup_dev(v, n * es);
	dpos = dup_dev(pos, 4 * nseq);
	dal = dup_dev(al, 8 * nseq);
	dact = dup_dev(act, nl * sizeof(*act));
	derr = dup_dev(&err, 4);
	for (int step = 0; step < steps; step++) {
		/* kva_append(): a page for every full tier */
		for (uint32_t l = 0; l < nl && !starve; l++)
			for (int t = 0; t < 2; t++)
				if (c.ntokens[2 * l + t] ==
				    c.npages[2 * l + t] * c.l[t].tokens) {
					uint32_t j = c.npages[2 * l + t]++;

					c.tables[(size_t)l * c.width +
						 (t ? c.width - 1 - j : j)] =
						gpool_page(&c);
				}
		rand_act(k, n, dt, seed, 2.0f);
		rand_act(v, n, dt, seed, 1.0f);
		CK_CUDA(cudaMemcpy(dk, k, n * es, cudaMemcpyHostToDevice));
		CK_CUDA(cudaMemcpy(dv, v, n * es, cudaMemcpyHostToDevice));
		CK_CUDA(cudaMemcpy(dpos, pos, 4 * nseq,
				   cudaMemcpyHostToDevice));
		gpool_upload(&c);
		memset(act, 0xee, nl * sizeof(*act));
		CK_CUDA(cudaMemset(dact, 0xee, nl * sizeof(*act)));
		err = derr_h = 99;
		CK_CUDA(cudaMemcpy(derr, &err, 4, cudaMemcpyHostToDevice));
		a = (struct kvk_compress_decode){
			.nr_seqs = nseq,
			.nr_kv_heads = nkv,
			.head_dim = hd,
			.dtype = dt,
			.k = k,
			.v = v,
			.pos = pos,
			.window = 64,
			.alpha_prune = 0.1f,
			.alpha_quant = 1.0f,
			.seq_alpha = al,
			.pg = c.pg,
			.npages = c.npages,
			.ntokens = c.ntokens,
			.actions = act,
			.err = &err,
			/* high indices never victims (diffkv:sinks=) */
			.sinks = kvtest_rand(seed) % 2 ? 0
						      : kvtest_rand(seed) % 40,
		};
		da = a;
		da.k = dk;
		da.v = dv;
		da.pos = dpos;
		da.seq_alpha = dal;
		da.pg = c.dpg;
		da.npages = c.d_npages;
		da.ntokens = c.d_ntokens;
		da.actions = dact;
		da.err = derr;
		ck_assert_int_eq(kvk_compress_decode_cpu(&a, NULL), 0);
		ck_assert_int_eq(kvk_compress_decode_cuda(&da, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		CK_CUDA(cudaMemcpy(&derr_h, derr, 4, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(dact_h, dact, nl * sizeof(*act),
				   cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(nt_h, c.d_ntokens, 8 * nl,
				   cudaMemcpyDeviceToHost));
		ck_assert_int_eq(derr_h, err);
		ck_assert_int_eq(err, starve ? -ENOSPC : 0);
		for (uint32_t i = 0; i < nl; i++) {
			ck_assert_msg(
				!memcmp(&act[i], &dact_h[i], sizeof(*act)),
				"step %d list %u: cpu op %u hi %u lo %u, "
				"cuda op %u hi %u lo %u",
				step, i, act[i].op, act[i].hi, act[i].lo,
				dact_h[i].op, dact_h[i].hi, dact_h[i].lo);
			if (ops && act[i].op < 5)
				ops[act[i].op]++;
		}
		ck_assert(!memcmp(nt_h, c.ntokens, 8 * nl));
		gpool_compare(&c, "decode");
		if (starve)
			ck_assert_uint_eq(act[0].op, KVK_OP_NO_ROOM);
		/* attention adds probability to every stored token */
		for (uint32_t l = 0; l < nl; l++)
			for (int t = 0; t < 2; t++)
				for (uint32_t i = 0; i < c.ntokens[2 * l + t];
				     i++) {
					const uint32_t *row =
						&c.tables[(size_t)l * c.width];
					uint32_t tpp = c.l[t].tokens;
					uint32_t pid =
						t ? row[c.width - 1 - i / tpp]
						  : row[i / tpp];
					float *sc =
						(float *)(c.mem +
							  (size_t)(pid /
								   c.ppg) *
								  GRAN +
							  (size_t)(pid %
								   c.ppg) *
								  c.pg.page_size +
							  c.l[t].score_off) +
						i % tpp;

					*sc += frand(seed) * frand(seed) *
					       frand(seed) * 0.02f;
				}
		for (uint32_t s = 0; s < nseq; s++)
			pos[s]++;
	}
	cudaFree(dk);
	cudaFree(dv);
	cudaFree(dpos);
	cudaFree(dal);
	cudaFree(dact);
	cudaFree(derr);
	gpool_free(&c);
	free(pos);
	free(act);
	free(dact_h);
	free(nt_h);
	free(k);
	free(v);
	free(al);
}

START_TEST(test_compress_decode_cuda_vs_cpu)
{
	static const uint32_t hds[] = {64, 80, 96, 128, 256};
	uint64_t seed = kvtest_seed("compress_decode_cuda_vs_cpu");
	int ops[5] = {0};

	for (int it = 0; it < 10; it++)
		decode_run(&seed, 1 + kvtest_rand(&seed) % 4,
			   1 + kvtest_rand(&seed) % 8, hds[it % 5],
			   kvtest_rand(&seed) % ARRAY_SIZE(pairs),
			   kvtest_rand(&seed) % 3, 30, ops, 0);
	for (int i = 0; i < 4; i++)
		ck_assert_msg(ops[i] > 0, "op %d never chosen", i);
	/* a head with no room: -ENOSPC on both sides, nothing written */
	decode_run(&seed, 2, 2, 128, 0, KVK_F16, 2, NULL, 1);
}
END_TEST
#else
START_TEST(test_compress_prompt_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_compress_decode_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_compress_gpu(void)
{
	Suite *s = suite_create("compress_gpu");
	TCase *tc = tcase_create("cuda_vs_cpu");

	tcase_set_timeout(tc, 240);
	KV_ADD(tc, test_compress_prompt_cuda_vs_cpu);
	KV_ADD(tc, test_compress_decode_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
