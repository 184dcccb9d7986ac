// SPDX-License-Identifier: MIT
/*
 * check_eval.c - what an evaluation may claim (model/eval/evalstat.h): the
 * mean and 95% interval over chunks against a case computed by hand, and
 * the calibration / evaluation split of one text never sharing a token.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "evalstat.h"
#include "kvtest.h"

/*
 * {1, 2, 3, 4}: mean 2.5; squares of the deviations 2.25 + 0.25 + 0.25 +
 * 2.25 = 5, sd = sqrt(5 / 3) = 1.2909944; t(0.975, 3) = 3.1824463;
 * half = 3.1824463 * 1.2909944 / 2 = 2.0542603
 */
START_TEST(test_spread_hand)
{
	const double x[] = { 1, 2, 3, 4 };
	struct llm_eval_spread s;

	ck_assert_int_eq(llm_eval_spread(x, 4, &s), 0);
	ck_assert_uint_eq(s.n, 4);
	ck_assert_double_eq_tol(s.mean, 2.5, 1e-12);
	ck_assert_double_eq_tol(s.sd, 1.2909944487, 1e-9);
	ck_assert_double_eq_tol(s.half, 2.0542603, 1e-6);
	ck_assert_double_eq_tol(s.lo, 0.4457397, 1e-6);
	ck_assert_double_eq_tol(s.hi, 4.5542603, 1e-6);
}
END_TEST

/* one chunk: a mean, no interval; no value or a NaN: refused */
START_TEST(test_spread_edges)
{
	const double one = -3.25, bad[] = { 1, NAN };
	const double same[] = { 0.5, 0.5, 0.5 };
	struct llm_eval_spread s;

	ck_assert_int_eq(llm_eval_spread(&one, 1, &s), 0);
	ck_assert_double_eq(s.mean, -3.25);
	ck_assert_double_eq(s.sd, 0);
	ck_assert(isnan(s.half) && isnan(s.lo) && isnan(s.hi));
	ck_assert_int_eq(llm_eval_spread(same, 3, &s), 0);
	ck_assert_double_eq(s.half, 0);
	ck_assert_double_eq(s.lo, 0.5);
	ck_assert_int_eq(llm_eval_spread(bad, 2, &s), -EINVAL);
	ck_assert_int_eq(llm_eval_spread(&one, 0, &s), -EINVAL);
	ck_assert_int_eq(llm_eval_spread(NULL, 1, &s), -EINVAL);
}
END_TEST

/* Student's t quantiles against published values (R's qt(0.975, df)) */
START_TEST(test_t975)
{
	static const struct { uint32_t df; double t; } q[] = {
		{ 1, 12.7062047 }, { 7, 2.3646243 }, { 30, 2.0422725 },
		{ 31, 2.0395134 }, { 40, 2.0210754 }, { 60, 2.0002978 },
		{ 100, 1.9839715 }, { 1000, 1.9623391 },
	};

	ck_assert(isnan(llm_eval_t975(0)));
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
		ck_assert_msg(fabs(llm_eval_t975(q[i].df) - q[i].t) < 1e-4,
			      "df %u: %.7f, want %.7f", q[i].df,
			      llm_eval_t975(q[i].df), q[i].t);
}
END_TEST

/*
 * every split of every length: the two parts tile the text, and the
 * chunks either reads (consecutive from its start, as many as fit) lie in
 * it, so none is in both
 */
START_TEST(test_split_disjoint)
{
	static const uint64_t ctx[] = { 1, 7, 96, 2048 };
	struct llm_eval_range c, t, a;

	for (size_t n = 0; n < 5000; n += 1 + n / 3) {
		for (uint32_t pct = 1; pct <= 99; pct += 7) {
			ck_assert_int_eq(llm_eval_split(n, pct, LLM_EVAL_CALIB,
							&c), 0);
			ck_assert_int_eq(llm_eval_split(n, pct, LLM_EVAL_TEST,
							&t), 0);
			ck_assert_uint_eq(c.first, 0);
			ck_assert_uint_eq(c.first + c.n, t.first);
			ck_assert_uint_eq(t.first + t.n, n);
			ck_assert_uint_eq(c.n, n * pct / 100);
			for (size_t k = 0; k < 4; k++) {
				uint64_t nc = llm_eval_chunks_fit(&c, ctx[k]);
				uint64_t nt = llm_eval_chunks_fit(&t, ctx[k]);

				/* last calibration token < first evaluated */
				ck_assert_uint_le(c.first + nc * ctx[k],
						  t.first);
				ck_assert_uint_le(t.first + nt * ctx[k], n);
				ck_assert_uint_gt(c.first + (nc + 1) * ctx[k],
						  c.first + c.n);
			}
		}
	}
	ck_assert_int_eq(llm_eval_split(100, 0, LLM_EVAL_TEST, &t), -EINVAL);
	ck_assert_int_eq(llm_eval_split(100, 100, LLM_EVAL_CALIB, &t),
			 -EINVAL);
	ck_assert_int_eq(llm_eval_split(100, 50, 7, &t), -EINVAL);
	ck_assert_int_eq(llm_eval_split(100, 0, LLM_EVAL_ALL, &a), 0);
	ck_assert_uint_eq(a.n, 100);
	ck_assert_uint_eq(llm_eval_chunks_fit(&a, 0), 0);
	ck_assert_str_eq(llm_eval_part_name(LLM_EVAL_TEST), "evaluation");
}
END_TEST

Suite *suite_eval(void)
{
	Suite *s = suite_create("eval");
	TCase *tc = tcase_create("stat");

	KV_ADD(tc, test_spread_hand);
	KV_ADD(tc, test_spread_edges);
	KV_ADD(tc, test_t975);
	KV_ADD(tc, test_split_disjoint);
	suite_add_tcase(s, tc);
	return s;
}
