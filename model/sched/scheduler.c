// SPDX-License-Identifier: MIT
/*
 * scheduler.c - the serving scheduler (scheduler.h).
 *
 * DOC: scheduler
 *
 * Requests wait in a FIFO queue; those that hold a slot of the cache run.
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
 *    prompt and the tokens it had generated as its new prompt (recompute);
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
 * When a call is refused for pages (-ENOSPC: the uapi refused an admission
 * or an append and changed nothing): refused prompts (an admission: a whole
 * prompt or a prompt's last chunk; earlier chunks take no pages) step
 * aside while some request holds pages: a joining one goes back to the
 * head of the queue, a running one mid-prefill is preempted. Refused
 * decode tokens preempt the request holding pages that joined last: its
 * pages are released and it is queued again to be recomputed. A request
 * that cannot fit alone in the budget fails with a reason; so does every
 * request of a step the executor failed for another reason. Nothing is
 * dropped silently.
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
	bool gone;		/* llm_sched_forget(): the id may be reused */
	/* while it runs */
	int plen;		/* tokens of its (re)prefill, set as it joins */
	int fed;		/* of those, tokens in the cache: below @plen
				 * while its prompt comes in chunks */
	int chunk;		/* prompt tokens it brings to the step built */
	bool fresh;		/* its prompt ended in this step */
};

/*
 * struct llm_sched - the scheduler. Owned by its creator; not locked: one
 * call at a time. The cache (@kv) is the creator's and outlives it.
 */
struct llm_sched {
	struct llm_kv *kv;
	struct llm_sched_opts o;
	llm_sched_step_fn fn;
	void *ctx;
	int fd;			/* the cache's kvmm handle */
	uint32_t space;		/* and space */
	struct llm_kv_geometry g;
	uint64_t budget_pages;	/* pages the budget maps */

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

	bool chunk;		/* prompts longer than the step's budget left
				 * come in chunks (llm_kv_set_prompt()) */

	/* the step being built */
	int *join;		/* [n_seq] ids joining (prompts) */
	int n_join;
	int *bid;		/* [n_seq] request of each batch entry */
	int *bseq, *bnt;	/* [n_seq] */
	int32_t *bnext;		/* [n_seq] */
	int32_t *btok;		/* [btok_cap] */
	size_t btok_cap;

	bool blocked;		/* a join was refused: none until pages free */
	double ppt_sum;		/* ppt of the requests measured */
	uint64_t ppt_n;
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

/* pages per token per list the scheduler expects of @r */
static double ppt_of(const struct llm_sched *s, const struct sched_req *r)
{
	if (r->ppt > 0)
		return r->ppt;
	if (s->ppt_n)
		return s->ppt_sum / (double)s->ppt_n;
	return 1.0 / s->g.tokens_per_page[0];
}

/* pages held back for @r's remaining output */
static uint64_t reserve_of(const struct llm_sched *s,
			   const struct sched_req *r)
{
	double t = (double)(r->max_new - r->n_gen) * s->o.reserve;

	return (uint64_t)ceil(t * s->g.lists * ppt_of(s, r));
}

/* pages of @r after its prefill: kept tokens, a partial page per tier */
static uint64_t prompt_pages(const struct llm_sched *s,
			     const struct sched_req *r)
{
	return (uint64_t)ceil((double)prompt_len(r) * s->g.lists *
			      ppt_of(s, r)) +
	       (uint64_t)s->g.lists * s->g.nr_tiers;
}

/* the uapi's admission of @r's prompt */
static uint64_t admit_pages(const struct llm_sched *s,
			    const struct sched_req *r)
{
	return (uint64_t)s->g.lists *
	       worst_pages(s->g.tokens_per_page[0], s->g.tokens_per_page[1],
			   (uint32_t)prompt_len(r));
}

/* pages in use, without waiting for the device */
static int pages_used(struct llm_sched *s, uint64_t *used)
{
	struct kvmm_fence f = { .space = s->space };
	int ret = kvshim_ioctl(s->fd, KVMM_IOC_FENCE, &f);

	if (!ret)
		*used = f.pages_used;
	return ret;
}

/* ---- queues ---- */

static void wait_push(struct llm_sched *s, int id, bool front)
{
	if (front) {
		memmove(s->wait + 1, s->wait, s->n_wait * sizeof(int));
		s->wait[0] = id;
	} else {
		s->wait[s->n_wait] = id;
	}
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
	ret = llm_kv_policy_release(s->kv, r->slot);
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

/* release a running request and queue it again at the head (recompute) */
static int preempt(struct llm_sched *s, int id)
{
	struct sched_req *r = &s->req[id];
	int ret = slot_put(s, r);

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

/* waiting requests that join this step, by the rules of DOC: scheduler */
static int pick_joins(struct llm_sched *s, int avail)
{
	uint64_t used = 0, held = 0, adm = 0, after = 0, cap = s->budget_pages;
	int tokens = s->n_run, ret;

	s->n_join = 0;
	if (!s->n_wait || !s->n_slots || s->blocked)
		return 0;
	ret = pages_used(s, &used);
	if (ret)
		return ret;
	/* the next decode step's pages: a partial page per list and tier */
	held = (uint64_t)s->g.lists * s->g.nr_tiers;
	for (int i = 0; i < s->n_run; i++) {
		const struct sched_req *q = &s->req[s->run[i]];

		if (prefilling(q)) {
			/* admitted at its last chunk: counted as joining */
			adm += admit_pages(s, q);
			after += prompt_pages(s, q) + reserve_of(s, q);
			continue;
		}
		held += reserve_of(s, q) +
			(uint64_t)ceil(s->g.lists * ppt_of(s, q));
	}
	while (s->n_wait && s->n_slots) {
		int id = s->wait[0];
		struct sched_req *r = &s->req[id];
		uint64_t a = admit_pages(s, r);
		uint64_t p = prompt_pages(s, r) + reserve_of(s, r);
		int len = prompt_len(r), chunk = len;

		if (s->chunk) {
			chunk = len < avail ? len : avail;
			if (chunk < 1)
				break;
		} else if (s->n_join && tokens + len > s->o.max_step_tokens) {
			break;
		}
		if (used + held + adm + a > cap ||
		    used + held + after + p > cap) {
			if (s->n_run || s->n_join)
				break;
			if (a > cap) {
				char why[112];

				wait_pop(s);
				snprintf(why, sizeof(why), "its prompt of %d "
					 "tokens needs %llu pages, the budget "
					 "maps %llu", len,
					 (unsigned long long)a,
					 (unsigned long long)cap);
				req_fail(s, id, -ENOSPC, why);
				continue;
			}
			/* alone: it runs, and fails if it cannot grow */
		}
		wait_pop(s);
		r->slot = s->slots[--s->n_slots];
		s->owner[r->slot] = id;
		after += (uint64_t)ceil(s->g.lists * ppt_of(s, r));
		if (r->alpha[0] >= 0) {
			ret = llm_kv_policy_seq_alpha(s->kv, r->slot,
						      r->alpha[0], r->alpha[1]);
			if (ret) {
				req_fail(s, id, ret, "per-request thresholds "
					 "need a diffkv cache");
				continue;
			}
		} else if (s->g.nr_tiers > 1) {
			/* a slot keeps its last thresholds: the cache's */
			llm_kv_policy_seq_alpha(s->kv, r->slot, s->g.alpha[0],
						s->g.alpha[1]);
		}
		/* a prompt longer than the budget left comes in chunks */
		if (chunk < len && llm_kv_set_prompt(s->kv, r->slot, len))
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
 * the step's prompts: the chunks of running requests whose prompts are
 * still coming, then the joining requests' (first) chunks
 */
static int build_prefill(struct llm_sched *s, struct llm_batch *b)
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
		if (s->req[s->run[i]].chunk)
			add_chunk(s, s->run[i], n++, &nt);
	for (int i = 0; i < s->n_join; i++)
		add_chunk(s, s->join[i], n++, &nt);
	*b = (struct llm_batch){ n, s->bseq, s->bnt, s->btok };
	return n;
}

/*
 * the step's decode tokens: every running request past its prompt, but
 * those whose prompt ended in this step (they took their first token)
 */
static int build_decode(struct llm_sched *s, struct llm_batch *b)
{
	int n = 0, ret = btok_reserve(s, (size_t)s->n_run);

	if (ret)
		return ret;
	for (int i = 0; i < s->n_run; i++) {
		struct sched_req *r = &s->req[s->run[i]];

		if (prefilling(r) || r->fresh)
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

/*
 * the step's prompts were refused for pages: an admission (a whole prompt,
 * or the last chunk of one) did not fit, and nothing of the call ran. With
 * requests holding pages (they may give some back), the prompts that end
 * now step aside: joining ones go back to the queue, running ones, whose
 * earlier chunks are staged, are preempted (released and queued again);
 * without, the oldest is tried alone, and fails if it is alone.
 * Return 0 to retry.
 */
static int refused_prefill(struct llm_sched *s)
{
	int holders = 0, cand = 0, keep = -1;

	for (int i = 0; i < s->n_run; i++) {
		const struct sched_req *r = &s->req[s->run[i]];

		holders += holds_pages(r);
		if (ends_prompt(r) && !cand++)
			keep = s->run[i];
	}
	for (int i = 0; i < s->n_join; i++)
		if (ends_prompt(&s->req[s->join[i]]) && !cand++)
			keep = s->join[i];
	if (!cand)
		return -ENOSPC;	/* chunks take no pages: not ours to fix */
	if (holders)
		keep = -1;
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
		if (s->join[i] != keep && ends_prompt(&s->req[s->join[i]]))
			unjoin_one(s, i);
	for (int i = s->n_run - 1; i >= 0; i--) {
		int id = s->run[i];

		if (id == keep || !ends_prompt(&s->req[id]))
			continue;
		s->req[id].chunk = 0;
		s->st.prefill_preemptions++;
		preempt(s, id);
		s->blocked = true;
	}
	return 0;
}

/*
 * the decode tokens were refused for pages: the request holding pages
 * that joined last is preempted (released and queued again to be
 * recomputed), or fails when it is the only one. Return 0 to retry.
 */
static int refused_decode(struct llm_sched *s)
{
	int holders = 0, victim = -1;
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
	return preempt(s, victim);
}

/*
 * what the request holds after its prefill: its ppt (pages per token per
 * list) for the admissions to come
 */
static void measure(struct llm_sched *s, struct sched_req *r)
{
	struct llm_kv_usage u;
	double n = (double)prompt_len(r) * s->g.lists, held;

	if (llm_kv_policy_usage(s->kv, r->slot, &u) || n <= 0)
		return;
	r->ppt = u.tokens[0] / n / s->g.tokens_per_page[0] +
		 u.tokens[1] / n / s->g.tokens_per_page[1];
	/* pages the tokens left behind count too (an eviction that lowered
	 * the counts but freed no page): the pages held, less a partial
	 * last page per list, bound it from below */
	held = (double)(u.pages[0] + u.pages[1]);
	if (held > s->g.lists && (held - s->g.lists) / n > r->ppt)
		r->ppt = (held - s->g.lists) / n;
	if (r->ppt <= 0)
		r->ppt = 1e-9;
	s->st.held_bytes += (u.pages[0] + u.pages[1]) * u.page_size;
	s->st.full_bytes += u.full_pages * u.full_page_size;
	s->ppt_sum += r->ppt;
	s->ppt_n++;
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

/* physical compaction when the free pages scattered in granules pass the
 * threshold */
static int maybe_compact(struct llm_sched *s)
{
	struct kvmm_stats st = { .space = s->space };
	struct kvmm_compact c = { .space = s->space,
				  .byte_budget = s->o.compact_bytes };
	double used;
	int ret;

	if (s->o.compact_ratio < 0)
		return 0;
	ret = kvshim_ioctl(s->fd, KVMM_IOC_STATS, &st);
	if (ret)
		return ret;
	used = (double)(st.pages_used[0] + st.pages_used[1]) * st.page_size;
	if (st.free_unusable_bytes < KVMM_GRANULE_SIZE ||
	    (double)st.free_unusable_bytes <= s->o.compact_ratio * used)
		return 0;
	ret = kvshim_ioctl(s->fd, KVMM_IOC_COMPACT, &c);
	if (ret)
		return ret;
	s->st.compactions++;
	s->st.granules_released += c.granules_released;
	s->st.pages_moved += c.pages_moved;
	return 0;
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
	struct llm_batch b;
	int ret, n, n_ran = 0, left = 0;
	uint64_t used;

	ret = pick_joins(s, plan_chunks(s));
	if (ret)
		return ret;
	/* the prompts: chunks of running requests, joining requests */
	for (;;) {
		n = build_prefill(s, &b);
		if (n <= 0) {
			if (n < 0)
				return n;
			break;
		}
		ret = s->fn(s->ctx, s->kv, &b, s->bnext);
		if (ret == -ENOSPC) {
			left++;
			ret = refused_prefill(s);
			if (!ret)
				continue;
		}
		if (ret) {
			fail_all(s, ret);
			return ret;
		}
		take_prefill(s, n);
		n_ran += n;
		break;
	}
	for (int i = 0; i < s->n_join; i++)
		s->run[s->n_run++] = s->join[i];
	s->n_join = 0;
	/* the decode tokens */
	for (;;) {
		n = build_decode(s, &b);
		if (n <= 0) {
			if (n < 0)
				return n;
			break;
		}
		ret = s->fn(s->ctx, s->kv, &b, s->bnext);
		if (ret == -ENOSPC) {
			left++;
			ret = refused_decode(s);
			if (!ret)
				continue;
		}
		if (ret) {
			fail_all(s, ret);
			return ret;
		}
		take_decode(s, n);
		n_ran += n;
		break;
	}
	if (!n_ran)
		return 0;
	left += leave(s);
	s->st.steps++;
	s->st.sum_running += (uint64_t)n_ran;
	if (n_ran > s->st.peak_running)
		s->st.peak_running = n_ran;
	if (!pages_used(s, &used)) {
		s->st.pages_used = used;
		if (used > s->st.peak_pages)
			s->st.peak_pages = used;
	}
	if (left) {
		ret = maybe_compact(s);
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
	q->slot = -1;
	q->t_submit = now_s();
	*id = i;
	if ((long)r->n_prompt + r->max_new > s->kv->max_tok) {
		char why[112];

		snprintf(why, sizeof(why), "%d prompt + %d output tokens "
			 "exceed the %d a sequence holds", r->n_prompt,
			 r->max_new, s->kv->max_tok);
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
	st->budget_pages = s->budget_pages;
	st->page_size = s->g.page_size;
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
		for (int i = 0; i < s->n_wait; i++)
			if (s->wait[i] == id) {
				memmove(s->wait + i, s->wait + i + 1,
					(s->n_wait - i - 1) * sizeof(int));
				s->n_wait--;
				break;
			}
	} else if (r->state == LLM_SCHED_RUNNING) {
		uint64_t used;

		ret = slot_put(s, r);
		run_remove(s, id);
		/* the counts read between steps show the pages gone */
		if (!pages_used(s, &used))
			s->st.pages_used = used;
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
 * @pages: out: [0] high tier (the only one of a one-tier policy), [1] low
 *
 * Reads the space's statistics through the uapi: for a metrics reader,
 * not once per step.
 *
 * Return: 0, or the uapi's error.
 */
int llm_sched_tier_pages(struct llm_sched *s, uint64_t pages[2])
{
	struct kvmm_stats st = { .space = s->space };
	int ret = kvshim_ioctl(s->fd, KVMM_IOC_STATS, &st);

	if (ret)
		return ret;
	pages[0] = st.pages_used[0];
	pages[1] = st.pages_used[1];
	return 0;
}

/**
 * llm_sched_set_budget() - change the space's memory budget
 * @s: the scheduler
 * @bytes: new budget, rounded up to whole 2 MiB granules
 *
 * KVMM_IOC_SET_BUDGET: the pool grows within it on demand; admissions use
 * it from the next step.
 *
 * Return: 0; -EINVAL (0 bytes, or more than the space's address range);
 * -EBUSY (below the pages in use: nothing changed); the uapi's error.
 */
int llm_sched_set_budget(struct llm_sched *s, uint64_t bytes)
{
	struct kvmm_set_budget b = { .space = s->space };
	int ret;

	if (!bytes || bytes > UINT64_MAX - KVMM_GRANULE_SIZE)
		return -EINVAL;
	b.budget_bytes = (bytes + KVMM_GRANULE_SIZE - 1) / KVMM_GRANULE_SIZE *
			 KVMM_GRANULE_SIZE;
	ret = kvshim_ioctl(s->fd, KVMM_IOC_SET_BUDGET, &b);
	if (ret)
		return ret;
	s->budget_pages = b.budget_bytes / KVMM_GRANULE_SIZE *
			  s->g.pages_per_granule;
	return 0;
}

/**
 * llm_sched_create() - a scheduler over a policy cache
 * @kv: the cache (llm_kv_policy_open()); its slots are the most requests
 *	that run at once, its budget the pages they share
 * @o: knobs, or NULL for the defaults
 * @fn: the executor's step
 * @ctx: passed to @fn
 * @out: the scheduler; llm_sched_destroy() frees it
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
		  isnan(o->reserve) || isnan(o->compact_ratio)))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	ret = llm_kv_policy_geometry(kv, &s->g);
	ret = ret ?: llm_kv_policy_space(kv, &s->fd, &s->space);
	if (ret) {
		free(s);
		return ret;
	}
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
	s->budget_pages = s->g.budget_pages;
	s->chunk = !s->o.no_chunk && llm_kv_chunks(kv);
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
	    !s->bnt ||
	    !s->bnext || !s->owner) {
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
 * llm_sched_destroy() - free the scheduler and its requests' tokens
 * @s: the scheduler, or NULL
 *
 * The cache stays its creator's; running requests' pages stay in it until
 * the cache is destroyed or the slots are used again.
 */
void llm_sched_destroy(struct llm_sched *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->n_req; i++)
		free(s->req[i].tok);
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
