// SPDX-License-Identifier: MIT
/*
 * check_mem_gpu.c - a kernel reads the granules of a kvrt space, device and
 * host-NUMA alike, through the one reserved range: the streaming-read
 * kernel's sum over fresh random data equals the CPU reference's.
 */
#include <check.h>
#include <stdlib.h>

#include "kvk_mem.h"
#include "kvmm_base.h"
#include "kvrt.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

START_TEST(test_read_granules)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_CUDA };
	uint64_t seed = kvtest_seed("read_granules");
	size_t bytes = 4 * KVRT_GRANULE_SIZE;
	uint32_t *buf = malloc(bytes);
	struct kvrt_space *s;
	struct kvrt_ctx *ctx;
	uint64_t *dsum, want, got;
	uint32_t idx[4];

	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	ck_assert_int_eq(kvrt_space_create(ctx, 8 * KVRT_GRANULE_SIZE,
					   8 * KVRT_GRANULE_SIZE, &s),
			 0);
	/* slots 0-1 on the device, 2-3 on host NUMA node 0: one range */
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_HOST_NUMA, 0, idx + 2),
			 0);
	for (size_t i = 0; i < bytes / 4; i++)
		buf[i] = (uint32_t)kvtest_rand(&seed);
	ck_assert_int_eq(kvrt_memcpy_to(ctx, kvrt_space_base(s), buf, bytes),
			 0);
	ck_assert_int_eq(cudaMalloc((void **)&dsum, 8), cudaSuccess);
	for (int part = 0; part < 3; part++) {
		/* device half, host half, and both across the boundary */
		size_t off = part == 1 ? bytes / 2 : 0;
		size_t len = part == 2 ? bytes : bytes / 2;
		void *p = (void *)(uintptr_t)(kvrt_space_base(s) + off);

		ck_assert_int_eq(kvk_read_sum_cpu((char *)buf + off, len, &want,
						  NULL),
				 0);
		ck_assert_int_eq(cudaMemset(dsum, 0xff, 8), cudaSuccess);
		ck_assert_int_eq(kvk_read_sum_cuda(p, len, dsum, NULL), 0);
		ck_assert_int_eq(cudaMemcpy(&got, dsum, 8,
					    cudaMemcpyDeviceToHost),
				 cudaSuccess);
		ck_assert_msg(got == want, "part %d: %#llx, want %#llx", part,
			      (unsigned long long)got,
			      (unsigned long long)want);
	}
	ck_assert_int_eq(kvk_read_sum_cuda((void *)8, 16, dsum, NULL), -EINVAL);
	cudaFree(dsum);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	kvrt_ctx_destroy(ctx);
	free(buf);
}
END_TEST
#else
START_TEST(test_read_granules)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_mem_gpu(void)
{
	Suite *s = suite_create("mem_gpu");
	TCase *tc = tcase_create("read");

	KV_ADD(tc, test_read_granules);
	suite_add_tcase(s, tc);
	return s;
}
