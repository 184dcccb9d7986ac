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

#include "kvattn.h"
#include "kvevict.h"
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
	X(kvmm_page_table_info)                                                \
	X(kvmm_tier_layout)                                                    \
	X(kvmm_space_map)                                                      \
	X(kvmm_step_slot)                                                      \
	X(kvmm_step_op)                                                        \
	X(kvmm_step_submit)                                                    \
	X(kvmm_fence)                                                          \
	X(kvmm_seq_info)                                                       \
	X(kvmm_seq_stats)

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
	case KVMM_IOC_SPACE_MAP:
		return "SPACE_MAP";
	case KVMM_IOC_STEP_SUBMIT:
		return "STEP_SUBMIT";
	case KVMM_IOC_FENCE:
		return "FENCE";
	case KVMM_IOC_SEQ_STATS:
		return "SEQ_STATS";
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
		{ KVMM_IOC_SPACE_MAP, sizeof(struct kvmm_space_map) },
		{ KVMM_IOC_STEP_SUBMIT, sizeof(struct kvmm_step_submit) },
		{ KVMM_IOC_FENCE, sizeof(struct kvmm_fence) },
		{ KVMM_IOC_SEQ_STATS, sizeof(struct kvmm_seq_stats) },
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

/* the new wrappers against kvshim_ioctl(): same returns, same results */
START_TEST(test_lib_step_wrappers)
{
	struct kvmm_space_create c = lib_create();
	struct kvmm_space_map m = { 0 }, m2;
	struct kvmm_step_submit sub = { 0 };
	struct kvmm_fence fe = { 0 }, fe2;
	struct kvmm_seq_info info[2], info2[2];
	struct kvmm_seq_stats ss = { .count = 2 };
	uint32_t tok = 10, slot;
	int fd = kvmm_open(KVMM_FEAT_HOST | KVMM_FEAT_STEP);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(kvmm_space_create(fd, &c), 0);
	m.space = sub.space = fe.space = ss.space = c.space;
	ck_assert_int_eq(kvmm_space_map(fd, &m), 0);
	m2 = (struct kvmm_space_map){ .space = c.space };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SPACE_MAP, &m2), 0);
	ck_assert(!memcmp(&m, &m2, sizeof(m)));
	ck_assert_uint_eq(m.lists_per_slot, 8);
	ck_assert_uint_eq(m.max_seqs, 6);
	m.stream = 1;	/* a host space binds no stream */
	ck_assert_int_eq(kvmm_space_map(fd, &m), -EINVAL);

	ck_assert_int_eq(kvmm_step_submit(fd, &sub), 0);
	ck_assert_uint_eq(sub.fence, 1);
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, &sub), 0);
	ck_assert_uint_eq(sub.fence, 2);
	sub.pad = 1;
	ck_assert_int_eq(kvmm_step_submit(fd, &sub), -EINVAL);

	ck_assert_int_eq(kvmm_fence(fd, &fe), 0);
	fe2 = (struct kvmm_fence){ .space = c.space };
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_FENCE, &fe2), 0);
	ck_assert(!memcmp(&fe, &fe2, sizeof(fe)));
	ck_assert_uint_eq(fe.completed, 2);
	ck_assert_uint_eq(fe.signalled, 1);
	fe.seqno = 3;
	ck_assert_int_eq(kvmm_fence(fd, &fe), -EINVAL);

	ck_assert_int_eq(kvmm_admit(fd, c.space, &tok, 1, &slot), 0);
	info[0] = (struct kvmm_seq_info){ .slot = slot };
	info[1] = (struct kvmm_seq_info){ .slot = (slot + 1) % 6 };
	memcpy(info2, info, sizeof(info));
	ss.seqs = (uintptr_t)info;
	ck_assert_int_eq(kvmm_seq_stats(fd, &ss), 0);
	ss.seqs = (uintptr_t)info2;
	ck_assert_int_eq(kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, &ss), 0);
	ck_assert(!memcmp(info, info2, sizeof(info)));
	ck_assert_uint_eq(info[0].state, KVMM_SEQ_PREFILL);
	ck_assert_uint_gt(info[0].pages[0], 0);
	ck_assert_uint_eq(info[1].state, KVMM_SEQ_FREE);
	ck_assert_uint_eq(info[1].pages[0], 0);
	ss.count = 7;
	ck_assert_int_eq(kvmm_seq_stats(fd, &ss), -EINVAL);
	ck_assert_int_eq(kvmm_close(fd), 0);
}
END_TEST

/* one host space of the scenario, seen as a data-plane kernel sees it */
struct scen {
	int fd;
	uint32_t sp;
	struct kvmm_space_map m;
	uint32_t *tables, *npages, *ntokens;
};

static void scen_check(const struct scen *s)
{
	char why[256] = "";
	int ret = kvshim_check(s->fd, s->sp, why, sizeof(why));

	ck_assert_msg(ret == 0, "kva_check: %d %s", ret, why);
}

static uint8_t *scen_page(const struct scen *s, uint32_t p)
{
	return (uint8_t *)(uintptr_t)(s->m.pool_base +
				      (uint64_t)(p / s->m.pages_per_granule) *
					      MB2 +
				      (uint64_t)(p % s->m.pages_per_granule) *
					      s->m.page_size);
}

/* what a compress kernel stores of high token @i of @list: pos and score */
static void scen_put(const struct scen *s, uint32_t list, uint32_t i,
		     int32_t pos, float score)
{
	const struct kvmm_tier_layout *t = &s->m.tiers[0];
	uint32_t p = s->tables[(size_t)list * s->m.table_width + i / t->tokens];
	uint8_t *pg = scen_page(s, p);

	memcpy(pg + t->pos_off + 4 * (i % t->tokens), &pos, 4);
	memcpy(pg + t->score_off + 4 * (i % t->tokens), &score, 4);
}

static void scen_get(const struct scen *s, uint32_t list, uint32_t i,
		     int32_t *pos, float *score)
{
	const struct kvmm_tier_layout *t = &s->m.tiers[0];
	uint32_t p = s->tables[(size_t)list * s->m.table_width + i / t->tokens];
	uint8_t *pg = scen_page(s, p);

	memcpy(pos, pg + t->pos_off + 4 * (i % t->tokens), 4);
	memcpy(score, pg + t->score_off + 4 * (i % t->tokens), 4);
}

static int scen_submit(const struct scen *s, uint32_t op, const uint32_t *slots,
		       uint32_t n, const uint32_t *arg0, const uint32_t *arg1,
		       uint32_t sinks)
{
	struct kvmm_step_slot ss[8] = { 0 };
	struct kvmm_step_op o = { .op = op, .count = n,
				  .slots = (uintptr_t)ss, .sinks = sinks };
	struct kvmm_step_submit sub = { .space = s->sp, .nr_ops = 1,
					.ops = (uintptr_t)&o };
	struct kvmm_fence fe = { .space = s->sp };
	int ret;

	for (uint32_t i = 0; i < n; i++) {
		ss[i].slot = slots[i];
		ss[i].arg0 = arg0 ? arg0[i] : 0;
		ss[i].arg1 = arg1 ? arg1[i] : 0;
	}
	ret = kvmm_step_submit(s->fd, &sub);
	if (ret)
		return ret;
	/* a host space's fences are signalled at once */
	fe.seqno = sub.fence;
	ck_assert_int_eq(kvmm_fence(s->fd, &fe), 0);
	ck_assert_uint_eq(fe.signalled, 1);
	ck_assert_uint_eq(fe.completed, sub.fence);
	ck_assert_int_eq(fe.error, 0);
	scen_check(s);
	return 0;
}

static void scen_open(struct scen *s, int fd)
{
	struct kvmm_space_create c = lib_create();

	c.budget_bytes = 8 * MB2;
	s->fd = fd;
	ck_assert_int_eq(kvmm_space_create(fd, &c), 0);
	s->sp = c.space;
	s->m = (struct kvmm_space_map){ .space = c.space };
	ck_assert_int_eq(kvmm_space_map(fd, &s->m), 0);
	s->tables = (uint32_t *)(uintptr_t)s->m.tables;
	s->npages = (uint32_t *)(uintptr_t)s->m.npages;
	s->ntokens = (uint32_t *)(uintptr_t)s->m.ntokens;
}

/*
 * Two identical host spaces driven as the cache drives them: admit, the
 * prefill "kernel" writes tokens and counts through the mapping, TRIM,
 * 100 decode steps (APPEND, one token per list, now and then a demotion),
 * then EVICT on one space and, on the other, kvk_evict_cpu() run directly
 * on the mapped arrays followed by SHRINK: the two end identical. The
 * invariant checker runs after every call; RELEASE frees everything.
 */
START_TEST(test_step_scenario)
{
	uint64_t seed = kvtest_seed(__func__);
	uint32_t tok[3] = { 40, 100, 7 }, slots[3], slots2[3];
	uint32_t keep[3], prot[3], quota[3], base[3], evicted[3 * 8];
	struct kvmm_seq_info info[3], info2[3];
	struct kvmm_seq_stats ss = { .count = 3 };
	struct kvmm_stats st = { 0 }, st2 = { 0 };
	struct kvk_evict_args ea = { 0 };
	struct scen s[2];
	uint64_t d0, d1;
	uint32_t lps, a, b, w, used_before;
	int fd = kvmm_open(KVMM_FEAT_HOST | KVMM_FEAT_STEP);

	for (int k = 0; k < 2; k++) {
		scen_open(&s[k], fd);
		ck_assert_int_eq(kvmm_admit(fd, s[k].sp, tok, 3,
					    k ? slots2 : slots), 0);
		scen_check(&s[k]);
	}
	ck_assert(!memcmp(slots, slots2, sizeof(slots)));
	lps = s[0].m.lists_per_slot;
	a = s[0].m.tiers[0].tokens;
	b = s[0].m.tiers[1].tokens;
	w = s[0].m.table_width;

	/* prefill: both tiers' counts, high tokens with position and score */
	for (uint32_t i = 0; i < 3; i++) {
		for (uint32_t j = 0; j < lps; j++) {
			uint32_t l = slots[i] * lps + j;
			uint32_t h = kvtest_rand(&seed) % (tok[i] + 1);
			uint32_t lo = kvtest_rand(&seed) % (tok[i] - h + 1);

			for (uint32_t t = 0; t < h; t++) {
				float sc = (float)(kvtest_rand(&seed) % 1000);

				for (int k = 0; k < 2; k++)
					scen_put(&s[k], l, t, (int32_t)t, sc);
			}
			for (int k = 0; k < 2; k++) {
				s[k].ntokens[2 * l] = h;
				s[k].ntokens[2 * l + 1] = lo;
			}
		}
	}
	for (int k = 0; k < 2; k++) {
		scen_check(&s[k]);
		ck_assert_int_eq(scen_submit(&s[k], KVMM_OP_TRIM, slots, 3,
					     NULL, NULL, 0), 0);
	}
	/* decode: a page where a tier is full, then one token per list */
	for (uint32_t step = 0; step < 100; step++) {
		for (int k = 0; k < 2; k++)
			ck_assert_int_eq(scen_submit(&s[k], KVMM_OP_APPEND,
						     slots, 3, NULL, NULL, 0),
					 0);
		for (uint32_t i = 0; i < 3; i++) {
			for (uint32_t j = 0; j < lps; j++) {
				uint32_t l = slots[i] * lps + j;
				uint32_t h = s[0].ntokens[2 * l];
				uint32_t lo = s[0].ntokens[2 * l + 1];
				float sc = (float)(kvtest_rand(&seed) % 1000);
				int demote = kvtest_rand(&seed) % 8 == 0 &&
					     lo < s[0].npages[2 * l + 1] * b;

				ck_assert_uint_lt(h, s[0].npages[2 * l] * a);
				for (int k = 0; k < 2; k++) {
					scen_put(&s[k], l, h,
						 (int32_t)(tok[i] + step), sc);
					s[k].ntokens[2 * l] = h + 1;
					s[k].ntokens[2 * l + 1] = lo + demote;
				}
			}
		}
		for (int k = 0; k < 2; k++)
			scen_check(&s[k]);
	}
	ck_assert_int_eq(kvshim_digest(fd, s[0].sp, &d0), 0);
	ck_assert_int_eq(kvshim_digest(fd, s[1].sp, &d1), 0);
	ck_assert_uint_eq(d0, d1);

	/* EVICT down to half the high pages, the last 16 positions kept */
	for (uint32_t i = 0; i < 3; i++) {
		uint64_t have = 0;

		for (uint32_t j = 0; j < lps; j++)
			have += kvmm_div_round_up(
				s[1].ntokens[2 * (slots[i] * lps + j)], a);
		keep[i] = (uint32_t)(have / 2);
		quota[i] = (uint32_t)(have - keep[i]);
		prot[i] = tok[i] + 100 - 16;
		base[i] = slots[i] * lps;
	}
	st.space = s[0].sp;
	ck_assert_int_eq(kvmm_stats(fd, &st), 0);
	used_before = (uint32_t)st.pages_used[0];
	ck_assert_int_eq(scen_submit(&s[0], KVMM_OP_EVICT, slots, 3, keep,
				     prot, 4), 0);
	ea.nr_seqs = 3;
	ea.lists = lps;
	ea.head_dim = s[1].m.head_dim;
	ea.tier = (struct kvk_attn_tier){
		.kbits = s[1].m.tiers[0].kbits, .vbits = s[1].m.tiers[0].vbits,
		.kgroups = s[1].m.tiers[0].kgroups,
		.vgroups = s[1].m.tiers[0].vgroups,
		.tokens = a, .k_off = s[1].m.tiers[0].k_off,
		.km_off = s[1].m.tiers[0].km_off,
		.v_off = s[1].m.tiers[0].v_off,
		.vm_off = s[1].m.tiers[0].vm_off,
		.score_off = s[1].m.tiers[0].score_off,
		.pos_off = s[1].m.tiers[0].pos_off,
	};
	ea.pool = s[1].m.pool_base;
	ea.page_size = s[1].m.page_size;
	ea.pages_per_granule = s[1].m.pages_per_granule;
	ea.tables = s[1].tables;
	ea.width = w;
	ea.ntokens = s[1].ntokens;
	ea.list_base = base;
	ea.quota = quota;
	ea.protect_from = (const int32_t *)prot;
	ea.sinks = 4;
	ea.evicted = evicted;
	ck_assert_int_eq(kvk_evict_cpu(&ea, NULL), 0);
	ck_assert_int_eq(scen_submit(&s[1], KVMM_OP_SHRINK, slots, 3, NULL,
				     NULL, 0), 0);
	ck_assert_int_eq(kvshim_digest(fd, s[0].sp, &d0), 0);
	ck_assert_int_eq(kvshim_digest(fd, s[1].sp, &d1), 0);
	ck_assert_uint_eq(d0, d1);
	for (uint32_t i = 0; i < 3; i++) {
		for (uint32_t j = 0; j < lps; j++) {
			uint32_t l = slots[i] * lps + j;

			for (uint32_t t = 0; t < s[0].ntokens[2 * l]; t++) {
				int32_t p0, p1;
				float c0, c1;

				scen_get(&s[0], l, t, &p0, &c0);
				scen_get(&s[1], l, t, &p1, &c1);
				ck_assert_int_eq(p0, p1);
				ck_assert_float_eq(c0, c1);
			}
		}
	}
	st2.space = s[0].sp;
	ck_assert_int_eq(kvmm_stats(fd, &st2), 0);
	ck_assert_uint_lt(st2.pages_used[0], used_before);

	/* per-slot figures add up to the mapped counts */
	for (uint32_t i = 0; i < 3; i++)
		info[i] = (struct kvmm_seq_info){ .slot = slots[i] };
	ss.space = s[0].sp;
	ss.seqs = (uintptr_t)info;
	ck_assert_int_eq(kvmm_seq_stats(fd, &ss), 0);
	for (uint32_t i = 0; i < 3; i++) {
		uint64_t pg[2] = { 0 }, tk[2] = { 0 };

		for (uint32_t j = 0; j < lps * 2; j++) {
			pg[j % 2] += s[0].npages[slots[i] * lps * 2 + j];
			tk[j % 2] += s[0].ntokens[slots[i] * lps * 2 + j];
		}
		ck_assert_uint_eq(info[i].state, KVMM_SEQ_DECODE);
		ck_assert_uint_eq(info[i].pages[0], pg[0]);
		ck_assert_uint_eq(info[i].pages[1], pg[1]);
		ck_assert_uint_eq(info[i].tokens[0], tk[0]);
		ck_assert_uint_eq(info[i].tokens[1], tk[1]);
		/* what EVICT was asked for: at most keep[i] high pages */
		ck_assert_uint_le(info[i].pages[0], keep[i]);
	}
	for (int k = 0; k < 2; k++) {
		ck_assert_int_eq(kvmm_release(fd, s[k].sp, slots, 3), 0);
		scen_check(&s[k]);
	}
	ss.seqs = (uintptr_t)info2;
	memcpy(info2, info, sizeof(info));
	ck_assert_int_eq(kvmm_seq_stats(fd, &ss), 0);
	for (uint32_t i = 0; i < 3; i++)
		ck_assert_uint_eq(info2[i].state, KVMM_SEQ_FREE);
	ck_assert_int_eq(kvmm_stats(fd, &st2), 0);
	ck_assert_uint_eq(st2.pages_used[0] + st2.pages_used[1], 0);
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
	KV_ADD(tc, test_lib_step_wrappers);
	suite_add_tcase(s, tc);
	tc = tcase_create("step");
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_step_scenario);
	suite_add_tcase(s, tc);
	return s;
}
