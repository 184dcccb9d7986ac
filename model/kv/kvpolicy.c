// SPDX-License-Identifier: MIT
/*
 * kvpolicy.c - the policy KV cache: DiffKV tiers, KV-Compress eviction,
 * uniform quantization or plain fp16, in the allocator's pages, on the CPU
 * (the CPU references of the kernels the CUDA executor runs).
 *
 * DOC: policy cache
 *
 * One allocator pool per cache, with the policy's tiers, one slot per
 * sequence; its pages on the host, or on a CUDA device for
 * llm_kv_policy_create_cuda(), whose kernels kvpolicy_cuda.c runs with the
 * same arguments (kvp_*_args()) on device mirrors of the pool's arrays. The cache owns the attention of its sequences: the
 * forward pass hands it each layer's queries and new keys and values
 * (llm_kv_policy_step()), and the cache stores, scores, compresses and
 * attends in the order of DiffKV's engine:
 *
 * Prefill (the whole prompt at once): causal attention in fp32 over the
 * prompt's own keys and values, with each token's score from the last
 * @score_window queries (diffkv: the probability summed over those queries,
 * max over the query heads of its kv-head; kvcompress: the squared
 * probability summed over the queries and the group's heads). Then
 * kvk_compress_prompt_cpu() classifies (diffkv's alphas; zero alphas keep
 * every token high for the other policies), quantizes and writes the
 * tokens; after the last layer kva_trim() gives the surplus of the
 * admission back, and kvcompress evicts down to its target rate.
 *
 * Decode (one token): before layer 0, kva_append() adds a page to every
 * tier whose last page is full; kvk_compress_decode_cpu() appends the new
 * token (demoting or pruning at most one old token per head under diffkv);
 * kvk_attn_decode_cpu() attends over both tiers and adds to each token's
 * score its largest probability over the group (diffkv) or the sum over
 * the group of its squared probabilities (kvcompress). Under kvcompress, every
 * @interval steps after the last layer, kvk_evict_cpu() frees whole pages
 * down to 1 / @rate of what the full policy would hold and kva_shrink()
 * gives them back.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "kva.h"
#include "kvattn.h"
#include "kvevict.h"
#include "kvpolicy.h"
#include "kvpolicy_int.h"
#include "kvq.h"
#include "pool.h"

static const struct llm_kv_ops kvp_ops, kvp_dev_ops;

/* whether @kv is a policy cache */
static bool is_kvp(const struct llm_kv *kv)
{
	return kv && (kv->ops == &kvp_ops || kv->ops == &kvp_dev_ops);
}

static inline struct kvp *to_kvp(struct llm_kv *kv)
{
	return (struct kvp *)kv;
}

struct kvp_mem kvp_host_mem(const struct kvp *c)
{
	struct kvp_mem m = { c->pool->table, c->pool->npages,
			     c->pool->ntokens };

	return m;
}

/* the pages as the compress kernels see them */
static struct kvk_compress_pages pages_of(const struct kvp *c,
					  const struct kvp_mem *m,
					  const uint32_t *lb)
{
	struct kvk_compress_pages pg = {
		.pool = c->pool->base,
		.page_size = c->pool->page_size,
		.pages_per_granule = c->pool->pages_per_granule,
		.tables = m->tables,
		.width = c->pool->width,
		.list_base = lb,
		.tier = { c->at[0], c->at[1] },
	};

	return pg;
}

struct kvk_compress_prompt kvp_prompt_args(const struct kvp *c, uint32_t s,
					   const struct kvp_mem *m,
					   const uint32_t *lb)
{
	struct kvk_compress_prompt a = {
		.nr_seqs = 1, .nr_kv_heads = c->nkv, .head_dim = c->hd,
		.score_window = c->pol.score_window, .window = c->pol.window,
		.alpha_prune = kvp_alpha(c, s, 0),
		.alpha_quant = kvp_alpha(c, s, 1),
		.pg = pages_of(c, m, lb), .npages = m->npages,
		.ntokens = m->ntokens,
	};

	return a;
}

struct kvk_compress_decode kvp_decode_args(const struct kvp *c, uint32_t s,
					   const struct kvp_mem *m,
					   const uint32_t *lb)
{
	struct kvk_compress_decode a = {
		.nr_seqs = 1, .nr_kv_heads = c->nkv, .head_dim = c->hd,
		.window = c->pol.window, .alpha_prune = kvp_alpha(c, s, 0),
		.alpha_quant = kvp_alpha(c, s, 1), .pg = pages_of(c, m, lb),
		.npages = m->npages, .ntokens = m->ntokens,
	};

	return a;
}

struct kvk_attn_args kvp_attn_args(const struct kvp *c,
				   const struct kvp_mem *m,
				   const uint32_t *lb)
{
	struct kvk_attn_args a = {
		.nr_seqs = 1, .nr_kv_heads = c->nkv, .group = c->group,
		.head_dim = c->hd, .scale = c->scale, .pool = c->pool->base,
		.page_size = c->pool->page_size,
		.pages_per_granule = c->pool->pages_per_granule,
		.tables = m->tables, .width = c->pool->width,
		.ntokens = m->ntokens, .list_base = lb,
		.tier = { c->at[0], c->at[1] },
		.update_scores = kvp_score_mode(c),
	};

	return a;
}

/*
 * every list of a slot, from the list of its layer 0 at @lb; the callers add
 * quota, protect_from, evicted and, on the device, the scratch (the CPU
 * reference needs none)
 */
struct kvk_evict_args kvp_evict_args(const struct kvp *c,
				     const struct kvp_mem *m,
				     const uint32_t *lb)
{
	const struct kva_pool *pl = c->pool;
	struct kvk_evict_args a = {
		.nr_seqs = 1, .lists = pl->lists_per_slot, .head_dim = c->hd,
		.tier = c->at[0], .pool = pl->base,
		.page_size = pl->page_size,
		.pages_per_granule = pl->pages_per_granule,
		.tables = m->tables, .width = pl->width, .ntokens = m->ntokens,
		.list_base = lb, .sinks = c->pol.sinks, .scratch = NULL,
	};

	return a;
}

static uint32_t list_of(const struct kvp *c, uint32_t s, uint32_t layer)
{
	return kva_list(c->pool, s, layer, 0);
}

/* eight floats; GCC lowers it to whatever vector unit the target has */
typedef float kvp_v8 __attribute__((vector_size(32)));

/* a . b over @n floats, @n % 8 == 0 */
static float dot8(const float *a, const float *b, uint32_t n)
{
	kvp_v8 s = { 0 }, x, y;

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
	kvp_v8 u, v;

	for (uint32_t e = 0; e < n; e += 8) {
		memcpy(&u, y + e, sizeof(u));
		memcpy(&v, x + e, sizeof(v));
		u += a * v;
		memcpy(y + e, &u, sizeof(u));
	}
}

/* struct prefill_job - one layer's prompt attention, split by query head */
struct prefill_job {
	struct kvp *c;
	int ntok;
	const float *q;
	long ldq;
	float *out;
	long ldo;
};

/* query heads [lo, hi) of the job; per-thread probabilities in c->p */
static void prefill_heads(void *arg, int tid, int nth)
{
	const struct prefill_job *j = arg;
	struct kvp *c = j->c;
	uint32_t hd = c->hd, nkv = c->nkv, W = c->pol.score_window;
	uint32_t first = (uint32_t)j->ntok > W ? (uint32_t)j->ntok - W : 0;
	bool sq = kvp_score_mode(c) == KVK_ATTN_SCORE_SUMSQ;
	float *p = c->p + (size_t)tid * c->kv.max_tok;
	long lo, hi;

	llm_pool_range(c->nh, tid, nth, 1, &lo, &hi);
	for (long h = lo; h < hi; h++) {
		uint32_t g = (uint32_t)h / c->group;
		float *acc = c->acc + (size_t)h * j->ntok;

		memset(acc, 0, (size_t)j->ntok * sizeof(float));
		for (int i = 0; i < j->ntok; i++) {
			const float *qi = j->q + i * j->ldq + h * hd;
			float *o = j->out + i * j->ldo + h * hd, m = -INFINITY;
			float sum = 0, inv;

			for (int t = 0; t <= i; t++) {
				p[t] = dot8(qi, c->k + ((size_t)t * nkv + g) * hd,
					    hd) * c->scale;
				m = p[t] > m ? p[t] : m;
			}
			for (int t = 0; t <= i; t++) {
				p[t] = expf(p[t] - m);
				sum += p[t];
			}
			inv = 1.0f / sum;
			memset(o, 0, hd * sizeof(float));
			for (int t = 0; t <= i; t++) {
				const float *vt = c->v + ((size_t)t * nkv + g) * hd;
				float pt = p[t] * inv;

				axpy8(o, pt, vt, hd);
				if ((uint32_t)i >= first)
					acc[t] += sq ? pt * pt : pt;
			}
		}
	}
}

/*
 * fp32 causal attention of the prompt, with the policy's token scores:
 * diffkv takes the max over the group of each head's sum, kvcompress the
 * sum of squares over the group.
 */
static void prefill_attend(struct kvp *c, int ntok, const float *q, long ldq,
			   float *out, long ldo)
{
	struct prefill_job j = { c, ntok, q, ldq, out, ldo };
	bool sq = kvp_score_mode(c) == KVK_ATTN_SCORE_SUMSQ;

	llm_pool_run(c->threads, prefill_heads, &j);
	for (uint32_t g = 0; g < c->nkv; g++)
		for (int t = 0; t < ntok; t++) {
			float s = 0;

			for (uint32_t h = g * c->group; h < (g + 1) * c->group;
			     h++) {
				float a = c->acc[(size_t)h * ntok + t];

				s = sq ? s + a : (a > s ? a : s);
			}
			c->scores[(size_t)t * c->nkv + g] = s;
		}
}

/* pages a (layer, kv-head) list of @len positions takes under full */
static uint64_t full_pages(const struct kvp *c, uint32_t len)
{
	return (len + c->full_tpp - 1) / c->full_tpp;
}

/* kvk_evict_cpu() over the lists of @s, @quota pages */
static int evict_cpu(struct kvp *c, uint32_t s, uint32_t quota)
{
	struct kvp_mem m = kvp_host_mem(c);
	uint32_t base = s * c->pool->lists_per_slot, *ev;
	int32_t from = (int32_t)c->seq[s].len - (int32_t)c->pol.window;
	struct kvk_evict_args a = kvp_evict_args(c, &m, &base);
	int ret;

	ev = malloc(c->pool->lists_per_slot * sizeof(*ev));
	if (!ev)
		return -ENOMEM;
	a.quota = &quota;
	a.protect_from = &from;
	a.evicted = ev;
	ret = kvk_evict_cpu(&a, NULL);
	free(ev);
	return ret;
}

/*
 * kvcompress: free whole pages of @s down to 1 / rate of full's (the kernel
 * on the cache's side, then kva_shrink() on the host's arrays)
 */
static int evict(struct kvp *c, uint32_t s)
{
	struct kva_pool *pl = c->pool;
	uint32_t lps = pl->lists_per_slot, base = s * lps;
	uint64_t have = 0, target;
	int ret;

	for (uint32_t l = 0; l < lps; l++)
		have += (pl->ntokens[2 * (base + l)] + c->at[0].tokens - 1) /
			c->at[0].tokens;
	target = (uint64_t)ceil((double)(full_pages(c, c->seq[s].len) * lps) /
				c->pol.rate);
	if (have <= target)
		return 0;
	if (c->dev)
		ret = kvp_dev_evict(c, s, (uint32_t)(have - target));
	else
		ret = evict_cpu(c, s, (uint32_t)(have - target));
	if (!ret) {
		ret = kva_shrink(pl, &s, 1);
		ret = ret < 0 ? ret : 0;
	}
	if (!ret && c->dev)
		ret = kvp_dev_upload(c, s);
	return ret;
}

/* admit @s for a prompt of @n tokens, growing the pool when it must */
static int admit(struct kvp *c, uint32_t s, uint32_t n)
{
	int ret = kva_admit(c->pool, &s, &n, 1);

	while (ret == -ENOSPC && !kva_pool_grow(c->pool, 1))
		ret = kva_admit(c->pool, &s, &n, 1);
	return ret;
}

/* a page for every tier of @s whose last page is full, before a decode */
int kvp_append(struct kvp *c, uint32_t s)
{
	int ret = kva_append(c->pool, &s, 1);

	while (ret == -ENOSPC && !kva_pool_grow(c->pool, 1))
		ret = kva_append(c->pool, &s, 1);
	return ret;
}

/* slot @s's threshold: diffkv's alpha_prune (@quant 0) or alpha_quant */
float kvp_alpha(const struct kvp *c, uint32_t s, int quant)
{
	if (c->pol.kind != LLM_POLICY_DIFFKV)
		return 0.0f;
	return c->alpha[s][quant ? 1 : 0];
}

/**
 * llm_kv_policy_seq_alpha() - diffkv thresholds of one sequence slot
 * @kv: a cache of llm_kv_policy_create() or _create_cuda() for diffkv
 * @seq: sequence slot
 * @prune: alpha_prune of the slot, 0 .. 1
 * @quant: alpha_quant of the slot, at least @prune
 *
 * The slot's next prompt and decode steps classify with these instead of
 * the policy's (the per-sequence thresholds the compress kernels take);
 * tiers, window and score window stay the cache's. Kept across the slot's
 * reuse until set again.
 *
 * Return: 0, or -EINVAL (another policy, a slot or threshold out of range;
 * nothing changed).
 */
int llm_kv_policy_seq_alpha(struct llm_kv *kv, int seq, float prune,
			    float quant)
{
	struct kvp *c = to_kvp(kv);

	if (!is_kvp(kv) || c->pol.kind != LLM_POLICY_DIFFKV || seq < 0 ||
	    seq >= kv->n_seq || !(prune >= 0.0f && prune <= 1.0f) ||
	    !(quant >= prune) || !isfinite(quant))
		return -EINVAL;
	c->alpha[seq][0] = prune;
	c->alpha[seq][1] = quant;
	return 0;
}

int kvp_score_mode(const struct kvp *c)
{
	if (c->pol.kind == LLM_POLICY_DIFFKV)
		return KVK_ATTN_SCORE_MAX;
	return c->pol.kind == LLM_POLICY_KVCOMPRESS ? KVK_ATTN_SCORE_SUMSQ : 0;
}

/*
 * kvp_prompt_done() - after the prompt's last layer: the surplus of the
 * admission goes back (kva_trim() from the tokens each list stored), and
 * kvcompress evicts down to its rate
 */
int kvp_prompt_done(struct kvp *c, uint32_t s, uint32_t ntok)
{
	int ret;

	for (uint32_t l = 0; l < c->pool->lists_per_slot; l++) {
		uint32_t list = s * c->pool->lists_per_slot + l;

		c->hi[l] = c->pool->ntokens[2 * list + KVA_HI];
		c->lo[l] = c->pool->ntokens[2 * list + KVA_LO];
	}
	ret = kva_trim(c->pool, &s, 1, c->hi, c->lo);
	if (!ret && c->dev)
		ret = kvp_dev_upload(c, s);
	if (ret)
		return ret;
	c->seq[s].decoding = 1;
	c->seq[s].len = ntok;
	if (c->pol.kind == LLM_POLICY_KVCOMPRESS)
		ret = evict(c, s);
	return ret;
}

/* kvp_decode_done() - after a decode step's last layer */
int kvp_decode_done(struct kvp *c, uint32_t s)
{
	c->seq[s].len++;
	if (c->pol.kind != LLM_POLICY_KVCOMPRESS ||
	    ++c->seq[s].steps < c->pol.interval)
		return 0;
	c->seq[s].steps = 0;
	return evict(c, s);
}

static int step_prefill(struct kvp *c, uint32_t s, uint32_t layer, int ntok,
			const float *q, long ldq, float *out, long ldo)
{
	uint32_t start[2] = { 0, (uint32_t)ntok }, base = list_of(c, s, layer);
	struct kvp_mem m = kvp_host_mem(c);
	struct kvk_compress_prompt a = kvp_prompt_args(c, s, &m, &base);
	int32_t err = 0;
	int ret;

	prefill_attend(c, ntok, q, ldq, out, ldo);
	a.dtype = KVK_F32;
	a.k = c->k;
	a.v = c->v;
	a.seq_start = start;
	a.max_len = (uint32_t)ntok;
	a.scores = c->scores;
	a.counts = c->counts;
	a.err = &err;
	ret = kvk_compress_prompt_cpu(&a, NULL);
	if (!ret)
		ret = err;
	if (ret || layer + 1 < (uint32_t)c->kv.n_layers)
		return ret;
	return kvp_prompt_done(c, s, (uint32_t)ntok);
}

/* struct attn_job - one decode token's attention, split by kv-head */
struct attn_job {
	const struct kvk_attn_args *a;
	uint32_t base;		/* the sequence's list of kv-head 0 */
	int ret;		/* an error of any worker */
};

/* kv-heads [lo, hi) of the job: their lists, queries and outputs */
static void attn_heads(void *arg, int tid, int nth)
{
	struct attn_job *j = arg;
	struct kvk_attn_args a = *j->a;
	size_t row = (size_t)a.group * a.head_dim * kvk_dtype_size(a.dtype);
	uint32_t lb;
	long lo, hi;
	int ret;

	llm_pool_range(a.nr_kv_heads, tid, nth, 1, &lo, &hi);
	if (lo >= hi)
		return;
	lb = j->base + (uint32_t)lo;
	a.nr_kv_heads = (uint32_t)(hi - lo);
	a.list_base = &lb;
	a.q = (const uint8_t *)a.q + lo * row;
	a.out = (uint8_t *)a.out + lo * row;
	ret = kvk_attn_decode_cpu(&a, NULL);
	if (ret)
		__atomic_store_n(&j->ret, ret, __ATOMIC_RELAXED);
}

/*
 * kvk_attn_decode_cpu() over one sequence's kv-heads, split across the
 * cache's workers (heads touch disjoint lists, pages and outputs, so the
 * result is the single call's, bit for bit)
 */
static int attend(struct kvp *c, const struct kvk_attn_args *a, uint32_t base)
{
	struct attn_job j = { a, base, 0 };

	if (llm_pool_threads(c->threads) < 2 || a->nr_kv_heads < 2)
		return kvk_attn_decode_cpu(a, NULL);
	llm_pool_run(c->threads, attn_heads, &j);
	return j.ret;
}

static int step_decode(struct kvp *c, uint32_t s, uint32_t layer,
		       const float *q, float *out)
{
	uint32_t base = list_of(c, s, layer);
	int32_t pos = (int32_t)c->seq[s].len, err = 0;
	struct kvp_mem m = kvp_host_mem(c);
	struct kvk_compress_decode d = kvp_decode_args(c, s, &m, &base);
	struct kvk_attn_args a = kvp_attn_args(c, &m, &base);
	int ret;

	d.dtype = KVK_F32;
	d.k = c->k;
	d.v = c->v;
	d.pos = &pos;
	d.actions = c->act;
	d.err = &err;
	ret = kvk_compress_decode_cpu(&d, NULL);
	if (!ret)
		ret = err;
	if (ret)
		return ret;
	a.dtype = KVK_F32;
	a.q = q;
	a.out = out;
	ret = attend(c, &a, base);
	if (ret || layer + 1 < (uint32_t)c->kv.n_layers)
		return ret;
	return kvp_decode_done(c, s);
}

/*
 * kvp_begin() - the checks and the allocator's part before a layer of a
 * step, for both backends: a prompt (pos 0) admits the slot at layer 0, a
 * decode token gets its pages at layer 0
 */
int kvp_begin(struct kvp *c, uint32_t s, int layer, int pos, int ntok)
{
	struct llm_kv *kv = &c->kv;
	int ret;

	if (s >= (uint32_t)kv->n_seq || layer < 0 || layer >= kv->n_layers ||
	    pos < 0 || ntok < 1)
		return -EINVAL;
	if (pos + ntok > kv->max_tok)
		return -ENOSPC;
	if (pos == 0 && layer == 0) {
		if (c->seq[s].live) {
			kva_free(c->pool, &s, 1);
			c->seq[s] = (struct kvp_seq){ 0 };
		}
		ret = admit(c, s, (uint32_t)ntok);
		if (ret)
			return ret;
		c->seq[s].live = 1;
	}
	if (pos == 0 ? !c->seq[s].live || c->seq[s].decoding
		     : ntok != 1 || !c->seq[s].decoding ||
		       (uint32_t)pos != c->seq[s].len)
		return -EOPNOTSUPP;
	if (pos && layer == 0) {
		uint64_t used = c->pool->nr_used;

		ret = kvp_append(c, s);
		c->seq[s].grew |= c->pool->nr_used != used;
		return ret;
	}
	return 0;
}

/**
 * llm_kv_policy_step() - store, compress and attend one layer of a step
 * @kv: a host cache of llm_kv_policy_create()
 * @seq: sequence slot
 * @layer: layer
 * @pos: position of the first new token: 0 with the whole prompt, else
 *	the sequence's length with one token
 * @ntok: new tokens
 * @q: [ntok] rows of n_heads * head_dim query floats, @ldq apart (RoPE
 *	applied)
 * @k: [ntok] rows of n_kv_heads * head_dim key floats, @ldkv apart (RoPE
 *	applied)
 * @v: likewise, values
 * @out: [ntok] rows of n_heads * head_dim, @ldo apart: the attention
 *
 * Layers of a step are called in order 0 .. n_layers - 1.
 *
 * Return: 0; -EINVAL for arguments out of range; -EOPNOTSUPP for a prompt
 * in several parts, several decode tokens at once, or a device cache;
 * -ENOSPC when the pool cannot grow; an allocator or kernel error.
 */
int llm_kv_policy_step(struct llm_kv *kv, int seq, int layer, int pos,
		       int ntok, const float *q, long ldq, const float *k,
		       const float *v, long ldkv, float *out, long ldo)
{
	struct kvp *c = to_kvp(kv);
	uint32_t s = (uint32_t)seq, nkv = c->nkv, hd = c->hd;
	int ret;

	if (c->dev)
		return -EOPNOTSUPP;
	if (seq < 0 || !q || !k || !v || !out)
		return -EINVAL;
	ret = kvp_begin(c, s, layer, pos, ntok);
	if (ret)
		return ret;
	for (int t = 0; t < ntok; t++) {
		memcpy(c->k + (size_t)t * nkv * hd, k + t * ldkv,
		       nkv * hd * sizeof(float));
		memcpy(c->v + (size_t)t * nkv * hd, v + t * ldkv,
		       nkv * hd * sizeof(float));
	}
	if (pos == 0)
		return step_prefill(c, s, (uint32_t)layer, ntok, q, ldq, out,
				    ldo);
	return step_decode(c, s, (uint32_t)layer, q, out);
}

/**
 * llm_kv_policy_usage() - what sequence @seq holds, and what full would
 * @kv: a cache of llm_kv_policy_create()
 * @seq: sequence slot
 * @u: filled
 *
 * Return: 0 or -EINVAL.
 */
int llm_kv_policy_usage(const struct llm_kv *kv, int seq,
			struct llm_kv_usage *u)
{
	const struct kvp *c = (const struct kvp *)kv;
	const struct kva_pool *pl;
	uint32_t lps, len;

	if (!is_kvp(kv) || seq < 0 || seq >= kv->n_seq || !u)
		return -EINVAL;
	pl = c->pool;
	lps = pl->lists_per_slot;
	len = c->seq[seq].live ? c->seq[seq].len : 0;
	memset(u, 0, sizeof(*u));
	for (uint32_t l = 0; c->seq[seq].live && l < lps; l++) {
		uint32_t list = (uint32_t)seq * lps + l;

		for (int t = 0; t < 2; t++) {
			const struct kvk_attn_tier *a = &c->at[t];
			uint64_t n = pl->ntokens[2 * list + t];

			u->tokens[t] += n;
			u->pages[t] += pl->npages[2 * list + t];
			u->bits += n * (c->hd * (a->kbits + a->vbits) +
					8 * (kvq_meta_bytes(a->kbits, a->kgroups) +
					     kvq_meta_bytes(a->vbits, a->vgroups)));
		}
	}
	u->pruned = (uint64_t)len * lps - u->tokens[0] - u->tokens[1];
	u->page_size = pl->page_size;
	u->full_pages = full_pages(c, len) * lps;
	u->full_page_size = c->full_page_size;
	u->full_bits = (uint64_t)len * lps * c->hd * 32;
	return 0;
}

/**
 * llm_kv_policy_check() - the allocator's invariants over the cache's pool
 * @kv: a cache of llm_kv_policy_create()
 * @why: the first violation in words
 * @len: bytes of @why
 *
 * Return: 0, -EUCLEAN (kva_check()), or -EINVAL for another cache.
 */
int llm_kv_policy_check(const struct llm_kv *kv, char *why, size_t len)
{
	if (!is_kvp(kv))
		return -EINVAL;
	return kva_check(((const struct kvp *)kv)->pool, why, len);
}

static int kvp_op_append(struct llm_kv *kv, int seq, int layer, int pos,
		      int ntok, const float *k, const float *v, long ld)
{
	(void)kv, (void)seq, (void)layer, (void)pos, (void)ntok, (void)k;
	(void)v, (void)ld;
	return -EOPNOTSUPP;	/* the forward pass uses the step op */
}

static int kvp_op_view(struct llm_kv *kv, int seq, int layer, int kv_head,
		    int n, const float **k, const float **v)
{
	(void)kv, (void)seq, (void)layer, (void)kv_head, (void)n, (void)k;
	(void)v;
	return -EOPNOTSUPP;
}

/* pages every slot holds, per tier */
static int kvp_stats(struct llm_kv *kv, struct llm_kv_stats *st)
{
	const struct kvp *c = to_kvp(kv);
	const struct kva_pool *pl = c->pool;

	memset(st, 0, sizeof(*st));
	st->paged = true;
	st->page_size = pl->page_size;
	st->tokens_per_page = c->at[0].tokens;
	st->pages_total = (uint64_t)pl->nr_granules * pl->pages_per_granule;
	for (uint32_t l = 0; l < pl->nr_lists; l++) {
		st->pages_used[0] += pl->npages[2 * l + KVA_HI];
		st->pages_used[1] += pl->npages[2 * l + KVA_LO];
	}
	st->bytes = (st->pages_used[0] + st->pages_used[1]) * pl->page_size;
	return 0;
}

static void kvp_destroy(struct llm_kv *kv)
{
	struct kvp *c = to_kvp(kv);

	if (!c)
		return;
	kvp_dev_free(c);
	if (c->pool)
		kva_pool_destroy(c->pool);
	if (c->ctx)
		kvrt_ctx_destroy(c->ctx);
	if (c->threads)
		llm_pool_destroy(c->threads);
	free(c->seq);
	free(c->alpha);
	free(c->k);
	free(c->v);
	free(c->scores);
	free(c->p);
	free(c->acc);
	free(c->hi);
	free(c->lo);
	free(c->counts);
	free(c->act);
	free(c->kv.len);
	free(c);
}

static const struct llm_kv_ops kvp_ops = {
	.append = kvp_op_append,
	.view = kvp_op_view,
	.step = llm_kv_policy_step,
	.stats = kvp_stats,
	.destroy = kvp_destroy,
};

/* a device cache: the CUDA executor's step_cuda only */
static const struct llm_kv_ops kvp_dev_ops = {
	.append = kvp_op_append,
	.view = kvp_op_view,
	.step = llm_kv_policy_step,
#ifdef KVMM_HAVE_CUDA
	.step_cuda = kvp_step_cuda,
#endif
	.stats = kvp_stats,
	.destroy = kvp_destroy,
};

static int pool_make(struct kvp *c, const struct llm_config *cfg,
		     int n_seq, int max_tok, int device, char *err,
		     size_t errlen)
{
	struct kvrt_ctx_opts o = {
		.backend = device < 0 ? KVRT_BACKEND_HOST : KVRT_BACKEND_CUDA,
		.device = device < 0 ? 0 : device,
	};
	struct kva_pool_params pp = { 0 };
	struct kva_tier fp16 = { 16, 16, 1, 1 };
	struct kva_layout l[2];
	uint64_t pages, gran;
	int ps, ret;

	ps = kva_page_size(cfg->head_dim, &fp16, 1);
	if (ps < 0 || kva_page_layout(cfg->head_dim, (uint32_t)ps, &fp16,
				      &l[0])) {
		snprintf(err, errlen, "head_dim %u has no page geometry",
			 cfg->head_dim);
		return -EINVAL;
	}
	c->full_page_size = (uint32_t)ps;
	c->full_tpp = l[0].tokens;
	pp.head_dim = cfg->head_dim;
	pp.tiers[0] = c->pol.hi;
	pp.tiers[1] = c->pol.lo;
	pp.nr_tiers = c->pol.kind == LLM_POLICY_DIFFKV ? 2 : 1;
	ps = kva_page_size(cfg->head_dim, pp.tiers, pp.nr_tiers);
	if (ps < 0)
		return ps;
	ret = kva_page_layout(cfg->head_dim, (uint32_t)ps, &pp.tiers[0], &l[0]);
	ret = ret ?: kva_page_layout(cfg->head_dim, (uint32_t)ps,
				     &pp.tiers[pp.nr_tiers - 1], &l[1]);
	if (ret)
		return ret;
	/* the worst case: every list full at the smaller tier, +3 pages */
	pages = (uint64_t)n_seq * cfg->n_layers * cfg->n_kv_heads *
		((uint64_t)max_tok / (l[0].tokens < l[1].tokens ?
				      l[0].tokens : l[1].tokens) + 4);
	gran = pages / (KVRT_GRANULE_SIZE / (uint64_t)ps) + 2;
	ret = kvrt_ctx_create(&o, &c->ctx);
	if (ret) {
		snprintf(err, errlen, "runtime: %s", strerror(-ret));
		return ret;
	}
	pp.ctx = c->ctx;
	pp.va_bytes = gran * KVRT_GRANULE_SIZE;
	pp.budget_bytes = gran * KVRT_GRANULE_SIZE;
	pp.nr_slots = (uint32_t)n_seq;
	pp.nr_layers = cfg->n_layers;
	pp.nr_heads = cfg->n_kv_heads;
	pp.max_tokens = (uint32_t)max_tok;
	pp.wmark_low = 0;
	pp.wmark_high = 0;
	ret = kva_pool_create(&pp, &c->pool);
	if (ret) {
		snprintf(err, errlen, "allocator pool of %lu granules: %s",
			 (unsigned long)gran, strerror(-ret));
		return ret;
	}
	c->at[0] = kvk_attn_tier_make(&pp.tiers[0], &c->pool->layout[KVA_HI]);
	c->at[1] = kvk_attn_tier_make(&pp.tiers[pp.nr_tiers - 1],
				      &c->pool->layout[KVA_LO]);
	return 0;
}

static int create(const struct llm_config *c, const struct llm_policy *p,
		  int n_seq, int max_tok, int n_threads, int device,
		  struct llm_kv **out, char *err, size_t errlen)
{
	bool host = device < 0;
	struct kvp *k;
	size_t mt = (size_t)max_tok;
	int ret;

	if (!c || !p || !out || n_seq < 1 || max_tok < 1 || n_threads < 1 ||
	    (c->head_dim != 64 && c->head_dim != 128 &&
	     (c->head_dim != 256 || !host)) ||
	    !c->n_kv_heads || c->n_heads % c->n_kv_heads ||
	    c->n_heads / c->n_kv_heads > KVK_ATTN_MAX_GROUP) {
		snprintf(err, errlen, "the policy cache takes head_dim 64, 128 "
			 "or (on the CPU) 256 and at most %d query heads per "
			 "kv-head", KVK_ATTN_MAX_GROUP);
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->kv.ops = host ? &kvp_ops : &kvp_dev_ops;
	k->kv.n_seq = n_seq;
	k->kv.n_layers = (int)c->n_layers;
	k->kv.n_kv_heads = (int)c->n_kv_heads;
	k->kv.head_dim = (int)c->head_dim;
	k->kv.max_tok = max_tok;
	k->pol = *p;
	k->nh = c->n_heads;
	k->nkv = c->n_kv_heads;
	k->hd = c->head_dim;
	k->group = c->n_heads / c->n_kv_heads;
	k->scale = 1.0f / sqrtf((float)c->head_dim);
	ret = pool_make(k, c, n_seq, max_tok, device, err, errlen);
	if (ret)
		goto out_free;
	k->kv.len = calloc(n_seq, sizeof(int));
	k->seq = calloc(n_seq, sizeof(*k->seq));
	k->alpha = calloc(n_seq, sizeof(*k->alpha));
	k->hi = malloc(k->pool->lists_per_slot * sizeof(uint32_t));
	k->lo = malloc(k->pool->lists_per_slot * sizeof(uint32_t));
	if (!k->kv.len || !k->seq || !k->alpha || !k->hi || !k->lo)
		goto out_nomem;
	for (int i = 0; i < n_seq; i++) {
		k->alpha[i][0] = p->alpha_prune;
		k->alpha[i][1] = p->alpha_quant;
	}
#ifdef KVMM_HAVE_CUDA
	if (!host) {
		ret = kvp_dev_init(k, device, err, errlen);
		if (ret)
			goto out_free;
		*out = &k->kv;
		return 0;
	}
#endif
	k->k = malloc(mt * k->nkv * k->hd * sizeof(float));
	k->v = malloc(mt * k->nkv * k->hd * sizeof(float));
	k->scores = malloc(mt * k->nkv * sizeof(float));
	ret = llm_pool_create(n_threads, &k->threads);
	if (ret) {
		snprintf(err, errlen, "threads: %s", strerror(-ret));
		goto out_free;
	}
	k->p = malloc(mt * llm_pool_threads(k->threads) * sizeof(float));
	k->acc = malloc(mt * k->nh * sizeof(float));
	k->counts = malloc(k->nkv * KVK_TOK_NR * sizeof(uint32_t));
	k->act = malloc(k->nkv * sizeof(*k->act));
	if (!k->k || !k->v || !k->scores || !k->p || !k->acc || !k->counts ||
	    !k->act)
		goto out_nomem;
	*out = &k->kv;
	return 0;

out_nomem:
	ret = -ENOMEM;
	snprintf(err, errlen, "out of memory");
out_free:
	kvp_destroy(&k->kv);
	return ret;
}

/**
 * llm_kv_policy_create() - a host cache that applies @p
 * @c: model configuration
 * @p: policy (llm_policy_parse())
 * @n_seq: sequence slots
 * @max_tok: tokens one sequence may reach
 * @n_threads: workers of the prefill attention (>= 1)
 * @out: the cache; llm_kv_destroy() frees it
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -EINVAL (a shape the kernels do not take: head_dim other than
 * 64, 128 or 256, more than 8 query heads per kv-head), -ENOMEM, or the
 * runtime's or allocator's error.
 */
int llm_kv_policy_create(const struct llm_config *c,
			 const struct llm_policy *p, int n_seq, int max_tok,
			 int n_threads, struct llm_kv **out, char *err,
			 size_t errlen)
{
	return create(c, p, n_seq, max_tok, n_threads, -1, out, err, errlen);
}

#ifdef KVMM_HAVE_CUDA
/**
 * llm_kv_policy_create_cuda() - a cache that applies @p on a CUDA device,
 * for the CUDA executor (its step_cuda op; the host step op answers
 * -EOPNOTSUPP)
 * @c: model configuration
 * @p: policy
 * @n_seq: sequence slots
 * @max_tok: tokens one sequence may reach
 * @device: CUDA device ordinal, the executor's
 * @out: the cache; llm_kv_destroy() frees it
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: as llm_kv_policy_create(); head_dim 256 is -EINVAL here (the
 * prefill kernel takes 64 and 128).
 */
int llm_kv_policy_create_cuda(const struct llm_config *c,
			      const struct llm_policy *p, int n_seq,
			      int max_tok, int device, struct llm_kv **out,
			      char *err, size_t errlen)
{
	if (device < 0) {
		snprintf(err, errlen, "device %d", device);
		return -EINVAL;
	}
	return create(c, p, n_seq, max_tok, 1, device, out, err, errlen);
}
#endif
