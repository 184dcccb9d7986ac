// SPDX-License-Identifier: MIT
/*
 * bench_alloc.c - `kvmm bench alloc`: latency of one batched append and one
 * batched free over 1K, 4K, 16K and 64K lists (4 to 256 sequences of 32
 * layers x 8 kv-heads), on the GPU (kva_append_cuda()/kva_free_cuda() on
 * device-resident arrays, back-to-back launches and as one CUDA graph) and
 * on the CPU (kva_append_cpu()/kva_free_cpu()), beside the goal:
 * 64K lists appended in under 50 us on an H100.
 *
 * Every repetition starts from the same pool state (restored outside the
 * timed region): every list's high tier is exactly full and its low tier
 * is not, so append takes exactly one page per list; free gives back every
 * page of the batch. The device results are compared with the CPU
 * reference, array by array, after the timed runs.
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
#define NR_SIZES 4
#define BA_SLOTS 256
#define BA_LAYERS 32
#define BA_HEADS 8
#define BA_MAX_TOKENS 512
#define BA_VA_GRANULES 2048	/* VA only: granules are mapped as needed */
#define GOAL_APPEND_64K_US 50.0

static const uint32_t batch_slots[NR_SIZES] = { 4, 16, 64, 256 };

static const struct kva_tier ba_tiers[] = {
	{ 8, 4, 1, 2 },
	{ 4, 2, 1, 1 },
	{ 8, 4, 1, 1 },
	{ 4, 2, 2, 4 },
};

enum { OP_APPEND, OP_FREE, OP_NR };
enum { W_STREAM, W_GRAPH, W_CPU, W_NR };

static const char *const op_name[OP_NR] = { "append", "free" };
static const char *const way_key[W_NR] = { "gpu", "gpu_graph", "cpu" };

/*
 * The state every repetition starts from: copies of the pool's mutable
 * arrays right after setup. Owned by the bench, host memory.
 */
struct snap {
	uint32_t *ring, *page_list, *page_pos, *table, *npages, *ntokens;
	uint64_t head, tail, nr_used;
};

struct alloc_bench {
	struct kvrt_ctx *ctx;		/* host context: bookkeeping only */
	struct kva_pool *pool;
	struct kva_view hv;		/* the pool's own arrays */
	struct snap s0;
	size_t ids, lists;		/* page ids, lists */
	uint32_t slots[BA_SLOTS];
	uint32_t reps;
	uint64_t seed;
	double pages_per_list;		/* average, what free gives back */
	double us[OP_NR][W_NR][NR_SIZES]; /* medians */
	int done[W_NR];
	int gate_timeouts;
};

static int snap_alloc(struct alloc_bench *b)
{
	struct snap *s = &b->s0;

	s->ring = malloc(b->ids * 4);
	s->page_list = malloc(b->ids * 4);
	s->page_pos = malloc(b->ids * 4);
	s->table = malloc(b->lists * b->pool->width * 4);
	s->npages = malloc(b->lists * 8);
	s->ntokens = malloc(b->lists * 8);
	if (!s->ring || !s->page_list || !s->page_pos || !s->table ||
	    !s->npages || !s->ntokens)
		return -ENOMEM;
	return 0;
}

static void snap_free(struct snap *s)
{
	free(s->ring);
	free(s->page_list);
	free(s->page_pos);
	free(s->table);
	free(s->npages);
	free(s->ntokens);
}

/* copy the pool's state into @s (@save) or back from it */
static void snap_xfer(struct alloc_bench *b, struct snap *s, int save)
{
	struct kva_pool *p = b->pool;
	struct {
		void *pool, *snap;
		size_t bytes;
	} a[] = {
		{ p->ring, s->ring, b->ids * 4 },
		{ p->page_list, s->page_list, b->ids * 4 },
		{ p->page_pos, s->page_pos, b->ids * 4 },
		{ p->table, s->table, b->lists * p->width * 4 },
		{ p->npages, s->npages, b->lists * 8 },
		{ p->ntokens, s->ntokens, b->lists * 8 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(a); i++)
		if (save)
			memcpy(a[i].snap, a[i].pool, a[i].bytes);
		else
			memcpy(a[i].pool, a[i].snap, a[i].bytes);
	if (save) {
		s->head = p->head;
		s->tail = p->tail;
		s->nr_used = p->nr_used;
	} else {
		p->head = s->head;
		p->tail = s->tail;
		p->nr_used = s->nr_used;
		p->err = 0;
	}
}

static int check_pool(struct alloc_bench *b, const char *when)
{
	char why[256] = "";
	int ret = kva_check(b->pool, why, sizeof(why));

	if (ret)
		fprintf(stderr, "kvmm bench alloc: kva_check %s: %s (%s)\n",
			when, strerror(-ret), why);
	return ret;
}

/*
 * 256 sequences of 32 + (0..128) prompt tokens, split at random between
 * the tiers (at least one low token), admitted and trimmed; then each
 * list's high tier is made exactly full and its low tier not, so that one
 * append takes one page for every list.
 */
static int setup(struct alloc_bench *b)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = BA_VA_GRANULES * G };
	struct kva_pool_params p = {
		.va_bytes = BA_VA_GRANULES * G,
		.budget_bytes = BA_VA_GRANULES * G,
		.head_dim = 128,
		.nr_tiers = ARRAY_SIZE(ba_tiers),
		.nr_slots = BA_SLOTS,
		.nr_layers = BA_LAYERS,
		.nr_heads = BA_HEADS,
		.max_tokens = BA_MAX_TOKENS,
	};
	uint32_t prompt[BA_SLOTS], *hi = NULL, *lo = NULL, lps, tph, tpl;
	uint64_t need = 0, seed = b->seed, owned = 0;
	struct kva_pool *pool;
	int ret;

	memcpy(p.tiers, ba_tiers, sizeof(ba_tiers));
	ret = kvrt_ctx_create(&o, &b->ctx);
	if (ret)
		return ret;
	p.ctx = b->ctx;
	ret = kva_pool_create(&p, &b->pool);
	if (ret)
		return ret;
	pool = b->pool;
	lps = pool->lists_per_slot;
	b->ids = pool->nr_page_ids;
	b->lists = pool->nr_lists;
	tph = pool->layout[KVA_HI].tokens;
	tpl = pool->layout[KVA_LO].tokens;
	for (uint32_t s = 0; s < BA_SLOTS; s++) {
		b->slots[s] = s;
		prompt[s] = 32 + kvmm_rand(&seed) % 129;
		need += (uint64_t)kva_admit_pages(pool, prompt[s]) * lps;
	}
	need += b->lists; /* one append */
	ret = kva_pool_grow(pool, need / pool->pages_per_granule + 2);
	if (ret)
		return ret;
	hi = malloc(b->lists * 4);
	lo = malloc(b->lists * 4);
	ret = -ENOMEM;
	if (!hi || !lo)
		goto out;
	for (uint32_t k = 0; k < b->lists; k++) {
		lo[k] = 1 + kvmm_rand(&seed) % prompt[k / lps];
		hi[k] = prompt[k / lps] - lo[k];
	}
	ret = kva_admit(pool, b->slots, prompt, BA_SLOTS);
	if (!ret)
		ret = kva_trim(pool, b->slots, BA_SLOTS, hi, lo);
	for (uint32_t k = 0; !ret && k < b->lists; k++) {
		uint32_t nh = pool->npages[2 * k + KVA_HI];
		uint32_t nl = pool->npages[2 * k + KVA_LO];
		uint32_t l = lo[k] == nl * tpl ? lo[k] - 1 : lo[k];

		owned += nh + nl;
		ret = kva_set_tokens(pool, k, nh * tph, l);
	}
	if (!ret)
		ret = check_pool(b, "after setup");
	b->pages_per_list = (double)owned / b->lists;
out:
	free(hi);
	free(lo);
	return ret;
}

typedef int (*view_op)(const struct kva_view *v, const uint32_t *slots,
		       uint32_t n, void *stream);

static const view_op cpu_op[OP_NR] = { kva_append_cpu, kva_free_cpu };

/* what one op must have taken (append) or given back (free): pages */
static uint64_t op_pages(struct alloc_bench *b, int op, uint32_t n)
{
	uint64_t t = 0;

	for (uint32_t k = 0; k < n * b->pool->lists_per_slot; k++)
		t += op == OP_APPEND ? 1 :
		     (uint64_t)b->s0.npages[2 * k] + b->s0.npages[2 * k + 1];
	return t;
}

/* the CPU reference, timed; leaves the pool in the state after the op */
static int bench_cpu(struct alloc_bench *b, int op, int i)
{
	uint32_t n = batch_slots[i];
	uint64_t want = op_pages(b, op, n);
	double t[MAX_REPS];

	for (uint32_t r = 0; r < b->reps; r++) {
		double t0;

		snap_xfer(b, &b->s0, 0);
		t0 = kvmm_now_us();
		cpu_op[op](&b->hv, b->slots, n, NULL);
		t[r] = kvmm_now_us() - t0;
		if (b->pool->err) {
			fprintf(stderr, "kvmm bench alloc: cpu %s over %u "
				"lists: %s\n", op_name[op],
				n * b->pool->lists_per_slot,
				strerror(-b->pool->err));
			return b->pool->err;
		}
	}
	if (b->pool->off[n * b->pool->lists_per_slot] != want) {
		fprintf(stderr, "kvmm bench alloc: cpu %s moved %" PRIu64
			" pages, expected %" PRIu64 "\n", op_name[op],
			b->pool->off[n * b->pool->lists_per_slot], want);
		return -EIO;
	}
	b->us[op][W_CPU][i] = kvmm_median(t, b->reps);
	return 0;
}

/* after an append the pool must still be whole (nr_used follows the op) */
static int check_after_append(struct alloc_bench *b, uint32_t n)
{
	int ret;

	b->pool->nr_used += b->pool->off[n * b->pool->lists_per_slot];
	ret = check_pool(b, "after append");
	b->pool->nr_used = b->s0.nr_used;
	return ret;
}

#ifdef KVMM_HAVE_CUDA
#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench alloc: %s: %s\n", #x,      \
				cudaGetErrorString(__e));                      \
			return -EIO;                                           \
		}                                                              \
	} while (0)

#define GATE_CHUNK 16		/* repetitions queued behind one gate */
#define GATE_TIMEOUT_US 2e6

static const view_op gpu_op[OP_NR] = { kva_append_cuda, kva_free_cuda };

/*
 * A host function at the head of the stream that holds it until every
 * repetition of a chunk is queued, so that the timed region never waits
 * for the host to launch; it lets go after GATE_TIMEOUT_US in any case.
 */
struct gate {
	int open;
	int timed_out;
};

static void gate_wait(void *arg)
{
	struct gate *g = arg;
	double t0 = kvmm_now_us();

	while (!__atomic_load_n(&g->open, __ATOMIC_ACQUIRE)) {
		if (kvmm_now_us() - t0 > GATE_TIMEOUT_US) {
			__atomic_store_n(&g->timed_out, 1, __ATOMIC_RELEASE);
			break;
		}
	}
}

/*
 * The device mirror: every array an op changes in one allocation (arena),
 * so that one device-to-device copy from snap restores the state; the
 * scratch arrays and the slot list apart.
 */
struct dev {
	char *arena, *snap;
	size_t bytes;
	size_t o_ring, o_plist, o_ppos, o_table, o_npages, o_ntokens, o_ht;
	struct kva_view v;
	uint32_t *dslots;
	cudaStream_t st;
	cudaEvent_t e0[GATE_CHUNK], e1[GATE_CHUNK];
	int nev;
	char *back;			/* host copy of the arena */
};

static size_t place(size_t *at, size_t bytes)
{
	size_t o = *at;

	*at += (bytes + 255) & ~(size_t)255;
	return o;
}

static int dev_init(struct alloc_bench *b, struct dev *d)
{
	struct kva_pool *p = b->pool;
	size_t at = 0;
	uint64_t ht[3] = { b->s0.head, b->s0.tail, 0 };

	d->o_ring = place(&at, b->ids * 4);
	d->o_plist = place(&at, b->ids * 4);
	d->o_ppos = place(&at, b->ids * 4);
	d->o_table = place(&at, b->lists * p->width * 4);
	d->o_npages = place(&at, b->lists * 8);
	d->o_ntokens = place(&at, b->lists * 8);
	d->o_ht = place(&at, sizeof(ht));
	d->bytes = at;
	d->back = malloc(at);
	if (!d->back)
		return -ENOMEM;
	CU(cudaStreamCreateWithFlags(&d->st, cudaStreamNonBlocking));
	for (; d->nev < GATE_CHUNK; d->nev++) {
		CU(cudaEventCreate(&d->e0[d->nev]));
		CU(cudaEventCreate(&d->e1[d->nev]));
	}
	CU(cudaMalloc((void **)&d->arena, at));
	CU(cudaMalloc((void **)&d->snap, at));
	CU(cudaMalloc((void **)&d->dslots, sizeof(b->slots)));
	kva_pool_view(p, &d->v);
	d->v.ring = (uint32_t *)(d->arena + d->o_ring);
	d->v.page_list = (uint32_t *)(d->arena + d->o_plist);
	d->v.page_pos = (uint32_t *)(d->arena + d->o_ppos);
	d->v.table = (uint32_t *)(d->arena + d->o_table);
	d->v.npages = (uint32_t *)(d->arena + d->o_npages);
	d->v.ntokens = (uint32_t *)(d->arena + d->o_ntokens);
	d->v.head = (uint64_t *)(d->arena + d->o_ht);
	d->v.tail = d->v.head + 1;
	d->v.err = (int32_t *)(d->v.head + 2);
	CU(cudaMalloc((void **)&d->v.cnt, b->lists * 4));
	CU(cudaMalloc((void **)&d->v.off, (b->lists + 1) * 8));

	/* the snapshot, laid out like the arena */
	memset(d->back, 0, at);
	memcpy(d->back + d->o_ring, b->s0.ring, b->ids * 4);
	memcpy(d->back + d->o_plist, b->s0.page_list, b->ids * 4);
	memcpy(d->back + d->o_ppos, b->s0.page_pos, b->ids * 4);
	memcpy(d->back + d->o_table, b->s0.table, b->lists * p->width * 4);
	memcpy(d->back + d->o_npages, b->s0.npages, b->lists * 8);
	memcpy(d->back + d->o_ntokens, b->s0.ntokens, b->lists * 8);
	memcpy(d->back + d->o_ht, ht, sizeof(ht));
	CU(cudaMemcpy(d->snap, d->back, at, cudaMemcpyHostToDevice));
	CU(cudaMemcpy(d->arena, d->snap, at, cudaMemcpyDeviceToDevice));
	CU(cudaMemcpy(d->dslots, b->slots, sizeof(b->slots),
		      cudaMemcpyHostToDevice));
	CU(cudaDeviceSynchronize());
	return 0;
}

static void dev_fini(struct dev *d)
{
	for (int i = 0; i < d->nev; i++) {
		cudaEventDestroy(d->e0[i]);
		cudaEventDestroy(d->e1[i]);
	}
	cudaFree(d->arena);
	cudaFree(d->snap);
	cudaFree(d->dslots);
	cudaFree(d->v.cnt);
	cudaFree(d->v.off);
	if (d->st)
		cudaStreamDestroy(d->st);
	free(d->back);
}

/* the device arena equals the pool's arrays, the result is 0 */
static int dev_compare(struct alloc_bench *b, struct dev *d, const char *what)
{
	struct kva_pool *p = b->pool;
	const uint64_t *ht;
	struct {
		const char *name;
		size_t off;
		const void *host;
		size_t bytes;
	} a[] = {
		{ "ring", d->o_ring, p->ring, b->ids * 4 },
		{ "page_list", d->o_plist, p->page_list, b->ids * 4 },
		{ "page_pos", d->o_ppos, p->page_pos, b->ids * 4 },
		{ "table", d->o_table, p->table, b->lists * p->width * 4 },
		{ "npages", d->o_npages, p->npages, b->lists * 8 },
		{ "ntokens", d->o_ntokens, p->ntokens, b->lists * 8 },
	};

	CU(cudaStreamSynchronize(d->st));
	CU(cudaMemcpy(d->back, d->arena, d->bytes, cudaMemcpyDeviceToHost));
	ht = (const uint64_t *)(d->back + d->o_ht);
	if (ht[0] != p->head || ht[1] != p->tail || (int32_t)ht[2] != 0) {
		fprintf(stderr, "kvmm bench alloc: %s: device head %" PRIu64
			" tail %" PRIu64 " err %d, cpu head %" PRIu64
			" tail %" PRIu64 "\n", what, ht[0], ht[1],
			(int32_t)ht[2], p->head, p->tail);
		return -EIO;
	}
	for (size_t i = 0; i < ARRAY_SIZE(a); i++) {
		const uint32_t *x = (const uint32_t *)(d->back + a[i].off);
		const uint32_t *y = a[i].host;

		for (size_t j = 0; j < a[i].bytes / 4; j++)
			if (x[j] != y[j]) {
				fprintf(stderr, "kvmm bench alloc: %s: %s[%zu]"
					": device %u, cpu %u\n", what,
					a[i].name, j, x[j], y[j]);
				return -EIO;
			}
	}
	return 0;
}

/* capture one op on the bench stream as a graph */
static int capture(struct dev *d, int op, uint32_t n, cudaGraphExec_t *exec)
{
	cudaGraph_t g = NULL;
	cudaError_t e;
	int ret;

	CU(cudaStreamBeginCapture(d->st, cudaStreamCaptureModeThreadLocal));
	ret = gpu_op[op](&d->v, d->dslots, n, d->st);
	e = cudaStreamEndCapture(d->st, &g);
	if (ret || e != cudaSuccess) {
		fprintf(stderr, "kvmm bench alloc: capturing %s: %s\n",
			op_name[op], ret ? strerror(-ret) :
					   cudaGetErrorString(e));
		if (g)
			cudaGraphDestroy(g);
		return ret ? ret : -EIO;
	}
	e = cudaGraphInstantiateWithFlags(exec, g, 0);
	cudaGraphDestroy(g);
	CU(e);
	return 0;
}

/* @reps restored-then-timed runs, GATE_CHUNK at a time behind a gate */
static int time_gpu(struct alloc_bench *b, struct dev *d, int op, uint32_t n,
		    cudaGraphExec_t exec, double *med)
{
	double t[MAX_REPS];

	for (uint32_t done = 0; done < b->reps; done += GATE_CHUNK) {
		uint32_t m = b->reps - done < GATE_CHUNK ? b->reps - done :
							  GATE_CHUNK;
		struct gate gate = { 0, 0 };
		int ret = 0;

		CU(cudaLaunchHostFunc(d->st, gate_wait, &gate));
		for (uint32_t j = 0; j < m && !ret; j++) {
			cudaError_t e;

			e = cudaMemcpyAsync(d->arena, d->snap, d->bytes,
					    cudaMemcpyDeviceToDevice, d->st);
			if (!e)
				e = cudaEventRecord(d->e0[j], d->st);
			if (!e && exec)
				e = cudaGraphLaunch(exec, d->st);
			else if (!e)
				ret = gpu_op[op](&d->v, d->dslots, n, d->st);
			if (!e && !ret)
				e = cudaEventRecord(d->e1[j], d->st);
			if (e) {
				fprintf(stderr, "kvmm bench alloc: %s: %s\n",
					op_name[op], cudaGetErrorString(e));
				ret = -EIO;
			}
		}
		__atomic_store_n(&gate.open, 1, __ATOMIC_RELEASE);
		CU(cudaStreamSynchronize(d->st));
		if (ret) {
			fprintf(stderr, "kvmm bench alloc: %s: %s\n",
				op_name[op], strerror(-ret));
			return ret;
		}
		b->gate_timeouts +=
			__atomic_load_n(&gate.timed_out, __ATOMIC_ACQUIRE);
		for (uint32_t j = 0; j < m; j++) {
			float ms;

			CU(cudaEventElapsedTime(&ms, d->e0[j], d->e1[j]));
			t[done + j] = ms * 1e3;
		}
	}
	*med = kvmm_median(t, b->reps);
	return 0;
}

/* both device ways for one op and size, each checked against the CPU */
static int bench_gpu(struct alloc_bench *b, struct dev *d, int op, int i)
{
	uint32_t n = batch_slots[i];
	cudaGraphExec_t exec = NULL;
	char what[64];
	int ret;

	/* the CPU reference result, to compare with */
	snap_xfer(b, &b->s0, 0);
	cpu_op[op](&b->hv, b->slots, n, NULL);
	if (b->pool->err)
		return b->pool->err;

	ret = time_gpu(b, d, op, n, NULL, &b->us[op][W_STREAM][i]);
	snprintf(what, sizeof(what), "%s over %u lists", op_name[op],
		 n * b->pool->lists_per_slot);
	if (!ret)
		ret = dev_compare(b, d, what);
	if (ret)
		return ret;
	ret = capture(d, op, n, &exec);
	if (!ret)
		ret = time_gpu(b, d, op, n, exec, &b->us[op][W_GRAPH][i]);
	if (exec)
		cudaGraphExecDestroy(exec);
	snprintf(what, sizeof(what), "%s over %u lists (graph)", op_name[op],
		 n * b->pool->lists_per_slot);
	if (!ret)
		ret = dev_compare(b, d, what);
	return ret;
}

static int run_gpu(struct alloc_bench *b)
{
	struct dev d;
	int ret;

	memset(&d, 0, sizeof(d));
	ret = dev_init(b, &d);
	for (int op = 0; !ret && op < OP_NR; op++)
		for (int i = 0; !ret && i < NR_SIZES; i++)
			ret = bench_gpu(b, &d, op, i);
	dev_fini(&d);
	if (!ret)
		b->done[W_STREAM] = b->done[W_GRAPH] = 1;
	return ret;
}
#endif

static int run_cpu(struct alloc_bench *b)
{
	int ret = 0;

	for (int op = 0; !ret && op < OP_NR; op++)
		for (int i = 0; !ret && i < NR_SIZES; i++) {
			ret = bench_cpu(b, op, i);
			if (!ret && op == OP_APPEND)
				ret = check_after_append(b, batch_slots[i]);
		}
	snap_xfer(b, &b->s0, 0);
	if (!ret)
		ret = check_pool(b, "after the runs");
	if (!ret)
		b->done[W_CPU] = 1;
	return ret;
}

static void print_json(struct alloc_bench *b, const char *backend)
{
	uint32_t lps = b->pool->lists_per_slot;

	printf("{\"bench\":\"alloc\",\"backend\":\"%s\",\"reps\":%u,"
	       "\"seed\":%" PRIu64 ",\"page_size\":%u,\"lists_per_slot\":%u,"
	       "\"pages_per_list\":%.3f,\"lists\":[",
	       backend, b->reps, b->seed, b->pool->page_size, lps,
	       b->pages_per_list);
	for (int i = 0; i < NR_SIZES; i++)
		printf("%s%u", i ? "," : "", batch_slots[i] * lps);
	printf("],\"goal_us\":{\"append_64k\":%.1f},\"us\":{",
	       GOAL_APPEND_64K_US);
	for (int op = 0; op < OP_NR; op++) {
		printf("%s\"%s\":{", op ? "," : "", op_name[op]);
		for (int w = 0, n = 0; w < W_NR; w++) {
			if (!b->done[w])
				continue;
			printf("%s\"%s\":[", n++ ? "," : "", way_key[w]);
			for (int i = 0; i < NR_SIZES; i++)
				printf("%s%.2f", i ? "," : "",
				       b->us[op][w][i]);
			printf("]");
		}
		printf("}");
	}
	printf("}}\n");
}

static void print_text(struct alloc_bench *b, const char *backend)
{
	uint32_t lps = b->pool->lists_per_slot;

	printf("kvmm bench alloc: backend %s, up to %u sequences x %u layers "
	       "x %u kv-heads, pages of %u B, median of %u, seed %" PRIu64
	       "\n",
	       backend, BA_SLOTS, BA_LAYERS, BA_HEADS, b->pool->page_size,
	       b->reps, b->seed);
	printf("append: one page for every list (high tier full); free: "
	       "every page, %.2f per list\n", b->pages_per_list);
	if (b->done[W_STREAM])
		printf("gpu: kernels launched back to back; graph: the op as "
		       "one CUDA graph; both timed with events\n");
	printf("\n%-8s %8s %10s %10s %10s   %s\n", "op", "lists", "gpu us",
	       "graph us", "cpu us", "goal (H100)");
	for (int op = 0; op < OP_NR; op++)
		for (int i = 0; i < NR_SIZES; i++) {
			char c[W_NR][24];

			for (int w = 0; w < W_NR; w++) {
				if (b->done[w])
					snprintf(c[w], sizeof(c[w]), "%.1f",
						 b->us[op][w][i]);
				else
					snprintf(c[w], sizeof(c[w]), "-");
			}
			printf("%-8s %8u %10s %10s %10s%s\n", op_name[op],
			       batch_slots[i] * lps, c[W_STREAM], c[W_GRAPH],
			       c[W_CPU],
			       op == OP_APPEND && i == NR_SIZES - 1 ?
				       "   < 50 us" : "");
		}
	if (b->gate_timeouts)
		printf("\nnote: %d chunks started before all their work was "
		       "queued: those timings include launch gaps\n",
		       b->gate_timeouts);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvmm bench alloc [--backend auto|host|cuda] [--reps R] "
		"[--seed S] [--json]\n"
		"  --reps R   timed runs per figure; medians are printed "
		"(1..%d, default 51)\n"
		"  --seed S   prompt lengths and tier splits (default 1)\n",
		MAX_REPS);
}

/**
 * cmd_bench_alloc() - `kvmm bench alloc`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a step failed or a result was wrong, 2
 * for bad arguments.
 */
int cmd_bench_alloc(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "reps", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_AUTO };
	uint64_t reps = 51, seed = 1;
	struct kvrt_ctx *probe = NULL;
	struct alloc_bench *b;
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
			fprintf(stderr, "kvmm bench alloc: bad option '%s' "
				"(see --help)\n", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench alloc: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	/* which side runs the ops; the pool's bookkeeping is on the host */
	if (kvmm_ctx_open("kvmm bench alloc", &o, &probe))
		return 1;
	kind = kvrt_ctx_backend(probe);
#ifndef KVMM_HAVE_CUDA
	(void)kind;
#endif
	b = calloc(1, sizeof(*b));
	if (!b) {
		kvrt_ctx_destroy(probe);
		return 1;
	}
	b->reps = reps;
	b->seed = seed;
	ret = setup(b);
	if (ret) {
		fprintf(stderr, "kvmm bench alloc: setup: %s%s%s\n",
			strerror(-ret), b->ctx ? ": " : "",
			b->ctx ? kvrt_ctx_last_error(b->ctx) : "");
		goto out;
	}
	ret = snap_alloc(b);
	if (ret)
		goto out;
	kva_pool_view(b->pool, &b->hv);
	snap_xfer(b, &b->s0, 1);
#ifdef KVMM_HAVE_CUDA
	if (kind == KVRT_BACKEND_CUDA) {
		ret = run_gpu(b);
		if (ret)
			goto out;
	}
#endif
	ret = run_cpu(b);
	if (ret)
		goto out;
	if (json)
		print_json(b, kvrt_ctx_name(probe));
	else
		print_text(b, kvrt_ctx_name(probe));
out:
	snap_free(&b->s0);
	if (b->pool)
		kva_pool_destroy(b->pool);
	if (b->ctx)
		kvrt_ctx_destroy(b->ctx);
	free(b);
	kvrt_ctx_destroy(probe);
	return ret ? 1 : 0;
}
