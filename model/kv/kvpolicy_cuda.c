// SPDX-License-Identifier: MIT
/*
 * kvpolicy_cuda.c - the policy cache on a CUDA device: the same policy,
 * allocator calls and order of operations as the host cache (kvpolicy.c),
 * with the CUDA kernels in place of their CPU references.
 *
 * DOC: device policy cache
 *
 * The pages are device memory (a runtime context of the CUDA backend); the
 * pool's bookkeeping stays on the host, where the allocator runs. The
 * kernels read and write mirrors of the three arrays they need: the page
 * tables, the pages per tier and the tokens per tier of every list. A step
 * keeps them in agreement with two copies per sequence and step, not one
 * per layer:
 *
 * - before layer 0 the host admits (prompt) or appends pages (decode) and
 *   uploads the sequence's rows of the three arrays (at decode only when
 *   the append added a page: otherwise they have not changed);
 * - each layer's kernels change only that layer's token counts, on the
 *   device (nothing on the host reads them meanwhile);
 * - after the last layer the sequence's token counts come back, then the
 *   host trims (prompt) or evicts and shrinks (kvcompress) and uploads the
 *   rows it changed.
 *
 * Per layer, a prompt runs llm_convert_cuda() (fp32 rows to the activation
 * type), kvk_prefill_cuda() with the policy's score mode, and
 * kvk_compress_prompt_cuda() on the fp32 keys and values (so that both
 * backends quantize the same numbers); a decode token runs
 * kvk_compress_decode_cuda() and kvk_attn_decode_cuda() with its score
 * update. kvcompress's eviction runs kvk_evict_cuda(). Errors the kernels
 * report (no room in a list) are read back after the last layer.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "forward_cuda.h"
#include "kvevict.h"
#include "kvk_cudart.h"
#include "kvpolicy.h"
#include "kvpolicy_int.h"
#include "prefill.h"

/*
 * struct kvp_dev - device mirrors and scratch of one cache. Sizes: lists =
 * every list of the pool, lps = lists per slot, T = max_tok.
 */
struct kvp_dev {
	int device;
	uint32_t *tables;	/* [lists][width] */
	uint32_t *npages;	/* [lists][2] */
	uint32_t *ntokens;	/* [lists][2] */
	uint32_t *small;	/* [n_seq] blocks of KVD_LB + n_layers words */
	int32_t *err;		/* [n_seq][n_layers] per-layer kernel errors */
	uint32_t *counts;	/* [nkv][KVK_TOK_NR] */
	struct kvk_compress_action *act; /* [nkv] */
	float *scores;		/* [T][nkv] */
	float *lse;		/* [T][nh] */
	uint16_t *qh, *kh, *vh; /* [T][nh or nkv][hd] in the activation type */
	uint32_t *evicted;	/* [lps] */
	void *evict_scratch;	/* kvk_evict_scratch_bytes(1, lps) */
	void *work;		/* decode attention's scratch */
	size_t work_bytes;
	int32_t *herr;		/* [n_layers] host copy of err */
	uint32_t *hlb;		/* [n_layers] host list bases */
	void *st;		/* cudaStream_t of the step in progress */
};

/*
 * words of a sequence slot's block of struct kvp_dev.small: each slot has its
 * own, since the sequences of a batch interleave layer by layer
 */
enum {
	KVD_START = 0,		/* seq_start[2] of the prompt */
	KVD_POS = 2,		/* the decode token's position */
	KVD_QUOTA = 3,		/* eviction: pages to free */
	KVD_FROM = 4,		/* eviction: first protected position */
	KVD_LB = 5,		/* [n_layers]: the slot's list base per layer,
				 * uploaded once by kvp_dev_init() */
};

static uint32_t *slot_small(const struct kvp *c, uint32_t s)
{
	return c->dev->small + (size_t)s * (KVD_LB + c->kv.n_layers);
}

static int32_t *slot_err(const struct kvp *c, uint32_t s)
{
	return c->dev->err + (size_t)s * c->kv.n_layers;
}

static int copy_in(void *dst, const void *src, size_t bytes, void *st)
{
	return kvk_cuda_errno(cudaMemcpyAsync(dst, src, bytes,
					      cudaMemcpyHostToDevice,
					      (cudaStream_t)st));
}

static int copy_out(void *dst, const void *src, size_t bytes, void *st)
{
	int ret = kvk_cuda_errno(cudaMemcpyAsync(dst, src, bytes,
						 cudaMemcpyDeviceToHost,
						 (cudaStream_t)st));

	return ret ?: kvk_cuda_errno(cudaStreamSynchronize((cudaStream_t)st));
}

/*
 * the rows of slot @s of the three arrays to the device (pageable sources:
 * the copies have consumed them when the calls return)
 */
static int upload_slot(struct kvp *c, uint32_t s, void *st)
{
	struct kva_pool *pl = c->pool;
	struct kvp_dev *d = c->dev;
	size_t l0 = (size_t)s * pl->lists_per_slot, n = pl->lists_per_slot;
	int ret;

	ret = copy_in(d->tables + l0 * pl->width, pl->table + l0 * pl->width,
		      n * pl->width * 4, st);
	ret = ret ?: copy_in(d->npages + 2 * l0, pl->npages + 2 * l0, n * 8,
			     st);
	return ret ?: copy_in(d->ntokens + 2 * l0, pl->ntokens + 2 * l0, n * 8,
			      st);
}

/* the token counts of slot @s back to the host */
static int download_ntokens(struct kvp *c, uint32_t s, void *st)
{
	struct kva_pool *pl = c->pool;
	size_t l0 = (size_t)s * pl->lists_per_slot, n = pl->lists_per_slot;

	return copy_out(pl->ntokens + 2 * l0, c->dev->ntokens + 2 * l0, n * 8,
			st);
}

/**
 * kvp_dev_upload() - after a host allocator call on slot @s
 * @c: a device cache
 * @s: slot
 *
 * Return: 0 or a CUDA error as -errno.
 */
int kvp_dev_upload(struct kvp *c, uint32_t s)
{
	return upload_slot(c, s, c->dev->st);
}

/* the device mirrors, as the argument builders take them */
static struct kvp_mem dev_mem(const struct kvp *c)
{
	struct kvp_mem m = { c->dev->tables, c->dev->npages,
			     c->dev->ntokens };

	return m;
}

/**
 * kvp_dev_evict() - kvk_evict_cuda() over slot @s's lists, @quota pages;
 * the token counts come back to the host for kva_shrink()
 * @c: a device cache
 * @s: slot
 * @quota: pages to free
 *
 * Return: 0, or the kernel's or CUDA's error.
 */
int kvp_dev_evict(struct kvp *c, uint32_t s, uint32_t quota)
{
	struct kvp_dev *d = c->dev;
	struct kvp_mem m = dev_mem(c);
	uint32_t h[2] = { quota, 0 }, *blk = slot_small(c, s);
	int32_t from = (int32_t)c->seq[s].len - (int32_t)c->pol.window;
	/* the slot's first list is its layer 0 base, KVD_LB[0] */
	struct kvk_evict_args a = kvp_evict_args(c, &m, blk + KVD_LB);
	int ret;

	memcpy(&h[1], &from, 4);
	ret = copy_in(blk + KVD_QUOTA, h, sizeof(h), d->st);
	if (ret)
		return ret;
	a.quota = blk + KVD_QUOTA;
	a.protect_from = (const int32_t *)(blk + KVD_FROM);
	a.evicted = d->evicted;
	a.scratch = d->evict_scratch;
	ret = kvk_evict_cuda(&a, d->st);
	return ret ?: download_ntokens(c, s, d->st);
}

/* every slot's list bases, one per layer, for the layer kernels */
static int upload_bases(struct kvp *c)
{
	int ret = 0;

	for (uint32_t s = 0; !ret && s < (uint32_t)c->kv.n_seq; s++) {
		for (int l = 0; l < c->kv.n_layers; l++)
			c->dev->hlb[l] = kva_list(c->pool, s, (uint32_t)l, 0);
		ret = copy_in(slot_small(c, s) + KVD_LB, c->dev->hlb,
			      c->kv.n_layers * 4, NULL);
	}
	return ret ?: kvk_cuda_errno(cudaStreamSynchronize(NULL));
}

/* after the last layer: the layers' errors, then the token counts */
static int finish(struct kvp *c, uint32_t s, void *st)
{
	struct kvp_dev *d = c->dev;
	int ret = copy_out(d->herr, slot_err(c, s), c->kv.n_layers * 4, st);

	for (int l = 0; !ret && l < c->kv.n_layers; l++)
		ret = d->herr[l];
	return ret ?: download_ntokens(c, s, st);
}

static int dev_prefill(struct kvp *c, uint32_t s, uint32_t layer, int ntok,
		       const float *q, const float *k, const float *v,
		       void *out, enum kvk_dtype odt, void *st)
{
	struct kvp_dev *d = c->dev;
	size_t nq = (size_t)ntok * c->nh * c->hd;
	size_t nk = (size_t)ntok * c->nkv * c->hd;
	struct kvp_mem m = dev_mem(c);
	struct kvk_prefill_args pa;
	struct kvk_compress_prompt a;
	int ret;

	if (layer == 0) {
		uint32_t start[2] = { 0, (uint32_t)ntok };

		ret = copy_in(slot_small(c, s) + KVD_START, start,
			      sizeof(start), st);
		ret = ret ?: upload_slot(c, s, st);
		if (ret)
			return ret;
	}
	ret = llm_convert_cuda(d->qh, odt, q, KVK_F32, nq, st);
	ret = ret ?: llm_convert_cuda(d->kh, odt, k, KVK_F32, nk, st);
	ret = ret ?: llm_convert_cuda(d->vh, odt, v, KVK_F32, nk, st);
	if (ret)
		return ret;
	pa = (struct kvk_prefill_args){
		.nr_seqs = 1, .nr_q_heads = c->nh, .nr_kv_heads = c->nkv,
		.head_dim = c->hd, .scale = c->scale, .dtype = odt,
		.q = d->qh, .k = d->kh, .v = d->vh,
		.seq_start = slot_small(c, s) + KVD_START,
		.max_len = (uint32_t)ntok, .out = out, .lse = d->lse,
		.scores = d->scores, .score_window = c->pol.score_window,
		.score_mode = kvp_score_mode(c),
	};
	ret = kvk_prefill_cuda(&pa, st);
	if (ret)
		return ret;
	a = kvp_prompt_args(c, s, &m, slot_small(c, s) + KVD_LB + layer);
	a.dtype = KVK_F32;
	a.k = k;
	a.v = v;
	a.seq_start = slot_small(c, s) + KVD_START;
	a.max_len = (uint32_t)ntok;
	a.scores = d->scores;
	a.counts = d->counts;
	a.err = slot_err(c, s) + layer;
	ret = kvk_compress_prompt_cuda(&a, st);
	if (ret || layer + 1 < (uint32_t)c->kv.n_layers)
		return ret;
	ret = finish(c, s, st);
	return ret ?: kvp_prompt_done(c, s, (uint32_t)ntok);
}

static int dev_decode(struct kvp *c, uint32_t s, uint32_t layer,
		      const float *q, const float *k, const float *v,
		      void *out, enum kvk_dtype odt, void *st)
{
	struct kvp_dev *d = c->dev;
	const uint32_t *lb = slot_small(c, s) + KVD_LB + layer;
	struct kvp_mem m = dev_mem(c);
	struct kvk_compress_decode cd;
	struct kvk_attn_args a;
	int ret;

	if (layer == 0) {
		int32_t pos = (int32_t)c->seq[s].len;

		/*
		 * the mirrors are current since the last step (its counts
		 * came back, trim and shrink uploaded), unless the append
		 * added pages
		 */
		ret = copy_in(slot_small(c, s) + KVD_POS, &pos, 4, st);
		if (!ret && c->seq[s].grew) {
			ret = upload_slot(c, s, st);
			c->seq[s].grew = ret != 0;
		}
		if (ret)
			return ret;
	}
	ret = llm_convert_cuda(d->qh, odt, q, KVK_F32,
			       (size_t)c->nh * c->hd, st);
	if (ret)
		return ret;
	cd = kvp_decode_args(c, s, &m, lb);
	cd.dtype = KVK_F32;
	cd.k = k;
	cd.v = v;
	cd.pos = (const int32_t *)(slot_small(c, s) + KVD_POS);
	cd.actions = d->act;
	cd.err = slot_err(c, s) + layer;
	ret = kvk_compress_decode_cuda(&cd, st);
	if (ret)
		return ret;
	a = kvp_attn_args(c, &m, lb);
	a.dtype = odt;
	a.q = d->qh;
	a.out = out;
	a.work = d->work;
	a.work_bytes = d->work_bytes;
	ret = kvk_attn_decode_cuda(&a, st);
	if (ret || layer + 1 < (uint32_t)c->kv.n_layers)
		return ret;
	ret = finish(c, s, st);
	return ret ?: kvp_decode_done(c, s);
}

/**
 * kvp_step_cuda() - llm_kv_policy_step() for a device cache (the step_cuda
 * op of struct llm_kv_ops)
 * @kv: a cache of llm_kv_policy_create_cuda()
 * @seq: sequence slot
 * @layer: layer, in order 0 .. n_layers - 1 within a step
 * @pos: 0 with the whole prompt, else the sequence's length with one token
 * @ntok: new tokens
 * @q: device, [ntok][n_heads][head_dim] fp32, RoPE applied
 * @k: device, [ntok][n_kv_heads][head_dim] fp32, RoPE applied
 * @v: device, likewise
 * @out: device, [ntok][n_heads][head_dim] in @odt: the attention
 * @odt: KVK_F16 or KVK_BF16, the activation type of the kernels
 * @stream: cudaStream_t of the caller's work
 *
 * Return: as llm_kv_policy_step(), and -EOPNOTSUPP for a host cache.
 */
int kvp_step_cuda(struct llm_kv *kv, int seq, int layer, int pos, int ntok,
		  const float *q, const float *k, const float *v, void *out,
		  enum kvk_dtype odt, void *stream)
{
	struct kvp *c = (struct kvp *)kv;
	int ret;

	if (!c->dev)
		return -EOPNOTSUPP;
	if (seq < 0 || !q || !k || !v || !out ||
	    (odt != KVK_F16 && odt != KVK_BF16))
		return -EINVAL;
	c->dev->st = stream;
	ret = kvp_begin(c, (uint32_t)seq, layer, pos, ntok);
	if (ret)
		return ret;
	if (pos == 0)
		return dev_prefill(c, (uint32_t)seq, (uint32_t)layer, ntok, q,
				   k, v, out, odt, stream);
	return dev_decode(c, (uint32_t)seq, (uint32_t)layer, q, k, v, out,
			  odt, stream);
}

static int dev_alloc(void **p, size_t bytes)
{
	return kvk_cuda_errno(cudaMalloc(p, bytes ? bytes : 4));
}

/**
 * kvp_dev_init() - the device mirrors and scratch of @c (pool made)
 * @c: the cache, its pool on a CUDA runtime context
 * @device: CUDA device ordinal
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -ENOMEM or a CUDA error as -errno; kvp_dev_free() undoes a
 * partial setup.
 */
int kvp_dev_init(struct kvp *c, int device, char *err, size_t errlen)
{
	struct kva_pool *pl = c->pool;
	size_t lists = pl->nr_lists, T = (size_t)c->kv.max_tok;
	struct kvp_dev *d = calloc(1, sizeof(*d));
	struct kvp_mem none = { 0 };
	/* the decode attention's call, as dev_decode() makes it */
	struct kvk_attn_args a = kvp_attn_args(c, &none, NULL);
	int ret;

	if (!d)
		return -ENOMEM;
	c->dev = d;
	d->device = device;
	d->work_bytes = kvk_attn_work_bytes(&a);
	d->herr = calloc(c->kv.n_layers, 4);
	d->hlb = calloc(c->kv.n_layers, 4);
	ret = d->herr && d->hlb ? kvk_cuda_errno(cudaSetDevice(device))
				: -ENOMEM;
	ret = ret ?: dev_alloc((void **)&d->tables, lists * pl->width * 4);
	ret = ret ?: dev_alloc((void **)&d->npages, lists * 8);
	ret = ret ?: dev_alloc((void **)&d->ntokens, lists * 8);
	ret = ret ?: dev_alloc((void **)&d->small, (size_t)c->kv.n_seq *
					     (KVD_LB + c->kv.n_layers) * 4);
	ret = ret ?: dev_alloc((void **)&d->err,
			       (size_t)c->kv.n_seq * c->kv.n_layers * 4);
	ret = ret ?: dev_alloc((void **)&d->counts, c->nkv * KVK_TOK_NR * 4);
	ret = ret ?: dev_alloc((void **)&d->act, c->nkv * sizeof(*d->act));
	ret = ret ?: dev_alloc((void **)&d->scores, T * c->nkv * 4);
	ret = ret ?: dev_alloc((void **)&d->lse, T * c->nh * 4);
	ret = ret ?: dev_alloc((void **)&d->qh, T * c->nh * c->hd * 2);
	ret = ret ?: dev_alloc((void **)&d->kh, T * c->nkv * c->hd * 2);
	ret = ret ?: dev_alloc((void **)&d->vh, T * c->nkv * c->hd * 2);
	ret = ret ?: dev_alloc((void **)&d->evicted, pl->lists_per_slot * 4);
	ret = ret ?: dev_alloc(&d->evict_scratch,
			       kvk_evict_scratch_bytes(1, pl->lists_per_slot));
	ret = ret ?: dev_alloc(&d->work, d->work_bytes);
	ret = ret ?: upload_bases(c);
	if (ret)
		snprintf(err, errlen, "device scratch for %zu tokens: %s", T,
			 strerror(-ret));
	return ret;
}

/* kvp_dev_free() - what kvp_dev_init() made, however far it got */
void kvp_dev_free(struct kvp *c)
{
	struct kvp_dev *d = c->dev;

	if (!d)
		return;
	cudaFree(d->tables);
	cudaFree(d->npages);
	cudaFree(d->ntokens);
	cudaFree(d->small);
	cudaFree(d->err);
	cudaFree(d->counts);
	cudaFree(d->act);
	cudaFree(d->scores);
	cudaFree(d->lse);
	cudaFree(d->qh);
	cudaFree(d->kh);
	cudaFree(d->vh);
	cudaFree(d->evicted);
	cudaFree(d->evict_scratch);
	cudaFree(d->work);
	free(d->herr);
	free(d->hlb);
	free(d);
	c->dev = NULL;
}
