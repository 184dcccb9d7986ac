// SPDX-License-Identifier: MIT
/*
 * check_policy.c - KV memory policies (model/kv/policy.h): parsing, defaults,
 * validation, and the compression ratios.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "kvtest.h"
#include "policy.h"

START_TEST(test_policy_defaults)
{
	struct llm_policy p;
	char err[160];

	ck_assert_int_eq(llm_policy_parse("diffkv", &p, err, sizeof(err)), 0);
	ck_assert_int_eq(p.kind, LLM_POLICY_DIFFKV);
	ck_assert_uint_eq(p.hi.kbits, 8);
	ck_assert_uint_eq(p.hi.vbits, 4);
	ck_assert_uint_eq(p.lo.kbits, 4);
	ck_assert_uint_eq(p.lo.vbits, 2);
	ck_assert_float_eq(p.alpha_prune, 0.02f);
	ck_assert_float_eq(p.alpha_quant, 1.0f);
	ck_assert_uint_eq(p.window, 64);
	ck_assert_int_eq(llm_policy_parse("full", &p, err, sizeof(err)), 0);
	ck_assert_uint_eq(p.hi.kbits, 16);
	ck_assert_int_eq(llm_policy_parse("kvcompress", &p, err, sizeof(err)),
			 0);
	ck_assert_float_eq(p.rate, 2.0f);
	ck_assert_uint_eq(p.score_window, 32);
	ck_assert_int_eq(llm_policy_parse("uniform", &p, err, sizeof(err)), 0);
	ck_assert_uint_eq(p.hi.kbits, 4);
	ck_assert_uint_eq(p.lo.vbits, 4);
}
END_TEST

START_TEST(test_policy_knobs)
{
	struct llm_policy p, q;
	char err[160], buf[LLM_POLICY_SPEC_MAX + 1];
	static const char *const ok[] = {
		"diffkv:prune=0.05,quant=1.5",
		"diffkv:hi=k8g1v4g2,lo=k4g2v2g4,window=32,score=16",
		"diffkv:prune=0.1,quant=0.1",
		"uniform:tier=k8v8",
		"uniform:tier=K4g2V4g2",
		"kvcompress:rate=4,interval=1,sinks=4,window=16,score=8",
		"full",
		"full:topk=64",
	};

	for (unsigned i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(!llm_policy_parse(ok[i], &p, err, sizeof(err)),
			      "%s: %s", ok[i], err);
		/* the canonical form parses back to the same policy */
		ck_assert_int_gt(llm_policy_format(&p, buf, sizeof(buf)), 0);
		ck_assert_msg(!llm_policy_parse(buf, &q, err, sizeof(err)),
			      "%s: %s", buf, err);
		ck_assert_mem_eq(&p, &q, sizeof(p));
	}
	llm_policy_parse("diffkv:hi=k8g1v4g2,lo=k4g2v2g4", &p, err,
			 sizeof(err));
	ck_assert_uint_eq(p.hi.vgroups, 2);
	ck_assert_uint_eq(p.lo.kgroups, 2);
	ck_assert_uint_eq(p.lo.vgroups, 4);
}
END_TEST

/* every bad spec is refused with a message naming it; @out untouched */
START_TEST(test_policy_invalid)
{
	static const char *const bad[][2] = {
		{ "diffkvv", "unknown policy 'diffkvv'" },
		{ "", "unknown policy ''" },
		{ "diffkv:", "empty knob list" },
		{ "diffkv:prune=0.1,", "empty knob in 'diffkv:prune=0.1,'" },
		{ "diffkv:,prune=0.1", "empty knob" },
		{ "diffkv:prune=0.1,,quant=1", "empty knob" },
		{ "diffkv:prune=0.1,prune=0.2", "knob 'prune' given twice" },
		{ "uniform:tier=k8v8,tier=k4v4", "knob 'tier' given twice" },
		{ "kvcompress:rate=2,window=8,rate=3", "'rate' given twice" },
		{ "diffkv:prune", "is not KEY=VALUE" },
		{ "diffkv:prune=", "is not KEY=VALUE" },
		{ "diffkv:prune=1.5", "prune=1.5 is out of range" },
		{ "diffkv:prune=-0.1", "out of range" },
		{ "diffkv:prune=abc", "out of range" },
		{ "diffkv:prune=0.5,quant=0.2", "quant=0.2 is below prune=0.5" },
		{ "diffkv:hi=k4v2,lo=k8v4", "more key or value bits" },
		{ "diffkv:hi=k3v4", "not a tier" },
		{ "diffkv:lo=k4g3v2", "not a tier" },
		{ "diffkv:rate=2", "has no knob 'rate'" },
		{ "full:window=3", "has no knob 'window'" },
		{ "full:topk=0", "topk=0 is out of range" },
		{ "uniform:tier=fp16", "fp16 is the full policy" },
		{ "uniform:tier=k4v4x", "not a tier" },
		{ "kvcompress:rate=0.5", "rate=0.5 is out of range" },
		{ "kvcompress:interval=0", "out of range" },
		{ "kvcompress:window=-1", "out of range" },
		{ "kvcompress:window=99999999999999999999", "out of range" },
	};
	struct llm_policy p, before;
	char err[160];

	memset(&p, 0x5a, sizeof(p));
	before = p;
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_int_eq(llm_policy_parse(bad[i][0], &p, err,
						  sizeof(err)), -EINVAL);
		ck_assert_msg(strstr(err, bad[i][1]), "'%s': '%s'", bad[i][0],
			      err);
		ck_assert_mem_eq(&p, &before, sizeof(p));
	}
	ck_assert_int_eq(llm_policy_parse(NULL, &p, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_policy_ratios)
{
	/* 100 tokens of hd 128 in fp16: 100 * 2 * 128 * 16 bits */
	struct llm_kv_usage u = {
		.tokens = { 60, 20 }, .pruned = 20,
		.pages = { 2, 1 }, .page_size = 6784,
		.bits = 60 * 212 * 8 + 20 * 112 * 8,
		.full_pages = 8, .full_page_size = 6784,
		.full_bits = 100 * 2 * 128 * 16,
	};

	ck_assert_double_eq_tol(llm_kv_physical_ratio(&u), 8.0 / 3.0, 1e-12);
	ck_assert_double_eq_tol(llm_kv_logical_ratio(&u),
				409600.0 / (60 * 212 * 8 + 20 * 112 * 8),
				1e-12);
	memset(&u, 0, sizeof(u));
	ck_assert_double_eq(llm_kv_physical_ratio(&u), 0.0);
	ck_assert_double_eq(llm_kv_logical_ratio(&u), 0.0);
}
END_TEST

Suite *suite_policy(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("parse");

	KV_ADD(tc, test_policy_defaults);
	KV_ADD(tc, test_policy_knobs);
	KV_ADD(tc, test_policy_invalid);
	KV_ADD(tc, test_policy_ratios);
	suite_add_tcase(s, tc);
	return s;
}
