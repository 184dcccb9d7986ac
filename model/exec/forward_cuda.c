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
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kvk_cudart.h"

#include "forward_cuda.h"
#include "kvattn.h"
#include "kvk_mem.h"
#include "model.h"
#include "pool.h"
#include "qweight.h"

#define ARENA_ALIGN 256
#define CUBLAS_WS (32u << 20)	/* cuBLAS workspace, bytes */
#define MAX_GRAPHS 256		/* batch sizes with a captured decode step */
#define KVX_STAGES 4		/* pinned metadata buffers in flight */

struct cuda_layer {
	float *attn_norm, *ffn_norm;	/* [dim] */
	void *wqkv;			/* [q_dim + 2 kv_dim][dim] */
	float *bqkv;			/* [q_dim + 2 kv_dim] or NULL */
	float *q_norm, *k_norm;		/* [head_dim] or NULL */
	void *wo;			/* [dim][q_dim] */
	void *wgu;			/* [2 ffn][dim] */
	void *wdown;			/* [dim][ffn] */
	/* with llm_cuda_opts.wbits: the same matrices at 8 or 4 bits (the
	 * pointers above are then NULL); fmt 0 when dense */
	struct llm_qw qqkv, qo, qgu, qdown;
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
	uint64_t embd_bytes;	/* of them, the embedding table's */
	void *embd, *out;	/* [n_vocab][dim]; out == embd when tied */
	int wbits;		/* 0 (dense), 8 or 4: the layers' matrices */
	struct llm_qw qout;	/* out at wbits when not tied */
	void *wscr;		/* one matrix expanded, for cuBLAS (wbits) */
	float *out_norm;
	struct cuda_layer *L;

	/* workspace, grown on demand; graphs are dropped when it moves */
	int cap_tok, cap_seq;
	float *x, *tmp, *q, *kvb, *last, *logits;
	float *attf;		/* [cap_tok][q_dim]: attention output */
	float *guf;		/* [2][cap_tok][ffn]: gate, up */
	float *actf;		/* [max(cap_tok, LLM_GEMV_MAX_TOK)][ffn] */
	void *oh;		/* [cap_tok][q_dim] fp16: attention output */
	void *h, *atth, *act;	/* fp32 activations rounded to the weight */
	void *hl, *atthl, *actl; /* dtype, and the remainders (split) */
	int32_t *meta;		/* device: tok, pos, rows */
	int32_t *ids;		/* [cap_seq] device */

	/* decode graphs, for one cache */
	uint64_t g_kv;		/* id of the cache the graphs run on */
	cudaGraphExec_t g[MAX_GRAPHS + 1];
	uint32_t g_kernels[MAX_GRAPHS + 1]; /* kernel nodes of each */

	/* pinned staging of the step's metadata, reused KVX_STAGES steps on */
	int32_t *hstage[KVX_STAGES];
	cudaEvent_t staged[KVX_STAGES];
	uint32_t next_stage;
	cudaEvent_t done;	/* the last step's outputs are on the host */
	unsigned long waits;	/* host waits for an earlier step's copies */
};

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

/* at most this many threads quantize weights at load (wbits) */
#define LLM_STAGE_THREADS 32

struct stage {
	struct llm_cuda *m;
	uint8_t *buf;	/* host staging, >= the largest tensor */
	float *row;	/* one fp32 row */
	struct llm_pool *pool;	/* quantizing threads (wbits), or NULL */
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

/* @bytes from @src (host) to @dst (device); nothing on the dry pass */
static int upload_from(struct stage *s, void *dst, const void *src,
		       size_t bytes)
{
	if (s->dry)
		return 0;
	return kvk_cuda_errno(cudaMemcpy(dst, src, bytes,
					 cudaMemcpyHostToDevice));
}

static int upload(struct stage *s, void *dst, size_t bytes)
{
	return upload_from(s, dst, s->buf, bytes);
}

static void *arena_take(struct stage *s, size_t bytes)
{
	uint64_t off = s->off;

	s->off += (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
	return s->dry ? NULL : s->m->arena + off;
}




/* one put_qmat() on the staging pool: rows split across the threads */
struct qjob {
	const struct llm_config *c;
	const struct llm_gguf_tensor *const *t;
	const bool *qk;
	enum llm_qw_fmt f;
	uint64_t k;
	size_t rb, mb;
	uint8_t *q, *meta;
	float *rows;		/* one fp32 row per thread */
	uint64_t total;
	int err[LLM_STAGE_THREADS];
};

static void qjob_run(void *arg, int tid, int nth)
{
	struct qjob *j = arg;
	float *row = j->rows + (size_t)tid * j->k;
	long lo, hi;
	uint64_t base = 0;
	int i = 0;

	llm_pool_range((long)j->total, tid, nth, 1, &lo, &hi);
	for (long g = lo; g < hi; g++) {
		uint64_t r, n;

		while (g - base >= (n = j->t[i]->nelem / j->k)) {
			base += n;
			i++;
		}
		r = g - base;
		r = j->qk[i] ? llm_qk_file_row(j->c, r) : r;
		j->err[tid] = llm_gguf_tensor_row(j->t[i], r, row);
		if (!j->err[tid])
			j->err[tid] = llm_qw_quantize_rows(j->f, row, 1, j->k,
							   j->q + g * j->rb,
							   j->meta + g * j->mb);
		if (j->err[tid])
			return;
	}
}

/*
 * stacked matrices of one width k into the arena at m->wbits: each row
 * read as fp32 and quantized (llm_qw_quantize_rows()), rows split across
 * the staging threads (an 8B model's 7 billion weights take minutes on
 * one); values, then the groups' metadata
 */
static int put_qmat(struct stage *s, struct llm_qw *qw,
		    const struct llm_gguf_tensor *const *t, const bool *qk,
		    int nt)
{
	struct qjob j = {
		.c = &s->m->c, .t = t, .qk = qk,
		.f = s->m->wbits == 8 ? LLM_QW8 : LLM_QW4,
		.k = t[0]->ne[0],
	};
	int nth = s->pool ? llm_pool_threads(s->pool) : 1;
	int ret;

	j.rb = llm_qw_row_bytes(j.f, j.k);
	j.mb = llm_qw_meta_bytes(j.f, j.k);
	for (int i = 0; i < nt; i++) {
		if (t[i]->ne[0] != j.k || j.k % LLM_QW_GROUP)
			return -EINVAL;
		j.total += t[i]->nelem / j.k;
	}
	qw->fmt = j.f;
	qw->q = arena_take(s, j.total * j.rb);
	qw->meta = arena_take(s, j.total * j.mb);
	if (s->dry)
		return 0;
	j.q = s->buf;
	j.meta = s->buf + j.total * j.rb;
	j.rows = malloc((size_t)nth * j.k * sizeof(float));
	if (!j.rows)
		return -ENOMEM;
	if (s->pool)
		llm_pool_run(s->pool, qjob_run, &j);
	else
		qjob_run(&j, 0, 1);
	free(j.rows);
	for (int i = 0; i < nth; i++)
		if (j.err[i])
			return j.err[i];
	ret = upload_from(s, (void *)qw->q, j.q, j.total * j.rb);
	if (!ret)
		ret = upload_from(s, (void *)qw->meta, j.meta, j.total * j.mb);
	return ret;
}

/* one matrix, or stacked matrices, into the arena; at m->wbits with @qw */
static int put_mat(struct stage *s, void **dst, struct llm_qw *qw,
		   const struct llm_gguf_tensor *const *t, const bool *qk,
		   int nt)
{
	size_t es = s->m->es, bytes = 0;
	int ret;

	if (qw && s->m->wbits) {
		*dst = NULL;
		return put_qmat(s, qw, t, qk, nt);
	}
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
		ret = put_mat(s, &L->wqkv, &L->qqkv, t, qkv, 3);
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
		ret = put_mat(s, &L->wo, &L->qo, t, f1, 1);
	t[0] = lw->w_gate, t[1] = lw->w_up;
	if (!ret)
		ret = put_mat(s, &L->wgu, &L->qgu, t, f2, 2);
	t[0] = lw->w_down;
	if (!ret)
		ret = put_mat(s, &L->wdown, &L->qdown, t, f1, 1);
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
	ret = put_mat(s, &m->embd, NULL, t, f1, 1);
	m->embd_bytes = s->off;
	t[0] = w->output_norm;
	if (!ret)
		ret = put_vec(s, &m->out_norm, t, f1, 1);
	if (!ret && w->tied) {
		m->out = m->embd;
	} else if (!ret) {
		t[0] = w->output;
		ret = put_mat(s, &m->out, &m->qout, t, f1, 1);
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

/* elements of the largest matrix; the embedding's only with @embd */
static size_t max_tensor(const struct llm_weights *w, uint32_t nl, bool embd)
{
	size_t mx = embd ? w->tok_embd->nelem : 0;

	if (w->output && !w->tied && w->output->nelem > mx)
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
	m->wbits = o->wbits;
	if (m->wbits != 0 && m->wbits != 8 && m->wbits != 4) {
		snprintf(err, errlen, "weight bits %d: 8 or 4 (or 0 for the "
			 "weight dtype)", m->wbits);
		ret = -EINVAL;
		goto out_free;
	}
	if (m->wbits && (c->dim % LLM_QW_GROUP || c->ffn_dim % LLM_QW_GROUP ||
			 (c->n_heads * c->head_dim) % LLM_QW_GROUP)) {
		snprintf(err, errlen, "%d-bit weights need matrix widths that "
			 "are multiples of %d (dim %u, ffn %u)", m->wbits,
			 LLM_QW_GROUP, c->dim, c->ffn_dim);
		ret = -EOPNOTSUPP;
		goto out_free;
	}
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
	for (int i = 0; !ret && i < KVX_STAGES; i++)
		ret = kvk_cuda_errno(cudaEventCreateWithFlags(
			&m->staged[i], cudaEventDisableTiming));
	if (ret) {
		snprintf(err, errlen, "CUDA events: %s", strerror(-ret));
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
	if (m->wbits) {
		ret = kvk_cuda_errno(cudaMalloc(&m->wscr, max_tensor(w,
					c->n_layers, false) * m->es));
		if (ret) {
			snprintf(err, errlen, "weight scratch: %s",
				 strerror(-ret));
			goto out_free;
		}
	}
	s.dry = false;
	s.off = 0;
	s.buf = malloc(max_tensor(w, c->n_layers, true) * sizeof(float));
	s.row = malloc((size_t)(c->dim > c->ffn_dim ? c->dim : c->ffn_dim) *
		       8 + (size_t)c->n_vocab * 4 + 4096);
	ret = s.buf && s.row ? 0 : -ENOMEM;
	if (!ret && m->wbits) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		n = n < 1 ? 1 : n > LLM_STAGE_THREADS ? LLM_STAGE_THREADS : n;
		ret = llm_pool_create((int)n, &s.pool);
	}
	if (!ret)
		ret = put_all(&s, w);
	if (s.pool)
		llm_pool_destroy(s.pool);
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
		m->g_kernels[i] = 0;
	}
	m->g_kv = 0;
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
	cudaFree(m->oh);
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
	for (int i = 0; i < KVX_STAGES; i++) {
		cudaFreeHost(m->hstage[i]);
		m->hstage[i] = NULL;
	}
	m->x = m->tmp = m->q = m->kvb = m->last = m->logits = NULL;
	m->actf = NULL;
	m->oh = NULL;
	m->h = m->atth = m->act = m->hl = m->atthl = m->actl = NULL;
	m->attf = m->guf = NULL;
	m->meta = m->ids = NULL;
	m->cap_tok = m->cap_seq = 0;
}

/**
 * llm_cuda_free() - release a model loaded by llm_cuda_load()
 * @m: the model, or NULL; device caches its steps ran on must be destroyed
 *     first (their space is bound to the model's stream)
 */
void llm_cuda_free(struct llm_cuda *m)
{
	if (!m)
		return;
	ws_free(m);
	cudaFree(m->arena);
	cudaFree(m->wscr);
	cudaFree(m->freq);
	if (m->blas)
		cublasDestroy(m->blas);
	cudaFree(m->blas_ws);
	for (int i = 0; i < KVX_STAGES; i++)
		if (m->staged[i])
			cudaEventDestroy(m->staged[i]);
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
 * llm_cuda_step_bytes() - weight bytes a decode step reads: all of them but
 * the embedding table (one row per token), unless the output matrix is
 * that table
 * @m: the model
 *
 * Return: bytes.
 */
uint64_t llm_cuda_step_bytes(const struct llm_cuda *m)
{
	return m->out == m->embd ? m->bytes : m->bytes - m->embd_bytes;
}

/**
 * llm_cuda_weight_bits() - how the layers' matrices are held
 * @m: the model
 *
 * Return: 16 (the weight dtype), 8 or 4.
 */
int llm_cuda_weight_bits(const struct llm_cuda *m)
{
	return m->wbits ? m->wbits : 16;
}

/**
 * llm_cuda_config() - the configuration the model was loaded with
 * @m: the model
 *
 * Return: the model's copy, valid until llm_cuda_free().
 */
const struct llm_config *llm_cuda_config(const struct llm_cuda *m)
{
	return &m->c;
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
	nm = 2 * T + S;
#define DA(p, n) if (!ret) ret = kvk_cuda_errno(cudaMalloc((void **)&(p), (n)))
	DA(m->x, T * c->dim * 4);
	DA(m->tmp, T * c->dim * 4);
	DA(m->q, T * m->q_dim * 4);
	DA(m->kvb, 2 * T * m->kv_dim * 4);
	DA(m->last, S * c->dim * 4);
	DA(m->logits, S * c->n_vocab * 4);
	DA(m->actf, (T > LLM_GEMV_MAX_TOK ? T : LLM_GEMV_MAX_TOK) *
		    (size_t)c->ffn_dim * 4);
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
	for (int i = 0; !ret && i < KVX_STAGES; i++)
		ret = kvk_cuda_errno(cudaMallocHost((void **)&m->hstage[i],
						    nm * 4));
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

static int32_t *meta_rows(struct llm_cuda *m, int32_t *b)
{
	return b + 2 * m->cap_tok;
}

static size_t meta_words(const struct llm_cuda *m)
{
	return 2 * (size_t)m->cap_tok + m->cap_seq;
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
static int gemv(struct llm_cuda *m, const void *w, const struct llm_qw *qw,
		const void *x, bool xh, int ldx, int T, int K, const float *nw,
		int n_seg, const int *end, float *const *y, const long *ld,
		float beta, bool glu)
{
	struct llm_gemv_out o = { .n_seg = n_seg, .glu = glu };

	for (int i = 0; i < n_seg; i++) {
		o.end[i] = end[i];
		o.y[i] = y[i];
		o.ld[i] = ld[i];
	}
	if (qw && qw->fmt)
		return llm_qgemv_cuda(qw, x, xh ? KVK_F16 : KVK_F32, ldx, T,
				      glu ? 2 * end[0] : end[n_seg - 1], K,
				      nw, m->c.rms_eps, &o, beta, m->st);
	return llm_gemv_cuda(w, m->dt, x, xh ? KVK_F16 : KVK_F32, ldx, T,
			     glu ? 2 * end[0] : end[n_seg - 1], K, nw,
			     m->c.rms_eps, &o, beta, m->st);
}

/*
 * the matrix [n][k] in the weight dtype for cuBLAS: @w itself, or, at
 * 8 or 4 bits, @qw expanded into m->wscr (one matrix at a time: each
 * GEMM on it is queued before the next expansion on the same stream)
 */
static const void *dense(struct llm_cuda *m, const void *w,
			 const struct llm_qw *qw, int n, int k, int *ret)
{
	if (*ret || !qw || !qw->fmt)
		return w;
	*ret = llm_qw_dequant_cuda(m->wscr, m->dt, qw, n, k, m->st);
	return m->wscr;
}

/* whether a step of @T tokens takes the GEMV path */
static bool use_gemv(const struct llm_cuda *m, int T)
{
	const struct llm_config *c = &m->c;

	/*
	 * One token only: with more, the GEMV re-reads the activations of
	 * every token per weight and cuBLAS is faster (measured on an H100).
	 * Quantized weights up to LLM_GEMV_MAX_TOK tokens: cuBLAS would need
	 * each matrix expanded first, three times the bytes of a GEMV.
	 */
	return (T == 1 || (m->wbits && T <= LLM_GEMV_MAX_TOK)) &&
	       c->dim % 8 == 0 && m->q_dim % 8 == 0 &&
	       c->ffn_dim % 8 == 0;
}

/*
 * Whether prefill GEMMs see their fp32 activations as hi + lo, two values
 * of the weight dtype. Off by default: one pass in the weight dtype, as
 * serving systems run prefill (the split doubles the GEMMs' cost).
 * KVMM_PREFILL_SPLIT=1 turns it on for reference checks against an fp32
 * model (the transformers comparison); read at each step.
 */
static bool split_on(void)
{
	const char *e = getenv("KVMM_PREFILL_SPLIT");

	return e && atoi(e) != 0;
}

/* fp32 @x ([n]) to the weight dtype: @hi, and with @split the rest @lo */
static int to_h(struct llm_cuda *m, const float *x, void *hi, void *lo,
		size_t n, bool split)
{
	if (split)
		return llm_split_cuda(hi, lo, m->dt, x, n, m->st);
	return kvk_convert_cuda(hi, m->dt, x, KVK_F32, n, m->st);
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

	ret = gemv(m, L->wo, &L->qo, m->oh, true, m->q_dim, T, m->q_dim, NULL, 1, e1,
		   yx, l1, 1.0f, false);
	if (!ret)
		ret = gemv(m, L->wgu, &L->qgu, m->x, false, c->dim, T, c->dim,
			   L->ffn_norm, 1, e2, ya, l2, 0.0f, true);
	if (!ret)
		ret = gemv(m, L->wdown, &L->qdown, m->actf, false, ffn, T, ffn, NULL, 1,
			   e1, yx, l1, 1.0f, false);
	return ret;
}

/*
 * the cache stores the step's keys and values and attends, for every
 * sequence at once, on RoPE'd fp32 queries and keys; its fp16 output goes
 * to m->oh, and to m->attf off the GEMV path
 */
static int layer_attn(struct llm_cuda *m, struct llm_kv *kv,
		      const struct llm_batch *b, int l, int T, bool gv)
{
	const struct llm_config *c = &m->c;
	float *k = m->kvb, *v = m->kvb + (size_t)T * m->kv_dim;
	struct llm_kv_io io = {
		.q = m->q, .ldq = m->q_dim, .k = k, .v = v,
		.ldkv = m->kv_dim, .out = m->oh, .ldo = m->q_dim,
		.odt = KVK_F16,
	};
	int ret;

	ret = kvk_rope_cuda(m->q, k, meta_pos(m, m->meta), T, c->n_heads,
			    c->n_kv_heads, c->head_dim, &m->rope, KVK_F32,
			    m->st);
	if (!ret)
		ret = kv->ops->layer(kv, b, l, &io, m->st);
	if (!ret && !gv)
		ret = kvk_convert_cuda(m->attf, KVK_F32, m->oh, KVK_F16,
				       (size_t)T * m->q_dim, m->st);
	return ret;
}

static int layer_run(struct llm_cuda *m, struct llm_kv *kv,
		     const struct llm_batch *b, int l, int T, bool decode)
{
	const struct llm_config *c = &m->c;
	const struct cuda_layer *L = &m->L[l];
	int hd = c->head_dim, ffn = c->ffn_dim, ret;
	float *k = m->kvb, *v = m->kvb + (size_t)T * m->kv_dim;
	size_t ffn_mat = (size_t)ffn * c->dim;
	bool gv = decode && use_gemv(m, T), split = !decode && split_on();
	const void *w;

	if (gv) {
		int end[3] = { m->q_dim, m->q_dim + m->kv_dim, m->qkv_dim };
		float *y[3] = { m->q, k, v };
		long ld[3] = { m->q_dim, m->kv_dim, m->kv_dim };

		ret = gemv(m, L->wqkv, &L->qqkv, m->x, false, c->dim, T, c->dim,
			   L->attn_norm, 3, end, y, ld, 0.0f, false);
	} else {
		const void *wqkv;

		ret = norm_to_h(m, m->x, L->attn_norm, T, split);
		wqkv = dense(m, L->wqkv, &L->qqkv, m->qkv_dim, c->dim, &ret);
		if (!ret)
			ret = gemm_hl(m, wqkv, 0, 1, m->h, m->hl, split,
				      m->q, m->q_dim, T, m->q_dim, c->dim,
				      0.0f);
		if (!ret)
			ret = gemm_hl(m, (const uint8_t *)wqkv +
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
		ret = layer_attn(m, kv, b, l, T, gv);
	if (ret)
		return ret;
	if (gv)
		return layer_mlp_gemv(m, L, T);
	ret = to_h(m, m->attf, m->atth, m->atthl, (size_t)T * m->q_dim, split);
	w = dense(m, L->wo, &L->qo, c->dim, m->q_dim, &ret);
	if (!ret)
		ret = gemm_hl(m, w, 0, 1, m->atth, m->atthl, split, m->x,
			      c->dim, T, c->dim, m->q_dim, 1.0f);
	if (!ret)
		ret = norm_to_h(m, m->x, L->ffn_norm, T, split);
	w = dense(m, L->wgu, &L->qgu, 2 * ffn, c->dim, &ret);
	if (!ret)
		ret = gemm_hl(m, w, (long long)ffn_mat, 2, m->h, m->hl,
			      split, m->guf, 0, T, ffn, c->dim, 0.0f);
	if (!ret)
		ret = kvk_silu_mul_cuda(m->actf, m->guf,
					m->guf + (size_t)T * ffn,
					(size_t)T * ffn, KVK_F32, m->st);
	if (!ret)
		ret = to_h(m, m->actf, m->act, m->actl, (size_t)T * ffn,
			   split);
	w = dense(m, L->wdown, &L->qdown, c->dim, ffn, &ret);
	if (!ret)
		ret = gemm_hl(m, w, 0, 1, m->act, m->actl, split, m->x,
			      c->dim, T, c->dim, ffn, 1.0f);
	return ret;
}

/* every kernel of one step, on m->st, metadata already on the device */
static int step_run(struct llm_cuda *m, struct llm_kv *kv,
		    const struct llm_batch *b, int T, bool decode)
{
	const struct llm_config *c = &m->c;
	int S = b->n_seq, ret;

	ret = kvk_embed_cuda(m->h, m->embd, meta_tok(m, m->meta), T, c->dim,
			     c->n_vocab, m->dt, m->st);
	if (!ret)
		ret = kvk_convert_cuda(m->x, KVK_F32, m->h, m->dt,
				       (size_t)T * c->dim, m->st);
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = layer_run(m, kv, b, l, T, decode);
	if (!ret)
		ret = kvk_embed_cuda(m->last, m->x, meta_rows(m, m->meta), S,
				     c->dim, T, KVK_F32, m->st);
	if (!ret && decode && use_gemv(m, S)) {
		int end[1] = { (int)c->n_vocab };
		float *y[1] = { m->logits };
		long ld[1] = { c->n_vocab };

		ret = gemv(m, m->out, &m->qout, m->last, false, c->dim, S, c->dim,
			   m->out_norm, 1, end, y, ld, 0.0f, false);
	} else if (!ret) {
		bool split = !decode && split_on();

		const void *w;

		ret = norm_to_h(m, m->last, m->out_norm, S, split);
		w = dense(m, m->out, &m->qout, c->n_vocab, c->dim, &ret);
		if (!ret)
			ret = gemm_hl(m, w, 0, 1, m->h, m->hl, split,
				      m->logits, c->n_vocab, S, c->n_vocab,
				      c->dim, 0.0f);
	}
	if (!ret)
		ret = kvk_argmax_cuda(m->ids, m->logits, S, c->n_vocab,
				      KVK_F32, m->st);
	return ret;
}

/* llm_batch_check(), and the cache must be a device cache of this shape */
static int batch_check(const struct llm_cuda *m, const struct llm_kv *kv,
		       const struct llm_batch *b, int *ntok)
{
	int ctx;

	*ntok = 0;
	if (!kv || !kv->device || kv->n_kv_heads != (int)m->c.n_kv_heads ||
	    kv->n_heads != (int)m->c.n_heads ||
	    kv->head_dim != (int)m->c.head_dim ||
	    kv->n_layers != (int)m->c.n_layers)
		return -EINVAL;
	return llm_batch_check(&m->c, kv, b, ntok, &ctx);
}

/*
 * wait for @e, an event of KVX_STAGES steps ago: the host throttled to the
 * device's pace, not a drain (counted apart)
 */
static int wait_event(struct llm_cuda *m, cudaEvent_t e)
{
	if (cudaEventQuery(e) == cudaSuccess)
		return 0;
	m->waits++;
	return kvk_cuda_errno(cudaEventSynchronize(e));
}

/*
 * the step's tokens, positions and last rows to the device, through the
 * next pinned staging buffer (free once the copy made from it KVX_STAGES
 * steps ago is done); with @feed the tokens are the last step's argmax,
 * already on the device
 */
static int upload_step(struct llm_cuda *m, struct llm_kv *kv,
		       const struct llm_batch *b, bool feed)
{
	uint32_t i = m->next_stage++ % KVX_STAGES;
	int32_t *h = m->hstage[i], *tok = meta_tok(m, h);
	int32_t *pos = meta_pos(m, h), *rows = meta_rows(m, h);
	int S = b->n_seq, row = 0, ret;

	ret = wait_event(m, m->staged[i]);
	if (ret)
		return ret;
	for (int j = 0; j < S; j++) {
		int p0 = llm_kv_len(kv, b->seq[j]);

		for (int t = 0; t < b->n_tok[j]; t++, row++) {
			tok[row] = feed ? 0 : b->tok[row];
			pos[row] = p0 + t;
		}
		rows[j] = row - 1;
	}
	ret = kvk_cuda_errno(cudaMemcpyAsync(m->meta, h, meta_words(m) * 4,
					     cudaMemcpyHostToDevice, m->st));
	if (!ret && feed)
		ret = kvk_cuda_errno(cudaMemcpyAsync(meta_tok(m, m->meta),
						     m->ids, (size_t)S * 4,
						     cudaMemcpyDeviceToDevice,
						     m->st));
	if (!ret)
		ret = kvk_cuda_errno(cudaEventRecord(m->staged[i], m->st));
	return ret;
}

/* kernel nodes of a captured graph */
static uint32_t graph_kernels(cudaGraph_t g)
{
	size_t n = 0;
	uint32_t k = 0;
	cudaGraphNode_t *nodes;

	if (cudaGraphGetNodes(g, NULL, &n) != cudaSuccess || !n)
		return 0;
	nodes = malloc(n * sizeof(*nodes));
	if (!nodes || cudaGraphGetNodes(g, nodes, &n) != cudaSuccess) {
		free(nodes);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		enum cudaGraphNodeType t;

		if (cudaGraphNodeGetType(nodes[i], &t) == cudaSuccess &&
		    t == cudaGraphNodeTypeKernel)
			k++;
	}
	free(nodes);
	return k;
}

/* a decode step of @S sequences: replay its graph, capturing it first */
static int step_graph(struct llm_cuda *m, struct llm_kv *kv,
		      const struct llm_batch *b)
{
	int S = b->n_seq, ret, r2;
	cudaGraph_t g;

	if (m->g_kv != kv->id || !kv->id) {
		graphs_drop(m);
		m->g_kv = kv->id;
	}
	if (!m->g[S]) {
		ret = kvk_cuda_errno(cudaStreamBeginCapture(
			m->st, cudaStreamCaptureModeThreadLocal));
		if (ret)
			return ret;
		ret = step_run(m, kv, b, S, true);
		r2 = kvk_cuda_errno(cudaStreamEndCapture(m->st, &g));
		ret = ret ? ret : r2;
		if (ret)
			return ret;
		m->g_kernels[S] = graph_kernels(g);
		ret = kvk_cuda_errno(cudaGraphInstantiate(&m->g[S], g, 0));
		cudaGraphDestroy(g);
		if (ret) {
			m->g[S] = NULL;
			return ret;
		}
	}
	return kvk_cuda_errno(cudaGraphLaunch(m->g[S], m->st));
}

/*
 * enqueue one step of a batch the cache takes whole: the cache's page
 * work (begin), the layers (a graph at decode), the cache's end; the
 * outputs stay on the device
 */
static int enqueue(struct llm_cuda *m, struct llm_kv *kv,
		   const struct llm_batch *b, int T, bool feed)
{
	bool decode = llm_kv_batch_kind(kv, b) == LLM_KV_DECODE;
	int ret;

	if (feed && !decode)
		return -EINVAL;
	ret = ws_reserve(m, T, b->n_seq);
	if (!ret)
		ret = upload_step(m, kv, b, feed);
	if (!ret)
		ret = kv->ops->begin(kv, b, m->st);
	if (ret)
		return ret;
	if (decode && m->graphs && b->n_seq <= MAX_GRAPHS)
		ret = step_graph(m, kv, b);
	else
		ret = step_run(m, kv, b, T, decode);
	return ret ?: kv->ops->end(kv, b, m->st);
}

static void commit(struct llm_kv *kv, const struct llm_batch *b)
{
	for (int i = 0; i < b->n_seq; i++)
		llm_kv_commit(kv, b->seq[i], b->n_tok[i]);
}

/* one whole step, its outputs (@ids or @logits) copied to the host */
static int forward(struct llm_cuda *m, struct llm_kv *kv,
		   const struct llm_batch *b, int T, void *out, bool ids)
{
	size_t bytes = (size_t)b->n_seq * (ids ? 4 : m->c.n_vocab * 4);
	int ret;

	ret = enqueue(m, kv, b, T, false);
	if (!ret)
		ret = kvk_cuda_errno(cudaMemcpyAsync(out, ids ? (void *)m->ids
							   : m->logits, bytes,
						     cudaMemcpyDeviceToHost,
						     m->st));
	if (!ret)
		ret = kvk_cuda_drain(m->st);
	if (!ret && kv->ops->status)
		ret = kv->ops->status(kv);
	if (!ret)
		commit(kv, b);
	return ret;
}

static int step_logits(void *m, struct llm_kv *kv, const struct llm_batch *b,
		       void *out)
{
	return llm_cuda_forward(m, kv, b, out);
}

static int step_ids(void *m, struct llm_kv *kv, const struct llm_batch *b,
		    void *out)
{
	return llm_cuda_forward_greedy(m, kv, b, out);
}

/**
 * llm_cuda_forward() - run one step on the device; see llm_cpu_forward()
 * @m: the model
 * @kv: a device cache (llm_kv_policy_create_cuda()) of the model's shape
 * @b: sequences and their new tokens (prompts, or one token at decode; a
 *	mixed batch runs as its prompts, then its decode tokens)
 * @logits: out (host memory): [b->n_seq][n_vocab] floats, the logits after
 *	the last new token of each sequence
 *
 * Return: 0, -EINVAL for a bad batch or another cache, -ENOSPC when a
 * sequence would exceed the cache's capacity or its budget, -E2BIG,
 * -ENOMEM, or a CUDA or cuBLAS error as -errno.
 */
int llm_cuda_forward(struct llm_cuda *m, struct llm_kv *kv,
		     const struct llm_batch *b, float *logits)
{
	int T, ret = batch_check(m, kv, b, &T);

	if (ret)
		return ret;
	if (llm_kv_batch_kind(kv, b) < 0)
		return llm_batch_split(kv, b, logits,
				       m->c.n_vocab * sizeof(float),
				       step_logits, m);
	return forward(m, kv, b, T, logits, false);
}

/**
 * llm_cuda_forward_greedy() - one step, returning only the argmax tokens
 * @m: the model
 * @kv: a device cache of the model's shape
 * @b: sequences and their new tokens
 * @ids: out (host memory): [b->n_seq] the most likely next token of each
 *	sequence (kvk_argmax_cuda: ties to the lowest id)
 *
 * Return: as llm_cuda_forward().
 */
int llm_cuda_forward_greedy(struct llm_cuda *m, struct llm_kv *kv,
			    const struct llm_batch *b, int32_t *ids)
{
	int T, ret = batch_check(m, kv, b, &T);

	if (ret)
		return ret;
	if (llm_kv_batch_kind(kv, b) < 0)
		return llm_batch_split(kv, b, ids, sizeof(int32_t), step_ids,
				       m);
	return forward(m, kv, b, T, ids, true);
}

/**
 * llm_cuda_decode_async() - enqueue a greedy decode step and return at once
 * @m: the model
 * @kv: a device cache of the model's shape
 * @b: a decode batch (one token per sequence)
 * @feed: the tokens are the argmax of the previous step of the same
 *	batch, left on the device (b->tok is not read)
 *
 * The host does not wait for the device (the page work, the layers and the
 * cache's end are enqueued on the model's stream); the tokens are
 * committed at once. llm_cuda_wait() returns the last step's argmax and
 * the cache's errors. For pipelines and for bench decode.
 *
 * Return: 0, -EINVAL, or the enqueue's error.
 */
int llm_cuda_decode_async(struct llm_cuda *m, struct llm_kv *kv,
			  const struct llm_batch *b, bool feed)
{
	int T, ret = batch_check(m, kv, b, &T);

	if (ret)
		return ret;
	if (llm_kv_batch_kind(kv, b) != LLM_KV_DECODE)
		return -EINVAL;
	ret = enqueue(m, kv, b, T, feed);
	if (!ret)
		commit(kv, b);
	return ret;
}

/**
 * llm_cuda_wait() - wait for the steps enqueued so far
 * @m: the model
 * @kv: the cache they ran on (its errors are read), or NULL
 * @ids: NULL, or out (host memory): the argmax of the last step, @n ids
 * @n: sequences of the last step
 *
 * Return: 0, the cache's error, or a CUDA error as -errno.
 */
int llm_cuda_wait(struct llm_cuda *m, struct llm_kv *kv, int32_t *ids, int n)
{
	int ret = 0;

	if (ids && n > 0)
		ret = kvk_cuda_errno(cudaMemcpyAsync(ids, m->ids,
						     (size_t)n * 4,
						     cudaMemcpyDeviceToHost,
						     m->st));
	if (!ret)
		ret = kvk_cuda_drain(m->st);
	if (!ret && kv && kv->ops->status)
		ret = kv->ops->status(kv);
	return ret;
}

/**
 * llm_cuda_counters() - what the executor did, for benchmarks
 * @m: the model
 * @waits: out, or NULL: times the host waited for the copies of a step
 *	KVX_STAGES steps back (throttled to the device's pace; drains of a
 *	stream are counted by kvk_host_syncs)
 * @graph_kernels: out, or NULL: kernel nodes of the decode graph of @n
 *	sequences (0 when none is captured)
 * @n: batch size
 */
void llm_cuda_counters(const struct llm_cuda *m, unsigned long *waits,
		       uint32_t *graph_kernels, int n)
{
	if (waits)
		*waits = m->waits;
	if (graph_kernels)
		*graph_kernels = n >= 0 && n <= MAX_GRAPHS ? m->g_kernels[n]
							   : 0;
}

/**
 * llm_cuda_stream() - the model's stream (a cudaStream_t)
 * @m: the model
 *
 * Return: the stream every step runs on.
 */
void *llm_cuda_stream(const struct llm_cuda *m)
{
	return m->st;
}

/**
 * llm_cuda_trim() - give the step workspace back (after a large prefill)
 * @m: the model
 *
 * The decode graphs go with it and are captured again at the next step.
 */
void llm_cuda_trim(struct llm_cuda *m)
{
	kvk_cuda_drain(m->st);
	ws_free(m);
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
