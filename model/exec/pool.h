/* SPDX-License-Identifier: MIT */
/*
 * pool.h - a small fixed pthread pool for the CPU executor: one job at a
 * time, split across every thread, the caller's thread included.
 */
#ifndef LLM_POOL_H
#define LLM_POOL_H

/*
 * A job: called once on each of @nth threads with its index @tid in
 * [0, nth); the function splits its own work by @tid.
 */
typedef void (*llm_pool_fn)(void *arg, int tid, int nth);

struct llm_pool;

int llm_pool_create(int n_threads, struct llm_pool **out);
struct llm_pool *llm_pool_get(struct llm_pool *p);
void llm_pool_destroy(struct llm_pool *p);
int llm_pool_threads(const struct llm_pool *p);
void llm_pool_run(struct llm_pool *p, llm_pool_fn fn, void *arg);

/* [*lo, *hi) of @n items for thread @tid of @nth, in multiples of @align */
static inline void llm_pool_range(long n, int tid, int nth, long align,
				  long *lo, long *hi)
{
	long blocks = (n + align - 1) / align;

	*lo = blocks * tid / nth * align;
	*hi = blocks * (tid + 1) / nth * align;
	if (*hi > n)
		*hi = n;
	if (*lo > n)
		*lo = n;
}

#endif /* LLM_POOL_H */
