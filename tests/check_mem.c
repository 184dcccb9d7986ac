// SPDX-License-Identifier: MIT
/*
 * check_mem.c - the streaming-read reference on the CPU.
 */
#include <check.h>
#include <stdlib.h>

#include "kvk_mem.h"
#include "kvmm_base.h"
#include "kvtest.h"

START_TEST(test_read_sum)
{
	uint64_t seed = kvtest_seed("read_sum");
	uint32_t *w = aligned_alloc(16, 4096 * 4);
	uint64_t want = 0, got = 0;

	for (int i = 0; i < 4096; i++) {
		w[i] = (uint32_t)kvtest_rand(&seed);
		want += w[i];
	}
	ck_assert_int_eq(kvk_read_sum_cpu(w, 4096 * 4, &got, NULL), 0);
	ck_assert_uint_eq(got, want);
	ck_assert_int_eq(kvk_read_sum_cpu(w, 4096 * 4 - 4, &got, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_read_sum_cpu((char *)w + 4, 16, &got, NULL),
			 -EINVAL);
	free(w);
}
END_TEST

Suite *suite_mem(void)
{
	Suite *s = suite_create("mem");
	TCase *tc = tcase_create("read");

	KV_ADD(tc, test_read_sum);
	suite_add_tcase(s, tc);
	return s;
}
