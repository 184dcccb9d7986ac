// SPDX-License-Identifier: MIT
/*
 * check_kvpolicy.c - the policy KV cache (model/kv/kvpolicy.h) on random
 * queries, keys and values: full against an independent fp32 attention,
 * equivalent policies against each other, the allocator's invariants after
 * every step, and the compression each policy reports.
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

#define NL 2
#define NH 4
#define NKV 2
#define HD 64

/* struct trace - every input of a run, so several policies see the same */
struct trace {
	int prompt, steps, len;
	float *q, *k, *v;	/* [NL][len][NH|NKV][HD] */
};

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}

static void trace_make(struct trace *t, uint64_t seed, int prompt, int steps)
{
	size_t nq, nk;

	t->prompt = prompt;
	t->steps = steps;
	t->len = prompt + steps;
	nq = (size_t)NL * t->len * NH * HD;
	nk = (size_t)NL * t->len * NKV * HD;
	t->q = malloc(nq * sizeof(float));
	t->k = malloc(nk * sizeof(float));
	t->v = malloc(nk * sizeof(float));
	ck_assert(t->q && t->k && t->v);
	/*
	 * Every 8th token's key points along the query's first dimensions,
	 * so a few tokens draw most of the attention, as in real models.
	 */
	for (size_t i = 0; i < nq; i++)
		t->q[i] = frand(&seed) + (i % HD < 8 ? 1.5f : 0.0f);
	for (size_t i = 0; i < nk; i++) {
		size_t tok = i / (NKV * HD) % t->len;
		int big = tok % 8 == 0;

		t->k[i] = big && i % HD < 8 ? 3.0f : 0.5f * frand(&seed);
		t->v[i] = frand(&seed);
	}
}

static void trace_free(struct trace *t)
{
	free(t->q);
	free(t->k);
	free(t->v);
}

static const float *at(const float *x, int l, int len, int t, int w)
{
	return x + ((size_t)l * len + t) * w * HD;
}

static float r16(float x)
{
	return kvk_f16_to_f32(kvk_f32_to_f16(x));
}

/*
 * The reference: token i of layer l attends to tokens 0..i; keys and
 * values of tokens before @fp16_from exact, the others rounded to fp16
 * (what full's pages hold when token i decodes).
 */
static void ref_attend(const struct trace *t, int l, int i, int fp16,
		       float *out)
{
	float *p = malloc((size_t)(i + 1) * sizeof(float));

	ck_assert(p);
	for (int h = 0; h < NH; h++) {
		const float *q = at(t->q, l, t->len, i, NH) + h * HD;
		int g = h / (NH / NKV);
		double m = -INFINITY, sum = 0;

		for (int j = 0; j <= i; j++) {
			const float *k = at(t->k, l, t->len, j, NKV) + g * HD;
			double d = 0;

			for (int e = 0; e < HD; e++)
				d += (double)q[e] * (fp16 ? r16(k[e]) : k[e]);
			p[j] = (float)(d / sqrt(HD));
			m = p[j] > m ? p[j] : m;
		}
		for (int j = 0; j <= i; j++)
			sum += exp(p[j] - m);
		for (int e = 0; e < HD; e++) {
			double o = 0;

			for (int j = 0; j <= i; j++) {
				const float *v = at(t->v, l, t->len, j, NKV) +
						 g * HD;

				o += exp(p[j] - m) / sum *
				     (fp16 ? r16(v[e]) : v[e]);
			}
			out[h * HD + e] = (float)o;
		}
	}
	free(p);
}

/*
 * Run @spec over @t; the outputs of every decode step, every layer, into
 * @out ([steps][NL][NH][HD]); the prefill's last layer into @pre
 * ([prompt][NH][HD]). Invariants checked after every step.
 */
static void drive(const char *spec, const struct trace *t, float *pre,
		  float *out, struct llm_kv_usage *u)
{
	struct llm_config c = { 0 };
	struct llm_policy p;
	struct llm_kv *kv;
	char err[200];
	float *o = malloc((size_t)t->prompt * NH * HD * sizeof(float));

	ck_assert(o);
	c.n_layers = NL;
	c.n_heads = NH;
	c.n_kv_heads = NKV;
	c.head_dim = HD;
	ck_assert_msg(!llm_policy_parse(spec, &p, err, sizeof(err)), "%s",
		      err);
	ck_assert_msg(!llm_kv_policy_create(&c, &p, 2, t->len, 2, &kv, err,
					    sizeof(err)), "%s: %s", spec, err);
	for (int l = 0; l < NL; l++) {
		ck_assert_int_eq(llm_kv_policy_step(kv, 1, l, 0, t->prompt,
			at(t->q, l, t->len, 0, NH), NH * HD,
			at(t->k, l, t->len, 0, NKV), at(t->v, l, t->len, 0, NKV),
			NKV * HD, o, NH * HD), 0);
		if (l == NL - 1 && pre)
			memcpy(pre, o, (size_t)t->prompt * NH * HD * 4);
	}
	ck_assert_msg(!llm_kv_policy_check(kv, err, sizeof(err)), "%s: %s",
		      spec, err);
	for (int s = 0; s < t->steps; s++) {
		int i = t->prompt + s;

		for (int l = 0; l < NL; l++)
			ck_assert_int_eq(llm_kv_policy_step(kv, 1, l, i, 1,
				at(t->q, l, t->len, i, NH), NH * HD,
				at(t->k, l, t->len, i, NKV),
				at(t->v, l, t->len, i, NKV), NKV * HD,
				out + ((size_t)s * NL + l) * NH * HD, NH * HD),
				0);
		ck_assert_msg(!llm_kv_policy_check(kv, err, sizeof(err)),
			      "%s step %d: %s", spec, s, err);
	}
	ck_assert_int_eq(llm_kv_policy_usage(kv, 1, u), 0);
	if (getenv("KVMM_VERBOSE"))
		fprintf(stderr, "%s: hi %lu lo %lu pruned %lu pages %lu+%lu "
			"logical %.3f physical %.3f\n", spec, u->tokens[0],
			u->tokens[1], u->pruned, u->pages[0], u->pages[1],
			llm_kv_logical_ratio(u), llm_kv_physical_ratio(u));
	ck_assert_uint_eq(u->tokens[0] + u->tokens[1] + u->pruned,
			  (uint64_t)NL * NKV * t->len);
	llm_kv_destroy(kv);
	free(o);
}

static double rel_err(const float *x, const float *r, size_t n)
{
	double e = 0, d = 0;

	for (size_t i = 0; i < n; i++) {
		ck_assert(isfinite(x[i]));
		e += ((double)x[i] - r[i]) * ((double)x[i] - r[i]);
		d += (double)r[i] * r[i];
	}
	return sqrt(e / d);
}

/* full: fp32 prefill exact, decode over fp16 pages */
START_TEST(test_kvpolicy_full_matches_reference)
{
	uint64_t seed = kvtest_seed(__func__);
	struct trace t;
	struct llm_kv_usage u;
	size_t no;
	float *pre, *out, *ref;

	trace_make(&t, seed, 150, 24);
	no = (size_t)t.steps * NL * NH * HD;
	pre = malloc((size_t)t.prompt * NH * HD * 4);
	out = malloc(no * 4);
	ref = malloc((size_t)NH * HD * 4);
	ck_assert(pre && out && ref);
	drive("full", &t, pre, out, &u);
	for (int i = 0; i < t.prompt; i += 7) {
		ref_attend(&t, NL - 1, i, 0, ref);
		ck_assert_double_le(rel_err(pre + (size_t)i * NH * HD, ref,
					    NH * HD), 1e-5);
	}
	for (int s = 0; s < t.steps; s++)
		for (int l = 0; l < NL; l++) {
			ref_attend(&t, l, t.prompt + s, 1, ref);
			ck_assert_double_le(rel_err(out + ((size_t)s * NL + l) *
						    NH * HD, ref, NH * HD),
					    1e-5);
		}
	ck_assert_uint_eq(u.pruned, 0);
	ck_assert_uint_eq(u.tokens[1], 0);
	ck_assert_double_eq_tol(llm_kv_physical_ratio(&u), 1.0, 1e-12);
	ck_assert_double_eq_tol(llm_kv_logical_ratio(&u), 1.0, 1e-12);
	free(pre);
	free(out);
	free(ref);
	trace_free(&t);
}
END_TEST

/* policies that must store the same bits give the same outputs */
START_TEST(test_kvpolicy_equivalences)
{
	static const char *const same[][2] = {
		{ "full", "kvcompress:rate=1" },
		{ "full", "full:topk=8192" },	/* every page selected */
		{ "uniform:tier=k8v4", "diffkv:prune=0,quant=0" },
		{ "uniform:tier=k4g2v2g4",
		  "diffkv:hi=k4g2v2g4,lo=k4g2v2g4,prune=0,quant=0" },
		/* every token a sink: none ever demoted or pruned */
		{ "uniform:tier=k8v4",
		  "diffkv:prune=1,quant=100000,sinks=1000" },
	};
	uint64_t seed = kvtest_seed(__func__);
	struct llm_kv_usage u[2];
	struct trace t;
	size_t no;
	float *o[2];

	trace_make(&t, seed, 130, 20);
	no = (size_t)t.steps * NL * NH * HD;
	o[0] = malloc(no * 4);
	o[1] = malloc(no * 4);
	ck_assert(o[0] && o[1]);
	for (unsigned i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		drive(same[i][0], &t, NULL, o[0], &u[0]);
		drive(same[i][1], &t, NULL, o[1], &u[1]);
		ck_assert_msg(!memcmp(o[0], o[1], no * 4), "%s != %s",
			      same[i][0], same[i][1]);
		ck_assert_uint_eq(u[0].tokens[0], u[1].tokens[0]);
		ck_assert_uint_eq(u[0].bits, u[1].bits);
	}
	free(o[0]);
	free(o[1]);
	trace_free(&t);
}
END_TEST

/* each compressing policy compresses, and stays close to full */
START_TEST(test_kvpolicy_compress)
{
	uint64_t seed = kvtest_seed(__func__);
	struct llm_kv_usage uf, u;
	struct trace t;
	size_t no;
	float *of, *o;

	trace_make(&t, seed, 300, 40);
	no = (size_t)t.steps * NL * NH * HD;
	of = malloc(no * 4);
	o = malloc(no * 4);
	ck_assert(of && o);
	drive("full", &t, NULL, of, &uf);

	drive("uniform:tier=k4v4", &t, NULL, o, &u);
	ck_assert_double_eq_tol(llm_kv_logical_ratio(&u),
				2.0 * 16 * HD / (8.0 * HD + 64), 1e-9);
	ck_assert_double_gt(llm_kv_physical_ratio(&u), 2.5);
	ck_assert_double_le(rel_err(o, of, no), 0.15);

	drive("diffkv", &t, NULL, o, &u);
	ck_assert_uint_gt(u.tokens[1], 0);	/* some tokens went low */
	/* more than its high tier alone (K8V4: 2.46x logical) */
	ck_assert_double_gt(llm_kv_logical_ratio(&u), 2.6);
	ck_assert_double_le(rel_err(o, of, no), 0.3);

	drive("diffkv:prune=0.5,quant=1", &t, NULL, o, &u);
	ck_assert_uint_gt(u.pruned, 0);

	drive("kvcompress:rate=2,interval=4,window=16", &t, NULL, o, &u);
	ck_assert_uint_gt(u.pruned, 0);
	ck_assert_uint_eq(u.tokens[1], 0);
	ck_assert_double_ge(llm_kv_physical_ratio(&u), 1.8);
	ck_assert_double_le(rel_err(o, of, no), 0.5);
	free(of);
	free(o);
	trace_free(&t);
}
END_TEST

/*
 * full:topk (sparse decode attention over selected pages): finite and
 * different from full once pages are left out (not close: every page of
 * this trace holds two of its strong keys, so no page can be spared; the
 * kernels' suite checks what is kept), and full bit for bit while every
 * list fits in topk pages; device caches refuse it
 */
START_TEST(test_kvpolicy_topk)
{
	uint64_t seed = kvtest_seed(__func__);
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };
	struct llm_kv_usage uf, u;
	struct llm_policy p;
	struct llm_kv *kv = NULL;
	struct trace t;
	char err[200];
	size_t no;
	float *of, *o;

	trace_make(&t, seed, 300, 40);
	no = (size_t)t.steps * NL * NH * HD;
	of = malloc(no * 4);
	o = malloc(no * 4);
	ck_assert(of && o);
	drive("full", &t, NULL, of, &uf);
	drive("full:topk=12", &t, NULL, o, &u); /* of 19..22 pages */
	ck_assert(memcmp(o, of, no * 4));
	ck_assert_double_gt(rel_err(o, of, no), 0.0); /* and finite */
	ck_assert_uint_eq(u.pruned, 0);
	drive("full:topk=23", &t, NULL, o, &u); /* 340 tokens: 22 pages */
	ck_assert(!memcmp(o, of, no * 4));
	ck_assert_int_eq(llm_policy_parse("full:topk=8", &p, err,
					  sizeof(err)), 0);
	ck_assert_int_eq(llm_kv_policy_create_cuda(&c, &p, 1, 100, 0, &kv,
						   err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(kv);
	free(of);
	free(o);
	trace_free(&t);
}
END_TEST

/*
 * the hadamard knob: the prompt attends as without it (bit for bit), the
 * same tokens take the same bits and pages, the decode outputs stay as
 * close to full as the tier allows; with keys that have outlier channels
 * (two channels far from the rest in every token, as real models' keys
 * have: KIVI, QuaRot), what the rotation is for, 4-bit keys lose less
 * with it
 */
START_TEST(test_kvpolicy_hadamard)
{
	static const char *const pairs[][2] = {
		{ "uniform:tier=k8v8", "uniform:tier=k8v8,hadamard=1" },
		{ "uniform:tier=k4v4", "uniform:tier=k4v4,hadamard=1" },
		{ "diffkv:prune=0,quant=1",
		  "diffkv:prune=0,quant=1,hadamard=1" },
	};
	static const double tol[] = { 0.05, 0.3, 0.4 };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_kv_usage uf, u[2];
	double e[2];
	struct trace t;
	size_t no, np;
	float *of, *o, *pre[2];

	trace_make(&t, seed, 200, 30);
	for (size_t i = 0; i < (size_t)NL * t.len * NKV; i++) {
		t.k[i * HD + 5] += 6.0f;
		t.k[i * HD + 40] -= 4.0f;
	}
	no = (size_t)t.steps * NL * NH * HD;
	np = (size_t)t.prompt * NH * HD;
	of = malloc(no * 4);
	o = malloc(no * 4);
	pre[0] = malloc(np * 4);
	pre[1] = malloc(np * 4);
	ck_assert(of && o && pre[0] && pre[1]);
	drive("full", &t, NULL, of, &uf);
	for (unsigned i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		for (int r = 0; r < 2; r++) {
			drive(pairs[i][r], &t, pre[r], o, &u[r]);
			e[r] = rel_err(o, of, no);
			ck_assert_msg(e[r] <= tol[i], "%s: error %g over %g",
				      pairs[i][r], e[r], tol[i]);
		}
		if (getenv("KVMM_VERBOSE"))
			fprintf(stderr, "%s: error %g, rotated %g\n",
				pairs[i][0], e[0], e[1]);
		ck_assert_msg(!memcmp(pre[0], pre[1], np * 4), "%s: prompt "
			      "outputs differ", pairs[i][1]);
		if (i < 2) {
			ck_assert_uint_eq(u[0].bits, u[1].bits);
			ck_assert_uint_eq(u[0].pages[0], u[1].pages[0]);
		}
		if (i == 1)
			ck_assert_msg(e[1] < e[0], "k4v4: rotated %g, not "
				      "below %g", e[1], e[0]);
	}
	free(of);
	free(o);
	free(pre[0]);
	free(pre[1]);
	trace_free(&t);
}
END_TEST

/*
 * kvk_chnorm_cpu(): after STATS and KEYS, every channel of each (sequence,
 * head) whose scale was not clamped spans the same largest |x| (the mean
 * spread g), the channel means are 0, and the scaled queries' products
 * with the normalized keys are q . k - q . mean (what softmax ignores);
 * bad arguments refused
 */
START_TEST(test_chnorm_reference)
{
	enum { D = 64, NS = 2, H = 2, G = 3 };
	uint64_t seed = kvtest_seed(__func__);
	uint32_t start[NS + 1] = { 0, 37, 37 + 90 }, lb[NS] = { 4, 0 };
	size_t nx = (size_t)start[NS] * H * D;
	float *x = malloc(nx * 4), *k0 = malloc(nx * 4);
	float q[NS * H * G * D], q0[NS * H * G * D], par[6 * 2 * D] = { 0 };
	struct kvk_chn_args a = {
		.x = x, .ntok = start[NS], .heads = H, .group = 1,
		.head_dim = D, .nr_seqs = NS, .seq_start = start,
		.list_base = lb, .param = par, .op = KVK_CHN_STATS,
	};

	ck_assert(x && k0);
	for (size_t i = 0; i < nx; i++)
		x[i] = frand(&seed) + (i % D == 5 ? 6.0f : 0.0f) +
		       (i % D == 40 ? 5.0f * frand(&seed) : 0.0f);
	memcpy(k0, x, nx * 4);
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
	a.op = KVK_CHN_KEYS;
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
	for (uint32_t s = 0; s < NS; s++)
		for (uint32_t h = 0; h < H; h++) {
			const float *m = par + (size_t)(lb[s] + h) * 2 * D;
			double g = 0;

			for (int c = 0; c < D; c++) {
				double mx = 0, mean = 0;

				for (uint32_t t = start[s]; t < start[s + 1];
				     t++) {
					float v = x[((size_t)t * H + h) * D +
						    c];

					mx = fabs(v) > mx ? fabs(v) : mx;
					mean += v;
				}
				mean /= start[s + 1] - start[s];
				ck_assert_double_lt(fabs(mean), 1e-5 * 8);
				if (m[D + c] > KVK_CHN_MIN_SCALE) {
					if (g == 0)
						g = mx;
					ck_assert_double_eq_tol(mx, g, 1e-5 * g);
				}
			}
			/*
			 * the offset channel's offset went into its mean,
			 * the outlier channel got a large scale
			 */
			ck_assert_float_gt(m[5], 5.0f);
			ck_assert_float_lt(m[D + 5], 1.5f);
			ck_assert_float_gt(m[D + 40], 2.0f);
		}
	/* decode: the last token of each sequence, queries scaled alike */
	for (size_t i = 0; i < sizeof(q) / 4; i++)
		q[i] = q0[i] = frand(&seed);
	a = (struct kvk_chn_args){
		.x = q, .ntok = NS, .heads = H * G, .group = G, .head_dim = D,
		.nr_seqs = NS, .list_base = lb, .param = par,
		.op = KVK_CHN_QUERIES,
	};
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), 0);
	for (uint32_t s = 0; s < NS; s++)
		for (uint32_t hq = 0; hq < H * G; hq++) {
			uint32_t h = hq / G, t = start[s + 1] - 1;
			const float *m = par + (size_t)(lb[s] + h) * 2 * D;
			const float *kn = x + ((size_t)t * H + h) * D;
			const float *ko = k0 + ((size_t)t * H + h) * D;
			const float *qs = q + ((size_t)s * H * G + hq) * D;
			const float *qo = q0 + ((size_t)s * H * G + hq) * D;
			double got = 0, want = 0, mag = 0;

			for (int c = 0; c < D; c++) {
				got += (double)qs[c] * kn[c];
				want += (double)qo[c] * (ko[c] - m[c]);
				mag += fabs((double)qo[c] * ko[c]);
			}
			ck_assert_double_eq_tol(got, want, 1e-5 * mag);
		}
	/* refusals */
	a.group = 4;	/* 6 heads are not groups of 4 */
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), -EINVAL);
	a.group = G;
	a.head_dim = 512;
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), -EINVAL);
	a.head_dim = D;
	a.ntok = NS + 1;	/* decode rows without starts: one a sequence */
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), -EINVAL);
	a.ntok = NS;
	a.op = KVK_CHN_STATS;	/* statistics are of keys: group 1 */
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), -EINVAL);
	a.op = KVK_CHN_NR;
	ck_assert_int_eq(kvk_chnorm_cpu(&a, NULL), -EINVAL);
	free(x);
	free(k0);
}
END_TEST

/*
 * the knorm knob: the prompt attends as without it (bit for bit), the
 * same bits and pages are stored; on keys with an offset channel and an
 * outlier channel (what the knob is for), 4-bit keys lose less with it
 * than without and than with the rotation alone (which is not a bound on
 * the two together: on this trace they come out about equal)
 */
START_TEST(test_kvpolicy_knorm)
{
	static const char *const spec[] = {
		"uniform:tier=k4v8", "uniform:tier=k4v8,knorm=1",
		"uniform:tier=k4v8,hadamard=1",
		"uniform:tier=k4v8,hadamard=1,knorm=1",
	};
	uint64_t seed = kvtest_seed(__func__);
	struct llm_kv_usage uf, u[4];
	double e[4];
	struct trace t;
	size_t no, np;
	float *of, *o, *pre[2];

	trace_make(&t, seed, 200, 30);
	for (size_t i = 0; i < (size_t)NL * t.len * NKV; i++) {
		t.k[i * HD + 5] += 6.0f;
		t.k[i * HD + 40] *= 12.0f;
	}
	no = (size_t)t.steps * NL * NH * HD;
	np = (size_t)t.prompt * NH * HD;
	of = malloc(no * 4);
	o = malloc(no * 4);
	pre[0] = malloc(np * 4);
	pre[1] = malloc(np * 4);
	ck_assert(of && o && pre[0] && pre[1]);
	drive("full", &t, NULL, of, &uf);
	for (int i = 0; i < 4; i++) {
		drive(spec[i], &t, pre[i > 0], o, &u[i]);
		e[i] = rel_err(o, of, no);
		if (getenv("KVMM_VERBOSE"))
			fprintf(stderr, "%s: error %g\n", spec[i], e[i]);
		ck_assert_uint_eq(u[i].bits, u[0].bits);
		ck_assert_uint_eq(u[i].pages[0], u[0].pages[0]);
		if (i)
			ck_assert_msg(!memcmp(pre[0], pre[1], np * 4),
				      "%s: prompt outputs differ", spec[i]);
	}
	ck_assert_msg(e[1] < 0.7 * e[0], "knorm: %g, not below 0.7 x %g",
		      e[1], e[0]);
	/*
	 * the rotation spreads the outlier but keeps the offset (a constant
	 * in every token, rotated); the means take it out
	 */
	ck_assert_msg(e[1] < e[2], "knorm: %g, not below the rotation's %g",
		      e[1], e[2]);
	free(of);
	free(o);
	free(pre[0]);
	free(pre[1]);
	trace_free(&t);
}
END_TEST

/*
 * diffkv:sinks=: the first positions stay high through the prompt and
 * every decode step. With quant so high that every token the window lets
 * go is demoted, the high tier holds exactly the window (the newest 16)
 * and, with sinks, the sinks besides; with pruning, sinks are kept that
 * would have been dropped
 */
START_TEST(test_kvpolicy_sinks)
{
	static const char *const spec[][2] = {
		{ "diffkv:prune=0,quant=100000,window=16",
		  "diffkv:prune=0,quant=100000,window=16,sinks=5" },
		{ "diffkv:prune=1,quant=1,window=16",
		  "diffkv:prune=1,quant=1,window=16,sinks=5" },
	};
	uint64_t seed = kvtest_seed(__func__);
	const uint64_t lists = NL * NKV;
	struct llm_kv_usage u[2];
	struct trace t;
	size_t no;
	float *o[2];

	trace_make(&t, seed, 150, 40);
	no = (size_t)t.steps * NL * NH * HD;
	o[0] = malloc(no * 4);
	o[1] = malloc(no * 4);
	ck_assert(o[0] && o[1]);
	for (int i = 0; i < 2; i++) {
		drive(spec[i][0], &t, NULL, o[0], &u[0]);
		drive(spec[i][1], &t, NULL, o[1], &u[1]);
		ck_assert_msg(memcmp(o[0], o[1], no * 4), "%s: the sinks "
			      "changed nothing", spec[i][1]);
		if (i == 0) {
			ck_assert_uint_eq(u[0].tokens[0], lists * 16);
			ck_assert_uint_eq(u[1].tokens[0], lists * (16 + 5));
			ck_assert_uint_eq(u[1].tokens[1],
					  u[0].tokens[1] - lists * 5);
		} else {
			ck_assert_uint_gt(u[0].pruned, 0);
			ck_assert_uint_lt(u[1].pruned, u[0].pruned);
			ck_assert_uint_ge(u[1].tokens[0], lists * (16 + 5));
		}
	}
	free(o[0]);
	free(o[1]);
	trace_free(&t);
}
END_TEST

/*
 * one step of the batch @b through the cache's ops: rows of each sequence
 * (trace @t[seq]) gathered, token @t0[i] first, @nt[i] tokens; the
 * outputs of the last layer of sequence @want (or none) into @out
 */
static void batch_step(struct llm_kv *kv, const struct llm_batch *b,
		       const struct trace *t, const int *t0, float *buf,
		       float *dec, int step)
{
	size_t qw = NH * HD, kw = NKV * HD, rows = 0;
	float *q, *k, *v, *o;

	for (int i = 0; i < b->n_seq; i++)
		rows += b->n_tok[i];
	q = buf;
	k = q + rows * qw;
	v = k + rows * kw;
	o = v + rows * kw;
	ck_assert_int_eq(kv->ops->begin(kv, b, NULL), 0);
	for (int l = 0; l < NL; l++) {
		struct llm_kv_io io = { q, qw, k, v, kw, o, qw, KVK_F32 };
		size_t r = 0;

		for (int i = 0; i < b->n_seq; i++) {
			const struct trace *x = &t[b->seq[i]];

			for (int j = 0; j < b->n_tok[i]; j++, r++) {
				memcpy(q + r * qw, at(x->q, l, x->len,
						      t0[i] + j, NH), qw * 4);
				memcpy(k + r * kw, at(x->k, l, x->len,
						      t0[i] + j, NKV), kw * 4);
				memcpy(v + r * kw, at(x->v, l, x->len,
						      t0[i] + j, NKV), kw * 4);
			}
		}
		ck_assert_int_eq(kv->ops->layer(kv, b, l, &io, NULL), 0);
		/* decode: each sequence's one output row of this layer */
		for (int i = 0; dec && i < b->n_seq; i++) {
			float *d = dec + (size_t)b->seq[i] * t[0].steps * NL *
						 qw;

			memcpy(d + ((size_t)step * NL + l) * qw, o + i * qw,
			       qw * 4);
		}
	}
	ck_assert_int_eq(kv->ops->end(kv, b, NULL), 0);
	for (int i = 0; i < b->n_seq; i++)
		llm_kv_commit(kv, b->seq[i], b->n_tok[i]);
}

/*
 * Run @spec over traces @t[0] (sequence 0) and @t[1] (sequence 1) in one
 * cache, both in every step's batch (prefilled together, decoded
 * together), or only @t[@only] when @only >= 0; decode outputs into
 * @out[j] ([steps][NL][NH][HD]).
 */
static void drive_slots(const char *spec, const struct trace *t, int only,
			const float *alpha1, float **out,
			struct llm_kv_usage *u)
{
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };
	int maxlen = t[0].len > t[1].len ? t[0].len : t[1].len;
	size_t no = (size_t)t[0].steps * NL * NH * HD;
	float *buf = malloc((size_t)2 * maxlen * (2 * NH + 2 * NKV) * HD * 4);
	float *dec = malloc(2 * no * sizeof(float));
	int seq[2], nt[2], t0[2], n = 0;
	struct llm_batch b = { 0, seq, nt, NULL };
	struct llm_policy p;
	struct llm_kv *kv;
	char err[200];

	ck_assert(buf && dec);
	ck_assert(!llm_policy_parse(spec, &p, err, sizeof(err)));
	ck_assert_msg(!llm_kv_policy_create(&c, &p, 2, maxlen, 2, &kv, err,
					    sizeof(err)), "%s", err);
	if (alpha1)
		ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 1, alpha1[0],
							 alpha1[1]), 0);
	for (int j = 0; j < 2; j++)
		if (only < 0 || j == only)
			seq[n++] = j;
	b.n_seq = n;
	for (int i = 0; i < n; i++) {
		nt[i] = t[seq[i]].prompt;
		t0[i] = 0;
	}
	batch_step(kv, &b, t, t0, buf, NULL, 0);
	for (int s = 0; s < t[0].steps; s++) {
		for (int i = 0; i < n; i++) {
			nt[i] = 1;
			t0[i] = t[seq[i]].prompt + s;
		}
		batch_step(kv, &b, t, t0, buf, dec, s);
		ck_assert_msg(!llm_kv_policy_check(kv, err, sizeof(err)),
			      "%s step %d: %s", spec, s, err);
	}
	for (int i = 0; i < n; i++) {
		memcpy(out[seq[i]], dec + (size_t)seq[i] * no, no * 4);
		ck_assert_int_eq(llm_kv_policy_usage(kv, seq[i], &u[seq[i]]),
				 0);
	}
	llm_kv_destroy(kv);
	free(buf);
	free(dec);
}

/*
 * knorm and sinks with a prompt in chunks (llm_kv_set_prompt()): the
 * chunks are staged and the whole prompt normalized, classified and
 * stored at its last chunk, so every decode output and the tokens per tier
 * equal those of the whole prompt, bit for bit
 */
START_TEST(test_kvpolicy_chunks_knobs)
{
	static const char *const spec[] = {
		"diffkv:prune=0,quant=1,hadamard=1,knorm=1,sinks=4",
		"uniform:tier=k4v4,knorm=1",
	};
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };
	uint64_t seed = kvtest_seed(__func__);
	struct trace t[2];
	size_t no;
	float *buf, *dec[2];

	trace_make(&t[0], seed, 150, 20);
	for (size_t i = 0; i < (size_t)NL * t[0].len * NKV; i++)
		t[0].k[i * HD + 5] += 6.0f;
	t[1] = t[0];	/* batch_step() reads t[seq]: sequence 0 only */
	no = (size_t)t[0].steps * NL * NH * HD;
	buf = malloc((size_t)t[0].len * (2 * NH + 2 * NKV) * HD * 4);
	dec[0] = malloc(no * 4);
	dec[1] = malloc(no * 4);
	ck_assert(buf && dec[0] && dec[1]);
	for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
		struct llm_kv_usage u[2];

		for (int chunked = 0; chunked < 2; chunked++) {
			static const int cut[] = { 0, 40, 97, 150 };
			struct llm_policy p;
			struct llm_kv *kv;
			char err[200];
			int seq = 0, nt, t0;
			struct llm_batch b = { 1, &seq, &nt, NULL };

			ck_assert(!llm_policy_parse(spec[i], &p, err,
						    sizeof(err)));
			ck_assert_msg(!llm_kv_policy_create(&c, &p, 1,
							    t[0].len, 2, &kv,
							    err, sizeof(err)),
				      "%s", err);
			if (chunked) {
				ck_assert_int_eq(llm_kv_set_prompt(kv, 0,
								   150), 0);
				for (int k = 0; k < 3; k++) {
					nt = cut[k + 1] - cut[k];
					t0 = cut[k];
					batch_step(kv, &b, t, &t0, buf, NULL,
						   0);
				}
			} else {
				nt = 150;
				t0 = 0;
				batch_step(kv, &b, t, &t0, buf, NULL, 0);
			}
			for (int s = 0; s < t[0].steps; s++) {
				nt = 1;
				t0 = 150 + s;
				batch_step(kv, &b, t, &t0, buf, dec[chunked],
					   s);
			}
			ck_assert_int_eq(llm_kv_policy_usage(kv, 0,
							     &u[chunked]), 0);
			ck_assert_msg(!llm_kv_policy_check(kv, err,
							   sizeof(err)),
				      "%s: %s", spec[i], err);
			llm_kv_destroy(kv);
		}
		ck_assert_msg(!memcmp(dec[0], dec[1], no * 4), "%s: chunked "
			      "and whole prompts differ", spec[i]);
		ck_assert_uint_eq(u[0].tokens[0], u[1].tokens[0]);
		ck_assert_uint_eq(u[0].tokens[1], u[1].tokens[1]);
	}
	free(buf);
	free(dec[0]);
	free(dec[1]);
	trace_free(&t[0]);
}
END_TEST

/* two sequences of one cache in one batch, as each alone: bit for bit */
START_TEST(test_kvpolicy_slots)
{
	static const char *const specs[] = {
		"full", "uniform:tier=k4v4", "diffkv",
		"kvcompress:rate=2,interval=4,window=16",
	};
	uint64_t seed = kvtest_seed(__func__);
	struct trace t[2];
	size_t no;
	float *both[2], *alone[2];

	trace_make(&t[0], seed, 150, 24);
	trace_make(&t[1], seed + 1, 220, 24);
	no = (size_t)t[0].steps * NL * NH * HD;
	for (int j = 0; j < 2; j++) {
		both[j] = malloc(no * 4);
		alone[j] = malloc(no * 4);
		ck_assert(both[j] && alone[j]);
	}
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct llm_kv_usage ub[2], ua[2];

		drive_slots(specs[i], t, -1, NULL, both, ub);
		drive_slots(specs[i], t, 0, NULL, alone, ua);
		drive_slots(specs[i], t, 1, NULL, alone, ua);
		for (int j = 0; j < 2; j++) {
			ck_assert_msg(!memcmp(both[j], alone[j], no * 4),
				      "%s: slot %d differs when batched",
				      specs[i], j);
			ck_assert_msg(!memcmp(&ub[j], &ua[j], sizeof(ub[j])),
				      "%s: slot %d usage differs", specs[i],
				      j);
		}
	}
	for (int j = 0; j < 2; j++) {
		free(both[j]);
		free(alone[j]);
		trace_free(&t[j]);
	}
}
END_TEST

/*
 * per-sequence thresholds: slot 1 of a diffkv cache set to other alphas
 * is, bit for bit, slot 1 of a cache made with them; slot 0 keeps the
 * cache's
 */
START_TEST(test_kvpolicy_seq_alpha)
{
	static const float alpha[2] = { 0.5f, 2.0f };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };
	struct llm_kv_usage u[2], w[2];
	struct trace t[2];
	struct llm_policy p;
	struct llm_kv *kv;
	char err[200];
	size_t no;
	float *a[2], *b[2];

	trace_make(&t[0], seed, 180, 20);
	trace_make(&t[1], seed + 1, 200, 20);
	no = (size_t)t[0].steps * NL * NH * HD;
	for (int j = 0; j < 2; j++) {
		a[j] = malloc(no * 4);
		b[j] = malloc(no * 4);
		ck_assert(a[j] && b[j]);
	}
	drive_slots("diffkv", t, -1, alpha, a, u);
	drive_slots("diffkv:prune=0.5,quant=2", t, 1, NULL, b, w);
	ck_assert(!memcmp(a[1], b[1], no * 4));
	ck_assert(!memcmp(&u[1], &w[1], sizeof(u[1])));
	ck_assert_uint_gt(u[1].pruned, 0);
	drive_slots("diffkv", t, 0, NULL, b, w);
	ck_assert(!memcmp(a[0], b[0], no * 4));
	ck_assert(!memcmp(&u[0], &w[0], sizeof(u[0])));
	/* refusals: other policies, thresholds and slots out of range */
	llm_policy_default(LLM_POLICY_UNIFORM, &p);
	ck_assert(!llm_kv_policy_create(&c, &p, 2, 64, 1, &kv, err,
					sizeof(err)));
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 0, 0.1f, 1.0f), -EINVAL);
	llm_kv_destroy(kv);
	llm_policy_default(LLM_POLICY_DIFFKV, &p);
	ck_assert(!llm_kv_policy_create(&c, &p, 2, 64, 1, &kv, err,
					sizeof(err)));
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 2, 0.1f, 1.0f), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 0, 1.5f, 2.0f), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 0, 0.5f, 0.1f), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 0, NAN, 1.0f), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_seq_alpha(kv, 0, 0.0f, INFINITY),
			 -EINVAL);
	ck_assert_int_eq(llm_kv_policy_seq_alpha(NULL, 0, 0.0f, 1.0f),
			 -EINVAL);
	llm_kv_destroy(kv);
	for (int j = 0; j < 2; j++) {
		free(a[j]);
		free(b[j]);
		trace_free(&t[j]);
	}
}
END_TEST

START_TEST(test_kvpolicy_invalid)
{
	struct llm_config c = { 0 };
	struct llm_policy p;
	struct llm_kv *kv = NULL;
	char err[200] = "";
	float x[NH * HD] = { 0 };

	c.n_layers = NL;
	c.n_heads = NH;
	c.n_kv_heads = NKV;
	c.head_dim = 80;
	llm_policy_default(LLM_POLICY_DIFFKV, &p);
	ck_assert_int_eq(llm_kv_policy_create(&c, &p, 1, 64, 1, &kv, err,
					      sizeof(err)), -EINVAL);
	ck_assert(strstr(err, "head_dim"));
	c.head_dim = HD;
	ck_assert_int_eq(llm_kv_policy_create(&c, &p, 1, 64, 1, &kv, err,
					      sizeof(err)), 0);
	/* decode before prefill, a layer out of range, past max_tok */
	ck_assert_int_eq(llm_kv_policy_step(kv, 0, 0, 5, 1, x, 0, x, x, 0, x,
					    0), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_step(kv, 0, NL, 0, 1, x, 0, x, x, 0, x,
					    0), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_step(kv, 1, 0, 0, 1, x, 0, x, x, 0, x,
					    0), -EINVAL);
	ck_assert_int_eq(llm_kv_policy_step(kv, 0, 0, 0, 65, x, 0, x, x, 0, x,
					    0), -ENOSPC);
	ck_assert(!llm_kv_policy_check(kv, err, sizeof(err)));
	llm_kv_destroy(kv);
}
END_TEST

/*
 * kvcompress meets its rate after the prompt at every length: the pages
 * each list keeps are what the rate leaves, or the protected window's,
 * whichever is more, within one page per list (the eviction frees whole
 * pages of a list). Before, prompt tokens carried their score's origin as
 * position, all inside the window: nothing was evicted under ~300 tokens.
 */
START_TEST(test_kvpolicy_kvcompress_lengths)
{
	static const int lens[] = { 64, 100, 200, 294, 325, 512, 1024, 2048,
				    4096 };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_config c = { .n_layers = NL, .n_heads = NH,
				.n_kv_heads = NKV, .head_dim = HD };

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		const char *spec = "kvcompress:rate=2,window=32";
		int len = lens[i], lps = NL * NKV;
		struct llm_kv_usage u;
		struct llm_policy p;
		struct llm_kv *kv;
		struct trace t;
		char err[200];
		float *o = malloc((size_t)len * NH * HD * sizeof(float));
		uint64_t tpp, keep, want;

		ck_assert(o);
		trace_make(&t, seed + i, len, 1);
		ck_assert(!llm_policy_parse(spec, &p, err, sizeof(err)));
		ck_assert_msg(!llm_kv_policy_create(&c, &p, 1, t.len, 2, &kv,
						    err, sizeof(err)), "%s",
			      err);
		for (int l = 0; l < NL; l++)
			ck_assert_int_eq(llm_kv_policy_step(kv, 0, l, 0, len,
				at(t.q, l, t.len, 0, NH), NH * HD,
				at(t.k, l, t.len, 0, NKV),
				at(t.v, l, t.len, 0, NKV), NKV * HD, o,
				NH * HD), 0);
		ck_assert_int_eq(llm_kv_policy_usage(kv, 0, &u), 0);
		ck_assert_msg(!llm_kv_policy_check(kv, err, sizeof(err)),
			      "%d: %s", len, err);
		tpp = (len + u.full_pages / lps - 1) / (u.full_pages / lps);
		keep = (u.full_pages + 1) / 2;	/* rate 2 of full's pages */
		want = (uint64_t)lps * ((32 + tpp - 1) / tpp);
		want = keep > want ? keep : want;
		ck_assert_msg(u.pages[0] <= want + lps,
			      "length %d: %lu pages kept, rate and window "
			      "leave %lu (+%d)", len, u.pages[0], want, lps);
		ck_assert_uint_gt(u.pruned, 0);
		llm_kv_destroy(kv);
		trace_free(&t);
		free(o);
	}
}
END_TEST

Suite *suite_kvpolicy(void)
{
	Suite *s = suite_create("kvpolicy");
	TCase *tc = tcase_create("cache");

	KV_ADD(tc, test_kvpolicy_full_matches_reference);
	KV_ADD(tc, test_kvpolicy_equivalences);
	KV_ADD(tc, test_kvpolicy_compress);
	KV_ADD(tc, test_kvpolicy_topk);
	KV_ADD(tc, test_kvpolicy_hadamard);
	KV_ADD(tc, test_kvpolicy_sinks);
	KV_ADD(tc, test_chnorm_reference);
	KV_ADD(tc, test_kvpolicy_knorm);
	KV_ADD(tc, test_kvpolicy_chunks_knobs);
	KV_ADD(tc, test_kvpolicy_slots);
	KV_ADD(tc, test_kvpolicy_seq_alpha);
	KV_ADD(tc, test_kvpolicy_invalid);
	KV_ADD(tc, test_kvpolicy_kvcompress_lengths);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
