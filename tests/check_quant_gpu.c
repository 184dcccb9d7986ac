// SPDX-License-Identifier: MIT
/*
 * check_quant_gpu.c - the quantization kernels against their CPU reference,
 * on fresh random inputs: every format of the table at every head_dim, with
 * constant rows and rows beyond the fp16 range among them. The bytes must
 * be identical (same operations on both sides); outputs are poisoned first
 * so an unwritten byte fails.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "kvq.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static float rand_float(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static size_t first_diff(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return i;
	return n;
}

START_TEST(test_quant_cuda_vs_cpu)
{
	static const struct { uint32_t bits, groups; } fmts[] = {
#define X(b, g) { b, g },
		KVQ_FORMATS(X)
#undef X
	};
	static const uint32_t hds[] = { 64, 80, 96, 128, 256 };
	uint64_t seed = kvtest_seed("quant_cuda_vs_cpu");
	int checked = 0;

	for (size_t f = 0; f < ARRAY_SIZE(fmts); f++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++) {
			uint32_t hd = hds[h], bits = fmts[f].bits;
			uint32_t g = fmts[f].groups;
			uint32_t rows = 1 + kvtest_rand(&seed) % 3000;
			size_t nx = (size_t)rows * hd;
			size_t nd = (size_t)rows * kvq_row_bytes(hd, bits);
			size_t nm = (size_t)rows * 2 * g;
			float *x = malloc(nx * 4), *y = malloc(nx * 4);
			float *y2 = malloc(nx * 4), *dx, *dy;
			uint8_t *d = malloc(nd), *d2 = malloc(nd), *dd;
			uint16_t *m = malloc(nm * 2), *m2 = malloc(nm * 2), *dm;
			size_t at;

			for (uint32_t r = 0; r < rows; r++) {
				float mag = ldexpf(1.0f, (int)(kvtest_rand(&seed) % 20) - 10);
				int kind = kvtest_rand(&seed) % 16;

				for (uint32_t i = 0; i < hd; i++)
					x[(size_t)r * hd + i] =
						kind == 0 ? 0.75f :
						kind == 1 ? rand_float(&seed) * 1e6f :
							    rand_float(&seed) * mag;
			}
			CK_CUDA(cudaMalloc((void **)&dx, nx * 4));
			CK_CUDA(cudaMalloc((void **)&dy, nx * 4));
			CK_CUDA(cudaMalloc((void **)&dd, nd));
			CK_CUDA(cudaMalloc((void **)&dm, nm * 2));
			CK_CUDA(cudaMemcpy(dx, x, nx * 4, cudaMemcpyHostToDevice));
			CK_CUDA(cudaMemset(dd, 0xab, nd));
			CK_CUDA(cudaMemset(dm, 0xab, nm * 2));
			CK_CUDA(cudaMemset(dy, 0xff, nx * 4)); /* NaN */

			ck_assert_int_eq(kvk_quantize_rows_cpu(x, rows, hd, bits, g,
							       d, m, NULL),
					 0);
			ck_assert_int_eq(kvk_quantize_rows_cuda(dx, rows, hd, bits,
								g, dd, dm, NULL),
					 0);
			CK_CUDA(cudaDeviceSynchronize());
			CK_CUDA(cudaMemcpy(d2, dd, nd, cudaMemcpyDeviceToHost));
			CK_CUDA(cudaMemcpy(m2, dm, nm * 2, cudaMemcpyDeviceToHost));
			at = first_diff(d, d2, nd);
			ck_assert_msg(at == nd,
				      "bits %u groups %u hd %u: data byte %zu "
				      "(row %zu): cpu %#x cuda %#x",
				      bits, g, hd, at,
				      at / kvq_row_bytes(hd, bits), d[at], d2[at]);
			if (bits != 16) {
				at = first_diff(m, m2, nm * 2);
				ck_assert_msg(at == nm * 2,
					      "bits %u groups %u hd %u: meta byte "
					      "%zu differs", bits, g, hd, at);
			}

			ck_assert_int_eq(kvk_dequantize_rows_cpu(d, m, rows, hd,
								 bits, g, y, NULL),
					 0);
			ck_assert_int_eq(kvk_dequantize_rows_cuda(dd, dm, rows,
								  hd, bits, g,
								  dy, NULL),
					 0);
			CK_CUDA(cudaDeviceSynchronize());
			CK_CUDA(cudaMemcpy(y2, dy, nx * 4, cudaMemcpyDeviceToHost));
			at = first_diff(y, y2, nx * 4);
			ck_assert_msg(at == nx * 4,
				      "bits %u groups %u hd %u: dequant value "
				      "%zu: cpu %g cuda %g",
				      bits, g, hd, at / 4, y[at / 4], y2[at / 4]);

			cudaFree(dx), cudaFree(dy), cudaFree(dd), cudaFree(dm);
			free(x), free(y), free(y2), free(d), free(d2), free(m),
				free(m2);
			checked++;
		}
	ck_assert_int_eq(checked, 13 * 5);
	ck_assert_int_eq(kvk_quantize_rows_cuda(NULL, 1, 100, 4, 1, NULL, NULL,
						NULL),
			 -EINVAL);
}
END_TEST
#else
START_TEST(test_quant_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_quant_gpu(void)
{
	Suite *s = suite_create("quant_gpu");
	TCase *tc = tcase_create("cuda_vs_cpu");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_quant_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
