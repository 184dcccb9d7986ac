// SPDX-License-Identifier: MIT
/*
 * bench_vmm.c - `kvmm bench vmm`: what one granule costs, from the driver
 * (raw backend calls) and through the runtime (kvrt_space_grow/shrink), one
 * by one and batched, beside the figures DESIGN.md measured on the H100.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm.h"
#include "kvrt_internal.h"

#define G KVRT_GRANULE_SIZE
#define MAX_REPS 101

enum vmm_fig {
	F_RESERVE,	/* per call, not per granule */
	F_CREATE,
	F_MAP,
	F_ACCESS,
	F_ACCESS_BATCH,
	F_UNMAP,
	F_UNMAP_BATCH,
	F_RELEASE,
	F_GROW_1,
	F_GROW_N,
	F_SHRINK_1,
	F_SHRINK_N,
	F_NR,
};

static const struct {
	const char *key;	/* JSON */
	const char *name;
	double design_us;	/* DESIGN.md, H100, per granule; 0: none */
} figs[F_NR] = {
	[F_RESERVE] = { "reserve", "reserve (per call)", 0 },
	[F_CREATE] = { "create", "create", 15 },
	[F_MAP] = { "map", "map", 2 },
	[F_ACCESS] = { "set_access", "set-access", 38 },
	[F_ACCESS_BATCH] = { "set_access_batched", "set-access, one call", 0 },
	[F_UNMAP] = { "unmap", "unmap", 24 },
	[F_UNMAP_BATCH] = { "unmap_batched", "unmap, one call", 0 },
	[F_RELEASE] = { "release", "release", 17 },
	[F_GROW_1] = { "kvrt_grow_1", "kvrt grow, 1 by 1", 0 },
	[F_GROW_N] = { "kvrt_grow_n", "kvrt grow, batched", 0 },
	[F_SHRINK_1] = { "kvrt_shrink_1", "kvrt shrink, 1 by 1", 0 },
	[F_SHRINK_N] = { "kvrt_shrink_n", "kvrt shrink, batched", 0 },
};

struct vmm_bench {
	struct kvrt_ctx *ctx;
	uint32_t n;		/* granules per round */
	uint64_t *h;		/* handles */
	double t[F_NR][MAX_REPS]; /* us per granule (per call: reserve) */
};

#define RAW(b, call)                                                           \
	do {                                                                   \
		int __r = (b)->ctx->ops->call;                                 \
		if (__r) {                                                     \
			fprintf(stderr, "kvmm bench vmm: %s: %s (%s)\n",       \
				#call, strerror(-__r),                         \
				kvrt_ctx_last_error((b)->ctx));                \
			return __r;                                            \
		}                                                              \
	} while (0)

/* One round of raw driver calls: one by one, then batched where possible. */
static int raw_round(struct vmm_bench *b, int rep)
{
	struct kvrt_ctx *ctx = b->ctx;
	uint64_t va, size = (uint64_t)b->n * G;
	double t0;

	t0 = kvmm_now_us();
	RAW(b, va_reserve(ctx, size, &va));
	b->t[F_RESERVE][rep] = kvmm_now_us() - t0;

	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, mem_create(ctx, G, KVRT_LOC_DEVICE, -1, &b->h[i]));
	b->t[F_CREATE][rep] = (kvmm_now_us() - t0) / b->n;
	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, mem_map(ctx, va + i * G, G, b->h[i]));
	b->t[F_MAP][rep] = (kvmm_now_us() - t0) / b->n;
	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, set_access(ctx, va + i * G, G));
	b->t[F_ACCESS][rep] = (kvmm_now_us() - t0) / b->n;
	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, mem_unmap(ctx, va + i * G, G));
	b->t[F_UNMAP][rep] = (kvmm_now_us() - t0) / b->n;

	/* batched: map again, then one set-access and one unmap for all */
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, mem_map(ctx, va + i * G, G, b->h[i]));
	t0 = kvmm_now_us();
	RAW(b, set_access(ctx, va, size));
	b->t[F_ACCESS_BATCH][rep] = (kvmm_now_us() - t0) / b->n;
	t0 = kvmm_now_us();
	RAW(b, mem_unmap(ctx, va, size));
	b->t[F_UNMAP_BATCH][rep] = (kvmm_now_us() - t0) / b->n;

	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n; i++)
		RAW(b, mem_release(ctx, b->h[i]));
	b->t[F_RELEASE][rep] = (kvmm_now_us() - t0) / b->n;
	RAW(b, va_free(ctx, va, size));
	return 0;
}

#define KV(b, call)                                                            \
	do {                                                                   \
		int __r = call;                                                \
		if (__r) {                                                     \
			fprintf(stderr, "kvmm bench vmm: %s: %s\n", #call,     \
				kvrt_ctx_last_error((b)->ctx));                \
			return __r;                                            \
		}                                                              \
	} while (0)

/* One round through the runtime: the same granules, grown and shrunk. */
static int kvrt_round(struct vmm_bench *b, int rep)
{
	uint32_t *idx = calloc(b->n, sizeof(*idx));
	struct kvrt_space *s;
	double t0;
	int ret = -ENOMEM;

	if (!idx)
		return ret;
	ret = kvrt_space_create(b->ctx, (uint64_t)b->n * G,
				(uint64_t)b->n * G, &s);
	if (ret) {
		fprintf(stderr, "kvmm bench vmm: space: %s\n",
			kvrt_ctx_last_error(b->ctx));
		free(idx);
		return ret;
	}
	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n && !ret; i++)
		ret = kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, &idx[i]);
	b->t[F_GROW_1][rep] = (kvmm_now_us() - t0) / b->n;
	t0 = kvmm_now_us();
	for (uint32_t i = 0; i < b->n && !ret; i++)
		ret = kvrt_space_shrink(s, &idx[i], 1, 0);
	b->t[F_SHRINK_1][rep] = (kvmm_now_us() - t0) / b->n;
	if (!ret) {
		t0 = kvmm_now_us();
		ret = kvrt_space_grow(s, b->n, KVRT_LOC_DEVICE, -1, idx);
		b->t[F_GROW_N][rep] = (kvmm_now_us() - t0) / b->n;
	}
	if (!ret) {
		t0 = kvmm_now_us();
		ret = kvrt_space_shrink(s, idx, b->n, 0);
		b->t[F_SHRINK_N][rep] = (kvmm_now_us() - t0) / b->n;
	}
	if (ret)
		fprintf(stderr, "kvmm bench vmm: %s\n",
			kvrt_ctx_last_error(b->ctx));
	kvrt_space_destroy(s);
	free(idx);
	return ret;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvmm bench vmm [--backend auto|host|cuda] "
		"[--granules N] [--reps R] [--json]\n"
		"  --granules N  granules per round (1..65536, default 256)\n"
		"  --reps R      rounds; medians are printed (1..%d, default "
		"5)\n",
		MAX_REPS);
}

/**
 * cmd_bench_vmm() - `kvmm bench vmm`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a call failed, 2 for bad arguments.
 */
int cmd_bench_vmm(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "granules", required_argument, NULL, 'n' },
		{ "reps", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_AUTO };
	uint64_t n = 256, reps = 5;
	struct vmm_bench *b;
	double med[F_NR], raw_grow_1, raw_grow_n, raw_shrink_1, raw_shrink_n;
	int json = 0, c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (kvmm_parse_backend(optarg, &o.backend))
				return 2;
			break;
		case 'n':
			if (kvmm_parse_u64("--granules", optarg, 1, 65536, &n))
				return 2;
			break;
		case 'r':
			if (kvmm_parse_u64("--reps", optarg, 1, MAX_REPS,
					   &reps))
				return 2;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench vmm: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return 1;
	b->n = n;
	b->h = calloc(n, sizeof(*b->h));
	if (!b->h) {
		fprintf(stderr, "kvmm bench vmm: out of memory\n");
		ret = -ENOMEM;
		goto out_free;
	}
	ret = kvmm_ctx_open("kvmm bench vmm", &o, &b->ctx);
	if (ret)
		goto out_free;
	if (n * G > kvrt_ctx_mem_total(b->ctx)) {
		fprintf(stderr, "kvmm bench vmm: %" PRIu64 " granules do not "
			"fit in %s memory\n", n, kvrt_ctx_name(b->ctx));
		ret = -E2BIG;
		goto out_ctx;
	}
	/* one warm-up round of each, not counted */
	ret = raw_round(b, 0) ?: kvrt_round(b, 0);
	for (uint64_t r = 0; !ret && r < reps; r++)
		ret = raw_round(b, r) ?: kvrt_round(b, r);
	if (ret)
		goto out_ctx;

	for (int f = 0; f < F_NR; f++)
		med[f] = kvmm_median(b->t[f], reps);
	raw_grow_1 = med[F_CREATE] + med[F_MAP] + med[F_ACCESS];
	raw_grow_n = med[F_CREATE] + med[F_MAP] + med[F_ACCESS_BATCH];
	raw_shrink_1 = med[F_UNMAP] + med[F_RELEASE];
	/*
	 * kvrt_space_shrink() unmaps granule by granule (so that a failure can
	 * be undone granule by granule); the driver gains little from a ranged
	 * unmap, and the table shows by how much.
	 */
	raw_shrink_n = med[F_UNMAP] + med[F_RELEASE];

	if (json) {
		printf("{\"bench\":\"vmm\",\"backend\":\"%s\",\"granules\":%"
		       PRIu64 ",\"granule_bytes\":%llu,\"reps\":%" PRIu64
		       ",\"us_per_granule\":{",
		       kvrt_ctx_name(b->ctx), n, (unsigned long long)G, reps);
		for (int f = 0; f < F_NR; f++)
			printf("%s\"%s\":%.3f", f ? "," : "", figs[f].key,
			       med[f]);
		printf("},\"ratio_kvrt_to_raw\":{\"grow_1\":%.3f,\"grow_n\":"
		       "%.3f,\"shrink_1\":%.3f,\"shrink_n\":%.3f}}\n",
		       med[F_GROW_1] / raw_grow_1, med[F_GROW_N] / raw_grow_n,
		       med[F_SHRINK_1] / raw_shrink_1,
		       med[F_SHRINK_N] / raw_shrink_n);
		goto out_ctx;
	}
	printf("kvmm bench vmm: backend %s, %" PRIu64 " granules of 2 MiB, "
	       "median of %" PRIu64 " rounds\n\n",
	       kvrt_ctx_name(b->ctx), n, reps);
	printf("%-24s %12s %14s\n", "driver call", "us/granule",
	       "DESIGN.md H100");
	for (int f = F_RESERVE; f <= F_RELEASE; f++) {
		char d[32] = "-";

		if (figs[f].design_us)
			snprintf(d, sizeof(d), "~%.0f", figs[f].design_us);
		printf("%-24s %12.2f %14s\n", figs[f].name, med[f], d);
	}
	printf("\n%-24s %12s %12s %8s\n", "runtime call", "us/granule",
	       "raw sum", "ratio");
	printf("%-24s %12.2f %12.2f %8.2f   create+map+access\n",
	       figs[F_GROW_1].name, med[F_GROW_1], raw_grow_1,
	       med[F_GROW_1] / raw_grow_1);
	printf("%-24s %12.2f %12.2f %8.2f   create+map+one access\n",
	       figs[F_GROW_N].name, med[F_GROW_N], raw_grow_n,
	       med[F_GROW_N] / raw_grow_n);
	printf("%-24s %12.2f %12.2f %8.2f   unmap+release\n",
	       figs[F_SHRINK_1].name, med[F_SHRINK_1], raw_shrink_1,
	       med[F_SHRINK_1] / raw_shrink_1);
	printf("%-24s %12.2f %12.2f %8.2f   unmap+release\n",
	       figs[F_SHRINK_N].name, med[F_SHRINK_N], raw_shrink_n,
	       med[F_SHRINK_N] / raw_shrink_n);

out_ctx:
	kvrt_ctx_destroy(b->ctx);
out_free:
	free(b->h);
	free(b);
	return ret ? 1 : 0;
}
