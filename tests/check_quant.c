// SPDX-License-Identifier: MIT
/*
 * check_quant.c - the KV quantization formats on the CPU: fp16 conversions
 * against the compiler's _Float16, the bit layout on hand-made vectors, the
 * error bound of every format in the table on fresh random vectors,
 * constant vectors, and tokens stored in a page at the allocator's offsets.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kva.h"
#include "kvmm_base.h"
#include "kvattn.h"
#include "kvq.h"
#include "kvtest.h"

static const uint32_t head_dims[] = { 64, 80, 96, 128, 256 };

static float rand_float(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

START_TEST(test_f16_convert)
{
	uint64_t seed = kvtest_seed("f16_convert");
	static const float edge[] = { 0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f,
				      65520.0f, 1e9f, -1e9f, 0x1p-24f,
				      0x1p-25f, 0x1.8p-25f, 0x1p-26f,
				      0x1.ffcp-15f, 0x1p-14f, 0x1.002p0f,
				      0x1.003p0f, INFINITY, -INFINITY };

	/* every half converts to the float the compiler gives */
	for (uint32_t h = 0; h < 0x10000; h++) {
		_Float16 hf;
		uint16_t u = (uint16_t)h;
		float got = kvk_f16_to_f32(u), want;

		memcpy(&hf, &u, 2);
		want = (float)hf;
		if (isnan(want)) {
			ck_assert(isnan(got));
			continue;
		}
		if (memcmp(&got, &want, 4))
			ck_abort_msg("f16 %#x: %a, want %a", h, got, want);
	}
	for (size_t i = 0; i < ARRAY_SIZE(edge) + 200000; i++) {
		float f;
		uint32_t bits = (uint32_t)kvtest_rand(&seed);
		_Float16 hf;
		uint16_t want, got;

		if (i < ARRAY_SIZE(edge))
			f = edge[i];
		else
			memcpy(&f, &bits, 4);
		if (isnan(f))
			continue;
		hf = (_Float16)f;
		memcpy(&want, &hf, 2);
		got = kvk_f32_to_f16(f);
		if (got != want)
			ck_abort_msg("f32 %a: f16 %#x, want %#x", f, got, want);
	}
}
END_TEST

/* values chosen so the scale is exactly 1: q equals the value */
START_TEST(test_bit_layout)
{
	static const uint32_t bits_list[] = { 8, 4, 2, 1 };
	uint8_t row[256];
	uint16_t meta[8];
	float x[256], y[256];

	for (size_t b = 0; b < ARRAY_SIZE(bits_list); b++) {
		uint32_t bits = bits_list[b], qmax = (1U << bits) - 1;
		uint32_t hd = 256, rb = kvq_row_bytes(hd, bits);

		for (uint32_t i = 0; i < hd; i++)
			x[i] = (float)(i % (qmax + 1));
		ck_assert_int_eq(kvq_quantize_row(x, hd, bits, 1, row, meta), 0);
		ck_assert_float_eq(kvk_f16_to_f32(meta[0]), 1.0f);
		ck_assert_float_eq(kvk_f16_to_f32(meta[1]), 0.0f);
		for (uint32_t j = 0; j < rb; j++) {
			uint32_t want = 0, per = 8 / bits;

			for (uint32_t k = 0; k < per; k++)
				want |= ((j * per + k) % (qmax + 1)) << (k * bits);
			ck_assert_msg(row[j] == want, "bits %u byte %u: %#x, want %#x",
				      bits, j, row[j], want);
		}
		ck_assert_int_eq(kvq_dequantize_row(row, meta, hd, bits, 1, y), 0);
		for (uint32_t i = 0; i < hd; i++)
			if (y[i] != x[i])
				ck_abort_msg("bits %u value %u: %g", bits, i, y[i]);
	}
}
END_TEST

/* each group has its own zero point */
START_TEST(test_groups)
{
	float x[128], y[128];
	uint8_t row[128];
	uint16_t meta[8];

	for (uint32_t i = 0; i < 128; i++)
		x[i] = 1000.0f * (i / 32) + (float)(i % 16);
	ck_assert_int_eq(kvq_quantize_row(x, 128, 4, 4, row, meta), 0);
	for (uint32_t g = 0; g < 4; g++) {
		ck_assert_float_eq(kvk_f16_to_f32(meta[2 * g]), 1.0f);
		ck_assert_float_eq(kvk_f16_to_f32(meta[2 * g + 1]), 1000.0f * g);
	}
	ck_assert_int_eq(kvq_dequantize_row(row, meta, 128, 4, 4, y), 0);
	for (uint32_t i = 0; i < 128; i++)
		ck_assert_float_eq(y[i], x[i]);
}
END_TEST

static void bound_check(const float *x, const float *y, uint32_t hd,
			uint32_t bits, uint32_t groups, const char *what)
{
	uint32_t gs = hd / groups;

	for (uint32_t g = 0; g < groups; g++) {
		float mn = x[g * gs], mx = mn, s, tol;

		for (uint32_t i = 1; i < gs; i++) {
			mn = fminf(mn, x[g * gs + i]);
			mx = fmaxf(mx, x[g * gs + i]);
		}
		s = (mx - mn) / (float)((1U << bits) - 1);
		/* half a step, plus the fp16 rounding of scale and zero */
		tol = bits == 16 ? fmaxf(fabsf(mn), fabsf(mx)) * 0x1p-11f :
				   0.5f * s + 0x1p-10f * (fabsf(mn) + (mx - mn));
		for (uint32_t i = 0; i < gs; i++) {
			float e = fabsf(x[g * gs + i] - y[g * gs + i]);

			if (!(e <= tol + 1e-7f))
				ck_abort_msg("%s bits %u groups %u hd %u: "
					     "value %u: %g vs %g, error %g > %g",
					     what, bits, groups, hd,
					     g * gs + i, x[g * gs + i],
					     y[g * gs + i], e, tol);
		}
	}
}

START_TEST(test_every_format)
{
	uint64_t seed = kvtest_seed("every_format");
	static const struct { uint32_t bits, groups; } fmts[] = {
#define X(b, g) { b, g },
		KVQ_FORMATS(X)
#undef X
	};
	float x[256], y[256];
	uint8_t row[512];
	uint16_t meta[8];
	int tried = 0;

	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
		for (size_t h = 0; h < ARRAY_SIZE(head_dims); h++)
			for (int rep = 0; rep < 40; rep++) {
				uint32_t hd = head_dims[h];
				float mag = ldexpf(1.0f, (int)(kvtest_rand(&seed) % 16) - 8);
				float off = rand_float(&seed) * 4 * mag;

				for (uint32_t i = 0; i < hd; i++)
					x[i] = off + rand_float(&seed) * mag;
				ck_assert_int_eq(kvq_quantize_row(x, hd, fmts[f].bits,
								  fmts[f].groups,
								  row, meta),
						 0);
				ck_assert_int_eq(kvq_dequantize_row(row, meta, hd,
								    fmts[f].bits,
								    fmts[f].groups,
								    y),
						 0);
				bound_check(x, y, hd, fmts[f].bits,
					    fmts[f].groups, "random");
				tried++;
			}
	ck_assert_int_eq(tried, 13 * 5 * 40);
}
END_TEST

START_TEST(test_constant_and_extreme)
{
	float x[128], y[128];
	uint8_t row[256];
	uint16_t meta[8];

	for (uint32_t i = 0; i < 128; i++)
		x[i] = 3.25f;
	ck_assert_int_eq(kvq_quantize_row(x, 128, 2, 2, row, meta), 0);
	ck_assert_int_eq(meta[0], 0);
	ck_assert_int_eq(kvq_dequantize_row(row, meta, 128, 2, 2, y), 0);
	for (uint32_t i = 0; i < 128; i++)
		ck_assert_float_eq(y[i], 3.25f);
	/* beyond the fp16 range: clamped, finite, no NaN */
	for (uint32_t i = 0; i < 128; i++)
		x[i] = i % 2 ? 1e30f : -1e30f;
	ck_assert_int_eq(kvq_quantize_row(x, 128, 2, 1, row, meta), 0);
	ck_assert_int_eq(kvq_dequantize_row(row, meta, 128, 2, 1, y), 0);
	for (uint32_t i = 0; i < 128; i++)
		ck_assert_msg(isfinite(y[i]) &&
				      fabsf(y[i] - (i % 2 ? 65504.0f : -65504.0f)) <
					      700.0f,
			      "value %u: %g", i, y[i]);
}
END_TEST

START_TEST(test_bad_formats)
{
	float x[256] = { 0 };
	uint8_t row[512];
	uint16_t meta[8];

	ck_assert_int_eq(kvq_quantize_row(x, 100, 4, 1, row, meta), -EINVAL);
	ck_assert_int_eq(kvq_quantize_row(x, 128, 3, 1, row, meta), -EINVAL);
	ck_assert_int_eq(kvq_quantize_row(x, 128, 4, 3, row, meta), -EINVAL);
	ck_assert_int_eq(kvq_quantize_row(x, 128, 16, 2, row, meta), -EINVAL);
	ck_assert_int_eq(kvk_quantize_rows_cpu(x, 1, 128, 5, 1, row, meta,
					       NULL),
			 -EINVAL);
	ck_assert_int_eq(kvq_dequantize_row(row, meta, 128, 0, 1, x), -EINVAL);
}
END_TEST

/* a full page of DiffKV's high and low tiers: tokens do not overlap */
START_TEST(test_page_tokens)
{
	uint64_t seed = kvtest_seed("page_tokens");
	static const struct kva_tier tiers[] = { { 8, 4, 1, 2 }, { 8, 4, 1, 1 },
						 { 4, 2, 2, 4 }, { 4, 2, 1, 1 } };
	int ps = kva_page_size(128, tiers, ARRAY_SIZE(tiers));
	static float k[64][128], v[64][128];
	uint8_t *page;

	ck_assert_int_eq(ps, 6784);
	page = malloc(ps);
	for (size_t t = 0; t < ARRAY_SIZE(tiers); t++) {
		struct kva_layout l;
		struct kvk_attn_tier at;

		ck_assert_int_eq(kva_page_layout(128, ps, &tiers[t], &l), 0);
		at = kva_attn_tier(&tiers[t], &l);
		memset(page, 0x5a, ps);
		for (uint32_t i = 0; i < l.tokens; i++) {
			for (uint32_t d = 0; d < 128; d++)
				k[i][d] = rand_float(&seed),
				v[i][d] = rand_float(&seed);
			ck_assert_int_eq(kvq_page_put(page, &at, 128, i,
						      k[i], v[i], 0.5f * i,
						      (int32_t)i * 3),
					 0);
		}
		ck_assert_int_eq(kvq_page_put(page, &at, 128, l.tokens,
					      k[0], v[0], 0, 0),
				 -EINVAL);
		for (uint32_t i = 0; i < l.tokens; i++) {
			float kk[128], vv[128], sc;
			int32_t pos;

			ck_assert_int_eq(kvq_page_get(page, &at, 128, i,
						      kk, vv, &sc, &pos),
					 0);
			bound_check(k[i], kk, 128, tiers[t].kbits,
				    tiers[t].kgroups, "page K");
			bound_check(v[i], vv, 128, tiers[t].vbits,
				    tiers[t].vgroups, "page V");
			ck_assert_float_eq(sc, 0.5f * i);
			ck_assert_int_eq(pos, (int32_t)i * 3);
		}
	}
	free(page);
}
END_TEST

Suite *suite_quant(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("formats");

	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_f16_convert);
	KV_ADD(tc, test_bit_layout);
	KV_ADD(tc, test_groups);
	KV_ADD(tc, test_every_format);
	KV_ADD(tc, test_constant_and_extreme);
	KV_ADD(tc, test_bad_formats);
	KV_ADD(tc, test_page_tokens);
	suite_add_tcase(s, tc);
	return s;
}
