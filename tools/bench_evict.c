// SPDX-License-Identifier: MIT
/*
 * bench_evict.c - `kvmm bench evict`: KV-Compress style per-head page
 * eviction (kvk_evict_cuda()) over Llama-3-8B shaped sequences (32 layers x
 * 8 kv-heads of head_dim 128, fp16 pages), freeing half of each sequence's
 * pages, beside the streaming-read ceiling measured in the same run.
 *
 * Bytes counted: every token's metric and position once (8 bytes), the
 * table entries, and the K/V rows of the tokens the compaction moves (read
 * once, written once). The kernel's selection reads the metrics once per
 * step of its binary search, so the achieved figure against the ceiling
 * says how far the call is from one pass over what it must read.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvevict.h"
#include "kvk_mem.h"
#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define GRAN (2ULL << 20)
#define REPS 7
#define LISTS (32 * 8)		/* layers x kv-heads */
#define HD 128
#define WINDOW 64

#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench evict: %s: %s\n", #x,      \
				cudaGetErrorString(__e));                      \
			return -EIO;                                           \
		}                                                              \
	} while (0)

/* the ceiling: the streaming-read kernel over 4 GiB */
static int read_ceiling(double *gbs)
{
	size_t len = 4ULL << 30;
	double t[REPS];
	cudaEvent_t a, b;
	uint64_t *sum;
	void *p;
	float ms;

	CU(cudaMalloc(&p, len));
	CU(cudaMalloc((void **)&sum, 8));
	CU(cudaMemset(p, 0x3c, len));
	CU(cudaEventCreate(&a));
	CU(cudaEventCreate(&b));
	for (int r = -2; r < REPS; r++) {
		CU(cudaEventRecord(a, 0));
		kvk_read_sum_cuda(p, len, sum, NULL);
		CU(cudaEventRecord(b, 0));
		CU(cudaEventSynchronize(b));
		CU(cudaEventElapsedTime(&ms, a, b));
		if (r >= 0)
			t[r] = ms;
	}
	*gbs = len / (kvmm_median(t, REPS) * 1e-3) / 1e9;
	cudaEventDestroy(a), cudaEventDestroy(b);
	cudaFree(p), cudaFree(sum);
	return 0;
}

struct result {
	double us, gbs, bytes, evicted;
};

/*
 * the metric and position segments of every page: page p is page p % width
 * of list p / width (tables are the identity), so its token k has position
 * (p % width) * tokens + k; metrics are random. Granule g holds pages
 * g * ppg .., each segment one strided copy per granule.
 */
static int fill_pages(void *pool, const struct kva_layout *l, uint32_t ps,
		      uint32_t ppg, uint64_t npages, uint32_t width,
		      uint64_t *seed)
{
	size_t seg = (size_t)l->tokens * 4;
	float *m = malloc(seg * ppg);
	int32_t *pos = malloc(seg * ppg);
	int ret = 0;

	if (!m || !pos)
		ret = -ENOMEM;
	for (uint64_t g = 0; !ret && g * ppg < npages; g++) {
		uint64_t n = npages - g * ppg < ppg ? npages - g * ppg : ppg;
		uint8_t *dst = (uint8_t *)pool + g * GRAN;

		for (uint64_t p = 0; p < n; p++)
			for (uint32_t k = 0; k < l->tokens; k++) {
				m[p * l->tokens + k] =
					(float)(kvmm_rand(seed) >> 40) *
					0x1.0p-24f;
				pos[p * l->tokens + k] = (int32_t)(
					(g * ppg + p) % width * l->tokens + k);
			}
		if (cudaMemcpy2D(dst + l->score_off, ps, m, seg, seg, n,
				 cudaMemcpyHostToDevice) != cudaSuccess ||
		    cudaMemcpy2D(dst + l->pos_off, ps, pos, seg, seg, n,
				 cudaMemcpyHostToDevice) != cudaSuccess)
			ret = -EIO;
	}
	free(m);
	free(pos);
	return ret;
}

/*
 * One grid point: @batch sequences of @ctx tokens in each of their LISTS
 * lists, positions 0 .. ctx - 1 per list, random metrics; the newest
 * WINDOW positions protected; the quota half of each sequence's pages.
 * ntokens is restored before every repetition (the compaction moves
 * survivors into holes; the lists then hold duplicates of valid tokens,
 * which costs the next call the same).
 */
static int run_point(uint32_t batch, uint32_t ctx, uint64_t *seed,
		     struct result *res)
{
	struct kva_tier tier = { 16, 16, 1, 1 };
	struct kva_layout l;
	struct kvk_evict_args a = { 0 };
	uint32_t lists = batch * LISTS, width, ppg, *tables, *ntok, *base;
	uint32_t *quota, *ev_h;
	int32_t *from;
	uint64_t npages;
	size_t pool_bytes;
	double t[REPS], moved = 0;
	cudaEvent_t e0, e1;
	void *pool, *dtab, *dntok, *dbase, *dquota, *dfrom, *dev;
	float ms;
	int ps = kva_page_size(HD, &tier, 1), ret = 0;

	if (ps < 0 || kva_page_layout(HD, ps, &tier, &l))
		return -EINVAL;
	ppg = GRAN / ps;
	width = (ctx + l.tokens - 1) / l.tokens;
	npages = (uint64_t)lists * width;
	pool_bytes = (npages + ppg - 1) / ppg * GRAN;
	tables = malloc((size_t)npages * 4);
	ntok = calloc((size_t)lists * 2, 4);
	base = malloc(batch * 4);
	quota = malloc(batch * 4);
	from = malloc(batch * 4);
	ev_h = malloc((size_t)lists * 4);
	if (!tables || !ntok || !base || !quota || !from || !ev_h)
		return -ENOMEM;
	for (uint64_t p = 0; p < npages; p++)
		tables[p] = (uint32_t)p;
	for (uint32_t li = 0; li < lists; li++)
		ntok[2 * li] = ctx;
	for (uint32_t s = 0; s < batch; s++) {
		base[s] = s * LISTS;
		quota[s] = LISTS * width / 2;
		from[s] = (int32_t)ctx - WINDOW;
	}
	CU(cudaMalloc(&pool, pool_bytes));
	CU(cudaMemset(pool, 0x3c, pool_bytes));
	ret = fill_pages(pool, &l, ps, ppg, npages, width, seed);
	if (ret)
		return ret;
	CU(cudaMalloc(&dtab, (size_t)npages * 4));
	CU(cudaMemcpy(dtab, tables, (size_t)npages * 4,
		      cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dntok, (size_t)lists * 8));
	CU(cudaMalloc(&dbase, batch * 4));
	CU(cudaMemcpy(dbase, base, batch * 4, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dquota, batch * 4));
	CU(cudaMemcpy(dquota, quota, batch * 4, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dfrom, batch * 4));
	CU(cudaMemcpy(dfrom, from, batch * 4, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dev, (size_t)lists * 4));
	a.nr_seqs = batch, a.lists = LISTS, a.head_dim = HD;
	a.tier = (struct kvk_attn_tier){ 16, 16, 1, 1, l.tokens, l.k_off,
					  l.km_off, l.v_off, l.vm_off,
					  l.score_off, l.pos_off };
	a.pool = (uint64_t)(uintptr_t)pool, a.page_size = ps;
	a.pages_per_granule = ppg, a.tables = dtab, a.width = width;
	a.ntokens = dntok, a.list_base = dbase, a.quota = dquota;
	a.protect_from = dfrom, a.sinks = 0, a.evicted = dev;
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	for (int r = -2; r < REPS && !ret; r++) {
		CU(cudaMemcpy(dntok, ntok, (size_t)lists * 8,
			      cudaMemcpyHostToDevice));
		CU(cudaEventRecord(e0, 0));
		ret = kvk_evict_cuda(&a, NULL);
		CU(cudaEventRecord(e1, 0));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&ms, e0, e1));
		if (r >= 0)
			t[r] = ms;
	}
	CU(cudaGetLastError());
	if (!ret) {
		CU(cudaMemcpy(ev_h, dev, (size_t)lists * 4,
			      cudaMemcpyDeviceToHost));
		res->evicted = 0;
		for (uint32_t li = 0; li < lists; li++)
			res->evicted += ev_h[li];
		/*
		 * survivors moved into holes: at most one per evicted token
		 * below the new length; counted as the evicted tokens, an
		 * upper bound of the copies
		 */
		moved = res->evicted;
		res->us = kvmm_median(t, REPS) * 1e3;
		res->bytes = (double)lists * ctx * 8 + (double)npages * 4 +
			     moved * 2.0 * 2 * HD * 2;
		res->gbs = res->bytes / (res->us * 1e-6) / 1e9;
	}
	cudaEventDestroy(e0), cudaEventDestroy(e1);
	cudaFree(pool), cudaFree(dtab), cudaFree(dntok), cudaFree(dbase);
	cudaFree(dquota), cudaFree(dfrom), cudaFree(dev);
	free(tables), free(ntok), free(base), free(quota), free(from);
	free(ev_h);
	return ret;
}
#endif

/**
 * cmd_bench_evict() - `kvmm bench evict`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a run failed or there is no GPU, 2 for bad
 * arguments.
 */
int cmd_bench_evict(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int json = 0, c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: kvmm bench evict [--json]\n"
			       "  Llama-3-8B lists (32 layers x 8 kv-heads, "
			       "head_dim 128, fp16 pages), random metrics;\n"
			       "  batch {1, 8} x context {1K, 8K}, half of "
			       "each sequence's pages freed\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvmm bench evict [--json]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench evict: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
#ifdef KVMM_HAVE_CUDA
	{
		static const uint32_t batches[] = { 1, 8 };
		static const uint32_t ctxs[] = { 1024, 8192 };
		uint64_t seed = 0x5eed;
		char why[256];
		double ceil_gbs;
		int first = 1;

		if (kvrt_cuda_probe(why, sizeof(why))) {
			fprintf(stderr, "kvmm bench evict: no GPU: %s\n", why);
			return 1;
		}
		if (read_ceiling(&ceil_gbs))
			return 1;
		if (json)
			printf("{\"bench\":\"evict\",\"read_ceiling_gbs\":%.1f,"
			       "\"points\":[", ceil_gbs);
		else
			printf("kvmm bench evict: %d lists of head_dim %d per "
			       "sequence, fp16 pages, half the pages freed; "
			       "read ceiling %.0f GB/s\n\n%6s %6s %10s %12s "
			       "%10s %9s %7s\n", LISTS, HD, ceil_gbs, "batch",
			       "ctx", "us", "evicted", "MB", "GB/s", "ceil%");
		for (size_t b = 0; b < ARRAY_SIZE(batches); b++)
			for (size_t ci = 0; ci < ARRAY_SIZE(ctxs); ci++) {
				struct result r = { 0 };

				if (run_point(batches[b], ctxs[ci], &seed, &r))
					return 1;
				if (json)
					printf("%s{\"batch\":%u,\"ctx\":%u,"
					       "\"us\":%.2f,\"evicted\":%.0f,"
					       "\"bytes\":%.0f,\"gbs\":%.1f}",
					       first ? "" : ",", batches[b],
					       ctxs[ci], r.us, r.evicted,
					       r.bytes, r.gbs);
				else
					printf("%6u %6u %10.1f %12.0f %10.1f "
					       "%9.1f %6.1f%%\n", batches[b],
					       ctxs[ci], r.us, r.evicted,
					       r.bytes / 1e6, r.gbs,
					       100 * r.gbs / ceil_gbs);
				first = 0;
			}
		if (json)
			printf("]}\n");
		return 0;
	}
#else
	(void)json;
	fprintf(stderr, "kvmm bench evict: built without CUDA\n");
	return 1;
#endif
}
