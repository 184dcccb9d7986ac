// SPDX-License-Identifier: MIT
/*
 * ops.c - batched page operations over many lists: admit, trim, append,
 * free. CPU reference of the device kernels.
 */
#include <stdlib.h>
#include <string.h>

#include "kva_dev.h"

/**
 * DOC: batched operations
 *
 * Every operation runs in four phases over the lists of the slots it is
 * given; list k of the batch is list j of slots[i], k = i * lists_per_slot
 * + j.
 *
 *  validate  every argument, every slot state; nothing is written before
 *            the whole batch is known to succeed;
 *  count     cnt[k] = pages list k takes from or gives to the ring;
 *  scan      off = exclusive prefix sum of cnt (kva_scan());
 *  scatter   list k moves its pages to or from ring positions
 *            (head or tail) + off[k] .. + cnt[k]; lists touch disjoint ring
 *            entries, table rows and pages, so the loop over k has no
 *            dependency between iterations and no atomics.
 *
 * Allocation advances head by the total and freeing advances tail by it,
 * so the free pages stay the one ring interval [head, tail).
 */

/**
 * kva_scan() - exclusive prefix sum
 * @cnt: n counts
 * @off: n + 1 offsets written: off[k] = cnt[0] + ... + cnt[k-1]
 * @n: number of counts
 *
 * Return: the total, also in off[n].
 */
uint64_t kva_scan(const uint32_t *cnt, uint64_t *off, uint32_t n)
{
	uint64_t s = 0;

	for (uint32_t k = 0; k < n; k++) {
		off[k] = s;
		s += cnt[k];
	}
	off[n] = s;
	return s;
}

/**
 * kva_validate_slots() - phase 0 shared by every op (kva_dev.h, internal)
 * @pool: pool
 * @slots: the op's slots
 * @n: number of slots
 * @ok_states: a mask of BIT(state) the slots may be in
 *
 * Slots in range, listed once, each in a state of @ok_states. An empty
 * batch is valid and changes nothing.
 *
 * Return: 0; -EINVAL for a missing array, too many slots, a slot out of
 * range or listed twice; -ENOENT for a free slot where a live one is
 * wanted (double free, append after release); -EBUSY for any other wrong
 * state.
 */
int kva_validate_slots(struct kva_pool *pool, const uint32_t *slots,
		       uint32_t n, unsigned int ok_states)
{
	if ((n && !slots) || n > pool->nr_slots)
		return -EINVAL;
	if (++pool->mark_gen == 0) {
		memset(pool->mark, 0, pool->nr_slots * sizeof(*pool->mark));
		pool->mark_gen = 1;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t s = slots[i];

		if (s >= pool->nr_slots || pool->mark[s] == pool->mark_gen)
			return -EINVAL;
		pool->mark[s] = pool->mark_gen;
		if (!(ok_states & BIT(pool->slot_state[s])))
			return pool->slot_state[s] == KVA_SLOT_FREE ? -ENOENT
								    : -EBUSY;
	}
	return 0;
}

/**
 * kva_err_latch_cpu() - keep the first refusal of a run of ops
 * @err: the result of the op just run
 * @sticky: the first refusal since it was last cleared; set to *@err when
 *	it is still 0
 * @stream: unused (the CUDA version's stream)
 *
 * CPU reference of the kernel a device pool enqueues after each op (see
 * DOC: device pool in device.c).
 *
 * Return: 0.
 */
int kva_err_latch_cpu(const int32_t *err, int32_t *sticky, void *stream)
{
	(void)stream;
	if (*err && !*sticky)
		*sticky = *err;
	return 0;
}

/*
 * kva_admit() on a device pool: the total is known on the host; when it is
 * over the free lower bound, sync to make the bound exact before refusing.
 */
static int admit_dev(struct kva_pool *pool, const uint32_t *slots,
		     const uint32_t *prompt, uint32_t n)
{
	uint64_t total = 0;
	int ret;

	for (uint32_t i = 0; i < n; i++)
		total += (uint64_t)kva_admit_pages(pool, prompt[i]) *
			 pool->lists_per_slot;
	if (total > pool->free_lb) {
		ret = kva_dev_pull(pool);
		if (ret)
			return ret;
		if (total > pool->free_lb)
			return -ENOSPC;
	}
	ret = kva_dev_admit(pool, slots, prompt, n);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < n; i++) {
		pool->slot_state[slots[i]] = KVA_SLOT_PREFILL;
		pool->resv[slots[i]] = kva_admit_pages(pool, prompt[i]);
	}
	pool->free_lb -= total;
	pool->nr_used += total;
	return 0;
}

/**
 * kva_admit_cpu() - CPU reference of the device admit
 * @v: view of the arrays (host memory)
 * @slots: free slots, validated by the caller
 * @prompt: prompt length of each slot, at most max_tokens
 * @n: number of slots
 * @stream: unused (the CUDA version's stream)
 *
 * count (kva_worst_pages() per list), scan, then, if the ring holds the
 * total (else -ENOSPC in *@v->err and nothing else changes), scatter the
 * reserved pages left to right into each row and advance the head.
 *
 * Return: 0.
 */
int kva_admit_cpu(const struct kva_view *v, const uint32_t *slots,
		  const uint32_t *prompt, uint32_t n, void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps;
	uint64_t total;

	(void)stream;
	*v->err = 0;
	/* count */
	for (uint32_t k = 0; k < nk; k++)
		v->cnt[k] = kva_worst_pages(v->tpp[KVA_HI], v->tpp[KVA_LO],
					    prompt[k / lps]);
	/* scan */
	total = kva_scan(v->cnt, v->off, nk);
	if (total > *v->tail - *v->head) {
		*v->err = -ENOSPC;
		return 0;
	}
	/* scatter */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * v->width];

		for (uint32_t j = 0; j < v->cnt[k]; j++) {
			uint32_t p = v->ring[(*v->head + v->off[k] + j) %
					     v->ring_cap];

			t[j] = p;
			v->page_list[p] = list;
			v->page_pos[p] = j;
		}
		v->npages[2 * list + KVA_HI] = v->cnt[k];
		v->npages[2 * list + KVA_LO] = 0;
		v->ntokens[2 * list + KVA_HI] = 0;
		v->ntokens[2 * list + KVA_LO] = 0;
	}
	/* finish */
	*v->head += total;
	return 0;
}

/**
 * kva_admit() - reserve the pages of newly admitted sequences
 * @pool: pool
 * @slots: free slots to admit, each once
 * @prompt: prompt length of each, in tokens
 * @n: number of slots
 *
 * Every list of each slot gets kva_admit_pages() pages at the left of its
 * table; the prefill kernel writes high tokens into them from the left and
 * low tokens right after, then kva_trim() gives the surplus back.
 * Validates, then runs kva_admit_cpu().
 *
 * Return: 0; -EINVAL for a bad or repeated slot; -EBUSY for a slot in use;
 * -E2BIG for a prompt over max_tokens; -ENOSPC when the ring has too few
 * free pages (grow or compact, then retry). Nothing changes on failure.
 */
int kva_admit(struct kva_pool *pool, const uint32_t *slots,
	      const uint32_t *prompt, uint32_t n)
{
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n, BIT(KVA_SLOT_FREE));
	if (ret)
		return ret;
	for (uint32_t i = 0; i < n; i++)
		if (!prompt || prompt[i] > pool->max_tokens)
			return -E2BIG;
	if (pool->dev)
		return admit_dev(pool, slots, prompt, n);
	kva_pool_view(pool, &v);
	kva_admit_cpu(&v, slots, prompt, n, NULL);
	if (pool->err)
		return pool->err;
	for (uint32_t i = 0; i < n; i++)
		pool->slot_state[slots[i]] = KVA_SLOT_PREFILL;
	pool->nr_used += pool->off[n * pool->lists_per_slot];
	return 0;
}

/**
 * kva_trim_cpu() - CPU reference of the device trim
 * @v: view of the arrays (host memory)
 * @slots: slots in prefill, validated by the caller
 * @n: number of slots
 * @hi_tokens: [n * lists_per_slot] high-tier tokens each list stored
 * @lo_tokens: [n * lists_per_slot] low-tier tokens each list stored
 * @stream: unused (the CUDA version's stream)
 *
 * count (reserved minus kept pages; a list that needs more than it
 * reserved sets -EINVAL and then nothing else changes), scan, scatter the
 * surplus to the tail and move the low pages right, advance the tail.
 *
 * Return: 0.
 */
int kva_trim_cpu(const struct kva_view *v, const uint32_t *slots, uint32_t n,
		 const uint32_t *hi_tokens, const uint32_t *lo_tokens,
		 void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps, w = v->width;
	uint32_t a = v->tpp[KVA_HI], b = v->tpp[KVA_LO];
	uint64_t total;

	(void)stream;
	*v->err = 0;
	/* count */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint64_t keep = kvmm_div_round_up(hi_tokens[k], a) +
				kvmm_div_round_up(lo_tokens[k], b);
		uint32_t have = v->npages[2 * list + KVA_HI];

		if (keep > have)
			*v->err = -EINVAL;
		v->cnt[k] = keep > have ? 0 : have - (uint32_t)keep;
	}
	/* scan */
	total = kva_scan(v->cnt, v->off, nk);
	if (*v->err)
		return 0;
	/* scatter the surplus to the tail, then move the low pages right */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * w];
		uint32_t kh = kvmm_div_round_up(hi_tokens[k], a);
		uint32_t kl = kvmm_div_round_up(lo_tokens[k], b);
		uint32_t half = (w - kh) / 2;

		for (uint32_t j = 0; j < v->cnt[k]; j++) {
			uint32_t p = t[kh + kl + j];

			v->ring[(*v->tail + v->off[k] + j) % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[kh + kl + j] = KVA_PAGE_NONE;
		}
		for (uint32_t i = 0; i < kl && i < half; i++) {
			uint32_t x = t[kh + i];

			t[kh + i] = t[w - 1 - i];
			t[w - 1 - i] = x;
		}
		for (uint32_t j = kh; j < w - kl; j++)
			t[j] = KVA_PAGE_NONE;
		for (uint32_t i = 0; i < kl; i++)
			v->page_pos[t[w - 1 - i]] = w - 1 - i;
		v->npages[2 * list + KVA_HI] = kh;
		v->npages[2 * list + KVA_LO] = kl;
		v->ntokens[2 * list + KVA_HI] = hi_tokens[k];
		v->ntokens[2 * list + KVA_LO] = lo_tokens[k];
	}
	/* finish */
	*v->tail += total;
	return 0;
}

/**
 * kva_gather_tokens_cpu() - CPU reference of the device gather of counts
 * @v: view of the arrays
 * @slots: slots, validated by the caller
 * @n: number of slots
 * @hi: out: [n * lists_per_slot] high-tier token counts of the batch lists
 * @lo: out: [n * lists_per_slot] low-tier token counts
 * @stream: unused (the CUDA version's stream)
 *
 * What kva_trim() with NULL counts runs first: the counts the lists hold,
 * in batch order, as kva_trim_cpu() takes them.
 *
 * Return: 0.
 */
int kva_gather_tokens_cpu(const struct kva_view *v, const uint32_t *slots,
			  uint32_t n, uint32_t *hi, uint32_t *lo, void *stream)
{
	uint32_t lps = v->lists_per_slot;

	(void)stream;
	for (uint32_t k = 0; k < n * lps; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;

		hi[k] = v->ntokens[2 * list + KVA_HI];
		lo[k] = v->ntokens[2 * list + KVA_LO];
	}
	return 0;
}

/*
 * kva_trim() "as held" on a device pool: the counts are on the device, so
 * the pages given back are not known here; free_lb stays (a lower bound)
 * and the surplus counts at the next sync.
 */
static int trim_held_dev(struct kva_pool *pool, const uint32_t *slots,
			 uint32_t n)
{
	int ret = kva_dev_trim_held(pool, slots, n);

	if (ret)
		return ret;
	for (uint32_t i = 0; i < n; i++)
		pool->slot_state[slots[i]] = KVA_SLOT_DECODE;
	return 0;
}

/*
 * kva_trim() on a device pool: a prefill slot's lists hold exactly the
 * pages reserved at admit, so the refusal and the surplus are host facts.
 */
static int trim_dev(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
		    const uint32_t *hi_tokens, const uint32_t *lo_tokens)
{
	uint32_t lps = pool->lists_per_slot;
	uint32_t a = pool->layout[KVA_HI].tokens;
	uint32_t b = pool->layout[KVA_LO].tokens;
	uint64_t total = 0;
	int ret;

	for (uint32_t k = 0; k < n * lps; k++) {
		uint64_t keep = kvmm_div_round_up(hi_tokens[k], a) +
				kvmm_div_round_up(lo_tokens[k], b);
		uint32_t have = pool->resv[slots[k / lps]];

		if (keep > have)
			return -EINVAL;
		total += have - keep;
	}
	ret = kva_dev_trim(pool, slots, n, hi_tokens, lo_tokens);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < n; i++)
		pool->slot_state[slots[i]] = KVA_SLOT_DECODE;
	pool->free_lb += total;
	pool->nr_used -= total;
	return 0;
}

/**
 * kva_trim() - after prefill, keep what the prompt used and free the rest
 * @pool: pool
 * @slots: slots in prefill, each once
 * @n: number of slots
 * @hi_tokens: [n * lists_per_slot] high-tier tokens each list stored, or
 *	NULL (with @lo_tokens NULL) for the counts the lists hold now (the
 *	prefill kernels wrote them into the pool's ntokens)
 * @lo_tokens: [n * lists_per_slot] low-tier tokens each list stored
 *
 * The prefill kernel wrote ceil(hi / tpp_hi) high pages from the left of
 * each list and ceil(lo / tpp_lo) low pages right after them. The pages
 * beyond go back to the ring, then the low pages move to the right end of
 * the row (low page i at width - 1 - i) by swapping entries symmetrically
 * about the middle of [keep_hi, width): a reversal, safe when source and
 * destination overlap. Page contents do not move. Validates, then runs
 * kva_trim_cpu().
 *
 * On a device pool with NULL counts the counts are read on the device
 * (kva_gather_tokens_cuda()) and the host cannot check them: counts that
 * need more pages than were reserved make the device refuse the op (it
 * then changes nothing) and kva_pool_sync() reports -EINVAL; the pages
 * given back reach the free count at the next sync.
 *
 * Return: 0; -EINVAL for a bad or repeated slot, or counts that need more
 * pages than were reserved or exceed max_tokens; -ENOENT for a free slot;
 * -EBUSY for a slot already trimmed; -ENOMEM. Nothing changes on failure.
 */
int kva_trim(struct kva_pool *pool, const uint32_t *slots, uint32_t n,
	     const uint32_t *hi_tokens, const uint32_t *lo_tokens)
{
	uint32_t lps = pool->lists_per_slot, *held = NULL;
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n, BIT(KVA_SLOT_PREFILL));
	if (ret)
		return ret;
	if (!hi_tokens != !lo_tokens)
		return -EINVAL;
	/* no clean copy outlives a write: the slots' own */
	kva_shadow_drop_slots(pool, slots, n);
	if (n && !hi_tokens && pool->dev)
		return trim_held_dev(pool, slots, n);
	kva_pool_view(pool, &v);
	if (n && !hi_tokens) {
		/* the counts the prefill kernels wrote into the pool */
		held = malloc((size_t)n * lps * 2 * sizeof(*held));
		if (!held)
			return -ENOMEM;
		kva_gather_tokens_cpu(&v, slots, n, held, held + n * lps,
				      NULL);
		hi_tokens = held;
		lo_tokens = held + n * lps;
	}
	ret = 0;
	for (uint32_t k = 0; k < n * lps; k++)
		if ((uint64_t)hi_tokens[k] + lo_tokens[k] > pool->max_tokens)
			ret = -EINVAL;
	if (ret)
		goto out_free;
	if (pool->dev) {
		ret = trim_dev(pool, slots, n, hi_tokens, lo_tokens);
		goto out_free;
	}
	kva_trim_cpu(&v, slots, n, hi_tokens, lo_tokens, NULL);
	ret = pool->err;
	if (ret)
		goto out_free;
	for (uint32_t i = 0; i < n; i++)
		pool->slot_state[slots[i]] = KVA_SLOT_DECODE;
	pool->nr_used -= pool->off[n * lps];
out_free:
	free(held);
	return ret;
}

/**
 * kva_pool_view() - the view of a pool's own (host) arrays
 * @pool: pool
 * @v: filled in; valid until the pool is destroyed or
 *	kva_pool_set_budget() grows its arrays
 */
void kva_pool_view(struct kva_pool *pool, struct kva_view *v)
{
	v->width = pool->width;
	v->lists_per_slot = pool->lists_per_slot;
	v->ring_cap = pool->nr_page_ids;
	v->tpp[KVA_HI] = pool->layout[KVA_HI].tokens;
	v->tpp[KVA_LO] = pool->layout[KVA_LO].tokens;
	v->lo_grows = pool->nr_tiers > 1;
	v->ring = pool->ring;
	v->head = &pool->head;
	v->tail = &pool->tail;
	v->page_list = pool->page_list;
	v->page_pos = pool->page_pos;
	v->table = pool->table;
	v->npages = pool->npages;
	v->ntokens = pool->ntokens;
	v->cnt = pool->cnt;
	v->off = pool->off;
	v->err = &pool->err;
}

/* Whether a tier of @list needs a page before the next token: its last page
 * is full (or it has none). A pool with one tier never grows the low side. */
static uint32_t tier_full(const struct kva_view *v, uint32_t list, int tier)
{
	if (tier == KVA_LO && !v->lo_grows)
		return 0;
	return v->ntokens[2 * list + tier] ==
	       v->npages[2 * list + tier] * v->tpp[tier];
}

/**
 * kva_append_cpu() - CPU reference of the device append
 * @v: view of the arrays (host memory)
 * @slots: decoding slots, validated by the caller
 * @n: number of slots
 * @stream: unused (the CUDA version's stream)
 *
 * count (one page per full tier; a row that would overflow sets -E2BIG),
 * scan, then scatter only if no list overflowed and the ring holds the
 * total (else -ENOSPC); head advances by the total last. The result is in
 * *@v->err; on error nothing else changed.
 *
 * Return: 0.
 */
int kva_append_cpu(const struct kva_view *v, const uint32_t *slots, uint32_t n,
		   void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps;
	uint64_t total;

	(void)stream;
	*v->err = 0;
	/* count */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t c =
			tier_full(v, list, KVA_HI) + tier_full(v, list, KVA_LO);

		if (v->npages[2 * list] + v->npages[2 * list + 1] + c >
		    v->width)
			*v->err = -E2BIG;
		v->cnt[k] = c;
	}
	/* scan */
	total = kva_scan(v->cnt, v->off, nk);
	if (!*v->err && total > *v->tail - *v->head)
		*v->err = -ENOSPC;
	if (*v->err)
		return 0;
	/* scatter */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * v->width];
		uint64_t pos = *v->head + v->off[k];

		if (tier_full(v, list, KVA_HI)) {
			uint32_t p = v->ring[pos++ % v->ring_cap];
			uint32_t j = v->npages[2 * list + KVA_HI]++;

			t[j] = p;
			v->page_list[p] = list;
			v->page_pos[p] = j;
		}
		if (tier_full(v, list, KVA_LO)) {
			uint32_t p = v->ring[pos++ % v->ring_cap];
			uint32_t j =
				v->width - 1 - v->npages[2 * list + KVA_LO]++;

			t[j] = p;
			v->page_list[p] = list;
			v->page_pos[p] = j;
		}
	}
	/* finish */
	*v->head += total;
	return 0;
}

/*
 * kva_append() on a device pool: enqueue at once when the worst case (one
 * page per growing tier of every list) fits the free lower bound; else run
 * it synchronously: the device op refuses (-ENOSPC, -E2BIG) with nothing
 * changed, and its result and the exact free count come back.
 */
static int append_dev(struct kva_pool *pool, const uint32_t *slots,
		      uint32_t n)
{
	uint32_t lps = pool->lists_per_slot;
	uint64_t total = (uint64_t)n * lps * (1 + (pool->nr_tiers > 1));
	int32_t result;
	int ret;

	if (total > pool->free_lb) {
		/* the device decides, exactly, and says so at once */
		ret = kva_dev_append_sync(pool, slots, n, &result);
		return ret ? ret : result;
	}
	ret = kva_dev_append(pool, slots, n);
	if (ret)
		return ret;
	pool->free_lb -= total;
	pool->nr_used += total;
	return 0;
}

/**
 * kva_append() - one new page for every tier whose last page is full
 * @pool: pool
 * @slots: decoding slots, each once
 * @n: number of slots
 *
 * Run before each decode step. The high tier of a list gets a page when
 * its last page is full, the low tier likewise (a demotion may land there
 * this step). The new high page goes right of the high pages, the new low
 * page left of the low pages. Validates, then runs kva_append_cpu().
 *
 * Return: 0; -EINVAL for a bad or repeated slot; -ENOENT for a released
 * slot; -EBUSY for one still in prefill; -E2BIG for a list whose table is
 * full; -ENOSPC when the ring has too few free pages. Nothing changes on
 * failure.
 */
int kva_append(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n, BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	if (pool->dev)
		return append_dev(pool, slots, n);
	kva_pool_view(pool, &v);
	kva_append_cpu(&v, slots, n, NULL);
	if (pool->err)
		return pool->err;
	pool->nr_used += pool->off[n * pool->lists_per_slot];
	return 0;
}

/**
 * kva_free_cpu() - CPU reference of the device free
 * @v: view of the arrays (host memory)
 * @slots: admitted slots, validated by the caller
 * @n: number of slots
 * @stream: unused (the CUDA version's stream)
 *
 * count (pages of both tiers), scan, scatter high then low pages to the
 * ring from the tail and clear the rows, then advance the tail.
 *
 * Return: 0 (*@v->err is set to 0).
 */
int kva_free_cpu(const struct kva_view *v, const uint32_t *slots, uint32_t n,
		 void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps, w = v->width;
	uint64_t total;

	(void)stream;
	*v->err = 0;
	/* count */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;

		v->cnt[k] = v->npages[2 * list + KVA_HI] +
			    v->npages[2 * list + KVA_LO];
	}
	/* scan */
	total = kva_scan(v->cnt, v->off, nk);
	/* scatter: high pages, then low pages, to the tail */
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * w];
		uint32_t nh = v->npages[2 * list + KVA_HI];
		uint32_t nl = v->npages[2 * list + KVA_LO];
		uint64_t pos = *v->tail + v->off[k];

		for (uint32_t j = 0; j < nh + nl; j++) {
			uint32_t e = j < nh ? j : w - 1 - (j - nh);
			uint32_t p = t[e];

			v->ring[(pos + j) % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[e] = KVA_PAGE_NONE;
		}
		v->npages[2 * list + KVA_HI] = 0;
		v->npages[2 * list + KVA_LO] = 0;
		v->ntokens[2 * list + KVA_HI] = 0;
		v->ntokens[2 * list + KVA_LO] = 0;
	}
	/* finish */
	*v->tail += total;
	return 0;
}

/**
 * kva_free() - give back every page of many sequences
 * @pool: pool
 * @slots: admitted slots (prefill or decode), each once
 * @n: number of slots
 *
 * Validates, then runs kva_free_cpu().
 *
 * Return: 0; -EINVAL for a bad or repeated slot; -ENOENT for a slot that is
 * already free (a double free). Nothing changes on failure.
 */
int kva_free(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n,
			     BIT(KVA_SLOT_PREFILL) | BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	/* no clean copy outlives a write: the slots' own */
	kva_shadow_drop_slots(pool, slots, n);
	if (pool->dev) {
		/* the pages come back at the next sync (free_lb stays) */
		ret = kva_dev_free(pool, slots, n);
		if (ret)
			return ret;
		for (uint32_t i = 0; i < n; i++)
			pool->slot_state[slots[i]] = KVA_SLOT_FREE;
		return 0;
	}
	kva_pool_view(pool, &v);
	kva_free_cpu(&v, slots, n, NULL);
	for (uint32_t i = 0; i < n; i++)
		pool->slot_state[slots[i]] = KVA_SLOT_FREE;
	pool->nr_used -= pool->off[n * pool->lists_per_slot];
	return 0;
}

/**
 * kva_set_tokens() - record the token counts of one list
 * @pool: pool
 * @list: list id (kva_list())
 * @hi: high-tier tokens
 * @lo: low-tier tokens
 *
 * The decode kernels write these counts on the device; this is the host
 * equivalent, for tests and CPU execution.
 *
 * Return: 0; -EINVAL for a bad list or counts over the pages the list
 * holds or over max_tokens; -ENOENT for a list of a free slot; -EBUSY for
 * one in prefill.
 */
int kva_set_tokens(struct kva_pool *pool, uint32_t list, uint32_t hi,
		   uint32_t lo)
{
	uint32_t s;
	int ret;

	if (list >= pool->nr_lists)
		return -EINVAL;
	ret = pool->dev ? kva_dev_pull(pool) : 0;
	if (ret)
		return ret;
	s = pool->slot_state[list / pool->lists_per_slot];
	if (s != KVA_SLOT_DECODE)
		return s == KVA_SLOT_FREE ? -ENOENT : -EBUSY;
	if ((uint64_t)hi > (uint64_t)pool->npages[2 * list + KVA_HI] *
				   pool->layout[KVA_HI].tokens ||
	    (uint64_t)lo > (uint64_t)pool->npages[2 * list + KVA_LO] *
				   pool->layout[KVA_LO].tokens ||
	    (uint64_t)hi + lo > pool->max_tokens)
		return -EINVAL;
	/* pages no longer full will be written again: no clean copy */
	kva_shadow_drop_list(pool, list, hi / pool->layout[KVA_HI].tokens);
	pool->ntokens[2 * list + KVA_HI] = hi;
	pool->ntokens[2 * list + KVA_LO] = lo;
	return pool->dev ? kva_dev_set_tokens(pool, list) : 0;
}

/* ---- shrink: the pages beyond what each list's tokens need ---- */

/**
 * kva_shrink_cpu() - CPU reference of the shrink op over a view
 * @v: the pool's arrays
 * @slots: decoding slots, each once (validated by the caller)
 * @n: number of slots
 * @stream: unused
 *
 * List k keeps ceil(ntokens / tokens per page) pages of each tier; the high
 * pages beyond (right of the kept ones) and the low pages beyond (left of
 * the kept ones) go to the ring's tail, in that order.
 *
 * Return: 0.
 */
int kva_shrink_cpu(const struct kva_view *v, const uint32_t *slots,
		   uint32_t n, void *stream)
{
	uint32_t lps = v->lists_per_slot, nk = n * lps, w = v->width;
	uint64_t total;

	(void)stream;
	*v->err = 0;
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t kh = (uint32_t)kvmm_div_round_up(
			v->ntokens[2 * list + KVA_HI], v->tpp[KVA_HI]);
		uint32_t kl = (uint32_t)kvmm_div_round_up(
			v->ntokens[2 * list + KVA_LO], v->tpp[KVA_LO]);
		uint32_t nh = v->npages[2 * list + KVA_HI];
		uint32_t nl = v->npages[2 * list + KVA_LO];

		v->cnt[k] = (nh > kh ? nh - kh : 0) + (nl > kl ? nl - kl : 0);
	}
	total = kva_scan(v->cnt, v->off, nk);
	for (uint32_t k = 0; k < nk; k++) {
		uint32_t list = slots[k / lps] * lps + k % lps;
		uint32_t *t = &v->table[(size_t)list * w];
		uint32_t *np = &v->npages[2 * list];
		uint32_t kh = (uint32_t)kvmm_div_round_up(
			v->ntokens[2 * list + KVA_HI], v->tpp[KVA_HI]);
		uint32_t kl = (uint32_t)kvmm_div_round_up(
			v->ntokens[2 * list + KVA_LO], v->tpp[KVA_LO]);
		uint64_t pos = *v->tail + v->off[k];

		for (uint32_t e = kh; e < np[KVA_HI]; e++, pos++) {
			uint32_t p = t[e];

			v->ring[pos % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[e] = KVA_PAGE_NONE;
		}
		for (uint32_t i = kl; i < np[KVA_LO]; i++, pos++) {
			uint32_t e = w - 1 - i, p = t[e];

			v->ring[pos % v->ring_cap] = p;
			v->page_list[p] = KVA_OWNER_FREE;
			v->page_pos[p] = KVA_PAGE_NONE;
			t[e] = KVA_PAGE_NONE;
		}
		if (np[KVA_HI] > kh)
			np[KVA_HI] = kh;
		if (np[KVA_LO] > kl)
			np[KVA_LO] = kl;
	}
	*v->tail += total;
	return 0;
}

/**
 * kva_shrink() - give back the pages the slots' token counts no longer need
 * @pool: pool
 * @slots: decoding slots, each once
 * @n: number of slots
 *
 * Run after an op that lowered token counts (kvk_evict_*()). A list keeps
 * ceil(tokens / tokens per page) pages per tier; a page that kva_append()
 * added ahead of the next token goes back too.
 *
 * On a device pool the op is enqueued (kva_shrink_cuda()) and the pages
 * given back reach the free count at the next sync: the call returns 0.
 *
 * Return: the number of pages given back (0 on a device pool); -EINVAL
 * for a bad or repeated slot; -ENOENT for a free slot; -EBUSY for a slot
 * in prefill. Nothing changes on failure.
 */
int kva_shrink(struct kva_pool *pool, const uint32_t *slots, uint32_t n)
{
	struct kva_view v;
	int ret;

	ret = kva_validate_slots(pool, slots, n, BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	if (pool->dev)
		return kva_dev_shrink(pool, slots, n);
	/* no clean copy outlives a write: the slots' own */
	kva_shadow_drop_slots(pool, slots, n);
	kva_pool_view(pool, &v);
	kva_shrink_cpu(&v, slots, n, NULL);
	pool->nr_used -= pool->off[n * pool->lists_per_slot];
	return (int)pool->off[n * pool->lists_per_slot];
}
