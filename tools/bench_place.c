// SPDX-License-Identifier: MIT
/*
 * bench_place.c - `kvmm bench place`: KV pages across HBM and host memory
 * (issue 16). Llama-3-8B attention shape (8 kv-heads, GQA 4, head_dim
 * 128, fp16 pages), one layer; synthetic keys and queries with locality:
 * each (sequence, kv-head) attends a drifting hot set of pages (Zipf
 * popularity, neighbours), an attention sink and its recent pages.
 *
 * Two phases per context length. Trace: decode steps on a one-tier pool
 * with the real CPU kernels: dense attention (the reference), Quest page
 * selection (top-k pages from the per-page key min/max) and attention over
 * the selection; per step the attention mass of every selected page is
 * recorded with the output error. Selection and outputs do not depend on
 * where pages live, so every policy replays the same trace. Replay: for
 * each HBM capacity and policy, a two-tier pool (host backend: emulated
 * tiers) is filled the same way, appends a token per step as the trace
 * did, counts the bytes each step reads from each tier, and migrates with
 * kva_migrate() what the policy plans, within a byte budget per step.
 *
 * Step time is modelled from bytes and stated bandwidths (DESIGN.md's H100
 * figures unless given): HBM read, host read over PCIe, migration copy.
 * With --backend cuda the replay runs on the GPU (bench_place_cuda.c): a
 * CUDA space with HBM capped and a host-NUMA tier, the same data, the
 * real attention kernel over each step's selection and the migration's
 * copies on a side stream, timed with CUDA events beside the model.
 * See Documentation/placement/index.rst.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvattn.h"
#include "kvk.h"
#include "kvmm.h"
#include "kvq.h"
#include "select.h"
#include "bench_place.h"

#define BP_HOT 8
#define BP_MAX_THREADS 64
#define G2 KVRT_GRANULE_SIZE

static float gauss(uint64_t *s)
{
	double u1 = ((kvmm_rand(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (kvmm_rand(s) >> 11) / 9007199254740992.0;

	return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static void unit(float *v, uint64_t *s)
{
	double n = 0;

	for (int i = 0; i < BP_HD; i++) {
		v[i] = gauss(s);
		n += v[i] * v[i];
	}
	n = 1 / sqrt(n);
	for (int i = 0; i < BP_HD; i++)
		v[i] *= (float)n;
}

/* the synthetic model of one (sequence, kv-head) */
struct bp_list {
	uint32_t hot[BP_HOT];
	float w[BP_GROUP][BP_HOT];
	uint32_t *perm;		/* Zipf rank -> page */
};

struct bp_gen {
	uint64_t seed;
	uint32_t max_pages;
	float *topic;		/* [max_pages][HD]: shared by the lists */
	float sink[BP_HD];
	struct bp_list *l;
};

static uint32_t zipf(uint64_t *s, uint32_t n)
{
	/* inverse CDF of 1/r over 1..n, approximately: n^u - 1 */
	double u = (kvmm_rand(s) >> 11) / 9007199254740992.0;
	uint32_t r = (uint32_t)(pow((double)n, u)) - 1;

	return r < n ? r : n - 1;
}

static void hot_pick(struct bp_gen *g, struct bp_list *l, int h, uint32_t np,
		     int near)
{
	uint64_t *s = &g->seed;
	uint32_t p;

	if (near) {
		int d = (int)(kvmm_rand(s) % 7) - 3;
		int64_t q = (int64_t)l->hot[h] + d;

		p = q < 1 ? 1 : q >= np - 1 ? np - 2 : (uint32_t)q;
	} else {
		p = l->perm[zipf(s, np)];
		if (p >= np - 1 || !p)
			p = 1 + kvmm_rand(s) % (np - 2);
	}
	l->hot[h] = p;
	for (int q = 0; q < BP_GROUP; q++)
		l->w[q][h] = 0.3f + 0.7f * (kvmm_rand(s) >> 11) /
					     9007199254740992.0f;
}

static int gen_init(struct bp_gen *g, uint32_t lists, uint32_t max_pages,
		    uint32_t np0, uint64_t seed)
{
	g->seed = seed;
	g->max_pages = max_pages;
	g->topic = malloc((size_t)max_pages * BP_HD * sizeof(float));
	g->l = calloc(lists, sizeof(*g->l));
	if (!g->topic || !g->l)
		return -ENOMEM;
	for (uint32_t p = 0; p < max_pages; p++)
		unit(&g->topic[(size_t)p * BP_HD], &g->seed);
	unit(g->sink, &g->seed);
	for (uint32_t i = 0; i < lists; i++) {
		struct bp_list *l = &g->l[i];

		l->perm = malloc(max_pages * sizeof(uint32_t));
		if (!l->perm)
			return -ENOMEM;
		for (uint32_t p = 0; p < max_pages; p++)
			l->perm[p] = p;
		for (uint32_t p = max_pages; p > 1; p--) {
			uint32_t j = kvmm_rand(&g->seed) % p, x = l->perm[p - 1];

			l->perm[p - 1] = l->perm[j];
			l->perm[j] = x;
		}
		for (int h = 0; h < BP_HOT; h++)
			hot_pick(g, l, h, np0, 0);
	}
	return 0;
}

static void gen_fini(struct bp_gen *g, uint32_t lists)
{
	for (uint32_t i = 0; g->l && i < lists; i++)
		free(g->l[i].perm);
	free(g->l);
	free(g->topic);
}

/* key and value of token @pos (page @pos / tpp) of one list */
static void gen_token(struct bp_gen *g, uint32_t pos, uint32_t tpp, float *k,
		      float *v)
{
	const float *u = &g->topic[(size_t)(pos / tpp) * BP_HD];

	for (int i = 0; i < BP_HD; i++) {
		k[i] = 4 * u[i] + 0.1f * gauss(&g->seed);
		v[i] = gauss(&g->seed);
	}
	if (!pos)
		for (int i = 0; i < BP_HD; i++)
			k[i] += 6 * g->sink[i];
}

/* the queries of one list at one step: drift the hot set, then build */
static void gen_query(struct bp_gen *g, struct bp_list *l, uint32_t np,
		      float *q /* [GROUP][HD] */)
{
	for (int h = 0; h < BP_HOT; h++) {
		uint64_t r = kvmm_rand(&g->seed) % 100;

		if (r < 8)
			hot_pick(g, l, h, np, 1);
		else if (r < 12)
			hot_pick(g, l, h, np, 0);
	}
	for (int a = 0; a < BP_GROUP; a++) {
		float *x = &q[a * BP_HD];

		for (int i = 0; i < BP_HD; i++)
			x[i] = 0.6f * gauss(&g->seed) + 22 * g->sink[i];
		for (int h = 0; h < BP_HOT; h++) {
			const float *u = &g->topic[(size_t)l->hot[h] * BP_HD];

			for (int i = 0; i < BP_HD; i++)
				x[i] += 45 * l->w[a][h] * u[i];
		}
		/* the recent pages */
		for (uint32_t p = np > 2 ? np - 2 : 0; p < np; p++) {
			const float *u = &g->topic[(size_t)p * BP_HD];

			for (int i = 0; i < BP_HD; i++)
				x[i] += 25 * u[i];
		}
	}
}

/**
 * bp_trace_pool() - the bench's pool: one layer of 8 kv-heads, fp16 pages
 * @ctx: runtime context (host, or CUDA for --backend cuda)
 * @B: sequence slots
 * @max_tokens: most tokens per sequence
 * @va: reservation and budget, bytes
 *
 * Return: the pool (a host pool whatever the context), NULL on failure.
 */
struct kva_pool *bp_trace_pool(struct kvrt_ctx *ctx, uint32_t B,
			       uint32_t max_tokens, uint64_t va)
{
	struct kva_pool_params p = {
		.ctx = ctx,
		.va_bytes = va,
		.budget_bytes = va,
		.head_dim = BP_HD,
		.tiers = { { 16, 16, 1, 1 } },
		.nr_tiers = 1,
		.nr_slots = B,
		.nr_layers = 1,
		.nr_heads = BP_KVH,
		.max_tokens = max_tokens,
		.wmark_low = 1,
		.wmark_high = 1,
	};
	struct kva_pool *pool;

	return kva_pool_create(&p, &pool) ? NULL : pool;
}

/**
 * bp_fill_pool() - admit @B sequences of @ctx tokens, high tier only
 * @pool: from bp_trace_pool(), empty
 * @B: sequences (slots 0..B-1)
 * @ctx: tokens each
 *
 * Return: 0 or the allocator's -errno.
 */
int bp_fill_pool(struct kva_pool *pool, uint32_t B, uint32_t ctx)
{
	uint32_t slots[64], prompt[64], *hi, *lo;
	uint32_t lists = B * pool->lists_per_slot;
	uint64_t need = (uint64_t)kva_admit_pages(pool, ctx) * lists;
	int ret;

	for (uint32_t i = 0; i < B; i++)
		slots[i] = i, prompt[i] = ctx;
	if (need > kva_nr_free(pool)) {
		uint64_t g = kvmm_div_round_up(need - kva_nr_free(pool),
					       pool->pages_per_granule);

		ret = kva_pool_grow_auto(pool, (uint32_t)g);
		if (ret)
			return ret;
	}
	ret = kva_admit(pool, slots, prompt, B);
	if (ret)
		return ret;
	hi = calloc(lists, 4);
	lo = calloc(lists, 4);
	if (!hi || !lo) {
		free(hi);
		free(lo);
		return -ENOMEM;
	}
	for (uint32_t l = 0; l < lists; l++)
		hi[l] = ctx;
	ret = kva_trim(pool, slots, B, hi, lo);
	free(hi);
	free(lo);
	return ret;
}

/**
 * bp_append_token() - one decode token for every list of @B sequences
 * @pool: the pool
 * @B: sequences
 *
 * A page where a list needs one (growing the pool first when fewer pages
 * than lists are free), then every list's count + 1.
 *
 * Return: 0 or the allocator's -errno.
 */
int bp_append_token(struct kva_pool *pool, uint32_t B)
{
	uint32_t slots[64];
	int ret;

	for (uint32_t i = 0; i < B; i++)
		slots[i] = i;
	if (kva_nr_free(pool) < pool->nr_lists) {
		ret = kva_pool_balance(pool);
		if (ret < 0)
			return ret;
	}
	ret = kva_append(pool, slots, B);
	for (uint32_t l = 0; !ret && l < B * pool->lists_per_slot; l++)
		ret = kva_set_tokens(pool, l, pool->ntokens[2 * l] + 1, 0);
	return ret;
}

static void *page_ptr(const struct kva_pool *pool, uint32_t list, uint32_t e)
{
	return (void *)(uintptr_t)kva_page_addr(
		pool, pool->table[(size_t)list * pool->width + e]);
}

/* dense attention mass of each page of one list, max over the group */
static void list_mass(const struct kva_pool *pool, uint32_t list,
		      const float *q, float scale, float *mass, float *logit)
{
	const struct kva_layout *ly = &pool->layout[KVA_HI];
	uint32_t n = pool->ntokens[2 * list], T = ly->tokens;

	for (uint32_t e = 0; e * T < n; e++)
		mass[e] = 0;
	for (int a = 0; a < BP_GROUP; a++) {
		const float *x = &q[a * BP_HD];
		double mx = -1e30, sum = 0;

		for (uint32_t t = 0; t < n; t++) {
			const uint16_t *k = (const uint16_t *)
				((const char *)page_ptr(pool, list, t / T) +
				 ly->k_off) + (size_t)(t % T) * BP_HD;
			float d = 0;

			for (int i = 0; i < BP_HD; i++)
				d += x[i] * kvk_f16_to_f32(k[i]);
			logit[t] = d * scale;
			if (logit[t] > mx)
				mx = logit[t];
		}
		for (uint32_t t = 0; t < n; t++) {
			logit[t] = (float)exp(logit[t] - mx);
			sum += logit[t];
		}
		for (uint32_t e = 0; e * T < n; e++) {
			double m = 0;

			for (uint32_t t = e * T; t < n && t < (e + 1) * T; t++)
				m += logit[t];
			m /= sum;
			if (m > mass[e])
				mass[e] = (float)m;
		}
	}
}

/**
 * bp_rel_l2() - relative L2 distance of @x from @ref
 * @x: values
 * @ref: reference
 * @n: entries
 *
 * Return: |x - ref| / |ref| (|x - ref| when @ref is zero).
 */
double bp_rel_l2(const float *x, const float *ref, size_t n)
{
	double a = 0, b = 0;

	for (size_t i = 0; i < n; i++) {
		a += (x[i] - ref[i]) * (double)(x[i] - ref[i]);
		b += (double)ref[i] * ref[i];
	}
	return b > 0 ? sqrt(a / b) : sqrt(a);
}

/*
 * --threads: phase one's kernels over contiguous ranges of sequences (or
 * lists), one range per thread. Every list is computed alone, in the same
 * order, so the trace is the same whatever the thread count; only the CPU
 * times change.
 */
struct bp_par {
	int (*fn)(void *arg, uint32_t i0, uint32_t i1);
	void *arg;
	uint32_t i0, i1;
	int ret;
};

static void *par_main(void *x)
{
	struct bp_par *p = x;

	p->ret = p->fn(p->arg, p->i0, p->i1);
	return NULL;
}

static int par_for(uint32_t threads, uint32_t n,
		   int (*fn)(void *arg, uint32_t i0, uint32_t i1), void *arg)
{
	struct bp_par p[BP_MAX_THREADS];
	pthread_t t[BP_MAX_THREADS];
	int started[BP_MAX_THREADS] = { 0 };
	uint32_t k = threads < n ? threads : n;
	int ret = 0;

	if (k <= 1)
		return fn(arg, 0, n);
	for (uint32_t i = 0; i < k; i++)
		p[i] = (struct bp_par){
			.fn = fn,
			.arg = arg,
			.i0 = (uint32_t)((uint64_t)n * i / k),
			.i1 = (uint32_t)((uint64_t)n * (i + 1) / k),
		};
	for (uint32_t i = 1; i < k; i++)
		started[i] = !pthread_create(&t[i], NULL, par_main, &p[i]);
	par_main(&p[0]);
	for (uint32_t i = 1; i < k; i++) {
		if (started[i])
			pthread_join(t[i], NULL);
		else
			par_main(&p[i]);	/* no thread: here */
	}
	for (uint32_t i = 0; i < k && !ret; i++)
		ret = p[i].ret;
	return ret;
}

/* sequences [i0, i1) of a decode-attention call */
static int par_attn(void *arg, uint32_t i0, uint32_t i1)
{
	struct kvk_attn_args a = *(const struct kvk_attn_args *)arg;
	size_t per = (size_t)a.nr_kv_heads * a.group * a.head_dim;

	a.nr_seqs = i1 - i0;
	a.list_base += i0;
	a.q = (const float *)a.q + i0 * per;
	a.out = (float *)a.out + i0 * per;
	return kvk_attn_decode_cpu(&a, NULL);
}

/* sequences [i0, i1) of a page selection (its outputs are by list) */
static int par_select(void *arg, uint32_t i0, uint32_t i1)
{
	struct kvk_select_args sa = *(const struct kvk_select_args *)arg;
	size_t per = (size_t)sa.attn.nr_kv_heads * sa.attn.group *
		     sa.attn.head_dim;

	sa.attn.nr_seqs = i1 - i0;
	sa.attn.list_base += i0;
	sa.attn.q = (const float *)sa.attn.q + i0 * per;
	return kvk_select_pages_cpu(&sa, NULL);
}

/* the mass of each selected page of lists [i0, i1), by table entry */
struct bp_mass_job {
	const struct kva_pool *pool;
	const float *q;
	const uint32_t *selt, *seln;
	float *mass;		/* the step's [lists][width] */
	double *kept;		/* [lists]: mass kept over all mass */
	float scale;
	uint32_t max_tokens;
};

static int par_mass(void *arg, uint32_t i0, uint32_t i1)
{
	const struct bp_mass_job *j = arg;
	const struct kva_pool *pool = j->pool;
	uint32_t width = pool->width, tpp = pool->layout[KVA_HI].tokens;
	float *pm = malloc((size_t)width * 4);
	float *lg = malloc((size_t)j->max_tokens * 4);

	if (!pm || !lg) {
		free(pm);
		free(lg);
		return -ENOMEM;
	}
	for (uint32_t l = i0; l < i1; l++) {
		float *m = &j->mass[(size_t)l * width];
		uint32_t np = kvmm_div_round_up(pool->ntokens[2 * l], tpp);
		uint32_t ns = kvmm_div_round_up(j->seln[2 * l], tpp);
		double kept = 0, all = 0;

		list_mass(pool, l, &j->q[(size_t)l * BP_GROUP * BP_HD],
			  j->scale, pm, lg);
		for (uint32_t i = 0, e = 0; i < ns; i++) {
			uint32_t p = j->selt[(size_t)l * width + i];

			while (e < np &&
			       pool->table[(size_t)l * width + e] != p)
				e++;
			if (e == np)
				break;
			/* selected: at least a trace of mass */
			m[e] = pm[e] > 1e-9f ? pm[e] : 1e-9f;
			kept += pm[e];
		}
		for (uint32_t e = 0; e < np; e++)
			all += pm[e];
		j->kept[l] = all > 0 ? kept / all : 1;
	}
	free(pm);
	free(lg);
	return 0;
}

/*
 * --backend cuda: every page of the trace pool at its last step, entry e of
 * list l as page id l * width + e of a pool-shaped array (the decode steps'
 * tokens are there already; a step reads only the tokens it counts).
 */
static int stage_pages(const struct kva_pool *pool, struct bp_trace *tr)
{
	uint32_t ppg = pool->pages_per_granule, W = pool->width;
	uint64_t ids = (uint64_t)tr->nr_lists * W;

	tr->stage_ppg = ppg;
	tr->stage_bytes = kvmm_div_round_up(ids, ppg) * G2;
	tr->stage = aligned_alloc(4096, tr->stage_bytes);
	if (!tr->stage)
		return -ENOMEM;
	for (uint32_t l = 0; l < tr->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
			uint64_t id = (uint64_t)l * W + e;

			memcpy(tr->stage + id / ppg * G2 + id % ppg *
					   pool->page_size,
			       page_ptr(pool, l, e), pool->page_size);
		}
	return 0;
}

/* Phase one: the trace of @ctx tokens, with the real CPU kernels. */
static int make_trace(const struct bp_opts *o, struct kvrt_ctx *ctx,
		      uint32_t ctxlen, struct bp_trace *tr)
{
	uint32_t B = o->batch, S = o->warm + o->steps, lists = B * BP_KVH;
	uint32_t max_tokens = ctxlen + S + 64, tpp, width, upd_n;
	struct kva_pool *pool;
	struct bp_gen g = { 0 };
	struct kvk_attn_args a = { 0 };
	struct kvk_select_args sa = { 0 };
	struct kvk_summary_args su = { 0 };
	float *q = NULL, *od = NULL, *os = NULL;
	double *kept = NULL;
	struct bp_mass_job mj;
	uint32_t *lb = NULL, *selt = NULL, *seln = NULL, *upd = NULL;
	uint8_t *sum = NULL;
	uint64_t va, pages;
	int ret = -ENOMEM;

	memset(tr, 0, sizeof(*tr));
	/* pages: ctx + steps tokens per list, a spare per list, headroom */
	va = kvmm_round_up((uint64_t)lists * (max_tokens / 10 + 4) * 8192 * 2,
			   G2);
	pool = bp_trace_pool(ctx, B, max_tokens, va);
	if (!pool)
		return -ENOMEM;
	tpp = pool->layout[KVA_HI].tokens;
	width = pool->width;
	ret = bp_fill_pool(pool, B, ctxlen);
	if (ret)
		goto out;
	ret = -ENOMEM;
	pages = (uint64_t)pool->nr_page_ids;
	if (gen_init(&g, lists, max_tokens / tpp + 2, ctxlen / tpp + 1,
		     o->seed ^ ctxlen))
		goto out;
	a.tier[0] = kva_attn_tier(&pool->tiers[0], &pool->layout[KVA_HI]);
	a.tier[1] = a.tier[0];
	/* the prompt's keys and values */
	{
		float k[BP_HD], v[BP_HD];

		for (uint32_t l = 0; l < lists; l++)
			for (uint32_t t = 0; t < ctxlen; t++) {
				gen_token(&g, t, tpp, k, v);
				kvq_page_put(page_ptr(pool, l, t / tpp),
					     &a.tier[0], BP_HD, t % tpp, k, v,
					     0, (int32_t)t);
			}
	}
	tr->nr_lists = lists;
	tr->width = width;
	tr->tpp = tpp;
	tr->page_size = pool->page_size;
	tr->steps = S;
	tr->ctx = ctxlen;
	tr->mass = calloc((size_t)S * lists * width, sizeof(float));
	tr->tier = a.tier[0];
	if (o->cuda) {
		tr->q = malloc((size_t)S * lists * BP_GROUP * BP_HD * 4);
		if (!tr->q)
			goto out;
	}
	q = malloc((size_t)lists * BP_GROUP * BP_HD * 4);
	od = malloc((size_t)lists * BP_GROUP * BP_HD * 4);
	os = malloc((size_t)lists * BP_GROUP * BP_HD * 4);
	kept = malloc((size_t)lists * sizeof(double));
	lb = malloc(B * 4);
	selt = malloc((size_t)lists * width * 4);
	seln = malloc((size_t)lists * 2 * 4);
	upd = malloc((size_t)lists * width * 12);
	sum = calloc(pages, kvk_summary_row_bytes(BP_HD, KVK_F32));
	if (!tr->mass || !q || !od || !os || !kept || !lb || !selt ||
	    !seln || !upd || !sum)
		goto out;
	for (uint32_t i = 0; i < B; i++)
		lb[i] = i * BP_KVH;
	a.nr_seqs = B;
	a.nr_kv_heads = BP_KVH;
	a.group = BP_GROUP;
	a.head_dim = BP_HD;
	a.scale = 1 / sqrtf(BP_HD);
	a.dtype = KVK_F32;
	a.pool = pool->base;
	a.page_size = pool->page_size;
	a.pages_per_granule = pool->pages_per_granule;
	a.list_base = lb;
	su.pool = pool->base;
	su.page_size = pool->page_size;
	su.pages_per_granule = pool->pages_per_granule;
	su.head_dim = BP_HD;
	su.tier = a.tier[0];
	su.summary = sum;
	su.sum_dtype = KVK_F32;
	su.upd = upd;
	/* summaries of the prompt's pages */
	upd_n = 0;
	for (uint32_t l = 0; l < lists; l++)
		for (uint32_t e = 0; e * tpp < ctxlen; e++) {
			uint32_t n = ctxlen - e * tpp;

			upd[3 * upd_n] = pool->table[(size_t)l * width + e];
			upd[3 * upd_n + 1] = 0;
			upd[3 * upd_n + 2] = n < tpp ? n : tpp;
			upd_n++;
		}
	su.nr = upd_n;
	ret = kvk_page_summary_cpu(&su, NULL);
	if (ret)
		goto out;

	for (uint32_t s = 0; s < S; s++) {
		float k[BP_HD], v[BP_HD];
		double t0;

		/* a decode token: its page, its K/V, its summary */
		ret = bp_append_token(pool, B);
		if (ret)
			goto out;
		upd_n = 0;
		for (uint32_t l = 0; l < lists; l++) {
			uint32_t t = pool->ntokens[2 * l] - 1;

			gen_token(&g, t, tpp, k, v);
			kvq_page_put(page_ptr(pool, l, t / tpp), &a.tier[0],
				     BP_HD, t % tpp, k, v, 0, (int32_t)t);
			upd[3 * upd_n] =
				pool->table[(size_t)l * width + t / tpp];
			upd[3 * upd_n + 1] = t % tpp;
			upd[3 * upd_n + 2] = 1;
			upd_n++;
		}
		su.nr = upd_n;
		ret = kvk_page_summary_cpu(&su, NULL);
		if (ret)
			goto out;
		for (uint32_t l = 0; l < lists; l++)
			gen_query(&g, &g.l[l],
				  kvmm_div_round_up(pool->ntokens[2 * l], tpp),
				  &q[(size_t)l * BP_GROUP * BP_HD]);
		if (tr->q)
			memcpy(&tr->q[(size_t)s * lists * BP_GROUP * BP_HD], q,
			       (size_t)lists * BP_GROUP * BP_HD * 4);
		a.q = q;
		a.tables = pool->table;
		a.width = width;
		a.ntokens = pool->ntokens;
		a.out = od;
		t0 = kvmm_now_us();
		ret = par_for(o->threads, B, par_attn, &a);
		if (ret)
			goto out;
		if (s >= o->warm)
			tr->dense_us += kvmm_now_us() - t0;
		sa.attn = a;
		sa.summary = sum;
		sa.sum_dtype = KVK_F32;
		sa.topk = o->topk ? o->topk : ctxlen / 16 / tpp + 1;
		sa.window = 64;
		sa.sink = 1;
		sa.sel_tables = selt;
		sa.sel_ntokens = seln;
		t0 = kvmm_now_us();
		ret = par_for(o->threads, B, par_select, &sa);
		if (ret)
			goto out;
		a.tables = selt;
		a.ntokens = seln;
		a.out = os;
		ret = par_for(o->threads, B, par_attn, &a);
		if (ret)
			goto out;
		if (s >= o->warm) {
			double e = bp_rel_l2(os, od, (size_t)lists * BP_GROUP *
							 BP_HD);

			tr->sparse_us += kvmm_now_us() - t0;
			tr->err_sum += e;
			tr->err_max = e > tr->err_max ? e : tr->err_max;
			tr->err_n++;
		}
		/* the mass of each selected page, by table entry */
		mj = (struct bp_mass_job){
			.pool = pool, .q = q, .selt = selt, .seln = seln,
			.mass = &tr->mass[(size_t)s * lists * width],
			.kept = kept, .scale = a.scale,
			.max_tokens = max_tokens,
		};
		ret = par_for(o->threads, lists, par_mass, &mj);
		if (ret)
			goto out;
		for (uint32_t l = 0; l < lists && s >= o->warm; l++)
			tr->mass_kept += kept[l];
	}
	tr->mass_kept /= (double)o->steps * lists;
	tr->topk = sa.topk;
	tr->all_pages = 0;
	for (uint32_t l = 0; l < lists; l++)
		tr->all_pages += pool->npages[2 * l];
	if (o->cuda) {
		ret = stage_pages(pool, tr);
		if (ret)
			goto out;
	}
	ret = 0;
out:
	free(q);
	free(od);
	free(os);
	free(kept);
	free(lb);
	free(selt);
	free(seln);
	free(upd);
	free(sum);
	gen_fini(&g, lists);
	kva_pool_destroy(pool);
	if (ret) {
		free(tr->mass);
		free(tr->q);
		free(tr->stage);
		tr->mass = tr->q = NULL;
		tr->stage = NULL;
	}
	return ret;
}

static double model_us(const struct bp_opts *o, double hbm, double host,
		       double mig)
{
	return hbm / (o->hbm_gbs * 1e3) + host / (o->host_gbs * 1e3) +
	       mig / (o->pcie_gbs * 1e3);
}

/* the same model with the rates measured on the device in this run */
static double model_meas_us(const struct bp_rates *rt, double hbm,
			    double host, double mig)
{
	double pcie = (rt->promote + rt->demote) / 2;

	return hbm / (rt->hbm_read * 1e3) + host / (rt->host_read * 1e3) +
	       mig / (pcie * 1e3);
}

/*
 * Room on the host tier for the replay's migration (kva_migrate_room();
 * without it, 16K at batch 16 moved about 180 pages a step whatever the
 * policy wanted): the placement at prefill (which a real prefill makes by
 * writing each page where the policy wants it) needs a host page per
 * demotion it plans; a step needs its budget's worth and the HBM
 * reserve's. These free granules cost host memory only; the HBM cap is
 * unchanged.
 */
static int host_room(const struct bp_opts *o, struct kva_pool *pool,
		     struct kva_place *pl, const struct bp_trace *tr)
{
	uint32_t *pro, *dem, np, nd;
	uint64_t want;
	int ret;

	pro = malloc(pool->nr_page_ids * 4);
	dem = malloc(pool->nr_page_ids * 4);
	if (!pro || !dem) {
		free(pro);
		free(dem);
		return -ENOMEM;
	}
	kva_place_future(pl, tr->mass, tr->steps);
	ret = kva_place_plan(pl, pool, pro, &np, dem, &nd);
	free(pro);
	free(dem);
	if (ret)
		return ret;
	want = (uint64_t)nd + tr->nr_lists;
	if (o->host_copy)	/* a copy of every page HBM may hold */
		want += tr->all_pages;
	if (o->budget_mib > 0)
		want += (uint64_t)(o->budget_mib * SZ_1M) / pool->page_size;
	ret = kva_migrate_room(pool, want);
	return ret < 0 ? ret : 0;
}

/*
 * --host-copy: a clean host copy of every full HBM page (all of them at
 * prefill, @fresh: the pages the step's append just filled), so that a
 * demotion only rewrites the tables; @buf has room for a page per list
 */
static int copy_out(struct kva_pool *pool, struct kva_migrate_control *mc,
		    uint32_t *buf, int fresh)
{
	uint32_t tpp = pool->layout[KVA_HI].tokens, n = 0;
	int ret;

	for (uint32_t l = 0; l < pool->nr_lists; l++) {
		uint32_t nt = pool->ntokens[2 * l], e0 = 0, e1 = nt / tpp;

		if (fresh) {
			if (!nt || nt % tpp)
				continue;
			e0 = e1 - 1;
		}
		for (uint32_t e = e0; e < e1; e++) {
			uint32_t p = pool->table[(size_t)l * pool->width + e];

			if (kva_page_mem(pool, p) == KVA_MEM_HBM)
				buf[n++] = p;
		}
	}
	ret = kva_migrate_copy_out(pool, mc, buf, n);
	return ret < 0 ? ret : 0;
}

/*
 * Phase two: one policy at one HBM capacity over the trace. With @dev (the
 * CUDA path) the pool lives in a CUDA space, the pages hold the trace's
 * data, and each step runs the attention over its selection (over every
 * page with @dense: the dense all-HBM reference, no placement) and queues
 * the migration's copies on a side stream; @rt are the measured rates.
 */
static int replay(const struct bp_opts *o, const struct bp_trace *tr,
		  double frac, enum kva_place_policy policy,
		  struct bp_dev *dev, int dense, const struct bp_rates *rt,
		  struct bp_result *r)
{
	struct kvrt_ctx_opts co = { .backend = KVRT_BACKEND_HOST,
				    .host_mem_bytes = 1ULL << 40,
				    .host_tier_bytes = 1ULL << 40 };
	uint32_t B = o->batch, lists = tr->nr_lists, width = tr->width;
	uint32_t max_tokens = tr->ctx + tr->steps + 64;
	size_t n = (size_t)lists * width;
	struct kva_migrate_control mc;
	struct kva_place pl;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	uint32_t *pro = NULL, *dem = NULL, *npb = NULL, np, nd;
	double wsum = 0, whit = 0;
	uint64_t va;
	int ret;

	memset(r, 0, sizeof(*r));
	if (dev) {
		ctx = bp_dev_ctx(dev);
	} else {
		ret = kvrt_ctx_create(&co, &ctx);
		if (ret)
			return ret;
	}
	va = kvmm_round_up((uint64_t)lists * (max_tokens / 10 + 4) * 8192 * 2,
			   G2);
	pool = bp_trace_pool(ctx, B, max_tokens, va);
	if (!pool) {
		if (!dev)
			kvrt_ctx_destroy(ctx);
		return -ENOMEM;
	}
	/* HBM: the fraction of the KV at the last step, in granules */
	if (frac < 1) {
		uint64_t g = (uint64_t)(frac * tr->all_pages *
						pool->page_size / G2 + 0.5);

		ret = kva_pool_set_mem_budget(pool, KVA_MEM_HBM,
					      (g ? g : 1) * G2);
		if (ret)
			goto out;
	}
	ret = bp_fill_pool(pool, B, tr->ctx);
	if (ret)
		goto out;
	ret = -ENOMEM;
	npb = malloc(lists * 4);
	if (!npb || kva_place_init(&pl, pool, policy))
		goto out;
	if (frac < 1 && !dense) {
		ret = host_room(o, pool, &pl, tr);
		if (ret)
			goto out_pl;
		ret = -ENOMEM;
	}
	pro = malloc(pool->nr_page_ids * 4);
	dem = malloc(pool->nr_page_ids * 4);
	if (!pro || !dem || kva_migrate_init(&mc, pool, 0))
		goto out_pl;
	/* every list may open a page in a step: keep that much HBM free */
	mc.hbm_reserve = lists;
	mc.keep_copies = o->host_copy && !dense;
	if (dev) {
		/* the data in, the copies on the side stream, fenced */
		ret = bp_dev_begin(dev, pool, &mc, !dense);
		if (ret)
			goto out_fini;
	}
	/* placement at prefill: what the policy wants, unbounded */
	kva_place_future(&pl, tr->mass, tr->steps);
	ret = dense ? 0 : kva_place_plan(&pl, pool, pro, &np, dem, &nd);
	if (!ret && !dense)
		ret = kva_migrate(pool, &mc, pro, np, dem, nd);
	if (!ret && dev) {
		ret = bp_dev_step_end(dev, NULL);
		if (ret >= 0)
			ret = kva_migrate_reclaim(pool, 0);
		ret = ret < 0 ? ret : 0;
	}
	if (!ret && !dense && o->host_copy)
		ret = copy_out(pool, &mc, pro, 0);
	if (!ret && dev) {
		ret = bp_dev_step_end(dev, NULL);
		ret = ret < 0 ? ret : 0;
	}
	if (ret)
		goto out_fini;
	r->init_mig_bytes = (double)(mc.bytes_moved + mc.bytes_copied_out);
	r->no_room += !dense && mc.result == KVA_MIGRATE_NO_ROOM;
	mc.budget_bytes = o->budget_mib > 0 ?
				  (uint64_t)(o->budget_mib * SZ_1M) :
				  UINT64_MAX;
	for (uint32_t s = 0; s < tr->steps; s++) {
		const float *m = &tr->mass[(size_t)s * n];
		double hb = 0, ob = 0;
		double before = (double)(mc.bytes_moved + mc.bytes_copied_out);
		double plan_pre = 0;
		struct bp_step_time st = { 0 };
		double t0;

		for (uint32_t l = 0; dev && l < lists; l++)
			npb[l] = pool->npages[2 * l];
		ret = bp_append_token(pool, B);
		if (!ret && dev)
			ret = bp_dev_new_pages(dev, pool, npb);
		if (ret)
			goto out_fini;
		/* the pages this append filled get their host copy */
		if (!dense && o->host_copy) {
			ret = copy_out(pool, &mc, pro, 1);
			if (ret)
				goto out_fini;
		}
		if (!dense && o->plan_select) {
			/* the selection is known: plan before the reads */
			t0 = kvmm_now_us();
			ret = kva_place_select(&pl, m);
			kva_place_future(&pl, m, tr->steps - s);
			if (!ret)
				ret = kva_place_plan(&pl, pool, pro, &np, dem,
						     &nd);
			if (!ret)
				ret = kva_migrate(pool, &mc, pro, np, dem, nd);
			if (ret)
				goto out_fini;
			r->no_room += mc.result == KVA_MIGRATE_NO_ROOM;
			plan_pre = kvmm_now_us() - t0;
		}
		for (uint32_t l = 0; l < lists; l++)
			for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
				size_t i = (size_t)l * width + e;
				uint32_t p;

				if (m[i] <= 0 && !dense)
					continue;
				p = pool->table[i];
				if (kva_page_mem(pool, p) == KVA_MEM_HBM) {
					hb += pool->page_size;
					if (s >= o->warm)
						whit += m[i];
				} else {
					ob += pool->page_size;
				}
				if (s >= o->warm)
					wsum += m[i];
			}
		if (dev) {
			ret = bp_dev_attend(dev, pool, s, dense ? NULL : m,
					    o->check);
			if (ret)
				goto out_fini;
		}
		t0 = kvmm_now_us();
		if (!dense) {
			ret = kva_place_observe(&pl, m);
			if (ret)
				goto out_fini;
		}
		if (!dense && !o->plan_select) {
			kva_place_future(&pl,
					 s + 1 < tr->steps ? m + n : NULL,
					 tr->steps - s - 1);
			ret = kva_place_plan(&pl, pool, pro, &np, dem, &nd);
			if (!ret)
				ret = kva_migrate(pool, &mc, pro, np, dem, nd);
			if (ret)
				goto out_fini;
			r->no_room += mc.result == KVA_MIGRATE_NO_ROOM;
		}
		t0 = kvmm_now_us() - t0 + plan_pre;
		if (o->check) {
			char why[256];

			ret = kva_check(pool, why, sizeof(why));
			if (ret) {
				fprintf(stderr, "kvmm bench place: %s\n", why);
				goto out_fini;
			}
		}
		if (dev) {
			/* the step's copies done: the held pages go back */
			ret = bp_dev_step_end(dev, &st);
			if (ret >= 0)
				ret = kva_migrate_reclaim(pool, 0);
			if (ret < 0)
				goto out_fini;
			ret = 0;
		}
		if (s >= o->warm) {
			double mig = (double)(mc.bytes_moved +
					      mc.bytes_copied_out) - before;
			/* summaries: a row per page, read from HBM */
			double sum = dense ? 0 : (double)tr->all_pages * 2 *
							 BP_HD * 4;

			r->hbm_bytes += hb;
			r->host_bytes += ob;
			r->mig_bytes += mig;
			r->model_us += model_us(o, hb + sum, ob, mig);
			r->plan_us += t0;
			if (dev) {
				r->model_meas_us += model_meas_us(rt, hb + sum,
								  ob, mig);
				r->select_us += st.select;
				r->attn_us += st.attn;
				r->mig_us += st.mig;
				r->up_us += st.up;
			}
		}
	}
	r->hbm_bytes /= o->steps;
	r->host_bytes /= o->steps;
	r->mig_bytes /= o->steps;
	r->model_us /= o->steps;
	r->model_meas_us /= o->steps;
	r->select_us /= o->steps;
	r->attn_us /= o->steps;
	r->mig_us /= o->steps;
	r->up_us /= o->steps;
	r->plan_us /= o->steps;
	/* measured on the device: selection, attention, migration in turn */
	r->step_us = dev ? r->select_us + r->attn_us + r->mig_us : r->model_us;
	r->hit = wsum > 0 ? whit / wsum : 1;
	if (dev)
		r->check_err = bp_dev_check_err(dev);
	{
		struct kva_stats st;

		kva_pool_stats(pool, &st);
		r->hbm_pages = st.used_mem[KVA_MEM_HBM] +
			       st.free_mem[KVA_MEM_HBM];
	}
	ret = kva_check(pool, NULL, 0);
out_fini:
	if (dev)
		bp_dev_end(dev);
	kva_migrate_fini(&mc);
out_pl:
	kva_place_fini(&pl);
out:
	if (ret && dev)
		fprintf(stderr, "kvmm bench place: cuda replay at HBM %.2f "
			"failed (%s)%s%s\n", frac, strerror(-ret),
			*kvrt_ctx_last_error(ctx) ? ": " : "",
			kvrt_ctx_last_error(ctx));
	free(pro);
	free(dem);
	free(npb);
	kva_pool_destroy(pool);
	if (!dev)
		kvrt_ctx_destroy(ctx);
	return ret;
}

static int parse_list_u32(const char *s, uint32_t *v, uint32_t max,
			  uint32_t *n)
{
	char *end;

	*n = 0;
	while (*s && *n < max) {
		unsigned long x = strtoul(s, &end, 10);

		if (end == s || !x || x > (1U << 20))
			return -EINVAL;
		v[(*n)++] = (uint32_t)x;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -EINVAL;
	}
	return *n && !*s ? 0 : -EINVAL;
}

static int parse_list_frac(const char *s, double *v, uint32_t max,
			   uint32_t *n)
{
	char *end;

	*n = 0;
	while (*s && *n < max) {
		double x = strtod(s, &end);

		if (end == s || !(x > 0) || x > 1)
			return -EINVAL;
		v[(*n)++] = x;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -EINVAL;
	}
	return *n && !*s ? 0 : -EINVAL;
}

/* @arg is @w0 (*@out 0) or @w1 (1); else says so: -EINVAL */
static int parse_word(const char *opt, const char *arg, const char *w0,
		      const char *w1, int *out)
{
	if (strcmp(arg, w0) && strcmp(arg, w1)) {
		fprintf(stderr, "kvmm bench place: %s wants %s or %s, not "
			"'%s'\n", opt, w0, w1, arg);
		return -EINVAL;
	}
	*out = !strcmp(arg, w1);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvmm bench place [--backend host|cuda] [--batch B] "
		"[--ctx N,N..] [--hbm F,F..]\n"
		"         [--topk K] [--steps S] [--warm W] [--budget-mib M] "
		"[--plan-at select|end] [--host-copy on|off] "
		"[--hbm-gbs X]\n"
		"         [--host-gbs X] [--pcie-gbs X] [--seed N] "
		"[--threads T] [--check] [--json]\n"
		"  Llama-3-8B attention (8 kv-heads, GQA 4, head_dim 128, "
		"fp16), one layer;\n"
		"  defaults: batch 2, ctx 8192,16384,32768, hbm 1,0.5,0.25, "
		"topk ctx/16 tokens,\n"
		"  16 steps after 8 warm-up steps, 3000/51/47 GB/s,\n"
		"  the plan between the step's selection and its reads "
		"(--plan-at select;\n"
		"  end: after the reads, for the next step),\n"
		"  a clean host copy of every full HBM page, so that a "
		"demotion copies nothing\n"
		"  (--host-copy on; off: every demotion copies),\n"
		"  a migration budget of 128 KiB per list a step (1 MiB per "
		"sequence; --budget-mib\n"
		"  sets the step's total, 0 for no limit)\n"
		"  --threads: phase one's CPU kernels on T threads (the same "
		"trace)\n"
		"  --backend cuda: phase two on the GPU (a CUDA space with an "
		"HBM cap and a\n"
		"  host-NUMA tier, the attention kernel, the copies on a side "
		"stream), measured\n"
		"  beside the model; --check there also compares the GPU "
		"output with the CPU's\n");
}

static void cuda_header(const struct bp_opts *o, const struct bp_rates *rt)
{
	printf("kvmm bench place (cuda backend: HBM and host-NUMA granules of "
	       "one CUDA space): batch %u, 8 kv-heads x GQA 4, head_dim 128, "
	       "fp16 pages and queries, one layer\n"
	       "measured in this run: HBM read %.0f GB/s, host-tier read over "
	       "PCIe %.1f GB/s (a kernel through the space's VA); page copy "
	       "host->HBM %.1f, HBM->host %.1f GB/s\n"
	       "model: HBM %.0f GB/s, host %.0f GB/s, migration %.0f GB/s; "
	       "%g MiB migration budget per step, the plan at %s, host "
	       "copies %s; %u steps after %u\n"
	       "step_us = sel_us (summaries + page selection) + attn_us "
	       "(attention over the step's pages) + mig_us (the migration's "
	       "copies), CUDA events, in sequence (no overlap); model_us: the "
	       "model for the same bytes; meas_mod: the model with the rates "
	       "measured\n\n%6s %5s %-10s %7s %9s %9s %9s %9s %8s %9s %9s %9s "
	       "%9s %8s %9s %9s\n",
	       o->batch, rt->hbm_read, rt->host_read, rt->promote, rt->demote,
	       o->hbm_gbs, o->host_gbs, o->pcie_gbs, o->budget_mib,
	       o->plan_select ? "the selection" : "the step's end",
	       o->host_copy ? "on" : "off", o->steps, o->warm, "ctx", "hbm",
	       "policy", "hit", "hbm_MB", "host_MB", "mig_MB", "step_us", "sel_us", "attn_us", "mig_us", "model_us",
	       "meas_mod", "vs_dense", "vs_oracle", "err");
}

/* one line of the CUDA path: text or JSON */
static void cuda_line(const struct bp_opts *o, const struct bp_trace *tr,
		      const char *policy, double frac,
		      const struct bp_result *x, double dense, double oracle,
		      double err)
{
	if (o->json) {
		printf("{\"bench\":\"place\",\"backend\":\"cuda\","
		       "\"policy\":\"%s\",\"ctx\":%u,\"batch\":%u,"
		       "\"hbm_fraction\":%.3f,\"hit_ratio\":%.4f,"
		       "\"step_us\":%.2f,\"step_us_model\":%.2f,"
		       "\"step_us_model_meas\":%.2f,\"select_us\":%.2f,"
		       "\"attn_us\":%.2f,"
		       "\"mig_us\":%.2f,\"upload_us\":%.2f,\"plan_us\":%.0f,"
		       "\"hbm_bytes\":%.0f,\"host_bytes\":%.0f,"
		       "\"mig_bytes\":%.0f,\"init_mig_bytes\":%.0f,"
		       "\"no_room\":%u,\"budget_bytes\":%.0f,"
		       "\"plan_at\":\"%s\",\"host_copy\":%s,"
		       "\"hbm_pages\":%llu,\"vs_dense\":%.3f,",
		       policy, tr->ctx, o->batch, frac, x->hit, x->step_us,
		       x->model_us, x->model_meas_us, x->select_us, x->attn_us,
		       x->mig_us, x->up_us, x->plan_us, x->hbm_bytes,
		       x->host_bytes, x->mig_bytes, x->init_mig_bytes,
		       x->no_room, o->budget_mib * SZ_1M,
		       o->plan_select ? "select" : "end",
		       o->host_copy ? "true" : "false",
		       (unsigned long long)x->hbm_pages,
		       x->step_us / dense);
		if (oracle > 0)
			printf("\"vs_oracle\":%.3f,", x->step_us / oracle);
		if (o->check)
			printf("\"check_err\":%.6f,", x->check_err);
		printf("\"err\":%.5f}\n", err);
		return;
	}
	printf("%6u %5.2f %-10s %7.4f %9.2f %9.2f %9.3f %9.2f %8.2f %9.2f "
	       "%9.2f %9.2f %9.2f %8.2f ",
	       tr->ctx, frac, policy, x->hit, x->hbm_bytes / 1e6,
	       x->host_bytes / 1e6, x->mig_bytes / 1e6, x->step_us,
	       x->select_us, x->attn_us, x->mig_us, x->model_us,
	       x->model_meas_us, x->step_us / dense);
	if (oracle > 0)
		printf("%9.2f ", x->step_us / oracle);
	else
		printf("%9s ", "");
	printf("%9.5f", err);
	if (o->check)
		printf("  (gpu vs cpu: %.2e)", x->check_err);
	printf("\n");
}

/* --backend cuda: dense all-HBM, then every capacity and policy */
static int place_cuda(const struct bp_opts *o, struct bp_dev *dev,
		      const struct bp_rates *rt, const struct bp_trace *tr,
		      const enum kva_place_policy *pols, size_t npol)
{
	struct bp_result dres, res[KVA_PLACE_NR];
	double err = tr->err_n ? tr->err_sum / tr->err_n : 0;
	int ret;

	ret = bp_dev_trace(dev, tr);
	if (ret)
		return ret;
	ret = replay(o, tr, 1, KVA_PLACE_STATIC, dev, 1, rt, &dres);
	if (ret)
		goto out;
	cuda_line(o, tr, "dense", 1, &dres, dres.step_us, 0, 0);
	if (!o->json)
		printf("%6s (cpu phase one: dense %.0f us, select+sparse %.0f "
		       "us per step; selection keeps %.1f%% of the mass)\n", "",
		       tr->dense_us / o->steps, tr->sparse_us / o->steps,
		       100 * tr->mass_kept);
	for (uint32_t f = 0; f < o->nr_frac; f++) {
		for (size_t p = 0; p < npol; p++) {
			ret = replay(o, tr, o->frac[f], pols[p], dev, 0, rt,
				     &res[p]);
			if (ret)
				goto out;
		}
		for (size_t p = 0; p < npol; p++)
			cuda_line(o, tr, kva_place_name(pols[p]), o->frac[f],
				  &res[p], dres.step_us,
				  res[npol - 1].step_us, err);
		fflush(stdout);
	}
out:
	bp_dev_trace(dev, NULL);
	return ret;
}

static int place_run(const struct bp_opts *o)
{
	static const enum kva_place_policy pols[] = {
		KVA_PLACE_STATIC, KVA_PLACE_TIER, KVA_PLACE_IMPORTANCE,
		KVA_PLACE_ORACLE,
	};
	struct kvrt_ctx_opts co = { .backend = KVRT_BACKEND_HOST,
				    .host_mem_bytes = 1ULL << 40 };
	struct bp_rates rt = { 0 };
	struct bp_dev *dev = NULL;
	struct kvrt_ctx *ctx;
	int ret;

	if (o->cuda) {
		ret = bp_dev_open(&dev, &rt);
		if (ret)
			return ret;
	}
	ret = kvrt_ctx_create(&co, &ctx);
	if (ret) {
		bp_dev_close(dev);
		return ret;
	}
	if (o->cuda && o->json)
		printf("{\"bench\":\"place\",\"backend\":\"cuda\","
		       "\"rates\":{\"hbm_read_gbs\":%.1f,"
		       "\"host_read_gbs\":%.2f,"
		       "\"promote_gbs\":%.2f,\"demote_gbs\":%.2f},"
		       "\"model\":{\"hbm_gbs\":%.0f,\"host_gbs\":%.0f,"
		       "\"pcie_gbs\":%.0f},\"batch\":%u,\"steps\":%u,"
		       "\"budget_mib\":%g}\n",
		       rt.hbm_read, rt.host_read, rt.promote, rt.demote,
		       o->hbm_gbs, o->host_gbs, o->pcie_gbs, o->batch,
		       o->steps, o->budget_mib);
	else if (o->cuda)
		cuda_header(o, &rt);
	else if (!o->json)
		printf("kvmm bench place (host backend, emulated tiers): "
		       "batch %u, 8 kv-heads x GQA 4, head_dim 128, fp16, one "
		       "layer\nmodel: HBM %.0f GB/s, host %.0f GB/s, migration "
		       "%.0f GB/s; %g MiB migration budget per step, the plan "
		       "at %s, host copies %s; %u steps after %u\n\n%6s %5s "
		       "%-10s %7s %9s %9s %9s %9s %8s %9s %9s\n",
		       o->batch, o->hbm_gbs, o->host_gbs, o->pcie_gbs,
		       o->budget_mib, o->plan_select ? "the selection" :
		       "the step's end", o->host_copy ? "on" : "off",
		       o->steps, o->warm, "ctx", "hbm",
		       "policy", "hit", "hbm_MB", "host_MB", "mig_MB",
		       "step_us", "vs_dense", "vs_oracle", "err");
	for (uint32_t c = 0; c < o->nr_ctx; c++) {
		struct bp_trace tr;
		double dense_us, err;

		ret = make_trace(o, ctx, o->ctx[c], &tr);
		if (ret) {
			fprintf(stderr, "kvmm bench place: trace of %u tokens "
				"failed (%s)\n", o->ctx[c], strerror(-ret));
			break;
		}
		if (o->cuda) {
			ret = place_cuda(o, dev, &rt, &tr, pols,
					 ARRAY_SIZE(pols));
			goto out_trace;
		}
		dense_us = model_us(o, (double)tr.all_pages * tr.page_size, 0,
				    0);
		err = tr.err_n ? tr.err_sum / tr.err_n : 0;
		if (o->json)
			printf("{\"bench\":\"place\",\"policy\":\"dense\","
			       "\"ctx\":%u,\"batch\":%u,\"hbm_fraction\":1,"
			       "\"hit_ratio\":1,\"step_us\":%.2f,"
			       "\"hbm_bytes\":%.0f,\"host_bytes\":0,"
			       "\"mig_bytes\":0,\"err\":0,\"cpu_dense_us\":%.0f,"
			       "\"cpu_sparse_us\":%.0f,\"mass_kept\":%.4f}\n",
			       tr.ctx, o->batch, dense_us,
			       (double)tr.all_pages * tr.page_size,
			       tr.dense_us / o->steps, tr.sparse_us / o->steps,
			       tr.mass_kept);
		else
			printf("%6u %5s %-10s %7s %9.2f %9s %9s %9.2f %8s %9s "
			       "%9s  (cpu: dense %.0f us, select+sparse %.0f "
			       "us; selection keeps %.1f%% of the mass)\n",
			       tr.ctx, "1.00", "dense", "1", (double)tr.all_pages *
			       tr.page_size / 1e6, "0", "0", dense_us, "1.00",
			       "", "0", tr.dense_us / o->steps,
			       tr.sparse_us / o->steps, 100 * tr.mass_kept);
		for (uint32_t f = 0; f < o->nr_frac; f++) {
			struct bp_result res[ARRAY_SIZE(pols)];

			for (size_t p = 0; p < ARRAY_SIZE(pols); p++) {
				ret = replay(o, &tr, o->frac[f], pols[p],
					     NULL, 0, NULL, &res[p]);
				if (ret) {
					fprintf(stderr, "kvmm bench place: "
						"replay failed (%s)\n",
						strerror(-ret));
					goto out_trace;
				}
			}
			for (size_t p = 0; p < ARRAY_SIZE(pols); p++) {
				const struct bp_result *x = &res[p];
				double oracle = res[ARRAY_SIZE(pols) - 1].step_us;

				if (o->json)
					printf("{\"bench\":\"place\","
					       "\"policy\":\"%s\",\"ctx\":%u,"
					       "\"batch\":%u,"
					       "\"hbm_fraction\":%.3f,"
					       "\"hit_ratio\":%.4f,"
					       "\"step_us\":%.2f,"
					       "\"hbm_bytes\":%.0f,"
					       "\"host_bytes\":%.0f,"
					       "\"mig_bytes\":%.0f,"
					       "\"init_mig_bytes\":%.0f,"
					       "\"no_room\":%u,"
					       "\"budget_bytes\":%.0f,"
					       "\"plan_at\":\"%s\","
					       "\"host_copy\":%s,"
					       "\"plan_us\":%.0f,"
					       "\"hbm_pages\":%llu,"
					       "\"vs_dense\":%.3f,"
					       "\"vs_oracle\":%.3f,"
					       "\"err\":%.5f}\n",
					       kva_place_name(pols[p]), tr.ctx,
					       o->batch, o->frac[f], x->hit,
					       x->step_us, x->hbm_bytes,
					       x->host_bytes, x->mig_bytes,
					       x->init_mig_bytes, x->no_room,
					       o->budget_mib * SZ_1M,
					       o->plan_select ? "select"
							      : "end",
					       o->host_copy ? "true"
							    : "false",
					       x->plan_us,
					       (unsigned long long)x->hbm_pages,
					       x->step_us / dense_us,
					       x->step_us / oracle, err);
				else
					printf("%6u %5.2f %-10s %7.4f %9.2f "
					       "%9.2f %9.3f %9.2f %8.2f %9.2f "
					       "%9.5f\n",
					       tr.ctx, o->frac[f],
					       kva_place_name(pols[p]), x->hit,
					       x->hbm_bytes / 1e6,
					       x->host_bytes / 1e6,
					       x->mig_bytes / 1e6, x->step_us,
					       x->step_us / dense_us,
					       x->step_us / oracle, err);
			}
		}
out_trace:
		free(tr.mass);
		free(tr.q);
		free(tr.stage);
		if (ret)
			break;
	}
	kvrt_ctx_destroy(ctx);
	bp_dev_close(dev);
	return ret;
}

/**
 * cmd_bench_place() - `kvmm bench place`
 * @argc: argument count
 * @argv: arguments, argv[0] = "place"
 *
 * Return: exit status (0, 1 on failure, 2 on bad usage).
 */
int cmd_bench_place(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "batch", required_argument, NULL, 'B' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "hbm", required_argument, NULL, 'f' },
		{ "topk", required_argument, NULL, 'k' },
		{ "steps", required_argument, NULL, 's' },
		{ "warm", required_argument, NULL, 'w' },
		{ "budget-mib", required_argument, NULL, 'm' },
		{ "plan-at", required_argument, NULL, 'A' },
		{ "host-copy", required_argument, NULL, 'Y' },
		{ "hbm-gbs", required_argument, NULL, 'H' },
		{ "host-gbs", required_argument, NULL, 'O' },
		{ "pcie-gbs", required_argument, NULL, 'P' },
		{ "seed", required_argument, NULL, 'S' },
		{ "threads", required_argument, NULL, 'T' },
		{ "check", no_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bp_opts o = {
		.batch = 2,
		.ctx = { 8192, 16384, 32768 },
		.nr_ctx = 3,
		.frac = { 1, 0.5, 0.25 },
		.nr_frac = 3,
		.steps = 16,
		.warm = 8,
		.budget_mib = -1,	/* 128 KiB per list, below */
		.plan_select = 1,
		.host_copy = 1,
		.hbm_gbs = 3000,
		.host_gbs = 51,
		/* page copies: the H100's 46.0 / 48.4 GB/s (2026-12-08) */
		.pcie_gbs = 47,
		.seed = 0x91ace,
		.threads = 1,
	};
	uint64_t v;
	int c, ret, w = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		ret = 0;
		switch (c) {
		case 'b':
			ret = parse_word("--backend", optarg, "host", "cuda",
					 &w);
			o.cuda = w;
			break;
		case 'B':
			ret = kvmm_parse_u64("--batch", optarg, 1, 64, &v);
			o.batch = (uint32_t)v;
			break;
		case 'c':
			ret = parse_list_u32(optarg, o.ctx, BP_MAX_CTX,
					     &o.nr_ctx);
			if (ret)
				fprintf(stderr, "kvmm bench place: --ctx "
					"wants lengths 1..2^20, comma "
					"separated\n");
			break;
		case 'f':
			ret = parse_list_frac(optarg, o.frac, BP_MAX_FRAC,
					      &o.nr_frac);
			if (ret)
				fprintf(stderr, "kvmm bench place: --hbm "
					"wants fractions in (0, 1], comma "
					"separated\n");
			break;
		case 'k':
			ret = kvmm_parse_u64("--topk", optarg, 1, 1 << 16, &v);
			o.topk = (uint32_t)v;
			break;
		case 's':
			ret = kvmm_parse_u64("--steps", optarg, 1, 4096, &v);
			o.steps = (uint32_t)v;
			break;
		case 'w':
			ret = kvmm_parse_u64("--warm", optarg, 0, 4096, &v);
			o.warm = (uint32_t)v;
			break;
		case 'Y':
			ret = parse_word("--host-copy", optarg, "on", "off",
					 &w);
			o.host_copy = !w;
			break;
		case 'A':
			ret = parse_word("--plan-at", optarg, "select", "end",
					 &w);
			o.plan_select = !w;
			break;
		case 'm':
			ret = kvmm_parse_u64("--budget-mib", optarg, 0,
					     1 << 20, &v);
			o.budget_mib = (double)v;
			break;
		case 'H':
		case 'O':
		case 'P':
			ret = kvmm_parse_u64("bandwidth", optarg, 1, 100000,
					     &v);
			*(c == 'H' ? &o.hbm_gbs : c == 'O' ? &o.host_gbs :
				     &o.pcie_gbs) = (double)v;
			break;
		case 'S':
			ret = kvmm_parse_u64("--seed", optarg, 0, UINT64_MAX,
					     &o.seed);
			break;
		case 'T':
			ret = kvmm_parse_u64("--threads", optarg, 1,
					     BP_MAX_THREADS, &v);
			o.threads = (uint32_t)v;
			break;
		case 'C':
			o.check = 1;
			break;
		case 'j':
			o.json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (ret)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench place: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	/*
	 * The migration budget grows with the lists it serves: 4 MiB a step
	 * for every batch starved batch 16 (four page moves a list a step,
	 * fewer than the pages a list's hot set gains), where 128 KiB a
	 * list tracks it (Documentation/placement/index.rst).
	 */
	if (o.budget_mib < 0)
		o.budget_mib = o.batch * BP_KVH * 0.125;
	ret = place_run(&o);
	return ret ? 1 : 0;
}
