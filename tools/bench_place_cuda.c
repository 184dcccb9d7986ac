// SPDX-License-Identifier: MIT
/*
 * bench_place_cuda.c - `kvmm bench place --backend cuda`: the replay of
 * bench_place.c on the GPU (issue 16).
 *
 * The pool's bookkeeping stays on the host (a host pool, as in the host
 * backend's replay), but its space is a CUDA space: device granules up to
 * the HBM cap, host-NUMA granules for the rest, all in one device VA. The
 * pages are filled with the trace's data; each step uploads the step's
 * page lists (the recorded selection mapped to the pool's current page
 * ids, or every page for the dense reference), folds the new tokens into
 * the page summaries and runs the page selection kernel over the step's
 * tables (kvk_page_summary_cuda(), kvk_select_pages_cuda(): the cost of
 * choosing; its choice is not used, the trace's is, so that every replay
 * reads the same pages), runs the paged decode attention
 * (kvk_attn_decode_cuda(), fp16 queries: the tensor-core version) over
 * them, where a page on the host tier is read over PCIe
 * through the same VA, and queues the policy's migration (kva_migrate()
 * with its copy hook: kva_copy_pages_cuda() on a side stream, demotions
 * then promotions, after the step's attention; the moved-from pages held
 * until a fence on the attention stream completes). CUDA events time the
 * upload, the attention and the copies; the host waits at the end of each
 * step, so the next step's attention reads the tables the copies made.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_place.h"
#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#include "kvk_cudart.h"
#include "kvk_mem.h"
#include "select.h"

#define G2 KVRT_GRANULE_SIZE
#define WHO "kvmm bench place"

/* the fp16 tolerance of tests/check_attn_gpu.c (relative L2) */
#define BP_CHECK_TOL 2e-3

struct bp_dev {
	struct kvrt_ctx *ctx;
	struct kvrt_stream *ks, *kc;	/* attention, copies */
	cudaStream_t sa, sc;
	cudaEvent_t u0, s0, a0, a1, m0, m1;
	int migrated;			/* copies queued in this step */
	int timed;			/* a0/a1 recorded in this step */
	int selected;			/* s0 recorded in this step */

	/* per trace */
	const struct bp_trace *tr;
	int pinned;			/* tr->stage registered */
	uint16_t *hq;			/* fp16 queries, all steps */
	void *dq;
	uint32_t *h_tab, *d_tab;	/* [lists][width] */
	uint32_t *h_ntok, *d_ntok;	/* [lists][2] */
	uint32_t *h_lb, *d_lb;		/* [batch] */
	void *d_out;
	uint16_t *h_out, *ref_out;	/* [lists][GROUP][HD] fp16 */
	uint32_t *ref_tab;		/* [lists][width]: staged ids */
	uint32_t *h_ftab, *d_ftab;	/* [lists][width]: the full tables */
	uint32_t *h_fntok, *d_fntok;	/* [lists][2] */
	uint32_t *d_selt, *d_seln;	/* the selection kernel's output */
	void *work;
	size_t work_bytes;

	/* per replay */
	struct kva_pool *pool;
	int sparse;			/* summaries and selection timed */
	float *d_sum;			/* [page ids][2][HD] min, max */
	uint32_t *h_upd, *d_upd;	/* summary updates of one step */
	uint32_t upd_n, upd_cap;	/* entries of 3 words */
	uint32_t *h_mv, *d_mv;		/* move lists of one step */
	uint32_t mv_n, mv_cap;
	double check_err;
};

static int cu_fail(cudaError_t e, const char *what)
{
	fprintf(stderr, WHO ": %s: %s\n", what, cudaGetErrorString(e));
	return kvk_cuda_errno(e) ? kvk_cuda_errno(e) : -EIO;
}

#define CUT(x)                                                                 \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess)                                        \
			return cu_fail(__e, #x);                               \
	} while (0)

/**
 * bp_dev_ctx() - the CUDA context the replays' pools are made in
 * @d: the device half
 *
 * Return: the context.
 */
struct kvrt_ctx *bp_dev_ctx(struct bp_dev *d)
{
	return d->ctx;
}

/**
 * bp_dev_check_err() - the last replay's --check result
 * @d: the device half
 *
 * Return: the relative L2 of the GPU's output against the CPU reference
 * at the replay's last step (0 without --check).
 */
double bp_dev_check_err(const struct bp_dev *d)
{
	return d->check_err;
}

/* median device time of @reps runs of kvk_read_sum_cuda(), in ms */
static int time_read(struct bp_dev *d, uint64_t addr, size_t len,
		     uint64_t *dsum, double *ms)
{
	double t[9];
	float x;

	for (int r = -2; r < 9; r++) {
		int ret;

		CUT(cudaEventRecord(d->a0, d->sa));
		ret = kvk_read_sum_cuda((const void *)(uintptr_t)addr, len,
					dsum, d->sa);
		if (ret)
			return ret;
		CUT(cudaEventRecord(d->a1, d->sa));
		CUT(cudaEventSynchronize(d->a1));
		CUT(cudaEventElapsedTime(&x, d->a0, d->a1));
		if (r >= 0)
			t[r] = x;
	}
	*ms = kvmm_median(t, 9);
	return 0;
}

/* median device time of one batch of page copies, in ms */
static int time_copy(struct bp_dev *d, uint64_t base, const uint32_t *src,
		     const uint32_t *dst, uint32_t n, double *ms)
{
	double t[9];
	float x;

	for (int r = -2; r < 9; r++) {
		int ret;

		CUT(cudaEventRecord(d->a0, d->sa));
		ret = kva_copy_pages_cuda(base, 8192, G2 / 8192, src, dst, n,
					  d->sa);
		if (ret)
			return ret;
		CUT(cudaEventRecord(d->a1, d->sa));
		CUT(cudaEventSynchronize(d->a1));
		CUT(cudaEventElapsedTime(&x, d->a0, d->a1));
		if (r >= 0)
			t[r] = x;
	}
	*ms = kvmm_median(t, 9);
	return 0;
}

/*
 * The rates the model's constants stand for, measured in this run through
 * a space of the same kind: a streaming read of 512 MiB of device granules
 * (HBM) and of 256 MiB of host-NUMA granules (PCIe), and 4 MiB of scattered
 * 8 KiB page copies each way (a step's migration budget).
 */
static int measure_rates(struct bp_dev *d, struct bp_rates *rt)
{
	const uint32_t dg = 256, hg = 128, n = 512, ppg = G2 / 8192;
	struct kvrt_space *sp = NULL;
	uint32_t *hs = NULL, *ds = NULL;
	uint64_t base, *dsum = NULL;
	double ms;
	int ret;

	ret = kvrt_space_create(d->ctx, (uint64_t)(dg + hg) * G2,
				(uint64_t)(dg + hg) * G2, &sp);
	if (ret) {
		fprintf(stderr, WHO ": a CUDA space of %u MiB: %s\n",
			(dg + hg) * 2, kvrt_ctx_last_error(d->ctx));
		return ret;
	}
	ret = kvrt_space_grow(sp, dg, KVRT_LOC_DEVICE, 0, NULL);
	if (ret) {
		fprintf(stderr, WHO ": %u device granules: %s\n", dg,
			kvrt_ctx_last_error(d->ctx));
		goto out;
	}
	ret = kvrt_space_grow(sp, hg, KVRT_LOC_HOST_NUMA, 0, NULL);
	if (ret) {
		fprintf(stderr, WHO ": this machine gives no host-NUMA "
			"granules (%s): the CUDA path needs the host tier "
			"mapped into the device's VA (cuMemCreate with "
			"CU_MEM_LOCATION_TYPE_HOST_NUMA, a CUDA 12.2 driver or "
			"newer)\n",
			kvrt_ctx_last_error(d->ctx));
		goto out;
	}
	base = kvrt_space_base(sp);
	ret = -ENOMEM;
	hs = malloc(2 * n * 4);
	if (!hs)
		goto out;
	if (cudaMalloc((void **)&dsum, 8) != cudaSuccess ||
	    cudaMalloc((void **)&ds, 2 * n * 4) != cudaSuccess) {
		ret = cu_fail(cudaGetLastError(), "cudaMalloc");
		goto out;
	}
	if (cudaMemset((void *)(uintptr_t)base, 0x5a,
		       (size_t)(dg + hg) * G2) != cudaSuccess) {
		ret = cu_fail(cudaGetLastError(), "filling the rate space");
		goto out;
	}
	ret = time_read(d, base, (size_t)dg * G2, dsum, &ms);
	if (ret)
		goto out;
	rt->hbm_read = (double)dg * G2 / (ms * 1e6);
	ret = time_read(d, base + (uint64_t)dg * G2, (size_t)hg * G2, dsum,
			&ms);
	if (ret)
		goto out;
	rt->host_read = (double)hg * G2 / (ms * 1e6);
	/* distinct pages spread over each region (odd stride, 2^k pages) */
	for (uint32_t i = 0; i < n; i++) {
		hs[i] = dg * ppg + (i * 7919U) % (hg * ppg);	/* host */
		hs[n + i] = (i * 7919U) % (dg * ppg);		/* HBM */
	}
	if (cudaMemcpy(ds, hs, 2 * n * 4, cudaMemcpyHostToDevice) !=
	    cudaSuccess) {
		ret = cu_fail(cudaGetLastError(), "cudaMemcpy");
		goto out;
	}
	ret = time_copy(d, base, ds, ds + n, n, &ms);
	if (ret)
		goto out;
	rt->promote = (double)n * 8192 / (ms * 1e6);
	ret = time_copy(d, base, ds + n, ds, n, &ms);
	if (ret)
		goto out;
	rt->demote = (double)n * 8192 / (ms * 1e6);
out:
	cudaFree(dsum);
	cudaFree(ds);
	free(hs);
	if (kvrt_space_destroy(sp) && !ret)
		ret = -EIO;
	return ret;
}

/* the step's timing events, by index, for making and freeing them */
#define BP_NR_EVENTS 6
static cudaEvent_t *dev_event(struct bp_dev *d, int i)
{
	cudaEvent_t *const ev[BP_NR_EVENTS] = { &d->u0, &d->s0, &d->a0,
						&d->a1, &d->m0, &d->m1 };

	return ev[i];
}

/**
 * bp_dev_open() - a CUDA context, two streams, the measured rates
 * @out: the device half
 * @rates: filled with the rates measured now
 *
 * Return: 0, or -errno with the reason on stderr (no device, no host-NUMA
 * granules, a CUDA error).
 */
int bp_dev_open(struct bp_dev **out, struct bp_rates *rates)
{
	struct kvrt_ctx_opts co = { .backend = KVRT_BACKEND_CUDA };
	struct bp_dev *d;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	ret = kvmm_ctx_open(WHO " --backend cuda", &co, &d->ctx);
	if (ret) {
		free(d);
		return ret;
	}
	ret = kvrt_stream_create(d->ctx, &d->ks);
	if (!ret)
		ret = kvrt_stream_create(d->ctx, &d->kc);
	if (ret) {
		fprintf(stderr, WHO ": streams: %s\n",
			kvrt_ctx_last_error(d->ctx));
		goto fail;
	}
	d->sa = (cudaStream_t)kvrt_stream_handle(d->ks);
	d->sc = (cudaStream_t)kvrt_stream_handle(d->kc);
	for (int i = 0; i < BP_NR_EVENTS; i++)
		if (cudaEventCreate(dev_event(d, i)) != cudaSuccess) {
			ret = cu_fail(cudaGetLastError(), "cudaEventCreate");
			goto fail;
		}
	ret = measure_rates(d, rates);
	if (ret)
		goto fail;
	*out = d;
	return 0;
fail:
	bp_dev_close(d);
	return ret;
}

/**
 * bp_dev_close() - undo bp_dev_open()
 * @d: the device half, or NULL
 */
void bp_dev_close(struct bp_dev *d)
{
	if (!d)
		return;
	bp_dev_trace(d, NULL);
	cudaFree(d->work);
	for (int i = 0; i < BP_NR_EVENTS; i++)
		if (*dev_event(d, i))
			cudaEventDestroy(*dev_event(d, i));
	if (d->kc)
		kvrt_stream_destroy(d->kc);
	if (d->ks)
		kvrt_stream_destroy(d->ks);
	kvrt_ctx_destroy(d->ctx);
	free(d);
}

static void trace_free(struct bp_dev *d)
{
	if (d->pinned)
		cudaHostUnregister(d->tr->stage);
	d->pinned = 0;
	cudaFree(d->dq);
	cudaFree(d->d_tab);
	cudaFree(d->d_ntok);
	cudaFree(d->d_lb);
	cudaFree(d->d_out);
	cudaFree(d->d_ftab);
	cudaFree(d->d_fntok);
	cudaFree(d->d_selt);
	cudaFree(d->d_seln);
	cudaFreeHost(d->h_tab);
	cudaFreeHost(d->h_ntok);
	cudaFreeHost(d->h_ftab);
	cudaFreeHost(d->h_fntok);
	free(d->hq);
	free(d->h_lb);
	free(d->h_out);
	free(d->ref_out);
	free(d->ref_tab);
	d->dq = d->d_tab = d->d_ntok = d->d_lb = d->d_out = NULL;
	d->h_tab = d->h_ntok = d->h_lb = d->ref_tab = NULL;
	d->d_ftab = d->d_fntok = d->d_selt = d->d_seln = NULL;
	d->h_ftab = d->h_fntok = NULL;
	d->hq = d->h_out = d->ref_out = NULL;
	d->tr = NULL;
}

/**
 * bp_dev_trace() - take a trace's data and queries (NULL: let go of it)
 * @d: the device half
 * @tr: the trace, with @q and @stage (bench_place.c's --backend cuda)
 *
 * Return: 0 or -errno (the CUDA error on stderr).
 */
int bp_dev_trace(struct bp_dev *d, const struct bp_trace *tr)
{
	size_t nq, tab, out;
	cudaError_t e;

	if (d->tr)
		trace_free(d);
	if (!tr)
		return 0;
	if (!tr->q || !tr->stage)
		return -EINVAL;
	d->tr = tr;
	nq = (size_t)tr->steps * tr->nr_lists * BP_GROUP * BP_HD;
	tab = (size_t)tr->nr_lists * tr->width * 4;
	out = (size_t)tr->nr_lists * BP_GROUP * BP_HD * 2;
	/* pinned, the page uploads are asynchronous; else they still work */
	e = cudaHostRegister(tr->stage, tr->stage_bytes,
			     cudaHostRegisterDefault);
	d->pinned = e == cudaSuccess;
	if (!d->pinned)
		fprintf(stderr, WHO ": pinning %llu MB of staged pages failed "
			"(%s): page uploads run from pageable memory\n",
			(unsigned long long)(tr->stage_bytes / 1000000),
			cudaGetErrorString(cudaGetLastError()));
	d->hq = malloc(nq * 2);
	d->h_lb = malloc(tr->nr_lists / BP_KVH * 4);
	d->h_out = malloc(out);
	d->ref_out = malloc(out);
	d->ref_tab = calloc(tab / 4, 4);
	if (!d->hq || !d->h_lb || !d->h_out || !d->ref_out || !d->ref_tab) {
		trace_free(d);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nq; i++)
		d->hq[i] = kvk_f32_to_f16(tr->q[i]);
	for (uint32_t i = 0; i < tr->nr_lists / BP_KVH; i++)
		d->h_lb[i] = i * BP_KVH;
	if (cudaMalloc(&d->dq, nq * 2) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_tab, tab) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_ntok, tr->nr_lists * 8) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_lb, tr->nr_lists / BP_KVH * 4) !=
		    cudaSuccess ||
	    cudaMalloc(&d->d_out, out) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_ftab, tab) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_fntok, tr->nr_lists * 8) !=
		    cudaSuccess ||
	    cudaMalloc((void **)&d->d_selt, tab) != cudaSuccess ||
	    cudaMalloc((void **)&d->d_seln, tr->nr_lists * 8) != cudaSuccess ||
	    cudaMallocHost((void **)&d->h_tab, tab) != cudaSuccess ||
	    cudaMallocHost((void **)&d->h_ntok, tr->nr_lists * 8) !=
		    cudaSuccess ||
	    cudaMallocHost((void **)&d->h_ftab, tab) != cudaSuccess ||
	    cudaMallocHost((void **)&d->h_fntok, tr->nr_lists * 8) !=
		    cudaSuccess) {
		int ret = cu_fail(cudaGetLastError(), "trace buffers");

		trace_free(d);
		return ret;
	}
	if (cudaMemcpy(d->dq, d->hq, nq * 2, cudaMemcpyHostToDevice) !=
		    cudaSuccess ||
	    cudaMemcpy(d->d_lb, d->h_lb, tr->nr_lists / BP_KVH * 4,
		       cudaMemcpyHostToDevice) != cudaSuccess) {
		int ret = cu_fail(cudaGetLastError(), "uploading the queries");

		trace_free(d);
		return ret;
	}
	return 0;
}

/* the attention call of one step, without its page lists */
static void attn_args(const struct bp_dev *d, const struct kva_pool *pool,
		      struct kvk_attn_args *a)
{
	const struct bp_trace *tr = d->tr;

	memset(a, 0, sizeof(*a));
	a->nr_seqs = tr->nr_lists / BP_KVH;
	a->nr_kv_heads = BP_KVH;
	a->group = BP_GROUP;
	a->head_dim = BP_HD;
	a->scale = 1 / sqrtf(BP_HD);
	a->dtype = KVK_F16;
	a->pool = pool->base;
	a->page_size = pool->page_size;
	a->pages_per_granule = pool->pages_per_granule;
	a->width = pool->width;
	a->tier[0] = tr->tier;
	a->tier[1] = tr->tier;
}

/* the trace's pages of entries [e0, e1) of list @l into the pool's pages */
static int upload_entries(struct bp_dev *d, struct kva_pool *pool,
			  uint32_t l, uint32_t e0, uint32_t e1)
{
	const struct bp_trace *tr = d->tr;
	uint32_t W = pool->width, ppg = pool->pages_per_granule;
	uint32_t sppg = tr->stage_ppg, ps = pool->page_size;

	for (uint32_t e = e0, k; e < e1; e += k) {
		uint32_t p = pool->table[(size_t)l * W + e];
		uint64_t id = (uint64_t)l * W + e;

		/* a run adjacent on both sides, within one granule each */
		for (k = 1; e + k < e1 &&
			    pool->table[(size_t)l * W + e + k] == p + k &&
			    (p + k) / ppg == p / ppg &&
			    (id + k) / sppg == id / sppg;
		     k++)
			;
		CUT(cudaMemcpyAsync((void *)(uintptr_t)kva_page_addr(pool, p),
				    tr->stage + id / sppg * G2 +
					    id % sppg * ps,
				    (size_t)k * ps, cudaMemcpyHostToDevice,
				    d->sa));
	}
	return 0;
}

/* tokens of entry @e of list @l now */
static uint32_t entry_tokens(const struct kva_pool *pool, uint32_t l,
			     uint32_t e)
{
	uint32_t n = pool->ntokens[2 * l], tpp = pool->layout[KVA_HI].tokens;

	return n - e * tpp < tpp ? n - e * tpp : tpp;
}

/* queue kvk_page_summary_cuda() over d->h_upd[from, upd_n) on @st */
static int summarize(struct bp_dev *d, uint32_t from, cudaStream_t st)
{
	struct kva_pool *pool = d->pool;
	struct kvk_summary_args u = {
		.pool = pool->base,
		.page_size = pool->page_size,
		.pages_per_granule = pool->pages_per_granule,
		.head_dim = BP_HD,
		.tier = d->tr->tier,
		.nr = d->upd_n - from,
		.upd = d->d_upd + 3 * (size_t)from,
		.summary = d->d_sum,
		.sum_dtype = KVK_F32,
	};

	if (!u.nr)
		return 0;
	CUT(cudaMemcpyAsync(d->d_upd + 3 * (size_t)from,
			    d->h_upd + 3 * (size_t)from, (size_t)u.nr * 12,
			    cudaMemcpyHostToDevice, st));
	return kvk_page_summary_cuda(&u, st);
}

/* one summary update: page @p reset to the tokens of entry (@l, @e) */
static int upd_add(struct bp_dev *d, uint32_t p, uint32_t l, uint32_t e)
{
	uint32_t *u = d->h_upd + 3 * (size_t)d->upd_n;

	if (d->upd_n >= d->upd_cap)
		return -ENOSPC;
	u[0] = p;
	u[1] = 0;
	u[2] = entry_tokens(d->pool, l, e);
	d->upd_n++;
	return 0;
}

/* struct kva_migrate_control @copy: queue one batch on the side stream */
static int dev_copy(void *arg, const uint32_t *src, const uint32_t *dst,
		    uint32_t n)
{
	struct bp_dev *d = arg;
	struct kva_pool *pool = d->pool;
	uint32_t *h = d->h_mv + d->mv_n, from;
	int ret;

	if (d->mv_n + 2 * (uint64_t)n > d->mv_cap)
		return -ENOSPC;
	memcpy(h, src, n * 4);
	memcpy(h + n, dst, n * 4);
	if (!d->migrated) {
		/* a promotion may land on a page this step's attention reads */
		CUT(cudaStreamWaitEvent(d->sc, d->a1, 0));
		CUT(cudaEventRecord(d->m0, d->sc));
		d->migrated = 1;
	}
	CUT(cudaMemcpyAsync(d->d_mv + d->mv_n, h, 2 * (size_t)n * 4,
			    cudaMemcpyHostToDevice, d->sc));
	d->mv_n += 2 * n;
	ret = kva_copy_pages_cuda(pool->base, pool->page_size,
				  pool->pages_per_granule,
				  d->d_mv + d->mv_n - 2 * n,
				  d->d_mv + d->mv_n - n, n, d->sc);
	if (!ret && d->sparse) {
		/* the summaries follow the pages (by page id): the
		 * destinations' */
		from = d->upd_n;
		for (uint32_t i = 0; i < n && !ret; i++)
			ret = upd_add(d, dst[i], pool->page_list[src[i]],
				      pool->page_pos[src[i]]);
		if (!ret)
			ret = summarize(d, from, d->sc);
	}
	/*
	 * the end of the copies queued so far: recorded after each batch, so
	 * that mig_us ends with the last one, not with the host's work after
	 * kva_migrate() (the ring, kva_check()) that the stream would wait on
	 */
	if (!ret)
		CUT(cudaEventRecord(d->m1, d->sc));
	return ret;
}

/**
 * bp_dev_begin() - a replay's pool: its data in, its migration on the GPU
 * @d: the device half, with a trace
 * @pool: the replay's pool, filled (kva_admit'ed) in bp_dev_ctx()'s space
 * @mc: its migration control: the copy hook, the attention stream fenced
 * @sparse: keep page summaries (by page id) and time the selection
 *
 * Return: 0 or -errno.
 */
int bp_dev_begin(struct bp_dev *d, struct kva_pool *pool,
		 struct kva_migrate_control *mc, int sparse)
{
	const struct bp_trace *tr = d->tr;
	struct kvk_attn_args a;
	size_t wb;
	int ret;

	if (!tr || pool->width != tr->width ||
	    pool->page_size != tr->page_size) {
		fprintf(stderr, WHO ": the replay's pool does not match the "
			"trace's layout\n");
		return -EINVAL;
	}
	d->pool = pool;
	d->sparse = sparse;
	d->mv_cap = 2 * pool->nr_page_ids;
	d->mv_n = 0;
	d->upd_cap = 2 * pool->nr_page_ids + tr->nr_lists;
	d->upd_n = 0;
	d->migrated = 0;
	d->check_err = 0;
	if (cudaMallocHost((void **)&d->h_mv, (size_t)d->mv_cap * 4) !=
		    cudaSuccess ||
	    cudaMalloc((void **)&d->d_mv, (size_t)d->mv_cap * 4) !=
		    cudaSuccess ||
	    (sparse &&
	     (cudaMallocHost((void **)&d->h_upd, (size_t)d->upd_cap * 12) !=
		      cudaSuccess ||
	      cudaMalloc((void **)&d->d_upd, (size_t)d->upd_cap * 12) !=
		      cudaSuccess ||
	      cudaMalloc((void **)&d->d_sum, (size_t)pool->nr_page_ids * 2 *
						     BP_HD * 4) !=
		      cudaSuccess)))
		return cu_fail(cudaGetLastError(), "move and summary lists");
	attn_args(d, pool, &a);
	wb = kvk_attn_work_bytes(&a);
	if (wb > d->work_bytes) {
		cudaFree(d->work);
		d->work = NULL;
		d->work_bytes = 0;
		CUT(cudaMalloc(&d->work, wb));
		d->work_bytes = wb;
	}
	for (uint32_t l = 0; l < tr->nr_lists; l++) {
		ret = upload_entries(d, pool, l, 0, pool->npages[2 * l]);
		if (ret)
			return ret;
	}
	/* every page's summary, from its data */
	for (uint32_t l = 0; sparse && l < tr->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
			ret = upd_add(d, pool->table[(size_t)l * pool->width +
						     e],
				      l, e);
			if (ret)
				return ret;
		}
	if (sparse) {
		ret = summarize(d, 0, d->sa);
		if (ret)
			return ret;
	}
	/* the first copies (placement at prefill) wait for the data */
	CUT(cudaEventRecord(d->a1, d->sa));
	mc->copy = dev_copy;
	mc->copy_arg = d;
	mc->streams = &d->ks;
	mc->nr_streams = 1;
	return 0;
}

/**
 * bp_dev_new_pages() - the data of the pages a step's append opened
 * @d: the device half
 * @pool: the replay's pool
 * @npages_before: [lists] high-tier pages of each list before the append
 *
 * Return: 0 or -errno.
 */
int bp_dev_new_pages(struct bp_dev *d, struct kva_pool *pool,
		     const uint32_t *npages_before)
{
	for (uint32_t l = 0; l < d->tr->nr_lists; l++) {
		int ret;

		if (pool->npages[2 * l] <= npages_before[l])
			continue;
		ret = upload_entries(d, pool, l, npages_before[l],
				     pool->npages[2 * l]);
		if (ret)
			return ret;
	}
	return 0;
}

/* --check: the CPU reference over the staged pages, against d->h_out */
static int check_step(struct bp_dev *d, const struct kvk_attn_args *ga,
		      uint32_t step)
{
	const struct bp_trace *tr = d->tr;
	size_t n = (size_t)tr->nr_lists * BP_GROUP * BP_HD;
	struct kvk_attn_args a = *ga;
	float *x, *y;
	double err;
	int ret;

	CUT(cudaMemcpyAsync(d->h_out, d->d_out, n * 2, cudaMemcpyDeviceToHost,
			    d->sa));
	CUT(cudaStreamSynchronize(d->sa));
	a.pool = (uint64_t)(uintptr_t)tr->stage;
	a.pages_per_granule = tr->stage_ppg;
	a.q = d->hq + (size_t)step * n;
	a.out = d->ref_out;
	a.tables = d->ref_tab;
	a.ntokens = d->h_ntok;
	a.list_base = d->h_lb;
	a.work = NULL;
	a.work_bytes = 0;
	ret = kvk_attn_decode_cpu(&a, NULL);
	if (ret) {
		fprintf(stderr, WHO ": the CPU reference refused step %u\n",
			step);
		return ret;
	}
	x = malloc(n * 4);
	y = malloc(n * 4);
	if (!x || !y) {
		free(x);
		free(y);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		x[i] = kvk_f16_to_f32(d->h_out[i]);
		y[i] = kvk_f16_to_f32(d->ref_out[i]);
	}
	err = bp_rel_l2(x, y, n);
	free(x);
	free(y);
	if (err > d->check_err)
		d->check_err = err;
	if (!(err <= BP_CHECK_TOL)) {
		fprintf(stderr, WHO ": step %u: the GPU's attention over the "
			"two-tier space differs from the CPU reference by a "
			"relative L2 of %.3g (tolerance %.0e)\n",
			step, err, BP_CHECK_TOL);
		return -EIO;
	}
	return 0;
}

/*
 * The cost of choosing the step's pages on the device: the step's full
 * tables up, the summary of each list's newest page (its new token), then
 * the selection kernel over every page's summary; from event s0. Its
 * choice is not read: the attention reads the trace's.
 */
static int select_step(struct bp_dev *d, struct kva_pool *pool,
		       const struct kvk_attn_args *a)
{
	const struct bp_trace *tr = d->tr;
	uint32_t W = pool->width, tpp = tr->tpp, from = d->upd_n;
	struct kvk_select_args sa = { 0 };
	struct kvk_summary_args u;
	int ret;

	memcpy(d->h_ftab, pool->table, (size_t)tr->nr_lists * W * 4);
	memcpy(d->h_fntok, pool->ntokens, (size_t)tr->nr_lists * 8);
	CUT(cudaMemcpyAsync(d->d_ftab, d->h_ftab, (size_t)tr->nr_lists * W * 4,
			    cudaMemcpyHostToDevice, d->sa));
	CUT(cudaMemcpyAsync(d->d_fntok, d->h_fntok, (size_t)tr->nr_lists * 8,
			    cudaMemcpyHostToDevice, d->sa));
	for (uint32_t l = 0; l < tr->nr_lists; l++) {
		uint32_t e = (pool->ntokens[2 * l] - 1) / tpp;

		ret = upd_add(d, pool->table[(size_t)l * W + e], l, e);
		if (ret)
			return ret;
	}
	CUT(cudaMemcpyAsync(d->d_upd + 3 * (size_t)from,
			    d->h_upd + 3 * (size_t)from,
			    (size_t)(d->upd_n - from) * 12,
			    cudaMemcpyHostToDevice, d->sa));
	CUT(cudaEventRecord(d->s0, d->sa));
	d->selected = 1;
	u = (struct kvk_summary_args){
		.pool = pool->base,
		.page_size = pool->page_size,
		.pages_per_granule = pool->pages_per_granule,
		.head_dim = BP_HD,
		.tier = tr->tier,
		.nr = d->upd_n - from,
		.upd = d->d_upd + 3 * (size_t)from,
		.summary = d->d_sum,
		.sum_dtype = KVK_F32,
	};
	ret = kvk_page_summary_cuda(&u, d->sa);
	sa.attn = *a;
	sa.attn.tables = d->d_ftab;
	sa.attn.ntokens = d->d_fntok;
	sa.summary = d->d_sum;
	sa.sum_dtype = KVK_F32;
	sa.topk = tr->topk;
	sa.window = 64;
	sa.sink = 1;
	sa.sel_tables = d->d_selt;
	sa.sel_ntokens = d->d_seln;
	if (!ret)
		ret = kvk_select_pages_cuda(&sa, d->sa);
	if (ret)
		fprintf(stderr, WHO ": the summary or selection kernel did not "
			"start (%s)\n", strerror(-ret));
	return ret;
}

/**
 * bp_dev_attend() - queue one step's page lists and attention
 * @d: the device half
 * @pool: the replay's pool, after the step's append
 * @step: the trace's step (its queries)
 * @mass: the step's selection, [lists][width] (> 0: selected); NULL: every
 *	page (dense)
 * @check: compare the output with the CPU reference, at the last step
 *	(after every migration of the replay: pages on both tiers)
 *
 * Return: 0 or -errno.
 */
int bp_dev_attend(struct bp_dev *d, struct kva_pool *pool, uint32_t step,
		  const float *mass, int check)
{
	const struct bp_trace *tr = d->tr;
	uint32_t W = pool->width, tpp = tr->tpp;
	struct kvk_attn_args a;
	int ret;

	for (uint32_t l = 0; l < tr->nr_lists; l++) {
		const uint32_t *row = &pool->table[(size_t)l * W];
		uint32_t n = pool->ntokens[2 * l], k = 0, tok = 0;
		uint32_t np = kvmm_div_round_up(n, tpp);

		for (uint32_t e = 0; e < np; e++) {
			if (mass && !(mass[(size_t)l * W + e] > 0))
				continue;
			d->h_tab[(size_t)l * W + k] = row[e];
			d->ref_tab[(size_t)l * W + k] = l * W + e;
			tok += n - e * tpp < tpp ? n - e * tpp : tpp;
			k++;
		}
		d->h_ntok[2 * l] = tok;
		d->h_ntok[2 * l + 1] = 0;
	}
	attn_args(d, pool, &a);
	/*
	 * the plan ran before the reads (--plan-at select): the selection
	 * and the attention read what its copies and summaries wrote
	 */
	if (d->migrated)
		CUT(cudaStreamWaitEvent(d->sa, d->m1, 0));
	a.q = (const uint16_t *)d->dq +
	      (size_t)step * tr->nr_lists * BP_GROUP * BP_HD;
	a.out = d->d_out;
	a.tables = d->d_tab;
	a.ntokens = d->d_ntok;
	a.list_base = d->d_lb;
	a.work = d->work;
	a.work_bytes = d->work_bytes;
	CUT(cudaEventRecord(d->u0, d->sa));
	CUT(cudaMemcpyAsync(d->d_tab, d->h_tab, (size_t)tr->nr_lists * W * 4,
			    cudaMemcpyHostToDevice, d->sa));
	CUT(cudaMemcpyAsync(d->d_ntok, d->h_ntok, (size_t)tr->nr_lists * 8,
			    cudaMemcpyHostToDevice, d->sa));
	if (mass && d->sparse) {
		ret = select_step(d, pool, &a);
		if (ret)
			return ret;
	}
	CUT(cudaEventRecord(d->a0, d->sa));
	ret = kvk_attn_decode_cuda(&a, d->sa);
	if (ret) {
		fprintf(stderr, WHO ": the attention kernel did not start "
			"(%s)\n", strerror(-ret));
		return ret;
	}
	CUT(cudaEventRecord(d->a1, d->sa));
	d->timed = 1;
	if (check && step + 1 == tr->steps)
		return check_step(d, &a, step);
	return 0;
}

/**
 * bp_dev_step_end() - wait for the step, read its events
 * @d: the device half
 * @t: out (may be NULL): the step's device times
 *
 * Return: 0 or -errno (a failure of anything queued in the step).
 */
int bp_dev_step_end(struct bp_dev *d, struct bp_step_time *t)
{
	float ms;

	CUT(cudaStreamSynchronize(d->sc));
	CUT(cudaStreamSynchronize(d->sa));
	if (t) {
		memset(t, 0, sizeof(*t));
		if (d->timed) {
			CUT(cudaEventElapsedTime(&ms, d->a0, d->a1));
			t->attn = ms * 1e3;
			CUT(cudaEventElapsedTime(&ms, d->u0,
						 d->selected ? d->s0 : d->a0));
			t->up = ms * 1e3;
		}
		if (d->selected) {
			CUT(cudaEventElapsedTime(&ms, d->s0, d->a0));
			t->select = ms * 1e3;
		}
		if (d->migrated) {
			CUT(cudaEventElapsedTime(&ms, d->m0, d->m1));
			t->mig = ms * 1e3;
		}
	}
	d->migrated = 0;
	d->timed = 0;
	d->selected = 0;
	d->mv_n = 0;
	d->upd_n = 0;
	return 0;
}

/**
 * bp_dev_end() - the end of a replay (its pool is destroyed next)
 * @d: the device half
 */
void bp_dev_end(struct bp_dev *d)
{
	cudaStreamSynchronize(d->sc);
	cudaStreamSynchronize(d->sa);
	cudaFreeHost(d->h_mv);
	cudaFree(d->d_mv);
	cudaFreeHost(d->h_upd);
	cudaFree(d->d_upd);
	cudaFree(d->d_sum);
	d->h_mv = d->d_mv = d->h_upd = d->d_upd = NULL;
	d->d_sum = NULL;
	d->pool = NULL;
	d->migrated = d->timed = d->selected = 0;
	d->mv_n = d->upd_n = 0;
}

#else /* !KVMM_HAVE_CUDA */

int bp_dev_open(struct bp_dev **out, struct bp_rates *rates)
{
	(void)out;
	(void)rates;
	fprintf(stderr, "kvmm bench place: --backend cuda: this build has "
		"no CUDA (built with CUDA=0 or without nvcc)\n");
	return -ENODEV;
}

void bp_dev_close(struct bp_dev *d)
{
	(void)d;
}

struct kvrt_ctx *bp_dev_ctx(struct bp_dev *d)
{
	(void)d;
	return NULL;
}

int bp_dev_trace(struct bp_dev *d, const struct bp_trace *tr)
{
	(void)d;
	(void)tr;
	return -ENODEV;
}

int bp_dev_begin(struct bp_dev *d, struct kva_pool *pool,
		 struct kva_migrate_control *mc, int sparse)
{
	(void)d;
	(void)pool;
	(void)mc;
	(void)sparse;
	return -ENODEV;
}

int bp_dev_new_pages(struct bp_dev *d, struct kva_pool *pool,
		     const uint32_t *npages_before)
{
	(void)d;
	(void)pool;
	(void)npages_before;
	return -ENODEV;
}

int bp_dev_attend(struct bp_dev *d, struct kva_pool *pool, uint32_t step,
		  const float *mass, int check)
{
	(void)d;
	(void)pool;
	(void)step;
	(void)mass;
	(void)check;
	return -ENODEV;
}

int bp_dev_step_end(struct bp_dev *d, struct bp_step_time *t)
{
	(void)d;
	(void)t;
	return -ENODEV;
}

double bp_dev_check_err(const struct bp_dev *d)
{
	(void)d;
	return 0;
}

void bp_dev_end(struct bp_dev *d)
{
	(void)d;
}

#endif
