// SPDX-License-Identifier: MIT
/*
 * check_shim.c - the kvmm uapi as served by kvshim_ioctl(), host backend:
 * every command's success path, every validation rule (each failure
 * returns its errno and leaves the space exactly as it was: STATS with
 * per-head figures, PAGE_TABLE_INFO and kva_check() compared before and
 * after), and two handles that cannot reach each other's spaces.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvshim.h"
#include "kvmm_base.h"
#include "kvrt.h"
#include "kvtest.h"

#define MB2 (2ULL << 20)
#define LAYERS 2
#define HEADS 2
#define MAX_SEQS 8
#define MAX_TOKENS 256
#define BIG_LISTS 64	/* the 8 x 8 spaces some tests make */

/* everything userspace can see of a space */
struct snap {
	uint64_t digest;
	struct kvmm_stats st;
	struct kvmm_head_stats h[BIG_LISTS];
	struct kvmm_page_table_info pti;
};

static void take(int fd, uint32_t space, struct snap *s)
{
	char why[256] = "";
	int ret;

	memset(s, 0, sizeof(*s));
	s->st.space = space;
	s->st.heads = (uint64_t)(uintptr_t)s->h;
	s->st.nr_heads = LAYERS * HEADS;
	ret = kvshim_ioctl(fd, KVMM_IOC_STATS, &s->st);
	if (ret == -EINVAL) {	/* not LAYERS x HEADS: an 8 x 8 space */
		s->st.nr_heads = BIG_LISTS;
		ret = kvshim_ioctl(fd, KVMM_IOC_STATS, &s->st);
	}
	ck_assert_int_eq(ret, 0);
	s->st.heads = 0;
	s->st.nr_heads = 0;
	s->pti.space = space;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_PAGE_TABLE_INFO, &s->pti),
			 0);
	ret = kvshim_check(fd, space, why, sizeof(why));
	ck_assert_msg(ret == 0, "kva_check: %d %s", ret, why);
	ck_assert_int_eq(kvshim_digest(fd, space, &s->digest), 0);
}

/* the call fails with @err and the space is as it was */
#define FAILS(fd, space, cmd, arg, err)                                        \
	do {                                                                   \
		struct snap __a, __b;                                          \
		take((fd), (space), &__a);                                     \
		ck_assert_int_eq(kvshim_ioctl((fd), (cmd), (arg)), (err));     \
		take((fd), (space), &__b);                                     \
		ck_assert_msg(!memcmp(&__a, &__b, sizeof(__a)),                \
			      "state changed by a failed " #cmd);              \
	} while (0)

static struct kvmm_space_create good_create(void)
{
	struct kvmm_space_create c = {
		.backend = KVMM_BACKEND_HOST,
		.nr_layers = LAYERS,
		.nr_kv_heads = HEADS,
		.head_dim = 128,
		.nr_tiers = 2,
		.tiers = { { 8, 4, 1, 2 }, { 4, 2, 1, 1 } },
		.max_seqs = MAX_SEQS,
		.max_tokens = MAX_TOKENS,
		.va_bytes = 16 * MB2,
		.budget_bytes = 8 * MB2,
	};
	return c;
}

static uint32_t create(int fd)
{
	struct kvmm_space_create c = good_create();

	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	ck_assert_uint_ne(c.space, 0);
	ck_assert_uint_gt(c.page_size, 0);
	return c.space;
}

static int admit(int fd, uint32_t space, const uint32_t *tokens, uint32_t n,
		 uint32_t *slots)
{
	struct kvmm_seq q[MAX_SEQS + 1] = { 0 };
	struct kvmm_seq_admit a = { .space = space, .count = n,
				    .seqs = (uint64_t)(uintptr_t)q };
	int ret;

	for (uint32_t i = 0; i < n; i++)
		q[i].tokens = tokens[i];
	ret = kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a);
	for (uint32_t i = 0; !ret && i < n; i++)
		slots[i] = q[i].slot;
	return ret;
}

static int release(int fd, uint32_t space, const uint32_t *slots, uint32_t n)
{
	struct kvmm_seq_release r = { .space = space, .count = n,
				      .slots = (uint64_t)(uintptr_t)slots };

	return kvshim_ioctl(fd, KVMM_IOC_SEQ_RELEASE, &r);
}

START_TEST(test_version)
{
	struct kvmm_version v = { 0 };
	int fd = kvshim_open();

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_VERSION, &v), 0);
	ck_assert_uint_eq(v.api, KVMM_API_VERSION);
	ck_assert(v.features & KVMM_FEAT_HOST);
	ck_assert(v.features & KVMM_FEAT_COMPACT);
	ck_assert(v.features & KVMM_FEAT_TIERS);
	ck_assert_int_eq(!!(v.features & KVMM_FEAT_DEVICE),
			 kvrt_cuda_probe(NULL, 0) == 0);
	v.pad = 1;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_VERSION, &v), -EINVAL);
	v.pad = 0;
	v.reserved[3] = 1;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_VERSION, &v), -EINVAL);
	ck_assert_int_eq(kvshim_close(fd), 0);
	ck_assert_int_eq(kvshim_close(fd), -EBADF);
}
END_TEST

START_TEST(test_space_lifecycle)
{
	struct kvmm_space_destroy d = { 0 };
	struct snap s;
	int fd = kvshim_open();
	uint32_t sp = create(fd), sp2 = create(fd);

	ck_assert_uint_ne(sp, sp2);
	take(fd, sp, &s);
	ck_assert_uint_gt(s.st.page_size, 0);
	ck_assert_uint_eq(s.st.pages_total, 0);
	ck_assert_uint_eq(s.st.pages_used[0] + s.st.pages_used[1], 0);
	d.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_DESTROY, &d), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_DESTROY, &d),
			 -ENOENT);
	s.st.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s.st), -ENOENT);
	take(fd, sp2, &s);
	/* close destroys what is left */
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_admit_release)
{
	static const uint32_t tokens[] = { 10, 100, MAX_TOKENS };
	uint32_t slots[3], sum_pages = 0;
	struct snap s;
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	ck_assert_int_eq(admit(fd, sp, tokens, 3, slots), 0);
	ck_assert_uint_ne(slots[0], slots[1]);
	ck_assert_uint_ne(slots[1], slots[2]);
	ck_assert_uint_ne(slots[0], slots[2]);
	for (int i = 0; i < 3; i++)
		ck_assert_uint_lt(slots[i], MAX_SEQS);
	take(fd, sp, &s);
	ck_assert_uint_gt(s.st.pages_total, 0);
	ck_assert_uint_gt(s.st.pages_used[0], 0);
	ck_assert_uint_eq(s.st.pages_used[0] + s.st.pages_used[1] +
				  s.st.pages_free,
			  s.st.pages_total);
	ck_assert_uint_eq(s.st.granules_by_loc[0] + s.st.granules_by_loc[1],
			  s.st.pages_total / s.pti.pages_per_granule);
	for (int i = 0; i < LAYERS * HEADS; i++) {
		ck_assert_uint_gt(s.h[i].pages[0], 0);
		sum_pages += s.h[i].pages[0] + s.h[i].pages[1];
	}
	ck_assert_uint_eq(sum_pages, s.st.pages_used[0] + s.st.pages_used[1]);

	ck_assert_int_eq(release(fd, sp, slots, 2), 0);
	ck_assert_int_eq(release(fd, sp, &slots[2], 1), 0);
	take(fd, sp, &s);
	ck_assert_uint_eq(s.st.pages_used[0] + s.st.pages_used[1], 0);
	ck_assert_uint_eq(s.st.pages_free, s.st.pages_total);
	/* a double release is refused and changes nothing */
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = 1,
					   .slots = (uintptr_t)slots }),
	      -ENOENT);
	/* empty batches succeed and do nothing */
	ck_assert_int_eq(admit(fd, sp, tokens, 0, slots), 0);
	ck_assert_int_eq(release(fd, sp, NULL, 0), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_set_budget)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_seq q[MAX_SEQS];
	struct kvmm_seq_admit a = { .count = MAX_SEQS, .seqs = (uintptr_t)q };
	struct kvmm_set_budget b = { 0 };
	struct kvmm_stats s0 = { 0 }, s1 = { 0 };
	uint32_t ppg;
	int fd = kvshim_open();

	/* 8 x 8 lists per sequence: eight of them need several granules */
	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	ppg = MB2 / c.page_size;
	b.space = a.space = s0.space = s1.space = c.space;
	b.budget_bytes = 16 * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), 0);
	for (int i = 0; i < MAX_SEQS; i++)
		q[i] = (struct kvmm_seq){ .tokens = MAX_TOKENS };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s0), 0);
	ck_assert_uint_gt(s0.pages_total, ppg);

	/* below what is mapped: -EBUSY, nothing changed */
	b.budget_bytes = MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), -EBUSY);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s1), 0);
	ck_assert(!memcmp(&s0, &s1, sizeof(s0)));
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);

	/* exactly what is mapped is accepted */
	b.budget_bytes = s0.pages_total / ppg * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * 8 layers x 8 heads of full-length sequences: one granule cannot hold
 * all eight. Admission grows until the budget refuses, and the refused
 * batch changes nothing.
 */
START_TEST(test_admit_over_budget)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_seq q = { .tokens = MAX_TOKENS };
	struct kvmm_seq_admit a = { .count = 1, .seqs = (uintptr_t)&q };
	struct kvmm_stats s0 = { 0 }, s1 = { 0 };
	int fd = kvshim_open(), ret = 0, n = 0;

	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	c.budget_bytes = MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	a.space = s0.space = s1.space = c.space;
	for (n = 0; n < MAX_SEQS; n++) {
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s0), 0);
		ret = kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a);
		if (ret)
			break;
	}
	ck_assert_int_eq(ret, -ENOSPC);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s1), 0);
	ck_assert(!memcmp(&s0, &s1, sizeof(s0)));
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_slots_exhausted)
{
	uint32_t tokens[MAX_SEQS], slots[MAX_SEQS];
	struct kvmm_seq q = { .tokens = 1 };
	struct kvmm_seq_admit a = { .count = 1, .seqs = (uintptr_t)&q };
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	for (int i = 0; i < MAX_SEQS; i++)
		tokens[i] = 1;
	ck_assert_int_eq(admit(fd, sp, tokens, MAX_SEQS, slots), 0);
	a.space = sp;
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT, &a, -EBUSY);
	ck_assert_int_eq(release(fd, sp, slots, MAX_SEQS), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * Fill several granules, free every other sequence, compact: pages move,
 * used pages and tokens stay, and the pool's invariants hold.
 */
START_TEST(test_compact)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_seq q[MAX_SEQS];
	struct kvmm_seq_admit a = { .count = MAX_SEQS, .seqs = (uintptr_t)q };
	struct kvmm_stats s0 = { 0 }, s1 = { 0 };
	struct kvmm_compact cp = { 0 };
	uint32_t odd[MAX_SEQS / 2];
	int fd = kvshim_open();

	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	c.budget_bytes = c.va_bytes;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	a.space = s0.space = s1.space = cp.space = c.space;
	for (int i = 0; i < MAX_SEQS; i++)
		q[i] = (struct kvmm_seq){ .tokens = MAX_TOKENS };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a), 0);
	for (int i = 0; i < MAX_SEQS / 2; i++)
		odd[i] = q[2 * i + 1].slot;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_RELEASE,
				      &(struct kvmm_seq_release){
					      .space = c.space,
					      .count = MAX_SEQS / 2,
					      .slots = (uintptr_t)odd }),
			 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s0), 0);
	ck_assert_uint_gt(s0.free_unusable_bytes, 0);

	/* a one-page budget moves at most one page */
	cp.byte_budget = s0.page_size;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_COMPACT, &cp), 0);
	ck_assert_uint_le(cp.bytes_moved, s0.page_size);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);

	memset(&cp, 0, sizeof(cp));
	cp.space = c.space;	/* byte_budget 0: no limit */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_COMPACT, &cp), 0);
	ck_assert_uint_ne(cp.reason, KVMM_COMPACT_BUDGET);
	ck_assert_uint_eq(cp.bytes_moved, cp.pages_moved * s0.page_size);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s1), 0);
	ck_assert_uint_eq(s1.pages_used[0], s0.pages_used[0]);
	ck_assert_uint_eq(s1.pages_used[1], s0.pages_used[1]);
	ck_assert_uint_eq(s1.tokens[0], s0.tokens[0]);
	ck_assert_uint_le(s1.pages_total, s0.pages_total);
	ck_assert_uint_le(s1.free_unusable_bytes, s0.free_unusable_bytes);
	printf("compact: %llu pages moved, %llu granules released, "
	       "free unusable %llu -> %llu bytes\n",
	       (unsigned long long)cp.pages_moved,
	       (unsigned long long)cp.granules_released,
	       (unsigned long long)s0.free_unusable_bytes,
	       (unsigned long long)s1.free_unusable_bytes);
	ck_assert_uint_gt(cp.pages_moved + cp.granules_released, 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_page_table_info)
{
	struct snap s;
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	take(fd, sp, &s);
	ck_assert_uint_ne(s.pti.pool_base, 0);
	ck_assert_uint_ne(s.pti.tables, 0);
	ck_assert_uint_ne(s.pti.counts, 0);
	ck_assert_uint_eq(s.pti.page_size, s.st.page_size);
	ck_assert_uint_eq(s.pti.pages_per_granule, MB2 / s.pti.page_size);
	ck_assert_uint_gt(s.pti.tokens_per_page[0], 0);
	ck_assert_uint_ge(s.pti.tokens_per_page[1], s.pti.tokens_per_page[0]);
	ck_assert_uint_ge((uint64_t)s.pti.table_width *
				  s.pti.tokens_per_page[0],
			  MAX_TOKENS);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* the command number: magic, number, direction, size; the handle; arg */
START_TEST(test_bad_command)
{
	struct kvmm_stats st = { 0 };
	char big[512] = { 0 };
	int fd = kvshim_open();
	uint32_t sp = create(fd);
	uint32_t slot, tok = 5;

	ck_assert_int_eq(admit(fd, sp, &tok, 1, &slot), 0);
	st.space = sp;
	FAILS(fd, sp, _IOWR(0xB6, 0x07, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IOWR(KVMMIO, 0x0d, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IOWR(KVMMIO, 0x09, struct kvmm_stats), &st, -EINVAL);
	FAILS(fd, sp, _IOWR(KVMMIO, 0x10, struct kvmm_stats), &st, -EINVAL);
	FAILS(fd, sp, _IOWR(KVMMIO, 0x15, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IOWR(KVMMIO, 0x0f, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IOWR(KVMMIO, 0xff, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IOR(KVMMIO, 0x07, struct kvmm_stats), &st, -ENOTTY);
	FAILS(fd, sp, _IO(KVMMIO, 0x07), &st, -ENOTTY);
	FAILS(fd, sp, _IOW(KVMMIO, 0x00, struct kvmm_version), big, -ENOTTY);
	/* a structure size this build does not know */
	FAILS(fd, sp, _IOC(_IOC_READ | _IOC_WRITE, KVMMIO, 0x07,
			   sizeof(struct kvmm_stats) + 8),
	      big, -EINVAL);
	FAILS(fd, sp, _IOC(_IOC_READ | _IOC_WRITE, KVMMIO, 0x07,
			   sizeof(struct kvmm_stats) - 8),
	      big, -EINVAL);
	FAILS(fd, sp, _IOC(_IOC_WRITE, KVMMIO, 0x04, 8), big, -EINVAL);
	FAILS(fd, sp, _IOC(_IOC_READ, KVMMIO, 0x00, 8), big, -EINVAL);
	/* NULL argument */
	FAILS(fd, sp, KVMM_IOC_STATS, NULL, -EFAULT);
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE, NULL, -EFAULT);
	/* bad handles */
	FAILS(fd, sp, KVMM_IOC_STATS, &st, 0);
	ck_assert_int_eq(kvshim_ioctl(-1, KVMM_IOC_STATS, &st), -EBADF);
	ck_assert_int_eq(kvshim_ioctl(KVSHIM_MAX_FILES, KVMM_IOC_STATS, &st),
			 -EBADF);
	ck_assert_int_eq(kvshim_ioctl(fd + 1, KVMM_IOC_STATS, &st), -EBADF);
	ck_assert_int_eq(kvshim_close(-1), -EBADF);
	{
		struct snap a, b;

		take(fd, sp, &a);
		ck_assert_int_eq(kvshim_ioctl(fd + 1, KVMM_IOC_SEQ_RELEASE,
					      big),
				 -EBADF);
		take(fd, sp, &b);
		ck_assert(!memcmp(&a, &b, sizeof(a)));
	}
	ck_assert_int_eq(kvshim_close(fd), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &st), -EBADF);
}
END_TEST

/* every pad, reserved word and flag of every command must be zero */
START_TEST(test_nonzero_reserved)
{
	int fd = kvshim_open();
	uint32_t sp = create(fd);
	uint32_t slot, tok = 7;
	struct kvmm_seq q = { .tokens = 3 };

	ck_assert_int_eq(admit(fd, sp, &tok, 1, &slot), 0);

	for (int i = 0; i < 6; i++) {
		struct kvmm_space_create c = good_create();

		if (i == 0)
			c.flags = 1;
		else if (i == 1)
			c.flags = 1U << 31;
		else
			c.reserved[i - 2] = 1;
		FAILS(fd, sp, KVMM_IOC_SPACE_CREATE, &c, -EINVAL);
	}
	for (int i = 0; i < 3; i++) {
		struct kvmm_space_destroy d = { .space = sp };

		if (i == 0)
			d.flags = 1;
		else
			d.reserved[i - 1] = 1;
		FAILS(fd, sp, KVMM_IOC_SPACE_DESTROY, &d, -EINVAL);
	}
	for (int i = 0; i < 5; i++) {
		struct kvmm_seq qq = q;
		struct kvmm_seq_admit a = { .space = sp, .count = 1,
					    .seqs = (uintptr_t)&qq };

		if (i == 0)
			a.flags = 1;
		else if (i == 1)
			a.pad = 1;
		else if (i == 4)
			qq.reserved = 1;
		else
			a.reserved[i - 2] = 1;
		FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT, &a, -EINVAL);
	}
	for (int i = 0; i < 4; i++) {
		struct kvmm_seq_release r = { .space = sp, .count = 1,
					      .slots = (uintptr_t)&slot };

		if (i == 0)
			r.flags = 1;
		else if (i == 1)
			r.pad = 1;
		else
			r.reserved[i - 2] = 1;
		FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE, &r, -EINVAL);
	}
	for (int i = 0; i < 3; i++) {
		struct kvmm_set_budget b = { .space = sp,
					     .budget_bytes = 16 * MB2 };

		if (i == 0)
			b.flags = 1;
		else
			b.reserved[i - 1] = 1;
		FAILS(fd, sp, KVMM_IOC_SET_BUDGET, &b, -EINVAL);
	}
	for (int i = 0; i < 4; i++) {
		struct kvmm_compact c = { .space = sp };

		if (i == 0)
			c.flags = 1;
		else if (i == 1)
			c.pad = 1;
		else
			c.reserved[i - 2] = 1;
		FAILS(fd, sp, KVMM_IOC_COMPACT, &c, -EINVAL);
	}
	for (int i = 0; i < 7; i++) {
		struct kvmm_stats st = { .space = sp };

		if (i == 0)
			st.flags = 1;
		else if (i == 1)
			st.pad = 1;
		else if (i == 2)
			st.pad2 = 1;
		else
			st.reserved[i - 3] = 1;
		FAILS(fd, sp, KVMM_IOC_STATS, &st, -EINVAL);
	}
	for (int i = 0; i < 6; i++) {
		struct kvmm_page_table_info p = { .space = sp };

		if (i == 0)
			p.flags = 1;
		else if (i == 1)
			p.pad = 1;
		else
			p.reserved[i - 2] = 1;
		FAILS(fd, sp, KVMM_IOC_PAGE_TABLE_INFO, &p, -EINVAL);
	}
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* ranges, counts and pointers */
START_TEST(test_bad_ranges)
{
	int fd = kvshim_open();
	uint32_t sp = create(fd);
	uint32_t slots[2], tok[2] = { 4, 4 }, bad[2];
	struct kvmm_seq q[MAX_SEQS + 1] = { 0 };
	struct kvmm_head_stats h[LAYERS * HEADS + 1];

	ck_assert_int_eq(admit(fd, sp, tok, 2, slots), 0);

	for (int i = 0; i < 17; i++) {
		struct kvmm_space_create c = good_create();
		int err = -EINVAL;

		switch (i) {
		case 0: c.head_dim = 100; break;
		case 1: c.head_dim = 0; break;
		case 2: c.nr_tiers = 0; break;
		case 3: c.nr_tiers = 3; break;
		case 4: c.tiers[0].kbits = 3; break;
		case 5: c.tiers[1].vgroups = 3; break;
		case 6: c.nr_tiers = 1; break;	/* tiers[1] unused, not zero */
		case 7: c.va_bytes = MB2 + 4096; break;
		case 8: c.va_bytes = 0; break;
		case 9: c.budget_bytes = 3 * MB2 / 2; break;
		case 10: c.budget_bytes = c.va_bytes + 2 * MB2; break;
		case 11: c.budget_bytes = 0; break;
		case 12: c.backend = 7; break;
		case 13: c.nr_layers = 0; break;
		case 14: c.nr_kv_heads = 0; break;
		case 15: c.max_seqs = 0; break;
		case 16: c.max_tokens = 0; break;
		}
		FAILS(fd, sp, KVMM_IOC_SPACE_CREATE, &c, err);
	}
	if (kvrt_cuda_probe(NULL, 0)) {
		struct kvmm_space_create c = good_create();

		c.backend = KVMM_BACKEND_DEVICE;
		FAILS(fd, sp, KVMM_IOC_SPACE_CREATE, &c, -ENODEV);
	}

	/* admission: too long a prompt, NULL with a count, too many */
	q[0].tokens = 1;
	q[1].tokens = MAX_TOKENS + 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT,
	      (&(struct kvmm_seq_admit){ .space = sp, .count = 2,
					 .seqs = (uintptr_t)q }),
	      -E2BIG);
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT,
	      (&(struct kvmm_seq_admit){ .space = sp, .count = 1 }), -EINVAL);
	q[1].tokens = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT,
	      (&(struct kvmm_seq_admit){ .space = sp, .count = MAX_SEQS + 1,
					 .seqs = (uintptr_t)q }),
	      -EINVAL);

	/* release: NULL, too many, out of range, repeated, free slot */
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = 1 }),
	      -EINVAL);
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = MAX_SEQS + 1,
					   .slots = (uintptr_t)q }),
	      -EINVAL);
	bad[0] = slots[0];
	bad[1] = MAX_SEQS;
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = 2,
					   .slots = (uintptr_t)bad }),
	      -EINVAL);
	bad[1] = slots[0];
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = 2,
					   .slots = (uintptr_t)bad }),
	      -EINVAL);
	bad[1] = 0;
	while (bad[1] == slots[0] || bad[1] == slots[1])
		bad[1]++;
	FAILS(fd, sp, KVMM_IOC_SEQ_RELEASE,
	      (&(struct kvmm_seq_release){ .space = sp, .count = 2,
					   .slots = (uintptr_t)bad }),
	      -ENOENT);

	/* budget: zero, unaligned, over the reservation */
	FAILS(fd, sp, KVMM_IOC_SET_BUDGET,
	      (&(struct kvmm_set_budget){ .space = sp }), -EINVAL);
	FAILS(fd, sp, KVMM_IOC_SET_BUDGET,
	      (&(struct kvmm_set_budget){ .space = sp,
					  .budget_bytes = MB2 + 1 }),
	      -EINVAL);
	FAILS(fd, sp, KVMM_IOC_SET_BUDGET,
	      (&(struct kvmm_set_budget){ .space = sp,
					  .budget_bytes = 32 * MB2 }),
	      -EINVAL);

	/* stats: head count that does not match, or a count without array */
	FAILS(fd, sp, KVMM_IOC_STATS,
	      (&(struct kvmm_stats){ .space = sp, .nr_heads = LAYERS * HEADS +
							      1,
				     .heads = (uintptr_t)h }),
	      -EINVAL);
	FAILS(fd, sp, KVMM_IOC_STATS,
	      (&(struct kvmm_stats){ .space = sp, .nr_heads = LAYERS * HEADS }),
	      -EINVAL);
	FAILS(fd, sp, KVMM_IOC_STATS,
	      (&(struct kvmm_stats){ .space = sp, .heads = (uintptr_t)h }),
	      -EINVAL);

	/* unknown space handles */
	FAILS(fd, sp, KVMM_IOC_STATS, (&(struct kvmm_stats){ .space = 0 }),
	      -ENOENT);
	FAILS(fd, sp, KVMM_IOC_COMPACT,
	      (&(struct kvmm_compact){ .space = sp + 1000 }), -ENOENT);
	ck_assert_int_eq(release(fd, sp, slots, 2), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* a handle cannot reach another handle's spaces */
START_TEST(test_two_fds)
{
	int a = kvshim_open(), b = kvshim_open();
	uint32_t sa, sb, slot, tok = 9;
	struct kvmm_seq q = { .tokens = 2 };
	struct snap s0, s1;

	ck_assert_int_ge(a, 0);
	ck_assert_int_ge(b, 0);
	ck_assert_int_ne(a, b);
	sa = create(a);
	sb = create(b);
	ck_assert_uint_ne(sa, sb);
	ck_assert_int_eq(admit(a, sa, &tok, 1, &slot), 0);

	take(a, sa, &s0);
	ck_assert_int_eq(kvshim_check(b, sa, NULL, 0), -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_SPACE_DESTROY,
				      &(struct kvmm_space_destroy){
					      .space = sa }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_SEQ_ADMIT,
				      &(struct kvmm_seq_admit){
					      .space = sa, .count = 1,
					      .seqs = (uintptr_t)&q }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_SEQ_RELEASE,
				      &(struct kvmm_seq_release){
					      .space = sa, .count = 1,
					      .slots = (uintptr_t)&slot }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_SET_BUDGET,
				      &(struct kvmm_set_budget){
					      .space = sa,
					      .budget_bytes = 2 * MB2 }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_COMPACT,
				      &(struct kvmm_compact){ .space = sa }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_STATS,
				      &(struct kvmm_stats){ .space = sa }),
			 -ENOENT);
	ck_assert_int_eq(kvshim_ioctl(b, KVMM_IOC_PAGE_TABLE_INFO,
				      &(struct kvmm_page_table_info){
					      .space = sa }),
			 -ENOENT);
	take(a, sa, &s1);
	ck_assert(!memcmp(&s0, &s1, sizeof(s0)));

	/* closing one handle leaves the other's spaces alone */
	take(b, sb, &s0);
	ck_assert_int_eq(kvshim_close(a), 0);
	ck_assert_int_eq(kvshim_ioctl(a, KVMM_IOC_STATS,
				      &(struct kvmm_stats){ .space = sa }),
			 -EBADF);
	take(b, sb, &s1);
	ck_assert(!memcmp(&s0, &s1, sizeof(s0)));
	/* a reopened handle number does not inherit the old spaces */
	a = kvshim_open();
	ck_assert_int_ge(a, 0);
	ck_assert_int_eq(kvshim_ioctl(a, KVMM_IOC_STATS,
				      &(struct kvmm_stats){ .space = sa }),
			 -ENOENT);
	ck_assert_int_eq(admit(b, sb, &tok, 1, &slot), 0);
	ck_assert_int_eq(kvshim_close(a), 0);
	ck_assert_int_eq(kvshim_close(b), 0);
}
END_TEST

START_TEST(test_many_fds)
{
	int fds[KVSHIM_MAX_FILES];

	for (int i = 0; i < KVSHIM_MAX_FILES; i++) {
		fds[i] = kvshim_open();
		ck_assert_int_ge(fds[i], 0);
	}
	ck_assert_int_eq(kvshim_open(), -EMFILE);
	for (int i = 0; i < KVSHIM_MAX_FILES; i++)
		ck_assert_int_eq(kvshim_close(fds[i]), 0);
}
END_TEST

/*
 * 8 layers x 8 heads, MAX_SEQS full sequences admitted, every other one
 * released: granules half used, which compaction can empty.
 */
static uint32_t fragmented(int fd)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_seq q[MAX_SEQS];
	struct kvmm_seq_admit a = { .count = MAX_SEQS, .seqs = (uintptr_t)q };
	uint32_t odd[MAX_SEQS / 2];

	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	c.budget_bytes = c.va_bytes;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	a.space = c.space;
	for (int i = 0; i < MAX_SEQS; i++)
		q[i] = (struct kvmm_seq){ .tokens = MAX_TOKENS };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a), 0);
	for (int i = 0; i < MAX_SEQS / 2; i++)
		odd[i] = q[2 * i + 1].slot;
	ck_assert_int_eq(release(fd, c.space, odd, MAX_SEQS / 2), 0);
	return c.space;
}

/*
 * An admission whose allocator step fails after the granules it needed
 * were mapped gives them back: the space is as it was, granules included.
 * Also with a runtime fault armed at every call of the way, so that the
 * unmapping itself is refused once.
 */
START_TEST(test_admit_rollback)
{
	struct kvmm_seq q[2] = { { .tokens = MAX_TOKENS },
				 { .tokens = MAX_TOKENS } };
	struct kvmm_seq_admit a = { .count = 2, .seqs = (uintptr_t)q };
	struct kvmm_space_create c = good_create();
	struct snap s0, s1;
	int fd = kvshim_open(), failed_rt = 0;

	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	a.space = c.space;
	take(fd, c.space, &s0);
	ck_assert_uint_eq(s0.st.pages_total, 0);

	ck_assert_int_eq(kvshim_fault_inject(fd, c.space, KVSHIM_FAULT_ADMIT,
					     1, EIO),
			 0);
	FAILS(fd, c.space, KVMM_IOC_SEQ_ADMIT, &a, -EIO);
	take(fd, c.space, &s1);
	ck_assert_uint_eq(s1.st.pages_total, 0);
	ck_assert_uint_eq(s1.st.granules_by_loc[0] + s1.st.granules_by_loc[1],
			  0);

	for (uint64_t nth = 1; nth <= 64; nth++) {
		int ret;

		ck_assert_int_eq(kvshim_fault_inject(fd, c.space,
						     KVSHIM_FAULT_ADMIT, 1,
						     ENOMEM),
				 0);
		ck_assert_int_eq(kvshim_fault_inject(fd, c.space,
						     KVSHIM_FAULT_RUNTIME,
						     nth, EIO),
				 0);
		take(fd, c.space, &s0);
		ret = kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a);
		ck_assert_msg(ret == -ENOMEM || ret == -EIO,
			      "nth %llu: %d", (unsigned long long)nth, ret);
		failed_rt += ret == -EIO;
		take(fd, c.space, &s1);
		ck_assert_msg(!memcmp(&s0, &s1, sizeof(s0)),
			      "nth %llu changed the space",
			      (unsigned long long)nth);
	}
	ck_assert_int_gt(failed_rt, 0);
	ck_assert_int_eq(kvshim_fault_inject(fd, c.space,
					     KVSHIM_FAULT_RUNTIME, 0, 0),
			 0);
	ck_assert_int_eq(kvshim_fault_inject(fd, c.space, KVSHIM_FAULT_ADMIT,
					     0, 0),
			 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * A runtime fault at every backend call an admission makes, one at a
 * time: the call fails and changes nothing, or succeeds as it would have.
 */
START_TEST(test_admit_runtime_faults)
{
	struct kvmm_seq q[4];
	struct kvmm_seq_admit a = { .count = 4, .seqs = (uintptr_t)q };
	uint64_t ref = 0;
	int failed = 0;

	for (uint64_t nth = 0; nth <= 48; nth++) {
		struct kvmm_space_create c = good_create();
		struct snap s0, s1;
		int fd = kvshim_open(), ret;

		c.nr_layers = 8;
		c.nr_kv_heads = 8;
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c),
				 0);
		a.space = c.space;
		for (int i = 0; i < 4; i++)
			q[i] = (struct kvmm_seq){ .tokens = MAX_TOKENS };
		take(fd, c.space, &s0);
		ck_assert_int_eq(kvshim_fault_inject(fd, c.space,
						     KVSHIM_FAULT_RUNTIME,
						     nth, EIO),
				 0);
		ret = kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, &a);
		take(fd, c.space, &s1);
		if (ret) {
			ck_assert_int_eq(ret, -EIO);
			ck_assert_msg(!memcmp(&s0, &s1, sizeof(s0)),
				      "nth %llu changed the space",
				      (unsigned long long)nth);
			failed++;
		} else if (!nth) {
			ref = s1.digest;
		} else {
			ck_assert_uint_eq(s1.digest, ref);
		}
		ck_assert_int_eq(kvshim_fault_inject(fd, c.space,
						     KVSHIM_FAULT_RUNTIME, 0,
						     0),
				 0);
		ck_assert_int_eq(kvshim_close(fd), 0);
	}
	ck_assert_int_gt(failed, 0);
	printf("admit: %d of 48 runtime faults failed the call\n", failed);
}
END_TEST

/*
 * A runtime fault at every backend call of one compaction, one at a time,
 * each on a fresh copy of the same fragmented space: the call fails and
 * the space is exactly as before (tables, reverse map, ring order,
 * granules), or it succeeds reporting what a compaction without faults
 * reports, leaving the same state or (a refused unmapping) the emptied
 * granules retired, which the next compaction gives back: after it, the
 * state is the one two compactions without faults leave.
 */
START_TEST(test_compact_runtime_faults)
{
	struct kvmm_compact ref_cp = { 0 };
	uint64_t ref1 = 0, ref2 = 0;
	int failed = 0, ok = 0, deferred = 0;

	/*
	 * Every call: the page copies (a failure there is undone), then the
	 * unmapping of the emptied granules. Past the last call the fault
	 * never fires: 16 successes in a row end the walk.
	 */
	for (uint64_t nth = 0, run = 0; nth <= 2000 && run < 16; nth++) {
		struct kvmm_compact cp = { 0 };
		struct snap s0, s1;
		int fd = kvshim_open(), ret;
		uint32_t sp = fragmented(fd);

		cp.space = sp;
		take(fd, sp, &s0);
		ck_assert_int_eq(kvshim_fault_inject(fd, sp,
						     KVSHIM_FAULT_RUNTIME,
						     nth, EIO),
				 0);
		ret = kvshim_ioctl(fd, KVMM_IOC_COMPACT, &cp);
		take(fd, sp, &s1);
		ck_assert_int_eq(kvshim_fault_inject(fd, sp,
						     KVSHIM_FAULT_RUNTIME, 0,
						     0),
				 0);
		if (ret) {
			ck_assert_int_eq(ret, -EIO);
			ck_assert_msg(!memcmp(&s0, &s1, sizeof(s0)),
				      "nth %llu: a failed COMPACT changed "
				      "the space",
				      (unsigned long long)nth);
			failed++;
		} else if (!nth) {
			ref1 = s1.digest;
			ref_cp = cp;
			ck_assert_uint_gt(cp.granules_released, 0);
			ck_assert_uint_gt(cp.pages_moved, 0);
		} else {
			ck_assert_uint_eq(cp.pages_moved, ref_cp.pages_moved);
			ck_assert_uint_eq(cp.granules_released,
					  ref_cp.granules_released);
			deferred += s1.digest != ref1;
			ok++;
		}
		run = ret ? 0 : run + 1;
		if (!ret) {
			/* the next increment: retired granules go first */
			memset(&cp, 0, sizeof(cp));
			cp.space = sp;
			ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_COMPACT,
						      &cp),
					 0);
			take(fd, sp, &s1);
			if (!nth)
				ref2 = s1.digest;
			ck_assert_msg(s1.digest == ref2,
				      "nth %llu: two compactions ended "
				      "elsewhere",
				      (unsigned long long)nth);
		}
		ck_assert_int_eq(kvshim_close(fd), 0);
	}
	printf("compact: %d runtime faults failed the call, %d succeeded "
	       "(%d with unmapping deferred; %llu pages moved, %llu "
	       "granules released)\n",
	       failed, ok, deferred, (unsigned long long)ref_cp.pages_moved,
	       (unsigned long long)ref_cp.granules_released);
	ck_assert_int_gt(failed, 0);
	ck_assert_int_gt(deferred, 0);
}
END_TEST

/*
 * Granules left retired by a refused unmapping are given back first by the
 * next COMPACT; if its own increment then fails, that increment is undone
 * and the call succeeds having moved nothing (reason BUDGET). Increments
 * of 64 pages, so that the second one has pages to move.
 */
START_TEST(test_compact_deferred_then_fault)
{
	struct kvmm_compact ref = { 0 };
	uint64_t budget;
	int undone = 0, failed = 0;

	{
		struct snap s0;
		int fd = kvshim_open();
		uint32_t sp = fragmented(fd);

		take(fd, sp, &s0);
		budget = 64ULL * s0.st.page_size;
		ref = (struct kvmm_compact){ .space = sp,
					     .byte_budget = budget };
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_COMPACT, &ref), 0);
		ck_assert_uint_eq(ref.reason, KVMM_COMPACT_BUDGET);
		ck_assert_uint_gt(ref.granules_released, 0);
		ck_assert_int_eq(kvshim_close(fd), 0);
	}
	for (uint64_t nth = 1; nth <= 64; nth++) {
		struct kvmm_compact cp = { .byte_budget = budget };
		struct snap s0, s1;
		int fd = kvshim_open(), ret;
		uint32_t sp = fragmented(fd);

		/* the first increment: its first unmapping refused */
		cp.space = sp;
		ck_assert_int_eq(kvshim_fault_inject(fd, sp,
						     KVSHIM_FAULT_RUNTIME,
						     2 * ref.pages_moved + 1,
						     EIO),
				 0);
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_COMPACT, &cp), 0);
		ck_assert_uint_eq(cp.granules_released, ref.granules_released);
		take(fd, sp, &s0);
		ck_assert_uint_gt(s0.st.granules_by_loc[0],
				  s0.st.pages_total / s0.pti.pages_per_granule);

		/* the second: a fault at its nth call */
		memset(&cp, 0, sizeof(cp));
		cp.space = sp;
		cp.byte_budget = budget;
		ck_assert_int_eq(kvshim_fault_inject(fd, sp,
						     KVSHIM_FAULT_RUNTIME, nth,
						     EIO),
				 0);
		ret = kvshim_ioctl(fd, KVMM_IOC_COMPACT, &cp);
		take(fd, sp, &s1);
		if (ret) {
			ck_assert_int_eq(ret, -EIO);
			ck_assert(!memcmp(&s0, &s1, sizeof(s0)));
			failed++;
		} else if (!cp.pages_moved && !cp.granules_released) {
			/* the retired granules are gone, nothing else */
			ck_assert_uint_eq(cp.reason, KVMM_COMPACT_BUDGET);
			ck_assert_uint_eq(s1.st.granules_by_loc[0],
					  s1.st.pages_total /
						  s1.pti.pages_per_granule);
			ck_assert_uint_eq(s1.st.pages_total,
					  s0.st.pages_total);
			undone++;
		}
		ck_assert_int_eq(kvshim_fault_inject(fd, sp,
						     KVSHIM_FAULT_RUNTIME, 0,
						     0),
				 0);
		ck_assert_int_eq(kvshim_close(fd), 0);
	}
	printf("compact after a deferred unmapping: %d faults failed the "
	       "call, %d undid the increment\n", failed, undone);
	ck_assert_int_gt(undone, 0);
}
END_TEST

/* a misaligned argument is read once, and written only on success */
START_TEST(test_unaligned_arg)
{
	_Alignas(16) unsigned char buf[sizeof(struct kvmm_stats) + 8];
	struct kvmm_stats st = { 0 }, out;
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	st.space = sp;
	memcpy(buf + 3, &st, sizeof(st));
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, buf + 3), 0);
	memcpy(&out, buf + 3, sizeof(out));
	ck_assert_uint_gt(out.page_size, 0);
	/* a failure leaves the caller's structure alone */
	st.flags = 1;
	memcpy(buf + 3, &st, sizeof(st));
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, buf + 3), -EINVAL);
	ck_assert(!memcmp(buf + 3, &st, sizeof(st)));
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* the driver's bounds on what SPACE_CREATE may make it allocate */
START_TEST(test_create_bounds)
{
	struct kvmm_space_create c = good_create();
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	c.max_tokens = KVSHIM_MAX_TOKENS + 1;
	FAILS(fd, sp, KVMM_IOC_SPACE_CREATE, &c, -EINVAL);
	c = good_create();
	c.va_bytes = KVSHIM_MAX_VA_BYTES + MB2;
	FAILS(fd, sp, KVMM_IOC_SPACE_CREATE, &c, -EINVAL);
	c = good_create();
	/* the bounds themselves are allowed */
	c.max_tokens = KVSHIM_MAX_TOKENS;
	c.va_bytes = KVSHIM_MAX_VA_BYTES;
	c.max_seqs = 1;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* ---- the data path: SPACE_MAP, STEP_SUBMIT, FENCE, SEQ_STATS ---- */

/* one submission of up to 4 ops of up to MAX_SEQS + 1 slots each */
struct step {
	struct kvmm_step_slot s[4][MAX_SEQS + 1];
	struct kvmm_step_op o[4];
	struct kvmm_step_submit sub;
};

static struct step *step_new(uint32_t space)
{
	struct step *st = calloc(1, sizeof(*st));

	st->sub.space = space;
	st->sub.ops = (uintptr_t)st->o;
	return st;
}

/* append op @op over @n slots to @st */
static struct kvmm_step_op *step_op(struct step *st, uint32_t op,
				    const uint32_t *slots, uint32_t n)
{
	uint32_t i = st->sub.nr_ops++;

	st->o[i].op = op;
	st->o[i].count = n;
	st->o[i].slots = (uintptr_t)st->s[i];
	for (uint32_t k = 0; k < n; k++)
		st->s[i][k].slot = slots[k];
	return &st->o[i];
}

static struct kvmm_space_map map(int fd, uint32_t sp)
{
	struct kvmm_space_map m = { .space = sp };

	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_MAP, &m), 0);
	return m;
}

/* the prefill kernels' counts: @hi high tokens per list of @slot, no low */
static void put_counts(const struct kvmm_space_map *m, uint32_t slot,
		       uint32_t hi, uint32_t lo)
{
	uint32_t *nt = (uint32_t *)(uintptr_t)m->ntokens;

	for (uint32_t j = 0; j < m->lists_per_slot; j++) {
		nt[2 * (slot * m->lists_per_slot + j)] = hi;
		nt[2 * (slot * m->lists_per_slot + j) + 1] = lo;
	}
}

START_TEST(test_space_map)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_page_table_info p = { 0 };
	struct kvmm_space_map m = { 0 };
	int fd = kvshim_open();
	uint32_t sp = create(fd);

	m = map(fd, sp);
	p.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_PAGE_TABLE_INFO, &p), 0);
	ck_assert_uint_eq(m.pool_base, p.pool_base);
	ck_assert_uint_eq(m.tables, p.tables);
	ck_assert_uint_eq(m.ntokens, p.counts);
	ck_assert_uint_ne(m.npages, 0);
	ck_assert_uint_eq(m.page_size, c.page_size ? c.page_size : p.page_size);
	ck_assert_uint_eq(m.table_width, p.table_width);
	ck_assert_uint_eq(m.pages_per_granule, p.pages_per_granule);
	ck_assert_uint_eq(m.lists_per_slot, LAYERS * HEADS);
	ck_assert_uint_eq(m.nr_layers, LAYERS);
	ck_assert_uint_eq(m.nr_kv_heads, HEADS);
	ck_assert_uint_eq(m.head_dim, 128);
	ck_assert_uint_eq(m.nr_tiers, 2);
	ck_assert_uint_eq(m.max_seqs, MAX_SEQS);
	ck_assert_uint_eq(m.max_tokens, MAX_TOKENS);
	for (int t = 0; t < 2; t++) {
		ck_assert_uint_eq(m.tiers[t].kbits, c.tiers[t].kbits);
		ck_assert_uint_eq(m.tiers[t].vbits, c.tiers[t].vbits);
		ck_assert_uint_eq(m.tiers[t].tokens, p.tokens_per_page[t]);
		ck_assert_uint_eq(m.tiers[t].pos_off % 32, 0);
		ck_assert_uint_lt(m.tiers[t].pos_off + 4 * m.tiers[t].tokens,
				  m.page_size + 1);
	}
	/* mapping twice maps the same */
	{
		struct kvmm_space_map m2 = map(fd, sp);

		ck_assert(!memcmp(&m, &m2, sizeof(m)));
	}
	m.stream = 1;
	FAILS(fd, sp, KVMM_IOC_SPACE_MAP, &m, -EINVAL);
	m.stream = 0;
	m.flags = 1;
	FAILS(fd, sp, KVMM_IOC_SPACE_MAP, &m, -EINVAL);
	m.flags = 0;
	m.reserved[3] = 1;
	FAILS(fd, sp, KVMM_IOC_SPACE_MAP, &m, -EINVAL);
	m.reserved[3] = 0;
	m.space = sp + 1000;
	FAILS(fd, sp, KVMM_IOC_SPACE_MAP, &m, -ENOENT);
	/* a one-tier space reports its tier twice */
	c.nr_tiers = 1;
	c.tiers[1] = (struct kvmm_tier){ 0 };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	m = map(fd, c.space);
	ck_assert_uint_eq(m.nr_tiers, 1);
	ck_assert(!memcmp(&m.tiers[0], &m.tiers[1], sizeof(m.tiers[0])));
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* every field rule of STEP_SUBMIT: refused, nothing changed */
START_TEST(test_step_refusals)
{
	int fd = kvshim_open();
	uint32_t sp = create(fd);
	struct kvmm_space_map m = map(fd, sp);
	uint32_t tok[3] = { 20, 30, 40 }, sl[3], pre;
	struct step *st;

	ck_assert_int_eq(admit(fd, sp, tok, 3, sl), 0);
	for (int i = 0; i < 3; i++)
		put_counts(&m, sl[i], tok[i], 0);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, sl, 2);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub), 0);
	ck_assert_uint_eq(st->sub.fence, 1);
	free(st);
	pre = sl[2];	/* sl[0], sl[1] decode; sl[2] in prefill */

#define STEP_FAILS(st, err)                                                    \
	do {                                                                   \
		FAILS(fd, sp, KVMM_IOC_STEP_SUBMIT, &(st)->sub, (err));        \
		free(st);                                                      \
	} while (0)

	/* the call's own fields */
	st = step_new(sp);
	st->sub.flags = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	st->sub.pad = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	st->sub.reserved[1] = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	st->sub.nr_ops = KVMM_STEP_MAX_OPS + 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	st->sub.nr_ops = 1;
	st->sub.ops = 0;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp + 1000);
	STEP_FAILS(st, -ENOENT);

	/* an op's fields */
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->op = 0;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->op = KVMM_OP_MAX + 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->flags = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->reserved = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->sinks = 4;	/* EVICT only */
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->count = MAX_SEQS + 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2)->slots = 0;
	STEP_FAILS(st, -EINVAL);

	/* a slot's fields, range, repeats and state */
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2);
	st->s[0][1].pad = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2);
	st->s[0][1].arg0 = 1;	/* EVICT only */
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_SHRINK, sl, 2);
	st->s[0][0].arg1 = 1;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_EVICT, sl, 2);
	st->s[0][0].arg1 = 0x80000000u;	/* not a position */
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2);
	st->s[0][1].slot = MAX_SEQS;
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 2);
	st->s[0][1].slot = sl[0];
	STEP_FAILS(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, &pre, 1);
	STEP_FAILS(st, -EBUSY);
	st = step_new(sp);
	step_op(st, KVMM_OP_EVICT, &pre, 1);
	STEP_FAILS(st, -EBUSY);
	st = step_new(sp);
	step_op(st, KVMM_OP_SHRINK, &pre, 1);
	STEP_FAILS(st, -EBUSY);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, sl, 1);
	STEP_FAILS(st, -EBUSY);
	ck_assert_int_eq(release(fd, sp, &sl[1], 1), 0);
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, &sl[1], 1);
	STEP_FAILS(st, -ENOENT);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, &sl[1], 1);
	STEP_FAILS(st, -ENOENT);

	/* the state the ops before leave: valid ops first, refused whole */
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 1);
	step_op(st, KVMM_OP_APPEND, &pre, 1);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	STEP_FAILS(st, -EBUSY);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	STEP_FAILS(st, -EBUSY);
	/* the same slot in two ops is fine; in one op twice is not */
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, sl, 1);
	step_op(st, KVMM_OP_SHRINK, sl, 1);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	step_op(st, KVMM_OP_APPEND, &pre, 1);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub), 0);
	ck_assert_uint_eq(st->sub.fence, 2);
	free(st);
	ck_assert_int_eq(kvshim_check(fd, sp, NULL, 0), 0);

	/*
	 * Counts the kernels wrote that the pages cannot hold (the checker
	 * rejects such a state, so only the digest is compared).
	 */
#define STEP_FAILS_RAW(st, err)                                                \
	do {                                                                   \
		uint64_t __d0, __d1;                                           \
		ck_assert_int_eq(kvshim_digest(fd, sp, &__d0), 0);             \
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT,        \
					      &(st)->sub), (err));             \
		ck_assert_int_eq(kvshim_digest(fd, sp, &__d1), 0);             \
		ck_assert_uint_eq(__d0, __d1);                                 \
		free(st);                                                      \
	} while (0)
	ck_assert_int_eq(admit(fd, sp, tok, 1, &pre), 0);
	put_counts(&m, pre, MAX_TOKENS, 0);	/* over its 20-token pages */
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	STEP_FAILS_RAW(st, -EINVAL);
	put_counts(&m, pre, 15, 5);		/* the sum over max_tokens */
	((uint32_t *)(uintptr_t)m.ntokens)[2 * pre * m.lists_per_slot + 1] =
		MAX_TOKENS;
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	STEP_FAILS_RAW(st, -EINVAL);
	put_counts(&m, pre, 0, 0);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, &pre, 1);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub), 0);
	free(st);
	put_counts(&m, pre, 100000, 0);	/* a decode list overrun */
	st = step_new(sp);
	step_op(st, KVMM_OP_APPEND, &pre, 1);
	STEP_FAILS_RAW(st, -EINVAL);
	st = step_new(sp);
	step_op(st, KVMM_OP_SHRINK, &pre, 1);
	STEP_FAILS_RAW(st, -EINVAL);
	put_counts(&m, pre, 0, 0);
	ck_assert_int_eq(kvshim_check(fd, sp, NULL, 0), 0);
#undef STEP_FAILS_RAW
#undef STEP_FAILS
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * APPEND grows the pool within its budget when the free pages do not
 * cover it, and is refused whole (-ENOSPC, nothing changed) when the
 * budget cannot: decode until then, with TRIM of a new sequence in the
 * same call so that a refused call is seen to undo nothing it never did.
 */
START_TEST(test_step_grow_and_nospc)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_stats s0 = { 0 }, s1 = { 0 };
	uint32_t tok = 16, sl[MAX_SEQS], n = 0, refused = 0;
	uint32_t grown = 0;
	struct kvmm_space_map m;
	struct step *st;
	int fd = kvshim_open(), ret;

	/* 8 x 8 lists; admission fills one granule, decode needs more */
	c.nr_layers = 8;
	c.nr_kv_heads = 8;
	c.budget_bytes = MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	m = map(fd, c.space);
	s0.space = s1.space = c.space;
	while (n < MAX_SEQS && !admit(fd, c.space, &tok, 1, &sl[n])) {
		put_counts(&m, sl[n], tok, 0);
		st = step_new(c.space);
		step_op(st, KVMM_OP_TRIM, &sl[n], 1);
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT,
					      &st->sub), 0);
		free(st);
		n++;
	}
	ck_assert_uint_gt(n, 1);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET,
				      &(struct kvmm_set_budget){
					      .space = c.space,
					      .budget_bytes = 2 * MB2 }),
			 0);
	for (int step = 0; step < 4 * MAX_TOKENS && !refused; step++) {
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s0), 0);
		st = step_new(c.space);
		step_op(st, KVMM_OP_APPEND, sl, n);
		{
			struct snap a, b;

			take(fd, c.space, &a);
			ret = kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub);
			take(fd, c.space, &b);
			if (ret) {
				ck_assert_int_eq(ret, -ENOSPC);
				ck_assert(!memcmp(&a, &b, sizeof(a)));
				refused = 1;
			}
		}
		free(st);
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s1), 0);
		grown += s1.pages_total > s0.pages_total;
		if (refused)
			break;
		/* one token per list; stop a list at max_tokens */
		for (uint32_t i = 0; i < n; i++) {
			uint32_t *nt = (uint32_t *)(uintptr_t)m.ntokens;
			uint32_t l0 = sl[i] * m.lists_per_slot;

			if (nt[2 * l0] + 1 >= MAX_TOKENS)
				continue;
			for (uint32_t j = 0; j < m.lists_per_slot; j++)
				nt[2 * (l0 + j)]++;
		}
	}
	ck_assert_msg(grown > 0, "APPEND never grew the pool");
	ck_assert_msg(refused, "APPEND was never refused");
	ck_assert_uint_eq(s1.pages_total, 2 * m.pages_per_granule);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_fence)
{
	struct kvmm_fence f = { 0 };
	struct kvmm_stats s = { 0 };
	int fd = kvshim_open();
	uint32_t sp = create(fd), tok = 50, slot;
	struct step *st;

	f.space = s.space = sp;
	/* no submission yet: fence 0 is the latest, and signalled */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_FENCE, &f), 0);
	ck_assert_uint_eq(f.signalled, 1);
	ck_assert_uint_eq(f.completed, 0);
	ck_assert_int_eq(admit(fd, sp, &tok, 1, &slot), 0);
	for (uint64_t i = 1; i <= 3; i++) {
		st = step_new(sp);
		ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT,
					      &st->sub), 0);
		ck_assert_uint_eq(st->sub.fence, i);	/* monotonic */
		free(st);
	}
	f.seqno = 2;
	f.flags = KVMM_FENCE_WAIT;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_FENCE, &f), 0);
	ck_assert_uint_eq(f.signalled, 1);
	ck_assert_uint_eq(f.completed, 3);
	ck_assert_int_eq(f.error, 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s), 0);
	ck_assert_uint_eq(f.pages_free, s.pages_free);
	ck_assert_uint_eq(f.pages_used, s.pages_used[0] + s.pages_used[1]);
	f.seqno = 4;
	FAILS(fd, sp, KVMM_IOC_FENCE, &f, -EINVAL);
	f.seqno = 0;
	f.flags = 2;
	FAILS(fd, sp, KVMM_IOC_FENCE, &f, -EINVAL);
	f.flags = 0;
	f.reserved[0] = 1;
	FAILS(fd, sp, KVMM_IOC_FENCE, &f, -EINVAL);
	f.reserved[0] = 0;
	f.space = sp + 1000;
	FAILS(fd, sp, KVMM_IOC_FENCE, &f, -ENOENT);
	/* fences are per space */
	f.space = create(fd);
	f.seqno = 1;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_FENCE, &f), -EINVAL);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_seq_stats)
{
	struct kvmm_seq_info info[MAX_SEQS + 1];
	struct kvmm_seq_stats q = { 0 };
	struct kvmm_stats s = { 0 };
	int fd = kvshim_open();
	uint32_t sp = create(fd), tok[2] = { 33, 120 }, sl[2];
	uint64_t pages = 0;

	ck_assert_int_eq(admit(fd, sp, tok, 2, sl), 0);
	q.space = s.space = sp;
	q.seqs = (uintptr_t)info;
	q.count = MAX_SEQS;
	for (uint32_t i = 0; i < MAX_SEQS; i++)
		info[i] = (struct kvmm_seq_info){ .slot = i };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	for (uint32_t i = 0; i < MAX_SEQS; i++) {
		int live = i == sl[0] || i == sl[1];

		ck_assert_uint_eq(info[i].slot, i);
		ck_assert_uint_eq(info[i].state,
				  live ? KVMM_SEQ_PREFILL : KVMM_SEQ_FREE);
		ck_assert_uint_eq(!!info[i].pages[0], live);
		ck_assert_uint_eq(info[i].pages[1], 0);
		pages += info[i].pages[0];
	}
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &s), 0);
	ck_assert_uint_eq(pages, s.pages_used[0]);
	/* repeats are fine: it only reads */
	info[1].slot = info[0].slot;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	ck_assert(!memcmp(&info[0].state, &info[1].state,
			  sizeof(info[0]) - sizeof(info[0].slot)));
	q.count = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	q.count = MAX_SEQS + 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	q.count = 2;
	info[1].slot = MAX_SEQS;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	info[1].slot = 1;
	q.seqs = 0;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	q.seqs = (uintptr_t)info;
	q.pad = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	q.pad = 0;
	q.flags = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	q.flags = 0;
	q.reserved[1] = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -EINVAL);
	q.reserved[1] = 0;
	q.space = sp + 1000;
	FAILS(fd, sp, KVMM_IOC_SEQ_STATS, &q, -ENOENT);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* ---- issue 19: memory follows the budget, not the VA ---- */

/* resident bytes of this process */
static uint64_t rss_bytes(void)
{
	unsigned long long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%llu %llu", &size, &res), 2);
	fclose(f);
	return res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/*
 * The resident memory @bytes of arrays may add: the arrays, one granule of
 * allocator rounding and, under AddressSanitizer, its shadow (a byte per
 * eight).
 */
static uint64_t rss_allowance(uint64_t bytes)
{
#if defined(__SANITIZE_ADDRESS__)
	bytes += bytes / 8;
#endif
	return bytes + MB2;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* the issue's SPACE_CREATE: 2 MiB of budget in 1 TiB of VA, 64 layers,
 * 64 heads, 4 sequences of up to 2^20 tokens */
static struct kvmm_space_create issue19_create(void)
{
	struct kvmm_space_create c = good_create();

	c.nr_layers = 64;
	c.nr_kv_heads = 64;
	c.max_seqs = 4;
	c.max_tokens = KVSHIM_MAX_TOKENS;
	c.va_bytes = KVSHIM_MAX_VA_BYTES;
	c.budget_bytes = MB2;
	return c;
}

/*
 * The host bytes of a host space as Documentation/uapi/kvmm.rst states
 * them: 4 L W + 28 L + 16 P + (1 + R) G + 9 S + 1 KiB, for L lists, S
 * sequences, G granules of budget (pages per granule from @m), P = G
 * pages, W = min(ceil(max_tokens / fewest tokens per page) + 3, P + 3)
 * and R the runtime's bytes per granule slot.
 */
static uint64_t doc_host_bytes(const struct kvmm_space_create *c,
			       uint64_t budget,
			       const struct kvmm_space_map *m)
{
	uint64_t l = (uint64_t)c->max_seqs * c->nr_layers * c->nr_kv_heads;
	uint64_t g = budget / MB2, pg = g * m->pages_per_granule;
	uint64_t tpp = m->tiers[0].tokens < m->tiers[1].tokens ?
			       m->tiers[0].tokens : m->tiers[1].tokens;
	uint64_t w = (c->max_tokens + tpp - 1) / tpp + 3;

	if (w > pg + 3)
		w = pg + 3;
	return 4 * l * w + 28 * l + 16 * pg +
	       (1 + kvrt_space_slot_bytes()) * g + 9ULL * c->max_seqs + 1024;
}

/* what is left alike after a failed call on a space too big for take() */
struct bigsnap {
	uint64_t digest;
	struct kvmm_page_table_info pti;
};

static void take_big(int fd, uint32_t sp, struct bigsnap *b)
{
	char why[256] = "";

	memset(b, 0, sizeof(*b));
	ck_assert_int_eq(kvshim_digest(fd, sp, &b->digest), 0);
	b->pti.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_PAGE_TABLE_INFO, &b->pti),
			 0);
	ck_assert_msg(!kvshim_check(fd, sp, why, sizeof(why)), "%s", why);
}

/*
 * The issue's example took 3.4 GB and 10 s on a 2-core machine (16 GB
 * reported in the issue): now little more than the documented formula,
 * which the driver's own estimate (kvshim_space_cost()) matches; the
 * resident memory it adds stays under the formula plus one granule of
 * allocator rounding (rss_allowance()), in well under a second.
 */
START_TEST(test_create_issue19)
{
	struct kvmm_space_create c = issue19_create();
	struct kvmm_space_map m;
	uint64_t host, dev, r0, r1, bound;
	double t0, t1;
	int fd = kvshim_open();

	ck_assert_int_eq(kvshim_space_cost(&c, &host, &dev), 0);
	ck_assert_uint_eq(dev, 0);
	r0 = rss_bytes();
	t0 = now_s();
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	t1 = now_s();
	r1 = rss_bytes();
	m = map(fd, c.space);
	bound = doc_host_bytes(&c, c.budget_bytes, &m);
	printf("issue 19 SPACE_CREATE: %.3f s, resident +%.1f MiB, cost "
	       "%.1f MiB, documented bound %.1f MiB\n", t1 - t0,
	       (r1 - r0) / 1048576.0, host / 1048576.0, bound / 1048576.0);
	ck_assert_uint_le(host, bound);
	ck_assert_uint_ge(host + 1024, bound);
	ck_assert_uint_eq(m.table_width, m.pages_per_granule + 3);
	ck_assert_uint_le(r1 - r0, rss_allowance(bound));
	ck_assert_msg(t1 - t0 < 2.0, "SPACE_CREATE took %.3f s", t1 - t0);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * SPACE_CREATE refuses a space whose arrays would cost more than
 * KVSHIM_MAX_SPACE_BYTES (-E2BIG, nothing made); one sequence fewer is
 * within it. SET_BUDGET that would grow the arrays over it is refused the
 * same way and changes nothing; a smaller raise widens the tables.
 */
START_TEST(test_create_cap)
{
	struct kvmm_space_create c = issue19_create(), d;
	struct kvmm_set_budget b = { 0 };
	struct kvmm_space_map m;
	struct bigsnap x, y;
	uint64_t host, dev, lo = 1, hi = 1U << 16;
	int fd = kvshim_open();

	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	m = map(fd, c.space);
	/* the fewest sequences over the cap */
	while (lo < hi) {
		uint64_t mid = (lo + hi) / 2;

		d = c;
		d.max_seqs = mid;
		ck_assert_int_eq(kvshim_space_cost(&d, &host, &dev), 0);
		if (host > KVSHIM_MAX_SPACE_BYTES)
			hi = mid;
		else
			lo = mid + 1;
	}
	d = c;
	d.max_seqs = lo;
	ck_assert_uint_gt(doc_host_bytes(&d, d.budget_bytes, &m),
			  KVSHIM_MAX_SPACE_BYTES);
	take_big(fd, c.space, &x);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &d), -E2BIG);
	d.max_seqs = lo - 1;
	ck_assert_int_eq(kvshim_space_cost(&d, &host, &dev), 0);
	ck_assert_uint_le(host, KVSHIM_MAX_SPACE_BYTES);
	ck_assert_uint_le(doc_host_bytes(&d, d.budget_bytes, &m) - 1024,
			  KVSHIM_MAX_SPACE_BYTES);
	take_big(fd, c.space, &y);
	ck_assert(!memcmp(&x, &y, sizeof(x)));

	/* SET_BUDGET: 64 granules would be 4 x 4096 rows of 64 pages' ids */
	b.space = c.space;
	b.budget_bytes = 64 * MB2;
	ck_assert_uint_gt(doc_host_bytes(&c, b.budget_bytes, &m),
			  KVSHIM_MAX_SPACE_BYTES);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), -E2BIG);
	take_big(fd, c.space, &y);
	ck_assert(!memcmp(&x, &y, sizeof(x)));
	ck_assert_uint_eq(map(fd, c.space).table_width, m.table_width);
	b.budget_bytes = 2 * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), 0);
	ck_assert_uint_eq(map(fd, c.space).table_width,
			  2 * m.pages_per_granule + 3);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * All spaces together: with the bound lowered to what two spaces hold
 * beside those already open, a third SPACE_CREATE is refused with -ENOMEM
 * and changes nothing; destroying one lets it in; a SET_BUDGET that would
 * widen past the bound is refused too, and the count follows every step
 * (its full size, KVSHIM_MAX_TOTAL_BYTES, is 4 x the per-space bound).
 */
START_TEST(test_total_cap)
{
	struct kvmm_space_create c = good_create(), c2, c3;
	struct kvmm_space_destroy dd = { 0 };
	struct kvmm_set_budget b = { 0 };
	uint64_t host, dev, h0, d0, h, d;
	uint64_t dg0, dg1;
	int fd = kvshim_open();

	ck_assert_uint_eq(KVSHIM_MAX_TOTAL_BYTES, 4 * KVSHIM_MAX_SPACE_BYTES);
	c.va_bytes = 64 * MB2;
	c.budget_bytes = MB2;
	ck_assert_int_eq(kvshim_space_cost(&c, &host, &dev), 0);
	kvshim_held(&h0, &d0);
	ck_assert_int_eq(kvshim_test_total_cap(h0 + 2 * host + host / 2), 0);
	c2 = c;
	c3 = c;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c2), 0);
	kvshim_held(&h, &d);
	ck_assert_uint_eq(h, h0 + 2 * host);
	ck_assert_uint_eq(d, d0);
	ck_assert_int_eq(kvshim_digest(fd, c.space, &dg0), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c3),
			 -ENOMEM);
	kvshim_held(&h, &d);
	ck_assert_uint_eq(h, h0 + 2 * host);
	/* a widening SET_BUDGET needs more than the half space left */
	b.space = c.space;
	b.budget_bytes = 64 * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), -ENOMEM);
	ck_assert_int_eq(kvshim_digest(fd, c.space, &dg1), 0);
	ck_assert_uint_eq(dg0, dg1);
	kvshim_held(&h, &d);
	ck_assert_uint_eq(h, h0 + 2 * host);
	/* one gone, the third comes in */
	dd.space = c2.space;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_DESTROY, &dd), 0);
	kvshim_held(&h, &d);
	ck_assert_uint_eq(h, h0 + host);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c3), 0);
	/* with the bound back, the widening goes through and is counted */
	ck_assert_int_eq(kvshim_test_total_cap(0), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), 0);
	kvshim_held(&h, &d);
	ck_assert_uint_gt(h, h0 + 2 * host);
	ck_assert_int_eq(kvshim_test_total_cap(KVSHIM_MAX_TOTAL_BYTES + 1),
			 -EINVAL);
	ck_assert_int_eq(kvshim_close(fd), 0);
	kvshim_held(&h, &d);
	ck_assert_uint_eq(h, h0);
	ck_assert_uint_eq(d, d0);
}
END_TEST

/*
 * SET_BUDGET growth: a space of 1 TiB of VA and one granule of budget
 * admits what one granule holds; a budget of eight widens the tables,
 * keeps what the admitted sequences hold, admits a prompt no row of the
 * old width could hold and then maps pages up to the new budget's last.
 */
START_TEST(test_set_budget_grow)
{
	struct kvmm_space_create c = good_create();
	struct kvmm_set_budget b = { 0 };
	struct kvmm_seq_info before[2], after[2];
	struct kvmm_seq_stats q = { 0 };
	struct kvmm_stats st = { 0 };
	struct kvmm_space_map m;
	uint32_t tok[2] = { 100, 70 }, sl[2], big, sb, n = 0, fill = 2000;
	int fd = kvshim_open(), ret;

	c.max_tokens = KVSHIM_MAX_TOKENS;
	c.va_bytes = KVSHIM_MAX_VA_BYTES;
	c.budget_bytes = MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	m = map(fd, c.space);
	ck_assert_uint_eq(m.table_width, m.pages_per_granule + 3);
	ck_assert_int_eq(admit(fd, c.space, tok, 2, sl), 0);
	big = m.table_width * m.tiers[0].tokens;
	FAILS(fd, c.space, KVMM_IOC_SEQ_ADMIT,
	      (&(struct kvmm_seq_admit){
		      .space = c.space, .count = 1,
		      .seqs = (uintptr_t)&(struct kvmm_seq){ .tokens = big } }),
	      -ENOSPC);
	q.space = c.space;
	q.count = 2;
	q.seqs = (uintptr_t)before;
	before[0].slot = sl[0];
	before[1].slot = sl[1];
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);

	b.space = c.space;
	b.budget_bytes = 8 * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, &b), 0);
	m = map(fd, c.space);
	ck_assert_uint_eq(m.table_width, 8 * m.pages_per_granule + 3);
	q.seqs = (uintptr_t)after;
	after[0].slot = sl[0];
	after[1].slot = sl[1];
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	ck_assert(!memcmp(before, after, sizeof(before)));
	ck_assert_int_eq(admit(fd, c.space, &big, 1, &sb), 0);
	ck_assert_int_eq(kvshim_check(fd, c.space, NULL, 0), 0);
	/* then up to the last page of the budget, before the slots run out:
	 * each prompt takes at most 2000 / 32 + 2 pages per list */
	while ((ret = admit(fd, c.space, &fill, 1, &sb)) == 0)
		n++;
	ck_assert_int_eq(ret, -ENOSPC);
	st.space = c.space;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &st), 0);
	ck_assert_uint_eq(st.pages_total, 8 * m.pages_per_granule);
	ck_assert_uint_lt(st.pages_free,
			  LAYERS * HEADS * (fill / m.tiers[0].tokens + 2));
	ck_assert_uint_gt(n, 0);
	/* a lower budget than what is mapped, and one over the VA */
	b.budget_bytes = 4 * MB2;
	FAILS(fd, c.space, KVMM_IOC_SET_BUDGET, &b, -EBUSY);
	b.budget_bytes = KVSHIM_MAX_VA_BYTES + MB2;
	FAILS(fd, c.space, KVMM_IOC_SET_BUDGET, &b, -EINVAL);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* ---- memory tiers: TIER_BUDGET and MIGRATE ---- */

/*
 * An HBM cap of one granule sends the rest of the space to host granules;
 * MIGRATE moves pages named by the tables between the tiers, keeps their
 * contents, and refuses bad lists without changing anything.
 */
START_TEST(test_tiers_uapi)
{
	int fd = kvshim_open();
	struct kvmm_space_create c = good_create();
	uint32_t sp, toks[2] = { 4096, 4096 }, sl[2];
	struct kvmm_tier_budget tb = { 0 };
	struct kvmm_space_map m = { 0 };
	struct kvmm_migrate mg = { 0 };
	uint32_t *tables, host_p = UINT32_MAX, hbm_p = UINT32_MAX, bad[2];
	uint32_t lists, victim_entry = 0, hot_entry = 0;
	unsigned char *pg;
	struct kvmm_version v = { 0 };

	c.max_tokens = 4096;	/* two sequences pass one granule */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	sp = c.space;
	tb.space = m.space = mg.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_VERSION, &v), 0);
	ck_assert(v.features & KVMM_FEAT_PLACEMENT);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.hbm_bytes, KVMM_TIER_UNCAPPED);
	ck_assert_uint_eq(tb.granules[KVMM_MEM_HBM], 0);
	/* refusals: unknown flag, reserved, unaligned, over memory */
	tb.flags = 4;
	FAILS(fd, sp, KVMM_IOC_TIER_BUDGET, &tb, -EINVAL);
	tb.flags = KVMM_TIER_SET_HBM;
	tb.reserved[1] = 1;
	FAILS(fd, sp, KVMM_IOC_TIER_BUDGET, &tb, -EINVAL);
	tb.reserved[1] = 0;
	tb.hbm_bytes = MB2 + 1;
	FAILS(fd, sp, KVMM_IOC_TIER_BUDGET, &tb, -EINVAL);
	/* the second cap refused: the first is not set either */
	tb.flags = KVMM_TIER_SET_HBM | KVMM_TIER_SET_HOST;
	tb.hbm_bytes = MB2;
	tb.host_bytes = 3;
	FAILS(fd, sp, KVMM_IOC_TIER_BUDGET, &tb, -EINVAL);
	tb.host_bytes = KVMM_TIER_UNCAPPED;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.hbm_bytes, MB2);

	/* two sequences: more than one granule, so the host tier is used */
	ck_assert_int_eq(admit(fd, sp, toks, 2, sl), 0);
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.granules[KVMM_MEM_HBM], 1);
	ck_assert_uint_ge(tb.granules[KVMM_MEM_HOST], 1);
	ck_assert_uint_gt(tb.pages_used[KVMM_MEM_HOST], 0);
	/* a cap below what is mapped */
	tb.flags = KVMM_TIER_SET_HOST;
	tb.host_bytes = 0;
	FAILS(fd, sp, KVMM_IOC_TIER_BUDGET, &tb, -EBUSY);

	/* find a host page and an HBM page through the tables */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_MAP, &m), 0);
	tables = (uint32_t *)(uintptr_t)m.tables;
	lists = m.max_seqs * m.lists_per_slot;
	for (uint32_t e = 0; e < lists * m.table_width; e++) {
		uint32_t p = tables[e];
		uint64_t at;

		if (p == UINT32_MAX)
			continue;
		at = m.pool_base + (uint64_t)(p / m.pages_per_granule) * MB2;
		/* granule slot 0 is the only HBM one (lowest slot first) */
		if (at == m.pool_base && hbm_p == UINT32_MAX) {
			hbm_p = p;
			victim_entry = e;
		} else if (at != m.pool_base && host_p == UINT32_MAX) {
			host_p = p;
			hot_entry = e;
		}
	}
	ck_assert_uint_ne(host_p, UINT32_MAX);
	ck_assert_uint_ne(hbm_p, UINT32_MAX);
	pg = (unsigned char *)(uintptr_t)(m.pool_base +
					  (uint64_t)(host_p / m.pages_per_granule) *
						  MB2 +
					  (uint64_t)(host_p % m.pages_per_granule) *
						  m.page_size);
	memset(pg, 0x5a, m.page_size);

	/* refusals change nothing: wrong tier, twice, not owned, flags */
	mg.promote = (uintptr_t)&hbm_p;
	mg.nr_promote = 1;
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	bad[0] = bad[1] = host_p;
	mg.promote = (uintptr_t)bad;
	mg.nr_promote = 2;
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	mg.nr_promote = 1;
	mg.promote = 0;
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	mg.promote = (uintptr_t)&host_p;
	mg.flags = 4;	/* no such flag */
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	mg.flags = 0;

	/* promote the host page, demoting the HBM one if HBM is full */
	mg.demote = (uintptr_t)&hbm_p;
	mg.nr_demote = 1;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_DONE);
	ck_assert_uint_eq(mg.pages_promoted, 1);
	ck_assert_uint_le(mg.pages_demoted, 1);
	/* the entry now names an HBM page holding the same bytes */
	{
		uint32_t p = tables[hot_entry];
		unsigned char *q = (unsigned char *)(uintptr_t)(
			m.pool_base + (uint64_t)(p / m.pages_per_granule) * MB2 +
			(uint64_t)(p % m.pages_per_granule) * m.page_size);

		ck_assert_uint_lt(p, m.pages_per_granule);
		for (uint32_t i = 0; i < m.page_size; i++)
			ck_assert_uint_eq(q[i], 0x5a);
		if (mg.pages_demoted)
			ck_assert_uint_ge(tables[victim_entry],
					  m.pages_per_granule);
	}
	{
		char why[256];

		ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);
	}
	ck_assert_int_eq(release(fd, sp, sl, 2), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * MIGRATE's KVMM_MIGRATE_GROW_HOST: demoting every HBM page needs more free
 * host pages than the admission left; without the flag (or with a host cap
 * that leaves no room) the call stops at NO_ROOM and maps nothing; with
 * the flag and room it maps host granules and demotes them all; a refused
 * call with the flag gives its granules back.
 */
/*
 * MIGRATE with KVMM_MIGRATE_KEEP_COPIES (version 6): promoted full pages
 * keep their host pages as clean copies (TIER_BUDGET pages_copies); moving
 * them back copies nothing; an unknown flag is refused with nothing
 * changed; a release drops the copies; the invariants hold throughout.
 */
START_TEST(test_migrate_keep_copies)
{
	int fd = kvshim_open();
	struct kvmm_space_create c = good_create();
	uint32_t sp, toks[2] = { 4096, 4096 }, sl[2], np = 0, nb = 0;
	struct kvmm_tier_budget tb = { 0 };
	struct kvmm_space_map m;
	struct kvmm_migrate mg = { 0 };
	uint32_t *tables, *host, *hbm, *nt, lists, w, tpp, ent[8];
	struct step *st;
	char why[256];

	c.max_tokens = 4096;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	sp = c.space;
	tb.space = mg.space = sp;
	tb.flags = KVMM_TIER_SET_HBM | KVMM_TIER_SET_HOST;
	tb.hbm_bytes = MB2;
	tb.host_bytes = KVMM_TIER_UNCAPPED;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_int_eq(admit(fd, sp, toks, 2, sl), 0);
	m = map(fd, sp);
	for (int i = 0; i < 2; i++)
		put_counts(&m, sl[i], toks[i], 0);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, sl, 2);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub), 0);
	free(st);
	/* full high-tier host pages to promote, HBM pages as victims */
	tables = (uint32_t *)(uintptr_t)m.tables;
	nt = (uint32_t *)(uintptr_t)m.ntokens;
	lists = m.max_seqs * m.lists_per_slot;
	w = m.table_width;
	tpp = m.tiers[0].tokens;
	host = malloc((size_t)lists * w * sizeof(*host));
	hbm = malloc((size_t)lists * w * sizeof(*hbm));
	ck_assert_ptr_nonnull(host);
	ck_assert_ptr_nonnull(hbm);
	for (uint32_t l = 0; l < lists; l++)
		for (uint32_t e = 0; (e + 1) * tpp <= nt[2 * l]; e++) {
			uint32_t p = tables[(size_t)l * w + e];

			if (p < m.pages_per_granule) {
				hbm[nb++] = p;
			} else if (np < 8) {
				ent[np] = l * w + e;
				host[np++] = p;
			}
		}
	ck_assert_uint_eq(np, 8);
	ck_assert_uint_ge(nb, 8);
	mg.promote = (uintptr_t)host;
	mg.nr_promote = np;
	mg.demote = (uintptr_t)hbm;
	mg.nr_demote = 8;
	mg.flags = KVMM_MIGRATE_GROW_HOST | KVMM_MIGRATE_KEEP_COPIES | 4;
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	mg.flags = KVMM_MIGRATE_GROW_HOST | KVMM_MIGRATE_KEEP_COPIES;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_DONE);
	ck_assert_uint_eq(mg.pages_promoted, 8);
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.pages_copies, 8);
	ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);
	/* the promoted pages back to the host: to their copies, no bytes */
	for (uint32_t k = 0; k < 8; k++) {
		host[k] = tables[ent[k]];
		ck_assert_uint_lt(host[k], m.pages_per_granule);
	}
	mg.promote = 0;
	mg.nr_promote = 0;
	mg.demote = (uintptr_t)host;
	mg.nr_demote = np;
	mg.hbm_reserve = m.pages_per_granule;
	mg.flags = KVMM_MIGRATE_KEEP_COPIES;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_DONE);
	ck_assert_uint_eq(mg.pages_demoted, 8);
	ck_assert_uint_eq(mg.bytes_moved, 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.pages_copies, 0);
	ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);
	/* copies again (into the HBM pages just freed), then a release
	 * drops them */
	for (uint32_t k = 0; k < 8; k++)
		host[k] = tables[ent[k]];
	mg.promote = (uintptr_t)host;
	mg.nr_promote = np;
	mg.demote = 0;
	mg.nr_demote = 0;
	mg.hbm_reserve = 0;
	mg.flags = KVMM_MIGRATE_GROW_HOST | KVMM_MIGRATE_KEEP_COPIES;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_gt(tb.pages_copies, 0);
	ck_assert_int_eq(release(fd, sp, sl, 1), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.pages_copies, 0);
	ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);
	free(host);
	free(hbm);
	ck_assert_int_eq(release(fd, sp, &sl[1], 1), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

START_TEST(test_migrate_grow_host)
{
	int fd = kvshim_open();
	struct kvmm_space_create c = good_create();
	uint32_t sp, toks[2] = { 4096, 4096 }, sl[2], n = 0, bad;
	struct kvmm_tier_budget tb = { 0 };
	struct kvmm_space_map m = { 0 };
	struct kvmm_migrate mg = { 0 };
	uint32_t *tables, *hbm, lists;
	uint64_t host_g, host_free;
	char why[256];

	c.max_tokens = 4096;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, &c), 0);
	sp = c.space;
	tb.space = m.space = mg.space = sp;
	tb.flags = KVMM_TIER_SET_HBM | KVMM_TIER_SET_HOST;
	tb.hbm_bytes = MB2;
	tb.host_bytes = KVMM_TIER_UNCAPPED;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_int_eq(admit(fd, sp, toks, 2, sl), 0);
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	host_g = tb.granules[KVMM_MEM_HOST];
	host_free = tb.pages_free[KVMM_MEM_HOST];
	/* every owned HBM page (granule slot 0, the lowest) */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_MAP, &m), 0);
	tables = (uint32_t *)(uintptr_t)m.tables;
	lists = m.max_seqs * m.lists_per_slot;
	hbm = malloc((size_t)lists * m.table_width * sizeof(*hbm));
	ck_assert_ptr_nonnull(hbm);
	for (uint32_t e = 0; e < lists * m.table_width; e++)
		if (tables[e] != UINT32_MAX &&
		    tables[e] < m.pages_per_granule)
			hbm[n++] = tables[e];
	ck_assert_uint_eq(n, tb.pages_used[KVMM_MEM_HBM]);
	ck_assert_msg(n > host_free, "%u HBM pages, %llu free host pages: "
		      "the case needs more", n,
		      (unsigned long long)host_free);
	mg.demote = (uintptr_t)hbm;
	mg.nr_demote = n;
	mg.hbm_reserve = m.pages_per_granule;	/* all of HBM free */

	/* a refused call with the flag leaves the granules as they were */
	bad = hbm[0];
	hbm[0] = hbm[1];
	mg.flags = KVMM_MIGRATE_GROW_HOST;
	FAILS(fd, sp, KVMM_IOC_MIGRATE, &mg, -EINVAL);
	hbm[0] = bad;
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.granules[KVMM_MEM_HOST], host_g);

	/* a host cap at what is mapped: no room, NO_ROOM, nothing mapped */
	tb.flags = KVMM_TIER_SET_HOST;
	tb.host_bytes = host_g * MB2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_NO_ROOM);
	ck_assert_uint_eq(mg.pages_demoted, host_free);
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_eq(tb.granules[KVMM_MEM_HOST], host_g);
	ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);

	/* room again: the rest goes, on host granules mapped for it */
	tb.flags = KVMM_TIER_SET_HOST;
	tb.host_bytes = KVMM_TIER_UNCAPPED;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	n = 0;
	for (uint32_t e = 0; e < lists * m.table_width; e++)
		if (tables[e] != UINT32_MAX &&
		    tables[e] < m.pages_per_granule)
			hbm[n++] = tables[e];
	ck_assert_uint_gt(n, 0);
	mg.nr_demote = n;
	mg.flags = 0;		/* without the flag: still no room */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_NO_ROOM);
	ck_assert_uint_eq(mg.pages_demoted, 0);
	mg.flags = KVMM_MIGRATE_GROW_HOST;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_MIGRATE, &mg), 0);
	ck_assert_uint_eq(mg.reason, KVMM_MIGRATE_DONE);
	ck_assert_uint_eq(mg.pages_demoted, n);
	tb.flags = 0;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_uint_gt(tb.granules[KVMM_MEM_HOST], host_g);
	ck_assert_uint_eq(tb.pages_used[KVMM_MEM_HBM], 0);
	ck_assert_int_eq(kvshim_check(fd, sp, why, sizeof(why)), 0);
	free(hbm);
	ck_assert_int_eq(release(fd, sp, sl, 2), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/*
 * A refused admission whose granules came from the host tier (an HBM cap
 * of 0) leaves the space as it was: the granules go back and with them
 * their tier marks and the free ring's order (found by the fuzzer).
 */
START_TEST(test_admit_rollback_host_tier)
{
	int fd = kvshim_open();
	uint32_t sp = create(fd), tok[2] = { 200, 120 }, sl[2];
	struct kvmm_tier_budget tb = { .space = sp,
				       .flags = KVMM_TIER_SET_HBM |
						KVMM_TIER_SET_HOST,
				       .hbm_bytes = 0,
				       .host_bytes = KVMM_TIER_UNCAPPED };
	struct kvmm_seq q[2] = { { .tokens = 200 }, { .tokens = 120 } };
	struct kvmm_seq_admit a = { .space = sp, .count = 2,
				    .seqs = (uintptr_t)q };

	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_TIER_BUDGET, &tb), 0);
	ck_assert_int_eq(kvshim_fault_inject(fd, sp, KVSHIM_FAULT_ADMIT, 1,
					     EIO), 0);
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT, &a, -EIO);
	/* once more with a granule mapped already */
	ck_assert_int_eq(admit(fd, sp, tok, 1, sl), 0);
	ck_assert_int_eq(kvshim_fault_inject(fd, sp, KVSHIM_FAULT_ADMIT, 1,
					     EIO), 0);
	a.count = 1;
	q[0].tokens = MAX_TOKENS;
	for (int i = 0; i < 6; i++) {
		tok[0] = MAX_TOKENS;
		if (admit(fd, sp, tok, 1, &sl[1]))
			break;
	}
	ck_assert_int_eq(kvshim_fault_inject(fd, sp, KVSHIM_FAULT_ADMIT, 1,
					     EIO), 0);
	FAILS(fd, sp, KVMM_IOC_SEQ_ADMIT, &a, -EIO);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

/* ---- swap to file: SWAP_SETUP, SEQ_SWAP_OUT, SEQ_SWAP_IN ---- */

/* a page's words: its list @j, page @k, word @i */
static uint32_t swap_word(uint32_t j, uint32_t k, uint32_t i)
{
	return j * 2654435761U ^ k * 40503U ^ i;
}

/* tag (or check) the high-tier pages of @slot through the mapping */
static void swap_tags(const struct kvmm_space_map *m, uint32_t slot,
		      int check)
{
	const uint32_t *np = (const uint32_t *)(uintptr_t)m->npages;
	const uint32_t *tab = (const uint32_t *)(uintptr_t)m->tables;

	for (uint32_t j = 0; j < m->lists_per_slot; j++) {
		uint32_t l = slot * m->lists_per_slot + j;

		for (uint32_t k = 0; k < np[2 * l]; k++) {
			uint32_t id = tab[(size_t)l * m->table_width + k];
			uint32_t *w = (uint32_t *)(uintptr_t)(
				m->pool_base +
				(uint64_t)(id / m->pages_per_granule) *
					KVMM_GRANULE_SIZE +
				(uint64_t)(id % m->pages_per_granule) *
					m->page_size);

			for (uint32_t i = 0; i < m->page_size / 4; i++)
				if (!check)
					w[i] = swap_word(j, k, i);
				else
					ck_assert_uint_eq(w[i],
							  swap_word(j, k, i));
		}
	}
}

/*
 * Every field rule of the three swap commands, each refusal changing
 * nothing; a sequence out and back with the same contents; a failed or
 * short write (fault injection) that leaves it in place; the file's
 * range given back by DISCARD; a close refused while sequences are out.
 */
START_TEST(test_swap_uapi)
{
	int fd = kvshim_open();
	uint32_t sp = create(fd), tok[2] = { 100, 60 }, sl[2];
	struct kvmm_space_map m = map(fd, sp);
	struct kvmm_swap_setup su = { .space = sp };
	struct kvmm_seq_swap o = { .space = sp }, in = { .space = sp };
	struct kvmm_seq_info info = { 0 };
	struct kvmm_seq_stats q = { .space = sp, .count = 1,
				    .seqs = (uintptr_t)&info };
	struct kvmm_stats st0 = { .space = sp }, st1 = { .space = sp };
	const char *t = getenv("TMPDIR");
	char dir[256], bad[300];
	struct step *st;
	uint64_t h1, b1;

	snprintf(dir, sizeof(dir), "%s", t && *t ? t : "/tmp");
	ck_assert_int_eq(admit(fd, sp, tok, 2, sl), 0);
	put_counts(&m, sl[0], tok[0], 0);
	put_counts(&m, sl[1], tok[1], 0);
	st = step_new(sp);
	step_op(st, KVMM_OP_TRIM, sl, 2);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &st->sub), 0);
	free(st);
	swap_tags(&m, sl[0], 0);

	/* no file yet */
	o.slot = sl[0];
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -ENOENT);
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -ENOENT); /* close: none */
	/* SWAP_SETUP's fields */
	su.dir = (uintptr_t)dir;
	su.flags = 1;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.flags = 0;
	su.chunk_bytes = 1000;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.chunk_bytes = 128U << 20;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.chunk_bytes = 64 * 1024;
	su.depth = 65;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.depth = 4;
	su.reserved[1] = 1;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.reserved[1] = 0;
	su.direct = 1;	/* an out field, zero on the way in */
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.direct = 0;
	snprintf(bad, sizeof(bad), "%s/kvmm-no-such-dir/x", dir);
	su.dir = (uintptr_t)bad;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -ENOENT);
	su.dir = (uintptr_t)"";
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EINVAL);
	su.dir = (uintptr_t)dir;
	su.space = sp + 1000;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -ENOENT);
	su.space = sp;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SWAP_SETUP, &su), 0);
	printf("swap uapi: %s\n", su.direct ? "O_DIRECT" : "buffered");
	su.direct = 0;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EBUSY); /* one file */

	/* SEQ_SWAP_OUT's fields, and slots it cannot take */
	o.slot = MAX_SEQS;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EINVAL);
	o.slot = sl[0];
	o.flags = KVMM_SWAP_DISCARD;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EINVAL);
	o.flags = 0;
	o.handle = 5;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EINVAL);
	o.handle = 0;
	o.pad = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EINVAL);
	o.pad = 0;
	o.reserved[0] = 1;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EINVAL);
	o.reserved[0] = 0;
	for (o.slot = 0; o.slot < MAX_SEQS; o.slot++)
		if (o.slot != sl[0] && o.slot != sl[1])
			break;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -ENOENT); /* a free slot */
	/* a failed write, then a short one: the sequence stays */
	o.slot = sl[0];
	ck_assert_int_eq(kvshim_fault_inject(fd, sp, KVSHIM_FAULT_SWAP_EIO, 1,
					     0), 0);
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EIO);
	ck_assert_int_eq(kvshim_fault_inject(fd, sp, KVSHIM_FAULT_SWAP_SHORT,
					     1, 0), 0);
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_OUT, &o, -EIO);
	swap_tags(&m, sl[0], 1);

	/* out: its pages are free, its slot too */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &st0), 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_SWAP_OUT, &o), 0);
	ck_assert_uint_ne(o.handle, 0);
	ck_assert_uint_gt(o.bytes, 0);
	ck_assert_uint_eq(o.bytes % 4096, 0);
	ck_assert_uint_gt(o.pages, 0);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STATS, &st1), 0);
	ck_assert_uint_eq(st0.pages_used[0] - st1.pages_used[0], o.pages);
	info.slot = sl[0];
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	ck_assert_uint_eq(info.state, KVMM_SEQ_FREE);
	h1 = o.handle;
	b1 = o.bytes;
	/* the other one out too, then discarded: its range goes back */
	o = (struct kvmm_seq_swap){ .space = sp, .slot = sl[1] };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_SWAP_OUT, &o), 0);
	ck_assert_uint_gt(o.handle, h1);
	/* a close while sequences are out */
	su.dir = 0;
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -EBUSY);
	/* SEQ_SWAP_IN's fields */
	in.handle = h1 + 100;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_IN, &in, -ENOENT);
	in.handle = o.handle;
	in.flags = 2;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_IN, &in, -EINVAL);
	in.flags = 0;
	in.slot = 1;	/* an out field */
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_IN, &in, -EINVAL);
	in.slot = 0;
	in.flags = KVMM_SWAP_DISCARD;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_SWAP_IN, &in), 0);
	in.flags = 0;
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_IN, &in, -ENOENT);	/* gone */

	/* someone else takes the pages and scribbles on them */
	ck_assert_int_eq(admit(fd, sp, tok, 1, sl), 0);
	swap_tags(&m, sl[0], 0);
	/* back: a free slot, pages of the same counts and contents */
	in = (struct kvmm_seq_swap){ .space = sp, .handle = h1 };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_SWAP_IN, &in), 0);
	ck_assert_uint_ne(in.slot, sl[0]);
	ck_assert_uint_eq(in.bytes, b1);
	ck_assert_uint_eq(in.pages, st0.pages_used[0] - st1.pages_used[0]);
	info.slot = in.slot;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &q), 0);
	ck_assert_uint_eq(info.state, KVMM_SEQ_DECODE);
	ck_assert_uint_eq(info.tokens[0], (uint64_t)tok[0] * m.lists_per_slot);
	swap_tags(&m, in.slot, 1);
	FAILS(fd, sp, KVMM_IOC_SEQ_SWAP_IN, &in, -EINVAL); /* slot: out */
	/* nothing is out: the file closes; a device space would refuse */
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SWAP_SETUP, &su), 0);
	FAILS(fd, sp, KVMM_IOC_SWAP_SETUP, &su, -ENOENT);
	/* a space destroyed with sequences out closes its file */
	su.dir = (uintptr_t)dir;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SWAP_SETUP, &su), 0);
	o = (struct kvmm_seq_swap){ .space = sp, .slot = in.slot };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_SWAP_OUT, &o), 0);
	ck_assert_int_eq(kvshim_close(fd), 0);
}
END_TEST

Suite *suite_shim(void)
{
	Suite *s = suite_create("shim");
	TCase *tc = tcase_create("ioctl");

	tcase_set_timeout(tc, 20);
	KV_ADD(tc, test_version);
	KV_ADD(tc, test_space_lifecycle);
	KV_ADD(tc, test_admit_release);
	KV_ADD(tc, test_set_budget);
	KV_ADD(tc, test_admit_over_budget);
	KV_ADD(tc, test_slots_exhausted);
	KV_ADD(tc, test_compact);
	KV_ADD(tc, test_page_table_info);
	KV_ADD(tc, test_bad_command);
	KV_ADD(tc, test_nonzero_reserved);
	KV_ADD(tc, test_bad_ranges);
	KV_ADD(tc, test_two_fds);
	KV_ADD(tc, test_many_fds);
	KV_ADD(tc, test_admit_rollback);
	KV_ADD(tc, test_admit_runtime_faults);
	KV_ADD(tc, test_compact_runtime_faults);
	KV_ADD(tc, test_compact_deferred_then_fault);
	KV_ADD(tc, test_unaligned_arg);
	KV_ADD(tc, test_create_bounds);
	suite_add_tcase(s, tc);
	tc = tcase_create("step");
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_space_map);
	KV_ADD(tc, test_step_refusals);
	KV_ADD(tc, test_step_grow_and_nospc);
	KV_ADD(tc, test_fence);
	KV_ADD(tc, test_seq_stats);
	KV_ADD(tc, test_tiers_uapi);
	KV_ADD(tc, test_migrate_grow_host);
	KV_ADD(tc, test_migrate_keep_copies);
	KV_ADD(tc, test_swap_uapi);
	KV_ADD(tc, test_admit_rollback_host_tier);
	suite_add_tcase(s, tc);
	tc = tcase_create("budget");
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_create_issue19);
	KV_ADD(tc, test_create_cap);
	KV_ADD(tc, test_total_cap);
	KV_ADD(tc, test_set_budget_grow);
	suite_add_tcase(s, tc);
	return s;
}
