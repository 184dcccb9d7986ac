// SPDX-License-Identifier: MIT
/*
 * forward_cpu.c - the LLaMA-family forward pass on the CPU.
 *
 * DOC: CPU forward pass
 *
 * Weight matrices stay in their GGUF format (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K) and are read in place from the file's read-only
 * mapping: loading copies nothing, and the tied embedding/output matrix is
 * one matrix. The GEMMs quantise their input rows once per step
 * (kvk_qdot_quantize(): 8-bit blocks, Q8_K for the K-quants) and run the
 * integer dot products of kernels/qdot.h, on the best instruction set the
 * CPU has (AVX-512 VNNI, AVX2, portable C). Float matrices (F32, F16, BF16,
 * e.g. a Hugging Face directory) are held in fp32 and run an fp32 GEMM.
 * KVMM_CPU_WEIGHTS=f32 (read at load) dequantises every matrix to fp32
 * instead: the reference the quantised path is measured against.
 *
 * A layer is five threaded jobs: Q, K and V together, attention, the
 * output projection, gate and up together, down. A job splits the rows of
 * its matrices among the threads (GEMV at decode); at prefill each thread
 * runs its rows in chunks of QROWS against tiles of four tokens, so a
 * chunk of weights is read from memory once per step and from L1 once per
 * four tokens.
 *
 * GGUF files of the "llama" and "mistral" architectures store the Q and K
 * rows of each head interleaved for llama.cpp's pairwise RoPE; the
 * executor computes Q and K in the file's row order and puts each token's
 * values back in Hugging Face order (a gather of q_dim + kv_dim floats), so
 * that one rotate-half RoPE (kvk_rope_cpu()) serves every architecture.
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
#include "qdot.h"

#define GEMM_NB 64 /* rows of W kept hot in L2 while the tokens stream by */
#define QROWS 16   /* quantised rows per chunk at prefill (L1-resident) */

/*
 * struct cpu_mat - one weight matrix [n][k] as the executor reads it.
 * Read-only after load.
 */
struct cpu_mat {
	uint32_t type;	  /* LLM_GGML_F32, or a kvk_qdot_supported() format */
	const uint8_t *w; /* row 0: in the file mapping, or @own */
	size_t ldw;	  /* bytes from one row to the next */
	int n, k;	  /* rows, elements per row */
	void *own;	  /* our copy (fp32 or raw blocks), else NULL */
};

/* one transformer block */
struct cpu_layer {
	float *attn_norm;	/* [dim] */
	struct cpu_mat wq;	/* [q_dim][dim], file row order */
	struct cpu_mat wk;	/* [kv_dim][dim], file row order */
	struct cpu_mat wv;	/* [kv_dim][dim] */
	float *bqkv;		/* [q_dim + 2 kv_dim] or NULL */
	float *q_norm;		/* [head_dim] or NULL */
	float *k_norm;		/* [head_dim] or NULL */
	struct cpu_mat wo;	/* [dim][q_dim] */
	float *ffn_norm;	/* [dim] */
	struct cpu_mat wgate;	/* [ffn_dim][dim] */
	struct cpu_mat wup;	/* [ffn_dim][dim] */
	struct cpu_mat wdown;	/* [dim][ffn_dim] */
};

struct gemm_job;

/* bytes held per weight format, for llm_cpu_weight_info() */
#define CPU_NTYPES 40

/*
 * struct llm_cpu - a model loaded for the CPU. Owned by the caller of
 * llm_cpu_load(); one llm_cpu_forward() at a time (the workspace is shared).
 */
struct llm_cpu {
	struct llm_config c;
	struct llm_pool *pool;
	bool prefill;	/* the running step is a prefill (its GEMM path) */
	struct kvk_rope_cfg rope;
	int q_dim, kv_dim, qkv_dim; /* floats per token */
	int isa;		    /* enum kvk_isa of the quantised GEMMs */
	bool f32;		    /* KVMM_CPU_WEIGHTS=f32: all fp32 */
	struct llm_gguf *src;	    /* referenced while a matrix is in it */
	struct cpu_mat embd;	    /* [n_vocab][dim] */
	float *out_norm;	    /* [dim] */
	struct cpu_mat out_own;	    /* output.weight when not tied */
	const struct cpu_mat *out;  /* &embd when tied, else &out_own */
	struct cpu_layer *L;	    /* [n_layers] */
	uint64_t bytes;		    /* weight bytes held, in memory or mapped */
	uint64_t type_bytes[CPU_NTYPES]; /* of @bytes, per format */
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
	size_t qa_ld[2]; /* bytes per row of qa[]: Q8_0-style, Q8_K */
	uint8_t *qa[2];	 /* [ws_tok] quantised GEMM inputs */
};

/* ---- fp32 GEMM: Y[t][n] = sum_k X[t][k] W[n][k] ---- */

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

/* ---- a step's matrix products: fp32 or quantised, several matrices ---- */

/* one matrix of a job and where its outputs go */
struct mm_part {
	const struct cpu_mat *w;
	float *y;  /* [T][w->n], ldy apart */
	long ldy;  /* floats */
};

/*
 * struct mm_job - up to three matrices that read the same input, split
 * among the threads by rows of their concatenation. On the stack of
 * mm_run(); read-only while the pool runs it.
 */
struct mm_job {
	const struct llm_cpu *m;
	const float *x; /* [T][K] fp32 input, ldx apart */
	long ldx;
	int T, K, np;
	long rows;	/* sum of the parts' rows */
	struct mm_part p[3];
};

/* index of the activation buffer a format reads: 0 32-blocks, 1 Q8_K */
static int qa_slot(uint32_t type)
{
	return kvk_qdot_act_type(type) == KVK_QT_Q8_K;
}

/* rows [r0, r1) of part @p */
static void mm_part_rows(const struct mm_job *j, const struct mm_part *p,
			 long r0, long r1)
{
	const struct cpu_mat *w = p->w;
	const struct llm_cpu *m = j->m;
	int s;

	if (w->type == LLM_GGML_F32) {
		struct gemm_job g = { m, j->x, (const float *)w->w, p->y,
				      j->ldx, p->ldy, j->T, w->n, w->k };

		m->gemm_rows(&g, r0, r1);
		return;
	}
	s = qa_slot(w->type);
	/* decode: all rows at once; prefill: L1-sized chunks of rows */
	for (long r = r0; r < r1; r += j->T > 1 ? QROWS : r1 - r0) {
		long n = j->T > 1 && r1 - r > QROWS ? QROWS : r1 - r;

		/*
		 * one path per kind of step: a token's result does not
		 * depend on the batch it came in (kvk_qdot_gemm_prefill())
		 */
		(m->prefill ? kvk_qdot_gemm_prefill : kvk_qdot_gemm)(
			m->isa, w->type, w->w + r * w->ldw, w->ldw, n,
			m->qa[s], m->qa_ld[s], j->T, p->y + r, p->ldy, w->k);
	}
}

static void mm_task(void *arg, int tid, int nth)
{
	const struct mm_job *j = arg;
	long lo, hi, base = 0;

	llm_pool_range(j->rows, tid, nth, 4, &lo, &hi);
	for (int i = 0; i < j->np && lo < hi; i++) {
		long n = j->p[i].w->n;

		if (lo < base + n)
			mm_part_rows(j, &j->p[i], lo - base,
				     hi < base + n ? hi - base : n);
		base += n;
		if (lo < base)
			lo = base;
	}
}

/* quantise the job's input rows for every format it meets */
struct qa_job {
	const struct mm_job *j;
	bool need[2];
	uint32_t type[2];
};

static void qa_task(void *arg, int tid, int nth)
{
	const struct qa_job *q = arg;
	const struct mm_job *j = q->j;
	const struct llm_cpu *m = j->m;
	long lo, hi;

	llm_pool_range(j->T, tid, nth, 1, &lo, &hi);
	for (int s = 0; s < 2; s++)
		for (long t = lo; q->need[s] && t < hi; t++)
			kvk_qdot_quantize_isa(m->isa, q->type[s],
					      j->x + t * j->ldx,
					      m->qa[s] + t * m->qa_ld[s], j->K);
}

static void act_round(const float *x, long ldx, int T, int K)
{
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
}

/*
 * Y_i[t][n] = sum_k X[t][k] W_i[n][k] for the @np matrices of @p, which
 * all read rows of @K = w->k floats of @x.
 */
static void mm_run(struct llm_cpu *m, const float *x, long ldx, int T,
		   int np, const struct mm_part *p)
{
	struct mm_job j = { m, x, ldx, T, p[0].w->k, np, 0, { { 0 } } };
	struct qa_job q = { &j, { false, false }, { 0, 0 } };

	act_round(x, ldx, T, j.K);
	for (int i = 0; i < np; i++) {
		j.p[i] = p[i];
		j.rows += p[i].w->n;
		if (p[i].w->type != LLM_GGML_F32) {
			q.need[qa_slot(p[i].w->type)] = true;
			q.type[qa_slot(p[i].w->type)] = p[i].w->type;
		}
	}
	if (q.need[0] || q.need[1]) {
		if (T >= 4 * llm_pool_threads(m->pool))
			llm_pool_run(m->pool, qa_task, &q);
		else
			qa_task(&q, 0, 1);
	}
	llm_pool_run(m->pool, mm_task, &j);
}

static void mm1(struct llm_cpu *m, const float *x, long ldx, int T,
		const struct cpu_mat *w, float *y, long ldy)
{
	struct mm_part p = { w, y, ldy };

	mm_run(m, x, ldx, T, 1, &p);
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

static void count_bytes(struct llm_cpu *m, uint32_t type, uint64_t bytes)
{
	m->bytes += bytes;
	m->type_bytes[type < CPU_NTYPES ? type : 0] += bytes;
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
	count_bytes(m, LLM_GGML_F32, t->nelem * sizeof(float));
	return p;
}

/*
 * Bind @t as a matrix: read in place when its format has dot products (or
 * is F32) and the file is mapped (a reference on the mapping is taken);
 * copied as raw blocks from a caller's buffer; else dequantised to fp32.
 */
/*
 * Map a matrix read in place into the process now (the file's pages are
 * read in, or found in the page cache, and mapped): otherwise the first
 * step takes those page faults, 145 MB of them for the Q8_0 SmolLM2, in
 * the middle of its prefill; at load they are counted as loading (peak
 * RSS is the same: every matrix is read by the first step). Best effort.
 */
static void populate(const void *p, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t lo, hi;

	if (pg <= 0 || !len)
		return;
	lo = (uintptr_t)p & ~(uintptr_t)(pg - 1);
	hi = (uintptr_t)p + len;
#ifdef MADV_POPULATE_READ
	if (!madvise((void *)lo, hi - lo, MADV_POPULATE_READ))
		return;
#endif
	for (uintptr_t a = lo; a < hi; a += pg)
		(void)*(volatile const uint8_t *)(a < (uintptr_t)p ?
						  (uintptr_t)p : a);
}

static int load_mat(struct llm_cpu *m, const struct llm_weights *w,
		    const struct llm_gguf_tensor *t, struct cpu_mat *x)
{
	bool quant = !m->f32 && kvk_qdot_supported(t->type);
	bool mapped = w->src && w->src->mapped;
	uint64_t rb;
	int ret;

	x->n = (int)(t->nelem / t->ne[0]);
	x->k = (int)t->ne[0];
	if (quant || (t->type == LLM_GGML_F32 && mapped && !m->f32)) {
		ret = llm_gguf_row_bytes(t->type, t->ne[0], &rb);
		if (ret)
			return ret;
		x->type = t->type;
		x->ldw = rb;
		if (mapped) {
			if (!m->src)
				m->src = llm_gguf_get(w->src);
			x->w = t->data;
			populate(t->data, t->nbytes);
		} else {
			x->own = malloc(t->nbytes ? t->nbytes : 1);
			if (!x->own)
				return -ENOMEM;
			memcpy(x->own, t->data, t->nbytes);
			x->w = x->own;
		}
		count_bytes(m, t->type, t->nbytes);
		return 0;
	}
	x->type = LLM_GGML_F32;
	x->ldw = (size_t)x->k * sizeof(float);
	x->own = falloc(t->nelem);
	if (!x->own)
		return -ENOMEM;
	x->w = x->own;
	count_bytes(m, LLM_GGML_F32, t->nelem * sizeof(float));
	return load_rows(t, x->own);
}

static int load_layer(struct llm_cpu *m, const struct llm_weights *w,
		      const struct llm_layer_weights *lw, struct cpu_layer *L)
{
	int ret = 0;

	L->attn_norm = load_vec(m, lw->attn_norm, &ret);
	if (!ret)
		L->ffn_norm = load_vec(m, lw->ffn_norm, &ret);
	if (!ret)
		ret = load_mat(m, w, lw->wq, &L->wq);
	if (!ret)
		ret = load_mat(m, w, lw->wk, &L->wk);
	if (!ret)
		ret = load_mat(m, w, lw->wv, &L->wv);
	if (!ret)
		ret = load_mat(m, w, lw->wo, &L->wo);
	if (!ret)
		ret = load_mat(m, w, lw->w_gate, &L->wgate);
	if (!ret)
		ret = load_mat(m, w, lw->w_up, &L->wup);
	if (!ret)
		ret = load_mat(m, w, lw->w_down, &L->wdown);
	if (ret)
		return ret;
	if (lw->bq) {
		L->bqkv = falloc(m->qkv_dim);
		if (!L->bqkv)
			return -ENOMEM;
		count_bytes(m, LLM_GGML_F32, m->qkv_dim * sizeof(float));
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
 * llm_cpu_load() - bind a model's weights for the CPU
 * @c: configuration, from llm_config_load()
 * @w: weights bound by llm_weights_bind(); the GGUF file may be closed
 *     once this returns (a matrix read in place holds a reference on its
 *     mapping, llm_gguf_get())
 * @n_threads: threads of the pool (the caller's included); >= 1
 * @out: the model, released with llm_cpu_free()
 * @err: one-line message on failure
 * @errlen: bytes of @err
 *
 * Matrices in a format of kernels/qdot.h stay in it, read in place from a
 * mapped file (copied from a caller's buffer); float matrices and, with
 * KVMM_CPU_WEIGHTS=f32 in the environment, every matrix are held in fp32.
 *
 * Return: 0, -EOPNOTSUPP for a configuration the CPU executor does not
 * handle (partial rotary, rope_freqs, head_dim over 256), -EINVAL,
 * -ENOMEM, or a dequantisation error.
 */
int llm_cpu_load(const struct llm_config *c, const struct llm_weights *w,
		 int n_threads, struct llm_cpu **out, char *err,
		 size_t errlen)
{
	const char *e = getenv("KVMM_CPU_WEIGHTS");
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
	m->f32 = e && !strcmp(e, "f32");
	m->isa = kvk_qdot_isa_best();
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
		ret = load_mat(m, w, w->tok_embd, &m->embd);
	if (!ret)
		m->out_norm = load_vec(m, w->output_norm, &ret);
	m->out = &m->embd;
	if (!ret && !w->tied) {
		ret = load_mat(m, w, w->output, &m->out_own);
		m->out = &m->out_own;
	}
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = load_layer(m, w, &w->layers[l], &m->L[l]);
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
	free(m->qa[0]);
	free(m->qa[1]);
	m->x = m->h = m->qkv = m->att = m->gu = m->act = NULL;
	m->last = NULL;
	m->pos = NULL;
	m->qa[0] = m->qa[1] = NULL;
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
		free(L->wq.own);
		free(L->wk.own);
		free(L->wv.own);
		free(L->bqkv);
		free(L->q_norm);
		free(L->k_norm);
		free(L->wo.own);
		free(L->ffn_norm);
		free(L->wgate.own);
		free(L->wup.own);
		free(L->wdown.own);
	}
	free(m->L);
	free(m->out_own.own);
	free(m->embd.own);
	free(m->out_norm);
	ws_free(m);
	llm_pool_destroy(m->pool);
	llm_gguf_close(m->src);
	free(m);
}

/**
 * llm_cpu_weight_bytes() - bytes of weights the model reads, held in
 * memory or mapped from its file (each byte once: a tied embedding counts
 * once)
 * @m: the model
 *
 * Return: bytes.
 */
uint64_t llm_cpu_weight_bytes(const struct llm_cpu *m)
{
	return m->bytes;
}

/**
 * llm_cpu_weight_info() - the formats of the weights and the bytes of each
 * @m: the model
 * @buf: out: e.g. "Q4_1 64.7 MB, Q8_0 28.3 MB, F32 0.1 MB (mapped, avx512)"
 * @len: bytes of @buf
 *
 * Largest first; "mapped" when the quantised matrices are read in place
 * from the file's mapping, then the instruction set of the dot products.
 */
void llm_cpu_weight_info(const struct llm_cpu *m, char *buf, size_t len)
{
	bool done[CPU_NTYPES] = { false };
	size_t n = 0;

	if (!len)
		return;
	buf[0] = 0;
	for (;;) {
		int best = -1;

		for (int t = 0; t < CPU_NTYPES; t++)
			if (!done[t] && m->type_bytes[t] &&
			    (best < 0 || m->type_bytes[t] > m->type_bytes[best]))
				best = t;
		if (best < 0 || n >= len)
			break;
		done[best] = true;
		n += snprintf(buf + n, len - n, "%s%s %.1f MB", n ? ", " : "",
			      llm_gguf_type_name(best),
			      m->type_bytes[best] / 1e6);
	}
	if (n < len)
		snprintf(buf + n, len - n, " (%s, %s)",
			 m->src ? "mapped" : "in memory",
			 m->f32 ? "fp32 GEMM" : kvk_qdot_isa_name(m->isa));
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

/**
 * llm_cpu_pool() - the model's thread pool, for a host KV cache to run its
 * attention on (struct llm_kv_policy_opts.pool)
 * @m: the model
 *
 * The executor calls the cache only between its own jobs, so the two take
 * turns on the same threads: a step runs on llm_cpu_threads() threads in
 * all, where a cache with workers of its own would add as many again,
 * waiting (or spinning) beside the executor's.
 *
 * Return: the pool; valid until llm_cpu_free() unless a reference is
 * taken (llm_pool_get()).
 */
struct llm_pool *llm_cpu_pool(struct llm_cpu *m)
{
	return m->pool;
}

/* make the workspace hold @ntok tokens and @nseq sequences */
static int ws_reserve(struct llm_cpu *m, int ntok, int nseq)
{
	const struct llm_config *c = &m->c;
	size_t kmax = c->dim;

	if (ntok <= m->ws_tok && nseq <= m->ws_seq)
		return 0;
	ntok = ntok > m->ws_tok ? ntok : m->ws_tok;
	nseq = nseq > m->ws_seq ? nseq : m->ws_seq;
	ws_free(m);
	kmax = kmax > (size_t)m->q_dim ? kmax : (size_t)m->q_dim;
	kmax = kmax > c->ffn_dim ? kmax : c->ffn_dim;
	m->qa_ld[0] = (kmax + KVK_QK - 1) / KVK_QK * sizeof(struct kvk_qa8);
	m->qa_ld[1] = (kmax + KVK_QK_K - 1) / KVK_QK_K *
		      sizeof(struct kvk_q8k);
	m->x = falloc((size_t)ntok * c->dim);
	m->h = falloc((size_t)ntok * c->dim);
	m->qkv = falloc((size_t)ntok * m->qkv_dim);
	m->att = falloc((size_t)ntok * m->q_dim);
	m->gu = falloc((size_t)ntok * 2 * c->ffn_dim);
	m->act = falloc((size_t)ntok * c->ffn_dim);
	m->last = falloc((size_t)nseq * c->dim);
	m->pos = malloc((size_t)ntok * sizeof(int32_t));
	m->qa[0] = malloc((size_t)ntok * m->qa_ld[0]);
	m->qa[1] = malloc((size_t)ntok * m->qa_ld[1]);
	if (!m->x || !m->h || !m->qkv || !m->att || !m->gu || !m->act ||
	    !m->last || !m->pos || !m->qa[0] || !m->qa[1]) {
		ws_free(m);
		return -ENOMEM;
	}
	m->ws_tok = ntok;
	m->ws_seq = nseq;
	return 0;
}

/* @n heads of @hd values from pairwise-RoPE order to rotate-half order */
static void unpermute_heads(float *v, int n, int hd)
{
	float tmp[KVK_ROPE_MAX_HEAD_DIM];

	for (int h = 0; h < n; h++, v += hd) {
		memcpy(tmp, v, hd * sizeof(float));
		for (int i = 0; i < hd / 2; i++) {
			v[i] = tmp[2 * i];
			v[hd / 2 + i] = tmp[2 * i + 1];
		}
	}
}

/* ---- a layer's per-token pieces, split by tokens among the threads ---- */

#define TOK_PAR_MIN 16 /* tokens from which the pool runs them */

/* the tokens [@t0, @t1) of one piece of layer @L */
typedef int (*tok_fn)(struct llm_cpu *m, const struct cpu_layer *L, int t0,
		      int t1);

/* on the stack of tok_run(); @ret: a piece's error, any one */
struct tok_job {
	struct llm_cpu *m;
	const struct cpu_layer *L;
	tok_fn fn;
	int T;
	int ret;
};

static void tok_task(void *arg, int tid, int nth)
{
	struct tok_job *j = arg;
	long lo, hi;
	int ret;

	llm_pool_range(j->T, tid, nth, 1, &lo, &hi);
	if (lo < hi && (ret = j->fn(j->m, j->L, (int)lo, (int)hi)))
		__atomic_store_n(&j->ret, ret, __ATOMIC_RELAXED);
}

/*
 * @fn over the step's @T tokens: on the pool from TOK_PAR_MIN tokens (a
 * prefill: the norms, SiLU and residual adds were a fifth of a 2-thread
 * prefill's time, run on one thread), else on the caller's thread
 */
static int tok_run(struct llm_cpu *m, const struct cpu_layer *L, int T,
		   tok_fn fn)
{
	struct tok_job j = { m, L, fn, T, 0 };

	if (T < TOK_PAR_MIN || llm_pool_threads(m->pool) < 2)
		return fn(m, L, 0, T);
	llm_pool_run(m->pool, tok_task, &j);
	return j.ret;
}

/* h = rmsnorm(x) * attn_norm */
static int tok_attn_norm(struct llm_cpu *m, const struct cpu_layer *L,
			 int t0, int t1)
{
	size_t d = m->c.dim;

	return kvk_rmsnorm_cpu(m->h + t0 * d, m->x + t0 * d, L->attn_norm,
			       t1 - t0, d, m->c.rms_eps, KVK_F32, NULL);
}

/* x += h (the attention's output projection); h = rmsnorm(x) * ffn_norm */
static int tok_attn_res(struct llm_cpu *m, const struct cpu_layer *L,
			int t0, int t1)
{
	size_t d = m->c.dim;
	int ret;

	ret = kvk_add_cpu(m->x + t0 * d, m->x + t0 * d, m->h + t0 * d,
			  (size_t)(t1 - t0) * d, KVK_F32, NULL);
	return ret ?: kvk_rmsnorm_cpu(m->h + t0 * d, m->x + t0 * d,
				      L->ffn_norm, t1 - t0, d, m->c.rms_eps,
				      KVK_F32, NULL);
}

/* act = silu(gate) * up */
static int tok_silu(struct llm_cpu *m, const struct cpu_layer *L, int t0,
		    int t1)
{
	size_t ffn = m->c.ffn_dim;
	int ret = 0;

	(void)L;
	for (int t = t0; !ret && t < t1; t++)
		ret = kvk_silu_mul_cpu(m->act + t * ffn, m->gu + t * 2 * ffn,
				       m->gu + t * 2 * ffn + ffn, ffn, KVK_F32,
				       NULL);
	return ret;
}

/* x += h (the FFN's down projection) */
static int tok_ffn_res(struct llm_cpu *m, const struct cpu_layer *L, int t0,
		       int t1)
{
	size_t d = m->c.dim;

	(void)L;
	return kvk_add_cpu(m->x + t0 * d, m->x + t0 * d, m->h + t0 * d,
			   (size_t)(t1 - t0) * d, KVK_F32, NULL);
}

/* Q and K in Hugging Face order, bias, q/k norm, RoPE */
static int tok_qkv(struct llm_cpu *m, const struct cpu_layer *L, int t0,
		   int t1)
{
	const struct llm_config *c = &m->c;
	int hd = c->head_dim, ret = 0;

	for (int t = t0; t < t1; t++) {
		float *q = m->qkv + (size_t)t * m->qkv_dim;
		float *k = q + m->q_dim;

		if (c->qk_interleaved) {
			unpermute_heads(q, c->n_heads, hd);
			unpermute_heads(k, c->n_kv_heads, hd);
		}
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

/* QKV projection, bias, q/k norm, RoPE for the @T tokens of the step */
static int layer_qkv(struct llm_cpu *m, const struct cpu_layer *L, int T)
{
	const struct llm_config *c = &m->c;
	struct mm_part p[3] = {
		{ &L->wq, m->qkv, m->qkv_dim },
		{ &L->wk, m->qkv + m->q_dim, m->qkv_dim },
		{ &L->wv, m->qkv + m->q_dim + m->kv_dim, m->qkv_dim },
	};

	mm_run(m, m->h, c->dim, T, 3, p);
	return tok_run(m, L, T, tok_qkv);
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
	struct mm_part gu[2] = {
		{ &L->wgate, m->gu, 2 * ffn },
		{ &L->wup, m->gu + ffn, 2 * ffn },
	};
	int ret;

	ret = tok_run(m, L, T, tok_attn_norm);
	if (!ret)
		ret = layer_qkv(m, L, T);
	if (!ret)
		ret = layer_attn(m, kv, b, l);
	if (ret)
		return ret;
	mm1(m, m->att, m->q_dim, T, &L->wo, m->h, c->dim);
	ret = tok_run(m, L, T, tok_attn_res);
	if (ret)
		return ret;
	mm_run(m, m->h, c->dim, T, 2, gu);
	ret = tok_run(m, L, T, tok_silu);
	if (ret)
		return ret;
	mm1(m, m->act, ffn, T, &L->wdown, m->h, c->dim);
	return tok_run(m, L, T, tok_ffn_res);
}

/* the embedding rows of the step's tokens, dequantised into m->x */
static int embed(struct llm_cpu *m, const int32_t *tok, int T)
{
	const struct cpu_mat *e = &m->embd;

	for (int t = 0; t < T; t++) {
		const uint8_t *row;

		if (tok[t] < 0 || (uint32_t)tok[t] >= m->c.n_vocab)
			return -EINVAL;
		row = e->w + (size_t)tok[t] * e->ldw;
		if (e->type == LLM_GGML_F32)
			memcpy(m->x + (size_t)t * e->k, row,
			       e->k * sizeof(float));
		else if (kvk_qdot_dequant(e->type, row, m->x + (size_t)t * e->k,
					  e->k))
			return -EINVAL;
	}
	return 0;
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
	ret = embed(m, b->tok, T);
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
	mm1(m, m->last, c->dim, b->n_seq, m->out, logits, c->n_vocab);
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
	ret = llm_kv_batch_kind(kv, b);
	if (ret > 0) {
		m->prefill = ret == LLM_KV_PREFILL;
		return forward(m, kv, b, T, logits);
	}
	return llm_batch_split(kv, b, logits, m->c.n_vocab * sizeof(float),
			       cpu_step, m);
}
