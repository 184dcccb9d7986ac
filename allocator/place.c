// SPDX-License-Identifier: MIT
/*
 * place.c - placement policies over the two memory tiers: static, tier,
 * importance and the future-knowing oracle, each a value per high-tier
 * table entry; the top values that fit HBM are wanted there. The comment
 * above struct kva_place states each value; kva_migrate() executes the
 * plan within a byte budget. See Documentation/placement/index.rst.
 */
#include <stdlib.h>
#include <string.h>

#include "kva.h"

/**
 * kva_place_name() - a policy's name, as the bench prints it
 * @policy: policy
 *
 * Return: "static", "tier", "importance", "oracle" or "?".
 */
const char *kva_place_name(enum kva_place_policy policy)
{
	static const char *const n[] = { "static", "tier", "importance",
					 "oracle" };

	return policy < KVA_PLACE_NR ? n[policy] : "?";
}

/**
 * kva_place_init() - a policy's state for @pool's tables
 * @pl: state, zeroed here; the tunables get their defaults (window 64
 *	tokens, 8 prefill steps, alpha 1.0, decay 0.8, frequency weight 1,
 *	gamma 0.9, horizon 8, a read now worth 1; margin 1.5 future reads
 *	for the oracle, 0.3 for importance, 0 otherwise), which the caller
 *	may change before use
 * @pool: pool
 * @policy: KVA_PLACE_*
 *
 * Return: 0; -EINVAL for an unknown policy; -ENOMEM.
 */
int kva_place_init(struct kva_place *pl, const struct kva_pool *pool,
		   enum kva_place_policy policy)
{
	size_t n = (size_t)pool->nr_lists * pool->width;

	memset(pl, 0, sizeof(*pl));
	if (policy >= KVA_PLACE_NR)
		return -EINVAL;
	pl->policy = policy;
	pl->nr_lists = pool->nr_lists;
	pl->width = pool->width;
	pl->window = 64;
	pl->prefill_steps = 8;
	pl->alpha = 1.0f;
	pl->decay = 0.8f;
	pl->freq_weight = 1.0f;
	pl->gamma = 0.9f;
	pl->horizon = 8;
	pl->margin = policy == KVA_PLACE_ORACLE ? 1.5f :
		     policy == KVA_PLACE_IMPORTANCE ? 0.3f : 0;
	pl->ema = calloc(n, sizeof(float));
	pl->freq = calloc(n, sizeof(float));
	pl->prefill = calloc(n, sizeof(float));
	pl->low = calloc(n, 1);
	pl->val = calloc(n, sizeof(float));
	pl->now = calloc(n, 1);
	pl->now_credit = 1.0f;
	pl->key = calloc(n, sizeof(uint32_t));
	pl->mv = calloc(2 * n, sizeof(uint64_t));
	if (!pl->ema || !pl->freq || !pl->prefill || !pl->low || !pl->val ||
	    !pl->key || !pl->mv || !pl->now) {
		kva_place_fini(pl);
		return -ENOMEM;
	}
	return 0;
}

/**
 * kva_place_fini() - free a policy's state
 * @pl: state
 */
void kva_place_fini(struct kva_place *pl)
{
	free(pl->ema);
	free(pl->freq);
	free(pl->prefill);
	free(pl->low);
	free(pl->val);
	free(pl->now);
	free(pl->key);
	free(pl->mv);
	memset(pl, 0, sizeof(*pl));
}

/**
 * kva_place_observe() - what one step's attention read
 * @pl: state
 * @mass: [lists][width] attention mass each high-tier entry received this
 *	step (the softmax probability summed over its tokens, max over the
 *	query heads of the group); 0 for an entry not read (not selected);
 *	a negative value marks an entry not read and not known
 *
 * Return: 0, or -EINVAL for a NULL @mass.
 */
int kva_place_observe(struct kva_place *pl, const float *mass)
{
	size_t n = (size_t)pl->nr_lists * pl->width;
	float d = pl->decay;

	if (!mass)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		float m = mass[i] > 0 ? mass[i] : 0;

		pl->ema[i] = d * pl->ema[i] + (1 - d) * m;
		if (!pl->selected)
			pl->freq[i] = d * pl->freq[i] +
				      (1 - d) * (mass[i] > 0);
		if (pl->steps < pl->prefill_steps)
			pl->prefill[i] += m / pl->prefill_steps;
	}
	pl->selected = false;
	pl->steps++;
	if (pl->policy == KVA_PLACE_TIER && pl->steps == pl->prefill_steps) {
		/* DiffKV's rule, per list: low under alpha / its pages */
		for (uint32_t l = 0; l < pl->nr_lists; l++) {
			const float *pm = &pl->prefill[(size_t)l * pl->width];
			uint32_t np = 0;

			for (uint32_t e = 0; e < pl->width; e++)
				np += pm[e] > 0;
			for (uint32_t e = 0; e < pl->width; e++)
				pl->low[(size_t)l * pl->width + e] =
					np && pm[e] * np < pl->alpha;
		}
	}
	return 0;
}

/**
 * kva_place_select() - what the step about to run will read
 * @pl: state
 * @sel: [lists][width] > 0 for each high-tier entry the step's selection
 *	chose (e.g. its masses, once known, or 1), <= 0 for the others
 *
 * The selection is known before the attention runs: a plan made now
 * (kva_place_plan()) can bring the chosen host pages into HBM before they
 * are read, one copy instead of a read over PCIe now and a copy later.
 * Counts the step's selections in the frequencies; the step's
 * kva_place_observe() then adds only the masses.
 *
 * Return: 0, or -EINVAL for a NULL @sel or a second call before
 * kva_place_observe().
 */
int kva_place_select(struct kva_place *pl, const float *sel)
{
	size_t n = (size_t)pl->nr_lists * pl->width;
	float d = pl->decay;

	if (!sel || pl->selected)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		pl->freq[i] = d * pl->freq[i] + (1 - d) * (sel[i] > 0);
		pl->now[i] = sel[i] > 0;
	}
	pl->selected = true;
	return 0;
}

/**
 * kva_place_future() - the oracle's knowledge of the steps to come
 * @pl: state
 * @future: [nr_steps][lists][width] the mass each entry will receive at
 *	the next steps (the recorded trace, from the step after the one
 *	last observed); the caller keeps it valid until the next call
 * @nr_steps: steps at @future (fewer than the horizon near the end)
 */
void kva_place_future(struct kva_place *pl, const float *future,
		      uint32_t nr_steps)
{
	pl->future = future;
	pl->nr_future = nr_steps;
}

/* what the entry is worth in HBM; higher first */
static float value(const struct kva_place *pl, const struct kva_pool *pool,
		   uint32_t list, uint32_t e, uint32_t tpp)
{
	size_t i = (size_t)list * pl->width + e;
	uint32_t nt = pool->ntokens[2 * list + KVA_HI];
	float v = 0;

	if (pl->policy != KVA_PLACE_STATIC &&
	    (uint64_t)(e + 1) * tpp + pl->window > nt)
		return 1e30f;	/* the recent window: read every step */
	switch (pl->policy) {
	case KVA_PLACE_STATIC:
		v = (float)e;
		break;
	case KVA_PLACE_TIER:
		/* before the labels: the prompt window so far */
		if (pl->steps < pl->prefill_steps)
			v = pl->prefill[i];
		else
			v = pl->low[i] ? pl->prefill[i] : 1 + pl->prefill[i];
		if (pl->steps >= pl->prefill_steps && !pl->prefill[i])
			v = 0;	/* decoded after the prompt: low */
		break;
	case KVA_PLACE_IMPORTANCE:
		v = pl->freq_weight * pl->freq[i] + pl->ema[i];
		if (pl->selected && pl->now[i])
			v += pl->now_credit;	/* read this step */
		break;
	case KVA_PLACE_ORACLE: {
		size_t n = (size_t)pl->nr_lists * pl->width;
		float g = 1;

		for (uint32_t t = 0; t < pl->nr_future && t < pl->horizon;
		     t++) {
			float m = pl->future[t * n + i];

			v += g * (m > 0 ? 1 + m : 0);
			g *= pl->gamma;
		}
		break;
	}
	default:
		break;
	}
	return v;
}

/*
 * The plan's order: value, highest first, ties to the lower entry index.
 * A value's key is an unsigned integer in the same order (the float's
 * bits, sign folded; values are finite, and -0 counts as 0), so the order
 * is that of (key, ~index) as one 64-bit integer, highest first.
 */
static uint32_t val_key(float v)
{
	uint32_t u;

	v += 0.0f;		/* -0 -> +0 */
	memcpy(&u, &v, sizeof(u));
	return u & 0x80000000u ? ~u : u | 0x80000000u;
}

static uint64_t rank_key(uint32_t key, uint32_t entry)
{
	return (uint64_t)key << 32 | (uint32_t)~entry;
}

/*
 * The key at rank @k (from 0, highest first) of @n keys (k < n), and in
 * @take_eq how many keys equal to it rank at @k or before: a radix
 * select, three histogram passes of 11, 11 and 10 bits, O(n) whatever the
 * values.
 */
static uint32_t key_threshold(const uint32_t *key, size_t n, size_t k,
			      size_t *take_eq)
{
	static const int shift[3] = { 21, 10, 0 };
	static const uint32_t width[3] = { 11, 11, 10 };
	uint32_t prefix = 0, hi_mask = 0;
	size_t above = 0;	/* keys known to rank before the bucket */

	for (int pass = 0; pass < 3; pass++) {
		uint32_t hist[2048] = { 0 }, nb = 1u << width[pass], b;

		for (size_t i = 0; i < n; i++)
			if ((key[i] & hi_mask) == prefix)
				hist[(key[i] >> shift[pass]) & (nb - 1)]++;
		/* from the top bucket down to the one holding the k-th */
		for (b = nb - 1;; b--) {
			if (above + hist[b] > k)
				break;
			above += hist[b];
		}
		prefix |= b << shift[pass];
		hi_mask |= (nb - 1) << shift[pass];
	}
	*take_eq = k - above + 1;
	return prefix;
}

/* sort @n 64-bit integers ascending (LSD radix, 8 bits a pass) */
static void radix_sort(uint64_t *a, uint64_t *tmp, size_t n)
{
	for (int shift = 0; shift < 64; shift += 8) {
		size_t cnt[256] = { 0 }, sum = 0;

		for (size_t i = 0; i < n; i++)
			cnt[(a[i] >> shift) & 255]++;
		if (n && cnt[(a[0] >> shift) & 255] == n)
			continue;	/* one digit for all: order kept */
		for (int d = 0; d < 256; d++) {
			size_t c = cnt[d];

			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			tmp[cnt[(a[i] >> shift) & 255]++] = a[i];
		memcpy(a, tmp, n * sizeof(*a));
	}
}

/* the value of page @p's entry (kept in @pl->val by the plan) */
static float page_val(const struct kva_place *pl, const struct kva_pool *pool,
		      uint32_t p)
{
	return pl->val[(size_t)pool->page_list[p] * pl->width +
		       pool->page_pos[p]];
}

/*
 * Keep the promotions worth their copies: the first @nfree take free HBM
 * pages and must gain the margin over nothing, later ones over the victim
 * kva_migrate() will pair them with (in order).
 */
static void trim_moves(const struct kva_place *pl,
		       const struct kva_pool *pool, const uint32_t *promote,
		       uint32_t *np, const uint32_t *demote, uint32_t nd,
		       uint32_t nfree)
{
	uint32_t k;

	if (pl->margin <= 0)
		return;
	for (k = 0; k < *np; k++) {
		float gain = page_val(pl, pool, promote[k]);

		if (k >= nfree) {
			if (k - nfree >= nd)
				break;
			gain -= page_val(pl, pool, demote[k - nfree]);
		}
		if (gain < pl->margin)
			break;
	}
	*np = k;
}

/**
 * kva_place_plan() - the moves that bring HBM closer to the policy's wish
 * @pl: state
 * @pool: pool whose tables the state covers
 * @promote: out: host page ids wanted in HBM, most valuable first; room
 *	for every owned page
 * @np: out: entries at @promote
 * @demote: out: HBM page ids that may go, least valuable first
 * @nd: out: entries at @demote
 *
 * Every owned high-tier entry gets its value; the HBM pages (free and used,
 * kva_pool_stats()) go to the highest values. Pass the lists to
 * kva_migrate(), whose byte budget decides how far the pool gets this step.
 *
 * Return: 0; -EINVAL when @pool's tables are not the shape of @pl's.
 */
int kva_place_plan(struct kva_place *pl, const struct kva_pool *pool,
		   uint32_t *promote, uint32_t *np, uint32_t *demote,
		   uint32_t *nd)
{
	uint32_t tpp = pool->layout[KVA_HI].tokens, n = 0, cap, thr = 0;
	uint64_t *pro = pl->mv, *dem;
	size_t npro = 0, ndem = 0, take_eq = 0;
	struct kva_stats st;

	if (pool->nr_lists != pl->nr_lists || pool->width != pl->width)
		return -EINVAL;
	kva_pool_stats(pool, &st);
	cap = (uint32_t)(st.used_mem[KVA_MEM_HBM] + st.free_mem[KVA_MEM_HBM]);
	for (uint32_t l = 0; l < pool->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l + KVA_HI]; e++) {
			size_t i = (size_t)l * pl->width + e;

			pl->val[i] = value(pl, pool, l, e, tpp);
			pl->key[n++] = val_key(pl->val[i]);
		}
	/* movers in pl->mv[0, n): promotions from the left, demotions from
	 * the right; pl->mv[n, 2n) is the sort's scratch */
	dem = pl->mv + n;
	/*
	 * The HBM pages go to the cap highest values: only which entries
	 * those are matters, and then the order of the few that move. So
	 * find the cap-th value (a radix select, O(n)), take in the entries
	 * ranked above it, and sort the movers alone: the same lists as a
	 * full sort of every entry gives.
	 */
	if (cap && cap < n)
		thr = key_threshold(pl->key, n, cap - 1, &take_eq);
	/* the entries again, in the same order as their keys */
	for (uint32_t l = 0, k = 0; l < pool->nr_lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l + KVA_HI]; e++) {
			uint32_t i = l * pl->width + e, key = pl->key[k++];
			uint32_t m = kva_page_mem(pool, pool->table[i]);
			bool in = cap >= n || (cap && (key > thr ||
				  (key == thr && take_eq && take_eq--)));

			/* in index order: ties go to the lower one first */
			if (in && m == KVA_MEM_HOST)
				pro[npro++] = rank_key(key, i);
			else if (!in && m == KVA_MEM_HBM)
				*--dem = rank_key(key, i), ndem++;
		}
	radix_sort(pro, pl->mv + n, npro);
	radix_sort(dem, pl->mv + n, ndem);
	/* promotions hottest first, demotions coldest first */
	for (size_t k = 0; k < npro; k++)
		promote[k] = pool->table[~(uint32_t)pro[npro - 1 - k]];
	for (size_t k = 0; k < ndem; k++)
		demote[k] = pool->table[~(uint32_t)dem[k]];
	*np = (uint32_t)npro;
	*nd = (uint32_t)ndem;
	trim_moves(pl, pool, promote, np, demote, *nd,
		   (uint32_t)st.free_mem[KVA_MEM_HBM]);
	return 0;
}
