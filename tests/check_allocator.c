// SPDX-License-Identifier: MIT
/*
 * check_allocator.c - the allocator on the host backend: page geometry,
 * batched operations, misuse, named scenarios, randomized stress and
 * physical compaction, with kva_check() after every operation.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvattn.h"
#include "kvevict.h"
#include "kvtest.h"
#include "pool_common.h"

#define G KVRT_GRANULE_SIZE

/* DiffKV's tier variants, high first then low */
static const struct kva_tier diffkv_tiers[] = {
	{8, 4, 1, 2},
	{4, 2, 1, 1},
	{8, 4, 1, 1},
	{4, 2, 2, 4},
};

/* A digest of every piece of pool state: "a failed call changes nothing". */
static uint64_t pool_digest(const struct kva_pool *pool)
{
	uint64_t h = 14695981039346656037ULL;
	size_t ids = pool->nr_page_ids, lists = pool->nr_lists;

	h = fnv(h, &pool->head, sizeof(pool->head));
	h = fnv(h, &pool->tail, sizeof(pool->tail));
	h = fnv(h, &pool->nr_used, sizeof(pool->nr_used));
	h = fnv(h, &pool->nr_granules, sizeof(pool->nr_granules));
	h = fnv(h, pool->ring, ids * 4);
	h = fnv(h, pool->page_list, ids * 4);
	h = fnv(h, pool->page_pos, ids * 4);
	h = fnv(h, pool->table, lists * pool->width * 4);
	h = fnv(h, pool->npages, lists * 8);
	h = fnv(h, pool->ntokens, lists * 8);
	h = fnv(h, pool->slot_state, pool->nr_slots);
	h = fnv(h, pool->gran_mapped, pool->nr_gslots);
	return h;
}

struct fixture {
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
};

static void open_pool(struct fixture *f, uint32_t slots, uint32_t layers,
		      uint32_t heads, uint32_t max_tokens, uint32_t granules)
{
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 256 * G};
	struct kva_pool_params p = {
		.va_bytes = (uint64_t)granules * G,
		.budget_bytes = (uint64_t)granules * G,
		.head_dim = 128,
		.nr_tiers = ARRAY_SIZE(diffkv_tiers),
		.nr_slots = slots,
		.nr_layers = layers,
		.nr_heads = heads,
		.max_tokens = max_tokens,
		.wmark_low = 64,
		.wmark_high = 400,
	};

	memcpy(p.tiers, diffkv_tiers, sizeof(diffkv_tiers));
	ck_assert_int_eq(kvrt_ctx_create(&o, &f->ctx), 0);
	p.ctx = f->ctx;
	ck_assert_int_eq(kva_pool_create(&p, &f->pool), 0);
	CHECK_POOL(f->pool);
}

static void close_pool(struct fixture *f)
{
	CHECK_POOL(f->pool);
	ck_assert_int_eq(kva_pool_destroy(f->pool), 0);
	kvrt_ctx_destroy(f->ctx);
}

/* ---- geometry ---- */

START_TEST(test_page_size_diffkv)
{
	static const struct {
		struct kva_tier t;
		uint32_t tokens;
	} table[] = {
		{{8, 8, 1, 1}, 24}, {{8, 4, 1, 2}, 32}, {{8, 4, 1, 1}, 32},
		{{8, 2, 1, 1}, 37}, {{4, 4, 1, 1}, 46}, {{4, 2, 2, 4}, 52},
		{{4, 2, 1, 1}, 60}, {{4, 1, 1, 1}, 69},
	};
	struct kva_layout l;

	ck_assert_int_eq(
		kva_page_size(128, diffkv_tiers, ARRAY_SIZE(diffkv_tiers)),
		6784);
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		ck_assert_int_eq(kva_page_layout(128, 6784, &table[i].t, &l),
				 0);
		ck_assert_uint_eq(l.tokens, table[i].tokens);
	}
	/* K8V4: the page is exactly full */
	ck_assert_int_eq(kva_page_layout(128, 6784, &diffkv_tiers[0], &l), 0);
	ck_assert_uint_eq(l.used, 6784);
	ck_assert_uint_eq(kva_tier_token_bytes(128, &diffkv_tiers[0]), 212);
	ck_assert_uint_eq(kva_tier_token_bytes(128, &diffkv_tiers[1]), 112);
}
END_TEST

/* worst waste of @size over @tiers, as bytes (size fixed) */
static uint64_t worst_waste(uint32_t hd, uint32_t size,
			    const struct kva_tier *t, uint32_t n)
{
	uint64_t worst = 0;
	struct kva_layout l;

	for (uint32_t i = 0; i < n; i++) {
		if (kva_page_layout(hd, size, &t[i], &l))
			return UINT64_MAX;
		if (size - (uint64_t)l.tokens *
				    kva_tier_token_bytes(hd, &t[i]) >
		    worst)
			worst = size - (uint64_t)l.tokens *
					       kva_tier_token_bytes(hd, &t[i]);
	}
	return worst;
}

static void check_layout(uint32_t hd, uint32_t size, const struct kva_tier *t)
{
	struct kva_layout l;
	uint32_t kb = t->kbits == 16 ? 0 : 4 * t->kgroups;
	uint32_t vb = t->vbits == 16 ? 0 : 4 * t->vgroups;
	uint32_t vt;

	ck_assert_int_eq(kva_page_layout(hd, size, t, &l), 0);
	vt = (l.tokens + 1) / 2 * 2;
	ck_assert_uint_gt(l.tokens, 0);
	ck_assert_uint_le(l.used, size);
	ck_assert_uint_eq(l.page_size, size);
	/* every segment 16-byte aligned, in order, large enough */
	ck_assert_uint_eq(l.k_off % 16, 0);
	ck_assert_uint_eq(l.km_off % 16, 0);
	ck_assert_uint_eq(l.v_off % 16, 0);
	ck_assert_uint_eq(l.vm_off % 16, 0);
	ck_assert_uint_eq(l.score_off % 16, 0);
	ck_assert_uint_eq(l.pos_off % 16, 0);
	ck_assert_uint_ge(l.km_off - l.k_off, l.tokens * hd * t->kbits / 8);
	ck_assert_uint_ge(l.v_off - l.km_off, l.tokens * kb);
	ck_assert_uint_ge(l.vm_off - l.v_off, vt * hd * t->vbits / 8);
	ck_assert_uint_ge(l.score_off - l.vm_off, l.tokens * vb);
	ck_assert_uint_ge(l.pos_off - l.score_off, l.tokens * 4);
	ck_assert_uint_ge(l.used - l.pos_off, l.tokens * 4);
}

/* every head_dim: a size that is minimal among the best, sane layouts */
START_TEST(test_page_size_head_dims)
{
	static const uint32_t hds[] = {64, 80, 96, 128, 256};
	static const struct kva_tier more[] = {
		{16, 16, 1, 1},
		{8, 8, 2, 2},
		{2, 1, 4, 4},
	};

	for (size_t i = 0; i < ARRAY_SIZE(hds); i++) {
		uint32_t hd = hds[i];
		int size = kva_page_size(hd, diffkv_tiers,
					 ARRAY_SIZE(diffkv_tiers));
		uint64_t best;

		ck_assert_int_gt(size, 0);
		ck_assert_int_eq(size % KVA_PAGE_ALIGN, 0);
		best = worst_waste(hd, size, diffkv_tiers,
				   ARRAY_SIZE(diffkv_tiers));
		/* no size in the window is strictly better; none smaller
		 * is as good */
		for (uint32_t s = KVA_PAGE_MIN; s <= KVA_PAGE_MAX;
		     s += KVA_PAGE_STEP) {
			uint64_t w;

			if (s % KVA_PAGE_ALIGN)
				continue;
			w = worst_waste(hd, s, diffkv_tiers,
					ARRAY_SIZE(diffkv_tiers));
			if (w == UINT64_MAX)
				continue;
			ck_assert(w * size >= best * s);
			if (s < (uint32_t)size)
				ck_assert(w * size > best * s);
		}
		for (size_t j = 0; j < ARRAY_SIZE(diffkv_tiers); j++)
			check_layout(hd, size, &diffkv_tiers[j]);
		size = kva_page_size(hd, more, ARRAY_SIZE(more));
		ck_assert_int_gt(size, 0);
		for (size_t j = 0; j < ARRAY_SIZE(more); j++)
			check_layout(hd, size, &more[j]);
	}
}
END_TEST

START_TEST(test_page_size_invalid)
{
	struct kva_tier bad[] = {{3, 4, 1, 1}};
	struct kva_tier badg[] = {{8, 4, 3, 1}};
	struct kva_layout l;

	ck_assert_int_eq(kva_page_size(100, diffkv_tiers, 1), -EINVAL);
	ck_assert_int_eq(kva_page_size(128, diffkv_tiers, 0), -EINVAL);
	ck_assert_int_eq(kva_page_size(128, NULL, 1), -EINVAL);
	ck_assert_int_eq(kva_page_size(128, diffkv_tiers, KVA_TIERS_MAX + 1),
			 -EINVAL);
	ck_assert_int_eq(kva_page_size(128, bad, 1), -EINVAL);
	ck_assert_int_eq(kva_page_size(128, badg, 1), -EINVAL);
	ck_assert_int_eq(kva_page_layout(128, 6700, &diffkv_tiers[0], &l),
			 -EINVAL);
	ck_assert_int_eq(kva_page_layout(128, 128, &diffkv_tiers[0], &l),
			 -ENOSPC);
}
END_TEST

/* ---- batched operations ---- */

/* give every list of @slots a split of its prompt: hi + lo = prompt */
static void trim_split(struct kva_pool *pool, const uint32_t *slots,
		       const uint32_t *prompt, uint32_t n, uint64_t *seed)
{
	uint32_t lps = pool->lists_per_slot;
	uint32_t *hi = calloc(n * lps, 4), *lo = calloc(n * lps, 4);

	for (uint32_t k = 0; k < n * lps; k++) {
		uint32_t p = prompt[k / lps];
		uint32_t l = p ? kvtest_rand(seed) % (p + 1) : 0;

		lo[k] = l;
		hi[k] = p - l;
	}
	ck_assert_int_eq(kva_trim(pool, slots, n, hi, lo), 0);
	free(hi);
	free(lo);
}

/* one decode step: every list gains a token, now and then a demotion */
static void decode_step(struct kva_pool *pool, const uint32_t *slots,
			uint32_t n, uint64_t *seed)
{
	uint32_t lps = pool->lists_per_slot;

	ck_assert_int_eq(kva_append(pool, slots, n), 0);
	CHECK_POOL(pool);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < lps; j++) {
			uint32_t list = slots[i] * lps + j;
			uint32_t hi = pool->ntokens[2 * list];
			uint32_t lo = pool->ntokens[2 * list + 1];

			if (hi + lo >= pool->max_tokens)
				continue;
			if (hi && kvtest_rand(seed) % 4 == 0)
				lo++; /* one demoted, new token high */
			else
				hi++;
			ck_assert_int_eq(kva_set_tokens(pool, list, hi, lo), 0);
		}
}

START_TEST(test_alloc_smoke)
{
	uint64_t seed = kvtest_seed("alloc_smoke");
	uint32_t slots[] = {3, 0}, prompt[] = {100, 33};
	struct fixture f;
	struct kva_stats st;

	open_pool(&f, 4, 2, 2, 512, 8);
	ck_assert_uint_eq(f.pool->page_size, 6784);
	ck_assert_uint_eq(f.pool->pages_per_granule, 309);
	ck_assert_int_eq(kva_admit(f.pool, slots, prompt, 2), -ENOSPC);
	ck_assert_int_eq(kva_pool_balance(f.pool), 2);
	CHECK_POOL(f.pool);
	ck_assert_uint_eq(kva_nr_free(f.pool), 618);
	ck_assert_int_eq(kva_can_admit(f.pool, prompt, 2), 0);
	ck_assert_int_eq(kva_admit(f.pool, slots, prompt, 2), 0);
	CHECK_POOL(f.pool);
	/* exact worst case: 99 high + 1 low for 100, 32 + 1 for 33 */
	ck_assert_uint_eq(kva_admit_pages(f.pool, 100), 5);
	ck_assert_uint_eq(kva_admit_pages(f.pool, 33), 2);
	ck_assert_uint_eq(kva_admit_pages(f.pool, 32), 2);
	ck_assert_uint_eq(kva_admit_pages(f.pool, 0), 0);
	ck_assert_uint_eq(f.pool->nr_used, 4 * 5 + 4 * 2);
	trim_split(f.pool, slots, prompt, 2, &seed);
	CHECK_POOL(f.pool);
	for (int step = 0; step < 200; step++) {
		decode_step(f.pool, slots, 2, &seed);
		CHECK_POOL(f.pool);
	}
	kva_pool_stats(f.pool, &st);
	ck_assert_uint_eq(st.nr_used + st.nr_free, st.nr_pages);
	ck_assert_uint_eq(st.tail_bytes, G - 309 * 6784);
	ck_assert_int_eq(kva_free(f.pool, slots, 2), 0);
	CHECK_POOL(f.pool);
	ck_assert_uint_eq(f.pool->nr_used, 0);
	ck_assert_uint_eq(kva_nr_free(f.pool), 618);
	close_pool(&f);
}
END_TEST

/* every failing call: the errno, and not one bit of state changed */
#define EXPECT_UNCHANGED(pool, call, err)                                      \
	do {                                                                   \
		uint64_t __d = pool_digest(pool);                              \
		ck_assert_int_eq((call), (err));                               \
		ck_assert_uint_eq(pool_digest(pool), __d);                     \
		CHECK_POOL(pool);                                              \
	} while (0)

/* a host pool: the device-pool calls are no-ops or refusals, the flag
 * needs a CUDA context; the result latch keeps the first refusal */
START_TEST(test_pool_flags)
{
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 16 * G};
	struct kva_pool_params p = {
		.va_bytes = 4 * G,
		.budget_bytes = 4 * G,
		.head_dim = 128,
		.nr_tiers = 2,
		.nr_slots = 4,
		.nr_layers = 1,
		.nr_heads = 1,
		.max_tokens = 64,
	};
	static const int32_t seq[] = {0, -ENOSPC, 0, -E2BIG, 0};
	struct kvrt_ctx *ctx;
	struct kva_pool *pool = NULL;
	struct kva_view v;
	int32_t sticky = 0;

	memcpy(p.tiers, diffkv_tiers, 2 * sizeof(diffkv_tiers[0]));
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	p.ctx = ctx;
	p.flags = KVA_POOL_DEVICE;
	ck_assert_int_eq(kva_pool_create(&p, &pool), -EINVAL);
	p.flags = BIT(7);
	ck_assert_int_eq(kva_pool_create(&p, &pool), -EINVAL);
	ck_assert_ptr_null(pool);
	p.flags = 0;
	ck_assert_int_eq(kva_pool_create(&p, &pool), 0);
	ck_assert_int_eq(kva_pool_is_device(pool), 0);
	ck_assert_ptr_null(kva_pool_stream(pool));
	ck_assert_int_eq(kva_pool_device_view(pool, &v), -ENODEV);
	ck_assert_int_eq(kva_pool_grow(pool, 1), 0);
	ck_assert_int_eq(kva_pool_sync(pool), 0);
	ck_assert_uint_eq(kva_nr_free(pool), pool->tail - pool->head);
	CHECK_POOL(pool);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);

	for (size_t i = 0; i < ARRAY_SIZE(seq); i++) {
		ck_assert_int_eq(kva_err_latch_cpu(&seq[i], &sticky, NULL), 0);
		ck_assert_int_eq(sticky, i < 1 ? 0 : -ENOSPC);
	}
}
END_TEST

START_TEST(test_alloc_misuse)
{
	uint64_t seed = kvtest_seed("alloc_misuse");
	uint32_t s01[] = {0, 1}, s1[] = {1}, s2[] = {2}, dup[] = {2, 2};
	uint32_t bad[] = {99}, p01[] = {40, 70}, huge[] = {100000};
	uint32_t hi[8] = {0}, lo[8] = {0};
	struct fixture f;

	open_pool(&f, 4, 2, 2, 1024, 8);
	ck_assert_int_eq(kva_pool_grow(f.pool, 2), 0);
	ck_assert_int_eq(kva_admit(f.pool, s01, p01, 2), 0);
	trim_split(f.pool, s01, p01, 2, &seed);
	CHECK_POOL(f.pool);

	EXPECT_UNCHANGED(f.pool, kva_free(f.pool, NULL, 0), 0);
	EXPECT_UNCHANGED(f.pool, kva_append(f.pool, NULL, 0), 0);
	EXPECT_UNCHANGED(f.pool, kva_free(f.pool, NULL, 1), -EINVAL);
	EXPECT_UNCHANGED(f.pool, kva_admit(f.pool, s1, p01, 1), -EBUSY);
	EXPECT_UNCHANGED(f.pool, kva_admit(f.pool, dup, p01, 2), -EINVAL);
	EXPECT_UNCHANGED(f.pool, kva_admit(f.pool, bad, p01, 1), -EINVAL);
	EXPECT_UNCHANGED(f.pool, kva_admit(f.pool, s2, huge, 1), -E2BIG);
	EXPECT_UNCHANGED(f.pool, kva_append(f.pool, s2, 1), -ENOENT);
	EXPECT_UNCHANGED(f.pool, kva_trim(f.pool, s1, 1, hi, lo), -EBUSY);
	EXPECT_UNCHANGED(f.pool, kva_free(f.pool, s2, 1), -ENOENT);
	EXPECT_UNCHANGED(f.pool, kva_set_tokens(f.pool, 0, 100000, 0), -EINVAL);
	EXPECT_UNCHANGED(f.pool, kva_set_tokens(f.pool, 8, 0, 0), -ENOENT);
	/* a prefill slot: append and set_tokens refused, trim checked */
	ck_assert_int_eq(kva_admit(f.pool, s2, p01, 1), 0);
	EXPECT_UNCHANGED(f.pool, kva_append(f.pool, s2, 1), -EBUSY);
	EXPECT_UNCHANGED(f.pool, kva_set_tokens(f.pool, 8, 0, 0), -EBUSY);
	hi[3] = 1000; /* more than the reservation: the whole call fails */
	EXPECT_UNCHANGED(f.pool, kva_trim(f.pool, s2, 1, hi, lo), -EINVAL);
	hi[3] = 0;
	/* release slot 1, then use it: double free, append after release */
	ck_assert_int_eq(kva_free(f.pool, s1, 1), 0);
	CHECK_POOL(f.pool);
	EXPECT_UNCHANGED(f.pool, kva_free(f.pool, s1, 1), -ENOENT);
	EXPECT_UNCHANGED(f.pool, kva_free(f.pool, s01, 2), -ENOENT);
	EXPECT_UNCHANGED(f.pool, kva_append(f.pool, s01, 2), -ENOENT);
	/* a budget below what is mapped */
	EXPECT_UNCHANGED(f.pool, kva_pool_set_budget(f.pool, G), -EBUSY);
	ck_assert_int_eq(kva_pool_set_budget(f.pool, 4 * G), 0);
	EXPECT_UNCHANGED(f.pool, kva_pool_grow(f.pool, 3), -ENOSPC);
	/* out of pages: admission refused as a whole */
	{
		uint32_t s3[] = {3}, big[] = {1024};
		uint32_t before = f.pool->nr_granules;

		ck_assert_int_eq(kva_pool_grow(f.pool, 2), 0);
		ck_assert_uint_eq(f.pool->nr_granules, before + 2);
		big[0] = 1024;
		ck_assert_int_eq(kva_admit(f.pool, s3, big, 1), 0);
		ck_assert_int_eq(kva_free(f.pool, s3, 1), 0);
		CHECK_POOL(f.pool);
	}
	close_pool(&f);
}
END_TEST

/*
 * pessimistic: every slot admitted at max length until the pool is full,
 * every allocation refused as a whole, everything high tier (most pages).
 */
START_TEST(test_alloc_pessimistic)
{
	uint64_t seed = kvtest_seed("alloc_pessimistic");
	uint32_t nslots = 16, max = 600, admitted = 0;
	uint32_t slots[16], prompt[16];
	struct fixture f;

	open_pool(&f, nslots, 4, 2, max, 3);
	ck_assert_int_eq(kva_pool_grow(f.pool, 3), 0);
	for (uint32_t s = 0; s < nslots; s++) {
		uint32_t one[] = {s}, p[] = {max - 64};
		int ret;

		if (kva_can_admit(f.pool, p, 1)) {
			EXPECT_UNCHANGED(f.pool, kva_admit(f.pool, one, p, 1),
					 -ENOSPC);
			break;
		}
		ret = kva_admit(f.pool, one, p, 1);
		ck_assert_int_eq(ret, 0);
		CHECK_POOL(f.pool);
		slots[admitted] = s;
		prompt[admitted++] = p[0];
	}
	ck_assert_uint_gt(admitted, 2);
	/* all high: trim keeps ceil(536/32) = 17 pages per list */
	{
		uint32_t lps = f.pool->lists_per_slot;
		uint32_t *hi = calloc(admitted * lps, 4);
		uint32_t *lo = calloc(admitted * lps, 4);

		for (uint32_t k = 0; k < admitted * lps; k++)
			hi[k] = prompt[k / lps];
		ck_assert_int_eq(kva_trim(f.pool, slots, admitted, hi, lo), 0);
		free(hi);
		free(lo);
	}
	CHECK_POOL(f.pool);
	/* decode until the pool refuses: then nothing changed */
	for (int step = 0; step < 1000; step++) {
		uint64_t d = pool_digest(f.pool);
		int ret = kva_append(f.pool, slots, admitted);

		if (ret) {
			ck_assert_int_eq(ret, -ENOSPC);
			ck_assert_uint_eq(pool_digest(f.pool), d);
			break;
		}
		CHECK_POOL(f.pool);
		for (uint32_t i = 0; i < admitted; i++)
			for (uint32_t j = 0; j < f.pool->lists_per_slot; j++) {
				uint32_t l =
					slots[i] * f.pool->lists_per_slot + j;
				uint32_t hi = f.pool->ntokens[2 * l];

				if (hi < max)
					ck_assert_int_eq(
						kva_set_tokens(f.pool, l,
							       hi + 1, 0),
						0);
			}
	}
	(void)seed;
	ck_assert_int_eq(kva_free(f.pool, slots, admitted), 0);
	CHECK_POOL(f.pool);
	ck_assert_uint_eq(f.pool->nr_used, 0);
	close_pool(&f);
}
END_TEST

/*
 * pathological: the ring wraps many times; empty prompts; prompts at exact
 * page multiples; everything low (the symmetric swap moves every page);
 * sequences that reach max_tokens; one-slot frees and many-slot frees.
 */
START_TEST(test_alloc_pathological)
{
	uint64_t seed = kvtest_seed("alloc_pathological");
	struct fixture f;
	uint32_t all[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	uint32_t p[8] = {0, 32, 60, 64, 120, 1, 61, 96};
	uint32_t lps;

	open_pool(&f, 8, 1, 2, 120, 4);
	lps = f.pool->lists_per_slot;
	ck_assert_int_eq(kva_pool_grow(f.pool, 1), 0);
	for (int round = 0; round < 200; round++) {
		uint32_t *hi = calloc(8 * lps, 4), *lo = calloc(8 * lps, 4);

		ck_assert_int_eq(kva_admit(f.pool, all, p, 8), 0);
		CHECK_POOL(f.pool);
		for (uint32_t k = 0; k < 8 * lps; k++) {
			uint32_t mode = (round + k) % 3;

			/* all low, all high, or a random split */
			lo[k] = mode == 0 ? p[k / lps]
				: mode == 1
					? 0
					: kvtest_rand(&seed) % (p[k / lps] + 1);
			hi[k] = p[k / lps] - lo[k];
		}
		ck_assert_int_eq(kva_trim(f.pool, all, 8, hi, lo), 0);
		CHECK_POOL(f.pool);
		for (int step = 0; step < 130; step++)
			decode_step(f.pool, all, 8, &seed);
		CHECK_POOL(f.pool);
		if (round % 2) {
			ck_assert_int_eq(kva_free(f.pool, all, 8), 0);
		} else {
			for (uint32_t s = 0; s < 8; s++) {
				ck_assert_int_eq(
					kva_free(f.pool, &all[7 - s], 1), 0);
				CHECK_POOL(f.pool);
			}
		}
		CHECK_POOL(f.pool);
		free(hi);
		free(lo);
	}
	/* the ring wrapped: head went round it several times */
	ck_assert_uint_gt(f.pool->head, 3ULL * f.pool->nr_page_ids);
	close_pool(&f);
}
END_TEST

/*
 * The symmetric swap when the low pages' source and destination overlap:
 * 1000 high and 3000 low tokens in a 128-entry row keep 32 high and 50 low
 * pages, and [32, 82) overlaps [78, 128). Low page i must end at
 * width - 1 - i, each the page the prompt kernel wrote it to.
 */
START_TEST(test_alloc_trim_overlap)
{
	uint32_t slot[] = {0}, prompt[] = {4000};
	uint32_t hi[] = {1000}, lo[] = {3000}, before[50];
	struct fixture f;
	const uint32_t *t;
	uint32_t w;

	open_pool(&f, 1, 1, 1, 4000, 2);
	w = f.pool->width;
	ck_assert_uint_eq(w, 128);
	ck_assert_int_eq(kva_pool_grow(f.pool, 1), 0);
	ck_assert_int_eq(kva_admit(f.pool, slot, prompt, 1), 0);
	CHECK_POOL(f.pool);
	t = f.pool->table;
	ck_assert_uint_gt(32 + 2 * 50, w); /* the ranges overlap */
	for (uint32_t i = 0; i < 50; i++)
		before[i] = t[32 + i];
	ck_assert_int_eq(kva_trim(f.pool, slot, 1, hi, lo), 0);
	CHECK_POOL(f.pool);
	ck_assert_uint_eq(f.pool->npages[KVA_HI], 32);
	ck_assert_uint_eq(f.pool->npages[KVA_LO], 50);
	for (uint32_t i = 0; i < 50; i++)
		ck_assert_uint_eq(t[w - 1 - i], before[i]);
	ck_assert_int_eq(kva_free(f.pool, slot, 1), 0);
	close_pool(&f);
}
END_TEST

/* ---- page contents, for compaction ---- */

static uint32_t word(uint32_t list, uint32_t pos, uint32_t i)
{
	uint32_t x = list * 2654435761u ^ pos * 40503u ^ i * 97u;

	return x ^ (x >> 15);
}

static void fill_list(struct kva_pool *pool, uint32_t list, uint32_t *buf)
{
	const uint32_t *t = &pool->table[(size_t)list * pool->width];
	uint32_t nw = pool->page_size / 4;

	for (uint32_t e = 0; e < pool->width; e++) {
		if (t[e] == KVA_PAGE_NONE)
			continue;
		for (uint32_t i = 0; i < nw; i++)
			buf[i] = word(list, e, i);
		ck_assert_int_eq(kvrt_memcpy_to(pool->ctx,
						kva_page_addr(pool, t[e]), buf,
						pool->page_size),
				 0);
	}
}

static void verify_list(struct kva_pool *pool, uint32_t list, uint32_t *buf)
{
	const uint32_t *t = &pool->table[(size_t)list * pool->width];
	uint32_t nw = pool->page_size / 4;

	for (uint32_t e = 0; e < pool->width; e++) {
		if (t[e] == KVA_PAGE_NONE)
			continue;
		ck_assert_int_eq(kvrt_memcpy_from(pool->ctx, buf,
						  kva_page_addr(pool, t[e]),
						  pool->page_size),
				 0);
		/* one assertion per page: Check logs every one it passes */
		for (uint32_t i = 0; i < nw; i++)
			if (buf[i] != word(list, e, i))
				ck_abort_msg("list %u entry %u page %u word %u",
					     list, e, t[e], i);
	}
}

/* the CPU page copy: host backend addresses are host pointers */
START_TEST(test_copy_pages_cpu)
{
	uint64_t seed = kvtest_seed("copy_pages_cpu");
	struct fixture f;
	uint32_t src[300], dst[300], ppg, ps;
	uint8_t *ref;

	open_pool(&f, 1, 1, 1, 64, 4);
	ck_assert_int_eq(kva_pool_grow(f.pool, 4), 0);
	ppg = f.pool->pages_per_granule;
	ps = f.pool->page_size;
	ref = malloc(4 * G);
	for (size_t i = 0; i < 4 * G / 8; i++)
		((uint64_t *)ref)[i] = kvtest_rand(&seed);
	memcpy((void *)(uintptr_t)f.pool->base, ref, 4 * G);
	for (uint32_t i = 0; i < 300; i++) {
		src[i] = 2 * i;		      /* granules 0 and 1 */
		dst[i] = 2 * ppg + 2 * i + 1; /* granules 2 and 3 */
	}
	ck_assert_int_eq(
		kva_copy_pages_cpu(f.pool->base, ps, ppg, src, dst, 300, NULL),
		0);
	for (uint32_t i = 0; i < 300; i++)
		memcpy(ref + (size_t)(dst[i] / ppg) * G +
			       (size_t)(dst[i] % ppg) * ps,
		       ref + (size_t)(src[i] / ppg) * G +
			       (size_t)(src[i] % ppg) * ps,
		       ps);
	ck_assert(!memcmp((void *)(uintptr_t)f.pool->base, ref, 4 * G));
	free(ref);
	close_pool(&f);
}
END_TEST

/*
 * Fill @granules granules with one-page lists (prompt of one token), free
 * half of the slots at random, compact with @budget bytes per call until
 * done, checking invariants after every call and contents at the end.
 */
static void compact_half(uint32_t granules, uint64_t budget, const char *name)
{
	uint64_t seed = kvtest_seed(name);
	struct fixture f;
	struct kva_compact_control cc;
	struct kvrt_stream *stream;
	uint32_t lps, nslots, *slots, *one, *hi, *lo, nfree = 0;
	uint32_t *buf, calls = 0, before;
	struct kvrt_space_stats rs;

	/* 2 lists per slot, one page each */
	nslots = granules * 309 / 2;
	open_pool(&f, nslots, 1, 2, 64, granules);
	lps = f.pool->lists_per_slot;
	ck_assert_int_eq(kva_pool_grow(f.pool, granules), 0);
	slots = malloc(nslots * 4);
	one = malloc(nslots * 4);
	hi = malloc(nslots * lps * 4);
	lo = calloc(nslots * lps, 4);
	buf = malloc(f.pool->page_size);
	for (uint32_t s = 0; s < nslots; s++) {
		slots[s] = s;
		one[s] = 1;
	}
	for (uint32_t k = 0; k < nslots * lps; k++)
		hi[k] = 1;
	ck_assert_int_eq(kva_admit(f.pool, slots, one, nslots), 0);
	ck_assert_int_eq(kva_trim(f.pool, slots, nslots, hi, lo), 0);
	CHECK_POOL(f.pool);
	for (uint32_t l = 0; l < f.pool->nr_lists; l++)
		fill_list(f.pool, l, buf);

	/* free half of the slots at random, in one batched call */
	for (uint32_t s = nslots - 1; s > 0; s--) {
		uint32_t j = kvtest_rand(&seed) % (s + 1), x = slots[s];

		slots[s] = slots[j];
		slots[j] = x;
	}
	nfree = nslots / 2;
	ck_assert_int_eq(kva_free(f.pool, slots, nfree), 0);
	CHECK_POOL(f.pool);

	ck_assert_int_eq(kva_pool_need_compact(f.pool), 1);
	ck_assert_int_eq(kvrt_stream_create(f.ctx, &stream), 0);
	ck_assert_int_eq(kva_compact_init(&cc, f.pool, budget), 0);
	cc.streams = &stream;
	cc.nr_streams = 1;
	before = f.pool->nr_granules;
	do {
		ck_assert_int_eq(kva_compact(f.pool, &cc), 0);
		CHECK_POOL(f.pool);
		calls++;
		ck_assert_uint_lt(calls, 100000);
	} while (cc.result == KVA_COMPACT_BUDGET ||
		 cc.result == KVA_COMPACT_CONTINUE);
	ck_assert_int_ge(kva_compact_release(f.pool, KVRT_SHRINK_WAIT), 0);
	CHECK_POOL(f.pool);
	kvrt_space_stats(f.pool->space, &rs);
	printf("# %s: %u granules -> %u (runtime %u mapped), %llu pages "
	       "moved in %u calls, stopped: %s\n",
	       name, before, f.pool->nr_granules, rs.nr_mapped,
	       (unsigned long long)cc.pages_moved, calls,
	       kva_compact_reason(cc.result));
	ck_assert_uint_eq(rs.nr_mapped, f.pool->nr_granules);
	ck_assert_uint_ge((uint64_t)(before - f.pool->nr_granules) * 100,
			  (uint64_t)before * 45);
	if (budget)
		ck_assert_uint_gt(calls, 2);
	for (uint32_t i = nfree; i < nslots; i++)
		for (uint32_t j = 0; j < lps; j++)
			verify_list(f.pool, slots[i] * lps + j, buf);
	/* the pool still works: free everything, compact to nothing */
	ck_assert_int_eq(kva_free(f.pool, slots + nfree, nslots - nfree), 0);
	ck_assert_int_eq(kva_compact(f.pool, &cc), 0);
	ck_assert_int_ge(kva_compact_release(f.pool, KVRT_SHRINK_WAIT), 0);
	CHECK_POOL(f.pool);
	ck_assert_uint_eq(f.pool->nr_granules, 0);
	kva_compact_fini(&cc);
	ck_assert_int_eq(kvrt_stream_destroy(stream), 0);
	free(slots);
	free(one);
	free(hi);
	free(lo);
	free(buf);
	close_pool(&f);
}

/*
 * Fault injection: the n-th runtime call fails, for n = 1, 2, ... over pool
 * creation, grow and one compaction pass, until the operation succeeds.
 * A failed create leaves no runtime object behind; a failed grow changes
 * nothing; a failed compaction leaves every invariant true and every
 * page's contents intact, and the next attempt goes on from there.
 */
START_TEST(test_alloc_fault)
{
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 256 * G};
	struct kva_pool_params p = {
		.va_bytes = 8 * G,
		.budget_bytes = 8 * G,
		.head_dim = 128,
		.nr_tiers = 2,
		.nr_slots = 450,
		.nr_layers = 1,
		.nr_heads = 2,
		.max_tokens = 32,
	};
	uint32_t slots[450], one[450], hi[900], lo[900] = {0};
	struct kva_compact_control cc;
	struct kvrt_stream *stream;
	struct kvrt_counts c0, c1;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool = NULL;
	uint32_t *buf, n, failures = 0;
	int ret;

	memcpy(p.tiers, diffkv_tiers, 2 * sizeof(diffkv_tiers[0]));
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	p.ctx = ctx;
	kvrt_ctx_counts(ctx, &c0);
	for (n = 1;; n++) {
		kvrt_fault_inject(ctx, n, ENOMEM);
		ret = kva_pool_create(&p, &pool);
		kvrt_fault_inject(ctx, 0, 0);
		if (!ret)
			break;
		ck_assert_int_eq(ret, -ENOMEM);
		kvrt_ctx_counts(ctx, &c1);
		ck_assert_uint_eq(c1.va_ranges, c0.va_ranges);
		ck_assert_uint_eq(c1.handles, c0.handles);
		failures++;
	}
	for (n = 1;; n++) {
		uint64_t d = pool_digest(pool);

		kvrt_fault_inject(ctx, n, EIO);
		ret = kva_pool_grow(pool, 3);
		kvrt_fault_inject(ctx, 0, 0);
		if (!ret)
			break;
		ck_assert_uint_eq(pool_digest(pool), d);
		CHECK_POOL(pool);
		kvrt_ctx_counts(ctx, &c1);
		ck_assert_uint_eq(c1.mapped, 0);
		failures++;
	}
	CHECK_POOL(pool);

	/* 450 two-page slots over 3 granules, then every other one freed */
	for (uint32_t s = 0; s < 450; s++) {
		slots[s] = s;
		one[s] = 1;
		hi[2 * s] = hi[2 * s + 1] = 1;
	}
	ck_assert_int_eq(kva_admit(pool, slots, one, 450), 0);
	ck_assert_int_eq(kva_trim(pool, slots, 450, hi, lo), 0);
	buf = malloc(pool->page_size);
	for (uint32_t l = 0; l < pool->nr_lists; l++)
		fill_list(pool, l, buf);
	for (uint32_t s = 0; s < 225; s++)
		slots[s] = 2 * s;
	ck_assert_int_eq(kva_free(pool, slots, 225), 0);
	CHECK_POOL(pool);
	ck_assert_int_eq(kvrt_stream_create(ctx, &stream), 0);
	ck_assert_int_eq(kva_compact_init(&cc, pool, 0), 0);
	cc.streams = &stream;
	cc.nr_streams = 1;
	for (n = 1;; n++) {
		kvrt_fault_inject(ctx, n, EIO);
		ret = kva_compact(pool, &cc);
		kvrt_fault_inject(ctx, 0, 0);
		CHECK_POOL(pool);
		if (!ret && !kvrt_fault_pending(ctx))
			break;
		if (ret)
			failures++;
		ck_assert_uint_lt(n, 100000);
	}
	ck_assert_int_ge(kva_compact_release(pool, KVRT_SHRINK_WAIT), 0);
	CHECK_POOL(pool);
	ck_assert_uint_le(pool->nr_granules, 2);
	for (uint32_t s = 0; s < 225; s++)
		for (uint32_t j = 0; j < 2; j++)
			verify_list(pool, (2 * s + 1) * 2 + j, buf);
	printf("# alloc_fault: %u injected failures unwound\n", failures);
	kva_compact_fini(&cc);
	ck_assert_int_eq(kvrt_stream_destroy(stream), 0);
	free(buf);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_counts(ctx, &c1);
	ck_assert_uint_eq(c1.va_ranges, c0.va_ranges);
	ck_assert_uint_eq(c1.handles, c0.handles);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_compact_after_half_free)
{
	compact_half(64, 0, "compact_after_half_free");
}
END_TEST

/*
 * A fault at every backend call of one compaction increment, on a fresh
 * pool each time: whatever fails, the pool stays consistent. When only the
 * final unmapping is refused the increment succeeds with the emptied
 * granules left retired, and kva_compact_release() gives them back later
 * (once, this rebuilt the free ring twice).
 */
START_TEST(test_compact_shrink_refused)
{
	uint32_t slots[600], one[600], zero[600] = {0}, odd[300];
	uint32_t deferred = 0, failed = 0, n;

	for (uint32_t s = 0; s < 600; s++) {
		slots[s] = s;
		one[s] = 1;
	}
	for (uint32_t s = 0; s < 300; s++)
		odd[s] = 2 * s + 1;
	for (n = 1;; n++) {
		struct kva_compact_control cc;
		struct fixture f;
		uint64_t armed;
		int ret;

		open_pool(&f, 600, 1, 1, 32, 4);
		ck_assert_int_eq(kva_pool_grow(f.pool, 2), 0);
		ck_assert_int_eq(kva_admit(f.pool, slots, one, 600), 0);
		ck_assert_int_eq(kva_trim(f.pool, slots, 600, one, zero), 0);
		ck_assert_int_eq(kva_free(f.pool, odd, 300), 0);
		ck_assert_int_eq(kva_compact_init(&cc, f.pool, 0), 0);
		kvrt_fault_inject(f.ctx, n, EIO);
		ret = kva_compact(f.pool, &cc);
		armed = kvrt_fault_pending(f.ctx); /* n beyond every call */
		kvrt_fault_inject(f.ctx, 0, 0);
		CHECK_POOL(f.pool);
		if (ret) {
			ck_assert_int_eq(ret, -EIO);
			failed++;
		} else if (f.pool->nr_retired) {
			deferred++;
		}
		ck_assert_int_ge(kva_compact_release(f.pool, KVRT_SHRINK_WAIT),
				 0);
		CHECK_POOL(f.pool);
		ck_assert_uint_eq(f.pool->nr_granules, ret ? 2 : 1);
		kva_compact_fini(&cc);
		close_pool(&f);
		if (armed) {
			ck_assert_int_eq(ret, 0);
			break;
		}
		ck_assert_uint_lt(n, 2000);
	}
	printf("# compact_shrink_refused: %u calls, %u failed, %u left "
	       "granules retired\n",
	       n, failed, deferred);
	ck_assert_uint_gt(deferred, 0);
}
END_TEST

START_TEST(test_compact_incremental)
{
	compact_half(24, SZ_1M, "compact_incremental");
}
END_TEST

/* ---- randomized stress ---- */

/* ---- eviction (kva_evict()) and the counts "as held" ---- */

/* what a compress kernel stores of high token @i of @list */
static void put_hi(struct kva_pool *pool, uint32_t list, uint32_t i,
		   int32_t pos, float score)
{
	const struct kva_layout *l = &pool->layout[KVA_HI];
	uint32_t p = pool->table[(size_t)list * pool->width + i / l->tokens];
	uint8_t *pg = (uint8_t *)(uintptr_t)kva_page_addr(pool, p);

	memcpy(pg + l->pos_off + 4 * (i % l->tokens), &pos, 4);
	memcpy(pg + l->score_off + 4 * (i % l->tokens), &score, 4);
}

static void get_hi(struct kva_pool *pool, uint32_t list, uint32_t i,
		   int32_t *pos, float *score)
{
	const struct kva_layout *l = &pool->layout[KVA_HI];
	uint32_t p = pool->table[(size_t)list * pool->width + i / l->tokens];
	uint8_t *pg = (uint8_t *)(uintptr_t)kva_page_addr(pool, p);

	memcpy(pos, pg + l->pos_off + 4 * (i % l->tokens), 4);
	memcpy(score, pg + l->score_off + 4 * (i % l->tokens), 4);
}

/*
 * Two pools through the same calls: trim with the counts the lists hold
 * (NULL) against trim with the same counts passed in; decode; then
 * kva_evict() against kvk_evict_cpu() with a hand-computed quota followed
 * by kva_shrink(). Every array, every count and the surviving tokens'
 * positions and scores end identical; the refusals change nothing.
 */
START_TEST(test_evict_op)
{
	uint64_t seed = kvtest_seed("evict_op");
	uint32_t slots[3] = { 2, 0, 3 }, prompt[3] = { 50, 120, 9 };
	uint32_t keep[3], quota[3], base[3], evicted[3 * 4], lps, a;
	uint32_t hi[3 * 4], lo[3 * 4];
	int32_t prot[3];
	struct kvk_evict_args ea;
	struct fixture f[2];
	uint64_t d;
	int r0, r1;

	for (int k = 0; k < 2; k++) {
		open_pool(&f[k], 4, 2, 2, 300, 8);
		ck_assert_int_eq(kva_pool_grow(f[k].pool, 4), 0);
		ck_assert_int_eq(kva_admit(f[k].pool, slots, prompt, 3), 0);
	}
	lps = f[0].pool->lists_per_slot;
	a = f[0].pool->layout[KVA_HI].tokens;
	for (uint32_t k = 0; k < 3 * lps; k++) {
		uint32_t p = prompt[k / lps], l = slots[k / lps] * lps + k % lps;

		hi[k] = kvtest_rand(&seed) % (p + 1);
		lo[k] = kvtest_rand(&seed) % (p - hi[k] + 1);
		f[0].pool->ntokens[2 * l] = hi[k];
		f[0].pool->ntokens[2 * l + 1] = lo[k];
	}
	CHECK_POOL(f[0].pool);	/* prefill counts within the reservation */
	ck_assert_int_eq(kva_trim(f[0].pool, slots, 3, NULL, hi), -EINVAL);
	ck_assert_int_eq(kva_trim(f[0].pool, slots, 3, NULL, NULL), 0);
	ck_assert_int_eq(kva_trim(f[1].pool, slots, 3, hi, lo), 0);
	ck_assert_uint_eq(pool_digest(f[0].pool), pool_digest(f[1].pool));
	for (int step = 0; step < 40; step++) {
		uint64_t s0 = seed;

		decode_step(f[0].pool, slots, 3, &s0);
		decode_step(f[1].pool, slots, 3, &seed);
	}
	ck_assert_uint_eq(pool_digest(f[0].pool), pool_digest(f[1].pool));
	for (uint32_t k = 0; k < 3 * lps; k++) {
		uint32_t l = slots[k / lps] * lps + k % lps;

		for (uint32_t t = 0; t < f[0].pool->ntokens[2 * l]; t++) {
			float sc = (float)(kvtest_rand(&seed) % 512);

			put_hi(f[0].pool, l, t, (int32_t)t, sc);
			put_hi(f[1].pool, l, t, (int32_t)t, sc);
		}
	}
	for (uint32_t i = 0; i < 3; i++) {
		uint64_t have = 0;

		for (uint32_t j = 0; j < lps; j++)
			have += kvmm_div_round_up(
				f[1].pool->ntokens[2 * (slots[i] * lps + j)],
				a);
		keep[i] = (uint32_t)(have * 2 / 3);
		quota[i] = (uint32_t)(have - keep[i]);
		prot[i] = (int32_t)(prompt[i] + 40 - 8);
		base[i] = slots[i] * lps;
	}

	/* refusals: nothing changes */
	d = pool_digest(f[0].pool);
	ck_assert_int_eq(kva_evict(f[0].pool, slots, 3, NULL, prot, 2),
			 -EINVAL);
	ck_assert_int_eq(kva_evict(f[0].pool, (uint32_t[]){ 2, 2 }, 2, keep,
				   prot, 2),
			 -EINVAL);
	ck_assert_int_eq(kva_evict(f[0].pool, (uint32_t[]){ 1 }, 1, keep,
				   prot, 2),
			 -ENOENT);
	ck_assert_int_eq(kva_evict(f[0].pool, (uint32_t[]){ 9 }, 1, keep,
				   prot, 2),
			 -EINVAL);
	ck_assert_uint_eq(pool_digest(f[0].pool), d);

	r0 = kva_evict(f[0].pool, slots, 3, keep, prot, 2);
	ck_assert_int_gt(r0, 0);
	CHECK_POOL(f[0].pool);
	ck_assert_int_eq(kva_evict_args(f[1].pool, &ea), 0);
	ea.nr_seqs = 3;
	ea.list_base = base;
	ea.quota = quota;
	ea.protect_from = prot;
	ea.sinks = 2;
	ea.evicted = evicted;
	ck_assert_int_eq(kvk_evict_cpu(&ea, NULL), 0);
	r1 = kva_shrink(f[1].pool, slots, 3);
	ck_assert_int_eq(r0, r1);
	CHECK_POOL(f[1].pool);
	ck_assert_uint_eq(pool_digest(f[0].pool), pool_digest(f[1].pool));
	for (uint32_t k = 0; k < 3 * lps; k++) {
		uint32_t l = slots[k / lps] * lps + k % lps;

		for (uint32_t t = 0; t < f[0].pool->ntokens[2 * l]; t++) {
			int32_t p0, p1;
			float c0, c1;

			get_hi(f[0].pool, l, t, &p0, &c0);
			get_hi(f[1].pool, l, t, &p1, &c1);
			ck_assert_int_eq(p0, p1);
			ck_assert_float_eq(c0, c1);
		}
	}
	/* nothing left to evict: quota 0 frees nothing */
	ck_assert_int_eq(kva_evict(f[0].pool, slots, 3, keep, prot, 2), 0);
	CHECK_POOL(f[0].pool);
	for (int k = 0; k < 2; k++)
		close_pool(&f[k]);
}
END_TEST

/* kva_grow_cpu() is what kva_pool_grow() does: the same ring either way */
START_TEST(test_grow_cpu)
{
	struct fixture f[2];
	struct kva_view v;
	uint32_t gran[3] = { 5, 1, 6 };

	for (int k = 0; k < 2; k++)
		open_pool(&f[k], 2, 1, 1, 64, 8);
	ck_assert_int_eq(kva_pool_grow(f[0].pool, 3), 0);
	/* the runtime maps slots 0, 1, 2 first: grow the other pool by hand
	 * over the same ones, and also over others in another order */
	kva_pool_view(f[1].pool, &v);
	ck_assert_int_eq(kva_grow_cpu(&v, (uint32_t[]){ 0, 1, 2 }, 3,
				      f[1].pool->pages_per_granule, NULL),
			 0);
	ck_assert_uint_eq(f[1].pool->tail, f[0].pool->tail);
	ck_assert(!memcmp(f[0].pool->ring, f[1].pool->ring,
			  f[0].pool->tail * 4));
	ck_assert(!memcmp(f[0].pool->page_list, f[1].pool->page_list,
			  f[0].pool->nr_page_ids * 4));
	ck_assert_int_eq(kva_grow_cpu(&v, gran, 3,
				      f[1].pool->pages_per_granule, NULL),
			 0);
	for (uint32_t i = 0; i < 3 * f[1].pool->pages_per_granule; i++) {
		uint32_t p = f[1].pool->ring[f[0].pool->tail + i];

		ck_assert_uint_eq(p, gran[i / f[1].pool->pages_per_granule] *
					     f[1].pool->pages_per_granule +
				     i % f[1].pool->pages_per_granule);
		ck_assert_uint_eq(f[1].pool->page_list[p], KVA_OWNER_FREE);
	}
	/* put the hand-grown pool back as kva_check() expects to find it */
	for (uint32_t g = 0; g < 3; g++)
		f[1].pool->gran_mapped[g] = KVA_GRAN_MAPPED;
	close_pool(&f[0]);
	ck_assert_int_eq(kva_pool_destroy(f[1].pool), 0);
	kvrt_ctx_destroy(f[1].ctx);
}
END_TEST

/*
 * Issue 19: the arrays follow the budget, not the reservation. A pool
 * over 1024 granules of VA with a budget of one holds arrays for one; a
 * larger budget grows them and widens the rows up to what max_tokens
 * needs, each list's high pages staying at the left, its low pages moved
 * to the new right end, the free ring in the same order; the new pages
 * then serve a prompt no row of the old width could hold.
 */
START_TEST(test_budget_grow)
{
	uint64_t seed = kvtest_seed("budget_grow");
	struct kvrt_ctx_opts o = {.backend = KVRT_BACKEND_HOST,
				  .host_mem_bytes = 256 * G};
	struct kva_pool_params p = {
		.va_bytes = 1024 * G,
		.budget_bytes = G,
		.head_dim = 128,
		.nr_tiers = 2,
		.nr_slots = 4,
		.nr_layers = 2,
		.nr_heads = 2,
		.max_tokens = 1U << 16,
	};
	uint32_t slots[] = {0, 1}, prompt[] = {200, 150}, big = 2;
	uint32_t big_prompt = 500 * 32, lists = 2 * 4, w0, w1, ppg;
	uint32_t *rows, *ring;
	uint64_t nfree;
	struct kva_pool_cost cost;
	struct kva_pool *pool;
	struct kvrt_ctx *ctx;

	memcpy(p.tiers, diffkv_tiers, 2 * sizeof(diffkv_tiers[0]));
	ck_assert_int_eq(kva_pool_cost(&p, &cost), 0);
	ck_assert_int_eq(kvrt_ctx_create(&o, &ctx), 0);
	p.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&p, &pool), 0);
	CHECK_POOL(pool);
	ppg = pool->pages_per_granule;
	/* arrays for the budget's granule; rows of its pages + 3 */
	ck_assert_uint_eq(pool->va_gslots, 1024);
	ck_assert_uint_eq(pool->nr_gslots, 1);
	ck_assert_uint_eq(pool->nr_page_ids, ppg);
	ck_assert_uint_eq(pool->max_width, (1U << 16) / 32 + 3);
	ck_assert_uint_eq(pool->width, ppg + 3);
	ck_assert_uint_eq(cost.gslots, 1);
	ck_assert_uint_eq(cost.width, ppg + 3);
	ck_assert_uint_eq(cost.dev_bytes, 0);

	ck_assert_int_eq(kva_pool_grow(pool, 1), 0);
	ck_assert_int_eq(kva_admit(pool, slots, prompt, 2), 0);
	trim_split(pool, slots, prompt, 2, &seed);
	for (int step = 0; step < 40; step++)
		decode_step(pool, slots, 2, &seed);
	CHECK_POOL(pool);
	ck_assert_int_eq(kva_admit(pool, &big, &big_prompt, 1), -ENOSPC);

	/* what the rows and the ring hold before */
	w0 = pool->width;
	nfree = pool->tail - pool->head;
	rows = malloc((size_t)lists * w0 * 4);
	ring = malloc(nfree * 4);
	memcpy(rows, pool->table, (size_t)lists * w0 * 4);
	for (uint64_t i = 0; i < nfree; i++)
		ring[i] = pool->ring[(pool->head + i) % pool->nr_page_ids];

	/* not below what is mapped, not over the reservation */
	EXPECT_UNCHANGED(pool, kva_pool_set_budget(pool, 1025 * G), -EINVAL);
	EXPECT_UNCHANGED(pool, kva_pool_set_budget(pool, 3 * G + 1), -EINVAL);
	ck_assert_int_eq(kva_pool_set_budget(pool, 8 * G), 0);
	CHECK_POOL(pool);
	w1 = pool->width;
	ck_assert_uint_eq(pool->nr_gslots, 8);
	ck_assert_uint_eq(pool->nr_page_ids, 8 * ppg);
	ck_assert_uint_eq(w1, pool->max_width);	/* 8 * ppg + 3 is more */
	for (uint32_t l = 0; l < lists; l++) {
		uint32_t nh = pool->npages[2 * l], nl = pool->npages[2 * l + 1];

		ck_assert_uint_gt(nh + nl, 0);
		ck_assert(!memcmp(&pool->table[(size_t)l * w1],
				  &rows[(size_t)l * w0], nh * 4));
		ck_assert(!memcmp(&pool->table[(size_t)l * w1 + w1 - nl],
				  &rows[(size_t)l * w0 + w0 - nl], nl * 4));
	}
	ck_assert_uint_eq(pool->tail - pool->head, nfree);
	for (uint64_t i = 0; i < nfree; i++)
		ck_assert_uint_eq(
			pool->ring[(pool->head + i) % pool->nr_page_ids],
			ring[i]);

	/* the new budget's pages, up to the last one */
	ck_assert_int_eq(kva_pool_grow(pool, 7), 0);
	ck_assert_int_eq(kva_pool_grow(pool, 1), -ENOSPC);
	CHECK_POOL(pool);
	ck_assert_uint_gt(kva_admit_pages(pool, big_prompt), w0);
	ck_assert_int_eq(kva_admit(pool, &big, &big_prompt, 1), 0);
	CHECK_POOL(pool);
	for (int step = 0; step < 40; step++)
		decode_step(pool, slots, 2, &seed);
	while (kva_append(pool, slots, 2) == 0)
		for (uint32_t l = 0; l < lists; l++)
			ck_assert_int_eq(kva_set_tokens(pool, l,
					 pool->npages[2 * l] * 32,
					 pool->ntokens[2 * l + 1]), 0);
	CHECK_POOL(pool);
	ck_assert_uint_lt(kva_nr_free(pool), 2 * lists);

	/* a lower budget shrinks nothing */
	EXPECT_UNCHANGED(pool, kva_pool_set_budget(pool, 4 * G), -EBUSY);
	ck_assert_int_eq(kva_free(pool, &big, 1), 0);
	ck_assert_int_eq(kva_pool_set_budget(pool, 8 * G), 0);
	ck_assert_uint_eq(pool->nr_gslots, 8);
	ck_assert_uint_eq(pool->width, w1);
	CHECK_POOL(pool);
	free(rows);
	free(ring);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_alloc_stress)
{
	uint64_t seed = kvtest_seed("alloc_stress");
	const char *env = getenv("KVMM_STRESS_OPS");
	const uint32_t nslots = 24;
	/* CI: 60000 ops (a few seconds); KVMM_STRESS_OPS=N for long runs */
	const uint32_t ops = env ? (uint32_t)strtoul(env, NULL, 0) : 60000;
	struct fixture f;
	struct kva_compact_control cc;
	uint32_t lps, *hi, *lo, counts[8] = {0};
	uint32_t prompt_of[24] = {0};

	open_pool(&f, nslots, 2, 2, 700, 8);
	lps = f.pool->lists_per_slot;
	hi = calloc(nslots * lps, 4);
	lo = calloc(nslots * lps, 4);
	ck_assert_int_eq(kva_compact_init(&cc, f.pool, 64 * 6784), 0);
	for (uint32_t op = 0; op < ops; op++) {
		uint32_t pick[24], n = 0, want = kvtest_rand(&seed) % 6;
		uint32_t r = kvtest_rand(&seed) % 100;
		int ret;

		/* a random set of slots in the state the op wants */
		uint32_t st = r < 20   ? KVA_SLOT_FREE
			      : r < 35 ? KVA_SLOT_PREFILL
			      : r < 90 ? KVA_SLOT_DECODE
				       : KVA_SLOT_PREFILL;

		for (uint32_t s = 0; s < nslots && n <= want; s++) {
			uint32_t c = (s + (uint32_t)(seed >> 7)) % nslots;

			if (f.pool->slot_state[c] == st ||
			    (r >= 90 && f.pool->slot_state[c]))
				pick[n++] = c;
		}
		if (r >= 95) {
			ret = kva_compact(f.pool, &cc);
			ck_assert_int_eq(ret, 0);
			counts[5]++;
		} else if (r >= 93) {
			ret = kva_pool_balance(f.pool);
			ck_assert(ret >= 0 || ret == -ENOSPC);
			counts[6]++;
		} else if (!n) {
			continue;
		} else if (r < 20) {
			uint32_t p[24];

			for (uint32_t i = 0; i < n; i++)
				p[i] = prompt_of[pick[i]] =
					kvtest_rand(&seed) % 700;
			uint64_t d = pool_digest(f.pool);

			ret = kva_admit(f.pool, pick, p, n);
			if (ret) {
				ck_assert_int_eq(ret, -ENOSPC);
				ck_assert_uint_eq(pool_digest(f.pool), d);
				kva_pool_balance(f.pool);
			}
			counts[0]++;
		} else if (r < 35) {
			uint32_t p[24];

			for (uint32_t i = 0; i < n; i++)
				p[i] = prompt_of[pick[i]];
			trim_split(f.pool, pick, p, n, &seed);
			counts[1]++;
		} else if (r < 90) {
			uint64_t d = pool_digest(f.pool);

			ret = kva_append(f.pool, pick, n);
			if (ret) {
				ck_assert(ret == -ENOSPC || ret == -E2BIG);
				ck_assert_uint_eq(pool_digest(f.pool), d);
				if (ret == -E2BIG)
					ck_assert_int_eq(
						kva_free(f.pool, pick, n), 0);
				else
					kva_pool_balance(f.pool);
			} else {
				for (uint32_t i = 0; i < n; i++)
					for (uint32_t j = 0; j < lps; j++) {
						uint32_t l = pick[i] * lps + j;
						uint32_t h =
							f.pool->ntokens[2 * l];
						uint32_t o =
							f.pool->ntokens[2 * l +
									1];

						if (h + o >= 700)
							continue;
						if (h &&
						    kvtest_rand(&seed) % 3 == 0)
							o++;
						else
							h++;
						ck_assert_int_eq(
							kva_set_tokens(f.pool,
								       l, h, o),
							0);
					}
			}
			counts[2]++;
		} else {
			ck_assert_int_eq(kva_free(f.pool, pick, n), 0);
			counts[3]++;
		}
		CHECK_POOL(f.pool);
	}
	printf("# alloc_stress: %u ops: %u admit %u trim %u append %u free "
	       "%u compact %u balance\n",
	       ops, counts[0], counts[1], counts[2], counts[3], counts[5],
	       counts[6]);
	kva_compact_fini(&cc);
	free(hi);
	free(lo);
	close_pool(&f);
}
END_TEST

Suite *suite_allocator(void)
{
	Suite *s = suite_create("allocator");
	TCase *geo = tcase_create("geometry");
	TCase *ops = tcase_create("ops");
	TCase *cmp = tcase_create("compact");

	KV_ADD(geo, test_page_size_diffkv);
	KV_ADD(geo, test_page_size_head_dims);
	KV_ADD(geo, test_page_size_invalid);
	suite_add_tcase(s, geo);

	tcase_set_timeout(ops, 60);
	KV_ADD(ops, test_alloc_smoke);
	KV_ADD(ops, test_pool_flags);
	KV_ADD(ops, test_alloc_misuse);
	KV_ADD(ops, test_alloc_pessimistic);
	KV_ADD(ops, test_alloc_pathological);
	KV_ADD(ops, test_alloc_trim_overlap);
	KV_ADD(ops, test_alloc_stress);
	KV_ADD(ops, test_evict_op);
	KV_ADD(ops, test_grow_cpu);
	KV_ADD(ops, test_budget_grow);
	suite_add_tcase(s, ops);

	tcase_set_timeout(cmp, 60);
	KV_ADD(cmp, test_copy_pages_cpu);
	KV_ADD(cmp, test_alloc_fault);
	KV_ADD(cmp, test_compact_after_half_free);
	KV_ADD(cmp, test_compact_incremental);
	KV_ADD(cmp, test_compact_shrink_refused);
	suite_add_tcase(s, cmp);
	return s;
}
