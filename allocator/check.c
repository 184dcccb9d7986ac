// SPDX-License-Identifier: MIT
/*
 * check.c - the allocator's invariants, checked from scratch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "kva_dev.h"

/**
 * DOC: invariants
 *
 *  I1 conservation: free pages + owned pages = pages of mapped granules,
 *     and owned pages = nr_used;
 *  I2 the free pages are exactly the ring interval [head, tail), each once,
 *     0 <= tail - head <= ring capacity;
 *  I3 no page is both free and owned, none is owned twice;
 *  I4 each table row holds npages[HI] ids from the left and npages[LO]
 *     from the right and nothing else, the reverse map points back at each,
 *     token counts fit the pages (at most one spare page per tier), and the
 *     row matches its slot's state;
 *  I5 pages of unmapped or retired granules are nowhere, and the granules
 *     mapped and retired agree with the runtime;
 *  I7 memory tiers: every mapped or retired granule's tier is the
 *     runtime's location of its slot, the pool's granule counts per tier
 *     are the mapped ones, and pages held by migration are exactly the
 *     @held list, each once, in a mapped granule, neither free nor owned;
 *     free + owned + held = pages (I1 with migration);
 *  I8 clean copies: each HBM page's copy is a mapped host page with owner
 *     KVA_OWNER_SHADOW naming it back, of no other page, and the page is
 *     owned, in HBM and full (kva_page_sealed()); nr_shadow of them;
 *     free + owned + held + copies = pages;
 *  I6 capacity: the arrays cover the budget's granules and no more than
 *     the reservation's (nr_page_ids = nr_gslots * pages_per_granule), the
 *     runtime keeps state for no slot past them, and the table width is
 *     min(max_width, nr_page_ids + 3).
 */

static int fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -EUCLEAN;
}

enum { SEEN_NONE, SEEN_FREE, SEEN_OWNED, SEEN_HELD, SEEN_SHADOW };

static int check_held(const struct kva_pool *pool, uint8_t *seen, char *why,
		      size_t len)
{
	uint32_t ppg = pool->pages_per_granule;

	if (pool->nr_held > pool->held_cap)
		return fail(why, len, "I7: %u held pages, room for %u",
			    pool->nr_held, pool->held_cap);
	for (uint32_t i = 0; i < pool->nr_held; i++) {
		uint32_t p = pool->held[i];

		if (p >= pool->nr_page_ids ||
		    pool->gran_mapped[p / ppg] != KVA_GRAN_MAPPED)
			return fail(why, len, "I7: held page %u not mapped", p);
		if (seen[p])
			return fail(why, len, "I7: held page %u also %s", p,
				    seen[p] == SEEN_FREE ? "free" : "held");
		if (pool->page_list[p] != KVA_OWNER_HELD)
			return fail(why, len, "I7: held page %u has owner %u",
				    p, pool->page_list[p]);
		seen[p] = SEEN_HELD;
	}
	return 0;
}

static int check_shadow(const struct kva_pool *pool, uint8_t *seen, char *why,
			size_t len)
{
	uint32_t ppg = pool->pages_per_granule, n = 0;

	if (pool->nr_shadow && pool->shadow_ids != pool->nr_page_ids)
		return fail(why, len, "I8: %u copies, array of %u ids for %u",
			    pool->nr_shadow, pool->shadow_ids,
			    pool->nr_page_ids);
	for (uint32_t p = 0; p < pool->shadow_ids; p++) {
		uint32_t h = pool->shadow[p];

		if (h == KVA_PAGE_NONE)
			continue;
		if (p >= pool->nr_page_ids || seen[p] != SEEN_OWNED ||
		    kva_page_mem(pool, p) != KVA_MEM_HBM ||
		    !kva_page_sealed(pool, p))
			return fail(why, len, "I8: page %u has a copy but is "
				    "not an owned full HBM page", p);
		if (h >= pool->nr_page_ids ||
		    pool->gran_mapped[h / ppg] != KVA_GRAN_MAPPED ||
		    kva_page_mem(pool, h) != KVA_MEM_HOST)
			return fail(why, len, "I8: copy %u of page %u is not a "
				    "mapped host page", h, p);
		if (seen[h] != SEEN_NONE ||
		    pool->page_list[h] != KVA_OWNER_SHADOW ||
		    pool->page_pos[h] != p)
			return fail(why, len, "I8: copy %u of page %u: owner "
				    "%u, names %u, seen %u", h, p,
				    pool->page_list[h], pool->page_pos[h],
				    seen[h]);
		seen[h] = SEEN_SHADOW;
		n++;
	}
	if (n != pool->nr_shadow)
		return fail(why, len, "I8: %u copies, pool says %u", n,
			    pool->nr_shadow);
	return 0;
}

static int check_mem(const struct kva_pool *pool, char *why, size_t len)
{
	uint32_t n[KVA_NR_MEM] = { 0 };

	for (uint32_t g = 0; g < pool->nr_gslots; g++) {
		struct kvrt_granule_info gi;

		if (pool->gran_mapped[g] == KVA_GRAN_UNMAPPED)
			continue;
		if (pool->gran_mem[g] >= KVA_NR_MEM)
			return fail(why, len, "I7: granule %u tier %u", g,
				    pool->gran_mem[g]);
		kvrt_space_granule(pool->space, g, &gi);
		if (!gi.mapped || gi.loc != pool->gran_mem[g])
			return fail(why, len,
				    "I7: granule %u is tier %u, runtime says "
				    "mapped %d location %d",
				    g, pool->gran_mem[g], gi.mapped, gi.loc);
		if (pool->gran_mapped[g] == KVA_GRAN_MAPPED)
			n[pool->gran_mem[g]]++;
	}
	for (int m = 0; m < KVA_NR_MEM; m++)
		if (n[m] != pool->nr_gran_mem[m])
			return fail(why, len,
				    "I7: %u granules of tier %d mapped, pool "
				    "says %u",
				    n[m], m, pool->nr_gran_mem[m]);
	return 0;
}

static int check_ring(const struct kva_pool *pool, uint8_t *seen, char *why,
		      size_t len)
{
	uint32_t ppg = pool->pages_per_granule;

	if (pool->tail < pool->head ||
	    pool->tail - pool->head > pool->nr_page_ids)
		return fail(why, len,
			    "I2: ring head %llu tail %llu capacity %u",
			    (unsigned long long)pool->head,
			    (unsigned long long)pool->tail, pool->nr_page_ids);
	for (uint64_t i = pool->head; i < pool->tail; i++) {
		uint32_t p = pool->ring[i % pool->nr_page_ids];

		if (p >= pool->nr_page_ids ||
		    pool->gran_mapped[p / ppg] != KVA_GRAN_MAPPED)
			return fail(why, len, "I5: ring[%llu] = %u not mapped",
				    (unsigned long long)i, p);
		if (seen[p])
			return fail(why, len, "I2: page %u twice in the ring",
				    p);
		if (pool->page_list[p] != KVA_OWNER_FREE)
			return fail(why, len,
				    "I3: page %u in the ring but owned by %u",
				    p, pool->page_list[p]);
		seen[p] = SEEN_FREE;
	}
	return 0;
}

static int check_entry(const struct kva_pool *pool, uint8_t *seen,
		       uint32_t list, uint32_t e, char *why, size_t len)
{
	uint32_t p = pool->table[(size_t)list * pool->width + e];

	if (p >= pool->nr_page_ids ||
	    pool->gran_mapped[p / pool->pages_per_granule] != KVA_GRAN_MAPPED)
		return fail(why, len, "I4: list %u entry %u = %u not mapped",
			    list, e, p);
	if (seen[p] == SEEN_FREE || seen[p] == SEEN_HELD)
		return fail(why, len, "I3: page %u %s and owned by list %u",
			    p, seen[p] == SEEN_FREE ? "free" : "held", list);
	if (seen[p] == SEEN_OWNED)
		return fail(why, len, "I3: page %u owned twice (list %u)", p,
			    list);
	if (pool->page_list[p] != list || pool->page_pos[p] != e)
		return fail(why, len,
			    "I4: rmap of page %u is (%u, %u), table (%u, %u)",
			    p, pool->page_list[p], pool->page_pos[p], list, e);
	seen[p] = SEEN_OWNED;
	return 0;
}

static int check_counts(const struct kva_pool *pool, uint32_t list, char *why,
			size_t len)
{
	uint32_t state = pool->slot_state[list / pool->lists_per_slot];
	const uint32_t *np = &pool->npages[2 * list];
	const uint32_t *nt = &pool->ntokens[2 * list];

	if ((uint64_t)np[0] + np[1] > pool->width)
		return fail(why, len, "I4: list %u holds %u + %u > %u", list,
			    np[0], np[1], pool->width);
	if (state == KVA_SLOT_FREE && (np[0] || np[1] || nt[0] || nt[1]))
		return fail(why, len, "I4: free slot's list %u not empty",
			    list);
	/* prefill: the kernels write both tiers into the reserved pages */
	if (state == KVA_SLOT_PREFILL &&
	    (np[1] || kvmm_div_round_up(nt[0], pool->layout[KVA_HI].tokens) +
				  kvmm_div_round_up(nt[1],
						    pool->layout[KVA_LO].tokens) >
			  np[0]))
		return fail(why, len,
			    "I4: prefill list %u has low pages or "
			    "more tokens than its pages hold",
			    list);
	if (state != KVA_SLOT_DECODE)
		return 0;
	for (int t = 0; t < KVA_NR_TIERS; t++) {
		uint64_t tpp = pool->layout[t].tokens;

		if (nt[t] > np[t] * tpp ||
		    np[t] > kvmm_div_round_up(nt[t], tpp) + 1)
			return fail(why, len,
				    "I4: list %u tier %d: %u tokens in %u "
				    "pages of %llu",
				    list, t, nt[t], np[t],
				    (unsigned long long)tpp);
	}
	return 0;
}

static int check_tables(const struct kva_pool *pool, uint8_t *seen,
			uint64_t *owned, char *why, size_t len)
{
	uint32_t w = pool->width;
	int ret;

	for (uint32_t s = 0; s < pool->nr_slots; s++)
		if (pool->slot_state[s] > KVA_SLOT_DECODE)
			return fail(why, len, "I4: slot %u state %u", s,
				    pool->slot_state[s]);
	for (uint32_t list = 0; list < pool->nr_lists; list++) {
		uint32_t nh = pool->npages[2 * list + KVA_HI];
		uint32_t nl = pool->npages[2 * list + KVA_LO];
		const uint32_t *t = &pool->table[(size_t)list * w];

		ret = check_counts(pool, list, why, len);
		if (ret)
			return ret;
		for (uint32_t e = 0; e < w; e++) {
			if (e < nh || e >= w - nl) {
				ret = check_entry(pool, seen, list, e, why,
						  len);
				if (ret)
					return ret;
				(*owned)++;
			} else if (t[e] != KVA_PAGE_NONE) {
				return fail(why, len,
					    "I4: list %u entry %u = %u outside "
					    "[0,%u) and [%u,%u)",
					    list, e, t[e], nh, w - nl, w);
			}
		}
	}
	return 0;
}

static int check_pages(const struct kva_pool *pool, const uint8_t *seen,
		       char *why, size_t len)
{
	uint32_t ppg = pool->pages_per_granule;
	uint32_t mapped = 0, retired = 0;
	struct kvrt_space_stats st;

	for (uint32_t g = 0; g < pool->nr_gslots; g++) {
		int in_use = pool->gran_mapped[g] == KVA_GRAN_MAPPED;

		mapped += in_use;
		retired += pool->gran_mapped[g] == KVA_GRAN_RETIRED;
		for (uint32_t j = 0; j < ppg; j++) {
			uint32_t p = g * ppg + j;
			uint32_t o = pool->page_list[p];

			if (!in_use && o != KVA_OWNER_UNMAPPED)
				return fail(why, len,
					    "I5: page %u of granule %u (state "
					    "%u) has owner %u",
					    p, g, pool->gran_mapped[g], o);
			if (in_use && seen[p] == SEEN_NONE)
				return fail(why, len,
					    "I1: page %u (owner %u) is neither "
					    "free nor in a table",
					    p, o);
		}
	}
	kvrt_space_stats(pool->space, &st);
	if (mapped != pool->nr_granules || retired != pool->nr_retired ||
	    st.nr_mapped != mapped + retired)
		return fail(why, len,
			    "I5: %u + %u retired granules mapped, "
			    "pool says %u + %u, runtime %u",
			    mapped, retired, pool->nr_granules,
			    pool->nr_retired, st.nr_mapped);
	return 0;
}

static int check_capacity(const struct kva_pool *pool, char *why, size_t len)
{
	uint64_t ids = (uint64_t)pool->nr_gslots * pool->pages_per_granule;
	uint64_t w = ids + 3 < pool->max_width ? ids + 3 : pool->max_width;
	struct kvrt_space_stats st;

	kvrt_space_stats(pool->space, &st);
	if (pool->nr_page_ids != ids || pool->nr_gslots > pool->va_gslots ||
	    st.nr_slots != pool->va_gslots)
		return fail(why, len,
			    "I6: %u page ids for %u of %u granule slots "
			    "(runtime %u)",
			    pool->nr_page_ids, pool->nr_gslots,
			    pool->va_gslots, st.nr_slots);
	if ((uint64_t)pool->nr_gslots * KVRT_GRANULE_SIZE < st.budget_bytes ||
	    st.cap_slots > pool->nr_gslots)
		return fail(why, len,
			    "I6: arrays for %u granule slots, budget %llu "
			    "bytes, runtime %u slots",
			    pool->nr_gslots,
			    (unsigned long long)st.budget_bytes, st.cap_slots);
	if (pool->width != w)
		return fail(why, len, "I6: width %u, want %llu", pool->width,
			    (unsigned long long)w);
	return 0;
}

/**
 * kva_check() - verify every invariant of a pool (see DOC: invariants)
 * @pool: pool, not being modified
 * @why: if not NULL, receives the first violation in words
 * @len: size of @why
 *
 * O(pages + lists * width); meant for tests, after every operation. A
 * device pool syncs its snapshot first, as kva_pool_stats() does.
 *
 * Return: 0; -EUCLEAN for a violated invariant; -ENOMEM.
 */
int kva_check(const struct kva_pool *pool, char *why, size_t len)
{
	uint8_t *seen;
	uint64_t owned = 0, nfree;
	uint64_t pages = (uint64_t)pool->nr_granules * pool->pages_per_granule;
	int ret;

	if (pool->dev) {
		ret = kva_dev_pull((struct kva_pool *)pool);
		if (ret)
			return ret;
	}
	ret = check_capacity(pool, why, len);
	if (ret)
		return ret;
	nfree = pool->tail - pool->head;
	seen = calloc(pool->nr_page_ids, 1);
	if (!seen)
		return -ENOMEM;
	ret = check_ring(pool, seen, why, len);
	if (!ret)
		ret = check_held(pool, seen, why, len);
	if (!ret)
		ret = check_tables(pool, seen, &owned, why, len);
	if (!ret)
		ret = check_shadow(pool, seen, why, len);
	if (!ret && (owned != pool->nr_used ||
		     owned + nfree + pool->nr_held + pool->nr_shadow != pages))
		ret = fail(why, len,
			   "I1: %llu owned (nr_used %llu) + %llu free + %u "
			   "held + %u copies != %llu pages",
			   (unsigned long long)owned,
			   (unsigned long long)pool->nr_used,
			   (unsigned long long)nfree, pool->nr_held,
			   pool->nr_shadow, (unsigned long long)pages);
	if (!ret)
		ret = check_mem(pool, why, len);
	if (!ret)
		ret = check_pages(pool, seen, why, len);
	free(seen);
	return ret;
}
