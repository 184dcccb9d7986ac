// SPDX-License-Identifier: MIT
/*
 * kvpolicy_cuda.c - the policy cache on a CUDA device: the same policy,
 * uapi calls and order of operations as the host cache (kvpolicy.c), with
 * the CUDA kernels in place of their CPU references.
 *
 * DOC: device policy cache
 *
 * The space is a device space: its pages, tables and counts are device
 * memory, and its device work (admission, appends, trims, evictions) runs
 * on the stream the cache binds with KVMM_IOC_SPACE_MAP, the executor's,
 * in call order with the executor's kernels. No call of begin(), layer()
 * or end() waits for the device.
 *
 * begin() writes the step's small arrays (list bases per layer, decode
 * positions, per-sequence thresholds, prompt starts) into one of
 * KVD_STAGES pinned buffers and copies them to the device on the stream;
 * a buffer is reused only once the copy made from it KVD_STAGES steps ago
 * has completed (an event query; a wait only if the device is that far
 * behind). layer() enqueues, for every sequence of the step at once:
 *
 * - prefill: the fp32 q, k and v converted to the activation type,
 *   kvk_prefill_cuda() (varlen, with the policy's scores), and
 *   kvk_compress_prompt_cuda() on the fp32 keys and values (so that both
 *   backends quantize the same numbers);
 * - decode: q converted, kvk_compress_decode_cuda() and
 *   kvk_attn_decode_cuda() with its score update.
 *
 * A decode layer's launches use the same addresses at every step with the
 * same number of sequences, so that the executor captures the step in a
 * CUDA graph. end() copies the layers' error words to pinned memory; the
 * executor reads them with status() once it has synchronised for the
 * step's outputs.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "chnorm.h"
#include "kvevict.h"
#include "kvk_cudart.h"
#include "kvpolicy.h"
#include "kvpolicy_int.h"
#include "kvshim.h"
#include "prefill.h"

#define KVD_STAGES 4	/* pinned staging buffers of the step's arrays */

/*
 * struct kvp_dev - device arrays and scratch of one cache. Sizes: S =
 * n_seq, L = n_layers, T = the prefill capacity in tokens.
 *
 * @meta (device) and each @stage (pinned host) hold, at word offsets:
 * lb [L][S] (a step of n sequences uses [L][n]), pos [S], salpha [S][2],
 * sstart [S + 1]; @err [L] follows in @meta only.
 */
struct kvp_dev {
	int device;
	void *stream;		/* bound to the space (SPACE_MAP) */
	uint32_t *meta;
	uint32_t *stage[KVD_STAGES];
	cudaEvent_t staged[KVD_STAGES];
	uint32_t next;		/* next stage buffer */
	size_t o_pos, o_alpha, o_start, o_err, words;
	int32_t *herr;		/* pinned [L]: the last step's errors */
	/* decode scratch, fixed at init */
	void *qd;		/* [S][nh][hd] in the activation type */
	struct kvk_compress_action *act; /* [S][nkv] */
	void *work;		/* decode attention's scratch */
	size_t work_bytes;
	/* prefill scratch, grown with the step's tokens */
	size_t cap;
	void *qh, *kh, *vh;	/* [T][nh or nkv][hd] activation type */
	float *scores;		/* [T][nkv] */
	float *lse;		/* [T][nh] */
	uint32_t *counts;	/* [S][nkv][KVK_TOK_NR] */
};

#define CU(call)                                                               \
	do {                                                                   \
		ret = kvk_cuda_errno(call);                                    \
		if (ret)                                                       \
			goto out;                                              \
	} while (0)

static uint32_t *meta_lb(const struct kvp *c, uint32_t *b)
{
	(void)c;
	return b;
}

static int32_t *meta_pos(const struct kvp *c, uint32_t *b)
{
	return (int32_t *)(b + c->dev->o_pos);
}

static float *meta_alpha(const struct kvp *c, uint32_t *b)
{
	return (float *)(b + c->dev->o_alpha);
}

static uint32_t *meta_start(const struct kvp *c, uint32_t *b)
{
	return b + c->dev->o_start;
}

/**
 * kvp_dev_bind() - the space's device work on @stream from now on
 * (KVMM_IOC_SPACE_MAP), once per stream
 * @c: a device cache
 * @stream: cudaStream_t of the executor
 *
 * Return: 0 or the uapi's error.
 */
int kvp_dev_bind(struct kvp *c, void *stream)
{
	struct kvmm_space_map m = { .space = c->space,
				    .stream = (uint64_t)(uintptr_t)stream };
	int ret;

	if (stream == c->dev->stream)
		return 0;
	ret = kvshim_ioctl(c->fd, KVMM_IOC_SPACE_MAP, &m);
	if (!ret)
		c->dev->stream = stream;
	return ret;
}

/* the prefill scratch for @ntok tokens (outside any capture) */
static int prefill_reserve(struct kvp *c, size_t ntok)
{
	struct kvp_dev *d = c->dev;
	size_t qw = (size_t)c->nh * c->hd, kw = (size_t)c->nkv * c->hd;
	int ret = 0;

	if (ntok <= d->cap)
		return 0;
	ntok = ntok > 2 * d->cap ? ntok : 2 * d->cap;
	cudaFree(d->qh);
	cudaFree(d->kh);
	cudaFree(d->vh);
	cudaFree(d->scores);
	cudaFree(d->lse);
	d->qh = d->kh = d->vh = NULL;
	d->scores = d->lse = NULL;
	d->cap = 0;
	CU(cudaMalloc(&d->qh, ntok * qw * 2));
	CU(cudaMalloc(&d->kh, ntok * kw * 2));
	CU(cudaMalloc(&d->vh, ntok * kw * 2));
	CU(cudaMalloc((void **)&d->scores, ntok * c->nkv * 4));
	CU(cudaMalloc((void **)&d->lse, ntok * c->nh * 4));
	d->cap = ntok;
out:
	return ret;
}

/**
 * kvp_dev_begin() - the device part of begin(): the step's arrays to the
 * device, on @stream
 * @c: a device cache, the step described on the host (kvp_begin(), which
 *	bound @stream to the space before its uapi calls)
 * @stream: cudaStream_t of the executor
 *
 * Return: 0 or a CUDA error as -errno.
 */
int kvp_dev_begin(struct kvp *c, void *stream)
{
	struct kvp_dev *d = c->dev;
	uint32_t i = d->next++ % KVD_STAGES, *b = d->stage[i];
	size_t n = (size_t)c->n;
	int ret;

	if (c->kind == LLM_KV_PREFILL) {
		ret = prefill_reserve(c, c->ntok);
		if (ret)
			return ret;
	}
	if (cudaEventQuery(d->staged[i]) == cudaErrorNotReady)
		CU(cudaEventSynchronize(d->staged[i]));
	memcpy(meta_lb(c, b), c->lb, (size_t)c->nl * n * 4);
	memcpy(meta_pos(c, b), c->pos, n * 4);
	memcpy(meta_alpha(c, b), c->salpha, 2 * n * 4);
	memcpy(meta_start(c, b), c->sstart, (n + 1) * 4);
	CU(cudaMemcpyAsync(d->meta, b, d->o_err * 4, cudaMemcpyHostToDevice,
			   (cudaStream_t)stream));
	CU(cudaEventRecord(d->staged[i], (cudaStream_t)stream));
out:
	return ret;
}

/*
 * under the hadamard knob: @n rows of head_dim elements of @dt rotated in
 * place on the stream (its own inverse, so also the way back). The rows
 * are the executor's scratch of this layer (struct llm_kv_io), which it
 * does not read again but through @io->out.
 */
static int rotate(const struct kvp *c, const void *x, enum kvk_dtype dt,
		  size_t n, void *st)
{
	if (!c->pol.hadamard)
		return 0;
	return kvk_hadamard_cuda((void *)(uintptr_t)x, dt, n, c->hd, st);
}

/*
 * under the knorm knob: @op (enum kvk_chn_op) over @t tokens of @n heads
 * of the fp32 rows @x, the layer's list bases @lb; @start the prompts'
 * starts (prefill) or NULL (decode)
 */
static int chnorm(const struct kvp *c, int op, const void *x, uint32_t t,
		  uint32_t n, const uint32_t *lb, const uint32_t *start,
		  void *st)
{
	struct kvk_chn_args a = {
		.x = (float *)(uintptr_t)x, .ntok = t, .heads = n,
		.group = n / c->nkv, .head_dim = c->hd,
		.nr_seqs = (uint32_t)c->n, .seq_start = start,
		.list_base = lb, .param = c->chn, .op = op,
	};

	if (!c->pol.knorm)
		return 0;
	return kvk_chnorm_cuda(&a, st);
}

static int layer_prefill(struct kvp *c, int layer, const struct llm_kv_io *io,
			 void *st)
{
	struct kvp_dev *d = c->dev;
	size_t nq = (size_t)c->ntok * c->nh * c->hd;
	size_t nk = (size_t)c->ntok * c->nkv * c->hd;
	const uint32_t *lb = meta_lb(c, d->meta) + (size_t)layer * c->n;
	struct kvk_compress_prompt a;
	struct kvk_prefill_args pa;
	int ret;

	ret = kvk_convert_cuda(d->qh, io->odt, io->q, KVK_F32, nq, st);
	ret = ret ?: kvk_convert_cuda(d->kh, io->odt, io->k, KVK_F32, nk, st);
	ret = ret ?: kvk_convert_cuda(d->vh, io->odt, io->v, KVK_F32, nk, st);
	if (ret)
		return ret;
	pa = (struct kvk_prefill_args){
		.nr_seqs = (uint32_t)c->n, .nr_q_heads = c->nh,
		.nr_kv_heads = c->nkv, .head_dim = c->hd, .scale = c->scale,
		.dtype = io->odt, .q = d->qh, .k = d->kh, .v = d->vh,
		.seq_start = meta_start(c, d->meta), .max_len = c->max_len,
		.out = io->out, .lse = d->lse, .scores = d->scores,
		.score_window = c->pol.score_window,
		.score_mode = kvp_score_mode(c),
	};
	ret = kvk_prefill_cuda(&pa, st);
	/*
	 * the prompt attended as it is; its keys stored normalized (knorm),
	 * its keys and values rotated (hadamard)
	 */
	ret = ret ?: chnorm(c, KVK_CHN_STATS, io->k, c->ntok, c->nkv, lb,
			    meta_start(c, d->meta), st);
	ret = ret ?: chnorm(c, KVK_CHN_KEYS, io->k, c->ntok, c->nkv, lb,
			    meta_start(c, d->meta), st);
	ret = ret ?: rotate(c, io->k, KVK_F32, (size_t)c->ntok * c->nkv, st);
	ret = ret ?: rotate(c, io->v, KVK_F32, (size_t)c->ntok * c->nkv, st);
	if (ret)
		return ret;
	a = kvp_prompt_args(c, lb, meta_alpha(c, d->meta));
	a.k = io->k;
	a.v = io->v;
	a.seq_start = meta_start(c, d->meta);
	a.scores = d->scores;
	a.counts = d->counts;
	a.err = (int32_t *)(d->meta + d->o_err) + layer;
	return kvk_compress_prompt_cuda(&a, st);
}

static int layer_decode(struct kvp *c, int layer, const struct llm_kv_io *io,
			void *st)
{
	struct kvp_dev *d = c->dev;
	const uint32_t *lb = meta_lb(c, d->meta) + (size_t)layer * c->n;
	struct kvk_compress_decode cd;
	struct kvk_attn_args a;
	int ret;

	/*
	 * normalized and rotated keys and rotated values stored, queries
	 * scaled and rotated alike attend to them
	 */
	ret = chnorm(c, KVK_CHN_KEYS, io->k, (uint32_t)c->n, c->nkv, lb, NULL,
		     st);
	ret = ret ?: chnorm(c, KVK_CHN_QUERIES, io->q, (uint32_t)c->n, c->nh,
			    lb, NULL, st);
	ret = ret ?: rotate(c, io->q, KVK_F32, (size_t)c->n * c->nh, st);
	ret = ret ?: rotate(c, io->k, KVK_F32, (size_t)c->n * c->nkv, st);
	ret = ret ?: rotate(c, io->v, KVK_F32, (size_t)c->n * c->nkv, st);
	ret = ret ?: kvk_convert_cuda(d->qd, io->odt, io->q, KVK_F32,
				      (size_t)c->n * c->nh * c->hd, st);
	if (ret)
		return ret;
	cd = kvp_decode_args(c, lb, meta_pos(c, d->meta),
			     meta_alpha(c, d->meta));
	cd.k = io->k;
	cd.v = io->v;
	cd.actions = d->act;
	cd.err = (int32_t *)(d->meta + d->o_err) + layer;
	ret = kvk_compress_decode_cuda(&cd, st);
	if (ret)
		return ret;
	a = kvp_attn_args(c, (uint32_t)c->n, lb);
	a.dtype = io->odt;
	a.q = d->qd;
	a.out = io->out;
	a.work = d->work;
	a.work_bytes = d->work_bytes;
	ret = kvk_attn_decode_cuda(&a, st);
	/* the output of rotated values, rotated back, in its own type */
	return ret ?: rotate(c, io->out, io->odt, (size_t)c->n * c->nh, st);
}

/**
 * kvp_dev_layer() - the device part of layer(): enqueue only
 * @c: a device cache in a step
 * @layer: layer
 * @io: device rows, packed; @io->odt KVK_F16 or KVK_BF16
 * @stream: cudaStream_t, the one begin() bound
 *
 * Return: 0, -EINVAL, or a launch error.
 */
int kvp_dev_layer(struct kvp *c, int layer, const struct llm_kv_io *io,
		  void *stream)
{
	if ((io->odt != KVK_F16 && io->odt != KVK_BF16) ||
	    io->ldq != (long)(c->nh * c->hd) ||
	    io->ldkv != (long)(c->nkv * c->hd) ||
	    io->ldo != (long)(c->nh * c->hd) || stream != c->dev->stream)
		return -EINVAL;
	if (c->kind == LLM_KV_PREFILL)
		return layer_prefill(c, layer, io, stream);
	return layer_decode(c, layer, io, stream);
}

/**
 * kvp_dev_end() - the device part of end(): the layers' error words to
 * pinned memory, in stream order
 * @c: a device cache
 * @stream: cudaStream_t
 *
 * Return: 0 or a CUDA error as -errno.
 */
int kvp_dev_end(struct kvp *c, void *stream)
{
	struct kvp_dev *d = c->dev;

	return kvk_cuda_errno(cudaMemcpyAsync(d->herr, d->meta + d->o_err,
					      (size_t)c->nl * 4,
					      cudaMemcpyDeviceToHost,
					      (cudaStream_t)stream));
}

/**
 * kvp_dev_status() - the first error of the last step's layers
 * @c: a device cache whose stream the caller synchronised after end()
 *
 * Return: 0, or the kernels' error (-ENOSPC: a list lacked a slot, which
 * the step's page work should have provided).
 */
int kvp_dev_status(struct kvp *c)
{
	for (uint32_t l = 0; l < c->nl; l++)
		if (c->dev->herr[l])
			return c->dev->herr[l];
	return 0;
}

/* the largest decode-attention scratch over batches of 1 .. n_seq */
static size_t work_bytes(const struct kvp *c)
{
	size_t mx = 0;

	for (int s = 1; s <= c->kv.n_seq; s++) {
		struct kvk_attn_args a = kvp_attn_args(c, (uint32_t)s, NULL);
		size_t b = kvk_attn_work_bytes(&a);

		mx = b > mx ? b : mx;
	}
	return mx;
}

/**
 * kvp_dev_init() - the device arrays and scratch of @c (space made)
 * @c: the cache, its space a device space
 * @device: CUDA device ordinal
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -ENOMEM or a CUDA error as -errno; kvp_dev_free() undoes a
 * partial setup.
 */
int kvp_dev_init(struct kvp *c, int device, char *err, size_t errlen)
{
	size_t S = (size_t)c->kv.n_seq, L = c->nl;
	struct kvp_dev *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	c->dev = d;
	d->device = device;
	d->o_pos = L * S;
	d->o_alpha = d->o_pos + S;
	d->o_start = d->o_alpha + 2 * S;
	d->o_err = d->o_start + S + 1;
	d->words = d->o_err + L;
	d->work_bytes = work_bytes(c);
	CU(cudaSetDevice(device));
	CU(cudaMalloc((void **)&d->meta, d->words * 4));
	CU(cudaMemset(d->meta, 0, d->words * 4));
	for (int i = 0; i < KVD_STAGES; i++) {
		CU(cudaMallocHost((void **)&d->stage[i], d->words * 4));
		CU(cudaEventCreateWithFlags(&d->staged[i],
					    cudaEventDisableTiming));
	}
	CU(cudaMallocHost((void **)&d->herr, L * 4));
	memset(d->herr, 0, L * 4);
	CU(cudaMalloc(&d->qd, S * c->nh * c->hd * 2));
	CU(cudaMalloc((void **)&d->act, S * c->nkv * sizeof(*d->act)));
	CU(cudaMalloc((void **)&d->counts, S * c->nkv * KVK_TOK_NR * 4));
	CU(cudaMalloc(&d->work, d->work_bytes ? d->work_bytes : 4));
	if (c->pol.knorm)
		CU(cudaMalloc((void **)&c->chn,
			      S * c->lps * 2 * c->hd * sizeof(float)));
out:
	if (ret)
		snprintf(err, errlen, "device scratch for %zu sequences: %s", S,
			 strerror(-ret));
	return ret;
}

/* kvp_dev_free() - what kvp_dev_init() made, however far it got */
void kvp_dev_free(struct kvp *c)
{
	struct kvp_dev *d = c->dev;

	if (!d)
		return;
	if (d->stream)
		kvk_cuda_drain(d->stream);
	cudaFree(d->meta);
	for (int i = 0; i < KVD_STAGES; i++) {
		cudaFreeHost(d->stage[i]);
		if (d->staged[i])
			cudaEventDestroy(d->staged[i]);
	}
	cudaFreeHost(d->herr);
	cudaFree(d->qd);
	cudaFree(d->act);
	cudaFree(d->counts);
	cudaFree(d->work);
	cudaFree(d->qh);
	cudaFree(d->kh);
	cudaFree(d->vh);
	cudaFree(d->scores);
	cudaFree(d->lse);
	cudaFree(c->chn);
	c->chn = NULL;
	free(d);
	c->dev = NULL;
}
