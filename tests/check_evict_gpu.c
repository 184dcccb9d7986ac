// SPDX-License-Identifier: MIT
/*
 * check_evict_gpu.c - per-head page eviction, CUDA kernel against the CPU
 * reference on fresh random inputs: every byte of every page, the token
 * counts and the per-list eviction counts must be identical.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict_common.h"
#include "kvtest.h"

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

static void from_dev(void *h, void *d, size_t n)
{
	CK_CUDA(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
	CK_CUDA(cudaFree(d));
}

static void run_case(uint64_t *seed, uint32_t nr_seqs, uint32_t lists,
		     uint32_t hd, const struct kva_tier *tier, uint32_t width)
{
	struct evict_case c, g;
	struct kvk_evict_args d;
	size_t nl = (size_t)nr_seqs * lists, sb;
	void *pool, *nt, *ev;

	evict_case_make(&c, seed, nr_seqs, lists, hd, tier, width);
	evict_case_copy(&g, &c);
	d = c.a;
	pool = to_dev(c.pool, c.pool_bytes);
	nt = to_dev(c.ntokens, 2 * c.nr_rows * 4);
	ev = to_dev(c.evicted, nl * 4);
	d.pool = (uint64_t)(uintptr_t)pool;
	d.ntokens = nt;
	d.evicted = ev;
	d.tables = to_dev(c.tables, c.nr_rows * width * 4);
	d.list_base = to_dev(c.list_base, nr_seqs * 4);
	d.quota = to_dev(c.quota, nr_seqs * 4);
	d.protect_from = to_dev(c.protect_from, nr_seqs * 4);
	ck_assert_int_eq(kvk_evict_cuda(&d, NULL), -EINVAL); /* no scratch */
	sb = kvk_evict_scratch_bytes(nr_seqs, lists);
	CK_CUDA(cudaMalloc(&d.scratch, sb));
	/* stale state from an earlier call must not matter */
	CK_CUDA(cudaMemset(d.scratch, 0x5a, sb));
	ck_assert_int_eq(kvk_evict_cuda(&d, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	ck_assert_int_eq(kvk_evict_cpu(&c.a, NULL), 0);
	from_dev(g.pool, pool, c.pool_bytes);
	from_dev(g.ntokens, nt, 2 * c.nr_rows * 4);
	from_dev(g.evicted, ev, nl * 4);
	CK_CUDA(cudaFree((void *)d.tables));
	CK_CUDA(cudaFree((void *)d.list_base));
	CK_CUDA(cudaFree((void *)d.quota));
	CK_CUDA(cudaFree((void *)d.protect_from));
	CK_CUDA(cudaFree(d.scratch));
	ck_assert_mem_eq(g.evicted, c.evicted, nl * 4);
	ck_assert_mem_eq(g.ntokens, c.ntokens, 2 * c.nr_rows * 4);
	if (memcmp(g.pool, c.pool, c.pool_bytes))
		for (size_t b = 0; b < c.pool_bytes; b++)
			ck_assert_msg(g.pool[b] == c.pool[b],
				      "pool byte %zu: cuda %02x cpu %02x", b,
				      g.pool[b], c.pool[b]);
	evict_case_free(&g);
	evict_case_free(&c);
}

START_TEST(test_evict_cuda_vs_cpu)
{
	static const struct kva_tier tiers[] = {
		{ 16, 16, 1, 1 }, { 8, 4, 1, 2 }, { 4, 2, 2, 4 }, { 1, 1, 4, 1 },
	};
	static const uint32_t hds[] = { 64, 128, 256 };
	uint64_t seed = kvtest_seed(__func__);

	for (int r = 0; r < 16; r++) {
		const struct kva_tier *t = &tiers[kvtest_rand(&seed) % 4];

		run_case(&seed, 1 + (uint32_t)(kvtest_rand(&seed) % 6),
			 1 + (uint32_t)(kvtest_rand(&seed) % 40),
			 hds[kvtest_rand(&seed) % 3], t,
			 1 + (uint32_t)(kvtest_rand(&seed) % 8));
	}
}
END_TEST
#else
START_TEST(test_evict_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_evict_gpu(void)
{
	Suite *s = suite_create("evict_gpu");
	TCase *tc = tcase_create("cuda");

	tcase_set_timeout(tc, 300);
	KV_ADD(tc, test_evict_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
