// SPDX-License-Identifier: MIT
/*
 * bench_attn.c - `kvmm bench attn`: decode attention over paged KV, achieved
 * GB/s counting every byte read (K, V, metadata, scores, tables, q, out)
 * beside the streaming-read ceiling measured in the same run, over a grid
 * of batch x context x tier mix. Llama-3-8B head shapes by default.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvattn.h"
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
};

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

#define GRAN (2ULL << 20)
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

struct result {
	double us, gbs, bytes;
};

/*
 * One grid point: batch sequences of ctx tokens per kv-head, pages taken in
 * order from one pool (hi_frac of the tokens in the high tier), data a
 * constant pattern (0x3c bytes: valid fp16, not zeros).
 */
static int run_point(const struct mix *m, uint32_t batch, uint32_t ctx,
		     uint32_t heads, uint32_t group, uint32_t hd, int scores,
		     struct result *res)
{
	struct kva_layout l[2];
	struct kvk_attn_args a = { 0 };
	uint32_t lists = batch * heads, width, ppg, next = 0;
	uint32_t n_hi = (uint32_t)(ctx * m->hi_frac), n_lo = ctx - n_hi;
	uint32_t pages_hi, pages_lo, *tables, *ntok, *base;
	size_t npages, pool_bytes, nq = (size_t)lists * group * hd;
	double t[REPS];
	cudaEvent_t e0, e1;
	void *pool, *dtab, *dntok, *dbase, *q, *out, *work = NULL;
	float ms;
	int ps = kva_page_size(hd, m->t, 2), ret = 0;

	if (ps < 0)
		return ps;
	for (int i = 0; i < 2; i++)
		kva_page_layout(hd, ps, &m->t[i], &l[i]);
	ppg = GRAN / ps;
	pages_hi = (n_hi + l[0].tokens - 1) / l[0].tokens;
	pages_lo = (n_lo + l[1].tokens - 1) / l[1].tokens;
	width = pages_hi + pages_lo;
	npages = (size_t)lists * width;
	pool_bytes = (npages / ppg + 1) * GRAN;
	tables = calloc((size_t)lists * width, 4);
	ntok = calloc((size_t)lists * 2, 4);
	base = calloc(batch, 4);
	for (uint32_t li = 0; li < lists; li++) {
		for (uint32_t p = 0; p < pages_hi; p++)
			tables[(size_t)li * width + p] = next++;
		for (uint32_t p = 0; p < pages_lo; p++)
			tables[(size_t)li * width + width - 1 - p] = next++;
		ntok[2 * li] = n_hi, ntok[2 * li + 1] = n_lo;
	}
	for (uint32_t s = 0; s < batch; s++)
		base[s] = s * heads;
	CU(cudaMalloc(&pool, pool_bytes));
	CU(cudaMemset(pool, 0x3c, pool_bytes));
	CU(cudaMalloc(&dtab, (size_t)lists * width * 4));
	CU(cudaMemcpy(dtab, tables, (size_t)lists * width * 4,
		      cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dntok, (size_t)lists * 8));
	CU(cudaMemcpy(dntok, ntok, (size_t)lists * 8, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&dbase, batch * 4));
	CU(cudaMemcpy(dbase, base, batch * 4, cudaMemcpyHostToDevice));
	CU(cudaMalloc(&q, nq * 2));
	CU(cudaMemset(q, 0x2c, nq * 2));
	CU(cudaMalloc(&out, nq * 2));

	a.nr_seqs = batch, a.nr_kv_heads = heads, a.group = group;
	a.head_dim = hd, a.scale = 1.0f / sqrtf((float)hd);
	a.dtype = KVK_F16, a.q = q, a.out = out;
	a.pool = (uint64_t)(uintptr_t)pool, a.page_size = ps;
	a.pages_per_granule = ppg, a.tables = dtab, a.width = width;
	a.ntokens = dntok, a.list_base = dbase, a.update_scores = scores;
	for (int i = 0; i < 2; i++)
		a.tier[i] = (struct kvk_attn_tier){
			m->t[i].kbits, m->t[i].vbits, m->t[i].kgroups,
			m->t[i].vgroups, l[i].tokens, l[i].k_off, l[i].km_off,
			l[i].v_off, l[i].vm_off, l[i].score_off, l[i].pos_off,
		};
	a.work_bytes = kvk_attn_work_bytes(&a);
	if (a.work_bytes) {
		CU(cudaMalloc(&work, a.work_bytes));
		a.work = work;
	}
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	for (int r = -3; r < REPS && !ret; r++) {
		CU(cudaEventRecord(e0, 0));
		ret = kvk_attn_decode_cuda(&a, NULL);
		CU(cudaEventRecord(e1, 0));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&ms, e0, e1));
		if (r >= 0)
			t[r] = ms;
	}
	CU(cudaGetLastError());
	if (!ret) {
		res->us = kvmm_median(t, REPS) * 1e3;
		res->bytes = (double)kvk_attn_bytes(&a, ntok);
		res->gbs = res->bytes / (res->us * 1e-6) / 1e9;
	}
	cudaEventDestroy(e0), cudaEventDestroy(e1);
	cudaFree(pool), cudaFree(dtab), cudaFree(dntok), cudaFree(dbase);
	cudaFree(q), cudaFree(out), cudaFree(work);
	free(tables), free(ntok), free(base);
	return ret;
}
#endif

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
		{ "json", no_argument, NULL, 'j' },
		{ "tiers", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *only_tiers = NULL;
	long only_batch = 0, only_ctx = 0;
	int json = 0, scores = 0, c;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			scores = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 't':
			only_tiers = optarg;
			if (!mix_named(optarg)) {
				fprintf(stderr, "kvmm bench attn: --tiers '%s': "
						"not fp16, k8v4/k4v2, k8v8 or "
						"k4v4\n",
					optarg);
				return 2;
			}
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
			printf("usage: kvmm bench attn [--scores] [--json] "
			       "[--tiers T] [--batch N] [--ctx N]\n"
			       "  Llama-3-8B heads (8 kv-heads, GQA 4, head_dim "
			       "128), fp16 activations;\n  batch {1, 16, 64} x "
			       "context {1024, 8192} x tiers {fp16, k8v4/k4v2 "
			       "half and half, k8v8, k4v4};\n"
			       "  --tiers, --batch, --ctx keep only the points "
			       "that match\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvmm bench attn [--scores] "
					"[--json] [--tiers T] [--batch N] "
					"[--ctx N]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench attn: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
#ifdef KVMM_HAVE_CUDA
	{
		static const uint32_t batches[] = { 1, 16, 64 };
		static const uint32_t ctxs[] = { 1024, 8192 };
		char why[256];
		double ceil_gbs;
		int first = 1;

		if (kvrt_cuda_probe(why, sizeof(why))) {
			fprintf(stderr, "kvmm bench attn: no GPU: %s\n", why);
			return 1;
		}
		if (kvmm_read_ceiling(&ceil_gbs))
			return 1;
		if (json)
			printf("{\"bench\":\"attn\",\"read_ceiling_gbs\":%.1f,"
			       "\"scores\":%d,\"points\":[",
			       ceil_gbs, scores);
		else
			printf("kvmm bench attn: 8 kv-heads x GQA 4, head_dim "
			       "128, fp16 q/out%s; read ceiling %.0f GB/s\n\n"
			       "%-10s %6s %6s %10s %10s %9s %7s\n",
			       scores ? ", scores updated" : "", ceil_gbs,
			       "tiers", "batch", "ctx", "us", "MB read",
			       "GB/s", "ceil%");
		for (size_t mi = 0; mi < ARRAY_SIZE(mixes); mi++)
			for (size_t b = 0; b < ARRAY_SIZE(batches); b++)
				for (size_t ci = 0; ci < ARRAY_SIZE(ctxs); ci++) {
					struct result r;

					if ((only_tiers &&
					     strcmp(only_tiers, mixes[mi].name)) ||
					    (only_batch &&
					     only_batch != batches[b]) ||
					    (only_ctx && only_ctx != ctxs[ci]))
						continue;
					if (run_point(&mixes[mi], batches[b],
						      ctxs[ci], 8, 4, 128, scores,
						      &r))
						return 1;
					if (json)
						printf("%s{\"tiers\":\"%s\","
						       "\"batch\":%u,\"ctx\":%u,"
						       "\"us\":%.2f,\"bytes\":%.0f,"
						       "\"gbs\":%.1f}",
						       first ? "" : ",",
						       mixes[mi].name, batches[b],
						       ctxs[ci], r.us, r.bytes,
						       r.gbs);
					else
						printf("%-10s %6u %6u %10.1f %10.1f "
						       "%9.1f %6.1f%%\n",
						       mixes[mi].name, batches[b],
						       ctxs[ci], r.us,
						       r.bytes / 1e6, r.gbs,
						       100 * r.gbs / ceil_gbs);
					first = 0;
				}
		if (json)
			printf("]}\n");
		return 0;
	}
#else
	(void)json, (void)scores, (void)only_tiers;
	fprintf(stderr, "kvmm bench attn: built without CUDA\n");
	return 1;
#endif
}
