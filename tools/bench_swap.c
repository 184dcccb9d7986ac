// SPDX-License-Identifier: MIT
/*
 * bench_swap.c - `kvmm bench swap`: one sequence's KV pages to a swap file
 * and back (kva_swap_out() / kva_swap_in(): io_uring, registered buffers,
 * O_DIRECT), in GB/s beside the file system's raw rate measured in the
 * same run on the same file (one thread, O_DIRECT pwrite/pread of 4 MiB
 * blocks, fdatasync after the writes). Llama-3-8B lists (32 layers x 8
 * kv-heads, head_dim 128, fp16 pages) on the host backend.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kva.h"
#include "kvmm.h"

#define BS_BLOCK (4U << 20)

/* raw O_DIRECT rate of @bytes at offset 0 of @path: write+sync, read */
static int raw_rate(const char *path, uint64_t bytes, double *wr_gbs,
		    double *rd_gbs, int *direct)
{
	void *buf = NULL;
	double t0;
	int fd, ret = 0;

	*direct = 1;
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		*direct = 0;
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	if (posix_memalign(&buf, 4096, BS_BLOCK)) {
		close(fd);
		return -ENOMEM;
	}
	memset(buf, 0x5a, BS_BLOCK);
	t0 = kvmm_now_us();
	for (uint64_t at = 0; at < bytes && !ret; at += BS_BLOCK) {
		size_t n = bytes - at < BS_BLOCK ? bytes - at : BS_BLOCK;

		if (pwrite(fd, buf, n, at) != (ssize_t)n)
			ret = -EIO;
	}
	if (!ret && fdatasync(fd))
		ret = -errno;
	*wr_gbs = bytes / ((kvmm_now_us() - t0) * 1e3);
	t0 = kvmm_now_us();
	for (uint64_t at = 0; at < bytes && !ret; at += BS_BLOCK) {
		size_t n = bytes - at < BS_BLOCK ? bytes - at : BS_BLOCK;

		if (pread(fd, buf, n, at) != (ssize_t)n)
			ret = -EIO;
	}
	*rd_gbs = bytes / ((kvmm_now_us() - t0) * 1e3);
	free(buf);
	close(fd);
	return ret;
}

static int swap_run(const char *dir, uint32_t mib, uint32_t chunk_kib,
		    uint32_t depth, int json)
{
	struct kvrt_ctx_opts co = { .backend = KVRT_BACKEND_HOST,
				    .host_mem_bytes = 1ULL << 40 };
	struct kva_pool_params p = {
		.va_bytes = 0,
		.head_dim = 128,
		.tiers = { { 16, 16, 1, 1 } },
		.nr_tiers = 1,
		.nr_slots = 1,
		.nr_layers = 32,
		.nr_heads = 8,
		.max_tokens = 1 << 20,
		.wmark_low = 1,
		.wmark_high = 1,
	};
	struct kvrt_swapfile *sf = NULL;
	struct kva_swap_rec rec;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool = NULL;
	uint32_t slot = 0, tokens, hi[256] = { 0 }, lo[256] = { 0 };
	double rw = 0, rr = 0, t0, sw, sr;
	uint64_t bytes, gran;
	char path[512];
	int fd, direct, ret;

	snprintf(path, sizeof(path), "%s/kvmm-bench-swap-XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0) {
		fprintf(stderr, "kvmm bench swap: cannot create a file in "
			"%s: %s\n", dir, strerror(errno));
		return -errno;
	}
	close(fd);
	ret = kvrt_ctx_create(&co, &ctx);
	if (ret)
		goto out_unlink;
	/* pages of one fp16 token per list: tokens for @mib MiB */
	gran = kvmm_div_round_up((uint64_t)mib * SZ_1M, KVRT_GRANULE_SIZE) +
	       32 * 8 / 8 + 8;
	p.ctx = ctx;
	p.va_bytes = p.budget_bytes = 2 * gran * KVRT_GRANULE_SIZE;
	ret = kva_pool_create(&p, &pool);
	if (ret)
		goto out_ctx;
	tokens = (uint32_t)((uint64_t)mib * SZ_1M / pool->page_size /
			    pool->lists_per_slot * pool->layout[KVA_HI].tokens);
	ret = kva_pool_grow(pool, (uint32_t)(kvmm_div_round_up(
					  (uint64_t)(kva_admit_pages(pool,
								     tokens)) *
						  pool->lists_per_slot,
					  pool->pages_per_granule)));
	if (!ret)
		ret = kva_admit(pool, &slot, &tokens, 1);
	for (uint32_t l = 0; l < pool->lists_per_slot; l++)
		hi[l] = tokens;
	if (!ret)
		ret = kva_trim(pool, &slot, 1, hi, lo);
	if (ret)
		goto out_pool;
	for (uint32_t l = 0; l < pool->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++)
			memset((void *)(uintptr_t)kva_page_addr(
				       pool, pool->table[(size_t)l * pool->width +
							 e]),
			       (int)(l + e), pool->page_size);
	bytes = kva_swap_bytes(pool, 0);
	ret = raw_rate(path, bytes, &rw, &rr, &direct);
	if (ret)
		goto out_pool;
	ret = kvrt_swapfile_open(path, chunk_kib * 1024, depth, &sf);
	if (ret)
		goto out_pool;
	t0 = kvmm_now_us();
	ret = kva_swap_out(pool, sf, 0, 0, &rec);
	if (!ret)
		ret = kvrt_swapfile_sync(sf);
	sw = bytes / ((kvmm_now_us() - t0) * 1e3);
	if (ret)
		goto out_sf;
	t0 = kvmm_now_us();
	ret = kva_swap_in(pool, sf, 0, &rec);
	sr = bytes / ((kvmm_now_us() - t0) * 1e3);
	if (ret) {
		kva_swap_rec_fini(&rec);
		goto out_sf;
	}
	ret = kva_check(pool, NULL, 0);
	if (json)
		printf("{\"bench\":\"swap\",\"dir\":\"%s\",\"bytes\":%llu,"
		       "\"engine\":\"%s\",\"direct\":%d,\"chunk_kib\":%u,"
		       "\"depth\":%u,\"write_gbs\":%.3f,\"read_gbs\":%.3f,"
		       "\"raw_write_gbs\":%.3f,\"raw_read_gbs\":%.3f}\n",
		       dir, (unsigned long long)bytes,
		       kvrt_swapfile_engine(sf), kvrt_swapfile_direct(sf),
		       chunk_kib, depth, sw, sr, rw, rr);
	else
		printf("kvmm bench swap: %.1f MiB (one sequence, 32 layers x 8 "
		       "kv-heads, fp16 pages) in %s\nengine %s%s, %u KiB "
		       "chunks, %u in flight\n\n%-22s %10s %10s\n%-22s %10.3f "
		       "%10.3f\n%-22s %10.3f %10.3f\n%-22s %9.0f%% %9.0f%%\n",
		       bytes / (double)SZ_1M, dir, kvrt_swapfile_engine(sf),
		       kvrt_swapfile_direct(sf) ? " + O_DIRECT" :
						  " (buffered: no O_DIRECT)",
		       chunk_kib, depth, "", "write GB/s", "read GB/s",
		       "raw (pwrite/pread)", rw, rr, "swap out / in", sw, sr,
		       "of raw", 100 * sw / rw, 100 * sr / rr);
out_sf:
	kvrt_swapfile_close(sf);
out_pool:
	kva_pool_destroy(pool);
out_ctx:
	kvrt_ctx_destroy(ctx);
out_unlink:
	unlink(path);
	(void)direct;
	return ret;
}

/**
 * cmd_bench_swap() - `kvmm bench swap`
 * @argc: argument count
 * @argv: arguments, argv[0] = "swap"
 *
 * Return: exit status (0, 1 on failure, 2 on bad usage).
 */
int cmd_bench_swap(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "mib", required_argument, NULL, 'm' },
		{ "chunk-kib", required_argument, NULL, 'c' },
		{ "depth", required_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	uint64_t mib = 256, chunk = 1024, depth = 8;
	int json = 0, c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		ret = 0;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'm':
			ret = kvmm_parse_u64("--mib", optarg, 1, 1 << 16, &mib);
			break;
		case 'c':
			ret = kvmm_parse_u64("--chunk-kib", optarg, 4, 1 << 16,
					     &chunk);
			if (!ret && chunk % 4) {
				fprintf(stderr, "kvmm bench swap: --chunk-kib "
					"must be a multiple of 4\n");
				ret = -EINVAL;
			}
			break;
		case 'q':
			ret = kvmm_parse_u64("--depth", optarg, 1, 64, &depth);
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: kvmm bench swap [--dir PATH] [--mib N] "
			       "[--chunk-kib K] [--depth D] [--json]\n"
			       "  one sequence of N MiB (default 256) to a "
			       "file in PATH ($TMPDIR or /tmp) and back,\n"
			       "  beside the raw O_DIRECT rate of the same "
			       "file\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvmm bench swap [--dir PATH] "
				"[--mib N] [--chunk-kib K] [--depth D] "
				"[--json]\n");
			return 2;
		}
		if (ret)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "kvmm bench swap: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	ret = swap_run(dir, (uint32_t)mib, (uint32_t)chunk, (uint32_t)depth,
		       json);
	if (ret)
		fprintf(stderr, "kvmm bench swap: %s\n", strerror(-ret));
	return ret ? 1 : 0;
}
