// SPDX-License-Identifier: MIT
/*
 * scheduler.c - the serving scheduler (scheduler.h).
 *
 * DOC: scheduler
 *
 * Requests wait in a queue, first come first served (or, with @order
 * LLM_SCHED_ORDER_LONGEST, new ones by the output they ask for, longest
 * first, behind the preempted ones); those that hold a slot of the cache
 * run.
 * Each llm_sched_step() builds one step under a token budget
 * (@max_step_tokens, decode tokens and prompt tokens alike):
 *
 * 1. every running request past its prompt brings its next token (decode);
 * 2. running requests whose prompt is still coming bring their next chunk
 *    (chunked prefill), in order, from what is left of the budget;
 * 3. waiting requests join, in order, while a slot is free, the budget has
 *    room and their pages fit (below); a prompt longer than what is left
 *    comes in chunks over several steps (declared to the cache with
 *    llm_kv_set_prompt(); without chunks, the first prompt of a step
 *    always fits). A preempted request is queued at the head, with its
 *    prompt and the tokens it had generated as its new prompt (recompute),
 *    or swapped out, to be read back in (DOC: preemption);
 * 4. the step runs as two calls of the executor's callback: its prompts
 *    (whole, and chunks), then its decode tokens;
 * 5. a request whose prompt ended takes its first token, a decoding one its
 *    next; one that reached max_new leaves and its pages go back at once
 *    (KVMM_IOC_SEQ_RELEASE);
 * 6. when requests left, and the free bytes no granule release can return
 *    pass @compact_ratio of the bytes in use (KVMM_IOC_STATS), physical
 *    compaction (KVMM_IOC_COMPACT) moves pages so that emptied granules go
 *    back to the device.
 *
 * Admission counts pages the way the request will really use them. A
 * request measured after its prefill (KVMM_IOC_SEQ_STATS, once its prompt
 * is trimmed and, under kvcompress, evicted) grows by ppt pages per token
 * per list: its tokens kept per tier over the tokens it saw, divided by the
 * tier's tokens per page. A request not prefilled yet is judged by the mean
 * ppt of those measured (uncompressed until one is). It is admitted when
 *
 *   used + sum(reserve of running) + its prompt's admission <= budget, and
 *   used + sum(reserve of running) + its pages after prefill + its reserve
 *	<= budget,
 *
 * summed over the requests joining in the same step, where used is the
 * space's pages in use (KVMM_IOC_FENCE: never waits), the admission is the
 * uapi's worst case for the prompt (each list's pages if its tokens split
 * the worst way between the tiers), and a reserve is @reserve x remaining
 * output x lists x ppt. With @reserve 1 a request rarely needs preemption;
 * with 0 the scheduler packs requests on their prompts alone and preempts
 * when pages run out, as vLLM does.
 *
 * Several caches (policies, llm_sched_add_cache()) share the slots and
 * the budget: the sums above are in bytes, each request's pages at its
 * cache's page size; a step runs each cache's prompts, then each cache's
 * decode tokens (one executor call per cache), and before each call its
 * space may map the granules the others do not map (KVMM_IOC_SET_BUDGET),
 * so that the spaces together stay within the budget.
 *
 * When a call is refused for pages (-ENOSPC: the uapi refused an admission
 * or an append and changed nothing): refused prompts (an admission: a whole
 * prompt or a prompt's last chunk; earlier chunks take no pages) step
 * aside while some request holds pages: a joining one goes back to the
 * head of the queue, a running one mid-prefill is preempted. Refused
 * decode tokens preempt the request holding pages that joined last: its
 * pages are released and it is queued again to be recomputed, or swapped
 * out (DOC: preemption). A request that cannot fit alone in the budget
 * fails with a reason; so does every request of a step the executor
 * failed for another reason. Nothing is dropped silently.
 */

/**
 * DOC: preemption
 *
 * A decode victim (refused decode tokens) is preempted by recompute or by
 * swap, as @preempt says:
 *
 * - recompute: its slot and pages are released and it is queued at the
 *   head with its prompt plus the tokens it generated as its new prompt;
 * - swap: its pages go to its cache's swap file
 *   (llm_kv_policy_swap_out(): KVMM_IOC_SEQ_SWAP_OUT, which frees them only
 *   once the write is confirmed) and it is queued at the head, swapped.
 *   When it reaches the head again it is admitted as a join is (its
 *   admission and its pages plus reserve must fit) and read back
 *   (llm_kv_policy_swap_in()) into a free slot, and decodes on from where
 *   it stopped: no prefill, the same tokens and the same cache state as an
 *   uninterrupted run. A swap-out that fails (a failed or short write)
 *   leaves the pages in place and the victim is recomputed; a swap-in
 *   refused for room waits while others run, and is dropped for
 *   recompute when none runs or the read fails;
 * - auto (the default): swap when the victim's estimated swap time, its
 *   page bytes times the seconds per byte of the swap-outs and swap-ins
 *   measured so far, is below its estimated recompute time, its tokens
 *   times the executor's prefill seconds per token measured so far; until
 *   both have been measured once, swap (so the rates get measured).
 *   Recompute in a cache that cannot swap (a device cache).
 *
 * A prompt still arriving in chunks has nothing to swap: mid-prefill
 * victims are always recomputed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvmm.h"
#include "kvpolicy.h"
#include "kvshim.h"
#include "scheduler.h"

/* struct sched_req - one request, owned by the scheduler */
struct sched_req {
	int32_t *tok;		/* [n_prompt + max_new]: prompt, generated */
	int n_prompt;
	int max_new;
	int n_gen;		/* tokens generated */
	float alpha[2];		/* diffkv (prune, quant); negative: cache's */
	enum llm_sched_state state;
	int slot;		/* cache slot while running or joining; -1 */
	int preemptions;
	int err;		/* -errno of a failure */
	char reason[112];
	double t_submit, t_first, t_done; /* seconds, CLOCK_MONOTONIC */
	double ppt;		/* pages per token per list; 0: not measured */
	int swaps;		/* times it was swapped out */
	bool swapped;		/* waits with its pages in the swap file */
	struct llm_kv_swap sw;	/* while @swapped */
	int cache;		/* its cache (policy): an index of llm_sched.c */
	bool gone;		/* llm_sched_forget(): the id may be reused */
	/* while it runs */
	int plen;		/* tokens of its (re)prefill, set as it joins */
	int fed;		/* of those, tokens in the cache: below @plen
				 * while its prompt comes in chunks */
	int chunk;		/* prompt tokens it brings to the step built */
	bool fresh;		/* its prompt ended in this step */
};

/*
 * struct sched_cache - one cache of the scheduler: one policy, its kvmm
 * space, what its requests were measured to hold
 */
struct sched_cache {
	struct llm_kv *kv;
	int fd;			/* the cache's kvmm handle */
	uint32_t space;		/* and space */
	struct llm_kv_geometry g;
	uint64_t granules;	/* granules its space maps, after its last call
				 * or compaction */
	uint64_t set;		/* its space's budget as last set, bytes */
	double ppt_sum;		/* ppt of its requests measured */
	uint64_t ppt_n;
	bool chunk;		/* prompts longer than the step's budget left
				 * come in chunks (llm_kv_set_prompt()) */
	bool busy;		/* pick_joins(): a partial page counted */
	bool swap;		/* its space has a swap file */
};

/*
 * struct llm_sched - the scheduler. Owned by its creator; not locked: one
 * call at a time. The caches are the creator's and outlive it.
 */
struct llm_sched {
	struct sched_cache c[LLM_SCHED_MAX_CACHES];
	int nc;
	struct llm_kv *kv;	/* c[0].kv: the slots, the sequences' size */
	struct llm_sched_opts o;
	llm_sched_step_fn fn;
	void *ctx;
	uint64_t budget;	/* bytes the caches share, whole granules */

	struct sched_req *req;	/* [cap_req] by id */
	int n_req, cap_req;
	int *wait;		/* [cap_req] queue of ids, head first */
	int n_wait;
	int *run;		/* [n_seq] running ids, in order of joining */
	int n_run;
	int *slots;		/* [n_seq] free slots */
	int n_slots;
	int *owner;		/* [n_seq] request id in each slot, or -1 */
	int *free_ids;		/* [cap_req] ids llm_sched_forget() gave back */
	int n_free;

	/* the step being built */
	int *join;		/* [n_seq] ids joining (prompts) */
	int n_join;
	int *bid;		/* [n_seq] request of each batch entry */
	int *bseq, *bnt;	/* [n_seq] */
	int32_t *bnext;		/* [n_seq] */
	int32_t *btok;		/* [btok_cap] */
	size_t btok_cap;

	bool blocked;		/* a join was refused: none until pages free */
	double prefill_s;	/* seconds of the executor's prompt calls */
	uint64_t prefill_tok;	/* and their tokens */
	struct llm_sched_stats st;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * most pages a list of @n prompt tokens can take when they split between a
 * tier of @a tokens per page and one of @b: the uapi's admission
 */
static uint64_t worst_pages(uint32_t a, uint32_t b, uint32_t n)
{
	uint32_t big = a > b ? a : b, best = 0;
	uint32_t lmax = n < big ? n : big;

	if (a == b)
		return (n + a - 1) / a;
	for (uint32_t l = 0; l <= lmax; l++) {
		uint32_t h = n - l, p;

		if (big == b)
			p = (h + a - 1) / a + (l + b - 1) / b;
		else
			p = (l + a - 1) / a + (h + b - 1) / b;
		best = p > best ? p : best;
	}
	return best;
}

/* tokens the request brings at its (re)prefill */
static int prompt_len(const struct sched_req *r)
{
	return r->n_prompt + r->n_gen;
}

static const struct sched_cache *cache_of(const struct llm_sched *s,
					  const struct sched_req *r)
{
	return &s->c[r->cache];
}

/* pages per token per list the scheduler expects of @r */
static double ppt_of(const struct llm_sched *s, const struct sched_req *r)
{
	const struct sched_cache *c = cache_of(s, r);

	if (r->ppt > 0)
		return r->ppt;
	if (c->ppt_n)
		return c->ppt_sum / (double)c->ppt_n;
	return 1.0 / c->g.tokens_per_page[0];
}

/* bytes of @n pages of @r's cache */
static uint64_t bytes_of(const struct llm_sched *s, const struct sched_req *r,
			 uint64_t n)
{
	return n * cache_of(s, r)->g.page_size;
}

/* pages held back for @r's remaining output */
static uint64_t reserve_of(const struct llm_sched *s,
			   const struct sched_req *r)
{
	double t = (double)(r->max_new - r->n_gen) * s->o.reserve;

	return (uint64_t)ceil(t * cache_of(s, r)->g.lists * ppt_of(s, r));
}

/* pages of @r after its prefill: kept tokens, a partial page per tier */
static uint64_t prompt_pages(const struct llm_sched *s,
			     const struct sched_req *r)
{
	const struct llm_kv_geometry *g = &cache_of(s, r)->g;

	return (uint64_t)ceil((double)prompt_len(r) * g->lists *
			      ppt_of(s, r)) +
	       (uint64_t)g->lists * g->nr_tiers;
}

/* the uapi's admission of @r's prompt */
static uint64_t admit_pages(const struct llm_sched *s,
			    const struct sched_req *r)
{
	const struct llm_kv_geometry *g = &cache_of(s, r)->g;

	return (uint64_t)g->lists *
	       worst_pages(g->tokens_per_page[0], g->tokens_per_page[1],
			   (uint32_t)prompt_len(r));
}

/*
 * pages and bytes in use in every cache, without waiting for the device
 * (KVMM_IOC_FENCE); @pages may be NULL
 */
static int bytes_used(struct llm_sched *s, uint64_t *bytes, uint64_t *pages)
{
	uint64_t b = 0, p = 0;

	for (int i = 0; i < s->nc; i++) {
		struct kvmm_fence f = { .space = s->c[i].space };
		int ret = kvshim_ioctl(s->c[i].fd, KVMM_IOC_FENCE, &f);

		if (ret)
			return ret;
		p += f.pages_used;
		b += f.pages_used * s->c[i].g.page_size;
	}
	*bytes = b;
	if (pages)
		*pages = p;
	return 0;
}

/*
 * the bytes of pages the budget holds: its granules at the fewest page
 * bytes per granule of any cache (one cache: the pages it maps)
 */
static uint64_t cap_bytes(const struct llm_sched *s)
{
	uint64_t per = UINT64_MAX;

	for (int i = 0; i < s->nc; i++) {
		uint64_t b = (uint64_t)s->c[i].g.pages_per_granule *
			     s->c[i].g.page_size;

		per = b < per ? b : per;
	}
	return s->budget / KVMM_GRANULE_SIZE * per;
}

/* granules cache @i's space maps now (KVMM_IOC_STATS) */
static int granules_read(struct llm_sched *s, int i)
{
	struct sched_cache *c = &s->c[i];
	struct kvmm_stats st = { .space = c->space };
	int ret = kvshim_ioctl(c->fd, KVMM_IOC_STATS, &st);

	if (!ret)
		c->granules = st.pages_total / c->g.pages_per_granule;
	return ret;
}

/*
 * before a call of cache @i: with several caches, its space may map the
 * granules it maps and every granule no other cache maps, so that the
 * caches together stay within the budget (the calls run one at a time).
 * Return 0, or -ENOSPC when no granule is left to it.
 */
static int budget_for(struct llm_sched *s, int i)
{
	struct sched_cache *c = &s->c[i];
	uint64_t others = 0, total = s->budget / KVMM_GRANULE_SIZE, want;
	struct kvmm_set_budget b = { .space = c->space };

	if (s->nc < 2)
		return 0;
	for (int j = 0; j < s->nc; j++)
		if (j != i)
			others += s->c[j].granules;
	want = others < total ? total - others : 0;
	if (want < c->granules)
		want = c->granules;	/* it cannot go below what it maps */
	if (!want)
		return -ENOSPC;
	b.budget_bytes = want * KVMM_GRANULE_SIZE;
	if (b.budget_bytes == c->set)
		return 0;
	if (!kvshim_ioctl(c->fd, KVMM_IOC_SET_BUDGET, &b))
		c->set = b.budget_bytes;
	return 0;
}

/* whether running request @r is still prefilling (its prompt in chunks) */
static bool prefilling(const struct sched_req *r)
{
	return r->fed < r->plen;
}

/* whether a running request holds pages (its prompt has been admitted) */
static bool holds_pages(const struct sched_req *r)
{
	return !prefilling(r);
}

/* ---- queues ---- */

/*
 * queue @id: at the head (@front: a preempted or refused request), else at
 * the tail, or under LLM_SCHED_ORDER_LONGEST ahead of the new requests
 * that ask for fewer tokens, behind any that were preempted
 */
static void wait_push(struct llm_sched *s, int id, bool front)
{
	int at = front ? 0 : s->n_wait;

	if (!front && s->o.order == LLM_SCHED_ORDER_LONGEST)
		while (at > 0) {
			const struct sched_req *q = &s->req[s->wait[at - 1]];

			if (q->preemptions || q->max_new >= s->req[id].max_new)
				break;
			at--;
		}
	memmove(s->wait + at + 1, s->wait + at,
		(s->n_wait - at) * sizeof(int));
	s->wait[at] = id;
	s->n_wait++;
}

static void wait_pop(struct llm_sched *s)
{
	memmove(s->wait, s->wait + 1, (s->n_wait - 1) * sizeof(int));
	s->n_wait--;
}

static void run_remove(struct llm_sched *s, int id)
{
	for (int i = 0; i < s->n_run; i++)
		if (s->run[i] == id) {
			memmove(s->run + i, s->run + i + 1,
				(s->n_run - i - 1) * sizeof(int));
			s->n_run--;
			return;
		}
}

/* give @r's slot and pages back; its tokens stay with the request */
static int slot_put(struct llm_sched *s, struct sched_req *r)
{
	int ret = 0;

	if (r->slot < 0)
		return 0;
	ret = llm_kv_policy_release(cache_of(s, r)->kv, r->slot);
	s->owner[r->slot] = -1;
	s->slots[s->n_slots++] = r->slot;
	s->blocked = false;
	r->slot = -1;
	return ret;
}

static void req_fail(struct llm_sched *s, int id, int err, const char *why)
{
	struct sched_req *r = &s->req[id];

	slot_put(s, r);
	run_remove(s, id);
	r->state = LLM_SCHED_FAILED;
	r->err = err;
	snprintf(r->reason, sizeof(r->reason), "%s", why);
	r->t_done = now_s();
	s->st.failed++;
}

static void req_done(struct llm_sched *s, int id)
{
	struct sched_req *r = &s->req[id];
	int ret = slot_put(s, r);

	run_remove(s, id);
	if (ret) {
		/* the tokens are complete; the pages could not be freed */
		r->state = LLM_SCHED_FAILED;
		r->err = ret;
		snprintf(r->reason, sizeof(r->reason), "releasing its pages: "
			 "%s", strerror(-ret));
		s->st.failed++;
	} else {
		r->state = LLM_SCHED_DONE;
		s->st.done++;
	}
	r->t_done = now_s();
}

/*
 * whether to swap @r out rather than recompute it (DOC: preemption): in
 * auto, when the swap of its pages (out and back) is estimated to take
 * less than the prefill of its tokens, both rates measured in this run; a
 * swap not measured yet is tried
 */
static bool swap_pays(struct llm_sched *s, const struct sched_req *r)
{
	const struct sched_cache *c = cache_of(s, r);
	struct llm_kv_usage u;
	double bytes, t_swap, t_re;

	if (!c->swap || s->o.preempt == LLM_SCHED_PREEMPT_RECOMPUTE)
		return false;
	if (s->o.preempt == LLM_SCHED_PREEMPT_SWAP)
		return true;
	if (!s->st.swaps_out || !s->st.swaps_in || !s->prefill_tok)
		return true;
	if (llm_kv_policy_usage(c->kv, r->slot, &u))
		return false;
	bytes = (double)(u.pages[0] + u.pages[1]) * u.page_size;
	t_swap = bytes * (s->st.swap_out_s / (double)s->st.swap_bytes_out +
			  s->st.swap_in_s / (double)s->st.swap_bytes_in);
	t_re = (double)prompt_len(r) * s->prefill_s / (double)s->prefill_tok;
	return t_swap < t_re;
}

/*
 * a decoding request's pages to the swap file; 0 when they went (its slot
 * is free in the cache), else -errno with nothing changed
 */
static int swap_out(struct llm_sched *s, struct sched_req *r)
{
	double t0 = now_s();
	int ret;

	ret = llm_kv_policy_swap_out(cache_of(s, r)->kv, r->slot, &r->sw);
	if (ret) {
		s->st.swap_fallbacks++;
		return ret;
	}
	r->swapped = true;
	r->swaps++;
	s->st.swaps_out++;
	s->st.swap_bytes_out += r->sw.bytes;
	s->st.swap_out_s += now_s() - t0;
	return 0;
}

/* a swapped request's file range back: it will be recomputed */
static void swap_drop(struct llm_sched *s, struct sched_req *r)
{
	if (!r->swapped)
		return;
	llm_kv_policy_swap_drop(cache_of(s, r)->kv, &r->sw);
	r->swapped = false;
}

/*
 * release a running request and queue it again at the head: its pages in
 * the swap file when that is the policy and the write succeeds, else
 * released (recompute)
 */
static int preempt(struct llm_sched *s, int id)
{
	struct sched_req *r = &s->req[id];
	int ret;

	if (!prefilling(r) && swap_pays(s, r))
		swap_out(s, r);	/* failed: the pages stayed; recompute */
	ret = slot_put(s, r);

	run_remove(s, id);
	if (ret) {
		req_fail(s, id, ret, "preempted, but its pages could not be "
			 "released");
		return ret;
	}
	r->state = LLM_SCHED_WAITING;
	r->preemptions++;
	s->st.preemptions++;
	wait_push(s, id, true);
	return 0;
}

/* ---- one step ---- */

/*
 * the chunks of the running requests whose prompts are still coming, in
 * order of joining, from the step's token budget left after the decode
 * tokens; returns the budget left for joins
 */
static int plan_chunks(struct llm_sched *s)
{
	int avail = s->o.max_step_tokens;

	for (int i = 0; i < s->n_run; i++) {
		struct sched_req *r = &s->req[s->run[i]];

		r->chunk = 0;
		r->fresh = false;
		if (!prefilling(r))
			avail--;
	}
	for (int i = 0; i < s->n_run; i++) {
		struct sched_req *r = &s->req[s->run[i]];
		int left = r->plen - r->fed;

		if (!prefilling(r) || avail < 1)
			continue;
		r->chunk = left < avail ? left : avail;
		avail -= r->chunk;
	}
	return avail;
}

/*
 * the next decode step's pages of @r's cache, once per cache of the step:
 * a partial page per list and tier
 */
static uint64_t partial_bytes(struct llm_sched *s, const struct sched_req *r)
{
	struct sched_cache *c = &s->c[r->cache];

	if (c->busy)
		return 0;
	c->busy = true;
	return (uint64_t)c->g.lists * c->g.nr_tiers * c->g.page_size;
}

static int swap_in(struct llm_sched *s, int id);

/*
 * waiting requests that join this step, by the rules of DOC: scheduler;
 * in bytes, each request's pages at its cache's page size
 */
static int pick_joins(struct llm_sched *s, int avail)
{
	uint64_t used = 0, held = 0, adm = 0, after = 0, cap = cap_bytes(s);
	int tokens = s->n_run, ret;

	s->n_join = 0;
	if (!s->n_wait || !s->n_slots || s->blocked)
		return 0;
	ret = bytes_used(s, &used, NULL);
	if (ret)
		return ret;
	for (int i = 0; i < s->nc; i++)
		s->c[i].busy = false;
	for (int i = 0; i < s->n_run; i++) {
		const struct sched_req *q = &s->req[s->run[i]];

		held += partial_bytes(s, q);
		if (prefilling(q)) {
			/* admitted at its last chunk: counted as joining */
			adm += bytes_of(s, q, admit_pages(s, q));
			after += bytes_of(s, q, prompt_pages(s, q) +
						     reserve_of(s, q));
			continue;
		}
		held += bytes_of(s, q, reserve_of(s, q) +
				 (uint64_t)ceil(cache_of(s, q)->g.lists *
						ppt_of(s, q)));
	}
	while (s->n_wait && s->n_slots) {
		int id = s->wait[0];
		struct sched_req *r = &s->req[id];
		const struct sched_cache *c = cache_of(s, r);
		uint64_t a = bytes_of(s, r, admit_pages(s, r));
		uint64_t p = bytes_of(s, r, prompt_pages(s, r) +
						 reserve_of(s, r));
		uint64_t part = c->busy ? 0 : (uint64_t)c->g.lists *
						      c->g.nr_tiers *
						      c->g.page_size;
		int len = prompt_len(r), chunk = len;

		if (r->swapped) {
			uint64_t pages = r->sw.pages;
			uint64_t sp = bytes_of(s, r, pages + reserve_of(s, r));

			if (avail < 1)
				break;
			if ((used + held + part + adm + a > cap ||
			     used + held + part + after + sp > cap) &&
			    (s->n_run || s->n_join))
				break;
			ret = swap_in(s, id);
			if (!ret)
				break;
			if (ret > 0) {
				wait_pop(s);
				held += partial_bytes(s, r) + sp;
				tokens++;
				avail--;
				continue;
			}
		}
		if (c->chunk) {
			chunk = len < avail ? len : avail;
			if (chunk < 1)
				break;
		} else if (s->n_join && tokens + len > s->o.max_step_tokens) {
			break;
		}
		if (used + held + part + adm + a > cap ||
		    used + held + part + after + p > cap) {
			if (s->n_run || s->n_join)
				break;
			if (a > cap) {
				char why[112];

				wait_pop(s);
				snprintf(why, sizeof(why), "its prompt of %d "
					 "tokens needs %llu pages, the budget "
					 "maps %llu", len,
					 (unsigned long long)admit_pages(s, r),
					 (unsigned long long)(cap /
							      c->g.page_size));
				req_fail(s, id, -ENOSPC, why);
				continue;
			}
			/* alone: it runs, and fails if it cannot grow */
		}
		wait_pop(s);
		held += partial_bytes(s, r);
		r->slot = s->slots[--s->n_slots];
		s->owner[r->slot] = id;
		after += bytes_of(s, r, (uint64_t)ceil(c->g.lists *
						      ppt_of(s, r)));
		if (r->alpha[0] >= 0) {
			ret = llm_kv_policy_seq_alpha(c->kv, r->slot,
						      r->alpha[0], r->alpha[1]);
			if (ret) {
				req_fail(s, id, ret, "per-request thresholds "
					 "need a diffkv cache");
				continue;
			}
		} else if (c->g.nr_tiers > 1) {
			/* a slot keeps its last thresholds: the cache's */
			llm_kv_policy_seq_alpha(c->kv, r->slot, c->g.alpha[0],
						c->g.alpha[1]);
		}
		/* a prompt longer than the budget left comes in chunks */
		if (chunk < len && llm_kv_set_prompt(c->kv, r->slot, len))
			chunk = len;
		r->state = LLM_SCHED_RUNNING;
		r->plen = len;
		r->fed = 0;
		r->chunk = chunk;
		r->fresh = false;
		s->join[s->n_join++] = id;
		tokens += chunk;
		avail -= chunk;
		adm += a;
		after += p;
	}
	return 0;
}

/*
 * swapped request @id, at the head of the queue, comes back into a free
 * slot (DOC: preemption) and decodes on: 1 when it runs, 0 when it must
 * wait for room, -1 when its swap was dropped (it joins to be recomputed)
 */
static int swap_in(struct llm_sched *s, int id)
{
	struct sched_req *r = &s->req[id];
	struct sched_cache *c = &s->c[r->cache];
	uint64_t bytes = r->sw.bytes;
	int slot = s->slots[s->n_slots - 1], ret;
	double t0 = now_s();

	ret = budget_for(s, r->cache);
	ret = ret ?: llm_kv_policy_swap_in(c->kv, slot, &r->sw);
	if (s->nc > 1)
		granules_read(s, r->cache);
	if ((ret == -ENOSPC || ret == -EBUSY) && (s->n_run || s->n_join))
		return 0;
	if (ret) {
		/* alone and no room, or the file failed: recompute */
		swap_drop(s, r);
		s->st.swap_fallbacks++;
		return -1;
	}
	s->n_slots--;
	r->slot = slot;
	s->owner[slot] = id;
	r->swapped = false;
	r->state = LLM_SCHED_RUNNING;
	/* its tokens are in the cache but the last one generated */
	r->plen = r->fed = prompt_len(r) - 1;
	r->chunk = 0;
	r->fresh = false;
	s->run[s->n_run++] = id;
	s->st.swaps_in++;
	s->st.swap_bytes_in += bytes;
	s->st.swap_in_s += now_s() - t0;
	return 1;
}

/* make room for @nt tokens of a batch */
static int btok_reserve(struct llm_sched *s, size_t nt)
{
	int32_t *t;

	if (nt <= s->btok_cap)
		return 0;
	t = realloc(s->btok, nt * sizeof(int32_t));
	if (!t)
		return -ENOMEM;
	s->btok = t;
	s->btok_cap = nt;
	return 0;
}

/* one prompt entry of a batch: @r's chunk */
static void add_chunk(struct llm_sched *s, int id, int n, size_t *nt)
{
	struct sched_req *r = &s->req[id];

	s->bid[n] = id;
	s->bseq[n] = r->slot;
	s->bnt[n] = r->chunk;
	memcpy(s->btok + *nt, r->tok + r->fed, r->chunk * sizeof(int32_t));
	*nt += r->chunk;
}

/*
 * the step's prompts in cache @ci: the chunks of running requests whose
 * prompts are still coming, then the joining requests' (first) chunks
 */
static int build_prefill(struct llm_sched *s, int ci, struct llm_batch *b)
{
	size_t nt = 0;
	int n = 0, ret;

	for (int i = 0; i < s->n_run; i++)
		nt += s->req[s->run[i]].chunk;
	for (int i = 0; i < s->n_join; i++)
		nt += s->req[s->join[i]].chunk;
	ret = btok_reserve(s, nt);
	if (ret)
		return ret;
	nt = 0;
	for (int i = 0; i < s->n_run; i++)
		if (s->req[s->run[i]].chunk && s->req[s->run[i]].cache == ci)
			add_chunk(s, s->run[i], n++, &nt);
	for (int i = 0; i < s->n_join; i++)
		if (s->req[s->join[i]].cache == ci)
			add_chunk(s, s->join[i], n++, &nt);
	*b = (struct llm_batch){ n, s->bseq, s->bnt, s->btok };
	return n;
}

/*
 * the step's decode tokens in cache @ci: every running request past its
 * prompt, but those whose prompt ended in this step (they took their first
 * token)
 */
static int build_decode(struct llm_sched *s, int ci, struct llm_batch *b)
{
	int n = 0, ret = btok_reserve(s, (size_t)s->n_run);

	if (ret)
		return ret;
	for (int i = 0; i < s->n_run; i++) {
		struct sched_req *r = &s->req[s->run[i]];

		if (prefilling(r) || r->fresh || r->cache != ci)
			continue;
		s->bid[n] = s->run[i];
		s->bseq[n] = r->slot;
		s->bnt[n] = 1;
		s->btok[n++] = r->tok[prompt_len(r) - 1];
	}
	*b = (struct llm_batch){ n, s->bseq, s->bnt, s->btok };
	return n;
}

/* joining request join[@i] goes back to the head of the queue */
static void unjoin_one(struct llm_sched *s, int i)
{
	int id = s->join[i];
	struct sched_req *r = &s->req[id];

	slot_put(s, r);
	s->blocked = true;
	r->state = LLM_SCHED_WAITING;
	r->chunk = 0;
	wait_push(s, id, true);
	s->st.rollbacks++;
	memmove(s->join + i, s->join + i + 1,
		(s->n_join - i - 1) * sizeof(int));
	s->n_join--;
}

/* whether @r's chunk of the step would end its prompt (an admission) */
static bool ends_prompt(const struct sched_req *r)
{
	return r->chunk && r->fed + r->chunk == r->plen;
}

/* ends_prompt() in cache @ci */
static bool ends_in(const struct sched_req *r, int ci)
{
	return r->cache == ci && ends_prompt(r);
}

/*
 * the step's prompts were refused for pages: an admission (a whole prompt,
 * or the last chunk of one) did not fit, and nothing of the call ran. With
 * requests holding pages (they may give some back), the prompts that end
 * now step aside: joining ones go back to the queue, running ones, whose
 * earlier chunks are staged, are preempted (released and queued again);
 * without, the oldest is tried alone, and fails if it is alone.
 * Return 0 to retry.
 */
/* physical compaction of cache @ci: moved pages, emptied granules back */
static int compact(struct llm_sched *s, int ci)
{
	struct sched_cache *c = &s->c[ci];
	struct kvmm_compact cp = { .space = c->space,
				   .byte_budget = s->o.compact_bytes };
	int ret = kvshim_ioctl(c->fd, KVMM_IOC_COMPACT, &cp);

	if (ret)
		return ret;
	s->st.compactions++;
	s->st.granules_released += cp.granules_released;
	s->st.pages_moved += cp.pages_moved;
	return granules_read(s, ci);
}

/*
 * several caches: the other caches' empty granules back to the budget
 * (compaction); returns the granules they gave back, or -errno
 */
static int reclaim(struct llm_sched *s, int ci)
{
	uint64_t before = 0, after = 0;
	int ret;

	for (int i = 0; i < s->nc; i++) {
		if (i == ci || !s->c[i].granules)
			continue;
		before += s->c[i].granules;
		ret = compact(s, i);
		if (ret)
			return ret;
		after += s->c[i].granules;
	}
	return (int)(before - after);
}

static int refused_prefill(struct llm_sched *s, int ci)
{
	int holders = 0, cand = 0, keep = -1;

	for (int i = 0; i < s->n_run; i++) {
		const struct sched_req *r = &s->req[s->run[i]];

		holders += holds_pages(r);
		if (ends_in(r, ci) && !cand++)
			keep = s->run[i];
	}
	for (int i = 0; i < s->n_join; i++)
		if (ends_in(&s->req[s->join[i]], ci) && !cand++)
			keep = s->join[i];
	if (!cand)
		return -ENOSPC;	/* chunks take no pages: not ours to fix */
	if (holders)
		keep = -1;
	if (!holders && cand == 1 && reclaim(s, ci) > 0)
		return 0;	/* granules came back from other caches */
	if (!holders && cand == 1) {
		struct sched_req *r = &s->req[keep];
		char why[112];

		for (int i = 0; i < s->n_join; i++)
			if (s->join[i] == keep) {
				memmove(s->join + i, s->join + i + 1,
					(s->n_join - i - 1) * sizeof(int));
				s->n_join--;
				break;
			}
		snprintf(why, sizeof(why), "its prompt of %d tokens does not "
			 "fit the budget alone", r->plen);
		req_fail(s, keep, -ENOSPC, why);
		return 0;
	}
	/* youngest first, each pushed at the head: the queue keeps order */
	for (int i = s->n_join - 1; i >= 0; i--)
		if (s->join[i] != keep && ends_in(&s->req[s->join[i]], ci))
			unjoin_one(s, i);
	for (int i = s->n_run - 1; i >= 0; i--) {
		int id = s->run[i];

		if (id == keep || !ends_in(&s->req[id], ci))
			continue;
		s->req[id].chunk = 0;
		s->st.prefill_preemptions++;
		preempt(s, id);
		s->blocked = true;
	}
	return 0;
}

/*
 * the decode tokens of cache @ci were refused for pages: the request
 * holding pages that joined last is preempted (released and queued again
 * to be recomputed; in another cache, whose granules compaction then gives
 * back to the budget), or fails when it is the only one. Return 0 to
 * retry.
 */
static int refused_decode(struct llm_sched *s, int ci)
{
	int holders = 0, victim = -1, vc, ret;
	char why[112];

	for (int i = 0; i < s->n_run; i++)
		if (holds_pages(&s->req[s->run[i]])) {
			holders++;
			victim = s->run[i];
		}
	if (victim < 0)
		return -ENOSPC;
	if (holders == 1) {
		snprintf(why, sizeof(why), "outgrew the budget alone at %d "
			 "tokens", prompt_len(&s->req[victim]));
		req_fail(s, victim, -ENOSPC, why);
		return 0;
	}
	vc = s->req[victim].cache;
	ret = preempt(s, victim);
	if (!ret && vc != ci)
		ret = compact(s, vc);
	return ret;
}

/*
 * what the request holds after its prefill: its ppt (pages per token per
 * list) for the admissions to come
 */
static void measure(struct llm_sched *s, struct sched_req *r)
{
	struct sched_cache *c = &s->c[r->cache];
	const struct llm_kv_geometry *g = &c->g;
	struct llm_kv_usage u;
	double n = (double)prompt_len(r) * g->lists, held;

	if (llm_kv_policy_usage(c->kv, r->slot, &u) || n <= 0)
		return;
	r->ppt = u.tokens[0] / n / g->tokens_per_page[0] +
		 u.tokens[1] / n / g->tokens_per_page[1];
	/* pages the tokens left behind count too (an eviction that lowered
	 * the counts but freed no page): the pages held, less a partial
	 * last page per list, bound it from below */
	held = (double)(u.pages[0] + u.pages[1]);
	if (held > g->lists && (held - g->lists) / n > r->ppt)
		r->ppt = (held - g->lists) / n;
	if (r->ppt <= 0)
		r->ppt = 1e-9;
	s->st.held_bytes += (u.pages[0] + u.pages[1]) * u.page_size;
	s->st.full_bytes += u.full_pages * u.full_page_size;
	c->ppt_sum += r->ppt;
	c->ppt_n++;
}

/*
 * the prompts' step ran: each entry's chunk is in the cache; a prompt that
 * ended takes its first token
 */
static void take_prefill(struct llm_sched *s, int n)
{
	double t = now_s();

	for (int e = 0; e < n; e++) {
		struct sched_req *r = &s->req[s->bid[e]];

		r->fed += r->chunk;
		s->st.prefill_tokens += r->chunk;
		r->chunk = 0;
		if (prefilling(r)) {
			s->st.chunks++;
			continue;
		}
		measure(s, r);
		r->tok[prompt_len(r)] = s->bnext[e];
		r->n_gen++;
		r->fresh = true;
		s->st.generated++;
		if (!r->t_first)
			r->t_first = t;
	}
}

/* the decode step ran: each entry takes its token */
static void take_decode(struct llm_sched *s, int n)
{
	for (int e = 0; e < n; e++) {
		struct sched_req *r = &s->req[s->bid[e]];

		r->tok[prompt_len(r)] = s->bnext[e];
		r->n_gen++;
	}
	s->st.decode_tokens += n;
	s->st.generated += n;
}

/* requests that reached their max_new leave; returns how many */
static int leave(struct llm_sched *s)
{
	int left = 0;

	for (int i = s->n_run - 1; i >= 0; i--) {
		int id = s->run[i];

		if (s->req[id].n_gen >= s->req[id].max_new) {
			req_done(s, id);
			left++;
		}
	}
	return left;
}

/* the executor failed a step for a reason other than pages */
static void fail_all(struct llm_sched *s, int err)
{
	char why[112];

	snprintf(why, sizeof(why), "the executor failed its step: %s",
		 strerror(-err));
	for (int i = 0; i < s->n_join; i++)
		req_fail(s, s->join[i], err, why);
	s->n_join = 0;
	while (s->n_run)
		req_fail(s, s->run[0], err, why);
}

/*
 * physical compaction of cache @ci when the free pages scattered in its
 * granules pass the threshold; with several caches, also when a granule's
 * worth of its pages is free (the granules it gives back go to the others)
 */
static int maybe_compact(struct llm_sched *s, int ci)
{
	struct sched_cache *c = &s->c[ci];
	struct kvmm_stats st = { .space = c->space };
	double used;
	int ret;

	if (s->o.compact_ratio < 0)
		return 0;
	ret = kvshim_ioctl(c->fd, KVMM_IOC_STATS, &st);
	if (ret)
		return ret;
	used = (double)(st.pages_used[0] + st.pages_used[1]) * st.page_size;
	if (s->nc > 1 && st.pages_total - st.pages_used[0] -
				 st.pages_used[1] >= c->g.pages_per_granule)
		return compact(s, ci);
	if (st.free_unusable_bytes < KVMM_GRANULE_SIZE ||
	    (double)st.free_unusable_bytes <= s->o.compact_ratio * used)
		return 0;
	return compact(s, ci);
}

/* whether a prompt of cache @ci ends in the step (an admission) */
static bool ending(const struct llm_sched *s, int ci)
{
	for (int i = 0; i < s->n_run; i++)
		if (ends_in(&s->req[s->run[i]], ci))
			return true;
	for (int i = 0; i < s->n_join; i++)
		if (ends_in(&s->req[s->join[i]], ci))
			return true;
	return false;
}

/*
 * run one call of the step in cache @ci: its prompts (@pre) or its decode
 * tokens; refusals for pages handled (DOC: scheduler). Return the
 * sequences that ran, or -errno (every request of the step failed).
 */
static int run_part(struct llm_sched *s, int ci, bool pre, int *refusals)
{
	struct llm_batch b;
	double t0;
	int ret, n;

	for (;;) {
		n = pre ? build_prefill(s, ci, &b) : build_decode(s, ci, &b);
		if (n <= 0)
			return n;
		ret = budget_for(s, ci);
		/* chunks that do not end their prompt take no pages */
		if (ret == -ENOSPC && pre && !ending(s, ci))
			ret = 0;
		t0 = now_s();
		ret = ret ?: s->fn(s->ctx, s->c[ci].kv, &b, s->bnext);
		if (pre && !ret) {
			/* the executor's prefill rate, for auto preemption */
			s->prefill_s += now_s() - t0;
			for (int e = 0; e < n; e++)
				s->prefill_tok += (uint64_t)b.n_tok[e];
		}
		if (s->nc > 1)
			granules_read(s, ci);
		if (ret == -ENOSPC) {
			++*refusals;
			ret = pre ? refused_prefill(s, ci)
				  : refused_decode(s, ci);
			if (!ret)
				continue;
		}
		if (ret) {
			fail_all(s, ret);
			return ret;
		}
		if (pre)
			take_prefill(s, n);
		else
			take_decode(s, n);
		return n;
	}
}

/**
 * llm_sched_step() - build and run one step
 * @s: the scheduler
 *
 * Finished requests have left after the previous step; waiting ones join
 * (DOC: scheduler); the step runs; requests that reach their max_new
 * leave; compaction runs when due.
 *
 * Return: the sequences the step ran (0: nothing to run), or -errno of the
 * executor (every request of the step then failed with that reason) or of
 * the uapi.
 */
int llm_sched_step(struct llm_sched *s)
{
	int ret, n_ran = 0, left = 0;
	uint64_t used, pages;

	ret = pick_joins(s, plan_chunks(s));
	if (ret)
		return ret;
	/* the prompts, cache by cache: chunks of running requests, joins */
	for (int ci = 0; ci < s->nc; ci++) {
		ret = run_part(s, ci, true, &left);
		if (ret < 0)
			return ret;
		n_ran += ret;
	}
	for (int i = 0; i < s->n_join; i++)
		s->run[s->n_run++] = s->join[i];
	s->n_join = 0;
	/* the decode tokens, cache by cache */
	for (int ci = 0; ci < s->nc; ci++) {
		ret = run_part(s, ci, false, &left);
		if (ret < 0)
			return ret;
		n_ran += ret;
	}
	if (!n_ran)
		return 0;
	left += leave(s);
	s->st.steps++;
	s->st.sum_running += (uint64_t)n_ran;
	if (n_ran > s->st.peak_running)
		s->st.peak_running = n_ran;
	if (!bytes_used(s, &used, &pages)) {
		s->st.pages_used = pages;
		s->st.bytes_used = used;
		if (pages > s->st.peak_pages)
			s->st.peak_pages = pages;
		if (used > s->st.peak_bytes)
			s->st.peak_bytes = used;
	}
	for (int ci = 0; left && ci < s->nc; ci++) {
		ret = maybe_compact(s, ci);
		if (ret)
			return ret;
	}
	return n_ran;
}

/**
 * llm_sched_submit() - queue a request
 * @s: the scheduler
 * @r: the request; its prompt is copied
 * @id: out: the request's id, for llm_sched_info()
 *
 * A request whose prompt and output exceed the cache's capacity per
 * sequence is taken and fails at once with that reason (it is not lost).
 *
 * Return: 0; -EINVAL (no prompt, a count below 1, a token id below 0,
 * thresholds out of range; nothing queued), -ENOMEM.
 */
int llm_sched_submit(struct llm_sched *s, const struct llm_sched_req *r,
		     int *id)
{
	struct sched_req *q;
	int32_t *tok;
	int i;

	if (!s || !r || !r->prompt || r->n_prompt < 1 || r->max_new < 1 ||
	    r->n_prompt > (1 << 24) || r->max_new > (1 << 24) || !id)
		return -EINVAL;
	for (int t = 0; t < r->n_prompt; t++)
		if (r->prompt[t] < 0)
			return -EINVAL;
	if (r->alpha_prune >= 0 && !(r->alpha_quant >= r->alpha_prune &&
				     r->alpha_prune <= 1.0f))
		return -EINVAL;
	if (r->cache < 0 || r->cache >= s->nc)
		return -EINVAL;
	if (!s->n_free && s->n_req == s->cap_req) {
		int cap = s->cap_req ? 2 * s->cap_req : 64;
		struct sched_req *nr = realloc(s->req, cap * sizeof(*nr));
		int *nw;

		if (!nr)
			return -ENOMEM;
		s->req = nr;
		nw = realloc(s->wait, cap * sizeof(int));
		if (!nw)
			return -ENOMEM;
		s->wait = nw;
		nw = realloc(s->free_ids, cap * sizeof(int));
		if (!nw)
			return -ENOMEM;
		s->free_ids = nw;
		s->cap_req = cap;
	}
	i = s->n_free ? s->free_ids[s->n_free - 1] : s->n_req;
	q = &s->req[i];
	tok = malloc(((size_t)r->n_prompt + r->max_new) * sizeof(int32_t));
	if (!tok)
		return -ENOMEM;
	if (s->n_free)
		s->n_free--;
	else
		s->n_req++;
	memset(q, 0, sizeof(*q));
	q->tok = tok;
	memcpy(q->tok, r->prompt, r->n_prompt * sizeof(int32_t));
	q->n_prompt = r->n_prompt;
	q->max_new = r->max_new;
	q->alpha[0] = r->alpha_prune;
	q->alpha[1] = r->alpha_quant;
	q->cache = r->cache;
	q->slot = -1;
	q->t_submit = now_s();
	*id = i;
	if ((long)r->n_prompt + r->max_new > s->c[r->cache].kv->max_tok) {
		char why[112];

		snprintf(why, sizeof(why), "%d prompt + %d output tokens "
			 "exceed the %d a sequence holds", r->n_prompt,
			 r->max_new, s->c[r->cache].kv->max_tok);
		req_fail(s, i, -E2BIG, why);
		return 0;
	}
	q->state = LLM_SCHED_WAITING;
	wait_push(s, i, false);
	return 0;
}

/**
 * llm_sched_idle() - whether nothing waits or runs
 * @s: the scheduler
 *
 * Return: true when every request submitted has completed or failed.
 */
bool llm_sched_idle(const struct llm_sched *s)
{
	return !s->n_wait && !s->n_run;
}

/**
 * llm_sched_info() - what became of request @id
 * @s: the scheduler
 * @id: from llm_sched_submit()
 * @info: filled; its pointers stay valid until llm_sched_destroy()
 *
 * Return: 0, or -EINVAL for an unknown id.
 */
int llm_sched_info(const struct llm_sched *s, int id,
		   struct llm_sched_info *info)
{
	const struct sched_req *r;

	if (!s || id < 0 || id >= s->n_req || !info || s->req[id].gone)
		return -EINVAL;
	r = &s->req[id];
	*info = (struct llm_sched_info){
		.state = r->state,
		.n_prompt = r->n_prompt,
		.n_gen = r->n_gen,
		.out = r->tok + r->n_prompt,
		.preemptions = r->preemptions,
		.swaps = r->swaps,
		.err = r->err,
		.reason = r->reason,
		.t_submit = r->t_submit,
		.t_first = r->t_first,
		.t_done = r->t_done,
	};
	return 0;
}

/**
 * llm_sched_stats() - the scheduler's counters
 * @s: the scheduler
 * @st: filled
 */
void llm_sched_stats(const struct llm_sched *s, struct llm_sched_stats *st)
{
	*st = s->st;
	st->waiting = s->n_wait;
	st->running = s->n_run;
	st->budget_pages = s->budget / KVMM_GRANULE_SIZE *
			   s->c[0].g.pages_per_granule;
	st->page_size = s->c[0].g.page_size;
	st->budget_bytes = cap_bytes(s);
	st->caches = s->nc;
}

/**
 * llm_sched_cancel() - withdraw request @id: its owner no longer wants it
 * @s: the scheduler
 * @id: from llm_sched_submit()
 *
 * A waiting request leaves the queue; a running one leaves the batch and
 * its slot and pages go back at once (KVMM_IOC_SEQ_RELEASE), as when it
 * completes. The tokens it generated stay readable (llm_sched_info(),
 * state LLM_SCHED_CANCELLED) until llm_sched_forget(). Call it between
 * steps, as every other call.
 *
 * Return: 0; -EINVAL (an unknown id); -EALREADY (it had completed, failed
 * or been cancelled: nothing changed); the uapi's error when its pages
 * could not be released (it is cancelled all the same).
 */
int llm_sched_cancel(struct llm_sched *s, int id)
{
	struct sched_req *r;
	int ret = 0;

	if (!s || id < 0 || id >= s->n_req || s->req[id].gone)
		return -EINVAL;
	r = &s->req[id];
	if (r->state == LLM_SCHED_WAITING) {
		swap_drop(s, r);
		for (int i = 0; i < s->n_wait; i++)
			if (s->wait[i] == id) {
				memmove(s->wait + i, s->wait + i + 1,
					(s->n_wait - i - 1) * sizeof(int));
				s->n_wait--;
				break;
			}
	} else if (r->state == LLM_SCHED_RUNNING) {
		uint64_t used, pages;

		ret = slot_put(s, r);
		run_remove(s, id);
		/* the counts read between steps show the pages gone */
		if (!bytes_used(s, &used, &pages)) {
			s->st.pages_used = pages;
			s->st.bytes_used = used;
		}
	} else {
		return -EALREADY;
	}
	r->state = LLM_SCHED_CANCELLED;
	r->t_done = now_s();
	s->st.cancelled++;
	return ret;
}

/**
 * llm_sched_forget() - free an ended request's tokens; its id may be
 * given to a later request
 * @s: the scheduler
 * @id: a request that completed, failed or was cancelled
 *
 * A long-running server forgets each request once it has read its
 * tokens, so the scheduler's memory follows the requests in flight, not
 * every request it ever saw. Pointers from llm_sched_info() on @id are
 * invalid afterwards.
 *
 * Return: 0; -EINVAL (an unknown or forgotten id); -EBUSY (it still waits
 * or runs: cancel it first).
 */
int llm_sched_forget(struct llm_sched *s, int id)
{
	struct sched_req *r;

	if (!s || id < 0 || id >= s->n_req || s->req[id].gone)
		return -EINVAL;
	r = &s->req[id];
	if (r->state == LLM_SCHED_WAITING || r->state == LLM_SCHED_RUNNING)
		return -EBUSY;
	free(r->tok);
	r->tok = NULL;
	r->gone = true;
	s->free_ids[s->n_free++] = id;
	return 0;
}

/**
 * llm_sched_slot_owner() - the request that holds a cache slot
 * @s: the scheduler
 * @slot: a slot of the cache, as the step callback's batch names them
 *
 * For an executor's step that treats sequences differently (sampling
 * settings of their own): in the callback, the request behind each of the
 * batch's slots.
 *
 * Return: the request id, or -1 (a free slot, or one out of range).
 */
int llm_sched_slot_owner(const struct llm_sched *s, int slot)
{
	if (!s || slot < 0 || slot >= s->kv->n_seq)
		return -1;
	return s->owner[slot];
}

/**
 * llm_sched_tier_pages() - pages in use per tier (KVMM_IOC_STATS)
 * @s: the scheduler
 * @pages: out: [0] high tier (the only one of a one-tier policy), [1] low,
 *	summed over the scheduler's caches
 *
 * Reads the spaces' statistics through the uapi: for a metrics reader,
 * not once per step.
 *
 * Return: 0, or the uapi's error.
 */
int llm_sched_tier_pages(struct llm_sched *s, uint64_t pages[2])
{
	pages[0] = pages[1] = 0;
	for (int i = 0; i < s->nc; i++) {
		struct kvmm_stats st = { .space = s->c[i].space };
		int ret = kvshim_ioctl(s->c[i].fd, KVMM_IOC_STATS, &st);

		if (ret)
			return ret;
		pages[0] += st.pages_used[0];
		pages[1] += st.pages_used[1];
	}
	return 0;
}

/**
 * llm_sched_set_budget() - change the memory budget
 * @s: the scheduler
 * @bytes: new budget, rounded up to whole 2 MiB granules
 *
 * One cache: KVMM_IOC_SET_BUDGET on its space; the pool grows within it
 * on demand. Several: the caches share it, each space's budget set before
 * each of its calls (DOC: scheduler). Admissions use it from the next
 * step.
 *
 * Return: 0; -EINVAL (0 bytes, or more than a space's address range);
 * -EBUSY (below the pages or granules in use: nothing changed); the
 * uapi's error.
 */
int llm_sched_set_budget(struct llm_sched *s, uint64_t bytes)
{
	uint64_t g = 0;
	int ret;

	if (!bytes || bytes > UINT64_MAX - KVMM_GRANULE_SIZE)
		return -EINVAL;
	bytes = (bytes + KVMM_GRANULE_SIZE - 1) / KVMM_GRANULE_SIZE *
		KVMM_GRANULE_SIZE;
	if (s->nc == 1) {
		struct kvmm_set_budget b = { .space = s->c[0].space,
					     .budget_bytes = bytes };

		ret = kvshim_ioctl(s->c[0].fd, KVMM_IOC_SET_BUDGET, &b);
		if (ret)
			return ret;
		s->c[0].set = bytes;
		s->budget = bytes;
		return 0;
	}
	for (int i = 0; i < s->nc; i++) {
		if (bytes > s->c[i].kv->bytes)
			return -EINVAL;
		ret = granules_read(s, i);
		if (ret)
			return ret;
		g += s->c[i].granules;
	}
	if (bytes < g * KVMM_GRANULE_SIZE)
		return -EBUSY;
	s->budget = bytes;
	return 0;
}

/*
 * cache @i's swap file, unless preemption recomputes; in auto, a cache that
 * cannot swap (a device cache) or a default directory that refuses a file
 * recomputes
 */
static int swap_init(struct llm_sched *s, int i)
{
	const char *dir = s->o.swap_dir;
	int ret;

	if (s->o.preempt == LLM_SCHED_PREEMPT_RECOMPUTE)
		return 0;
	if (!dir || !*dir)
		dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	ret = llm_kv_policy_swap_setup(s->c[i].kv, dir, NULL);
	if (!ret)
		s->c[i].swap = true;
	if (ret && s->o.preempt == LLM_SCHED_PREEMPT_AUTO &&
	    (ret == -EOPNOTSUPP || !s->o.swap_dir))
		ret = 0;
	return ret;
}

/* cache @i's fields from its space */
static int cache_init(struct llm_sched *s, int i, struct llm_kv *kv)
{
	struct sched_cache *c = &s->c[i];
	int ret;

	memset(c, 0, sizeof(*c));
	ret = llm_kv_policy_geometry(kv, &c->g);
	ret = ret ?: llm_kv_policy_space(kv, &c->fd, &c->space);
	if (ret)
		return ret;
	c->kv = kv;
	c->set = kv->bytes;
	c->chunk = !s->o.no_chunk && llm_kv_chunks(kv);
	return granules_read(s, i);
}

/**
 * llm_sched_create() - a scheduler over a policy cache
 * @kv: the cache (llm_kv_policy_open()); its slots are the most requests
 *	that run at once, its budget the bytes they share
 * @o: knobs, or NULL for the defaults
 * @fn: the executor's step
 * @ctx: passed to @fn
 * @out: the scheduler; llm_sched_destroy() frees it
 *
 * @kv is cache 0: requests whose llm_sched_req.cache is 0 run in it.
 * llm_sched_add_cache() adds caches of other policies.
 *
 * Return: 0; -EINVAL (another cache, no @fn, knobs out of range),
 * -ENOMEM.
 */
int llm_sched_create(struct llm_kv *kv, const struct llm_sched_opts *o,
		     llm_sched_step_fn fn, void *ctx, struct llm_sched **out)
{
	struct llm_sched *s;
	int n, ret;

	if (!kv || !fn || !out)
		return -EINVAL;
	if (o && (o->max_step_tokens < 0 || o->reserve > 1.0f ||
		  isnan(o->reserve) || isnan(o->compact_ratio) ||
		  (unsigned int)o->preempt > LLM_SCHED_PREEMPT_SWAP ||
		  (unsigned int)o->order > LLM_SCHED_ORDER_LONGEST))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->kv = kv;
	s->fn = fn;
	s->ctx = ctx;
	if (o)
		s->o = *o;
	else
		s->o.reserve = 1.0f;
	if (!s->o.max_step_tokens)
		s->o.max_step_tokens = 2048;
	if (s->o.reserve < 0)
		s->o.reserve = 0;
	else if (o && s->o.reserve == 0)
		s->o.reserve = 1.0f;
	if (!s->o.compact_ratio)
		s->o.compact_ratio = 0.25f;
	ret = cache_init(s, 0, kv);
	ret = ret ?: swap_init(s, 0);
	if (ret) {
		free(s);
		return ret;
	}
	s->nc = 1;
	s->budget = kv->bytes;
	n = kv->n_seq;
	s->run = calloc(n, sizeof(int));
	s->slots = calloc(n, sizeof(int));
	s->join = calloc(n, sizeof(int));
	s->bid = calloc(n, sizeof(int));
	s->bseq = calloc(n, sizeof(int));
	s->bnt = calloc(n, sizeof(int));
	s->bnext = calloc(n, sizeof(int32_t));
	s->owner = malloc(n * sizeof(int));
	if (!s->run || !s->slots || !s->join || !s->bid || !s->bseq ||
	    !s->bnt || !s->bnext || !s->owner) {
		llm_sched_destroy(s);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++) {
		s->slots[s->n_slots++] = n - 1 - i;
		s->owner[i] = -1;
	}
	*out = s;
	return 0;
}

/**
 * llm_sched_add_cache() - another cache, of another policy, whose requests
 * run in the same steps
 * @s: the scheduler
 * @kv: a policy cache of the same model with as many slots as cache 0;
 *	its budget at least the scheduler's (the bytes its space may ever
 *	map)
 * @index: out: the cache's index, for llm_sched_req.cache
 *
 * The caches share the slots (a request holds one slot of its own cache)
 * and the budget: the bytes of every cache's pages are admitted against
 * it, and before each call of a cache its space may map the granules the
 * others do not (KVMM_IOC_SET_BUDGET). A step runs, cache by cache, the
 * prompts, then the decode tokens: one executor call per cache with
 * requests, as a forward pass runs over one cache.
 *
 * Return: 0; -EINVAL (not a policy cache, other slots, a budget below
 * the scheduler's); -ENOSPC (LLM_SCHED_MAX_CACHES already); the uapi's
 * error.
 */
int llm_sched_add_cache(struct llm_sched *s, struct llm_kv *kv, int *index)
{
	struct llm_kv_geometry g;
	int ret;

	if (!s || !kv || !index || kv->n_seq != s->kv->n_seq ||
	    kv->bytes < s->budget || llm_kv_policy_geometry(kv, &g))
		return -EINVAL;
	for (int i = 0; i < s->nc; i++)
		if (s->c[i].kv == kv)
			return -EINVAL;
	if (s->nc == LLM_SCHED_MAX_CACHES)
		return -ENOSPC;
	ret = cache_init(s, s->nc, kv);
	ret = ret ?: swap_init(s, s->nc);
	if (ret)
		return ret;
	*index = s->nc++;
	return 0;
}

/**
 * llm_sched_destroy() - free the scheduler and its requests' tokens
 * @s: the scheduler, or NULL
 *
 * The caches stay their creator's; running requests' pages stay in them
 * until the caches are destroyed or the slots are used again.
 */
void llm_sched_destroy(struct llm_sched *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->n_req; i++) {
		if (!s->req[i].gone)
			swap_drop(s, &s->req[i]);
		free(s->req[i].tok);
	}
	for (int i = 0; i < s->nc; i++)
		if (s->c[i].swap)
			llm_kv_policy_swap_setup(s->c[i].kv, NULL, NULL);
	free(s->req);
	free(s->wait);
	free(s->run);
	free(s->slots);
	free(s->join);
	free(s->bid);
	free(s->bseq);
	free(s->bnt);
	free(s->bnext);
	free(s->btok);
	free(s->owner);
	free(s->free_ids);
	free(s);
}

static const char *const preempt_names[] = {
	[LLM_SCHED_PREEMPT_AUTO] = "auto",
	[LLM_SCHED_PREEMPT_RECOMPUTE] = "recompute",
	[LLM_SCHED_PREEMPT_SWAP] = "swap",
};

/**
 * llm_sched_parse_preempt() - a preemption mode by name
 * @s: "auto", "recompute" or "swap"
 * @out: the mode
 *
 * Return: 0, or -EINVAL (another word; @out unchanged).
 */
int llm_sched_parse_preempt(const char *s, enum llm_sched_preempt *out)
{
	for (unsigned int i = 0; s && i < 3; i++)
		if (!strcmp(s, preempt_names[i])) {
			*out = (enum llm_sched_preempt)i;
			return 0;
		}
	return -EINVAL;
}

static const char *const order_names[] = { "fcfs", "longest" };

/**
 * llm_sched_parse_order() - a queue order by name
 * @s: "fcfs" or "longest"
 * @out: the order
 *
 * Return: 0, or -EINVAL (another word; @out unchanged).
 */
int llm_sched_parse_order(const char *s, enum llm_sched_order *out)
{
	for (unsigned int i = 0; s && i < 2; i++)
		if (!strcmp(s, order_names[i])) {
			*out = (enum llm_sched_order)i;
			return 0;
		}
	return -EINVAL;
}

/**
 * llm_sched_order_name() - the name of a queue order
 * @o: the order
 *
 * Return: "fcfs", "longest", or "?" out of range.
 */
const char *llm_sched_order_name(enum llm_sched_order o)
{
	return (unsigned int)o < 2 ? order_names[o] : "?";
}

/**
 * llm_sched_preempt_name() - the name of a preemption mode
 * @p: the mode
 *
 * Return: "auto", "recompute", "swap", or "?" out of range.
 */
const char *llm_sched_preempt_name(enum llm_sched_preempt p)
{
	return (unsigned int)p < 3 ? preempt_names[p] : "?";
}

/**
 * llm_parse_bytes() - a byte count with an optional binary suffix
 * @s: digits, then nothing, K, KiB, M, MiB, G, GiB, T or TiB
 * @out: the bytes
 *
 * Return: 0, or -EINVAL (not a number, an unknown suffix, zero, an
 * overflow; @out unchanged).
 */
int llm_parse_bytes(const char *s, uint64_t *out)
{
	static const struct {
		const char *suf;
		int shift;
	} tab[] = {
		{ "", 0 }, { "K", 10 }, { "KiB", 10 }, { "M", 20 },
		{ "MiB", 20 }, { "G", 30 }, { "GiB", 30 }, { "T", 40 },
		{ "TiB", 40 },
	};
	unsigned long long v;
	char *end;

	if (!s || !out || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || !v)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (strcmp(end, tab[i].suf))
			continue;
		if (v > (UINT64_MAX >> tab[i].shift))
			return -EINVAL;
		*out = (uint64_t)v << tab[i].shift;
		return 0;
	}
	return -EINVAL;
}
