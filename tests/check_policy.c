// SPDX-License-Identifier: MIT
/*
 * check_policy.c - KV memory policies (model/kv/policy.h): parsing, defaults,
 * validation, and the compression ratios.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
		"diffkv:prune=0,quant=1,hadamard=1,sinks=4",
		"diffkv:prune=0,quant=1,knorm=1,hadamard=1,sinks=4",
		"uniform:tier=k4v4,knorm=1",
		"uniform:tier=k8v8",
		"uniform:tier=K4g2V4g2",
		"kvcompress:rate=4,interval=1,sinks=4,window=16,score=8",
		"full",
		"full:topk=64",
		"full:topk=32,dense=2",
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
		{ "full:dense=2", "dense=2 needs topk" },
		{ "full:topk=8,dense=5000", "dense=5000 is out of range" },
		{ "diffkv:dense=2", "has no knob 'dense'" },
		{ "uniform:tier=fp16", "fp16 is the full policy" },
		{ "uniform:tier=k4v4x", "not a tier" },
		{ "kvcompress:rate=0.5", "rate=0.5 is out of range" },
		{ "kvcompress:interval=0", "out of range" },
		{ "kvcompress:window=-1", "out of range" },
		{ "kvcompress:window=99999999999999999999", "out of range" },
		{ "diffkv:sinks=-1", "sinks=-1 is out of range" },
		{ "diffkv:sinks=2000000", "out of range" },
		{ "uniform:sinks=4", "has no knob 'sinks'" },
		{ "diffkv:knorm=2", "knorm=2 is out of range" },
		{ "kvcompress:knorm=1", "has no knob 'knorm'" },
		{ "full:knorm=1", "has no knob 'knorm'" },
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

/* a scratch file's name; the directory is made on first use */
static void scratch(char *path, size_t len, const char *name)
{
	static char dir[64];

	if (!*dir) {
		strcpy(dir, "/tmp/kvmm-policy-XXXXXX");
		ck_assert_ptr_nonnull(mkdtemp(dir));
	}
	snprintf(path, len, "%s/%s", dir, name);
}

static void put(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(s, f);
	fclose(f);
}

/* the file's text (a static buffer, up to 4 KiB) */
static const char *slurp_s(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void same_policy(const struct llm_policy *a, const struct llm_policy *b)
{
	char fa[LLM_POLICY_SPEC_MAX + 1], fb[LLM_POLICY_SPEC_MAX + 1];

	ck_assert_int_gt(llm_policy_format(a, fa, sizeof(fa)), 0);
	ck_assert_int_gt(llm_policy_format(b, fb, sizeof(fb)), 0);
	ck_assert_str_eq(fa, fb);
	ck_assert(a->alpha_prune == b->alpha_prune);
	ck_assert(a->alpha_quant == b->alpha_quant);
}

/*
 * a profile written and read back is the same policy, to the last bit of
 * its thresholds, and diffkv:profile=FILE is that policy
 */
START_TEST(test_profile_round_trip)
{
	const char *spec = "diffkv:hi=k8g1v4g2,lo=k4g2v2g4,prune=0.0137,"
			   "quant=1.7,window=32,score=48";
	char path[128], s[LLM_POLICY_SPEC_MAX + 1], err[300];
	struct llm_policy p, q, r;

	scratch(path, sizeof(path), "round.json");
	ck_assert_int_eq(llm_policy_parse(spec, &p, err, sizeof(err)), 0);
	ck_assert_int_eq(llm_profile_write(path, &p, "{\"model\": \"m\", "
					   "\"chunks\": [1, 2]}", err,
					   sizeof(err)), 0);
	/* sinks are written only when set: the file is as before */
	ck_assert_ptr_null(strstr(slurp_s(path), "sinks"));
	ck_assert_int_eq(llm_profile_read(path, &q, err, sizeof(err)), 0);
	same_policy(&p, &q);
	snprintf(s, sizeof(s), "diffkv:profile=%s", path);
	ck_assert_int_eq(llm_policy_parse(s, &r, err, sizeof(err)), 0);
	same_policy(&p, &r);
	/* the canonical form names every knob, not the file */
	ck_assert_int_gt(llm_policy_format(&r, s, sizeof(s)), 0);
	ck_assert_str_eq(s, spec);
	/* without calibration, and with the default thresholds */
	llm_policy_default(LLM_POLICY_DIFFKV, &p);
	ck_assert_int_eq(llm_profile_write(path, &p, NULL, err, sizeof(err)),
			 0);
	ck_assert_int_eq(llm_profile_read(path, &q, err, sizeof(err)), 0);
	same_policy(&p, &q);
	/* the rotation and the sinks, read back */
	ck_assert_int_eq(llm_policy_parse("diffkv:prune=0,quant=2,hadamard=1,"
					  "sinks=4,knorm=1", &p, err,
					  sizeof(err)), 0);
	ck_assert_int_eq(llm_profile_write(path, &p, NULL, err, sizeof(err)),
			 0);
	ck_assert_ptr_nonnull(strstr(slurp_s(path), "\"sinks\": 4"));
	ck_assert_ptr_nonnull(strstr(slurp_s(path), "\"knorm\": 1"));
	ck_assert_int_eq(llm_profile_read(path, &q, err, sizeof(err)), 0);
	same_policy(&p, &q);
	ck_assert_uint_eq(q.sinks, 4);
	ck_assert_uint_eq(q.knorm, 1);
	/* sinks is a knob the profile sets */
	snprintf(s, sizeof(s), "diffkv:profile=%s,sinks=2", path);
	ck_assert_int_eq(llm_policy_parse(s, &r, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "knob 'sinks' and profile= both"));
	/* only diffkv is written */
	llm_policy_default(LLM_POLICY_UNIFORM, &p);
	ck_assert_int_eq(llm_profile_write(path, &p, NULL, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "not a diffkv policy"));
	unlink(path);
	*strrchr(path, '/') = 0;
	rmdir(path);
}
END_TEST

#define GOOD_HEAD "{\"kvmm_profile\": 1, \"policy\": \"diffkv\", "
#define GOOD_TIERS "\"hi\": \"k8v4\", \"lo\": \"k4v2\", "
#define GOOD_REST "\"window\": 64, \"score\": 64}"

/* every bad profile refused, the member named, the policy left alone */
START_TEST(test_profile_refused)
{
	static const struct { const char *text, *why; } bad[] = {
		{ "", "not JSON" },
		{ "{\"kvmm_profile\": 1,}", "not JSON" },
		{ "[1]", "not a JSON object" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, " GOOD_REST,
		  "member 'quant' is missing" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quantt\": 1, "
		  GOOD_REST, "unknown member 'quantt'" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"prune\": 0, "
		  "\"quant\": 1, " GOOD_REST, "member 'prune' given twice" },
		{ "{\"kvmm_profile\": 2, \"policy\": \"diffkv\", " GOOD_TIERS
		  "\"prune\": 0, \"quant\": 1, " GOOD_REST,
		  "'kvmm_profile' must be 1" },
		{ "{\"kvmm_profile\": 1, \"policy\": \"uniform\", "
		  GOOD_TIERS "\"prune\": 0, \"quant\": 1, " GOOD_REST,
		  "'policy' must be \"diffkv\"" },
		{ GOOD_HEAD "\"hi\": \"k3v4\", \"lo\": \"k4v2\", \"prune\": 0, "
		  "\"quant\": 1, " GOOD_REST, "'hi' must be a tier" },
		{ GOOD_HEAD "\"hi\": \"k8v4\", \"lo\": 42, \"prune\": 0, "
		  "\"quant\": 1, " GOOD_REST, "'lo' must be a tier" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 1.5, \"quant\": 2, "
		  GOOD_REST, "'prune' must be a number in [0, 1]" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": \"0.1\", \"quant\": 2, "
		  GOOD_REST, "'prune' must be a number" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": -1, "
		  GOOD_REST, "'quant' must be a number" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0.02, \"quant\": 0.01, "
		  GOOD_REST, "'quant' (0.01) is below 'prune' (0.02)" },
		{ GOOD_HEAD "\"hi\": \"k4v2\", \"lo\": \"k8v4\", \"prune\": 0, "
		  "\"quant\": 1, " GOOD_REST, "'lo' has more key or value" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 1, "
		  "\"window\": -1, \"score\": 64}",
		  "'window' must be an integer in [0, 1048576]" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 1, "
		  "\"window\": 64, \"score\": 1.5}",
		  "'score' must be an integer" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 1, "
		  "\"window\": 64, \"score\": 64, \"calibration\": 3}",
		  "'calibration' must be an object" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 1, "
		  "\"window\": 64, \"score\": 64, \"sinks\": -4}",
		  "'sinks' must be an integer" },
		{ GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 1, "
		  "\"window\": 64, \"score\": 64, \"knorm\": 2}",
		  "'knorm' must be an integer in [0, 1]" },
	};
	char path[128], spec[LLM_POLICY_SPEC_MAX + 1], err[300], dir[160];
	struct llm_policy p, keep;

	scratch(path, sizeof(path), "bad.json");
	llm_policy_default(LLM_POLICY_UNIFORM, &keep);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(path, bad[i].text);
		p = keep;
		*err = 0;
		ck_assert_int_eq(llm_profile_read(path, &p, err, sizeof(err)),
				 -EINVAL);
		ck_assert_msg(strstr(err, bad[i].why) && strstr(err, path),
			      "%zu: '%s' lacks '%s'", i, err, bad[i].why);
		ck_assert(!memcmp(&p, &keep, sizeof(p)));
		snprintf(spec, sizeof(spec), "diffkv:profile=%s", path);
		ck_assert_int_eq(llm_policy_parse(spec, &p, err, sizeof(err)),
				 -EINVAL);
		ck_assert_msg(strstr(err, "policy diffkv: profile ") &&
			      strstr(err, bad[i].why), "%zu: '%s'", i, err);
		ck_assert(!memcmp(&p, &keep, sizeof(p)));
	}
	/* the good one, for contrast */
	put(path, GOOD_HEAD GOOD_TIERS "\"prune\": 0, \"quant\": 2, "
	    GOOD_REST);
	ck_assert_int_eq(llm_profile_read(path, &p, err, sizeof(err)), 0);
	ck_assert(p.alpha_quant == 2.0f);
	/* a knob a profile sets, given beside it, either order */
	snprintf(spec, sizeof(spec), "diffkv:profile=%s,quant=1", path);
	ck_assert_int_eq(llm_policy_parse(spec, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "knob 'quant' and profile= both"));
	snprintf(spec, sizeof(spec), "diffkv:window=8,profile=%s", path);
	ck_assert_int_eq(llm_policy_parse(spec, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "and profile= both"));
	snprintf(spec, sizeof(spec), "uniform:profile=%s", path);
	ck_assert_int_eq(llm_policy_parse(spec, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "no knob 'profile'"));
	/* no file, a directory */
	ck_assert_int_eq(llm_profile_read("/nonexistent.json", &p, err,
					  sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent.json"));
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	ck_assert_int_eq(llm_profile_read(dir, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
	unlink(path);
	rmdir(dir);
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
	KV_ADD(tc, test_profile_round_trip);
	KV_ADD(tc, test_profile_refused);
	suite_add_tcase(s, tc);
	return s;
}
