// SPDX-License-Identifier: MIT
/*
 * kvpolicy.c - the policy KV cache: DiffKV tiers, KV-Compress eviction,
 * uniform quantization or plain fp16, in the pages of a kvmm space reached
 * through the uapi; the host cache's CPU kernels.
 *
 * DOC: policy cache
 *
 * The one KV cache of the executors. Each cache opens a kvmm handle and
 * creates one space with the policy's tiers (KVMM_BACKEND_HOST for the CPU
 * executor, KVMM_BACKEND_DEVICE for the CUDA one), maps it
 * (KVMM_IOC_SPACE_MAP) and hands the mapped tables to the kernels. It
 * never sees the allocator: pages come and go through the uapi only.
 *
 * A step is a batch of sequences, all prefill or all decode
 * (llm_kv_batch_kind()), and runs in the order of DiffKV's engine:
 *
 * Prefill (whole prompts from position 0): begin() admits the prompts
 * (KVMM_IOC_SEQ_ADMIT reserves each list's worst case for its prompt).
 * Each layer() computes causal attention over the prompts' own keys and
 * values with each token's score from the last @score_window queries
 * (diffkv: the probability summed over those queries, max over the query
 * heads of its kv-head; kvcompress: the squared probability summed over the
 * queries and the group's heads), then one kvk_compress_prompt_*() call
 * for every sequence classifies (diffkv's alphas; zero alphas keep every
 * token high for the other policies), quantizes and writes the tokens.
 * end() submits KVMM_OP_TRIM (the admission's surplus back) and, under
 * kvcompress, KVMM_OP_EVICT down to the target rate.
 *
 * Decode (one token per sequence): begin() submits KVMM_OP_APPEND (a page
 * for every tier whose last page is full); each layer() runs one
 * kvk_compress_decode_*() call (append the new token, demote or prune at
 * most one old token per head under diffkv) and one kvk_attn_decode_*()
 * call over both tiers, which adds to each token's score its largest
 * probability over the group (diffkv) or the sum over the group of its
 * squared probabilities (kvcompress). Every @interval steps of a sequence,
 * end() submits KVMM_OP_EVICT for it: whole pages down to 1 / @rate of
 * what full would hold, chosen across every list by the scores.
 *
 * The same calls in the same order serve both backends; a device cache
 * (kvpolicy_cuda.c) runs the CUDA kernels on the bound stream and never
 * waits for the device in begin(), layer() or end().
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chnorm.h"
#include "compress.h"
#include "hprefill.h"
#include "kvattn.h"
#include "kvevict.h"
#include "kvmm_lib.h"
#include "kvpolicy.h"
#include "kvpolicy_int.h"
#include "kvq.h"
#include "kvshim.h"
#include "pool.h"
#include "select.h"

static const struct llm_kv_ops kvp_ops;
static uint64_t kvp_ids;	/* struct llm_kv.id of the last cache made */

/* whether @kv is a policy cache */
static bool is_kvp(const struct llm_kv *kv)
{
	return kv && kv->ops == &kvp_ops;
}

static inline struct kvp *to_kvp(struct llm_kv *kv)
{
	return (struct kvp *)kv;
}

static struct kvk_attn_tier tier_of(const struct kvmm_tier_layout *t)
{
	struct kvk_attn_tier a = {
		.kbits = t->kbits, .vbits = t->vbits, .kgroups = t->kgroups,
		.vgroups = t->vgroups, .tokens = t->tokens, .k_off = t->k_off,
		.km_off = t->km_off, .v_off = t->v_off, .vm_off = t->vm_off,
		.score_off = t->score_off, .pos_off = t->pos_off,
	};

	return a;
}

/* the pages as the compress kernels see them */
static struct kvk_compress_pages pages_of(const struct kvp *c,
					  const uint32_t *lb)
{
	struct kvk_compress_pages pg = {
		.pool = c->map.pool_base,
		.page_size = c->map.page_size,
		.pages_per_granule = c->map.pages_per_granule,
		.tables = (const uint32_t *)(uintptr_t)c->map.tables,
		.width = c->map.table_width,
		.list_base = lb,
		.tier = { c->at[0], c->at[1] },
	};

	return pg;
}

struct kvk_compress_prompt kvp_prompt_args(const struct kvp *c,
					   const uint32_t *lb,
					   const float *seq_alpha)
{
	struct kvk_compress_prompt a = {
		.nr_seqs = (uint32_t)c->n, .nr_kv_heads = c->nkv,
		.head_dim = c->hd, .dtype = KVK_F32,
		.score_window = c->pol.score_window, .window = c->pol.window,
		.max_len = c->max_len,
		.seq_alpha = c->pol.kind == LLM_POLICY_DIFFKV ? seq_alpha
							     : NULL,
		.pg = pages_of(c, lb),
		.npages = (const uint32_t *)(uintptr_t)c->map.npages,
		.ntokens = (uint32_t *)(uintptr_t)c->map.ntokens,
		/* kvcompress protects its recent window by position */
		.real_pos = c->pol.kind == LLM_POLICY_KVCOMPRESS,
		/* kvcompress's sinks are the eviction's (kvp_end()) */
		.sinks = c->pol.kind == LLM_POLICY_DIFFKV ? c->pol.sinks : 0,
	};

	return a;
}

struct kvk_compress_decode kvp_decode_args(const struct kvp *c,
					   const uint32_t *lb,
					   const int32_t *pos,
					   const float *seq_alpha)
{
	struct kvk_compress_decode a = {
		.nr_seqs = (uint32_t)c->n, .nr_kv_heads = c->nkv,
		.head_dim = c->hd, .dtype = KVK_F32, .pos = pos,
		.window = c->pol.window,
		.seq_alpha = c->pol.kind == LLM_POLICY_DIFFKV ? seq_alpha
							     : NULL,
		.pg = pages_of(c, lb),
		.npages = (const uint32_t *)(uintptr_t)c->map.npages,
		.ntokens = (uint32_t *)(uintptr_t)c->map.ntokens,
		.sinks = c->pol.kind == LLM_POLICY_DIFFKV ? c->pol.sinks : 0,
	};

	return a;
}

struct kvk_attn_args kvp_attn_args(const struct kvp *c, uint32_t nr_seqs,
				   const uint32_t *lb)
{
	struct kvk_attn_args a = {
		.nr_seqs = nr_seqs, .nr_kv_heads = c->nkv, .group = c->group,
		.head_dim = c->hd, .scale = c->scale, .dtype = KVK_F32,
		.pool = c->map.pool_base, .page_size = c->map.page_size,
		.pages_per_granule = c->map.pages_per_granule,
		.tables = (const uint32_t *)(uintptr_t)c->map.tables,
		.width = c->map.table_width,
		.ntokens = (const uint32_t *)(uintptr_t)c->map.ntokens,
		.list_base = lb, .tier = { c->at[0], c->at[1] },
		.update_scores = kvp_score_mode(c),
	};

	return a;
}

int kvp_score_mode(const struct kvp *c)
{
	if (c->pol.kind == LLM_POLICY_DIFFKV)
		return KVK_ATTN_SCORE_MAX;
	return c->pol.kind == LLM_POLICY_KVCOMPRESS ? KVK_ATTN_SCORE_SUMSQ : 0;
}

/* ---- the uapi ---- */

static int ioc(struct kvp *c, unsigned long cmd, void *arg)
{
	return kvshim_ioctl(c->fd, cmd, arg);
}

/* give the slots of @n sequences back (their tokens are forgotten) */
static int release(struct kvp *c, const int *seqs, int n)
{
	struct kvmm_seq_release r = { .space = c->space, .slots = 0 };
	uint32_t *sl = c->slots;
	uint32_t k = 0;
	int ret;

	for (int i = 0; i < n; i++)
		if (c->seq[seqs[i]].live)
			sl[k++] = c->seq[seqs[i]].slot;
	if (!k)
		return 0;
	r.count = k;
	r.slots = (uint64_t)(uintptr_t)sl;
	ret = ioc(c, KVMM_IOC_SEQ_RELEASE, &r);
	if (ret)
		return ret;
	for (int i = 0; i < n; i++) {
		struct kvp_seq *s = &c->seq[seqs[i]];

		if (s->live)
			*s = (struct kvp_seq){ 0 };
	}
	return 0;
}

/* one op over the first @n entries of @c->ss */
static int submit(struct kvp *c, uint32_t op, uint32_t n, uint32_t sinks)
{
	struct kvmm_step_op o = { .op = op, .count = n, .sinks = sinks,
				  .slots = (uint64_t)(uintptr_t)c->ss };
	struct kvmm_step_submit s = { .space = c->space, .nr_ops = 1,
				      .ops = (uint64_t)(uintptr_t)&o };

	return ioc(c, KVMM_IOC_STEP_SUBMIT, &s);
}

/* pages a (layer, kv-head) list of @len positions takes under full */
static uint64_t full_pages(const struct kvp *c, uint32_t len)
{
	return (len + c->full_tpp - 1) / c->full_tpp;
}

/* an EVICT entry for sequence @s of @len positions: kvcompress's target */
static struct kvmm_step_slot evict_slot(const struct kvp *c,
					const struct kvp_seq *s, uint32_t len)
{
	struct kvmm_step_slot e = { .slot = s->slot };
	uint64_t t = (uint64_t)ceil((double)(full_pages(c, len) * c->lps) /
				    c->pol.rate);

	e.arg0 = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	e.arg1 = len > c->pol.window ? len - c->pol.window : 0;
	return e;
}

/* ---- begin: the pages of the step ---- */

/* forget what @seq staged */
static void stage_drop(struct kvp *c, int seq)
{
	struct kvp_stage *st = c->stage ? &c->stage[seq] : NULL;

	if (!st)
		return;
	free(st->k);
	free(st->v);
	free(st->acc);
	*st = (struct kvp_stage){ 0 };
}

/* room for @seq's prompt of @n tokens, arriving in chunks */
static int stage_make(struct kvp *c, int seq, uint32_t n)
{
	struct kvp_stage *st = &c->stage[seq];
	size_t kv = (size_t)c->nl * n * c->nkv * c->hd;

	stage_drop(c, seq);
	st->k = malloc(kv * sizeof(float));
	st->v = malloc(kv * sizeof(float));
	st->acc = calloc((size_t)c->nl * c->nh * n, sizeof(float));
	if (!st->k || !st->v || !st->acc) {
		stage_drop(c, seq);
		return -ENOMEM;
	}
	st->n = n;
	return 0;
}

/*
 * a prefill: whole prompts, and in a cache that takes chunks, chunks of
 * declared prompts (llm_kv_set_prompt()). A chunk before a prompt's last
 * one takes no pages (its keys and values are staged); a whole prompt, or
 * a last chunk, is admitted for the whole prompt.
 */
static int begin_prefill(struct kvp *c, const struct llm_batch *b)
{
	struct kvmm_seq *q = c->adm;
	struct kvmm_seq_admit a = { .space = c->space,
				    .seqs = (uint64_t)(uintptr_t)q };
	uint32_t t = 0, mx = 0, na = 0;
	int ret;

	c->staged = 0;
	for (int i = 0; i < b->n_seq; i++) {
		int seq = b->seq[i];
		uint32_t n = (uint32_t)b->n_tok[i];
		uint32_t len0 = (uint32_t)llm_kv_len(&c->kv, seq);
		uint32_t P = c->kv.prompt ? (uint32_t)c->kv.prompt[seq] : 0;

		if (P && len0 + n > P)
			return -EINVAL;
		if (!P && len0)
			return -EOPNOTSUPP;
		c->sflag[i] = KVP_FIN;
		if (P && !(len0 == 0 && n == P)) {
			if (len0 && c->stage[seq].n != P)
				return -EINVAL;
			c->sflag[i] = len0 + n == P ? KVP_FIN | KVP_CHUNK
						    : KVP_CHUNK;
			c->staged = 1;
		}
	}
	/* sequences started again give their old pages back first */
	ret = release(c, b->seq, b->n_seq);
	if (ret)
		return ret;
	for (int i = 0; i < b->n_seq; i++) {
		int seq = b->seq[i];
		uint32_t len0 = (uint32_t)llm_kv_len(&c->kv, seq);

		if (!len0)
			stage_drop(c, seq);
		if (!len0 && (c->sflag[i] & KVP_CHUNK)) {
			ret = stage_make(c, seq, (uint32_t)c->kv.prompt[seq]);
			if (ret)
				return ret;
		}
		if (c->sflag[i] & KVP_FIN)
			q[na++] = (struct kvmm_seq){
				.tokens = len0 + (uint32_t)b->n_tok[i] };
		c->sstart[i] = t;
		t += (uint32_t)b->n_tok[i];
		mx = (uint32_t)b->n_tok[i] > mx ? (uint32_t)b->n_tok[i] : mx;
	}
	c->sstart[b->n_seq] = t;
	c->ntok = t;
	c->max_len = mx;
	a.count = na;
	ret = na ? ioc(c, KVMM_IOC_SEQ_ADMIT, &a) : 0;
	if (ret)
		return ret;
	na = 0;
	for (int i = 0; i < b->n_seq; i++) {
		struct kvp_seq *s = &c->seq[b->seq[i]];

		c->slots[i] = 0;	/* a staged chunk has no slot yet */
		if (!(c->sflag[i] & KVP_FIN))
			continue;
		*s = (struct kvp_seq){ .slot = q[na++].slot, .live = 1 };
		c->slots[i] = s->slot;
	}
	return 0;
}

static int begin_decode(struct kvp *c, const struct llm_batch *b)
{
	for (int i = 0; i < b->n_seq; i++) {
		const struct kvp_seq *s = &c->seq[b->seq[i]];

		if (!s->decoding || s->len != (uint32_t)llm_kv_len(&c->kv,
								   b->seq[i]))
			return -EINVAL;
		c->slots[i] = s->slot;
		c->pos[i] = (int32_t)s->len;
		c->ss[i] = (struct kvmm_step_slot){ .slot = s->slot };
	}
	c->ntok = (uint32_t)b->n_seq;
	return submit(c, KVMM_OP_APPEND, (uint32_t)b->n_seq, 0);
}

static int kvp_begin(struct llm_kv *kv, const struct llm_batch *b,
		     void *stream)
{
	struct kvp *c = to_kvp(kv);
	int kind, ret;

	if (!b || b->n_seq < 1 || b->n_seq > kv->n_seq || !b->seq ||
	    !b->n_tok)
		return -EINVAL;
	for (int i = 0; i < b->n_seq; i++) {
		if (b->seq[i] < 0 || b->seq[i] >= kv->n_seq || b->n_tok[i] < 1)
			return -EINVAL;
		if (llm_kv_len(kv, b->seq[i]) + b->n_tok[i] > kv->max_tok)
			return -ENOSPC;
	}
	kind = llm_kv_batch_kind(kv, b);
	if (kind < 0)
		return kind;
	c->kind = 0;
	c->n = b->n_seq;
#ifdef KVMM_HAVE_CUDA
	/* the space's work of this step runs on the executor's stream */
	if (c->dev) {
		ret = kvp_dev_bind(c, stream);
		if (ret)
			return ret;
	}
#endif
	ret = kind == LLM_KV_PREFILL ? begin_prefill(c, b)
				     : begin_decode(c, b);
	if (ret)
		return ret;
	for (int i = 0; i < b->n_seq; i++) {
		c->salpha[2 * i] = c->alpha[b->seq[i]][0];
		c->salpha[2 * i + 1] = c->alpha[b->seq[i]][1];
		for (uint32_t l = 0; l < c->nl; l++)
			c->lb[(size_t)l * b->n_seq + i] =
				(c->slots[i] * c->nl + l) * c->nkv;
	}
	c->kind = kind;
#ifdef KVMM_HAVE_CUDA
	if (c->dev)
		return kvp_dev_begin(c, stream);
#endif
	(void)stream;
	return 0;
}

/* ---- host kernels of a layer ---- */

/* struct prefill_job - the prompts' attention, split by (sequence, head) */
struct prefill_job {
	struct kvp *c;
	const struct llm_batch *b;
	int layer;
	float *acc;	/* [nh][ntok] score sums of the step's tokens */
};

/*
 * causal attention of query head @h over @n queries (rows @s0.. of the
 * step) at positions @off.., each over the keys @k, @v of positions 0 ..
 * its own (rows of nkv heads); the probabilities of queries at positions
 * from @first on summed into @acc (by key position). kvk_hprefill() runs
 * it (AVX2 where the CPU has it; @p holds KVK_HPREFILL_ROWS rows).
 */
static void prefill_head(struct kvp *c, const float *k, const float *v,
			 uint32_t s0, uint32_t n, uint32_t off, uint32_t first,
			 uint32_t h, float *p, float *acc)
{
	uint32_t hd = c->hd, g = h / c->group;
	struct kvk_hprefill_args a = {
		.q = c->q + ((size_t)s0 * c->nh + h) * hd,
		.k = k + (size_t)g * hd,
		.v = v + (size_t)g * hd,
		.o = c->o + ((size_t)s0 * c->nh + h) * hd,
		.acc = acc,
		.p = p,
		.ldq = (size_t)c->nh * hd,
		.ldk = (size_t)c->nkv * hd,
		.ldo = (size_t)c->nh * hd,
		.hd = hd,
		.n = n,
		.off = off,
		.first = first,
		.scale = c->scale,
		.sumsq = kvp_score_mode(c) == KVK_ATTN_SCORE_SUMSQ,
	};

	/* the arguments were checked when the cache was made */
	(void)kvk_hprefill(&a);
}

static void prefill_work(void *arg, int tid, int nth)
{
	struct prefill_job *j = arg;
	struct kvp *c = j->c;
	float *p = c->p + (size_t)tid * KVK_HPREFILL_ROWS * c->kv.max_tok;
	size_t kw = (size_t)c->nkv * c->hd;
	uint32_t W = c->pol.score_window;
	long lo, hi;

	llm_pool_range((long)c->n * c->nh, tid, nth, 1, &lo, &hi);
	for (long u = lo; u < hi; u++) {
		int i = (int)(u / c->nh);
		uint32_t h = (uint32_t)(u % c->nh);
		uint32_t s0 = c->sstart[i], n = c->sstart[i + 1] - s0;
		float *acc = j->acc + (size_t)h * c->ntok + s0;

		memset(acc, 0, n * sizeof(float));
		if (c->staged && (c->sflag[i] & KVP_CHUNK)) {
			const struct kvp_stage *st = &c->stage[j->b->seq[i]];
			size_t lo_kv = (size_t)j->layer * st->n * kw;

			prefill_head(c, st->k + lo_kv, st->v + lo_kv, s0, n,
				     (uint32_t)llm_kv_len(&c->kv, j->b->seq[i]),
				     st->n > W ? st->n - W : 0, h, p,
				     st->acc + ((size_t)j->layer * c->nh + h) *
						       st->n);
			continue;
		}
		prefill_head(c, c->k + (size_t)s0 * kw, c->v + (size_t)s0 * kw,
			     s0, n, 0, n > W ? n - W : 0, h, p, acc);
	}
}

/* max (diffkv) or sum (kvcompress) over the group of head scores @a */
static float group_score(const struct kvp *c, const float *a, size_t stride,
			 uint32_t g)
{
	bool sq = kvp_score_mode(c) == KVK_ATTN_SCORE_SUMSQ;
	float s = 0;

	for (uint32_t h = g * c->group; h < (g + 1) * c->group; h++) {
		float x = a[(size_t)h * stride];

		s = sq ? s + x : (x > s ? x : s);
	}
	return s;
}

/*
 * fp32 causal attention of the prompts, with the policy's token scores:
 * diffkv takes the max over the group of each head's sum, kvcompress the
 * sum of squares over the group. Staged chunks first join their stage
 * and attend over all of it.
 */
static void prefill_attend(struct kvp *c, const struct llm_batch *b,
			   int layer)
{
	struct prefill_job j = { c, b, layer, c->acc };
	size_t kw = (size_t)c->nkv * c->hd;

	for (int i = 0; c->staged && i < c->n; i++) {
		const struct kvp_stage *st = &c->stage[b->seq[i]];
		uint32_t s0 = c->sstart[i], n = c->sstart[i + 1] - s0;
		size_t at = ((size_t)layer * st->n +
			     (uint32_t)llm_kv_len(&c->kv, b->seq[i])) * kw;

		if (!(c->sflag[i] & KVP_CHUNK))
			continue;
		memcpy(st->k + at, c->k + (size_t)s0 * kw,
		       n * kw * sizeof(float));
		memcpy(st->v + at, c->v + (size_t)s0 * kw,
		       n * kw * sizeof(float));
	}
	llm_pool_run(c->threads, prefill_work, &j);
	for (uint32_t t = 0; t < c->ntok; t++)
		for (uint32_t g = 0; g < c->nkv; g++)
			c->scores[(size_t)t * c->nkv + g] =
				group_score(c, c->acc + t, c->ntok, g);
}

/* struct attn_job - a decode step's attention, split by (sequence, head) */
struct attn_job {
	const struct kvk_attn_args *a;
	const uint32_t *lb;	/* the layer's list bases, [n] */
	int ret;		/* an error of any worker */
};

static void attn_work(void *arg, int tid, int nth)
{
	struct attn_job *j = arg;
	struct kvk_attn_args a = *j->a;
	size_t row = (size_t)a.group * a.head_dim;
	long lo, hi;

	llm_pool_range((long)j->a->nr_seqs * j->a->nr_kv_heads, tid, nth, 1,
		       &lo, &hi);
	a.nr_seqs = 1;
	a.nr_kv_heads = 1;
	for (long u = lo; u < hi; u++) {
		uint32_t s = (uint32_t)(u / j->a->nr_kv_heads);
		uint32_t g = (uint32_t)(u % j->a->nr_kv_heads);
		uint32_t lb = j->lb[s] + g;
		int ret;

		a.list_base = &lb;
		a.q = (const float *)j->a->q + (size_t)u * row;
		a.out = (float *)j->a->out + (size_t)u * row;
		ret = kvk_attn_decode_host(&a, NULL);
		if (ret)
			__atomic_store_n(&j->ret, ret, __ATOMIC_RELAXED);
	}
}

/*
 * kvk_attn_decode_host() over the step's sequences and kv-heads, split
 * across the cache's workers (each (sequence, head) touches its own list,
 * pages and outputs, so the result is the single call's, bit for bit)
 */
static int attend(struct kvp *c, const struct kvk_attn_args *a,
		  const uint32_t *lb)
{
	struct attn_job j = { a, lb, 0 };

	if (llm_pool_threads(c->threads) < 2 ||
	    a->nr_seqs * a->nr_kv_heads < 2)
		return kvk_attn_decode_host(a, NULL);
	llm_pool_run(c->threads, attn_work, &j);
	return j.ret;
}

/* the step's rows of @io into the packed scratch */
static void gather(struct kvp *c, const struct llm_kv_io *io, bool q)
{
	size_t kw = (size_t)c->nkv * c->hd, qw = (size_t)c->nh * c->hd;

	for (uint32_t t = 0; t < c->ntok; t++) {
		memcpy(c->k + t * kw, io->k + t * io->ldkv, kw * sizeof(float));
		memcpy(c->v + t * kw, io->v + t * io->ldkv, kw * sizeof(float));
		if (q)
			memcpy(c->q + t * qw, io->q + t * io->ldq,
			       qw * sizeof(float));
	}
}

static void scatter(struct kvp *c, const struct llm_kv_io *io)
{
	size_t qw = (size_t)c->nh * c->hd;

	for (uint32_t t = 0; t < c->ntok; t++)
		memcpy((float *)io->out + t * io->ldo, c->o + t * qw,
		       qw * sizeof(float));
}

/* the host scratch for @ntok tokens of a step */
static int host_reserve(struct kvp *c, size_t ntok)
{
	size_t kw = (size_t)c->nkv * c->hd, qw = (size_t)c->nh * c->hd;
	struct {
		float **p;
		size_t per_tok;	/* floats */
	} buf[] = {
		{ &c->k, kw }, { &c->v, kw }, { &c->q, qw }, { &c->o, qw },
		{ &c->scores, c->nkv }, { &c->acc, c->nh },
	};

	if (ntok <= c->cap)
		return 0;
	for (size_t i = 0; i < sizeof(buf) / sizeof(buf[0]); i++) {
		float *p = realloc(*buf[i].p, ntok * buf[i].per_tok * 4);

		if (!p)
			return -ENOMEM;	/* the buffers grown so far stay */
		*buf[i].p = p;
	}
	c->cap = ntok;
	return 0;
}

/* grow @p (of *@cap items of @size bytes) to at least @need items */
static int sel_grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap ? *cap : 64;
	void *q;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	q = realloc(*p, n * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/*
 * full:topk (host cache): the summaries of the layer's lists of the step,
 * every high-tier page after a prefill (@all), else the last page (where
 * the decode step appended its token; the pages before it were summarised
 * when they were last); the arrays grown to the largest page id and list
 * seen. Summaries are fp16 (the full policy's keys are fp16: exact).
 */
static int sel_summarize(struct kvp *c, const uint32_t *lb, bool all)
{
	const uint32_t *tab = (const uint32_t *)(uintptr_t)c->map.tables;
	const uint32_t *nt = (const uint32_t *)(uintptr_t)c->map.ntokens;
	uint32_t W = c->map.table_width, T = c->at[0].tokens, nr = 0;
	size_t maxid = 0, maxlist = 0, rows = c->sel_rows;
	size_t rb = kvk_summary_row_bytes(c->hd, KVK_F16);
	struct kvk_summary_args u;
	int ret;

	for (int s = 0; s < c->n; s++)
		for (uint32_t h = 0; h < c->nkv; h++) {
			size_t list = lb[s] + h;
			uint32_t n = nt[2 * list], P = (n + T - 1) / T;

			maxlist = list > maxlist ? list : maxlist;
			for (uint32_t i = all ? 0 : (P ? P - 1 : 0); i < P; i++)
				if (tab[list * W + i] > maxid)
					maxid = tab[list * W + i];
		}
	ret = sel_grow(&c->sel_sum, &c->sel_rows, maxid + 1, rb);
	if (!ret && c->sel_rows > rows)
		memset((uint8_t *)c->sel_sum + rows * rb, 0,
		       (c->sel_rows - rows) * rb);
	ret = ret ?: sel_grow((void **)&c->sel_tab, &c->sel_lists, maxlist + 1,
			      (size_t)W * 4);
	ret = ret ?: sel_grow((void **)&c->sel_ntok, &c->sel_nlists,
			      maxlist + 1, 8);
	if (ret)
		return ret;
	for (int s = 0; s < c->n; s++)
		for (uint32_t h = 0; h < c->nkv; h++) {
			size_t list = lb[s] + h;
			uint32_t n = nt[2 * list], P = (n + T - 1) / T;

			for (uint32_t i = all ? 0 : (P ? P - 1 : 0); i < P; i++) {
				ret = sel_grow((void **)&c->sel_upd, &c->sel_nupd,
					       nr + 1, 12);
				if (ret)
					return ret;
				c->sel_upd[3 * nr] = tab[list * W + i];
				c->sel_upd[3 * nr + 1] = 0;
				c->sel_upd[3 * nr + 2] = n - i * T < T ? n - i * T : T;
				nr++;
			}
		}
	u = (struct kvk_summary_args){
		.pool = c->map.pool_base, .page_size = c->map.page_size,
		.pages_per_granule = c->map.pages_per_granule,
		.head_dim = c->hd, .tier = c->at[0], .nr = nr,
		.upd = c->sel_upd, .summary = c->sel_sum, .sum_dtype = KVK_F16,
	};
	return kvk_page_summary_cpu(&u, NULL);
}

/* full:topk: @a's tables and counts replaced by the pages selected */
static int sel_pages(struct kvp *c, struct kvk_attn_args *a,
		     const uint32_t *lb)
{
	struct kvk_select_args s;
	int ret;

	ret = sel_summarize(c, lb, false);
	if (ret)
		return ret;
	s = (struct kvk_select_args){
		.attn = *a, .summary = c->sel_sum, .sum_dtype = KVK_F16,
		.topk = c->pol.topk, .window = c->pol.window, .sink = 1,
		.sel_tables = c->sel_tab, .sel_ntokens = c->sel_ntok,
	};
	ret = kvk_select_pages_cpu(&s, NULL);
	if (ret)
		return ret;
	a->tables = c->sel_tab;
	a->ntokens = c->sel_ntok;
	return 0;
}

/*
 * under the hadamard knob: rows of @n heads of @t tokens rotated in place
 * (kvk_hadamard_cpu(); its own inverse, so also the way back)
 */
static int rotate(const struct kvp *c, float *x, uint32_t t, uint32_t n)
{
	if (!c->pol.hadamard)
		return 0;
	return kvk_hadamard_cpu(x, KVK_F32, (size_t)t * n, c->hd, NULL);
}

/*
 * under the knorm knob: @op (enum kvk_chn_op) over @t tokens of @n heads
 * of @x, @ns sequences with list bases @lb; @start the prompts' starts
 * (prefill) or NULL (decode: token i is sequence i)
 */
static int chnorm(const struct kvp *c, int op, float *x, uint32_t t,
		  uint32_t n, uint32_t ns, const uint32_t *lb,
		  const uint32_t *start)
{
	struct kvk_chn_args a = {
		.x = x, .ntok = t, .heads = n, .group = n / c->nkv,
		.head_dim = c->hd, .nr_seqs = ns,
		.seq_start = start, .list_base = lb, .param = c->chn, .op = op,
	};

	if (!c->pol.knorm)
		return 0;
	return kvk_chnorm_cpu(&a, NULL);
}

/* grow the packed buffers of the prompts ending in a staged step */
static int pack_reserve(struct kvp *c, size_t ntok)
{
	size_t kw = (size_t)c->nkv * c->hd;
	float *p;

	if (ntok <= c->pcap)
		return 0;
	p = realloc(c->pk, ntok * kw * sizeof(float));
	if (!p)
		return -ENOMEM;
	c->pk = p;
	p = realloc(c->pv, ntok * kw * sizeof(float));
	if (!p)
		return -ENOMEM;
	c->pv = p;
	p = realloc(c->ps, ntok * c->nkv * sizeof(float));
	if (!p)
		return -ENOMEM;
	c->ps = p;
	c->pcap = ntok;
	return 0;
}

/*
 * a step with staged chunks: the whole prompts that end in it (whole
 * prompts of the step, last chunks with their stage), packed for one
 * compress call, as a step of those prompts alone would make it
 */
static int prefill_store_staged(struct kvp *c, const struct llm_batch *b,
				int layer)
{
	const uint32_t *lb = c->lb + (size_t)layer * c->n;
	size_t kw = (size_t)c->nkv * c->hd, nt = 0;
	struct kvk_compress_prompt a;
	uint32_t nf = 0, mx = 0;
	int32_t err = 0;
	int ret;

	for (int i = 0; i < c->n; i++)
		if (c->sflag[i] & KVP_FIN)
			nt += c->sflag[i] & KVP_CHUNK
				      ? c->stage[b->seq[i]].n
				      : c->sstart[i + 1] - c->sstart[i];
	if (!nt)
		return 0;
	ret = pack_reserve(c, nt);
	if (ret)
		return ret;
	nt = 0;
	for (int i = 0; i < c->n; i++) {
		const struct kvp_stage *st = &c->stage[b->seq[i]];
		uint32_t s0 = c->sstart[i], n = c->sstart[i + 1] - s0;

		if (!(c->sflag[i] & KVP_FIN))
			continue;
		c->pstart[nf] = (uint32_t)nt;
		c->plb[nf] = lb[i];
		c->palpha[2 * nf] = c->salpha[2 * i];
		c->palpha[2 * nf + 1] = c->salpha[2 * i + 1];
		if (c->sflag[i] & KVP_CHUNK) {
			size_t at = (size_t)layer * st->n * kw;

			n = st->n;
			memcpy(c->pk + nt * kw, st->k + at,
			       n * kw * sizeof(float));
			memcpy(c->pv + nt * kw, st->v + at,
			       n * kw * sizeof(float));
			for (uint32_t t = 0; t < n; t++)
				for (uint32_t g = 0; g < c->nkv; g++)
					c->ps[(nt + t) * c->nkv + g] =
						group_score(c, st->acc +
							((size_t)layer * c->nh) *
								n + t, n, g);
		} else {
			memcpy(c->pk + nt * kw, c->k + (size_t)s0 * kw,
			       n * kw * sizeof(float));
			memcpy(c->pv + nt * kw, c->v + (size_t)s0 * kw,
			       n * kw * sizeof(float));
			memcpy(c->ps + nt * c->nkv,
			       c->scores + (size_t)s0 * c->nkv,
			       n * c->nkv * sizeof(float));
		}
		nt += n;
		mx = n > mx ? n : mx;
		nf++;
	}
	c->pstart[nf] = (uint32_t)nt;
	/* whole prompts now: as in layer_prefill() */
	ret = chnorm(c, KVK_CHN_STATS, c->pk, (uint32_t)nt, c->nkv, nf, c->plb,
		     c->pstart);
	ret = ret ?: chnorm(c, KVK_CHN_KEYS, c->pk, (uint32_t)nt, c->nkv, nf,
			    c->plb, c->pstart);
	ret = ret ?: rotate(c, c->pk, (uint32_t)nt, c->nkv);
	ret = ret ?: rotate(c, c->pv, (uint32_t)nt, c->nkv);
	if (ret)
		return ret;
	a = kvp_prompt_args(c, c->plb, c->palpha);
	a.nr_seqs = nf;
	a.max_len = mx;
	a.k = c->pk;
	a.v = c->pv;
	a.seq_start = c->pstart;
	a.scores = c->ps;
	a.counts = c->counts;
	a.err = &err;
	ret = kvk_compress_prompt_cpu(&a, NULL);
	return ret ?: err;
}

static int layer_prefill(struct kvp *c, const struct llm_batch *b, int layer,
			 const struct llm_kv_io *io)
{
	const uint32_t *lb = c->lb + (size_t)layer * c->n;
	struct kvk_compress_prompt a = kvp_prompt_args(c, lb, c->salpha);
	int32_t err = 0;
	int ret;

	gather(c, io, true);
	prefill_attend(c, b, layer);
	scatter(c, io);
	if (c->staged)
		return prefill_store_staged(c, b, layer);
	/*
	 * the prompt attended as it is; its keys stored normalized (knorm,
	 * by their own statistics), its keys and values rotated (hadamard)
	 */
	ret = chnorm(c, KVK_CHN_STATS, c->k, c->ntok, c->nkv, (uint32_t)c->n,
		     lb, c->sstart);
	ret = ret ?: chnorm(c, KVK_CHN_KEYS, c->k, c->ntok, c->nkv,
			    (uint32_t)c->n, lb, c->sstart);
	ret = ret ?: rotate(c, c->k, c->ntok, c->nkv);
	ret = ret ?: rotate(c, c->v, c->ntok, c->nkv);
	if (ret)
		return ret;
	a.k = c->k;
	a.v = c->v;
	a.seq_start = c->sstart;
	a.scores = c->scores;
	a.counts = c->counts;
	a.err = &err;
	ret = kvk_compress_prompt_cpu(&a, NULL);
	ret = ret ?: err;
	if (!ret && c->pol.topk && (uint32_t)layer >= c->pol.dense)
		ret = sel_summarize(c, lb, true);
	return ret;
}

static int layer_decode(struct kvp *c, int layer, const struct llm_kv_io *io)
{
	const uint32_t *lb = c->lb + (size_t)layer * c->n;
	struct kvk_compress_decode d = kvp_decode_args(c, lb, c->pos,
						       c->salpha);
	struct kvk_attn_args a = kvp_attn_args(c, (uint32_t)c->n, lb);
	int32_t err = 0;
	int ret;

	gather(c, io, true);
	/*
	 * normalized and rotated keys and rotated values stored, queries
	 * scaled and rotated alike attend to them
	 */
	ret = chnorm(c, KVK_CHN_KEYS, c->k, c->ntok, c->nkv, (uint32_t)c->n,
		     lb, NULL);
	ret = ret ?: chnorm(c, KVK_CHN_QUERIES, c->q, c->ntok, c->nh,
			    (uint32_t)c->n, lb, NULL);
	ret = ret ?: rotate(c, c->k, c->ntok, c->nkv);
	ret = ret ?: rotate(c, c->v, c->ntok, c->nkv);
	ret = ret ?: rotate(c, c->q, c->ntok, c->nh);
	if (ret)
		return ret;
	d.k = c->k;
	d.v = c->v;
	d.actions = c->act;
	d.err = &err;
	ret = kvk_compress_decode_cpu(&d, NULL);
	if (!ret)
		ret = err;
	if (ret)
		return ret;
	a.q = c->q;
	a.out = c->o;
	if (c->pol.topk && (uint32_t)layer >= c->pol.dense)
		ret = sel_pages(c, &a, lb);
	ret = ret ?: attend(c, &a, lb);
	/* the output of rotated values, rotated back */
	ret = ret ?: rotate(c, c->o, c->ntok, c->nh);
	if (!ret)
		scatter(c, io);
	return ret;
}

static int kvp_layer(struct llm_kv *kv, const struct llm_batch *b, int layer,
		     const struct llm_kv_io *io, void *stream)
{
	struct kvp *c = to_kvp(kv);
	int ret;

	if (!c->kind || !b || b->n_seq != c->n || layer < 0 ||
	    (uint32_t)layer >= c->nl || !io || !io->q || !io->k || !io->v ||
	    !io->out)
		return -EINVAL;
#ifdef KVMM_HAVE_CUDA
	if (c->dev)
		return kvp_dev_layer(c, layer, io, stream);
#endif
	(void)stream;
	if (io->odt != KVK_F32)
		return -EINVAL;
	ret = host_reserve(c, c->ntok);
	if (ret)
		return ret;
	return c->kind == LLM_KV_PREFILL ? layer_prefill(c, b, layer, io)
					 : layer_decode(c, layer, io);
}

/* ---- end: trim, evict ---- */

static int kvp_end(struct llm_kv *kv, const struct llm_batch *b,
		   void *stream)
{
	struct kvp *c = to_kvp(kv);
	bool kvc = c->pol.kind == LLM_POLICY_KVCOMPRESS;
	uint32_t n = 0;
	int ret = 0, kind = c->kind;

	if (!kind || !b || b->n_seq != c->n)
		return -EINVAL;
	c->kind = 0;
	if (kind == LLM_KV_PREFILL) {
		uint32_t nf = 0;

		/* prompts that ended: their pages trimmed (chunks before a
		 * prompt's last one hold no pages) */
		for (int i = 0; i < b->n_seq; i++)
			if (c->sflag[i] & KVP_FIN)
				c->ss[nf++] = (struct kvmm_step_slot){
					.slot = c->slots[i] };
		ret = nf ? submit(c, KVMM_OP_TRIM, nf, 0) : 0;
		for (int i = 0; !ret && i < b->n_seq; i++) {
			struct kvp_seq *s = &c->seq[b->seq[i]];

			if (!(c->sflag[i] & KVP_FIN))
				continue;
			if (c->sflag[i] & KVP_CHUNK)
				stage_drop(c, b->seq[i]);
			s->decoding = 1;
			s->len = (uint32_t)(llm_kv_len(kv, b->seq[i]) +
					    b->n_tok[i]);
			if (kvc)
				c->ss[n++] = evict_slot(c, s, s->len);
		}
	} else {
		for (int i = 0; i < b->n_seq; i++) {
			struct kvp_seq *s = &c->seq[b->seq[i]];

			s->len++;
			if (kvc && ++s->steps >= c->pol.interval) {
				s->steps = 0;
				c->ss[n++] = evict_slot(c, s, s->len);
			}
		}
	}
	if (!ret && n)
		ret = submit(c, KVMM_OP_EVICT, n, c->pol.sinks);
#ifdef KVMM_HAVE_CUDA
	if (!ret && c->dev)
		ret = kvp_dev_end(c, stream);
#endif
	(void)stream;
	return ret;
}

static int kvp_status(struct llm_kv *kv)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_fence f = { .space = c->space };
	int ret = 0;

#ifdef KVMM_HAVE_CUDA
	if (c->dev)
		ret = kvp_dev_status(c);
#endif
	if (!ioc(c, KVMM_IOC_FENCE, &f) && f.error && !ret)
		ret = f.error;
	return ret;
}

/**
 * llm_kv_policy_seq_alpha() - diffkv thresholds of one sequence
 * @kv: a policy cache for diffkv
 * @seq: sequence
 * @prune: alpha_prune of the sequence, 0 .. 1
 * @quant: alpha_quant of the sequence, at least @prune
 *
 * The sequence's next prompt and decode steps classify with these instead
 * of the policy's (the per-sequence thresholds the compress kernels take);
 * tiers, window and score window stay the cache's. Kept across the
 * sequence's reuse until set again.
 *
 * Return: 0, or -EINVAL (another policy, a sequence or threshold out of
 * range; nothing changed).
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

/**
 * llm_kv_policy_step() - one layer of one sequence's step, for callers
 * without an executor (tests, tools)
 * @kv: a host policy cache
 * @seq: sequence
 * @layer: layer, in order 0 .. n_layers - 1 within a step
 * @pos: position of the first new token: 0 with the whole prompt, else
 *	the sequence's length with one token
 * @ntok: new tokens
 * @q: [ntok] rows of n_heads * head_dim query floats, @ldq apart (RoPE
 *	applied)
 * @ldq: floats between rows of @q
 * @k: [ntok] rows of n_kv_heads * head_dim key floats, @ldkv apart (RoPE
 *	applied)
 * @v: likewise, values
 * @ldkv: floats between rows of @k and @v
 * @out: [ntok] rows of n_heads * head_dim, @ldo apart: the attention
 * @ldo: floats between rows of @out
 *
 * A batch of one sequence through begin() (at layer 0), layer() and end()
 * (at the last layer, which also commits the tokens).
 *
 * Return: 0; -EINVAL for arguments out of range or a position other than
 * the sequence's length; -EOPNOTSUPP for a device cache; the ops' errors.
 */
int llm_kv_policy_step(struct llm_kv *kv, int seq, int layer, int pos,
		       int ntok, const float *q, long ldq, const float *k,
		       const float *v, long ldkv, float *out, long ldo)
{
	struct llm_batch b = { 1, &seq, &ntok, NULL };
	struct llm_kv_io io = { q, ldq, k, v, ldkv, out, ldo, KVK_F32 };
	int ret;

	if (!is_kvp(kv) || kv->device)
		return is_kvp(kv) ? -EOPNOTSUPP : -EINVAL;
	if (seq < 0 || seq >= kv->n_seq || ntok < 1 || layer < 0 ||
	    layer >= kv->n_layers)
		return -EINVAL;
	if (layer == 0) {
		if (pos == 0)
			llm_kv_reset(kv, seq);
		if (pos != llm_kv_len(kv, seq))
			return -EINVAL;
		ret = kvp_begin(kv, &b, NULL);
		if (ret)
			return ret;
	}
	ret = kvp_layer(kv, &b, layer, &io, NULL);
	if (ret || layer + 1 < kv->n_layers)
		return ret;
	ret = kvp_end(kv, &b, NULL);
	if (!ret)
		llm_kv_commit(kv, seq, ntok);
	return ret;
}

/**
 * llm_kv_policy_release() - give a sequence's pages back now
 * @kv: a policy cache
 * @seq: sequence
 *
 * Its tokens are forgotten (llm_kv_reset()). A device cache enqueues the
 * release on the stream of its last step.
 *
 * Return: 0, -EINVAL, or the uapi's error (nothing changed).
 */
int llm_kv_policy_release(struct llm_kv *kv, int seq)
{
	struct kvp *c = to_kvp(kv);
	int ret;

	if (!is_kvp(kv) || seq < 0 || seq >= kv->n_seq)
		return -EINVAL;
	ret = release(c, &seq, 1);
	if (!ret) {
		stage_drop(c, seq);
		llm_kv_reset(kv, seq);
	}
	return ret;
}

/**
 * llm_kv_policy_usage() - what sequence @seq holds, and what full would
 * @kv: a policy cache
 * @seq: sequence
 * @u: filled
 *
 * Asks the space (KVMM_IOC_SEQ_STATS: a device cache waits for its device
 * work).
 *
 * Return: 0, -EINVAL, or the uapi's error.
 */
int llm_kv_policy_usage(const struct llm_kv *kv, int seq,
			struct llm_kv_usage *u)
{
	struct kvp *c = (struct kvp *)kv;
	struct kvmm_seq_info in = { 0 };
	struct kvmm_seq_stats st = { .count = 1 };
	uint32_t len;
	int ret;

	if (!is_kvp(kv) || seq < 0 || seq >= kv->n_seq || !u)
		return -EINVAL;
	memset(u, 0, sizeof(*u));
	u->page_size = c->map.page_size;
	u->full_page_size = c->full_page_size;
	if (!c->seq[seq].live)
		return 0;
	len = c->seq[seq].len;
	in.slot = c->seq[seq].slot;
	st.space = c->space;
	st.seqs = (uint64_t)(uintptr_t)&in;
	ret = ioc(c, KVMM_IOC_SEQ_STATS, &st);
	if (ret)
		return ret;
	for (int t = 0; t < 2; t++) {
		const struct kvk_attn_tier *a = &c->at[t];

		u->tokens[t] = in.tokens[t];
		u->pages[t] = in.pages[t];
		u->bits += in.tokens[t] *
			   (c->hd * (a->kbits + a->vbits) +
			    8 * (kvq_meta_bytes(a->kbits, a->kgroups) +
				 kvq_meta_bytes(a->vbits, a->vgroups)));
	}
	u->pruned = (uint64_t)len * c->lps - u->tokens[0] - u->tokens[1];
	u->full_pages = full_pages(c, len) * c->lps;
	u->full_bits = (uint64_t)len * c->lps * c->hd * 32;
	return 0;
}

/**
 * llm_kv_policy_check() - the subsystem's invariants over the cache's space
 * @kv: a policy cache
 * @why: the first violation in words
 * @len: bytes of @why
 *
 * Return: 0, -EUCLEAN (a broken invariant), or -EINVAL for another cache.
 */
int llm_kv_policy_check(const struct llm_kv *kv, char *why, size_t len)
{
	const struct kvp *c = (const struct kvp *)kv;

	if (!is_kvp(kv))
		return -EINVAL;
	return kvshim_check(c->fd, c->space, why, len);
}

/**
 * llm_kv_policy_space() - the kvmm handle and space of a policy cache
 * @kv: a policy cache
 * @fd: out: the handle (kvshim_ioctl())
 * @space: out: the space
 *
 * For callers that ask the space themselves (KVMM_IOC_STATS, compaction,
 * budgets): the cache owns both; never destroy or release through them.
 *
 * Return: 0, or -EINVAL for another cache.
 */
int llm_kv_policy_space(const struct llm_kv *kv, int *fd, uint32_t *space)
{
	const struct kvp *c = (const struct kvp *)kv;

	if (!is_kvp(kv) || !fd || !space)
		return -EINVAL;
	*fd = c->fd;
	*space = c->space;
	return 0;
}

/**
 * DOC: swap
 *
 * A decoding sequence can leave the cache for the space's swap file and
 * come back later, in another slot, exactly as it was (the serving
 * scheduler's preemption by swap, Documentation/serve/index.rst). Its
 * pages go through the uapi (KVMM_IOC_SEQ_SWAP_OUT, which frees them only
 * once the file holds them, and KVMM_IOC_SEQ_SWAP_IN); what the cache
 * keeps of a sequence besides its pages travels in struct llm_kv_swap:
 * its length, its steps since the last eviction, its thresholds and,
 * under knorm, its lists' key statistics. Under full:topk the page
 * summaries of the new page ids are computed again from the pages. Host
 * caches only: a device space answers -EOPNOTSUPP.
 */

/**
 * llm_kv_policy_swap_setup() - give the cache's space a swap file
 * @kv: a policy cache
 * @dir: directory where the file is made (and unlinked at once: nothing
 *	stays behind); NULL closes the file
 * @direct: out, or NULL: 1 when the file is written with O_DIRECT
 *
 * Return: 0; -EINVAL; -EOPNOTSUPP for a device cache; -EBUSY (a file
 * already open, or sequences swapped out at a close); the uapi's error
 * (the directory's, e.g. -ENOENT, -EACCES).
 */
int llm_kv_policy_swap_setup(struct llm_kv *kv, const char *dir,
			     int *direct)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_swap_setup a = { 0 };
	int ret;

	if (!is_kvp(kv))
		return -EINVAL;
	if (kv->device)
		return -EOPNOTSUPP;
	a.space = c->space;
	a.dir = (uint64_t)(uintptr_t)dir;
	ret = ioc(c, KVMM_IOC_SWAP_SETUP, &a);
	if (!ret && direct)
		*direct = (int)a.direct;
	return ret;
}

/**
 * llm_kv_policy_swap_out() - write a decoding sequence to the swap file
 * and give its slot and pages back
 * @kv: a host policy cache with a swap file (llm_kv_policy_swap_setup())
 * @seq: a sequence past its prompt
 * @sw: out: what llm_kv_policy_swap_in() needs
 *
 * The pages are freed only once the file holds them in full.
 *
 * Return: 0 (@seq is free: llm_kv_len() 0); -EINVAL (another cache, a
 * sequence out of range or not decoding); -EOPNOTSUPP (a device cache);
 * -ENOENT (no swap file); -ENOMEM; the file's error (-EIO for a failed or
 * short write). On error @seq, its pages and their contents are as they
 * were.
 */
int llm_kv_policy_swap_out(struct llm_kv *kv, int seq,
			   struct llm_kv_swap *sw)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_seq_swap a = { 0 };
	struct kvp_seq *s;
	size_t nchn;
	float *chn = NULL;
	int ret;

	if (!is_kvp(kv) || seq < 0 || seq >= kv->n_seq || !sw)
		return -EINVAL;
	if (kv->device)
		return -EOPNOTSUPP;
	s = &c->seq[seq];
	if (!s->live || !s->decoding || llm_kv_prefilling(kv, seq) ||
	    s->len != (uint32_t)llm_kv_len(kv, seq))
		return -EINVAL;
	nchn = (size_t)c->lps * 2 * c->hd;
	if (c->pol.knorm) {
		chn = malloc(nchn * sizeof(float));
		if (!chn)
			return -ENOMEM;
		memcpy(chn, c->chn + (size_t)s->slot * nchn,
		       nchn * sizeof(float));
	}
	a.space = c->space;
	a.slot = s->slot;
	ret = ioc(c, KVMM_IOC_SEQ_SWAP_OUT, &a);
	if (ret) {
		free(chn);
		return ret;
	}
	*sw = (struct llm_kv_swap){
		.handle = a.handle, .bytes = a.bytes, .pages = a.pages,
		.len = s->len, .steps = s->steps,
		.alpha = { c->alpha[seq][0], c->alpha[seq][1] }, .chn = chn,
	};
	*s = (struct kvp_seq){ 0 };
	stage_drop(c, seq);
	llm_kv_reset(kv, seq);
	return 0;
}

/**
 * llm_kv_policy_swap_in() - bring a swapped sequence back
 * @kv: the cache llm_kv_policy_swap_out() wrote it from
 * @seq: a free sequence (llm_kv_len() 0, no pages)
 * @sw: from llm_kv_policy_swap_out(); emptied on success
 *
 * @seq then holds the same tokens in the same table positions (new pages)
 * and decodes on as the sequence would have.
 *
 * Return: 0; -EINVAL (a sequence in use, no record); -EOPNOTSUPP;
 * -ENOSPC (the space's budget has no room for it now) or -EBUSY (no free
 * slot): nothing changed, try later or drop it; -ENOMEM; the file's
 * error. On error @sw stays valid.
 */
int llm_kv_policy_swap_in(struct llm_kv *kv, int seq,
			  struct llm_kv_swap *sw)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_seq_swap a = { 0 };
	size_t nchn;
	int ret;

	if (!is_kvp(kv) || seq < 0 || seq >= kv->n_seq || !sw ||
	    !sw->handle || c->seq[seq].live || llm_kv_len(kv, seq) ||
	    (c->pol.knorm && !sw->chn))
		return -EINVAL;
	if (kv->device)
		return -EOPNOTSUPP;
	a.space = c->space;
	a.handle = sw->handle;
	ret = ioc(c, KVMM_IOC_SEQ_SWAP_IN, &a);
	if (ret)
		return ret;
	c->seq[seq] = (struct kvp_seq){ .slot = a.slot, .live = 1,
					.decoding = 1, .len = sw->len,
					.steps = sw->steps };
	c->alpha[seq][0] = sw->alpha[0];
	c->alpha[seq][1] = sw->alpha[1];
	kv->len[seq] = (int)sw->len;
	if (kv->prompt)
		kv->prompt[seq] = 0;
	nchn = (size_t)c->lps * 2 * c->hd;
	if (c->pol.knorm)
		memcpy(c->chn + (size_t)a.slot * nchn, sw->chn,
		       nchn * sizeof(float));
	if (c->pol.topk) {
		int n = c->n;

		/* summaries of the new page ids, from the pages */
		c->n = 1;
		for (uint32_t l = 0; !ret && l < c->nl; l++) {
			uint32_t lb = (a.slot * c->nl + l) * c->nkv;

			ret = sel_summarize(c, &lb, true);
		}
		c->n = n;
	}
	free(sw->chn);
	*sw = (struct llm_kv_swap){ 0 };
	return ret;
}

/**
 * llm_kv_policy_swap_drop() - forget a swapped sequence: its file range
 * goes back, its tokens are lost (the caller recomputes them)
 * @kv: the cache it was swapped out of
 * @sw: its record, emptied; one without a handle is only emptied
 *
 * Return: 0, or the uapi's error (the record is emptied all the same).
 */
int llm_kv_policy_swap_drop(struct llm_kv *kv, struct llm_kv_swap *sw)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_seq_swap a = { 0 };
	int ret = 0;

	if (!is_kvp(kv) || !sw)
		return -EINVAL;
	if (sw->handle) {
		a.space = c->space;
		a.handle = sw->handle;
		a.flags = KVMM_SWAP_DISCARD;
		ret = ioc(c, KVMM_IOC_SEQ_SWAP_IN, &a);
	}
	free(sw->chn);
	*sw = (struct llm_kv_swap){ 0 };
	return ret;
}

/**
 * llm_kv_policy_geometry() - pages and tokens per page of a policy cache
 * @kv: a policy cache
 * @g: filled
 *
 * Read from the space's map: no uapi call.
 *
 * Return: 0, or -EINVAL for another cache.
 */
int llm_kv_policy_geometry(const struct llm_kv *kv,
			   struct llm_kv_geometry *g)
{
	const struct kvp *c = (const struct kvp *)kv;

	if (!is_kvp(kv) || !g)
		return -EINVAL;
	g->lists = c->lps;
	g->nr_tiers = c->map.nr_tiers;
	g->tokens_per_page[0] = c->map.tiers[0].tokens;
	g->tokens_per_page[1] = c->map.tiers[1].tokens;
	g->page_size = c->map.page_size;
	g->pages_per_granule = c->map.pages_per_granule;
	g->budget_pages = kv->bytes / KVMM_GRANULE_SIZE *
			  c->map.pages_per_granule;
	g->alpha[0] = c->pol.alpha_prune;
	g->alpha[1] = c->pol.alpha_quant;
	return 0;
}

/* pages of the space, per tier */
static int kvp_stats(struct llm_kv *kv, struct llm_kv_stats *st)
{
	struct kvp *c = to_kvp(kv);
	struct kvmm_stats s = { .space = c->space };
	int ret;

	memset(st, 0, sizeof(*st));
	ret = ioc(c, KVMM_IOC_STATS, &s);
	if (ret)
		return ret;
	st->paged = true;
	st->page_size = s.page_size;
	st->tokens_per_page = c->at[0].tokens;
	st->pages_total = s.pages_total;
	st->pages_used[0] = s.pages_used[0];
	st->pages_used[1] = s.pages_used[1];
	st->bytes = (s.pages_used[0] + s.pages_used[1]) * s.page_size;
	st->budget = kv->bytes;
	st->tokens[0] = s.tokens[0];
	st->tokens[1] = s.tokens[1];
	st->token_slots = s.pages_used[0] * c->at[0].tokens +
			  s.pages_used[1] * c->at[1].tokens;
	return 0;
}

static void kvp_destroy(struct llm_kv *kv)
{
	struct kvp *c = to_kvp(kv);

	if (!c)
		return;
	kvp_dev_free(c);
	if (c->fd >= 0)
		kvshim_close(c->fd);
	if (c->threads)
		llm_pool_destroy(c->threads);
	free(c->seq);
	free(c->alpha);
	free(c->slots);
	free(c->ss);
	free(c->adm);
	free(c->lb);
	free(c->pos);
	free(c->salpha);
	free(c->sstart);
	free(c->k);
	free(c->v);
	free(c->q);
	free(c->o);
	free(c->scores);
	free(c->p);
	free(c->acc);
	free(c->counts);
	free(c->act);
	free(c->sel_sum);
	free(c->sel_tab);
	free(c->sel_ntok);
	free(c->sel_upd);
	for (int i = 0; c->stage && i < c->kv.n_seq; i++)
		stage_drop(c, i);
	free(c->stage);
	free(c->sflag);
	free(c->pk);
	free(c->pv);
	free(c->ps);
	free(c->pstart);
	free(c->plb);
	free(c->palpha);
	free(c->kv.prompt);
	free(c->chn);	/* a device cache's went in kvp_dev_free() */
	free(c->kv.len);
	free(c);
}

static const struct llm_kv_ops kvp_ops = {
	.begin = kvp_begin,
	.layer = kvp_layer,
	.end = kvp_end,
	.status = kvp_status,
	.stats = kvp_stats,
	.destroy = kvp_destroy,
};

/*
 * the space: the policy's tiers, every sequence slot, a budget of @budget
 * bytes (0: every sequence at max_tok at the smaller tier, the worst case)
 */
static int space_make(struct kvp *c, const struct llm_config *cfg,
		      const struct llm_kv_policy_opts *o, char *err,
		      size_t errlen)
{
	struct kvmm_tier fp16 = { 16, 16, 1, 1 };
	struct kvmm_tier tiers[2] = { c->pol.hi, c->pol.lo };
	uint32_t nt = c->pol.kind == LLM_POLICY_DIFFKV ? 2 : 1;
	struct kvmm_space_create sc = { 0 };
	uint32_t ps, tok[2], mt;
	uint64_t pages, gran, budget = o->budget;
	int ret;

	ret = kvmm_geometry(cfg->head_dim, &fp16, 1, &c->full_page_size,
			    &c->full_tpp);
	ret = ret ?: kvmm_geometry(cfg->head_dim, tiers, nt, &ps, tok);
	if (ret) {
		snprintf(err, errlen, "head_dim %u has no page geometry",
			 cfg->head_dim);
		return -EINVAL;
	}
	mt = tok[0] < tok[nt - 1] ? tok[0] : tok[nt - 1];
	pages = (uint64_t)o->n_seq * c->lps * ((uint64_t)o->max_tok / mt + 4);
	gran = pages / (KVMM_GRANULE_SIZE / ps) + 2;
	if (!budget)
		budget = gran * KVMM_GRANULE_SIZE;
	budget = (budget + KVMM_GRANULE_SIZE - 1) / KVMM_GRANULE_SIZE *
		 KVMM_GRANULE_SIZE;
	c->fd = kvshim_open();
	if (c->fd < 0) {
		snprintf(err, errlen, "kvmm: %s", strerror(-c->fd));
		return c->fd;
	}
	sc.backend = o->device < 0 ? KVMM_BACKEND_HOST : KVMM_BACKEND_DEVICE;
	sc.nr_layers = cfg->n_layers;
	sc.nr_kv_heads = cfg->n_kv_heads;
	sc.head_dim = cfg->head_dim;
	sc.nr_tiers = nt;
	sc.tiers[0] = tiers[0];
	if (nt > 1)
		sc.tiers[1] = tiers[1];
	sc.max_seqs = (uint32_t)o->n_seq;
	sc.max_tokens = (uint32_t)o->max_tok;
	sc.va_bytes = budget;
	sc.budget_bytes = budget;
	ret = ioc(c, KVMM_IOC_SPACE_CREATE, &sc);
	if (ret) {
		snprintf(err, errlen, "kvmm space of %.2f GB for %d x %d "
			 "tokens: %s", budget / 1e9, o->n_seq, o->max_tok,
			 strerror(-ret));
		return ret;
	}
	c->space = sc.space;
	c->kv.bytes = budget;
	c->map = (struct kvmm_space_map){ .space = c->space };
	ret = ioc(c, KVMM_IOC_SPACE_MAP, &c->map);
	if (ret) {
		snprintf(err, errlen, "kvmm map: %s", strerror(-ret));
		return ret;
	}
	c->at[0] = tier_of(&c->map.tiers[0]);
	c->at[1] = tier_of(&c->map.tiers[1]);
	return 0;
}

/**
 * llm_kv_policy_open() - a policy cache
 * @c: model configuration
 * @p: policy (llm_policy_parse())
 * @o: sequences, capacity, backend and budget
 * @out: the cache; llm_kv_destroy() frees it
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -EINVAL (a shape the kernels do not take: head_dim other than
 * 64, 128 or (host) 256, more than 8 query heads per kv-head), -ENOMEM,
 * -ENODEV (no device for a device cache), or the uapi's error.
 */
int llm_kv_policy_open(const struct llm_config *c, const struct llm_policy *p,
		       const struct llm_kv_policy_opts *o,
		       struct llm_kv **out, char *err, size_t errlen)
{
	bool host;
	struct kvp *k;
	int ret, nth;

	if (!c || !p || !o || !out || o->n_seq < 1 || o->max_tok < 1 ||
	    o->n_threads < 0)
		return -EINVAL;
	host = o->device < 0;
	if ((c->head_dim != 64 && c->head_dim != 128 &&
	     (c->head_dim != 256 || !host)) ||
	    !c->n_kv_heads || c->n_heads % c->n_kv_heads ||
	    c->n_heads / c->n_kv_heads > KVK_ATTN_MAX_GROUP) {
		snprintf(err, errlen, "the policy cache takes head_dim 64, 128 "
			 "or (on the CPU) 256 and at most %d query heads per "
			 "kv-head", KVK_ATTN_MAX_GROUP);
		return -EINVAL;
	}
	if (p->topk && (!host || p->kind != LLM_POLICY_FULL)) {
		snprintf(err, errlen, "topk: sparse attention runs in host "
			 "caches of the full policy only");
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->fd = -1;
	k->kv.ops = &kvp_ops;
	k->kv.n_seq = o->n_seq;
	k->kv.n_layers = (int)c->n_layers;
	k->kv.n_heads = (int)c->n_heads;
	k->kv.n_kv_heads = (int)c->n_kv_heads;
	k->kv.head_dim = (int)c->head_dim;
	k->kv.max_tok = o->max_tok;
	k->kv.device = !host;
	k->kv.id = __atomic_add_fetch(&kvp_ids, 1, __ATOMIC_RELAXED);
	k->pol = *p;
	k->nh = c->n_heads;
	k->nkv = c->n_kv_heads;
	k->hd = c->head_dim;
	k->nl = c->n_layers;
	k->lps = c->n_layers * c->n_kv_heads;
	k->group = c->n_heads / c->n_kv_heads;
	k->scale = 1.0f / sqrtf((float)c->head_dim);
	ret = space_make(k, c, o, err, errlen);
	if (ret)
		goto out_free;
	k->kv.len = calloc(o->n_seq, sizeof(int));
	k->seq = calloc(o->n_seq, sizeof(*k->seq));
	k->alpha = calloc(o->n_seq, sizeof(*k->alpha));
	k->slots = calloc(o->n_seq, sizeof(*k->slots));
	k->ss = calloc(o->n_seq, sizeof(*k->ss));
	k->adm = calloc(o->n_seq, sizeof(*k->adm));
	k->lb = calloc((size_t)o->n_seq * c->n_layers, sizeof(*k->lb));
	k->pos = calloc(o->n_seq, sizeof(*k->pos));
	k->salpha = calloc((size_t)o->n_seq * 2, sizeof(float));
	k->sstart = calloc(o->n_seq + 1, sizeof(*k->sstart));
	k->sflag = calloc(o->n_seq, 1);
	if (!k->kv.len || !k->seq || !k->alpha || !k->slots || !k->ss ||
	    !k->adm || !k->lb || !k->pos || !k->salpha || !k->sstart ||
	    !k->sflag)
		goto out_nomem;
	for (int i = 0; i < o->n_seq; i++) {
		k->alpha[i][0] = p->alpha_prune;
		k->alpha[i][1] = p->alpha_quant;
	}
#ifdef KVMM_HAVE_CUDA
	if (!host) {
		ret = kvp_dev_init(k, o->device, err, errlen);
		if (ret)
			goto out_free;
		*out = &k->kv;
		return 0;
	}
#endif
	if (!host) {
		snprintf(err, errlen, "a device cache needs a CUDA build");
		ret = -ENODEV;
		goto out_free;
	}
	nth = o->n_threads ? o->n_threads : 1;
	if (o->pool) {
		k->threads = llm_pool_get(o->pool);
		nth = llm_pool_threads(o->pool);
		ret = 0;
	} else {
		ret = llm_pool_create(nth, &k->threads);
	}
	if (ret) {
		snprintf(err, errlen, "threads: %s", strerror(-ret));
		goto out_free;
	}
	if (p->knorm) {
		k->chn = calloc((size_t)o->n_seq * k->lps * 2 * k->hd,
				sizeof(float));
		if (!k->chn)
			goto out_nomem;
	}
	k->p = malloc((size_t)o->max_tok * nth * KVK_HPREFILL_ROWS *
		      sizeof(float));
	k->counts = malloc((size_t)o->n_seq * k->nkv * KVK_TOK_NR *
			   sizeof(uint32_t));
	k->act = malloc((size_t)o->n_seq * k->nkv * sizeof(*k->act));
	if (!k->p || !k->counts || !k->act)
		goto out_nomem;
	/* prompts in chunks (llm_kv_set_prompt()): host caches only (the
	 * device cache's layer takes whole prompts), and not under topk,
	 * whose page summaries follow whole prompts */
	if (host && !p->topk) {
		k->kv.prompt = calloc(o->n_seq, sizeof(int));
		k->stage = calloc(o->n_seq, sizeof(*k->stage));
		k->pstart = calloc(o->n_seq + 1, sizeof(uint32_t));
		k->plb = calloc(o->n_seq, sizeof(uint32_t));
		k->palpha = calloc((size_t)o->n_seq * 2, sizeof(float));
		if (!k->kv.prompt || !k->stage || !k->pstart || !k->plb ||
		    !k->palpha)
			goto out_nomem;
	}
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
 * @n_seq: sequences
 * @max_tok: tokens one sequence may reach
 * @n_threads: workers of the attention (>= 1)
 * @out: the cache; llm_kv_destroy() frees it
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * llm_kv_policy_open() with a host space whose budget holds every
 * sequence at @max_tok.
 *
 * Return: as llm_kv_policy_open().
 */
int llm_kv_policy_create(const struct llm_config *c,
			 const struct llm_policy *p, int n_seq, int max_tok,
			 int n_threads, struct llm_kv **out, char *err,
			 size_t errlen)
{
	struct llm_kv_policy_opts o = { .n_seq = n_seq, .max_tok = max_tok,
					.n_threads = n_threads, .device = -1 };

	if (n_threads < 1)
		return -EINVAL;
	return llm_kv_policy_open(c, p, &o, out, err, errlen);
}

/**
 * llm_kv_policy_create_cuda() - a cache that applies @p on a CUDA device,
 * for the CUDA executor
 * @c: model configuration
 * @p: policy
 * @n_seq: sequences
 * @max_tok: tokens one sequence may reach
 * @device: CUDA device ordinal, the executor's
 * @out: the cache; llm_kv_destroy() frees it
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: as llm_kv_policy_open(); -EINVAL for a negative @device; head
 * dimension 256 is -EINVAL here (the prefill kernel takes 64 and 128).
 */
int llm_kv_policy_create_cuda(const struct llm_config *c,
			      const struct llm_policy *p, int n_seq,
			      int max_tok, int device, struct llm_kv **out,
			      char *err, size_t errlen)
{
	struct llm_kv_policy_opts o = { .n_seq = n_seq, .max_tok = max_tok,
					.device = device };

	if (device < 0) {
		snprintf(err, errlen, "device %d", device);
		return -EINVAL;
	}
	return llm_kv_policy_open(c, p, &o, out, err, errlen);
}
