// SPDX-License-Identifier: MIT
/*
 * check_prefill.c - the prefill-attention reference against a naive
 * double-precision statement written here (outputs, lse, token scores) on
 * fresh random variable-length batches with GQA; the scores' sum property
 * (each of the last W rows gives probability 1 in total); the refusals.
 * The host caches' prefill attention (hprefill.h): its C reference against
 * a double-precision statement, its AVX2 path against the reference, both
 * on fresh random rows, and its refusals.
 */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "hprefill.h"
#include "prefill.h"
#include "kvtest.h"

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53);
}

struct pfc {
	struct kvk_prefill_args a;
	uint32_t *ss;
	float *qf, *kf, *vf; /* the inputs, as stored (rounded) */
	void *q, *k, *v, *out;
	float *lse, *scores;
	size_t total;
};

static void pfc_make(struct pfc *c, uint64_t *seed, uint32_t nseq, uint32_t nq,
		     uint32_t nkv, uint32_t hd, uint32_t maxlen,
		     enum kvk_dtype dt, uint32_t w)
{
	size_t nqe, nke;

	memset(c, 0, sizeof(*c));
	c->ss = calloc(nseq + 1, 4);
	for (uint32_t s = 0; s < nseq; s++) {
		c->ss[s] = (uint32_t)c->total;
		c->total += 1 + kvtest_rand(seed) % maxlen;
	}
	c->ss[nseq] = (uint32_t)c->total;
	nqe = c->total * nq * hd;
	nke = c->total * nkv * hd;
	c->qf = malloc(nqe * 4);
	c->kf = malloc(nke * 4);
	c->vf = malloc(nke * 4);
	for (size_t i = 0; i < nqe; i++)
		c->qf[i] = (frand(seed) * 2 - 1) * 2;
	for (size_t i = 0; i < nke; i++) {
		c->kf[i] = (frand(seed) * 2 - 1) * 2;
		c->vf[i] = frand(seed) * 2 - 1;
	}
	c->q = malloc(nqe * 2);
	c->k = malloc(nke * 2);
	c->v = malloc(nke * 2);
	c->out = malloc(nqe * 2);
	kvk_convert_from_f32(c->q, c->qf, nqe, dt);
	kvk_convert_from_f32(c->k, c->kf, nke, dt);
	kvk_convert_from_f32(c->v, c->vf, nke, dt);
	kvk_convert_to_f32(c->qf, c->q, nqe, dt);
	kvk_convert_to_f32(c->kf, c->k, nke, dt);
	kvk_convert_to_f32(c->vf, c->v, nke, dt);
	c->lse = malloc(c->total * nq * 4);
	c->scores = malloc(c->total * nkv * 4);
	memset(c->out, 0xff, nqe * 2);
	memset(c->lse, 0xff, c->total * nq * 4);
	memset(c->scores, 0xff, c->total * nkv * 4);
	c->a = (struct kvk_prefill_args){
		.nr_seqs = nseq,
		.nr_q_heads = nq,
		.nr_kv_heads = nkv,
		.head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd),
		.dtype = dt,
		.q = c->q,
		.k = c->k,
		.v = c->v,
		.seq_start = c->ss,
		.max_len = maxlen,
		.out = c->out,
		.lse = c->lse,
		.scores = c->scores,
		.score_window = w,
	};
}

static void pfc_free(struct pfc *c)
{
	free(c->ss);
	free(c->qf);
	free(c->kf);
	free(c->vf);
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->out);
	free(c->lse);
	free(c->scores);
}

/*
 * The naive statement, in double: for every (sequence, head, row) the
 * softmax over the row's keys, the output, the lse, and the scores.
 */
static void naive(const struct pfc *c, double *out, double *lse, double *scores)
{
	const struct kvk_prefill_args *a = &c->a;
	uint32_t nq = a->nr_q_heads, nkv = a->nr_kv_heads, hd = a->head_dim;
	uint32_t group = nq / nkv;
	bool sq = a->score_mode == KVK_ATTN_SCORE_SUMSQ;
	double *p = malloc(a->max_len * sizeof(*p));
	double *sum = malloc(a->max_len * sizeof(*sum));

	for (size_t i = 0; i < c->total * nkv; i++)
		scores[i] = 0;
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		uint32_t b = c->ss[s], len = c->ss[s + 1] - b;

		for (uint32_t h = 0; h < nq; h++) {
			uint32_t kvh = h / group;

			for (uint32_t t = 0; t < len; t++)
				sum[t] = 0;
			for (uint32_t i = 0; i < len; i++) {
				const float *q =
					c->qf + ((size_t)(b + i) * nq + h) * hd;
				double mx = -INFINITY, z = 0;

				for (uint32_t j = 0; j <= i; j++) {
					const float *k =
						c->kf + ((size_t)(b + j) * nkv +
							 kvh) * hd;
					double d = 0;

					for (uint32_t e = 0; e < hd; e++)
						d += (double)q[e] * k[e];
					p[j] = d * a->scale;
					mx = fmax(mx, p[j]);
				}
				for (uint32_t j = 0; j <= i; j++) {
					p[j] = exp(p[j] - mx);
					z += p[j];
				}
				for (uint32_t e = 0; e < hd; e++) {
					double o = 0;

					for (uint32_t j = 0; j <= i; j++)
						o += p[j] *
						     c->vf[((size_t)(b + j) *
								    nkv +
							    kvh) * hd +
							   e];
					out[((size_t)(b + i) * nq + h) * hd +
					    e] = o / z;
				}
				lse[(size_t)(b + i) * nq + h] = mx + log(z);
				if (i + a->score_window >= len)
					for (uint32_t j = 0; j <= i; j++)
						sum[j] += sq ? (p[j] / z) *
								       (p[j] / z)
							     : p[j] / z;
			}
			for (uint32_t t = 0; t < len; t++) {
				double *d =
					&scores[(size_t)(b + t) * nkv + kvh];

				*d = sq ? *d + sum[t] : fmax(*d, sum[t]);
			}
		}
	}
	free(p);
	free(sum);
}

START_TEST(test_prefill_ref)
{
	uint64_t seed = kvtest_seed("prefill_ref");

	for (int it = 0; it < 12; it++) {
		static const uint32_t groups[] = {1, 2, 4, 8};
		uint32_t nkv = 1 + kvtest_rand(&seed) % 2;
		uint32_t nq = nkv * groups[kvtest_rand(&seed) % 4];
		uint32_t hd = it % 2 ? 128 : 64;
		enum kvk_dtype dt = it % 3 ? KVK_F16 : KVK_BF16;
		uint32_t w = 1 + kvtest_rand(&seed) % 80;
		struct pfc c;
		size_t no;
		double *out, *lse, *sc, e2 = 0, n2 = 0;
		float *got;
		double bound = dt == KVK_F16 ? 1e-3 : 8e-3;

		pfc_make(&c, &seed, 1 + kvtest_rand(&seed) % 3, nq, nkv, hd, 90,
			 dt, w);
		/* every third case: KV-Compress's sum of squares */
		c.a.score_mode = it % 3 == 1 ? KVK_ATTN_SCORE_SUMSQ : 0;
		no = c.total * nq * hd;
		out = malloc(no * 8);
		lse = malloc(c.total * nq * 8);
		sc = malloc(c.total * nkv * 8);
		got = malloc(no * 4);
		ck_assert_int_eq(kvk_prefill_cpu(&c.a, NULL), 0);
		naive(&c, out, lse, sc);
		kvk_convert_to_f32(got, c.out, no, dt);
		for (size_t i = 0; i < no; i++) {
			ck_assert_msg(isfinite(got[i]), "out[%zu] not written",
				      i);
			e2 += (got[i] - out[i]) * (got[i] - out[i]);
			n2 += out[i] * out[i];
		}
		ck_assert_msg(sqrt(e2 / n2) < bound, "%s hd %u: error %g",
			      kvk_dtype_name(dt), hd, sqrt(e2 / n2));
		for (size_t i = 0; i < c.total * nq; i++)
			ck_assert_msg(fabs(c.lse[i] - lse[i]) <
					      1e-4 * (1 + fabs(lse[i])),
				      "lse[%zu] %g want %g", i, c.lse[i],
				      lse[i]);
		for (size_t i = 0; i < c.total * nkv; i++)
			ck_assert_msg(
				fabs(c.scores[i] - sc[i]) < 1e-4 * (1 + sc[i]),
				"score[%zu] %g want %g", i, c.scores[i], sc[i]);
		/* one kv-head, one query head: the scores sum to min(W, len) */
		if (nq == 1 && !c.a.score_mode)
			for (uint32_t s = 0; s < c.a.nr_seqs; s++) {
				uint32_t len = c.ss[s + 1] - c.ss[s];
				double t = 0;

				for (uint32_t j = 0; j < len; j++)
					t += c.scores[c.ss[s] + j];
				ck_assert(fabs(t - (len < w ? len : w)) <
					  1e-3 * w);
			}
		free(out);
		free(lse);
		free(sc);
		free(got);
		pfc_free(&c);
	}
}
END_TEST

START_TEST(test_prefill_einval)
{
	uint64_t seed = kvtest_seed("prefill_einval");
	struct pfc c;
	struct kvk_prefill_args a;

	pfc_make(&c, &seed, 1, 4, 2, 64, 10, KVK_F16, 4);
	a = c.a;
	a.head_dim = 96;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.nr_q_heads = 3;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.dtype = KVK_F32;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.lse = NULL;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.score_window = 0;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.score_mode = 3;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.scale = NAN;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	a = c.a;
	a.q = NULL;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), -EINVAL);
	ck_assert_int_eq(kvk_prefill_check(NULL), -EINVAL);
	/* without lse and scores, only out is written */
	a = c.a;
	a.lse = NULL;
	a.scores = NULL;
	ck_assert_int_eq(kvk_prefill_cpu(&a, NULL), 0);
	ck_assert_uint_eq(*(uint32_t *)c.lse, 0xffffffffu);
	pfc_free(&c);
}
END_TEST

/* struct hpc - a random host prefill case and its buffers */
struct hpc {
	struct kvk_hprefill_args a;
	float *q, *k, *v, *o, *acc, *p, *acc0;
	uint32_t L;	/* keys: off + n */
};

static void hpc_make(struct hpc *c, uint64_t *seed, uint32_t hd, uint32_t n,
		     uint32_t off, float qmag)
{
	size_t ldq = hd + 8 * (kvtest_rand(seed) % 3);
	size_t ldk = hd + 8 * (kvtest_rand(seed) % 3);
	size_t ldo = hd + 8 * (kvtest_rand(seed) % 2);

	memset(c, 0, sizeof(*c));
	c->L = off + n;
	c->q = malloc(n * ldq * 4);
	c->k = malloc(c->L * ldk * 4);
	c->v = malloc(c->L * ldk * 4);
	c->o = malloc(n * ldo * 4);
	c->acc = malloc(c->L * 4);
	c->acc0 = malloc(c->L * 4);
	c->p = malloc((size_t)KVK_HPREFILL_ROWS * c->L * 4);
	for (size_t i = 0; i < n * ldq; i++)
		c->q[i] = (frand(seed) * 2 - 1) * qmag;
	for (size_t i = 0; i < c->L * ldk; i++) {
		c->k[i] = frand(seed) * 2 - 1;
		c->v[i] = frand(seed) * 2 - 1;
	}
	for (size_t i = 0; i < n * ldo; i++)
		c->o[i] = NAN;	/* every element must be written */
	for (uint32_t j = 0; j < c->L; j++)
		c->acc[j] = c->acc0[j] = frand(seed);	/* added to */
	c->a = (struct kvk_hprefill_args){
		.q = c->q, .k = c->k, .v = c->v, .o = c->o, .acc = c->acc,
		.p = c->p, .ldq = ldq, .ldk = ldk, .ldo = ldo, .hd = hd,
		.n = n, .off = off,
		.first = (uint32_t)(kvtest_rand(seed) % (c->L + 1)),
		.scale = 1.0f / sqrtf((float)hd),
		.sumsq = (int)(kvtest_rand(seed) % 2),
	};
}

static void hpc_free(struct hpc *c)
{
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->o);
	free(c->acc);
	free(c->acc0);
	free(c->p);
}

/* the host prefill attention in double precision: out[n][hd], sc[L] */
static void hp_naive(const struct hpc *c, double *out, double *sc)
{
	const struct kvk_hprefill_args *a = &c->a;
	double *s = malloc(c->L * sizeof(*s));

	for (uint32_t j = 0; j < c->L; j++)
		sc[j] = c->acc0[j];
	for (uint32_t t = 0; t < a->n; t++) {
		uint32_t pos = a->off + t;
		double m = -INFINITY, sum = 0;

		for (uint32_t j = 0; j <= pos; j++) {
			double d = 0;

			for (uint32_t e = 0; e < a->hd; e++)
				d += (double)a->q[t * a->ldq + e] *
				     a->k[(size_t)j * a->ldk + e];
			s[j] = d * a->scale;
			m = fmax(m, s[j]);
		}
		for (uint32_t j = 0; j <= pos; j++)
			sum += s[j] = exp(s[j] - m);
		for (uint32_t e = 0; e < a->hd; e++) {
			double o = 0;

			for (uint32_t j = 0; j <= pos; j++)
				o += s[j] / sum * a->v[(size_t)j * a->ldk + e];
			out[(size_t)t * a->hd + e] = o;
		}
		if (pos >= a->first)
			for (uint32_t j = 0; j <= pos; j++)
				sc[j] += a->sumsq ? (s[j] / sum) * (s[j] / sum)
						  : s[j] / sum;
	}
	free(s);
}

/*
 * @c's outputs and scores against @want, @wsc: within @tol per element
 * (outputs: |v| <= 1), scores within @tol (1 + score)
 */
static void hp_compare(const struct hpc *c, const double *want,
		       const double *wsc, double tol, const char *what)
{
	const struct kvk_hprefill_args *a = &c->a;

	for (uint32_t t = 0; t < a->n; t++)
		for (uint32_t e = 0; e < a->hd; e++) {
			double g = c->o[(size_t)t * a->ldo + e];
			double w = want[(size_t)t * a->hd + e];

			ck_assert_msg(fabs(g - w) <= tol,
				      "%s hd %u n %u off %u: o[%u][%u] %.9g "
				      "want %.9g (tol %g)", what, a->hd, a->n,
				      a->off, t, e, g, w, tol);
		}
	for (uint32_t j = 0; j < c->L; j++)
		ck_assert_msg(fabs(c->acc[j] - wsc[j]) <= tol * (1 + wsc[j]),
			      "%s hd %u n %u off %u first %u sumsq %d: "
			      "acc[%u] %.9g want %.9g", what, a->hd, a->n,
			      a->off, a->first, a->sumsq, j, c->acc[j],
			      wsc[j]);
}

static const uint32_t hp_hds[] = { 8, 24, 64, 128, 256 };

/*
 * The reference against double precision. Each output is a convex
 * combination of values |v| <= 1 and each score a sum of at most n
 * probabilities: fp32 sums of up to L terms are within L eps of exact (eps
 * = 2^-24 rounding each add), the logits within hd eps |q||k| scale, which
 * exp carries into relative errors of p of the same size; 4 L eps covers
 * both with room, and a token wrongly masked in or out (p of order 1 / L)
 * is far above it at these lengths.
 */
START_TEST(test_hprefill_ref)
{
	uint64_t seed = kvtest_seed("hprefill_ref");

	for (int it = 0; it < 20; it++) {
		uint32_t hd = hp_hds[it % 5];
		uint32_t n = 1 + kvtest_rand(&seed) % 40;
		uint32_t off = it % 3 ? kvtest_rand(&seed) % 120 : 0;
		float qmag = it % 4 == 3 ? 24.0f : 2.0f;
		struct hpc c;
		double *want, *wsc;

		hpc_make(&c, &seed, hd, n, off, qmag);
		want = malloc((size_t)n * hd * sizeof(*want));
		wsc = malloc(c.L * sizeof(*wsc));
		hp_naive(&c, want, wsc);
		ck_assert_int_eq(kvk_hprefill_run(&c.a, KVK_HPREFILL_C), 0);
		hp_compare(&c, want, wsc, 4.0 * c.L * 0x1p-24 + 1e-6, "ref");
		free(want);
		free(wsc);
		hpc_free(&c);
	}
}
END_TEST

/*
 * The AVX2 path against the reference on the same inputs: both are fp32
 * within the bound above of exact (the vector exp within 2 ulp of expf,
 * inside it), so within twice it of each other; lengths from 1 to 300
 * keys cross the 8-row blocks, the 2-key pairs, the 64-key blocks of V and
 * the 16-column tiles (hd 8 and 24 take the 8-column tail). Large query
 * magnitudes make the softmax peak and take exp down to its clamp.
 */
START_TEST(test_hprefill_avx2)
{
	uint64_t seed = kvtest_seed("hprefill_avx2");

	if (kvk_hprefill_isa() != KVK_HPREFILL_AVX2) {
		kvtest_skip(__func__, "this CPU has no AVX2 + FMA (or "
			    "KVMM_HPREFILL_ISA=c)");
		return;
	}
	for (int it = 0; it < 40; it++) {
		uint32_t hd = hp_hds[it % 5];
		uint32_t n = 1 + kvtest_rand(&seed) % (it < 30 ? 40 : 180);
		uint32_t off = it % 3 ? kvtest_rand(&seed) % 120 : 0;
		float qmag = it % 4 == 3 ? 24.0f : 2.0f;
		struct hpc c;
		double *want, *wsc;

		hpc_make(&c, &seed, hd, n, off, qmag);
		want = malloc((size_t)n * hd * sizeof(*want));
		wsc = malloc(c.L * sizeof(*wsc));
		ck_assert_int_eq(kvk_hprefill_run(&c.a, KVK_HPREFILL_C), 0);
		for (uint32_t t = 0; t < n; t++)
			for (uint32_t e = 0; e < hd; e++)
				want[(size_t)t * hd + e] =
					c.o[(size_t)t * c.a.ldo + e];
		for (uint32_t j = 0; j < c.L; j++)
			wsc[j] = c.acc[j];
		/* the AVX2 path named, then through the dispatch */
		for (int k = 0; k < 2; k++) {
			for (size_t i = 0; i < n * c.a.ldo; i++)
				c.o[i] = NAN;
			memcpy(c.acc, c.acc0, c.L * sizeof(float));
			ck_assert_int_eq(k ? kvk_hprefill(&c.a) :
					 kvk_hprefill_run(&c.a,
							  KVK_HPREFILL_AVX2),
					 0);
			hp_compare(&c, want, wsc, 8.0 * c.L * 0x1p-24 + 1e-6,
				   "avx2");
		}
		free(want);
		free(wsc);
		hpc_free(&c);
	}
}
END_TEST

START_TEST(test_hprefill_einval)
{
	uint64_t seed = kvtest_seed("hprefill_einval");
	struct kvk_hprefill_args a;
	struct hpc c;

	hpc_make(&c, &seed, 64, 5, 3, 2.0f);
	for (int isa = KVK_HPREFILL_C; isa <= kvk_hprefill_isa(); isa++) {
		a = c.a;
		a.hd = 60;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		a = c.a;
		a.hd = 264;
		a.ldq = a.ldk = a.ldo = 264;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		a = c.a;
		a.ldk = 32;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		a = c.a;
		a.scale = INFINITY;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		a = c.a;
		a.p = NULL;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		a = c.a;
		a.off = UINT32_MAX;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), -EINVAL);
		/* nothing written on a refusal */
		for (size_t i = 0; i < 5 * c.a.ldo; i++)
			ck_assert(isnan(c.o[i]));
		a = c.a;
		a.n = 0;	/* nothing to do */
		a.q = NULL;
		ck_assert_int_eq(kvk_hprefill_run(&a, isa), 0);
	}
	ck_assert_int_eq(kvk_hprefill_run(&c.a, 7), -EINVAL);
	ck_assert_int_eq(kvk_hprefill(NULL), -EINVAL);
	hpc_free(&c);
}
END_TEST

Suite *suite_prefill(void)
{
	Suite *s = suite_create("prefill");
	TCase *tc = tcase_create("cpu");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_prefill_ref);
	KV_ADD(tc, test_prefill_einval);
	KV_ADD(tc, test_hprefill_ref);
	KV_ADD(tc, test_hprefill_avx2);
	KV_ADD(tc, test_hprefill_einval);
	suite_add_tcase(s, tc);
	return s;
}
