// SPDX-License-Identifier: MIT
/*
 * check_qdot.c - the GGUF block formats and their dot products
 * (kernels/qdot.h): dequantisation against the gguf Python package, the
 * quantised dot against fp32 arithmetic on the dequantised weights within
 * the activation rounding bound, every SIMD path against the portable C
 * path on fresh random inputs (the activation quantisation to the byte),
 * and the errors.
 *
 * test_dequant_gguf reads the vectors compiled in from
 * tests/ref/gguf_quants_ref.h, or fresh ones from the file named by
 * KVMM_GGUF_QREF (tests/gguf_quants_test.py makes one with the gguf
 * package and runs this test on it).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvk.h"
#include "kvmm_base.h"
#include "kvtest.h"
#include "qdot.h"

#include "ref/gguf_quants_ref.h"

static const uint32_t fmts[] = {
	KVK_QT_Q4_0, KVK_QT_Q4_1, KVK_QT_Q5_0, KVK_QT_Q5_1,
	KVK_QT_Q8_0, KVK_QT_Q4_K, KVK_QT_Q5_K, KVK_QT_Q6_K,
};

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* offsets of the fp16 fields of a block */
static int f16_fields(uint32_t type, int off[2])
{
	switch (type) {
	case KVK_QT_Q4_1:
	case KVK_QT_Q5_1:
	case KVK_QT_Q4_K:
	case KVK_QT_Q5_K:
		off[0] = 0;
		off[1] = 2;
		return 2;
	case KVK_QT_Q6_K:
		off[0] = 208;
		return 1;
	}
	off[0] = 0;
	return 1;
}

/* @nblk random blocks of @type, scales finite, |d| in [2^-12, 4) */
static void rand_blocks(uint32_t type, uint8_t *p, size_t nblk, uint64_t *s)
{
	uint32_t blck, bsz;
	int off[2], nf = f16_fields(type, off);

	ck_assert_int_eq(kvk_qtype_layout(type, &blck, &bsz), 0);
	for (size_t b = 0; b < nblk; b++, p += bsz) {
		for (uint32_t i = 0; i < bsz; i++)
			p[i] = (uint8_t)kvtest_rand(s);
		for (int f = 0; f < nf; f++) {
			float v = ldexpf(1.0f + 0.5f * frand(s),
					 (int)(kvtest_rand(s) % 14) - 12);
			uint16_t h = kvk_f32_to_f16(frand(s) < 0 ? -v : v);

			memcpy(p + off[f], &h, 2);
		}
	}
}

static void check_ref(const char *src, uint32_t type, uint32_t n,
		      uint32_t nbytes, const uint8_t *raw, const float *want)
{
	uint32_t blck, bsz;
	float *got = malloc(n * sizeof(float));
	double amax = 0.0;
	int bad = 0;

	ck_assert_ptr_nonnull(got);
	ck_assert_msg(!kvk_qtype_layout(type, &blck, &bsz), "%s: type %u",
		      src, type);
	ck_assert_uint_eq(n / blck * bsz, nbytes);
	ck_assert_int_eq(kvk_qdot_dequant(type, raw, got, n), 0);
	for (uint32_t i = 0; i < n; i++)
		amax = fmax(amax, fabs(want[i]));
	for (uint32_t i = 0; i < n; i++) {
		/* the package may round d * sc and q in another order */
		if (fabs(got[i] - want[i]) <= 2e-7 * amax)
			continue;
		if (bad++ < 5)
			fprintf(stderr, "%s %s: element %u: %.9g, gguf %.9g\n",
				src, kvk_qtype_name(type), i, got[i], want[i]);
	}
	ck_assert_msg(!bad, "%s %s: %d of %u values differ from gguf", src,
		      kvk_qtype_name(type), bad, n);
	free(got);
}

/* every format dequantises as the gguf package does */
START_TEST(test_dequant_gguf)
{
	const char *path = getenv("KVMM_GGUF_QREF");
	bool seen[64] = { false };

	if (!path) {
		for (size_t i = 0; i < ARRAY_SIZE(gguf_qrefs); i++) {
			const struct gguf_qref *r = &gguf_qrefs[i];

			check_ref("compiled", r->type, r->n, r->nbytes, r->raw,
				  r->want);
			seen[r->type] = true;
		}
	} else {
		FILE *f = fopen(path, "rb");
		uint32_t h[3];

		ck_assert_msg(f, "KVMM_GGUF_QREF=%s: cannot open", path);
		while (fread(h, 4, 3, f) == 3) {
			uint8_t *raw = malloc(h[2]);
			float *want = malloc(h[1] * sizeof(float));

			ck_assert(raw && want && h[0] < 64);
			ck_assert_uint_eq(fread(raw, 1, h[2], f), h[2]);
			ck_assert_uint_eq(fread(want, 4, h[1], f), h[1]);
			check_ref(path, h[0], h[1], h[2], raw, want);
			seen[h[0]] = true;
			free(raw);
			free(want);
		}
		fclose(f);
	}
	for (size_t i = 0; i < ARRAY_SIZE(fmts); i++)
		ck_assert_msg(seen[fmts[i]], "no reference for %s",
			      kvk_qtype_name(fmts[i]));
	printf("dequant_gguf: %zu formats as gguf gives them (%s)\n",
	       ARRAY_SIZE(fmts), path ? path : "compiled-in vectors");
	fflush(stdout);
}
END_TEST

/*
 * The C path's quantised dot against fp32 products of the dequantised
 * weights with the unquantised activations: the difference is bounded by
 * the activation rounding, sum |w| d_block / 2, plus fp32 error.
 */
START_TEST(test_dot_vs_float)
{
	uint64_t seed = kvtest_seed("qdot_dot_vs_float");
	const size_t k = 768, n = 5;

	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++) {
		uint32_t type = fmts[f], blck, bsz;
		uint8_t *w, *qa;
		float x[768], wf[768], y[5], ad[768];
		size_t rb;

		ck_assert_int_eq(kvk_qtype_layout(type, &blck, &bsz), 0);
		rb = k / blck * bsz;
		w = malloc(n * rb);
		qa = malloc(kvk_qdot_act_bytes(type, k));
		ck_assert(w && qa);
		rand_blocks(type, w, n * k / blck, &seed);
		for (size_t i = 0; i < k; i++)
			x[i] = frand(&seed) * (i % 7 ? 1.0f : 5.0f);
		ck_assert_int_eq(kvk_qdot_quantize(type, x, qa, k), 0);
		/* each element's activation scale, for the bound */
		for (size_t i = 0; i < k; i++) {
			size_t g = kvk_qdot_act_type(type) == KVK_QT_Q8_K ?
					   KVK_QK_K : KVK_QK;
			float amax = 0.0f;

			for (size_t j = i / g * g; j < i / g * g + g; j++)
				amax = fmaxf(amax, fabsf(x[j]));
			ad[i] = amax / 127.0f;
		}
		ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, type, w, rb, n, qa,
					       0 + kvk_qdot_act_bytes(type, k),
					       1, y, n, k), 0);
		for (size_t r = 0; r < n; r++) {
			double ref = 0.0, bound = 0.0, mag = 0.0;

			ck_assert_int_eq(kvk_qdot_dequant(type, w + r * rb, wf,
							  k), 0);
			for (size_t i = 0; i < k; i++) {
				ref += (double)wf[i] * x[i];
				bound += fabs(wf[i]) * ad[i] * 0.5;
				mag += fabs((double)wf[i] * x[i]);
			}
			bound = bound * 1.001 + 1e-5 * mag + 1e-30;
			ck_assert_msg(fabs(y[r] - ref) <= bound,
				      "%s row %zu: %.9g, fp32 %.9g, bound %.3g",
				      kvk_qtype_name(type), r, y[r], ref, bound);
		}
		free(w);
		free(qa);
	}
}
END_TEST

/*
 * @isa's product of @n random rows of @type by @t random activation rows
 * of @k elements against the C path's, within 2e-6 of each output's sum
 * of |w a|; the ISA's activation quantisation the same bytes as C's
 */
static void isa_vs_c_one(int isa, uint32_t type, int n, int t, size_t k,
			 uint64_t *seed, bool prefill)
{
	uint32_t blck, bsz;
	size_t rb, ab = kvk_qdot_act_bytes(type, k);
	float *x = malloc(t * k * sizeof(float));
	float *y0 = malloc((size_t)t * n * sizeof(float));
	float *y1 = malloc((size_t)t * n * sizeof(float));
	float *wf = malloc(k * sizeof(float));
	uint8_t *w, *qa = malloc(t * ab);

	ck_assert_int_eq(kvk_qtype_layout(type, &blck, &bsz), 0);
	rb = k / blck * bsz;
	w = malloc(n * rb);
	ck_assert(x && y0 && y1 && wf && w && qa);
	rand_blocks(type, w, n * k / blck, seed);
	for (size_t i = 0; i < t * k; i++)
		x[i] = frand(seed);
	for (int j = 0; j < t; j++) {
		uint8_t *q1 = malloc(ab);

		ck_assert_ptr_nonnull(q1);
		ck_assert_int_eq(kvk_qdot_quantize_isa(KVK_ISA_C, type,
				 x + j * k, qa + j * ab, k), 0);
		/* the ISA's quantisation: the same bytes */
		ck_assert_int_eq(kvk_qdot_quantize_isa(isa, type, x + j * k,
							q1, k), 0);
		ck_assert_msg(!memcmp(q1, qa + j * ab, ab),
			      "%s: %s activations differ from C",
			      kvk_qdot_isa_name(isa), kvk_qtype_name(type));
		free(q1);
	}
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, type, w, rb, n, qa, ab, t,
				       y0, n, k), 0);
	ck_assert_int_eq((prefill ? kvk_qdot_gemm_prefill : kvk_qdot_gemm)(
				 isa, type, w, rb, n, qa, ab, t, y1, n, k), 0);
	for (int r = 0; r < n; r++) {
		ck_assert_int_eq(kvk_qdot_dequant(type, w + r * rb, wf, k), 0);
		for (int j = 0; j < t; j++) {
			double mag = 0.0;

			for (size_t i = 0; i < k; i++)
				mag += fabs(wf[i] * x[j * k + i]);
			ck_assert_msg(fabs(y1[j * n + r] - y0[j * n + r]) <=
				      2e-6 * mag + 1e-30,
				      "%s %s n %d t %d k %zu row %d tok %d: "
				      "%.9g, C %.9g (seed above)",
				      kvk_qdot_isa_name(isa),
				      kvk_qtype_name(type), n, t, k, r, j,
				      y1[j * n + r], y0[j * n + r]);
		}
	}
	free(x);
	free(y0);
	free(y1);
	free(wf);
	free(w);
	free(qa);
}

/* each SIMD path computes what the C path computes, on fresh inputs */
START_TEST(test_isa_vs_c)
{
	static const int ns[] = { 1, 2, 3, 4, 5, 9 }, ts[] = { 1, 2, 3, 4,
							       5, 8, 11 };
	static const size_t ks[] = { 256, 512, 1536 };
	int isa = _i;
	uint64_t seed;
	char name[64];

	if (!kvk_qdot_isa_ok(isa)) {
		kvtest_skip(__func__, "this CPU has no %s",
			    kvk_qdot_isa_name(isa));
		return;
	}
	snprintf(name, sizeof(name), "qdot_isa_vs_c_%s",
		 kvk_qdot_isa_name(isa));
	seed = kvtest_seed(name);
	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
		for (size_t kk = 0; kk < ARRAY_SIZE(ks); kk++)
			isa_vs_c_one(isa, fmts[f], ns[(f + kk) % ARRAY_SIZE(ns)],
				     ts[(f * 3 + kk) % ARRAY_SIZE(ts)], ks[kk],
				     &seed, false);
}
END_TEST

/*
 * kvk_qdot_gemm_prefill() the same way: 16 rows and more (the AVX-512
 * path's panels of 16 rows, with a padded remainder) and fewer, one token
 * and more (its tiles of 4, with remainders), rows longer than a panel's
 * 32 blocks (2304: 72 blocks, a panel of 8 blocks last)
 */
START_TEST(test_isa_vs_c_prefill)
{
	static const int ns[] = { 16, 35, 48, 5 }, ts[] = { 8, 13, 1, 31, 3 };
	static const size_t ks[] = { 256, 1536, 2304 };
	int isa = _i;
	uint64_t seed;
	char name[64];

	if (!kvk_qdot_isa_ok(isa)) {
		kvtest_skip(__func__, "this CPU has no %s",
			    kvk_qdot_isa_name(isa));
		return;
	}
	snprintf(name, sizeof(name), "qdot_isa_vs_c_prefill_%s",
		 kvk_qdot_isa_name(isa));
	seed = kvtest_seed(name);
	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
		for (size_t kk = 0; kk < ARRAY_SIZE(ks); kk++)
			isa_vs_c_one(isa, fmts[f], ns[(f + kk) % ARRAY_SIZE(ns)],
				     ts[(f + 2 * kk) % ARRAY_SIZE(ts)], ks[kk],
				     &seed, true);
}
END_TEST

/*
 * On every ISA and both paths, a token's outputs are the same bits
 * whatever else the call holds: the tokens one at a time, and the rows
 * from row 5 on (another panel split), give what the whole call gives
 * (so that a decode step's batch, or a prefill's, does not change a
 * sequence's tokens)
 */
START_TEST(test_gemm_batch_invariant)
{
	enum { N = 35, T = 13, R0 = 5 };
	const size_t k = 1536;
	uint64_t seed = kvtest_seed("qdot_gemm_batch_invariant");

	for (int isa = KVK_ISA_C; isa < KVK_ISA_NR; isa++) {
		if (!kvk_qdot_isa_ok(isa))
			continue;
		for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
			for (int pre = 0; pre < 2; pre++) {
				int (*gemm)(int, uint32_t, const void *, size_t,
					    int, const void *, size_t, int,
					    float *, size_t, size_t) =
					pre ? kvk_qdot_gemm_prefill :
					      kvk_qdot_gemm;
				uint32_t type = fmts[f], blck, bsz;
				size_t ab = kvk_qdot_act_bytes(type, k), rb;
				float *x = malloc(T * k * sizeof(float));
				float y[T][N], y1[N];
				uint8_t *w, *qa = malloc(T * ab);

				ck_assert_int_eq(kvk_qtype_layout(type, &blck,
								  &bsz), 0);
				rb = k / blck * bsz;
				w = malloc(N * rb);
				ck_assert(x && w && qa);
				rand_blocks(type, w, N * k / blck, &seed);
				for (size_t i = 0; i < T * k; i++)
					x[i] = frand(&seed);
				for (int j = 0; j < T; j++)
					ck_assert_int_eq(kvk_qdot_quantize(type,
						x + j * k, qa + j * ab, k), 0);
				ck_assert_int_eq(gemm(isa, type, w, rb, N, qa,
						      ab, T, &y[0][0], N, k), 0);
				for (int j = 0; j < T; j++) {
					ck_assert_int_eq(gemm(isa, type, w, rb, N,
						qa + j * ab, ab, 1, y1, N, k), 0);
					ck_assert_msg(!memcmp(y1, y[j],
							      sizeof(y1)),
						      "%s %s%s: token %d alone "
						      "differs", kvk_qdot_isa_name(isa),
						      kvk_qtype_name(type),
						      pre ? " prefill" : "", j);
					ck_assert_int_eq(gemm(isa, type,
						w + R0 * rb, rb, N - R0,
						qa + j * ab, ab, 1, y1, N, k), 0);
					ck_assert_msg(!memcmp(y1, y[j] + R0,
						(N - R0) * sizeof(float)),
						"%s %s%s: rows from %d differ",
						kvk_qdot_isa_name(isa),
						kvk_qtype_name(type),
						pre ? " prefill" : "", R0);
				}
				free(x);
				free(w);
				free(qa);
			}
	}
}
END_TEST

/* bad input is refused, naming nothing written */
START_TEST(test_errors)
{
	uint8_t w[64] = { 0 }, qa[64] = { 0 };
	float y[4] = { 7.0f, 7.0f, 7.0f, 7.0f }, x[32] = { 0 };
	uint32_t blck, bsz;

	ck_assert_str_eq(kvk_qtype_name(16), "IQ2_XXS");
	ck_assert_str_eq(kvk_qtype_name(11), "Q3_K");
	ck_assert_str_eq(kvk_qtype_name(1000), "unknown");
	ck_assert_int_eq(kvk_qtype_layout(10, &blck, &bsz), -EOPNOTSUPP);
	ck_assert(!kvk_qdot_supported(KVK_QT_F16));
	ck_assert(!kvk_qdot_supported(KVK_QT_Q8_K));
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, 11, w, 64, 1, qa, 40, 1, y,
				       1, 32), -EOPNOTSUPP);
	/* a partial block, a short output row, short rows */
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, w, 34, 1, qa,
				       40, 1, y, 1, 33), -EINVAL);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, w, 34, 2, qa,
				       40, 1, y, 1, 32), -EINVAL);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, w, 33, 1, qa,
				       40, 1, y, 1, 32), -EINVAL);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, w, 34, 1, qa,
				       39, 1, y, 1, 32), -EINVAL);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, NULL, 34, 1,
				       qa, 40, 1, y, 1, 32), -EINVAL);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_NR, KVK_QT_Q8_0, w, 34, 1, qa,
				       40, 1, y, 1, 32), -EOPNOTSUPP);
	ck_assert(y[0] == 7.0f);
	ck_assert_int_eq(kvk_qdot_quantize(KVK_QT_Q4_K, x, qa, 32), -EINVAL);
	ck_assert_int_eq(kvk_qdot_quantize(KVK_QT_F32, x, qa, 32),
			 -EOPNOTSUPP);
	ck_assert_int_eq(kvk_qdot_dequant(KVK_QT_Q4_1, w, y, 31), -EINVAL);
	ck_assert_int_eq(kvk_qdot_dequant(KVK_QT_Q8_K, w, y, 256),
			 -EOPNOTSUPP);
	/* zero activations: zero scale, no NaN */
	ck_assert_int_eq(kvk_qdot_quantize(KVK_QT_Q8_0, x, qa, 32), 0);
	ck_assert_int_eq(kvk_qdot_gemm(KVK_ISA_C, KVK_QT_Q8_0, w, 34, 1, qa,
				       40, 1, y, 1, 32), 0);
	ck_assert(y[0] == 0.0f);
	ck_assert_int_ge(kvk_qdot_isa_best(), KVK_ISA_C);
	ck_assert(kvk_qdot_isa_ok(kvk_qdot_isa_best()));
}
END_TEST

Suite *suite_qdot(void)
{
	Suite *s = suite_create("qdot");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_dequant_gguf);
	KV_ADD(tc, test_dot_vs_float);
	KV_ADD_LOOP(tc, test_isa_vs_c, KVK_ISA_AVX2, KVK_ISA_NR);
	KV_ADD_LOOP(tc, test_isa_vs_c_prefill, KVK_ISA_AVX2, KVK_ISA_NR);
	KV_ADD(tc, test_gemm_batch_invariant);
	KV_ADD(tc, test_errors);
	suite_add_tcase(s, tc);
	return s;
}
