// SPDX-License-Identifier: MIT
/*
 * forward_cuda.c - the LLaMA-family forward pass on one CUDA device.
 *
 * DOC: CUDA forward pass
 *
 * Weights sit in one device arena, fp16 or bf16, row-major [out][in] as on
 * the CPU: Q, K, V of a layer stacked into one [q+2kv][dim] matrix, gate and
 * up into one [2 ffn][dim]; Q and K rows in Hugging Face (rotate-half)
 * order, read from the file through llm_qk_file_row(). Norm weights and
 * biases are fp32.
 *
 * The residual stream is fp32. Prefill (and a decode step of several
 * sequences): RMSNorm (kvk_rmsnorm_cuda, fp32), conversion to the weight
 * dtype, Q GEMM and a two-matrix batched K/V GEMM (fp32 out), bias, q/k
 * RMSNorm, keys and values into the allocator's fp16 pages with RoPE
 * applied on the way (llm_kv_store_cuda, which rotates the fp32 queries in
 * place), attention (fp32 out), the output GEMM accumulated into the
 * residual (beta = 1), RMSNorm, a batched gate/up GEMM (fp32 out),
 * kvk_silu_mul_cuda, the down GEMM accumulated into the residual. These
 * GEMMs are cublasGemmEx (or its strided-batched form) with fp32
 * accumulation; at prefill each fp32 activation is split into hi + lo of
 * the weight dtype (llm_split_cuda) and a second GEMM adds W lo, so the
 * product sees about 16 bits of it instead of bf16's 8.
 *
 * A decode step of one sequence is bound by reading the weights, so its
 * projections are llm_gemv_cuda(): activations read straight from the
 * residual, the RMSNorm folded into the same pass, four rows per warp. A
 * Llama layer is 6 launches (and the attention's merge kernel when it
 * splits the context): QKV GEMV, KV store with RoPE (which also writes the
 * fp16 queries), attention, output GEMV on the attention's fp16 output,
 * gate/up GEMV writing silu(gate) * up, down GEMV.
 *
 * Attention: when every sequence of the step brings one token, the step is
 * a decode step and kvk_attn_decode_cuda() reads the pages (fp16 queries
 * and outputs, with its split-context scratch); otherwise
 * llm_attn_prefill_cuda(), a causal online-softmax kernel over the same
 * pages, serves every token. Decode steps are captured into a CUDA graph
 * per batch size and replayed; the host work of a step (page allocation by
 * kva_admit()/kva_trim()/kva_append(), token counts) runs before the replay
 * and is uploaded through pinned buffers.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kvk_cudart.h"

#include "forward_cuda.h"
#include "kva.h"
#include "kvattn.h"
#include "kvk_mem.h"
#include "kvrt.h"
#include "model.h"

#define ARENA_ALIGN 256
#define CUBLAS_WS (32u << 20)	/* cuBLAS workspace, bytes */
#define MAX_GRAPHS 64		/* batch sizes with a captured decode step */

struct cuda_layer {
	float *attn_norm, *ffn_norm;	/* [dim] */
	void *wqkv;			/* [q_dim + 2 kv_dim][dim] */
	float *bqkv;			/* [q_dim + 2 kv_dim] or NULL */
	float *q_norm, *k_norm;		/* [head_dim] or NULL */
	void *wo;			/* [dim][q_dim] */
	void *wgu;			/* [2 ffn][dim] */
	void *wdown;			/* [dim][ffn] */
};

/*
 * struct llm_cuda - a model on the device. Owned by the caller of
 * llm_cuda_load(); one forward at a time (workspace and stream shared).
 */
struct llm_cuda {
	struct llm_config c;
	struct kvk_rope_cfg rope;
	float *freq;		/* [head_dim / 2] rotary frequencies, device */
	enum kvk_dtype dt;	/* of the weight matrices */
	size_t es;		/* bytes per weight element */
	int dev;
	bool graphs;
	int q_dim, kv_dim, qkv_dim;
	cudaStream_t st;
	cublasHandle_t blas;
	void *blas_ws;
	uint8_t *arena;		/* every weight */
	uint64_t bytes;		/* arena bytes used */
	void *embd, *out;	/* [n_vocab][dim]; out == embd when tied */
	float *out_norm;
	struct cuda_layer *L;

	/* workspace, grown on demand; graphs are dropped when it moves */
	int cap_tok, cap_seq;
	float *x, *tmp, *q, *kvb, *last, *logits;
	float *attf;		/* [cap_tok][q_dim]: attention output */
	float *guf;		/* [2][cap_tok][ffn]: gate, up */
	float *actf;		/* [max(cap_tok, LLM_GEMV_MAX_TOK)][ffn] */
	void *qh, *oh;		/* [cap_tok][q_dim] fp16: decode attention */
	void *aw;		/* kvk_attn_decode_cuda() scratch */
	size_t aw_bytes;
	void *h, *atth, *act;	/* fp32 activations rounded to the weight */
	void *hl, *atthl, *actl; /* dtype, and the remainders (split) */
	int32_t *meta;		/* device: tok, pos, list, rows, list_base */
	int32_t *hmeta;		/* pinned host copy */
	int32_t *ids;		/* [cap_seq] device */

	/* decode graphs, for one cache */
	const struct llm_kv *g_kv;
	cudaGraphExec_t g[MAX_GRAPHS + 1];

	/* the step in progress, when its cache is a policy cache */
	struct llm_kv *pkv;
	const struct llm_batch *pb;
};

/* struct cuda_kv - a KV cache in the allocator's pages on the device */
struct cuda_kv {
	struct llm_kv kv;	/* common part; must be first */
	struct llm_cuda *m;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct llm_kvpages pages; /* tables: the device copy */
	uint32_t *tables_d;	/* [nr_lists][width] */
	uint32_t *ntok_d;	/* [nr_lists][2] */
	uint32_t *stage;	/* pinned: ntokens, then tables */
	uint32_t *hi;		/* [lists_per_slot * n_seq] scratch */
	uint32_t *lo;
	bool dirty;		/* tables changed since the last upload */
};

static const struct llm_kv_ops cuda_kv_ops;

static int blas_errno(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_SUCCESS:
		return 0;
	case CUBLAS_STATUS_ALLOC_FAILED:
		return -ENOMEM;
	case CUBLAS_STATUS_INVALID_VALUE:
		return -EINVAL;
	case CUBLAS_STATUS_NOT_SUPPORTED:
	case CUBLAS_STATUS_ARCH_MISMATCH:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

static cudaDataType_t cuda_type(enum kvk_dtype dt)
{
	return dt == KVK_F16 ? CUDA_R_16F :
	       dt == KVK_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* ---- load ---- */

struct stage {
	struct llm_cuda *m;
	uint8_t *buf;	/* host staging, >= the largest tensor */
	float *row;	/* one fp32 row */
	uint64_t off;	/* next free arena byte */
	bool dry;	/* only count bytes */
};

static bool raw_match(uint32_t type, enum kvk_dtype dt)
{
	return (type == LLM_GGML_F16 && dt == KVK_F16) ||
	       (type == LLM_GGML_BF16 && dt == KVK_BF16);
}

/*
 * Rows of @t into @dst (host) as @dt, rows [0, t rows): row r comes from
 * file row llm_qk_file_row(r) when @qk.
 */
static int stage_rows(struct stage *s, const struct llm_gguf_tensor *t,
		      bool qk, void *dst, enum kvk_dtype dt)
{
	const struct llm_config *c = &s->m->c;
	uint64_t n = t->ne[0], rows = t->nelem / n;
	size_t es = kvk_dtype_size(dt);
	int ret;

	for (uint64_t r = 0; r < rows; r++) {
		uint64_t src = qk ? llm_qk_file_row(c, r) : r;
		uint8_t *d = (uint8_t *)dst + r * n * es;

		if (raw_match(t->type, dt)) {
			memcpy(d, (const uint8_t *)t->data + src * n * 2,
			       n * 2);
			continue;
		}
		ret = llm_gguf_tensor_row(t, src, s->row);
		if (ret)
			return ret;
		ret = kvk_convert_from_f32(d, s->row, n, dt);
		if (ret)
			return ret;
	}
	return 0;
}

/* a vector (norm, bias) as fp32, Q/K bias elements in HF order when @qk */
static int stage_vec(struct stage *s, const struct llm_gguf_tensor *t,
		     bool qk, float *dst)
{
	const struct llm_config *c = &s->m->c;
	int ret;

	if (t->nelem != t->ne[0])
		return -EINVAL;
	ret = llm_gguf_tensor_row(t, 0, s->row);
	if (ret)
		return ret;
	for (uint64_t i = 0; i < t->nelem; i++)
		dst[i] = s->row[qk ? llm_qk_file_row(c, i) : i];
	return 0;
}

static void *arena_take(struct stage *s, size_t bytes)
{
	uint64_t off = s->off;

	s->off += (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
	return s->dry ? NULL : s->m->arena + off;
}

static int upload(struct stage *s, void *dst, size_t bytes)
{
	if (s->dry)
		return 0;
	return kvk_cuda_errno(cudaMemcpy(dst, s->buf, bytes,
				   cudaMemcpyHostToDevice));
}

/* one matrix, or stacked matrices, into the arena */
static int put_mat(struct stage *s, void **dst,
		   const struct llm_gguf_tensor *const *t, const bool *qk,
		   int nt)
{
	size_t es = s->m->es, bytes = 0;
	int ret;

	for (int i = 0; i < nt; i++)
		bytes += t[i]->nelem * es;
	*dst = arena_take(s, bytes);
	if (s->dry)
		return 0;
	bytes = 0;
	for (int i = 0; i < nt; i++) {
		ret = stage_rows(s, t[i], qk[i], s->buf + bytes, s->m->dt);
		if (ret)
			return ret;
		bytes += t[i]->nelem * es;
	}
	return upload(s, *dst, bytes);
}

static int put_vec(struct stage *s, float **dst,
		   const struct llm_gguf_tensor *const *t, const bool *qk,
		   int nt)
{
	size_t n = 0;
	int ret;

	for (int i = 0; i < nt; i++)
		n += t[i]->nelem;
	*dst = arena_take(s, n * sizeof(float));
	if (s->dry)
		return 0;
	n = 0;
	for (int i = 0; i < nt; i++) {
		ret = stage_vec(s, t[i], qk[i], (float *)s->buf + n);
		if (ret)
			return ret;
		n += t[i]->nelem;
	}
	return upload(s, *dst, n * sizeof(float));
}

static int put_layer(struct stage *s, const struct llm_layer_weights *lw,
		     struct cuda_layer *L)
{
	static const bool f1[] = { false }, qkv[] = { true, true, false };
	static const bool f2[] = { false, false }, qk2[] = { true, true };
	const struct llm_gguf_tensor *t[3];
	int ret;

	t[0] = lw->attn_norm;
	ret = put_vec(s, &L->attn_norm, t, f1, 1);
	t[0] = lw->ffn_norm;
	if (!ret)
		ret = put_vec(s, &L->ffn_norm, t, f1, 1);
	t[0] = lw->wq, t[1] = lw->wk, t[2] = lw->wv;
	if (!ret)
		ret = put_mat(s, &L->wqkv, t, qkv, 3);
	if (!ret && lw->bq) {
		t[0] = lw->bq, t[1] = lw->bk, t[2] = lw->bv;
		ret = put_vec(s, &L->bqkv, t, qkv, 3);
	}
	if (!ret && lw->q_norm) {
		t[0] = lw->q_norm;
		ret = put_vec(s, &L->q_norm, t, f1, 1);
		t[0] = lw->k_norm;
		if (!ret)
			ret = put_vec(s, &L->k_norm, t, f1, 1);
	}
	t[0] = lw->wo;
	if (!ret)
		ret = put_mat(s, &L->wo, t, f1, 1);
	t[0] = lw->w_gate, t[1] = lw->w_up;
	if (!ret)
		ret = put_mat(s, &L->wgu, t, f2, 2);
	t[0] = lw->w_down;
	if (!ret)
		ret = put_mat(s, &L->wdown, t, f1, 1);
	(void)qk2;
	return ret;
}

static int put_all(struct stage *s, const struct llm_weights *w)
{
	static const bool f1[] = { false };
	struct llm_cuda *m = s->m;
	const struct llm_gguf_tensor *t[1];
	int ret;

	t[0] = w->tok_embd;
	ret = put_mat(s, &m->embd, t, f1, 1);
	t[0] = w->output_norm;
	if (!ret)
		ret = put_vec(s, &m->out_norm, t, f1, 1);
	if (!ret && w->tied) {
		m->out = m->embd;
	} else if (!ret) {
		t[0] = w->output;
		ret = put_mat(s, &m->out, t, f1, 1);
	}
	for (uint32_t l = 0; !ret && l < m->c.n_layers; l++)
		ret = put_layer(s, &w->layers[l], &m->L[l]);
	return ret;
}

static int cuda_check_config(const struct llm_config *c,
			     const struct llm_weights *w, char *err,
			     size_t errlen)
{
	if (c->head_dim != 64 && c->head_dim != 128 && c->head_dim != 256) {
		snprintf(err, errlen, "head_dim %u: the CUDA executor takes "
			 "64, 128 or 256", c->head_dim);
		return -EOPNOTSUPP;
	}
	if (c->rope_dim != c->head_dim) {
		snprintf(err, errlen, "rope.dimension_count %u != head_dim %u: "
			 "partial rotary is not supported", c->rope_dim,
			 c->head_dim);
		return -EOPNOTSUPP;
	}
	if (w->rope_freqs && !c->rope_factor) {
		snprintf(err, errlen, "rope_freqs.weight without Llama-3 "
			 "scaling parameters is not supported");
		return -EOPNOTSUPP;
	}
	if (c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads ||
	    c->n_heads / c->n_kv_heads > KVK_ATTN_MAX_GROUP) {
		snprintf(err, errlen, "head_count %u over head_count_kv %u: "
			 "the CUDA executor takes groups of 1 to %d",
			 c->n_heads, c->n_kv_heads, KVK_ATTN_MAX_GROUP);
		return -EOPNOTSUPP;
	}
	return 0;
}

static size_t max_tensor(const struct llm_weights *w, uint32_t nl)
{
	size_t mx = w->tok_embd->nelem;

	if (w->output && w->output->nelem > mx)
		mx = w->output->nelem;
	for (uint32_t l = 0; l < nl; l++) {
		const struct llm_layer_weights *lw = &w->layers[l];
		size_t qkv = lw->wq->nelem + lw->wk->nelem + lw->wv->nelem;
		size_t gu = lw->w_gate->nelem + lw->w_up->nelem;

		mx = qkv > mx ? qkv : mx;
		mx = gu > mx ? gu : mx;
		mx = lw->wo->nelem > mx ? lw->wo->nelem : mx;
		mx = lw->w_down->nelem > mx ? lw->w_down->nelem : mx;
	}
	return mx;
}

/**
 * llm_cuda_load() - put a model's weights on the device
 * @c: configuration
 * @w: weights bound to an open file; it may be closed once this returns
 * @o: options, or NULL for the defaults
 * @out: the model, released with llm_cuda_free()
 * @err: one-line message on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -EOPNOTSUPP for a configuration the executor does not take
 * (head_dim other than 64/128/256, partial rotary, more than 8 query heads
 * per kv-head), -ENODEV without a device, -ENOMEM, -EINVAL, or a
 * dequantisation error.
 */
int llm_cuda_load(const struct llm_config *c, const struct llm_weights *w,
		  const struct llm_cuda_opts *o, struct llm_cuda **out,
		  char *err, size_t errlen)
{
	struct llm_cuda_opts def = { 0 };
	float freq[KVK_ROPE_MAX_HEAD_DIM / 2];
	struct stage s = { 0 };
	struct llm_cuda *m;
	uint32_t t0;
	int ret;

	if (!c || !w || !out)
		return -EINVAL;
	if (!o)
		o = &def;
	ret = cuda_check_config(c, w, err, errlen);
	if (ret)
		return ret;
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->c = *c;
	m->dev = o->device;
	m->graphs = !o->no_graphs;
	m->dt = o->dtype;
	t0 = w->layers[0].wq->type;
	if (m->dt == KVK_F32)
		m->dt = t0 == LLM_GGML_BF16 || t0 == LLM_GGML_F32 ? KVK_BF16 :
								   KVK_F16;
	if (m->dt != KVK_F16 && m->dt != KVK_BF16) {
		snprintf(err, errlen, "weight dtype %d: fp16 or bf16 only",
			 m->dt);
		ret = -EINVAL;
		goto out_free;
	}
	m->es = 2;
	m->q_dim = c->n_heads * c->head_dim;
	m->kv_dim = c->n_kv_heads * c->head_dim;
	m->qkv_dim = m->q_dim + 2 * m->kv_dim;
	m->rope.theta = c->rope_theta;
	m->rope.factor = c->rope_factor;
	m->rope.low_freq_factor = c->rope_low_freq;
	m->rope.high_freq_factor = c->rope_high_freq;
	m->rope.orig_max_pos = (int)c->rope_orig_ctx;
	ret = kvk_rope_inv_freq(freq, (int)c->head_dim, &m->rope);
	if (ret) {
		snprintf(err, errlen, "bad rotary configuration");
		goto out_free;
	}
	m->L = calloc(c->n_layers, sizeof(*m->L));
	if (!m->L) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	ret = kvk_cuda_errno(cudaSetDevice(m->dev));
	if (!ret)
		ret = kvk_cuda_errno(cudaStreamCreateWithFlags(&m->st,
						 cudaStreamNonBlocking));
	if (ret) {
		snprintf(err, errlen, "CUDA device %d: %s", m->dev,
			 cudaGetErrorString(cudaGetLastError()));
		goto out_free;
	}
	ret = blas_errno(cublasCreate(&m->blas));
	if (!ret)
		ret = kvk_cuda_errno(cudaMalloc(&m->blas_ws, CUBLAS_WS));
	if (!ret)
		ret = blas_errno(cublasSetWorkspace(m->blas, m->blas_ws,
						    CUBLAS_WS));
	if (!ret)
		ret = blas_errno(cublasSetStream(m->blas, m->st));
	if (ret) {
		snprintf(err, errlen, "cuBLAS: %s", strerror(-ret));
		goto out_free;
	}
	ret = kvk_cuda_errno(cudaMalloc((void **)&m->freq, sizeof(freq)));
	if (!ret)
		ret = kvk_cuda_errno(cudaMemcpy(m->freq, freq, sizeof(freq),
						cudaMemcpyHostToDevice));
	if (ret) {
		snprintf(err, errlen, "rotary table: %s", strerror(-ret));
		goto out_free;
	}
	/* count, allocate, then fill */
	s.m = m;
	s.dry = true;
	ret = put_all(&s, w);
	if (ret)
		goto out_err;
	m->bytes = s.off;
	ret = kvk_cuda_errno(cudaMalloc((void **)&m->arena, m->bytes));
	if (ret) {
		snprintf(err, errlen, "%.2f GB of weights do not fit on the "
			 "device", m->bytes / 1e9);
		goto out_free;
	}
	s.dry = false;
	s.off = 0;
	s.buf = malloc(max_tensor(w, c->n_layers) * sizeof(float));
	s.row = malloc((size_t)(c->dim > c->ffn_dim ? c->dim : c->ffn_dim) *
		       8 + (size_t)c->n_vocab * 4 + 4096);
	ret = s.buf && s.row ? put_all(&s, w) : -ENOMEM;
	free(s.buf);
	free(s.row);
	if (ret)
		goto out_err;
	*out = m;
	return 0;

out_err:
	snprintf(err, errlen, "loading weights: %s", strerror(-ret));
out_free:
	llm_cuda_free(m);
	return ret;
}

static void graphs_drop(struct llm_cuda *m)
{
	for (int i = 0; i <= MAX_GRAPHS; i++) {
		if (m->g[i])
			cudaGraphExecDestroy(m->g[i]);
		m->g[i] = NULL;
	}
	m->g_kv = NULL;
}

static void ws_free(struct llm_cuda *m)
{
	graphs_drop(m);
	cudaFree(m->x);
	cudaFree(m->tmp);
	cudaFree(m->q);
	cudaFree(m->kvb);
	cudaFree(m->last);
	cudaFree(m->logits);
	cudaFree(m->actf);
	cudaFree(m->qh);
	cudaFree(m->oh);
	cudaFree(m->aw);
	cudaFree(m->h);
	cudaFree(m->atth);
	cudaFree(m->act);
	cudaFree(m->hl);
	cudaFree(m->atthl);
	cudaFree(m->actl);
	cudaFree(m->attf);
	cudaFree(m->guf);
	cudaFree(m->meta);
	cudaFree(m->ids);
	cudaFreeHost(m->hmeta);
	m->x = m->tmp = m->q = m->kvb = m->last = m->logits = NULL;
	m->actf = NULL;
	m->qh = m->oh = m->aw = NULL;
	m->aw_bytes = 0;
	m->h = m->atth = m->act = m->hl = m->atthl = m->actl = NULL;
	m->attf = m->guf = NULL;
	m->meta = m->hmeta = m->ids = NULL;
	m->cap_tok = m->cap_seq = 0;
}

/**
 * llm_cuda_free() - release a model loaded by llm_cuda_load()
 * @m: the model, or NULL; caches made by llm_cuda_kv_create() for it must
 *     be destroyed first
 */
void llm_cuda_free(struct llm_cuda *m)
{
	if (!m)
		return;
	ws_free(m);
	cudaFree(m->arena);
	cudaFree(m->freq);
	if (m->blas)
		cublasDestroy(m->blas);
	cudaFree(m->blas_ws);
	if (m->st)
		cudaStreamDestroy(m->st);
	free(m->L);
	free(m);
}

/**
 * llm_cuda_weight_bytes() - device memory held by the weights
 * @m: the model
 *
 * Return: bytes.
 */
uint64_t llm_cuda_weight_bytes(const struct llm_cuda *m)
{
	return m->bytes;
}

/**
 * llm_cuda_dtype() - dtype of the weight matrices on the device
 * @m: the model
 *
 * Return: KVK_F16 or KVK_BF16.
 */
enum kvk_dtype llm_cuda_dtype(const struct llm_cuda *m)
{
	return m->dt;
}

/* ---- KV cache ---- */

static int kv_append_unsup(struct llm_kv *kv, int seq, int layer, int pos,
			   int ntok, const float *k, const float *v, long ld)
{
	(void)kv, (void)seq, (void)layer, (void)pos, (void)ntok, (void)k;
	(void)v, (void)ld;
	return -EOPNOTSUPP;
}

static int kv_view_unsup(struct llm_kv *kv, int seq, int layer, int kv_head,
			 int n, const float **k, const float **v)
{
	(void)kv, (void)seq, (void)layer, (void)kv_head, (void)n, (void)k;
	(void)v;
	return -EOPNOTSUPP;
}

static void kv_destroy(struct llm_kv *base)
{
	struct cuda_kv *kv = (struct cuda_kv *)base;

	if (kv->m && kv->m->g_kv == base)
		graphs_drop(kv->m);
	if (kv->pool)
		kva_pool_destroy(kv->pool);
	if (kv->ctx)
		kvrt_ctx_destroy(kv->ctx);
	cudaFree(kv->tables_d);
	cudaFree(kv->ntok_d);
	cudaFreeHost(kv->stage);
	free(kv->hi);
	free(kv->lo);
	free(kv->kv.len);
	free(kv);
}

/* pages held now (a slot reset by the caller holds its pages until its
 * next forward) */
static int kv_stats(struct llm_kv *base, struct llm_kv_stats *st)
{
	const struct cuda_kv *kv = (const struct cuda_kv *)base;
	const struct kva_pool *pool = kv->pool;

	memset(st, 0, sizeof(*st));
	st->paged = true;
	st->page_size = pool->page_size;
	st->tokens_per_page = pool->layout[KVA_HI].tokens;
	st->pages_total = (uint64_t)pool->nr_granules *
			  pool->pages_per_granule;
	st->pages_used[0] = pool->nr_used;
	st->bytes = pool->nr_used * pool->page_size;
	return 0;
}

/*
 * The host-side append, view and attend are not served: the keys and values
 * are on the device, reached by llm_cuda_forward() only.
 */
static const struct llm_kv_ops cuda_kv_ops = {
	.append = kv_append_unsup,
	.view = kv_view_unsup,
	.stats = kv_stats,
	.destroy = kv_destroy,
};

/**
 * llm_cuda_kv_create() - a KV cache for @m in the allocator's pages
 * @m: the model (outlives the cache)
 * @n_seq: sequence slots
 * @max_tok: tokens each sequence may hold
 * @out: the cache, a struct llm_kv for llm_cuda_forward() only (its
 *	append and view ops answer -EOPNOTSUPP); llm_kv_destroy() frees it
 *
 * One fp16 tier; every page the slots can need is mapped up front (a pool
 * of n_seq * n_layers * n_kv_heads lists of ceil(max_tok / tokens) pages).
 * llm_kv_reset() of a slot gives its pages back at the next forward.
 *
 * Return: 0, -EINVAL, -ENOMEM, or the runtime's error.
 */
int llm_cuda_kv_create(struct llm_cuda *m, int n_seq, int max_tok,
		       struct llm_kv **out)
{
	struct kva_tier tier = { 16, 16, 1, 1 };
	struct kvrt_ctx_opts ro = { .backend = KVRT_BACKEND_CUDA,
				    .device = m ? m->dev : 0 };
	struct kva_pool_params p = { 0 };
	struct kva_layout lay;
	const struct llm_config *c;
	struct cuda_kv *kv;
	uint64_t pages, gran;
	int ps, ret;

	if (!m || !out || n_seq < 1 || max_tok < 1 ||
	    (uint64_t)max_tok > LLM_MAX_CTX)
		return -EINVAL;
	c = &m->c;
	ps = kva_page_size(c->head_dim, &tier, 1);
	if (ps < 0)
		return ps;
	ret = kva_page_layout(c->head_dim, ps, &tier, &lay);
	if (ret)
		return ret;
	pages = (uint64_t)n_seq * c->n_layers * c->n_kv_heads *
		((max_tok + lay.tokens - 1) / lay.tokens + 1);
	gran = (pages + KVRT_GRANULE_SIZE / ps - 1) / (KVRT_GRANULE_SIZE / ps) +
	       1;
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->m = m;
	kv->kv.ops = &cuda_kv_ops;
	kv->kv.n_seq = n_seq;
	kv->kv.n_layers = c->n_layers;
	kv->kv.n_kv_heads = c->n_kv_heads;
	kv->kv.head_dim = c->head_dim;
	kv->kv.max_tok = max_tok;
	kv->kv.len = calloc(n_seq, sizeof(int));
	kv->hi = calloc((size_t)n_seq * c->n_layers * c->n_kv_heads, 4);
	kv->lo = calloc((size_t)n_seq * c->n_layers * c->n_kv_heads, 4);
	ret = kv->kv.len && kv->hi && kv->lo ? 0 : -ENOMEM;
	if (!ret)
		ret = kvrt_ctx_create(&ro, &kv->ctx);
	if (ret)
		goto out_destroy;
	p.ctx = kv->ctx;
	p.va_bytes = gran * KVRT_GRANULE_SIZE;
	p.budget_bytes = p.va_bytes;
	p.head_dim = c->head_dim;
	p.tiers[0] = tier;
	p.nr_tiers = 1;
	p.nr_slots = n_seq;
	p.nr_layers = c->n_layers;
	p.nr_heads = c->n_kv_heads;
	p.max_tokens = max_tok;
	ret = kva_pool_create(&p, &kv->pool);
	if (!ret)
		ret = kva_pool_grow(kv->pool, gran);
	if (!ret)
		ret = kvk_cuda_errno(cudaMalloc((void **)&kv->tables_d,
					  (size_t)kv->pool->nr_lists *
						  kv->pool->width * 4));
	if (!ret)
		ret = kvk_cuda_errno(cudaMalloc((void **)&kv->ntok_d,
					  (size_t)kv->pool->nr_lists * 8));
	if (!ret)
		ret = kvk_cuda_errno(cudaMallocHost((void **)&kv->stage,
					      (size_t)kv->pool->nr_lists *
						      (kv->pool->width + 2) * 4));
	if (ret)
		goto out_destroy;
	kv->pages = (struct llm_kvpages){
		.pool = kv->pool->base,
		.page_size = kv->pool->page_size,
		.ppg = kv->pool->pages_per_granule,
		.tokens = lay.tokens,
		.k_off = lay.k_off,
		.v_off = lay.v_off,
		.pos_off = lay.pos_off,
		.score_off = lay.score_off,
		.tables = kv->tables_d,
		.width = kv->pool->width,
		.head_dim = c->head_dim,
		.n_kv = c->n_kv_heads,
	};
	kv->kv.bytes = gran * KVRT_GRANULE_SIZE;
	kv->dirty = true;
	*out = &kv->kv;
	return 0;

out_destroy:
	kv_destroy(&kv->kv);
	return ret;
}

/**
 * llm_cuda_kv_pages() - pages a cache's sequences hold
 * @kv: a cache of llm_cuda_kv_create()
 * @used: out: pages owned by sequences
 * @page_bytes: out: bytes of one page
 *
 * Return: 0, or -EINVAL for another kind of cache.
 */
int llm_cuda_kv_pages(const struct llm_kv *kv, uint64_t *used,
		      uint64_t *page_bytes)
{
	const struct cuda_kv *ck = (const struct cuda_kv *)kv;

	if (!kv || kv->ops != &cuda_kv_ops)
		return -EINVAL;
	*used = ck->pool->nr_used;
	*page_bytes = ck->pool->page_size;
	return 0;
}

/* ---- forward ---- */

static int ws_reserve(struct llm_cuda *m, int ntok, int nseq)
{
	const struct llm_config *c = &m->c;
	size_t T, S, nm;
	int ret = 0;

	if (ntok <= m->cap_tok && nseq <= m->cap_seq)
		return 0;
	ntok = ntok > m->cap_tok ? ntok : m->cap_tok;
	nseq = nseq > m->cap_seq ? nseq : m->cap_seq;
	ws_free(m);
	T = ntok, S = nseq;
	nm = 3 * T + S + (size_t)c->n_layers * S;
#define DA(p, n) if (!ret) ret = kvk_cuda_errno(cudaMalloc((void **)&(p), (n)))
	DA(m->x, T * c->dim * 4);
	DA(m->tmp, T * c->dim * 4);
	DA(m->q, T * m->q_dim * 4);
	DA(m->kvb, 2 * T * m->kv_dim * 4);
	DA(m->last, S * c->dim * 4);
	DA(m->logits, S * c->n_vocab * 4);
	DA(m->actf, (T > LLM_GEMV_MAX_TOK ? T : LLM_GEMV_MAX_TOK) *
		    (size_t)c->ffn_dim * 4);
	DA(m->qh, T * m->q_dim * 2);
	DA(m->oh, T * m->q_dim * 2);
	DA(m->h, T * c->dim * m->es);
	DA(m->atth, T * m->q_dim * m->es);
	DA(m->act, T * c->ffn_dim * m->es);
	DA(m->hl, T * c->dim * m->es);
	DA(m->atthl, T * m->q_dim * m->es);
	DA(m->actl, T * c->ffn_dim * m->es);
	DA(m->attf, T * m->q_dim * 4);
	DA(m->guf, 2 * T * c->ffn_dim * 4);
	DA(m->meta, nm * 4);
	DA(m->ids, S * 4);
#undef DA
	if (!ret)
		ret = kvk_cuda_errno(cudaMallocHost((void **)&m->hmeta, nm * 4));
	if (ret) {
		ws_free(m);
		return ret;
	}
	m->cap_tok = ntok;
	m->cap_seq = nseq;
	return 0;
}

/* the device metadata arrays, at fixed offsets for the capacity */
static int32_t *meta_tok(struct llm_cuda *m, int32_t *b)
{
	(void)m;
	return b;
}

static int32_t *meta_pos(struct llm_cuda *m, int32_t *b)
{
	return b + m->cap_tok;
}

static int32_t *meta_list(struct llm_cuda *m, int32_t *b)
{
	return b + 2 * m->cap_tok;
}

static int32_t *meta_rows(struct llm_cuda *m, int32_t *b)
{
	return b + 3 * m->cap_tok;
}

static int32_t *meta_lb(struct llm_cuda *m, int32_t *b)
{
	return b + 3 * m->cap_tok + m->cap_seq;
}

/* Y[T][N] (ydt, ldy) = beta Y + X[T][K] (weight dtype) W[N][K]^T */
static int gemm(struct llm_cuda *m, const void *w, const void *x, int ldx,
		void *y, enum kvk_dtype ydt, int ldy, int T, int N, int K,
		float beta)
{
	float alpha = 1.0f;

	return blas_errno(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T,
				       K, &alpha, w, cuda_type(m->dt), K, x,
				       cuda_type(m->dt), ldx, &beta, y,
				       cuda_type(ydt), ldy,
				       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* two matrices [N][K], @sw elements apart, on one X: Y[2][T][N] */
static int gemm2(struct llm_cuda *m, const void *w, long long sw,
		 const void *x, void *y, enum kvk_dtype ydt, int T, int N,
		 int K, float beta)
{
	float alpha = 1.0f;

	return blas_errno(cublasGemmStridedBatchedEx(
		m->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, w,
		cuda_type(m->dt), K, sw, x, cuda_type(m->dt), K, 0, &beta, y,
		cuda_type(ydt), N, (long long)T * N, 2, CUBLAS_COMPUTE_32F,
		CUBLAS_GEMM_DEFAULT));
}

/*
 * decode GEMV: W [N][K] on X (fp32, or fp16 with @xh), into up to three
 * outputs; with @glu, N = 2 * end[0] and silu(gate) * up goes out
 */
static int gemv(struct llm_cuda *m, const void *w, const void *x, bool xh,
		int ldx, int T, int K, const float *nw, int n_seg,
		const int *end, float *const *y, const long *ld, float beta,
		bool glu)
{
	struct llm_gemv_out o = { .n_seg = n_seg, .glu = glu };

	for (int i = 0; i < n_seg; i++) {
		o.end[i] = end[i];
		o.y[i] = y[i];
		o.ld[i] = ld[i];
	}
	return llm_gemv_cuda(w, m->dt, x, xh ? KVK_F16 : KVK_F32, ldx, T,
			     glu ? 2 * end[0] : end[n_seg - 1], K, nw,
			     m->c.rms_eps, &o, beta, m->st);
}

/* whether a step of @T tokens takes the GEMV path */
static bool use_gemv(const struct llm_cuda *m, int T)
{
	const struct llm_config *c = &m->c;

	/*
	 * One token only: with more, the GEMV re-reads the activations of
	 * every token per weight and cuBLAS is faster (measured on an H100).
	 */
	return T == 1 && c->dim % 8 == 0 && m->q_dim % 8 == 0 &&
	       c->ffn_dim % 8 == 0;
}

/*
 * Whether prefill GEMMs see their fp32 activations as hi + lo, two values
 * of the weight dtype (KVMM_PREFILL_SPLIT=0: hi only, one rounding; a
 * measuring knob, read at each step).
 */
static bool split_on(void)
{
	const char *e = getenv("KVMM_PREFILL_SPLIT");

	return !e || atoi(e) != 0;
}

/* fp32 @x ([n]) to the weight dtype: @hi, and with @split the rest @lo */
static int to_h(struct llm_cuda *m, const float *x, void *hi, void *lo,
		size_t n, bool split)
{
	if (split)
		return llm_split_cuda(hi, lo, m->dt, x, n, m->st);
	return llm_convert_cuda(hi, m->dt, x, KVK_F32, n, m->st);
}

/*
 * Y = beta Y + X W^T in fp32 for X = @hi (+ @lo with @split: a second GEMM
 * accumulates it); @nmat 1: Y [T][N], @ldy apart; 2: two matrices @sw
 * elements apart, Y [2][T][N]
 */
static int gemm_hl(struct llm_cuda *m, const void *w, long long sw, int nmat,
		   const void *hi, const void *lo, bool split, float *y,
		   int ldy, int T, int N, int K, float beta)
{
	int ret = 0;

	for (int p = 0; !ret && p < (split ? 2 : 1); p++) {
		const void *x = p ? lo : hi;
		float b = p ? 1.0f : beta;

		if (nmat == 1)
			ret = gemm(m, w, x, K, y, KVK_F32, ldy, T, N, K, b);
		else
			ret = gemm2(m, w, sw, x, y, KVK_F32, T, N, K, b);
	}
	return ret;
}

/* RMSNorm of @rows rows of the fp32 @src into m->h (and m->hl) */
static int norm_to_h(struct llm_cuda *m, const float *src, const float *w,
		     int rows, bool split)
{
	const struct llm_config *c = &m->c;
	int ret;

	ret = kvk_rmsnorm_cuda(m->tmp, src, w, rows, c->dim, c->rms_eps,
			       KVK_F32, m->st);
	if (!ret)
		ret = to_h(m, m->tmp, m->h, m->hl, (size_t)rows * c->dim,
			   split);
	return ret;
}

/*
 * decode attention of layer @l for @S sequences: fp16 queries and outputs
 * (m->qh, m->oh), the fp16 tier of @kv, m->aw as scratch
 */
static void attn_args(struct llm_cuda *m, struct cuda_kv *kv, int S, int l,
		      struct kvk_attn_args *a)
{
	const struct llm_config *c = &m->c;
	struct kvk_attn_tier t = {
		.kbits = 16, .vbits = 16, .kgroups = 1, .vgroups = 1,
		.tokens = kv->pages.tokens,
		.k_off = kv->pages.k_off,
		.km_off = kv->pool->layout[KVA_HI].km_off,
		.v_off = kv->pages.v_off,
		.vm_off = kv->pool->layout[KVA_HI].vm_off,
		.score_off = kv->pages.score_off,
		.pos_off = kv->pages.pos_off,
	};

	memset(a, 0, sizeof(*a));
	a->nr_seqs = S;
	a->nr_kv_heads = c->n_kv_heads;
	a->group = c->n_heads / c->n_kv_heads;
	a->head_dim = c->head_dim;
	a->scale = 1.0f / sqrtf((float)c->head_dim);
	a->dtype = KVK_F16;
	a->q = m->qh;
	a->out = m->oh;
	a->pool = kv->pages.pool;
	a->page_size = kv->pages.page_size;
	a->pages_per_granule = kv->pages.ppg;
	a->tables = kv->tables_d;
	a->width = kv->pages.width;
	a->ntokens = kv->ntok_d;
	a->list_base = (const uint32_t *)meta_lb(m, m->meta) + (size_t)l * S;
	a->tier[0] = t;
	a->tier[1] = t;
	a->work = m->aw;
	a->work_bytes = m->aw_bytes;
}

/* the decode attention's scratch for @S sequences, before a capture */
static int attn_work(struct llm_cuda *m, struct cuda_kv *kv, int S)
{
	struct kvk_attn_args a;
	size_t bytes;

	attn_args(m, kv, S, 0, &a);
	bytes = kvk_attn_work_bytes(&a);
	if (bytes <= m->aw_bytes)
		return 0;
	graphs_drop(m);
	cudaFree(m->aw);
	m->aw = NULL;
	m->aw_bytes = 0;
	if (cudaMalloc(&m->aw, bytes) != cudaSuccess) {
		m->aw = NULL;
		return -ENOMEM;
	}
	m->aw_bytes = bytes;
	return 0;
}

/*
 * decode: output projection (on the attention's fp16 output), MLP (the
 * gate/up GEMV writes silu(gate) * up), by GEMV
 */
static int layer_mlp_gemv(struct llm_cuda *m, const struct cuda_layer *L,
			  int T)
{
	const struct llm_config *c = &m->c;
	int ffn = c->ffn_dim, e1[1] = { c->dim }, e2[1] = { ffn };
	float *yx[1] = { m->x }, *ya[1] = { m->actf };
	long l1[1] = { c->dim }, l2[1] = { ffn };
	int ret;

	ret = gemv(m, L->wo, m->oh, true, m->q_dim, T, m->q_dim, NULL, 1, e1,
		   yx, l1, 1.0f, false);
	if (!ret)
		ret = gemv(m, L->wgu, m->x, false, c->dim, T, c->dim,
			   L->ffn_norm, 1, e2, ya, l2, 0.0f, true);
	if (!ret)
		ret = gemv(m, L->wdown, m->actf, false, ffn, T, ffn, NULL, 1,
			   e1, yx, l1, 1.0f, false);
	return ret;
}

/*
 * the step's keys and values into the fp16 pages (RoPE applied there), then
 * attention: decode into m->oh (fp16; into m->attf too off the GEMV path),
 * prefill into m->attf
 */
static int layer_attn(struct llm_cuda *m, struct cuda_kv *kv, int l, int T,
		      int S, bool decode, bool gv)
{
	const struct llm_config *c = &m->c;
	float *k = m->kvb, *v = m->kvb + (size_t)T * m->kv_dim;
	int32_t *pos = meta_pos(m, m->meta);
	uint32_t *list = (uint32_t *)meta_list(m, m->meta);
	uint32_t ladd = l * c->n_kv_heads;
	int hd = c->head_dim, ret;

	ret = llm_kv_store_cuda(&kv->pages, k, v, m->kv_dim, pos, list, ladd,
				T, m->q, decode ? m->qh : NULL, c->n_heads,
				m->freq, m->st);
	if (ret)
		return ret;
	if (decode) {
		struct kvk_attn_args a;

		attn_args(m, kv, S, l, &a);
		ret = kvk_attn_decode_cuda(&a, m->st);
		if (!ret && !gv)
			ret = llm_convert_cuda(m->attf, KVK_F32, m->oh, KVK_F16,
					       (size_t)T * m->q_dim, m->st);
	} else {
		ret = llm_attn_prefill_cuda(&kv->pages, m->q, pos, list, ladd,
					    T, c->n_heads,
					    1.0f / sqrtf((float)hd), m->attf,
					    KVK_F32, m->st);
	}
	return ret;
}

/*
 * the policy cache stores, compresses and attends, sequence by sequence
 * (its step_cuda op), on RoPE'd fp32 queries and keys; its fp16 output goes
 * to m->oh, and to m->attf off the GEMV path, as layer_attn()'s does
 */
static int layer_attn_policy(struct llm_cuda *m, int l, int T, bool decode,
			     bool gv)
{
	const struct llm_config *c = &m->c;
	const struct llm_batch *b = m->pb;
	struct llm_kv *kv = m->pkv;
	float *k = m->kvb, *v = m->kvb + (size_t)T * m->kv_dim;
	size_t row = 0;
	int ret;

	ret = kvk_rope_cuda(m->q, k, meta_pos(m, m->meta), T, c->n_heads,
			    c->n_kv_heads, c->head_dim, &m->rope, KVK_F32,
			    m->st);
	for (int i = 0; !ret && i < b->n_seq; row += b->n_tok[i++])
		ret = kv->ops->step_cuda(kv, b->seq[i], l,
					 llm_kv_len(kv, b->seq[i]),
					 b->n_tok[i], m->q + row * m->q_dim,
					 k + row * m->kv_dim,
					 v + row * m->kv_dim,
					 (uint8_t *)m->oh + row * m->q_dim * 2,
					 KVK_F16, m->st);
	if (!ret && !(decode && gv))
		ret = llm_convert_cuda(m->attf, KVK_F32, m->oh, KVK_F16,
				       (size_t)T * m->q_dim, m->st);
	return ret;
}

static int layer_run(struct llm_cuda *m, struct cuda_kv *kv, int l, int T,
		     int S, bool decode)
{
	const struct llm_config *c = &m->c;
	const struct cuda_layer *L = &m->L[l];
	int hd = c->head_dim, ffn = c->ffn_dim, ret;
	float *k = m->kvb, *v = m->kvb + (size_t)T * m->kv_dim;
	size_t ffn_mat = (size_t)ffn * c->dim;
	bool gv = decode && use_gemv(m, T), split = !decode && split_on();

	if (gv) {
		int end[3] = { m->q_dim, m->q_dim + m->kv_dim, m->qkv_dim };
		float *y[3] = { m->q, k, v };
		long ld[3] = { m->q_dim, m->kv_dim, m->kv_dim };

		ret = gemv(m, L->wqkv, m->x, false, c->dim, T, c->dim,
			   L->attn_norm, 3, end, y, ld, 0.0f, false);
	} else {
		ret = norm_to_h(m, m->x, L->attn_norm, T, split);
		if (!ret)
			ret = gemm_hl(m, L->wqkv, 0, 1, m->h, m->hl, split,
				      m->q, m->q_dim, T, m->q_dim, c->dim,
				      0.0f);
		if (!ret)
			ret = gemm_hl(m, (const uint8_t *)L->wqkv +
					       (size_t)m->q_dim * c->dim * m->es,
				      (long long)m->kv_dim * c->dim, 2, m->h,
				      m->hl, split, m->kvb, 0, T, m->kv_dim,
				      c->dim, 0.0f);
	}
	if (!ret && L->bqkv) {
		ret = llm_bias_add_cuda(m->q, L->bqkv, T, m->q_dim, m->st);
		if (!ret)
			ret = llm_bias_add_cuda(k, L->bqkv + m->q_dim, T,
						m->kv_dim, m->st);
		if (!ret)
			ret = llm_bias_add_cuda(v, L->bqkv + m->q_dim +
						m->kv_dim, T, m->kv_dim,
						m->st);
	}
	if (!ret && L->q_norm) {
		ret = kvk_rmsnorm_cuda(m->q, m->q, L->q_norm, T * c->n_heads,
				       hd, c->rms_eps, KVK_F32, m->st);
		if (!ret)
			ret = kvk_rmsnorm_cuda(k, k, L->k_norm,
					       T * c->n_kv_heads, hd,
					       c->rms_eps, KVK_F32, m->st);
	}
	if (!ret)
		ret = m->pkv ? layer_attn_policy(m, l, T, decode, gv)
			     : layer_attn(m, kv, l, T, S, decode, gv);
	if (ret)
		return ret;
	if (gv)
		return layer_mlp_gemv(m, L, T);
	ret = to_h(m, m->attf, m->atth, m->atthl, (size_t)T * m->q_dim, split);
	if (!ret)
		ret = gemm_hl(m, L->wo, 0, 1, m->atth, m->atthl, split, m->x,
			      c->dim, T, c->dim, m->q_dim, 1.0f);
	if (!ret)
		ret = norm_to_h(m, m->x, L->ffn_norm, T, split);
	if (!ret)
		ret = gemm_hl(m, L->wgu, (long long)ffn_mat, 2, m->h, m->hl,
			      split, m->guf, 0, T, ffn, c->dim, 0.0f);
	if (!ret)
		ret = kvk_silu_mul_cuda(m->actf, m->guf,
					m->guf + (size_t)T * ffn,
					(size_t)T * ffn, KVK_F32, m->st);
	if (!ret)
		ret = to_h(m, m->actf, m->act, m->actl, (size_t)T * ffn,
			   split);
	if (!ret)
		ret = gemm_hl(m, L->wdown, 0, 1, m->act, m->actl, split, m->x,
			      c->dim, T, c->dim, ffn, 1.0f);
	return ret;
}

/* every kernel of one step, on m->st, metadata already on the device */
static int step_run(struct llm_cuda *m, struct cuda_kv *kv, int T, int S,
		    bool decode)
{
	const struct llm_config *c = &m->c;
	int ret;

	ret = kvk_embed_cuda(m->h, m->embd, meta_tok(m, m->meta), T, c->dim,
			     c->n_vocab, m->dt, m->st);
	if (!ret)
		ret = llm_convert_cuda(m->x, KVK_F32, m->h, m->dt,
				       (size_t)T * c->dim, m->st);
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = layer_run(m, kv, l, T, S, decode);
	if (!ret)
		ret = kvk_embed_cuda(m->last, m->x, meta_rows(m, m->meta), S,
				     c->dim, T, KVK_F32, m->st);
	if (!ret && decode && use_gemv(m, S)) {
		int end[1] = { (int)c->n_vocab };
		float *y[1] = { m->logits };
		long ld[1] = { c->n_vocab };

		ret = gemv(m, m->out, m->last, false, c->dim, S, c->dim,
			   m->out_norm, 1, end, y, ld, 0.0f, false);
	} else if (!ret) {
		bool split = !decode && split_on();

		ret = norm_to_h(m, m->last, m->out_norm, S, split);
		if (!ret)
			ret = gemm_hl(m, m->out, 0, 1, m->h, m->hl, split,
				      m->logits, c->n_vocab, S, c->n_vocab,
				      c->dim, 0.0f);
	}
	if (!ret)
		ret = kvk_argmax_cuda(m->ids, m->logits, S, c->n_vocab,
				      KVK_F32, m->st);
	return ret;
}

/*
 * llm_batch_check(), and the cache must be one of this model's or a cache
 * on the device that does its own attention (step_cuda)
 */
static int batch_check(const struct llm_cuda *m, const struct llm_kv *kv,
		       const struct llm_batch *b, int *ntok)
{
	int ctx;

	*ntok = 0;
	if (kv->ops->step_cuda ? kv->n_kv_heads != (int)m->c.n_kv_heads ||
					 kv->head_dim != (int)m->c.head_dim ||
					 kv->n_layers != (int)m->c.n_layers
			       : kv->ops != &cuda_kv_ops ||
					 ((const struct cuda_kv *)kv)->m != m)
		return -EINVAL;
	return llm_batch_check(&m->c, kv, b, ntok, &ctx);
}

/* pages for the step's tokens: admit new sequences, append to the others */
static int kv_pages(struct cuda_kv *kv, const struct llm_batch *b)
{
	struct kva_pool *pool = kv->pool;
	uint32_t lps = pool->lists_per_slot, nc;
	uint64_t used = pool->nr_used;
	int ret = 0, maxn = 0;

	/* slots reset by the caller give their pages back */
	for (int i = 0; i < b->n_seq; i++) {
		uint32_t s = b->seq[i];

		if (!llm_kv_len(&kv->kv, s) &&
		    pool->slot_state[s] != KVA_SLOT_FREE) {
			ret = kva_free(pool, &s, 1);
			if (ret)
				return ret;
			kv->dirty = true;
		}
	}
	/* new sequences: reserve, then keep what the prompt uses */
	for (int i = 0; i < b->n_seq; i++) {
		uint32_t s = b->seq[i], n = b->n_tok[i];

		if (llm_kv_len(&kv->kv, s))
			continue;
		ret = kva_admit(pool, &s, &n, 1);
		if (ret)
			return ret;
		for (uint32_t k = 0; k < lps; k++) {
			kv->hi[k] = n;
			kv->lo[k] = 0;
		}
		ret = kva_trim(pool, &s, 1, kv->hi, kv->lo);
		if (ret)
			return ret;
		kv->dirty = true;
	}
	/*
	 * going on: one page per list whose last page is full, per token;
	 * kv->hi holds the slots of each round
	 */
	for (int i = 0; i < b->n_seq; i++)
		if (llm_kv_len(&kv->kv, b->seq[i]) && b->n_tok[i] > maxn)
			maxn = b->n_tok[i];
	for (int t = 0; t < maxn; t++) {
		nc = 0;
		for (int i = 0; i < b->n_seq; i++)
			if (llm_kv_len(&kv->kv, b->seq[i]) && t < b->n_tok[i])
				kv->hi[nc++] = b->seq[i];
		ret = kva_append(pool, kv->hi, nc);
		for (uint32_t j = 0; !ret && j < nc; j++) {
			uint32_t base = kv->hi[j] * lps;

			for (uint32_t k = 0; !ret && k < lps; k++)
				ret = kva_set_tokens(pool, base + k,
						     pool->ntokens[2 *
							(base + k)] + 1, 0);
		}
		if (ret)
			return ret;
	}
	if (pool->nr_used != used)
		kv->dirty = true;
	return 0;
}

/*
 * metadata of the step into m->hmeta, then everything to the device (the
 * pages' tables and counts of @kv, unless it is NULL: a policy cache)
 */
static int upload_step(struct llm_cuda *m, struct llm_kv *base,
		       struct cuda_kv *kv, const struct llm_batch *b, int T)
{
	const struct llm_config *c = &m->c;
	int32_t *tok = meta_tok(m, m->hmeta), *pos = meta_pos(m, m->hmeta);
	int32_t *list = meta_list(m, m->hmeta), *rows = meta_rows(m, m->hmeta);
	int32_t *lb = meta_lb(m, m->hmeta), S = b->n_seq, row = 0;
	uint32_t lps = c->n_layers * c->n_kv_heads;
	struct kva_pool *pool;
	int ret;

	for (int i = 0; i < S; i++) {
		int p0 = llm_kv_len(base, b->seq[i]);

		for (int t = 0; t < b->n_tok[i]; t++, row++) {
			tok[row] = b->tok[row];
			pos[row] = p0 + t;
			list[row] = b->seq[i] * lps;
		}
		rows[i] = row - 1;
		for (uint32_t l = 0; l < c->n_layers; l++)
			lb[l * S + i] = b->seq[i] * lps + l * c->n_kv_heads;
	}
	(void)T;
	ret = kvk_cuda_errno(cudaMemcpyAsync(m->meta, m->hmeta,
				       (3 * (size_t)m->cap_tok + m->cap_seq +
					(size_t)c->n_layers * m->cap_seq) * 4,
				       cudaMemcpyHostToDevice, m->st));
	if (!kv)
		return ret;
	pool = kv->pool;
	memcpy(kv->stage, pool->ntokens, (size_t)pool->nr_lists * 8);
	if (!ret)
		ret = kvk_cuda_errno(cudaMemcpyAsync(kv->ntok_d, kv->stage,
					       (size_t)pool->nr_lists * 8,
					       cudaMemcpyHostToDevice, m->st));
	if (!ret && kv->dirty) {
		uint32_t *tab = kv->stage + 2 * (size_t)pool->nr_lists;
		size_t tb = (size_t)pool->nr_lists * pool->width * 4;

		memcpy(tab, pool->table, tb);
		ret = kvk_cuda_errno(cudaMemcpyAsync(kv->tables_d, tab, tb,
					       cudaMemcpyHostToDevice, m->st));
		if (!ret)
			kv->dirty = false;
	}
	/*
	 * hmeta and kv->stage (pinned) are rewritten only after the step's
	 * final synchronisation.
	 */
	return ret;
}

/* a decode step of @S sequences: replay its graph, capturing it first */
static int step_graph(struct llm_cuda *m, struct cuda_kv *kv, int S)
{
	cudaGraph_t g;
	int ret, r2;

	if (m->g_kv != &kv->kv) {
		graphs_drop(m);
		m->g_kv = &kv->kv;
	}
	if (!m->g[S]) {
		ret = kvk_cuda_errno(cudaStreamBeginCapture(
			m->st, cudaStreamCaptureModeThreadLocal));
		if (ret)
			return ret;
		ret = step_run(m, kv, S, S, true);
		r2 = kvk_cuda_errno(cudaStreamEndCapture(m->st, &g));
		ret = ret ? ret : r2;
		if (ret)
			return ret;
		ret = kvk_cuda_errno(cudaGraphInstantiate(&m->g[S], g, 0));
		cudaGraphDestroy(g);
		if (ret) {
			m->g[S] = NULL;
			return ret;
		}
	}
	return kvk_cuda_errno(cudaGraphLaunch(m->g[S], m->st));
}

static int forward(struct llm_cuda *m, struct llm_kv *base,
		   const struct llm_batch *b)
{
	struct cuda_kv *kv = (struct cuda_kv *)base;
	bool decode = true;
	int T, ret;

	ret = batch_check(m, base, b, &T);
	if (!ret)
		ret = ws_reserve(m, T, b->n_seq);
	if (ret)
		return ret;
	for (int i = 0; i < b->n_seq; i++)
		decode &= b->n_tok[i] == 1;
	if (base->ops->step_cuda) {
		/* a policy cache: no graph (the cache decides on the host) */
		ret = upload_step(m, base, NULL, b, T);
		m->pkv = base;
		m->pb = b;
		if (!ret)
			ret = step_run(m, NULL, T, b->n_seq, decode);
		m->pkv = NULL;
		m->pb = NULL;
		return ret;
	}
	ret = kv_pages(kv, b);
	if (!ret && decode)
		ret = attn_work(m, kv, b->n_seq);
	if (!ret)
		ret = upload_step(m, base, kv, b, T);
	if (ret)
		return ret;
	if (decode && m->graphs && b->n_seq <= MAX_GRAPHS)
		ret = step_graph(m, kv, b->n_seq);
	else
		ret = step_run(m, kv, T, b->n_seq, decode);
	return ret;
}

static void commit(struct llm_kv *kv, const struct llm_batch *b)
{
	for (int i = 0; i < b->n_seq; i++)
		llm_kv_commit(kv, b->seq[i], b->n_tok[i]);
}

/**
 * llm_cuda_forward() - run one step on the device; see llm_cpu_forward()
 * @m: the model
 * @kv: a cache of llm_cuda_kv_create() for @m
 * @b: sequences and their new tokens (a prompt, or one token at decode)
 * @logits: out (host memory): [b->n_seq][n_vocab] floats, the logits after
 *	the last new token of each sequence
 *
 * On failure the cache lengths are unchanged (pages may have been taken
 * for the step's tokens: a retry reuses them only after llm_kv_reset()).
 *
 * Return: 0, -EINVAL for a bad batch, -ENOSPC when a sequence would exceed
 * the cache's capacity or the pool has no page, -E2BIG, -ENOMEM, or a
 * CUDA or cuBLAS error as -errno.
 */
int llm_cuda_forward(struct llm_cuda *m, struct llm_kv *kv,
		     const struct llm_batch *b, float *logits)
{
	int ret = forward(m, kv, b);

	if (!ret)
		ret = kvk_cuda_errno(cudaMemcpyAsync(logits, m->logits,
					       (size_t)b->n_seq * m->c.n_vocab *
						       4,
					       cudaMemcpyDeviceToHost, m->st));
	if (!ret)
		ret = kvk_cuda_errno(cudaStreamSynchronize(m->st));
	if (!ret)
		commit(kv, b);
	return ret;
}

/**
 * llm_cuda_forward_greedy() - one step, returning only the argmax tokens
 * @m: the model
 * @kv: a cache of llm_cuda_kv_create() for @m
 * @b: sequences and their new tokens
 * @ids: out (host memory): [b->n_seq] the most likely next token of each
 *	sequence (kvk_argmax_cuda: ties to the lowest id)
 *
 * Return: as llm_cuda_forward().
 */
int llm_cuda_forward_greedy(struct llm_cuda *m, struct llm_kv *kv,
			    const struct llm_batch *b, int32_t *ids)
{
	int ret = forward(m, kv, b);

	if (!ret)
		ret = kvk_cuda_errno(cudaMemcpyAsync(ids, m->ids,
					       (size_t)b->n_seq * 4,
					       cudaMemcpyDeviceToHost, m->st));
	if (!ret)
		ret = kvk_cuda_errno(cudaStreamSynchronize(m->st));
	if (!ret)
		commit(kv, b);
	return ret;
}

/**
 * llm_cuda_read_weights() - read every weight byte once, timed: the
 * bandwidth a decode step is bounded by
 * @m: the model
 * @gbs: out: best of 5 reads, GB/s (1e9 bytes/s)
 *
 * Return: 0, or the CUDA error as -errno.
 */
int llm_cuda_read_weights(struct llm_cuda *m, double *gbs)
{
	cudaEvent_t e0, e1;
	uint64_t *sum = NULL;
	float ms, best = 0.0f;
	size_t n = m->bytes / 16 * 16;
	int ret;

	ret = kvk_cuda_errno(cudaMalloc((void **)&sum, 8));
	if (!ret)
		ret = kvk_cuda_errno(cudaEventCreate(&e0));
	if (!ret)
		ret = kvk_cuda_errno(cudaEventCreate(&e1));
	for (int r = 0; !ret && r < 6; r++) {
		cudaEventRecord(e0, m->st);
		ret = kvk_read_sum_cuda(m->arena, n, sum, m->st);
		cudaEventRecord(e1, m->st);
		if (!ret)
			ret = kvk_cuda_errno(cudaEventSynchronize(e1));
		if (!ret && !cudaEventElapsedTime(&ms, e0, e1) && r &&
		    (best == 0.0f || ms < best))
			best = ms;
	}
	if (!ret)
		*gbs = n / (best * 1e-3) / 1e9;
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(sum);
	return ret;
}
