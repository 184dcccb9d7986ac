// SPDX-License-Identifier: MIT
/*
 * bench_evict.c - `kvmm bench evict`: KV-Compress style per-head page
 * eviction (kvk_evict_cuda()) over Llama-3-8B shaped sequences (32 layers x
 * 8 kv-heads of head_dim 128, fp16 pages), freeing half of each sequence's
 * pages, beside the streaming-read ceiling measured in the same run.
 *
 * Bytes counted: every token's metric and position once (8 bytes), the
 * table entries, and each token the compaction moved (its K/V rows, metric
 * and position, read once and written once; counted after the last call:
 * slots below a list's new length whose position is not their own). The
 * kernel's selection reads the metrics once per radix pass (eight) and a
 * few times more per list for its cut, so the achieved figure against the
 * ceiling says how far the call is from one pass over what it must read.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvevict.h"
#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define GRAN (2ULL << 20)
#define REPS 7
#define LISTS (32 * 8)		/* layers x kv-heads */
#define HD 128
#define WINDOW 64

/* memory of one run: device (CUDA) or host (--cpu) */
static int m_alloc(int cpu, void **p, size_t n)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu)
		return cudaMalloc(p, n) == cudaSuccess ? 0 : -ENOMEM;
#endif
	*p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
	return *p ? 0 : -ENOMEM;
}

static void m_free(int cpu, void *p)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu) {
		cudaFree(p);
		return;
	}
#endif
	free(p);
}

/* @h rows of @w bytes from @src (pitch @sp) to @dst (pitch @dp) */
static int m_put2d(int cpu, void *dst, size_t dp, const void *src, size_t sp,
		   size_t w, size_t h)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu)
		return cudaMemcpy2D(dst, dp, src, sp, w, h,
				    cudaMemcpyHostToDevice) == cudaSuccess
			       ? 0 : -EIO;
#endif
	for (size_t r = 0; r < h; r++)
		memcpy((uint8_t *)dst + r * dp, (const uint8_t *)src + r * sp,
		       w);
	return 0;
}

static int m_put(int cpu, void *dst, const void *src, size_t n)
{
	return m_put2d(cpu, dst, n, src, n, n, 1);
}

static int m_get(int cpu, void *dst, const void *src, size_t n)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu)
		return cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost) ==
			       cudaSuccess ? 0 : -EIO;
#endif
	memcpy(dst, src, n);
	return 0;
}

/* @n segments of @seg bytes, @ps apart from @src, packed into @dst */
static int m_get_segs(int cpu, void *dst, const void *src, size_t ps,
		      size_t seg, size_t n)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu)
		return cudaMemcpy2D(dst, seg, src, ps, seg, n,
				    cudaMemcpyDeviceToHost) == cudaSuccess
			       ? 0 : -EIO;
#endif
	for (size_t r = 0; r < n; r++)
		memcpy((uint8_t *)dst + r * seg, (const uint8_t *)src + r * ps,
		       seg);
	return 0;
}

/*
 * count_moved() - tokens the last call moved: slots below each list's new
 * length whose position is no longer their own index (fill_pages() gives
 * token i of a list position i).
 */
static int count_moved(int cpu, const void *pool, const struct kva_layout *l,
		       uint32_t ps, uint32_t ppg, uint64_t npages,
		       uint32_t width, uint32_t lists, uint32_t ctx,
		       const uint32_t *ev, double *moved)
{
	size_t seg = (size_t)l->tokens * 4;
	int32_t *pos = malloc(seg * npages);
	int ret = pos ? 0 : -ENOMEM;

	for (uint64_t g = 0; !ret && g * ppg < npages; g++) {
		uint64_t n = npages - g * ppg < ppg ? npages - g * ppg : ppg;

		ret = m_get_segs(cpu, (uint8_t *)pos + g * ppg * seg,
				 (const uint8_t *)pool + g * GRAN + l->pos_off,
				 ps, seg, n);
	}
	*moved = 0;
	for (uint32_t li = 0; !ret && li < lists; li++)
		for (uint32_t i = 0; i < ctx - ev[li]; i++)
			*moved += pos[((size_t)li * width + i / l->tokens) *
					      l->tokens +
				      i % l->tokens] != (int32_t)i;
	free(pos);
	return ret;
}

static int m_fill(int cpu, void *p, int byte, size_t n)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu)
		return cudaMemset(p, byte, n) == cudaSuccess ? 0 : -EIO;
#endif
	memset(p, byte, n);
	return 0;
}

/* one timed call, in microseconds */
static int timed_evict(int cpu, const struct kvk_evict_args *a, double *us)
{
	(void)cpu;	/* unused without CUDA */
#ifdef KVMM_HAVE_CUDA
	if (!cpu) {
		cudaEvent_t e0, e1;
		float ms = 0;
		int ret;

		if (cudaEventCreate(&e0) != cudaSuccess)
			return -EIO;
		if (cudaEventCreate(&e1) != cudaSuccess) {
			cudaEventDestroy(e0);
			return -EIO;
		}
		cudaEventRecord(e0, 0);
		ret = kvk_evict_cuda(a, NULL);
		cudaEventRecord(e1, 0);
		if (!ret && (cudaEventSynchronize(e1) != cudaSuccess ||
			     cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess))
			ret = -EIO;
		cudaEventDestroy(e0);
		cudaEventDestroy(e1);
		*us = ms * 1e3;
		return ret;
	}
#endif
	{
		double t0 = kvmm_now_us();
		int ret = kvk_evict_cpu(a, NULL);

		*us = kvmm_now_us() - t0;
		return ret;
	}
}

struct result {
	double us, gbs, bytes, evicted, want, moved;
};

/*
 * the metric and position segments of every page: page p is page p % width
 * of list p / width (tables are the identity), so its token k has position
 * (p % width) * tokens + k; metrics are random. Granule g holds pages
 * g * ppg .., each segment one strided copy per granule.
 */
static int fill_pages(int cpu, void *pool, const struct kva_layout *l,
		      uint32_t ps, uint32_t ppg, uint64_t npages,
		      uint32_t width, uint64_t *seed)
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
		ret = m_put2d(cpu, dst + l->score_off, ps, m, seg, seg, n);
		if (!ret)
			ret = m_put2d(cpu, dst + l->pos_off, ps, pos, seg, seg,
				      n);
	}
	free(m);
	free(pos);
	return ret;
}

/* struct evict_mem - the arrays of one grid point, in the run's memory */
struct evict_mem {
	void *pool, *tab, *ntok, *base, *quota, *from, *ev, *scratch;
};

static void mem_free(int cpu, struct evict_mem *d)
{
	m_free(cpu, d->pool), m_free(cpu, d->tab), m_free(cpu, d->ntok);
	m_free(cpu, d->base), m_free(cpu, d->quota), m_free(cpu, d->from);
	m_free(cpu, d->ev), m_free(cpu, d->scratch);
}

/*
 * One grid point: @batch sequences of @ctx tokens in each of their LISTS
 * lists, positions 0 .. ctx - 1 per list, random metrics; the newest
 * WINDOW positions protected; the quota half of each sequence's pages.
 * The token counts and every page's metrics and positions are restored
 * before each repetition (the compaction moved survivors, protected ones
 * among them, into the holes), so every call sees the same state.
 */
static int run_point(int cpu, uint32_t batch, uint32_t ctx, uint64_t *seed,
		     struct result *res, struct kvmm_progress *prog)
{
	struct kva_tier tier = { 16, 16, 1, 1 };
	struct kva_layout l;
	struct kvk_evict_args a = { 0 };
	struct evict_mem d = { 0 };
	uint32_t lists = batch * LISTS, width, ppg;
	uint32_t *tables = NULL, *ntok = NULL, *base = NULL, *quota = NULL;
	uint32_t *ev_h = NULL;
	int32_t *from = NULL;
	uint64_t npages;
	size_t pool_bytes;
	double t[REPS];
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
	if (!tables || !ntok || !base || !quota || !from || !ev_h) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t p = 0; p < npages; p++)
		tables[p] = (uint32_t)p;
	for (uint32_t li = 0; li < lists; li++)
		ntok[2 * li] = ctx;
	for (uint32_t s = 0; s < batch; s++) {
		base[s] = s * LISTS;
		quota[s] = LISTS * width / 2;
		from[s] = (int32_t)ctx - WINDOW;
	}
	ret = m_alloc(cpu, &d.pool, pool_bytes);
	ret = ret ?: m_alloc(cpu, &d.tab, (size_t)npages * 4);
	ret = ret ?: m_alloc(cpu, &d.ntok, (size_t)lists * 8);
	ret = ret ?: m_alloc(cpu, &d.base, batch * 4);
	ret = ret ?: m_alloc(cpu, &d.quota, batch * 4);
	ret = ret ?: m_alloc(cpu, &d.from, batch * 4);
	ret = ret ?: m_alloc(cpu, &d.ev, (size_t)lists * 4);
	ret = ret ?: m_alloc(cpu, &d.scratch,
			     kvk_evict_scratch_bytes(batch, LISTS));
	ret = ret ?: m_fill(cpu, d.pool, 0x3c, pool_bytes);
	ret = ret ?: m_put(cpu, d.tab, tables, (size_t)npages * 4);
	ret = ret ?: m_put(cpu, d.base, base, batch * 4);
	ret = ret ?: m_put(cpu, d.quota, quota, batch * 4);
	ret = ret ?: m_put(cpu, d.from, from, batch * 4);
	if (ret)
		goto out;
	a.nr_seqs = batch, a.lists = LISTS, a.head_dim = HD;
	a.tier = (struct kvk_attn_tier){ 16, 16, 1, 1, l.tokens, l.k_off,
					  l.km_off, l.v_off, l.vm_off,
					  l.score_off, l.pos_off };
	a.pool = (uint64_t)(uintptr_t)d.pool, a.page_size = ps;
	a.pages_per_granule = ppg, a.tables = d.tab, a.width = width;
	a.ntokens = d.ntok, a.list_base = d.base, a.quota = d.quota;
	a.protect_from = d.from, a.sinks = 0, a.evicted = d.ev;
	a.scratch = d.scratch;
	for (int r = -1; r < REPS && !ret; r++) {
		uint64_t again = *seed;
		double us;

		ret = fill_pages(cpu, d.pool, &l, ps, ppg, npages, width,
				 &again);
		ret = ret ?: m_put(cpu, d.ntok, ntok, (size_t)lists * 8);
		ret = ret ?: timed_evict(cpu, &a, &us);
		if (!ret && r >= 0)
			t[r] = us;
		kvmm_progress_add(prog, 1);
	}
	ret = ret ?: m_get(cpu, ev_h, d.ev, (size_t)lists * 4);
	if (ret)
		goto out;
	res->evicted = 0;
	for (uint32_t li = 0; li < lists; li++)
		res->evicted += ev_h[li];
	res->want = (double)quota[0] * batch * l.tokens;
	ret = count_moved(cpu, d.pool, &l, ps, ppg, npages, width, lists, ctx,
			  ev_h, &res->moved);
	if (ret)
		goto out;
	/*
	 * bytes: each token's metric and position, the table, and every
	 * moved survivor's K/V rows, metric and position, read and written
	 */
	res->us = kvmm_median(t, REPS);
	res->bytes = (double)lists * ctx * 8 + (double)npages * 4 +
		     res->moved * 2.0 * (2 * HD * 2 + 8);
	res->gbs = res->bytes / (res->us * 1e-6) / 1e9;
out:
	mem_free(cpu, &d);
	free(tables), free(ntok), free(base), free(quota), free(from);
	free(ev_h);
	return ret;
}

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
		{ "cpu", no_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const uint32_t batches[] = { 1, 8 };
	static const uint32_t ctxs[] = { 1024, 8192 };
	struct kvmm_progress prog;
	uint64_t seed = 0x5eed;
	double ceil_gbs = 0;
	int json = 0, cpu = 0, first = 1, c, points;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cpu = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: kvmm bench evict [--cpu] [--json]\n"
			       "  Llama-3-8B lists (32 layers x 8 kv-heads, "
			       "head_dim 128, fp16 pages), random metrics;\n"
			       "  batch {1, 8} x context {1K, 8K}, half of "
			       "each sequence's pages freed\n"
			       "  --cpu: the CPU reference on host memory, "
			       "batch 1 only\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvmm bench evict [--cpu] "
					"[--json]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench evict: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	if (!cpu) {
#ifdef KVMM_HAVE_CUDA
		char why[256];

		if (kvrt_cuda_probe(why, sizeof(why))) {
			fprintf(stderr, "kvmm bench evict: no GPU: %s\n", why);
			return 1;
		}
		if (kvmm_read_ceiling(&ceil_gbs)) {
			fprintf(stderr, "kvmm bench evict: read ceiling "
				"failed\n");
			return 1;
		}
#else
		fprintf(stderr, "kvmm bench evict: built without CUDA (--cpu "
			"runs the CPU reference)\n");
		return 1;
#endif
	}
	if (json)
		printf("{\"bench\":\"evict\",\"device\":\"%s\","
		       "\"read_ceiling_gbs\":%.1f,\"points\":[",
		       cpu ? "cpu" : "cuda", ceil_gbs);
	else
	{
		char ce[64] = "no read ceiling on the CPU";

		if (!cpu)
			snprintf(ce, sizeof(ce), "read ceiling %.0f GB/s",
				 ceil_gbs);
		printf("kvmm bench evict (%s): %d lists of head_dim %d per "
		       "sequence, fp16 pages, half the pages freed; %s\n\n"
		       "%6s %6s %10s %12s %12s %10s %9s %7s\n",
		       cpu ? "cpu reference" : "cuda", LISTS, HD, ce, "batch",
		       "ctx", "us", "evicted", "moved", "MB", "GB/s",
		       "ceil%");
	}
	points = (cpu ? 1 : (int)ARRAY_SIZE(batches)) * ARRAY_SIZE(ctxs);
	kvmm_progress_start(&prog, "bench evict", "runs",
			    (uint64_t)points * (REPS + 1), json);
	for (size_t b = 0; b < ARRAY_SIZE(batches); b++)
		for (size_t ci = 0; ci < ARRAY_SIZE(ctxs); ci++) {
			struct result r = { 0 };
			int ret;

			if (cpu && batches[b] > 1)
				continue;
			ret = run_point(cpu, batches[b], ctxs[ci], &seed, &r,
					&prog);
			kvmm_progress_clear(&prog);
			if (ret) {
				fprintf(stderr, "kvmm bench evict: batch %u "
					"ctx %u: %s\n", batches[b], ctxs[ci],
					strerror(-ret));
				return 1;
			}
			if (r.evicted != r.want) {
				fprintf(stderr, "kvmm bench evict: batch %u "
					"ctx %u: evicted %.0f tokens, the "
					"quota is %.0f\n", batches[b],
					ctxs[ci], r.evicted, r.want);
				return 1;
			}
			if (json)
				printf("%s{\"batch\":%u,\"ctx\":%u,"
				       "\"us\":%.2f,\"evicted\":%.0f,"
				       "\"moved\":%.0f,\"bytes\":%.0f,"
				       "\"gbs\":%.1f}",
				       first ? "" : ",", batches[b], ctxs[ci],
				       r.us, r.evicted, r.moved, r.bytes,
				       r.gbs);
			else
				printf("%6u %6u %10.1f %12.0f %12.0f %10.1f "
				       "%9.1f %6.1f%%\n", batches[b], ctxs[ci],
				       r.us, r.evicted, r.moved, r.bytes / 1e6,
				       r.gbs,
				       ceil_gbs ? 100 * r.gbs / ceil_gbs : 0.0);
			first = 0;
		}
	kvmm_progress_end(&prog);
	if (json)
		printf("]}\n");
	return 0;
}
