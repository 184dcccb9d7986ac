// SPDX-License-Identifier: MIT
/*
 * check_uapi.c - the uapi header's rules, checked by the compiler and at
 * run time: no implicit padding (-Wpadded is an error while the header is
 * read), every structure a multiple of 8 bytes, every ioctl number distinct
 * (a duplicate is a duplicate case label), sizes encoded in the numbers.
 * Then the typed wrappers of kvmm_lib.h: each one reaches its command,
 * passes errors through unchanged, and the helpers do what they say.
 */
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wpadded"
#include "kvmm.h"
#pragma GCC diagnostic pop

#include "kvmm_base.h"
#include "kvmm_lib.h"
#include "kvrt.h"
#include "kvshim.h"
#include "kvtest.h"

#define MB2 (2ULL << 20)

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

static struct kvmm_space_create lib_create(void)
{
	struct kvmm_space_create c = {
		.backend = KVMM_BACKEND_HOST,
		.nr_layers = 4,
		.nr_kv_heads = 2,
		.head_dim = 64,
		.nr_tiers = 2,
		.tiers = { { 8, 8, 1, 1 }, { 4, 2, 2, 1 } },
		.max_seqs = 6,
		.max_tokens = 300,
		.va_bytes = 8 * MB2,
		.budget_bytes = 4 * MB2,
	};
	return c;
}

/* open checks the version and the features asked for, and closes on error */
START_TEST(test_lib_open)
{
	int fds[KVSHIM_MAX_FILES];
	int fd;

	fd = kvmm_open(KVMM_FEAT_HOST | KVMM_FEAT_COMPACT | KVMM_FEAT_TIERS);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(kvmm_close(fd), 0);
	ck_assert_int_eq(kvmm_open(1ULL << 63), -EOPNOTSUPP);
	if (kvrt_cuda_probe(NULL, 0))
		ck_assert_int_eq(kvmm_open(KVMM_FEAT_DEVICE), -EOPNOTSUPP);
	/* the refused opens left no handle behind */
	for (int i = 0; i < KVSHIM_MAX_FILES; i++) {
		fds[i] = kvmm_open(0);
		ck_assert_int_ge(fds[i], 0);
	}
	ck_assert_int_eq(kvmm_open(0), -EMFILE);
	for (int i = 0; i < KVSHIM_MAX_FILES; i++)
		ck_assert_int_eq(kvmm_close(fds[i]), 0);
	ck_assert_int_eq(kvmm_close(-1), -EBADF);
}
END_TEST

/*
 * Every wrapper against kvshim_ioctl() with the same arguments: the same
 * return, the same results; errors pass through.
 */
START_TEST(test_lib_wrappers)
{
	struct kvmm_space_create c = lib_create();
	struct kvmm_version v = { 0 };
	struct kvmm_seq q[3] = { { .tokens = 5 }, { .tokens = 300 },
				 { .tokens = 77 } };
	struct kvmm_seq_admit a = { .count = 3, .seqs = (uintptr_t)q };
	struct kvmm_head_stats h[8], h2[8];
	struct kvmm_stats st = { 0 }, st2;
	struct kvmm_page_table_info p = { 0 }, p2;
	struct kvmm_set_budget b = { 0 };
	struct kvmm_compact cp = { 0 };
	uint32_t rel[2];
	int fd = kvmm_open(0);

	ck_assert_int_eq(kvmm_version(fd, &v), 0);
	ck_assert_uint_eq(v.api, KVMM_API_VERSION);
	v.pad = 1;
	ck_assert_int_eq(kvmm_version(fd, &v), -EINVAL);
	ck_assert_int_eq(kvmm_version(fd + 1, &v), -EBADF);

	ck_assert_int_eq(kvmm_space_create(fd, &c), 0);
	ck_assert_uint_ne(c.space, 0);
	a.space = st.space = p.space = b.space = cp.space = c.space;
	c.head_dim = 100;
	ck_assert_int_eq(kvmm_space_create(fd, &c), -EINVAL);

	ck_assert_int_eq(kvmm_seq_admit(fd, &a), 0);
	ck_assert_uint_ne(q[0].slot, q[1].slot);
	q[0].tokens = 301;
	ck_assert_int_eq(kvmm_seq_admit(fd, &a), -E2BIG);

	st.heads = (uintptr_t)h;
	st.nr_heads = 8;
	ck_assert_int_eq(kvmm_stats(fd, &st), 0);
	st2 = st;
	st2.heads = (uintptr_t)h2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &st2), 0);
	st2.heads = st.heads;
	ck_assert(!memcmp(&st, &st2, sizeof(st)));
	ck_assert(!memcmp(h, h2, sizeof(h)));
	ck_assert_uint_gt(st.pages_used[0], 0);
	st.nr_heads = 7;
	ck_assert_int_eq(kvmm_stats(fd, &st), -EINVAL);

	ck_assert_int_eq(kvmm_page_table_info(fd, &p), 0);
	p2 = (struct kvmm_page_table_info){ .space = c.space };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_PAGE_TABLE_INFO, &p2), 0);
	ck_assert(!memcmp(&p, &p2, sizeof(p)));

	rel[0] = q[0].slot;
	rel[1] = q[2].slot;
	ck_assert_int_eq(kvmm_seq_release(fd,
					  &(struct kvmm_seq_release){
						  .space = c.space, .count = 2,
						  .slots = (uintptr_t)rel }),
			 0);
	ck_assert_int_eq(kvmm_seq_release(fd,
					  &(struct kvmm_seq_release){
						  .space = c.space, .count = 2,
						  .slots = (uintptr_t)rel }),
			 -ENOENT);

	b.budget_bytes = 8 * MB2;
	ck_assert_int_eq(kvmm_set_budget(fd, &b), 0);
	b.budget_bytes = 10 * MB2;
	ck_assert_int_eq(kvmm_set_budget(fd, &b), -EINVAL);

	ck_assert_int_eq(kvmm_compact(fd, &cp), 0);
	ck_assert_uint_ne(cp.reason, KVMM_COMPACT_BUDGET);
	cp.flags = 1;
	ck_assert_int_eq(kvmm_compact(fd, &cp), -EINVAL);

	ck_assert_int_eq(kvmm_space_destroy(fd,
					    &(struct kvmm_space_destroy){
						    .space = c.space }),
			 0);
	ck_assert_int_eq(kvmm_space_destroy(fd,
					    &(struct kvmm_space_destroy){
						    .space = c.space }),
			 -ENOENT);
	ck_assert_int_eq(kvmm_close(fd), 0);
}
END_TEST

/* the array helpers: all or none, slots out only on success */
START_TEST(test_lib_helpers)
{
	struct kvmm_space_create c = lib_create();
	struct kvmm_stats st = { 0 };
	struct kvmm_compact total;
	uint32_t tok[6], slots[6], keep[6];
	uint64_t seed = kvtest_seed(__func__);
	int fd = kvmm_open(KVMM_FEAT_HOST);

	ck_assert_int_eq(kvmm_space_create(fd, &c), 0);
	st.space = c.space;
	for (int i = 0; i < 6; i++)
		tok[i] = 1 + kvtest_rand(&seed) % 300;
	ck_assert_int_eq(kvmm_admit(fd, c.space, tok, 6, slots), 0);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < i; j++)
			ck_assert_uint_ne(slots[i], slots[j]);
	/* no slot left: refused, the output untouched */
	memcpy(keep, slots, sizeof(keep));
	ck_assert_int_eq(kvmm_admit(fd, c.space, tok, 1, slots), -EBUSY);
	ck_assert(!memcmp(keep, slots, sizeof(keep)));
	ck_assert_int_eq(kvmm_admit(fd, c.space, NULL, 1, slots), -EINVAL);
	ck_assert_int_eq(kvmm_admit(fd, c.space, NULL, 0, NULL), 0);

	/* free every other one, then compact in one-page increments */
	for (int i = 0; i < 3; i++)
		keep[i] = slots[2 * i];
	ck_assert_int_eq(kvmm_release(fd, c.space, keep, 3), 0);
	ck_assert_int_eq(kvmm_release(fd, c.space, keep, 1), -ENOENT);
	ck_assert_int_eq(kvmm_stats(fd, &st), 0);
	ck_assert_int_eq(kvmm_compact_all(fd, c.space, st.page_size, &total),
			 0);
	ck_assert_uint_ne(total.reason, KVMM_COMPACT_BUDGET);
	ck_assert_uint_eq(total.bytes_moved, total.pages_moved * st.page_size);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	ck_assert_int_eq(kvmm_compact_all(fd, c.space + 99, 0, NULL), -ENOENT);

	ck_assert_int_eq(kvmm_destroy(fd, c.space), 0);
	ck_assert_int_eq(kvmm_destroy(fd, c.space), -ENOENT);
	ck_assert_int_eq(kvmm_close(fd), 0);
}
END_TEST

Suite *suite_uapi(void)
{
	Suite *s = suite_create("uapi");
	TCase *tc = tcase_create("layout");

	KV_ADD(tc, test_ioctl_numbers);
	suite_add_tcase(s, tc);
	tc = tcase_create("lib");
	KV_ADD(tc, test_lib_open);
	KV_ADD(tc, test_lib_wrappers);
	KV_ADD(tc, test_lib_helpers);
	suite_add_tcase(s, tc);
	return s;
}
