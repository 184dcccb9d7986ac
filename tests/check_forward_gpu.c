// SPDX-License-Identifier: MIT
/*
 * check_forward_gpu.c - the CUDA executor against the CPU executor.
 *
 * Kernels: llm_kv_store (plain and with RoPE), llm_attn_prefill,
 * llm_convert, llm_split, llm_gemv and llm_bias_add on fresh random inputs
 * against their CPU references.
 *
 * Models: small random models of each architecture (llama, qwen2 with QKV
 * bias, qwen3 with q/k norm), written as GGUF in memory: CUDA and CPU
 * logits after the prompt and after each of 16 greedy decode steps (both
 * fed the CPU's tokens), relative L2 under a bound for the weight dtype,
 * and the same greedy tokens; a batch of three sequences prefilled and
 * decoded together against the CPU doing the same.
 *
 * With KVMM_HF_DIRS (tcase "hf", tools/gpu-suite.d/model.sh): Hugging Face
 * directories written by tests/ref/hf_compare.py, each with hf_ref.bin (the
 * transformers greedy tokens and logits), fed transformers' tokens: our
 * argmax must match at every step whose top-2 gap exceeds twice our logit
 * error, at least half the steps must be such, and the logits' relative
 * L2 stays under 5e-2. With KVMM_BENCH_DIR (tcase "bench"): decode time
 * per token against the time to read the weights once, and the knobs.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvmm_base.h"
#include "kvcontig.h"
#include "kvpolicy.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#include "config.h"
#include "forward.h"
#include "forward_cuda.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "kva.h"
#include "kvcache.h"
#include "model.h"

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

#define GRAN (2ULL << 20)

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static double rel_l2(const float *x, const float *ref, size_t n)
{
	double e = 0.0, s = 0.0;

	for (size_t i = 0; i < n; i++) {
		if (isnan(x[i]))
			return INFINITY;
		e += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
		s += (double)ref[i] * ref[i];
	}
	return s > 0 ? sqrt(e / s) : sqrt(e);
}

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	if (p)
		CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

/* ---- kernels ---- */

/* the device cache under the full policy (fp16 pages), as generate makes */
static int dev_cache(const struct llm_config *c, int n, int max_tok,
		     struct llm_kv **out)
{
	struct llm_policy p;
	char err[200];
	int ret;

	llm_policy_default(LLM_POLICY_FULL, &p);
	ret = llm_kv_policy_create_cuda(c, &p, n, max_tok, 0, out, err,
					sizeof(err));
	if (ret)
		fprintf(stderr, "device cache: %s\n", err);
	return ret;
}

START_TEST(test_kernels_convert_bias)
{
	uint64_t seed = kvtest_seed("forward_kernels_convert_bias");
	size_t n = 10000 + kvtest_rand(&seed) % 5000;
	int rows = 7, cols = (int)(n / 7);
	float *x = malloc(n * 4), *b = malloc(cols * 4), *y = malloc(n * 4);
	uint8_t *hc = malloc(n * 4), *dc = malloc(n * 4);
	void *dx = NULL, *dd, *db;

	for (size_t i = 0; i < n; i++)
		x[i] = frand(&seed) * 1000.0f;
	for (int i = 0; i < cols; i++)
		b[i] = frand(&seed);
	dx = to_dev(x, n * 4);
	dd = to_dev(NULL, n * 4);
	for (int sd = 0; sd < KVK_DTYPE_NR; sd++)
		for (int dd_t = 0; dd_t < KVK_DTYPE_NR; dd_t++) {
			size_t ss = kvk_dtype_size(sd), ds = kvk_dtype_size(dd_t);
			void *src = to_dev(NULL, n * ss);

			/* a source of dtype sd, the same bytes on both sides */
			ck_assert_int_eq(kvk_convert_from_f32(hc, x, n, sd), 0);
			CK_CUDA(cudaMemcpy(src, hc, n * ss,
					   cudaMemcpyHostToDevice));
			memcpy(y, hc, n * ss);
			ck_assert_int_eq(kvk_convert_cpu(hc, dd_t, y, sd, n,
							 NULL), 0);
			ck_assert_int_eq(kvk_convert_cuda(dd, dd_t, src, sd, n,
							  NULL), 0);
			CK_CUDA(cudaMemcpy(dc, dd, n * ds,
					   cudaMemcpyDeviceToHost));
			ck_assert_msg(!memcmp(hc, dc, n * ds),
				      "convert %s -> %s differs",
				      kvk_dtype_name(sd), kvk_dtype_name(dd_t));
			cudaFree(src);
		}
	/* hi/lo split: same bytes, and hi + lo much closer to x than hi */
	for (int dt = KVK_F16; dt <= KVK_BF16; dt++) {
		void *dlo = to_dev(NULL, n * 2);
		uint8_t *lc = malloc(n * 2), *dl = malloc(n * 2);
		float *h = malloc(n * 4), *l = malloc(n * 4);
		double e1 = 0, e2 = 0, ref = 0;

		ck_assert_int_eq(llm_split_cpu(hc, lc, dt, x, n, NULL), 0);
		ck_assert_int_eq(llm_split_cuda(dd, dlo, dt, dx, n, NULL), 0);
		CK_CUDA(cudaMemcpy(dc, dd, n * 2, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(dl, dlo, n * 2, cudaMemcpyDeviceToHost));
		ck_assert_msg(!memcmp(hc, dc, n * 2) && !memcmp(lc, dl, n * 2),
			      "split %s differs", kvk_dtype_name(dt));
		kvk_convert_to_f32(h, hc, n, dt);
		kvk_convert_to_f32(l, lc, n, dt);
		for (size_t i = 0; i < n; i++) {
			e1 += (h[i] - x[i]) * (double)(h[i] - x[i]);
			e2 += (h[i] + l[i] - x[i]) *
			      (double)(h[i] + l[i] - x[i]);
			ref += x[i] * (double)x[i];
		}
		printf("split %s: rel L2 of hi %.3g, of hi + lo %.3g\n",
		       kvk_dtype_name(dt), sqrt(e1 / ref), sqrt(e2 / ref));
		ck_assert(sqrt(e2 / ref) < sqrt(e1 / ref) / 64);
		ck_assert_int_eq(llm_split_cuda(dd, dlo, KVK_F32, dx, n, NULL),
				 -EINVAL);
		cudaFree(dlo);
		free(lc), free(dl), free(h), free(l);
	}
	db = to_dev(b, cols * 4);
	CK_CUDA(cudaMemcpy(dd, x, n * 4, cudaMemcpyHostToDevice));
	memcpy(y, x, n * 4);
	ck_assert_int_eq(llm_bias_add_cpu(y, b, rows, cols, NULL), 0);
	ck_assert_int_eq(llm_bias_add_cuda(dd, db, rows, cols,
					   NULL), 0);
	CK_CUDA(cudaMemcpy(dc, dd, (size_t)rows * cols * 4,
			   cudaMemcpyDeviceToHost));
	ck_assert(!memcmp(dc, y, (size_t)rows * cols * 4));
	ck_assert_int_eq(llm_bias_add_cuda(dd, db, rows, 0, NULL), -EINVAL);
	cudaFree(dx), cudaFree(dd), cudaFree(db);
	free(x), free(b), free(y), free(hc), free(dc);
}
END_TEST

/* GEMV of 1..4 tokens into three segments, beta 0 and 1, fp16 and bf16 */
/* one GEMV case, CUDA against the CPU reference */
static void gemv_case(const void *w, void *dw, enum kvk_dtype wdt,
		      const void *x, const void *dx, enum kvk_dtype xdt,
		      long ldx, int T, int n, int k, const float *g,
		      const float *dg, int beta, bool glu, const float *y0,
		      float *yh, float *yd, void *dy, size_t ny)
{
	int rows = glu ? n / 2 : n;
	int end[3] = { rows / 3, rows / 3 + 8, rows };
	struct llm_gemv_out ho = { glu ? 1 : 3, { 0 }, { NULL }, { 0 }, glu };
	struct llm_gemv_out dO;
	size_t off = 0;
	double e;

	for (int s = 0; s < ho.n_seg; s++) {
		int r = glu ? rows : end[s] - (s ? end[s - 1] : 0);

		ho.end[s] = glu ? rows : end[s];
		ho.ld[s] = r + s;
		ho.y[s] = yh + off;
		off += (size_t)T * (r + s);
	}
	dO = ho;
	for (int s = 0; s < ho.n_seg; s++)
		dO.y[s] = (float *)dy + (ho.y[s] - yh);
	memcpy(yh, y0, ny * 4);
	CK_CUDA(cudaMemcpy(dy, y0, ny * 4, cudaMemcpyHostToDevice));
	ck_assert_int_eq(llm_gemv_cpu(w, wdt, x, xdt, ldx, T, n, k,
				      beta ? g : NULL, 1e-5f, &ho, beta, NULL),
			 0);
	ck_assert_int_eq(llm_gemv_cuda(dw, wdt, dx, xdt, ldx, T, n, k,
				       beta ? dg : NULL, 1e-5f, &dO, beta,
				       NULL), 0);
	CK_CUDA(cudaMemcpy(yd, dy, ny * 4, cudaMemcpyDeviceToHost));
	e = rel_l2(yd, yh, ny);
	ck_assert_msg(e < 1e-5, "gemv %s x %s T %d beta %d glu %d rows %s: "
		      "rel L2 %.3g", kvk_dtype_name(wdt), kvk_dtype_name(xdt),
		      T, beta, glu, getenv("KVMM_GEMV_ROWS"), e);
}

START_TEST(test_kernels_gemv)
{
	static const enum kvk_dtype dts[] = { KVK_F16, KVK_BF16 };
	static const char *const rows[] = { "1", "2", "4", "8" };
	uint64_t seed = kvtest_seed("forward_kernels_gemv");
	int n = 2 * (350 + kvtest_rand(&seed) % 100);
	int k = 8 * (90 + kvtest_rand(&seed) % 300);
	long ldx = k + 8;
	size_t ny = (size_t)LLM_GEMV_MAX_TOK * (n + 5);
	float *wf = malloc((size_t)n * k * 4), *x = malloc(4 * ldx * 4);
	float *yh = malloc(ny * 4), *yd = malloc(ny * 4), *y0 = malloc(ny * 4);
	uint8_t *w = malloc((size_t)n * k * 2);
	uint16_t *xh = malloc(4 * ldx * 2);
	void *dw = to_dev(NULL, (size_t)n * k * 2), *dx, *dxh, *dy, *dg;
	float *g = malloc((size_t)k * 4);

	for (size_t i = 0; i < (size_t)n * k; i++)
		wf[i] = frand(&seed) * 0.1f;
	for (long i = 0; i < 4 * ldx; i++)
		x[i] = frand(&seed);
	for (size_t i = 0; i < ny; i++)
		y0[i] = frand(&seed);
	for (int i = 0; i < k; i++)
		g[i] = 1.0f + 0.2f * frand(&seed);
	kvk_convert_from_f32(xh, x, 4 * ldx, KVK_F16);
	dg = to_dev(g, (size_t)k * 4);
	dx = to_dev(x, 4 * ldx * 4);
	dxh = to_dev(xh, 4 * ldx * 2);
	dy = to_dev(NULL, ny * 4);
	for (size_t d = 0; d < ARRAY_SIZE(dts); d++) {
		kvk_convert_from_f32(w, wf, (size_t)n * k, dts[d]);
		CK_CUDA(cudaMemcpy(dw, w, (size_t)n * k * 2,
				   cudaMemcpyHostToDevice));
		for (size_t r = 0; r < ARRAY_SIZE(rows); r++) {
			setenv("KVMM_GEMV_ROWS", rows[r], 1);
			setenv("KVMM_GEMV_WARPS", r % 2 ? "4" : "8", 1);
			setenv("KVMM_PDL", r % 2 ? "0" : "1", 1);
			for (int T = 1; T <= LLM_GEMV_MAX_TOK; T++)
				for (int v = 0; v < 6; v++) {
					bool fh = v == 2, glu = v >= 3;
					int beta = v % 2;

					gemv_case(w, dw, dts[d],
						  fh ? (const void *)xh : x,
						  fh ? dxh : dx,
						  fh ? KVK_F16 : KVK_F32, ldx,
						  T, n, k, g, dg,
						  v == 4 ? 0 : beta || v == 5,
						  glu, y0, yh, yd, dy, ny);
				}
		}
		unsetenv("KVMM_GEMV_ROWS");
		unsetenv("KVMM_GEMV_WARPS");
		unsetenv("KVMM_PDL");
	}
	printf("gemv %d x %d, 1..%d tokens, 1, 2, 4, 8 rows per warp, fp32 and "
	       "fp16 x, 3 segments or GLU, with and without RMSNorm: CUDA = "
	       "CPU\n", n, k, LLM_GEMV_MAX_TOK);
	{
		struct llm_gemv_out bad = { 1, { n }, { (float *)dy }, { n } };

		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F32, dx, KVK_F32, ldx, 1,
					       n, k, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dx, KVK_BF16, ldx,
					       1, n, k, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dx, KVK_F32, ldx, 5,
					       n, k, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dx, KVK_F32, ldx, 1,
					       n, k - 4, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dxh, KVK_F16,
					       ldx - 4, 1, n, k, NULL, 0.0f,
					       &bad, 0.0f, NULL), -EINVAL);
		bad.glu = true;
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dx, KVK_F32, ldx, 1,
					       n, k, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
		bad.glu = false;
		bad.end[0] = n - 1;
		ck_assert_int_eq(llm_gemv_cuda(dw, KVK_F16, dx, KVK_F32, ldx, 1,
					       n, k, NULL, 0.0f, &bad, 0.0f,
					       NULL), -EINVAL);
	}
	cudaFree(dw), cudaFree(dx), cudaFree(dxh), cudaFree(dy), cudaFree(dg);
	free(wf), free(x), free(xh), free(yh), free(yd), free(y0), free(w);
	free(g);
}
END_TEST

/* ---- random models ---- */

struct rnd_shape {
	const char *arch;
	uint32_t dim, n_heads, n_kv_heads, head_dim, ffn, vocab, layers;
	bool tied;
};

static const struct rnd_shape shapes[] = {
	{ "llama", 256, 4, 2, 64, 512, 512, 2, true },
	{ "qwen2", 256, 4, 4, 64, 384, 640, 2, false },
	{ "qwen3", 256, 8, 2, 64, 512, 512, 3, true },
	{ "llama", 256, 2, 1, 128, 512, 384, 2, false },
};

static void gb_kv_u32(struct gbuf *b, const char *arch, const char *k,
		      uint32_t v)
{
	char key[96];

	snprintf(key, sizeof(key), "%s.%s", arch, k);
	gb_str(b, key);
	gb_u32(b, LLM_GGUF_U32);
	gb_u32(b, v);
}

static void gb_kv_f32(struct gbuf *b, const char *arch, const char *k,
		      float v)
{
	char key[96];

	snprintf(key, sizeof(key), "%s.%s", arch, k);
	gb_str(b, key);
	gb_u32(b, LLM_GGUF_F32);
	gb_put(b, &v, 4);
}

struct rnd_tensor {
	char name[48];
	uint64_t ne0, ne1;
};

static int rnd_tensors(const struct rnd_shape *r, struct rnd_tensor *t)
{
	static const struct {
		const char *s;
		int ne0, ne1; /* 0 dim, 1 q, 2 kv, 3 ffn, 4 head_dim, 5 one */
		const char *arch;
	} blk[] = {
		{ "attn_norm.weight", 0, 5, NULL },
		{ "attn_q.weight", 0, 1, NULL },
		{ "attn_k.weight", 0, 2, NULL },
		{ "attn_v.weight", 0, 2, NULL },
		{ "attn_output.weight", 1, 0, NULL },
		{ "ffn_norm.weight", 0, 5, NULL },
		{ "ffn_gate.weight", 0, 3, NULL },
		{ "ffn_up.weight", 0, 3, NULL },
		{ "ffn_down.weight", 3, 0, NULL },
		{ "attn_q.bias", 1, 5, "qwen2" },
		{ "attn_k.bias", 2, 5, "qwen2" },
		{ "attn_v.bias", 2, 5, "qwen2" },
		{ "attn_q_norm.weight", 4, 5, "qwen3" },
		{ "attn_k_norm.weight", 4, 5, "qwen3" },
	};
	uint64_t d[6] = { r->dim, r->n_heads * r->head_dim,
			  r->n_kv_heads * r->head_dim, r->ffn, r->head_dim, 1 };
	int n = 0;

	t[n++] = (struct rnd_tensor){ "token_embd.weight", r->dim, r->vocab };
	t[n++] = (struct rnd_tensor){ "output_norm.weight", r->dim, 1 };
	if (!r->tied)
		t[n++] = (struct rnd_tensor){ "output.weight", r->dim,
					      r->vocab };
	for (uint32_t l = 0; l < r->layers; l++)
		for (size_t i = 0; i < ARRAY_SIZE(blk); i++) {
			if (blk[i].arch && strcmp(blk[i].arch, r->arch))
				continue;
			snprintf(t[n].name, sizeof(t[n].name), "blk.%u.%s", l,
				 blk[i].s);
			t[n].ne0 = d[blk[i].ne0];
			t[n++].ne1 = d[blk[i].ne1];
		}
	return n;
}

/* a GGUF image of random F32 weights of shape @r */
static void rnd_build(const struct rnd_shape *r, uint64_t *seed,
		      struct gbuf *b)
{
	struct rnd_tensor t[128];
	int n = rnd_tensors(r, t);
	uint64_t off = 0;

	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, n);
	gb_u64(b, 11);
	gb_str(b, "general.architecture");
	gb_u32(b, LLM_GGUF_STRING);
	gb_str(b, r->arch);
	gb_kv_u32(b, r->arch, "context_length", 256);
	gb_kv_u32(b, r->arch, "embedding_length", r->dim);
	gb_kv_u32(b, r->arch, "block_count", r->layers);
	gb_kv_u32(b, r->arch, "feed_forward_length", r->ffn);
	gb_kv_u32(b, r->arch, "attention.head_count", r->n_heads);
	gb_kv_u32(b, r->arch, "attention.head_count_kv", r->n_kv_heads);
	gb_kv_u32(b, r->arch, "attention.key_length", r->head_dim);
	gb_kv_u32(b, r->arch, "vocab_size", r->vocab);
	gb_kv_f32(b, r->arch, "rope.freq_base", 10000.0f);
	gb_kv_f32(b, r->arch, "attention.layer_norm_rms_epsilon", 1e-5f);
	for (int i = 0; i < n; i++) {
		gb_str(b, t[i].name);
		gb_u32(b, t[i].ne1 > 1 ? 2 : 1);
		gb_u64(b, t[i].ne0);
		if (t[i].ne1 > 1)
			gb_u64(b, t[i].ne1);
		gb_u32(b, LLM_GGML_F32);
		gb_u64(b, off);
		off += (t[i].ne0 * t[i].ne1 * 4 + 31) / 32 * 32;
	}
	gb_put(b, NULL, (b->len + 31) / 32 * 32 - b->len);
	for (int i = 0; i < n; i++) {
		uint64_t ne = t[i].ne0 * t[i].ne1;
		size_t len = strlen(t[i].name);
		bool norm = len > 11 && !strcmp(t[i].name + len - 11,
						"norm.weight");
		bool bias = len > 5 && !strcmp(t[i].name + len - 5, ".bias");
		bool embd = !strcmp(t[i].name, "token_embd.weight");

		for (uint64_t e = 0; e < ne; e++) {
			float u = frand(seed), v;

			if (norm)
				v = 1.0f + 0.2f * u;
			else if (bias)
				v = 0.2f * u;
			else if (embd)
				v = u;
			else
				v = u * 2.0f / sqrtf((float)t[i].ne0);
			gb_put(b, &v, 4);
		}
		gb_put(b, NULL, (ne * 4 + 31) / 32 * 32 - ne * 4);
	}
}

struct both {
	struct llm_config c;
	struct llm_cpu *cpu;
	struct llm_cuda *gpu;
};

static void both_load_bits(struct both *m, const struct rnd_shape *r,
			   uint64_t *seed, enum kvk_dtype dt, int wbits)
{
	struct llm_cuda_opts o = { .dtype = dt, .wbits = wbits };
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_weights w = { 0 };
	struct gbuf b = { 0 };
	struct llm_gguf *g;

	rnd_build(r, seed, &b);
	ck_assert_msg(!llm_gguf_open_mem(b.p, b.len, &g, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_config_load(g, &m->c, err, sizeof(err)), "%s",
		      err);
	ck_assert_msg(!llm_weights_bind(g, &m->c, &w, err, sizeof(err)), "%s",
		      err);
	/* the CPU side in fp32, as the CUDA executor's weights are held */
	setenv("KVMM_CPU_WEIGHTS", "f32", 1);
	ck_assert_msg(!llm_cpu_load(&m->c, &w, 2, &m->cpu, err, sizeof(err)),
		      "%s", err);
	unsetenv("KVMM_CPU_WEIGHTS");
	ck_assert_msg(!llm_cuda_load(&m->c, &w, &o, &m->gpu, err,
				     sizeof(err)), "%s", err);
	ck_assert_int_eq(llm_cuda_dtype(m->gpu), dt);
	llm_weights_fini(&w);
	llm_gguf_close(g);
	free(b.p);
}

static void both_load(struct both *m, const struct rnd_shape *r,
		      uint64_t *seed, enum kvk_dtype dt)
{
	both_load_bits(m, r, seed, dt, 0);
}

static void both_free(struct both *m)
{
	llm_cuda_free(m->gpu);
	llm_cpu_free(m->cpu);
}

/* the two largest logits of @z: returns the gap, *@am the argmax */
static float top2_gap(const float *z, int n, int32_t *am)
{
	float a = -INFINITY, b = -INFINITY;

	*am = 0;
	for (int i = 0; i < n; i++) {
		if (z[i] > a) {
			b = a;
			a = z[i];
			*am = i;
		} else if (z[i] > b) {
			b = z[i];
		}
	}
	return a - b;
}

#define STEPS 16

/*
 * Prefill then STEPS greedy decode steps on both executors, both fed the
 * CPU's greedy token: logits within @tol; the CUDA argmax is the CPU's
 * wherever the CPU's top two logits are further apart than the error seen.
 */
static void compare_arch(const struct rnd_shape *r, enum kvk_dtype dt,
			 double tol, uint64_t *seed)
{
	int32_t prompt[40], id, gid;
	int seq = 0, nt, np = 20 + kvtest_rand(seed) % 20, agree = 0;
	struct llm_batch b = { 1, &seq, &nt, prompt };
	struct llm_kv *kc, *kg;
	float *zc, *zg;
	double e, worst = 0.0;
	struct both m;

	both_load(&m, r, seed, dt);
	for (int i = 0; i < np; i++)
		prompt[i] = kvtest_rand(seed) % r->vocab;
	zc = malloc(r->vocab * 4);
	zg = malloc(r->vocab * 4);
	ck_assert_int_eq(llm_kv_contig_create(&m.c, 1, 64, &kc), 0);
	ck_assert_int_eq(dev_cache(&m.c, 1, 64, &kg), 0);
	nt = np;
	for (int s = 0; s <= STEPS; s++) {
		float gap, maxabs = 0.0f;

		ck_assert_int_eq(llm_cpu_forward(m.cpu, kc, &b, zc), 0);
		ck_assert_int_eq(llm_cuda_forward(m.gpu, kg, &b, zg), 0);
		ck_assert_int_eq(llm_kv_len(kg, 0), llm_kv_len(kc, 0));
		e = rel_l2(zg, zc, r->vocab);
		worst = e > worst ? e : worst;
		ck_assert_msg(e < tol, "%s %s step %d: rel L2 %.3g", r->arch,
			      kvk_dtype_name(dt), s, e);
		for (uint32_t i = 0; i < r->vocab; i++)
			maxabs = fmaxf(maxabs, fabsf(zg[i] - zc[i]));
		gap = top2_gap(zc, r->vocab, &id);
		top2_gap(zg, r->vocab, &gid);
		if (gap > 2.0f * maxabs)
			ck_assert_msg(gid == id, "%s step %d: token %d, CPU %d "
				      "(gap %.3g, max error %.3g)", r->arch, s,
				      gid, id, gap, maxabs);
		agree += gid == id;
		nt = 1;
		b.tok = &id;
	}
	printf("%s %s (%u layers, hd %u, %u:%u heads): prompt %d, %d steps: "
	       "worst rel L2 %.3g, greedy agree %d/%d\n", r->arch,
	       kvk_dtype_name(dt), r->layers, r->head_dim, r->n_heads,
	       r->n_kv_heads, np, STEPS, worst, agree, STEPS + 1);
	llm_kv_destroy(kc);
	llm_kv_destroy(kg);
	free(zc);
	free(zg);
	both_free(&m);
}

START_TEST(test_forward_cuda_vs_cpu)
{
	const struct rnd_shape *r = &shapes[_i];
	uint64_t seed = kvtest_seed("forward_cuda_vs_cpu");

	/* against the fp32 CPU executor: the split prefill, as measured */
	setenv("KVMM_PREFILL_SPLIT", "1", 1);
	compare_arch(r, KVK_F16, 2e-2, &seed);
	if (_i == 0)
		compare_arch(r, KVK_BF16, 5e-2, &seed);
	unsetenv("KVMM_PREFILL_SPLIT");
}
END_TEST

/*
 * The same random model with its matrices at 8 and at 4 bits against
 * itself in bf16: prefill (matrices expanded for cuBLAS), STEPS one-token
 * decode steps (the quantized GEMV), each fed the bf16 model's greedy
 * token. Logits within the quantization's own error, greedy tokens equal
 * wherever the bf16 top two are further apart than that error; the weight
 * bytes shrink as the format says.
 */
START_TEST(test_forward_cuda_wbits)
{
	static const int bits[] = { 8, 4 };
	static const double tol[] = { 0.06, 0.35 };	/* a bug is ~1 */
	const struct rnd_shape *r = &shapes[3];	/* untied output */
	uint64_t seed0 = kvtest_seed("forward_cuda_wbits"), seed;
	int32_t prompt[40], id, qid;
	int seq = 0, nt, np = 20 + kvtest_rand(&seed0) % 20;
	struct both ref, q;
	float *zr = malloc(r->vocab * 4), *zq = malloc(r->vocab * 4);

	for (int i = 0; i < np; i++)
		prompt[i] = kvtest_rand(&seed0) % r->vocab;
	seed = seed0;
	both_load(&ref, r, &seed, KVK_BF16);
	for (size_t bi = 0; bi < ARRAY_SIZE(bits); bi++) {
		struct llm_batch b = { 1, &seq, &nt, prompt };
		struct llm_kv *kr, *kq;
		double e, worst = 0.0;
		int agree = 0, decided = 0;

		seed = seed0;
		both_load_bits(&q, r, &seed, KVK_BF16, bits[bi]);
		ck_assert_int_eq(llm_cuda_weight_bits(q.gpu), bits[bi]);
		ck_assert_int_eq(llm_cuda_weight_bits(ref.gpu), 16);
		ck_assert(llm_cuda_step_bytes(q.gpu) <
			  llm_cuda_step_bytes(ref.gpu) * (bits[bi] + 1) / 15);
		ck_assert_int_eq(dev_cache(&ref.c, 1, 64, &kr), 0);
		ck_assert_int_eq(dev_cache(&q.c, 1, 64, &kq), 0);
		nt = np;
		for (int s = 0; s <= STEPS; s++) {
			float gap, maxabs = 0.0f;

			ck_assert_int_eq(llm_cuda_forward(ref.gpu, kr, &b, zr),
					 0);
			ck_assert_int_eq(llm_cuda_forward(q.gpu, kq, &b, zq), 0);
			e = rel_l2(zq, zr, r->vocab);
			worst = e > worst ? e : worst;
			ck_assert_msg(e < tol[bi], "%d bits step %d: rel L2 "
				      "%.3g", bits[bi], s, e);
			for (uint32_t i = 0; i < r->vocab; i++)
				maxabs = fmaxf(maxabs, fabsf(zq[i] - zr[i]));
			gap = top2_gap(zr, r->vocab, &id);
			top2_gap(zq, r->vocab, &qid);
			if (gap > 2.0f * maxabs) {
				decided++;
				ck_assert_msg(qid == id, "%d bits step %d: "
					      "token %d, bf16 %d", bits[bi], s,
					      qid, id);
			}
			agree += qid == id;
			nt = 1;
			b.tok = &id;
		}
		printf("weights at %d bits against bf16: %.2f of the bytes, "
		       "worst rel L2 %.3g, greedy agree %d/%d (%d decided)\n",
		       bits[bi], (double)llm_cuda_step_bytes(q.gpu) /
		       llm_cuda_step_bytes(ref.gpu), worst, agree, STEPS + 1,
		       decided);
		llm_kv_destroy(kr);
		llm_kv_destroy(kq);
		both_free(&q);
	}
	both_free(&ref);
	free(zr);
	free(zq);
}
END_TEST

/* three sequences prefilled in one batch, then decoded together */
START_TEST(test_forward_cuda_batch)
{
	enum { NS = 3, BSTEPS = 8 };
	static const int plen[NS] = { 5, 23, 11 };
	const struct rnd_shape *r = &shapes[2];
	uint64_t seed = kvtest_seed("forward_cuda_batch");
	int32_t toks[96], next[NS];
	int seq[NS] = { 2, 0, 1 }, nt[NS];
	struct llm_batch b = { NS, seq, nt, toks };
	struct llm_kv *kc, *kg;
	float *zc, *zg;
	double e, worst = 0.0;
	struct both m;
	int off = 0;

	both_load(&m, r, &seed, KVK_F16);
	zc = malloc(NS * r->vocab * 4);
	zg = malloc(NS * r->vocab * 4);
	for (int i = 0; i < NS; i++) {
		for (int t = 0; t < plen[i]; t++)
			toks[off++] = kvtest_rand(&seed) % r->vocab;
		nt[i] = plen[i];
	}
	ck_assert_int_eq(llm_kv_contig_create(&m.c, NS, 64, &kc), 0);
	ck_assert_int_eq(dev_cache(&m.c, NS, 64, &kg), 0);
	for (int s = 0; s <= BSTEPS; s++) {
		ck_assert_int_eq(llm_cpu_forward(m.cpu, kc, &b, zc), 0);
		ck_assert_int_eq(llm_cuda_forward(m.gpu, kg, &b, zg), 0);
		e = rel_l2(zg, zc, (size_t)NS * r->vocab);
		worst = e > worst ? e : worst;
		ck_assert_msg(e < 2e-2, "step %d: rel L2 %.3g", s, e);
		for (int i = 0; i < NS; i++) {
			top2_gap(zc + (size_t)i * r->vocab, r->vocab,
				 &next[i]);
			nt[i] = 1;
		}
		b.tok = next;
		/* after 4 steps, sequence 1 restarts with a new prompt */
		if (s == 4) {
			llm_kv_reset(kc, 0);
			llm_kv_reset(kg, 0);
		}
	}
	printf("batch of %d, %d decode steps, slot 0 reset midway: worst rel "
	       "L2 %.3g\n", NS, BSTEPS, worst);
	/* a batch over the capacity is refused and changes nothing */
	for (int i = 0; i < 96; i++)
		toks[i] = i;
	b.tok = toks;
	nt[0] = 64;
	ck_assert_int_eq(llm_cuda_forward(m.gpu, kg, &b, zg), -ENOSPC);
	ck_assert_int_eq(llm_kv_len(kg, 2), plen[0] + BSTEPS);
	seq[1] = seq[0];
	nt[0] = 1;
	ck_assert_int_eq(llm_cuda_forward(m.gpu, kg, &b, zg), -EINVAL);
	llm_kv_destroy(kc);
	llm_kv_destroy(kg);
	free(zc);
	free(zg);
	both_free(&m);
}
END_TEST

/* ---- Hugging Face comparison and decode speed (env-driven) ---- */

struct hf_ref {
	int32_t n_prompt, n_steps, vocab;
	int32_t *prompt, *greedy;
	float *logits; /* [n_steps][vocab]: the logits giving greedy[s] */
};

static int hf_ref_read(const char *dir, struct hf_ref *r)
{
	char path[4200];
	FILE *f;
	size_t nl;
	int ok;

	snprintf(path, sizeof(path), "%s/hf_ref.bin", dir);
	f = fopen(path, "rb");
	if (!f)
		return -1;
	ok = fread(&r->n_prompt, 4, 1, f) == 1 &&
	     fread(&r->n_steps, 4, 1, f) == 1 && fread(&r->vocab, 4, 1, f) == 1;
	if (!ok || r->n_prompt < 1 || r->n_steps < 1 || r->vocab < 1) {
		fclose(f);
		return -1;
	}
	nl = (size_t)r->n_steps * r->vocab;
	r->prompt = malloc(r->n_prompt * 4);
	r->greedy = malloc(r->n_steps * 4);
	r->logits = malloc(nl * 4);
	ok = fread(r->prompt, 4, r->n_prompt, f) == (size_t)r->n_prompt &&
	     fread(r->greedy, 4, r->n_steps, f) == (size_t)r->n_steps &&
	     fread(r->logits, 4, nl, f) == nl;
	fclose(f);
	return ok ? 0 : -1;
}

static float max_abs_diff(const float *x, const float *y, int n)
{
	float m = 0.0f;

	for (int i = 0; i < n; i++)
		m = fabsf(x[i] - y[i]) > m ? fabsf(x[i] - y[i]) : m;
	return m;
}

/*
 * Teacher-forced on transformers' greedy tokens, so that every step is
 * compared on the same context; up to the first disagreement this is the
 * free-running greedy comparison. A step is decided when transformers'
 * top-2 gap exceeds twice our largest logit error there: no rounding can
 * then flip the argmax, and ours must agree. Near-ties are reported, not
 * failed (see Documentation/model/cuda.rst).
 */
static void hf_one(const char *dir)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_model *mo;
	struct llm_cuda *m;
	struct llm_kv *kv;
	struct hf_ref r;
	int seq = 0, nt, same = -1, agree = 0, decided = 0, bad = 0;
	struct llm_batch b = { 1, &seq, &nt, NULL };
	double e, worst = 0.0, sum = 0.0;
	float *z;
	int32_t id;

	ck_assert_msg(!hf_ref_read(dir, &r), "%s/hf_ref.bin unreadable", dir);
	ck_assert_msg(!llm_model_open(dir, &mo, err, sizeof(err)), "%s", err);
	ck_assert_int_eq((int)mo->cfg.n_vocab, r.vocab);
	ck_assert_msg(!llm_cuda_load(&mo->cfg, &mo->w, NULL, &m, err,
				     sizeof(err)), "%s", err);
	ck_assert_int_eq(dev_cache(llm_cuda_config(m), 1, r.n_prompt + r.n_steps + 1, &kv), 0);
	z = malloc((size_t)r.vocab * 4);
	nt = r.n_prompt;
	b.tok = r.prompt;
	for (int s = 0; s < r.n_steps; s++) {
		const float *ref = r.logits + (size_t)s * r.vocab;
		float gap, dz;
		int32_t hid;

		ck_assert_int_eq(llm_cuda_forward(m, kv, &b, z), 0);
		e = rel_l2(z, ref, r.vocab);
		worst = e > worst ? e : worst;
		sum += e;
		dz = max_abs_diff(z, ref, r.vocab);
		top2_gap(z, r.vocab, &id);
		gap = top2_gap(ref, r.vocab, &hid);
		agree += id == r.greedy[s];
		if (id != r.greedy[s] && same < 0)
			same = s;
		if (gap > 2.0f * dz) {
			decided++;
			bad += id != r.greedy[s];
		}
		if (id != r.greedy[s])
			printf("%s: step %d: token %d, transformers %d (its "
			       "top-2 gap %.3g, our largest logit error %.3g, "
			       "rel L2 %.3g): %s\n", dir, s, id, r.greedy[s],
			       gap, dz, e,
			       gap > 2.0f * dz ? "WRONG" : "near tie");
		nt = 1;
		b.tok = &r.greedy[s];
	}
	if (same < 0)
		same = r.n_steps;
	printf("%s (%s, %s weights): greedy tokens identical for %d of %d "
	       "steps; teacher-forced argmax agrees at %d of %d, at all %d "
	       "decided steps but %d; logits rel L2 worst %.3g mean %.3g\n",
	       dir, mo->cfg.arch_name, kvk_dtype_name(llm_cuda_dtype(m)), same,
	       r.n_steps, agree, r.n_steps, decided, bad, worst,
	       sum / r.n_steps);
	fflush(stdout);
	ck_assert_msg(!bad, "%s: %d decided steps disagree", dir, bad);
	ck_assert_msg(2 * decided >= r.n_steps, "%s: only %d of %d steps "
		      "decided", dir, decided, r.n_steps);
	ck_assert_msg(worst < 5e-2, "%s: logits rel L2 %.3g", dir, worst);
	llm_kv_destroy(kv);
	llm_cuda_free(m);
	llm_model_close(mo);
	free(z);
	free(r.prompt);
	free(r.greedy);
	free(r.logits);
}

START_TEST(test_forward_cuda_hf)
{
	const char *env = getenv("KVMM_HF_DIRS");
	char *dirs, *save = NULL;

	if (!env || !*env) {
		kvtest_skip(__func__, "KVMM_HF_DIRS unset "
			    "(tools/gpu-suite.d/model.sh sets it)");
		return;
	}
	/* a reference check: prefill GEMMs see fp32 activations as hi + lo */
	setenv("KVMM_PREFILL_SPLIT", "1", 1);
	dirs = strdup(env);
	for (char *d = strtok_r(dirs, ":", &save); d;
	     d = strtok_r(NULL, ":", &save))
		hf_one(d);
	free(dirs);
	unsetenv("KVMM_PREFILL_SPLIT");
}
END_TEST

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ms per decode step of @ns sequences after a prompt of @np tokens each */
static double time_decode(struct llm_cuda *m, int ns, int np, int steps,
			  uint32_t vocab, uint64_t *seed, double *prefill_ms)
{
	int32_t prompt[8 * 64], ids[8];
	int seq[8], nt[8];
	struct llm_batch b = { ns, seq, nt, prompt };
	struct llm_kv *kv;
	double t0;

	ck_assert(ns <= 8 && np <= 64);
	ck_assert_int_eq(dev_cache(llm_cuda_config(m), ns, 1024, &kv), 0);
	for (int i = 0; i < ns * np; i++)
		prompt[i] = kvtest_rand(seed) % vocab;
	for (int i = 0; i < ns; i++) {
		seq[i] = i;
		nt[i] = np;
	}
	t0 = now_s();
	ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, ids), 0);
	if (prefill_ms)
		*prefill_ms = (now_s() - t0) * 1e3;
	for (int i = 0; i < ns; i++)
		nt[i] = 1;
	b.tok = ids;
	for (int s = 0; s < 8; s++)
		ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, ids), 0);
	t0 = now_s();
	for (int s = 0; s < steps; s++)
		ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, ids), 0);
	t0 = (now_s() - t0) * 1e3 / steps;
	llm_kv_destroy(kv);
	return t0;
}

/* GB/s of llm_gemv_cuda() on one token over a @n x @k bf16 matrix */
static double gemv_gbs(int n, int k)
{
	struct llm_gemv_out o = { 1, { n }, { NULL }, { n } };
	cudaEvent_t e0, e1;
	void *w, *x, *y;
	float ms;

	CK_CUDA(cudaMalloc(&w, (size_t)n * k * 2));
	CK_CUDA(cudaMalloc(&x, (size_t)k * 4));
	CK_CUDA(cudaMalloc(&y, (size_t)n * 4));
	CK_CUDA(cudaMemset(w, 0x3c, (size_t)n * k * 2));
	CK_CUDA(cudaMemset(x, 0, (size_t)k * 4));
	o.y[0] = y;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	ck_assert_int_eq(llm_gemv_cuda(w, KVK_BF16, x, KVK_F32, k, 1, n, k,
				       NULL, 0.0f, &o, 0.0f, NULL), 0);
	cudaEventRecord(e0, NULL);
	for (int r = 0; r < 20; r++)
		llm_gemv_cuda(w, KVK_BF16, x, KVK_F32, k, 1, n, k, NULL, 0.0f,
			      &o, 0.0f, NULL);
	cudaEventRecord(e1, NULL);
	CK_CUDA(cudaEventSynchronize(e1));
	cudaEventElapsedTime(&ms, e0, e1);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(w), cudaFree(x), cudaFree(y);
	return (double)n * k * 2 * 20 / (ms * 1e-3) / 1e9;
}

/* decode knobs the bench compares, name and value */
static const char *const knobs[][2] = {
	{ "KVMM_PDL", "1" },		/* programmatic dependent launch */
	{ "KVMM_GEMV_ROWS", "1" },	/* rows per warp in every GEMV */
	{ "KVMM_GEMV_ROWS", "2" },
	{ "KVMM_GEMV_ROWS", "8" },
	{ "KVMM_GEMV_WARPS", "4" },	/* warps per GEMV block */
	{ "KVMM_ATTN_V1", "1" },	/* unsplit decode attention */
};

START_TEST(test_forward_cuda_decode_speed)
{
	const char *dir = getenv("KVMM_BENCH_DIR");
	enum { PROMPT = 32, WARM = 8, TIMED = 64 };
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_model *mo;
	struct llm_cuda *m;
	struct llm_kv *kv;
	int32_t prompt[PROMPT], id;
	int seq = 0, nt = PROMPT;
	struct llm_batch b = { 1, &seq, &nt, prompt };
	double t0, t1, tp, gbs, ms, ideal;
	uint64_t seed = kvtest_seed("forward_cuda_decode_speed");

	if (!dir || !*dir) {
		kvtest_skip(__func__, "KVMM_BENCH_DIR unset "
			    "(tools/gpu-suite.d/model.sh sets it)");
		return;
	}
	t0 = now_s();
	ck_assert_msg(!llm_model_open(dir, &mo, err, sizeof(err)), "%s", err);
	ck_assert_msg(!llm_cuda_load(&mo->cfg, &mo->w, NULL, &m, err,
				     sizeof(err)), "%s", err);
	printf("%s: loaded %.2f GB of %s weights in %.1f s\n", dir,
	       llm_cuda_weight_bytes(m) / 1e9,
	       kvk_dtype_name(llm_cuda_dtype(m)), now_s() - t0);
	fflush(stdout);
	ck_assert_int_eq(llm_cuda_read_weights(m, &gbs), 0);
	ck_assert_int_eq(dev_cache(llm_cuda_config(m), 1, 1024, &kv), 0);
	for (int i = 0; i < PROMPT; i++)
		prompt[i] = kvtest_rand(&seed) % mo->cfg.n_vocab;
	t0 = now_s();
	ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, &id), 0);
	tp = now_s() - t0;
	nt = 1;
	b.tok = &id;
	for (int s = 0; s < WARM; s++)
		ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, &id), 0);
	t0 = now_s();
	for (int s = 0; s < TIMED; s++)
		ck_assert_int_eq(llm_cuda_forward_greedy(m, kv, &b, &id), 0);
	t1 = now_s();
	ms = (t1 - t0) * 1e3 / TIMED;
	ideal = llm_cuda_weight_bytes(m) / (gbs * 1e9) * 1e3;
	printf("decode: %.3f ms/token (%.1f tok/s) at context %d..%d; "
	       "weights %.2f GB read once at the measured %.0f GB/s: "
	       "%.3f ms; ratio %.3f (goal <= 1.25); prefill of %d: %.1f ms\n",
	       ms, 1e3 / ms, PROMPT + WARM, PROMPT + WARM + TIMED,
	       llm_cuda_weight_bytes(m) / 1e9, gbs, ideal, ms / ideal, PROMPT,
	       tp * 1e3);
	fflush(stdout);
	llm_kv_destroy(kv);
	printf("gemv alone, one token: %.0f GB/s on 4096 x 4096, %.0f GB/s on "
	       "6144 x 4096, %.0f GB/s on 28672 x 4096, %.0f GB/s on 4096 x "
	       "14336\n", gemv_gbs(4096, 4096), gemv_gbs(6144, 4096),
	       gemv_gbs(28672, 4096), gemv_gbs(4096, 14336));
	for (int ns = 2; ns <= 8; ns *= 2) {
		double t = time_decode(m, ns, 16, 32, mo->cfg.n_vocab, &seed,
				       NULL);

		printf("decode batch of %d: %.3f ms/step, %.0f tok/s\n", ns, t,
		       ns * 1e3 / t);
	}
	/* measuring knobs, read when a decode step is captured */
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		setenv(knobs[i][0], knobs[i][1], 1);
		printf("with %s=%s: %.3f ms/token\n", knobs[i][0], knobs[i][1],
		       time_decode(m, 1, PROMPT, 32, mo->cfg.n_vocab, &seed,
				   NULL));
		unsetenv(knobs[i][0]);
	}
	for (int sp = 1; sp >= 0; sp--) {
		double pf;

		setenv("KVMM_PREFILL_SPLIT", sp ? "1" : "0", 1);
		time_decode(m, 1, 64, 1, mo->cfg.n_vocab, &seed, &pf);
		time_decode(m, 1, 64, 1, mo->cfg.n_vocab, &seed, &pf);
		printf("prefill of 64 tokens, %s: %.1f ms\n",
		       sp ? "activations split hi + lo" :
			    "KVMM_PREFILL_SPLIT=0", pf);
	}
	unsetenv("KVMM_PREFILL_SPLIT");
	llm_cuda_free(m);
	{
		struct llm_cuda_opts o = { .no_graphs = true };

		ck_assert_msg(!llm_cuda_load(&mo->cfg, &mo->w, &o, &m, err,
					     sizeof(err)), "%s", err);
		printf("without CUDA graphs: %.3f ms/token\n",
		       time_decode(m, 1, PROMPT, 32, mo->cfg.n_vocab, &seed,
				   NULL));
		llm_cuda_free(m);
	}
	/* a figure beside its ceiling, not a pass/fail: the goal (<= 1.25x)
	 * is read off the printed ratio, as for every speed goal */
	printf("decode goal: <= 1.25x the weight read; %s\n",
	       ms / ideal <= 1.25 ? "met" : "not met");
	fflush(stdout);
	llm_model_close(mo);
}
END_TEST
#endif /* KVMM_HAVE_CUDA */

Suite *suite_forward_gpu(void)
{
	Suite *s = suite_create("forward_gpu");
	TCase *tk = tcase_create("kernels");
	TCase *tm = tcase_create("models");
	TCase *th = tcase_create("hf");
	TCase *tb = tcase_create("bench");

	tcase_set_timeout(tk, 120);
	tcase_set_timeout(tm, 300);
	tcase_set_timeout(th, 600);
	tcase_set_timeout(tb, 600);
#ifdef KVMM_HAVE_CUDA
	KV_ADD(tk, test_kernels_convert_bias);
	KV_ADD(tk, test_kernels_gemv);
	KV_ADD_LOOP(tm, test_forward_cuda_vs_cpu, 0, (int)ARRAY_SIZE(shapes));
	KV_ADD(tm, test_forward_cuda_batch);
	KV_ADD(tm, test_forward_cuda_wbits);
	KV_ADD(th, test_forward_cuda_hf);
	KV_ADD(tb, test_forward_cuda_decode_speed);
#endif
	suite_add_tcase(s, tk);
	suite_add_tcase(s, tm);
	suite_add_tcase(s, th);
	suite_add_tcase(s, tb);
	return s;
}
