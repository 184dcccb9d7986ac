// SPDX-License-Identifier: MIT
/*
 * forward_cpu.c - the LLaMA-family forward pass on the CPU, in fp32.
 *
 * DOC: CPU forward pass
 *
 * Weights are dequantised to fp32 once, at load, into row-major [out][in]
 * matrices; Q, K and V of a layer are stacked into one [q+2kv][dim] matrix
 * and gate and up into one [2 ffn][dim] matrix, so that a layer is five
 * threaded jobs: QKV GEMM, attention, output GEMM, gate/up GEMM, down GEMM.
 * GGUF files of the "llama" and "mistral" architectures store the Q and K
 * rows of each head interleaved for llama.cpp's pairwise RoPE; they are put
 * back in Hugging Face order at load, so one rotate-half RoPE
 * (kvk_rope_cpu()) serves every architecture.
 *
 * The tokens of every sequence of a step go through the GEMMs together
 * (one row each); attention then runs per sequence over the keys and values
 * read back from the KV cache. Only the last token of each sequence goes
 * through the final norm and the output projection.
 *
 * Measuring knob: KVMM_CPU_ACT_ROUND=f16 (or bf16) rounds every GEMM input
 * to that type first, as the CUDA executor's GEMMs see them, so that the
 * sensitivity of a result to the GPU's roundings can be measured on the
 * CPU alone (Documentation/policies/index.rst). Read once per process.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21 /* Linux 5.4 */
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "forward.h"
#include "kvk.h"
#include "pool.h"

#define GEMM_NB 64 /* rows of W kept hot in L2 while the tokens stream by */

struct gemm_job;

/* one transformer block, fp32, [out][in] row-major */
struct cpu_layer {
	float *attn_norm; /* [dim] */
	float *wqkv;	  /* [q_dim + 2 kv_dim][dim] */
	float *bqkv;	  /* [q_dim + 2 kv_dim] or NULL */
	float *q_norm;	  /* [head_dim] or NULL */
	float *k_norm;	  /* [head_dim] or NULL */
	float *wo;	  /* [dim][q_dim] */
	float *ffn_norm;  /* [dim] */
	float *wgu;	  /* [2 ffn_dim][dim]: gate rows, then up rows */
	float *wdown;	  /* [dim][ffn_dim] */
};

/*
 * struct llm_cpu - a model loaded for the CPU. Owned by the caller of
 * llm_cpu_load(); one llm_cpu_forward() at a time (the workspace is shared).
 */
struct llm_cpu {
	struct llm_config c;
	struct llm_pool *pool;
	struct kvk_rope_cfg rope;
	int q_dim, kv_dim, qkv_dim; /* floats per token */
	float *embd;		    /* [n_vocab][dim] */
	float *out_norm;	    /* [dim] */
	float *out;		    /* [n_vocab][dim]; == embd when tied */
	struct cpu_layer *L;	    /* [n_layers] */
	uint64_t bytes;		    /* fp32 weights held */
	void (*gemm_rows)(const struct gemm_job *j, long n0, long n1);

	/* workspace, grown on demand */
	int ws_tok;   /* tokens the buffers below hold */
	int ws_seq;   /* sequences last holds */
	float *x;     /* [ws_tok][dim] residual stream */
	float *h;     /* [ws_tok][dim] normed */
	float *qkv;   /* [ws_tok][qkv_dim] */
	float *att;   /* [ws_tok][q_dim] */
	float *gu;    /* [ws_tok][2 ffn] */
	float *act;   /* [ws_tok][ffn] */
	float *last;  /* [ws_seq][dim] */
	int32_t *pos; /* [ws_tok] */
};

/* ---- GEMM: Y[t][n] = sum_k X[t][k] W[n][k] ---- */

struct gemm_job {
	const struct llm_cpu *m;
	const float *x; /* [T][K], ldx apart */
	const float *w; /* [N][K] */
	float *y;	/* [T][N], ldy apart */
	long ldx, ldy;
	int T, N, K;
};

typedef float v8f __attribute__((vector_size(32), aligned(4)));

static inline float hsum8(const v8f *a)
{
	float s = 0.0f;

	for (int i = 0; i < 8; i++)
		s += (*a)[i];
	return s;
}

/* generic: 4 rows x 1 token, K a multiple of 8 */
static void dot4x1_gen(const float *w, int K, const float *x, float *y)
{
	v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };

	for (int k = 0; k < K; k += 8) {
		v8f xv = *(const v8f *)(x + k);

		a0 += *(const v8f *)(w + k) * xv;
		a1 += *(const v8f *)(w + K + k) * xv;
		a2 += *(const v8f *)(w + 2 * K + k) * xv;
		a3 += *(const v8f *)(w + 3 * K + k) * xv;
	}
	y[0] = hsum8(&a0);
	y[1] = hsum8(&a1);
	y[2] = hsum8(&a2);
	y[3] = hsum8(&a3);
}

static float dot1_scalar(const float *w, const float *x, int K)
{
	float s = 0.0f;

	for (int k = 0; k < K; k++)
		s += w[k] * x[k];
	return s;
}

static void gemm_rows_gen(const struct gemm_job *j, long n0, long n1)
{
	int K = j->K;

	for (long nb = n0; nb < n1; nb += GEMM_NB) {
		long ne = nb + GEMM_NB < n1 ? nb + GEMM_NB : n1;

		for (int t = 0; t < j->T; t++) {
			const float *x = j->x + t * j->ldx;
			float *y = j->y + t * j->ldy;
			long n = nb;

			if (K % 8 == 0)
				for (; n + 4 <= ne; n += 4)
					dot4x1_gen(j->w + n * K, K, x, y + n);
			for (; n < ne; n++)
				y[n] = dot1_scalar(j->w + n * K, x, K);
		}
	}
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))

static inline AVX2 float hsum256(__m256 a)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a),
			      _mm256_extractf128_ps(a, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 4 rows x 2 tokens; K a multiple of 8 */
static AVX2 void dot4x2_avx2(const float *w, int K, const float *x0,
			     const float *x1, float *y0, float *y1)
{
	__m256 a00 = _mm256_setzero_ps(), a10 = a00, a20 = a00, a30 = a00;
	__m256 a01 = a00, a11 = a00, a21 = a00, a31 = a00;

	for (int k = 0; k < K; k += 8) {
		__m256 u = _mm256_loadu_ps(x0 + k), v = _mm256_loadu_ps(x1 + k);
		__m256 w0 = _mm256_loadu_ps(w + k);
		__m256 w1 = _mm256_loadu_ps(w + K + k);
		__m256 w2 = _mm256_loadu_ps(w + 2 * K + k);
		__m256 w3 = _mm256_loadu_ps(w + 3 * K + k);

		a00 = _mm256_fmadd_ps(w0, u, a00);
		a01 = _mm256_fmadd_ps(w0, v, a01);
		a10 = _mm256_fmadd_ps(w1, u, a10);
		a11 = _mm256_fmadd_ps(w1, v, a11);
		a20 = _mm256_fmadd_ps(w2, u, a20);
		a21 = _mm256_fmadd_ps(w2, v, a21);
		a30 = _mm256_fmadd_ps(w3, u, a30);
		a31 = _mm256_fmadd_ps(w3, v, a31);
	}
	y0[0] = hsum256(a00);
	y0[1] = hsum256(a10);
	y0[2] = hsum256(a20);
	y0[3] = hsum256(a30);
	y1[0] = hsum256(a01);
	y1[1] = hsum256(a11);
	y1[2] = hsum256(a21);
	y1[3] = hsum256(a31);
}

/* 4 rows x 1 token; K a multiple of 8 */
static AVX2 void dot4x1_avx2(const float *w, int K, const float *x,
			     float *y)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

	for (int k = 0; k < K; k += 8) {
		__m256 u = _mm256_loadu_ps(x + k);

		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), u, a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + K + k), u, a1);
		a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 2 * K + k), u, a2);
		a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 3 * K + k), u, a3);
	}
	y[0] = hsum256(a0);
	y[1] = hsum256(a1);
	y[2] = hsum256(a2);
	y[3] = hsum256(a3);
}

static AVX2 void gemm_rows_avx2(const struct gemm_job *j, long n0, long n1)
{
	int K = j->K, t;

	if (K % 8) {
		gemm_rows_gen(j, n0, n1);
		return;
	}
	for (long nb = n0; nb < n1; nb += GEMM_NB) {
		long ne = nb + GEMM_NB < n1 ? nb + GEMM_NB : n1;

		for (t = 0; t + 2 <= j->T; t += 2) {
			const float *x0 = j->x + t * j->ldx, *x1 = x0 + j->ldx;
			float *y0 = j->y + t * j->ldy, *y1 = y0 + j->ldy;
			long n = nb;

			for (; n + 4 <= ne; n += 4)
				dot4x2_avx2(j->w + n * K, K, x0, x1, y0 + n,
					    y1 + n);
			for (; n < ne; n++) {
				y0[n] = dot1_scalar(j->w + n * K, x0, K);
				y1[n] = dot1_scalar(j->w + n * K, x1, K);
			}
		}
		for (; t < j->T; t++) {
			const float *x = j->x + t * j->ldx;
			float *y = j->y + t * j->ldy;
			long n = nb;

			for (; n + 4 <= ne; n += 4)
				dot4x1_avx2(j->w + n * K, K, x, y + n);
			for (; n < ne; n++)
				y[n] = dot1_scalar(j->w + n * K, x, K);
		}
	}
}
#endif /* __x86_64__ */

static bool cpu_has_avx2(void)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return false;
#endif
}

/* the kernels of @m: portable, or AVX2/FMA when the CPU has them */
static void kernels_pick(struct llm_cpu *m)
{
	m->gemm_rows = gemm_rows_gen;
#if defined(__x86_64__)
	if (cpu_has_avx2())
		m->gemm_rows = gemm_rows_avx2;
#endif
}

static void gemm_task(void *arg, int tid, int nth)
{
	const struct gemm_job *j = arg;
	long lo, hi;

	llm_pool_range(j->N, tid, nth, 4, &lo, &hi);
	if (lo < hi)
		j->m->gemm_rows(j, lo, hi);
}

static void gemm(struct llm_cpu *m, const float *x, long ldx, const float *w,
		 float *y, long ldy, int T, int N, int K)
{
	struct gemm_job j = { m, x, w, y, ldx, ldy, T, N, K };
	static int round_dt = -1;

	/* KVMM_CPU_ACT_ROUND: the inputs are scratch, rounded in place */
	if (round_dt < 0) {
		const char *e = getenv("KVMM_CPU_ACT_ROUND");

		round_dt = e && !strcmp(e, "f16") ? KVK_F16 :
			   e && !strcmp(e, "bf16") ? KVK_BF16 : 0;
	}
	if (round_dt)
		for (int t = 0; t < T; t++)
			for (int k = 0; k < K; k++) {
				float *v = (float *)x + t * ldx + k;
				uint16_t h;

				kvk_convert_from_f32(&h, v, 1, round_dt);
				kvk_convert_to_f32(v, &h, 1, round_dt);
			}

	llm_pool_run(m->pool, gemm_task, &j);
}

/* ---- load ---- */

static float *falloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 64, n * sizeof(float) + 64))
		return NULL;
	return p;
}

/*
 * Ask the kernel to reclaim the pages of a source tensor once it is in
 * fp32: the model file's pages otherwise stay resident next to their
 * fp32 copy until the file is closed (an F32 safetensors file doubles the
 * peak). MADV_PAGEOUT keeps the contents (file pages are dropped and read
 * again if touched; anonymous memory is swapped or left alone), so it is
 * safe on any memory; an older kernel's -EINVAL is ignored.
 */
static void drop_source(const struct llm_gguf_tensor *t)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)t->data + pg - 1) & ~(pg - 1);
	uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(pg - 1);

	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_PAGEOUT);
}

/* dequantise @t into @dst: rows of t->ne[0] floats */
static int load_rows(const struct llm_gguf_tensor *t, float *dst)
{
	uint64_t rows = t->nelem / t->ne[0];
	int ret;

	for (uint64_t r = 0; r < rows; r++) {
		ret = llm_gguf_tensor_row(t, r, dst + r * t->ne[0]);
		if (ret)
			return ret;
	}
	drop_source(t);
	return 0;
}

/*
 * Llama GGUF files store each head's Q/K rows as (i, j) pairs for pairwise
 * RoPE: file row 2i + j is Hugging Face row j * hd/2 + i. Undo it in place.
 */
static int unpermute_heads(float *w, int n_heads, int hd, int cols)
{
	size_t hb = (size_t)hd * cols;
	float *tmp = malloc(hb * sizeof(float));

	if (!tmp)
		return -ENOMEM;
	for (int h = 0; h < n_heads; h++) {
		float *base = w + h * hb;

		memcpy(tmp, base, hb * sizeof(float));
		for (int i = 0; i < hd / 2; i++)
			for (int j = 0; j < 2; j++)
				memcpy(base + (size_t)(j * hd / 2 + i) * cols,
				       tmp + (size_t)(2 * i + j) * cols,
				       cols * sizeof(float));
	}
	free(tmp);
	return 0;
}

static float *load_vec(struct llm_cpu *m, const struct llm_gguf_tensor *t,
		       int *ret)
{
	float *p = falloc(t->nelem);

	if (!p) {
		*ret = -ENOMEM;
		return NULL;
	}
	*ret = load_rows(t, p);
	m->bytes += t->nelem * sizeof(float);
	return p;
}

static int load_layer(struct llm_cpu *m, const struct llm_layer_weights *lw,
		      struct cpu_layer *L)
{
	const struct llm_config *c = &m->c;
	bool permuted = c->qk_interleaved;
	size_t dim = c->dim, ffn = c->ffn_dim;
	int ret = 0;

	L->attn_norm = load_vec(m, lw->attn_norm, &ret);
	if (ret)
		return ret;
	L->ffn_norm = load_vec(m, lw->ffn_norm, &ret);
	if (ret)
		return ret;
	L->wo = load_vec(m, lw->wo, &ret);
	if (ret)
		return ret;
	L->wdown = load_vec(m, lw->w_down, &ret);
	if (ret)
		return ret;
	L->wqkv = falloc((size_t)m->qkv_dim * dim);
	L->wgu = falloc(2 * ffn * dim);
	if (!L->wqkv || !L->wgu)
		return -ENOMEM;
	m->bytes += ((size_t)m->qkv_dim + 2 * ffn) * dim * sizeof(float);
	ret = load_rows(lw->wq, L->wqkv);
	if (!ret)
		ret = load_rows(lw->wk, L->wqkv + m->q_dim * dim);
	if (!ret)
		ret = load_rows(lw->wv, L->wqkv + (m->q_dim + m->kv_dim) * dim);
	if (!ret)
		ret = load_rows(lw->w_gate, L->wgu);
	if (!ret)
		ret = load_rows(lw->w_up, L->wgu + ffn * dim);
	if (!ret && permuted)
		ret = unpermute_heads(L->wqkv, c->n_heads, c->head_dim, dim);
	if (!ret && permuted)
		ret = unpermute_heads(L->wqkv + m->q_dim * dim, c->n_kv_heads,
				      c->head_dim, dim);
	if (ret)
		return ret;
	if (lw->bq) {
		L->bqkv = falloc(m->qkv_dim);
		if (!L->bqkv)
			return -ENOMEM;
		m->bytes += m->qkv_dim * sizeof(float);
		ret = load_rows(lw->bq, L->bqkv);
		if (!ret)
			ret = load_rows(lw->bk, L->bqkv + m->q_dim);
		if (!ret)
			ret = load_rows(lw->bv, L->bqkv + m->q_dim + m->kv_dim);
		if (ret)
			return ret;
	}
	if (lw->q_norm) {
		L->q_norm = load_vec(m, lw->q_norm, &ret);
		if (ret)
			return ret;
		L->k_norm = load_vec(m, lw->k_norm, &ret);
	}
	return ret;
}

static int cpu_check_config(const struct llm_config *c,
			    const struct llm_weights *w, char *err,
			    size_t errlen)
{
	if (c->head_dim % 2 || c->head_dim > KVK_ROPE_MAX_HEAD_DIM) {
		snprintf(err, errlen, "head_dim %u: the CPU executor takes an "
			 "even head_dim up to %d", c->head_dim,
			 KVK_ROPE_MAX_HEAD_DIM);
		return -EOPNOTSUPP;
	}
	if (c->rope_dim != c->head_dim) {
		snprintf(err, errlen, "rope.dimension_count %u != head_dim %u: "
			 "partial rotary is not supported", c->rope_dim,
			 c->head_dim);
		return -EOPNOTSUPP;
	}
	if (w->rope_freqs) {
		snprintf(err, errlen, "rope_freqs.weight (Llama-3.1 RoPE "
			 "scaling) is not supported by the CPU executor yet");
		return -EOPNOTSUPP;
	}
	if (c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads) {
		snprintf(err, errlen, "head_count %u is not a multiple of "
			 "head_count_kv %u", c->n_heads, c->n_kv_heads);
		return -EINVAL;
	}
	return 0;
}

/**
 * llm_cpu_load() - dequantise a model's weights to fp32 for the CPU
 * @c: configuration, from llm_config_load()
 * @w: weights bound by llm_weights_bind(); the GGUF file may be closed
 *     once this returns
 * @n_threads: threads of the pool (the caller's included); >= 1
 * @out: the model, released with llm_cpu_free()
 * @err: one-line message on failure
 * @errlen: bytes of @err
 *
 * Return: 0, -EOPNOTSUPP for a configuration the CPU executor does not
 * handle (partial rotary, rope_freqs, head_dim over 256), -EINVAL,
 * -ENOMEM, or a dequantisation error.
 */
int llm_cpu_load(const struct llm_config *c, const struct llm_weights *w,
		 int n_threads, struct llm_cpu **out, char *err,
		 size_t errlen)
{
	struct llm_cpu *m;
	int ret;

	ret = cpu_check_config(c, w, err, errlen);
	if (ret)
		return ret;
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->c = *c;
	m->q_dim = c->n_heads * c->head_dim;
	m->kv_dim = c->n_kv_heads * c->head_dim;
	m->qkv_dim = m->q_dim + 2 * m->kv_dim;
	m->rope.theta = c->rope_theta;
	m->rope.factor = c->rope_factor;
	m->rope.low_freq_factor = c->rope_low_freq;
	m->rope.high_freq_factor = c->rope_high_freq;
	m->rope.orig_max_pos = (int)c->rope_orig_ctx;
	kernels_pick(m);
	ret = llm_pool_create(n_threads, &m->pool);
	if (ret) {
		snprintf(err, errlen, "thread pool of %d: %s", n_threads,
			 strerror(-ret));
		goto out_free;
	}
	m->L = calloc(c->n_layers, sizeof(*m->L));
	ret = m->L ? 0 : -ENOMEM;
	if (!ret)
		m->embd = load_vec(m, w->tok_embd, &ret);
	if (!ret)
		m->out_norm = load_vec(m, w->output_norm, &ret);
	if (!ret)
		m->out = w->tied ? m->embd : load_vec(m, w->output, &ret);
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = load_layer(m, &w->layers[l], &m->L[l]);
	if (ret) {
		snprintf(err, errlen, "loading weights: %s", strerror(-ret));
		goto out_free;
	}
	*out = m;
	return 0;

out_free:
	llm_cpu_free(m);
	return ret;
}

static void ws_free(struct llm_cpu *m)
{
	free(m->x);
	free(m->h);
	free(m->qkv);
	free(m->att);
	free(m->gu);
	free(m->act);
	free(m->last);
	free(m->pos);
	m->x = m->h = m->qkv = m->att = m->gu = m->act = NULL;
	m->last = NULL;
	m->pos = NULL;
	m->ws_tok = m->ws_seq = 0;
}

/**
 * llm_cpu_free() - release a model loaded by llm_cpu_load()
 * @m: the model, or NULL
 */
void llm_cpu_free(struct llm_cpu *m)
{
	if (!m)
		return;
	for (uint32_t l = 0; m->L && l < m->c.n_layers; l++) {
		struct cpu_layer *L = &m->L[l];

		free(L->attn_norm);
		free(L->wqkv);
		free(L->bqkv);
		free(L->q_norm);
		free(L->k_norm);
		free(L->wo);
		free(L->ffn_norm);
		free(L->wgu);
		free(L->wdown);
	}
	free(m->L);
	if (m->out != m->embd)
		free(m->out);
	free(m->embd);
	free(m->out_norm);
	ws_free(m);
	llm_pool_destroy(m->pool);
	free(m);
}

/**
 * llm_cpu_weight_bytes() - memory held by the fp32 weights
 * @m: the model
 *
 * Return: bytes.
 */
uint64_t llm_cpu_weight_bytes(const struct llm_cpu *m)
{
	return m->bytes;
}

/**
 * llm_cpu_threads() - threads the model's pool runs on
 * @m: the model
 *
 * Return: the count, the caller's thread included.
 */
int llm_cpu_threads(const struct llm_cpu *m)
{
	return llm_pool_threads(m->pool);
}

/* make the workspace hold @ntok tokens, @ctx positions, @nseq sequences */
static int ws_reserve(struct llm_cpu *m, int ntok, int nseq)
{
	const struct llm_config *c = &m->c;

	if (ntok <= m->ws_tok && nseq <= m->ws_seq)
		return 0;
	ntok = ntok > m->ws_tok ? ntok : m->ws_tok;
	nseq = nseq > m->ws_seq ? nseq : m->ws_seq;
	ws_free(m);
	m->x = falloc((size_t)ntok * c->dim);
	m->h = falloc((size_t)ntok * c->dim);
	m->qkv = falloc((size_t)ntok * m->qkv_dim);
	m->att = falloc((size_t)ntok * m->q_dim);
	m->gu = falloc((size_t)ntok * 2 * c->ffn_dim);
	m->act = falloc((size_t)ntok * c->ffn_dim);
	m->last = falloc((size_t)nseq * c->dim);
	m->pos = malloc((size_t)ntok * sizeof(int32_t));
	if (!m->x || !m->h || !m->qkv || !m->att || !m->gu || !m->act ||
	    !m->last || !m->pos) {
		ws_free(m);
		return -ENOMEM;
	}
	m->ws_tok = ntok;
	m->ws_seq = nseq;
	return 0;
}

/* QKV projection, bias, q/k norm, RoPE for the @T tokens of the step */
static int layer_qkv(struct llm_cpu *m, const struct cpu_layer *L, int T)
{
	const struct llm_config *c = &m->c;
	int hd = c->head_dim, ret = 0;

	gemm(m, m->h, c->dim, L->wqkv, m->qkv, m->qkv_dim, T, m->qkv_dim,
	     c->dim);
	for (int t = 0; t < T; t++) {
		float *q = m->qkv + (size_t)t * m->qkv_dim;
		float *k = q + m->q_dim;

		if (L->bqkv)
			ret = kvk_add_cpu(q, q, L->bqkv, m->qkv_dim, KVK_F32,
					  NULL);
		if (!ret && L->q_norm)
			ret = kvk_rmsnorm_cpu(q, q, L->q_norm, c->n_heads, hd,
					      c->rms_eps, KVK_F32, NULL);
		if (!ret && L->k_norm)
			ret = kvk_rmsnorm_cpu(k, k, L->k_norm, c->n_kv_heads,
					      hd, c->rms_eps, KVK_F32, NULL);
		if (!ret)
			ret = kvk_rope_cpu(q, k, &m->pos[t], 1, c->n_heads,
					   c->n_kv_heads, hd, &m->rope,
					   KVK_F32, NULL);
		if (ret)
			return ret;
	}
	return 0;
}

/* the cache stores the step's keys and values and attends, all sequences */
static int layer_attn(struct llm_cpu *m, struct llm_kv *kv,
		      const struct llm_batch *b, int l)
{
	struct llm_kv_io io = {
		.q = m->qkv, .ldq = m->qkv_dim,
		.k = m->qkv + m->q_dim, .v = m->qkv + m->q_dim + m->kv_dim,
		.ldkv = m->qkv_dim, .out = m->att, .ldo = m->q_dim,
		.odt = KVK_F32,
	};

	return kv->ops->layer(kv, b, l, &io, NULL);
}

static int layer_forward(struct llm_cpu *m, struct llm_kv *kv,
			 const struct llm_batch *b, int l, int T)
{
	const struct llm_config *c = &m->c;
	const struct cpu_layer *L = &m->L[l];
	size_t ffn = c->ffn_dim;
	int ret;

	ret = kvk_rmsnorm_cpu(m->h, m->x, L->attn_norm, T, c->dim, c->rms_eps,
			      KVK_F32, NULL);
	if (!ret)
		ret = layer_qkv(m, L, T);
	if (!ret)
		ret = layer_attn(m, kv, b, l);
	if (ret)
		return ret;
	gemm(m, m->att, m->q_dim, L->wo, m->h, c->dim, T, c->dim, m->q_dim);
	ret = kvk_add_cpu(m->x, m->x, m->h, (size_t)T * c->dim, KVK_F32, NULL);
	if (!ret)
		ret = kvk_rmsnorm_cpu(m->h, m->x, L->ffn_norm, T, c->dim,
				      c->rms_eps, KVK_F32, NULL);
	if (ret)
		return ret;
	gemm(m, m->h, c->dim, L->wgu, m->gu, 2 * ffn, T, 2 * ffn, c->dim);
	for (int t = 0; !ret && t < T; t++)
		ret = kvk_silu_mul_cpu(m->act + t * ffn, m->gu + t * 2 * ffn,
				       m->gu + t * 2 * ffn + ffn, ffn, KVK_F32,
				       NULL);
	if (ret)
		return ret;
	gemm(m, m->act, ffn, L->wdown, m->h, c->dim, T, c->dim, ffn);
	return kvk_add_cpu(m->x, m->x, m->h, (size_t)T * c->dim, KVK_F32,
			   NULL);
}

/* one step of a batch the cache takes whole (all prefill or all decode) */
static int forward(struct llm_cpu *m, struct llm_kv *kv,
		   const struct llm_batch *b, int T, float *logits)
{
	const struct llm_config *c = &m->c;
	size_t row = 0;
	int ret;

	ret = ws_reserve(m, T, b->n_seq);
	if (ret)
		return ret;
	for (int i = 0; i < b->n_seq; i++) {
		int p0 = llm_kv_len(kv, b->seq[i]);

		for (int t = 0; t < b->n_tok[i]; t++)
			m->pos[row++] = p0 + t;
	}
	ret = kvk_embed_cpu(m->x, m->embd, b->tok, T, c->dim, c->n_vocab,
			    KVK_F32, NULL);
	if (!ret)
		ret = kv->ops->begin(kv, b, NULL);
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = layer_forward(m, kv, b, l, T);
	if (!ret)
		ret = kv->ops->end(kv, b, NULL);
	if (ret)
		return ret;
	row = 0;
	for (int i = 0; i < b->n_seq; i++) {
		row += b->n_tok[i];
		memcpy(m->last + (size_t)i * c->dim,
		       m->x + (row - 1) * c->dim, c->dim * sizeof(float));
	}
	ret = kvk_rmsnorm_cpu(m->last, m->last, m->out_norm, b->n_seq, c->dim,
			      c->rms_eps, KVK_F32, NULL);
	if (ret)
		return ret;
	gemm(m, m->last, c->dim, m->out, logits, c->n_vocab, b->n_seq,
	     c->n_vocab, c->dim);
	for (int i = 0; i < b->n_seq; i++)
		llm_kv_commit(kv, b->seq[i], b->n_tok[i]);
	return 0;
}

static int cpu_step(void *m, struct llm_kv *kv, const struct llm_batch *b,
		    void *logits)
{
	return llm_cpu_forward(m, kv, b, logits);
}

/**
 * llm_cpu_forward() - run one step: the new tokens of each sequence of @b
 * @m: the model
 * @kv: the KV cache; the step's keys and values are appended and committed
 * @b: sequences and their new tokens (a prompt, or one token at decode)
 * @logits: out: [b->n_seq][n_vocab] floats, the logits after the last new
 *	token of each sequence
 *
 * The cache takes a step that is all prompts or all decode tokens; a
 * mixed batch runs as its prompts, then its decode tokens
 * (llm_batch_split()). On failure the cache lengths are unchanged (but for
 * a mixed batch's prompts when its decode part failed).
 *
 * Return: 0, -EINVAL for a bad batch (unknown or repeated slot, token id out
 * of the vocabulary, a cache of another shape), -ENOSPC when a sequence
 * would exceed the cache's capacity, -E2BIG for more than 2^24 tokens in
 * the step, -ENOMEM.
 */
int llm_cpu_forward(struct llm_cpu *m, struct llm_kv *kv,
		    const struct llm_batch *b, float *logits)
{
	int T, ctx, ret;

	ret = llm_batch_check(&m->c, kv, b, &T, &ctx);
	if (ret)
		return ret;
	if (llm_kv_batch_kind(kv, b) > 0)
		return forward(m, kv, b, T, logits);
	return llm_batch_split(kv, b, logits, m->c.n_vocab * sizeof(float),
			       cpu_step, m);
}
