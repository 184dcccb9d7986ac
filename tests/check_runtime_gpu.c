// SPDX-License-Identifier: MIT
/*
 * check_runtime_gpu.c - the runtime on the CUDA backend: the same semantics
 * tests as the host suite (runtime_common.c), run against the driver.
 * Skipped, not passed, when no CUDA device answers.
 */
#include <check.h>

#include "kvtest.h"
#include "runtime_common.h"

Suite *suite_runtime_gpu(void)
{
	Suite *s = suite_create("runtime_gpu");

	suite_add_tcase(s, rt_tcase_api(KVRT_BACKEND_CUDA));
	suite_add_tcase(s, rt_tcase_fault(KVRT_BACKEND_CUDA));
	return s;
}
