// SPDX-License-Identifier: MIT
/*
 * check_prefill_gpu.c - the tensor-core prefill attention against its fp32
 * CPU reference on fresh random variable-length batches (fp16 and bf16,
 * head_dim 64 and 128, GQA 1 to 8, lengths across tile edges), outputs
 * poisoned first; and a 32K-token prompt checked row by row and on every
 * token score against double precision.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "prefill.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53);
}

static void *dup_dev(const void *h, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n));
	CK_CUDA(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
	return d;
}

static void *back(const void *d, size_t n)
{
	void *h = malloc(n);

	CK_CUDA(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
	return h;
}

static double rel_l2(const float *x, const float *ref, size_t n, size_t *bad)
{
	double e = 0, r = 0;

	*bad = n;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(x[i]) && *bad == n)
			*bad = i;
		e += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
		r += (double)ref[i] * ref[i];
	}
	return r > 0 ? sqrt(e / r) : sqrt(e);
}

static const char *const variants[] = {"4", "8", "8x2"};

static void one_case(uint64_t *seed, uint32_t nseq, uint32_t nq, uint32_t nkv,
		     uint32_t hd, enum kvk_dtype dt, uint32_t maxlen,
		     uint32_t w)
{
	struct kvk_prefill_args a, da;
	uint32_t *ss = calloc(nseq + 1, 4);
	size_t total = 0, nqe, nke;
	float *f, *o_c, *o_g, *lse_g, *sc_g;
	void *q, *k, *v, *out;
	double eo, el = 0, es, bound = dt == KVK_F16 ? 4e-3 : 2e-2;
	size_t bad;

	for (uint32_t s = 0; s < nseq; s++) {
		uint32_t len = kvtest_rand(seed) % 3 == 0
				       ? maxlen
				       : 1 + kvtest_rand(seed) % maxlen;

		ss[s] = (uint32_t)total;
		total += len;
	}
	ss[nseq] = (uint32_t)total;
	nqe = total * nq * hd;
	nke = total * nkv * hd;
	f = malloc((nqe > nke ? nqe : nke) * 4);
	q = malloc(nqe * 2);
	k = malloc(nke * 2);
	v = malloc(nke * 2);
	out = malloc(nqe * 2);
	for (size_t i = 0; i < nqe; i++)
		f[i] = (frand(seed) * 2 - 1) * 2;
	kvk_convert_from_f32(q, f, nqe, dt);
	for (size_t i = 0; i < nke; i++)
		f[i] = (frand(seed) * 2 - 1) * 2;
	kvk_convert_from_f32(k, f, nke, dt);
	for (size_t i = 0; i < nke; i++)
		f[i] = frand(seed) * 2 - 1;
	kvk_convert_from_f32(v, f, nke, dt);
	a = (struct kvk_prefill_args){
		.nr_seqs = nseq,
		.nr_q_heads = nq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd),
		.dtype = dt,
		.q = q,
		.k = k,
		.v = v,
		.seq_start = ss,
		.max_len = maxlen,
		.out = out,
		.lse = malloc(total * nq * 4),
		.scores = malloc(total * nkv * 4),
		.score_window = w,
		/* KV-Compress's sum of squares on some cases */
		.score_mode = w % 3 == 0 ? KVK_ATTN_SCORE_SUMSQ : 0,
	};
	da = a;
	da.q = dup_dev(q, nqe * 2);
	da.k = dup_dev(k, nke * 2);
	da.v = dup_dev(v, nke * 2);
	da.seq_start = dup_dev(ss, 4 * (nseq + 1));
	CK_CUDA(cudaMalloc(&da.out, nqe * 2));
	CK_CUDA(cudaMalloc((void **)&da.lse, total * nq * 4));
	CK_CUDA(cudaMalloc((void **)&da.scores, total * nkv * 4));
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), 0);
	o_c = malloc(nqe * 4);
	o_g = malloc(nqe * 4);
	kvk_convert_to_f32(o_c, out, nqe, dt);
	for (size_t vi = 0; vi < ARRAY_SIZE(variants); vi++) {
		setenv("KVMM_PREFILL_VARIANT", variants[vi], 1);
		CK_CUDA(cudaMemset(da.out, 0xff, nqe * 2));
		CK_CUDA(cudaMemset(da.lse, 0xff, total * nq * 4));
		CK_CUDA(cudaMemset(da.scores, 0xff, total * nkv * 4));
		ck_assert_int_eq(kvk_prefill_cuda(&da, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		{
			void *ob = back(da.out, nqe * 2);

			kvk_convert_to_f32(o_g, ob, nqe, dt);
			free(ob);
		}
		lse_g = back(da.lse, total * nq * 4);
		sc_g = back(da.scores, total * nkv * 4);
		eo = rel_l2(o_g, o_c, nqe, &bad);
		ck_assert_msg(bad == nqe, "out[%zu] not written (%g)", bad,
			      o_g[bad]);
		for (size_t i = 0; i < total * nq; i++) {
			ck_assert_msg(isfinite(lse_g[i]),
				      "lse[%zu] not written", i);
			el = fmax(el, fabs(lse_g[i] - a.lse[i]));
		}
		es = rel_l2(sc_g, a.scores, total * nkv, &bad);
		ck_assert_msg(bad == total * nkv, "score[%zu] not written",
			      bad);
		printf("# prefill [%s] %s hd %u q %u kv %u seqs %u tokens %zu "
		       "W %u%s: "
		       "out %.2e lse %.2e scores %.2e\n",
		       variants[vi], kvk_dtype_name(dt), hd, nq, nkv, nseq,
		       total, w, a.score_mode ? " sumsq" : "", eo, el, es);
		ck_assert_msg(eo < bound, "out error %g over %g", eo, bound);
		ck_assert_msg(el < 2e-3, "lse error %g", el);
		ck_assert_msg(es < 2e-3, "score error %g", es);
		free(lse_g);
		free(sc_g);
		el = 0;
	}
	unsetenv("KVMM_PREFILL_VARIANT");
	cudaFree((void *)da.q);
	cudaFree((void *)da.k);
	cudaFree((void *)da.v);
	cudaFree((void *)da.seq_start);
	cudaFree(da.out);
	cudaFree(da.lse);
	cudaFree(da.scores);
	free(a.lse);
	free(a.scores);
	free(ss);
	free(f);
	free(q);
	free(k);
	free(v);
	free(out);
	free(o_c);
	free(o_g);
}

START_TEST(test_prefill_cuda_vs_cpu)
{
	static const uint32_t groups[] = {1, 2, 4, 8};
	static const uint32_t lens[] = {1, 63, 64, 65, 130, 700, 1100};
	uint64_t seed = kvtest_seed("prefill_cuda_vs_cpu");

	for (int it = 0; it < 16; it++) {
		uint32_t nkv = 1 + kvtest_rand(&seed) % 2;

		one_case(&seed, 1 + kvtest_rand(&seed) % 3,
			 nkv * groups[kvtest_rand(&seed) % 4], nkv,
			 it % 2 ? 128 : 64, (it / 2) % 2 ? KVK_BF16 : KVK_F16,
			 lens[kvtest_rand(&seed) % 7],
			 1 + kvtest_rand(&seed) % 100);
	}
}
END_TEST

/* one row of one head in double: out, lse */
static void row_ref(const uint16_t *q, const uint16_t *k, const uint16_t *v,
		    uint32_t nq, uint32_t nkv, uint32_t hd, uint32_t i,
		    uint32_t h, float scale, double *o, double *lse, double *p)
{
	uint32_t kvh = h / (nq / nkv);
	double mx = -INFINITY, z = 0;
	float qf[128];

	for (uint32_t e = 0; e < hd; e++)
		qf[e] = kvk_f16_to_f32(q[((size_t)i * nq + h) * hd + e]);
	for (uint32_t j = 0; j <= i; j++) {
		const uint16_t *kj = k + ((size_t)j * nkv + kvh) * hd;
		double d = 0;

		for (uint32_t e = 0; e < hd; e++)
			d += (double)qf[e] * kvk_f16_to_f32(kj[e]);
		p[j] = d * scale;
		mx = fmax(mx, p[j]);
	}
	for (uint32_t j = 0; j <= i; j++) {
		p[j] = exp(p[j] - mx);
		z += p[j];
	}
	for (uint32_t j = 0; j <= i; j++)
		p[j] /= z;
	*lse = mx + log(z);
	if (!o)
		return;
	for (uint32_t e = 0; e < hd; e++)
		o[e] = 0;
	for (uint32_t j = 0; j <= i; j++)
		for (uint32_t e = 0; e < hd; e++)
			o[e] += p[j] *
				kvk_f16_to_f32(
					v[((size_t)j * nkv + kvh) * hd + e]);
}

START_TEST(test_prefill_32k)
{
	const uint32_t len = 32768, nq = 4, nkv = 1, hd = 128, w = 64;
	uint64_t seed = kvtest_seed("prefill_32k");
	size_t nqe = (size_t)len * nq * hd, nke = (size_t)len * nkv * hd;
	uint16_t *q = malloc(nqe * 2), *k = malloc(nke * 2),
		 *v = malloc(nke * 2);
	uint16_t *og;
	float *lse_g, *sc_g;
	double *p = malloc(len * 8), *sc = calloc(len, 8), o[128], lse;
	double e2 = 0, n2 = 0, el = 0, es2 = 0, ns2 = 0;
	uint32_t ss[2] = {0, len},
		 rows[16] = {0,	   1,	  63,	 64,	65,
			     4095, 16000, 32703, 32704, 32767};
	struct kvk_prefill_args da = {
		.nr_seqs = 1,
		.nr_q_heads = nq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd),
		.dtype = KVK_F16,
		.max_len = len,
		.score_window = w,
	};

	for (size_t i = 0; i < nqe; i++)
		q[i] = kvk_f32_to_f16((frand(&seed) * 2 - 1) * 3);
	for (size_t i = 0; i < nke; i++) {
		k[i] = kvk_f32_to_f16((frand(&seed) * 2 - 1) * 3);
		v[i] = kvk_f32_to_f16(frand(&seed) * 2 - 1);
	}
	for (int r = 10; r < 16; r++)
		rows[r] = kvtest_rand(&seed) % len;
	da.q = dup_dev(q, nqe * 2);
	da.k = dup_dev(k, nke * 2);
	da.v = dup_dev(v, nke * 2);
	da.seq_start = dup_dev(ss, 8);
	CK_CUDA(cudaMalloc(&da.out, nqe * 2));
	CK_CUDA(cudaMalloc((void **)&da.lse, (size_t)len * nq * 4));
	CK_CUDA(cudaMalloc((void **)&da.scores, (size_t)len * nkv * 4));
	/* the scores: every head's last W rows, max over the group */
	for (uint32_t h = 0; h < nq; h++) {
		double *acc = calloc(len, 8);

		for (uint32_t i = len - w; i < len; i++) {
			row_ref(q, k, v, nq, nkv, hd, i, h, da.scale, NULL,
				&lse, p);
			for (uint32_t j = 0; j <= i; j++)
				acc[j] += p[j];
		}
		for (uint32_t j = 0; j < len; j++)
			sc[j] = fmax(sc[j], acc[j]);
		free(acc);
	}
	for (size_t vi = 0; vi < ARRAY_SIZE(variants); vi++) {
		setenv("KVMM_PREFILL_VARIANT", variants[vi], 1);
		CK_CUDA(cudaMemset(da.out, 0xff, nqe * 2));
		CK_CUDA(cudaMemset(da.scores, 0xff, (size_t)len * nkv * 4));
		ck_assert_int_eq(kvk_prefill_cuda(&da, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		og = back(da.out, nqe * 2);
		lse_g = back(da.lse, (size_t)len * nq * 4);
		sc_g = back(da.scores, (size_t)len * nkv * 4);
		e2 = n2 = el = es2 = ns2 = 0;
		for (int r = 0; r < 16; r++)
			for (uint32_t h = 0; h < nq; h++) {
				uint32_t i = rows[r];

				row_ref(q, k, v, nq, nkv, hd, i, h, da.scale, o,
					&lse, p);
				for (uint32_t e = 0; e < hd; e++) {
					double g = kvk_f16_to_f32(
						og[((size_t)i * nq + h) * hd +
						   e]);

					ck_assert(isfinite(g));
					e2 += (g - o[e]) * (g - o[e]);
					n2 += o[e] * o[e];
				}
				el = fmax(el, fabs(lse_g[(size_t)i * nq + h] -
						   lse));
			}
		for (uint32_t j = 0; j < len; j++) {
			ck_assert_msg(isfinite(sc_g[j]), "score %u not written",
				      j);
			es2 += (sc_g[j] - sc[j]) * (sc_g[j] - sc[j]);
			ns2 += sc[j] * sc[j];
		}
		printf("# prefill [%s] 32K fp16: out %.2e (16 rows x %u heads) "
		       "lse %.2e "
		       "scores %.2e\n",
		       variants[vi], sqrt(e2 / n2), nq, el, sqrt(es2 / ns2));
		ck_assert(sqrt(e2 / n2) < 4e-3);
		ck_assert(el < 2e-3);
		ck_assert(sqrt(es2 / ns2) < 2e-3);
		free(og);
		free(lse_g);
		free(sc_g);
	}
	unsetenv("KVMM_PREFILL_VARIANT");
	cudaFree((void *)da.q);
	cudaFree((void *)da.k);
	cudaFree((void *)da.v);
	cudaFree((void *)da.seq_start);
	cudaFree(da.out);
	cudaFree(da.lse);
	cudaFree(da.scores);
	free(q);
	free(k);
	free(v);
	free(p);
	free(sc);
}
END_TEST

START_TEST(test_prefill_cuda_einval)
{
	struct kvk_prefill_args a = {0};

	ck_assert_int_eq(kvk_prefill_cuda(&a, NULL), -EINVAL);
	ck_assert_int_eq(kvk_prefill_cuda(NULL, NULL), -EINVAL);
}
END_TEST
#else
START_TEST(test_prefill_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_prefill_32k)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_prefill_cuda_einval)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_prefill_gpu(void)
{
	Suite *s = suite_create("prefill_gpu");
	TCase *tc = tcase_create("cuda_vs_cpu");

	tcase_set_timeout(tc, 240);
	KV_ADD(tc, test_prefill_cuda_vs_cpu);
	KV_ADD(tc, test_prefill_32k);
	KV_ADD(tc, test_prefill_cuda_einval);
	suite_add_tcase(s, tc);
	return s;
}
