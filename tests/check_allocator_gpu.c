// SPDX-License-Identifier: MIT
/*
 * check_allocator_gpu.c - the batched admit, trim, append and free kernels
 * against their CPU reference over 64K lists (256 sequences x 32 layers x
 * 8 kv-heads) with random prompts and tier splits: the pool's arrays are
 * mirrored to the device, both sides run the same op, and every array must
 * come back identical, refusals (-ENOSPC, -EINVAL) included. Also times one
 * batched append over the 64K lists.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define G KVRT_GRANULE_SIZE

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

#define CHECK_POOL(pool)                                                       \
	do {                                                                   \
		char __why[256] = "";                                          \
		int __r = kva_check((pool), __why, sizeof(__why));             \
		ck_assert_msg(__r == 0, "kva_check: %d %s", __r, __why);       \
	} while (0)

/* the device mirror of a pool: a view of device arrays */
struct mirror {
	struct kva_view v;
	uint64_t *ht; /* head, tail, err in one allocation */
	size_t ids, lists;
};

static void mirror_alloc(struct mirror *m, struct kva_pool *pool)
{
	m->ids = pool->nr_page_ids;
	m->lists = pool->nr_lists;
	kva_pool_view(pool, &m->v);
	CK_CUDA(cudaMalloc((void **)&m->v.ring, m->ids * 4));
	CK_CUDA(cudaMalloc((void **)&m->v.page_list, m->ids * 4));
	CK_CUDA(cudaMalloc((void **)&m->v.page_pos, m->ids * 4));
	CK_CUDA(cudaMalloc((void **)&m->v.table, m->lists * pool->width * 4));
	CK_CUDA(cudaMalloc((void **)&m->v.npages, m->lists * 8));
	CK_CUDA(cudaMalloc((void **)&m->v.ntokens, m->lists * 8));
	CK_CUDA(cudaMalloc((void **)&m->v.cnt, m->lists * 4));
	CK_CUDA(cudaMalloc((void **)&m->v.off, (m->lists + 1) * 8));
	CK_CUDA(cudaMalloc((void **)&m->ht, 3 * 8));
	m->v.head = &m->ht[0];
	m->v.tail = &m->ht[1];
	m->v.err = (int32_t *)&m->ht[2];
}

static void mirror_free(struct mirror *m)
{
	cudaFree(m->v.ring);
	cudaFree(m->v.page_list);
	cudaFree(m->v.page_pos);
	cudaFree(m->v.table);
	cudaFree(m->v.npages);
	cudaFree(m->v.ntokens);
	cudaFree(m->v.cnt);
	cudaFree(m->v.off);
	cudaFree(m->ht);
}

static void mirror_put(struct mirror *m, const struct kva_pool *pool)
{
	uint64_t ht[3] = {pool->head, pool->tail, 0};

	CK_CUDA(cudaMemcpy(m->v.ring, pool->ring, m->ids * 4,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->v.page_list, pool->page_list, m->ids * 4,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->v.page_pos, pool->page_pos, m->ids * 4,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->v.table, pool->table, m->lists * pool->width * 4,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->v.npages, pool->npages, m->lists * 8,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->v.ntokens, pool->ntokens, m->lists * 8,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(m->ht, ht, sizeof(ht), cudaMemcpyHostToDevice));
}

static void compare(const char *what, const void *dev, const void *host,
		    size_t bytes)
{
	void *buf = malloc(bytes);
	const uint32_t *a = buf, *b = host;

	CK_CUDA(cudaMemcpy(buf, dev, bytes, cudaMemcpyDeviceToHost));
	for (size_t i = 0; i < bytes / 4; i++)
		if (a[i] != b[i])
			ck_abort_msg("%s[%zu]: device %u, cpu %u", what, i,
				     a[i], b[i]);
	free(buf);
}

/* every array of the mirror equals the pool's; err equals @err */
static void mirror_compare(struct mirror *m, const struct kva_pool *pool,
			   int32_t err)
{
	uint64_t ht[3];

	CK_CUDA(cudaMemcpy(ht, m->ht, sizeof(ht), cudaMemcpyDeviceToHost));
	ck_assert_uint_eq(ht[0], pool->head);
	ck_assert_uint_eq(ht[1], pool->tail);
	ck_assert_int_eq((int32_t)ht[2], err);
	compare("ring", m->v.ring, pool->ring, m->ids * 4);
	compare("page_list", m->v.page_list, pool->page_list, m->ids * 4);
	compare("page_pos", m->v.page_pos, pool->page_pos, m->ids * 4);
	compare("table", m->v.table, pool->table, m->lists * pool->width * 4);
	compare("npages", m->v.npages, pool->npages, m->lists * 8);
	compare("ntokens", m->v.ntokens, pool->ntokens, m->lists * 8);
}

START_TEST(test_alloc_cuda_vs_cpu)
{
	static const struct kva_tier tiers[] = {
		{8, 4, 1, 2},
		{4, 2, 1, 1},
		{8, 4, 1, 1},
		{4, 2, 2, 4},
	};
	uint64_t seed = kvtest_seed("alloc_cuda_vs_cpu");
	const uint32_t nslots = 256, max = 256;
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 4096 * G};
	struct kva_pool_params p = {
		.va_bytes = 1200 * G,
		.budget_bytes = 1200 * G,
		.head_dim = 128,
		.nr_tiers = 4,
		.nr_slots = nslots,
		.nr_layers = 32,
		.nr_heads = 8,
		.max_tokens = max,
	};
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct kva_view hv;
	struct mirror m;
	uint32_t *slots, *prompt, *hi, *lo, lps, nk;
	uint32_t *dslots, *dprompt, *dhi, *dlo;
	cudaEvent_t e0, e1;
	float ms;

	memcpy(p.tiers, tiers, sizeof(tiers));
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	p.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&p, &pool), 0);
	lps = pool->lists_per_slot;
	nk = nslots * lps;
	ck_assert_uint_eq(nk, 65536);
	slots = malloc(nslots * 4);
	prompt = malloc(nslots * 4);
	hi = malloc(nk * 4);
	lo = malloc(nk * 4);
	for (uint32_t s = 0; s < nslots; s++) {
		slots[s] = s;
		prompt[s] = kvtest_rand(&seed) % 160;
	}
	ck_assert_int_eq(kva_pool_grow(pool, 1150), 0);
	for (uint32_t k = 0; k < nk; k++) {
		lo[k] = kvtest_rand(&seed) % (prompt[k / lps] + 1);
		hi[k] = prompt[k / lps] - lo[k];
	}
	kva_pool_view(pool, &hv);
	mirror_alloc(&m, pool);
	CK_CUDA(cudaMalloc((void **)&dslots, nslots * 4));
	CK_CUDA(cudaMalloc((void **)&dprompt, nslots * 4));
	CK_CUDA(cudaMalloc((void **)&dhi, nk * 4));
	CK_CUDA(cudaMalloc((void **)&dlo, nk * 4));
	CK_CUDA(cudaMemcpy(dslots, slots, nslots * 4, cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(dprompt, prompt, nslots * 4,
			   cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(dhi, hi, nk * 4, cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(dlo, lo, nk * 4, cudaMemcpyHostToDevice));

	/* admit every slot */
	mirror_put(&m, pool);
	ck_assert_int_eq(kva_admit_cuda(&m.v, dslots, dprompt, nslots, NULL),
			 0);
	CK_CUDA(cudaDeviceSynchronize());
	ck_assert_int_eq(kva_admit(pool, slots, prompt, nslots), 0);
	CHECK_POOL(pool);
	mirror_compare(&m, pool, 0);

	/* a trim that needs more than was reserved: refused on both sides */
	{
		uint32_t h = hi[nk / 2];

		hi[nk / 2] = 32 * (pool->width + 1);
		CK_CUDA(cudaMemcpy(dhi, hi, nk * 4, cudaMemcpyHostToDevice));
		ck_assert_int_eq(
			kva_trim_cuda(&m.v, dslots, nslots, dhi, dlo, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		ck_assert_int_eq(kva_trim_cpu(&hv, slots, nslots, hi, lo, NULL),
				 0);
		ck_assert_int_eq(pool->err, -EINVAL);
		mirror_compare(&m, pool, -EINVAL);
		hi[nk / 2] = h;
		CK_CUDA(cudaMemcpy(dhi, hi, nk * 4, cudaMemcpyHostToDevice));
	}
	/* trim: surplus back, low pages to the right */
	ck_assert_int_eq(kva_trim_cuda(&m.v, dslots, nslots, dhi, dlo, NULL),
			 0);
	CK_CUDA(cudaDeviceSynchronize());
	ck_assert_int_eq(kva_trim(pool, slots, nslots, hi, lo), 0);
	CHECK_POOL(pool);
	mirror_compare(&m, pool, 0);

	/* about half of the tiers exactly full */
	for (uint32_t l = 0; l < pool->nr_lists; l++) {
		uint32_t h = pool->npages[2 * l] * pool->layout[KVA_HI].tokens;
		uint32_t w =
			pool->npages[2 * l + 1] * pool->layout[KVA_LO].tokens;

		if (kvtest_rand(&seed) % 2 && h)
			h--;
		if (kvtest_rand(&seed) % 2 && w)
			w--;
		if (h + w > max)
			continue;
		ck_assert_int_eq(kva_set_tokens(pool, l, h, w), 0);
	}
	CHECK_POOL(pool);
	CK_CUDA(cudaEventCreate(&e0));
	CK_CUDA(cudaEventCreate(&e1));

	/* out of pages: both refuse and change nothing */
	{
		uint64_t tail = pool->tail;

		pool->tail = pool->head + 5; /* pretend 5 pages are free */
		mirror_put(&m, pool);
		ck_assert_int_eq(kva_append_cuda(&m.v, dslots, nslots, NULL),
				 0);
		CK_CUDA(cudaDeviceSynchronize());
		ck_assert_int_eq(kva_append_cpu(&hv, slots, nslots, NULL), 0);
		ck_assert_int_eq(pool->err, -ENOSPC);
		mirror_compare(&m, pool, -ENOSPC);
		pool->tail = tail;
		CHECK_POOL(pool);
	}

	/* warm up on a copy, then the timed run on a fresh copy */
	mirror_put(&m, pool);
	ck_assert_int_eq(kva_append_cuda(&m.v, dslots, nslots, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	mirror_put(&m, pool);
	CK_CUDA(cudaEventRecord(e0, NULL));
	ck_assert_int_eq(kva_append_cuda(&m.v, dslots, nslots, NULL), 0);
	CK_CUDA(cudaEventRecord(e1, NULL));
	CK_CUDA(cudaEventSynchronize(e1));
	CK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
	printf("# append over %u lists: %.1f us on the device "
	       "(issue target < 50 us)\n",
	       nk, ms * 1000.0f);
	fflush(stdout);
	ck_assert_int_eq(kva_append_cpu(&hv, slots, nslots, NULL), 0);
	ck_assert_int_eq(pool->err, 0);
	pool->nr_used += pool->off[nk];
	CHECK_POOL(pool);
	mirror_compare(&m, pool, 0);

	/* free a random half of the sequences */
	for (uint32_t s = nslots - 1; s > 0; s--) {
		uint32_t j = kvtest_rand(&seed) % (s + 1), x = slots[s];

		slots[s] = slots[j];
		slots[j] = x;
	}
	CK_CUDA(cudaMemcpy(dslots, slots, nslots * 4, cudaMemcpyHostToDevice));
	mirror_put(&m, pool);
	ck_assert_int_eq(kva_free_cuda(&m.v, dslots, nslots / 2, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	ck_assert_int_eq(kva_free(pool, slots, nslots / 2), 0);
	CHECK_POOL(pool);
	mirror_compare(&m, pool, 0);

	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(dslots);
	cudaFree(dprompt);
	cudaFree(dhi);
	cudaFree(dlo);
	mirror_free(&m);
	free(slots);
	free(prompt);
	free(hi);
	free(lo);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST
/*
 * Compaction's parallel parts: the page copy over 64 granules of random
 * bytes (half of the pages onto the other half) and the table rewrite of a
 * pool with half of its one-page lists freed, device against CPU. Also
 * reports the copy's bandwidth.
 */
START_TEST(test_compact_cuda_vs_cpu)
{
	static const struct kva_tier tiers[] = {
		{8, 4, 1, 2},
		{4, 2, 1, 1},
		{8, 4, 1, 1},
		{4, 2, 2, 4},
	};
	uint64_t seed = kvtest_seed("compact_cuda_vs_cpu");
	const uint32_t ngran = 64, ps = kva_page_size(128, tiers, 4);
	const uint32_t ppg = G / ps, npages = ngran * ppg, n = npages / 2;
	const size_t bytes = (size_t)ngran * G;
	uint8_t *h = malloc(bytes), *back = malloc(bytes), *d;
	uint32_t *perm = malloc(npages * 4), *dsrc, *ddst;
	cudaEvent_t e0, e1;
	float ms;
	const int reps = 20;

	ck_assert_uint_eq(ps, 6784);
	for (size_t i = 0; i < bytes / 8; i++)
		((uint64_t *)h)[i] = kvtest_rand(&seed);
	for (uint32_t i = 0; i < npages; i++)
		perm[i] = i;
	for (uint32_t i = npages - 1; i > 0; i--) {
		uint32_t j = kvtest_rand(&seed) % (i + 1), x = perm[i];

		perm[i] = perm[j];
		perm[j] = x;
	}
	CK_CUDA(cudaMalloc((void **)&d, bytes));
	CK_CUDA(cudaMalloc((void **)&dsrc, n * 4));
	CK_CUDA(cudaMalloc((void **)&ddst, n * 4));
	CK_CUDA(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(dsrc, perm, n * 4, cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(ddst, perm + n, n * 4, cudaMemcpyHostToDevice));
	CK_CUDA(cudaEventCreate(&e0));
	CK_CUDA(cudaEventCreate(&e1));
	/* sources and destinations are disjoint: repeating is idempotent */
	ck_assert_int_eq(kva_copy_pages_cuda((uint64_t)(uintptr_t)d, ps, ppg,
					     dsrc, ddst, n, NULL),
			 0);
	CK_CUDA(cudaEventRecord(e0, NULL));
	for (int r = 0; r < reps; r++)
		ck_assert_int_eq(kva_copy_pages_cuda((uint64_t)(uintptr_t)d, ps,
						     ppg, dsrc, ddst, n, NULL),
				 0);
	CK_CUDA(cudaEventRecord(e1, NULL));
	CK_CUDA(cudaEventSynchronize(e1));
	CK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
	printf("# page copy: %u pages of %u B in %.1f us: %.0f GB/s counting "
	       "read + write (device copy measured at ~3000 GB/s)\n",
	       n, ps, ms * 1000.0f / reps,
	       2.0 * n * ps * reps / (ms * 1e-3) / 1e9);
	fflush(stdout);
	ck_assert_int_eq(kva_copy_pages_cpu((uint64_t)(uintptr_t)h, ps, ppg,
					    perm, perm + n, n, NULL),
			 0);
	CK_CUDA(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost));
	for (size_t i = 0; i < bytes; i++)
		if (back[i] != h[i])
			ck_abort_msg("byte %zu (page %zu): device %u, cpu %u",
				     i, (size_t)((i / G) * ppg + (i % G) / ps),
				     back[i], h[i]);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(d);
	cudaFree(dsrc);
	cudaFree(ddst);
	free(h);
	free(back);
	free(perm);
}
END_TEST

START_TEST(test_rewrite_cuda_vs_cpu)
{
	static const struct kva_tier tiers[] = {
		{8, 4, 1, 2},
		{4, 2, 1, 1},
	};
	uint64_t seed = kvtest_seed("rewrite_cuda_vs_cpu");
	const uint32_t ngran = 16, nslots = ngran * 309 / 2;
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 4096 * G};
	struct kva_pool_params p = {
		.va_bytes = ngran * G,
		.budget_bytes = ngran * G,
		.head_dim = 128,
		.nr_tiers = 2,
		.nr_slots = nslots,
		.nr_layers = 1,
		.nr_heads = 2,
		.max_tokens = 32,
	};
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct kva_view hv;
	struct mirror m;
	uint32_t *slots, *one, *hi, *lo, *src, *dst, *dsrc, *ddst;
	uint32_t nmoves = 0, nf = 0;

	memcpy(p.tiers, tiers, sizeof(tiers));
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	p.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&p, &pool), 0);
	ck_assert_int_eq(kva_pool_grow(pool, ngran), 0);
	slots = malloc(nslots * 4);
	one = malloc(nslots * 4);
	hi = malloc(nslots * 2 * 4);
	lo = calloc(nslots * 2, 4);
	src = malloc(pool->nr_page_ids * 4);
	dst = malloc(pool->nr_page_ids * 4);
	for (uint32_t s = 0; s < nslots; s++) {
		slots[s] = s;
		one[s] = 1;
	}
	for (uint32_t k = 0; k < nslots * 2; k++)
		hi[k] = 1;
	ck_assert_int_eq(kva_admit(pool, slots, one, nslots), 0);
	ck_assert_int_eq(kva_trim(pool, slots, nslots, hi, lo), 0);
	for (uint32_t s = nslots - 1; s > 0; s--) {
		uint32_t j = kvtest_rand(&seed) % (s + 1), x = slots[s];

		slots[s] = slots[j];
		slots[j] = x;
	}
	ck_assert_int_eq(kva_free(pool, slots, nslots / 2), 0);
	CHECK_POOL(pool);
	/* every owned page of the first half of the pages moves to a free
	 * page of the second half */
	for (uint32_t q = pool->nr_page_ids / 2; q < pool->nr_page_ids; q++)
		if (pool->page_list[q] == KVA_OWNER_FREE)
			dst[nf++] = q;
	for (uint32_t q = 0; q < pool->nr_page_ids / 2 && nmoves < nf; q++)
		if (pool->page_list[q] < KVA_OWNER_FREE)
			src[nmoves++] = q;
	ck_assert_uint_gt(nmoves, 100);
	mirror_alloc(&m, pool);
	mirror_put(&m, pool);
	CK_CUDA(cudaMalloc((void **)&dsrc, nmoves * 4));
	CK_CUDA(cudaMalloc((void **)&ddst, nmoves * 4));
	CK_CUDA(cudaMemcpy(dsrc, src, nmoves * 4, cudaMemcpyHostToDevice));
	CK_CUDA(cudaMemcpy(ddst, dst, nmoves * 4, cudaMemcpyHostToDevice));
	ck_assert_int_eq(kva_rewrite_cuda(&m.v, dsrc, ddst, nmoves, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	kva_pool_view(pool, &hv);
	ck_assert_int_eq(kva_rewrite_cpu(&hv, src, dst, nmoves, NULL), 0);
	mirror_compare(&m, pool, 0);
	cudaFree(dsrc);
	cudaFree(ddst);
	mirror_free(&m);
	free(slots);
	free(one);
	free(hi);
	free(lo);
	free(src);
	free(dst);
	/* the ring no longer matches the reverse map: no kva_check here */
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST
#else
START_TEST(test_alloc_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_compact_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_rewrite_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_allocator_gpu(void)
{
	Suite *s = suite_create("allocator_gpu");
	TCase *tc = tcase_create("cuda_vs_cpu");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_alloc_cuda_vs_cpu);
	KV_ADD(tc, test_compact_cuda_vs_cpu);
	KV_ADD(tc, test_rewrite_cuda_vs_cpu);
	suite_add_tcase(s, tc);
	return s;
}
