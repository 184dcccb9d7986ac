// SPDX-License-Identifier: MIT
/*
 * pool.c - fixed pthread pool. Workers wait for the generation counter to
 * move, run their share of the job, and the last one to finish wakes the
 * caller. The caller runs share 0 itself.
 *
 * DOC: waiting
 *
 * A decode step of a small model is about a hundred jobs of tens of
 * microseconds each; waking a thread from a condition variable costs about
 * as much (a futex wake, a context switch), so a pool that always slept
 * ran 2 threads slower than 1. Both sides therefore spin first, reading
 * the counters with acquire loads and a pause, for up to POOL_SPIN_NS
 * (KVMM_POOL_SPIN_US overrides it; 0 sleeps at once), and only then sleep
 * on the condition variables, so an idle pool (between requests) costs no
 * CPU after that. The spin yields the CPU every 16 pauses: when the cores
 * are shared with other work, the thread waited for may be queued behind
 * the spinner on the same CPU, and a pure spin then burns its time slice
 * (measured on 2 shared cores: decode 10-18 tok/s spinning, 36-85 with the
 * yields, 45-80 sleeping; 150 on quiet cores). The counters
 * are changed under @lock as before, so a sleeper cannot miss a wake-up:
 * the waker takes the lock after moving the counter.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

#define POOL_SPIN_NS 200000L /* spin this long before sleeping */

/*
 * struct llm_pool - owned by the holders of its references (@refs: the
 * creator's, and one per llm_pool_get()); @lock protects every field below
 * it. Only one llm_pool_run() at a time: its holders take turns (the CPU
 * executor and the host KV cache it calls between its own jobs).
 */
struct llm_pool {
	int nth;	    /* threads, the caller's included */
	int refs;	    /* references; atomic */
	pthread_t *tids;    /* nth - 1 workers */
	pthread_mutex_t lock;
	pthread_cond_t go;   /* gen moved or stop set */
	pthread_cond_t done; /* pending reached 0 */
	unsigned long gen;   /* jobs started; read unlocked while spinning */
	int pending;	     /* workers still running the current job; same */
	int stop;
	long spin_ns;	     /* spin before sleeping (POOL_SPIN_NS) */
	llm_pool_fn fn;
	void *arg;
};

static long pool_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void pool_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/*
 * let a thread that waits for this CPU run: the worker being waited for,
 * when the cores are shared with other work, or that work
 */
static inline void pool_yield(void)
{
	sched_yield();
}

/*
 * one turn of a bounded spin: pause, now and then let another thread
 * run; false once @ns since @t0 have passed (checked every 256 turns)
 */
static inline bool pool_spin_on(unsigned i, long t0, long ns)
{
	pool_pause();
	if (!(i & 15))
		pool_yield();
	return (i & 255) || pool_now_ns() - t0 <= ns;
}

/* spin up to @ns while *@v == @old; returns whether it moved */
static bool pool_spin_ul(const unsigned long *v, unsigned long old, long ns)
{
	long t0;

	if (ns <= 0)
		return false;
	t0 = pool_now_ns();
	for (unsigned i = 1;; i++) {
		if (__atomic_load_n(v, __ATOMIC_ACQUIRE) != old)
			return true;
		if (!pool_spin_on(i, t0, ns))
			break;
	}
	return false;
}

/* spin up to @ns until *@v is 0; returns whether it got there */
static bool pool_spin_zero(const int *v, long ns)
{
	long t0;

	if (ns <= 0)
		return false;
	t0 = pool_now_ns();
	for (unsigned i = 1;; i++) {
		if (!__atomic_load_n(v, __ATOMIC_ACQUIRE))
			return true;
		if (!pool_spin_on(i, t0, ns))
			break;
	}
	return false;
}

struct pool_start {
	struct llm_pool *p;
	int tid;
};

static void *pool_worker(void *v)
{
	struct pool_start *s = v;
	struct llm_pool *p = s->p;
	int tid = s->tid;
	unsigned long seen = 0;

	free(s);
	for (;;) {
		/* stop moves gen too (llm_pool_destroy()) */
		pool_spin_ul(&p->gen, seen, p->spin_ns);
		pthread_mutex_lock(&p->lock);
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->lock);
		if (p->stop)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->lock);
		p->fn(p->arg, tid, p->nth);
		pthread_mutex_lock(&p->lock);
		if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_RELEASE) == 0)
			pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/**
 * llm_pool_create() - start a pool
 * @n_threads: threads in all, the caller's included; >= 1
 * @out: the pool
 *
 * Return: 0, -EINVAL, -ENOMEM, or the error of pthread_create().
 */
int llm_pool_create(int n_threads, struct llm_pool **out)
{
	struct llm_pool *p;
	int i, ret;

	if (n_threads < 1 || n_threads > 1024)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->nth = n_threads;
	p->refs = 1;
	p->spin_ns = POOL_SPIN_NS;
	if (getenv("KVMM_POOL_SPIN_US"))
		p->spin_ns = atol(getenv("KVMM_POOL_SPIN_US")) * 1000L;
	p->tids = calloc(n_threads, sizeof(*p->tids));
	if (!p->tids) {
		ret = -ENOMEM;
		goto out_free;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	for (i = 1; i < n_threads; i++) {
		struct pool_start *s = malloc(sizeof(*s));

		if (!s) {
			ret = -ENOMEM;
			goto out_stop;
		}
		s->p = p;
		s->tid = i;
		ret = -pthread_create(&p->tids[i - 1], NULL, pool_worker, s);
		if (ret) {
			free(s);
			goto out_stop;
		}
	}
	*out = p;
	return 0;

out_stop:
	p->nth = i; /* workers 1 .. i-1 were started */
	llm_pool_destroy(p);
	return ret;
out_free:
	free(p);
	return ret;
}

/**
 * llm_pool_get() - another reference to a pool, for a second user that
 * takes turns with the first (never runs a job while the other does)
 * @p: the pool
 *
 * Return: @p; llm_pool_destroy() drops the reference.
 */
struct llm_pool *llm_pool_get(struct llm_pool *p)
{
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
	return p;
}

/**
 * llm_pool_destroy() - drop a reference; the last one stops and joins the
 * workers and frees the pool
 * @p: the pool, or NULL
 */
void llm_pool_destroy(struct llm_pool *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	__atomic_add_fetch(&p->gen, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);
	for (int i = 1; i < p->nth; i++)
		pthread_join(p->tids[i - 1], NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->go);
	pthread_mutex_destroy(&p->lock);
	free(p->tids);
	free(p);
}

/**
 * llm_pool_threads() - threads of the pool, the caller's included
 * @p: the pool
 *
 * Return: the count.
 */
int llm_pool_threads(const struct llm_pool *p)
{
	return p->nth;
}

/**
 * llm_pool_run() - run @fn on every thread and wait for all of them
 * @p: the pool
 * @fn: the job, called as fn(arg, tid, nth) once per tid
 * @arg: passed through
 */
void llm_pool_run(struct llm_pool *p, llm_pool_fn fn, void *arg)
{
	if (p->nth == 1) {
		fn(arg, 0, 1);
		return;
	}
	pthread_mutex_lock(&p->lock);
	p->fn = fn;
	p->arg = arg;
	p->pending = p->nth - 1;
	/* release: a spinning worker that sees gen move sees fn, arg */
	__atomic_add_fetch(&p->gen, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);
	fn(arg, 0, p->nth);
	if (pool_spin_zero(&p->pending, p->spin_ns))
		return;
	pthread_mutex_lock(&p->lock);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
}
