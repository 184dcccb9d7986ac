// SPDX-License-Identifier: MIT
/*
 * check_runtime.c - the runtime on the host backend: the semantics shared
 * with CUDA (runtime_common.c) plus what only the host can show: a real
 * fault on an unmapped granule, and file reads.
 */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvtest.h"
#include "runtime_common.h"

#define G KVRT_GRANULE_SIZE

static struct kvrt_ctx *host_open(void)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 64 * G };
	struct kvrt_ctx *ctx;

	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	return ctx;
}

/* an unmapped granule really is gone: touching it faults */
START_TEST(test_unmapped_faults)
{
	struct kvrt_ctx *ctx = host_open();
	struct kvrt_space *s;
	uint32_t idx;
	volatile char *p;

	ck_assert_int_eq(kvrt_space_create(ctx, 4 * G, 4 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, &idx), 0);
	p = (volatile char *)(uintptr_t)kvrt_space_base(s);
	p[0] = 1;
	ck_assert_int_eq(kvrt_space_shrink(s, &idx, 1, 0), 0);
	signal(SIGSEGV, SIG_DFL); /* not a sanitizer's handler */
	p[0] = 2; /* SIGSEGV expected */
}
END_TEST

START_TEST(test_host_mem_option)
{
	struct kvrt_ctx *ctx = host_open();
	struct kvrt_space *s;

	ck_assert_uint_eq(kvrt_ctx_mem_total(ctx), 64 * G);
	ck_assert_str_eq(kvrt_ctx_name(ctx), "host");
	ck_assert_int_eq(kvrt_space_create(ctx, 128 * G, 66 * G, &s), -E2BIG);
	ck_assert_int_eq(kvrt_space_create(ctx, 128 * G, 64 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_bad_ctx_opts)
{
	struct kvrt_ctx_opts o = { .backend = 7 };
	struct kvrt_ctx *ctx = NULL;

	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), -EINVAL);
	o.backend = KVRT_BACKEND_HOST;
	o.device = -1;
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), -EINVAL);
	ck_assert_int_eq(kvrt_ctx_create(NULL, NULL), -EINVAL);
	ck_assert_ptr_null(ctx);
}
END_TEST

/* AUTO falls back to the host when no device answers */
START_TEST(test_auto_backend)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_AUTO };
	struct kvrt_ctx *ctx;
	char why[256];
	int have = kvrt_cuda_probe(why, sizeof(why)) == 0;

	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	ck_assert_int_eq(kvrt_ctx_backend(ctx),
			 have ? KVRT_BACKEND_CUDA : KVRT_BACKEND_HOST);
	kvrt_ctx_destroy(ctx);
	if (!have) {
		o.backend = KVRT_BACKEND_CUDA;
		ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), -ENODEV);
		ck_assert_str_ne(why, "");
	}
}
END_TEST

START_TEST(test_file_read)
{
	uint64_t seed = kvtest_seed("file_read");
	char path[] = "/tmp/kvmm-io-XXXXXX";
	size_t len = 5 * 1024 * 1024 + 777;
	unsigned char *src = malloc(len), *dst = malloc(len);
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	for (size_t i = 0; i < len; i++)
		src[i] = kvtest_rand(&seed) >> 56;
	ck_assert_int_eq(write(fd, src, len), (ssize_t)len);
	memset(dst, 0xa5, len);
	ck_assert_int_eq(kvrt_file_read(fd, 0, dst, len), 0);
	ck_assert_int_eq(memcmp(src, dst, len), 0);
	/* unaligned offset, a length that is not a chunk multiple */
	memset(dst, 0xa5, len);
	ck_assert_int_eq(kvrt_file_read(fd, 12345, dst, len - 12345 - 9), 0);
	ck_assert_int_eq(memcmp(src + 12345, dst, len - 12345 - 9), 0);
	/* past the end of the file */
	ck_assert_int_eq(kvrt_file_read(fd, len - 10, dst, 20), -ENODATA);
	ck_assert_int_eq(kvrt_file_read(-1, 0, dst, 20), -EINVAL);
	printf("# file_read engine: %s\n", kvrt_file_read_engine());
	close(fd);
	free(src);
	free(dst);
}
END_TEST

/*
 * Two tiers on the host backend: the space budget reaches device memory
 * plus the host tier, each location has its own cap, a grow over a cap is
 * refused and changes nothing, and the counts per location follow.
 */
START_TEST(test_loc_budget)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 8 * G,
				   .host_tier_bytes = 16 * G };
	struct kvrt_space_stats st;
	struct kvrt_ctx *ctx;
	struct kvrt_space *s;
	uint32_t idx[8];

	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	ck_assert_uint_eq(kvrt_ctx_loc_total(ctx, KVRT_LOC_DEVICE), 8 * G);
	ck_assert_uint_eq(kvrt_ctx_loc_total(ctx, KVRT_LOC_HOST_NUMA), 16 * G);
	ck_assert_int_eq(kvrt_space_create(ctx, 64 * G, 25 * G, &s), -E2BIG);
	ck_assert_int_eq(kvrt_space_create(ctx, 64 * G, 24 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_NR, G),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_DEVICE, G + 1),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_DEVICE, 9 * G),
			 -E2BIG);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_DEVICE, 2 * G),
			 0);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_HOST_NUMA,
						   3 * G), 0);
	ck_assert_uint_eq(kvrt_space_loc_room(s, KVRT_LOC_DEVICE), 2);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx),
			 -ENOSPC);
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, idx),
			 -ENOSPC);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_HOST_NUMA, 0, idx), 0);
	ck_assert_uint_eq(kvrt_space_loc_room(s, KVRT_LOC_HOST_NUMA), 0);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.nr_by_loc[KVRT_LOC_DEVICE], 2);
	ck_assert_uint_eq(st.nr_by_loc[KVRT_LOC_HOST_NUMA], 3);
	ck_assert_uint_eq(st.loc_budget[KVRT_LOC_DEVICE], 2 * G);
	/* below what is mapped there */
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_HOST_NUMA,
						   2 * G), -EBUSY);
	/* shrink gives the location its room back */
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[0], 1, 0), 0);
	ck_assert_uint_eq(kvrt_space_loc_room(s, KVRT_LOC_HOST_NUMA), 1);
	ck_assert_int_eq(kvrt_space_set_loc_budget(s, KVRT_LOC_HOST_NUMA,
						   KVRT_LOC_UNCAPPED), 0);
	ck_assert_uint_eq(kvrt_space_loc_room(s, KVRT_LOC_HOST_NUMA), 24 - 4);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

/* a stream fence outside any space: pending while work runs, then done */
static void slow_fn(void *arg)
{
	(void)arg;
	usleep(20000);
}

START_TEST(test_stream_fence)
{
	struct kvrt_ctx *ctx = host_open();
	struct kvrt_stream *st;
	struct kvrt_fence *f;
	struct kvrt_counts c;

	ck_assert_int_eq(kvrt_stream_create(ctx, &st), 0);
	ck_assert_int_eq(kvrt_stream_host_fn(st, slow_fn, NULL), 0);
	ck_assert_int_eq(kvrt_fence_record(st, &f), 0);
	ck_assert_int_eq(kvrt_fence_done(f, 0), 0);
	ck_assert_int_eq(kvrt_fence_done(f, 1), 1);
	ck_assert_int_eq(kvrt_fence_done(f, 0), 1);
	kvrt_fence_put(f);
	ck_assert_int_eq(kvrt_fence_record(NULL, &f), -EINVAL);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	kvrt_ctx_counts(ctx, &c);
	ck_assert_uint_eq(c.events, 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

Suite *suite_runtime(void)
{
	Suite *s = suite_create("runtime");
	TCase *tc = tcase_create("host_only");
	const char *fork = getenv("CK_FORK");

	KV_ADD(tc, test_host_mem_option);
	KV_ADD(tc, test_bad_ctx_opts);
	KV_ADD(tc, test_auto_backend);
	KV_ADD(tc, test_file_read);
	KV_ADD(tc, test_loc_budget);
	KV_ADD(tc, test_stream_fence);
	/* a test that must die by a signal needs fork mode */
	if (!fork || strcmp(fork, "no")) {
		kvtest_note("test_unmapped_faults");
		tcase_add_test_raise_signal(tc, test_unmapped_faults, SIGSEGV);
	}
	suite_add_tcase(s, tc);
	suite_add_tcase(s, rt_tcase_api(KVRT_BACKEND_HOST));
	suite_add_tcase(s, rt_tcase_fault(KVRT_BACKEND_HOST));
	return s;
}
