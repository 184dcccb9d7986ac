// SPDX-License-Identifier: MIT
/*
 * check_qweight_gpu.c - the 8- and 4-bit weight kernels on the GPU against
 * their CPU references on fresh random matrices: the expansion bit for bit
 * (fp32, fp16, bf16), the GEMV within 1e-4 relative L2 (a wrong index is
 * 1e-1 or more) for Q8 and Q4,
 * fp32 and fp16 activations, 1..4 tokens, 1, 2, 4 and 8 rows per warp, with
 * and without the fused RMSNorm, three output segments or GLU, beta 0 and 1.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtest.h"
#include "qweight.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * (1.0 / 9007199254740992.0)) *
		       2.0f - 1.0f;
}

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	if (p)
		CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
	double e = 0, r = 0;

	for (size_t i = 0; i < n; i++) {
		e += (a[i] - b[i]) * (double)(a[i] - b[i]);
		r += b[i] * (double)b[i];
	}
	return sqrt(e / (r + 1e-30));
}

START_TEST(test_qweight_cuda_vs_cpu)
{
	static const enum llm_qw_fmt fmts[] = { LLM_QW8, LLM_QW4 };
	static const enum kvk_dtype odt[] = { KVK_F32, KVK_F16, KVK_BF16 };
	static const char *const rws[] = { "1", "2", "4", "8" };
	uint64_t seed = kvtest_seed("qweight_cuda_vs_cpu");
	int cases = 0;

	for (int fi = 0; fi < 2; fi++) {
		enum llm_qw_fmt f = fmts[fi];
		int n = 2 * (300 + kvtest_rand(&seed) % 100);
		int k = 32 * (40 + kvtest_rand(&seed) % 100);
		long ldx = k + 8;
		size_t qb = (size_t)n * llm_qw_row_bytes(f, k);
		size_t mb = (size_t)n * llm_qw_meta_bytes(f, k);
		size_t ny = (size_t)LLM_GEMV_MAX_TOK * (n + 5);
		float *src = malloc((size_t)n * k * 4);
		uint8_t *q = malloc(qb), *meta = malloc(mb);
		float *x = malloc(LLM_GEMV_MAX_TOK * ldx * 4);
		uint16_t *xh = malloc(LLM_GEMV_MAX_TOK * ldx * 2);
		float *g = malloc((size_t)k * 4), *y0 = malloc(ny * 4);
		float *yh = malloc(ny * 4), *yd = malloc(ny * 4);
		void *hd = malloc((size_t)n * k * 4), *dd = malloc((size_t)n * k * 4);
		void *dq, *dm, *dx, *dxh, *dg, *dy, *dout;
		struct llm_qw hw, dw;

		for (size_t i = 0; i < (size_t)n * k; i++)
			src[i] = frand(&seed) * 0.05f *
				 (1 + (float)((i / 32) % 5));
		for (long i = 0; i < LLM_GEMV_MAX_TOK * ldx; i++)
			x[i] = frand(&seed);
		for (int i = 0; i < k; i++)
			g[i] = 1.0f + 0.2f * frand(&seed);
		for (size_t i = 0; i < ny; i++)
			y0[i] = frand(&seed);
		kvk_convert_from_f32(xh, x, LLM_GEMV_MAX_TOK * ldx, KVK_F16);
		ck_assert_int_eq(llm_qw_quantize_rows(f, src, n, k, q, meta), 0);
		dq = to_dev(q, qb), dm = to_dev(meta, mb);
		dx = to_dev(x, LLM_GEMV_MAX_TOK * ldx * 4);
		dxh = to_dev(xh, LLM_GEMV_MAX_TOK * ldx * 2);
		dg = to_dev(g, (size_t)k * 4);
		dy = to_dev(NULL, ny * 4);
		dout = to_dev(NULL, (size_t)n * k * 4);
		hw = (struct llm_qw){ f, q, meta };
		dw = (struct llm_qw){ f, dq, dm };

		/* the expansion, bit for bit */
		for (int o = 0; o < 3; o++) {
			size_t b = (size_t)n * k * kvk_dtype_size(odt[o]);

			ck_assert_int_eq(llm_qw_dequant_cpu(hd, odt[o], &hw, n, k,
							    NULL), 0);
			ck_assert_int_eq(llm_qw_dequant_cuda(dout, odt[o], &dw,
							     n, k, NULL), 0);
			CK_CUDA(cudaMemcpy(dd, dout, b, cudaMemcpyDeviceToHost));
			ck_assert_msg(!memcmp(hd, dd, b), "dequant Q%d to %s",
				      f, kvk_dtype_name(odt[o]));
			cases++;
		}
		/* the GEMV */
		for (size_t r = 0; r < ARRAY_SIZE(rws); r++) {
			setenv("KVMM_QGEMV_ROWS", rws[r], 1);
			for (int T = 1; T <= LLM_GEMV_MAX_TOK; T++)
				for (int v = 0; v < 6; v++) {
					bool fh = v == 2, glu = v >= 3;
					bool nrm = v % 2 == 1;
					float beta = v == 1 || v == 4 ? 1.0f : 0.0f;
					int rows = glu ? n / 2 : n;
					int end[3] = { rows / 3, rows / 3 + 8, rows };
					struct llm_gemv_out ho = {
						glu ? 1 : 3, { 0 }, { NULL },
						{ 0 }, glu };
					struct llm_gemv_out dO;
					size_t off = 0;
					double e;

					for (int s = 0; s < ho.n_seg; s++) {
						int rr = glu ? rows :
							 end[s] - (s ? end[s - 1] : 0);

						ho.end[s] = glu ? rows : end[s];
						ho.ld[s] = rr + s;
						ho.y[s] = yh + off;
						off += (size_t)T * (rr + s);
					}
					dO = ho;
					for (int s = 0; s < ho.n_seg; s++)
						dO.y[s] = (float *)dy +
							  (ho.y[s] - yh);
					memcpy(yh, y0, ny * 4);
					CK_CUDA(cudaMemcpy(dy, y0, ny * 4,
						cudaMemcpyHostToDevice));
					ck_assert_int_eq(llm_qgemv_cpu(&hw,
						fh ? (void *)xh : (void *)x,
						fh ? KVK_F16 : KVK_F32, ldx, T,
						n, k, nrm ? g : NULL, 1e-5f,
						&ho, beta, NULL), 0);
					ck_assert_int_eq(llm_qgemv_cuda(&dw,
						fh ? dxh : dx,
						fh ? KVK_F16 : KVK_F32, ldx, T,
						n, k, nrm ? dg : NULL, 1e-5f,
						&dO, beta, NULL), 0);
					CK_CUDA(cudaMemcpy(yd, dy, ny * 4,
						cudaMemcpyDeviceToHost));
					e = rel_l2(yd, yh, ny);
					ck_assert_msg(e < 1e-4, "qgemv Q%d rows %s "
						      "T %d v %d: rel L2 %.3g",
						      f, rws[r], T, v, e);
					cases++;
				}
		}
		unsetenv("KVMM_QGEMV_ROWS");
		cudaFree(dq), cudaFree(dm), cudaFree(dx), cudaFree(dxh);
		cudaFree(dg), cudaFree(dy), cudaFree(dout);
		free(src), free(q), free(meta), free(x), free(xh), free(g);
		free(y0), free(yh), free(yd), free(hd), free(dd);
	}
	printf("qweight_cuda_vs_cpu: %d cases agree\n", cases);
	ck_assert_int_eq(cases, 2 * (3 + 4 * LLM_GEMV_MAX_TOK * 6));
}
END_TEST
#else
START_TEST(test_qweight_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_qweight_gpu(void)
{
	Suite *s = suite_create("qweight_gpu");
	TCase *tc = tcase_create("kernels");

	tcase_set_timeout(tc, 300);
	KV_ADD(tc, test_qweight_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
