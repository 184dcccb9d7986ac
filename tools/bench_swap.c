// SPDX-License-Identifier: MIT
/*
 * bench_swap.c - `kvmm bench swap`: one sequence's KV pages to a swap file
 * and back (kva_swap_out() / kva_swap_in(): io_uring, O_DIRECT), in GB/s
 * beside the file system's raw rate measured in the same run on the same
 * file (one thread, O_DIRECT pwrite/pread of 4 MiB blocks, fdatasync after
 * the writes) and beside the swap file's own engine on one aligned buffer
 * (the same chunks and depth, no copy). Llama-3-8B lists (32 layers x 8
 * kv-heads, head_dim 128, fp16 or int8 pages) on the host backend, in the
 * runs one admission gives or scattered over the pool; each round trip
 * twice, staged through the registered buffers (the default) and
 * zero-copy (where the page size is a multiple of the file's O_DIRECT
 * alignment, else staged again), checked byte for byte.
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

/*
 * Deal slot 0's pages out anew over its table entries (a fixed shuffle):
 * a list's pages then lie scattered over the pool, as after many decode
 * steps, instead of in the runs one admission gives.
 */
static void pages_scatter(struct kva_pool *pool)
{
	uint64_t n = 0, seed = 0x9e3779b97f4a7c15ULL;
	uint32_t lps = pool->lists_per_slot;

	for (uint32_t l = 0; l < lps; l++)
		n += pool->npages[2 * l];
	for (uint64_t i = n - 1; n && i > 0; i--) {
		uint32_t li, ei, lj, ej, t;
		uint64_t j;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		j = (seed >> 33) % (i + 1);
		/* entry i and entry j: lists are equally long here */
		li = (uint32_t)(i / pool->npages[0]);
		ei = (uint32_t)(i % pool->npages[0]);
		lj = (uint32_t)(j / pool->npages[0]);
		ej = (uint32_t)(j % pool->npages[0]);
		t = pool->table[(size_t)li * pool->width + ei];
		pool->table[(size_t)li * pool->width + ei] =
			pool->table[(size_t)lj * pool->width + ej];
		pool->table[(size_t)lj * pool->width + ej] = t;
	}
	for (uint32_t l = 0; l < lps; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
			uint32_t p = pool->table[(size_t)l * pool->width + e];

			pool->page_list[p] = l;
			pool->page_pos[p] = e;
		}
}

/* fill (or check) every page of slot 0: page e of list l holds l + e */
static int pages_tag(struct kva_pool *pool, int check)
{
	unsigned char *want = malloc(pool->page_size);
	int ret = 0;

	if (!want)
		return -ENOMEM;
	for (uint32_t l = 0; l < pool->lists_per_slot && !ret; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l] && !ret; e++) {
			void *p = (void *)(uintptr_t)kva_page_addr(
				pool,
				pool->table[(size_t)l * pool->width + e]);

			memset(want, (int)((l + e) & 0xff), pool->page_size);
			if (!check) {
				memcpy(p, want, pool->page_size);
			} else if (memcmp(p, want, pool->page_size)) {
				fprintf(stderr, "kvmm bench swap: list %u "
					"page %u differs after the round "
					"trip\n", l, e);
				ret = -EIO;
			}
		}
	free(want);
	return ret;
}

/*
 * The swap file's engine on one aligned host buffer of @bytes (zero-copy,
 * the same chunks and depth): write with fdatasync, read
 */
static int ring_rate(struct kvrt_swapfile *sf, uint64_t bytes, double *wr,
		     double *rd)
{
	void *buf = NULL;
	double t0;
	int ret;

	if (posix_memalign(&buf, KVRT_SWAP_ALIGN, bytes))
		return -ENOMEM;
	memset(buf, 0x5a, bytes);
	t0 = kvmm_now_us();
	ret = kvrt_swapfile_write(sf, 0, buf, bytes);
	if (!ret)
		ret = kvrt_swapfile_sync(sf);
	*wr = bytes / ((kvmm_now_us() - t0) * 1e3);
	t0 = kvmm_now_us();
	if (!ret)
		ret = kvrt_swapfile_read(sf, 0, buf, bytes);
	*rd = bytes / ((kvmm_now_us() - t0) * 1e3);
	free(buf);
	return ret;
}

/* one round trip of slot 0: out (with fdatasync), in, both timed */
static int round_trip(struct kva_pool *pool, struct kvrt_swapfile *sf,
		      uint64_t bytes, double *wr, double *rd, const char **path)
{
	struct kva_swap_rec rec;
	uint32_t slot = 0;
	double t0;
	int ret;

	t0 = kvmm_now_us();
	ret = kva_swap_out(pool, sf, slot, 0, &rec);
	if (!ret)
		ret = kvrt_swapfile_sync(sf);
	*wr = bytes / ((kvmm_now_us() - t0) * 1e3);
	*path = kvrt_swapfile_path(sf);
	if (ret)
		return ret;
	t0 = kvmm_now_us();
	ret = kva_swap_in(pool, sf, slot, &rec);
	*rd = bytes / ((kvmm_now_us() - t0) * 1e3);
	if (ret) {
		kva_swap_rec_fini(&rec);
		return ret;
	}
	ret = kva_check(pool, NULL, 0);
	return ret ? ret : pages_tag(pool, 1);
}

static int swap_run(const char *dir, uint32_t mib, uint32_t chunk_kib,
		    uint32_t depth, int int8, int scatter, int json)
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
	struct kvrt_ctx *ctx;
	struct kva_pool *pool = NULL;
	uint32_t slot = 0, tokens, hi[256] = { 0 }, lo[256] = { 0 };
	double rw = 0, rr = 0, qw = 0, qr = 0, sw = 0, sr = 0, zw = 0,
	       zr = 0;
	const char *path_run = "none", *path_zc = "none";
	uint64_t bytes, gran;
	char path[512];
	int fd, direct, ret;

	if (int8)
		p.tiers[0] = (struct kva_tier){ 8, 8, 1, 1 };
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
	/* pages of one token per list: tokens for @mib MiB */
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
	if (scatter)
		pages_scatter(pool);
	ret = kva_check(pool, NULL, 0);
	if (!ret)
		ret = pages_tag(pool, 0);
	if (ret)
		goto out_pool;
	bytes = kva_swap_bytes(pool, 0);
	ret = raw_rate(path, bytes, &rw, &rr, &direct);
	if (ret)
		goto out_pool;
	ret = kvrt_swapfile_open(path, chunk_kib * 1024, depth, &sf);
	if (ret)
		goto out_pool;
	/* the engine's own ceiling: one aligned buffer, no copy */
	ret = kvrt_swapfile_set_flags(sf, KVRT_SWAP_ZEROCOPY);
	if (!ret)
		ret = ring_rate(sf, bytes, &qw, &qr);
	/* the default path (staged), then zero-copy where the pages allow */
	if (!ret)
		ret = kvrt_swapfile_set_flags(sf, 0);
	if (!ret)
		ret = round_trip(pool, sf, bytes, &sw, &sr, &path_run);
	if (!ret)
		ret = kvrt_swapfile_set_flags(sf, KVRT_SWAP_ZEROCOPY);
	if (!ret)
		ret = round_trip(pool, sf, bytes, &zw, &zr, &path_zc);
	if (ret)
		goto out_sf;
	if (json) {
		printf("{\"bench\":\"swap\",\"dir\":\"%s\",\"bytes\":%llu,"
		       "\"kv\":\"%s\",\"scatter\":%d,\"page_bytes\":%u,"
		       "\"dio_align\":%u,"
		       "\"engine\":\"%s\",\"direct\":%d,\"chunk_kib\":%u,"
		       "\"depth\":%u,\"path\":\"%s\",\"write_gbs\":%.3f,"
		       "\"read_gbs\":%.3f,\"zc_path\":\"%s\","
		       "\"zc_write_gbs\":%.3f,\"zc_read_gbs\":%.3f,"
		       "\"raw_write_gbs\":%.3f,\"raw_read_gbs\":%.3f,"
		       "\"ring_write_gbs\":%.3f,\"ring_read_gbs\":%.3f}\n",
		       dir, (unsigned long long)bytes, int8 ? "int8" : "fp16",
		       scatter, pool->page_size, kvrt_swapfile_dio_align(sf),
		       kvrt_swapfile_engine(sf), kvrt_swapfile_direct(sf),
		       chunk_kib, depth, path_run, sw, sr, path_zc, zw, zr, rw,
		       rr, qw, qr);
		goto out_sf;
	}
	printf("kvmm bench swap: %.1f MiB (one sequence, 32 layers x 8 "
	       "kv-heads, %s pages of %u bytes%s) in %s\nengine %s%s "
	       "(alignment %u), %u KiB chunks, %u in flight\n"
	       "zero-copy: %s\n\n",
	       bytes / (double)SZ_1M, int8 ? "int8" : "fp16", pool->page_size,
	       scatter ? ", scattered" : ", in admission runs", dir,
	       kvrt_swapfile_engine(sf),
	       kvrt_swapfile_direct(sf) ? " + O_DIRECT" :
					  " (buffered: no O_DIRECT)",
	       kvrt_swapfile_dio_align(sf), chunk_kib, depth,
	       !strcmp(path_zc, "zero-copy") ?
		       "io_uring writev/readv at the pages" :
		       "refused: the page size is no multiple of the "
		       "alignment (staged again)");
	printf("%-30s %10s %10s   %s\n", "", "write GB/s", "read GB/s",
	       "out / in: of raw; of the io_uring raw");
	printf("%-30s %10.3f %10.3f\n", "raw pwrite/pread, 4 MiB", rw, rr);
	printf("%-30s %10.3f %10.3f\n", "raw io_uring, one buffer", qw, qr);
	printf("%-30s %10.3f %10.3f   %3.0f%% / %3.0f%%; %3.0f%% / %3.0f%%\n",
	       !strcmp(path_run, "staged") ? "swap out / in (staged)" :
					     "swap out / in (?)",
	       sw, sr, 100 * sw / rw, 100 * sr / rr, 100 * sw / qw,
	       100 * sr / qr);
	printf("%-30s %10.3f %10.3f   %3.0f%% / %3.0f%%; %3.0f%% / %3.0f%%\n",
	       !strcmp(path_zc, "zero-copy") ? "swap out / in (zero-copy)" :
					       "swap out / in (staged again)",
	       zw, zr, 100 * zw / rw, 100 * zr / rr, 100 * zw / qw,
	       100 * zr / qr);
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
		{ "kv", required_argument, NULL, 'k' },
		{ "scatter", no_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	uint64_t mib = 256, chunk = 1024, depth = 8;
	int json = 0, int8 = 0, scatter = 0, c, ret;

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
		case 'k':
			if (!strcmp(optarg, "int8") || !strcmp(optarg, "fp16")) {
				int8 = !strcmp(optarg, "int8");
			} else {
				fprintf(stderr, "kvmm bench swap: --kv takes "
					"fp16 or int8, not '%s'\n", optarg);
				ret = -EINVAL;
			}
			break;
		case 's':
			scatter = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: kvmm bench swap [--dir PATH] [--mib N] "
			       "[--chunk-kib K] [--depth D] [--kv fp16|int8] "
			       "[--scatter] [--json]\n"
			       "  one sequence of N MiB (default 256) of fp16 "
			       "(default) or int8 pages to a file in PATH\n"
			       "  ($TMPDIR or /tmp) and back, staged (the "
			       "default) and zero-copy, beside the raw\n"
			       "  O_DIRECT rate of the same file; --scatter "
			       "deals the pages out over the pool\n"
			       "  (as after many decode steps) instead of the "
			       "runs one admission gives\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvmm bench swap [--dir PATH] "
				"[--mib N] [--chunk-kib K] [--depth D] "
				"[--kv fp16|int8] [--scatter] [--json]\n");
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
		       int8, scatter, json);
	if (ret)
		fprintf(stderr, "kvmm bench swap: %s\n", strerror(-ret));
	return ret ? 1 : 0;
}
