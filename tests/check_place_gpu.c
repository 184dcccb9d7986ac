// SPDX-License-Identifier: MIT
/*
 * check_place_gpu.c - the migration rewrite on the GPU against its CPU
 * reference: random batches with chained moves (a victim out, a hot page
 * into its place) over random tables; tables and reverse map identical.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm_base.h"
#include "kvtest.h"
#include "migrate.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

START_TEST(test_migrate_rewrite_cuda_vs_cpu)
{
	uint64_t seed = kvtest_seed("migrate_rewrite_cuda_vs_cpu");

	for (int round = 0; round < 20; round++) {
		uint32_t lists = 1 + kvtest_rand(&seed) % 64, width = 64;
		uint32_t pages = lists * width * 2, n = 0;
		size_t tb = (size_t)lists * width * 4;
		uint32_t *table = malloc(tb), *pl = malloc(pages * 4);
		uint32_t *pp = malloc(pages * 4), *src = malloc(pages * 4);
		uint32_t *dst = malloc(pages * 4), *li = malloc(pages * 4);
		uint32_t *po = malloc(pages * 4), *freep = malloc(pages * 4);
		uint8_t *leaves = malloc(pages);
		uint32_t nfree = 0, *gt, *gl, *gp;
		struct kvk_migrate_args a, d;
		void *dt, *dl, *dp, *ds, *dd, *dli, *dpo, *dlv;

		/* pages 0..lists*width-1 owned in order, the rest free */
		for (uint32_t i = 0; i < lists * width; i++) {
			table[i] = i;
			pl[i] = i / width;
			pp[i] = i % width;
		}
		for (uint32_t p = lists * width; p < pages; p++) {
			pl[p] = UINT32_MAX - 1;
			pp[p] = UINT32_MAX;
			freep[nfree++] = p;
		}
		/* demote a victim v to a free page, promote h into v */
		for (uint32_t k = 0; k < 200 && nfree; k++) {
			uint32_t v = kvtest_rand(&seed) % (lists * width);
			uint32_t h = kvtest_rand(&seed) % (lists * width);
			int used = 0;

			for (uint32_t i = 0; i < n; i++)
				used |= src[i] == v || src[i] == h ||
					dst[i] == v || dst[i] == h;
			if (used || v == h)
				continue;
			src[n] = v, dst[n] = freep[--nfree];
			li[n] = pl[v], po[n] = pp[v], leaves[n++] = 0;
			src[n] = h, dst[n] = v;
			li[n] = pl[h], po[n] = pp[h], leaves[n++] = 1;
		}
		a = (struct kvk_migrate_args){
			.table = table, .width = width, .page_list = pl,
			.page_pos = pp, .nr_lists = lists, .nr_pages = pages,
			.n = n, .src = src, .dst = dst, .list = li, .pos = po,
			.src_leaves = leaves, .src_owner = 12345,
		};
		dt = to_dev(table, tb);
		dl = to_dev(pl, pages * 4);
		dp = to_dev(pp, pages * 4);
		ds = to_dev(src, n * 4);
		dd = to_dev(dst, n * 4);
		dli = to_dev(li, n * 4);
		dpo = to_dev(po, n * 4);
		dlv = to_dev(leaves, n);
		d = a;
		d.table = dt, d.page_list = dl, d.page_pos = dp;
		d.src = ds, d.dst = dd, d.list = dli, d.pos = dpo;
		d.src_leaves = dlv;
		ck_assert_int_eq(kvk_migrate_rewrite_cpu(&a, NULL), 0);
		ck_assert_int_eq(kvk_migrate_rewrite_cuda(&d, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		gt = malloc(tb), gl = malloc(pages * 4), gp = malloc(pages * 4);
		CK_CUDA(cudaMemcpy(gt, dt, tb, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(gl, dl, pages * 4, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(gp, dp, pages * 4, cudaMemcpyDeviceToHost));
		ck_assert_int_eq(memcmp(gt, table, tb), 0);
		ck_assert_int_eq(memcmp(gl, pl, pages * 4), 0);
		ck_assert_int_eq(memcmp(gp, pp, pages * 4), 0);
		cudaFree(dt), cudaFree(dl), cudaFree(dp), cudaFree(ds);
		cudaFree(dd), cudaFree(dli), cudaFree(dpo), cudaFree(dlv);
		free(gt), free(gl), free(gp), free(table), free(pl), free(pp);
		free(src), free(dst), free(li), free(po), free(freep);
		free(leaves);
	}
}
END_TEST
#else
START_TEST(test_migrate_rewrite_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_place_gpu(void)
{
	Suite *s = suite_create("place_gpu");
	TCase *tc = tcase_create("migrate");

	KV_ADD(tc, test_migrate_rewrite_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
