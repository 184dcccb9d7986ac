// SPDX-License-Identifier: MIT
/*
 * check_select_gpu.c - page summaries and page selection on the GPU against
 * the CPU references on the same random pools: summaries byte for byte
 * (fp32 and fp16 rows, rebuilt and appended token by token), selections
 * identical (tables and counts) for fp32, fp16 and bf16 queries, GQA 1..8,
 * head_dim 64..256, small and large k, windows and sinks.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "kvtest.h"
#include "select_common.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static const struct kva_tier pairs[][2] = {
	{ { 16, 16, 1, 1 }, { 16, 16, 1, 1 } },
	{ { 16, 16, 1, 1 }, { 4, 4, 2, 2 } },
};

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

START_TEST(test_select_cuda_vs_cpu)
{
	static const uint32_t hds[] = { 64, 128, 256 };
	uint64_t seed = kvtest_seed("select_cuda_vs_cpu");
	int cases = 0;

	for (uint32_t G = 1; G <= KVK_ATTN_MAX_GROUP; G++)
		for (size_t h = 0; h < ARRAY_SIZE(hds); h++) {
			enum kvk_dtype qdt = (enum kvk_dtype)((G + h) % 3);
			enum kvk_dtype sdt = (G + 2 * h) % 2 ? KVK_F16 : KVK_F32;
			struct attn_case c;
			struct kvk_summary_args u, du;
			struct kvk_select_args s, ds;
			uint32_t *upd, nr, W, *tab, *ntok, *gtab, *gntok;
			size_t sb, nl;
			uint8_t *sum, *gsum;
			void *dsum, *dtab, *dntok;

			attn_case_make(&c, &seed, 4, 2, G, hds[h], pairs[h % 2],
				       3000, qdt);
			W = c.a.width, nl = c.nr_lists;
			sb = sel_pool_pages(&c) *
			     kvk_summary_row_bytes(hds[h], sdt);
			sum = malloc(sb), gsum = malloc(sb);
			memset(sum, 0, sb);
			nr = sel_hi_updates(&c, &upd);
			/* half the pages rebuilt, half appended in two parts */
			for (uint32_t i = 0; i < nr; i += 2)
				if (upd[3 * i + 2] > 1) {
					upd[3 * i + 1] = upd[3 * i + 2] / 2;
					upd[3 * i + 2] -= upd[3 * i + 1];
				}
			u = sel_summary_args(&c, sum, sdt, upd, nr);
			du = u;
			du.pool = (uint64_t)(uintptr_t)to_dev(c.pool, c.pool_bytes);
			du.upd = to_dev(upd, nr * 12);
			du.summary = dsum = to_dev(sum, sb);
			/* the first halves, then the rest */
			for (uint32_t i = 0; i < nr; i += 2)
				if (upd[3 * i + 1]) {
					uint32_t one[3] = { upd[3 * i], 0, upd[3 * i + 1] };
					struct kvk_summary_args f = sel_summary_args(&c, sum, sdt, one, 1);

					ck_assert_int_eq(kvk_page_summary_cpu(&f, NULL), 0);
				}
			CK_CUDA(cudaMemcpy(dsum, sum, sb, cudaMemcpyHostToDevice));
			ck_assert_int_eq(kvk_page_summary_cpu(&u, NULL), 0);
			ck_assert_int_eq(kvk_page_summary_cuda(&du, NULL), 0);
			CK_CUDA(cudaMemcpy(gsum, dsum, sb, cudaMemcpyDeviceToHost));
			ck_assert_mem_eq(gsum, sum, sb);

			tab = calloc(nl * W, 4), gtab = calloc(nl * W, 4);
			ntok = calloc(nl * 2, 4), gntok = calloc(nl * 2, 4);
			s = (struct kvk_select_args){
				.attn = c.a, .summary = sum, .sum_dtype = sdt,
				.topk = 1 + (uint32_t)(kvtest_rand(&seed) % (cases % 4 ? 24 : 400)),
				.window = (uint32_t)(kvtest_rand(&seed) % 100),
				.sink = (uint32_t)(kvtest_rand(&seed) % 3),
				.sel_tables = tab, .sel_ntokens = ntok,
			};
			ds = s;
			ds.attn.pool = du.pool;
			ds.attn.q = to_dev(c.q, nl * G * hds[h] * kvk_dtype_size(qdt));
			ds.attn.out = to_dev(c.out, 4);
			ds.attn.tables = to_dev(c.tables, nl * W * 4);
			ds.attn.ntokens = to_dev(c.ntokens, nl * 8);
			ds.attn.list_base = to_dev(c.list_base, c.a.nr_seqs * 4);
			ds.summary = dsum;
			ds.sel_tables = dtab = to_dev(tab, nl * W * 4);
			ds.sel_ntokens = dntok = to_dev(ntok, nl * 8);
			ck_assert_int_eq(kvk_select_pages_cpu(&s, NULL), 0);
			ck_assert_int_eq(kvk_select_pages_cuda(&ds, NULL), 0);
			CK_CUDA(cudaDeviceSynchronize());
			CK_CUDA(cudaMemcpy(gtab, dtab, nl * W * 4, cudaMemcpyDeviceToHost));
			CK_CUDA(cudaMemcpy(gntok, dntok, nl * 8, cudaMemcpyDeviceToHost));
			ck_assert_mem_eq(gntok, ntok, nl * 8);
			ck_assert_mem_eq(gtab, tab, nl * W * 4);

			cudaFree((void *)(uintptr_t)du.pool);
			cudaFree((void *)du.upd);
			cudaFree(dsum), cudaFree(dtab), cudaFree(dntok);
			cudaFree((void *)ds.attn.q), cudaFree(ds.attn.out);
			cudaFree((void *)ds.attn.tables);
			cudaFree((void *)ds.attn.ntokens);
			cudaFree((void *)ds.attn.list_base);
			free(upd), free(sum), free(gsum);
			free(tab), free(gtab), free(ntok), free(gntok);
			attn_case_free(&c);
			cases++;
		}
	printf("select_cuda_vs_cpu: %d cases identical\n", cases);
	ck_assert_int_eq(cases, 24);
}
END_TEST
#else
START_TEST(test_select_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_select_gpu(void)
{
	Suite *s = suite_create("select_gpu");
	TCase *tc = tcase_create("pages");

	tcase_set_timeout(tc, 300);
	KV_ADD(tc, test_select_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
