// SPDX-License-Identifier: MIT
/*
 * bench_attn.c - `kvmm bench attn`: decode attention over paged KV, achieved
 * GB/s counting every byte read (K, V, metadata, scores, tables, q, out)
 * beside the streaming-read ceiling measured in the same run, over a grid
 * of batch x context x tier mix. Llama-3-8B head shapes by default.
 * --hadamard times each point also with the policy's rotation of q before
 * and of the output after (hadamard=1), --knorm with its per-channel
 * scaling of q before (knorm=1), as the policy cache runs them;
 * --device cpu times the host cache's attention (kvk_attn_decode_cpu(),
 * one thread, fp32 q/out) beside the fp16 mix of the same run.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chnorm.h"
#include "kva.h"
#include "kvattn.h"
#include "kvk.h"
#include "kvmm.h"

struct mix {
	const char *name;
	struct kva_tier t[2];
	double hi_frac;		/* share of tokens in the high tier */
};

static const struct mix mixes[] = {
	{ "fp16", { { 16, 16, 1, 1 }, { 16, 16, 1, 1 } }, 1.0 },
	{ "k8v4/k4v2", { { 8, 4, 1, 2 }, { 4, 2, 2, 4 } }, 0.5 },
	{ "k8v8", { { 8, 8, 1, 1 }, { 8, 8, 1, 1 } }, 1.0 },
	{ "k4v4", { { 4, 4, 1, 1 }, { 4, 4, 1, 1 } }, 1.0 },
	/*
	 * diffkv:prune=0,quant=1,hadamard=1 (issue 18's best): its tiers and
	 * its share of high tokens on unseen WikiText, 22.8% (335335 of
	 * 1473840, Documentation/policies/unseen-smollm2-2k-c.jsonl)
	 */
	{ "k8v4/k4v2g1", { { 8, 4, 1, 1 }, { 4, 2, 1, 1 } }, 0.228 },
};

#define GRAN (2ULL << 20)

/*
 * struct point - one grid point's page tables in host memory: batch
 * sequences of ctx tokens per kv-head, pages taken in order from one pool
 * (hi_frac of the tokens in the high tier), and the attention's arguments
 * but for the addresses (pool, tables, counts, bases, q, out)
 */
struct point {
	struct kvk_attn_args a;
	uint32_t *tables, *ntok, *base, width, lists;
	size_t pool_bytes, nq;
};

static int point_make(struct point *pt, const struct mix *m, uint32_t batch,
		      uint32_t ctx, uint32_t heads, uint32_t group,
		      uint32_t hd, int scores)
{
	struct kva_layout l[2];
	struct kvk_attn_args *a = &pt->a;
	uint32_t n_hi = (uint32_t)(ctx * m->hi_frac), n_lo = ctx - n_hi;
	uint32_t pages_hi, pages_lo, ppg, next = 0;
	int ps = kva_page_size(hd, m->t, 2);

	memset(pt, 0, sizeof(*pt));
	if (ps < 0)
		return ps;
	for (int i = 0; i < 2; i++)
		kva_page_layout(hd, ps, &m->t[i], &l[i]);
	ppg = GRAN / ps;
	pages_hi = (n_hi + l[0].tokens - 1) / l[0].tokens;
	pages_lo = (n_lo + l[1].tokens - 1) / l[1].tokens;
	pt->lists = batch * heads;
	pt->width = pages_hi + pages_lo;
	pt->pool_bytes = ((size_t)pt->lists * pt->width / ppg + 1) * GRAN;
	pt->nq = (size_t)pt->lists * group * hd;
	pt->tables = calloc((size_t)pt->lists * pt->width, 4);
	pt->ntok = calloc((size_t)pt->lists * 2, 4);
	pt->base = calloc(batch, 4);
	if (!pt->tables || !pt->ntok || !pt->base)
		return -ENOMEM;
	for (uint32_t li = 0; li < pt->lists; li++) {
		for (uint32_t p = 0; p < pages_hi; p++)
			pt->tables[(size_t)li * pt->width + p] = next++;
		for (uint32_t p = 0; p < pages_lo; p++)
			pt->tables[(size_t)li * pt->width + pt->width - 1 - p] =
				next++;
		pt->ntok[2 * li] = n_hi, pt->ntok[2 * li + 1] = n_lo;
	}
	for (uint32_t s = 0; s < batch; s++)
		pt->base[s] = s * heads;
	a->nr_seqs = batch, a->nr_kv_heads = heads, a->group = group;
	a->head_dim = hd, a->scale = 1.0f / sqrtf((float)hd);
	a->page_size = ps, a->pages_per_granule = ppg, a->width = pt->width;
	a->update_scores = scores;
	for (int i = 0; i < 2; i++)
		a->tier[i] = (struct kvk_attn_tier){
			m->t[i].kbits, m->t[i].vbits, m->t[i].kgroups,
			m->t[i].vgroups, l[i].tokens, l[i].k_off, l[i].km_off,
			l[i].v_off, l[i].vm_off, l[i].score_off, l[i].pos_off,
		};
	return 0;
}

static void point_free(struct point *pt)
{
	free(pt->tables), free(pt->ntok), free(pt->base);
}

struct result {
	double us, gbs, bytes;
	double us_x;		/* with the knobs' work on q and out; 0 without */
};

#define CPU_REPS 7

/*
 * this thread's CPU time in microseconds: the host figures are CPU time,
 * not wall time, so that other processes on a shared machine do not enter
 */
static double thread_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* the knobs timed beside each point (--hadamard, --knorm) */
enum { X_HADAMARD = 1, X_KNORM = 2 };

/* knorm's scaling of the queries: means 0 and scales 1 of every list */
static struct kvk_chn_args knorm_args(const struct point *pt, float *q,
				      float *param)
{
	struct kvk_chn_args c = {
		.x = q, .ntok = pt->a.nr_seqs,
		.heads = pt->a.nr_kv_heads * pt->a.group,
		.group = pt->a.group, .head_dim = pt->a.head_dim,
		.nr_seqs = pt->a.nr_seqs, .list_base = pt->a.list_base,
		.param = param, .op = KVK_CHN_QUERIES,
	};

	return c;
}

/* [lists][2][hd]: means 0, scales 1 */
static float *knorm_param(const struct point *pt)
{
	uint32_t hd = pt->a.head_dim;
	float *p = calloc((size_t)pt->lists * 2 * hd, 4);

	for (size_t l = 0; p && l < pt->lists; l++)
		for (uint32_t c = 0; c < hd; c++)
			p[(l * 2 + 1) * hd + c] = 1.0f;
	return p;
}

/*
 * The host cache's attention at one point: kvk_attn_decode_cpu() on one
 * thread over a host pool (0x3c bytes: valid fp16, finite scales), fp32 q
 * and out; with @knobs also kvk_chnorm_cpu() of q (X_KNORM) and
 * kvk_hadamard_cpu() of q before and out after (X_HADAMARD).
 */
static int run_point_cpu(const struct mix *m, uint32_t batch, uint32_t ctx,
			 uint32_t heads, uint32_t group, uint32_t hd,
			 int scores, int knobs, struct result *res)
{
	struct point pt;
	struct kvk_chn_args cn;
	double t[2][CPU_REPS];
	float *q = NULL, *out = NULL, *par = NULL;
	void *pool = NULL;
	int ret = point_make(&pt, m, batch, ctx, heads, group, hd, scores);

	if (!ret) {
		pool = aligned_alloc(4096, pt.pool_bytes);
		q = malloc(pt.nq * 4);
		out = malloc(pt.nq * 4);
		par = knorm_param(&pt);
		ret = pool && q && out && par ? 0 : -ENOMEM;
	}
	if (!ret) {
		memset(pool, 0x3c, pt.pool_bytes);
		for (size_t i = 0; i < pt.nq; i++)
			q[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
		pt.a.dtype = KVK_F32, pt.a.q = q, pt.a.out = out;
		pt.a.pool = (uint64_t)(uintptr_t)pool;
		pt.a.tables = pt.tables, pt.a.ntokens = pt.ntok;
		pt.a.list_base = pt.base;
	}
	cn = knorm_args(&pt, q, par);
	for (int r = -1; r < CPU_REPS && !ret; r++)
		for (int w = 0; w <= !!knobs && !ret; w++) {
			double t0 = thread_us();

			if (w && (knobs & X_KNORM))
				ret = kvk_chnorm_cpu(&cn, NULL);
			if (w && (knobs & X_HADAMARD))
				ret = ret ?: kvk_hadamard_cpu(q, KVK_F32,
							      pt.nq / hd, hd,
							      NULL);
			ret = ret ?: kvk_attn_decode_cpu(&pt.a, NULL);
			if (w && (knobs & X_HADAMARD))
				ret = ret ?: kvk_hadamard_cpu(out, KVK_F32,
							      pt.nq / hd, hd,
							      NULL);
			if (r >= 0)
				t[w][r] = thread_us() - t0;
		}
	if (!ret) {
		res->us = kvmm_median(t[0], CPU_REPS);
		res->us_x = knobs ? kvmm_median(t[1], CPU_REPS) : 0;
		res->bytes = (double)kvk_attn_bytes(&pt.a, pt.ntok);
		res->gbs = res->bytes / (res->us * 1e-6) / 1e9;
	}
	free(pool), free(q), free(out), free(par);
	point_free(&pt);
	return ret;
}

/* the grid's mix called @name, or NULL */
static const struct mix *mix_named(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(mixes); i++)
		if (!strcmp(mixes[i].name, name))
			return &mixes[i];
	return NULL;
}

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define REPS 15

#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench attn: %s: %s\n", #x,       \
				cudaGetErrorString(__e));                      \
			return -EIO;                                           \
		}                                                              \
	} while (0)

/*
 * One grid point on the device (struct point), data a constant pattern
 * (0x3c bytes: valid fp16, not zeros); with @knobs also timed with
 * kvk_chnorm_cuda() of q (X_KNORM: the executor's fp32 queries, a scratch
 * row here) and kvk_hadamard_cuda() of q before and of out after
 * (X_HADAMARD) each call.
 */
static int run_point(const struct mix *m, uint32_t batch, uint32_t ctx,
		     uint32_t heads, uint32_t group, uint32_t hd, int scores,
		     int knobs, struct result *res)
{
	struct point pt;
	struct kvk_attn_args *a = &pt.a;
	struct kvk_chn_args cn;
	double t[2][REPS];
	cudaEvent_t e0, e1;
	void *pool, *dtab, *dntok, *dbase, *q, *out, *work = NULL;
	void *q32, *dpar;
	float ms, *par;
	int ret = point_make(&pt, m, batch, ctx, heads, group, hd, scores);

	par = ret ? NULL : knorm_param(&pt);
	if (ret || !par) {
		point_free(&pt);
		free(par);
		return ret ? ret : -ENOMEM;
	}
	CU(cudaMalloc(&pool, pt.pool_bytes));
	CU(cudaMemset(pool, 0x3c, pt.pool_bytes));
	CU(cudaMalloc(&dtab, (size_t)pt.lists * pt.width * 4));
	CU(cudaMemcpy(dtab, pt.tables, (size_t)pt.lists * pt.width * 4,
		      cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dntok, (size_t)pt.lists * 8));
	CU(cudaMemcpy(dntok, pt.ntok, (size_t)pt.lists * 8,
		      cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dbase, batch * 4));
	CU(cudaMemcpy(dbase, pt.base, batch * 4, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&q, pt.nq * 2));
	CU(cudaMemset(q, 0x2c, pt.nq * 2));
	CU(cudaMalloc(&out, pt.nq * 2));
	CU(cudaMalloc(&q32, pt.nq * 4));
	CU(cudaMemset(q32, 0, pt.nq * 4));
	CU(cudaMalloc(&dpar, (size_t)pt.lists * 2 * hd * 4));
	CU(cudaMemcpy(dpar, par, (size_t)pt.lists * 2 * hd * 4,
		      cudaMemcpyHostToDevice));

	a->dtype = KVK_F16, a->q = q, a->out = out;
	a->pool = (uint64_t)(uintptr_t)pool;
	a->tables = dtab, a->ntokens = dntok, a->list_base = dbase;
	a->work_bytes = kvk_attn_work_bytes(a);
	if (a->work_bytes) {
		CU(cudaMalloc(&work, a->work_bytes));
		a->work = work;
	}
	cn = knorm_args(&pt, q32, dpar);
	cn.list_base = dbase;
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	for (int r = -3; r < REPS && !ret; r++)
		for (int w = 0; w <= !!knobs && !ret; w++) {
			CU(cudaEventRecord(e0, 0));
			if (w && (knobs & X_KNORM))
				ret = kvk_chnorm_cuda(&cn, NULL);
			if (w && (knobs & X_HADAMARD))
				ret = ret ?: kvk_hadamard_cuda(q, KVK_F16,
							       pt.nq / hd, hd,
							       NULL);
			ret = ret ?: kvk_attn_decode_cuda(a, NULL);
			if (w && (knobs & X_HADAMARD))
				ret = ret ?: kvk_hadamard_cuda(out, KVK_F16,
							       pt.nq / hd, hd,
							       NULL);
			CU(cudaEventRecord(e1, 0));
			CU(cudaEventSynchronize(e1));
			CU(cudaEventElapsedTime(&ms, e0, e1));
			if (r >= 0)
				t[w][r] = ms;
		}
	CU(cudaGetLastError());
	if (!ret) {
		res->us = kvmm_median(t[0], REPS) * 1e3;
		res->us_x = knobs ? kvmm_median(t[1], REPS) * 1e3 : 0;
		res->bytes = (double)kvk_attn_bytes(a, pt.ntok);
		res->gbs = res->bytes / (res->us * 1e-6) / 1e9;
	}
	cudaEventDestroy(e0), cudaEventDestroy(e1);
	cudaFree(pool), cudaFree(dtab), cudaFree(dntok), cudaFree(dbase);
	cudaFree(q), cudaFree(out), cudaFree(work), cudaFree(q32);
	cudaFree(dpar);
	free(par);
	point_free(&pt);
	return ret;
}
#endif

static const char usage[] =
	"usage: kvmm bench attn [--scores] [--hadamard] [--knorm] [--json] "
	"[--tiers T] [--batch N]\n"
	"                       [--ctx N] [--device cuda|cpu]\n";

/* one point's line: a table row or a JSON object */
static void print_point(int json, int first, const struct mix *m,
			uint32_t batch, uint32_t ctx, const struct result *r,
			double ceil_gbs, double peer_us, int knobs)
{
	if (json) {
		printf("%s{\"tiers\":\"%s\",\"batch\":%u,\"ctx\":%u,"
		       "\"us\":%.2f,\"bytes\":%.0f,\"gbs\":%.1f",
		       first ? "" : ",", m->name, batch, ctx, r->us, r->bytes,
		       r->gbs);
		if (knobs)
			printf(",\"us_knobs\":%.2f", r->us_x);
		printf("}");
		return;
	}
	printf("%-12s %6u %6u %10.1f %10.1f %9.1f", m->name, batch, ctx, r->us,
	       r->bytes / 1e6, r->gbs);
	if (ceil_gbs > 0)
		printf(" %6.1f%%", 100 * r->gbs / ceil_gbs);
	else
		printf(" %7.2f", r->us / peer_us);
	if (knobs)
		printf(" %10.1f %+7.1f%%", r->us_x,
		       100 * (r->us_x - r->us) / r->us);
	printf("\n");
}

/**
 * cmd_bench_attn() - `kvmm bench attn`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a run failed or there is no GPU, 2 for bad
 * arguments.
 */
int cmd_bench_attn(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "scores", no_argument, NULL, 's' },
		{ "hadamard", no_argument, NULL, 'r' },
		{ "knorm", no_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ "tiers", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "device", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const uint32_t batches[] = { 1, 16, 64 };
	static const uint32_t ctxs[] = { 1024, 8192 };
	const char *only_tiers = NULL;
	long only_batch = 0, only_ctx = 0;
	int json = 0, scores = 0, knobs = 0, cpu = 0, first = 1, c;
	double ceil_gbs = 0, peer_us[ARRAY_SIZE(ctxs)] = { 0 };
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			scores = 1;
			break;
		case 'r':
			knobs |= X_HADAMARD;
			break;
		case 'k':
			knobs |= X_KNORM;
			break;
		case 'j':
			json = 1;
			break;
		case 't':
			only_tiers = optarg;
			if (!mix_named(optarg)) {
				fprintf(stderr, "kvmm bench attn: --tiers '%s': "
						"not fp16, k8v4/k4v2, k8v8, "
						"k4v4 or k8v4/k4v2g1\n",
					optarg);
				return 2;
			}
			break;
		case 'd':
			if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
				fprintf(stderr, "kvmm bench attn: --device "
						"'%s': not cuda or cpu\n",
					optarg);
				return 2;
			}
			cpu = !strcmp(optarg, "cpu");
			break;
		case 'b':
		case 'c':
			errno = 0;
			only_batch = c == 'b' ? strtol(optarg, &end, 10) :
						 only_batch;
			only_ctx = c == 'c' ? strtol(optarg, &end, 10) :
					       only_ctx;
			if (errno || *end || !*optarg ||
			    (c == 'b' ? only_batch != 1 && only_batch != 16 &&
						only_batch != 64 :
					only_ctx != 1024 && only_ctx != 8192)) {
				fprintf(stderr, "kvmm bench attn: --%s '%s': "
						"not one of the grid's (%s)\n",
					c == 'b' ? "batch" : "ctx", optarg,
					c == 'b' ? "1, 16, 64" : "1024, 8192");
				return 2;
			}
			break;
		case 'h':
			printf("%s"
			       "  Llama-3-8B heads (8 kv-heads, GQA 4, head_dim "
			       "128), fp16 activations;\n  batch {1, 16, 64} x "
			       "context {1024, 8192} x tiers {fp16, k8v4/k4v2 "
			       "half and half,\n  k8v8, k4v4, k8v4/k4v2g1 at "
			       "22.8%% high (diffkv p0 q1 hadamard)};\n"
			       "  --tiers, --batch, --ctx keep only the points "
			       "that match;\n"
			       "  --hadamard also times each point with the "
			       "rotation of q and out\n  (hadamard=1), --knorm "
			       "with the scaling of q (knorm=1): columns\n"
			       "  'knobs us' and the change;\n"
			       "  --device cpu: the host cache's attention, one "
			       "thread, fp32 q/out,\n  batch 1, beside the fp16 "
			       "mix of the run (x fp16)\n", usage);
			return 0;
		default:
			fprintf(stderr, "%s", usage);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench attn: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	if (cpu && only_batch > 1) {
		fprintf(stderr, "kvmm bench attn: --device cpu runs batch 1 "
				"only\n");
		return 2;
	}
#ifdef KVMM_HAVE_CUDA
	if (!cpu) {
		char why[256];

		if (kvrt_cuda_probe(why, sizeof(why))) {
			fprintf(stderr, "kvmm bench attn: no GPU: %s\n", why);
			return 1;
		}
		if (kvmm_read_ceiling(&ceil_gbs))
			return 1;
	}
#else
	if (!cpu) {
		fprintf(stderr, "kvmm bench attn: built without CUDA (--device "
				"cpu runs the host attention)\n");
		return 1;
	}
#endif
	/* on the CPU, the fp16 mix of each context first: the peer */
	for (size_t ci = 0; cpu && ci < ARRAY_SIZE(ctxs); ci++) {
		struct result r;

		if (run_point_cpu(&mixes[0], 1, ctxs[ci], 8, 4, 128, scores, 0,
				  &r))
			return 1;
		peer_us[ci] = r.us;
	}
	if (json)
		printf("{\"bench\":\"attn\",\"device\":\"%s\","
		       "\"read_ceiling_gbs\":%.1f,\"scores\":%d,"
		       "\"hadamard\":%d,\"knorm\":%d,\"points\":[",
		       cpu ? "cpu" : "cuda", ceil_gbs, scores,
		       !!(knobs & X_HADAMARD), !!(knobs & X_KNORM));
	else if (cpu)
		printf("kvmm bench attn: 8 kv-heads x GQA 4, head_dim 128, "
		       "fp32 q/out, host attention, 1 thread, CPU time%s\n\n"
		       "%-12s %6s %6s %10s %10s %9s %7s%s\n",
		       scores ? ", scores updated" : "", "tiers", "batch",
		       "ctx", "us", "MB read", "GB/s", "x fp16",
		       knobs ? "   knobs us  knobs +%" : "");
	else
		printf("kvmm bench attn: 8 kv-heads x GQA 4, head_dim 128, "
		       "fp16 q/out%s; read ceiling %.0f GB/s\n\n"
		       "%-12s %6s %6s %10s %10s %9s %7s%s\n",
		       scores ? ", scores updated" : "", ceil_gbs, "tiers",
		       "batch", "ctx", "us", "MB read", "GB/s", "ceil%",
		       knobs ? "   knobs us  knobs +%" : "");
	for (size_t mi = 0; mi < ARRAY_SIZE(mixes); mi++)
		for (size_t b = 0; b < ARRAY_SIZE(batches); b++)
			for (size_t ci = 0; ci < ARRAY_SIZE(ctxs); ci++) {
				const struct mix *m = &mixes[mi];
				struct result r;
				int ret;

				if ((only_tiers && strcmp(only_tiers, m->name)) ||
				    (only_batch && only_batch != batches[b]) ||
				    (only_ctx && only_ctx != ctxs[ci]) ||
				    (cpu && batches[b] != 1))
					continue;
#ifdef KVMM_HAVE_CUDA
				ret = cpu ? run_point_cpu(m, batches[b],
							  ctxs[ci], 8, 4, 128,
							  scores, knobs, &r)
					  : run_point(m, batches[b], ctxs[ci],
						      8, 4, 128, scores, knobs,
						      &r);
#else
				ret = run_point_cpu(m, batches[b], ctxs[ci], 8,
						    4, 128, scores, knobs, &r);
#endif
				if (ret) {
					fprintf(stderr, "kvmm bench attn: %s "
						"batch %u ctx %u: %s\n",
						m->name, batches[b], ctxs[ci],
						strerror(-ret));
					return 1;
				}
				print_point(json, first, m, batches[b],
					    ctxs[ci], &r, ceil_gbs,
					    peer_us[ci], knobs);
				first = 0;
			}
	if (json)
		printf("]}\n");
	return 0;
}
