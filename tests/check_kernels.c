// SPDX-License-Identifier: MIT
/*
 * check_kernels.c - the CPU references of kernels/kvk.h against naive
 * double-precision formulas written here, on fresh random inputs (the seed
 * is printed; KVMM_SEED replays it), plus edge cases and bad arguments.
 * The CUDA kernels are checked against these references by
 * check_kernels_gpu.c.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvk.h"
#include "kvk_internal.h"
#include "kvmm_base.h"
#include "kvtest.h"

static const enum kvk_dtype all_dt[] = {KVK_F32, KVK_F16, KVK_BF16};

/* uniform in [-1, 1) */
static float rnd(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* a buffer of n elements of dt holding random values in [-scale, scale) */
static void *rnd_buf(uint64_t *s, size_t n, float scale, enum kvk_dtype dt)
{
	float *f = malloc(n * sizeof(float));
	void *b = malloc(n * kvk_dtype_size(dt) + 1);

	ck_assert(f && b);
	for (size_t i = 0; i < n; i++)
		f[i] = rnd(s) * scale;
	kvk_convert_from_f32(b, f, n, dt);
	free(f);
	return b;
}

static double ld(const void *p, size_t i, enum kvk_dtype dt)
{
	return kvk_ld(p, i, dt);
}

/*
 * ||out - ref|| / ||ref||, with the first few elements that differ by more
 * than bound relative to the row's scale printed
 */
static double norm_err(const void *out, enum kvk_dtype dt, const double *ref,
		       size_t n, double bound, const char *what)
{
	double num = 0, den = 0;
	int shown = 0;

	for (size_t i = 0; i < n; i++) {
		double o = ld(out, i, dt), d = o - ref[i];

		if (o != o && shown < 5) {
			printf("# %s: [%zu] NaN, ref %g\n", what, i, ref[i]);
			shown++;
		}
		num += d * d;
		den += ref[i] * ref[i];
	}
	num = den > 0 ? sqrt(num / den) : sqrt(num);
	if (!(num <= bound))
		for (size_t i = 0; i < n && shown < 5; i++) {
			double o = ld(out, i, dt);

			if (fabs(o - ref[i]) > bound * (fabs(ref[i]) + 1e-3)) {
				printf("# %s: [%zu] got %.9g want %.9g\n", what,
				       i, o, ref[i]);
				shown++;
			}
		}
	return num;
}

/* the normalised error bound for results rounded to dt */
static double bound_of(enum kvk_dtype dt)
{
	return dt == KVK_F32 ? 1e-6 : dt == KVK_F16 ? 1e-3 : 8e-3;
}

/* ---- conversions ---- */

/* round x to a binary format with m mantissa bits and minimum exponent emin */
static double ref_round(double x, int m, int emin, double max)
{
	double a = fabs(x), ulp, v;
	int e;

	if (a == 0)
		return x;
	e = (int)floor(log2(a));
	if (e < emin)
		e = emin;
	ulp = ldexp(1.0, e - m);
	v = nearbyint(a / ulp) * ulp; /* ties to even in the default mode */
	if (v > max)
		v = INFINITY;
	return x < 0 ? -v : v;
}

START_TEST(test_f16_exhaustive)
{
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = kvk_f16_to_f32(h);
		float b = kvk_bf16_to_f32(h);

		if (isnan(f))
			ck_assert(isnan(kvk_f16_to_f32(kvk_f32_to_f16(f))));
		else
			ck_assert_uint_eq(kvk_f32_to_f16(f), h);
		if (isnan(b))
			ck_assert(isnan(kvk_bf16_to_f32(kvk_f32_to_bf16(b))));
		else
			ck_assert_uint_eq(kvk_f32_to_bf16(b), h);
	}
	/* known points */
	ck_assert_float_eq(kvk_f16_to_f32(0x3c00), 1.0f);
	ck_assert_float_eq(kvk_f16_to_f32(0x7bff), 65504.0f);
	ck_assert_float_eq(kvk_f16_to_f32(0x0001), 0x1p-24f);
	ck_assert_uint_eq(kvk_f32_to_f16(65519.0f), 0x7bff);
	ck_assert_uint_eq(kvk_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(kvk_f32_to_f16(0x1p-25f), 0x0000); /* tie to even */
	ck_assert_uint_eq(kvk_f32_to_f16(0x1.8p-24f), 0x0002);
	ck_assert_uint_eq(kvk_f32_to_f16(-0.0f), 0x8000);
	ck_assert_uint_eq(kvk_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	ck_assert_uint_eq(kvk_f32_to_f16(1.0f + 0x1.8p-10f), 0x3c02);
	ck_assert_uint_eq(kvk_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
	ck_assert_uint_eq(kvk_f32_to_bf16(1.0f + 0x1.8p-7f), 0x3f82);
	ck_assert(isnan(kvk_f16_to_f32(kvk_f32_to_f16(NAN))));
	ck_assert(isnan(kvk_bf16_to_f32(kvk_f32_to_bf16(NAN))));
}
END_TEST

START_TEST(test_f16_rounding_random)
{
	uint64_t seed = kvtest_seed("f16_rounding_random");

	for (int i = 0; i < 300000; i++) {
		uint32_t bits = (uint32_t)kvtest_rand(&seed);
		float f;
		double rh, rb;

		/* exponents around the half range, and anywhere */
		if (i % 2)
			bits = (bits & 0x807fffff) |
			       ((uint32_t)(97 + (bits >> 23) % 50) << 23);
		memcpy(&f, &bits, 4);
		if (isnan(f) || isinf(f))
			continue;
		rh = ref_round(f, 10, -14, 65504.0);
		rb = ref_round(f, 7, -126, 0x1.fep127);
		ck_assert_msg(kvk_f16_to_f32(kvk_f32_to_f16(f)) == rh,
			      "f16(%a) = %a, want %a", f,
			      kvk_f16_to_f32(kvk_f32_to_f16(f)), rh);
		ck_assert_msg(kvk_bf16_to_f32(kvk_f32_to_bf16(f)) == rb,
			      "bf16(%a) = %a, want %a", f,
			      kvk_bf16_to_f32(kvk_f32_to_bf16(f)), rb);
	}
}
END_TEST

START_TEST(test_rand_uniform)
{
	double sum = 0;

	for (uint64_t c = 0; c < 100000; c++) {
		float u = kvk_rand_uniform(42, c);

		ck_assert(u >= 0.0f && u < 1.0f);
		ck_assert_float_eq(u, kvk_rand_uniform(42, c));
		sum += u;
	}
	ck_assert(fabs(sum / 100000 - 0.5) < 0.01);
	ck_assert(kvk_rand_uniform(1, 0) != kvk_rand_uniform(2, 0));
}
END_TEST

/* ---- RMSNorm, SiLU-mul, add, embedding ---- */

START_TEST(test_rmsnorm_ref)
{
	static const int dims[] = {1, 7, 64, 4096, 5120};
	uint64_t seed = kvtest_seed("rmsnorm_ref");

	for (size_t d = 0; d < ARRAY_SIZE(dims); d++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			int rows = 1 + kvtest_rand(&seed) % 9, dim = dims[d];
			size_t n = (size_t)rows * dim, es = kvk_dtype_size(dt);
			float eps = d % 2 ? 1e-5f : 1e-6f;
			void *x = rnd_buf(&seed, n, 3.0f, dt);
			void *w = rnd_buf(&seed, dim, 2.0f, dt);
			void *out = malloc(n * es), *in = malloc(n * es);
			double *ref = malloc(n * sizeof(double)), e;
			char what[64];

			for (int r = 0; r < rows; r++) {
				double ss = 0, inv;

				for (int j = 0; j < dim; j++)
					ss += ld(x, (size_t)r * dim + j, dt) *
					      ld(x, (size_t)r * dim + j, dt);
				inv = 1.0 / sqrt(ss / dim + eps);
				for (int j = 0; j < dim; j++)
					ref[(size_t)r * dim + j] =
						ld(x, (size_t)r * dim + j, dt) *
						inv * ld(w, j, dt);
			}
			ck_assert_int_eq(kvk_rmsnorm_cpu(out, x, w, rows, dim,
							 eps, dt, NULL),
					 0);
			snprintf(what, sizeof(what), "rmsnorm %s %dx%d",
				 kvk_dtype_name(dt), rows, dim);
			e = norm_err(out, dt, ref, n, bound_of(dt), what);
			ck_assert_msg(e <= bound_of(dt), "%s: error %g", what,
				      e);
			/* in place gives the same bits */
			memcpy(in, x, n * es);
			ck_assert_int_eq(kvk_rmsnorm_cpu(in, in, w, rows, dim,
							 eps, dt, NULL),
					 0);
			ck_assert(!memcmp(in, out, n * es));
			free(x), free(w), free(out), free(in), free(ref);
		}
}
END_TEST

START_TEST(test_rmsnorm_zero_row)
{
	float x[8] = {0}, w[8], out[8];

	for (int i = 0; i < 8; i++)
		w[i] = 1.0f;
	ck_assert_int_eq(kvk_rmsnorm_cpu(out, x, w, 1, 8, 1e-5f, KVK_F32, NULL),
			 0);
	for (int i = 0; i < 8; i++)
		ck_assert_float_eq(out[i], 0.0f);
	/* eps 0 on a zero row is 0 * inf: NaN, as the formula says */
	ck_assert_int_eq(kvk_rmsnorm_cpu(out, x, w, 1, 8, 0.0f, KVK_F32, NULL),
			 0);
	ck_assert(isnan(out[0]));
}
END_TEST

START_TEST(test_elementwise_ref)
{
	uint64_t seed = kvtest_seed("elementwise_ref");

	for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
		enum kvk_dtype dt = all_dt[t];
		size_t n = 1 + kvtest_rand(&seed) % 100000;
		size_t es = kvk_dtype_size(dt);
		void *a = rnd_buf(&seed, n, 12.0f, dt);
		void *b = rnd_buf(&seed, n, 4.0f, dt);
		void *out = malloc(n * es), *in = malloc(n * es);
		double *ref = malloc(n * sizeof(double)), e;
		char what[64];

		for (size_t i = 0; i < n; i++) {
			double g = ld(a, i, dt);

			ref[i] = g / (1.0 + exp(-g)) * ld(b, i, dt);
		}
		ck_assert_int_eq(kvk_silu_mul_cpu(out, a, b, n, dt, NULL), 0);
		snprintf(what, sizeof(what), "silu_mul %s n %zu",
			 kvk_dtype_name(dt), n);
		e = norm_err(out, dt, ref, n, bound_of(dt), what);
		ck_assert_msg(e <= bound_of(dt), "%s: error %g", what, e);
		memcpy(in, a, n * es);
		ck_assert_int_eq(kvk_silu_mul_cpu(in, in, b, n, dt, NULL), 0);
		ck_assert(!memcmp(in, out, n * es));

		for (size_t i = 0; i < n; i++)
			ref[i] = ld(a, i, dt) + ld(b, i, dt);
		ck_assert_int_eq(kvk_add_cpu(out, a, b, n, dt, NULL), 0);
		snprintf(what, sizeof(what), "add %s n %zu", kvk_dtype_name(dt),
			 n);
		e = norm_err(out, dt, ref, n, bound_of(dt), what);
		ck_assert_msg(e <= bound_of(dt), "%s: error %g", what, e);
		memcpy(in, b, n * es);
		ck_assert_int_eq(kvk_add_cpu(in, a, in, n, dt, NULL), 0);
		ck_assert(!memcmp(in, out, n * es));
		free(a), free(b), free(out), free(in), free(ref);
	}
	/* silu at the extremes: no NaN */
	{
		float g[2] = {-200.0f, 200.0f};
		float u[2] = {1, 1}, o[2];

		ck_assert_int_eq(kvk_silu_mul_cpu(o, g, u, 2, KVK_F32, NULL),
				 0);
		ck_assert(o[0] == 0.0f && o[1] == 200.0f);
	}
}
END_TEST

START_TEST(test_embed_ref)
{
	uint64_t seed = kvtest_seed("embed_ref");

	for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
		enum kvk_dtype dt = all_dt[t];
		int vocab = 1 + kvtest_rand(&seed) % 1000;
		int dim = 1 + kvtest_rand(&seed) % 300, ntok = 64;
		size_t es = kvk_dtype_size(dt), row = (size_t)dim * es;
		void *table = rnd_buf(&seed, (size_t)vocab * dim, 1.0f, dt);
		char *out = malloc(ntok * row);
		int32_t ids[64];

		for (int i = 0; i < ntok; i++)
			ids[i] = (int32_t)(kvtest_rand(&seed) % vocab);
		ids[3] = -1;
		ids[5] = vocab;
		ids[7] = vocab - 1;
		memset(out, 0x5a, ntok * row);
		ck_assert_int_eq(kvk_embed_cpu(out, table, ids, ntok, dim,
					       vocab, dt, NULL),
				 0);
		for (int i = 0; i < ntok; i++) {
			if (ids[i] < 0 || ids[i] >= vocab) {
				for (size_t b = 0; b < row; b++)
					ck_assert_int_eq(out[i * row + b], 0);
				continue;
			}
			ck_assert(!memcmp(out + i * row,
					  (char *)table + ids[i] * row, row));
		}
		free(table), free(out);
	}
}
END_TEST

/* ---- RoPE ---- */

/* HF _compute_llama3_parameters, written again here in double */
static double ref_inv_freq(int i, int hd, const struct kvk_rope_cfg *c)
{
	double f = 1.0 / pow(c->theta, (double)(2 * i) / hd);
	double lw, hw, wl, sm;

	if (c->factor == 0.0f)
		return f;
	lw = c->orig_max_pos / c->low_freq_factor;
	hw = c->orig_max_pos / c->high_freq_factor;
	wl = 2 * M_PI / f;
	if (wl < hw)
		return f;
	if (wl > lw)
		return f / c->factor;
	sm = (c->orig_max_pos / wl - c->low_freq_factor) /
	     (c->high_freq_factor - c->low_freq_factor);
	return (1 - sm) * f / c->factor + sm * f;
}

static const struct kvk_rope_cfg llama31 = {500000.0f, 8.0f, 1.0f, 4.0f, 8192};
static const struct kvk_rope_cfg llama2 = {10000.0f, 0, 0, 0, 0};

START_TEST(test_rope_inv_freq)
{
	float inv[KVK_ROPE_MAX_HEAD_DIM / 2];
	int lo = 0, mid = 0, hi = 0;

	for (int hd = 64; hd <= 256; hd *= 2) {
		ck_assert_int_eq(kvk_rope_inv_freq(inv, hd, &llama2), 0);
		for (int i = 0; i < hd / 2; i++)
			ck_assert(fabs(inv[i] - ref_inv_freq(i, hd, &llama2)) <=
				  1e-7 * ref_inv_freq(i, hd, &llama2));
		ck_assert_int_eq(kvk_rope_inv_freq(inv, hd, &llama31), 0);
		for (int i = 0; i < hd / 2; i++) {
			double r = ref_inv_freq(i, hd, &llama31);
			double plain = pow(500000.0, -2.0 * i / hd);

			ck_assert(fabs(inv[i] - r) <= 1e-7 * r);
			/* every frequency is in its band */
			ck_assert(r <= plain * (1 + 1e-12) &&
				  r >= plain / 8 * (1 - 1e-12));
			lo += fabs(r - plain / 8) < 1e-12 * plain;
			hi += fabs(r - plain) < 1e-12 * plain;
			mid += r < plain * (1 - 1e-9) &&
			       r > plain / 8 * (1 + 1e-9);
		}
	}
	/* Llama 3.1 at head_dim 128: all three bands occur */
	ck_assert(lo > 0 && mid > 0 && hi > 0);
	ck_assert_float_eq(inv[0], 1.0f);
}
END_TEST

START_TEST(test_rope_ref)
{
	static const int hds[] = {64, 128, 256};
	uint64_t seed = kvtest_seed("rope_ref");

	for (size_t h = 0; h < ARRAY_SIZE(hds); h++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			const struct kvk_rope_cfg *cfg =
				t % 2 ? &llama2 : &llama31;
			int hd = hds[h], half = hd / 2, nq = 8, nkv = 2;
			int ntok = 1 + kvtest_rand(&seed) % 20;
			size_t nqe = (size_t)ntok * nq * hd;
			size_t nke = (size_t)ntok * nkv * hd;
			size_t es = kvk_dtype_size(dt);
			void *q = rnd_buf(&seed, nqe, 2.0f, dt);
			void *k = rnd_buf(&seed, nke, 2.0f, dt);
			void *q0 = malloc(nqe * es), *k0 = malloc(nke * es);
			double *rq = malloc(nqe * 8), *rk = malloc(nke * 8), e;
			int32_t pos[20];
			char what[64];

			memcpy(q0, q, nqe * es);
			memcpy(k0, k, nke * es);
			for (int i = 0; i < ntok; i++)
				pos[i] = i == 0 ? 0
						: kvtest_rand(&seed) % 131072;
			for (int tk = 0; tk < ntok; tk++)
				for (int hh = 0; hh < nq + nkv; hh++) {
					int isq = hh < nq;
					void *src = isq ? q0 : k0;
					double *dst = isq ? rq : rk;
					size_t o =
						((size_t)tk * (isq ? nq : nkv) +
						 (isq ? hh : hh - nq)) *
						hd;

					for (int i = 0; i < half; i++) {
						float inv = (float)ref_inv_freq(
							i, hd, cfg);
						double a = (float)pos[tk] * inv;
						double x0 = ld(src, o + i, dt);
						double x1 = ld(
							src, o + i + half, dt);

						dst[o + i] = x0 * cos(a) -
							     x1 * sin(a);
						dst[o + i + half] =
							x1 * cos(a) +
							x0 * sin(a);
					}
				}
			ck_assert_int_eq(kvk_rope_cpu(q, k, pos, ntok, nq, nkv,
						      hd, cfg, dt, NULL),
					 0);
			snprintf(what, sizeof(what), "rope %s hd %d ntok %d",
				 kvk_dtype_name(dt), hd, ntok);
			e = norm_err(q, dt, rq, nqe, bound_of(dt), what);
			ck_assert_msg(e <= bound_of(dt), "%s q: error %g", what,
				      e);
			e = norm_err(k, dt, rk, nke, bound_of(dt), what);
			ck_assert_msg(e <= bound_of(dt), "%s k: error %g", what,
				      e);
			/* position 0 is the identity, exactly */
			ck_assert(!memcmp(q, q0, (size_t)nq * hd * es));
			/* q alone, k NULL: the same q */
			memcpy(q, q0, nqe * es);
			ck_assert_int_eq(kvk_rope_cpu(q, NULL, pos, ntok, nq, 0,
						      hd, cfg, dt, NULL),
					 0);
			e = norm_err(q, dt, rq, nqe, bound_of(dt), what);
			ck_assert(e <= bound_of(dt));
			free(q), free(k), free(q0), free(k0), free(rq),
				free(rk);
		}
}
END_TEST

/* ---- sampling ---- */

START_TEST(test_exp_neg)
{
	double worst = 0;

	for (int i = 0; i < 2400000; i++) {
		float x = -(float)i * 1e-5f;
		double r = exp((double)x), e = fabs(kvk_exp_neg(x) - r) / r;

		if (e > worst)
			worst = e;
	}
	printf("# kvk_exp_neg: worst relative error %.3g on [-24, 0]\n", worst);
	ck_assert(worst < 2e-7);
	ck_assert_float_eq(kvk_exp_neg(0.0f), 1.0f);
	ck_assert_float_eq(kvk_exp_neg(-INFINITY), 0.0f);
	ck_assert_float_eq(kvk_exp_neg(-30.0f), 0.0f);
}
END_TEST

START_TEST(test_argmax_ref)
{
	uint64_t seed = kvtest_seed("argmax_ref");
	float l[6] = {1, 3, NAN, 3, -INFINITY, 2};
	float nan4[4] = {NAN, NAN, NAN, NAN};
	float ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
	int32_t id;

	ck_assert_int_eq(kvk_argmax_cpu(&id, l, 1, 6, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 1); /* tie: lowest index; NaN skipped */
	ck_assert_int_eq(kvk_argmax_cpu(&id, nan4, 1, 4, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 0);
	ck_assert_int_eq(kvk_argmax_cpu(&id, ninf, 1, 3, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 0);
	for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
		int rows = 16, vocab = 1 + kvtest_rand(&seed) % 5000;
		void *x =
			rnd_buf(&seed, (size_t)rows * vocab, 10.0f, all_dt[t]);
		int32_t ids[16];

		ck_assert_int_eq(
			kvk_argmax_cpu(ids, x, rows, vocab, all_dt[t], NULL),
			0);
		for (int r = 0; r < rows; r++) {
			int best = 0;

			for (int i = 1; i < vocab; i++)
				if (ld(x, (size_t)r * vocab + i, all_dt[t]) >
				    ld(x, (size_t)r * vocab + best, all_dt[t]))
					best = i;
			ck_assert_int_eq(ids[r], best);
		}
		free(x);
	}
}
END_TEST

/*
 * The distribution the sampler should draw from, in double: rank by logit
 * (ties to the lower index), keep top_k, then the smallest prefix reaching
 * top_p, renormalise.
 */
static const float *by_logit_l;

static int cmp_rank(const void *a, const void *b)
{
	int i = *(const int *)a, j = *(const int *)b;
	float li = by_logit_l[i], lj = by_logit_l[j];

	if (li != lj)
		return li > lj ? -1 : 1;
	return i - j;
}

static void ref_dist(const float *l, int vocab, const struct kvk_sample_cfg *c,
		     double *p)
{
	int *ord = malloc(vocab * sizeof(int)), kept;
	double m = -INFINITY, z = 0, cum = 0;

	for (int i = 0; i < vocab; i++) {
		ord[i] = i;
		m = fmax(m, l[i]);
		p[i] = 0;
	}
	by_logit_l = l;
	qsort(ord, vocab, sizeof(int), cmp_rank);
	kept = c->top_k > 0 && c->top_k < vocab ? c->top_k : vocab;
	for (int i = 0; i < kept; i++)
		z += exp((l[ord[i]] - m) / c->temperature);
	if (c->top_p < 1.0f) {
		int i;

		for (i = 0; i < kept; i++) {
			cum += exp((l[ord[i]] - m) / c->temperature) / z;
			if (cum >= c->top_p)
				break;
		}
		kept = i + 1 > kept ? kept : i + 1;
	}
	z = 0;
	for (int i = 0; i < kept; i++)
		z += exp((l[ord[i]] - m) / c->temperature);
	for (int i = 0; i < kept; i++)
		p[ord[i]] = exp((l[ord[i]] - m) / c->temperature) / z;
	free(ord);
}

/* stratified draws must reproduce the reference distribution */
START_TEST(test_sample_distribution)
{
	static const struct kvk_sample_cfg cfgs[] = {
		{1.0f, 0, 1.0f},  {0.7f, 20, 1.0f},  {1.0f, 0, 0.9f},
		{1.3f, 25, 0.8f}, {0.5f, 3, 0.999f},
	};
	uint64_t seed = kvtest_seed("sample_distribution");
	enum { V = 60, N = 20000 };
	float l[V], *u = malloc(N * sizeof(float)), *rows;
	int32_t *ids = malloc(N * sizeof(int32_t));
	double p[V];
	int cnt[V];

	for (int i = 0; i < V; i++)
		l[i] = rnd(&seed) * 4.0f;
	rows = malloc((size_t)N * V * sizeof(float));
	for (int j = 0; j < N; j++) {
		u[j] = (float)((j + 0.5) / N);
		memcpy(rows + (size_t)j * V, l, sizeof(l));
	}
	for (size_t c = 0; c < ARRAY_SIZE(cfgs); c++) {
		ref_dist(l, V, &cfgs[c], p);
		memset(cnt, 0, sizeof(cnt));
		ck_assert_int_eq(kvk_sample_cpu(ids, rows, u, N, V, &cfgs[c],
						KVK_F32, NULL),
				 0);
		for (int j = 0; j < N; j++) {
			ck_assert(ids[j] >= 0 && ids[j] < V);
			cnt[ids[j]]++;
			/* the draw walks the kept set in index order */
			if (j)
				ck_assert_int_ge(ids[j], ids[j - 1]);
		}
		for (int i = 0; i < V; i++)
			ck_assert_msg(fabs(cnt[i] - p[i] * N) <= 1.5,
				      "cfg %zu token %d: %d draws of %d, want "
				      "%.2f",
				      c, i, cnt[i], N, p[i] * N);
	}
	free(u), free(ids), free(rows);
}
END_TEST

START_TEST(test_sample_edges)
{
	struct kvk_sample_cfg c = {1.0f, 0, 1.0f};
	float eq[8] = {0}, l[6] = {1, 5, NAN, 5, -INFINITY, 2};
	float nan4[4] = {NAN, NAN, NAN, NAN};
	float u0 = 0.0f, u1 = 0.99999994f, uh = 0.5f;
	int32_t id;

	/* equal logits, top-3: the lowest three indices, uniformly */
	c.top_k = 3;
	ck_assert_int_eq(kvk_sample_cpu(&id, eq, &u0, 1, 8, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 0);
	ck_assert_int_eq(kvk_sample_cpu(&id, eq, &uh, 1, 8, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 1);
	ck_assert_int_eq(kvk_sample_cpu(&id, eq, &u1, 1, 8, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 2);
	/* top-1 is greedy whatever u; ties to the lower index */
	c.top_k = 1;
	ck_assert_int_eq(kvk_sample_cpu(&id, l, &u1, 1, 6, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 1);
	/* NaN is never drawn, -inf has weight 0 */
	c.top_k = 0;
	for (int j = 0; j < 100; j++) {
		float u = j / 100.0f;

		ck_assert_int_eq(
			kvk_sample_cpu(&id, l, &u, 1, 6, &c, KVK_F32, NULL), 0);
		ck_assert(id == 0 || id == 1 || id == 3 || id == 5);
	}
	ck_assert_int_eq(
		kvk_sample_cpu(&id, nan4, &uh, 1, 4, &c, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 0);
	c.top_p = 0.5f;
	c.top_k = 2;
	ck_assert_int_eq(
		kvk_sample_cpu(&id, nan4, &u1, 1, 4, &c, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 0);
	/* NaN and -inf only: -inf is the maximum, the lowest such index */
	nan4[2] = -INFINITY;
	ck_assert_int_eq(
		kvk_sample_cpu(&id, nan4, &u1, 1, 4, &c, KVK_F32, NULL), 0);
	ck_assert_int_eq(id, 2);
	c.top_p = 1.0f;
	c.top_k = 0;
	/* temperature 0 is greedy; a tiny top_p keeps only the best */
	c.temperature = 0.0f;
	ck_assert_int_eq(kvk_sample_cpu(&id, l, &u1, 1, 6, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 1);
	c.temperature = 1.0f;
	c.top_p = 1e-6f;
	ck_assert_int_eq(kvk_sample_cpu(&id, l, &u1, 1, 6, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 1);
	/* a huge temperature is uniform over the finite logits */
	c.top_p = 1.0f;
	c.temperature = INFINITY;
	ck_assert_int_eq(kvk_sample_cpu(&id, l, &u1, 1, 6, &c, KVK_F32, NULL),
			 0);
	ck_assert_int_eq(id, 5);
}
END_TEST

START_TEST(test_bad_args)
{
	struct kvk_rope_cfg bad_rope = llama31;
	struct kvk_sample_cfg sc = {1.0f, 0, 1.0f};
	float x[16] = {0}, u = 0.5f;
	int32_t ids[4] = {0}, pos[2] = {0};
	enum kvk_dtype bad = (enum kvk_dtype)7;

	ck_assert_int_eq(kvk_rmsnorm_cpu(x, x, x, 1, 0, 1e-5f, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_rmsnorm_cpu(x, x, x, -1, 4, 1e-5f, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_rmsnorm_cpu(x, x, x, 1, 4, -1.0f, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_rmsnorm_cpu(x, x, NULL, 1, 4, 0, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_rmsnorm_cpu(x, x, x, 1, 4, 1e-5f, bad, NULL),
			 -EINVAL);
	ck_assert_int_eq(
		kvk_rmsnorm_cpu(NULL, NULL, NULL, 0, 4, 0, KVK_F32, NULL), 0);
	ck_assert_int_eq(kvk_silu_mul_cpu(x, x, NULL, 4, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_silu_mul_cpu(x, x, x, 4, bad, NULL), -EINVAL);
	ck_assert_int_eq(kvk_add_cpu(NULL, x, x, 4, KVK_F32, NULL), -EINVAL);
	ck_assert_int_eq(kvk_add_cpu(NULL, NULL, NULL, 0, KVK_F32, NULL), 0);
	ck_assert_int_eq(kvk_embed_cpu(x, x, ids, 1, 0, 4, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_embed_cpu(x, x, ids, 1, 4, 0, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_embed_cpu(x, x, NULL, 1, 4, 4, KVK_F32, NULL),
			 -EINVAL);
	/* RoPE: odd or too large head_dim, bad config, missing k */
	ck_assert_int_eq(
		kvk_rope_cpu(x, x, pos, 1, 1, 1, 7, &llama2, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(
		kvk_rope_cpu(x, x, pos, 1, 1, 1, 258, &llama2, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(
		kvk_rope_cpu(x, NULL, pos, 1, 1, 1, 8, &llama2, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(
		kvk_rope_cpu(x, x, pos, 1, 1, 1, 8, NULL, KVK_F32, NULL),
		-EINVAL);
	bad_rope.high_freq_factor = bad_rope.low_freq_factor;
	ck_assert_int_eq(
		kvk_rope_cpu(x, x, pos, 1, 1, 1, 8, &bad_rope, KVK_F32, NULL),
		-EINVAL);
	bad_rope = llama31;
	bad_rope.theta = 0.0f;
	ck_assert_int_eq(
		kvk_rope_cpu(x, x, pos, 1, 1, 1, 8, &bad_rope, KVK_F32, NULL),
		-EINVAL);
	/* sampling */
	ck_assert_int_eq(kvk_argmax_cpu(ids, x, 1, 0, KVK_F32, NULL), -EINVAL);
	ck_assert_int_eq(kvk_argmax_cpu(NULL, x, 1, 4, KVK_F32, NULL), -EINVAL);
	ck_assert_int_eq(kvk_sample_cpu(ids, x, NULL, 1, 4, &sc, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_sample_cpu(ids, x, &u, 1, 4, NULL, KVK_F32, NULL),
			 -EINVAL);
	sc.top_p = 0.0f;
	ck_assert_int_eq(kvk_sample_cpu(ids, x, &u, 1, 4, &sc, KVK_F32, NULL),
			 -EINVAL);
	sc.top_p = 1.5f;
	ck_assert_int_eq(kvk_sample_cpu(ids, x, &u, 1, 4, &sc, KVK_F32, NULL),
			 -EINVAL);
	sc.top_p = 1.0f;
	sc.top_k = -1;
	ck_assert_int_eq(kvk_sample_cpu(ids, x, &u, 1, 4, &sc, KVK_F32, NULL),
			 -EINVAL);
	sc.top_k = 0;
	sc.temperature = NAN;
	ck_assert_int_eq(kvk_sample_cpu(ids, x, &u, 1, 4, &sc, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_convert_from_f32(x, x, 1, bad), -EINVAL);
	ck_assert_int_eq(kvk_convert_to_f32(x, x, 1, bad), -EINVAL);
	ck_assert_uint_eq(kvk_dtype_size(bad), 0);
}
END_TEST

/*
 * the Hadamard rotation: [1 2 3 4] by hand (H4 [1 2 3 4] = [10 -2 -4 0],
 * halved); applied twice it is the identity; it keeps dot products (so
 * q.k of rotated queries and keys); bad sizes refused
 */
START_TEST(test_hadamard_ref)
{
	uint64_t seed = kvtest_seed(__func__);
	float x[4] = { 1, 2, 3, 4 }, a[512], b[512];
	uint16_t h[4];

	ck_assert_int_eq(kvk_hadamard_cpu(x, KVK_F32, 1, 4, NULL), 0);
	ck_assert(x[0] == 5 && x[1] == -1 && x[2] == -2 && x[3] == 0);
	kvk_convert_from_f32(h, (const float[]){ 1, 2, 3, 4 }, 4, KVK_F16);
	ck_assert_int_eq(kvk_hadamard_cpu(h, KVK_F16, 1, 4, NULL), 0);
	kvk_convert_to_f32(x, h, 4, KVK_F16);
	ck_assert(x[0] == 5 && x[1] == -1 && x[2] == -2 && x[3] == 0);
	for (uint32_t d = 2; d <= 256; d *= 2) {
		double dot0 = 0, dot1 = 0, err = 0;

		/* two packed rows: [0, d) and [d, 2d) */
		for (uint32_t e = 0; e < 2 * d; e++)
			a[e] = b[e] = (float)((int64_t)(kvtest_rand(&seed) %
							2001) - 1000) * 1e-3f;
		ck_assert_int_eq(kvk_hadamard_cpu(b, KVK_F32, 2, d, NULL), 0);
		for (uint32_t e = 0; e < d; e++) {
			dot0 += (double)a[e] * a[d + e];
			dot1 += (double)b[e] * b[d + e];
		}
		ck_assert_msg(fabs(dot0 - dot1) < 1e-4 * (1 + fabs(dot0)),
			      "d %u: dot %g rotated %g", d, dot0, dot1);
		ck_assert_int_eq(kvk_hadamard_cpu(b, KVK_F32, 2, d, NULL), 0);
		for (uint32_t e = 0; e < 2 * d; e++)
			err = fmax(err, fabs(b[e] - a[e]));
		ck_assert_msg(err < 1e-5, "d %u: twice is off by %g", d, err);
	}
	ck_assert_int_eq(kvk_hadamard_cpu(a, KVK_F32, 1, 48, NULL), -EINVAL);
	ck_assert_int_eq(kvk_hadamard_cpu(a, KVK_F32, 1, 1, NULL), -EINVAL);
	ck_assert_int_eq(kvk_hadamard_cpu(a, KVK_F32, 1, 512, NULL), -EINVAL);
	ck_assert_int_eq(kvk_hadamard_cpu(NULL, KVK_F32, 1, 64, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_hadamard_cpu(a, KVK_F32, 0, 64, NULL), 0);
}
END_TEST

Suite *suite_kernels(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc;

	tc = tcase_create("dtype");
	tcase_set_timeout(tc, 30);
	KV_ADD(tc, test_f16_exhaustive);
	KV_ADD(tc, test_f16_rounding_random);
	KV_ADD(tc, test_rand_uniform);
	suite_add_tcase(s, tc);

	tc = tcase_create("ops");
	tcase_set_timeout(tc, 30);
	KV_ADD(tc, test_rmsnorm_ref);
	KV_ADD(tc, test_rmsnorm_zero_row);
	KV_ADD(tc, test_elementwise_ref);
	KV_ADD(tc, test_embed_ref);
	KV_ADD(tc, test_rope_inv_freq);
	KV_ADD(tc, test_rope_ref);
	KV_ADD(tc, test_hadamard_ref);
	suite_add_tcase(s, tc);

	tc = tcase_create("sample");
	tcase_set_timeout(tc, 30);
	KV_ADD(tc, test_exp_neg);
	KV_ADD(tc, test_argmax_ref);
	KV_ADD(tc, test_sample_distribution);
	KV_ADD(tc, test_sample_edges);
	KV_ADD(tc, test_bad_args);
	suite_add_tcase(s, tc);
	return s;
}
