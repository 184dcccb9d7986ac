// SPDX-License-Identifier: MIT
/*
 * check_uapi.c - the uapi header's rules, checked by the compiler and at
 * run time: no implicit padding (-Wpadded is an error while the header is
 * read), every structure a multiple of 8 bytes, every ioctl number distinct
 * (a duplicate is a duplicate case label), sizes encoded in the numbers.
 */
#include <check.h>
#include <stddef.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wpadded"
#include "kvmm.h"
#pragma GCC diagnostic pop

#include "kvmm_base.h"
#include "kvtest.h"

#define KVMM_UAPI_STRUCTS(X)                                                   \
	X(kvmm_version)                                                        \
	X(kvmm_tier)                                                           \
	X(kvmm_space_create)                                                   \
	X(kvmm_space_destroy)                                                  \
	X(kvmm_seq)                                                            \
	X(kvmm_seq_admit)                                                      \
	X(kvmm_seq_release)                                                    \
	X(kvmm_set_budget)                                                     \
	X(kvmm_compact)                                                        \
	X(kvmm_head_stats)                                                     \
	X(kvmm_stats)                                                          \
	X(kvmm_page_table_info)

/* struct kvmm_tier is 4 bytes and only ever used in arrays of 2 */
#define CHECK_SIZE(s)                                                          \
	_Static_assert(sizeof(struct s) % 8 == 0 ||                            \
			       sizeof(struct s) == 4,                          \
		       #s " is not a multiple of 8 bytes");
KVMM_UAPI_STRUCTS(CHECK_SIZE)

static const char *ioc_name(unsigned long nr)
{
	switch (nr) { /* a reused number fails to compile here */
	case KVMM_IOC_VERSION:
		return "VERSION";
	case KVMM_IOC_SPACE_CREATE:
		return "SPACE_CREATE";
	case KVMM_IOC_SPACE_DESTROY:
		return "SPACE_DESTROY";
	case KVMM_IOC_SEQ_ADMIT:
		return "SEQ_ADMIT";
	case KVMM_IOC_SEQ_RELEASE:
		return "SEQ_RELEASE";
	case KVMM_IOC_SET_BUDGET:
		return "SET_BUDGET";
	case KVMM_IOC_COMPACT:
		return "COMPACT";
	case KVMM_IOC_STATS:
		return "STATS";
	case KVMM_IOC_PAGE_TABLE_INFO:
		return "PAGE_TABLE_INFO";
	default:
		return NULL;
	}
}

START_TEST(test_ioctl_numbers)
{
	static const struct {
		unsigned long nr;
		size_t size;
	} iocs[] = {
		{ KVMM_IOC_VERSION, sizeof(struct kvmm_version) },
		{ KVMM_IOC_SPACE_CREATE, sizeof(struct kvmm_space_create) },
		{ KVMM_IOC_SPACE_DESTROY, sizeof(struct kvmm_space_destroy) },
		{ KVMM_IOC_SEQ_ADMIT, sizeof(struct kvmm_seq_admit) },
		{ KVMM_IOC_SEQ_RELEASE, sizeof(struct kvmm_seq_release) },
		{ KVMM_IOC_SET_BUDGET, sizeof(struct kvmm_set_budget) },
		{ KVMM_IOC_COMPACT, sizeof(struct kvmm_compact) },
		{ KVMM_IOC_STATS, sizeof(struct kvmm_stats) },
		{ KVMM_IOC_PAGE_TABLE_INFO,
		  sizeof(struct kvmm_page_table_info) },
	};

	for (size_t i = 0; i < ARRAY_SIZE(iocs); i++) {
		ck_assert_ptr_nonnull(ioc_name(iocs[i].nr));
		ck_assert_uint_eq(_IOC_TYPE(iocs[i].nr), KVMMIO);
		ck_assert_uint_eq(_IOC_SIZE(iocs[i].nr), iocs[i].size);
		/* numbers 0x10..0x1f are held for swap and placement */
		ck_assert_uint_lt(_IOC_NR(iocs[i].nr), 0x10);
		for (size_t j = 0; j < i; j++)
			ck_assert_uint_ne(_IOC_NR(iocs[i].nr),
					  _IOC_NR(iocs[j].nr));
	}
}
END_TEST

Suite *suite_uapi(void)
{
	Suite *s = suite_create("uapi");
	TCase *tc = tcase_create("layout");

	KV_ADD(tc, test_ioctl_numbers);
	suite_add_tcase(s, tc);
	return s;
}
