// SPDX-License-Identifier: MIT
/*
 * check_kvpolicy_gpu.c - the policy cache on the device
 * (llm_kv_policy_create_cuda()) against the host cache on the same random
 * queries, keys and values: the attention of the prompt and of every
 * decode step, what each tier holds after every step, and the subsystem's
 * invariants over the device cache's space after every step, on the
 * batched path (two sequences per step).
 *
 * The two differ in the activation type of the attention kernels (fp16 on
 * the device, fp32 on the host), so a token whose score sits on a
 * threshold may be classified differently; the bounds allow a few such
 * tokens, not a different policy.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chnorm.h"
#include "kvk.h"
#include "kvpolicy.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define NL 3
#define NH 8
#define NKV 2
#define HD 64
#define QW (NH * HD)
#define KW (NKV * HD)

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}

/* a few tokens draw most of the attention, as in real models */
static void fill(uint64_t *seed, float *q, float *k, float *v, int len)
{
	for (size_t i = 0; i < (size_t)NL * len * QW; i++)
		q[i] = frand(seed) + (i % HD < 8 ? 1.5f : 0.0f);
	for (size_t i = 0; i < (size_t)NL * len * KW; i++) {
		size_t tok = i / KW % len;

		k[i] = tok % 8 == 0 && i % HD < 8 ? 3.0f : 0.5f * frand(seed);
		v[i] = frand(seed);
	}
}

static double rel_err(const float *x, const float *r, size_t n)
{
	double e = 0, d = 0;

	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(isfinite(x[i]), "output %zu not written", i);
		e += ((double)x[i] - r[i]) * ((double)x[i] - r[i]);
		d += (double)r[i] * r[i];
	}
	return sqrt(e / d);
}

static float *to_dev(const float *h, size_t n)
{
	float *d;

	CK_CUDA(cudaMalloc((void **)&d, n * 4));
	CK_CUDA(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
	return d;
}

/*
 * one layer of a device step over the batch @b: @ntok rows of q, k, v
 * (host), the fp16 output widened into @out
 */
static void dev_layer(struct llm_kv *kv, const struct llm_batch *b, int l,
		      int ntok, const float *q, const float *k, const float *v,
		      float *out, void *dout, cudaStream_t st)
{
	float *dq = to_dev(q, (size_t)ntok * QW);
	float *dk = to_dev(k, (size_t)ntok * KW);
	float *dv = to_dev(v, (size_t)ntok * KW);
	uint16_t *h = malloc((size_t)ntok * QW * 2);
	struct llm_kv_io io = { dq, QW, dk, dv, KW, dout, QW, KVK_F16 };

	CK_CUDA(cudaMemset(dout, 0xff, (size_t)ntok * QW * 2));
	ck_assert_int_eq(kv->ops->layer(kv, b, l, &io, st), 0);
	CK_CUDA(cudaStreamSynchronize(st));
	CK_CUDA(cudaMemcpy(h, dout, (size_t)ntok * QW * 2,
			   cudaMemcpyDeviceToHost));
	kvk_convert_to_f32(out, h, (size_t)ntok * QW, KVK_F16);
	free(h);
	cudaFree(dq);
	cudaFree(dk);
	cudaFree(dv);
}

static void usage_close(const char *spec, int step,
			const struct llm_kv_usage *h,
			const struct llm_kv_usage *d, double tol)
{
	const uint64_t a[5] = { h->tokens[0], h->tokens[1], h->pruned,
				h->pages[0], h->pages[1] };
	const uint64_t b[5] = { d->tokens[0], d->tokens[1], d->pruned,
				d->pages[0], d->pages[1] };
	static const char *const what[5] = { "high tokens", "low tokens",
					     "pruned", "high pages",
					     "low pages" };

	ck_assert_uint_eq(h->full_pages, d->full_pages);
	for (int i = 0; i < 5; i++)
		ck_assert_msg(fabs((double)a[i] - (double)b[i]) <=
				      tol * (double)(a[i] > b[i] ? a[i] : b[i]) +
					      2,
			      "%s step %d: %s host %lu device %lu", spec, step,
			      what[i], a[i], b[i]);
}

/* struct seqin - one sequence's inputs, [NL][len][heads][HD] */
struct seqin {
	int prompt, len;
	float *q, *k, *v;
};

#define AT(x, w, len, l, t) ((x) + ((size_t)(l) * (len) + (t)) * (w))

/*
 * @spec on both caches over two random sequences of different prompt
 * lengths, in slots 1 and 0, prefilled in one batch and decoded together:
 * the batched path of both caches
 */
static void compare(const char *spec, uint64_t *seed, int prompt, int steps,
		    double out_tol, double use_tol)
{
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };
	struct seqin in[2];
	int maxp = prompt + 40, seq[2] = { 1, 0 }, nt[2];
	size_t rows = 2 * (size_t)maxp;
	float *q = malloc(rows * QW * 4), *k = malloc(rows * KW * 4);
	float *v = malloc(rows * KW * 4), *oh = malloc(rows * QW * 4);
	float *od = malloc(rows * QW * 4);
	struct llm_batch b = { 2, seq, nt, NULL };
	struct llm_kv *hk, *dk;
	struct llm_kv_usage uh, ud;
	struct llm_policy p;
	double worst = 0, e;
	cudaStream_t st;
	char err[200];
	void *dout;

	for (int j = 0; j < 2; j++) {
		in[j].prompt = j ? prompt : prompt + 40;
		in[j].len = in[j].prompt + steps;
		in[j].q = malloc((size_t)NL * in[j].len * QW * 4);
		in[j].k = malloc((size_t)NL * in[j].len * KW * 4);
		in[j].v = malloc((size_t)NL * in[j].len * KW * 4);
		ck_assert(in[j].q && in[j].k && in[j].v);
		fill(seed, in[j].q, in[j].k, in[j].v, in[j].len);
	}
	ck_assert(q && k && v && oh && od);
	ck_assert_msg(!llm_policy_parse(spec, &p, err, sizeof(err)), "%s",
		      err);
	ck_assert_msg(!llm_kv_policy_create(&c, &p, 2, maxp + steps, 2, &hk,
					    err, sizeof(err)), "%s", err);
	ck_assert_msg(!llm_kv_policy_create_cuda(&c, &p, 2, maxp + steps, 0,
						 &dk, err, sizeof(err)),
		      "%s", err);
	CK_CUDA(cudaStreamCreate(&st));
	CK_CUDA(cudaMalloc(&dout, rows * QW * 2));
	for (int s = -1; s < steps; s++) {
		int T = 0;
		char why[200];

		/* the step's rows, sequence after sequence (slot 1 first) */
		for (int i = 0; i < 2; i++)
			nt[i] = s < 0 ? in[seq[i]].prompt : 1;
		ck_assert_int_eq(hk->ops->begin(hk, &b, NULL), 0);
		ck_assert_int_eq(dk->ops->begin(dk, &b, st), 0);
		for (int l = 0; l < NL; l++) {
			T = 0;
			for (int i = 0; i < 2; i++) {
				const struct seqin *x = &in[seq[i]];
				int t0 = s < 0 ? 0 : x->prompt + s;

				memcpy(q + (size_t)T * QW,
				       AT(x->q, QW, x->len, l, t0),
				       (size_t)nt[i] * QW * 4);
				memcpy(k + (size_t)T * KW,
				       AT(x->k, KW, x->len, l, t0),
				       (size_t)nt[i] * KW * 4);
				memcpy(v + (size_t)T * KW,
				       AT(x->v, KW, x->len, l, t0),
				       (size_t)nt[i] * KW * 4);
				T += nt[i];
			}
			{
				struct llm_kv_io io = { q, QW, k, v, KW, oh, QW,
							KVK_F32 };

				ck_assert_int_eq(hk->ops->layer(hk, &b, l, &io,
								NULL), 0);
			}
			dev_layer(dk, &b, l, T, q, k, v, od, dout, st);
			e = rel_err(od, oh, (size_t)T * QW);
			if (s < 0)
				ck_assert_msg(e < 2e-3, "%s prompt layer %d: "
					      "error %g", spec, l, e);
			else
				worst = e > worst ? e : worst;
		}
		ck_assert_int_eq(hk->ops->end(hk, &b, NULL), 0);
		ck_assert_int_eq(dk->ops->end(dk, &b, st), 0);
		CK_CUDA(cudaStreamSynchronize(st));
		ck_assert_int_eq(dk->ops->status(dk), 0);
		for (int i = 0; i < 2; i++) {
			llm_kv_commit(hk, seq[i], nt[i]);
			llm_kv_commit(dk, seq[i], nt[i]);
		}
		for (int slot = 0; slot < 2; slot++) {
			ck_assert_int_eq(llm_kv_policy_usage(hk, slot, &uh), 0);
			ck_assert_int_eq(llm_kv_policy_usage(dk, slot, &ud), 0);
			usage_close(spec, s, &uh, &ud, use_tol);
		}
		ck_assert_msg(!llm_kv_policy_check(dk, why, sizeof(why)),
			      "%s step %d: %s", spec, s, why);
	}
	printf("# kvpolicy cuda vs cpu %s: %d + %d tokens (and %d + %d), "
	       "decode output error %.2e, host hi %lu lo %lu pruned %lu "
	       "pages %lu + %lu, device hi %lu lo %lu pruned %lu pages %lu + "
	       "%lu\n", spec, in[1].prompt, steps, in[0].prompt, steps, worst,
	       uh.tokens[0], uh.tokens[1], uh.pruned, uh.pages[0], uh.pages[1],
	       ud.tokens[0], ud.tokens[1], ud.pruned, ud.pages[0], ud.pages[1]);
	ck_assert_msg(worst < out_tol, "%s: decode output error %g over %g",
		      spec, worst, out_tol);
	cudaFree(dout);
	llm_kv_destroy(hk);
	llm_kv_destroy(dk);
	cudaStreamDestroy(st);
	for (int j = 0; j < 2; j++) {
		free(in[j].q);
		free(in[j].k);
		free(in[j].v);
	}
	free(q);
	free(k);
	free(v);
	free(oh);
	free(od);
}

START_TEST(test_kvpolicy_cuda_vs_cpu)
{
	uint64_t seed = kvtest_seed(__func__);
	int prompt = 200 + (int)(kvtest_rand(&seed) % 300);

	/* fp16 pages: the fp16 rounding of q and out only */
	compare("full", &seed, prompt, 60, 2e-3, 0.0);
	compare("uniform:tier=k8v8", &seed, prompt, 60, 5e-3, 0.0);
	/* tiers, pruning, demotion: a few threshold tokens may differ */
	compare("diffkv", &seed, prompt, 80, 5e-2, 0.02);
	compare("diffkv:prune=0,quant=2", &seed, prompt, 80, 5e-2, 0.02);
	/* the rotation: on q, k, v in fp32 on both, back on fp16 out here */
	compare("uniform:tier=k4v4,hadamard=1", &seed, prompt, 60, 5e-2, 0.0);
	compare("diffkv:prune=0,quant=1,hadamard=1", &seed, prompt, 80, 5e-2,
		0.02);
	/* protected sinks, where most tokens would otherwise go low */
	compare("diffkv:prune=0.05,quant=4,sinks=8", &seed, prompt, 80, 5e-2,
		0.02);
	/* per-channel key normalization, alone and with the rotation */
	compare("uniform:tier=k4v4,knorm=1", &seed, prompt, 60, 5e-2, 0.0);
	compare("diffkv:prune=0,quant=1,hadamard=1,knorm=1", &seed, prompt, 80,
		5e-2, 0.02);
	compare("kvcompress:rate=2,interval=8", &seed, prompt, 80, 5e-2,
		0.02);
}
END_TEST

/* a bad activation type or a host cache: refused, nothing changed */
START_TEST(test_kvpolicy_cuda_einval)
{
	struct llm_config c = { .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
				.head_dim = 256 };
	struct llm_policy p;
	struct llm_kv *kv = NULL;
	char err[200];

	llm_policy_default(LLM_POLICY_DIFFKV, &p);
	/* head_dim 256: the prefill kernel takes 64 and 128 */
	ck_assert_int_eq(llm_kv_policy_create_cuda(&c, &p, 1, 64, 0, &kv, err,
						   sizeof(err)), -EINVAL);
	ck_assert_ptr_null(kv);
	c.head_dim = 64;
	ck_assert_int_eq(llm_kv_policy_create_cuda(&c, &p, 1, 64, -1, &kv,
						   err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_create_cuda(&c, &p, 1, 64, 0, &kv, err,
						   sizeof(err)), 0);
	{
		int seq = 0, nt = 1;
		struct llm_batch bt = { 1, &seq, &nt, NULL };
		struct llm_kv_io io = { NULL, 128, NULL, NULL, 64, NULL, 128,
					KVK_F32 };
		float *d;

		CK_CUDA(cudaMalloc((void **)&d, 4096));
		io.q = io.k = io.v = d;
		io.out = d;
		ck_assert_int_eq(kv->ops->begin(kv, &bt, NULL), 0);
		/* fp32 output, then a row stride the device cache refuses */
		ck_assert_int_eq(kv->ops->layer(kv, &bt, 0, &io, NULL),
				 -EINVAL);
		io.odt = KVK_F16;
		io.ldq = 64;
		ck_assert_int_eq(kv->ops->layer(kv, &bt, 0, &io, NULL),
				 -EINVAL);
		/* a layer out of range */
		io.ldq = 128;
		ck_assert_int_eq(kv->ops->layer(kv, &bt, 1, &io, NULL),
				 -EINVAL);
		ck_assert_int_eq(cudaStreamSynchronize(NULL), cudaSuccess);
		cudaFree(d);
	}
	ck_assert(!llm_kv_policy_check(kv, err, sizeof(err)));
	llm_kv_destroy(kv);
}
END_TEST

/*
 * kvk_chnorm_cuda() against kvk_chnorm_cpu(): statistics of three prompts
 * of random lengths (keys with offset and outlier channels), their keys
 * normalized, then decode rows of keys and queries, every output equal to
 * the bit, at head_dim 64, 128 and 256
 */
START_TEST(test_chnorm_cuda_vs_cpu)
{
	static const uint32_t dims[] = { 64, 128, 256 };
	uint64_t seed = kvtest_seed(__func__);

	for (int di = 0; di < 3; di++) {
		uint32_t d = dims[di], nkv = 2, grp = 4, ns = 3, start[4] = { 0 };
		uint32_t lb[3] = { 0, 6, 14 }, lists = 16, nt;
		size_t nx, np = (size_t)lists * 2 * d, nq;
		float *x, *xd_h, *q, *qd_h, *pc, *pg_h, *dx, *dq, *dp;
		uint32_t *dstart, *dlb;
		struct kvk_chn_args a, da;

		for (uint32_t s = 0; s < ns; s++)
			start[s + 1] = start[s] + 1 + kvtest_rand(&seed) % 300;
		nt = start[ns];
		nx = (size_t)nt * nkv * d;
		nq = (size_t)ns * nkv * grp * d;
		x = malloc(nx * 4);
		xd_h = malloc(nx * 4);
		q = malloc(nq * 4);
		qd_h = malloc(nq * 4);
		pc = calloc(np, 4);
		pg_h = malloc(np * 4);
		ck_assert(x && xd_h && q && qd_h && pc && pg_h);
		for (size_t i = 0; i < nx; i++)
			x[i] = frand(&seed) + (i % d == 3 ? 7.0f : 0.0f) +
			       (i % d == 9 ? 4.0f * frand(&seed) : 0.0f);
		for (size_t i = 0; i < nq; i++)
			q[i] = frand(&seed);
		CK_CUDA(cudaMalloc((void **)&dx, nx * 4));
		CK_CUDA(cudaMalloc((void **)&dq, nq * 4));
		CK_CUDA(cudaMalloc((void **)&dp, np * 4));
		CK_CUDA(cudaMalloc((void **)&dstart, sizeof(start)));
		CK_CUDA(cudaMalloc((void **)&dlb, sizeof(lb)));
		CK_CUDA(cudaMemcpy(dx, x, nx * 4, cudaMemcpyHostToDevice));
		CK_CUDA(cudaMemcpy(dq, q, nq * 4, cudaMemcpyHostToDevice));
		CK_CUDA(cudaMemset(dp, 0, np * 4));
		CK_CUDA(cudaMemcpy(dstart, start, sizeof(start),
				   cudaMemcpyHostToDevice));
		CK_CUDA(cudaMemcpy(dlb, lb, sizeof(lb),
				   cudaMemcpyHostToDevice));
		a = (struct kvk_chn_args){
			.x = x, .ntok = nt, .heads = nkv, .group = 1,
			.head_dim = d, .nr_seqs = ns, .seq_start = start,
			.list_base = lb, .param = pc, .op = KVK_CHN_STATS,
		};
		da = a;
		da.x = dx, da.seq_start = dstart, da.list_base = dlb;
		da.param = dp;
		for (int op = KVK_CHN_STATS; op <= KVK_CHN_KEYS; op++) {
			a.op = da.op = op;
			ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
			ck_assert_int_eq(kvk_chnorm_cuda(&da, NULL), 0);
		}
		/* decode: one row per sequence, keys of the first rows */
		a.ntok = da.ntok = ns;
		a.seq_start = da.seq_start = NULL;
		a.op = da.op = KVK_CHN_KEYS;
		ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
		ck_assert_int_eq(kvk_chnorm_cuda(&da, NULL), 0);
		a.x = q, da.x = dq;
		a.heads = da.heads = nkv * grp;
		a.group = da.group = grp;
		a.op = da.op = KVK_CHN_QUERIES;
		ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
		ck_assert_int_eq(kvk_chnorm_cuda(&da, NULL), 0);
		CK_CUDA(cudaMemcpy(xd_h, dx, nx * 4, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(qd_h, dq, nq * 4, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(pg_h, dp, np * 4, cudaMemcpyDeviceToHost));
		ck_assert_msg(!memcmp(pc, pg_h, np * 4), "d %u: statistics "
			      "differ", d);
		ck_assert_msg(!memcmp(x, xd_h, nx * 4), "d %u: keys differ",
			      d);
		ck_assert_msg(!memcmp(q, qd_h, nq * 4), "d %u: queries "
			      "differ", d);
		cudaFree(dx), cudaFree(dq), cudaFree(dp), cudaFree(dstart);
		cudaFree(dlb);
		free(x), free(xd_h), free(q), free(qd_h), free(pc), free(pg_h);
	}
}
END_TEST
#else
START_TEST(test_chnorm_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_kvpolicy_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_kvpolicy_cuda_einval)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_kvpolicy_gpu(void)
{
	Suite *s = suite_create("kvpolicy_gpu");
	TCase *tc = tcase_create("cuda");

	tcase_set_timeout(tc, 300);
	KV_ADD(tc, test_kvpolicy_cuda_vs_cpu);
	KV_ADD(tc, test_kvpolicy_cuda_einval);
	KV_ADD(tc, test_chnorm_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
