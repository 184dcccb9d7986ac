// SPDX-License-Identifier: MIT
/*
 * bench_compact.c - `kvmm bench compact`: fill a pool with one-page lists,
 * free half of the pages at random, run one kva_compact() pass and report
 * the bytes moved, the granules released, fragmentation before and after,
 * and the page copy's bandwidth (bytes read + written per second) beside
 * the device copy bandwidth measured in the same run.
 *
 * On the cuda backend the pool is device-resident and the pass is the real
 * one: kva_compact() plans on the host and copies the pages on the device
 * with kva_copy_pages_cuda(), timed with the CUDA events the pool records
 * around it (kva_compact_timing()). Beside it, two figures as before: the
 * page-copy function replaying the pass's own moves over a buffer with the
 * pool's geometry (median of --reps), and the device copy ceiling
 * (cudaMemcpy). On the host backend the pass copies through the runtime
 * and the replay runs kva_copy_pages_cpu(). Every page's contents are
 * checked after the pass and after the replay; kva_check() runs after each
 * step.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define G KVRT_GRANULE_SIZE
#define MAX_REPS 1001
#define GOAL_RELEASED_PCT 45.0
#define GOAL_COPY_PCT 75.0
#define CEIL_BYTES (2ULL << 30)	/* device copy ceiling buffer: 1 GiB copied */
#define CEIL_MIN_REPS 5		/* host ceiling: fastest of at least */

static const struct kva_tier bc_tiers[] = {
	{ 8, 4, 1, 2 },
	{ 4, 2, 1, 1 },
	{ 8, 4, 1, 1 },
	{ 4, 2, 2, 4 },
};

/* Fragmentation of one moment; see "Benchmarks" in the allocator doc. */
struct frag {
	uint32_t granules;		/* mapped */
	uint64_t used_pages;
	uint64_t free_pages;		/* in mapped granules */
	uint64_t free_bytes;		/* free pages + granules given back */
	uint64_t unusable_bytes;	/* free pages in granules still used */
	double ratio;			/* unusable / free */
};

struct compact_bench {
	struct kvrt_ctx *ctx;		/* the pool's (cuda or host) */
	struct kva_pool *pool;
	struct kva_compact_control cc;
	int cc_live;
	uint32_t granules, reps;
	uint64_t seed;
	uint32_t *slots;
	uint32_t nfree;
	struct frag before, after;
	uint32_t released;
	double pass_us;			/* kva_compact() wall time */
	double pass_copy_us;		/* the pass's own page copy */
	double pass_copy_gbs;		/* read + write */
	int device_pool;
	double copy_us;			/* page copy, median */
	double copy_gbs;		/* read + write */
	double ceil_gbs;		/* device (host) copy, read+write */
	uint64_t ceil_bytes;		/* bytes the ceiling copies */
	const char *copy_how, *ceil_how;
};

static int check_pool(struct compact_bench *b, const char *when)
{
	char why[256] = "";
	int ret = kva_check(b->pool, why, sizeof(why));

	if (ret)
		fprintf(stderr, "kvmm bench compact: kva_check %s: %s (%s)\n",
			when, strerror(-ret), why);
	return ret;
}

/*
 * Free bytes count the free pages of mapped granules and every granule
 * given back since the start (whole: it is usable by anyone again);
 * unusable bytes are the free pages of granules that still hold a used
 * page, which can be neither released nor used outside the pool.
 */
static void frag_measure(struct compact_bench *b, struct frag *f)
{
	struct kva_pool *p = b->pool;
	uint32_t ppg = p->pages_per_granule;
	uint64_t unusable = 0;

	memset(f, 0, sizeof(*f));
	for (uint32_t g = 0; g < p->nr_gslots; g++) {
		uint32_t used = 0;

		if (p->gran_mapped[g] != KVA_GRAN_MAPPED)
			continue;
		f->granules++;
		for (uint32_t j = 0; j < ppg; j++)
			used += p->page_list[g * ppg + j] < KVA_OWNER_FREE;
		f->used_pages += used;
		f->free_pages += ppg - used;
		if (used)
			unusable += ppg - used;
	}
	f->free_bytes = f->free_pages * p->page_size +
			(uint64_t)(b->granules - f->granules) * G;
	f->unusable_bytes = unusable * p->page_size;
	f->ratio = f->free_bytes ? (double)f->unusable_bytes / f->free_bytes
				 : 0;
}

/* the word at @w of a page that list @l (or page id @l) filled */
static inline uint64_t pattern(uint64_t l, uint64_t w)
{
	return (l + 1) << 32 | w;
}

static void page_fill(uint64_t addr, uint32_t bytes, uint64_t l)
{
	uint64_t *q = (uint64_t *)(uintptr_t)addr;

	for (uint32_t w = 0; w < bytes / 8; w++)
		q[w] = pattern(l, w);
}

static int page_verify(uint64_t addr, uint32_t bytes, uint64_t l)
{
	const uint64_t *q = (const uint64_t *)(uintptr_t)addr;

	for (uint32_t w = 0; w < bytes / 8; w++)
		if (q[w] != pattern(l, w))
			return -EIO;
	return 0;
}

/*
 * Every page of @granules granules owned by a one-page list (one list per
 * slot), filled with the list's pattern; then half of the lists, chosen at
 * random, freed in one batched call.
 */
/* fill every owned page of every mapped granule with its owner's pattern,
 * or check that it holds it, through the runtime (any backend) */
static int pages_io(struct compact_bench *b, int verify)
{
	struct kva_pool *p = b->pool;
	uint32_t ppg = p->pages_per_granule;
	uint8_t *buf = malloc(G);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint32_t g = 0; g < p->nr_gslots && !ret; g++) {
		uint64_t a = p->base + (uint64_t)g * G;

		if (p->gran_mapped[g] != KVA_GRAN_MAPPED)
			continue;
		if (verify)
			ret = kvrt_memcpy_from(b->ctx, buf, a, G);
		for (uint32_t j = 0; j < ppg && !ret; j++) {
			uint32_t q = g * ppg + j, l = p->page_list[q];
			uint64_t at = (uint64_t)(uintptr_t)buf +
				      (uint64_t)j * p->page_size;

			if (l >= KVA_OWNER_FREE)
				continue;
			if (!verify) {
				page_fill(at, p->page_size, l);
			} else if (page_verify(at, p->page_size, l)) {
				fprintf(stderr, "kvmm bench compact: list %u: "
					"page %u lost its contents\n", l, q);
				ret = -EIO;
			}
		}
		if (!verify && !ret)
			ret = kvrt_memcpy_to(b->ctx, a, buf, G);
	}
	free(buf);
	return ret;
}

static int setup(struct compact_bench *b, enum kvrt_backend_kind kind)
{
	struct kvrt_ctx_opts o = {
		.backend = kind == KVRT_BACKEND_CUDA ? KVRT_BACKEND_CUDA
						     : KVRT_BACKEND_HOST,
		.host_mem_bytes = (uint64_t)b->granules * G,
	};
	struct kva_pool_params p = {
		.va_bytes = (uint64_t)b->granules * G,
		.budget_bytes = (uint64_t)b->granules * G,
		.head_dim = 128,
		.nr_tiers = ARRAY_SIZE(bc_tiers),
		.nr_layers = 1,
		.nr_heads = 1,
		.max_tokens = 64,
		.flags = kind == KVRT_BACKEND_CUDA ? KVA_POOL_DEVICE : 0,
	};
	uint32_t *one = NULL, *zero = NULL, n;
	uint64_t seed = b->seed;
	struct kva_pool *pool;
	int ps, ret;

	memcpy(p.tiers, bc_tiers, sizeof(bc_tiers));
	ps = kva_page_size(p.head_dim, p.tiers, p.nr_tiers);
	if (ps < 0)
		return ps;
	n = b->granules * (uint32_t)(G / ps);
	p.nr_slots = n;
	ret = kvrt_ctx_create(&o, &b->ctx);
	if (ret)
		return ret;
	p.ctx = b->ctx;
	ret = kva_pool_create(&p, &b->pool);
	if (ret)
		return ret;
	pool = b->pool;
	ret = kva_pool_grow(pool, b->granules);
	if (ret)
		return ret;
	b->slots = malloc(n * 4);
	one = malloc(n * 4);
	zero = calloc(n, 4);
	if (!b->slots || !one || !zero) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t s = 0; s < n; s++) {
		b->slots[s] = s;
		one[s] = 1;
	}
	ret = kva_admit(pool, b->slots, one, n);
	if (!ret)
		ret = kva_trim(pool, b->slots, n, one, zero);
	if (!ret)
		ret = kva_pool_sync(pool);
	if (!ret && pool->nr_used != (uint64_t)b->granules *
					    pool->pages_per_granule)
		ret = -EIO;
	if (!ret)
		ret = kva_pool_sync(pool);
	if (!ret)
		ret = pages_io(b, 0);
	if (ret)
		goto out;
	b->device_pool = kva_pool_is_device(pool);
	for (uint32_t s = n - 1; s > 0; s--) {
		uint32_t j = kvmm_rand(&seed) % (s + 1), x = b->slots[s];

		b->slots[s] = b->slots[j];
		b->slots[j] = x;
	}
	b->nfree = n / 2;
	ret = kva_free(pool, b->slots, b->nfree);
	if (!ret)
		ret = check_pool(b, "after the half free");
out:
	free(one);
	free(zero);
	return ret;
}

/* one pass, all the way (no byte budget) */
static int compact(struct compact_bench *b)
{
	struct kva_pool *pool = b->pool;
	uint32_t n = pool->nr_slots;
	double t0;
	int ret;

	ret = kva_compact_init(&b->cc, pool, 0);
	if (ret)
		return ret;
	b->cc_live = 1;
	frag_measure(b, &b->before);
	t0 = kvmm_now_us();
	ret = kva_compact(pool, &b->cc);
	b->pass_us = kvmm_now_us() - t0;
	if (!ret)
		ret = kva_compact_timing(pool, &b->cc);
	if (ret) {
		fprintf(stderr, "kvmm bench compact: kva_compact: %s (%s)\n",
			strerror(-ret), kvrt_ctx_last_error(b->ctx));
		return ret;
	}
	b->pass_copy_us = b->cc.copy_us;
	b->pass_copy_gbs = b->pass_copy_us > 0 ?
		2.0 * b->cc.bytes_moved / b->pass_copy_us / 1e3 : 0;
	ret = kva_compact_release(pool, KVRT_SHRINK_WAIT);
	if (ret < 0) {
		fprintf(stderr, "kvmm bench compact: release: %s\n",
			strerror(-ret));
		return ret;
	}
	/* a device pool: read the device's tables back before checking */
	ret = kva_pool_sync(pool);
	if (ret)
		return ret;
	ret = check_pool(b, "after compaction");
	if (ret)
		return ret;
	b->released = b->before.granules - pool->nr_granules;
	if (b->cc.granules_released != b->released) {
		fprintf(stderr, "kvmm bench compact: %" PRIu64 " granules "
			"released by the pass, %u fewer mapped\n",
			b->cc.granules_released, b->released);
		return -EIO;
	}
	frag_measure(b, &b->after);
	/* the surviving lists' contents followed their pages */
	for (uint32_t i = b->nfree; i < n; i++) {
		uint32_t l = b->slots[i];
		uint32_t p = pool->table[(size_t)l * pool->width];

		if (pool->page_list[p] != l) {
			fprintf(stderr, "kvmm bench compact: list %u: page %u "
				"owned by %u\n", l, p, pool->page_list[p]);
			return -EIO;
		}
	}
	return pages_io(b, 1);
}

/* page id -> page id whose contents it holds after the moves */
static uint32_t *expected_owner(struct compact_bench *b)
{
	uint32_t ids = b->pool->nr_page_ids;
	uint32_t *e = malloc((size_t)ids * 4);

	if (!e)
		return NULL;
	for (uint32_t q = 0; q < ids; q++)
		e[q] = q;
	for (uint32_t i = 0; i < b->cc.nr_moves; i++)
		e[b->cc.dst[i]] = b->cc.src[i];
	return e;
}

/* a buffer with the pool's geometry: page q holds pattern(q) */
static void buf_fill(struct compact_bench *b, uint8_t *buf)
{
	struct kva_pool *p = b->pool;

	for (uint32_t q = 0; q < p->nr_page_ids; q++)
		page_fill((uint64_t)(uintptr_t)buf +
				  (uint64_t)(q / p->pages_per_granule) * G +
				  (uint64_t)(q % p->pages_per_granule) *
					  p->page_size,
			  p->page_size, q);
}

static int buf_verify(struct compact_bench *b, const uint8_t *buf)
{
	struct kva_pool *p = b->pool;
	uint32_t *e = expected_owner(b);
	int ret = 0;

	if (!e)
		return -ENOMEM;
	for (uint32_t q = 0; q < p->nr_page_ids && !ret; q++) {
		uint64_t a = (uint64_t)(uintptr_t)buf +
			     (uint64_t)(q / p->pages_per_granule) * G +
			     (uint64_t)(q % p->pages_per_granule) *
				     p->page_size;

		if (page_verify(a, p->page_size, e[q])) {
			fprintf(stderr, "kvmm bench compact: replayed copy: "
				"page %u does not hold page %u\n", q, e[q]);
			ret = -EIO;
		}
	}
	free(e);
	return ret;
}

static int replay_host(struct compact_bench *b)
{
	struct kva_pool *p = b->pool;
	size_t bytes = (size_t)p->nr_gslots * G, half = bytes / 2, ceil_bytes;
	uint8_t *buf = malloc(bytes);
	double best;
	double *t = calloc(b->reps, sizeof(double));
	int ret = -ENOMEM;

	if (!buf || !t)
		goto out;
	buf_fill(b, buf);
	for (int r = -1; r < (int)b->reps; r++) {
		double t0 = kvmm_now_us();

		kva_copy_pages_cpu((uint64_t)(uintptr_t)buf, p->page_size,
				   p->pages_per_granule, b->cc.src, b->cc.dst,
				   b->cc.nr_moves, NULL);
		if (r >= 0)
			t[r] = kvmm_now_us() - t0;
	}
	b->copy_us = kvmm_median(t, b->reps);
	ret = buf_verify(b, buf);
	if (ret)
		goto out;
	/*
	 * The ceiling: one memcpy of as many bytes as the pass moved (like
	 * for like: the same bytes, in or out of the caches alike), the
	 * fastest of at least CEIL_MIN_REPS runs after the buffer is faulted
	 * in. A median of a few runs of a different size swung with the
	 * caches and the machine's load, far under the copy it bounds.
	 */
	ceil_bytes = b->cc.bytes_moved < half ? b->cc.bytes_moved : half;
	if (!ceil_bytes)
		ceil_bytes = half;
	memset(buf + half, 0, half);
	best = 0;
	for (int r = -1; r < (int)(b->reps > CEIL_MIN_REPS ? b->reps :
				   CEIL_MIN_REPS); r++) {
		double t0 = kvmm_now_us(), us;

		memcpy(buf + half, buf, ceil_bytes);
		us = kvmm_now_us() - t0;
		if (r >= 0 && (!best || us < best))
			best = us;
	}
	b->ceil_bytes = ceil_bytes;
	b->ceil_gbs = 2.0 * ceil_bytes / best / 1e3;
	b->copy_how = "kva_copy_pages_cpu()";
	b->ceil_how = "memcpy of the bytes moved, one thread, fastest";
out:
	free(buf);
	free(t);
	return ret;
}

#ifdef KVMM_HAVE_CUDA
#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench compact: %s: %s\n", #x,    \
				cudaGetErrorString(__e));                      \
			ret = -EIO;                                            \
			goto out;                                              \
		}                                                              \
	} while (0)

#define WARMUP 2

/*
 * WARMUP + @reps runs of @what (0: page copy, 1: device memcpy) queued back
 * to back on @st with an event between each two, so that the device never
 * waits for a launch; the median of the timed intervals, in ms.
 */
static int time_cuda(struct compact_bench *b, int what, uint8_t *d,
		     const uint32_t *dsrc, const uint32_t *ddst, void *c,
		     size_t half, cudaStream_t st, double *ms_med)
{
	struct kva_pool *p = b->pool;
	const int nr = WARMUP + b->reps;
	double *t = calloc(b->reps, sizeof(double));
	cudaEvent_t *e = calloc(nr + 1, sizeof(cudaEvent_t));
	int ne = 0, ret = 0;

	if (!t || !e) {
		ret = -ENOMEM;
		goto out;
	}
	for (; ne < nr + 1; ne++)
		CU(cudaEventCreate(&e[ne]));
	CU(cudaEventRecord(e[0], st));
	for (int r = 0; r < nr; r++) {
		if (what == 0)
			ret = kva_copy_pages_cuda((uint64_t)(uintptr_t)d,
						  p->page_size,
						  p->pages_per_granule, dsrc,
						  ddst, b->cc.nr_moves, st);
		else
			CU(cudaMemcpyAsync((uint8_t *)c + half, c, half,
					   cudaMemcpyDeviceToDevice, st));
		if (ret) {
			fprintf(stderr, "kvmm bench compact: "
				"kva_copy_pages_cuda: %s\n", strerror(-ret));
			goto out;
		}
		CU(cudaEventRecord(e[r + 1], st));
	}
	CU(cudaEventSynchronize(e[nr]));
	for (int r = WARMUP; r < nr; r++) {
		float ms;

		CU(cudaEventElapsedTime(&ms, e[r], e[r + 1]));
		t[r - WARMUP] = ms;
	}
	*ms_med = kvmm_median(t, b->reps);
out:
	if (st)
		cudaStreamSynchronize(st);
	for (int i = 0; i < ne; i++)
		cudaEventDestroy(e[i]);
	free(e);
	free(t);
	return ret;
}

/* launch the page-copy kernel once (page 0 onto itself), so that the
 * pass's timed copy does not include loading it */
static int warm_copy(struct compact_bench *b)
{
	uint32_t *dz = NULL;
	int ret = 0;

	CU(cudaMalloc((void **)&dz, 4));
	CU(cudaMemset(dz, 0, 4));
	ret = kva_copy_pages_cuda(b->pool->base, b->pool->page_size,
				  b->pool->pages_per_granule, dz, dz, 1, NULL);
	if (!ret)
		CU(cudaDeviceSynchronize());
out:
	cudaFree(dz);
	return ret;
}

static int replay_cuda(struct compact_bench *b)
{
	struct kva_pool *p = b->pool;
	size_t bytes = (size_t)p->nr_gslots * G, mv = b->cc.nr_moves * 4ULL;
	uint8_t *h = malloc(bytes), *d = NULL;
	uint32_t *dsrc = NULL, *ddst = NULL;
	void *c = NULL;
	cudaStream_t st = NULL;
	double ms;
	int ret = 0;

	if (!h)
		return -ENOMEM;
	buf_fill(b, h);
	CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
	CU(cudaMalloc((void **)&d, bytes));
	CU(cudaMalloc((void **)&dsrc, mv ? mv : 4));
	CU(cudaMalloc((void **)&ddst, mv ? mv : 4));
	CU(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
	if (mv) {
		CU(cudaMemcpy(dsrc, b->cc.src, mv, cudaMemcpyHostToDevice));
		CU(cudaMemcpy(ddst, b->cc.dst, mv, cudaMemcpyHostToDevice));
	}
	CU(cudaDeviceSynchronize());
	/* sources and destinations are disjoint: every run copies the same */
	ret = time_cuda(b, 0, d, dsrc, ddst, NULL, 0, st, &ms);
	if (ret)
		goto out;
	b->copy_us = ms * 1e3;
	CU(cudaStreamSynchronize(st));
	memset(h, 0, bytes);
	CU(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
	ret = buf_verify(b, h);
	if (ret)
		goto out;
	CU(cudaFree(d));
	d = NULL;
	/* the ceiling: half of a 2 GiB buffer onto the other half */
	CU(cudaMalloc(&c, CEIL_BYTES));
	CU(cudaMemset(c, 0x5a, CEIL_BYTES));
	CU(cudaDeviceSynchronize());
	ret = time_cuda(b, 1, NULL, NULL, NULL, c, CEIL_BYTES / 2, st, &ms);
	if (ret)
		goto out;
	b->ceil_gbs = (double)CEIL_BYTES / (ms * 1e-3) / 1e9;
	b->ceil_bytes = CEIL_BYTES / 2;
	b->copy_how = "kva_copy_pages_cuda()";
	b->ceil_how = "cudaMemcpy device to device, 1 GiB";
out:
	if (st)
		cudaStreamSynchronize(st);
	cudaFree(d);
	cudaFree(dsrc);
	cudaFree(ddst);
	cudaFree(c);
	if (st)
		cudaStreamDestroy(st);
	free(h);
	return ret;
}
#endif

static void print_json(struct compact_bench *b, const char *backend)
{
	const struct frag *f[2] = { &b->before, &b->after };
	const char *k[2] = { "before", "after" };

	printf("{\"bench\":\"compact\",\"backend\":\"%s\",\"granules\":%u,"
	       "\"page_size\":%u,\"pages_per_granule\":%u,\"seed\":%" PRIu64
	       ",\"reps\":%u,\"stopped\":\"%s\",\"pages_moved\":%" PRIu64
	       ",\"bytes_moved\":%" PRIu64 ",\"granules_released\":%u,"
	       "\"released_pct\":%.2f,\"pass_us\":%.1f,\"copy_us\":%.2f,"
	       "\"copy_gbs\":%.1f,\"device_copy_gbs\":%.1f,\"copy_pct\":%.2f,"
	       "\"device_pool\":%d,\"pass_copy_us\":%.2f,"
	       "\"pass_copy_gbs\":%.1f,\"pass_copy_pct\":%.2f,"
	       "\"ceiling_bytes\":%" PRIu64 ","
	       "\"goal\":{\"released_pct\":%.0f,\"copy_pct\":%.0f}",
	       backend, b->granules, b->pool->page_size,
	       b->pool->pages_per_granule, b->seed, b->reps,
	       kva_compact_reason(b->cc.result), b->cc.pages_moved,
	       b->cc.bytes_moved, b->released,
	       100.0 * b->released / b->granules, b->pass_us, b->copy_us,
	       b->copy_gbs, b->ceil_gbs, 100.0 * b->copy_gbs / b->ceil_gbs,
	       b->device_pool, b->pass_copy_us, b->pass_copy_gbs,
	       100.0 * b->pass_copy_gbs / b->ceil_gbs, b->ceil_bytes,
	       GOAL_RELEASED_PCT, GOAL_COPY_PCT);
	for (int i = 0; i < 2; i++)
		printf(",\"%s\":{\"granules\":%u,\"used_pages\":%" PRIu64
		       ",\"free_pages\":%" PRIu64 ",\"free_bytes\":%" PRIu64
		       ",\"unusable_bytes\":%" PRIu64
		       ",\"fragmentation\":%.4f}",
		       k[i], f[i]->granules, f[i]->used_pages,
		       f[i]->free_pages, f[i]->free_bytes,
		       f[i]->unusable_bytes, f[i]->ratio);
	printf("}\n");
}

static void print_text(struct compact_bench *b, const char *backend)
{
	const struct kva_pool *p = b->pool;
	const double mib = 1024.0 * 1024.0;
	double rel = 100.0 * b->released / b->granules;
	double pct = 100.0 * b->copy_gbs / b->ceil_gbs;

	printf("kvmm bench compact: backend %s, %u granules of 2 MiB, %u pages "
	       "of %u B each, seed %" PRIu64 ", median of %u\n",
	       backend, b->granules, p->pages_per_granule, p->page_size,
	       b->seed, b->reps);
	printf("%u one-page lists, %u freed at random; one kva_compact() "
	       "pass, stopped: %s\n\n",
	       p->nr_slots, b->nfree, kva_compact_reason(b->cc.result));
	printf("%-34s %12s %12s\n", "", "before", "after");
	printf("%-34s %12u %12u\n", "granules mapped", b->before.granules,
	       b->after.granules);
	printf("%-34s %12" PRIu64 " %12" PRIu64 "\n", "used pages",
	       b->before.used_pages, b->after.used_pages);
	printf("%-34s %12" PRIu64 " %12" PRIu64 "\n", "free pages (mapped)",
	       b->before.free_pages, b->after.free_pages);
	printf("%-34s %12.1f %12.1f\n", "free MiB (+ granules given back)",
	       b->before.free_bytes / mib, b->after.free_bytes / mib);
	printf("%-34s %12.1f %12.1f\n", "free but unusable MiB",
	       b->before.unusable_bytes / mib, b->after.unusable_bytes / mib);
	printf("%-34s %11.1f%% %11.1f%%\n", "fragmentation (unusable / free)",
	       100 * b->before.ratio, 100 * b->after.ratio);
	printf("\n%-34s %20s %12s\n", "figure", "measured", "goal");
	printf("%-34s %11u (%5.1f%%) %12s\n", "granules released", b->released,
	       rel, ">= 45%");
	printf("%-34s %14" PRIu64 " pages   %.1f MiB\n", "moved",
	       b->cc.pages_moved, b->cc.bytes_moved / mib);
	printf("%-34s %17.1f ms   %s\n", "pass (kva_compact(), host wall)",
	       b->pass_us / 1e3,
	       b->device_pool ? "device pool: enqueues only" : "host pool");
	printf("%-34s %15.1f GB/s   %.1f us, %s\n", "pass's page copy (r + w)",
	       b->pass_copy_gbs, b->pass_copy_us,
	       b->device_pool ? "CUDA events, side stream, one run"
			      : "through the runtime, wall");
	printf("%-34s %15.1f GB/s   %.1f us, %s\n", "replayed copy (r + w)",
	       b->copy_gbs, b->copy_us, b->copy_how);
	printf("%-34s %15.1f GB/s   %s\n", "copy ceiling (read + write)",
	       b->ceil_gbs, b->ceil_how);
	printf("%-34s %19.1f%% %12s\n", "pass's copy / ceiling",
	       100.0 * b->pass_copy_gbs / b->ceil_gbs, ">= 75%");
	printf("%-34s %19.1f%% %12s\n", "replayed copy / ceiling", pct,
	       ">= 75%");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvmm bench compact [--backend auto|host|cuda] "
		"[--granules N] [--reps R] [--seed S] [--json]\n"
		"  --granules N  pool size in 2 MiB granules (4..4096, default "
		"256)\n"
		"  --reps R      timed copies; medians are printed (1..%d, "
		"default 21)\n"
		"  --seed S      which half is freed (default 1)\n",
		MAX_REPS);
}

/**
 * cmd_bench_compact() - `kvmm bench compact`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a step failed or a result was wrong, 2
 * for bad arguments.
 */
int cmd_bench_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "granules", required_argument, NULL, 'n' },
		{ "reps", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_AUTO };
	uint64_t granules = 256, reps = 21, seed = 1;
	struct kvrt_ctx *probe = NULL;
	struct compact_bench *b;
	enum kvrt_backend_kind kind;
	int json = 0, c, ret;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (kvmm_parse_backend(optarg, &o.backend))
				return 2;
			break;
		case 'n':
			if (kvmm_parse_u64("--granules", optarg, 4, 4096,
					   &granules))
				return 2;
			break;
		case 'r':
			if (kvmm_parse_u64("--reps", optarg, 1, MAX_REPS,
					   &reps))
				return 2;
			break;
		case 's':
			if (kvmm_parse_u64("--seed", optarg, 1, UINT64_MAX,
					   &seed))
				return 2;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "kvmm bench compact: bad option '%s' "
				"(see --help)\n", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench compact: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	if (kvmm_ctx_open("kvmm bench compact", &o, &probe))
		return 1;
	kind = kvrt_ctx_backend(probe);
	b = calloc(1, sizeof(*b));
	if (!b) {
		kvrt_ctx_destroy(probe);
		return 1;
	}
	b->granules = granules;
	b->reps = reps;
	b->seed = seed;
	ret = setup(b, kind);
	if (ret) {
		fprintf(stderr, "kvmm bench compact: setup: %s%s%s\n",
			strerror(-ret), b->ctx ? ": " : "",
			b->ctx ? kvrt_ctx_last_error(b->ctx) : "");
		goto out;
	}
#ifdef KVMM_HAVE_CUDA
	if (b->device_pool) {
		ret = warm_copy(b);
		if (ret)
			goto out;
	}
#endif
	ret = compact(b);
	if (ret)
		goto out;
#ifdef KVMM_HAVE_CUDA
	if (kind == KVRT_BACKEND_CUDA)
		ret = replay_cuda(b);
	else
#endif
		ret = replay_host(b);
	(void)kind;
	if (ret)
		goto out;
	b->copy_gbs = b->copy_us > 0 ?
		2.0 * b->cc.bytes_moved / b->copy_us / 1e3 : 0;
	if (json)
		print_json(b, kvrt_ctx_name(probe));
	else
		print_text(b, kvrt_ctx_name(probe));
out:
	if (b->cc_live)
		kva_compact_fini(&b->cc);
	if (b->pool)
		kva_pool_destroy(b->pool);
	if (b->ctx)
		kvrt_ctx_destroy(b->ctx);
	free(b->slots);
	free(b);
	kvrt_ctx_destroy(probe);
	return ret ? 1 : 0;
}
