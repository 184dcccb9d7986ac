// SPDX-License-Identifier: MIT
/*
 * check_place.c - two memory tiers in one pool and migration between them
 * (issue 16), on the host backend's emulated tiers: per-tier budgets,
 * granules and pages per tier, batched moves with a byte budget, chained
 * moves (a victim out, a hot page into its place), held pages fenced
 * against a reader stream, refusals and an injected copy fault that change
 * nothing, compaction that keeps every page in its tier, and the rewrite's
 * CPU reference. kva_check() after every operation.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kva.h"
#include "kvtest.h"
#include "pool_common.h"
#include "migrate.h"

#define G KVRT_GRANULE_SIZE
/* tokens per page of the fp16 pool below */
#define TPP (pool->layout[KVA_HI].tokens)

/* every piece of pool state, and the contents of every owned page */
static uint64_t pool_digest(const struct kva_pool *pool)
{
	uint64_t h = 14695981039346656037ULL;
	size_t ids = pool->nr_page_ids, lists = pool->nr_lists;

	h = fnv(h, &pool->head, sizeof(pool->head));
	h = fnv(h, &pool->tail, sizeof(pool->tail));
	h = fnv(h, &pool->nr_used, sizeof(pool->nr_used));
	h = fnv(h, &pool->nr_held, sizeof(pool->nr_held));
	h = fnv(h, &pool->nr_shadow, sizeof(pool->nr_shadow));
	/* the copies, not whether their array was made yet */
	for (uint32_t p = 0; p < pool->shadow_ids; p++)
		if (pool->shadow[p] != KVA_PAGE_NONE) {
			h = fnv(h, &p, 4);
			h = fnv(h, &pool->shadow[p], 4);
		}
	h = fnv(h, pool->ring, ids * 4);
	h = fnv(h, pool->page_list, ids * 4);
	h = fnv(h, pool->page_pos, ids * 4);
	h = fnv(h, pool->table, lists * pool->width * 4);
	h = fnv(h, pool->npages, lists * 8);
	h = fnv(h, pool->gran_mapped, pool->nr_gslots);
	h = fnv(h, pool->gran_mem, pool->nr_gslots);
	for (uint32_t p = 0; p < ids; p++)
		if (kva_owned(pool->page_list[p]))
			h = fnv(h, (void *)(uintptr_t)kva_page_addr(pool, p),
				pool->page_size);
	return h;
}

struct tiered {
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
};

/* a pool over @hbm HBM granules at most and @host host granules at most */
static void tiered_open(struct tiered *t, uint32_t slots, uint32_t lists,
			uint32_t hbm, uint32_t host)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 64 * G,
				   .host_tier_bytes = 64 * G };
	struct kva_pool_params p = {
		.va_bytes = 128 * G,
		.budget_bytes = (uint64_t)(hbm + host) * G,
		.head_dim = 128,
		.tiers = { { 16, 16, 1, 1 } },
		.nr_tiers = 1,
		.nr_slots = slots,
		.nr_layers = 1,
		.nr_heads = lists,
		.max_tokens = 1 << 16,
		.wmark_low = 1,
		.wmark_high = 1,
	};

	ck_assert_int_eq(kvrt_ctx_create(&o, &t->ctx), 0);
	p.ctx = t->ctx;
	ck_assert_int_eq(kva_pool_create(&p, &t->pool), 0);
	ck_assert_int_eq(kva_pool_set_mem_budget(t->pool, KVA_MEM_HBM,
						 (uint64_t)hbm * G), 0);
	ck_assert_int_eq(kva_pool_set_mem_budget(t->pool, KVA_MEM_HOST,
						 (uint64_t)host * G), 0);
	CHECK_POOL(t->pool);
}

static void tiered_close(struct tiered *t)
{
	CHECK_POOL(t->pool);
	ck_assert_int_eq(kva_pool_destroy(t->pool), 0);
	kvrt_ctx_destroy(t->ctx);
}

/* the byte pattern of table entry @e of @list: moves must carry it */
static void tag_fill(struct kva_pool *pool, uint32_t list, uint32_t e)
{
	uint32_t *w = (uint32_t *)(uintptr_t)kva_page_addr(
		pool, pool->table[(size_t)list * pool->width + e]);

	for (uint32_t i = 0; i < pool->page_size / 4; i++)
		w[i] = list * 2654435761U ^ e * 40503U ^ i;
}

static void tag_check(const struct kva_pool *pool)
{
	for (uint32_t l = 0; l < pool->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
			const uint32_t *w = (const uint32_t *)(uintptr_t)
				kva_page_addr(pool,
					      pool->table[(size_t)l * pool->width +
							  e]);

			for (uint32_t i = 0; i < pool->page_size / 4; i += 97)
				ck_assert_msg(w[i] == (l * 2654435761U ^
						       e * 40503U ^ i),
					      "list %u entry %u word %u", l, e,
					      i);
		}
}

/* admit @n slots of @tokens each into the high tier, tag every page */
static void fill(struct kva_pool *pool, uint32_t n, uint32_t tokens)
{
	uint32_t slots[16], prompt[16];
	uint32_t lps = pool->lists_per_slot;
	uint32_t *hi = calloc(n * lps, 4), *lo = calloc(n * lps, 4);

	for (uint32_t i = 0; i < n; i++) {
		slots[i] = i;
		prompt[i] = tokens;
	}
	for (uint32_t k = 0; k < n * lps; k++)
		hi[k] = tokens;
	ck_assert_int_eq(kva_admit(pool, slots, prompt, n), 0);
	ck_assert_int_eq(kva_trim(pool, slots, n, hi, lo), 0);
	for (uint32_t l = 0; l < n * lps; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++)
			tag_fill(pool, l, e);
	free(hi);
	free(lo);
	CHECK_POOL(pool);
}

/* owned pages of tier @mem, in page-id order; returns how many */
static uint32_t owned_of(const struct kva_pool *pool, uint32_t mem,
			 uint32_t *out)
{
	uint32_t n = 0;

	for (uint32_t p = 0; p < pool->nr_page_ids; p++)
		if (kva_owned(pool->page_list[p]) &&
		    kva_page_mem(pool, p) == mem)
			out[n++] = p;
	return n;
}

/* a random order of @a[0, n) */
static void shuffle(uint32_t *a, uint32_t n, uint64_t *seed)
{
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = kvtest_rand(seed) % i, x = a[i - 1];

		a[i - 1] = a[j], a[j] = x;
	}
}

START_TEST(test_tiers_grow)
{
	struct tiered t;
	struct kva_stats st;
	struct kva_pool *pool;
	uint32_t ppg;
	uint64_t d;

	tiered_open(&t, 4, 2, 2, 4);
	pool = t.pool;
	ppg = pool->pages_per_granule;
	ck_assert_uint_eq(kva_pool_room(pool), 6);
	/* HBM first, the rest from the host tier */
	ck_assert_int_eq(kva_pool_grow_auto(pool, 3), 0);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.granules_mem[KVA_MEM_HBM], 2);
	ck_assert_uint_eq(st.granules_mem[KVA_MEM_HOST], 1);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HBM], 2 * ppg);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HOST], ppg);
	/* the ring hands out HBM pages first */
	for (uint64_t i = 0; i < 2 * ppg; i++)
		ck_assert_uint_eq(kva_page_mem(pool, pool->ring[(pool->head + i) %
							      pool->nr_page_ids]),
				  KVA_MEM_HBM);
	/* over the room: refused, nothing changed */
	d = pool_digest(pool);
	ck_assert_int_eq(kva_pool_grow_auto(pool, 4), -ENOSPC);
	ck_assert_int_eq(kva_pool_grow_mem(pool, 1, KVA_MEM_HBM), -ENOSPC);
	ck_assert_int_eq(kva_pool_grow_mem(pool, 1, 2), -EINVAL);
	ck_assert_int_eq(kva_pool_set_mem_budget(pool, KVA_MEM_HBM, G), -EBUSY);
	ck_assert_int_eq(kva_pool_set_mem_budget(pool, KVA_MEM_HBM, 65 * G),
			 -E2BIG);
	ck_assert_int_eq(kva_pool_set_mem_budget(pool, 5, G), -EINVAL);
	ck_assert_uint_eq(pool_digest(pool), d);
	CHECK_POOL(pool);
	/* allocation takes the HBM pages first */
	fill(pool, 2, TPP * 100);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.used_mem[KVA_MEM_HOST], 0);
	ck_assert_uint_eq(st.used_mem[KVA_MEM_HBM], st.nr_used);
	/* a larger admission spills into the host tier */
	{
		uint32_t s = 2, pr = TPP * 2 * ppg;

		ck_assert_int_eq(kva_admit(pool, &s, &pr, 1), -ENOSPC);
		ck_assert_int_eq(kva_pool_grow_auto(pool, 3), 0);
		ck_assert_int_eq(kva_admit(pool, &s, &pr, 1), 0);
	}
	CHECK_POOL(pool);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.granules_mem[KVA_MEM_HOST], 4);
	ck_assert_uint_gt(st.used_mem[KVA_MEM_HOST], 0);
	ck_assert_uint_eq(st.used_mem[KVA_MEM_HBM] + st.used_mem[KVA_MEM_HOST],
			  st.nr_used);
	tiered_close(&t);
}
END_TEST

/*
 * Undoing a grow takes out the new granules' pages wherever the ring holds
 * them: a grow with host granules puts HBM pages first, so a new HBM
 * granule's pages sit at the head, not the tail
 */
START_TEST(test_tiers_ungrow_reordered)
{
	struct tiered t;
	struct kva_stats st0, st;
	struct kva_pool *pool;
	uint8_t *was;

	tiered_open(&t, 4, 2, 2, 4);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_mem(pool, 1, KVA_MEM_HBM), 0);
	ck_assert_int_eq(kva_pool_grow_mem(pool, 2, KVA_MEM_HOST), 0);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &st0);
	was = malloc(pool->nr_gslots);
	memcpy(was, pool->gran_mapped, pool->nr_gslots);
	ck_assert_int_eq(kva_pool_grow_mem(pool, 1, KVA_MEM_HBM), 0);
	/* the new HBM pages went to the head */
	ck_assert_uint_eq(kva_page_mem(pool, pool->ring[pool->head %
						       pool->nr_page_ids]),
			  KVA_MEM_HBM);
	ck_assert_int_eq(kva_pool_ungrow(pool, was), 0);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.granules_mem[KVA_MEM_HBM], 1);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HBM], st0.free_mem[KVA_MEM_HBM]);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HOST],
			  st0.free_mem[KVA_MEM_HOST]);
	free(was);
	tiered_close(&t);
}
END_TEST

/* the invariant checker sees a page whose tier disagrees with its granule */
START_TEST(test_tiers_check_catches)
{
	struct tiered t;
	char why[256];

	tiered_open(&t, 2, 1, 1, 1);
	ck_assert_int_eq(kva_pool_grow_auto(t.pool, 2), 0);
	CHECK_POOL(t.pool);
	t.pool->gran_mem[0] ^= 1;
	ck_assert_int_eq(kva_check(t.pool, why, sizeof(why)), -EUCLEAN);
	ck_assert_ptr_nonnull(strstr(why, "I7"));
	t.pool->gran_mem[0] ^= 1;
	t.pool->nr_gran_mem[KVA_MEM_HOST]++;
	ck_assert_int_eq(kva_check(t.pool, why, sizeof(why)), -EUCLEAN);
	t.pool->nr_gran_mem[KVA_MEM_HOST]--;
	tiered_close(&t);
}
END_TEST

/*
 * Random promotions and demotions over many calls with a byte budget:
 * every call stays within it, promoted pages end in HBM and demoted ones
 * on the host, the contents follow the tables, the invariants hold.
 */
START_TEST(test_migrate_random)
{
	uint64_t seed = kvtest_seed("migrate_random");
	struct tiered t;
	struct kva_migrate_control mc;
	struct kva_pool *pool;
	uint32_t *host, *hbm, nh, nb;

	tiered_open(&t, 4, 4, 1, 3);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 4), 0);
	fill(pool, 4, TPP * (pool->pages_per_granule / 5));
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 7 * pool->page_size), 0);
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	for (int it = 0; it < 60; it++) {
		uint32_t np, nd;

		nh = owned_of(pool, KVA_MEM_HOST, host);
		nb = owned_of(pool, KVA_MEM_HBM, hbm);
		ck_assert_uint_gt(nh, 0);
		/* shuffle, take a random prefix of each */
		shuffle(host, nh, &seed);
		shuffle(hbm, nb, &seed);
		np = kvtest_rand(&seed) % 9;
		nd = kvtest_rand(&seed) % 9;
		np = np < nh ? np : nh;
		nd = nd < nb ? nd : nb;
		mc.hbm_reserve = kvtest_rand(&seed) % 3;
		ck_assert_int_eq(kva_migrate(pool, &mc, host, np, hbm, nd), 0);
		CHECK_POOL(pool);
		ck_assert_uint_le(mc.call_bytes, mc.budget_bytes);
		for (uint32_t i = 0; i < mc.nr_moves; i++)
			ck_assert_uint_eq(kva_page_mem(pool, mc.dst[i]),
					  i < mc.nr_demote ? KVA_MEM_HOST
							   : KVA_MEM_HBM);
		if (mc.result == KVA_MIGRATE_DONE)
			ck_assert_uint_eq(mc.nr_moves - mc.nr_demote, np);
		tag_check(pool);
	}
	ck_assert_uint_gt(mc.pages_promoted, 0);
	ck_assert_uint_gt(mc.pages_demoted, 0);
	printf("# migrate_random: %llu promoted, %llu demoted, %llu bytes\n",
	       (unsigned long long)mc.pages_promoted,
	       (unsigned long long)mc.pages_demoted,
	       (unsigned long long)mc.bytes_moved);
	kva_migrate_fini(&mc);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/* HBM full: each promotion pairs with a victim, two pages of budget each */
START_TEST(test_migrate_swap_pairs)
{
	struct tiered t;
	struct kva_migrate_control mc;
	struct kva_pool *pool;
	uint32_t *host, *hbm, nh, nb, ppg;
	struct kva_stats st;

	tiered_open(&t, 2, 1, 1, 2);
	pool = t.pool;
	ppg = pool->pages_per_granule;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 3), 0);
	fill(pool, 2, TPP * (ppg * 3 / 4));	/* HBM full, host half */
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	nh = owned_of(pool, KVA_MEM_HOST, host);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 5 * pool->page_size), 0);
	/* no victims: what HBM has free (trim's spare pages), then no room */
	ck_assert_int_eq(kva_migrate(pool, &mc, host, 3, NULL, 0), 0);
	ck_assert_int_eq(mc.result, KVA_MIGRATE_NO_ROOM);
	ck_assert_uint_lt(mc.nr_moves, 3);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HBM], 0);
	nh = owned_of(pool, KVA_MEM_HOST, host);
	nb = owned_of(pool, KVA_MEM_HBM, hbm);
	/* budget of 5 pages: two pairs, then the budget */
	ck_assert_int_eq(kva_migrate(pool, &mc, host, 3, hbm, 3), 0);
	ck_assert_int_eq(mc.result, KVA_MIGRATE_BUDGET);
	ck_assert_uint_eq(mc.nr_demote, 2);
	ck_assert_uint_eq(mc.nr_moves, 4);
	/* the promoted pages took the victims' own pages */
	ck_assert_uint_eq(mc.dst[2], hbm[0]);
	ck_assert_uint_eq(mc.dst[3], hbm[1]);
	CHECK_POOL(pool);
	tag_check(pool);
	kva_pool_stats(pool, &st);
	ck_assert_uint_eq(st.free_mem[KVA_MEM_HBM], 0);
	(void)nh;
	(void)nb;
	kva_migrate_fini(&mc);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/* bad requests change nothing */
START_TEST(test_migrate_refused)
{
	struct tiered t;
	struct kva_migrate_control mc;
	struct kva_pool *pool;
	uint32_t *host, *hbm, bad[2];
	uint64_t d;

	tiered_open(&t, 2, 1, 1, 1);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 2), 0);
	fill(pool, 2, TPP * (pool->pages_per_granule * 3 / 4));
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	ck_assert_uint_ge(owned_of(pool, KVA_MEM_HOST, host), 1);
	ck_assert_uint_ge(owned_of(pool, KVA_MEM_HBM, hbm), 1);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 0), 0);
	d = pool_digest(pool);
	/* wrong tier, listed twice, out of range, not owned */
	ck_assert_int_eq(kva_migrate(pool, &mc, hbm, 1, NULL, 0), -EINVAL);
	ck_assert_int_eq(kva_migrate(pool, &mc, NULL, 0, host, 1), -EINVAL);
	bad[0] = bad[1] = host[0];
	ck_assert_int_eq(kva_migrate(pool, &mc, bad, 2, NULL, 0), -EINVAL);
	bad[0] = pool->nr_page_ids;
	ck_assert_int_eq(kva_migrate(pool, &mc, bad, 1, NULL, 0), -EINVAL);
	bad[0] = pool->ring[pool->head % pool->nr_page_ids];
	ck_assert_int_eq(kva_migrate(pool, &mc, NULL, 0, bad, 1), -EINVAL);
	ck_assert_int_eq(kva_migrate(pool, &mc, NULL, 1, NULL, 0), -EINVAL);
	ck_assert_uint_eq(pool_digest(pool), d);
	/* the marks were cleared: a good call still works */
	ck_assert_int_eq(kva_migrate(pool, &mc, host, 1, hbm, 1), 0);
	ck_assert_uint_ge(mc.nr_moves, 1);
	CHECK_POOL(pool);
	tag_check(pool);
	kva_migrate_fini(&mc);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/*
 * A copy that fails midway (the runtime's nth call) leaves the pool and
 * every page's contents as they were, chained victims included.
 */
START_TEST(test_migrate_copy_fault)
{
	struct tiered t;
	struct kva_migrate_control mc;
	struct kva_pool *pool;
	uint32_t *host, *hbm;
	uint64_t d;
	int failed = 0;

	tiered_open(&t, 2, 1, 1, 2);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 3), 0);
	fill(pool, 2, TPP * (pool->pages_per_granule * 5 / 4));
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	owned_of(pool, KVA_MEM_HOST, host);
	owned_of(pool, KVA_MEM_HBM, hbm);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 0), 0);
	for (uint64_t nth = 1; nth <= 12; nth++) {
		int ret;

		d = pool_digest(pool);
		kvrt_fault_inject(t.ctx, nth, EIO);
		ret = kva_migrate(pool, &mc, host, 3, hbm, 3);
		kvrt_fault_inject(t.ctx, 0, 0);
		CHECK_POOL(pool);
		tag_check(pool);
		if (ret) {
			ck_assert_int_eq(ret, -EIO);
			ck_assert_uint_eq(pool_digest(pool), d);
			failed++;
		} else {
			break;	/* past the last call: it went through */
		}
		/* the pages moved back would differ: keep the lists fresh */
		owned_of(pool, KVA_MEM_HOST, host);
		owned_of(pool, KVA_MEM_HBM, hbm);
	}
	ck_assert_int_ge(failed, 6);	/* 6 moves x 2 copies each */
	kva_migrate_fini(&mc);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/* the caller's copy (struct kva_migrate_control @copy) on the CPU */
struct copy_hook {
	struct kva_pool *pool;
	int calls;		/* in this kva_migrate() call */
	int fail_at;		/* call that fails with -EIO (0: none) */
	int saw_promote;	/* a promotions' batch came in this call */
};

static int copy_hook(void *arg, const uint32_t *src, const uint32_t *dst,
		     uint32_t n)
{
	struct copy_hook *h = arg;
	struct kva_pool *pool = h->pool;
	uint32_t to;

	if (++h->calls == h->fail_at)
		return -EIO;
	ck_assert_uint_gt(n, 0);
	to = kva_page_mem(pool, dst[0]);
	/* one batch: one direction, no destination also a source */
	for (uint32_t i = 0; i < n; i++) {
		ck_assert_uint_eq(kva_page_mem(pool, dst[i]), to);
		ck_assert_uint_ne(kva_page_mem(pool, src[i]), to);
		for (uint32_t j = 0; j < n; j++)
			ck_assert_uint_ne(dst[i], src[j]);
	}
	/* demotions (to the host) before promotions (to HBM) */
	ck_assert(!(h->saw_promote && to == KVA_MEM_HOST));
	h->saw_promote |= to == KVA_MEM_HBM;
	return kva_copy_pages_cpu(pool->base, pool->page_size,
				  pool->pages_per_granule, src, dst, n, NULL);
}

/*
 * Clean host copies (mc.keep_copies, kva_migrate_copy_out()), copied
 * through the runtime (_i 0) or a hook (_i 1): random promotions,
 * demotions and copies out; after each call the invariants (I8 among
 * them) and every page's contents hold, the bytes counted are the copies
 * made (a demotion to its clean copy copies nothing), a page not full
 * never gets a copy, a failed copy out changes nothing, and an operation
 * that frees pages drops every copy.
 */
START_TEST(test_migrate_clean_copies)
{
	uint64_t seed = kvtest_seed("migrate_clean_copies");
	struct kva_migrate_control mc;
	struct copy_hook h = { 0 };
	struct kva_pool *pool;
	struct tiered t;
	uint32_t *host, *hbm, nh, nb, most = 0;
	int fails = 0;

	tiered_open(&t, 4, 4, 1, 3);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 4), 0);
	/* three tokens over whole pages: each list's last page is partial */
	fill(pool, 4, TPP * (pool->pages_per_granule / 5) + 3);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 7 * pool->page_size), 0);
	mc.keep_copies = true;
	h.pool = pool;
	if (_i) {
		mc.copy = copy_hook;
		mc.copy_arg = &h;
	}
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	for (int it = 0; it < 80; it++) {
		uint32_t np, nd, copies = 0;

		nh = owned_of(pool, KVA_MEM_HOST, host);
		nb = owned_of(pool, KVA_MEM_HBM, hbm);
		shuffle(host, nh, &seed);
		shuffle(hbm, nb, &seed);
		if (it % 4 == 0) {
			uint32_t k = kvtest_rand(&seed) % 9;
			uint32_t had = pool->nr_shadow;
			uint64_t d = pool_digest(pool);
			int ret;

			k = k < nb ? k : nb;
			h.calls = h.saw_promote = 0;
			h.fail_at = _i && it % 12 == 0;
			ret = kva_migrate_copy_out(pool, &mc, hbm, k);
			if (h.fail_at && h.calls) {
				ck_assert_int_eq(ret, -EIO);
				ck_assert_uint_eq(pool_digest(pool), d);
				fails++;
			}
			h.fail_at = 0;
			if (ret == -EIO)
				continue;
			ck_assert_int_ge(ret, 0);
			ck_assert_uint_eq(pool->nr_shadow, had + (uint32_t)ret);
			for (uint32_t i = 0; i < k; i++)
				if (kva_page_sealed(pool, hbm[i]))
					ck_assert_uint_ne(pool->shadow[hbm[i]],
							  KVA_PAGE_NONE);
				else
					ck_assert(!pool->shadow ||
						  pool->shadow[hbm[i]] ==
							  KVA_PAGE_NONE);
			CHECK_POOL(pool);
			tag_check(pool);
			continue;
		}
		np = kvtest_rand(&seed) % 9;
		nd = kvtest_rand(&seed) % 9;
		np = np < nh ? np : nh;
		nd = nd < nb ? nd : nb;
		mc.hbm_reserve = kvtest_rand(&seed) % 3;
		h.calls = h.saw_promote = 0;
		ck_assert_int_eq(kva_migrate(pool, &mc, host, np, hbm, nd), 0);
		CHECK_POOL(pool);
		for (uint32_t i = 0; i < mc.nr_moves; i++) {
			copies += !mc.nocopy[i];
			ck_assert(!mc.nocopy[i] || i < mc.nr_demote);
		}
		ck_assert_uint_eq(mc.call_bytes,
				  (uint64_t)copies * pool->page_size);
		ck_assert_uint_le(mc.call_bytes, mc.budget_bytes);
		most = pool->nr_shadow > most ? pool->nr_shadow : most;
		tag_check(pool);
	}
	printf("# clean copies (%s): %llu promoted, %llu demoted, %llu of "
	       "them to their copy, %u copies at most\n",
	       _i ? "hook" : "runtime",
	       (unsigned long long)mc.pages_promoted,
	       (unsigned long long)mc.pages_demoted,
	       (unsigned long long)mc.clean_demoted, most);
	ck_assert_uint_gt(mc.clean_demoted, 0);
	ck_assert_uint_gt(most, 0);
	if (!_i)
		ck_assert_int_eq(fails, 0);
	/* the partial last page of a list is never copied */
	for (uint32_t l = 0; l < pool->nr_lists; l++) {
		uint32_t p = pool->table[(size_t)l * pool->width +
					 pool->npages[2 * l] - 1];

		ck_assert(!kva_page_sealed(pool, p));
		ck_assert_int_eq(kva_migrate_copy_out(pool, &mc, &p, 1), 0);
	}
	/* fewer tokens: the pages no longer full lose their copies */
	{
		uint32_t l = 1, nt = pool->ntokens[2 * l], p;

		ck_assert_int_eq(kva_set_tokens(pool, l, nt - 3 - TPP / 2, 0),
				 0);
		p = pool->table[(size_t)l * pool->width +
				(nt - 3 - TPP / 2) / TPP];
		ck_assert(!kva_page_sealed(pool, p));
		ck_assert(!pool->shadow || p >= pool->shadow_ids ||
			  pool->shadow[p] == KVA_PAGE_NONE);
		CHECK_POOL(pool);
	}
	/* freeing a sequence drops its copies (I8: no copy of a free page),
	 * and the last one leaves none */
	for (uint32_t sl = 0; sl < pool->nr_slots; sl++) {
		uint32_t before = pool->nr_shadow, mine = 0;

		for (uint32_t j = 0; j < pool->lists_per_slot; j++) {
			uint32_t l = sl * pool->lists_per_slot + j;

			for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
				uint32_t p = pool->table[(size_t)l *
							 pool->width + e];

				mine += p < pool->shadow_ids &&
					pool->shadow[p] != KVA_PAGE_NONE;
			}
		}
		ck_assert_int_eq(kva_free(pool, &sl, 1), 0);
		ck_assert_uint_eq(pool->nr_shadow, before - mine);
		CHECK_POOL(pool);
		tag_check(pool);
	}
	ck_assert_uint_eq(pool->nr_shadow, 0);
	kva_migrate_fini(&mc);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/*
 * Two identical pools, the same requests: one copies through the runtime,
 * the other through a copy hook of two batches; the pools stay identical
 * (state and contents). A hook failing at either batch changes nothing.
 */
START_TEST(test_migrate_copy_hook)
{
	uint64_t seed = kvtest_seed("migrate_copy_hook");
	struct tiered ta, tb;
	struct kva_migrate_control ma, mb;
	struct copy_hook h = { 0 };
	uint32_t *host, *hbm, nh, nb;
	int fails = 0;

	tiered_open(&ta, 2, 1, 1, 2);
	tiered_open(&tb, 2, 1, 1, 2);
	ck_assert_int_eq(kva_pool_grow_auto(ta.pool, 3), 0);
	ck_assert_int_eq(kva_pool_grow_auto(tb.pool, 3), 0);
	fill(ta.pool, 2, 16 * (ta.pool->pages_per_granule * 5 / 4));
	fill(tb.pool, 2, 16 * (tb.pool->pages_per_granule * 5 / 4));
	ck_assert_uint_eq(pool_digest(ta.pool), pool_digest(tb.pool));
	ck_assert_int_eq(kva_migrate_init(&ma, ta.pool, 9 * ta.pool->page_size),
			 0);
	ck_assert_int_eq(kva_migrate_init(&mb, tb.pool, 9 * tb.pool->page_size),
			 0);
	h.pool = tb.pool;
	mb.copy = copy_hook;
	mb.copy_arg = &h;
	host = malloc(ta.pool->nr_page_ids * 4);
	hbm = malloc(ta.pool->nr_page_ids * 4);
	for (int it = 0; it < 40; it++) {
		uint32_t np, nd;
		uint64_t d;
		int ret;

		nh = owned_of(ta.pool, KVA_MEM_HOST, host);
		nb = owned_of(ta.pool, KVA_MEM_HBM, hbm);
		np = kvtest_rand(&seed) % 6;
		nd = kvtest_rand(&seed) % 6;
		np = np < nh ? np : nh;
		nd = nd < nb ? nd : nb;
		for (uint32_t i = 0; i < np; i++) {	/* a random pick */
			uint32_t j = i + kvtest_rand(&seed) % (nh - i);
			uint32_t x = host[i];

			host[i] = host[j], host[j] = x;
		}
		ma.hbm_reserve = mb.hbm_reserve = kvtest_rand(&seed) % 3;
		/* every third call: the hook fails at one of its batches */
		d = pool_digest(tb.pool);
		h.fail_at = it % 3 == 2 ? 1 + (int)(kvtest_rand(&seed) % 2) : 0;
		h.calls = h.saw_promote = 0;
		ret = kva_migrate(tb.pool, &mb, host, np, hbm, nd);
		if (h.fail_at && h.calls >= h.fail_at) {
			ck_assert_int_eq(ret, -EIO);
			ck_assert_uint_eq(pool_digest(tb.pool), d);
			CHECK_POOL(tb.pool);
			fails++;
			h.fail_at = 0;
			h.calls = h.saw_promote = 0;
			ret = kva_migrate(tb.pool, &mb, host, np, hbm, nd);
		}
		ck_assert_int_eq(ret, 0);
		ck_assert_int_eq(kva_migrate(ta.pool, &ma, host, np, hbm, nd),
				 0);
		ck_assert_uint_eq(mb.nr_moves, ma.nr_moves);
		ck_assert_int_eq(h.calls, (mb.nr_demote > 0) +
					  (mb.nr_moves > mb.nr_demote));
		CHECK_POOL(tb.pool);
		ck_assert_uint_eq(pool_digest(ta.pool), pool_digest(tb.pool));
	}
	tag_check(tb.pool);
	ck_assert_uint_gt(mb.pages_promoted, 0);
	ck_assert_uint_gt(mb.pages_demoted, 0);
	ck_assert_int_gt(fails, 3);
	kva_migrate_fini(&ma);
	kva_migrate_fini(&mb);
	free(host);
	free(hbm);
	tiered_close(&ta);
	tiered_close(&tb);
}
END_TEST

static void slow_reader(void *arg)
{
	(void)arg;
	usleep(30000);
}

/* pages moved away from are held until the reader's work is done */
START_TEST(test_migrate_held)
{
	struct tiered t;
	struct kva_migrate_control mc;
	struct kva_pool *pool;
	struct kvrt_stream *st;
	uint32_t *host, *hbm, before;
	struct kva_stats s;

	tiered_open(&t, 2, 1, 1, 1);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 2), 0);
	fill(pool, 2, TPP * (pool->pages_per_granule - 20));
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	owned_of(pool, KVA_MEM_HOST, host);
	owned_of(pool, KVA_MEM_HBM, hbm);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 0), 0);
	/* make room in HBM: demote until 8 pages are free there */
	mc.hbm_reserve = 8;
	ck_assert_int_eq(kva_migrate(pool, &mc, NULL, 0, hbm, 8), 0);
	ck_assert_int_eq(mc.result, KVA_MIGRATE_DONE);
	ck_assert_uint_le(mc.nr_moves, 8);
	ck_assert_uint_eq(mc.nr_moves, mc.nr_demote);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &s);
	ck_assert_uint_eq(s.free_mem[KVA_MEM_HBM], 8);
	mc.hbm_reserve = 0;
	owned_of(pool, KVA_MEM_HOST, host);
	owned_of(pool, KVA_MEM_HBM, hbm);
	ck_assert_int_eq(kvrt_stream_create(t.ctx, &st), 0);
	ck_assert_int_eq(kvrt_stream_host_fn(st, slow_reader, NULL), 0);
	mc.streams = &st;
	mc.nr_streams = 1;
	before = (uint32_t)(pool->tail - pool->head);
	ck_assert_int_eq(kva_migrate(pool, &mc, host, 4, hbm, 2), 0);
	ck_assert_uint_eq(mc.nr_moves, 4);	/* free HBM pages first */
	ck_assert_uint_eq(pool->nr_held, 4);
	ck_assert_uint_eq(pool->tail - pool->head, before - 4);
	for (uint32_t i = 0; i < 4; i++)
		ck_assert_uint_eq(pool->page_list[host[i]], KVA_OWNER_HELD);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &s);
	ck_assert_uint_eq(s.nr_held, 4);
	/* compaction will not move held pages */
	{
		struct kva_compact_control cc;

		ck_assert_int_eq(kva_compact_init(&cc, pool, 0), 0);
		ck_assert_int_eq(kva_compact(pool, &cc), -EBUSY);
		kva_compact_fini(&cc);
	}
	ck_assert_int_eq(kva_migrate_reclaim(pool, 0), 0);
	ck_assert_int_eq(kva_migrate_reclaim(pool, 1), 4);
	ck_assert_uint_eq(pool->nr_held, 0);
	ck_assert_uint_eq(pool->tail - pool->head, before);
	CHECK_POOL(pool);
	tag_check(pool);
	kva_migrate_fini(&mc);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	free(host);
	free(hbm);
	tiered_close(&t);
}
END_TEST

/* compaction of a two-tier pool never changes a page's tier */
START_TEST(test_compact_keeps_tiers)
{
	uint64_t seed = kvtest_seed("compact_keeps_tiers");
	struct tiered t;
	struct kva_compact_control cc;
	struct kva_pool *pool;
	uint32_t *mem_of, half[8];
	struct kva_stats a, b;

	tiered_open(&t, 8, 2, 3, 3);
	pool = t.pool;
	ck_assert_int_eq(kva_pool_grow_auto(pool, 6), 0);
	fill(pool, 8, TPP * 70);
	for (uint32_t i = 0; i < 4; i++)
		half[i] = 2 * i + (kvtest_rand(&seed) & 1 ? 0 : 0);
	ck_assert_int_eq(kva_free(pool, half, 4), 0);
	CHECK_POOL(pool);
	kva_pool_stats(pool, &a);
	mem_of = malloc(pool->nr_lists * pool->width * 4);
	for (uint32_t i = 0; i < pool->nr_lists * pool->width; i++)
		mem_of[i] = pool->table[i] == KVA_PAGE_NONE ? 9 :
			    kva_page_mem(pool, pool->table[i]);
	ck_assert_int_eq(kva_compact_init(&cc, pool, 0), 0);
	ck_assert_int_eq(kva_compact(pool, &cc), 0);
	CHECK_POOL(pool);
	tag_check(pool);
	for (uint32_t i = 0; i < pool->nr_lists * pool->width; i++)
		ck_assert_uint_eq(mem_of[i], pool->table[i] == KVA_PAGE_NONE ?
			9 : kva_page_mem(pool, pool->table[i]));
	kva_pool_stats(pool, &b);
	ck_assert_uint_eq(a.used_mem[KVA_MEM_HBM], b.used_mem[KVA_MEM_HBM]);
	ck_assert_uint_eq(a.used_mem[KVA_MEM_HOST], b.used_mem[KVA_MEM_HOST]);
	ck_assert_uint_gt(cc.granules_released, 0);
	printf("# compact_keeps_tiers: %llu pages moved, %llu granules\n",
	       (unsigned long long)cc.pages_moved,
	       (unsigned long long)cc.granules_released);
	kva_compact_fini(&cc);
	free(mem_of);
	tiered_close(&t);
}
END_TEST

/* the rewrite reference on a hand-made chained batch, and its refusals */
START_TEST(test_migrate_rewrite_ref)
{
	uint32_t table[2 * 4], plist[8], ppos[8];
	/* page 1 (list 0, 0) -> 5; page 3 (list 1, 2) -> 1 (a chain) */
	const uint32_t src[] = { 1, 3 }, dst[] = { 5, 1 };
	const uint32_t list[] = { 0, 1 }, pos[] = { 0, 2 };
	const uint8_t leaves[] = { 0, 1 };
	struct kvk_migrate_args a = {
		.table = table, .width = 4, .page_list = plist,
		.page_pos = ppos, .nr_lists = 2, .nr_pages = 8, .n = 2,
		.src = src, .dst = dst, .list = list, .pos = pos,
		.src_leaves = leaves, .src_owner = 77,
	};
	uint32_t bad_dst[] = { 5, 8 };

	memset(table, 0xff, sizeof(table));
	memset(plist, 0xff, sizeof(plist));
	memset(ppos, 0xff, sizeof(ppos));
	table[0] = 1, table[4 + 2] = 3;
	plist[1] = 0, ppos[1] = 0, plist[3] = 1, ppos[3] = 2;
	a.dst = bad_dst;
	ck_assert_int_eq(kvk_migrate_rewrite_cpu(&a, NULL), -EINVAL);
	ck_assert_uint_eq(table[0], 1);
	a.dst = dst;
	ck_assert_int_eq(kvk_migrate_rewrite_cpu(&a, NULL), 0);
	ck_assert_uint_eq(table[0], 5);
	ck_assert_uint_eq(table[6], 1);
	ck_assert_uint_eq(plist[5], 0);
	ck_assert_uint_eq(plist[1], 1);
	ck_assert_uint_eq(ppos[1], 2);
	ck_assert_uint_eq(plist[3], 77);
	ck_assert_uint_eq(ppos[3], KVK_MIGRATE_POS_NONE);
	a.width = 0;
	ck_assert_int_eq(kvk_migrate_check(&a), -EINVAL);
}
END_TEST

/*
 * Every policy over a synthetic trace (drifting hot pages per list) on a
 * pool with HBM for a third of the pages: kva_check() after each step, the
 * byte budget kept, the recent pages in HBM for all but static, and the
 * oracle's weighted hit ratio at least static's and importance's.
 */
/* the reference order: value descending, then entry ascending */
static const float *ref_val;

static int ref_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	if (ref_val[x] != ref_val[y])
		return ref_val[x] > ref_val[y] ? -1 : 1;
	return x < y ? -1 : 1;
}

/*
 * kva_place_plan() selects the top entries instead of sorting them all: its
 * lists equal those of a full sort of every entry (the values it left in
 * pl->val, many of them tied), for random masses and HBM caps; the
 * importance policy's margin only cuts its promotions short.
 */
START_TEST(test_plan_equals_sort)
{
	uint64_t seed = kvtest_seed("plan_equals_sort");

	for (int round = 0; round < 12; round++) {
		enum kva_place_policy pol = round % 3 == 0 ? KVA_PLACE_STATIC :
					    round % 3 == 1 ? KVA_PLACE_TIER :
							     KVA_PLACE_IMPORTANCE;
		struct tiered t;
		struct kva_pool *pool;
		struct kva_place pl;
		uint32_t *pro, *dem, *ord, *rp, *rd, np, nd, n = 0, cap;
		uint32_t lists = 4, w, rnp = 0, rnd = 0;
		struct kva_stats st;
		float *mass;

		tiered_open(&t, 2, 2, 1, 3);
		pool = t.pool;
		ck_assert_int_eq(kva_pool_grow_auto(pool, 4), 0);
		fill(pool, 2, TPP * (pool->pages_per_granule * 3 / 4 +
				     (uint32_t)(kvtest_rand(&seed) % 20)));
		w = pool->width;
		mass = calloc((size_t)lists * w, sizeof(float));
		pro = malloc(pool->nr_page_ids * 4);
		dem = malloc(pool->nr_page_ids * 4);
		ord = malloc((size_t)lists * w * 4);
		rp = malloc(pool->nr_page_ids * 4);
		rd = malloc(pool->nr_page_ids * 4);
		ck_assert_int_eq(kva_place_init(&pl, pool, pol), 0);
		pl.prefill_steps = 2;
		for (int s = 0; s < 4; s++) {
			for (size_t i = 0; i < (size_t)lists * w; i++)
				/* few distinct values: ties everywhere */
				mass[i] = kvtest_rand(&seed) % 3 ?
						  0 : (kvtest_rand(&seed) % 4) /
							      4.0f;
			ck_assert_int_eq(kva_place_observe(&pl, mass), 0);
		}
		ck_assert_int_eq(kva_place_plan(&pl, pool, pro, &np, dem,
						&nd), 0);
		/* the reference: every entry sorted */
		kva_pool_stats(pool, &st);
		cap = (uint32_t)(st.used_mem[KVA_MEM_HBM] +
				 st.free_mem[KVA_MEM_HBM]);
		for (uint32_t l = 0; l < lists; l++)
			for (uint32_t e = 0; e < pool->npages[2 * l]; e++)
				ord[n++] = l * w + e;
		ref_val = pl.val;
		qsort(ord, n, 4, ref_cmp);
		for (uint32_t k = 0; k < n; k++) {
			uint32_t p = pool->table[ord[k]];
			uint32_t m = kva_page_mem(pool, p);

			if (k < cap && m == KVA_MEM_HOST)
				rp[rnp++] = p;
			else if (k >= cap && m == KVA_MEM_HBM)
				rd[rnd++] = p;
		}
		ck_assert_uint_eq(nd, rnd);
		for (uint32_t k = 0; k < nd; k++)	/* coldest first */
			ck_assert_uint_eq(dem[k], rd[rnd - 1 - k]);
		if (pol == KVA_PLACE_IMPORTANCE)
			ck_assert_uint_le(np, rnp);
		else
			ck_assert_uint_eq(np, rnp);
		for (uint32_t k = 0; k < np; k++)
			ck_assert_uint_eq(pro[k], rp[k]);
		ck_assert(rnp + rnd > 0 || cap >= n);
		kva_place_fini(&pl);
		free(mass);
		free(pro);
		free(dem);
		free(ord);
		free(rp);
		free(rd);
		tiered_close(&t);
	}
}
END_TEST

/*
 * Every policy over a drifting trace, its plan made after each step's
 * reads (_i 0) or between its selection and its reads (_i 1,
 * kva_place_select()): the pool's invariants after every migration, the
 * newest pages in HBM, the oracle's hit ratio at least the others'; with
 * the plan at the selection, importance finds (almost) every selected page
 * in HBM, since a read it knows of is worth a copy.
 */
START_TEST(test_policies)
{
	uint64_t seed0 = kvtest_seed("policies");
	const bool at_select = _i;
	const uint32_t S = 24, lists = 4;
	double hit[KVA_PLACE_NR];

	for (int pol = 0; pol < KVA_PLACE_NR; pol++) {
		uint64_t seed = seed0;
		struct tiered t;
		struct kva_pool *pool;
		struct kva_place pl;
		struct kva_migrate_control mc;
		uint32_t *pro, *dem, np, nd, slots[2] = { 0, 1 }, w;
		float *mass;
		double ws = 0, wh = 0;
		size_t n;

		tiered_open(&t, 2, 2, 1, 3);
		pool = t.pool;
		ck_assert_int_eq(kva_pool_grow_auto(pool, 4), 0);
		fill(pool, 2, TPP * (pool->pages_per_granule * 3 / 4));
		w = pool->width;
		n = (size_t)lists * w;
		mass = calloc((S + 1) * n, sizeof(float));
		pro = malloc(pool->nr_page_ids * 4);
		dem = malloc(pool->nr_page_ids * 4);
		/* the trace: 6 hot entries per list, drifting */
		for (uint32_t l = 0; l < lists; l++) {
			uint32_t hot[6], np0 = pool->npages[2 * l];

			for (int h = 0; h < 6; h++)
				hot[h] = kvtest_rand(&seed) % np0;
			for (uint32_t s = 0; s < S; s++) {
				for (int h = 0; h < 6; h++) {
					if (kvtest_rand(&seed) % 10 == 0)
						hot[h] = kvtest_rand(&seed) %
							 np0;
					mass[s * n + (size_t)l * w + hot[h]] +=
						0.15f;
				}
				mass[s * n + (size_t)l * w + 0] += 0.05f;
			}
		}
		ck_assert_int_eq(kva_place_init(&pl, pool, pol), 0);
		ck_assert_int_eq(kva_migrate_init(&mc, pool,
						  16 * pool->page_size), 0);
		mc.hbm_reserve = lists;
		pl.prefill_steps = 4;
		ck_assert_str_ne(kva_place_name(pol), "?");
		for (uint32_t s = 0; s < S; s++) {
			const float *m = &mass[s * n];

			uint32_t had[4];

			for (uint32_t l = 0; l < lists; l++)
				had[l] = pool->npages[2 * l];
			ck_assert_int_eq(kva_append(pool, slots, 2), 0);
			for (uint32_t l = 0; l < lists; l++) {
				ck_assert_int_eq(kva_set_tokens(pool, l,
						 pool->ntokens[2 * l] + 1, 0),
						 0);
				for (uint32_t e = had[l];
				     e < pool->npages[2 * l]; e++)
					tag_fill(pool, l, e);
			}
			if (at_select) {
				ck_assert_int_eq(kva_place_select(&pl, m), 0);
				ck_assert_int_eq(kva_place_select(&pl, m),
						 -EINVAL);
				kva_place_future(&pl, m, S - s);
				ck_assert_int_eq(kva_place_plan(&pl, pool, pro,
								&np, dem, &nd),
						 0);
				ck_assert_int_eq(kva_migrate(pool, &mc, pro, np,
							     dem, nd), 0);
				ck_assert_uint_le(mc.call_bytes,
						  mc.budget_bytes);
				CHECK_POOL(pool);
			}
			for (size_t i = 0; i < n; i++) {
				if (m[i] <= 0 || s < 4)
					continue;
				ws += m[i];
				if (kva_page_mem(pool, pool->table[i]) ==
				    KVA_MEM_HBM)
					wh += m[i];
			}
			ck_assert_int_eq(kva_place_observe(&pl, m), 0);
			if (at_select)
				continue;
			kva_place_future(&pl, m + n, S - s - 1);
			ck_assert_int_eq(kva_place_plan(&pl, pool, pro, &np,
							dem, &nd), 0);
			ck_assert_int_eq(kva_migrate(pool, &mc, pro, np, dem,
						     nd), 0);
			ck_assert_uint_le(mc.call_bytes, mc.budget_bytes);
			CHECK_POOL(pool);
		}
		/* the newest page of every list ends in HBM */
		if (pol != KVA_PLACE_STATIC)
			for (uint32_t l = 0; l < lists; l++) {
				uint32_t e = pool->npages[2 * l] - 1;

				ck_assert_uint_eq(kva_page_mem(pool,
					pool->table[(size_t)l * w + e]),
					KVA_MEM_HBM);
			}
		hit[pol] = ws > 0 ? wh / ws : 1;
		printf("# policies (plan at %s): %-10s hit %.3f, %llu pages "
		       "moved\n", at_select ? "select" : "end",
		       kva_place_name(pol), hit[pol],
		       (unsigned long long)(mc.pages_promoted +
					    mc.pages_demoted));
		ck_assert(hit[pol] >= 0 && hit[pol] <= 1);
		tag_check(pool);
		kva_migrate_fini(&mc);
		kva_place_fini(&pl);
		free(mass);
		free(pro);
		free(dem);
		tiered_close(&t);
	}
	ck_assert(hit[KVA_PLACE_ORACLE] >= hit[KVA_PLACE_STATIC]);
	if (at_select)
		ck_assert(hit[KVA_PLACE_IMPORTANCE] >= 0.95);
	else
		ck_assert(hit[KVA_PLACE_ORACLE] >= hit[KVA_PLACE_IMPORTANCE]);
	{
		struct kva_place pl;
		struct tiered t;

		tiered_open(&t, 1, 1, 1, 1);
		struct kva_place p2;
		float *m;
		size_t n;

		/* a selection then the masses: the state of the masses alone */
		ck_assert_int_eq(kva_place_init(&pl, t.pool,
						KVA_PLACE_IMPORTANCE), 0);
		ck_assert_int_eq(kva_place_init(&p2, t.pool,
						KVA_PLACE_IMPORTANCE), 0);
		n = (size_t)pl.nr_lists * pl.width;
		m = calloc(n, sizeof(float));
		for (int s = 0; s < 3; s++) {
			for (size_t i = 0; i < n; i++)
				m[i] = (i * 7 + s) % 5 ? 0 : 0.1f * (s + 1);
			ck_assert_int_eq(kva_place_observe(&pl, m), 0);
			ck_assert_int_eq(kva_place_select(&p2, m), 0);
			ck_assert_int_eq(kva_place_observe(&p2, m), 0);
		}
		ck_assert_mem_eq(pl.freq, p2.freq, n * sizeof(float));
		ck_assert_mem_eq(pl.ema, p2.ema, n * sizeof(float));
		ck_assert_uint_eq(pl.steps, p2.steps);
		ck_assert_int_eq(kva_place_select(&p2, NULL), -EINVAL);
		free(m);
		kva_place_fini(&pl);
		kva_place_fini(&p2);
		ck_assert_int_eq(kva_place_init(&pl, t.pool, KVA_PLACE_NR),
				 -EINVAL);
		ck_assert_str_eq(kva_place_name(KVA_PLACE_NR), "?");
		tiered_close(&t);
	}
}
END_TEST

Suite *suite_place(void)
{
	Suite *s = suite_create("place");
	TCase *tc = tcase_create("tiers");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_tiers_grow);
	KV_ADD(tc, test_tiers_ungrow_reordered);
	KV_ADD(tc, test_tiers_check_catches);
	KV_ADD(tc, test_migrate_random);
	KV_ADD(tc, test_migrate_swap_pairs);
	KV_ADD(tc, test_migrate_refused);
	KV_ADD(tc, test_migrate_copy_fault);
	KV_ADD(tc, test_migrate_copy_hook);
	KV_ADD_LOOP(tc, test_migrate_clean_copies, 0, 2);
	KV_ADD(tc, test_migrate_held);
	KV_ADD(tc, test_compact_keeps_tiers);
	KV_ADD(tc, test_migrate_rewrite_ref);
	KV_ADD(tc, test_plan_equals_sort);
	KV_ADD_LOOP(tc, test_policies, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
