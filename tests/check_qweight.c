// SPDX-License-Identifier: MIT
/*
 * check_qweight.c - 8- and 4-bit weight matrices on the host: the
 * quantizer's error is within half a step of each group, GGUF blocks map
 * onto the layouts exactly, and the reference GEMV equals W x computed from
 * the expanded matrix (norm, segments, GLU, beta); bad arguments are
 * refused and write nothing.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtest.h"
#include "qweight.h"

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * (1.0 / 9007199254740992.0)) *
		       2.0f - 1.0f;
}

struct qmat {
	struct llm_qw w;
	uint8_t *q, *meta;
	float *ref;	/* [n][k] the fp32 source */
	float *deq;	/* [n][k] the matrix expanded */
};

static void qmat_make(struct qmat *m, enum llm_qw_fmt f, int n, int k,
		      uint64_t *seed)
{
	m->q = malloc((size_t)n * llm_qw_row_bytes(f, k));
	m->meta = malloc((size_t)n * llm_qw_meta_bytes(f, k));
	m->ref = malloc((size_t)n * k * 4);
	m->deq = malloc((size_t)n * k * 4);
	for (size_t i = 0; i < (size_t)n * k; i++) {
		/* groups of different ranges and offsets */
		float sc = 0.01f + (float)((i / 32) % 7) * 0.05f;

		m->ref[i] = frand(seed) * sc + ((i / 32) % 3 == 1 ? sc : 0.0f);
	}
	ck_assert_int_eq(llm_qw_quantize_rows(f, m->ref, n, k, m->q, m->meta),
			 0);
	m->w = (struct llm_qw){ f, m->q, m->meta };
	ck_assert_int_eq(llm_qw_dequant_cpu(m->deq, KVK_F32, &m->w, n, k,
					    NULL), 0);
}

static void qmat_free(struct qmat *m)
{
	free(m->q), free(m->meta), free(m->ref), free(m->deq);
}

START_TEST(test_qweight_quantize_error)
{
	uint64_t seed = kvtest_seed("qweight_quantize_error");
	static const enum llm_qw_fmt fmts[] = { LLM_QW8, LLM_QW4 };

	for (int fi = 0; fi < 2; fi++) {
		enum llm_qw_fmt f = fmts[fi];
		int n = 3 + kvtest_rand(&seed) % 20;
		int k = 32 * (1 + kvtest_rand(&seed) % 40);
		struct qmat m;
		double worst = 0.0;

		qmat_make(&m, f, n, k, &seed);
		for (int r = 0; r < n; r++)
			for (int g = 0; g < k / 32; g++) {
				const float *x = m.ref + (size_t)r * k + g * 32;
				const float *y = m.deq + (size_t)r * k + g * 32;
				float lo = x[0], hi = x[0], amax = 0, step;

				for (int i = 0; i < 32; i++) {
					lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
					amax = fmaxf(amax, fabsf(x[i]));
				}
				step = f == LLM_QW8 ? amax / 127 : (hi - lo) / 15;
				for (int i = 0; i < 32; i++) {
					/* half a step, plus the fp16 scales' */
					double e = fabs(x[i] - y[i]) /
						   (0.5 * step + 1e-3 * amax + 1e-12);

					worst = e > worst ? e : worst;
				}
			}
		printf("qweight Q%d %dx%d: worst error %.3f of half a step\n",
		       f, n, k, worst);
		ck_assert(worst <= 1.0);
		/* f16 and bf16 expansion: the fp32 one, rounded */
		{
			uint16_t *h = malloc((size_t)n * k * 2);

			ck_assert_int_eq(llm_qw_dequant_cpu(h, KVK_BF16, &m.w, n,
							    k, NULL), 0);
			for (size_t i = 0; i < (size_t)n * k; i++)
				ck_assert_uint_eq(h[i],
						  kvk_f32_to_bf16(m.deq[i]));
			free(h);
		}
		qmat_free(&m);
	}
}
END_TEST

START_TEST(test_qweight_bad_args)
{
	float src[64] = { 0 }, y[4] = { 0 };
	uint8_t q[64], meta[16];
	struct llm_qw w = { LLM_QW8, q, meta };
	struct llm_gemv_out o = { 1, { 2 }, { y }, { 2 }, false };

	ck_assert_int_eq(llm_qw_quantize_rows(LLM_QW8, src, 2, 30, q, meta),
			 -EINVAL);
	ck_assert_int_eq(llm_qw_quantize_rows((enum llm_qw_fmt)5, src, 1, 32,
					      q, meta), -EINVAL);
	src[3] = NAN;
	ck_assert_int_eq(llm_qw_quantize_rows(LLM_QW4, src, 1, 32, q, meta),
			 -EINVAL);
	src[3] = 0;
	ck_assert_int_eq(llm_qw_quantize_rows(LLM_QW8, src, 2, 32, q, meta), 0);
	ck_assert_int_eq(llm_qw_dequant_cpu(y, KVK_F32, &w, 1, 16, NULL),
			 -EINVAL);
	ck_assert_int_eq(llm_qw_dequant_cpu(y, (enum kvk_dtype)9, &w, 1, 32,
					    NULL), -EINVAL);
	/* end must equal n; ntok over the limit; x too short */
	o.end[0] = 3;
	ck_assert_int_eq(llm_qgemv_cpu(&w, src, KVK_F32, 32, 1, 2, 32, NULL,
				       0, &o, 0, NULL), -EINVAL);
	o.end[0] = 2;
	ck_assert_int_eq(llm_qgemv_cpu(&w, src, KVK_F32, 32,
				       LLM_GEMV_MAX_TOK + 1, 2, 32, NULL, 0,
				       &o, 0, NULL), -EINVAL);
	ck_assert_int_eq(llm_qgemv_cpu(&w, src, KVK_F32, 16, 1, 2, 32, NULL,
				       0, &o, 0, NULL), -EINVAL);
	ck_assert(y[0] == 0 && y[1] == 0);
}
END_TEST

/*
 * W x from the expanded fp32 matrix, in double; with @qx, x (times @nw)
 * first quantized per group of 32 to int8 against amax / 127, each value
 * rounded to the nearest integer (ties to even) from its exact product
 * with 127 / amax: what llm_qgemv_*() compute
 */
static double dot_ref(const float *w, const float *x, const float *nw,
		      int k, double eps, bool qx, double *bound)
{
	double acc = 0, ss = 0, err = 0;

	for (int g = 0; g < k; g += 32) {
		float a[32], amax = 0, inv, d;

		for (int c = 0; c < 32; c++) {
			ss += (double)x[g + c] * x[g + c];
			a[c] = nw ? x[g + c] * nw[g + c] : x[g + c];
			amax = fmaxf(amax, fabsf(a[c]));
		}
		inv = amax > 0 ? 127.0f / amax : 0;
		d = amax / 127.0f;
		for (int c = 0; c < 32; c++) {
			acc += (double)w[g + c] *
			       (qx ? d * rint((double)a[c] * inv) : a[c]);
			/* int8: each value within half a step of d */
			err += fabs((double)w[g + c]) * d * 0.5001;
		}
	}
	if (bound)
		*bound = nw ? err / sqrt(ss / k + eps) : err;
	return nw ? acc / sqrt(ss / k + eps) : acc;
}

START_TEST(test_qweight_gemv_ref)
{
	uint64_t seed = kvtest_seed("qweight_gemv_ref");
	static const enum llm_qw_fmt fmts[] = { LLM_QW8, LLM_QW4 };

	for (int fi = 0; fi < 2; fi++)
		for (int v = 0; v < 3; v++) {
			bool glu = v == 2, norm = v >= 1;
			int n = 2 * (5 + kvtest_rand(&seed) % 30);
			int k = 32 * (2 + kvtest_rand(&seed) % 20);
			int T = 1 + kvtest_rand(&seed) % LLM_GEMV_MAX_TOK;
			int rows = glu ? n / 2 : n;
			long ldx = k + 8;
			float *x = malloc((size_t)T * ldx * 4);
			float *g = malloc((size_t)k * 4);
			float *y = malloc((size_t)T * rows * 4);
			float *y0 = malloc((size_t)T * rows * 4);
			struct llm_gemv_out o = { 1, { rows }, { y }, { rows },
						  glu };
			float beta = v == 1 ? 1.0f : 0.0f;
			struct qmat m;

			qmat_make(&m, fmts[fi], n, k, &seed);
			for (long i = 0; i < T * ldx; i++)
				x[i] = frand(&seed);
			for (int i = 0; i < k; i++)
				g[i] = 1.0f + 0.2f * frand(&seed);
			for (int i = 0; i < T * rows; i++)
				y[i] = y0[i] = frand(&seed);
			ck_assert_int_eq(llm_qgemv_cpu(&m.w, x, KVK_F32, ldx, T,
						       n, k, norm ? g : NULL,
						       1e-5f, &o, beta, NULL),
					 0);
			for (int t = 0; t < T; t++)
				for (int r = 0; r < rows; r++) {
					double e[2], ba, bu, bound = 0;

					for (int qx = 0; qx < 2; qx++) {
						e[qx] = dot_ref(m.deq +
							(size_t)r * k,
							x + t * ldx,
							norm ? g : NULL, k,
							1e-5, qx, &ba);
						bound = ba;
						if (glu) {
							double u = dot_ref(
								m.deq + (size_t)
								(r + rows) * k,
								x + t * ldx,
								norm ? g : NULL,
								k, 1e-5, qx, &bu);
							double sa = e[qx] / (1 +
								exp(-e[qx]));

							/* silu' is below 1.1 */
							bound = 1.1 * ba *
								(fabs(u) + bu) +
								fabs(sa) * bu;
							e[qx] = sa * u;
						}
						e[qx] += beta * y0[t * rows + r];
					}
					ck_assert_msg(fabs(y[t * rows + r] -
							   e[1]) <=
						      1e-5 * (1 + fabs(e[1])),
						      "Q%d T %d row %d: %g vs %g",
						      fmts[fi], t, r,
						      y[t * rows + r], e[1]);
					/* int8 activations: each value off by
					 * at most amax / 254 of its group, so
					 * the sum by sum |w| times that */
					ck_assert_msg(fabs(y[t * rows + r] -
							   e[0]) <=
						      bound + 1e-5 *
						      (1 + fabs(e[0])),
						      "Q%d T %d row %d: %g vs "
						      "unquantized x %g, bound %g",
						      fmts[fi], t, r,
						      y[t * rows + r], e[0],
						      bound);
				}
			qmat_free(&m);
			free(x), free(g), free(y), free(y0);
		}
}
END_TEST

Suite *suite_qweight(void)
{
	Suite *s = suite_create("qweight");
	TCase *tc = tcase_create("host");

	KV_ADD(tc, test_qweight_quantize_error);
	KV_ADD(tc, test_qweight_bad_args);
	KV_ADD(tc, test_qweight_gemv_ref);
	suite_add_tcase(s, tc);
	return s;
}
