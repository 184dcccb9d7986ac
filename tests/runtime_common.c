// SPDX-License-Identifier: MIT
/*
 * runtime_common.c - runtime semantics, checked on one backend at a time.
 *
 * The host suite adds these tests with a fixture selecting the host
 * backend; the GPU suite adds the same tests with the CUDA backend. One set
 * of tests, so the two backends cannot drift apart.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtest.h"
#include "runtime_common.h"

#define G KVRT_GRANULE_SIZE

static enum kvrt_backend_kind rt_backend;

static void use_host(void)
{
	rt_backend = KVRT_BACKEND_HOST;
}

static void use_cuda(void)
{
	rt_backend = KVRT_BACKEND_CUDA;
}

static struct kvrt_ctx *rt_open(void)
{
	struct kvrt_ctx_opts o = { .backend = rt_backend };
	struct kvrt_ctx *ctx = NULL;
	int ret = kvrt_ctx_create(&o, &ctx);

	ck_assert_msg(ret == 0, "kvrt_ctx_create(%d): %d", rt_backend, ret);
	return ctx;
}

void rt_state_take(struct kvrt_ctx *ctx, struct kvrt_space *space,
		   struct rt_state *st)
{
	memset(st, 0, sizeof(*st));
	kvrt_ctx_counts(ctx, &st->counts);
	if (space)
		kvrt_space_stats(space, &st->stats);
	st->fds = kvtest_open_fds();
}

void rt_state_same(const struct rt_state *a, const struct rt_state *b,
		   const char *what)
{
	ck_assert_msg(a->counts.va_ranges == b->counts.va_ranges &&
			      a->counts.handles == b->counts.handles &&
			      a->counts.mapped == b->counts.mapped &&
			      a->counts.streams == b->counts.streams &&
			      a->counts.events == b->counts.events,
		      "%s: live objects changed: va %llu->%llu handles "
		      "%llu->%llu mapped %llu->%llu streams %llu->%llu events "
		      "%llu->%llu",
		      what, (unsigned long long)a->counts.va_ranges,
		      (unsigned long long)b->counts.va_ranges,
		      (unsigned long long)a->counts.handles,
		      (unsigned long long)b->counts.handles,
		      (unsigned long long)a->counts.mapped,
		      (unsigned long long)b->counts.mapped,
		      (unsigned long long)a->counts.streams,
		      (unsigned long long)b->counts.streams,
		      (unsigned long long)a->counts.events,
		      (unsigned long long)b->counts.events);
	ck_assert_msg(!memcmp(&a->stats, &b->stats, sizeof(a->stats)),
		      "%s: space stats changed (mapped %u->%u)", what,
		      a->stats.nr_mapped, b->stats.nr_mapped);
	ck_assert_msg(a->fds == b->fds, "%s: open fds %d->%d", what, a->fds,
		      b->fds);
}

void rt_no_leaks(struct kvrt_ctx *ctx)
{
	struct kvrt_counts c;

	kvrt_ctx_counts(ctx, &c);
	ck_assert_msg(!c.va_ranges && !c.handles && !c.mapped && !c.streams &&
			      !c.events,
		      "leak: va %llu handles %llu mapped %llu streams %llu "
		      "events %llu",
		      (unsigned long long)c.va_ranges,
		      (unsigned long long)c.handles,
		      (unsigned long long)c.mapped,
		      (unsigned long long)c.streams,
		      (unsigned long long)c.events);
}

/*
 * struct rt_gate - a host function that blocks its stream until opened.
 * Owner: the test; @lock protects @open.
 */
struct rt_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int open;
};

static void gate_fn(void *arg)
{
	struct rt_gate *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

struct rt_gate *rt_gate_close(struct kvrt_stream *stream)
{
	struct rt_gate *g = calloc(1, sizeof(*g));

	ck_assert_ptr_nonnull(g);
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	ck_assert_int_eq(kvrt_stream_host_fn(stream, gate_fn, g), 0);
	return g;
}

/* Opens the gate; the caller syncs the stream before freeing it. */
void rt_gate_open(struct rt_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = 1;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void gate_free(struct rt_gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

/* fill a granule with a pattern derived from @tag; check it back */
static void pattern_put(struct kvrt_ctx *ctx, uint64_t addr, uint32_t tag)
{
	static uint32_t buf[G / 4];

	for (size_t i = 0; i < ARRAY_SIZE(buf); i++)
		buf[i] = tag * 2654435761U + (uint32_t)i;
	ck_assert_int_eq(kvrt_memcpy_to(ctx, addr, buf, G), 0);
}

static void pattern_check(struct kvrt_ctx *ctx, uint64_t addr, uint32_t tag)
{
	static uint32_t buf[G / 4];
	size_t bad = ARRAY_SIZE(buf);

	/* one assertion per granule: Check logs every assertion it passes */
	ck_assert_int_eq(kvrt_memcpy_from(ctx, buf, addr, G), 0);
	for (size_t i = 0; i < ARRAY_SIZE(buf) && bad == ARRAY_SIZE(buf); i++)
		if (buf[i] != tag * 2654435761U + (uint32_t)i)
			bad = i;
	ck_assert_msg(bad == ARRAY_SIZE(buf),
		      "granule at %#llx word %zu: %#x, want %#x",
		      (unsigned long long)addr, bad, buf[bad % ARRAY_SIZE(buf)],
		      tag * 2654435761U + (uint32_t)bad);
}

static uint64_t slot_addr(struct kvrt_space *s, uint32_t idx)
{
	struct kvrt_granule_info gi;

	ck_assert_int_eq(kvrt_space_granule(s, idx, &gi), 0);
	return gi.addr;
}

START_TEST(test_ctx_open)
{
	struct kvrt_ctx *ctx = rt_open();

	ck_assert_int_eq(kvrt_ctx_backend(ctx), rt_backend);
	ck_assert_uint_gt(kvrt_ctx_mem_total(ctx), G);
	ck_assert_int_ge(kvrt_ctx_numa_nodes(ctx), 1);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_space_bad_args)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_space *s = NULL;
	struct rt_state a, b;

	rt_state_take(ctx, NULL, &a);
	ck_assert_int_eq(kvrt_space_create(ctx, 0, G, &s), -EINVAL);
	ck_assert_int_eq(kvrt_space_create(ctx, G + 4096, G, &s), -EINVAL);
	ck_assert_int_eq(kvrt_space_create(ctx, 4 * G, 0, &s), -EINVAL);
	ck_assert_int_eq(kvrt_space_create(ctx, 4 * G, G / 2, &s), -EINVAL);
	ck_assert_int_eq(kvrt_space_create(ctx, 4 * G, 8 * G, &s), -EINVAL);
	/* over the device and any host tier (on CUDA, the host's memory) */
	ck_assert_int_eq(kvrt_space_create(ctx, 1ULL << 50, 1ULL << 50, &s),
			 -E2BIG);
	ck_assert_ptr_null(s);
	ck_assert_msg(strstr(kvrt_ctx_last_error(ctx), "budget"),
		      "error names the budget: '%s'", kvrt_ctx_last_error(ctx));
	rt_state_take(ctx, NULL, &b);
	rt_state_same(&a, &b, "bad space_create");
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_grow_shrink_data)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_space *s;
	struct kvrt_space_stats st;
	uint32_t idx[6], again[2];

	ck_assert_int_eq(kvrt_space_create(ctx, 16 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 6, KVRT_LOC_DEVICE, -1, idx), 0);
	for (uint32_t i = 0; i < 6; i++) {
		ck_assert_uint_eq(idx[i], i);
		ck_assert_uint_eq(slot_addr(s, idx[i]),
				  kvrt_space_base(s) + (uint64_t)i * G);
		pattern_put(ctx, slot_addr(s, idx[i]), 100 + i);
	}
	/* give back slots 1 and 4; the others keep their data */
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 4, 1 }, 2, 0), 0);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.nr_mapped, 4);
	for (uint32_t i = 0; i < 6; i++)
		if (i != 1 && i != 4)
			pattern_check(ctx, slot_addr(s, i), 100 + i);
	/* the lowest free slots are reused */
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, again), 0);
	ck_assert_uint_eq(again[0], 1);
	ck_assert_uint_eq(again[1], 4);
	pattern_put(ctx, slot_addr(s, 1), 7);
	pattern_check(ctx, slot_addr(s, 1), 7);
	pattern_check(ctx, slot_addr(s, 5), 105);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_grow_bad_args)
{
	struct kvrt_ctx *ctx = rt_open();
	int nodes = kvrt_ctx_numa_nodes(ctx);
	struct kvrt_space *s;
	struct rt_state a, b;
	uint32_t idx[8];

	ck_assert_int_eq(kvrt_space_create(ctx, 4 * G, 2 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, idx), 0);
	rt_state_take(ctx, s, &a);
	ck_assert_int_eq(kvrt_space_grow(s, 0, KVRT_LOC_DEVICE, -1, idx),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, idx),
			 -ENOSPC);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_NR, -1, idx), -EINVAL);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_HOST_NUMA, nodes, idx),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_HOST_NUMA, -1, idx),
			 -EINVAL);
	rt_state_take(ctx, s, &b);
	rt_state_same(&a, &b, "bad grow");
	/* the reservation, not only the budget, bounds growth */
	ck_assert_int_eq(kvrt_space_set_budget(s, 4 * G), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, idx),
			 -ENOSPC);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_shrink_misuse)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_space *s;
	struct rt_state a, b;
	uint32_t idx[3];

	ck_assert_int_eq(kvrt_space_create(ctx, 8 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx), 0);
	pattern_put(ctx, slot_addr(s, 0), 1);
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[2], 1, 0), 0);
	rt_state_take(ctx, s, &a);
	/* double unmap */
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[2], 1, 0), -ENOENT);
	ck_assert_msg(strstr(kvrt_ctx_last_error(ctx), "not mapped"), "'%s'",
		      kvrt_ctx_last_error(ctx));
	/* all or nothing: a good slot listed with a bad one stays mapped */
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 0, 2 }, 2, 0),
			 -ENOENT);
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 0, 0 }, 2, 0),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 0, 99 }, 2, 0),
			 -EINVAL);
	ck_assert_int_eq(kvrt_space_shrink(s, idx, 0, 0), -EINVAL);
	ck_assert_int_eq(kvrt_space_shrink(s, idx, 1, 0x80), -EINVAL);
	ck_assert_int_eq(kvrt_space_retire(s, &idx[2], 1), -ENOENT);
	rt_state_take(ctx, s, &b);
	rt_state_same(&a, &b, "shrink misuse");
	pattern_check(ctx, slot_addr(s, 0), 1);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_budget)
{
	struct kvrt_ctx *ctx = rt_open();
	uint64_t mem = kvrt_ctx_mem_total(ctx);
	struct kvrt_space *s;
	struct kvrt_space_stats st;
	struct kvrt_granule_info gi;
	uint32_t idx[4];

	ck_assert_int_eq(kvrt_space_create(ctx, mem + 8 * G, 4 * G, &s), 0);
	/* state for the budget's slots, not the reservation's */
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.nr_slots, mem / G + 8);
	ck_assert_uint_eq(st.cap_slots, 4);
	ck_assert_int_eq(kvrt_space_granule(s, st.nr_slots - 1, &gi), 0);
	ck_assert_int_eq(gi.mapped, 0);
	ck_assert_uint_eq(gi.addr, kvrt_space_base(s) + (mem + 7 * G));
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 5 }, 1, 0),
			 -ENOENT);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(kvrt_space_set_budget(s, 2 * G), -EBUSY);
	ck_assert_int_eq(kvrt_space_set_budget(s, 0), -EINVAL);
	ck_assert_int_eq(kvrt_space_set_budget(s, 3 * G + 1), -EINVAL);
	ck_assert_int_eq(kvrt_space_set_budget(s, 1ULL << 50), -E2BIG);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.budget_bytes, 4 * G);
	ck_assert_int_eq(kvrt_space_set_budget(s, 3 * G), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, idx),
			 -ENOSPC);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.cap_slots, 4);	/* never shrunk */
	ck_assert_int_eq(kvrt_space_set_budget(s, 6 * G), 0);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.cap_slots, 6);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_uint_eq(idx[0], 3);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_fence_blocks_unmap)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_stream *st;
	struct kvrt_space *s;
	struct rt_state a, b;
	struct rt_gate *gate;
	uint32_t idx[2], late;

	ck_assert_int_eq(kvrt_stream_create(ctx, &st), 0);
	ck_assert_int_eq(kvrt_space_create(ctx, 8 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, idx), 0);
	pattern_put(ctx, slot_addr(s, idx[0]), 9);
	gate = rt_gate_close(st);
	ck_assert_int_eq(kvrt_space_fence(s, st), 0);
	/* a granule mapped after the fence is not covered by it */
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, &late), 0);
	ck_assert_int_eq(kvrt_space_busy(s, idx[0]), 1);
	ck_assert_int_eq(kvrt_space_busy(s, late), 0);

	rt_state_take(ctx, s, &a);
	ck_assert_int_eq(kvrt_space_shrink(s, idx, 2, 0), -EBUSY);
	ck_assert_msg(strstr(kvrt_ctx_last_error(ctx), "fenced"), "'%s'",
		      kvrt_ctx_last_error(ctx));
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ late, idx[1] }, 2,
					   0),
			 -EBUSY);
	rt_state_take(ctx, s, &b);
	rt_state_same(&a, &b, "shrink of fenced granules");
	pattern_check(ctx, slot_addr(s, idx[0]), 9);
	ck_assert_int_eq(kvrt_space_shrink(s, &late, 1, 0), 0);

	rt_gate_open(gate);
	ck_assert_int_eq(kvrt_space_shrink(s, idx, 1, KVRT_SHRINK_WAIT), 0);
	ck_assert_int_eq(kvrt_stream_sync(st), 0);
	ck_assert_int_eq(kvrt_space_busy(s, idx[1]), 0);
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[1], 1, 0), 0);
	gate_free(gate);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

/*
 * Retired granules wait only for the fences current at retirement; live
 * granules keep waiting for every later fence too.
 */
START_TEST(test_retire)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_stream *st;
	struct kvrt_space *s;
	struct rt_gate *g1, *g2;
	uint32_t idx[2];

	ck_assert_int_eq(kvrt_stream_create(ctx, &st), 0);
	ck_assert_int_eq(kvrt_space_create(ctx, 8 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 2, KVRT_LOC_DEVICE, -1, idx), 0);
	g1 = rt_gate_close(st);
	ck_assert_int_eq(kvrt_space_fence(s, st), 0);
	ck_assert_int_eq(kvrt_space_retire(s, &idx[0], 1), 0);
	ck_assert_int_eq(kvrt_space_retire(s, &idx[0], 1), -EALREADY);
	ck_assert_int_eq(kvrt_space_busy(s, idx[0]), 1);
	rt_gate_open(g1);
	ck_assert_int_eq(kvrt_stream_sync(st), 0);
	/* new work, new fence: covers idx[1] but not the retired idx[0] */
	g2 = rt_gate_close(st);
	ck_assert_int_eq(kvrt_space_fence(s, st), 0);
	ck_assert_int_eq(kvrt_space_busy(s, idx[0]), 0);
	ck_assert_int_eq(kvrt_space_busy(s, idx[1]), 1);
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[0], 1, 0), 0);
	ck_assert_int_eq(kvrt_space_shrink(s, &idx[1], 1, 0), -EBUSY);
	rt_gate_open(g2);
	ck_assert_int_eq(kvrt_stream_sync(st), 0);
	gate_free(g1);
	gate_free(g2);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_host_numa)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_granule_info gi;
	struct kvrt_space_stats st;
	struct kvrt_space *s;
	uint32_t idx[2];

	ck_assert_int_eq(kvrt_space_create(ctx, 8 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_DEVICE, -1, &idx[0]),
			 0);
	ck_assert_int_eq(kvrt_space_grow(s, 1, KVRT_LOC_HOST_NUMA, 0, &idx[1]),
			 0);
	ck_assert_int_eq(kvrt_space_granule(s, idx[1], &gi), 0);
	ck_assert_int_eq(gi.loc, KVRT_LOC_HOST_NUMA);
	ck_assert_int_eq(gi.node, 0);
	ck_assert_uint_eq(gi.addr, kvrt_space_base(s) + G);
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.nr_by_loc[KVRT_LOC_DEVICE], 1);
	ck_assert_uint_eq(st.nr_by_loc[KVRT_LOC_HOST_NUMA], 1);
	pattern_put(ctx, gi.addr, 5);
	pattern_check(ctx, gi.addr, 5);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

START_TEST(test_destroy_waits)
{
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_stream *st;
	struct kvrt_space *s;
	struct rt_gate *g;
	uint32_t idx[3];

	ck_assert_int_eq(kvrt_stream_create(ctx, &st), 0);
	ck_assert_int_eq(kvrt_space_create(ctx, 8 * G, 8 * G, &s), 0);
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx), 0);
	g = rt_gate_close(st);
	ck_assert_int_eq(kvrt_space_fence(s, st), 0);
	ck_assert_int_eq(kvrt_space_retire(s, idx, 1), 0);
	rt_gate_open(g);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	gate_free(g);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

/* threads growing and shrinking one space: the counts must add up */
struct churn_arg {
	struct kvrt_space *s;
	uint64_t seed;
	int grown;
};

static void *churn(void *p)
{
	struct churn_arg *a = p;
	uint32_t mine[4];
	int have = 0;

	for (int i = 0; i < 200; i++) {
		if (have && kvtest_rand(&a->seed) % 2) {
			if (kvrt_space_shrink(a->s, mine, have, 0))
				return (void *)1;
			have = 0;
		} else if (!have) {
			int n = 1 + kvtest_rand(&a->seed) % 4;
			int r = kvrt_space_grow(a->s, n, KVRT_LOC_DEVICE, -1,
						mine);

			if (r == 0)
				have = n, a->grown += n;
			else if (r != -ENOSPC)
				return (void *)2;
		}
	}
	if (have && kvrt_space_shrink(a->s, mine, have, 0))
		return (void *)3;
	return NULL;
}

START_TEST(test_threads)
{
	struct kvrt_ctx *ctx = rt_open();
	uint64_t seed = kvtest_seed("runtime threads");
	struct churn_arg args[4];
	pthread_t t[4];
	struct kvrt_space *s;
	struct kvrt_space_stats st;

	ck_assert_int_eq(kvrt_space_create(ctx, 16 * G, 12 * G, &s), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct churn_arg){ s, seed + i * 7919, 0 };
		pthread_create(&t[i], NULL, churn, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		void *r;

		pthread_join(t[i], &r);
		ck_assert_msg(!r, "thread %d failed at step %p", i, r);
		ck_assert_int_gt(args[i].grown, 0);
	}
	kvrt_space_stats(s, &st);
	ck_assert_uint_eq(st.nr_mapped, 0);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

TCase *rt_tcase_api(enum kvrt_backend_kind backend)
{
	TCase *tc = tcase_create(backend == KVRT_BACKEND_HOST ? "api_host" :
								 "api_cuda");

	tcase_add_checked_fixture(tc, backend == KVRT_BACKEND_HOST ? use_host :
								    use_cuda,
				  NULL);
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_ctx_open);
	KV_ADD(tc, test_space_bad_args);
	KV_ADD(tc, test_grow_shrink_data);
	KV_ADD(tc, test_grow_bad_args);
	KV_ADD(tc, test_shrink_misuse);
	KV_ADD(tc, test_budget);
	KV_ADD(tc, test_fence_blocks_unmap);
	KV_ADD(tc, test_retire);
	KV_ADD(tc, test_host_numa);
	KV_ADD(tc, test_destroy_waits);
	KV_ADD(tc, test_threads);
	return tc;
}

/*
 * Fault injection: run an operation with the nth backend call failing,
 * n = 1, 2, ... until it succeeds. Every failure must leave the live
 * objects, the space, the open descriptors and the data of mapped granules
 * as they were. The undo step (run with injection off) puts the space back
 * after the successful run. Returns the failure points reached.
 */
struct rt_op {
	const char *name;
	int (*run)(struct kvrt_ctx *ctx, struct kvrt_space **s,
		   struct kvrt_stream *st);
	void (*undo)(struct kvrt_ctx *ctx, struct kvrt_space **s);
};

static int walk_faults(struct kvrt_ctx *ctx, struct kvrt_space **s,
		       struct kvrt_stream *st, const struct rt_op *op)
{
	int failures = 0;

	for (uint64_t n = 1; n < 1000; n++) {
		struct rt_state a, b;
		int ret;

		if (*s)
			pattern_put(ctx, slot_addr(*s, 0), (uint32_t)n);
		rt_state_take(ctx, *s, &a);
		kvrt_fault_inject(ctx, n, EIO);
		ret = op->run(ctx, s, st);
		if (kvrt_fault_pending(ctx)) {
			kvrt_fault_inject(ctx, 0, 0);
			ck_assert_msg(ret == 0, "%s: failed (%d) with no fault",
				      op->name, ret);
			if (op->undo)
				op->undo(ctx, s);
			return failures;
		}
		ck_assert_msg(ret == -EIO, "%s: fault %llu gave %d", op->name,
			      (unsigned long long)n, ret);
		failures++;
		rt_state_take(ctx, *s, &b);
		rt_state_same(&a, &b, op->name);
		if (*s)
			pattern_check(ctx, slot_addr(*s, 0), (uint32_t)n);
	}
	ck_abort_msg("%s: never succeeded", op->name);
	return failures;
}

static struct kvrt_space *created;

static int run_space_create(struct kvrt_ctx *ctx, struct kvrt_space **s,
			    struct kvrt_stream *st)
{
	(void)s, (void)st;
	return kvrt_space_create(ctx, 32 * G, 32 * G, &created);
}

static void undo_space_create(struct kvrt_ctx *ctx, struct kvrt_space **s)
{
	(void)ctx, (void)s;
	ck_assert_int_eq(kvrt_space_destroy(created), 0);
}

static uint32_t grown[8];

static int run_grow(struct kvrt_ctx *ctx, struct kvrt_space **s,
		    struct kvrt_stream *st)
{
	(void)ctx, (void)st;
	return kvrt_space_grow(*s, 5, KVRT_LOC_DEVICE, -1, grown);
}

static void undo_grow(struct kvrt_ctx *ctx, struct kvrt_space **s)
{
	(void)ctx;
	ck_assert_int_eq(kvrt_space_shrink(*s, grown, 5, 0), 0);
}

static int run_shrink(struct kvrt_ctx *ctx, struct kvrt_space **s,
		      struct kvrt_stream *st)
{
	(void)ctx, (void)st;
	return kvrt_space_shrink(*s, (uint32_t[]){ 1, 2, 3, 5 }, 4, 0);
}

static void undo_shrink(struct kvrt_ctx *ctx, struct kvrt_space **s)
{
	(void)ctx;
	ck_assert_int_eq(kvrt_space_grow(*s, 4, KVRT_LOC_DEVICE, -1, grown),
			 0);
}

static int run_fence(struct kvrt_ctx *ctx, struct kvrt_space **s,
		     struct kvrt_stream *st)
{
	(void)ctx;
	return kvrt_space_fence(*s, st);
}

static struct kvrt_stream *made;

static int run_stream(struct kvrt_ctx *ctx, struct kvrt_space **s,
		      struct kvrt_stream *st)
{
	(void)s, (void)st;
	return kvrt_stream_create(ctx, &made);
}

static void undo_stream(struct kvrt_ctx *ctx, struct kvrt_space **s)
{
	(void)ctx, (void)s;
	ck_assert_int_eq(kvrt_stream_destroy(made), 0);
}

START_TEST(test_fault_walk)
{
	static const struct rt_op create = { "space_create", run_space_create,
					     undo_space_create };
	static const struct rt_op grow = { "grow", run_grow, undo_grow };
	static const struct rt_op shrink = { "shrink", run_shrink,
					     undo_shrink };
	static const struct rt_op fence = { "fence", run_fence, NULL };
	static const struct rt_op stream = { "stream_create", run_stream,
					     undo_stream };
	struct kvrt_ctx *ctx = rt_open();
	struct kvrt_space *s = NULL;
	struct kvrt_stream *st;
	struct rt_state base, end;
	uint32_t idx[8];

	rt_state_take(ctx, NULL, &base);
	/* reserve */
	ck_assert_int_eq(walk_faults(ctx, &s, NULL, &create), 1);

	ck_assert_int_eq(kvrt_stream_create(ctx, &st), 0);
	ck_assert_int_eq(kvrt_space_create(ctx, 16 * G, 16 * G, &s), 0);
	/* slots 0, 3 and 4 mapped: free runs are {1,2} and {5,6,7,...} */
	ck_assert_int_eq(kvrt_space_grow(s, 5, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(kvrt_space_shrink(s, (uint32_t[]){ 1, 2 }, 2, 0), 0);
	/* create x5, map x5, set-access x2 (one per run) */
	ck_assert_int_eq(walk_faults(ctx, &s, st, &grow), 12);

	/* slots 0..5 mapped; unmap x4 */
	ck_assert_int_eq(kvrt_space_grow(s, 3, KVRT_LOC_DEVICE, -1, idx), 0);
	ck_assert_int_eq(walk_faults(ctx, &s, st, &shrink), 4);

	/* event create, event record */
	ck_assert_int_eq(walk_faults(ctx, &s, st, &fence), 2);
	/* the fence covers 1, 2, 3, 5: one query each, then the unmaps */
	ck_assert_int_eq(walk_faults(ctx, &s, st, &shrink), 8);
	/* re-grown after the fence, they are not covered: unmaps only */
	ck_assert_int_eq(walk_faults(ctx, &s, st, &shrink), 4);

	ck_assert_int_eq(walk_faults(ctx, &s, st, &stream), 1);

	ck_assert_int_eq(kvrt_stream_sync(st), 0);
	ck_assert_int_eq(kvrt_space_destroy(s), 0);
	ck_assert_int_eq(kvrt_stream_destroy(st), 0);
	rt_state_take(ctx, NULL, &end);
	rt_state_same(&base, &end, "after the walk");
	rt_no_leaks(ctx);
	kvrt_ctx_destroy(ctx);
}
END_TEST

TCase *rt_tcase_fault(enum kvrt_backend_kind backend)
{
	TCase *tc = tcase_create(backend == KVRT_BACKEND_HOST ? "fault_host" :
								 "fault_cuda");

	tcase_add_checked_fixture(tc, backend == KVRT_BACKEND_HOST ? use_host :
								    use_cuda,
				  NULL);
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_fault_walk);
	return tc;
}
