// SPDX-License-Identifier: MIT
/*
 * bench_mem.c - `kvmm bench mem`: the memory ceilings every other benchmark
 * is compared with, measured through a kvrt space: a streaming-read kernel
 * over device granules, a device-to-device copy, and the same kernel over
 * host-NUMA granules mapped into the same range.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvk_mem.h"
#include "kvmm.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define G KVRT_GRANULE_SIZE
#define MAX_REPS 101

struct mem_fig {
	const char *key;
	const char *name;
	double design_gbs;	/* DESIGN.md, H100; 0: none */
	double gbs;		/* measured, median */
	int done;
};

enum { M_READ, M_COPY, M_HOST_READ, M_NR };

static struct mem_fig figs[M_NR] = {
	[M_READ] = { "device_read", "device read (kernel)", 3060 },
	[M_COPY] = { "device_copy", "device copy (read+write)", 3000 },
	[M_HOST_READ] = { "host_numa_read", "host-NUMA read (kernel)", 51 },
};

#ifdef KVMM_HAVE_CUDA
#define CU(x)                                                                  \
	do {                                                                   \
		cudaError_t __e = (x);                                         \
		if (__e != cudaSuccess) {                                      \
			fprintf(stderr, "kvmm bench mem: %s: %s\n", #x,        \
				cudaGetErrorString(__e));                      \
			return -EIO;                                           \
		}                                                              \
	} while (0)

/* median GB/s of @reps runs; @what 0 read, 1 copy; @bytes counted per run */
static int time_gpu(int what, void *p, size_t len, uint64_t *dsum, int reps,
		    double *gbs)
{
	double t[MAX_REPS];
	cudaEvent_t a, b;
	float ms;

	CU(cudaEventCreate(&a));
	CU(cudaEventCreate(&b));
	for (int r = -3; r < reps; r++) {
		int ret = 0;

		CU(cudaEventRecord(a, 0));
		if (what == 0)
			ret = kvk_read_sum_cuda(p, len, dsum, NULL);
		else
			CU(cudaMemcpyAsync((char *)p + len / 2, p, len / 2,
					   cudaMemcpyDeviceToDevice, 0));
		CU(cudaEventRecord(b, 0));
		CU(cudaEventSynchronize(b));
		if (ret)
			return ret;
		CU(cudaEventElapsedTime(&ms, a, b));
		if (r >= 0)
			t[r] = ms;
	}
	cudaEventDestroy(a);
	cudaEventDestroy(b);
	*gbs = (double)len / (kvmm_median(t, reps) * 1e-3) / 1e9;
	return 0;
}

static int bench_cuda(struct kvrt_space *s, uint64_t dev_g, uint64_t host_g,
		      int reps)
{
	uint64_t base = kvrt_space_base(s), *dsum, sum = 0;
	size_t dlen = dev_g * G, hlen = host_g * G;
	int ret;

	CU(cudaMalloc((void **)&dsum, 8));
	/* not zeros: 0x5a in every byte, and the sum checks every word */
	CU(cudaMemset((void *)(uintptr_t)base, 0x5a, dlen + hlen));
	CU(cudaDeviceSynchronize());
	ret = time_gpu(0, (void *)(uintptr_t)base, dlen, dsum, reps,
		       &figs[M_READ].gbs);
	if (!ret) {
		CU(cudaMemcpy(&sum, dsum, 8, cudaMemcpyDeviceToHost));
		if (sum != (uint64_t)(dlen / 4) * 0x5a5a5a5aULL) {
			fprintf(stderr, "kvmm bench mem: read sum %#" PRIx64
				" is wrong\n", sum);
			ret = -EIO;
		}
	}
	figs[M_READ].done = !ret;
	if (!ret)
		ret = time_gpu(1, (void *)(uintptr_t)base, dlen, dsum, reps,
			       &figs[M_COPY].gbs);
	figs[M_COPY].done = !ret;
	if (!ret && hlen) {
		ret = time_gpu(0, (void *)(uintptr_t)(base + dlen), hlen, dsum,
			       reps, &figs[M_HOST_READ].gbs);
		figs[M_HOST_READ].done = !ret;
	}
	cudaFree(dsum);
	return ret;
}
#endif

/*
 * host backend: the same figures for the CPU, one thread; the "device"
 * granules are host memory too, and the host-NUMA ones are read the same
 * way when --host-mib asks for them
 */
static int bench_host(struct kvrt_space *s, uint64_t dev_g, uint64_t host_g,
		      int reps)
{
	double t[MAX_REPS];
	char *p = (char *)(uintptr_t)kvrt_space_base(s);
	size_t len = dev_g * G, hlen = host_g * G;
	uint64_t sum, hsum = 0;

	/* the same figures, named for what the CPU does */
	figs[M_READ].name = "read (CPU, one thread)";
	figs[M_COPY].name = "copy (CPU, read+write)";
	figs[M_HOST_READ].name = "host-NUMA read (CPU)";
	memset(p, 0x5a, len + hlen);
	if (hlen) {
		for (int r = -1; r < reps; r++) {
			double t0 = kvmm_now_us();

			kvk_read_sum_cpu(p + len, hlen, &hsum, NULL);
			if (r >= 0)
				t[r] = kvmm_now_us() - t0;
		}
		figs[M_HOST_READ].gbs = hlen / kvmm_median(t, reps) / 1e3;
		figs[M_HOST_READ].done = 1;
		figs[M_HOST_READ].design_gbs = 0;
		if (hsum != (uint64_t)(hlen / 4) * 0x5a5a5a5aULL)
			return -EIO;
	}
	for (int w = 0; w < 2; w++) {
		for (int r = -1; r < reps; r++) {
			double t0 = kvmm_now_us();

			if (w == 0)
				kvk_read_sum_cpu(p, len, &sum, NULL);
			else
				memcpy(p + len / 2, p, len / 2);
			if (r >= 0)
				t[r] = kvmm_now_us() - t0;
		}
		figs[w ? M_COPY : M_READ].gbs = len / kvmm_median(t, reps) / 1e3;
		figs[w ? M_COPY : M_READ].done = 1;
		figs[w ? M_COPY : M_READ].design_gbs = 0;
	}
	return sum == (uint64_t)(len / 4) * 0x5a5a5a5aULL ? 0 : -EIO;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kvmm bench mem [--backend auto|host|cuda] "
		   "[--device-mib N] [--host-mib N] [--reps R] [--json]\n");
}

/**
 * cmd_bench_mem() - `kvmm bench mem`
 * @argc: argument count
 * @argv: arguments
 *
 * Return: exit status: 0, 1 when a step failed, 2 for bad arguments.
 */
int cmd_bench_mem(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "device-mib", required_argument, NULL, 'd' },
		{ "host-mib", required_argument, NULL, 'H' },
		{ "reps", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_AUTO };
	uint64_t dev_mib = 2048, host_mib = 256, reps = 20, dev_g, host_g;
	struct kvrt_space *s = NULL;
	struct kvrt_ctx *ctx;
	uint32_t *idx;
	int json = 0, c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (kvmm_parse_backend(optarg, &o.backend))
				return 2;
			break;
		case 'd':
			if (kvmm_parse_u64("--device-mib", optarg, 4, 65536,
					   &dev_mib))
				return 2;
			break;
		case 'H':
			if (kvmm_parse_u64("--host-mib", optarg, 0, 65536,
					   &host_mib))
				return 2;
			break;
		case 'r':
			if (kvmm_parse_u64("--reps", optarg, 1, MAX_REPS, &reps))
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
		fprintf(stderr, "kvmm bench mem: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	dev_g = dev_mib / 2;
	host_g = host_mib / 2;
	if (kvmm_ctx_open("kvmm bench mem", &o, &ctx))
		return 1;
	idx = calloc(dev_g + host_g, sizeof(*idx));
	ret = idx ? kvrt_space_create(ctx, (dev_g + host_g) * G,
				      (dev_g + host_g) * G, &s) :
		    -ENOMEM;
	if (!ret)
		ret = kvrt_space_grow(s, dev_g, KVRT_LOC_DEVICE, -1, idx);
	if (!ret && host_g)
		ret = kvrt_space_grow(s, host_g, KVRT_LOC_HOST_NUMA, 0, idx);
	if (ret) {
		fprintf(stderr, "kvmm bench mem: %s\n",
			kvrt_ctx_last_error(ctx));
		goto out;
	}
#ifdef KVMM_HAVE_CUDA
	if (kvrt_ctx_backend(ctx) == KVRT_BACKEND_CUDA)
		ret = bench_cuda(s, dev_g, host_g, reps);
	else
#endif
		ret = bench_host(s, dev_g, host_g, reps);
	if (ret)
		goto out;
	if (json) {
		printf("{\"bench\":\"mem\",\"backend\":\"%s\",\"device_bytes\":%"
		       PRIu64 ",\"host_numa_bytes\":%" PRIu64 ",\"reps\":%"
		       PRIu64 ",\"gbs\":{",
		       kvrt_ctx_name(ctx), (uint64_t)(dev_g * G), (uint64_t)(host_g * G), reps);
		for (int f = 0, n = 0; f < M_NR; f++)
			if (figs[f].done)
				printf("%s\"%s\":%.1f", n++ ? "," : "",
				       figs[f].key, figs[f].gbs);
		printf("}}\n");
		goto out;
	}
	printf("kvmm bench mem: backend %s, %" PRIu64 " MiB device, %" PRIu64
	       " MiB host-NUMA, median of %" PRIu64 "\n\n",
	       kvrt_ctx_name(ctx), dev_g * 2, host_g * 2, reps);
	printf("%-28s %10s %16s\n", "what", "GB/s", "DESIGN.md H100");
	for (int f = 0; f < M_NR; f++) {
		char d[32] = "-";

		if (!figs[f].done)
			continue;
		if (figs[f].design_gbs)
			snprintf(d, sizeof(d), "~%.0f", figs[f].design_gbs);
		printf("%-28s %10.1f %16s\n", figs[f].name, figs[f].gbs, d);
	}
out:
	if (s)
		kvrt_space_destroy(s);
	free(idx);
	kvrt_ctx_destroy(ctx);
	return ret ? 1 : 0;
}
