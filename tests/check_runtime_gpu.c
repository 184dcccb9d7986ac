// SPDX-License-Identifier: MIT
/*
 * check_runtime_gpu.c - the runtime on the CUDA backend: the same semantics
 * tests as the host suite (runtime_common.c), run against the driver.
 * Skipped, not passed, when no CUDA device answers.
 */
#include <check.h>

#include "kvtest.h"
#include "runtime_common.h"

/*
 * Opening a CUDA context makes 5 driver calls (device, primary context,
 * make current, memory size, granularity); each failure must unwind what
 * came before it (the labels out_free and out_release of cu_init()).
 */
START_TEST(test_ctx_open_faults)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_CUDA };
	struct kvrt_ctx *ctx = NULL;
	int failures = 0;

	for (o.fault_nth = 1; o.fault_nth < 20; o.fault_nth++) {
		int ret = kvrt_ctx_create(&o, &ctx);

		if (ret == 0)
			break;
		ck_assert_int_eq(ret, -EIO);
		ck_assert_ptr_null(ctx);
		failures++;
	}
	ck_assert_int_eq(failures, 5);
	ck_assert_ptr_nonnull(ctx);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

Suite *suite_runtime_gpu(void)
{
	Suite *s = suite_create("runtime_gpu");
	TCase *tc = tcase_create("open");

	KV_ADD(tc, test_ctx_open_faults);
	suite_add_tcase(s, tc);

	suite_add_tcase(s, rt_tcase_api(KVRT_BACKEND_CUDA));
	suite_add_tcase(s, rt_tcase_fault(KVRT_BACKEND_CUDA));
	return s;
}
