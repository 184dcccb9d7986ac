// SPDX-License-Identifier: MIT
/*
 * check_shrink.c - kva_shrink(): after token counts go down (eviction,
 * pruning), the pages beyond what each list needs go back to the ring.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "kva.h"
#include "kvmm_base.h"
#include "kvtest.h"

#define G KVRT_GRANULE_SIZE

static void check(const struct kva_pool *p)
{
	char why[256] = "";

	ck_assert_msg(!kva_check(p, why, sizeof(why)), "kva_check: %s", why);
}

static uint64_t digest(const struct kva_pool *p)
{
	const void *a[] = { p->ring, p->page_list, p->page_pos, p->table,
			    p->npages, p->ntokens, p->slot_state };
	size_t n[] = { p->nr_page_ids * 4, p->nr_page_ids * 4,
		       p->nr_page_ids * 4, (size_t)p->nr_lists * p->width * 4,
		       p->nr_lists * 8, p->nr_lists * 8, p->nr_slots };
	uint64_t h = 14695981039346656037ULL ^ p->head ^ (p->tail << 20) ^
		     p->nr_used;

	for (size_t i = 0; i < ARRAY_SIZE(a); i++)
		for (size_t j = 0; j < n[i]; j++)
			h = (h ^ ((const uint8_t *)a[i])[j]) * 1099511628211ULL;
	return h;
}

START_TEST(test_shrink_random)
{
	static const struct kva_tier tiers[] = { { 8, 4, 1, 1 },
						 { 4, 2, 1, 1 } };
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 64 * G };
	struct kva_pool_params pp = {
		.va_bytes = 16 * G, .budget_bytes = 16 * G, .head_dim = 128,
		.nr_tiers = 2, .nr_slots = 8, .nr_layers = 3, .nr_heads = 2,
		.max_tokens = 2000,
	};
	uint64_t seed = kvtest_seed(__func__);
	uint32_t slots[8], hi[6], lo[6];
	struct kva_pool *p;
	struct kvrt_ctx *ctx;

	memcpy(pp.tiers, tiers, sizeof(tiers));
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	pp.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&pp, &p), 0);
	ck_assert_int_eq(kva_pool_grow(p, 16), 0);
	for (uint32_t s = 0; s < 8; s++) {
		uint32_t n = 100 + (uint32_t)(kvtest_rand(&seed) % 900);

		slots[s] = s;
		ck_assert_int_eq(kva_admit(p, &s, &n, 1), 0);
		for (int l = 0; l < 6; l++) {
			hi[l] = (uint32_t)(kvtest_rand(&seed) % (n + 1));
			lo[l] = n - hi[l];
		}
		ck_assert_int_eq(kva_trim(p, &s, 1, hi, lo), 0);
	}
	check(p);
	for (int round = 0; round < 20; round++) {
		uint64_t want = 0, before;
		uint32_t n = 1 + (uint32_t)(kvtest_rand(&seed) % 8);
		int got;

		/* appends ahead, then counts of the first n go down */
		ck_assert_int_eq(kva_append(p, slots, 8), 0);
		for (uint32_t l = 0; l < n * p->lists_per_slot; l++) {
			uint32_t h = p->ntokens[2 * l], w = p->ntokens[2 * l + 1];

			h -= (uint32_t)(kvtest_rand(&seed) % (h + 1)) / 2;
			w -= (uint32_t)(kvtest_rand(&seed) % (w + 1)) / 2;
			ck_assert_int_eq(kva_set_tokens(p, l, h, w), 0);
		}
		for (uint32_t i = 0; i < n; i++) {
			uint32_t s = slots[i];

			for (uint32_t k = 0; k < p->lists_per_slot; k++) {
				uint32_t l = s * p->lists_per_slot + k;

				for (int t = 0; t < 2; t++)
					want += p->npages[2 * l + t] -
						(p->ntokens[2 * l + t] +
						 p->layout[t].tokens - 1) /
						p->layout[t].tokens;
			}
		}
		before = p->nr_used;
		got = kva_shrink(p, slots, n);
		ck_assert_int_eq(got, (int)want);
		ck_assert_uint_eq(p->nr_used, before - want);
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t k = 0; k < p->lists_per_slot; k++) {
				uint32_t l = slots[i] * p->lists_per_slot + k;

				for (int t = 0; t < 2; t++)
					ck_assert_uint_eq(p->npages[2 * l + t],
						(p->ntokens[2 * l + t] +
						 p->layout[t].tokens - 1) /
						p->layout[t].tokens);
			}
		check(p);
		/* a second shrink has nothing to give */
		ck_assert_int_eq(kva_shrink(p, slots, n), 0);
		check(p);
	}
	ck_assert_int_eq(kva_free(p, slots, 8), 0);
	check(p);
	ck_assert_int_eq(kva_pool_destroy(p), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

/* misuse: -errno and not a byte of state changed */
START_TEST(test_shrink_misuse)
{
	static const struct kva_tier t = { 16, 16, 1, 1 };
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 64 * G };
	struct kva_pool_params pp = {
		.va_bytes = 4 * G, .budget_bytes = 4 * G, .head_dim = 64,
		.nr_tiers = 1, .nr_slots = 4, .nr_layers = 2, .nr_heads = 2,
		.max_tokens = 500,
	};
	uint32_t s0 = 0, s1 = 1, n = 300, dup[2] = { 0, 0 }, bad = 9;
	uint32_t hi[4] = { 300, 300, 300, 300 }, lo[4] = { 0 };
	struct kva_pool *p;
	struct kvrt_ctx *ctx;
	uint64_t d;

	pp.tiers[0] = t;
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	pp.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&pp, &p), 0);
	ck_assert_int_eq(kva_pool_grow(p, 4), 0);
	ck_assert_int_eq(kva_admit(p, &s0, &n, 1), 0);
	ck_assert_int_eq(kva_admit(p, &s1, &n, 1), 0);
	ck_assert_int_eq(kva_trim(p, &s0, 1, hi, lo), 0);
	d = digest(p);
	ck_assert_int_eq(kva_shrink(p, &s1, 1), -EBUSY);   /* in prefill */
	ck_assert_int_eq(kva_shrink(p, dup, 2), -EINVAL);  /* twice */
	ck_assert_int_eq(kva_shrink(p, &bad, 1), -EINVAL); /* out of range */
	s1 = 2;
	ck_assert_int_eq(kva_shrink(p, &s1, 1), -ENOENT);  /* free */
	ck_assert_int_eq(kva_shrink(p, NULL, 1), -EINVAL);
	ck_assert_uint_eq(digest(p), d);
	ck_assert_int_eq(kva_shrink(p, NULL, 0), 0);	   /* empty batch */
	ck_assert_uint_eq(digest(p), d);
	check(p);
	ck_assert_int_eq(kva_pool_destroy(p), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

Suite *suite_shrink(void)
{
	Suite *s = suite_create("shrink");
	TCase *tc = tcase_create("ops");

	KV_ADD(tc, test_shrink_random);
	KV_ADD(tc, test_shrink_misuse);
	suite_add_tcase(s, tc);
	return s;
}
