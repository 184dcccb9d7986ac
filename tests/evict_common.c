// SPDX-License-Identifier: MIT
/*
 * evict_common.c - random inputs of the eviction tests.
 *
 * Every token's K and V rows are filled with bytes derived from its
 * (row, position), so that after eviction a test can tell which token sits
 * in each slot and that it arrived whole.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "evict_common.h"
#include "kvq.h"
#include "kvtest.h"

#define GRANULE (2ULL << 20)

static void fill_token(const struct evict_case *c, uint32_t row, uint32_t i,
		       int32_t pos, float metric)
{
	const struct kvk_evict_args *a = &c->a;
	const struct kvk_attn_tier *t = &a->tier;
	uint32_t p = c->tables[(size_t)row * a->width + i / t->tokens];
	uint8_t *pg = c->pool + (uint64_t)(p / a->pages_per_granule) * GRANULE +
		      (uint64_t)(p % a->pages_per_granule) * a->page_size;
	uint32_t s = i % t->tokens, hd = a->head_dim;
	uint32_t kr = kvq_row_bytes(hd, t->kbits), vr = kvq_row_bytes(hd, t->vbits);
	uint32_t km = kvq_meta_bytes(t->kbits, t->kgroups);
	uint32_t vm = kvq_meta_bytes(t->vbits, t->vgroups);

	for (uint32_t b = 0; b < kr; b++)
		pg[t->k_off + s * kr + b] = (uint8_t)(row * 7 + pos * 13 + b);
	for (uint32_t b = 0; b < km; b++)
		pg[t->km_off + s * km + b] = (uint8_t)(row * 5 + pos * 3 + b);
	for (uint32_t b = 0; b < vr; b++)
		pg[t->v_off + s * vr + b] = (uint8_t)(row * 11 + pos * 17 + b);
	for (uint32_t b = 0; b < vm; b++)
		pg[t->vm_off + s * vm + b] = (uint8_t)(row * 3 + pos * 29 + b);
	memcpy(pg + t->score_off + 4 * s, &metric, 4);
	memcpy(pg + t->pos_off + 4 * s, &pos, 4);
}

/**
 * evict_case_make() - draw a random eviction call
 * @c: filled
 * @seed: generator state
 * @nr_seqs: sequences
 * @lists: lists per sequence
 * @head_dim: 64, 128 or 256
 * @tier: the pages' format
 * @max_pages: table width
 *
 * Lists hold 0 .. max_pages * tokens tokens at positions shuffled from
 * 0 .. n - 1; metrics are drawn from few values (ties between lists and
 * inside one), with an occasional NaN and -0.
 */
void evict_case_make(struct evict_case *c, uint64_t *seed, uint32_t nr_seqs,
		     uint32_t lists, uint32_t head_dim,
		     const struct kva_tier *tier, uint32_t max_pages)
{
	struct kvk_evict_args *a = &c->a;
	struct kva_layout l;
	uint32_t ps, pages, next = 0;
	int ret;

	memset(c, 0, sizeof(*c));
	ps = (uint32_t)kva_page_size(head_dim, tier, 1);
	ck_assert_int_eq(kva_page_layout(head_dim, ps, tier, &l), 0);
	a->nr_seqs = nr_seqs;
	a->lists = lists;
	a->head_dim = head_dim;
	a->tier = kva_attn_tier(tier, &l);
	a->page_size = ps;
	a->pages_per_granule = (uint32_t)(GRANULE / ps);
	a->width = max_pages;
	a->sinks = (uint32_t)(kvtest_rand(seed) % 3);
	c->nr_rows = (size_t)nr_seqs * (lists + 1); /* one spare row each */
	pages = (uint32_t)(c->nr_rows * max_pages);
	c->pool_bytes = ((pages + a->pages_per_granule - 1) /
			 a->pages_per_granule) * GRANULE;
	ret = posix_memalign((void **)&c->pool, 4096, c->pool_bytes);
	ck_assert_int_eq(ret, 0);
	memset(c->pool, 0xa5, c->pool_bytes);
	c->tables = malloc(c->nr_rows * max_pages * sizeof(uint32_t));
	c->ntokens = calloc(2 * c->nr_rows, sizeof(uint32_t));
	c->list_base = malloc(nr_seqs * sizeof(uint32_t));
	c->quota = malloc(nr_seqs * sizeof(uint32_t));
	c->protect_from = malloc(nr_seqs * sizeof(int32_t));
	c->evicted = malloc((size_t)nr_seqs * lists * sizeof(uint32_t));
	ck_assert(c->tables && c->ntokens && c->list_base && c->quota &&
		  c->protect_from && c->evicted);
	memset(c->evicted, 0xff, (size_t)nr_seqs * lists * sizeof(uint32_t));
	/* page ids: a random permutation, so rows interleave in granules */
	for (size_t i = 0; i < c->nr_rows * max_pages; i++)
		c->tables[i] = (uint32_t)i;
	for (size_t i = c->nr_rows * max_pages; i > 1; i--) {
		size_t j = kvtest_rand(seed) % i;
		uint32_t t = c->tables[i - 1];

		c->tables[i - 1] = c->tables[j];
		c->tables[j] = t;
	}
	/* sequences take rows in a shuffled order, one row left between */
	for (uint32_t s = 0; s < nr_seqs; s++) {
		uint32_t total = 0, maxn = 0;

		c->list_base[s] = next;
		next += lists + 1;
		for (uint32_t li = 0; li < lists; li++) {
			uint32_t row = c->list_base[s] + li;
			uint32_t n = (uint32_t)(kvtest_rand(seed) %
						(max_pages * l.tokens + 1));
			int32_t *perm = malloc((n + 1) * sizeof(int32_t));

			ck_assert(perm);
			c->ntokens[2 * row] = n;
			c->ntokens[2 * row + 1] = 0;
			for (uint32_t i = 0; i < n; i++)
				perm[i] = (int32_t)i;
			for (uint32_t i = n; i > 1; i--) {
				uint32_t j = (uint32_t)(kvtest_rand(seed) % i);
				int32_t t = perm[i - 1];

				perm[i - 1] = perm[j];
				perm[j] = t;
			}
			for (uint32_t i = 0; i < n; i++) {
				uint64_t r = kvtest_rand(seed);
				float m = (float)(r % 16) * 0.125f;

				if (r % 97 == 0)
					m = __builtin_nanf("");
				else if (r % 89 == 0)
					m = -0.0f;
				else if (r % 83 == 0)
					m = -1.5f;
				fill_token(c, row, i, perm[i], m);
			}
			free(perm);
			total += (n + l.tokens - 1) / l.tokens;
			if (n > maxn)
				maxn = n;
		}
		c->protect_from[s] = (int32_t)maxn -
				     (int32_t)(kvtest_rand(seed) % 8);
		/* from nothing to more than can be freed */
		c->quota[s] = (uint32_t)(kvtest_rand(seed) % (total + 3));
	}
	a->tables = c->tables;
	a->ntokens = c->ntokens;
	a->list_base = c->list_base;
	a->quota = c->quota;
	a->protect_from = c->protect_from;
	a->evicted = c->evicted;
	a->pool = (uint64_t)(uintptr_t)c->pool;
}

/* a deep copy of @src's memory, its args pointing at the copy */
void evict_case_copy(struct evict_case *dst, const struct evict_case *src)
{
	size_t ns = src->a.nr_seqs, nl = (size_t)ns * src->a.lists;
	int ret;

	*dst = *src;
	ret = posix_memalign((void **)&dst->pool, 4096, src->pool_bytes);
	ck_assert_int_eq(ret, 0);
	memcpy(dst->pool, src->pool, src->pool_bytes);
	dst->tables = malloc(src->nr_rows * src->a.width * 4);
	dst->ntokens = malloc(2 * src->nr_rows * 4);
	dst->list_base = malloc(ns * 4);
	dst->quota = malloc(ns * 4);
	dst->protect_from = malloc(ns * 4);
	dst->evicted = malloc(nl * 4);
	ck_assert(dst->tables && dst->ntokens && dst->list_base &&
		  dst->quota && dst->protect_from && dst->evicted);
	memcpy(dst->tables, src->tables, src->nr_rows * src->a.width * 4);
	memcpy(dst->ntokens, src->ntokens, 2 * src->nr_rows * 4);
	memcpy(dst->list_base, src->list_base, ns * 4);
	memcpy(dst->quota, src->quota, ns * 4);
	memcpy(dst->protect_from, src->protect_from, ns * 4);
	memcpy(dst->evicted, src->evicted, nl * 4);
	dst->a.tables = dst->tables;
	dst->a.ntokens = dst->ntokens;
	dst->a.list_base = dst->list_base;
	dst->a.quota = dst->quota;
	dst->a.protect_from = dst->protect_from;
	dst->a.evicted = dst->evicted;
	dst->a.pool = (uint64_t)(uintptr_t)dst->pool;
}

void evict_case_free(struct evict_case *c)
{
	free(c->pool);
	free(c->tables);
	free(c->ntokens);
	free(c->list_base);
	free(c->quota);
	free(c->protect_from);
	free(c->evicted);
	memset(c, 0, sizeof(*c));
}
