// SPDX-License-Identifier: MIT
/*
 * pool.c - fixed pthread pool. Workers sleep on a condition variable until
 * the generation counter moves, run their share of the job, and the last
 * one to finish wakes the caller. The caller runs share 0 itself.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "pool.h"

/*
 * struct llm_pool - owned by its creator; @lock protects every field below
 * it. Only one llm_pool_run() at a time (the executor is single-caller).
 */
struct llm_pool {
	int nth;	    /* threads, the caller's included */
	pthread_t *tids;    /* nth - 1 workers */
	pthread_mutex_t lock;
	pthread_cond_t go;   /* gen moved or stop set */
	pthread_cond_t done; /* pending reached 0 */
	unsigned long gen;   /* jobs started */
	int pending;	     /* workers still running the current job */
	int stop;
	llm_pool_fn fn;
	void *arg;
};

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
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->lock);
		if (p->stop)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->lock);
		p->fn(p->arg, tid, p->nth);
		pthread_mutex_lock(&p->lock);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
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
 * llm_pool_destroy() - stop and join the workers, free the pool
 * @p: the pool, or NULL
 */
void llm_pool_destroy(struct llm_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
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
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);
	fn(arg, 0, p->nth);
	pthread_mutex_lock(&p->lock);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
}
