// SPDX-License-Identifier: MIT
/*
 * check_evict.c - per-head page eviction (kernels/kvevict.h), CPU reference
 * against an independent oracle: KV-Compress's own rule (sort every
 * eligible token of a sequence by key, walk up charging each to its list,
 * stop when the freed whole pages reach the quota).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "evict_common.h"
#include "kvq.h"
#include "kvtest.h"

#define GRANULE (2ULL << 20)

struct okey {
	uint64_t key;
	uint32_t list;
};

static int okey_cmp(const void *x, const void *y)
{
	const struct okey *a = x, *b = y;

	return a->key < b->key ? -1 : a->key > b->key;
}

static const uint8_t *tok_page(const struct evict_case *c, uint32_t row,
			       uint32_t i)
{
	const struct kvk_evict_args *a = &c->a;
	uint32_t p = c->tables[(size_t)row * a->width + i / a->tier.tokens];

	return c->pool + (uint64_t)(p / a->pages_per_granule) * GRANULE +
	       (uint64_t)(p % a->pages_per_granule) * a->page_size;
}

static int32_t tok_pos(const struct evict_case *c, uint32_t row, uint32_t i)
{
	int32_t v;

	memcpy(&v, tok_page(c, row, i) + c->a.tier.pos_off +
			   4 * (i % c->a.tier.tokens), 4);
	return v;
}

static float tok_metric(const struct evict_case *c, uint32_t row, uint32_t i)
{
	float v;

	memcpy(&v, tok_page(c, row, i) + c->a.tier.score_off +
			   4 * (i % c->a.tier.tokens), 4);
	return v;
}

/*
 * The oracle: which tokens (by position) each list of @c loses. Writes
 * gone[row][pos] = 1 and the expected per-list counts.
 */
static void oracle(const struct evict_case *c, uint8_t *gone, uint32_t cap,
		   uint32_t *want)
{
	const struct kvk_evict_args *a = &c->a;
	uint32_t tpp = a->tier.tokens;

	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		struct okey *v = malloc((size_t)a->lists * cap * sizeof(*v));
		uint32_t *charged = calloc(a->lists, 4), n = 0, freed = 0;

		ck_assert(v && charged);
		for (uint32_t l = 0; l < a->lists; l++) {
			uint32_t row = a->list_base[s] + l;

			for (uint32_t i = 0; i < a->ntokens[2 * row]; i++) {
				int32_t pos = tok_pos(c, row, i);

				if (pos < (int32_t)a->sinks ||
				    pos >= a->protect_from[s])
					continue;
				v[n].key = kvk_evict_key(tok_metric(c, row, i),
							 l * cap + i);
				v[n++].list = l;
			}
		}
		qsort(v, n, sizeof(*v), okey_cmp);
		for (uint32_t k = 0; k < n && freed < a->quota[s]; k++)
			if (++charged[v[k].list] % tpp == 0)
				freed++;
		for (uint32_t l = 0; l < a->lists; l++) {
			uint32_t row = a->list_base[s] + l, e;

			e = charged[l] / tpp * tpp;
			want[s * a->lists + l] = e;
			/* the list's e smallest keys */
			for (uint32_t k = 0; k < n && e; k++) {
				uint32_t i;

				if (v[k].list != l)
					continue;
				i = (uint32_t)(v[k].key & 0xffffffffu) - l * cap;
				gone[(size_t)row * cap + tok_pos(c, row, i)] = 1;
				e--;
			}
		}
		free(charged);
		free(v);
	}
}

/* every surviving token present once, whole; the lost ones gone */
static void check_result(const struct evict_case *before,
			 const struct evict_case *after, const uint8_t *gone,
			 uint32_t cap, const uint32_t *want)
{
	const struct kvk_evict_args *a = &after->a;
	const struct kvk_attn_tier *t = &a->tier;
	uint32_t kr = kvq_row_bytes(a->head_dim, t->kbits);
	uint32_t vr = kvq_row_bytes(a->head_dim, t->vbits);
	uint32_t km = kvq_meta_bytes(t->kbits, t->kgroups);
	uint32_t vm = kvq_meta_bytes(t->vbits, t->vgroups);
	uint8_t *seen = calloc(cap, 1);

	ck_assert(seen);
	for (uint32_t s = 0; s < a->nr_seqs; s++) {
		for (uint32_t l = 0; l < a->lists; l++) {
			uint32_t row = a->list_base[s] + l;
			uint32_t n0 = before->ntokens[2 * row];
			uint32_t e = want[s * a->lists + l];

			ck_assert_msg(a->evicted[s * a->lists + l] == e,
				      "seq %u list %u: evicted %u, oracle %u",
				      s, l, a->evicted[s * a->lists + l], e);
			ck_assert_uint_eq(a->ntokens[2 * row], n0 - e);
			memset(seen, 0, cap);
			for (uint32_t i = 0; i < n0 - e; i++) {
				int32_t pos = tok_pos(after, row, i);
				const uint8_t *pg = tok_page(after, row, i);
				uint32_t sl = i % t->tokens;

				ck_assert(pos >= 0 && (uint32_t)pos < n0);
				ck_assert_msg(!gone[(size_t)row * cap + pos],
					      "row %u keeps evicted pos %d",
					      row, pos);
				ck_assert(!seen[pos]);
				seen[pos] = 1;
				for (uint32_t b = 0; b < kr; b++)
					ck_assert_uint_eq(pg[t->k_off + sl * kr + b],
						(uint8_t)(row * 7 + pos * 13 + b));
				for (uint32_t b = 0; b < km; b++)
					ck_assert_uint_eq(pg[t->km_off + sl * km + b],
						(uint8_t)(row * 5 + pos * 3 + b));
				for (uint32_t b = 0; b < vr; b++)
					ck_assert_uint_eq(pg[t->v_off + sl * vr + b],
						(uint8_t)(row * 11 + pos * 17 + b));
				for (uint32_t b = 0; b < vm; b++)
					ck_assert_uint_eq(pg[t->vm_off + sl * vm + b],
						(uint8_t)(row * 3 + pos * 29 + b));
			}
		}
		/* the quota, or everything whole pages allow */
		{
			uint64_t freed = 0;

			for (uint32_t l = 0; l < a->lists; l++)
				freed += want[s * a->lists + l] / t->tokens;
			ck_assert(freed <= a->quota[s]);
		}
	}
	free(seen);
}

static void run_case(uint64_t *seed, uint32_t nr_seqs, uint32_t lists,
		     uint32_t hd, const struct kva_tier *tier, uint32_t width)
{
	struct evict_case c, ref;
	uint32_t cap, *want;
	uint8_t *gone;

	evict_case_make(&c, seed, nr_seqs, lists, hd, tier, width);
	evict_case_copy(&ref, &c);
	cap = width * c.a.tier.tokens;
	gone = calloc(c.nr_rows * cap, 1);
	want = calloc((size_t)nr_seqs * lists, 4);
	ck_assert(gone && want);
	oracle(&c, gone, cap, want);
	ck_assert_int_eq(kvk_evict_cpu(&c.a, NULL), 0);
	check_result(&ref, &c, gone, cap, want);
	free(gone);
	free(want);
	evict_case_free(&ref);
	evict_case_free(&c);
}

START_TEST(test_evict_oracle)
{
	static const struct kva_tier tiers[] = {
		{ 16, 16, 1, 1 }, { 8, 4, 1, 2 }, { 4, 2, 2, 4 }, { 1, 1, 4, 1 },
	};
	static const uint32_t hds[] = { 64, 128, 256 };
	uint64_t seed = kvtest_seed(__func__);

	for (int r = 0; r < 24; r++) {
		const struct kva_tier *t = &tiers[kvtest_rand(&seed) % 4];
		uint32_t hd = hds[kvtest_rand(&seed) % 3];

		run_case(&seed, 1 + (uint32_t)(kvtest_rand(&seed) % 4),
			 1 + (uint32_t)(kvtest_rand(&seed) % 9), hd, t,
			 1 + (uint32_t)(kvtest_rand(&seed) % 5));
	}
}
END_TEST

/* quota 0 and a quota over what can go: nothing, then everything */
START_TEST(test_evict_edges)
{
	struct kva_tier t = { 16, 16, 1, 1 };
	uint64_t seed = kvtest_seed(__func__);
	struct evict_case c, ref;

	evict_case_make(&c, &seed, 2, 4, 64, &t, 3);
	evict_case_copy(&ref, &c);
	c.quota[0] = 0;
	c.quota[1] = UINT32_MAX;
	c.protect_from[1] = INT32_MAX;
	c.a.sinks = 0;
	ck_assert_int_eq(kvk_evict_cpu(&c.a, NULL), 0);
	for (uint32_t l = 0; l < 4; l++) {
		uint32_t r0 = c.list_base[0] + l, r1 = c.list_base[1] + l;
		uint32_t tpp = c.a.tier.tokens;

		ck_assert_uint_eq(c.evicted[l], 0);
		ck_assert_uint_eq(c.ntokens[2 * r0], ref.ntokens[2 * r0]);
		ck_assert_uint_eq(c.evicted[4 + l],
				  ref.ntokens[2 * r1] / tpp * tpp);
		ck_assert_uint_eq(c.ntokens[2 * r1], ref.ntokens[2 * r1] % tpp);
	}
	ck_assert_mem_eq(c.pool, ref.pool, 0);
	evict_case_free(&ref);
	evict_case_free(&c);
}
END_TEST

/* bad arguments: -EINVAL and not a byte changed */
START_TEST(test_evict_invalid)
{
	struct kva_tier t = { 8, 4, 1, 2 };
	uint64_t seed = kvtest_seed(__func__);
	struct evict_case c, ref;
	struct kvk_evict_args b;

	evict_case_make(&c, &seed, 2, 3, 128, &t, 4);
	evict_case_copy(&ref, &c);
	b = c.a, b.head_dim = 96;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	b = c.a, b.tier.kbits = 3;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	b = c.a, b.tier.tokens = 1000;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	b = c.a, b.quota = NULL;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	b = c.a, b.pages_per_granule = 1000;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	b = c.a, b.lists = 1u << 30;
	ck_assert_int_eq(kvk_evict_cpu(&b, NULL), -EINVAL);
	ck_assert_int_eq(kvk_evict_cpu(NULL, NULL), -EINVAL);
	ck_assert_mem_eq(c.pool, ref.pool, c.pool_bytes);
	ck_assert_mem_eq(c.ntokens, ref.ntokens, 2 * c.nr_rows * 4);
	ck_assert_mem_eq(c.evicted, ref.evicted, 2 * 3 * 4);
	evict_case_free(&ref);
	evict_case_free(&c);
}
END_TEST

/* the key orders metrics as floats do, NaN last, -0 as +0 */
START_TEST(test_evict_key_order)
{
	static const float m[] = { -1e30f, -2.0f, -1e-30f, 0.0f, 1e-30f,
				   0.5f, 1.0f, 3e38f, __builtin_inff() };

	for (unsigned i = 0; i + 1 < sizeof(m) / sizeof(m[0]); i++)
		ck_assert(kvk_evict_key(m[i], 7) < kvk_evict_key(m[i + 1], 0));
	ck_assert(kvk_evict_key(-0.0f, 3) == kvk_evict_key(0.0f, 3));
	ck_assert(kvk_evict_key(__builtin_nanf(""), 0) >
		  kvk_evict_key(__builtin_inff(), 9));
	ck_assert(kvk_evict_key(1.0f, 1) > kvk_evict_key(1.0f, 0));
}
END_TEST

Suite *suite_evict(void)
{
	Suite *s = suite_create("evict");
	TCase *tc = tcase_create("cpu");

	KV_ADD(tc, test_evict_oracle);
	KV_ADD(tc, test_evict_edges);
	KV_ADD(tc, test_evict_invalid);
	KV_ADD(tc, test_evict_key_order);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
